#include "src/tcp.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iscsi/crc32c.h"
#include "iscsi/iscsi.h"
#include "iscsi/transport.h"
#include "src/log.h"
#include "src/reactor.h"

#define TCP_MAX_TX_IOV 256
#define TCP_RX_BUDGET  64 /* PDUs per readiness event, for fairness between connections */
#define DISCARD_CHUNK  65536

enum rx_phase { RX_BHS, RX_AHS, RX_DATA, RX_DONE };

struct xport_conn {
        int fd;
        struct reactor *reactor;
        struct reactor_fd rfd;
        struct iscsi_conn *ic;
        char peer[80];
        bool header_digest, data_digest;
        uint32_t max_recv_dsl;
        bool closing;
        bool paused;
        bool teardown_queued;
        /* receive */
        enum rx_phase phase;
        uint8_t hdr[ISCSI_BHS_LEN + ISCSI_MAX_AHS_BYTES + ISCSI_DIGEST_LEN];
        uint32_t hdr_have, hdr_want;
        struct rx_dest dest;
        uint32_t data_have, data_want; /* dsl + pad + digest */
        uint8_t trailer[8];            /* pad (<=3) + data digest (4) */
        /* The next PDU's header, read in the same readv as this PDU's data (one system call
         * per Data-Out PDU instead of two); it becomes hdr once this PDU is handled. */
        uint8_t ahead[ISCSI_BHS_LEN];
        uint32_t ahead_have;
        struct reactor_deferred rx_work; /* a whole header read ahead waits: no EPOLLIN */
        uint8_t *discard;
        /* send */
        struct tx_pdu *tx_head, *tx_tail;
        struct tx_pdu *done_head; /* sent, sent() not yet called */
        struct reactor_deferred done_work;
        /* PDUs queued while the reactor works through its events go out together, in one
         * sendmsg after them (R2Ts and responses of many commands, Data-In of many lines). */
        struct reactor_deferred flush_work;
        bool want_out;
};

static void tcp_teardown(void *arg);
static void tcp_flush(struct xport_conn *xc);

/* Closes at once: what is still queued is not sent (errors, the peer gone). */
static void close_now(struct xport_conn *xc, const char *reason)
{
        if (xc->closing)
                return;
        xc->closing = true;
        log_debug("tcp %s: closing: %s", xc->peer, reason ? reason : "");
        if (!xc->teardown_queued) {
                xc->teardown_queued = true;
                /* Deferred so the iSCSI layer is never freed under its own feet. */
                reactor_call(xc->reactor, tcp_teardown, xc);
        }
}

/* The iSCSI layer's close: what it queued before (a Reject, a last response) goes out first,
 * as far as the socket takes it now. */
static void tcp_close(struct xport_conn *xc, const char *reason)
{
        if (!xc->closing && !xc->want_out && xc->tx_head)
                tcp_flush(xc);
        close_now(xc, reason);
}

/* ---------------- send ---------------- */

static void frame_pdu(struct xport_conn *xc, struct tx_pdu *p)
{
        uint32_t pad = iscsi_pad(p->data_len);
        memset(p->pad, 0, sizeof(p->pad));
        p->with_hdr_digest = xc->header_digest;
        p->with_data_digest = xc->data_digest && p->data_len;
        p->wire_total = ISCSI_BHS_LEN + (xc->header_digest ? 4 : 0) + p->data_len;
        if (p->data_len)
                p->wire_total += pad + (xc->data_digest ? 4 : 0);
        if (xc->header_digest)
                crc32c_put_digest(p->hdr_digest, crc32c(0, p->bhs.b, ISCSI_BHS_LEN));
        if (xc->data_digest && p->data_len) {
                uint32_t crc = crc32c_iov(0, p->data, p->data_iovcnt);
                crc = crc32c(crc, p->pad, pad);
                crc32c_put_digest(p->data_digest, crc);
        }
}

