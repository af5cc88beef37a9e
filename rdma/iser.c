#include "rdma/iser.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <pthread.h>
#include <rdma/rdma_cma.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "cache/linepool.h"
#include "iscsi/iscsi.h"
#include "iscsi/transport.h"
#include "src/log.h"
#include "src/reactor.h"

/* RFC 7145 iSER header: flags (opcode in the high nibble), 3 reserved bytes, write STag and
 * VA, read STag and VA, big-endian. */
#define ISER_HDR_LEN  28
#define ISER_OP_MASK  0xf0
#define ISER_OP_CTRL  0x10 /* an iSCSI control-type PDU follows */
#define ISER_OP_HELLO 0x20
#define ISER_WSV      0x08
#define ISER_RSV      0x04
#define ISER_HDRS     (ISER_HDR_LEN + ISCSI_BHS_LEN)
/* iSER CM private data (what the Linux initiator and libiscsi send, and LIO answers): one
 * flags byte and three reserved bytes. */
#define ISER_CM_ZBVA_NOT_USED     0x80
#define ISER_CM_SEND_INV_NOT_USED 0x40
#define ISER_CM_PRIV_LEN          4

#define ISER_CONTROL_DSL                                                                           \
        8192u /* control data segments each way (the RFC default of both iSER keys) */
#define RX_BUF_SIZE   (ISER_HDRS + ISCSI_MAX_AHS_BYTES + ISER_CONTROL_DSL)
#define TX_BUF_SIZE   (ISER_HDRS + ISER_CONTROL_DSL)
#define NRX           192 /* queue depth 128 plus immediate PDUs (NOP-Out, TMF, logout) */
#define NOPS          256 /* send queue depth: SENDs, RDMA WRITEs and READs posted at once */
#define MAX_SGE       4
#define MAX_READS     16 /* RDMA READs in flight per connection, at most */
#define ITT_BUCKETS   256
#define ITT_ENTRIES   1024
#define GRACE_TIMEOUT (1000ull * 1000 * 1000)
#define DRAIN_TIMEOUT (2000ull * 1000 * 1000)
#define LISTENERS_MAX 32

#define CNT_ADD(m, f, n) __atomic_fetch_add(&(m)->cnt.f, (uint64_t)(n), __ATOMIC_RELAXED)

struct iser_counters {
        uint64_t rdma_reads, rdma_read_bytes;
        uint64_t rdma_writes, rdma_write_bytes;
        uint64_t data_copy_bytes;     /* write or read data the CPU copied (0 by design) */
        uint64_t control_copy_bytes;  /* control PDU data through registered buffers */
        uint64_t extra_registrations; /* buffers outside the pool (non-media data) */
        uint64_t connections, connections_refused;
        uint64_t wc_errors, device_removals;
};

/* One RDMA device: its protection domain and the pool's memory region. */
struct iser_dev {
        struct ibv_context *verbs;
        struct ibv_pd *pd;
        struct ibv_mr *pool_mr;
        struct ibv_device_attr attr;
        struct iser_dev *next;
};

struct iser_listener {
        struct iser_mgr *m;
        struct rdma_event_channel *ech;
        struct rdma_cm_id *id;
        struct reactor_fd rfd;
        char name[80];
        bool active;
};

struct iser_mgr {
        struct iscsi_gw *gw;
        struct line_pool *pool;
        struct reactor **reactors;
        unsigned nreactors;
        unsigned next_reactor;
        pthread_mutex_t lock; /* devs */
        struct iser_dev *devs;
        struct iser_listener listeners[LISTENERS_MAX];
        unsigned nlisteners;
        struct iser_counters cnt;
};

enum op_kind { OP_RECV, OP_SEND, OP_WRITE, OP_READ };

/* One work request: wr_id points here. */
struct iser_op {
        enum op_kind kind;
        bool in_use;
        uint8_t *buf;         /* registered slot (receive or control send) */
        struct tx_pdu *pdu;   /* SEND: the PDU; WRITE: the Data-In; READ: the R2T */
        struct ibv_mr *extra; /* a registration of a buffer outside the pool */
        uint8_t *dest;        /* READ: where the data lands */
        uint32_t ttt, off, len;
        struct iser_op *next; /* free list */
};

/* What the iSER header of a SCSI Command said, by ITT, until its status goes out. */
struct itt_entry {
        uint32_t itt;
        uint32_t write_stag, read_stag;
        uint64_t write_va, read_va;
        uint8_t flags;
        bool base_set;
        uint32_t base_off; /* buffer offset the write VA stands for (first solicited byte) */
        struct itt_entry *next;
};

struct xport_conn {
        struct iser_mgr *m;
        struct iser_dev *dev;
        struct reactor *reactor;
        unsigned ri;
        struct rdma_cm_id *id;
        struct rdma_event_channel *ech;
        struct ibv_comp_channel *cch;
        struct ibv_cq *cq;
        unsigned cq_events_unacked;
        struct reactor_fd cm_rfd, cq_rfd;
        bool cm_fd_added, cq_fd_added;
        struct iscsi_conn *ic;
        char peer[80];
        uint32_t max_recv_dsl;
        unsigned max_reads;
        bool established, closing, disconnecting, teardown_queued, paused;
        struct reactor_timer drain_timer;
        /* buffers */
        uint8_t *rx_mem, *tx_mem;
        struct ibv_mr *rx_mr, *tx_mr;
        struct iser_op rx_ops[NRX];
        struct iser_op tx_ops[NOPS];
        struct iser_op *tx_free;
        unsigned tx_free_count;
        unsigned rx_posted, tx_posted;
        /* PDUs waiting for a send op, in order */
        struct tx_pdu *tx_head, *tx_tail;
        /* R2Ts waiting for a read slot */
        struct tx_pdu *rd_head, *rd_tail;
        unsigned reads_inflight;
        /* sent, sent() not yet called */
        struct tx_pdu *done_head;
        struct reactor_deferred done_work;
        /* Torn down: freed once this loop iteration's events (which may name its fds) ran. */
        bool dead;
        struct reactor_deferred free_work;
        /* ITT table */
        struct itt_entry *itt_bucket[ITT_BUCKETS];
        struct itt_entry itt_pool[ITT_ENTRIES];
        struct itt_entry *itt_free;
};

/* Private data of a connection request, checked on reactor 0 before the hand-off. */
struct handoff {
        struct iser_mgr *m;
        struct rdma_cm_id *id;
        unsigned ri;
        uint8_t initiator_depth, responder_resources;
        char portal[80];
        char peer[80];
};

static void iser_close(struct xport_conn *xc, const char *reason);

/* ---------------- devices ---------------- */

