/* The RD4 worked example (../shared/docs/reference-designs.md, RD4), reproduced exactly
 * through the real iSCSI layer: a connection on a gateway with one (unstarted) reactor, a
 * transport that records what the target sends, a LUN on a memory backend.
 *
 * 32 KiB lines; ImmediateData=No, InitialR2T=Yes, MaxOutstandingR2T=4, our
 * MaxRecvDataSegmentLength 8192. The pool is arranged so the three lines handed out are at
 * base+0x50000, 0x68000, 0x80000, the DPT so the next entries are 0x10, 0x11, 0x12, and the
 * reactor's next task tag is 0x0123. A WRITE(10) of 64 KiB at LBA 32 (512-byte blocks, so
 * the first byte is 16 KiB into its line) must then produce:
 *   R2T  TTT 0x00100123 off 0x0    len 0x4000   DPT 0x10 {base+0x54000, 0x0,    0x4000}
 *   R2T  TTT 0x00110123 off 0x4000 len 0x8000   DPT 0x11 {base+0x68000, 0x4000, 0x8000}
 *   R2T  TTT 0x00120123 off 0xC000 len 0x4000   DPT 0x12 {base+0x80000, 0xC000, 0x4000}
 * and eight 8 KiB Data-Outs land at base+0x54000, 0x56000, 0x68000, 0x6A000, 0x6C000,
 * 0x6E000, 0x80000, 0x82000, with no copy; then GOOD, and the LUN holds the data at 16 KiB. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "tests/common/mem_backend.h"
#include "cache/dpt.h"
#include "cache/linepool.h"
#include "cache/volume.h"
#include "iscsi/iscsi.h"
#include "iscsi/iscsi_internal.h"
#include "iscsi/scsi.h"
#include "iscsi/transport.h"
#include "src/log.h"
#include "src/reactor.h"

#define LUN_BYTES  (1u << 20)
#define LINE       32768u
#define POOL_BYTES (1u << 20)
#define TARGET     "iqn.2026-11.io.isergw:worked-example"
#define INITIATOR  "iqn.2026-11.io.isergw:unit-initiator"
#define WRITE_ITT  0x00000010u
#define MAX_SENT   64

/* ---------------- recording transport ---------------- */

struct sent_pdu {
        struct iscsi_bhs bhs;
        uint32_t len;
        uint8_t data[8192];
};

struct xport_conn {
        struct iscsi_conn *ic;
        bool closed;
        struct tx_pdu *queue, **tail; /* to complete (sent()) later, in order */
        struct sent_pdu sent[MAX_SENT];
        unsigned nsent;
};

static void fx_send(struct xport_conn *xc, struct tx_pdu *pdu)
{
        cr_assert_lt(xc->nsent, MAX_SENT, "too many PDUs sent");
        struct sent_pdu *s = &xc->sent[xc->nsent++];
        s->bhs = pdu->bhs;
        s->len = 0;
        for (int i = 0; i < pdu->data_iovcnt; i++) {
                size_t n = pdu->data[i].iov_len;
                if (s->len + n > sizeof(s->data))
                        n = sizeof(s->data) - s->len;
                memcpy(s->data + s->len, pdu->data[i].iov_base, n);
                s->len += (uint32_t)n;
        }
        pdu->next = NULL;
        *xc->tail = pdu;
        xc->tail = &pdu->next;
}

static bool fx_complete_sent(struct xport_conn *xc)
{
        bool any = xc->queue != NULL;
        while (xc->queue) {
                struct tx_pdu *p = xc->queue;
                xc->queue = p->next;
                if (!xc->queue)
                        xc->tail = &xc->queue;
                if (p->sent)
                        p->sent(p);
                tx_pdu_free(p);
        }
        return any;
}

static void fx_digests(struct xport_conn *xc, bool h, bool d)
{
        (void)xc;
        cr_assert(!h && !d, "digests were not negotiated");
}

