/* The primary side of a mirrored volume (repl/mirror.h). Everything about the connection runs
 * on the home reactor; the I/O reactors only read 'connected' and hand writes over. */
#include "repl/mirror.h"

#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "iscsi/crc32c.h"
#include "repl/link.h"
#include "repl/proto.h"
#include "repl/state.h"
#include "src/log.h"
#include "src/reactor.h"

#define WINDOW        256         /* messages the peer has not answered yet */
#define TICK_NS       20000000ull /* heartbeats, timeouts, reconnects, resync steps */
#define PING_IDLE_NS  1000000000ull
#define RECONNECT_NS  1000000000ull
#define PEER_FLUSH_NS 1000000000ull /* how often the peer is asked to make writes stable */
#define SEQ_RESERVE   (1u << 25)

enum mstate {
        MS_CONNECTING,
        MS_HELLO,
        MS_RESYNC,
        MS_SYNCED,
        MS_DEGRADED,
        MS_SEVERED,
        MS_SPLIT_BRAIN,
        MS_REFUSED,
        MS_BOTH_PRIMARY, /* the peer is primary too but the data did not diverge: retries */
        MS_STANDBY,      /* this side is secondary: no connection, nothing mirrored */
};

static const char *const state_names[] = {
    "connecting", "establishing", "resyncing", "synchronized", "degraded",
    "severed",    "split-brain",  "refused",   "both-primary", "standby"};

/* A primary's start-up hold (docs/replication.md, "Start-up"): waiting for the first
 * pairing attempt's outcome (at most startup_wait_ms), or, once the peer answered that it is
 * primary too, for the operator (or a pairing). */
enum hold { HOLD_NONE, HOLD_WAITING, HOLD_OPERATOR };

/* A demote's handover (mirror_step_down). */
enum handover { HO_NONE, HO_DRAINING, HO_FLUSHING, HO_CLEAN, HO_FAILED };

enum mkind { K_IO, K_RESYNC, K_HELLO, K_PING, K_SYNCED, K_FLUSH, K_HANDOVER };

struct mmsg {
        uint8_t hdr[REPL_HDR_LEN];
        const struct iovec *iov; /* payload */
        int iovcnt;
        struct iovec own;
        uint32_t len; /* payload bytes */
        uint64_t sent;
        uint64_t msg_id;
        uint64_t sent_ns;
        enum mkind kind;
        struct mmsg *next;
};

/* One write on its way to both copies. */
struct mio {
        struct mmsg msg; /* first */
        struct mirror *m;
        struct volume_io *io;
        void (*done)(struct volume_io *io, int result);
        void *priv;
        atomic_int pending; /* the local copy and the peer */
        int local_res;
        int peer_res; /* -EIO: the peer lacks it and that could not be recorded */
        bool local_posted;
};

struct mirror {
        char *name, *id, *peer;
        struct sockaddr_storage addr;
        socklen_t addrlen;
        uint64_t size;
        uint32_t block_size, timeout_ms;
        uint64_t resync_rate;
        bool strict;
        uint64_t resync_next_ns; /* throttle: no region before */
        struct reactor *home;
        struct volume *v;
        struct repl_state *st;
        uint64_t key;

        atomic_int state;
        atomic_bool connected;  /* writes go to the peer */
        struct repl_link *link; /* NULL: not connected */
        enum repl_transport transport;
        struct sockaddr_storage src; /* the RDMA source address (src_len 0: any) */
        socklen_t src_len;
        bool tcp_fallback; /* auto: RDMA failed and this attempt is TCP (logged on change) */
        bool fallback_logged;
        struct repl_link_stats lstats;
        atomic_int link_kind; /* enum repl_link_kind of the connected link, -1: none */
        uint8_t rx_hdr[REPL_HDR_LEN];
        uint8_t rx_payload[REPL_HELLO_LEN];
        size_t rx_got;
        struct repl_hdr rxh;
        bool rx_in_payload;
        struct mmsg *txq, *txq_tail; /* not yet written whole */
        struct mmsg *win, *win_tail; /* written, waiting for the reply */
        unsigned win_count;
        uint64_t next_msg_id;
        uint64_t last_rx_ns, last_tx_ns, next_connect_ns;
        unsigned connect_failures;
        struct reactor_timer tick;
        uint64_t last_tick_ns;
        bool stopping;
        bool force_full;

        /* start-up hold; on home */
        enum hold hold;
        uint32_t startup_wait_ms;
        uint64_t hold_deadline_ns;
        void (*startup)(void *ctx, enum mirror_startup outcome);
        void *startup_ctx;

        /* Regions written to the peer since its last flush (recent) and while the flush in
         * flight runs (flushing): if the link drops they are resynced, since a peer that
         * crashed may have lost what it held only in its cache. */
        uint64_t *recent, *flushing;
        size_t words;
        bool recent_any;        /* a bit is set in recent */
        uint64_t unstable;      /* bits set in recent | flushing */
        enum handover handover; /* on home; read by mirror_step_down through call_sync */
        bool flush_inflight;
        bool ping_inflight;
        uint64_t last_flush_ns;

        /* resync */
        bool resync_busy;
        struct volume_ticket rticket;
        struct volume_io rio;
        struct iovec riov;
        uint8_t *rbuf;
        struct mmsg rmsg;
        uint64_t rregion, rlen;
        bool rregion_marked; /* a failed write marked it again while it was being copied */
        uint64_t resync_total, resync_done;
        uint64_t resync_started_ns;
        uint64_t synced_sent;

        pthread_mutex_t lock; /* last_error */
        char last_error[512];
        atomic_uint_fast64_t mirrored_writes, mirrored_bytes, degraded_writes, peer_errors,
            link_failures, resync_regions, resync_bytes, lag_bytes, unstable_regions,
            full_copies; /* pairings that copied every region */
};

static void set_state(struct mirror *m, enum mstate s)
{
        atomic_store(&m->state, s);
}

static enum mstate get_state(struct mirror *m)
{
        return (enum mstate)atomic_load(&m->state);
}

static void set_error(struct mirror *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct mirror *m, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        pthread_mutex_lock(&m->lock);
        vsnprintf(m->last_error, sizeof(m->last_error), fmt, ap);
        pthread_mutex_unlock(&m->lock);
        va_end(ap);
}

/* ---------------- the start-up hold ---------------- */

/* Reports an outcome of the start-up hold to the daemon, once per change: paired or alone
 * end it (serve), stepped down ends it (standby), held keeps the LUN from serving until a
 * pairing or the operator ends it. */
static void startup_outcome(struct mirror *m, enum mirror_startup outcome)
{
        if (m->hold == HOLD_NONE || (m->hold == HOLD_OPERATOR && outcome == MIRROR_START_HELD))
                return;
        m->hold = outcome == MIRROR_START_HELD ? HOLD_OPERATOR : HOLD_NONE;
        if (m->startup)
                m->startup(m->startup_ctx, outcome);
}