/* Appends the not-yet-sent part of p to iov; returns the new count. */
static int pdu_iov(struct tx_pdu *p, struct iovec *iov, int n, int max)
{
        struct iovec parts[TX_PDU_MAX_IOV + 4];
        int k = 0;
        parts[k++] = (struct iovec){p->bhs.b, ISCSI_BHS_LEN};
        if (p->with_hdr_digest)
                parts[k++] = (struct iovec){p->hdr_digest, 4};
        for (int i = 0; i < p->data_iovcnt; i++)
                parts[k++] = p->data[i];
        if (p->data_len) {
                uint32_t pad = iscsi_pad(p->data_len);
                if (pad)
                        parts[k++] = (struct iovec){p->pad, pad};
                if (p->with_data_digest)
                        parts[k++] = (struct iovec){p->data_digest, 4};
        }
        uint64_t skip = p->wire_done;
        for (int i = 0; i < k && n < max; i++) {
                if (skip >= parts[i].iov_len) {
                        skip -= parts[i].iov_len;
                        continue;
                }
                iov[n++] =
                    (struct iovec){(char *)parts[i].iov_base + skip, parts[i].iov_len - skip};
                skip = 0;
        }
        return n;
}

static void run_done(struct xport_conn *xc)
{
        tx_pdu_finish_list(&xc->done_head);
}

static void done_work_cb(struct reactor_deferred *d)
{
        struct xport_conn *xc =
            (struct xport_conn *)((char *)d - offsetof(struct xport_conn, done_work));
        run_done(xc);
}

/* The head PDU has left: its sent() runs later, never inside send_pdu's caller. */
static void tx_complete_head(struct xport_conn *xc)
{
        struct tx_pdu *p = xc->tx_head;
        xc->tx_head = p->next;
        if (!xc->tx_head)
                xc->tx_tail = NULL;
        p->next = xc->done_head;
        xc->done_head = p;
        reactor_defer(xc->reactor, &xc->done_work);
}

static void set_want_out(struct xport_conn *xc, bool want)
{
        if (xc->want_out == want || xc->closing)
                return;
        xc->want_out = want;
        uint32_t ev = (xc->paused ? 0 : EPOLLIN) | (want ? EPOLLOUT : 0);
        reactor_mod_fd(xc->reactor, &xc->rfd, ev);
}