static struct iser_dev *dev_get(struct iser_mgr *m, struct ibv_context *verbs)
{
        pthread_mutex_lock(&m->lock);
        struct iser_dev *d;
        for (d = m->devs; d; d = d->next)
                if (d->verbs == verbs)
                        goto out;
        d = calloc(1, sizeof(*d));
        if (!d)
                goto out;
        d->verbs = verbs;
        if (ibv_query_device(verbs, &d->attr) != 0)
                goto fail;
        d->pd = ibv_alloc_pd(verbs);
        if (!d->pd)
                goto fail;
        /* The whole pool, once: every line can be the target of an RDMA READ and the source
         * of an RDMA WRITE with no registration on the data path. */
        d->pool_mr = ibv_reg_mr(d->pd, line_pool_base(m->pool), line_pool_bytes(m->pool),
                                IBV_ACCESS_LOCAL_WRITE);
        if (!d->pool_mr) {
                log_err("iser: %s: cannot register the %zu-byte line pool: %s",
                        ibv_get_device_name(verbs->device), line_pool_bytes(m->pool),
                        strerror(errno));
                goto fail;
        }
        log_info("iser: device %s: line pool registered once (%zu bytes, lkey 0x%x)",
                 ibv_get_device_name(verbs->device), line_pool_bytes(m->pool), d->pool_mr->lkey);
        d->next = m->devs;
        m->devs = d;
        goto out;
fail:
        if (d->pd)
                ibv_dealloc_pd(d->pd);
        free(d);
        d = NULL;
out:
        pthread_mutex_unlock(&m->lock);
        return d;
}

/* The lkey covering [addr, addr+len): the pool's, or a registration of its own (kept in
 * *extra and released with the op). 0 and errno on failure. */
static int lkey_for(struct xport_conn *xc, void *addr, size_t len, uint32_t *lkey,
                    struct ibv_mr **extra)
{
        uint8_t *base = line_pool_base(xc->m->pool);
        uint8_t *p = addr;
        if (p >= base && p + len <= base + line_pool_bytes(xc->m->pool)) {
                *lkey = xc->dev->pool_mr->lkey;
                return 0;
        }
        if (*extra) /* one extra registration per op */
                return -1;
        *extra = ibv_reg_mr(xc->dev->pd, addr, len ? len : 1, IBV_ACCESS_LOCAL_WRITE);
        if (!*extra)
                return -1;
        CNT_ADD(xc->m, extra_registrations, 1);
        *lkey = (*extra)->lkey;
        return 0;
}

/* ---------------- ITT table ---------------- */

static struct itt_entry **itt_slot(struct xport_conn *xc, uint32_t itt)
{
        struct itt_entry **pp = &xc->itt_bucket[(itt ^ (itt >> 8) ^ (itt >> 16)) % ITT_BUCKETS];
        while (*pp && (*pp)->itt != itt)
                pp = &(*pp)->next;
        return pp;
}

static struct itt_entry *itt_find(struct xport_conn *xc, uint32_t itt)
{
        return *itt_slot(xc, itt);
}

static void itt_remove(struct xport_conn *xc, uint32_t itt)
{
        struct itt_entry **pp = itt_slot(xc, itt);
        struct itt_entry *e = *pp;
        if (!e)
                return;
        *pp = e->next;
        e->next = xc->itt_free;
        xc->itt_free = e;
}

static struct itt_entry *itt_put(struct xport_conn *xc, uint32_t itt)
{
        struct itt_entry **pp = itt_slot(xc, itt);
        struct itt_entry *e = *pp;
        if (!e) {
                e = xc->itt_free;
                if (!e)
                        return NULL;
                xc->itt_free = e->next;
                e->next = NULL;
                *pp = e;
        }
        struct itt_entry *next = e->next;
        *e = (struct itt_entry){.itt = itt, .next = next};
        return e;
}

/* ---------------- completions handed back ---------------- */

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

/* p is finished with: sent() runs later, never inside the caller. */
static void pdu_done(struct xport_conn *xc, struct tx_pdu *p)
{
        if (!p)
                return;
        p->next = xc->done_head;
        xc->done_head = p;
        reactor_defer(xc->reactor, &xc->done_work);
}

static struct iser_op *op_get(struct xport_conn *xc)
{
        struct iser_op *op = xc->tx_free;
        if (!op)
                return NULL;
        xc->tx_free = op->next;
        xc->tx_free_count--;
        op->in_use = true;
        op->pdu = NULL;
        op->extra = NULL;
        op->dest = NULL;
        return op;
}

static void op_put(struct xport_conn *xc, struct iser_op *op)
{
        if (op->extra)
                ibv_dereg_mr(op->extra);
        op->extra = NULL;
        op->in_use = false;
        op->next = xc->tx_free;
        xc->tx_free = op;
        xc->tx_free_count++;
}

/* ---------------- receive ---------------- */

static int post_recv(struct xport_conn *xc, struct iser_op *op)
{
        struct ibv_sge sge = {
            .addr = (uintptr_t)op->buf, .length = RX_BUF_SIZE, .lkey = xc->rx_mr->lkey};
        struct ibv_recv_wr wr = {.wr_id = (uintptr_t)op, .sg_list = &sge, .num_sge = 1}, *bad;
        if (ibv_post_recv(xc->id->qp, &wr, &bad) != 0)
                return -1;
        xc->rx_posted++;
        return 0;
}

static bool record_command(struct xport_conn *xc, const uint8_t *ih, const struct iscsi_bhs *bhs)
{
        uint8_t flags = ih[0];
        uint32_t itt = bhs_itt(bhs), edtl = bhs_word(bhs, BHS_CMD_EDTL);
        uint8_t f = bhs_flags(bhs);
        if ((f & ISCSI_FLAG_CMD_WRITE) && edtl > bhs_dsl(bhs) && !(flags & ISER_WSV)) {
                log_warn("iser %s: ITT 0x%08x: a write of %u bytes without a write STag", xc->peer,
                         itt, edtl);
                return false;
        }
        if ((f & ISCSI_FLAG_CMD_READ) && edtl && !(flags & ISER_RSV)) {
                log_warn("iser %s: ITT 0x%08x: a read of %u bytes without a read STag", xc->peer,
                         itt, edtl);
                return false;
        }
        if (!(flags & (ISER_WSV | ISER_RSV))) {
                itt_remove(xc, itt);
                return true;
        }
        struct itt_entry *e = itt_put(xc, itt);
        if (!e) {
                log_warn("iser %s: more than %u commands in flight", xc->peer, ITT_ENTRIES);
                return false;
        }
        e->flags = flags;
        e->write_stag = iscsi_get_be32(ih + 4);
        e->write_va = iscsi_get_be64(ih + 8);
        e->read_stag = iscsi_get_be32(ih + 16);
        e->read_va = iscsi_get_be64(ih + 20);
        return true;
}

static void copy_to_dest(struct xport_conn *xc, const uint8_t *src, uint32_t len,
                         const struct rx_dest *dest)
{
        if (dest->discard)
                return;
        uint32_t done = 0;
        for (int i = 0; i < dest->iovcnt && done < len; i++) {
                uint32_t n = (uint32_t)dest->iov[i].iov_len;
                if (n > len - done)
                        n = len - done;
                memcpy(dest->iov[i].iov_base, src + done, n);
                done += n;
        }
        if (dest->placed)
                CNT_ADD(xc->m, data_copy_bytes, done);
        else
                CNT_ADD(xc->m, control_copy_bytes, done);
}