/* Serving alone is for a peer that never answered, or refused the pairing: once it said it
 * is primary, only a pairing or the operator ends the hold. */
static void startup_alone(struct mirror *m, const char *why)
{
        if (m->hold != HOLD_WAITING)
                return;
        log_warn("%s: %s: serving without the mirror peer %s (degraded: changed regions are "
                 "recorded for its resync)",
                 m->name, why, m->peer);
        startup_outcome(m, MIRROR_START_ALONE);
}

/* ---------------- completing writes ---------------- */

static void mio_finish(void *arg)
{
        struct mio *mio = arg;
        struct volume_io *io = mio->io;
        int res = mio->local_res < 0 ? mio->local_res : mio->peer_res;
        io->done = mio->done;
        io->priv = mio->priv;
        free(mio);
        io->done(io, res);
}

static void mio_local_done(struct volume_io *io, int result)
{
        struct mio *mio = io->priv;
        mio->local_res = result;
        if (atomic_fetch_sub(&mio->pending, 1) == 1)
                mio_finish(mio);
}

static void mio_local_submit(void *arg)
{
        struct mio *mio = arg;
        mio->io->done = mio_local_done;
        mio->io->priv = mio;
        volume_submit_local(mio->m->v, mio->io);
}

/* The peer's part of a write is over (ok, or the region is now marked for resync). On home. */
static void mio_peer_done(struct mio *mio)
{
        if (!mio->local_posted) {
                mio->local_posted = true;
                reactor_post(mio->io->reactor, mio_local_submit, mio);
        }
        if (atomic_fetch_sub(&mio->pending, 1) == 1)
                reactor_post(mio->io->reactor, mio_finish, mio);
}

/* Records that the peer may lack this write's range: on disk before the write completes. A
 * write whose range cannot be recorded fails (it is neither mirrored nor remembered). */
static void mark_region(struct mirror *m, struct mio *mio)
{
        const struct volume_io *io = mio->io;
        /* Acknowledged without the peer: this side's data is no longer the shared one. (With
         * the link up, the region is resynced in the same pairing: no new generation.) */
        int rc = atomic_load(&m->connected) ? 0 : repl_state_diverge(m->st);
        if (rc == 0)
                rc = repl_state_mark(m->st, io->offset, io->length);
        if (rc < 0) {
                log_err("%s: mirror bitmap: %s; the write fails", m->name, strerror(-rc));
                mio->peer_res = -EIO;
        }
        uint64_t gran = repl_state_granularity(m->st);
        if (m->resync_busy && io->offset < (m->rregion + 1) * gran &&
            m->rregion * gran < io->offset + io->length)
                m->rregion_marked = true; /* the copy in flight does not clear it */
}

/* ---------------- what the peer may not have made stable ---------------- */

static void note_recent(struct mirror *m, uint64_t offset, uint64_t length)
{
        uint64_t gran = repl_state_granularity(m->st);
        uint64_t last = (offset + length - 1) / gran;
        for (uint64_t r = offset / gran; r <= last && r < repl_state_regions(m->st); r++) {
                uint64_t bit = 1ull << (r % 64);
                if (!((m->recent[r / 64] | m->flushing[r / 64]) & bit))
                        m->unstable++;
                m->recent[r / 64] |= bit;
        }
        m->recent_any = true;
        atomic_store(&m->unstable_regions, m->unstable);
}

/* The peer made what it held stable: only the regions written since it was asked stay. */
static void flushed(struct mirror *m)
{
        for (size_t i = 0; i < m->words; i++) {
                m->unstable -= (uint64_t)__builtin_popcountll(m->flushing[i] & ~m->recent[i]);
                m->flushing[i] = 0;
        }
        atomic_store(&m->unstable_regions, m->unstable);
}

static void forget_recent(struct mirror *m)
{
        memset(m->recent, 0, m->words * sizeof(uint64_t));
        memset(m->flushing, 0, m->words * sizeof(uint64_t));
        m->recent_any = false;
        m->unstable = 0;
        atomic_store(&m->unstable_regions, 0);
        m->flush_inflight = false;
}

/* The link dropped: what the peer held only in its cache must be sent again. */
static void recent_to_bitmap(struct mirror *m)
{
        for (size_t i = 0; i < m->words; i++)
                m->recent[i] |= m->flushing[i];
        if (repl_state_mark_bits(m->st, m->recent) < 0)
                log_err("%s: cannot record the regions the peer may have lost", m->name);
        forget_recent(m);
}

/* ---------------- the connection ---------------- */

static void tx_kick(struct mirror *m);
static void resync_step(struct mirror *m);
static void start_resync(struct mirror *m, const char *why);
static void handover_step(struct mirror *m);
static void queue_ctrl(struct mirror *m, enum mkind kind, uint16_t type, const void *payload,
                       uint32_t len);

static void free_msg(struct mirror *m, struct mmsg *msg, bool delivered, uint32_t status)
{
        atomic_fetch_sub(&m->lag_bytes, msg->len);
        switch (msg->kind) {
        case K_IO: {
                struct mio *mio = (struct mio *)msg;
                if (!delivered || status != REPL_OK) {
                        if (delivered) {
                                atomic_fetch_add(&m->peer_errors, 1);
                                log_warn("%s: the peer failed a write (%s); the region will be "
                                         "resynced",
                                         m->name, repl_status_str(status));
                        }
                        mark_region(m, mio);
                }
                mio_peer_done(mio);
                return;
        }
        case K_RESYNC:
                m->resync_busy = false;
                if (delivered && status == REPL_OK && !m->rregion_marked) {
                        repl_state_clear(m->st, m->rregion);
                        m->resync_done++;
                        atomic_fetch_add(&m->resync_regions, 1);
                        atomic_fetch_add(&m->resync_bytes, m->rlen);
                }
                return;
        case K_SYNCED:
                if (delivered && status == REPL_OK && get_state(m) == MS_RESYNC) {
                        repl_state_set(m->st, REPL_ROLE_PRIMARY, repl_state_gen(m->st),
                                       repl_state_gen(m->st));
                        repl_state_flush(m->st);
                        set_state(m, MS_SYNCED);
                        log_info("%s: mirror synchronized with %s (%llu regions copied)", m->name,
                                 m->peer, (unsigned long long)m->resync_done);
                }
                m->synced_sent = 0;
                free(msg);
                return;
        case K_FLUSH:
                if (delivered && status == REPL_OK)
                        flushed(m);
                m->flush_inflight = false;
                free(msg);
                return;
        case K_HANDOVER:
                if (m->handover == HO_FLUSHING)
                        m->handover = delivered && status == REPL_OK ? HO_CLEAN : HO_FAILED;
                free(msg);
                return;
        case K_PING:
                m->ping_inflight = false;
                free(msg);
                return;
        case K_HELLO:
                free(msg);
                return;
        }
}

