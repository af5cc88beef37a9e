/* task: SCSI commands on a connection and their data (RD4). A command's data is cut into
 * segments that match the cache lines the LUN bytes map to; write data is asked for with one
 * R2T per segment piece, each described by a data pointer table entry whose index is in the
 * TTT, and received straight into the line. Reads fill lines from the volume and go out as
 * Data-In PDUs that point into the lines. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cache/dpt.h"
#include "cache/linepool.h"
#include "iscsi/iscsi_internal.h"
#include "src/log.h"

#define READ_SEGS_INFLIGHT 16

static inline bool sn_lt(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) < 0;
}

static void task_pump(struct iscsi_task *t);
static bool owes_unit_attention(struct iscsi_task *t);
static void check_direction(struct iscsi_task *t);
static void task_finish_write(struct iscsi_task *t);
static void send_response(struct iscsi_task *t);

/* ---------------- segments and lines ---------------- */

#define WAIT_RETRY_NS (1000 * 1000ull)

static void wait_timer_fired(struct reactor_timer *timer)
{
        struct iscsi_reactor_ctx *rc = timer->ctx;
        reactor_ctx_wake_waiters(rc);
        if (rc->waiters_head && !rc->wait_timer.armed)
                reactor_timer_arm(rc->reactor, &rc->wait_timer, WAIT_RETRY_NS);
}

static void waiters_add(struct iscsi_reactor_ctx *rc, struct iscsi_task *t)
{
        if (t->on_wait_list)
                return;
        t->on_wait_list = true;
        t->next_wait = NULL;
        if (rc->waiters_tail)
                rc->waiters_tail->next_wait = t;
        else
                rc->waiters_head = t;
        rc->waiters_tail = t;
        STAT_ADD(rc, commands_waiting, 1);
        if (!rc->wait_timer.armed) {
                rc->wait_timer.cb = wait_timer_fired;
                rc->wait_timer.ctx = rc;
                reactor_timer_arm(rc->reactor, &rc->wait_timer, WAIT_RETRY_NS);
        }
}

static void waiters_remove(struct iscsi_reactor_ctx *rc, struct iscsi_task *t)
{
        if (!t->on_wait_list)
                return;
        struct iscsi_task **pp = &rc->waiters_head, *prev = NULL;
        while (*pp && *pp != t) {
                prev = *pp;
                pp = &(*pp)->next_wait;
        }
        if (*pp)
                *pp = t->next_wait;
        if (rc->waiters_tail == t)
                rc->waiters_tail = prev;
        t->on_wait_list = false;
        STAT_SUB(rc, commands_waiting, 1);
}

void reactor_ctx_wake_waiters(struct iscsi_reactor_ctx *rc)
{
        /* Serve waiters in order while lines last; a task that cannot progress goes back to
         * the end and the walk stops there, so nobody is starved or spun on. */
        unsigned budget = 64;
        while (rc->waiters_head && budget--) {
                struct iscsi_task *t = rc->waiters_head;
                waiters_remove(rc, t);
                task_pump(t);
                if (t->on_wait_list && rc->waiters_head == t)
                        break;
        }
}

/* Gives a segment memory: a pool line, or (only for unsolicited data, which cannot wait) a
 * heap buffer of the same size. Returns false when the task has to wait. */
static bool seg_get_buffer(struct iscsi_task *t, struct task_seg *s, bool may_use_heap)
{
        if (s->buf)
                return true;
        struct iscsi_reactor_ctx *rc = t->conn->rc;
        uint8_t *line = volume_line_get(t->cmd.lun->volume, rc->lines, rc->reactor,
                                        t->kind == TASK_MEDIA_WRITE);
        if (!line && may_use_heap) {
                line = aligned_alloc(4096, rc->line_size);
                s->heap_line = line != NULL;
        }
        if (!line)
                return false;
        s->line = line;
        /* Lines are aligned to LUN offsets: the first segment may start inside its line. */
        s->buf = line + ((uint64_t)t->lun_offset + s->data_off) % rc->line_size;
        return true;
}

static void seg_put_buffer(struct iscsi_task *t, struct task_seg *s)
{
        if (!s->line)
                return;
        struct iscsi_reactor_ctx *rc = t->conn->rc;
        if (s->heap_line)
                free(s->line);
        else
                line_pool_put(rc->pool, s->line);
        s->line = NULL;
        s->buf = NULL;
        s->heap_line = false;
        if (rc->waiters_head)
                reactor_ctx_wake_waiters(rc);
}

/* Media data: one segment per line the byte range [lun_offset, lun_offset+len) touches. */
static int segs_for_media(struct iscsi_task *t, uint32_t len)
{
        size_t ls = t->conn->rc->line_size;
        uint64_t start = (uint64_t)t->lun_offset, end = start + len;
        unsigned n = len ? (unsigned)((end - 1) / ls - start / ls + 1) : 0;
        t->segs = calloc(n ? n : 1, sizeof(*t->segs));
        if (!t->segs)
                return -1;
        t->nsegs = n;
        uint64_t pos = start;
        for (unsigned i = 0; i < n; i++) {
                uint64_t line_end = (pos / ls + 1) * ls;
                uint64_t seg_end = line_end < end ? line_end : end;
                t->segs[i] = (struct task_seg){.data_off = (uint32_t)(pos - start),
                                               .len = (uint32_t)(seg_end - pos),
                                               .task = t};
                pos = seg_end;
        }
        return 0;
}

/* Emulated commands: one heap buffer in one segment. */
static int segs_for_heap(struct iscsi_task *t, uint32_t len)
{
        t->heap_buf = calloc(1, len ? len : 1);
        t->segs = calloc(1, sizeof(*t->segs));
        t->iov = calloc(1, sizeof(*t->iov));
        if (!t->heap_buf || !t->segs || !t->iov)
                return -1;
        t->nsegs = 1;
        t->segs[0] = (struct task_seg){.buf = t->heap_buf, .len = len, .task = t};
        t->iov[0] = (struct iovec){t->heap_buf, len};
        return 0;
}

static unsigned seg_index(const struct iscsi_task *t, uint32_t off)
{
        if (t->kind != TASK_MEDIA_READ && t->kind != TASK_MEDIA_WRITE)
                return 0;
        size_t ls = t->conn->rc->line_size;
        uint64_t first = (uint64_t)t->lun_offset / ls;
        return (unsigned)(((uint64_t)t->lun_offset + off) / ls - first);
}

