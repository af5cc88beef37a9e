/* The RDMA link (repl/link.h): the mirror's byte stream carried in SEND messages over a
 * reliable-connected queue pair set up with RDMA CM (docs/replication.md "The link").
 *
 * Each side registers NRX receive buffers of BUF bytes (posted from the start) and NDATA send
 * buffers of BUF bytes. writev copies stream bytes into an open send buffer; the buffer goes
 * out as one SEND when it is full or at the end of the reactor's loop iteration, so messages
 * written in one iteration share a SEND. Credits keep receives from running out: a side may
 * have at most NDATA stream SENDs the peer has not consumed; every SEND carries, as immediate
 * data, the number of the sender's receive buffers consumed and posted again since its last
 * SEND (credits for the peer), and a side that owes CREDIT_BATCH credits with nothing to send
 * sends a SEND without data just for them. Those credit-only SENDs land in NCTRL receives
 * beyond the NDATA the credits cover and are posted again at once. (RNR retry is still set to
 * "forever" so a slow peer stalls the sender instead of failing the link.)
 *
 * The queue pair, the completion queue and the buffers belong to the link; the protection
 * domain is its own. No caller memory is ever given to the device: a caller's buffer is free
 * once writev returns, like a socket's. Closing moves the queue pair to the error state and
 * waits (bounded) for every posted work request to complete flushed before the queue pair is
 * destroyed and the buffers freed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "repl/link.h"
#include "src/le.h"
#include "src/log.h"
#include "src/reactor.h"

#define BUF          (64u << 10) /* bytes per SEND and per receive buffer */
#define NDATA        32u         /* stream SENDs in flight: the credits */
#define NCTRL        8u          /* receives for credit-only SENDs, beyond the credits */
#define NRX          (NDATA + NCTRL)
#define NSQ          (NDATA + NCTRL)
#define CREDIT_BATCH (NDATA / 2)
#define RESOLVE_MS   1000
#define DRAIN_MS     500
/* CM private data, both ways: magic "IGWL", version, NDATA, BUF (little-endian). */
#define PRIV_MAGIC   0x4c574749u
#define PRIV_VERSION 1u
#define PRIV_LEN     12u

enum wr_kind { WR_RECV = 1, WR_SEND = 2, WR_CREDIT = 3 };
#define WR_ID(kind, idx) (((uint64_t)(kind) << 32) | (idx))

enum rstate { RS_ADDR, RS_ROUTE, RS_CONNECT, RS_UP, RS_DOWN };

struct rx_slot {
        uint32_t len, off;
};

struct rdma_link {
        struct repl_link base; /* first */
        struct rdma_event_channel *ech;
        struct rdma_cm_id *id;
        struct ibv_pd *pd;
        struct ibv_comp_channel *cch;
        struct ibv_cq *cq;
        unsigned cq_unacked;
        struct ibv_mr *rx_mr, *tx_mr;
        uint8_t *rx_mem, *tx_mem;
        struct reactor_fd cm_rfd, cq_rfd;
        bool cm_added, cq_added;
        enum rstate state;
        int error; /* -errno once it failed */
        bool peer_closed;
        bool want_out;
        bool passive; /* accepted: the peer's private data came with the request */
        char peer[64];
        /* receive: buffers holding stream bytes not read yet, in arrival order */
        struct rx_slot rx[NRX];
        unsigned rxq[NRX], rxq_head, rxq_n;
        unsigned rx_posted;
        unsigned owed; /* buffers read and posted again since credits last went out */
        /* send */
        unsigned credits;
        unsigned tx_free[NDATA], tx_nfree;
        int open_slot; /* a send buffer being filled, -1: none */
        uint32_t open_len;
        unsigned sq_posted, credit_inflight;
        struct reactor_deferred flush_work;
        pthread_t owner; /* the reactor's thread: every call comes from there */
        bool off_thread_logged;
};

struct repl_rdma_listener {
        struct reactor *r;
        struct rdma_event_channel *ech;
        struct rdma_cm_id *id;
        struct reactor_fd rfd;
        bool added;
        void (*on_accept)(void *ctx, struct repl_link *l, const char *peer);
        void *ctx;
        struct repl_link_stats *stats;
        char name[64];
};