static void handle_recv(struct xport_conn *xc, struct iser_op *op, uint32_t byte_len)
{
        const uint8_t *ih = op->buf;
        if (byte_len < ISER_HDRS) {
                log_warn("iser %s: a %u-byte message is shorter than the iSER and iSCSI headers",
                         xc->peer, byte_len);
                iser_close(xc, "short message");
                return;
        }
        if ((ih[0] & ISER_OP_MASK) != ISER_OP_CTRL) {
                log_warn("iser %s: iSER opcode 0x%x not supported (only iSCSI control-type PDUs)",
                         xc->peer, ih[0] >> 4);
                iser_close(xc, "unsupported iSER opcode");
                return;
        }
        const struct iscsi_bhs *bhs = (const struct iscsi_bhs *)(ih + ISER_HDR_LEN);
        uint32_t ahs = bhs_ahs_bytes(bhs), dsl = bhs_dsl(bhs);
        if ((uint64_t)ISER_HDRS + ahs + dsl > byte_len) {
                log_warn("iser %s: %s says %u+%u bytes follow but the message has %u", xc->peer,
                         iscsi_opcode_name(bhs_opcode(bhs)), ahs, dsl, byte_len - ISER_HDRS);
                iser_close(xc, "truncated message");
                return;
        }
        if (bhs_opcode(bhs) == ISCSI_OP_SCSI_CMD && !record_command(xc, ih, bhs)) {
                iser_close(xc, "bad iSER header");
                return;
        }
        struct rx_dest dest;
        if (iscsi_conn_rx_header(xc->ic, bhs, ih + ISER_HDRS, ahs, &dest) < 0) {
                iser_close(xc, "protocol error");
                return;
        }
        if (dsl)
                copy_to_dest(xc, ih + ISER_HDRS + ahs, dsl, &dest);
        iscsi_conn_rx_pdu(xc->ic, true);
}

/* ---------------- send ---------------- */

static void tx_flush(struct xport_conn *xc);
static void reads_pump(struct xport_conn *xc);

static int post_send_wr(struct xport_conn *xc, struct ibv_send_wr *wr)
{
        struct ibv_send_wr *bad;
        int rc = ibv_post_send(xc->id->qp, wr, &bad);
        if (rc != 0) {
                log_warn("iser %s: ibv_post_send: %s", xc->peer, strerror(rc));
                return -1;
        }
        for (; wr; wr = wr->next)
                xc->tx_posted++;
        return 0;
}

/* Builds [iSER header][BHS][data] in op's slot and posts it as one SEND. */
static int post_control(struct xport_conn *xc, struct iser_op *op, const struct iscsi_bhs *bhs,
                        const struct iovec *iov, int iovcnt, uint32_t len)
{
        if (len > ISER_CONTROL_DSL) {
                log_err("iser %s: %s with %u data bytes exceeds the %u-byte send buffer", xc->peer,
                        iscsi_opcode_name(bhs_opcode(bhs)), len, ISER_CONTROL_DSL);
                return -1;
        }
        memset(op->buf, 0, ISER_HDR_LEN);
        op->buf[0] = ISER_OP_CTRL;
        memcpy(op->buf + ISER_HDR_LEN, bhs->b, ISCSI_BHS_LEN);
        uint32_t done = 0;
        for (int i = 0; i < iovcnt && done < len; i++) {
                uint32_t n = (uint32_t)iov[i].iov_len;
                if (n > len - done)
                        n = len - done;
                memcpy(op->buf + ISER_HDRS + done, iov[i].iov_base, n);
                done += n;
        }
        CNT_ADD(xc->m, control_copy_bytes, done);
        op->kind = OP_SEND;
        struct ibv_sge sge = {
            .addr = (uintptr_t)op->buf, .length = ISER_HDRS + done, .lkey = xc->tx_mr->lkey};
        struct ibv_send_wr wr = {.wr_id = (uintptr_t)op,
                                 .sg_list = &sge,
                                 .num_sge = 1,
                                 .opcode = IBV_WR_SEND,
                                 .send_flags = IBV_SEND_SIGNALED};
        return post_send_wr(xc, &wr);
}

/* A Data-In's status goes in a SCSI Response of its own: iSER has no phase collapse on the
 * wire (RFC 7145 section 7.3.4: the response follows the RDMA WRITEs). */
static void response_from_data_in(const struct iscsi_bhs *din, struct iscsi_bhs *rsp)
{
        memset(rsp, 0, sizeof(*rsp));
        rsp->b[0] = ISCSI_OP_SCSI_RSP;
        rsp->b[1] = 0x80 | (din->b[1] & (ISCSI_FLAG_DATA_OVERFLOW | ISCSI_FLAG_DATA_UNDERFLOW));
        rsp->b[2] = ISCSI_RSP_COMPLETED;
        rsp->b[3] = din->b[3];
        memcpy(rsp->b + 16, din->b + 16, 4);                        /* ITT */
        memcpy(rsp->b + 24, din->b + 24, 12);                       /* StatSN, ExpCmdSN, MaxCmdSN */
        iscsi_put_be32(rsp->b + 36, bhs_word(din, BHS_DATASN) + 1); /* ExpDataSN */
        memcpy(rsp->b + 44, din->b + 44, 4);                        /* residual count */
}

/* Data-In: RDMA WRITE from where the data lives (a cache line) to the initiator's read
 * buffer at Read VA + buffer offset; with the status bit, a SCSI Response SEND follows. */