/* Appends to dest where [off, off+len) of the task's data lives. */
static int data_iov(struct iscsi_task *t, uint32_t off, uint32_t len, struct rx_dest *dest)
{
        int n = dest->iovcnt;
        const int max = (int)(sizeof(dest->iov) / sizeof(dest->iov[0])) - 1;
        while (len) {
                unsigned i = seg_index(t, off);
                if (i >= t->nsegs || n == max)
                        return -1;
                struct task_seg *s = &t->segs[i];
                uint32_t in = off - s->data_off;
                uint32_t take = s->len - in < len ? s->len - in : len;
                dest->iov[n++] = (struct iovec){s->buf + in, take};
                off += take;
                len -= take;
        }
        dest->iovcnt = n;
        return 0;
}

/* Bytes an initiator sends beyond what the command needs (EDTL above the CDB's length) are
 * read and dropped: the residual count tells the initiator. */
static int scratch_iov(struct iscsi_conn *c, uint32_t len, struct rx_dest *dest)
{
        if (!len)
                return 0;
        if (c->scratch_size < len) {
                uint8_t *b = realloc(c->scratch, len);
                if (!b)
                        return -1;
                c->scratch = b;
                c->scratch_size = len;
        }
        dest->iov[dest->iovcnt++] = (struct iovec){c->scratch, len};
        return 0;
}

/* Where a data segment at [off, off+len) goes: the part the command keeps (returned) lands
 * in its buffer, the rest in scratch. */
static int place_data(struct iscsi_task *t, uint32_t off, uint32_t len, uint32_t keep_end,
                      struct rx_dest *dest, uint32_t *kept)
{
        uint32_t end = off + len;
        uint32_t keep = off >= keep_end ? 0 : (end < keep_end ? end : keep_end) - off;
        dest->iovcnt = 0;
        if (keep && data_iov(t, off, keep, dest) < 0)
                return -1;
        if (scratch_iov(t->conn, len - keep, dest) < 0)
                return -1;
        *kept = keep;
        return 0;
}

/* ---------------- task life ---------------- */

struct iscsi_task *task_find(struct iscsi_conn *c, uint32_t itt)
{
        for (struct iscsi_task *t = c->tasks; t; t = t->next)
                if (t->itt == itt && !t->aborted)
                        return t;
        return NULL;
}

bool task_idle(const struct iscsi_task *t)
{
        /* Media commands move their data here and never run in the SCSI layer; an emulated
         * one is busy while the SCSI layer executes it. */
        bool scsi_busy = t->kind == TASK_EMULATED && t->cmd.state == SCSI_CMD_READY;
        return t->reads_inflight == 0 && t->tx_inflight == 0 && t->segs_writing == 0 && !scsi_busy;
}

static void release_r2ts(struct iscsi_task *t)
{
        struct dpt *d = t->conn->rc->dpt;
        for (unsigned i = 0; i < t->r2t_outstanding && i < 16; i++)
                dpt_free(d, t->ttts[i]);
        t->r2t_outstanding = 0;
}

void task_free(struct iscsi_task *t)
{
        struct iscsi_conn *c = t->conn;
        waiters_remove(c->rc, t);
        release_r2ts(t);
        for (struct iscsi_task **pp = &c->tasks; *pp; pp = &(*pp)->next) {
                if (*pp == t) {
                        *pp = t->next;
                        break;
                }
        }
        for (struct iscsi_task **pp = &c->cmd_queue; *pp; pp = &(*pp)->next_cmd) {
                if (*pp == t) {
                        *pp = t->next_cmd;
                        break;
                }
        }
        c->ntasks--;
        if (t->ticket.active)
                volume_write_end(t->cmd.lun->volume, &t->ticket);
        if (t->kind != TASK_EMULATED)
                for (unsigned i = 0; i < t->nsegs; i++)
                        seg_put_buffer(t, &t->segs[i]);
        scsi_cmd_release(&t->cmd);
        free(t->segs);
        free(t->heap_buf);
        free(t->iov);
        free(t);
        conn_maybe_free(c);
}

static void task_maybe_free(struct iscsi_task *t)
{
        if ((t->response_sent || t->aborted) && task_idle(t))
                task_free(t);
}

void task_abort(struct iscsi_task *t)
{
        if (t->aborted)
                return;
        t->aborted = true;
        waiters_remove(t->conn->rc, t);
        release_r2ts(t);
        task_maybe_free(t);
}

void task_abort_all(struct iscsi_conn *c, bool lun_only, uint64_t lun)
{
        struct iscsi_task *t = c->tasks;
        while (t) {
                struct iscsi_task *next = t->next;
                if (!lun_only || t->lun == lun)
                        task_abort(t);
                t = next;
        }
}

/* ---------------- responses ---------------- */

static void residual(const struct iscsi_task *t, uint32_t moved, uint32_t wanted, uint8_t *flags,
                     uint32_t *count)
{
        /* wanted: what the CDB asked for; the initiator expected edtl. */
        *flags = 0;
        *count = 0;
        if (t->edtl < wanted) {
                *flags = ISCSI_FLAG_RSP_OVERFLOW;
                *count = wanted - t->edtl;
        } else if (t->edtl > moved) {
                *flags = ISCSI_FLAG_RSP_UNDERFLOW;
                *count = t->edtl - moved;
        }
}

static uint32_t task_wanted_len(const struct iscsi_task *t)
{
        if (t->cmd.data_out_len)
                return t->cmd.data_out_len;
        return t->kind == TASK_EMULATED ? t->cmd.data_in_actual : t->cmd.data_in_len;
}

static void response_sent_cb(struct tx_pdu *pdu)
{
        struct iscsi_task *t = pdu->sent_arg;
        t->tx_inflight--;
        task_maybe_free(t);
}