static void tcp_flush(struct xport_conn *xc)
{
        while (xc->tx_head && !xc->closing) {
                struct iovec iov[TCP_MAX_TX_IOV];
                int n = 0;
                for (struct tx_pdu *p = xc->tx_head; p && n < TCP_MAX_TX_IOV - 8; p = p->next)
                        n = pdu_iov(p, iov, n, TCP_MAX_TX_IOV);
                struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
                ssize_t sent = sendmsg(xc->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (sent < 0) {
                        if (errno == EAGAIN || errno == EWOULDBLOCK) {
                                set_want_out(xc, true);
                                return;
                        }
                        if (errno == EINTR)
                                continue;
                        close_now(xc, strerror(errno));
                        return;
                }
                uint64_t left = (uint64_t)sent;
                while (left && xc->tx_head) {
                        struct tx_pdu *p = xc->tx_head;
                        uint64_t rest = p->wire_total - p->wire_done;
                        if (left < rest) {
                                p->wire_done += left;
                                left = 0;
                                break;
                        }
                        left -= rest;
                        p->wire_done = p->wire_total;
                        tx_complete_head(xc);
                }
        }
        set_want_out(xc, false);
}

static void tcp_send_pdu(struct xport_conn *xc, struct tx_pdu *pdu)
{
        if (xc->closing) {
                pdu->next = xc->done_head;
                xc->done_head = pdu;
                reactor_defer(xc->reactor, &xc->done_work);
                return;
        }
        frame_pdu(xc, pdu);
        pdu->next = NULL;
        if (xc->tx_tail)
                xc->tx_tail->next = pdu;
        else
                xc->tx_head = pdu;
        xc->tx_tail = pdu;
        if (!xc->want_out)
                reactor_defer(xc->reactor, &xc->flush_work);
}

static void flush_work_cb(struct reactor_deferred *d)
{
        struct xport_conn *xc =
            (struct xport_conn *)((char *)d - offsetof(struct xport_conn, flush_work));
        if (!xc->want_out) /* else EPOLLOUT flushes */
                tcp_flush(xc);
}

/* ---------------- receive ---------------- */

static void rx_reset(struct xport_conn *xc)
{
        xc->phase = RX_BHS;
        xc->hdr_have = 0;
        xc->hdr_want = ISCSI_BHS_LEN;
}

/* A read that returned n <= 0: 1 to retry (EINTR), 0 when it would block, -1 when the
 * connection is closing (peer closed or error). */
static int read_stopped(struct xport_conn *xc, ssize_t n)
{
        if (n == 0) {
                close_now(xc, "peer closed the connection");
                return -1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
        if (errno == EINTR)
                return 1;
        close_now(xc, strerror(errno));
        return -1;
}

/* Reads into buf until want bytes are there. 1: complete, 0: would block, -1: closed. */
static int read_some(struct xport_conn *xc, uint8_t *buf, uint32_t *have, uint32_t want)
{
        while (*have < want) {
                ssize_t n = recv(xc->fd, buf + *have, want - *have, 0);
                if (n > 0) {
                        *have += (uint32_t)n;
                        continue;
                }
                int rc = read_stopped(xc, n);
                if (rc <= 0)
                        return rc;
        }
        return 1;
}

static uint32_t trailer_len(const struct xport_conn *xc, uint32_t dsl)
{
        if (!dsl)
                return 0;
        return iscsi_pad(dsl) + (xc->data_digest ? 4 : 0);
}

static int header_complete(struct xport_conn *xc)
{
        const struct iscsi_bhs *bhs = (const struct iscsi_bhs *)xc->hdr;
        uint32_t ahs = bhs_ahs_bytes(bhs);
        uint32_t full = ISCSI_BHS_LEN + ahs + (xc->header_digest ? 4 : 0);
        if (xc->hdr_want < full) {
                xc->hdr_want = full; /* now read the AHS and digest */
                xc->phase = RX_AHS;
                return 0;
        }
        if (xc->header_digest) {
                uint32_t want = crc32c(0, xc->hdr, ISCSI_BHS_LEN + ahs);
                if (want != crc32c_get_digest(xc->hdr + ISCSI_BHS_LEN + ahs)) {
                        /* The length fields cannot be trusted: the connection must go. */
                        log_warn("tcp %s: header digest error, dropping connection", xc->peer);
                        tcp_close(xc, "header digest error");
                        return -1;
                }
        }
        uint32_t dsl = bhs_dsl(bhs);
        if (dsl > xc->max_recv_dsl && bhs_opcode(bhs) != ISCSI_OP_LOGIN_REQ) {
                log_warn("tcp %s: data segment of %u bytes exceeds %u, dropping connection",
                         xc->peer, dsl, xc->max_recv_dsl);
                tcp_close(xc, "oversized data segment");
                return -1;
        }
        if (iscsi_conn_rx_header(xc->ic, bhs, xc->hdr + ISCSI_BHS_LEN, ahs, &xc->dest) < 0) {
                tcp_close(xc, "protocol error");
                return -1;
        }
        xc->phase = RX_DATA;
        xc->data_have = 0;
        xc->data_want = dsl + trailer_len(xc, dsl);
        return 0;
}

static int read_data(struct xport_conn *xc)
{
        const struct iscsi_bhs *bhs = (const struct iscsi_bhs *)xc->hdr;
        uint32_t dsl = bhs_dsl(bhs);
        while (xc->data_have < xc->data_want) {
                struct iovec iov[8];
                int n = 0;
                uint32_t skip = xc->data_have;
                if (xc->dest.discard) {
                        uint32_t left = dsl > skip ? dsl - skip : 0;
                        if (left)
                                iov[n++] = (struct iovec){
                                    xc->discard, left < DISCARD_CHUNK ? left : DISCARD_CHUNK};
                } else {
                        for (int i = 0; i < xc->dest.iovcnt; i++) {
                                if (skip >= xc->dest.iov[i].iov_len) {
                                        skip -= (uint32_t)xc->dest.iov[i].iov_len;
                                        continue;
                                }
                                iov[n++] = (struct iovec){(char *)xc->dest.iov[i].iov_base + skip,
                                                          xc->dest.iov[i].iov_len - skip};
                                skip = 0;
                                if (n == 6)
                                        break;
                        }
                }
                uint64_t asked = 0;
                for (int i = 0; i < n; i++)
                        asked += iov[i].iov_len;
                if (xc->data_have + asked >= dsl) { /* the data's end is in this read */
                        uint32_t t = xc->data_have > dsl ? xc->data_have - dsl : 0;
                        uint32_t rest = xc->data_want - dsl - t;
                        if (rest)
                                iov[n++] = (struct iovec){xc->trailer + t, rest};
                        asked += rest;
                }
                if (n == 0) {
                        log_err("tcp %s: no buffer for %u data bytes", xc->peer, dsl);
                        tcp_close(xc, "internal error");
                        return -1;
                }
                if (asked == xc->data_want - xc->data_have) /* the rest of this PDU, all of it */
                        iov[n++] = (struct iovec){xc->ahead, ISCSI_BHS_LEN};
                ssize_t got = readv(xc->fd, iov, n);
                if (got > 0) {
                        uint32_t left = xc->data_want - xc->data_have;
                        if ((uint32_t)got > left) {
                                xc->ahead_have = (uint32_t)got - left;
                                got = left;
                        }
                        xc->data_have += (uint32_t)got;
                        continue;
                }
                int rc = read_stopped(xc, got);
                if (rc <= 0)
                        return rc;
        }
        return 1;
}

static bool data_digest_ok(struct xport_conn *xc, uint32_t dsl)
{
        if (!xc->data_digest || !dsl || xc->dest.discard)
                return true;
        uint32_t crc = crc32c_iov(0, xc->dest.iov, xc->dest.iovcnt);
        uint32_t pad = iscsi_pad(dsl);
        crc = crc32c(crc, xc->trailer, pad);
        return crc == crc32c_get_digest(xc->trailer + pad);
}

/* One step of the receive state machine. 1: a PDU completed, 0: would block, -1: closed. */
static int rx_step(struct xport_conn *xc)
{
        int rc;
        switch (xc->phase) {
        case RX_BHS:
        case RX_AHS:
                rc = read_some(xc, xc->hdr, &xc->hdr_have, xc->hdr_want);
                if (rc <= 0)
                        return rc;
                if (header_complete(xc) < 0)
                        return -1;
                if (xc->phase != RX_DATA)
                        return rx_step(xc);
                /* fall through */
        case RX_DATA:
                rc = read_data(xc);
                if (rc <= 0)
                        return rc;
                uint32_t dsl = bhs_dsl((const struct iscsi_bhs *)xc->hdr);
                bool ok = data_digest_ok(xc, dsl);
                if (!ok)
                        log_warn("tcp %s: data digest error", xc->peer);
                rx_reset(xc);
                iscsi_conn_rx_pdu(xc->ic, ok);
                if (xc->ahead_have) {
                        memcpy(xc->hdr, xc->ahead, xc->ahead_have);
                        xc->hdr_have = xc->ahead_have;
                        xc->ahead_have = 0;
                }
                return 1;
        default:
                return -1;
        }
}

/* Whether a whole header was read ahead: the socket may hold nothing more to wake us. */
static bool header_waiting(const struct xport_conn *xc)
{
        return xc->phase == RX_BHS && xc->hdr_have == xc->hdr_want;
}

static void rx_run(struct xport_conn *xc)
{
        int budget = TCP_RX_BUDGET;
        for (; budget > 0 && !xc->closing && !xc->paused; budget--) {
                if (rx_step(xc) <= 0)
                        return;
        }
        if (!xc->closing && !xc->paused && header_waiting(xc))
                reactor_defer(xc->reactor, &xc->rx_work); /* after the others' turn */
}

static void rx_work_cb(struct reactor_deferred *d)
{
        struct xport_conn *xc =
            (struct xport_conn *)((char *)d - offsetof(struct xport_conn, rx_work));
        rx_run(xc);
}

static void tcp_event(struct reactor_fd *rfd, uint32_t events)
{
        struct xport_conn *xc = rfd->ctx;
        if (xc->closing)
                return;
        if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
                tcp_close(xc, "socket error");
                return;
        }
        if (events & EPOLLOUT)
                tcp_flush(xc);
        if (events & EPOLLIN)
                rx_run(xc);
}

/* ---------------- ops ---------------- */

static void tcp_set_digests(struct xport_conn *xc, bool header, bool data)
{
        xc->header_digest = header;
        xc->data_digest = data;
}

static void tcp_set_max_recv_dsl(struct xport_conn *xc, uint32_t dsl)
{
        xc->max_recv_dsl = dsl;
}

static void tcp_pause_rx(struct xport_conn *xc, bool paused)
{
        if (xc->paused == paused || xc->closing)
                return;
        xc->paused = paused;
        uint32_t ev = (paused ? 0 : EPOLLIN) | (xc->want_out ? EPOLLOUT : 0);
        reactor_mod_fd(xc->reactor, &xc->rfd, ev);
        if (!paused && header_waiting(xc))
                reactor_defer(xc->reactor, &xc->rx_work);
}

static const struct iscsi_transport_ops tcp_ops = {
    .name = "tcp",
    .send_pdu = tcp_send_pdu,
    .set_digests = tcp_set_digests,
    .set_max_recv_dsl = tcp_set_max_recv_dsl,
    .close = tcp_close,
    .pause_rx = tcp_pause_rx,
};

static void tcp_teardown(void *arg)
{
        struct xport_conn *xc = arg;
        reactor_del_fd(xc->reactor, &xc->rfd);
        close(xc->fd);
        xc->fd = -1;
        while (xc->tx_head)
                tx_complete_head(xc);
        reactor_defer_cancel(xc->reactor, &xc->flush_work);
        reactor_defer_cancel(xc->reactor, &xc->rx_work);
        reactor_defer_cancel(xc->reactor, &xc->done_work);
        run_done(xc);
        iscsi_conn_closed(xc->ic);
        /* PDUs the iSCSI layer sent while closing were completed through its own path. */
        reactor_defer_cancel(xc->reactor, &xc->done_work);
        run_done(xc);
        free(xc->discard);
        free(xc);
}

int tcp_conn_start(struct iscsi_gw *gw, struct reactor *r, unsigned ri, int fd, const char *portal,
                   const char *peer)
{
        struct xport_conn *xc = calloc(1, sizeof(*xc));
        if (!xc) {
                close(fd);
                return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        xc->fd = fd;
        xc->reactor = r;
        xc->max_recv_dsl = 8192;
        snprintf(xc->peer, sizeof(xc->peer), "%s", peer);
        xc->discard = malloc(DISCARD_CHUNK);
        xc->done_work.cb = done_work_cb;
        xc->flush_work.cb = flush_work_cb;
        xc->rx_work.cb = rx_work_cb;
        rx_reset(xc);
        xc->ic = iscsi_conn_create(gw, ri, &tcp_ops, xc, portal, peer);
        if (!xc->ic || !xc->discard) {
                log_err("tcp %s: cannot set up the connection", peer);
                close(fd);
                free(xc->discard);
                free(xc);
                return -1;
        }
        xc->rfd = (struct reactor_fd){.fd = fd, .events = EPOLLIN, .cb = tcp_event, .ctx = xc};
        if (reactor_add_fd(r, &xc->rfd) < 0) {
                log_err("tcp %s: epoll: %s", peer, strerror(errno));
                xc->closing = true;
                xc->teardown_queued = true;
                reactor_call(r, tcp_teardown, xc);
                return -1;
        }
        return 0;
}