#define STAT_ADD(rl, f, n)                                                                         \
        do {                                                                                       \
                if ((rl)->base.stats)                                                              \
                        atomic_fetch_add(&(rl)->base.stats->f, (uint64_t)(n));                     \
        } while (0)

bool repl_link_rdma_available(void)
{
        int n = 0;
        struct ibv_device **list = ibv_get_device_list(&n);
        if (list)
                ibv_free_device_list(list);
        return list && n > 0;
}

static int set_nonblock(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
        char host[INET6_ADDRSTRLEN] = "?";
        if (sa && sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                snprintf(buf, len, "%s:%u", host, ntohs(in->sin_port));
        } else if (sa && sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                snprintf(buf, len, "[%s]:%u", host, ntohs(in6->sin6_port));
        } else {
                snprintf(buf, len, "?");
        }
}

static void priv_encode(uint8_t out[PRIV_LEN])
{
        le_put32(out, PRIV_MAGIC);
        le_put16(out + 4, PRIV_VERSION);
        le_put16(out + 6, NDATA);
        le_put32(out + 8, BUF);
}

/* The peer's CM private data must name this link protocol with the same buffers. */
static bool priv_ok(const void *data, uint8_t len, char *why, size_t whylen)
{
        const uint8_t *d = data;
        if (!d || len < PRIV_LEN) {
                snprintf(why, whylen, "no mirror link private data (%u bytes)", len);
                return false;
        }
        if (le_get32(d) != PRIV_MAGIC || le_get16(d + 4) != PRIV_VERSION ||
            le_get16(d + 6) != NDATA || le_get32(d + 8) != BUF) {
                snprintf(why, whylen,
                         "bad mirror link private data (magic %08x, version %u, %u buffers of "
                         "%u bytes)",
                         le_get32(d), le_get16(d + 4), le_get16(d + 6), le_get32(d + 8));
                return false;
        }
        return true;
}

/* ---------------- failing ---------------- */

static void fail(struct rdma_link *rl, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct rdma_link *rl, int err, const char *fmt, ...)
{
        if (rl->state == RS_DOWN)
                return;
        rl->state = RS_DOWN;
        rl->error = err;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rl->base.why, sizeof(rl->base.why), fmt, ap);
        va_end(ap);
}

static void notify(struct rdma_link *rl, uint32_t events)
{
        if (events && rl->base.cb)
                rl->base.cb(&rl->base, events);
}

/* ---------------- posting ---------------- */

static int post_recv(struct rdma_link *rl, unsigned i)
{
        struct ibv_sge sge = {.addr = (uintptr_t)(rl->rx_mem + (size_t)i * BUF),
                              .length = BUF,
                              .lkey = rl->rx_mr->lkey};
        struct ibv_recv_wr wr = {.wr_id = WR_ID(WR_RECV, i), .sg_list = &sge, .num_sge = 1}, *bad;
        if (ibv_post_recv(rl->id->qp, &wr, &bad) != 0)
                return -1;
        rl->rx_posted++;
        return 0;
}

/* One SEND: a send buffer's bytes (slot >= 0), or none (credits only). Either way it carries
 * the credits owed. */
static int post_send(struct rdma_link *rl, int slot, uint32_t len)
{
        struct ibv_sge sge = {0};
        struct ibv_send_wr wr = {.opcode = IBV_WR_SEND_WITH_IMM,
                                 .send_flags = IBV_SEND_SIGNALED,
                                 .imm_data = htonl(rl->owed)},
                           *bad;
        if (slot >= 0) {
                sge = (struct ibv_sge){.addr = (uintptr_t)(rl->tx_mem + (size_t)slot * BUF),
                                       .length = len,
                                       .lkey = rl->tx_mr->lkey};
                wr.sg_list = &sge;
                wr.num_sge = 1;
                wr.wr_id = WR_ID(WR_SEND, (unsigned)slot);
        } else {
                wr.wr_id = WR_ID(WR_CREDIT, 0);
        }
        if (ibv_post_send(rl->id->qp, &wr, &bad) != 0) {
                fail(rl, -EIO, "ibv_post_send: %s", strerror(errno));
                return -1;
        }
        rl->owed = 0;
        rl->sq_posted++;
        if (slot < 0) {
                rl->credit_inflight++;
                STAT_ADD(rl, rdma_credit_updates, 1);
        }
        return 0;
}