static void send_response(struct iscsi_task *t)
{
        struct iscsi_conn *c = t->conn;
        if (t->response_sent || t->aborted)
                return;
        t->response_sent = true;
        struct tx_pdu *p = tx_pdu_new();
        if (!p) {
                conn_drop(c, "out of memory");
                task_maybe_free(t);
                return;
        }
        bhs_set_opcode(&p->bhs, ISCSI_OP_SCSI_RSP, ISCSI_FLAG_FINAL);
        bhs_set_itt(&p->bhs, t->itt);
        p->bhs.b[2] = ISCSI_RSP_COMPLETED;
        p->bhs.b[3] = t->cmd.status;
        if (t->cmd.status != SCSI_STATUS_GOOD)
                STAT_ADD(c->rc, scsi_errors, 1);
        uint32_t moved = t->cmd.data_out_len ? t->data_received : t->data_sent;
        uint8_t flags;
        uint32_t count;
        residual(t, moved, task_wanted_len(t), &flags, &count);
        p->bhs.b[1] |= flags;
        bhs_set_word(&p->bhs, BHS_RESIDUAL, count);
        bhs_set_word(&p->bhs, BHS_DATASN, t->datasn); /* ExpDataSN */
        if (t->cmd.sense_len) {
                uint32_t len = 2u + t->cmd.sense_len;
                p->owned = malloc(len);
                if (p->owned) {
                        uint8_t *b = p->owned;
                        iscsi_put_be16(b, t->cmd.sense_len);
                        memcpy(b + 2, t->cmd.sense, t->cmd.sense_len);
                        p->data[0] = (struct iovec){b, len};
                        p->data_iovcnt = 1;
                        p->data_len = len;
                        bhs_set_dsl(&p->bhs, len);
                }
        }
        t->tx_inflight++;
        p->sent = response_sent_cb;
        p->sent_arg = t;
        conn_fill_sn(c, &p->bhs, true);
        conn_send_pdu(c, p);
}

static void fail_task(struct iscsi_task *t, uint8_t key, uint16_t asc)
{
        t->failed = true;
        t->cmd.status = SCSI_STATUS_CHECK_CONDITION;
        scsi_set_sense(&t->cmd, key, asc);
}

/* ---------------- Data-In ---------------- */

static void data_in_sent(struct tx_pdu *pdu)
{
        struct iscsi_task *t = pdu->sent_arg;
        struct task_seg *s = (struct task_seg *)pdu->owned;
        pdu->owned = NULL; /* not ours to free: owned points at the segment */
        t->tx_inflight--;
        if (s && --s->tx_refs == 0 && s->state == SEG_DONE && t->kind == TASK_MEDIA_READ) {
                seg_put_buffer(t, s);
                if (!t->aborted)
                        task_pump(t);
        }
        task_maybe_free(t);
}

/* Sends [off, off+len) of segment s as Data-In PDUs; the very last one carries status. */
static void send_seg_data(struct iscsi_task *t, struct task_seg *s, uint32_t total, bool status)
{
        struct iscsi_conn *c = t->conn;
        uint32_t off = s->data_off, end = s->data_off + s->len;
        if (end > total)
                end = total;
        while (off < end) {
                uint32_t max = c->max_data_in ? c->max_data_in : c->max_xmit_dsl;
                uint32_t len = end - off < max ? end - off : max;
                /* Data-In sequences stop at MaxBurstLength (RFC 7143 13.14). */
                uint32_t burst_left = c->max_burst - (off % c->max_burst);
                if (len > burst_left)
                        len = burst_left;
                bool last = off + len == total;
                bool seq_end = last || (off + len) % c->max_burst == 0;
                struct tx_pdu *p = tx_pdu_new();
                if (!p) {
                        conn_drop(c, "out of memory");
                        return;
                }
                uint8_t flags = seq_end ? ISCSI_FLAG_FINAL : 0;
                bhs_set_opcode(&p->bhs, ISCSI_OP_DATA_IN, flags);
                bhs_set_itt(&p->bhs, t->itt);
                memcpy(p->bhs.b + 8, t->cmd_bhs.b + 8, 8);
                bhs_set_word(&p->bhs, BHS_TTT, ISCSI_RSVD_TAG);
                bhs_set_word(&p->bhs, BHS_DATASN, t->datasn++);
                bhs_set_word(&p->bhs, BHS_BUFOFF, off);
                p->data[0] = (struct iovec){s->buf + (off - s->data_off), len};
                p->data_iovcnt = 1;
                p->data_len = len;
                bhs_set_dsl(&p->bhs, len);
                t->data_sent += len;
                bool with_status = last && status;
                if (last)
                        log_debug("conn %s: ITT 0x%08x last Data-In at %u+%u, DataSN %u, status %s",
                                  c->peer, t->itt, off, len, t->datasn - 1,
                                  with_status ? "folded" : "apart");
                if (with_status) {
                        uint8_t rflags;
                        uint32_t count;
                        residual(t, t->data_sent, task_wanted_len(t), &rflags, &count);
                        p->bhs.b[1] |= ISCSI_FLAG_DATA_STATUS | rflags | ISCSI_FLAG_FINAL;
                        p->bhs.b[3] = SCSI_STATUS_GOOD;
                        bhs_set_word(&p->bhs, BHS_RESIDUAL, count);
                        t->response_sent = true;
                }
                conn_fill_sn(c, &p->bhs, with_status);
                p->owned = s;
                p->sent = data_in_sent;
                p->sent_arg = t;
                s->tx_refs++;
                t->tx_inflight++;
                STAT_ADD(c->rc, data_in_pdus, 1);
                conn_send_pdu(c, p);
                off += len;
        }
}

/* ---------------- reads ---------------- */

