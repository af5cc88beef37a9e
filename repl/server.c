/* The secondary side of mirrored volumes (repl/server.h). One reactor runs the listener and
 * every peer connection; writes go to the volumes from there and complete there. */
#include "repl/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache/volume.h"
#include "iscsi/crc32c.h"
#include "repl/link.h"
#include "repl/proto.h"
#include "repl/state.h"
#include "src/log.h"
#include "src/reactor.h"

#define MAX_VOLUMES  64
#define SEQ_RESERVE  (1u << 26) /* tickets reserved per pairing: the primary's are mapped in */
#define SEQ_MARGIN   (1u << 24)
#define STOP_WAIT_NS (30 * 1000000000ull) /* at exit, for the peer writes under way */

struct svol {
        struct repl_server_volume conf;
        char *name, *id;
        uint64_t key;
        struct sconn *bound; /* the paired primary's connection */
        pthread_mutex_t lock;
        atomic_uint_fast64_t applied_writes, applied_bytes, refused;
        char peer[64];
        uint64_t primary_gen;  /* from the HELLO: adopted at SYNCED */
        bool conflict_logged;  /* a primary connected while this side is primary too */
        atomic_int bound_kind; /* the bound connection's enum repl_link_kind, -1: none */
};

struct reply {
        uint8_t buf[REPL_HDR_LEN + REPL_HELLO_LEN];
        uint32_t len, sent;
        struct reply *next;
};

struct sconn {
        struct repl_server *s;
        struct repl_link *link; /* NULL once closed */
        char addr[64];
        uint8_t hdr[REPL_HDR_LEN];
        struct repl_hdr h;
        uint8_t *payload;
        size_t got;
        bool in_payload;
        bool closing;
        struct svol *vol;
        bool seq_anchored;
        uint32_t seq_anchor, seq_base;
        struct reply *out, *out_tail;
        unsigned refs; /* itself + I/Os in flight */
};

struct repl_server {
        struct reactor *r;
        int fd;
        struct reactor_fd rfd;
        bool listening;
        struct sockaddr_storage addr; /* mirror_listen, for the RDMA listener too */
        socklen_t addrlen;
        struct repl_rdma_listener *rdma;
        struct repl_link_stats lstats;
        struct svol vols[MAX_VOLUMES];
        unsigned nvols;
        bool stopping;
        unsigned ios; /* peer writes and flushes submitted to the volumes, not yet done */
};

/* I/O of a peer write on the local volume. */
struct sio {
        struct volume_io io;
        struct iovec iov;
        struct sconn *c;
        uint8_t *payload;
        uint64_t msg_id;
        struct svol *vol;
};

static void conn_close(struct sconn *c, const char *why);

static void conn_put(struct sconn *c)
{
        if (--c->refs)
                return;
        for (struct reply *r = c->out, *n; r; r = n) {
                n = r->next;
                free(r);
        }
        free(c->payload);
        free(c);
}

/* ---------------- replies ---------------- */

static void flush_out(struct sconn *c)
{
        while (c->out && c->link) {
                struct reply *r = c->out;
                struct iovec iov = {r->buf + r->sent, r->len - r->sent};
                ssize_t w = repl_link_writev(c->link, &iov, 1);
                if (w == -EAGAIN) {
                        repl_link_want_out(c->link, true);
                        return;
                }
                if (w <= 0) {
                        conn_close(c, "write failed");
                        return;
                }
                r->sent += (uint32_t)w;
                if (r->sent < r->len)
                        continue;
                c->out = r->next;
                if (!c->out)
                        c->out_tail = NULL;
                free(r);
        }
        if (c->link)
                repl_link_want_out(c->link, false);
}