static void fx_dsl(struct xport_conn *xc, uint32_t dsl)
{
        (void)xc;
        cr_assert_eq(dsl, 8192, "transport told MaxRecvDataSegmentLength %u", dsl);
}

static void fx_close(struct xport_conn *xc, const char *why)
{
        (void)why;
        xc->closed = true;
}

static void fx_pause(struct xport_conn *xc, bool paused)
{
        (void)xc;
        (void)paused;
}

static const struct iscsi_transport_ops fx_ops = {.name = "test",
                                                  .send_pdu = fx_send,
                                                  .set_digests = fx_digests,
                                                  .set_max_recv_dsl = fx_dsl,
                                                  .close = fx_close,
                                                  .pause_rx = fx_pause};

/* ---------------- the world ---------------- */

static struct reactor *reactor;
static struct line_pool *pool;
static struct iscsi_gw *gw;
static struct mem_backend *mem;
static struct volume *volume;
static struct scsi_lun lun;
static struct xport_conn xc;
static uint32_t cmdsn = 1, exp_statsn;

static void world_up(void)
{
        log_set_level(LOG_LVL_ERR);
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        pool = line_pool_create(POOL_BYTES, LINE, 1);
        cr_assert_not_null(pool);
        struct iscsi_gw_conf gc = {.max_recv_dsl = 8192,
                                   .max_burst = 262144,
                                   .first_burst = 65536,
                                   .max_outstanding_r2t = 4,
                                   .immediate_data = false,
                                   .initial_r2t = true,
                                   .queue_depth = 32,
                                   .nop_interval_s = 0,
                                   .pool = pool,
                                   .nreactors = 1};
        gw = iscsi_gw_create(&gc);
        cr_assert_not_null(gw);
        cr_assert_eq(iscsi_gw_attach_reactor(gw, 0, reactor), 0);
        struct iscsi_target_conf tc = {.name = TARGET};
        cr_assert_eq(iscsi_gw_add_target(gw, &tc), 0);
        mem = mem_backend_create(LUN_BYTES);
        volume = volume_create(&mem->base);
        memset(&lun, 0, sizeof(lun));
        lun.lun = 0;
        lun.block_size = 512;
        lun.num_blocks = LUN_BYTES / 512;
        lun.volume = volume;
        lun.write_cache = true;
        lun.max_xfer_blocks = 2048;
        scsi_lun_init_identity(&lun, TARGET, 0);
        cr_assert_eq(iscsi_gw_add_lun(gw, TARGET, &lun), 0);
        iscsi_gw_add_portal(gw, "127.0.0.1", 3260, false);
        memset(&xc, 0, sizeof(xc));
        xc.tail = &xc.queue;
        xc.ic = iscsi_conn_create(gw, 0, &fx_ops, &xc, "127.0.0.1:3260", "127.0.0.1:40000");
        cr_assert_not_null(xc.ic);
        cmdsn = 1;
        exp_statsn = 0;
}

/* Completes backend I/O and sent PDUs until nothing moves (bounded). */
static void settle(void)
{
        for (int i = 0; i < 64; i++) {
                bool moved = mem_backend_complete_all(mem);
                moved |= fx_complete_sent(&xc);
                reactor_poll_once(reactor, 0);
                if (!moved && !mem->pending && !xc.queue)
                        return;
        }
        cr_assert_fail("the connection did not settle");
}

static void world_down(void)
{
        if (xc.ic) {
                fx_complete_sent(&xc);
                iscsi_conn_closed(xc.ic);
                xc.ic = NULL;
                settle();
        }
        iscsi_gw_destroy(gw);
        volume_destroy(volume);
        backend_destroy(&mem->base);
        line_pool_destroy(pool);
        reactor_destroy(reactor);
}

/* Feeds one PDU; returns where the connection said its data segment goes. The data is
 * copied into that place, as a transport's readv would do. */