static void seg_read_done(struct volume_io *io, int res)
{
        struct task_seg *s = io->priv;
        struct iscsi_task *t = s->task;
        t->reads_inflight--;
        s->state = SEG_READY;
        log_debug("conn %s: ITT 0x%08x read of segment at %u (%u bytes) done: %d", t->conn->peer,
                  t->itt, s->data_off, s->len, res);
        if (res < 0 && !t->failed) {
                log_warn("conn %s: read of LUN %llu at %llu failed: %s", t->conn->peer,
                         (unsigned long long)lun_from_wire(t->lun), (unsigned long long)io->offset,
                         strerror(-res));
                fail_task(t, SK_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
        }
        if (t->aborted) {
                s->state = SEG_DONE;
                seg_put_buffer(t, s);
                task_maybe_free(t);
                return;
        }
        task_pump(t);
}

static void read_send_ready(struct iscsi_task *t)
{
        while (t->next_send_seg < t->nsegs && !t->failed) {
                struct task_seg *s = &t->segs[t->next_send_seg];
                if (s->state != SEG_READY)
                        break;
                s->state = SEG_DONE;
                t->next_send_seg++;
                STAT_ADD(t->conn->rc, read_bytes, s->len);
                /* The line goes back in data_in_sent(): transports never complete a PDU
                 * inside send_pdu, so nothing can release it under this loop. */
                send_seg_data(t, s, t->xfer_len, true);
        }
}

static void read_pump(struct iscsi_task *t)
{
        read_send_ready(t);
        if (t->failed) {
                if (t->reads_inflight == 0)
                        send_response(t);
                return;
        }
        while (t->next_read_seg < t->nsegs && t->reads_inflight < READ_SEGS_INFLIGHT) {
                struct task_seg *s = &t->segs[t->next_read_seg];
                if (!seg_get_buffer(t, s, false)) {
                        waiters_add(t->conn->rc, t);
                        return;
                }
                t->next_read_seg++;
                s->state = SEG_IO;
                s->iov = (struct iovec){s->buf, s->len};
                s->io = (struct volume_io){.op = VOLUME_READ,
                                           .offset = (uint64_t)t->lun_offset + s->data_off,
                                           .length = s->len,
                                           .iov = &s->iov,
                                           .iovcnt = 1,
                                           .reactor = t->conn->rc->reactor,
                                           .done = seg_read_done,
                                           .priv = s};
                t->reads_inflight++;
                volume_submit(t->cmd.lun->volume, &s->io);
                if (t->aborted)
                        return;
        }
        if (t->next_send_seg == t->nsegs && !t->response_sent) {
                if (t->xfer_len == 0)
                        send_response(t);
        }
}

/* ---------------- writes ---------------- */

static void send_r2t(struct iscsi_task *t, uint32_t ttt, uint32_t off, uint32_t len)
{
        struct iscsi_conn *c = t->conn;
        struct tx_pdu *p = tx_pdu_new();
        if (!p) {
                conn_drop(c, "out of memory");
                return;
        }
        bhs_set_opcode(&p->bhs, ISCSI_OP_R2T, ISCSI_FLAG_FINAL);
        memcpy(p->bhs.b + 8, t->cmd_bhs.b + 8, 8);
        bhs_set_itt(&p->bhs, t->itt);
        bhs_set_word(&p->bhs, BHS_TTT, ttt);
        bhs_set_word(&p->bhs, BHS_DATASN, t->r2tsn++);
        bhs_set_word(&p->bhs, BHS_BUFOFF, off);
        bhs_set_word(&p->bhs, BHS_R2T_DDTL, len);
        conn_fill_sn(c, &p->bhs, false);
        STAT_ADD(c->rc, r2t_sent, 1);
        conn_send_pdu(c, p);
}

static uint32_t write_expected(const struct iscsi_task *t)
{
        uint32_t want = t->cmd.data_out_len;
        return t->edtl < want ? t->edtl : want;
}

static void seg_submit_write(struct iscsi_task *t, struct task_seg *s);

/* The pool ran dry under this command: write what it has complete so lines come back. */
static void flush_full_segments(struct iscsi_task *t)
{
        if (t->kind != TASK_MEDIA_WRITE || t->failed)
                return;
        t->pressure = true;
        for (unsigned i = 0; i < t->nsegs; i++) {
                struct task_seg *s = &t->segs[i];
                if (s->buf && s->received == s->len && s->state != SEG_IO && s->state != SEG_DONE)
                        seg_submit_write(t, s);
        }
}

static void write_pump(struct iscsi_task *t)
{
        struct iscsi_conn *c = t->conn;
        uint32_t expected = write_expected(t);
        uint32_t max_r2t = c->max_r2t ? c->max_r2t : 1;
        if (t->next_r2t_off < t->unsolicited_len)
                t->next_r2t_off = t->unsolicited_len;
        while (!t->failed && t->r2t_outstanding < max_r2t && t->next_r2t_off < expected) {
                unsigned i = seg_index(t, t->next_r2t_off);
                struct task_seg *s = &t->segs[i];
                if (!seg_get_buffer(t, s, false)) {
                        flush_full_segments(t);
                        waiters_add(c->rc, t);
                        return;
                }
                uint32_t off = t->next_r2t_off;
                uint32_t len = s->data_off + s->len - off;
                if (len > c->max_burst)
                        len = c->max_burst;
                if (len > expected - off)
                        len = expected - off;
                uint8_t *ptr = s->buf + (off - s->data_off);
                uint32_t ttt = dpt_alloc(c->rc->dpt, ptr, off, len, c, t, t->tag);
                if (ttt == ISCSI_RSVD_TAG) {
                        waiters_add(c->rc, t);
                        return;
                }
                t->ttts[t->r2t_outstanding++] = ttt;
                t->next_r2t_off += len;
                send_r2t(t, ttt, off, len);
        }
}

static void seg_write_done(struct volume_io *io, int res)
{
        struct task_seg *s = io->priv;
        struct iscsi_task *t = s->task;
        t->segs_writing--;
        t->segs_done++;
        s->state = SEG_DONE;
        if (io->line_kept) { /* the cache keeps the line: the data lives there now */
                s->line = NULL;
                s->buf = NULL;
        }
        if (res < 0 && !t->io_error) {
                t->io_error = res;
                log_warn("conn %s: write of LUN %llu at %llu failed: %s", t->conn->peer,
                         (unsigned long long)lun_from_wire(t->lun), (unsigned long long)io->offset,
                         strerror(-res));
        }
        seg_put_buffer(t, s);
        if (t->aborted) {
                task_maybe_free(t);
                return;
        }
        task_finish_write(t);
}

static void seg_submit_write(struct iscsi_task *t, struct task_seg *s)
{
        s->state = SEG_IO;
        s->iov = (struct iovec){s->buf, s->len};
        s->io = (struct volume_io){.op = VOLUME_WRITE,
                                   .offset = (uint64_t)t->lun_offset + s->data_off,
                                   .length = s->len,
                                   .iov = &s->iov,
                                   .iovcnt = 1,
                                   .fua = t->cmd.fua,
                                   .reactor = t->conn->rc->reactor,
                                   .done = seg_write_done,
                                   .priv = s,
                                   .line = s->heap_line ? NULL : s->line,
                                   .seq = t->ticket.seq,
                                   .cmd_bytes = write_expected(t)};
        t->segs_writing++;
        STAT_ADD(t->conn->rc, write_bytes, s->len);
        volume_submit(t->cmd.lun->volume, &s->io);
}

/* Accounts len bytes placed at off; starts the volume write of every segment now full. */
static void write_account(struct iscsi_task *t, uint32_t off, uint32_t len)
{
        t->data_received += len;
        while (len) {
                unsigned i = seg_index(t, off);
                if (i >= t->nsegs)
                        return;
                struct task_seg *s = &t->segs[i];
                uint32_t take = s->data_off + s->len - off;
                if (take > len)
                        take = len;
                s->received += take;
                off += take;
                len -= take;
                /* Normally nothing reaches the volume before the whole command's data is
                 * here, so a command that fails half-way changes no byte. Under pool
                 * pressure full segments go early: their lines are needed. */
                if (t->kind == TASK_MEDIA_WRITE && t->pressure && s->received == s->len &&
                    t->executing && !t->failed && s->state != SEG_IO && s->state != SEG_DONE)
                        seg_submit_write(t, s);
        }
}

static void emulated_done(struct scsi_cmd *cmd);

static void task_finish_write(struct iscsi_task *t)
{
        uint32_t expected = write_expected(t);
        if (t->failed || t->cmd.state == SCSI_CMD_COMPLETE) {
                if (t->r2t_outstanding == 0 && t->segs_writing == 0 && t->unsolicited_done)
                        send_response(t);
                task_maybe_free(t);
                return;
        }
        if (t->data_received < expected || !t->executing)
                return;
        if (t->kind == TASK_EMULATED) {
                if (t->cmd.state == SCSI_CMD_NEEDS_DATA) {
                        t->cmd.state = SCSI_CMD_READY;
                        t->cmd.iov = t->iov;
                        t->cmd.iovcnt = 1;
                        t->cmd.done = emulated_done;
                        scsi_cmd_execute(&t->cmd);
                }
                return;
        }
        if (t->segs_writing)
                return;
        if (t->segs_done < t->nsegs) {
                /* Segments that were full before the command's turn came. */
                for (unsigned i = 0; i < t->nsegs; i++) {
                        struct task_seg *s = &t->segs[i];
                        if (s->state != SEG_IO && s->state != SEG_DONE && s->received == s->len)
                                seg_submit_write(t, s);
                }
                return;
        }
        if (t->io_error) {
                fail_task(t, SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
        } else {
                t->cmd.status = SCSI_STATUS_GOOD;
                t->cmd.sense_len = 0;
        }
        send_response(t);
}

/* ---------------- emulated commands ---------------- */

static void emulated_done(struct scsi_cmd *cmd)
{
        struct iscsi_task *t = cmd->priv;
        cmd->state = SCSI_CMD_COMPLETE;
        if (t->aborted) {
                task_maybe_free(t);
                return;
        }
        uint32_t n = cmd->data_in_actual;
        if (n > t->edtl)
                n = t->edtl;
        if (t->cmd.read_flag && n && t->nsegs) {
                struct task_seg *s = &t->segs[0];
                s->len = n;
                send_seg_data(t, s, n, cmd->status == SCSI_STATUS_GOOD && cmd->sense_len == 0);
        }
        if (!t->response_sent)
                send_response(t);
        task_maybe_free(t);
}

static void task_pump(struct iscsi_task *t)
{
        if (t->aborted || t->response_sent)
                return;
        switch (t->kind) {
        case TASK_MEDIA_READ:
                read_pump(t);
                break;
        case TASK_MEDIA_WRITE:
        case TASK_EMULATED:
                if (t->cmd.data_out_len) {
                        write_pump(t);
                        task_finish_write(t);
                }
                break;
        }
}

static void task_execute(struct iscsi_task *t)
{
        t->executing = true;
        if (t->aborted)
                return;
        if (t->cmd.state == SCSI_CMD_COMPLETE || t->failed) {
                /* Answer once the initiator has sent what it was entitled to send. */
                task_finish_write(t);
                return;
        }
        STAT_ADD(t->conn->rc, commands, 1);
        if (t->kind == TASK_MEDIA_READ) {
                STAT_ADD(t->conn->rc, read_commands, 1);
                read_pump(t);
                return;
        }
        if (t->kind == TASK_MEDIA_WRITE) {
                STAT_ADD(t->conn->rc, write_commands, 1);
                volume_write_begin(t->cmd.lun->volume, &t->ticket, t->lun_offset,
                                   write_expected(t));
        }
        if (t->cmd.data_out_len) {
                write_pump(t);
                task_finish_write(t);
                return;
        }
        /* Emulated command with no data out. */
        t->cmd.state = SCSI_CMD_READY;
        t->cmd.iov = t->iov;
        t->cmd.iovcnt = t->iov ? 1 : 0;
        t->cmd.done = emulated_done;
        scsi_cmd_execute(&t->cmd);
}

/* Runs held commands whose CmdSN turn has come. */
void task_run_queued(struct iscsi_conn *c)
{
        struct iscsi_session *s = c->session;
        bool progress = true;
        while (progress && (c->cmd_queue || c->held)) {
                progress = false;
                if (conn_run_held(c)) {
                        progress = true;
                        continue;
                }
                for (struct iscsi_task **pp = &c->cmd_queue; *pp; pp = &(*pp)->next_cmd) {
                        struct iscsi_task *t = *pp;
                        if (t->cmdsn == s->exp_cmdsn) {
                                *pp = t->next_cmd;
                                s->exp_cmdsn++;
                                task_execute(t);
                                progress = true;
                                break;
                        }
                }
        }
}

/* ---------------- command PDU ---------------- */

static struct iscsi_task *task_new(struct iscsi_conn *c, const struct iscsi_bhs *bhs)
{
        struct iscsi_task *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->conn = c;
        t->cmd_bhs = *bhs;
        t->itt = bhs_itt(bhs);
        t->cmdsn = bhs_word(bhs, BHS_CMDSN);
        t->lun = bhs_lun(bhs);
        t->immediate = bhs_immediate(bhs);
        t->final_flag = (bhs_flags(bhs) & ISCSI_FLAG_FINAL) != 0;
        t->edtl = bhs_word(bhs, BHS_CMD_EDTL);
        t->tag = c->rc->next_tag++;
        t->lun_offset = -1;
        scsi_cmd_init(&t->cmd);
        struct iscsi_target *tgt = c->session->target;
        t->cmd.lun_number = lun_from_wire(t->lun);
        t->cmd.lun = target_lun(tgt, t->cmd.lun_number);
        t->cmd.lun_list = (struct scsi_lun_list){tgt->lun_ids, tgt->nluns};
        memcpy(t->cmd.cdb, bhs->b + BHS_CDB, 16);
        t->cmd.edtl = t->edtl;
        t->cmd.read_flag = (bhs_flags(bhs) & ISCSI_FLAG_CMD_READ) != 0;
        t->cmd.write_flag = (bhs_flags(bhs) & ISCSI_FLAG_CMD_WRITE) != 0;
        t->cmd.reactor = c->rc->reactor;
        t->cmd.initiator = c->session->initiator_name, t->cmd.isid = c->session->isid;
        t->cmd.priv = t;
        t->next = c->tasks;
        c->tasks = t;
        c->ntasks++;
        return t;
}

/* Chooses the data layout once the CDB is decoded. */
static int task_layout(struct iscsi_task *t)
{
        struct scsi_cmd *cmd = &t->cmd;
        if (cmd->state == SCSI_CMD_COMPLETE)
                return 0;
        if (cmd->media && cmd->data_out_len) {
                t->kind = TASK_MEDIA_WRITE;
                t->lun_offset = cmd->data_out_lun_offset;
                t->xfer_len = write_expected(t);
                return segs_for_media(t, t->xfer_len);
        }
        if (cmd->media && cmd->data_in_len) {
                t->kind = TASK_MEDIA_READ;
                t->lun_offset = cmd->data_in_lun_offset;
                t->xfer_len = t->edtl < cmd->data_in_len ? t->edtl : cmd->data_in_len;
                return segs_for_media(t, t->xfer_len);
        }
        t->kind = TASK_EMULATED;
        uint32_t len = cmd->data_out_len ? cmd->data_out_len : cmd->data_in_len;
        if (len > ISCSI_NONMEDIA_MAX_DATA) {
                fail_task(t, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                cmd->state = SCSI_CMD_COMPLETE;
                return 0;
        }
        return segs_for_heap(t, len);
}

/* Checks the direction bits and immediate data against what the command needs. Returns a
 * reason to reject, or NULL. */
static const char *check_data_rules(struct iscsi_task *t, uint32_t dsl)
{
        struct iscsi_conn *c = t->conn;
        if (dsl == 0)
                return NULL;
        if (!t->cmd.write_flag)
                return "immediate data on a command without the W bit";
        if (!c->immediate_data)
                return "immediate data while ImmediateData=No";
        if (dsl > c->first_burst)
                return "immediate data beyond FirstBurstLength";
        if (dsl > t->edtl)
                return "immediate data beyond Expected Data Transfer Length";
        return NULL;
}

static void unsolicited_plan(struct iscsi_task *t, uint32_t dsl)
{
        struct iscsi_conn *c = t->conn;
        uint32_t expected = t->cmd.state == SCSI_CMD_COMPLETE ? t->edtl : write_expected(t);
        t->immediate_len = dsl;
        if (!t->cmd.write_flag) {
                t->unsolicited_len = 0;
        } else if (t->final_flag || c->initial_r2t) {
                t->unsolicited_len = dsl;
        } else {
                uint32_t fb = c->first_burst < t->edtl ? c->first_burst : t->edtl;
                t->unsolicited_len = fb;
        }
        (void)expected;
        t->unsolicited_done = t->unsolicited_len <= dsl;
}

int task_rx_command_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs, const uint8_t *ahs,
                           uint32_t ahs_len, struct rx_dest *dest)
{
        uint32_t dsl = bhs_dsl(bhs);
        c->rx_kind = RX_DISCARD;
        c->rx_task = NULL;
        dest->discard = true;
        if (c->session->discovery) {
                c->rx_error = "SCSI command in a discovery session";
                c->rx_reject_reason = ISCSI_REJECT_PROTOCOL_ERROR;
                return 0;
        }
        uint32_t sn = bhs_word(bhs, BHS_CMDSN);
        struct iscsi_session *s = c->session;
        if (!bhs_immediate(bhs) && (sn_lt(sn, s->exp_cmdsn) || sn_lt(s->max_cmdsn, sn))) {
                log_warn("conn %s: SCSI command CmdSN %u outside window [%u, %u], ignored", c->peer,
                         sn, s->exp_cmdsn, s->max_cmdsn);
                return 0;
        }
        if (task_find(c, bhs_itt(bhs))) {
                c->rx_error = "ITT already in use";
                c->rx_reject_reason = ISCSI_REJECT_TASK_IN_PROGRESS;
                return 0;
        }
        struct iscsi_task *t = task_new(c, bhs);
        if (!t)
                return -1;
        log_debug("conn %s: SCSI command ITT 0x%08x CmdSN %u opcode 0x%02x EDTL %u%s%s%s immediate "
                  "data %u",
                  c->peer, t->itt, t->cmdsn, t->cmd.cdb[0], t->edtl, t->cmd.read_flag ? " R" : "",
                  t->cmd.write_flag ? " W" : "", t->final_flag ? " F" : "", dsl);
        if (!owes_unit_attention(t) && scsi_cmd_prepare(&t->cmd) != SCSI_CMD_COMPLETE)
                check_direction(t);
        if (task_layout(t) < 0)
                return -1;
        const char *bad = check_data_rules(t, dsl);
        if (bad) {
                c->rx_error = bad;
                c->rx_reject_reason = ISCSI_REJECT_PROTOCOL_ERROR;
                task_free(t);
                return 0;
        }
        unsolicited_plan(t, dsl);
        c->rx_task = t;
        c->rx_kind = RX_CMD_IMMEDIATE;
        c->rx_len = 0;
        if (t->cmd.state == SCSI_CMD_COMPLETE) {
                /* Nothing to keep: a command that failed in decoding drops its data. */
                dest->iovcnt = 0;
                return 0;
        }
        /* Immediate and unsolicited data cannot wait for lines: their segments get memory
         * now, whether or not this PDU carries any of it. */
        uint32_t keep_end = write_expected(t);
        uint32_t unsol = t->unsolicited_len < keep_end ? t->unsolicited_len : keep_end;
        for (uint32_t off = 0; off < unsol;) {
                struct task_seg *sg = &t->segs[seg_index(t, off)];
                seg_get_buffer(t, sg, true);
                off = sg->data_off + sg->len;
        }
        if (dsl == 0) {
                dest->iovcnt = 0;
                return 0;
        }
        dest->discard = false;
        if (place_data(t, 0, dsl, keep_end, dest, &c->rx_len) < 0)
                return -1;
        dest->placed = t->kind == TASK_MEDIA_WRITE;
        return 0;
}

/* RFC 7143 11.3.1: the R and W bits say which way data may move, and data never moves
 * against them. Both clear with data expected, or a write without W, is refused. A read
 * flagged only as a write (libiscsi's Read10Invalid) takes the initiator's data, returns
 * none, and ends GOOD, as peers do. */
static void check_direction(struct iscsi_task *t)
{
        struct scsi_cmd *cmd = &t->cmd;
        if (t->edtl == 0)
                return;
        bool refuse =
            (!cmd->read_flag && !cmd->write_flag) || (cmd->data_out_len && !cmd->write_flag);
        if (refuse) {
                log_warn("conn %s: ITT 0x%08x: R/W bits do not allow the command's data, refused",
                         t->conn->peer, t->itt);
                cmd->status = SCSI_STATUS_CHECK_CONDITION;
                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, 0x0e03);
                cmd->state = SCSI_CMD_COMPLETE;
                return;
        }
        if (cmd->data_in_len && !cmd->read_flag) {
                cmd->status = SCSI_STATUS_GOOD;
                cmd->sense_len = 0;
                cmd->data_in_len = 0;
                cmd->state = SCSI_CMD_COMPLETE;
        }
}

/* A reset by another initiator is reported once, on the next command that is not one of
 * those SPC lets through (INQUIRY, REPORT LUNS, REQUEST SENSE). */
static bool owes_unit_attention(struct iscsi_task *t)
{
        uint8_t op = t->cmd.cdb[0];
        if (!t->cmd.lun || op == 0x12 || op == 0xa0 || op == 0x03)
                return false;
        struct iscsi_session *s = t->conn->session;
        if (!session_take_ua(s, target_lun_index(s->target, t->cmd.lun_number)))
                return false;
        t->cmd.status = SCSI_STATUS_CHECK_CONDITION;
        scsi_set_sense(&t->cmd, SK_UNIT_ATTENTION, 0x2903);
        t->cmd.state = SCSI_CMD_COMPLETE;
        return true;
}

static void enqueue_by_cmdsn(struct iscsi_conn *c, struct iscsi_task *t)
{
        t->next_cmd = c->cmd_queue;
        c->cmd_queue = t;
}

void task_rx_command_done(struct iscsi_conn *c, bool digest_ok)
{
        struct iscsi_task *t = c->rx_task;
        c->rx_task = NULL;
        if (!t)
                return;
        uint32_t dsl = bhs_dsl(&t->cmd_bhs);
        if (!digest_ok) {
                conn_send_reject(c, &t->cmd_bhs, ISCSI_REJECT_DIGEST_ERROR, "data digest error");
                /* The command never arrived as far as the initiator is concerned. */
                task_free(t);
                return;
        }
        if (dsl && t->cmd.state != SCSI_CMD_COMPLETE) {
                STAT_ADD(c->rc, write_data_bytes, c->rx_len);
                t->unsolicited_recv = dsl;
                write_account(t, 0, c->rx_len);
        }
        if (t->immediate) {
                task_execute(t);
                return;
        }
        struct iscsi_session *s = c->session;
        if (t->cmdsn == s->exp_cmdsn) {
                s->exp_cmdsn++;
                task_execute(t);
                task_run_queued(c);
        } else {
                enqueue_by_cmdsn(c, t);
        }
}

/* ---------------- Data-Out ---------------- */

static void entry_done(struct iscsi_task *t, uint32_t ttt);

/* A refused PDU counts as not received, so its F bit ends the burst only when it sat past
 * the burst's end (nothing can follow it); an accepted one (force) always does. */
static void note_final(struct iscsi_conn *c, struct iscsi_task *t, struct dpt_entry *e, bool force)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        if (!t || !(bhs_flags(h) & ISCSI_FLAG_FINAL))
                return;
        uint32_t off = bhs_word(h, BHS_BUFOFF);
        uint32_t end = e ? e->data_offset + e->data_length : t->unsolicited_len;
        if (!force && off < end)
                return;
        if (e)
                entry_done(t, bhs_word(h, BHS_TTT));
        else
                t->unsolicited_done = true;
}