static void reply(struct sconn *c, uint16_t type, uint64_t msg_id, uint32_t status,
                  const uint8_t *payload, uint32_t len)
{
        if (!c->link)
                return;
        struct reply *r = calloc(1, sizeof(*r));
        if (!r) {
                conn_close(c, "out of memory");
                return;
        }
        struct repl_hdr h = {.type = type,
                             .msg_id = msg_id,
                             .volume = c->vol ? c->vol->key : 0,
                             .status = status,
                             .length = len,
                             .payload_crc = len ? crc32c(0, payload, len) : 0};
        repl_hdr_encode(&h, r->buf);
        if (len)
                memcpy(r->buf + REPL_HDR_LEN, payload, len);
        r->len = REPL_HDR_LEN + len;
        if (c->out_tail)
                c->out_tail->next = r;
        else
                c->out = r;
        c->out_tail = r;
        flush_out(c);
}

static void refuse(struct sconn *c, uint32_t status, const char *what)
{
        log_warn("mirror peer %s: %s refused: %s", c->addr, what, repl_status_str(status));
        if (c->vol)
                atomic_fetch_add(&c->vol->refused, 1);
        reply(c, c->h.type == REPL_HELLO ? REPL_HELLO_REPLY : REPL_REPLY, c->h.msg_id, status, NULL,
              0);
}

/* ---------------- the handshake ---------------- */

static struct svol *find_vol(struct repl_server *s, const char *id)
{
        for (unsigned i = 0; i < s->nvols; i++)
                if (strcmp(s->vols[i].id, id) == 0)
                        return &s->vols[i];
        return NULL;
}

/* This side's HELLO payload, for a HELLO_REPLY. */
static void my_hello(struct svol *v, uint8_t buf[REPL_HELLO_LEN])
{
        struct repl_state *st = v->conf.state;
        bool primary = repl_state_role(st) == REPL_ROLE_PRIMARY;
        struct repl_hello mine = {
            .size = v->conf.size,
            .block_size = v->conf.block_size,
            .role = primary ? REPL_ROLE_PRIMARY : REPL_ROLE_SECONDARY,
            .gen = repl_state_gen(st),
            .shared_gen = repl_state_shared_gen(st),
            .flags = !primary && repl_state_needs_full(st) ? REPL_HELLO_F_NEEDS_FULL : 0};
        snprintf(mine.id, sizeof(mine.id), "%s", v->id);
        repl_hello_encode(&mine, buf);
}

/* A primary wants to pair but this side is primary too. Both went on apart: split brain.
 * Otherwise one of them holds what the other does: a role conflict, answered with this side's
 * generations so the other side can say which one to demote (it keeps retrying). */
static void both_primary(struct sconn *c, struct svol *v, const struct repl_hello *peer)
{
        struct repl_state *st = v->conf.state;
        enum repl_gen_relation rel = repl_gen_relation(
            repl_state_gen(st), repl_state_shared_gen(st), peer->gen, peer->shared_gen);
        if (rel == REPL_GEN_DIVERGED) {
                log_err("%s: a primary (%s) wants to pair, but this side was promoted and both "
                        "went on apart: split brain; resolve with 'isergw-ctl mirror-demote' on "
                        "the side to discard",
                        v->name, c->addr);
                refuse(c, REPL_E_SPLIT_BRAIN, "a HELLO");
                conn_close(c, "split brain");
                return;
        }
        if (!v->conflict_logged)
                log_warn("%s: a primary (%s) wants to pair, but this side is primary too (%s); "
                         "'isergw-ctl mirror-demote' on the side that is behind",
                         v->name, c->addr,
                         rel == REPL_GEN_PEER_BEHIND  ? "it is behind this side"
                         : rel == REPL_GEN_PEER_AHEAD ? "it is ahead of this side"
                                                      : "same data");
        v->conflict_logged = true;
        atomic_fetch_add(&v->refused, 1);
        uint8_t buf[REPL_HELLO_LEN];
        my_hello(v, buf);
        reply(c, REPL_HELLO_REPLY, c->h.msg_id, REPL_E_ROLE, buf, sizeof(buf));
        conn_close(c, "both primary");
}