static int post_data_in(struct xport_conn *xc, struct tx_pdu *p)
{
        uint32_t itt = bhs_itt(&p->bhs), off = bhs_word(&p->bhs, BHS_BUFOFF);
        bool status = p->bhs.b[1] & ISCSI_FLAG_DATA_STATUS;
        struct itt_entry *e = itt_find(xc, itt);
        if (!e || !(e->flags & ISER_RSV)) {
                log_warn("iser %s: ITT 0x%08x: read data but no read STag", xc->peer, itt);
                return -1;
        }
        struct iser_op *wop = NULL, *sop = NULL;
        struct ibv_send_wr wr[2];
        struct ibv_sge sge[MAX_SGE], rsge;
        memset(wr, 0, sizeof(wr));
        int nwr = 0;
        if (p->data_len) {
                if (p->data_iovcnt > MAX_SGE) {
                        log_err("iser %s: Data-In in %d pieces", xc->peer, p->data_iovcnt);
                        return -1;
                }
                wop = op_get(xc);
                wop->kind = OP_WRITE;
                wop->pdu = p;
                wop->len = p->data_len;
                for (int i = 0; i < p->data_iovcnt; i++) {
                        sge[i].addr = (uintptr_t)p->data[i].iov_base;
                        sge[i].length = (uint32_t)p->data[i].iov_len;
                        if (lkey_for(xc, p->data[i].iov_base, p->data[i].iov_len, &sge[i].lkey,
                                     &wop->extra) < 0) {
                                log_err("iser %s: cannot register Data-In buffer: %s", xc->peer,
                                        strerror(errno));
                                op_put(xc, wop);
                                return -1;
                        }
                }
                wr[nwr] = (struct ibv_send_wr){.wr_id = (uintptr_t)wop,
                                               .sg_list = sge,
                                               .num_sge = p->data_iovcnt,
                                               .opcode = IBV_WR_RDMA_WRITE,
                                               .send_flags = IBV_SEND_SIGNALED};
                wr[nwr].wr.rdma.remote_addr = e->read_va + off;
                wr[nwr].wr.rdma.rkey = e->read_stag;
                nwr++;
        }
        if (status) {
                sop = op_get(xc);
                struct iscsi_bhs rsp;
                response_from_data_in(&p->bhs, &rsp);
                memset(sop->buf, 0, ISER_HDR_LEN);
                sop->buf[0] = ISER_OP_CTRL;
                memcpy(sop->buf + ISER_HDR_LEN, rsp.b, ISCSI_BHS_LEN);
                sop->kind = OP_SEND;
                if (!wop)
                        sop->pdu = p;
                rsge = (struct ibv_sge){
                    .addr = (uintptr_t)sop->buf, .length = ISER_HDRS, .lkey = xc->tx_mr->lkey};
                wr[nwr] = (struct ibv_send_wr){.wr_id = (uintptr_t)sop,
                                               .sg_list = &rsge,
                                               .num_sge = 1,
                                               .opcode = IBV_WR_SEND,
                                               .send_flags = IBV_SEND_SIGNALED};
                nwr++;
                itt_remove(xc, itt);
        }
        if (nwr == 0) {
                pdu_done(xc, p);
                return 0;
        }
        if (nwr == 2)
                wr[0].next = &wr[1];
        if (post_send_wr(xc, wr) < 0) {
                if (wop)
                        op_put(xc, wop);
                if (sop)
                        op_put(xc, sop);
                return -1;
        }
        if (wop) {
                CNT_ADD(xc->m, rdma_writes, 1);
                CNT_ADD(xc->m, rdma_write_bytes, p->data_len);
        }
        return 0;
}

static void tx_flush(struct xport_conn *xc)
{
        while (xc->tx_head && !xc->closing) {
                struct tx_pdu *p = xc->tx_head;
                bool data_in = bhs_opcode(&p->bhs) == ISCSI_OP_DATA_IN;
                if (xc->tx_free_count < (data_in ? 2u : 1u))
                        return; /* a completion frees ops and calls back here */
                xc->tx_head = p->next;
                if (!xc->tx_head)
                        xc->tx_tail = NULL;
                p->next = NULL;
                int rc;
                if (data_in) {
                        rc = post_data_in(xc, p);
                } else {
                        struct iser_op *op = op_get(xc);
                        op->pdu = p;
                        rc = post_control(xc, op, &p->bhs, p->data, p->data_iovcnt, p->data_len);
                        if (rc < 0)
                                op_put(xc, op);
                        else if (bhs_opcode(&p->bhs) == ISCSI_OP_SCSI_RSP)
                                itt_remove(xc, bhs_itt(&p->bhs));
                }
                if (rc < 0) {
                        pdu_done(xc, p);
                        iser_close(xc, "cannot send");
                        return;
                }
        }
}

/* R2T: RDMA READ of [off, off+len) from the initiator's Write VA straight to where the data
 * pointer table places it (one piece within one cache line). */
static int post_read(struct xport_conn *xc, struct tx_pdu *r2t)
{
        uint32_t itt = bhs_itt(&r2t->bhs), ttt = bhs_word(&r2t->bhs, BHS_TTT);
        uint32_t off = bhs_word(&r2t->bhs, BHS_BUFOFF), len = bhs_word(&r2t->bhs, BHS_R2T_DDTL);
        uint8_t *dest = iscsi_conn_solicited_dest(xc->ic, ttt, off, len);
        if (!dest) { /* the task went away (aborted) after asking */
                pdu_done(xc, r2t);
                return 0;
        }
        struct itt_entry *e = itt_find(xc, itt);
        if (!e || !(e->flags & ISER_WSV)) {
                log_warn("iser %s: ITT 0x%08x: write data wanted but no write STag", xc->peer, itt);
                pdu_done(xc, r2t);
                return -1;
        }
        if (!e->base_set) {
                /* Initiators give the VA of the first byte they did not send unsolicited. */
                e->base_set = true;
                e->base_off = off;
        }
        if (off < e->base_off) {
                log_warn("iser %s: ITT 0x%08x: R2T at %u before the write VA's offset %u", xc->peer,
                         itt, off, e->base_off);
                pdu_done(xc, r2t);
                return -1;
        }
        struct iser_op *op = op_get(xc);
        op->kind = OP_READ;
        op->pdu = r2t;
        op->dest = dest;
        op->ttt = ttt;
        op->off = off;
        op->len = len;
        struct ibv_sge sge = {.addr = (uintptr_t)dest, .length = len};
        if (lkey_for(xc, dest, len, &sge.lkey, &op->extra) < 0) {
                log_err("iser %s: cannot register a write buffer: %s", xc->peer, strerror(errno));
                op_put(xc, op);
                pdu_done(xc, r2t);
                return -1;
        }
        struct ibv_send_wr wr = {.wr_id = (uintptr_t)op,
                                 .sg_list = &sge,
                                 .num_sge = 1,
                                 .opcode = IBV_WR_RDMA_READ,
                                 .send_flags = IBV_SEND_SIGNALED};
        wr.wr.rdma.remote_addr = e->write_va + (off - e->base_off);
        wr.wr.rdma.rkey = e->write_stag;
        if (post_send_wr(xc, &wr) < 0) {
                op_put(xc, op);
                pdu_done(xc, r2t);
                return -1;
        }
        xc->reads_inflight++;
        return 0;
}

static void reads_pump(struct xport_conn *xc)
{
        /* Keep one op spare for responses so reads never starve the SENDs. */
        while (xc->rd_head && !xc->closing && xc->reads_inflight < xc->max_reads &&
               xc->tx_free_count > 2) {
                struct tx_pdu *p = xc->rd_head;
                xc->rd_head = p->next;
                if (!xc->rd_head)
                        xc->rd_tail = NULL;
                p->next = NULL;
                if (post_read(xc, p) < 0) {
                        iser_close(xc, "cannot read write data");
                        return;
                }
        }
}

/* The READ is complete: the data is in its line. The iSCSI layer hears of it as Data-Out
 * PDUs (of at most our receive limit each), whose destination is where the data already is. */