static int data_out_reject_sense(struct iscsi_conn *c, struct iscsi_task *t, struct dpt_entry *e,
                                 const char *why, uint8_t reason, uint16_t asc)
{
        bool accepted = why == NULL; /* called after the PDU was taken (digest, early F) */
        c->rx_kind = RX_DISCARD;
        c->rx_error = why;
        c->rx_reject_reason = reason;
        c->rx_failed_task = t;
        STAT_ADD(c->rc, protocol_errors, 1);
        if (t && !t->failed)
                fail_task(t, SK_ABORTED_COMMAND, asc);
        /* RFC 7143 11.17.1 makes the target wait out R2T bursts only; an unsolicited
         * sequence ends at its F bit either way. */
        note_final(c, t, e, accepted || !e);
        return 0;
}

static int data_out_reject(struct iscsi_conn *c, struct iscsi_task *t, const char *why,
                           uint8_t reason)
{
        return data_out_reject_sense(c, t, NULL, why, reason, 0x4b00);
}

/* A Data-Out for a command that has already failed: its data is read into scratch and only
 * counted, so the command can be answered once the initiator is done sending. */
static int absorb_failed(struct iscsi_conn *c, struct iscsi_task *t, struct dpt_entry *e,
                         uint32_t len, struct rx_dest *dest)
{
        dest->iovcnt = 0;
        dest->discard = false;
        if (scratch_iov(c, len, dest) < 0)
                return -1;
        c->rx_kind = RX_DATA_OUT;
        c->rx_task = t;
        c->rx_entry = e;
        c->rx_len = 0;
        c->rx_total = len;
        c->rx_offset = 0;
        return 0;
}