static void on_hello(struct sconn *c)
{
        struct repl_hello peer;
        if (!repl_hello_decode(c->payload, c->h.length, &peer) || peer.role != REPL_ROLE_PRIMARY) {
                refuse(c, REPL_E_PROTOCOL, "a malformed HELLO");
                conn_close(c, "malformed HELLO");
                return;
        }
        struct svol *v = find_vol(c->s, peer.id);
        if (!v || v->key != c->h.volume) {
                refuse(c, REPL_E_UNKNOWN_VOLUME, "a HELLO for an unknown volume");
                conn_close(c, "unknown volume");
                return;
        }
        c->vol = v;
        if (peer.size != v->conf.size || peer.block_size != v->conf.block_size) {
                refuse(c, REPL_E_SIZE_MISMATCH, "a HELLO");
                conn_close(c, "size mismatch");
                return;
        }
        if (repl_state_role(v->conf.state) != REPL_ROLE_SECONDARY) {
                both_primary(c, v, &peer);
                return;
        }
        if (v->bound && v->bound != c)
                conn_close(v->bound, "the primary connected again");
        v->bound = c;
        atomic_store(&v->bound_kind, (int)c->link->kind);
        v->primary_gen = peer.gen;
        snprintf(v->peer, sizeof(v->peer), "%s", c->addr);
        c->seq_base = volume_reserve_seqs(v->conf.volume, SEQ_RESERVE);
        c->seq_anchored = false;
        v->conflict_logged = false;
        /* Different data from now until SYNCED: not promotable without force. */
        if (peer.gen != repl_state_gen(v->conf.state) || repl_state_needs_full(v->conf.state))
                repl_state_set_consistent(v->conf.state, false);
        uint8_t buf[REPL_HELLO_LEN];
        my_hello(v, buf);
        log_info("%s: paired with the primary at %s", v->name, c->addr);
        reply(c, REPL_HELLO_REPLY, c->h.msg_id, REPL_OK, buf, sizeof(buf));
}

static void on_synced(struct sconn *c)
{
        struct svol *v = c->vol;
        repl_state_set(v->conf.state, REPL_ROLE_SECONDARY, v->primary_gen, v->primary_gen);
        /* This side now holds the primary's data: what it recorded as a primary is void. */
        repl_state_clear_all(v->conf.state);
        repl_state_set_needs_full(v->conf.state, false);
        repl_state_set_consistent(v->conf.state, true);
        log_info("%s: in sync with the primary at %s", v->name, c->addr);
        reply(c, REPL_REPLY, c->h.msg_id, REPL_OK, NULL, 0);
}

/* ---------------- writes ---------------- */

static void sio_done(struct volume_io *io, int result)
{
        struct sio *sio = io->priv;
        struct sconn *c = sio->c;
        if (io->op == VOLUME_FLUSH) {
                if (result < 0)
                        log_warn("%s: a flush for the primary failed: %s", sio->vol->name,
                                 strerror(-result));
        } else if (result == 0) {
                atomic_fetch_add(&sio->vol->applied_writes, 1);
                atomic_fetch_add(&sio->vol->applied_bytes, io->length);
        } else {
                log_warn("%s: a mirrored write failed here: %s", sio->vol->name, strerror(-result));
        }
        reply(c, REPL_REPLY, sio->msg_id, result == 0 ? REPL_OK : REPL_E_DEVICE_FAULT, NULL, 0);
        free(sio->payload);
        free(sio);
        c->s->ios--;
        conn_put(c);
}

/* The primary's ticket, mapped into this volume's: same order within a pairing, and after
 * everything an earlier pairing wrote. */
static uint32_t local_seq(struct sconn *c, uint32_t seq)
{
        if (!c->seq_anchored) {
                c->seq_anchored = true;
                c->seq_anchor = seq;
        }
        return c->seq_base + SEQ_MARGIN + (seq - c->seq_anchor);
}