static void read_done(struct xport_conn *xc, struct iser_op *op)
{
        struct tx_pdu *r2t = op->pdu;
        uint32_t chunk = xc->max_recv_dsl ? xc->max_recv_dsl : ISER_CONTROL_DSL;
        CNT_ADD(xc->m, rdma_reads, 1);
        CNT_ADD(xc->m, rdma_read_bytes, op->len);
        uint32_t sn = 0;
        for (uint32_t done = 0; done < op->len && !xc->closing; done += chunk, sn++) {
                uint32_t n = op->len - done < chunk ? op->len - done : chunk;
                struct iscsi_bhs bhs;
                memset(&bhs, 0, sizeof(bhs));
                bhs_set_opcode(&bhs, ISCSI_OP_DATA_OUT, done + n == op->len ? ISCSI_FLAG_FINAL : 0);
                memcpy(bhs.b + 8, r2t->bhs.b + 8, 8);   /* LUN */
                memcpy(bhs.b + 16, r2t->bhs.b + 16, 4); /* ITT */
                bhs_set_word(&bhs, BHS_TTT, op->ttt);
                bhs_set_word(&bhs, BHS_DATASN, sn);
                bhs_set_word(&bhs, BHS_BUFOFF, op->off + done);
                bhs_set_dsl(&bhs, n);
                struct rx_dest dest;
                if (iscsi_conn_rx_header(xc->ic, &bhs, NULL, 0, &dest) < 0) {
                        iser_close(xc, "protocol error");
                        break;
                }
                bool in_place = !dest.discard && dest.iovcnt == 1 &&
                                dest.iov[0].iov_base == op->dest + done && dest.iov[0].iov_len >= n;
                if (!in_place && !dest.discard)
                        copy_to_dest(xc, op->dest + done, n, &dest);
                iscsi_conn_rx_pdu(xc->ic, true);
        }
        op->pdu = NULL;
        pdu_done(xc, r2t);
}

static void iser_send_pdu(struct xport_conn *xc, struct tx_pdu *pdu)
{
        pdu->next = NULL;
        if (xc->closing) {
                pdu_done(xc, pdu);
                return;
        }
        if (bhs_opcode(&pdu->bhs) == ISCSI_OP_R2T) {
                if (xc->rd_tail)
                        xc->rd_tail->next = pdu;
                else
                        xc->rd_head = pdu;
                xc->rd_tail = pdu;
                reads_pump(xc);
                return;
        }
        if (xc->tx_tail)
                xc->tx_tail->next = pdu;
        else
                xc->tx_head = pdu;
        xc->tx_tail = pdu;
        tx_flush(xc);
}

/* ---------------- completions ---------------- */

static void maybe_teardown(struct xport_conn *xc);

static const char *op_name(enum op_kind k)
{
        static const char *const names[] = {"RECV", "SEND", "RDMA WRITE", "RDMA READ"};
        return names[k];
}

static void handle_wc(struct xport_conn *xc, const struct ibv_wc *wc)
{
        struct iser_op *op = (struct iser_op *)(uintptr_t)wc->wr_id;
        bool ok = wc->status == IBV_WC_SUCCESS;
        if (!ok && wc->status != IBV_WC_WR_FLUSH_ERR) {
                CNT_ADD(xc->m, wc_errors, 1);
                log_warn("iser %s: %s failed: %s (vendor error 0x%x)", xc->peer, op_name(op->kind),
                         ibv_wc_status_str(wc->status), wc->vendor_err);
        }
        if (op->kind == OP_RECV) {
                xc->rx_posted--;
                if (!ok) {
                        iser_close(xc, "receive failed");
                        return;
                }
                if (!xc->closing)
                        handle_recv(xc, op, wc->byte_len);
                if (!xc->closing && post_recv(xc, op) < 0)
                        iser_close(xc, "cannot post a receive");
                return;
        }
        xc->tx_posted--;
        if (op->kind == OP_READ) {
                xc->reads_inflight--;
                if (ok && !xc->closing)
                        read_done(xc, op);
                else
                        pdu_done(xc, op->pdu);
        } else {
                pdu_done(xc, op->pdu);
        }
        op->pdu = NULL;
        op_put(xc, op);
        if (!ok) {
                iser_close(xc, "work request failed");
                return;
        }
        tx_flush(xc);
        reads_pump(xc);
}

static void poll_cq(struct xport_conn *xc)
{
        struct ibv_wc wc[32];
        int n;
        while ((n = ibv_poll_cq(xc->cq, 32, wc)) > 0)
                for (int i = 0; i < n; i++)
                        handle_wc(xc, &wc[i]);
        if (xc->closing)
                maybe_teardown(xc);
}

static void cq_event(struct reactor_fd *rfd, uint32_t events)
{
        struct xport_conn *xc = rfd->ctx;
        if (xc->dead)
                return;
        struct ibv_cq *cq;
        void *ctx;
        while (ibv_get_cq_event(xc->cch, &cq, &ctx) == 0)
                xc->cq_events_unacked++;
        if (xc->cq_events_unacked >= 64) {
                ibv_ack_cq_events(xc->cq, xc->cq_events_unacked);
                xc->cq_events_unacked = 0;
        }
        ibv_req_notify_cq(xc->cq, 0);
        poll_cq(xc);
}

/* ---------------- connection events ---------------- */

static void cm_event(struct reactor_fd *rfd, uint32_t events)
{
        struct xport_conn *xc = rfd->ctx;
        if (xc->dead)
                return;
        struct rdma_cm_event *ev;
        while (rdma_get_cm_event(xc->ech, &ev) == 0) {
                enum rdma_cm_event_type type = ev->event;
                int status = ev->status;
                rdma_ack_cm_event(ev);
                switch (type) {
                case RDMA_CM_EVENT_ESTABLISHED:
                        xc->established = true;
                        log_debug("iser %s: established", xc->peer);
                        break;
                case RDMA_CM_EVENT_DISCONNECTED:
                        iser_close(xc, "peer disconnected");
                        break;
                case RDMA_CM_EVENT_DEVICE_REMOVAL:
                        CNT_ADD(xc->m, device_removals, 1);
                        log_warn("iser %s: RDMA device removed", xc->peer);
                        iser_close(xc, "device removed");
                        break;
                case RDMA_CM_EVENT_TIMEWAIT_EXIT:
                        break;
                default:
                        log_warn("iser %s: connection event %s (status %d)", xc->peer,
                                 rdma_event_str(type), status);
                        iser_close(xc, rdma_event_str(type));
                        break;
                }
        }
}

/* ---------------- teardown ---------------- */