static struct rx_dest feed(const struct iscsi_bhs *bhs, const void *data)
{
        struct rx_dest dest;
        memset(&dest, 0xa5, sizeof(dest));
        int rc = iscsi_conn_rx_header(xc.ic, bhs, NULL, 0, &dest);
        cr_assert_eq(rc, 0, "connection dropped at a header");
        uint32_t dsl = bhs_dsl(bhs);
        struct rx_dest seen = dest;
        if (!dest.discard) {
                size_t done = 0;
                for (int i = 0; i < dest.iovcnt && done < dsl; i++) {
                        size_t n = dest.iov[i].iov_len;
                        if (n > dsl - done)
                                n = dsl - done;
                        memcpy(dest.iov[i].iov_base, (const uint8_t *)data + done, n);
                        done += n;
                }
                cr_assert_eq(done, dsl, "the connection gave room for %zu of %u bytes", done, dsl);
        }
        iscsi_conn_rx_pdu(xc.ic, true);
        return seen;
}

static void add_key(char *buf, size_t *len, const char *kv)
{
        size_t n = strlen(kv) + 1;
        memcpy(buf + *len, kv, n);
        *len += n;
}

static void login(void)
{
        char text[1024];
        size_t len = 0;
        add_key(text, &len, "InitiatorName=" INITIATOR);
        add_key(text, &len, "TargetName=" TARGET);
        add_key(text, &len, "SessionType=Normal");
        add_key(text, &len, "HeaderDigest=None");
        add_key(text, &len, "DataDigest=None");
        add_key(text, &len, "ImmediateData=No");
        add_key(text, &len, "InitialR2T=Yes");
        add_key(text, &len, "MaxBurstLength=262144");
        add_key(text, &len, "FirstBurstLength=65536");
        add_key(text, &len, "MaxRecvDataSegmentLength=8192");
        add_key(text, &len, "MaxOutstandingR2T=4");
        add_key(text, &len, "MaxConnections=1");
        add_key(text, &len, "ErrorRecoveryLevel=0");
        add_key(text, &len, "DataPDUInOrder=Yes");
        add_key(text, &len, "DataSequenceInOrder=Yes");
        struct iscsi_bhs h = {{0}};
        h.b[0] = ISCSI_OP_LOGIN_REQ | ISCSI_OP_IMMEDIATE;
        h.b[1] = ISCSI_FLAG_LOGIN_TRANSIT | ISCSI_STAGE_OPERATIONAL << 2 | ISCSI_STAGE_FULL_FEATURE;
        h.b[2] = 0; /* version max */
        h.b[3] = 0; /* version min */
        bhs_set_dsl(&h, (uint32_t)len);
        static const uint8_t isid[6] = {0x80, 0x12, 0x34, 0x56, 0x00, 0x01};
        memcpy(h.b + 8, isid, 6);
        bhs_set_itt(&h, 0x1000);
        bhs_set_word(&h, BHS_CMDSN, cmdsn);
        bhs_set_word(&h, BHS_EXPSTATSN, 0);
        unsigned before = xc.nsent;
        feed(&h, text);
        settle();
        cr_assert_eq(xc.nsent, before + 1, "one Login Response expected");
        const struct sent_pdu *r = &xc.sent[before];
        cr_assert_eq(bhs_opcode(&r->bhs), ISCSI_OP_LOGIN_RSP);
        cr_assert_eq(r->bhs.b[36], 0, "login status class 0x%02x detail 0x%02x", r->bhs.b[36],
                     r->bhs.b[37]);
        cr_assert(r->bhs.b[1] & ISCSI_FLAG_LOGIN_TRANSIT);
        cr_assert_eq(r->bhs.b[1] & 3, ISCSI_STAGE_FULL_FEATURE);
        cr_assert_neq(iscsi_get_be16(r->bhs.b + 14), 0, "no TSIH");
        exp_statsn = bhs_word(&r->bhs, BHS_STATSN) + 1;
        const struct iscsi_conn *c = xc.ic;
        cr_assert_eq(c->state, CONN_FULL_FEATURE);
        cr_assert_eq(c->max_recv_dsl, 8192);
        cr_assert_eq(c->max_xmit_dsl, 8192);
        cr_assert_eq(c->max_r2t, 4);
        cr_assert(!c->immediate_data);
        cr_assert(c->initial_r2t);
        cr_assert_geq(c->max_burst, 32768);
}