static void on_write(struct sconn *c)
{
        struct svol *v = c->vol;
        const struct repl_hdr *h = &c->h;
        if (!v || v->bound != c) {
                refuse(c, REPL_E_NOT_PAIRED, "a write before HELLO");
                return;
        }
        if (h->volume != v->key) {
                refuse(c, REPL_E_UNKNOWN_VOLUME, "a write");
                return;
        }
        if (repl_state_role(v->conf.state) != REPL_ROLE_SECONDARY) {
                refuse(c, REPL_E_ROLE, "a write (this side was promoted)");
                return;
        }
        uint64_t len = h->type == REPL_WRITE ? h->length : h->span;
        uint32_t bs = v->conf.block_size;
        if (!len || h->offset % bs || len % bs || h->offset > v->conf.size ||
            len > v->conf.size - h->offset) {
                refuse(c, REPL_E_RANGE, "a write");
                return;
        }
        if (h->type == REPL_WRITE && crc32c(0, c->payload, h->length) != h->payload_crc) {
                refuse(c, REPL_E_CHECKSUM, "a write");
                return;
        }
        struct sio *sio = calloc(1, sizeof(*sio));
        if (!sio) {
                refuse(c, REPL_E_NO_SPACE, "a write");
                return;
        }
        sio->c = c;
        sio->vol = v;
        sio->msg_id = h->msg_id;
        if (h->type == REPL_WRITE) {
                sio->payload = c->payload; /* the buffer moves to the I/O */
                c->payload = NULL;
                sio->iov = (struct iovec){sio->payload, len};
        }
        sio->io = (struct volume_io){.op = h->type == REPL_WRITE   ? VOLUME_WRITE
                                           : h->type == REPL_UNMAP ? VOLUME_UNMAP
                                                                   : VOLUME_WRITE_ZEROES,
                                     .offset = h->offset,
                                     .length = len,
                                     .iov = h->type == REPL_WRITE ? &sio->iov : NULL,
                                     .iovcnt = h->type == REPL_WRITE ? 1 : 0,
                                     .reactor = c->s->r,
                                     .done = sio_done,
                                     .priv = sio,
                                     .seq = local_seq(c, h->seq),
                                     .fua = (h->flags & REPL_F_STABLE) != 0,
                                     .cmd_bytes = len,
                                     .replica = true};
        c->refs++;
        c->s->ios++;
        volume_submit(v->conf.volume, &sio->io);
}

/* The primary forgets which regions it wrote lately only once they are on this side's stable
 * storage: so a crash here loses nothing it does not resend. */
static void on_flush(struct sconn *c)
{
        if (!c->vol || c->vol->bound != c) {
                refuse(c, REPL_E_NOT_PAIRED, "a flush before HELLO");
                return;
        }
        struct sio *sio = calloc(1, sizeof(*sio));
        if (!sio) {
                refuse(c, REPL_E_NO_SPACE, "a flush");
                return;
        }
        sio->c = c;
        sio->vol = c->vol;
        sio->msg_id = c->h.msg_id;
        sio->io = (struct volume_io){
            .op = VOLUME_FLUSH, .reactor = c->s->r, .done = sio_done, .priv = sio};
        c->refs++;
        c->s->ios++;
        volume_submit(c->vol->conf.volume, &sio->io);
}

static void on_message(struct sconn *c)
{
        switch (c->h.type) {
        case REPL_HELLO:
                on_hello(c);
                return;
        case REPL_WRITE:
        case REPL_UNMAP:
        case REPL_WRITE_ZEROES:
                on_write(c);
                return;
        case REPL_FLUSH:
                on_flush(c);
                return;
        case REPL_PING:
                reply(c, REPL_PONG, c->h.msg_id, REPL_OK, NULL, 0);
                return;
        case REPL_SYNCED:
                if (c->vol && c->vol->bound == c)
                        on_synced(c);
                else
                        refuse(c, REPL_E_NOT_PAIRED, "SYNCED");
                return;
        default:
                refuse(c, REPL_E_PROTOCOL, "a message a secondary does not take");
                return;
        }
}

/* ---------------- the connection ---------------- */