static void teardown(void *arg)
{
        struct xport_conn *xc = arg;
        reactor_timer_cancel(xc->reactor, &xc->drain_timer);
        if (xc->cq_fd_added)
                reactor_del_fd(xc->reactor, &xc->cq_rfd);
        if (xc->cm_fd_added)
                reactor_del_fd(xc->reactor, &xc->cm_rfd);
        /* No DMA into lines after this: the QP is gone before the iSCSI layer frees them. */
        if (xc->id && xc->id->qp)
                rdma_destroy_qp(xc->id);
        for (unsigned i = 0; i < NOPS; i++) {
                struct iser_op *op = &xc->tx_ops[i];
                if (op->in_use) {
                        pdu_done(xc, op->pdu);
                        op->pdu = NULL;
                        op_put(xc, op);
                }
        }
        while (xc->tx_head) {
                struct tx_pdu *p = xc->tx_head;
                xc->tx_head = p->next;
                pdu_done(xc, p);
        }
        while (xc->rd_head) {
                struct tx_pdu *p = xc->rd_head;
                xc->rd_head = p->next;
                pdu_done(xc, p);
        }
        reactor_defer_cancel(xc->reactor, &xc->done_work);
        run_done(xc);
        if (xc->ic)
                iscsi_conn_closed(xc->ic);
        reactor_defer_cancel(xc->reactor, &xc->done_work);
        run_done(xc);
        if (xc->cq) {
                if (xc->cq_events_unacked)
                        ibv_ack_cq_events(xc->cq, xc->cq_events_unacked);
                ibv_destroy_cq(xc->cq);
        }
        if (xc->cch)
                ibv_destroy_comp_channel(xc->cch);
        if (xc->rx_mr)
                ibv_dereg_mr(xc->rx_mr);
        if (xc->tx_mr)
                ibv_dereg_mr(xc->tx_mr);
        free(xc->rx_mem);
        free(xc->tx_mem);
        if (xc->id)
                rdma_destroy_id(xc->id);
        if (xc->ech)
                rdma_destroy_event_channel(xc->ech);
        log_debug("iser %s: torn down", xc->peer);
        xc->dead = true;
        reactor_defer(xc->reactor, &xc->free_work);
}

static void free_work_cb(struct reactor_deferred *d)
{
        free((char *)d - offsetof(struct xport_conn, free_work));
}

static void queue_teardown(struct xport_conn *xc)
{
        if (xc->teardown_queued)
                return;
        xc->teardown_queued = true;
        reactor_call(xc->reactor, teardown, xc);
}

static void maybe_teardown(struct xport_conn *xc)
{
        if (xc->disconnecting && xc->rx_posted == 0 && xc->tx_posted == 0)
                queue_teardown(xc);
}

static void drain_timeout(struct reactor_timer *t)
{
        struct xport_conn *xc = t->ctx;
        log_warn("iser %s: %u receives and %u sends not flushed after a disconnect; tearing down",
                 xc->peer, xc->rx_posted, xc->tx_posted);
        queue_teardown(xc);
}

static void start_disconnect(struct xport_conn *xc)
{
        xc->disconnecting = true;
        reactor_timer_cancel(xc->reactor, &xc->drain_timer);
        /* The QP goes to the error state: every posted work request completes (flushed);
         * once all have, nothing refers to lines or iSCSI-layer memory any more. */
        if (xc->id)
                rdma_disconnect(xc->id);
        if (xc->id && xc->id->qp) {
                struct ibv_qp_attr attr = {.qp_state = IBV_QPS_ERR};
                ibv_modify_qp(xc->id->qp, &attr, IBV_QP_STATE);
        }
        xc->drain_timer = (struct reactor_timer){.cb = drain_timeout, .ctx = xc};
        reactor_timer_arm(xc->reactor, &xc->drain_timer, DRAIN_TIMEOUT);
        maybe_teardown(xc);
}

static void iser_close(struct xport_conn *xc, const char *reason)
{
        if (!xc->closing) {
                xc->closing = true;
                log_info("iser %s: closing: %s", xc->peer, reason ? reason : "");
        }
        if (!xc->disconnecting)
                start_disconnect(xc);
}

static void grace_over(struct reactor_timer *t)
{
        struct xport_conn *xc = t->ctx;
        iser_close(xc, "the initiator did not disconnect");
}

/* ---------------- ops table ---------------- */

static void iser_set_digests(struct xport_conn *xc, bool header, bool data)
{
        if (header || data)
                log_warn("iser %s: digests asked for on iSER; there are none (RFC 7145)", xc->peer);
}

static void iser_set_max_recv_dsl(struct xport_conn *xc, uint32_t dsl)
{
        xc->max_recv_dsl = dsl;
}

static void iser_pause_rx(struct xport_conn *xc, bool paused)
{
        /* Receives keep flowing: the initiator's window (CmdSN) bounds them. */
        xc->paused = paused;
}

/* The iSCSI layer ends the connection (after a Logout Response, or on an error it found).
 * On a live connection the initiator gets a moment to disconnect first: a disconnect from
 * our side racing the Logout Response it has not processed yet is a connection error to
 * the Linux initiator. Nothing more is received or sent meanwhile. */
static void iser_ops_close(struct xport_conn *xc, const char *reason)
{
        if (xc->closing || !xc->established) {
                iser_close(xc, reason);
                return;
        }
        xc->closing = true;
        log_info("iser %s: closing: %s", xc->peer, reason ? reason : "");
        xc->drain_timer = (struct reactor_timer){.cb = grace_over, .ctx = xc};
        reactor_timer_arm(xc->reactor, &xc->drain_timer, GRACE_TIMEOUT);
}

static const struct iscsi_transport_ops iser_ops = {
    .name = "iser",
    .send_pdu = iser_send_pdu,
    .set_digests = iser_set_digests,
    .set_max_recv_dsl = iser_set_max_recv_dsl,
    .close = iser_ops_close,
    .pause_rx = iser_pause_rx,
    .rdma = true,
    .max_control_dsl = ISER_CONTROL_DSL,
};

/* ---------------- connection setup ---------------- */