static int post_open_slot(struct rdma_link *rl)
{
        if (rl->open_slot < 0)
                return 0;
        int slot = rl->open_slot;
        rl->open_slot = -1;
        if (post_send(rl, slot, rl->open_len) < 0) {
                rl->tx_free[rl->tx_nfree++] = (unsigned)slot;
                return -1;
        }
        return 0;
}

/* End of the loop iteration: the open send buffer goes out; credits owed go with it or, when
 * enough are owed, alone. */
static void flush_work_cb(struct reactor_deferred *d)
{
        struct rdma_link *rl =
            (struct rdma_link *)((char *)d - offsetof(struct rdma_link, flush_work));
        if (rl->state != RS_UP)
                return;
        bool ok = post_open_slot(rl) == 0;
        if (ok && rl->owed >= CREDIT_BATCH && rl->credit_inflight < NCTRL)
                ok = post_send(rl, -1, 0) == 0;
        if (!ok) {
                log_warn("mirror link %s: %s", rl->peer, rl->base.why);
                notify(rl, EPOLLIN | EPOLLERR | EPOLLHUP);
        }
}

/* The link is its reactor's: a call from another thread would race with its completions and
 * with the reactor's deferred list. */
static void check_thread(struct rdma_link *rl, const char *what)
{
        if (pthread_equal(pthread_self(), rl->owner) || rl->off_thread_logged)
                return;
        rl->off_thread_logged = true;
        log_err("mirror link %s: %s called off its reactor's thread (a bug)", rl->peer, what);
}

static bool can_write(const struct rdma_link *rl)
{
        return rl->state == RS_UP &&
               ((rl->open_slot >= 0 && rl->open_len < BUF) || (rl->credits && rl->tx_nfree));
}

/* ---------------- the stream ---------------- */

static ssize_t rl_writev(struct repl_link *l, const struct iovec *iov, int iovcnt)
{
        struct rdma_link *rl = (struct rdma_link *)l;
        check_thread(rl, "writev");
        if (rl->state == RS_DOWN)
                return rl->error ? rl->error : -EPIPE;
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++) {
                const uint8_t *p = iov[i].iov_base;
                size_t left = iov[i].iov_len;
                while (left) {
                        if (rl->open_slot < 0) {
                                if (rl->state != RS_UP || !rl->credits || !rl->tx_nfree)
                                        goto out;
                                rl->open_slot = (int)rl->tx_free[--rl->tx_nfree];
                                rl->open_len = 0;
                                rl->credits--;
                        }
                        uint32_t n = BUF - rl->open_len;
                        if (n > left)
                                n = (uint32_t)left;
                        memcpy(rl->tx_mem + (size_t)rl->open_slot * BUF + rl->open_len, p, n);
                        rl->open_len += n;
                        p += n;
                        left -= n;
                        total += n;
                        if (rl->open_len == BUF && post_open_slot(rl) < 0)
                                return rl->error;
                }
        }
out:
        if (rl->open_slot >= 0)
                reactor_defer(l->r, &rl->flush_work);
        if (!total)
                return -EAGAIN;
        STAT_ADD(rl, tx_bytes[REPL_LINK_RDMA], total);
        return (ssize_t)total;
}

static ssize_t rl_read(struct repl_link *l, void *buf, size_t len)
{
        struct rdma_link *rl = (struct rdma_link *)l;
        check_thread(rl, "read");
        size_t total = 0;
        while (total < len && rl->rxq_n) {
                unsigned i = rl->rxq[rl->rxq_head];
                struct rx_slot *s = &rl->rx[i];
                size_t n = s->len - s->off;
                if (n > len - total)
                        n = len - total;
                memcpy((uint8_t *)buf + total, rl->rx_mem + (size_t)i * BUF + s->off, n);
                s->off += (uint32_t)n;
                total += n;
                if (s->off < s->len)
                        continue;
                rl->rxq_head = (rl->rxq_head + 1) % NRX;
                rl->rxq_n--;
                if (rl->state == RS_UP || rl->state == RS_CONNECT) {
                        if (post_recv(rl, i) < 0)
                                fail(rl, -EIO, "ibv_post_recv: %s", strerror(errno));
                        else
                                rl->owed++;
                }
        }
        if (rl->owed >= CREDIT_BATCH)
                reactor_defer(l->r, &rl->flush_work);
        if (total) {
                STAT_ADD(rl, rx_bytes[REPL_LINK_RDMA], total);
                return (ssize_t)total;
        }
        if (rl->state == RS_DOWN)
                return rl->peer_closed ? 0 : (rl->error ? rl->error : -ECONNRESET);
        return -EAGAIN;
}