/* Asks the peer to make what it holds stable; the regions written before it are then safe. */
static void peer_flush(struct mirror *m)
{
        if (!m->recent_any || m->flush_inflight)
                return;
        for (size_t i = 0; i < m->words; i++) {
                m->flushing[i] |= m->recent[i];
                m->recent[i] = 0;
        }
        m->recent_any = false;
        m->flush_inflight = true;
        m->last_flush_ns = reactor_now_ns();
        queue_ctrl(m, K_FLUSH, REPL_FLUSH, NULL, 0);
}

/* The link is gone: every write the peer has not confirmed is recorded for resync and
 * completes locally; from now on writes are recorded (degraded). */
static void link_failed(struct mirror *m, const char *reason)
{
        char why[160]; /* reason may be the link's own text, freed with it below */
        snprintf(why, sizeof(why), "%s", reason);
        bool was_connected = atomic_exchange(&m->connected, false);
        atomic_store(&m->link_kind, -1);
        char desc[256] = "";
        if (m->link) {
                repl_link_describe(m->link, desc, sizeof(desc));
                repl_link_close(m->link);
                m->link = NULL;
        }
        if (was_connected) {
                atomic_fetch_add(&m->link_failures, 1);
                log_warn("%s: mirror link to %s lost (%s; %s): degraded, changed regions are "
                         "recorded",
                         m->name, m->peer, why, desc);
        }
        set_error(m, "%s", why);
        if (was_connected)
                recent_to_bitmap(m);
        struct mmsg *lists[2] = {m->win, m->txq};
        m->win = m->win_tail = m->txq = m->txq_tail = NULL;
        m->win_count = 0;
        for (int i = 0; i < 2; i++)
                for (struct mmsg *msg = lists[i], *next; msg; msg = next) {
                        next = msg->next;
                        free_msg(m, msg, false, REPL_E_PROTOCOL);
                }
        m->rx_got = 0;
        m->rx_in_payload = false;
        m->synced_sent = 0;
        m->ping_inflight = false;
        if (m->handover == HO_DRAINING || m->handover == HO_FLUSHING)
                m->handover = HO_FAILED;
        enum mstate s = get_state(m);
        if (s != MS_SEVERED && s != MS_SPLIT_BRAIN && s != MS_REFUSED && s != MS_BOTH_PRIMARY &&
            s != MS_STANDBY)
                set_state(m, MS_DEGRADED);
        m->next_connect_ns = reactor_now_ns() + RECONNECT_NS;
}

static void queue_msg(struct mirror *m, struct mmsg *msg, uint16_t type, uint64_t offset,
                      uint32_t seq, uint64_t span)
{
        uint32_t flags = m->strict && msg->kind == K_IO ? REPL_F_STABLE : 0;
        msg->msg_id = ++m->next_msg_id;
        msg->sent = 0;
        msg->next = NULL;
        uint32_t crc = msg->iovcnt ? crc32c_iov(0, msg->iov, msg->iovcnt) : 0;
        struct repl_hdr h = {.type = type,
                             .msg_id = msg->msg_id,
                             .volume = m->key,
                             .offset = offset,
                             .length = msg->len,
                             .seq = seq,
                             .span = span,
                             .payload_crc = crc,
                             .flags = flags};
        repl_hdr_encode(&h, msg->hdr);
        atomic_fetch_add(&m->lag_bytes, msg->len);
        if (m->txq_tail)
                m->txq_tail->next = msg;
        else
                m->txq = msg;
        m->txq_tail = msg;
        tx_kick(m);
}

static void queue_ctrl(struct mirror *m, enum mkind kind, uint16_t type, const void *payload,
                       uint32_t len)
{
        struct mmsg *msg = calloc(1, sizeof(*msg) + len);
        if (!msg)
                return;
        msg->kind = kind;
        if (len) {
                memcpy(msg + 1, payload, len);
                msg->own = (struct iovec){msg + 1, len};
                msg->iov = &msg->own;
                msg->iovcnt = 1;
                msg->len = len;
        }
        queue_msg(m, msg, type, 0, 0, 0);
}

/* Written whole: now it waits for the reply, and a write's local copy may go ahead. */
static void msg_written(struct mirror *m, struct mmsg *msg)
{
        msg->sent_ns = reactor_now_ns();
        m->last_tx_ns = msg->sent_ns;
        if (m->win_tail)
                m->win_tail->next = msg;
        else
                m->win = msg;
        m->win_tail = msg;
        msg->next = NULL;
        m->win_count++;
        if (msg->kind == K_IO) {
                struct mio *mio = (struct mio *)msg;
                mio->local_posted = true;
                reactor_post(mio->io->reactor, mio_local_submit, mio);
        }
}

static int build_iov(const struct mmsg *msg, struct iovec *iov, int max)
{
        int n = 0;
        uint64_t skip = msg->sent;
        if (skip < REPL_HDR_LEN)
                iov[n++] = (struct iovec){(uint8_t *)msg->hdr + skip, REPL_HDR_LEN - skip};
        skip = skip > REPL_HDR_LEN ? skip - REPL_HDR_LEN : 0;
        uint64_t left = msg->len;
        for (int i = 0; i < msg->iovcnt && n < max && left; i++) {
                size_t len = msg->iov[i].iov_len < left ? msg->iov[i].iov_len : left;
                left -= len;
                if (skip >= len) {
                        skip -= len;
                        continue;
                }
                iov[n++] = (struct iovec){(uint8_t *)msg->iov[i].iov_base + skip, len - skip};
                skip = 0;
        }
        return n;
}

static void tx_kick(struct mirror *m)
{
        while (m->link && m->txq && m->win_count < WINDOW &&
               (atomic_load(&m->connected) || m->txq->kind == K_HELLO)) {
                struct mmsg *msg = m->txq;
                struct iovec iov[64];
                int n = build_iov(msg, iov, 64);
                ssize_t w = repl_link_writev(m->link, iov, n);
                if (w == -EAGAIN) {
                        repl_link_want_out(m->link, true);
                        return;
                }
                if (w < 0) {
                        link_failed(m, strerror((int)-w));
                        return;
                }
                msg->sent += (uint64_t)w;
                if (msg->sent < REPL_HDR_LEN + (uint64_t)msg->len)
                        continue;
                m->txq = msg->next;
                if (!m->txq)
                        m->txq_tail = NULL;
                msg_written(m, msg);
        }
        if (m->link)
                repl_link_want_out(m->link, false);
}

/* ---------------- the handshake ---------------- */