/* ---------------- the example ---------------- */

static const uint32_t r2t_ttt[3] = {0x00100123u, 0x00110123u, 0x00120123u};
static const uint32_t r2t_off[3] = {0x0, 0x4000, 0xC000};
static const uint32_t r2t_len[3] = {0x4000, 0x8000, 0x4000};
static const uint32_t dpt_ptr[3] = {0x54000, 0x68000, 0x80000};
static const uint32_t land[8] = {0x54000, 0x56000, 0x68000, 0x6A000,
                                 0x6C000, 0x6E000, 0x80000, 0x82000};

static uint8_t payload[65536];
static int dummy_owner;

static void arrange_dpt_and_lines(uint8_t *base)
{
        struct iscsi_reactor_ctx *rc = gw->rctx[0];
        cr_assert_not_null(rc);
        /* DPT: indices 0x00..0x0f stay in use (as if other transfers held them). */
        for (unsigned i = 0; i < 0x10; i++) {
                uint32_t t = dpt_alloc(rc->dpt, base, 0, 512, &dummy_owner, NULL, 0x7777);
                cr_assert_eq(t >> 16, i, "DPT handed out index 0x%x, expected 0x%x", t >> 16, i);
        }
        cr_assert_eq(dpt_in_use(rc->dpt), 0x10);
        /* Lines: take all of them, give back exactly the three of the example, so that the LIFO
         * pool hands them out as 0x50000, 0x68000, 0x80000. */
        struct line_part *part = rc->lines;
        cr_assert_eq(part, line_pool_part(pool, 0));
        unsigned total = line_part_total(part);
        cr_assert_eq(total, POOL_BYTES / LINE);
        for (unsigned i = 0; i < total; i++)
                cr_assert_not_null(line_alloc(part));
        cr_assert_null(line_alloc(part));
        line_free(part, base + 0x80000);
        line_free(part, base + 0x68000);
        line_free(part, base + 0x50000);
        cr_assert_eq(line_part_free(part), 3);
        /* The task tag. */
        rc->next_tag = 0x0123;
}

static void send_write10(void)
{
        struct iscsi_bhs h = {{0}};
        h.b[0] = ISCSI_OP_SCSI_CMD;
        h.b[1] = ISCSI_FLAG_FINAL | ISCSI_FLAG_CMD_WRITE | 0x01; /* simple task attribute */
        bhs_set_itt(&h, WRITE_ITT);
        bhs_set_word(&h, BHS_CMD_EDTL, 65536);
        bhs_set_word(&h, BHS_CMDSN, cmdsn++);
        bhs_set_word(&h, BHS_EXPSTATSN, exp_statsn);
        uint8_t *cdb = h.b + BHS_CDB;
        cdb[0] = 0x2a;                        /* WRITE(10) */
        iscsi_put_be32(cdb + 2, 32);          /* LBA 32: 16 KiB into the LUN's first line */
        iscsi_put_be16(cdb + 7, 65536 / 512); /* 128 blocks */
        struct rx_dest d = feed(&h, NULL);
        cr_assert(d.discard || d.iovcnt == 0, "a command without data got a data destination");
}

static void data_out(unsigned k, struct rx_dest *seen)
{
        uint32_t off = k * 0x2000;
        unsigned r = off < 0x4000 ? 0 : off < 0xC000 ? 1 : 2;
        uint32_t datasn = (off - r2t_off[r]) / 0x2000;
        bool final = off + 0x2000 == r2t_off[r] + r2t_len[r];
        struct iscsi_bhs h = {{0}};
        h.b[0] = ISCSI_OP_DATA_OUT;
        h.b[1] = final ? ISCSI_FLAG_FINAL : 0;
        bhs_set_dsl(&h, 0x2000);
        bhs_set_itt(&h, WRITE_ITT);
        bhs_set_word(&h, BHS_TTT, r2t_ttt[r]);
        bhs_set_word(&h, BHS_EXPSTATSN, exp_statsn);
        bhs_set_word(&h, BHS_DATASN, datasn);
        bhs_set_word(&h, BHS_BUFOFF, off);
        *seen = feed(&h, payload + off);
}