static void rl_want_out(struct repl_link *l, bool on)
{
        ((struct rdma_link *)l)->want_out = on;
}

static int rl_connect_error(struct repl_link *l)
{
        struct rdma_link *rl = (struct rdma_link *)l;
        return rl->state == RS_DOWN && !rl->peer_closed ? (rl->error ? rl->error : -EIO) : 0;
}

/* ---------------- completions ---------------- */

static const char *wr_name(uint64_t wr_id)
{
        switch (wr_id >> 32) {
        case WR_RECV:
                return "RECV";
        case WR_SEND:
                return "SEND";
        default:
                return "SEND (credits)";
        }
}

static void handle_wc(struct rdma_link *rl, const struct ibv_wc *wc)
{
        unsigned kind = (unsigned)(wc->wr_id >> 32), idx = (unsigned)wc->wr_id;
        if (kind == WR_RECV)
                rl->rx_posted--;
        else
                rl->sq_posted--;
        if (kind == WR_SEND)
                rl->tx_free[rl->tx_nfree++] = idx;
        if (kind == WR_CREDIT)
                rl->credit_inflight--;
        if (wc->status != IBV_WC_SUCCESS) {
                if (wc->status != IBV_WC_WR_FLUSH_ERR) {
                        STAT_ADD(rl, rdma_wc_errors, 1);
                        log_warn("mirror link %s: %s failed: %s (vendor error 0x%x)", rl->peer,
                                 wr_name(wc->wr_id), ibv_wc_status_str(wc->status), wc->vendor_err);
                }
                fail(rl, -EIO, "%s failed: %s", wr_name(wc->wr_id), ibv_wc_status_str(wc->status));
                return;
        }
        if (kind != WR_RECV) {
                STAT_ADD(rl, rdma_sends, 1);
                return;
        }
        STAT_ADD(rl, rdma_recvs, 1);
        if (wc->wc_flags & IBV_WC_WITH_IMM) {
                rl->credits += ntohl(wc->imm_data);
                if (rl->credits > NDATA) {
                        log_warn("mirror link %s: the peer returned more credits than it has "
                                 "(%u)",
                                 rl->peer, rl->credits);
                        fail(rl, -EPROTO, "bad credits from the peer");
                        return;
                }
        }
        if (wc->byte_len == 0) { /* credits only: the receive goes back at once */
                if (post_recv(rl, idx) < 0)
                        fail(rl, -EIO, "ibv_post_recv: %s", strerror(errno));
                return;
        }
        rl->rx[idx] = (struct rx_slot){.len = wc->byte_len};
        rl->rxq[(rl->rxq_head + rl->rxq_n) % NRX] = idx;
        rl->rxq_n++;
}

static void cq_event(struct reactor_fd *rfd, uint32_t events)
{
        struct rdma_link *rl = rfd->ctx;
        struct ibv_cq *cq;
        void *ctx;
        while (ibv_get_cq_event(rl->cch, &cq, &ctx) == 0)
                rl->cq_unacked++;
        if (rl->cq_unacked >= 64) {
                ibv_ack_cq_events(rl->cq, rl->cq_unacked);
                rl->cq_unacked = 0;
        }
        ibv_req_notify_cq(rl->cq, 0);
        bool was_down = rl->state == RS_DOWN, could_write = can_write(rl);
        unsigned queued = rl->rxq_n;
        struct ibv_wc wc[16];
        int n;
        while ((n = ibv_poll_cq(rl->cq, 16, wc)) > 0)
                for (int i = 0; i < n; i++)
                        handle_wc(rl, &wc[i]);
        uint32_t ev = rl->rxq_n > queued ? EPOLLIN : 0;
        if (rl->want_out && !could_write && can_write(rl))
                ev |= EPOLLOUT;
        if (!was_down && rl->state == RS_DOWN) {
                log_warn("mirror link %s: %s", rl->peer, rl->base.why);
                ev |= EPOLLIN | EPOLLERR | EPOLLHUP;
        }
        notify(rl, ev);
}