static void on_header(struct sconn *c)
{
        enum repl_status st = repl_hdr_decode(c->hdr, &c->h);
        if (st == REPL_E_VERSION) {
                refuse(c, REPL_E_VERSION, "a message");
                conn_close(c, "unsupported protocol version");
                return;
        }
        if (st != REPL_OK) {
                log_warn("mirror peer %s: bad header (magic, checksum, type or length %u); "
                         "closing",
                         c->addr, c->h.length);
                conn_close(c, "bad header");
                return;
        }
        if (c->h.type == REPL_HELLO && c->h.length != REPL_HELLO_LEN) {
                refuse(c, REPL_E_PROTOCOL, "a HELLO of the wrong length");
                conn_close(c, "bad HELLO");
                return;
        }
        if (c->h.length) {
                c->payload = malloc(c->h.length);
                if (!c->payload) {
                        conn_close(c, "out of memory");
                        return;
                }
                c->in_payload = true;
                return;
        }
        on_message(c);
}

static void rx(struct sconn *c)
{
        while (c->link) {
                uint8_t *dst = c->in_payload ? c->payload : c->hdr;
                size_t want = c->in_payload ? c->h.length : REPL_HDR_LEN;
                ssize_t n = repl_link_read(c->link, dst + c->got, want - c->got);
                if (n == -EAGAIN)
                        return;
                if (n <= 0) {
                        conn_close(c, n < 0 ? strerror((int)-n) : "closed by the peer");
                        return;
                }
                c->got += (size_t)n;
                if (c->got < want)
                        continue;
                c->got = 0;
                if (!c->in_payload) {
                        on_header(c);
                        continue;
                }
                c->in_payload = false;
                if (c->h.type == REPL_HELLO &&
                    crc32c(0, c->payload, c->h.length) != c->h.payload_crc) {
                        refuse(c, REPL_E_CHECKSUM, "a HELLO");
                        conn_close(c, "bad HELLO checksum");
                        return;
                }
                on_message(c);
                free(c->payload);
                c->payload = NULL;
        }
}

static void on_conn_link(struct repl_link *l, uint32_t events)
{
        struct sconn *c = l->ctx;
        c->refs++;
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rx(c);
        if (c->link && (events & EPOLLOUT))
                flush_out(c);
        conn_put(c);
}

static void conn_close(struct sconn *c, const char *why)
{
        if (!c->link)
                return;
        char desc[256];
        repl_link_describe(c->link, desc, sizeof(desc));
        if (c->vol && c->vol->bound == c) {
                c->vol->bound = NULL;
                atomic_store(&c->vol->bound_kind, -1);
                log_info("%s: the primary at %s went away (%s; %s)", c->vol->name, c->addr, why,
                         desc);
        } else {
                log_info("mirror peer %s: connection closed (%s; %s)", c->addr, why, desc);
        }
        repl_link_close(c->link);
        c->link = NULL;
        conn_put(c);
}

static void on_accept(struct reactor_fd *rfd, uint32_t events)
{
        struct repl_server *s = rfd->ctx;
        (void)events;
        for (;;) {
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                int fd = accept4(s->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                struct sconn *c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        continue;
                }
                c->s = s;
                c->refs = 1;
                char host[48] = "?", port[8] = "?";
                getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                            NI_NUMERICHOST | NI_NUMERICSERV);
                snprintf(c->addr, sizeof(c->addr), "%s:%s", host, port);
                struct repl_link_conf lc = {
                    .r = s->r, .cb = on_conn_link, .ctx = c, .stats = &s->lstats};
                c->link = repl_link_tcp_wrap(&lc, fd);
                if (!c->link) {
                        close(fd);
                        free(c);
                }
        }
}

/* A primary connected over RDMA: the same connection as over TCP from here on. */
static void on_rdma_accept(void *ctx, struct repl_link *l, const char *peer)
{
        struct repl_server *s = ctx;
        struct sconn *c = calloc(1, sizeof(*c));
        if (!c || s->stopping) {
                free(c);
                repl_link_close(l);
                return;
        }
        c->s = s;
        c->refs = 1;
        snprintf(c->addr, sizeof(c->addr), "%s", peer);
        c->link = l;
        l->cb = on_conn_link;
        l->ctx = c;
}

/* ---------------- life cycle ---------------- */