static int set_nonblock(int fd)
{
        int fl = fcntl(fd, F_GETFL);
        return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int setup_buffers(struct xport_conn *xc)
{
        xc->rx_mem = aligned_alloc(4096, (size_t)NRX * RX_BUF_SIZE + 4096);
        xc->tx_mem = aligned_alloc(4096, (size_t)NOPS * TX_BUF_SIZE + 4096);
        if (!xc->rx_mem || !xc->tx_mem)
                return -1;
        xc->rx_mr =
            ibv_reg_mr(xc->dev->pd, xc->rx_mem, (size_t)NRX * RX_BUF_SIZE, IBV_ACCESS_LOCAL_WRITE);
        xc->tx_mr = ibv_reg_mr(xc->dev->pd, xc->tx_mem, (size_t)NOPS * TX_BUF_SIZE, 0);
        if (!xc->rx_mr || !xc->tx_mr)
                return -1;
        for (unsigned i = 0; i < NRX; i++)
                xc->rx_ops[i] =
                    (struct iser_op){.kind = OP_RECV, .buf = xc->rx_mem + (size_t)i * RX_BUF_SIZE};
        for (unsigned i = NOPS; i-- > 0;) {
                xc->tx_ops[i] = (struct iser_op){.buf = xc->tx_mem + (size_t)i * TX_BUF_SIZE,
                                                 .next = xc->tx_free};
                xc->tx_free = &xc->tx_ops[i];
        }
        xc->tx_free_count = NOPS;
        for (unsigned i = ITT_ENTRIES; i-- > 0;) {
                xc->itt_pool[i].next = xc->itt_free;
                xc->itt_free = &xc->itt_pool[i];
        }
        return 0;
}

static int setup_qp(struct xport_conn *xc)
{
        xc->cch = ibv_create_comp_channel(xc->id->verbs);
        if (!xc->cch || set_nonblock(xc->cch->fd) < 0)
                return -1;
        xc->cq = ibv_create_cq(xc->id->verbs, NRX + NOPS, xc, xc->cch, 0);
        if (!xc->cq || ibv_req_notify_cq(xc->cq, 0) != 0)
                return -1;
        int sge = xc->dev->attr.max_sge < MAX_SGE ? xc->dev->attr.max_sge : MAX_SGE;
        struct ibv_qp_init_attr qa = {
            .send_cq = xc->cq,
            .recv_cq = xc->cq,
            .cap = {.max_send_wr = NOPS,
                    .max_recv_wr = NRX,
                    .max_send_sge = (uint32_t)sge,
                    .max_recv_sge = 1},
            .qp_type = IBV_QPT_RC,
            .sq_sig_all = 1,
        };
        if (rdma_create_qp(xc->id, xc->dev->pd, &qa) != 0)
                return -1;
        for (unsigned i = 0; i < NRX; i++)
                if (post_recv(xc, &xc->rx_ops[i]) < 0)
                        return -1;
        return 0;
}

static int accept_conn(struct xport_conn *xc, const struct handoff *h)
{
        uint8_t priv[ISER_CM_PRIV_LEN] = {ISER_CM_ZBVA_NOT_USED | ISER_CM_SEND_INV_NOT_USED};
        /* RDMA READs we may have outstanding: what the initiator serves and the device does. */
        unsigned ord = h->responder_resources;
        if (ord > (unsigned)xc->dev->attr.max_qp_init_rd_atom)
                ord = (unsigned)xc->dev->attr.max_qp_init_rd_atom;
        if (ord == 0)
                ord = 1;
        unsigned ird = h->initiator_depth;
        if (ird > (unsigned)xc->dev->attr.max_qp_rd_atom)
                ird = (unsigned)xc->dev->attr.max_qp_rd_atom;
        xc->max_reads = ord < MAX_READS ? ord : MAX_READS;
        struct rdma_conn_param cp = {
            .private_data = priv,
            .private_data_len = sizeof(priv),
            .initiator_depth = (uint8_t)ord,
            .responder_resources = (uint8_t)ird,
            .rnr_retry_count = 7,
        };
        return rdma_accept(xc->id, &cp);
}

static void start_conn(void *arg)
{
        struct handoff *h = arg;
        struct iser_mgr *m = h->m;
        struct xport_conn *xc = calloc(1, sizeof(*xc));
        const char *what = "out of memory";
        if (!xc)
                goto refuse;
        xc->m = m;
        xc->id = h->id;
        xc->ri = h->ri;
        xc->reactor = m->reactors[h->ri];
        xc->max_recv_dsl = ISER_CONTROL_DSL;
        xc->done_work.cb = done_work_cb;
        xc->free_work.cb = free_work_cb;
        snprintf(xc->peer, sizeof(xc->peer), "%s", h->peer);
        what = "event channel";
        xc->ech = rdma_create_event_channel();
        if (!xc->ech || set_nonblock(xc->ech->fd) < 0 || rdma_migrate_id(xc->id, xc->ech) != 0)
                goto refuse;
        what = "device";
        xc->dev = dev_get(m, xc->id->verbs);
        if (!xc->dev)
                goto refuse;
        what = "queue pair";
        if (setup_buffers(xc) < 0 || setup_qp(xc) < 0)
                goto refuse;
        xc->cq_rfd =
            (struct reactor_fd){.fd = xc->cch->fd, .events = EPOLLIN, .cb = cq_event, .ctx = xc};
        xc->cm_rfd =
            (struct reactor_fd){.fd = xc->ech->fd, .events = EPOLLIN, .cb = cm_event, .ctx = xc};
        what = "epoll";
        if (reactor_add_fd(xc->reactor, &xc->cq_rfd) < 0)
                goto refuse;
        xc->cq_fd_added = true;
        if (reactor_add_fd(xc->reactor, &xc->cm_rfd) < 0)
                goto refuse;
        xc->cm_fd_added = true;
        what = "iSCSI connection";
        xc->ic = iscsi_conn_create(m->gw, h->ri, &iser_ops, xc, h->portal, h->peer);
        if (!xc->ic)
                goto refuse;
        CNT_ADD(m, connections, 1);
        if (accept_conn(xc, h) != 0) {
                log_warn("iser %s: rdma_accept: %s", xc->peer, strerror(errno));
                iser_close(xc, "accept failed");
        }
        free(h);
        return;
refuse:
        log_warn("iser %s: cannot set up the connection (%s): %s", h->peer, what, strerror(errno));
        CNT_ADD(m, connections_refused, 1);
        rdma_reject(h->id, NULL, 0);
        if (xc) {
                xc->closing = true;
                xc->ic = NULL;
                teardown(xc);
        } else {
                rdma_destroy_id(h->id);
        }
        free(h);
}

/* ---------------- listeners ---------------- */

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
                snprintf(buf, len, "unknown");
        }
}

/* RFC 7145 iSER CM REQ: the flags byte may say ZBVA and Send with Invalidate are not used;
 * every other bit and the three reserved bytes are zero. */
static bool private_data_ok(const struct rdma_conn_param *p, char *why, size_t len)
{
        const uint8_t *d = p->private_data;
        if (!d || p->private_data_len < ISER_CM_PRIV_LEN) {
                snprintf(why, len, "no iSER CM private data (%u bytes)", p->private_data_len);
                return false;
        }
        if ((d[0] & ~(ISER_CM_ZBVA_NOT_USED | ISER_CM_SEND_INV_NOT_USED)) || d[1] || d[2] || d[3]) {
                snprintf(why, len, "bad iSER CM private data %02x %02x %02x %02x", d[0], d[1], d[2],
                         d[3]);
                return false;
        }
        return true;
}