static void send_hello(struct mirror *m)
{
        struct repl_hello h = {.size = m->size,
                               .block_size = m->block_size,
                               .role = REPL_ROLE_PRIMARY,
                               .gen = repl_state_gen(m->st),
                               .shared_gen = repl_state_shared_gen(m->st)};
        snprintf(h.id, sizeof(h.id), "%s", m->id);
        uint8_t buf[REPL_HELLO_LEN];
        repl_hello_encode(&h, buf);
        queue_ctrl(m, K_HELLO, REPL_HELLO, buf, sizeof(buf));
        set_state(m, MS_HELLO);
}

static void start_resync(struct mirror *m, const char *why)
{
        m->resync_total = repl_state_count(m->st);
        m->resync_done = 0;
        m->resync_started_ns = reactor_now_ns();
        set_state(m, MS_RESYNC);
        log_info("%s: mirror resync to %s (%s): %llu regions of %u bytes to copy", m->name, m->peer,
                 why, (unsigned long long)m->resync_total, repl_state_granularity(m->st));
}

static void split_brain(struct mirror *m, const struct repl_hello *peer)
{
        link_failed(m, "split brain");
        set_state(m, MS_SPLIT_BRAIN);
        set_error(m,
                  "split brain: %s holds writes this side never saw (peer generation %016llx, "
                  "ours %016llx, last shared %016llx); nothing is copied either way. Resolve with "
                  "'isergw-ctl mirror-demote TARGET "
                  "LUN' on the side whose writes are to be discarded, then 'isergw-ctl "
                  "mirror-establish TARGET LUN full' on the other",
                  m->peer, (unsigned long long)peer->gen, (unsigned long long)repl_state_gen(m->st),
                  (unsigned long long)repl_state_shared_gen(m->st));
        log_err("%s: %s", m->name, m->last_error);
        startup_outcome(m, MIRROR_START_HELD);
}

/* Which regions the peer needs, from both sides' generations (docs/replication.md). */
static void paired(struct mirror *m, const struct repl_hello *peer)
{
        uint64_t gen = repl_state_gen(m->st), shared = repl_state_shared_gen(m->st);
        enum repl_gen_relation rel = repl_gen_relation(gen, shared, peer->gen, peer->shared_gen);
        bool full = m->force_full || shared == 0;
        const char *why;
        if (!full && (peer->role != REPL_ROLE_SECONDARY || rel == REPL_GEN_PEER_AHEAD ||
                      rel == REPL_GEN_DIVERGED)) {
                split_brain(m, peer);
                return;
        }
        if (full || (peer->flags & REPL_HELLO_F_NEEDS_FULL)) {
                repl_state_mark_all(m->st);
                why = m->force_full ? "full copy asked for"
                      : shared == 0 ? "first pairing: full copy"
                                    : "the peer was a primary that did not hand over: full copy";
                m->force_full = false;
                atomic_fetch_add(&m->full_copies, 1);
        } else {
                why = rel == REPL_GEN_SAME ? "reconnected" : "this side wrote while apart";
        }
        atomic_store(&m->connected, true);
        set_error(m, "%s", "");
        start_resync(m, why);
        resync_step(m);
        if (m->hold != HOLD_NONE)
                log_info("%s: paired with %s: serving", m->name, m->peer);
        startup_outcome(m, MIRROR_START_PAIRED);
}

/* Start-up: the peer was promoted and went on from the data this side holds, so this side
 * holds no write the peer lacks that an initiator saw acknowledged. It becomes the peer's
 * secondary as a demote without a clean handover does: the peer copies every region, since
 * this side may hold writes it sent and wrote but never acknowledged before it stopped. */
static void step_down_at_start(struct mirror *m, const struct repl_hello *peer)
{
        link_failed(m, "the peer was promoted");
        int rc = repl_state_step_down(m->st, true);
        if (rc < 0) {
                set_state(m, MS_BOTH_PRIMARY); /* retried: the next answer tries again */
                set_error(m, "%s was promoted; stepping down failed (%s): not serving", m->peer,
                          strerror(-rc));
                log_err("%s: %s", m->name, m->last_error);
                startup_outcome(m, MIRROR_START_HELD);
                return;
        }
        set_state(m, MS_STANDBY);
        set_error(m,
                  "stepped down at start: %s was promoted while this side was away; this side "
                  "is its secondary and gets every region from it",
                  m->peer);
        log_warn("%s: STEPPED DOWN at start: the mirror peer %s was promoted while this gateway "
                 "was away (its generation %016llx went on from ours); this side holds no "
                 "acknowledged write it lacks, so it is its secondary now: standby, every region "
                 "is copied from the peer (no mirror-demote needed)",
                 m->name, m->peer, (unsigned long long)peer->gen);
        startup_outcome(m, MIRROR_START_STEPPED_DOWN);
}

/* The peer is primary too and the data did not diverge (the peer says so with its
 * generations): one side is to be demoted; this side retries meanwhile. */
static void both_primary(struct mirror *m, const struct repl_hello *peer)
{
        enum repl_gen_relation rel = repl_gen_relation(
            repl_state_gen(m->st), repl_state_shared_gen(m->st), peer->gen, peer->shared_gen);
        if (rel == REPL_GEN_DIVERGED) {
                split_brain(m, peer);
                return;
        }
        if (rel == REPL_GEN_PEER_AHEAD && m->hold != HOLD_NONE) {
                step_down_at_start(m, peer);
                return;
        }
        link_failed(m, "the peer is primary too");
        set_state(m, MS_BOTH_PRIMARY);
        startup_outcome(m, MIRROR_START_HELD);
        if (rel == REPL_GEN_PEER_AHEAD)
                set_error(m,
                          "%s is primary too and went on from the data this side holds (it was "
                          "promoted while this side was away): 'isergw-ctl mirror-demote TARGET "
                          "LUN' here makes this side its secondary (a full copy follows, which "
                          "discards whatever this side holds that it never got)",
                          m->peer);
        else
                set_error(m,
                          "%s is primary too but holds nothing this side lacks: 'isergw-ctl "
                          "mirror-demote TARGET LUN' there makes it this side's secondary",
                          m->peer);
}