Test(worked_example, rd4_64k_write_at_lba_32, .init = world_up, .fini = world_down)
{
        for (size_t i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t)(i * 7 + (i >> 9) + 1); /* no zero bytes in a row of 2 */
        login();
        uint8_t *base = line_pool_base(pool);
        struct iscsi_reactor_ctx *rc = gw->rctx[0];
        arrange_dpt_and_lines(base);

        /* ---- the command: exactly three R2Ts ---- */
        unsigned first = xc.nsent;
        send_write10();
        cr_assert_eq(xc.nsent - first, 3, "%u PDUs after the WRITE, expected 3 R2Ts",
                     xc.nsent - first);
        for (unsigned i = 0; i < 3; i++) {
                const struct iscsi_bhs *r = &xc.sent[first + i].bhs;
                cr_assert_eq(bhs_opcode(r), ISCSI_OP_R2T, "PDU %u is opcode 0x%02x", i,
                             bhs_opcode(r));
                cr_assert(bhs_flags(r) & ISCSI_FLAG_FINAL);
                cr_assert_eq(bhs_itt(r), WRITE_ITT);
                cr_assert_eq(bhs_word(r, BHS_TTT), r2t_ttt[i],
                             "R2T %u: TTT 0x%08x, expected 0x%08x", i, bhs_word(r, BHS_TTT),
                             r2t_ttt[i]);
                cr_assert_eq(bhs_word(r, BHS_BUFOFF), r2t_off[i], "R2T %u: BufferOffset 0x%x", i,
                             bhs_word(r, BHS_BUFOFF));
                cr_assert_eq(bhs_word(r, BHS_R2T_DDTL), r2t_len[i],
                             "R2T %u: DesiredDataTransferLength 0x%x", i,
                             bhs_word(r, BHS_R2T_DDTL));
                cr_assert_eq(bhs_word(r, BHS_DATASN), i, "R2T %u: R2TSN %u", i,
                             bhs_word(r, BHS_DATASN));
                cr_assert_eq(bhs_dsl(r), 0);
        }

        /* ---- the DPT entries behind them ---- */
        cr_assert_eq(dpt_in_use(rc->dpt), 0x13);
        for (unsigned i = 0; i < 3; i++) {
                const struct dpt_entry *e = dpt_lookup(rc->dpt, r2t_ttt[i], xc.ic);
                cr_assert_not_null(e, "no live DPT entry for TTT 0x%08x", r2t_ttt[i]);
                cr_assert_eq(e->data_pointer, base + dpt_ptr[i],
                             "DPT 0x%x: pointer base+0x%zx, expected base+0x%x", 0x10 + i,
                             (size_t)(e->data_pointer - base), dpt_ptr[i]);
                cr_assert_eq(e->data_offset, r2t_off[i], "DPT 0x%x: offset 0x%x", 0x10 + i,
                             e->data_offset);
                cr_assert_eq(e->data_length, r2t_len[i], "DPT 0x%x: length 0x%x", 0x10 + i,
                             e->data_length);
                cr_assert_eq(e->tag, 0x0123);
                cr_assert_eq(e->owner, (const void *)xc.ic);
        }
        cr_assert_eq(line_part_free(rc->lines), 0, "the three lines are taken");

        /* ---- eight Data-Outs, placed in the lines ---- */
        for (unsigned k = 0; k < 8; k++) {
                struct rx_dest d;
                data_out(k, &d);
                cr_assert(!d.discard, "Data-Out %u refused", k);
                cr_assert_eq(d.iovcnt, 1, "Data-Out %u: %d iovecs", k, d.iovcnt);
                cr_assert_eq(d.iov[0].iov_base, (void *)(base + land[k]),
                             "Data-Out %u (offset 0x%x) lands at base+0x%zx, expected base+0x%x", k,
                             k * 0x2000, (size_t)((uint8_t *)d.iov[0].iov_base - base), land[k]);
                cr_assert_eq(d.iov[0].iov_len, 0x2000);
                cr_assert(d.placed, "Data-Out %u not counted as placed in a line", k);
                cr_assert_eq(memcmp(base + land[k], payload + k * 0x2000, 0x2000), 0,
                             "line bytes at base+0x%x differ", land[k]);
                /* Nothing answers a Data-Out (no Reject, no early response). */
                cr_assert_eq(xc.nsent - first, 3,
                             "unexpected PDU after Data-Out %u (opcode 0x%02x)", k,
                             bhs_opcode(&xc.sent[xc.nsent - 1].bhs));
        }
        settle();

        /* ---- status ---- */
        cr_assert_eq(xc.nsent - first, 4, "%u PDUs in all, expected 3 R2Ts and a response",
                     xc.nsent - first);
        const struct iscsi_bhs *rsp = &xc.sent[first + 3].bhs;
        cr_assert_eq(bhs_opcode(rsp), ISCSI_OP_SCSI_RSP, "opcode 0x%02x", bhs_opcode(rsp));
        cr_assert_eq(bhs_itt(rsp), WRITE_ITT);
        cr_assert_eq(rsp->b[2], ISCSI_RSP_COMPLETED);
        cr_assert_eq(rsp->b[3], SCSI_STATUS_GOOD, "status 0x%02x, sense %u bytes", rsp->b[3],
                     xc.sent[first + 3].len);
        cr_assert_eq(rsp->b[1] & (ISCSI_FLAG_RSP_OVERFLOW | ISCSI_FLAG_RSP_UNDERFLOW), 0);
        cr_assert_eq(bhs_word(rsp, BHS_RESIDUAL), 0);
        cr_assert_eq(bhs_word(rsp, BHS_STATSN), exp_statsn);

        /* ---- the LUN holds the data at byte 16 KiB, and nothing else changed ---- */
        cr_assert_eq(memcmp(mem->bytes + 16384, payload, sizeof(payload)), 0,
                     "backend data differs");
        for (size_t i = 0; i < 16384; i++)
                cr_assert_eq(mem->bytes[i], 0, "byte %zu before the write changed", i);
        for (size_t i = 16384 + sizeof(payload); i < 2 * 65536; i++)
                cr_assert_eq(mem->bytes[i], 0, "byte %zu after the write changed", i);
        cr_assert_eq(mem->writes, 3, "one backend write per line piece, got %u", mem->writes);

        /* ---- everything handed back; counters prove zero copy ---- */
        cr_assert_eq(dpt_in_use(rc->dpt), 0x10, "DPT entries of the write still in use");
        cr_assert_eq(dpt_high_water(rc->dpt), 0x13);
        for (unsigned i = 0; i < 3; i++)
                cr_assert_null(dpt_lookup(rc->dpt, r2t_ttt[i], xc.ic), "TTT 0x%08x still live",
                               r2t_ttt[i]);
        cr_assert_eq(line_part_free(rc->lines), 3, "lines not returned");
        cr_assert_eq(rc->stats.write_copy_bytes, 0);
        cr_assert_eq(rc->stats.write_data_bytes, 65536);
        cr_assert_eq(rc->stats.write_bytes, 65536);
        cr_assert_eq(rc->stats.r2t_sent, 3);
        cr_assert_eq(rc->stats.data_out_pdus, 8);
        cr_assert_eq(rc->stats.write_commands, 1);
        cr_assert_eq(rc->stats.rejects, 0);
        cr_assert_eq(rc->stats.protocol_errors, 0);
        cr_assert_eq(rc->stats.scsi_errors, 0);
        cr_assert(!xc.closed, "the connection was dropped");
}