static void connect_request(struct iser_listener *l, struct rdma_cm_event *ev)
{
        struct iser_mgr *m = l->m;
        struct rdma_cm_id *id = ev->id;
        char peer[80], why[96];
        format_addr(rdma_get_peer_addr(id), peer, sizeof(peer));
        if (!private_data_ok(&ev->param.conn, why, sizeof(why))) {
                log_warn("iser %s: connection refused on %s: %s", peer, l->name, why);
                CNT_ADD(m, connections_refused, 1);
                rdma_reject(id, NULL, 0);
                rdma_ack_cm_event(ev);
                rdma_destroy_id(id);
                return;
        }
        struct handoff *h = calloc(1, sizeof(*h));
        if (!h) {
                rdma_reject(id, NULL, 0);
                rdma_ack_cm_event(ev);
                rdma_destroy_id(id);
                return;
        }
        h->m = m;
        h->id = id;
        h->initiator_depth = ev->param.conn.initiator_depth;
        h->responder_resources = ev->param.conn.responder_resources;
        h->ri = m->next_reactor++ % m->nreactors;
        snprintf(h->portal, sizeof(h->portal), "%s", l->name);
        snprintf(h->peer, sizeof(h->peer), "%s", peer);
        /* Acked before the id moves to the connection's own event channel on its reactor. */
        rdma_ack_cm_event(ev);
        if (reactor_call(m->reactors[h->ri], start_conn, h) < 0) {
                rdma_reject(id, NULL, 0);
                rdma_destroy_id(id);
                free(h);
        }
}

static void listener_event(struct reactor_fd *rfd, uint32_t events)
{
        struct iser_listener *l = rfd->ctx;
        struct rdma_cm_event *ev;
        while (l->active && rdma_get_cm_event(l->ech, &ev) == 0) {
                if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
                        connect_request(l, ev);
                        continue;
                }
                if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL) {
                        CNT_ADD(l->m, device_removals, 1);
                        log_warn("iser: portal %s: its RDMA device was removed; not listening "
                                 "any more",
                                 l->name);
                        rdma_ack_cm_event(ev);
                        reactor_del_fd(l->m->reactors[0], &l->rfd);
                        l->active = false;
                        return;
                }
                log_debug("iser: portal %s: event %s", l->name, rdma_event_str(ev->event));
                rdma_ack_cm_event(ev);
        }
}

struct iser_mgr *iser_mgr_create(struct iscsi_gw *gw, struct line_pool *pool,
                                 struct reactor **reactors, unsigned nreactors)
{
        struct iser_mgr *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        m->gw = gw;
        m->pool = pool;
        m->reactors = reactors;
        m->nreactors = nreactors;
        pthread_mutex_init(&m->lock, NULL);
        return m;
}

struct listen_args {
        struct iser_listener *l;
        int rc;
};

static void add_listener_fd(void *arg)
{
        struct listen_args *a = arg;
        a->rc = reactor_add_fd(a->l->m->reactors[0], &a->l->rfd);
}

static bool have_rdma_device(void)
{
        int n = 0;
        struct ibv_device **list = ibv_get_device_list(&n);
        if (list)
                ibv_free_device_list(list);
        return list && n > 0;
}

int iser_listen(struct iser_mgr *m, const char *name, const struct sockaddr_storage *addr,
                socklen_t len)
{
        struct iser_listener *l = &m->listeners[m->nlisteners];
        char where[80];
        format_addr((const struct sockaddr *)addr, where, sizeof(where));
        if (m->nlisteners == LISTENERS_MAX)
                return -1;
        if (!have_rdma_device()) {
                log_warn("portal %s (%s): no RDMA device on this host; iSER portal skipped", name,
                         where);
                return -1;
        }
        *l = (struct iser_listener){.m = m};
        snprintf(l->name, sizeof(l->name), "%s", where);
        l->ech = rdma_create_event_channel();
        if (!l->ech) {
                log_warn("portal %s (%s): RDMA CM unavailable (%s); iSER portal skipped", name,
                         where, strerror(errno));
                return -1;
        }
        const char *step = "rdma_create_id";
        if (set_nonblock(l->ech->fd) < 0 || rdma_create_id(l->ech, &l->id, l, RDMA_PS_TCP) != 0)
                goto fail;
        step = "bind (is the address on an RDMA-capable interface?)";
        if (rdma_bind_addr(l->id, (struct sockaddr *)addr) != 0)
                goto fail;
        step = "rdma_listen";
        if (rdma_listen(l->id, 128) != 0)
                goto fail;
        l->rfd = (struct reactor_fd){
            .fd = l->ech->fd, .events = EPOLLIN, .cb = listener_event, .ctx = l};
        l->active = true;
        struct listen_args a = {.l = l};
        reactor_call_sync(m->reactors[0], add_listener_fd, &a);
        step = "epoll";
        if (a.rc < 0)
                goto fail;
        m->nlisteners++;
        log_info("listening for iSER on %s (portal %s, device %s)", where, name,
                 l->id->verbs ? ibv_get_device_name(l->id->verbs->device) : "any");
        return 0;
fail:
        log_warn("portal %s (%s): %s: %s; iSER portal skipped", name, where, step, strerror(errno));
        l->active = false;
        if (l->id)
                rdma_destroy_id(l->id);
        rdma_destroy_event_channel(l->ech);
        return -1;
}

static void remove_listeners(void *arg)
{
        struct iser_mgr *m = arg;
        for (unsigned i = 0; i < m->nlisteners; i++) {
                struct iser_listener *l = &m->listeners[i];
                if (l->active)
                        reactor_del_fd(m->reactors[0], &l->rfd);
                l->active = false;
        }
}

void iser_mgr_stop_listening(struct iser_mgr *m)
{
        if (!m || !m->nlisteners)
                return;
        reactor_call_sync(m->reactors[0], remove_listeners, m);
        for (unsigned i = 0; i < m->nlisteners; i++) {
                rdma_destroy_id(m->listeners[i].id);
                rdma_destroy_event_channel(m->listeners[i].ech);
        }
        m->nlisteners = 0;
}

void iser_mgr_destroy(struct iser_mgr *m)
{
        if (!m)
                return;
        iser_mgr_stop_listening(m);
        while (m->devs) {
                struct iser_dev *d = m->devs;
                m->devs = d->next;
                ibv_dereg_mr(d->pool_mr);
                ibv_dealloc_pd(d->pd);
                free(d);
        }
        pthread_mutex_destroy(&m->lock);
        free(m);
}

#define GET(f) ((json_int_t)__atomic_load_n(&m->cnt.f, __ATOMIC_RELAXED))

json_t *iser_stats_json(struct iser_mgr *m)
{
        static struct iser_mgr none;
        if (!m)
                m = &none; /* no iSER portal configured: all zero */
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                         "iser_listeners", (json_int_t)m->nlisteners, "iser_connections",
                         GET(connections), "iser_connections_refused", GET(connections_refused),
                         "iser_rdma_reads", GET(rdma_reads), "iser_rdma_read_bytes",
                         GET(rdma_read_bytes), "iser_rdma_writes", GET(rdma_writes),
                         "iser_rdma_write_bytes", GET(rdma_write_bytes), "iser_data_copy_bytes",
                         GET(data_copy_bytes), "iser_control_copy_bytes", GET(control_copy_bytes),
                         "iser_extra_registrations", GET(extra_registrations), "iser_wc_errors",
                         GET(wc_errors), "iser_device_removals", GET(device_removals));
}