static void on_hello_reply(struct mirror *m)
{
        struct repl_hello peer;
        bool have_peer = repl_hello_decode(m->rx_payload, m->rxh.length, &peer);
        if (m->rxh.status == REPL_E_ROLE && have_peer) {
                both_primary(m, &peer);
                return;
        }
        if (m->rxh.status == REPL_E_SPLIT_BRAIN) {
                link_failed(m, "split brain");
                set_state(m, MS_SPLIT_BRAIN);
                set_error(m,
                          "split brain: %s was promoted while apart and holds writes this side "
                          "never saw; nothing is copied either way. Resolve with 'isergw-ctl "
                          "mirror-demote TARGET LUN' on the side whose writes are to be "
                          "discarded, then 'isergw-ctl mirror-establish TARGET LUN full' on the "
                          "other",
                          m->peer);
                log_err("%s: %s", m->name, m->last_error);
                startup_outcome(m, MIRROR_START_HELD);
                return;
        }
        if (m->rxh.status != REPL_OK) {
                link_failed(m, "pairing refused");
                set_state(m, MS_REFUSED);
                set_error(m, "the peer refused the pairing: %s", repl_status_str(m->rxh.status));
                log_err("%s: %s", m->name, m->last_error);
                startup_alone(m, "the peer refused the pairing");
                return;
        }
        if (!have_peer || peer.size != m->size || peer.block_size != m->block_size ||
            strcmp(peer.id, m->id) != 0) {
                link_failed(m, "the peer's volume does not match (id, size or block size)");
                set_state(m, MS_REFUSED);
                startup_alone(m, "the peer's volume does not match");
                return;
        }
        paired(m, &peer);
}

/* ---------------- resync ---------------- */

static void resync_read_done(struct volume_io *io, int result)
{
        struct mirror *m = io->priv;
        volume_write_end(m->v, &m->rticket);
        if (result < 0 || !atomic_load(&m->connected) || m->stopping) {
                m->resync_busy = false;
                if (result < 0)
                        log_warn("%s: resync read failed: %s", m->name, strerror(-result));
                return;
        }
        note_recent(m, m->rregion * repl_state_granularity(m->st), m->rlen);
        m->rmsg = (struct mmsg){.kind = K_RESYNC, .len = (uint32_t)m->rlen, .iovcnt = 1};
        m->rmsg.own = (struct iovec){m->rbuf, m->rlen};
        m->rmsg.iov = &m->rmsg.own;
        queue_msg(m, &m->rmsg, REPL_WRITE, m->rregion * repl_state_granularity(m->st),
                  m->rticket.seq, 0);
}

/* Copies the next marked region: after every older write to it has ended, so the copy
 * holds them, and with a ticket newer than theirs, so the peer keeps newer writes. */
static void resync_step(struct mirror *m)
{
        if (m->resync_busy || get_state(m) != MS_RESYNC || !atomic_load(&m->connected) ||
            reactor_now_ns() < m->resync_next_ns)
                return;
        int64_t r = repl_state_next(m->st, 0);
        if (r < 0) {
                if (!m->synced_sent) {
                        m->synced_sent = 1;
                        queue_ctrl(m, K_SYNCED, REPL_SYNCED, NULL, 0);
                }
                return;
        }
        uint64_t gran = repl_state_granularity(m->st), off = (uint64_t)r * gran;
        m->rregion = (uint64_t)r;
        m->rregion_marked = false;
        m->rlen = off + gran > m->size ? m->size - off : gran;
        if (m->resync_rate)
                m->resync_next_ns = reactor_now_ns() + m->rlen * 1000000000ull / m->resync_rate;
        m->resync_busy = true;
        volume_write_begin(m->v, &m->rticket, off, m->rlen);
        if (volume_older_write_active(m->v, &m->rticket)) {
                volume_write_end(m->v, &m->rticket);
                m->resync_busy = false; /* the next tick tries again */
                return;
        }
        /* Clear first: a write from now on marks it again if the link drops. */
        m->riov = (struct iovec){m->rbuf, m->rlen};
        m->rio = (struct volume_io){.op = VOLUME_READ,
                                    .offset = off,
                                    .length = m->rlen,
                                    .iov = &m->riov,
                                    .iovcnt = 1,
                                    .reactor = m->home,
                                    .done = resync_read_done,
                                    .priv = m};
        volume_submit(m->v, &m->rio);
}

/* ---------------- receiving ---------------- */

static void on_message(struct mirror *m)
{
        m->last_rx_ns = reactor_now_ns();
        switch (m->rxh.type) {
        case REPL_HELLO_REPLY:
                if (get_state(m) == MS_HELLO) {
                        /* the HELLO itself is answered: drop it from the window */
                        struct mmsg *h = m->win;
                        if (h && h->kind == K_HELLO) {
                                m->win = h->next;
                                if (!m->win)
                                        m->win_tail = NULL;
                                m->win_count--;
                                free_msg(m, h, true, REPL_OK);
                        }
                        on_hello_reply(m);
                        return;
                }
                break;
        case REPL_REPLY:
        case REPL_PONG: {
                struct mmsg *prev = NULL;
                for (struct mmsg *msg = m->win; msg; prev = msg, msg = msg->next) {
                        if (msg->msg_id != m->rxh.msg_id)
                                continue;
                        if (prev)
                                prev->next = msg->next;
                        else
                                m->win = msg->next;
                        if (m->win_tail == msg)
                                m->win_tail = prev;
                        m->win_count--;
                        free_msg(m, msg, true, m->rxh.status);
                        tx_kick(m);
                        resync_step(m);
                        return;
                }
                break;
        }
        default:
                break;
        }
        link_failed(m, "unexpected message from the peer");
}

static void rx(struct mirror *m)
{
        for (;;) {
                uint8_t *dst = m->rx_in_payload ? m->rx_payload : m->rx_hdr;
                size_t want = m->rx_in_payload ? m->rxh.length : REPL_HDR_LEN;
                ssize_t n = want > m->rx_got
                                ? repl_link_read(m->link, dst + m->rx_got, want - m->rx_got)
                                : 0;
                if (n == -EAGAIN)
                        return;
                if (n < 0 || (n == 0 && want > m->rx_got)) {
                        link_failed(m, n < 0 ? strerror((int)-n) : "closed by the peer");
                        return;
                }
                m->rx_got += (size_t)n;
                if (m->rx_got < want)
                        continue;
                m->rx_got = 0;
                if (!m->rx_in_payload) {
                        enum repl_status st = repl_hdr_decode(m->rx_hdr, &m->rxh);
                        if (st != REPL_OK || m->rxh.length > REPL_HELLO_LEN) {
                                link_failed(m, "bad message from the peer");
                                return;
                        }
                        if (m->rxh.length) {
                                m->rx_in_payload = true;
                                continue;
                        }
                } else {
                        m->rx_in_payload = false;
                        if (crc32c(0, m->rx_payload, m->rxh.length) != m->rxh.payload_crc) {
                                link_failed(m, "bad checksum from the peer");
                                return;
                        }
                }
                on_message(m);
                if (!m->link)
                        return;
        }
}

static void start_connect(struct mirror *m);

/* A connection attempt failed. With mirror_transport = auto a failed RDMA attempt is
 * followed at once by TCP (logged when that changes); otherwise the next tick retries. */