/* ---------------- set-up ---------------- */

static int setup_qp(struct rdma_link *rl)
{
        rl->pd = ibv_alloc_pd(rl->id->verbs);
        rl->cch = ibv_create_comp_channel(rl->id->verbs);
        if (!rl->pd || !rl->cch || set_nonblock(rl->cch->fd) < 0)
                return -1;
        rl->cq = ibv_create_cq(rl->id->verbs, (int)(NRX + NSQ), rl, rl->cch, 0);
        if (!rl->cq || ibv_req_notify_cq(rl->cq, 0) != 0)
                return -1;
        rl->rx_mem = aligned_alloc(4096, (size_t)NRX * BUF);
        rl->tx_mem = aligned_alloc(4096, (size_t)NDATA * BUF);
        if (!rl->rx_mem || !rl->tx_mem)
                return -1;
        rl->rx_mr = ibv_reg_mr(rl->pd, rl->rx_mem, (size_t)NRX * BUF, IBV_ACCESS_LOCAL_WRITE);
        rl->tx_mr = ibv_reg_mr(rl->pd, rl->tx_mem, (size_t)NDATA * BUF, 0);
        if (!rl->rx_mr || !rl->tx_mr)
                return -1;
        struct ibv_qp_init_attr qa = {
            .send_cq = rl->cq,
            .recv_cq = rl->cq,
            .cap = {.max_send_wr = NSQ, .max_recv_wr = NRX, .max_send_sge = 1, .max_recv_sge = 1},
            .qp_type = IBV_QPT_RC,
            .sq_sig_all = 1,
        };
        if (rdma_create_qp(rl->id, rl->pd, &qa) != 0)
                return -1;
        for (unsigned i = 0; i < NRX; i++)
                if (post_recv(rl, i) < 0)
                        return -1;
        rl->cq_rfd =
            (struct reactor_fd){.fd = rl->cch->fd, .events = EPOLLIN, .cb = cq_event, .ctx = rl};
        if (reactor_add_fd(rl->base.r, &rl->cq_rfd) < 0)
                return -1;
        rl->cq_added = true;
        return 0;
}

static struct rdma_conn_param conn_param(uint8_t priv[PRIV_LEN])
{
        priv_encode(priv);
        return (struct rdma_conn_param){.private_data = priv,
                                        .private_data_len = PRIV_LEN,
                                        .retry_count = 7,
                                        .rnr_retry_count = 7};
}