/* A Data-Out was refused: once its Reject is out, the command it broke ends with a check
 * condition as soon as nothing of it is in flight. */
void task_rx_discarded(struct iscsi_conn *c)
{
        struct iscsi_task *t = c->rx_failed_task;
        c->rx_failed_task = NULL;
        if (t && t->executing)
                task_finish_write(t);
}

int task_rx_data_out_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs, struct rx_dest *dest)
{
        uint32_t ttt = bhs_word(bhs, BHS_TTT), itt = bhs_itt(bhs);
        uint32_t off = bhs_word(bhs, BHS_BUFOFF), len = bhs_dsl(bhs);
        uint32_t datasn = bhs_word(bhs, BHS_DATASN);
        dest->discard = true;
        c->rx_task = NULL;
        c->rx_entry = NULL;
        c->rx_failed_task = NULL;
        STAT_ADD(c->rc, data_out_pdus, 1);
        log_debug("conn %s: Data-Out ITT 0x%08x TTT 0x%08x DataSN %u offset %u length %u%s",
                  c->peer, itt, ttt, datasn, off, len,
                  bhs_flags(bhs) & ISCSI_FLAG_FINAL ? " F" : "");
        if (c->session->discovery)
                return data_out_reject(c, NULL, "Data-Out in a discovery session",
                                       ISCSI_REJECT_PROTOCOL_ERROR);
        if (ttt != ISCSI_RSVD_TAG) {
                struct dpt_entry *e = dpt_lookup(c->rc->dpt, ttt, c);
                if (!e || ((struct iscsi_task *)e->task)->itt != itt)
                        return data_out_reject(c, NULL, "Data-Out with unknown or stale TTT",
                                               ISCSI_REJECT_INVALID_PDU_FIELD);
                struct iscsi_task *t = e->task;
                if (t->failed)
                        return absorb_failed(c, t, e, len, dest);
                if (datasn != e->next_datasn)
                        return data_out_reject_sense(c, t, e, "Data-Out DataSN out of order",
                                                     ISCSI_REJECT_PROTOCOL_ERROR, 0x4b00);
                uint8_t *ptr = dpt_place(e, off, len);
                if (!ptr || off != e->data_offset + e->received)
                        return data_out_reject_sense(c, t, e, "Data-Out outside its R2T",
                                                     ISCSI_REJECT_PROTOCOL_ERROR, 0x4b00);
                c->rx_entry = e;
                c->rx_task = t;
                dest->iov[0] = (struct iovec){ptr, len};
                dest->iovcnt = len ? 1 : 0;
                c->rx_len = len;
        } else {
                struct iscsi_task *t = task_find(c, itt);
                if (!t || t->response_sent) {
                        /* A command that ended early (e.g. failed in decoding) may still get its
                         * unsolicited data: drop it quietly. */
                        c->rx_kind = RX_DISCARD;
                        c->rx_error = t ? NULL : "unsolicited Data-Out for unknown task";
                        c->rx_reject_reason = ISCSI_REJECT_INVALID_PDU_FIELD;
                        return 0;
                }
                if (t->cmd.state == SCSI_CMD_COMPLETE || t->failed)
                        return absorb_failed(c, t, NULL, len, dest);
                if (datasn != t->unsolicited_datasn || off != t->unsolicited_recv ||
                    (uint64_t)off + len > t->unsolicited_len)
                        return data_out_reject_sense(c, t, NULL,
                                                     "unsolicited Data-Out out of order or beyond "
                                                     "FirstBurstLength",
                                                     ISCSI_REJECT_PROTOCOL_ERROR, 0x4b00);
                c->rx_task = t;
                if (place_data(t, off, len, write_expected(t), dest, &c->rx_len) < 0)
                        return -1;
        }
        c->rx_kind = RX_DATA_OUT;
        c->rx_offset = off;
        c->rx_total = len;
        dest->discard = false;
        dest->placed = c->rx_task->kind == TASK_MEDIA_WRITE;
        return 0;
}