static void connect_failed(struct mirror *m, const char *reason)
{
        char why[160]; /* reason may be the link's own text, freed with it */
        snprintf(why, sizeof(why), "%s", reason);
        bool rdma = m->link && m->link->kind == REPL_LINK_RDMA;
        if (rdma && m->transport == REPL_TRANSPORT_AUTO) {
                if (!m->fallback_logged)
                        log_warn("%s: RDMA to the mirror peer %s failed (%s): falling back to "
                                 "TCP",
                                 m->name, m->peer, why);
                m->fallback_logged = true;
                repl_link_close(m->link);
                m->link = NULL;
                m->tcp_fallback = true;
                m->next_connect_ns = reactor_now_ns();
                start_connect(m);
                return;
        }
        if (m->connect_failures++ == 0)
                log_warn("%s: cannot reach the mirror peer %s: %s (retrying)", m->name, m->peer,
                         why);
        set_error(m, "connect: %s", why);
        link_failed(m, why);
}

static void on_link(struct repl_link *l, uint32_t events)
{
        struct mirror *m = l->ctx;
        if (get_state(m) == MS_CONNECTING) {
                int err = repl_link_connect_error(l);
                if (err || (events & (EPOLLERR | EPOLLHUP))) {
                        connect_failed(m, l->why[0] ? l->why : strerror(err ? -err : EIO));
                        return;
                }
                if (l->kind == REPL_LINK_RDMA && m->fallback_logged) {
                        log_info("%s: the mirror link to %s uses RDMA again", m->name, m->peer);
                        m->fallback_logged = false;
                }
                m->connect_failures = 0;
                m->last_rx_ns = reactor_now_ns();
                atomic_store(&m->link_kind, (int)l->kind);
                send_hello(m);
                return;
        }
        if (events & EPOLLIN)
                rx(m);
        if (m->link && (events & EPOLLOUT))
                tx_kick(m);
        if (m->link && (events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN))
                link_failed(m, m->link->why[0] ? m->link->why : "connection error");
}

/* RDMA first unless mirror_transport = tcp (or auto fell back for this attempt). */
static void start_connect(struct mirror *m)
{
        struct repl_link_conf lc = {.r = m->home, .cb = on_link, .ctx = m, .stats = &m->lstats};
        bool rdma = m->transport == REPL_TRANSPORT_RDMA ||
                    (m->transport == REPL_TRANSPORT_AUTO && !m->tcp_fallback);
        m->tcp_fallback = false;
        set_state(m, MS_CONNECTING);
        m->rx_got = 0;
        m->rx_in_payload = false;
        if (rdma) {
                m->link = repl_link_rdma_connect(&lc, (struct sockaddr *)&m->addr, m->addrlen,
                                                 m->src_len ? (struct sockaddr *)&m->src : NULL);
                if (!m->link) {
                        char why[160];
                        snprintf(why, sizeof(why), "%s",
                                 errno == ENODEV ? "no RDMA device on this host" : strerror(errno));
                        if (m->transport == REPL_TRANSPORT_AUTO) {
                                if (!m->fallback_logged)
                                        log_warn("%s: RDMA to the mirror peer %s failed (%s): "
                                                 "falling back to TCP",
                                                 m->name, m->peer, why);
                                m->fallback_logged = true;
                        } else {
                                set_state(m, MS_DEGRADED);
                                set_error(m, "connect: %s", why);
                                if (m->connect_failures++ == 0)
                                        log_warn("%s: cannot reach the mirror peer %s over RDMA: "
                                                 "%s (retrying)",
                                                 m->name, m->peer, why);
                                m->next_connect_ns = reactor_now_ns() + RECONNECT_NS;
                                return;
                        }
                } else {
                        return;
                }
        }
        m->link = repl_link_tcp_connect(&lc, (struct sockaddr *)&m->addr, m->addrlen);
        if (!m->link) {
                set_state(m, MS_DEGRADED);
                m->next_connect_ns = reactor_now_ns() + RECONNECT_NS;
        }
}

/* The oldest message whose answer is overdue, if any: a FLUSH may take long (the peer
 * destages), the heartbeat shows the peer is alive meanwhile. */
static bool reply_overdue(struct mirror *m, uint64_t now, uint64_t limit)
{
        for (struct mmsg *msg = m->win; msg; msg = msg->next)
                if (msg->kind != K_FLUSH && msg->kind != K_HANDOVER)
                        return now - msg->sent_ns > limit;
        return false;
}

static void on_tick(struct reactor_timer *t)
{
        struct mirror *m = t->ctx;
        if (m->stopping)
                return;
        uint64_t now = reactor_now_ns(), limit = (uint64_t)m->timeout_ms * 1000000ull;
        if (m->hold == HOLD_WAITING && now >= m->hold_deadline_ns)
                startup_alone(m, "no answer from the peer since the start");
        enum mstate s = get_state(m);
        if (m->last_tick_ns && now - m->last_tick_ns > limit / 2)
                log_warn("%s: the mirror's timer ran %llu ms late (its reactor was busy or the "
                         "host stalled): heartbeats were late too",
                         m->name, (unsigned long long)((now - m->last_tick_ns) / 1000000));
        m->last_tick_ns = now;
        if (!m->link) {
                if ((s == MS_DEGRADED || s == MS_CONNECTING || s == MS_BOTH_PRIMARY) &&
                    now >= m->next_connect_ns) {
                        m->next_connect_ns = now;
                        start_connect(m);
                }
        } else if (s == MS_CONNECTING) {
                if (now - m->next_connect_ns > limit)
                        connect_failed(m, "connect timed out");
        } else if (reply_overdue(m, now, limit) || now - m->last_rx_ns > limit) {
                log_info("%s: %u messages unanswered (oldest: kind %d, %llu ms), %s queued, "
                         "last received %llu ms ago, last sent %llu ms ago%s%s",
                         m->name, m->win_count, m->win ? (int)m->win->kind : -1,
                         m->win ? (unsigned long long)((now - m->win->sent_ns) / 1000000) : 0,
                         m->txq ? "more" : "nothing",
                         (unsigned long long)((now - m->last_rx_ns) / 1000000),
                         (unsigned long long)((now - m->last_tx_ns) / 1000000),
                         m->ping_inflight ? ", a ping in flight" : "",
                         m->flush_inflight ? ", a flush in flight" : "");
                link_failed(m, "the peer did not answer in time");
        } else if (!m->ping_inflight && now - m->last_rx_ns > PING_IDLE_NS &&
                   now - m->last_tx_ns > PING_IDLE_NS / 2) {
                m->ping_inflight = true;
                queue_ctrl(m, K_PING, REPL_PING, NULL, 0);
        }
        if (atomic_load(&m->connected) && now - m->last_flush_ns > PEER_FLUSH_NS)
                peer_flush(m);
        if (s == MS_SYNCED && repl_state_count(m->st))
                start_resync(m, "regions recorded while synchronized");
        handover_step(m);
        resync_step(m);
        reactor_timer_arm(m->home, &m->tick, TICK_NS);
}