struct create_arg {
        struct repl_server *s;
        int rc;
};

static void listen_on_reactor(void *arg)
{
        struct create_arg *a = arg;
        struct repl_server *s = a->s;
        /* RDMA beside TCP on the same address and port (RDMA CM ports are their own), and
         * before it: the kernel takes TCP connections from listen() on, so a primary that
         * reconnects to a restarting secondary would otherwise find TCP up, RDMA not yet,
         * and settle for TCP until the next link loss. */
        if (!repl_link_rdma_available())
                log_info("mirror: no RDMA device on this host; primaries connect over TCP only");
        else if (!(s->rdma = repl_rdma_listen(s->r, (struct sockaddr *)&s->addr, s->addrlen,
                                              on_rdma_accept, s, &s->lstats)))
                log_warn("mirror: no RDMA listener (see above); primaries connect over TCP only");
        if (listen(s->fd, 16) < 0) {
                a->rc = -errno;
                log_err("mirror_listen: %s", strerror(errno));
                return;
        }
        a->rc = reactor_add_fd(s->r, &s->rfd);
}

struct repl_server *repl_server_create(struct reactor *r, const char *addr, uint16_t port)
{
        struct repl_server *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->r = r;
        char service[8];
        snprintf(service, sizeof(service), "%u", port);
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
        if (getaddrinfo(addr, service, &hints, &res) != 0 || !res) {
                log_err("mirror_listen %s:%u: cannot resolve", addr, port);
                free(s);
                return NULL;
        }
        s->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (s->fd >= 0)
                setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (s->fd < 0 || bind(s->fd, res->ai_addr, res->ai_addrlen) < 0) {
                log_err("mirror_listen %s:%u: %s", addr, port, strerror(errno));
                freeaddrinfo(res);
                if (s->fd >= 0)
                        close(s->fd);
                free(s);
                return NULL;
        }
        memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
        s->addrlen = res->ai_addrlen;
        freeaddrinfo(res);
        s->rfd = (struct reactor_fd){.fd = s->fd, .events = EPOLLIN, .cb = on_accept, .ctx = s};
        log_info("mirror: will listen for primaries on %s:%u", addr, port);
        return s;
}

/* Starts accepting: after every volume is added, so a primary that connects while the daemon
 * starts is never told "unknown volume" (which would stop its reconnects). */
int repl_server_listen(struct repl_server *s)
{
        struct create_arg a = {s, -1};
        if (reactor_call_sync(s->r, listen_on_reactor, &a) < 0 || a.rc < 0)
                return -1;
        s->listening = true;
        log_info("mirror: listening for primaries");
        return 0;
}

int repl_server_add(struct repl_server *s, const struct repl_server_volume *vol)
{
        if (s->nvols == MAX_VOLUMES)
                return -ENOSPC;
        struct svol *v = &s->vols[s->nvols];
        memset(v, 0, sizeof(*v));
        v->conf = *vol;
        v->name = strdup(vol->name);
        v->id = strdup(vol->id);
        if (!v->name || !v->id)
                return -ENOMEM;
        v->key = repl_volume_key(vol->id);
        atomic_init(&v->bound_kind, -1);
        pthread_mutex_init(&v->lock, NULL);
        s->nvols++;
        return 0;
}

static void stop_on_reactor(void *arg)
{
        struct repl_server *s = arg;
        s->stopping = true;
        if (s->listening)
                reactor_del_fd(s->r, &s->rfd);
        repl_rdma_listener_close(s->rdma);
        s->rdma = NULL;
        close(s->fd);
        s->fd = -1;
        for (unsigned i = 0; i < s->nvols; i++)
                if (s->vols[i].bound)
                        conn_close(s->vols[i].bound, "gateway stopping");
}

struct ios_arg {
        struct repl_server *s;
        unsigned ios;
};

static void count_ios(void *arg)
{
        struct ios_arg *a = arg;
        a->ios = a->s->ios;
}

/* Until the peer writes already submitted are done (a write waiting for a line lands only
 * once the destager frees one): the daemon's final flush must come after the last of them. */