static void cm_event(struct reactor_fd *rfd, uint32_t events)
{
        struct rdma_link *rl = rfd->ctx;
        struct rdma_cm_event *ev;
        uint32_t out = 0;
        bool was_down = rl->state == RS_DOWN;
        while (rdma_get_cm_event(rl->ech, &ev) == 0) {
                enum rdma_cm_event_type type = ev->event;
                int status = ev->status;
                char why[160];
                /* The accepting side's answer names the link protocol too (none: tolerated). */
                bool priv = type != RDMA_CM_EVENT_ESTABLISHED || rl->passive ||
                            !ev->param.conn.private_data_len ||
                            priv_ok(ev->param.conn.private_data, ev->param.conn.private_data_len,
                                    why, sizeof(why));
                rdma_ack_cm_event(ev);
                if (rl->state == RS_DOWN)
                        continue;
                switch (type) {
                case RDMA_CM_EVENT_ADDR_RESOLVED:
                        rl->state = RS_ROUTE;
                        if (rdma_resolve_route(rl->id, RESOLVE_MS) != 0)
                                fail(rl, -errno, "rdma_resolve_route: %s", strerror(errno));
                        break;
                case RDMA_CM_EVENT_ROUTE_RESOLVED: {
                        rl->state = RS_CONNECT;
                        uint8_t pd[PRIV_LEN];
                        struct rdma_conn_param cp = conn_param(pd);
                        if (setup_qp(rl) < 0)
                                fail(rl, -errno, "queue pair set-up: %s", strerror(errno));
                        else if (rdma_connect(rl->id, &cp) != 0)
                                fail(rl, -errno, "rdma_connect: %s", strerror(errno));
                        break;
                }
                case RDMA_CM_EVENT_ESTABLISHED:
                        if (!priv) {
                                log_warn("mirror link %s: %s", rl->peer, why);
                                fail(rl, -EPROTO, "%s", why);
                                break;
                        }
                        if (rl->state != RS_UP) {
                                rl->state = RS_UP;
                                rl->credits += NDATA;
                                out |= EPOLLOUT;
                        }
                        break;
                case RDMA_CM_EVENT_DISCONNECTED:
                        fail(rl, -ECONNRESET, "the peer disconnected");
                        rl->peer_closed = true;
                        break;
                case RDMA_CM_EVENT_DEVICE_REMOVAL:
                        fail(rl, -ENODEV, "the RDMA device was removed");
                        break;
                case RDMA_CM_EVENT_REJECTED:
                        fail(rl, -ECONNREFUSED, "rdma_cm: connection rejected (status %d)", status);
                        break;
                case RDMA_CM_EVENT_TIMEWAIT_EXIT:
                        break;
                default:
                        fail(rl, status < 0 ? status : -EHOSTUNREACH, "rdma_cm: %s (status %d)",
                             rdma_event_str(type), status);
                        break;
                }
        }
        if (!was_down && rl->state == RS_DOWN) {
                if (!rl->peer_closed)
                        log_info("mirror link %s: %s", rl->peer, rl->base.why);
                out |= EPOLLIN | EPOLLERR | EPOLLHUP;
        }
        notify(rl, out);
}

static const struct repl_link_ops rdma_ops;

static struct rdma_link *link_new(const struct repl_link_conf *c)
{
        struct rdma_link *rl = calloc(1, sizeof(*rl));
        if (!rl)
                return NULL;
        rl->base = (struct repl_link){.ops = &rdma_ops,
                                      .kind = REPL_LINK_RDMA,
                                      .r = c->r,
                                      .cb = c->cb,
                                      .ctx = c->ctx,
                                      .stats = c->stats};
        rl->open_slot = -1;
        rl->flush_work.cb = flush_work_cb;
        rl->owner = pthread_self();
        for (unsigned i = 0; i < NDATA; i++)
                rl->tx_free[rl->tx_nfree++] = NDATA - 1 - i;
        return rl;
}

static int add_cm_fd(struct rdma_link *rl)
{
        rl->cm_rfd =
            (struct reactor_fd){.fd = rl->ech->fd, .events = EPOLLIN, .cb = cm_event, .ctx = rl};
        if (reactor_add_fd(rl->base.r, &rl->cm_rfd) < 0)
                return -1;
        rl->cm_added = true;
        return 0;
}

/* ---------------- teardown ---------------- */

/* Waits (bounded) until every posted work request has completed: after the queue pair went
 * to the error state they all do, flushed. */
static void drain(struct rdma_link *rl)
{
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                struct ibv_wc wc[16];
                int n = ibv_poll_cq(rl->cq, 16, wc);
                for (int i = 0; i < n; i++) {
                        if ((wc[i].wr_id >> 32) == WR_RECV)
                                rl->rx_posted--;
                        else
                                rl->sq_posted--;
                }
                if (rl->rx_posted == 0 && rl->sq_posted == 0)
                        return;
                clock_gettime(CLOCK_MONOTONIC, &now);
                long ms = (now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
                if (ms > DRAIN_MS) {
                        log_warn("mirror link %s: %u receives and %u sends not flushed after "
                                 "%d ms; destroying the queue pair anyway",
                                 rl->peer, rl->rx_posted, rl->sq_posted, DRAIN_MS);
                        return;
                }
                if (n <= 0)
                        usleep(1000);
        }
}