/* ---------------- writes from the volume ---------------- */

/* On home: the peer gets the write, or (not connected) its region is recorded. */
static void enqueue_io(void *arg)
{
        struct mio *mio = arg;
        struct mirror *m = mio->m;
        struct volume_io *io = mio->io;
        if (!atomic_load(&m->connected) || m->stopping) {
                atomic_fetch_add(&m->degraded_writes, 1);
                mark_region(m, mio);
                mio_peer_done(mio);
                return;
        }
        uint16_t type = io->op == VOLUME_WRITE   ? REPL_WRITE
                        : io->op == VOLUME_UNMAP ? REPL_UNMAP
                                                 : REPL_WRITE_ZEROES;
        bool data = io->op == VOLUME_WRITE;
        mio->msg = (struct mmsg){.kind = K_IO,
                                 .iov = data ? io->iov : NULL,
                                 .iovcnt = data ? io->iovcnt : 0,
                                 .len = data ? (uint32_t)io->length : 0};
        atomic_fetch_add(&m->mirrored_writes, 1);
        atomic_fetch_add(&m->mirrored_bytes, io->length);
        note_recent(m, io->offset, io->length);
        queue_msg(m, &mio->msg, type, io->offset, io->seq, data ? 0 : io->length);
}

static void mirror_submit(void *ctx, struct volume_io *io)
{
        struct mirror *m = ctx;
        struct mio *mio;
        while (!(mio = calloc(1, sizeof(*mio))))
                usleep(1000);
        mio->m = m;
        mio->io = io;
        mio->done = io->done;
        mio->priv = io->priv;
        atomic_init(&mio->pending, 2);
        if (io->op == VOLUME_WRITE && io->length > REPL_MAX_PAYLOAD) {
                atomic_fetch_add(&m->degraded_writes, 1);
                mark_region(m, mio); /* too large for one message: the resync sends it */
                mio->local_posted = true;
                atomic_fetch_sub(&mio->pending, 1);
                mio_local_submit(mio);
                return;
        }
        reactor_post(m->home, enqueue_io, mio);
}

const struct volume_mirror_ops mirror_volume_ops = {.submit = mirror_submit};

/* ---------------- life cycle and operations ---------------- */