static void wait_ios(struct repl_server *s)
{
        uint64_t deadline = reactor_now_ns() + STOP_WAIT_NS;
        struct ios_arg a = {s, 0};
        while (reactor_call_sync(s->r, count_ios, &a) == 0 && a.ios) {
                if (reactor_now_ns() > deadline) {
                        log_err("mirror: %u peer writes still running at exit", a.ios);
                        return;
                }
                usleep(10000);
        }
}

void repl_server_stop(struct repl_server *s)
{
        if (!s || s->fd < 0)
                return;
        reactor_call_sync(s->r, stop_on_reactor, s);
        wait_ios(s);
}

void repl_server_destroy(struct repl_server *s)
{
        if (!s)
                return;
        for (unsigned i = 0; i < s->nvols; i++) {
                free(s->vols[i].name);
                free(s->vols[i].id);
                pthread_mutex_destroy(&s->vols[i].lock);
        }
        free(s);
}

struct promote_arg {
        struct repl_server *s;
        const char *id;
        bool force;
        int rc;
};

static void promote_on_reactor(void *arg)
{
        struct promote_arg *a = arg;
        struct svol *v = find_vol(a->s, a->id);
        if (!v) {
                a->rc = -ENOENT;
                return;
        }
        struct repl_state *st = v->conf.state;
        if (repl_state_role(st) == REPL_ROLE_PRIMARY) {
                a->rc = 0;
                return;
        }
        if (!repl_state_consistent(st) && !a->force) {
                a->rc = -EBUSY;
                return;
        }
        if (v->bound)
                conn_close(v->bound, "promoted");
        /* A new generation: a primary that comes back sees this side went on without it. */
        a->rc = repl_state_set(st, REPL_ROLE_PRIMARY, repl_state_new_gen(), repl_state_gen(st));
        if (a->rc == 0)
                a->rc = repl_state_set_needs_full(st, false);
        if (a->rc == 0)
                log_warn("%s: promoted to primary%s", v->name,
                         repl_state_consistent(st) ? "" : " (forced, in the middle of a resync)");
}

int repl_server_promote(struct repl_server *s, const char *id, bool force)
{
        struct promote_arg a = {s, id, force, -ENOENT};
        if (reactor_call_sync(s->r, promote_on_reactor, &a) < 0)
                return -EIO;
        return a.rc;
}

json_t *repl_server_json(struct repl_server *s, const char *id)
{
        struct svol *v = find_vol(s, id);
        if (!v)
                return NULL;
        struct repl_state *st = v->conf.state;
        bool primary = repl_state_role(st) == REPL_ROLE_PRIMARY;
        const char *state = primary    ? "promoted"
                            : v->bound ? (repl_state_consistent(st) ? "synchronized" : "resyncing")
                            : repl_state_consistent(st) ? "waiting for the primary"
                                                        : "inconsistent";
        char gen[40];
        snprintf(gen, sizeof(gen), "%016llx/%016llx", (unsigned long long)repl_state_gen(st),
                 (unsigned long long)repl_state_shared_gen(st));
        json_t *j = json_pack(
            "{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:s}", "mirror_id", v->id,
            "role", primary ? "primary" : "secondary", "state", state, "peer",
            v->bound ? v->peer : "", "lag_bytes", (json_int_t)0, "resync_done_bytes", (json_int_t)0,
            "resync_total_bytes", (json_int_t)0, "consistent", repl_state_consistent(st),
            "applied_writes", (json_int_t)atomic_load(&v->applied_writes), "applied_bytes",
            (json_int_t)atomic_load(&v->applied_bytes), "refused",
            (json_int_t)atomic_load(&v->refused), "generation", gen);
        int kind = atomic_load(&v->bound_kind);
        json_object_set_new(j, "transport",
                            json_string(kind < 0 ? "none" : repl_link_kind_name(kind)));
        /* The secondary's counters are the gateway's (every primary's connection). */
        repl_link_stats_json(j, &s->lstats);
        return j;
}