static void rl_describe(struct repl_link *l, char *buf, size_t len)
{
        struct rdma_link *rl = (struct rdma_link *)l;
        snprintf(buf, len,
                 "rdma: state %d, credits %u, owed %u, %u receives posted, %u buffers unread, "
                 "%u sends posted (%u credit-only), %u send buffers free, open %d/%u%s",
                 rl->state, rl->credits, rl->owed, rl->rx_posted, rl->rxq_n, rl->sq_posted,
                 rl->credit_inflight, rl->tx_nfree, rl->open_slot, rl->open_len,
                 rl->flush_work.queued ? ", flush queued" : "");
}

static void rl_close(struct repl_link *l)
{
        struct rdma_link *rl = (struct rdma_link *)l;
        reactor_defer_cancel(l->r, &rl->flush_work);
        if (rl->cq_added)
                reactor_del_fd(l->r, &rl->cq_rfd);
        if (rl->cm_added)
                reactor_del_fd(l->r, &rl->cm_rfd);
        if (rl->id && rl->id->qp) {
                if (rl->state == RS_UP)
                        rdma_disconnect(rl->id);
                struct ibv_qp_attr attr = {.qp_state = IBV_QPS_ERR};
                ibv_modify_qp(rl->id->qp, &attr, IBV_QP_STATE);
                drain(rl);
                rdma_destroy_qp(rl->id);
        }
        if (rl->cq) {
                if (rl->cq_unacked)
                        ibv_ack_cq_events(rl->cq, rl->cq_unacked);
                ibv_destroy_cq(rl->cq);
        }
        if (rl->cch)
                ibv_destroy_comp_channel(rl->cch);
        if (rl->rx_mr)
                ibv_dereg_mr(rl->rx_mr);
        if (rl->tx_mr)
                ibv_dereg_mr(rl->tx_mr);
        free(rl->rx_mem);
        free(rl->tx_mem);
        if (rl->pd)
                ibv_dealloc_pd(rl->pd);
        if (rl->id)
                rdma_destroy_id(rl->id);
        if (rl->ech)
                rdma_destroy_event_channel(rl->ech);
        free(rl);
}

static const struct repl_link_ops rdma_ops = {
    .writev = rl_writev,
    .read = rl_read,
    .want_out = rl_want_out,
    .connect_error = rl_connect_error,
    .describe = rl_describe,
    .close = rl_close,
};

/* ---------------- connecting ---------------- */

struct repl_link *repl_link_rdma_connect(const struct repl_link_conf *c, const struct sockaddr *to,
                                         socklen_t tolen, const struct sockaddr *from)
{
        (void)tolen;
        if (!repl_link_rdma_available()) {
                errno = ENODEV;
                return NULL;
        }
        struct rdma_link *rl = link_new(c);
        if (!rl)
                return NULL;
        format_addr(to, rl->peer, sizeof(rl->peer));
        rl->ech = rdma_create_event_channel();
        int e;
        if (!rl->ech || set_nonblock(rl->ech->fd) < 0 ||
            rdma_create_id(rl->ech, &rl->id, rl, RDMA_PS_TCP) != 0 ||
            rdma_resolve_addr(rl->id, (struct sockaddr *)from, (struct sockaddr *)to, RESOLVE_MS) !=
                0 ||
            add_cm_fd(rl) < 0) {
                e = errno;
                rl_close(&rl->base);
                errno = e;
                return NULL;
        }
        rl->state = RS_ADDR;
        return &rl->base;
}

/* ---------------- listening ---------------- */