static int parse_peer(struct mirror *m, const char *peer)
{
        char host[256], port[8];
        if (repl_split_hostport(peer, host, sizeof(host), port) < 0)
                return -1;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
                return -1;
        memcpy(&m->addr, res->ai_addr, res->ai_addrlen);
        m->addrlen = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

/* Where RDMA connects from (the RDMA device is the one that address is on). */
static int parse_source(struct mirror *m, const char *host)
{
        if (!host || !host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
                return 0;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST},
                        *res = NULL;
        if (getaddrinfo(host, "0", &hints, &res) != 0 || !res)
                return -1;
        memcpy(&m->src, res->ai_addr, res->ai_addrlen);
        m->src_len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

static void start_on_home(void *arg)
{
        struct mirror *m = arg;
        m->hold_deadline_ns = reactor_now_ns() + (uint64_t)m->startup_wait_ms * 1000000ull;
        m->tick = (struct reactor_timer){.cb = on_tick, .ctx = m};
        reactor_timer_arm(m->home, &m->tick, 0);
}

struct mirror *mirror_create(const struct mirror_conf *conf)
{
        struct mirror *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->name = strdup(conf->name);
        m->id = strdup(conf->id);
        m->peer = strdup(conf->peer);
        m->size = conf->size;
        m->block_size = conf->block_size;
        m->timeout_ms = conf->timeout_ms;
        m->resync_rate = conf->resync_rate;
        m->strict = conf->strict;
        m->startup_wait_ms = conf->startup_wait_ms;
        m->startup = conf->startup;
        m->startup_ctx = conf->startup_ctx;
        m->home = conf->home;
        m->v = conf->volume;
        m->st = conf->state;
        m->key = repl_volume_key(conf->id);
        m->transport = conf->transport;
        atomic_init(&m->link_kind, -1);
        pthread_mutex_init(&m->lock, NULL);
        m->rbuf = aligned_alloc(4096, repl_state_granularity(conf->state));
        m->words = (repl_state_regions(conf->state) + 63) / 64;
        m->recent = calloc(m->words, sizeof(uint64_t));
        m->flushing = calloc(m->words, sizeof(uint64_t));
        if (!m->name || !m->id || !m->peer || !m->rbuf || !m->recent || !m->flushing ||
            parse_peer(m, conf->peer) < 0 || parse_source(m, conf->source) < 0) {
                log_err("%s: bad mirror peer '%s' (HOST:PORT)", conf->name, conf->peer);
                mirror_destroy(m);
                return NULL;
        }
        bool primary = repl_state_role(m->st) == REPL_ROLE_PRIMARY;
        set_state(m, primary ? MS_DEGRADED : MS_STANDBY);
        m->hold = primary && m->startup_wait_ms ? HOLD_WAITING : HOLD_NONE;
        if (repl_state_count(m->st))
                log_info("%s: %llu regions recorded for resync from an earlier run", m->name,
                         (unsigned long long)repl_state_count(m->st));
        reactor_post(m->home, start_on_home, m);
        return m;
}

static void stop_on_home(void *arg)
{
        struct mirror *m = arg;
        m->stopping = true;
        reactor_timer_cancel(m->home, &m->tick);
        link_failed(m, "gateway stopping");
}

void mirror_stop(struct mirror *m)
{
        if (m)
                reactor_call_sync(m->home, stop_on_home, m);
}

void mirror_destroy(struct mirror *m)
{
        if (!m)
                return;
        free(m->name);
        free(m->id);
        free(m->peer);
        free(m->rbuf);
        free(m->recent);
        free(m->flushing);
        pthread_mutex_destroy(&m->lock);
        free(m);
}

static void sever_on_home(void *arg)
{
        struct mirror *m = arg;
        if (get_state(m) == MS_STANDBY)
                return;
        set_state(m, MS_SEVERED);
        link_failed(m, "severed by the operator");
}

int mirror_sever(struct mirror *m)
{
        return reactor_call_sync(m->home, sever_on_home, m) < 0 ? -EIO : 0;
}

struct establish_arg {
        struct mirror *m;
        bool full;
};

static void establish_on_home(void *arg)
{
        struct establish_arg *a = arg;
        struct mirror *m = a->m;
        if (get_state(m) == MS_STANDBY)
                return; /* a secondary connects to no one */
        if (a->full)
                m->force_full = true;
        if (m->link)
                link_failed(m, "re-establishing");
        set_state(m, MS_DEGRADED);
        m->next_connect_ns = 0;
}

int mirror_establish(struct mirror *m, bool full)
{
        struct establish_arg a = {m, full};
        return reactor_call_sync(m->home, establish_on_home, &a) < 0 ? -EIO : 0;
}

static void activate_on_home(void *arg)
{
        struct mirror *m = arg;
        if (get_state(m) != MS_STANDBY)
                return;
        m->handover = HO_NONE;
        set_error(m, "%s", "");
        set_state(m, MS_DEGRADED);
        m->next_connect_ns = 0;
        log_info("%s: primary now: mirroring to %s (regions written until it pairs are recorded)",
                 m->name, m->peer);
}

int mirror_activate(struct mirror *m)
{
        return reactor_call_sync(m->home, activate_on_home, m) < 0 ? -EIO : 0;
}

static void end_hold_on_home(void *arg)
{
        struct mirror *m = arg;
        if (m->hold != HOLD_NONE)
                log_warn("%s: start-up hold ended by the operator", m->name);
        m->hold = HOLD_NONE;
}

void mirror_end_hold(struct mirror *m)
{
        reactor_call_sync(m->home, end_hold_on_home, m);
}

/* The handover of a demote: once no write is on its way to the peer, one FLUSH; its answer
 * means the peer holds, stably, everything this side ever acknowledged. */
static bool io_in_flight(struct mirror *m)
{
        struct mmsg *lists[2] = {m->win, m->txq};
        for (int i = 0; i < 2; i++)
                for (struct mmsg *msg = lists[i]; msg; msg = msg->next)
                        if (msg->kind == K_IO)
                                return true;
        return false;
}

static void handover_step(struct mirror *m)
{
        if (m->handover != HO_DRAINING || io_in_flight(m))
                return;
        m->handover = HO_FLUSHING;
        queue_ctrl(m, K_HANDOVER, REPL_FLUSH, NULL, 0);
}

struct step_down {
        struct mirror *m;
        enum handover h; /* as the home reactor saw it */
};

static void step_down_begin(void *arg)
{
        struct step_down *a = arg;
        struct mirror *m = a->m;
        bool synced =
            get_state(m) == MS_SYNCED && atomic_load(&m->connected) && repl_state_count(m->st) == 0;
        m->handover = synced ? HO_DRAINING : HO_FAILED;
        handover_step(m);
        a->h = m->handover;
}

static void step_down_poll(void *arg)
{
        struct step_down *a = arg;
        handover_step(a->m);
        a->h = a->m->handover;
}

/* Closes the link and stops mirroring. After a clean handover the peer has everything: what
 * it was asked to flush is not recorded again and this side keeps its generation. */
static void step_down_end(void *arg)
{
        struct step_down *a = arg;
        struct mirror *m = a->m;
        a->h = m->handover;
        set_state(m, MS_STANDBY);
        if (m->handover == HO_CLEAN) {
                atomic_store(&m->connected, false);
                forget_recent(m);
                link_failed(m, "demoted: handed over to the peer");
        } else {
                link_failed(m, "demoted");
        }
}

int mirror_step_down(struct mirror *m, unsigned timeout_ms)
{
        struct step_down a = {m, HO_NONE};
        if (reactor_call_sync(m->home, step_down_begin, &a) < 0)
                return -EIO;
        for (unsigned waited = 0; a.h != HO_CLEAN && a.h != HO_FAILED && waited < timeout_ms;
             waited += 10) {
                usleep(10000);
                if (reactor_call_sync(m->home, step_down_poll, &a) < 0)
                        return -EIO;
        }
        if (reactor_call_sync(m->home, step_down_end, &a) < 0)
                return -EIO;
        bool clean = a.h == HO_CLEAN;
        log_info("%s: mirror stands by: %s", m->name,
                 clean ? "the peer holds every acknowledged write (clean handover)"
                       : "no clean handover (the peer was not synchronized or did not answer)");
        return clean ? 1 : 0;
}

json_t *mirror_json(struct mirror *m)
{
        enum mstate s = get_state(m);
        uint64_t gran = repl_state_granularity(m->st), dirty = repl_state_count(m->st);
        uint64_t total = s == MS_RESYNC ? (m->resync_total ? m->resync_total : dirty) : 0;
        uint64_t done = s == MS_RESYNC && total > dirty ? total - dirty : 0;
        pthread_mutex_lock(&m->lock);
        json_t *j = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s, "
            "s:s}",
            "mirror_id", m->id, "role",
            repl_state_role(m->st) == REPL_ROLE_PRIMARY ? "primary" : "secondary", "mode",
            m->strict ? "strict" : "sync", "state", state_names[s], "peer", m->peer, "lag_bytes",
            (json_int_t)atomic_load(&m->lag_bytes), "resync_done_bytes", (json_int_t)(done * gran),
            "resync_total_bytes", (json_int_t)(total * gran), "out_of_sync_regions",
            (json_int_t)dirty, "region_bytes", (json_int_t)gran, "resync_copied_regions",
            (json_int_t)atomic_load(&m->resync_regions), "mirrored_writes",
            (json_int_t)atomic_load(&m->mirrored_writes), "degraded_writes",
            (json_int_t)atomic_load(&m->degraded_writes), "peer_errors",
            (json_int_t)atomic_load(&m->peer_errors), "link_failures",
            (json_int_t)atomic_load(&m->link_failures), "resync_bytes",
            (json_int_t)atomic_load(&m->resync_bytes), "generation", "", "last_error",
            m->last_error);
        pthread_mutex_unlock(&m->lock);
        char gen[40];
        snprintf(gen, sizeof(gen), "%016llx/%016llx", (unsigned long long)repl_state_gen(m->st),
                 (unsigned long long)repl_state_shared_gen(m->st));
        json_object_set_new(j, "generation", json_string(gen));
        /* ETA from the rate so far (-1: not resyncing or no progress yet) */
        double secs = (double)(reactor_now_ns() - m->resync_started_ns) / 1e9;
        double eta = s == MS_RESYNC && done && secs > 0 ? (double)dirty * secs / (double)done : -1;
        json_object_set_new(j, "resync_eta_s", json_integer((json_int_t)eta));
        json_object_set_new(j, "peer_unstable_regions",
                            json_integer((json_int_t)atomic_load(&m->unstable_regions)));
        json_object_set_new(j, "full_copies",
                            json_integer((json_int_t)atomic_load(&m->full_copies)));
        int kind = atomic_load(&m->link_kind);
        json_object_set_new(j, "transport",
                            json_string(kind < 0 ? "none" : repl_link_kind_name(kind)));
        json_object_set_new(j, "transport_mode", json_string(repl_transport_name(m->transport)));
        repl_link_stats_json(j, &m->lstats);
        return j;
}