static void entry_done(struct iscsi_task *t, uint32_t ttt)
{
        struct dpt *d = t->conn->rc->dpt;
        for (unsigned i = 0; i < t->r2t_outstanding; i++) {
                if (t->ttts[i] == ttt) {
                        t->ttts[i] = t->ttts[--t->r2t_outstanding];
                        break;
                }
        }
        dpt_free(d, ttt);
}

uint8_t *iscsi_conn_solicited_dest(struct iscsi_conn *c, uint32_t ttt, uint32_t off, uint32_t len)
{
        struct dpt_entry *e = dpt_lookup(c->rc->dpt, ttt, c);
        return e ? dpt_place(e, off, len) : NULL;
}

void task_rx_data_out_done(struct iscsi_conn *c, bool digest_ok)
{
        struct iscsi_task *t = c->rx_task;
        struct dpt_entry *e = c->rx_entry;
        const struct iscsi_bhs *h = &c->rx_bhs;
        bool final = (bhs_flags(h) & ISCSI_FLAG_FINAL) != 0;
        c->rx_task = NULL;
        c->rx_entry = NULL;
        if (!t)
                return;
        if (!digest_ok) {
                conn_send_reject(c, h, ISCSI_REJECT_DIGEST_ERROR, "data digest error on Data-Out");
                /* RFC 7143 7.8: the command ends with "protocol service CRC error". */
                data_out_reject_sense(c, t, e, NULL, 0, 0x4705);
                c->rx_kind = RX_DATA_OUT;
                c->rx_failed_task = NULL;
                if (t->executing)
                        task_finish_write(t);
                return;
        }
        if (t->failed || t->cmd.state == SCSI_CMD_COMPLETE) {
                if (e && final)
                        entry_done(t, bhs_word(h, BHS_TTT));
                else if (!e && final)
                        t->unsolicited_done = true;
                if (t->executing)
                        task_finish_write(t);
                return;
        }
        STAT_ADD(c->rc, write_data_bytes, c->rx_len);
        if (e) {
                e->received += c->rx_total;
                e->next_datasn++;
                if (e->received == e->data_length) {
                        entry_done(t, bhs_word(h, BHS_TTT));
                } else if (final) {
                        conn_send_reject(c, h, ISCSI_REJECT_PROTOCOL_ERROR,
                                         "F bit before the R2T's data was complete");
                        data_out_reject_sense(c, t, e, NULL, 0, 0x4b00);
                        c->rx_kind = RX_DATA_OUT;
                        c->rx_failed_task = NULL;
                        if (t->executing)
                                task_finish_write(t);
                        return;
                }
        } else {
                t->unsolicited_recv += c->rx_total;
                t->unsolicited_datasn++;
                if (final || t->unsolicited_recv >= t->unsolicited_len)
                        t->unsolicited_done = true;
        }
        write_account(t, c->rx_offset, c->rx_len);
        if (t->executing)
                task_pump(t);
}