static void connect_request(struct repl_rdma_listener *ls, struct rdma_cm_event *ev)
{
        struct rdma_cm_id *id = ev->id;
        char peer[64], why[160];
        format_addr(rdma_get_peer_addr(id), peer, sizeof(peer));
        if (!priv_ok(ev->param.conn.private_data, ev->param.conn.private_data_len, why,
                     sizeof(why))) {
                log_warn("mirror: RDMA connection from %s refused: %s", peer, why);
                rdma_reject(id, NULL, 0);
                rdma_ack_cm_event(ev);
                rdma_destroy_id(id);
                return;
        }
        /* Acked before the id moves to the link's own event channel. */
        rdma_ack_cm_event(ev);
        struct repl_link_conf lc = {.r = ls->r, .stats = ls->stats};
        struct rdma_link *rl = link_new(&lc);
        const char *step = "out of memory";
        if (!rl)
                goto refuse;
        snprintf(rl->peer, sizeof(rl->peer), "%s", peer);
        rl->passive = true;
        step = "event channel";
        rl->ech = rdma_create_event_channel();
        if (!rl->ech || set_nonblock(rl->ech->fd) < 0 || rdma_migrate_id(id, rl->ech) != 0)
                goto refuse;
        rl->id = id;
        id->context = rl;
        step = "queue pair";
        if (setup_qp(rl) < 0)
                goto refuse;
        step = "epoll";
        if (add_cm_fd(rl) < 0)
                goto refuse;
        rl->state = RS_CONNECT;
        uint8_t pd[PRIV_LEN];
        struct rdma_conn_param cp = conn_param(pd);
        step = "rdma_accept";
        if (rdma_accept(id, &cp) != 0)
                goto refuse;
        ls->on_accept(ls->ctx, &rl->base, peer);
        return;
refuse:
        log_warn("mirror: RDMA connection from %s: %s failed: %s", peer, step, strerror(errno));
        rdma_reject(id, NULL, 0);
        if (rl) {
                rl->id = id; /* destroyed with the link */
                rl_close(&rl->base);
        } else {
                rdma_destroy_id(id);
        }
}

static void listener_event(struct reactor_fd *rfd, uint32_t events)
{
        struct repl_rdma_listener *ls = rfd->ctx;
        struct rdma_cm_event *ev;
        while (ls->added && rdma_get_cm_event(ls->ech, &ev) == 0) {
                if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
                        connect_request(ls, ev);
                        continue;
                }
                if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
                        log_warn("mirror: the RDMA device of %s was removed; primaries connect "
                                 "over TCP only",
                                 ls->name);
                        rdma_ack_cm_event(ev);
                        reactor_del_fd(ls->r, &ls->rfd);
                        ls->added = false;
                        return;
                }
                rdma_ack_cm_event(ev);
        }
}

struct repl_rdma_listener *
repl_rdma_listen(struct reactor *r, const struct sockaddr *addr, socklen_t len,
                 void (*on_accept)(void *ctx, struct repl_link *l, const char *peer), void *ctx,
                 struct repl_link_stats *stats)
{
        (void)len;
        struct repl_rdma_listener *ls = calloc(1, sizeof(*ls));
        if (!ls)
                return NULL;
        *ls =
            (struct repl_rdma_listener){.r = r, .on_accept = on_accept, .ctx = ctx, .stats = stats};
        format_addr(addr, ls->name, sizeof(ls->name));
        const char *step = "rdma_create_event_channel";
        ls->ech = rdma_create_event_channel();
        if (!ls->ech || set_nonblock(ls->ech->fd) < 0)
                goto fail;
        step = "rdma_create_id";
        if (rdma_create_id(ls->ech, &ls->id, ls, RDMA_PS_TCP) != 0)
                goto fail;
        step = "bind (is the address on an RDMA-capable interface?)";
        if (rdma_bind_addr(ls->id, (struct sockaddr *)addr) != 0)
                goto fail;
        step = "rdma_listen";
        if (rdma_listen(ls->id, 16) != 0)
                goto fail;
        ls->rfd = (struct reactor_fd){
            .fd = ls->ech->fd, .events = EPOLLIN, .cb = listener_event, .ctx = ls};
        step = "epoll";
        if (reactor_add_fd(r, &ls->rfd) < 0)
                goto fail;
        ls->added = true;
        log_info("mirror: listening for primaries over RDMA on %s (device %s)", ls->name,
                 ls->id->verbs ? ibv_get_device_name(ls->id->verbs->device) : "any");
        return ls;
fail:
        log_warn("mirror: RDMA listener on %s: %s: %s", ls->name, step, strerror(errno));
        if (ls->id)
                rdma_destroy_id(ls->id);
        if (ls->ech)
                rdma_destroy_event_channel(ls->ech);
        free(ls);
        return NULL;
}

/* On the listener's reactor. Connections already accepted are their owners' to close. */
void repl_rdma_listener_close(struct repl_rdma_listener *ls)
{
        if (!ls)
                return;
        if (ls->added)
                reactor_del_fd(ls->r, &ls->rfd);
        rdma_destroy_id(ls->id);
        rdma_destroy_event_channel(ls->ech);
        free(ls);
}
