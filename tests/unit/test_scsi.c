/* Tests for iscsi/scsi: every emulated command through prepare/execute against an in-memory
 * backend wrapped in a real volume, checking status, sense (key, ASC/ASCQ, INFORMATION and
 * field pointers) and the exact bytes returned; media round trips through many small iovec
 * chunks; chunked WRITE SAME/UNMAP/VERIFY; COMPARE AND WRITE serialisation; volume error
 * mapping; both inline and deferred volume completions. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "cache/volume.h"
#include "iscsi/scsi.h"

#define BS         512u
#define NUM_BLOCKS 8192u /* 4 MiB */
#define MAX_XFER   4096u
#define TARGET     "iqn.2026-11.io.isergw:unit"

/* ---------------- memory backend ---------------- */

/* Holds 'cap' bytes; the volume may be larger (a sparse tail reads as zeroes and swallows
 * writes), so huge WRITE SAME/UNMAP ranges can be tested without the memory. Completes
 * inline, or queues completions until mem_run() when async is set. */
struct mem_backend {
        struct backend base;
        uint8_t *bytes;
        uint64_t cap, size;
        bool async;
        struct volume_io *pending[64];
        unsigned npending;
        int fail_err; /* the next I/O of fail_op fails with this (-errno), once */
        enum volume_op fail_op;
        unsigned count[5]; /* I/Os per volume_op */
        struct volume_io last;
};

static struct mem_backend *to_mem(struct backend *b)
{
        return (struct mem_backend *)b;
}

static void mem_copy(struct mem_backend *m, struct volume_io *io, bool to_iov)
{
        uint64_t off = io->offset;
        for (int i = 0; i < io->iovcnt; i++) {
                uint8_t *p = io->iov[i].iov_base;
                for (size_t k = 0; k < io->iov[i].iov_len; k++, off++) {
                        if (to_iov)
                                p[k] = off < m->cap ? m->bytes[off] : 0;
                        else if (off < m->cap)
                                m->bytes[off] = p[k];
                }
        }
}

static void mem_zero(struct mem_backend *m, uint64_t off, uint64_t len)
{
        if (off < m->cap)
                memset(m->bytes + off, 0, (size_t)(len < m->cap - off ? len : m->cap - off));
}

static uint64_t iov_bytes(const struct iovec *iov, int iovcnt)
{
        uint64_t total = 0;
        for (int i = 0; i < iovcnt; i++)
                total += iov[i].iov_len;
        return total;
}

static int mem_do(struct mem_backend *m, struct volume_io *io)
{
        cr_assert_leq(io->offset + io->length, m->size, "I/O beyond the volume");
        if (io->op == VOLUME_READ || io->op == VOLUME_WRITE)
                cr_assert_eq(io->length, iov_bytes(io->iov, io->iovcnt),
                             "iov does not match length");
        if (m->fail_err && io->op == m->fail_op) {
                int err = m->fail_err;
                m->fail_err = 0;
                return err;
        }
        switch (io->op) {
        case VOLUME_READ:
                mem_copy(m, io, true);
                break;
        case VOLUME_WRITE:
                mem_copy(m, io, false);
                break;
        case VOLUME_UNMAP:
        case VOLUME_WRITE_ZEROES:
                mem_zero(m, io->offset, io->length);
                break;
        case VOLUME_FLUSH:
                break;
        }
        return 0;
}

static void mem_submit(struct backend *b, struct volume_io *io)
{
        struct mem_backend *m = to_mem(b);
        m->count[io->op]++;
        m->last = *io;
        int res = mem_do(m, io);
        if (!m->async) {
                io->done(io, res);
                return;
        }
        cr_assert_lt(m->npending, 64u);
        io->impl_res = res;
        m->pending[m->npending++] = io;
}

/* Completes deferred I/Os in order (new ones they cause too) until none is left. */
static void mem_run(struct mem_backend *m)
{
        while (m->npending) {
                struct volume_io *io = m->pending[0];
                memmove(m->pending, m->pending + 1, --m->npending * sizeof(m->pending[0]));
                io->done(io, (int)io->impl_res);
        }
}

static uint64_t mem_size(const struct backend *b)
{
        return ((const struct mem_backend *)b)->size;
}

static void mem_destroy(struct backend *b)
{
        free(to_mem(b)->bytes);
        free(b);
}

static const struct backend_ops mem_ops = {
    .name = "mem", .submit = mem_submit, .size = mem_size, .destroy = mem_destroy};

static struct mem_backend *mem_create(uint64_t size, uint64_t cap)
{
        struct mem_backend *m = calloc(1, sizeof(*m));
        m->base.ops = &mem_ops;
        m->size = size;
        m->cap = cap;
        m->bytes = calloc(1, cap);
        return m;
}

/* ---------------- fixture ---------------- */

static struct mem_backend *mem;
static struct volume *vol;
static struct scsi_lun lun;

static void lun_setup(struct scsi_lun *l, struct volume *v, uint64_t blocks, uint32_t bs)
{
        memset(l, 0, sizeof(*l));
        l->block_size = bs;
        l->num_blocks = blocks;
        l->volume = v;
        l->thin = true;
        l->write_cache = true;
        l->max_xfer_blocks = MAX_XFER;
        scsi_lun_init_identity(l, TARGET, 0);
}

static void setup(void)
{
        mem = mem_create((uint64_t)NUM_BLOCKS * BS, (uint64_t)NUM_BLOCKS * BS);
        vol = volume_create(&mem->base);
        lun_setup(&lun, vol, NUM_BLOCKS, BS);
}

static void teardown(void)
{
        volume_destroy(vol);
        backend_destroy(&mem->base);
}

TestSuite(scsi, .init = setup, .fini = teardown);

/* ---------------- running commands ---------------- */

struct run {
        struct scsi_cmd cmd;
        enum scsi_cmd_state prep;
        int done_calls;
        struct iovec iov[8192];
        int iovcnt;
        uint8_t *in; /* data-in gathered from the chunks */
        uint32_t in_len;
};

static void on_done(struct scsi_cmd *cmd)
{
        struct run *r = cmd->priv;
        r->done_calls++;
}

/* Chunks of 'chunk' bytes (the last shorter) holding len bytes, copied from src if given. */
static void make_iov(struct run *r, const uint8_t *src, size_t len, size_t chunk)
{
        r->iovcnt = 0;
        for (size_t off = 0; off < len; off += chunk) {
                size_t n = len - off < chunk ? len - off : chunk;
                cr_assert_lt(r->iovcnt, 8192);
                uint8_t *p = malloc(n);
                if (src)
                        memcpy(p, src + off, n);
                else
                        memset(p, 0xee, n); /* garbage the command must overwrite */
                r->iov[r->iovcnt++] = (struct iovec){p, n};
        }
}

static void gather(struct run *r)
{
        r->in_len = r->cmd.data_in_actual;
        r->in = calloc(1, r->in_len + 1);
        size_t off = 0;
        for (int i = 0; i < r->iovcnt && off < r->in_len; i++) {
                size_t n =
                    r->iov[i].iov_len < r->in_len - off ? r->iov[i].iov_len : r->in_len - off;
                memcpy(r->in + off, r->iov[i].iov_base, n);
                off += n;
        }
}

/* Prepares and executes; data-out is min(edtl, data_out_len) bytes of out. Does not wait
 * for deferred completions. */
static const char *nexus_name;    /* the I_T nexus commands come from (NULL: anonymous) */
static const uint8_t *nexus_isid; /* and its ISID (NULL: none) */

static struct run *run_start(struct scsi_lun *l, const uint8_t *cdb, uint32_t edtl, const void *out,
                             size_t chunk)
{
        struct run *r = calloc(1, sizeof(*r));
        scsi_cmd_init(&r->cmd);
        r->cmd.initiator = nexus_name;
        r->cmd.isid = nexus_isid;
        r->cmd.lun = l;
        r->cmd.lun_number = l ? l->lun : 7;
        memcpy(r->cmd.cdb, cdb, 16);
        r->cmd.edtl = edtl;
        r->cmd.done = on_done;
        r->cmd.priv = r;
        r->prep = scsi_cmd_prepare(&r->cmd);
        if (r->prep == SCSI_CMD_COMPLETE)
                return r;
        if (r->prep == SCSI_CMD_NEEDS_DATA) {
                uint32_t n = edtl < r->cmd.data_out_len ? edtl : r->cmd.data_out_len;
                make_iov(r, out, n, chunk);
        } else {
                make_iov(r, NULL, r->cmd.data_in_len, chunk);
        }
        r->cmd.iov = r->iov;
        r->cmd.iovcnt = r->iovcnt;
        scsi_cmd_execute(&r->cmd);
        return r;
}

static void run_wait(struct run *r)
{
        mem_run(mem);
        if (r->prep != SCSI_CMD_COMPLETE) {
                cr_assert_eq(r->done_calls, 1, "done() called %d times", r->done_calls);
                cr_assert_eq(r->cmd.state, SCSI_CMD_COMPLETE);
                gather(r);
        }
}

static struct run *run_on(struct scsi_lun *l, const uint8_t *cdb, uint32_t edtl, const void *out,
                          size_t chunk)
{
        struct run *r = run_start(l, cdb, edtl, out, chunk);
        run_wait(r);
        return r;
}

/* Data-in commands: edtl = the allocation length's worth; odd-sized chunks. */
static struct run *run(const uint8_t *cdb, uint32_t edtl, const void *out)
{
        return run_on(&lun, cdb, edtl, out, 333);
}

static void run_free(struct run *r)
{
        scsi_cmd_release(&r->cmd);
        for (int i = 0; i < r->iovcnt; i++)
                free(r->iov[i].iov_base);
        free(r->in);
        free(r);
}

static uint8_t sense_key(const struct run *r)
{
        return r->cmd.sense[2] & 0x0f;
}

static uint16_t sense_asc(const struct run *r)
{
        return (uint16_t)(r->cmd.sense[12] << 8 | r->cmd.sense[13]);
}

static void assert_good(const struct run *r)
{
        cr_assert_eq(r->cmd.status, SCSI_STATUS_GOOD, "status 0x%02x sense %x/%04x", r->cmd.status,
                     sense_key(r), sense_asc(r));
        cr_assert_eq(r->cmd.sense_len, 0);
}

static void assert_sense(const struct run *r, uint8_t key, uint16_t asc)
{
        cr_assert_eq(r->cmd.status, SCSI_STATUS_CHECK_CONDITION, "status 0x%02x", r->cmd.status);
        cr_assert_eq(r->cmd.sense_len, 18);
        cr_assert_eq(r->cmd.sense[0] & 0x7f, 0x70, "fixed format, current");
        cr_assert_eq(r->cmd.sense[7], 10);
        cr_assert_eq(sense_key(r), key, "sense key %x, want %x (asc %04x)", sense_key(r), key,
                     sense_asc(r));
        cr_assert_eq(sense_asc(r), asc, "asc %04x, want %04x", sense_asc(r), asc);
}

/* SENSE KEY SPECIFIC: SKSV, C/D, field pointer and bit pointer (-1: none). */
static void assert_field(const struct run *r, bool in_cdb, unsigned byte, int bit)
{
        const uint8_t *sks = &r->cmd.sense[15];
        cr_assert(sks[0] & 0x80, "SKSV not set");
        cr_assert_eq(!!(sks[0] & 0x40), in_cdb, "C/D");
        cr_assert_eq((unsigned)(sks[1] << 8 | sks[2]), byte, "field pointer %u, want %u",
                     sks[1] << 8 | sks[2], byte);
        if (bit >= 0) {
                cr_assert(sks[0] & 0x08, "BPV not set");
                cr_assert_eq(sks[0] & 7, bit, "bit pointer");
        }
}

static void assert_invalid_cdb(const struct run *r, unsigned byte, int bit)
{
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        assert_field(r, true, byte, bit);
}

static uint32_t info(const struct run *r)
{
        cr_assert(r->cmd.sense[0] & 0x80, "VALID not set");
        const uint8_t *p = &r->cmd.sense[3];
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---------------- CDB builders ---------------- */

static void be16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}
static void be32(uint8_t *p, uint32_t v)
{
        be16(p, (uint16_t)(v >> 16));
        be16(p + 2, (uint16_t)v);
}
static void be64(uint8_t *p, uint64_t v)
{
        be32(p, (uint32_t)(v >> 32));
        be32(p + 4, (uint32_t)v);
}
static uint16_t get16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t get32(const uint8_t *p)
{
        return (uint32_t)get16(p) << 16 | get16(p + 2);
}
static uint64_t get64(const uint8_t *p)
{
        return (uint64_t)get32(p) << 32 | get32(p + 4);
}

struct cdb {
        uint8_t b[16];
};

static struct cdb cdb6(uint8_t op, uint32_t lba, uint8_t n)
{
        struct cdb c = {{op, (uint8_t)(lba >> 16 & 0x1f), (uint8_t)(lba >> 8), (uint8_t)lba, n}};
        return c;
}
static struct cdb cdb10(uint8_t op, uint8_t b1, uint32_t lba, uint16_t n)
{
        struct cdb c = {{op, b1}};
        be32(&c.b[2], lba);
        be16(&c.b[7], n);
        return c;
}
static struct cdb cdb12(uint8_t op, uint8_t b1, uint32_t lba, uint32_t n)
{
        struct cdb c = {{op, b1}};
        be32(&c.b[2], lba);
        be32(&c.b[6], n);
        return c;
}
static struct cdb cdb16(uint8_t op, uint8_t b1, uint64_t lba, uint32_t n)
{
        struct cdb c = {{op, b1}};
        be64(&c.b[2], lba);
        be32(&c.b[10], n);
        return c;
}
static struct cdb inquiry(bool evpd, uint8_t page, uint16_t alloc)
{
        struct cdb c = {{0x12, evpd ? 1 : 0, page}};
        be16(&c.b[3], alloc);
        return c;
}

/* Fills the LU with a byte pattern that differs per block and per offset. */
static void fill_lun(void)
{
        for (uint64_t i = 0; i < mem->cap; i++)
                mem->bytes[i] = (uint8_t)(i * 7 + i / BS);
}

static uint8_t *pattern(size_t len, uint8_t seed)
{
        uint8_t *p = malloc(len);
        for (size_t i = 0; i < len; i++)
                p[i] = (uint8_t)(seed + i * 13 + i / 251);
        return p;
}

/* ---------------- generic decoding ---------------- */

Test(scsi, test_unit_ready)
{
        struct cdb c = {{0x00}};
        struct run *r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        run_free(r);
}

Test(scsi, unsupported_opcode)
{
        struct cdb c = {{0x02}};
        struct run *r = run(c.b, 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        run_free(r);
        c.b[0] = 0x3b; /* WRITE BUFFER: not implemented */
        r = run(c.b, 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        run_free(r);
}

Test(scsi, unsupported_service_action)
{
        struct cdb c = cdb16(0x9e, 0x11, 0, 32);
        struct run *r = run(c.b, 32, NULL);
        assert_invalid_cdb(r, 1, 4);
        run_free(r);
}

Test(scsi, naca_and_reserved_bits)
{
        struct cdb c = {{0x00, 0, 0, 0, 0, 0x04}}; /* NACA */
        struct run *r = run(c.b, 0, NULL);
        assert_invalid_cdb(r, 5, 2);
        run_free(r);
        c = (struct cdb){{0x00, 0, 0, 0, 0, 0x80}}; /* vendor bits of the control byte: ignored */
        r = run(c.b, 0, NULL);
        assert_good(r);
        run_free(r);
        c = (struct cdb){{0x00, 0x01}}; /* reserved */
        r = run(c.b, 0, NULL);
        assert_invalid_cdb(r, 1, 0);
        run_free(r);
}

Test(scsi, missing_lun)
{
        struct cdb c = {{0x00}};
        struct run *r = run_on(NULL, c.b, 0, NULL, 100);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        run_free(r);
        c = cdb10(0x28, 0, 0, 1);
        r = run_on(NULL, c.b, BS, NULL, 100);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        run_free(r);
        c = (struct cdb){{0x02}}; /* even an unknown opcode */
        r = run_on(NULL, c.b, 0, NULL, 100);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        run_free(r);
}

/* ---------------- INQUIRY ---------------- */

Test(scsi, inquiry_standard)
{
        struct cdb c = inquiry(false, 0, 260);
        struct run *r = run(c.b, 260, NULL);
        assert_good(r);
        cr_assert_eq(r->cmd.data_in_len, 74);
        cr_assert_eq(r->in_len, 74);
        const uint8_t *d = r->in;
        cr_assert_eq(d[0], 0x00, "qualifier 0, direct access");
        cr_assert_eq(d[1], 0x00, "not removable");
        cr_assert_eq(d[2], 0x06, "SPC-4");
        cr_assert_eq(d[3], 0x12, "HISUP, response data format 2");
        cr_assert_eq(d[4], 74 - 5);
        cr_assert_eq(d[5], 0x00);
        cr_assert_eq(d[7], 0x02, "CMDQUE");
        cr_assert_arr_eq(&d[8], "ISERGW  ", 8);
        cr_assert_arr_eq(&d[16], "VIRTUAL-DISK    ", 16);
        cr_assert_arr_eq(&d[32], "0001", 4);
        cr_assert_eq(get16(&d[58]), 0x00a0, "SAM-5");
        cr_assert_eq(get16(&d[60]), 0x0960, "iSCSI");
        cr_assert_eq(get16(&d[62]), 0x0460, "SPC-4");
        cr_assert_eq(get16(&d[64]), 0x04c0, "SBC-3");
        cr_assert_eq(get16(&d[66]), 0);
        run_free(r);
}

Test(scsi, inquiry_allocation_length)
{
        for (uint16_t alloc = 1; alloc <= 80; alloc++) {
                struct cdb c = inquiry(false, 0, alloc);
                struct run *r = run(c.b, alloc, NULL);
                assert_good(r);
                cr_assert_eq(r->in_len, alloc < 74 ? alloc : 74);
                cr_assert_eq(r->in[0], 0);
                run_free(r);
        }
        struct cdb c = inquiry(false, 0, 0); /* not an error, no data */
        struct run *r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        run_free(r);
        /* 16-bit allocation length: 511 and 512 return the same */
        c = inquiry(false, 0, 512);
        r = run(c.b, 512, NULL);
        cr_assert_eq(r->in_len, 74);
        run_free(r);
}

Test(scsi, inquiry_invalid_fields)
{
        struct cdb c = inquiry(false, 1, 255); /* EVPD 0 with a page code */
        struct run *r = run(c.b, 255, NULL);
        assert_invalid_cdb(r, 2, -1);
        run_free(r);
        c = inquiry(false, 0, 255);
        c.b[1] = 0x02; /* CMDDT */
        r = run(c.b, 255, NULL);
        assert_invalid_cdb(r, 1, 1);
        run_free(r);
        c = inquiry(true, 0x85, 255); /* a page we do not have */
        r = run(c.b, 255, NULL);
        assert_invalid_cdb(r, 2, -1);
        run_free(r);
}

Test(scsi, inquiry_missing_lun)
{
        struct cdb c = inquiry(false, 0, 96);
        struct run *r = run_on(NULL, c.b, 96, NULL, 7);
        assert_good(r);
        cr_assert_eq(r->in[0], 0x7f, "qualifier 3, type 1Fh");
        cr_assert_eq(r->in[2], 0x06);
        run_free(r);
        c = inquiry(true, 0x80, 96);
        r = run_on(NULL, c.b, 96, NULL, 7);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        run_free(r);
}

Test(scsi, vpd_supported_pages)
{
        struct cdb c = inquiry(true, 0x00, 255);
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        const uint8_t want[] = {0x00, 0x00, 0x00, 0x06, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2};
        cr_assert_eq(r->in_len, sizeof(want));
        cr_assert_arr_eq(r->in, want, sizeof(want));
        run_free(r);
        /* every page listed can be read */
        for (size_t i = 4; i < sizeof(want); i++) {
                c = inquiry(true, want[i], 255);
                r = run(c.b, 255, NULL);
                assert_good(r);
                cr_assert_eq(r->in[1], want[i]);
                cr_assert_eq(get16(&r->in[2]) + 4u, r->in_len, "page length of 0x%02x", want[i]);
                run_free(r);
        }
}

Test(scsi, vpd_serial)
{
        struct cdb c = inquiry(true, 0x80, 255);
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in[1], 0x80);
        cr_assert_eq(get16(&r->in[2]), 32);
        cr_assert_arr_eq(&r->in[4], lun.serial, 32);
        run_free(r);
}

Test(scsi, vpd_device_identification)
{
        struct cdb c = inquiry(true, 0x83, 512);
        struct run *r = run(c.b, 512, NULL);
        assert_good(r);
        const uint8_t *d = r->in;
        uint32_t len = get16(&d[2]) + 4u;
        cr_assert_eq(len, r->in_len);
        const uint8_t *p = &d[4];
        /* NAA 6, binary, LU */
        cr_assert_eq(p[0], 0x01);
        cr_assert_eq(p[1], 0x03);
        cr_assert_eq(p[3], 16);
        cr_assert_eq(p[4] >> 4, 6);
        cr_assert_arr_eq(&p[4], lun.naa_id, 16);
        p += 4 + p[3];
        /* T10 vendor id, ASCII, LU */
        cr_assert_eq(p[0], 0x02);
        cr_assert_eq(p[1], 0x01);
        cr_assert_eq(p[3], 8 + 32);
        cr_assert_arr_eq(&p[4], "ISERGW  ", 8);
        cr_assert_arr_eq(&p[12], lun.serial, 32);
        p += 4 + p[3];
        /* SCSI name string, iSCSI, UTF-8, PIV, target device */
        cr_assert_eq(p[0], 0x53);
        cr_assert_eq(p[1], 0xa8);
        cr_assert_eq(p[3] % 4, 0);
        cr_assert_str_eq((const char *)&p[4], TARGET);
        p += 4 + p[3];
        /* relative target port 1, then target port group 1 */
        const uint8_t rtp[] = {0x51, 0x94, 0, 4, 0, 0, 0, 1};
        cr_assert_arr_eq(p, rtp, 8);
        p += 8;
        const uint8_t tpg[] = {0x51, 0x95, 0, 4, 0, 0, 0, 1};
        cr_assert_arr_eq(p, tpg, 8);
        p += 8;
        cr_assert_eq(p, d + len);
        run_free(r);
}

Test(scsi, vpd_device_identification_port)
{
        struct cdb c = inquiry(true, 0x83, 512);
        struct run *r = calloc(1, sizeof(*r));
        scsi_cmd_init(&r->cmd);
        r->cmd.lun = &lun;
        memcpy(r->cmd.cdb, c.b, 16);
        r->cmd.edtl = 512;
        r->cmd.rel_tgt_port_id = 0x0102;
        r->cmd.tgt_port_group = 0x0304;
        r->cmd.done = on_done;
        r->cmd.priv = r;
        r->prep = scsi_cmd_prepare(&r->cmd);
        cr_assert_eq(r->prep, SCSI_CMD_READY);
        make_iov(r, NULL, r->cmd.data_in_len, 64);
        r->cmd.iov = r->iov;
        r->cmd.iovcnt = r->iovcnt;
        scsi_cmd_execute(&r->cmd);
        run_wait(r);
        const uint8_t *end = r->in + r->in_len;
        cr_assert_eq(get16(end - 10), 0x0102);
        cr_assert_eq(get16(end - 2), 0x0304);
        run_free(r);
}

Test(scsi, vpd_block_limits)
{
        struct cdb c = inquiry(true, 0xb0, 255);
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        const uint8_t *d = r->in;
        cr_assert_eq(r->in_len, 64);
        cr_assert_eq(get16(&d[2]), 0x3c);
        cr_assert_eq(d[4], 0, "WSNZ clear: 0 blocks means to the end");
        cr_assert_eq(d[5], 255, "MAXIMUM COMPARE AND WRITE LENGTH");
        cr_assert_eq(get16(&d[6]), 1, "OPTIMAL TRANSFER LENGTH GRANULARITY: one block");
        cr_assert_eq(get32(&d[8]), MAX_XFER);
        cr_assert_eq(get32(&d[20]), 0x100000, "MAXIMUM UNMAP LBA COUNT");
        cr_assert_eq(get32(&d[24]), 256, "MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT");
        cr_assert_eq(get32(&d[28]), 1, "OPTIMAL UNMAP GRANULARITY");
        cr_assert_eq(d[32], 0x80, "UGAVALID, UNMAP GRANULARITY ALIGNMENT 0");
        cr_assert_eq(get64(&d[36]), 0xffff, "MAXIMUM WRITE SAME LENGTH");
        cr_assert_eq(get32(&d[44]), 0, "no atomic writes");
        run_free(r);

        lun.thin = false;
        lun.max_xfer_blocks = 64;
        r = run(c.b, 255, NULL);
        cr_assert_eq(r->in[5], 32, "COMPARE AND WRITE moves twice its blocks");
        cr_assert_eq(get32(&r->in[20]), 0);
        cr_assert_eq(get32(&r->in[24]), 0);
        cr_assert_eq(get32(&r->in[28]), 0, "no unmap granularity without UNMAP");
        cr_assert_eq(r->in[32], 0);
        run_free(r);
}

Test(scsi, vpd_block_characteristics)
{
        struct cdb c = inquiry(true, 0xb1, 255);
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 64);
        cr_assert_eq(get16(&r->in[2]), 0x3c);
        cr_assert_eq(get16(&r->in[4]), 1, "non-rotating");
        run_free(r);
}

Test(scsi, vpd_logical_block_provisioning)
{
        struct cdb c = inquiry(true, 0xb2, 255);
        struct run *r = run(c.b, 255, NULL);
        const uint8_t thin[] = {0, 0xb2, 0, 4, 0, 0xe4, 0x02, 0};
        cr_assert_eq(r->in_len, 8);
        cr_assert_arr_eq(r->in, thin, 8);
        run_free(r);
        lun.thin = false;
        r = run(c.b, 255, NULL);
        const uint8_t full[] = {0, 0xb2, 0, 4, 0, 0, 0, 0};
        cr_assert_arr_eq(r->in, full, 8);
        run_free(r);
}

/* ---------------- READ CAPACITY, GET LBA STATUS ---------------- */

Test(scsi, read_capacity10)
{
        struct cdb c = cdb10(0x25, 0, 0, 0);
        struct run *r = run(c.b, 8, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 8);
        cr_assert_eq(get32(&r->in[0]), NUM_BLOCKS - 1);
        cr_assert_eq(get32(&r->in[4]), BS);
        run_free(r);
        c = cdb10(0x25, 0, 5, 0); /* LBA without PMI */
        r = run(c.b, 8, NULL);
        assert_invalid_cdb(r, 2, -1);
        run_free(r);
        c.b[8] = 0x01; /* with PMI: fine */
        r = run(c.b, 8, NULL);
        assert_good(r);
        run_free(r);
        lun.num_blocks = 0x200000000ull; /* beyond 32 bits */
        c = cdb10(0x25, 0, 0, 0);
        r = run(c.b, 8, NULL);
        cr_assert_eq(get32(&r->in[0]), 0xffffffffu);
        run_free(r);
}

Test(scsi, read_capacity16)
{
        struct cdb c = cdb16(0x9e, 0x10, 0, 32);
        struct run *r = run(c.b, 32, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 32);
        cr_assert_eq(get64(&r->in[0]), NUM_BLOCKS - 1);
        cr_assert_eq(get32(&r->in[8]), BS);
        cr_assert_eq(r->in[12], 0, "no protection");
        cr_assert_eq(r->in[13], 0, "LBPPBE 0");
        cr_assert_eq(r->in[14], 0xc0, "LBPME, LBPRZ");
        run_free(r);
        for (uint32_t alloc = 0; alloc < 16; alloc++) {
                c = cdb16(0x9e, 0x10, 0, alloc);
                r = run(c.b, alloc, NULL);
                assert_good(r);
                cr_assert_eq(r->in_len, alloc);
                run_free(r);
        }
        lun.thin = false;
        lun.num_blocks = 0x200000000ull;
        c = cdb16(0x9e, 0x10, 0, 32);
        r = run(c.b, 32, NULL);
        cr_assert_eq(get64(&r->in[0]), 0x1ffffffffull);
        cr_assert_eq(r->in[14], 0);
        run_free(r);
}

/* physical_block_size: READ CAPACITY(16) LBPPBE and LOWEST ALIGNED LBA, and the Block
 * Limits granularities, which count logical blocks. */
static void assert_physical_block(uint32_t bs, uint32_t pbs, bool thin, uint8_t lbppbe)
{
        lun.block_size = bs;
        lun.physical_block_size = pbs;
        lun.thin = thin;
        struct cdb c = cdb16(0x9e, 0x10, 0, 32);
        struct run *r = run(c.b, 32, NULL);
        assert_good(r);
        cr_assert_eq(get32(&r->in[8]), bs);
        cr_assert_eq(r->in[13], lbppbe, "%u/%u: LBPPBE %u, want %u", bs, pbs, r->in[13], lbppbe);
        cr_assert_eq(get16(&r->in[14]) & 0x3fff, 0, "LOWEST ALIGNED LBA");
        cr_assert_eq(r->in[14] & 0xc0, thin ? 0xc0 : 0, "LBPME, LBPRZ untouched");
        run_free(r);

        c = inquiry(true, 0xb0, 255);
        r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(get16(&r->in[6]), 1u << lbppbe, "OPTIMAL TRANSFER LENGTH GRANULARITY");
        cr_assert_eq(get32(&r->in[28]), thin ? 1u << lbppbe : 0, "OPTIMAL UNMAP GRANULARITY");
        cr_assert_eq(r->in[32], thin ? 0x80 : 0, "UGAVALID");
        cr_assert_eq(get32(&r->in[20]) >= (1u << lbppbe), thin,
                     "MAXIMUM UNMAP LBA COUNT covers a physical block");
        run_free(r);
}

Test(scsi, physical_block_size)
{
        assert_physical_block(512, 0, true, 0); /* unset: one logical block per physical */
        assert_physical_block(512, 512, true, 0);
        assert_physical_block(512, 4096, true, 3);
        assert_physical_block(512, 4096, false, 3);
        assert_physical_block(4096, 4096, true, 0);
        assert_physical_block(4096, 0, false, 0);
}

Test(scsi, get_lba_status)
{
        struct cdb c = cdb16(0x9e, 0x12, 100, 24);
        struct run *r = run(c.b, 24, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 24);
        cr_assert_eq(get32(&r->in[0]), 20);
        cr_assert_eq(get64(&r->in[8]), 100);
        cr_assert_eq(get32(&r->in[16]), NUM_BLOCKS - 100);
        cr_assert_eq(r->in[20] & 0x0f, 0, "mapped");
        run_free(r);
        const uint64_t beyond[] = {NUM_BLOCKS, NUM_BLOCKS + 1, 0x8000000000000000ull, ~0ull};
        for (size_t i = 0; i < 4; i++) {
                c = cdb16(0x9e, 0x12, beyond[i], 24);
                r = run(c.b, 24, NULL);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                run_free(r);
        }
        c = cdb16(0x9e, 0x12, NUM_BLOCKS - 1, 24);
        r = run(c.b, 24, NULL);
        cr_assert_eq(get32(&r->in[16]), 1);
        run_free(r);
}

/* ---------------- READ / WRITE ---------------- */

Test(scsi, write_read_round_trip_many_chunks)
{
        uint32_t n = 37, len = n * BS;
        uint8_t *data = pattern(len, 3);
        struct cdb c = cdb10(0x2a, 0, 100, (uint16_t)n);
        struct run *r = run_on(&lun, c.b, len, data, 100);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, len);
        cr_assert_eq(r->cmd.data_out_lun_offset, 100 * BS);
        cr_assert(r->cmd.media);
        cr_assert_not(r->cmd.fua);
        cr_assert_arr_eq(mem->bytes + 100 * BS, data, len);
        cr_assert_eq(mem->count[VOLUME_WRITE], 1, "one volume I/O for the whole command");
        run_free(r);

        c = cdb16(0x88, 0, 100, n);
        r = run_on(&lun, c.b, len, NULL, 700);
        assert_good(r);
        cr_assert_eq(r->cmd.data_in_len, len);
        cr_assert_eq(r->cmd.data_in_lun_offset, 100 * BS);
        cr_assert_eq(r->in_len, len);
        cr_assert_arr_eq(r->in, data, len);
        run_free(r);

        c = cdb12(0xa8, 0, 100, n); /* READ 12 with three-byte chunks */
        r = run_on(&lun, c.b, len, NULL, 3);
        cr_assert_arr_eq(r->in, data, len);
        run_free(r);
        free(data);
}

Test(scsi, all_read_write_sizes)
{
        const uint8_t writes[] = {0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e};
        const uint8_t reads[] = {0x08, 0x28, 0xa8, 0x88};
        for (size_t w = 0; w < sizeof(writes); w++) {
                uint32_t lba = 10 + 20 * (uint32_t)w, n = 3;
                uint8_t *data = pattern(n * BS, (uint8_t)w);
                struct cdb c;
                switch (writes[w] >> 5) {
                case 0:
                        c = cdb6(writes[w], lba, (uint8_t)n);
                        break;
                case 1:
                        c = cdb10(writes[w], 0, lba, (uint16_t)n);
                        break;
                case 5:
                        c = cdb12(writes[w], 0, lba, n);
                        break;
                default:
                        c = cdb16(writes[w], 0, lba, n);
                }
                struct run *r = run_on(&lun, c.b, n * BS, data, 512);
                assert_good(r);
                bool verify = (writes[w] & 0x0f) == 0x0e;
                cr_assert_eq(mem->last.fua, verify, "WRITE AND VERIFY reaches stable storage");
                cr_assert_eq(r->cmd.fua, verify);
                run_free(r);
                for (size_t k = 0; k < sizeof(reads); k++) {
                        switch (reads[k] >> 5) {
                        case 0:
                                c = cdb6(reads[k], lba, (uint8_t)n);
                                break;
                        case 1:
                                c = cdb10(reads[k], 0, lba, (uint16_t)n);
                                break;
                        case 5:
                                c = cdb12(reads[k], 0, lba, n);
                                break;
                        default:
                                c = cdb16(reads[k], 0, lba, n);
                        }
                        r = run_on(&lun, c.b, n * BS, NULL, 333);
                        assert_good(r);
                        cr_assert_arr_eq(r->in, data, n * BS);
                        run_free(r);
                }
                free(data);
        }
}

Test(scsi, six_byte_zero_means_256)
{
        fill_lun();
        struct cdb c = cdb6(0x08, 0, 0);
        struct run *r = run(c.b, 256 * BS, NULL);
        assert_good(r);
        cr_assert_eq(r->cmd.data_in_len, 256 * BS);
        cr_assert_arr_eq(r->in, mem->bytes, 256 * BS);
        run_free(r);
        /* 21-bit LBA */
        c = cdb6(0x08, 0x1fffff, 1);
        r = run(c.b, BS, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
}

Test(scsi, fua_reaches_the_volume)
{
        uint8_t *data = pattern(BS, 1);
        struct cdb c = cdb10(0x2a, 0x08, 0, 1);
        struct run *r = run(c.b, BS, data);
        assert_good(r);
        cr_assert(mem->last.fua);
        cr_assert(r->cmd.fua);
        run_free(r);
        c = cdb16(0x8a, 0x10, 0, 1); /* DPO alone: accepted, no FUA */
        r = run(c.b, BS, data);
        assert_good(r);
        cr_assert_not(mem->last.fua);
        run_free(r);
        c = cdb10(0x28, 0x18, 0, 1); /* READ with DPO and FUA */
        r = run(c.b, BS, NULL);
        assert_good(r);
        run_free(r);
        c = cdb10(0x2a, 0x02, 0, 1); /* obsolete FUA_NV: accepted */
        r = run(c.b, BS, data);
        assert_good(r);
        run_free(r);
        free(data);
}

Test(scsi, zero_transfer_length)
{
        const uint8_t ops[] = {0x28, 0x2a, 0x2e, 0x2f};
        for (size_t i = 0; i < sizeof(ops); i++) {
                struct cdb c = cdb10(ops[i], ops[i] == 0x2f ? 0x02 : 0, 0, 0);
                struct run *r = run(c.b, 0, NULL);
                cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
                assert_good(r);
                run_free(r);
                c = cdb10(ops[i], 0, NUM_BLOCKS, 0); /* at the end: fine */
                r = run(c.b, 0, NULL);
                assert_good(r);
                run_free(r);
                c = cdb10(ops[i], 0, NUM_BLOCKS + 1, 0); /* beyond: still checked */
                r = run(c.b, 0, NULL);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                run_free(r);
        }
        cr_assert_eq(mem->count[VOLUME_READ] + mem->count[VOLUME_WRITE], 0);
}

Test(scsi, lba_out_of_range)
{
        struct {
                uint64_t lba;
                uint32_t n;
        } cases[] = {{NUM_BLOCKS, 1},
                     {NUM_BLOCKS - 1, 2},
                     {NUM_BLOCKS + 1 - 256, 256},
                     {0x8000000000000000ull, 1},
                     {~0ull, 1},
                     {1ull << 55, 8}, /* lba * block size overflows 64 bits */
                     {1ull << 54, 1}};
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct cdb c = cdb16(0x88, 0, cases[i].lba, cases[i].n);
                struct run *r = run(c.b, cases[i].n * BS, NULL);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                run_free(r);
                c = cdb16(0x8a, 0, cases[i].lba, cases[i].n);
                r = run(c.b, cases[i].n * BS, NULL);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                cr_assert_eq(r->cmd.data_out_len, cases[i].n * BS, "for the caller's residuals");
                run_free(r);
        }
        struct cdb c = cdb10(0x28, 0, 0xffffffff, 1);
        struct run *r = run(c.b, BS, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        /* the last blocks are fine */
        c = cdb10(0x28, 0, NUM_BLOCKS - 256, 256);
        r = run(c.b, 256 * BS, NULL);
        assert_good(r);
        run_free(r);
        cr_assert_eq(mem->count[VOLUME_WRITE], 0);
}

Test(scsi, protection_bits_rejected)
{
        for (uint8_t p = 1; p < 8; p++) {
                struct cdb c = cdb10(0x28, (uint8_t)(p << 5), 0, 1);
                struct run *r = run(c.b, BS, NULL);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                assert_field(r, true, 1, p & 4 ? 7 : p & 2 ? 6 : 5);
                run_free(r);
                const uint8_t others[] = {0x2a, 0xaa, 0x8a, 0x2e, 0x2f, 0x41, 0x93, 0x89};
                for (size_t i = 0; i < sizeof(others); i++) {
                        c = cdb16(others[i], (uint8_t)(p << 5), 0, 1);
                        if (others[i] < 0x80)
                                c = cdb10(others[i], (uint8_t)(p << 5), 0, 1);
                        if (others[i] == 0xaa)
                                c = cdb12(others[i], (uint8_t)(p << 5), 0, 1);
                        r = run(c.b, BS, NULL);
                        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                        run_free(r);
                }
        }
}

Test(scsi, transfer_limit)
{
        struct cdb c = cdb10(0x28, 0, 0, MAX_XFER + 1);
        struct run *r = run(c.b, (MAX_XFER + 1) * BS, NULL);
        assert_invalid_cdb(r, 7, -1);
        run_free(r);
        c = cdb16(0x8a, 0, 0, MAX_XFER + 1);
        r = run(c.b, (MAX_XFER + 1) * BS, NULL);
        assert_invalid_cdb(r, 10, -1);
        run_free(r);
        c = cdb10(0x28, 0, 0, MAX_XFER);
        r = run_on(&lun, c.b, MAX_XFER * BS, NULL, 32768);
        assert_good(r);
        run_free(r);
}

Test(scsi, read_only_lun)
{
        lun.read_only = true;
        uint8_t *data = pattern(2 * BS, 9);
        const uint8_t ops[] = {0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x89};
        for (size_t i = 0; i < sizeof(ops); i++) {
                struct cdb c = cdb10(ops[i], 0, 0, 1);
                if (ops[i] == 0x0a)
                        c = cdb6(ops[i], 0, 1);
                else if (ops[i] >= 0xa0)
                        c = cdb12(ops[i], 0, 0, 1);
                else if (ops[i] >= 0x80)
                        c = cdb16(ops[i], 0, 0, 1);
                if (ops[i] == 0x89)
                        c.b[13] = 1;
                struct run *r = run(c.b, ops[i] == 0x89 ? 2 * BS : BS, data);
                assert_sense(r, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
                run_free(r);
        }
        struct cdb c = cdb10(0x41, 0x08, 0, 1); /* WRITE SAME with UNMAP and no data */
        struct run *r = run(c.b, 0, NULL);
        assert_sense(r, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
        run_free(r);
        c = cdb10(0x42, 0, 0, 24);
        r = run(c.b, 24, NULL);
        assert_sense(r, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
        run_free(r);
        c = cdb10(0x28, 0, 0, 1);
        r = run(c.b, BS, NULL);
        assert_good(r);
        run_free(r);
        cr_assert_eq(mem->count[VOLUME_WRITE] + mem->count[VOLUME_UNMAP] +
                         mem->count[VOLUME_WRITE_ZEROES],
                     0);
        free(data);
}

/* EDTL shorter than the CDB: whole blocks received are written, nothing more. */
Test(scsi, write_edtl_shorter_than_transfer)
{
        memset(mem->bytes, 'a', 4 * BS);
        uint8_t data[2 * BS];
        memset(data, 'b', sizeof(data));
        struct cdb c = cdb10(0x2a, 0, 0, 2);
        struct run *r = run(c.b, BS, data);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, 2 * BS, "residuals are the caller's");
        cr_assert_eq(mem->bytes[BS - 1], 'b');
        cr_assert_eq(mem->bytes[BS], 'a');
        run_free(r);

        c = cdb10(0x2a, 0, 0, 1);
        r = run(c.b, 200, data);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_INFORMATION_UNIT);
        cr_assert_eq(r->cmd.data_out_len, BS);
        run_free(r);

        c = cdb10(0x2a, 0, 2, 1);
        r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        cr_assert_eq(mem->bytes[2 * BS], 'a');
        run_free(r);

        c = cdb10(0x2a, 0, 0, 1); /* more EDTL than needed: fine */
        r = run(c.b, 10000, data);
        assert_good(r);
        run_free(r);
}

/* ---------------- VERIFY / WRITE AND VERIFY ---------------- */

Test(scsi, verify_without_bytchk_checks_range_only)
{
        struct cdb c = cdb10(0x2f, 0, 0, 256);
        struct run *r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, 0);
        run_free(r);
        c = cdb16(0x8f, 0, NUM_BLOCKS - 1, 2);
        r = run(c.b, 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        c = cdb10(0x2f, 0x10, 0, 1); /* DPO */
        r = run(c.b, 0, NULL);
        assert_good(r);
        run_free(r);
        c = cdb10(0x2f, 0x04, 0, 1); /* BYTCHK 10b */
        r = run(c.b, 0, NULL);
        assert_invalid_cdb(r, 1, 2);
        run_free(r);
        cr_assert_eq(mem->count[VOLUME_READ], 0);
}

Test(scsi, verify_bytchk_match_and_mismatch)
{
        fill_lun();
        const uint8_t ops[] = {0x2f, 0xaf, 0x8f};
        for (size_t i = 0; i < sizeof(ops); i++) {
                uint32_t lba = 50, n = 9, len = n * BS;
                struct cdb c = ops[i] == 0x2f   ? cdb10(ops[i], 0x02, lba, (uint16_t)n)
                               : ops[i] == 0xaf ? cdb12(ops[i], 0x02, lba, n)
                                                : cdb16(ops[i], 0x02, lba, n);
                uint8_t *data = malloc(len);
                memcpy(data, mem->bytes + lba * BS, len);
                struct run *r = run_on(&lun, c.b, len, data, 100);
                assert_good(r);
                cr_assert_eq(r->cmd.data_out_lun_offset, -1, "compared, not stored");
                cr_assert_not(r->cmd.media);
                run_free(r);
                data[1234] ^= 'X';
                r = run_on(&lun, c.b, len, data, 100);
                assert_sense(r, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
                cr_assert_eq(info(r), 1234);
                run_free(r);
                free(data);
        }
}

Test(scsi, verify_large_in_chunks)
{
        fill_lun();
        uint32_t n = MAX_XFER, len = n * BS; /* 2 MiB: several bounce chunks */
        uint8_t *data = malloc(len);
        memcpy(data, mem->bytes, len);
        struct cdb c = cdb16(0x8f, 0x02, 0, n);
        struct run *r = run_on(&lun, c.b, len, data, 65536);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_READ], 2);
        run_free(r);
        data[len - 3] ^= 1;
        r = run_on(&lun, c.b, len, data, 65536);
        assert_sense(r, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
        cr_assert_eq(info(r), len - 3);
        run_free(r);
        free(data);
}

Test(scsi, write_and_verify)
{
        uint8_t *data = pattern(4 * BS, 77);
        struct cdb c = cdb10(0x2e, 0x02, 8, 4);
        struct run *r = run(c.b, 4 * BS, data);
        assert_good(r);
        cr_assert(r->cmd.media);
        cr_assert_eq(r->cmd.data_out_lun_offset, 8 * BS);
        cr_assert(mem->last.fua);
        cr_assert_arr_eq(mem->bytes + 8 * BS, data, 4 * BS);
        run_free(r);
        c = cdb16(0x8e, 0x10, 8, 4); /* DPO */
        r = run(c.b, 4 * BS, data);
        assert_good(r);
        run_free(r);
        free(data);
}

/* ---------------- SYNCHRONIZE CACHE, PRE-FETCH, misc ---------------- */

Test(scsi, synchronize_cache)
{
        struct cdb c = cdb10(0x35, 0, 0, 0);
        struct run *r = run(c.b, 0, NULL);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_FLUSH], 1);
        run_free(r);
        c = cdb16(0x91, 0x02, 10, 20); /* IMMED */
        r = run(c.b, 0, NULL);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_FLUSH], 2);
        run_free(r);
        c = cdb16(0x91, 0, NUM_BLOCKS - 1, 2);
        r = run(c.b, 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        mem->fail_op = VOLUME_FLUSH;
        mem->fail_err = -EIO;
        c = cdb10(0x35, 0, 0, 0);
        r = run(c.b, 0, NULL);
        assert_sense(r, SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
        run_free(r);
}

Test(scsi, prefetch)
{
        struct cdb c = cdb10(0x34, 0x02, 0, 16);
        c.b[6] = 3; /* group number */
        struct run *r = run(c.b, 0, NULL);
        assert_good(r);
        run_free(r);
        c = cdb16(0x90, 0, NUM_BLOCKS, 1);
        r = run(c.b, 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
}

/* START STOP UNIT byte 4: POWER CONDITION << 4 | NO_FLUSH 0x04 | LOEJ 0x02 | START 0x01 */
#define SSU_EJECT 0x02
#define SSU_LOAD  0x03

static struct cdb start_stop(uint8_t b4)
{
        return (struct cdb){{0x1b, 0x01 /* IMMED */, 0, 0, b4}};
}

static struct cdb prevent_allow(uint8_t prevent)
{
        return (struct cdb){{0x1e, 0, 0, 0, prevent}};
}

static uint8_t status_on(const struct cdb c)
{
        struct run *r = run(c.b, 0, NULL);
        uint8_t st = r->cmd.status;
        run_free(r);
        return st;
}

/* A LU that is not removable accepts both commands and changes nothing: LOEJ ejects
 * nothing, PREVENT (any value) holds nothing, and the medium is always there. */
Test(scsi, start_stop_and_prevent_allow_not_removable)
{
        const uint8_t b4[] = {0x01, 0x00, SSU_EJECT, SSU_LOAD, SSU_EJECT | 0x04, 0x10 | SSU_EJECT};
        for (size_t i = 0; i < sizeof(b4); i++) {
                cr_assert_eq(status_on(start_stop(b4[i])), SCSI_STATUS_GOOD, "byte 4 0x%02x",
                             b4[i]);
                cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_GOOD, "still ready");
        }
        for (uint8_t prevent = 0; prevent < 4; prevent++)
                cr_assert_eq(status_on(prevent_allow(prevent)), SCSI_STATUS_GOOD);
        cr_assert_eq(status_on(start_stop(SSU_EJECT)), SCSI_STATUS_GOOD, "nothing prevented");
        struct cdb c = cdb10(0x28, 0, 0, 1);
        struct run *r = run(c.b, BS, NULL);
        assert_good(r);
        run_free(r);
        c = inquiry(false, 0, 96);
        r = run(c.b, 96, NULL);
        cr_assert_eq(r->in[1], 0, "RMB 0");
        run_free(r);
}

Test(scsi, request_sense)
{
        struct cdb c = {{0x03, 0, 0, 0, 252}};
        struct run *r = run(c.b, 252, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 18);
        cr_assert_eq(r->in[0], 0x70);
        cr_assert_eq(r->in[2], SK_NO_SENSE);
        cr_assert_eq(r->in[7], 10);
        cr_assert_eq(r->in[12], 0);
        run_free(r);
        r = run_on(NULL, c.b, 252, NULL, 5);
        assert_good(r);
        cr_assert_eq(r->in[2], SK_ILLEGAL_REQUEST);
        cr_assert_eq(r->in[12], 0x25);
        run_free(r);
        c.b[1] = 0x01; /* DESC: descriptor format is not supported */
        r = run(c.b, 252, NULL);
        assert_invalid_cdb(r, 1, 0);
        run_free(r);
}

/* ---------------- MODE SENSE / MODE SELECT ---------------- */

static struct cdb mode_sense6(uint8_t b1, uint8_t pc_page, uint8_t subpage, uint8_t alloc)
{
        return (struct cdb){{0x1a, b1, pc_page, subpage, alloc}};
}

Test(scsi, mode_sense6_all_pages)
{
        struct cdb c = mode_sense6(0, 0x3f, 0, 255);
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        const uint8_t *d = r->in;
        cr_assert_eq(r->in_len, 4 + 8 + 20 + 12 + 12);
        cr_assert_eq(d[0], r->in_len - 1, "mode data length");
        cr_assert_eq(d[1], 0, "medium type");
        cr_assert_eq(d[2], 0x10, "DPOFUA, not write protected");
        cr_assert_eq(d[3], 8, "block descriptor length");
        cr_assert_eq(get32(&d[4]), NUM_BLOCKS);
        cr_assert_eq(get32(&d[8]) & 0xffffff, BS);
        const uint8_t *p = &d[12];
        cr_assert_eq(p[0], 0x08);
        cr_assert_eq(p[1], 0x12);
        cr_assert_eq(p[2], 0x04, "WCE");
        p += 20;
        const uint8_t control[] = {0x0a, 0x0a, 0x02, 0x10, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
        cr_assert_arr_eq(p, control, 12);
        p += 12;
        const uint8_t iec[] = {0x1c, 0x0a, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0};
        cr_assert_arr_eq(p, iec, 12);
        run_free(r);

        c = mode_sense6(0, 0x3f, 0xff, 255); /* all pages and subpages */
        r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 56);
        run_free(r);
}

Test(scsi, mode_sense6_single_pages_and_options)
{
        lun.write_cache = false;
        lun.read_only = true;
        struct cdb c = mode_sense6(0x08, 0x08, 0, 255); /* DBD, caching */
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 4 + 20);
        cr_assert_eq(r->in[2], 0x90, "WP, DPOFUA");
        cr_assert_eq(r->in[3], 0);
        cr_assert_eq(r->in[4], 0x08);
        cr_assert_eq(r->in[6], 0x00, "WCE clear");
        run_free(r);

        lun.write_cache = true;
        c = mode_sense6(0x08, 0x40 | 0x08, 0, 255); /* changeable: nothing */
        r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in[4], 0x08);
        cr_assert_eq(r->in[5], 0x12);
        for (uint32_t i = 6; i < r->in_len; i++)
                cr_assert_eq(r->in[i], 0, "byte %u changeable", i);
        run_free(r);

        c = mode_sense6(0x08, 0x80 | 0x0a, 0, 255); /* default */
        r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in[4], 0x0a);
        cr_assert_eq(r->in[7], 0x10);
        run_free(r);

        c = mode_sense6(0, 0xc0 | 0x08, 0, 255); /* saved */
        r = run(c.b, 255, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_SAVING_PARAMS_NOT_SUPPORTED);
        run_free(r);

        c = mode_sense6(0, 0x19, 0, 255);
        r = run(c.b, 255, NULL);
        assert_invalid_cdb(r, 2, 5);
        run_free(r);

        c = mode_sense6(0, 0x0a, 0x01, 255); /* a subpage */
        r = run(c.b, 255, NULL);
        assert_invalid_cdb(r, 3, -1);
        run_free(r);

        c = mode_sense6(0, 0x3f, 0, 4); /* truncated to the header */
        r = run(c.b, 4, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 4);
        cr_assert_eq(r->in[0], 4 + 8 + 44 - 1, "mode data length is the full length");
        run_free(r);
}

Test(scsi, mode_sense10_long_lba)
{
        struct cdb c = {{0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 255}};
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        const uint8_t *d = r->in;
        cr_assert_eq(r->in_len, 8 + 16 + 20);
        cr_assert_eq(get16(&d[0]), r->in_len - 2);
        cr_assert_eq(d[3], 0x10);
        cr_assert_eq(d[4], 0x01, "LONGLBA");
        cr_assert_eq(get16(&d[6]), 16);
        cr_assert_eq(get64(&d[8]), NUM_BLOCKS);
        cr_assert_eq(get32(&d[20]), BS);
        cr_assert_eq(d[24], 0x08);
        run_free(r);
        c.b[1] = 0; /* short descriptor */
        r = run(c.b, 255, NULL);
        cr_assert_eq(r->in_len, 8 + 8 + 20);
        cr_assert_eq(r->in[4], 0);
        cr_assert_eq(get16(&r->in[6]), 8);
        run_free(r);
}

/* MODE SELECT(6) of what MODE SENSE returned (header fields reserved for select zeroed). */
static struct run *mode_select_current(uint8_t page, void (*edit)(uint8_t *d, uint32_t len))
{
        struct cdb c = mode_sense6(0, page, 0, 255);
        struct run *s = run(c.b, 255, NULL);
        uint8_t d[255];
        uint32_t len = s->in_len;
        memcpy(d, s->in, len);
        run_free(s);
        d[0] = 0;
        d[2] = 0;
        if (edit)
                edit(d, len);
        c = (struct cdb){{0x15, 0x10, 0, 0, (uint8_t)len}};
        return run(c.b, len, d);
}

static void set_wce_off(uint8_t *d, uint32_t len)
{
        d[4 + 8 + 2] &= (uint8_t)~0x04;
}

static void truncate_page(uint8_t *d, uint32_t len)
{
        d[4 + 8 + 1] = 0x40; /* page length beyond the list */
}

static void wrong_block_size(uint8_t *d, uint32_t len)
{
        d[4 + 6] = 0x10; /* 4096 */
}

Test(scsi, mode_select)
{
        struct run *r = mode_select_current(0x3f, NULL);
        assert_good(r);
        run_free(r);
        r = mode_select_current(0x0a, NULL);
        assert_good(r);
        run_free(r);
        r = mode_select_current(0x08, set_wce_off); /* nothing is changeable */
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        assert_field(r, false, 4 + 8 + 2, -1);
        run_free(r);
        r = mode_select_current(0x08, truncate_page);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        run_free(r);
        r = mode_select_current(0x08, wrong_block_size);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        run_free(r);

        struct cdb c = {{0x15, 0x11, 0, 0, 12}}; /* SP */
        r = run(c.b, 12, NULL);
        assert_invalid_cdb(r, 1, 0);
        run_free(r);
        c = (struct cdb){{0x15, 0x10, 0, 0, 0}}; /* empty list */
        r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        run_free(r);
        uint8_t unknown[] = {0, 0, 0, 0, 0x19, 0x02, 0, 0};
        c = (struct cdb){{0x15, 0x10, 0, 0, sizeof(unknown)}};
        r = run(c.b, sizeof(unknown), unknown);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        assert_field(r, false, 4, -1);
        run_free(r);
        uint8_t short_hdr[] = {0, 0};
        c = (struct cdb){{0x15, 0x10, 0, 0, sizeof(short_hdr)}};
        r = run(c.b, sizeof(short_hdr), short_hdr);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        run_free(r);
}

Test(scsi, mode_select10)
{
        struct cdb c = {{0x5a, 0x08, 0x0a, 0, 0, 0, 0, 0, 255}}; /* DBD, control */
        struct run *s = run(c.b, 255, NULL);
        uint8_t d[64];
        uint32_t len = s->in_len;
        memcpy(d, s->in, len);
        run_free(s);
        d[0] = d[1] = d[3] = 0;
        c = (struct cdb){{0x55, 0x10, 0, 0, 0, 0, 0, 0, (uint8_t)len}};
        struct run *r = run(c.b, len, d);
        assert_good(r);
        run_free(r);
        d[8 + 4] |= 0x40; /* RAC: not changeable */
        r = run(c.b, len, d);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        assert_field(r, false, 8 + 4, -1);
        run_free(r);
        cr_assert_not(atomic_load(&lun.swp));
}

/* SWP: changeable, shown in the control page and as WP in the header; writes are refused
 * with LOGICAL UNIT SOFTWARE WRITE PROTECTED until it is cleared; reads go on. */
Test(scsi, software_write_protect)
{
        struct cdb c = mode_sense6(0x08, 0x40 | 0x0a, 0, 255); /* changeable control page */
        struct run *r = run(c.b, 255, NULL);
        assert_good(r);
        cr_assert_eq(r->in[4 + 4], 0x08, "SWP changeable");
        cr_assert_eq(r->in[4 + 2], 0);
        run_free(r);

        uint8_t d[4 + 12];
        c = mode_sense6(0x08, 0x0a, 0, 255);
        r = run(c.b, 255, NULL);
        cr_assert_eq(r->in_len, sizeof(d));
        memcpy(d, r->in, sizeof(d));
        run_free(r);
        d[0] = d[2] = 0;
        d[4 + 4] |= 0x08;
        c = (struct cdb){{0x15, 0x10, 0, 0, sizeof(d)}};
        r = run(c.b, sizeof(d), d);
        assert_good(r);
        run_free(r);
        cr_assert(atomic_load(&lun.swp));

        c = mode_sense6(0x08, 0x0a, 0, 255);
        r = run(c.b, 255, NULL);
        cr_assert_eq(r->in[2], 0x90, "WP, DPOFUA");
        cr_assert_eq(r->in[4 + 4] & 0x08, 0x08, "SWP current");
        run_free(r);
        c = mode_sense6(0x08, 0x80 | 0x0a, 0, 255);
        r = run(c.b, 255, NULL);
        cr_assert_eq(r->in[4 + 4] & 0x08, 0, "SWP default off");
        run_free(r);

        uint8_t *data = pattern(BS, 3);
        const uint8_t ops[] = {0x0a, 0x2a, 0x2e, 0x41, 0x93, 0x8a, 0x89};
        for (size_t i = 0; i < sizeof(ops); i++) {
                struct cdb w = ops[i] == 0x0a   ? cdb6(ops[i], 0, 1)
                               : ops[i] >= 0x80 ? cdb16(ops[i], 0, 0, 1)
                                                : cdb10(ops[i], 0, 0, 1);
                if (ops[i] == 0x89)
                        w.b[13] = 1;
                uint32_t len = ops[i] == 0x89 ? 2 * BS : BS;
                r = run(w.b, len, data);
                assert_sense(r, SK_DATA_PROTECT, ASC_SOFTWARE_WRITE_PROTECTED);
                run_free(r);
        }
        uint8_t unmap[24] = {0, 22, 0, 16};
        c = (struct cdb){{0x42, 0, 0, 0, 0, 0, 0, 0, sizeof(unmap)}};
        r = run(c.b, sizeof(unmap), unmap);
        assert_sense(r, SK_DATA_PROTECT, ASC_SOFTWARE_WRITE_PROTECTED);
        run_free(r);
        c = cdb10(0x28, 0, 0, 1);
        r = run(c.b, BS, NULL);
        assert_good(r);
        run_free(r);

        d[4 + 4] &= (uint8_t)~0x08;
        c = (struct cdb){{0x15, 0x10, 0, 0, sizeof(d)}};
        r = run(c.b, sizeof(d), d);
        assert_good(r);
        run_free(r);
        cr_assert_not(atomic_load(&lun.swp));
        c = cdb10(0x2a, 0, 0, 1);
        r = run(c.b, BS, data);
        assert_good(r);
        run_free(r);
        free(data);
}

/* ---------------- persistent reservations ---------------- */

#define INI_A "iqn.2026-11.io.isergw:a"
#define INI_B "iqn.2026-11.io.isergw:b"

static struct run *as(const char *ini, struct cdb c, uint32_t edtl, const void *out)
{
        nexus_name = ini;
        struct run *r = run(c.b, edtl, out);
        nexus_name = NULL;
        return r;
}

static uint8_t prout(const char *ini, uint8_t sa, uint8_t type, uint64_t key, uint64_t sark,
                     uint8_t flags, struct run **keep)
{
        uint8_t p[24] = {0};
        for (int i = 0; i < 8; i++) {
                p[i] = (uint8_t)(key >> (56 - 8 * i));
                p[8 + i] = (uint8_t)(sark >> (56 - 8 * i));
        }
        p[20] = flags;
        struct cdb c = {{0x5f, sa, type, 0, 0, 0, 0, 0, 24}};
        struct run *r = as(ini, c, 24, p);
        uint8_t st = r->cmd.status;
        if (keep)
                *keep = r;
        else
                run_free(r);
        return st;
}

static struct run *prin(const char *ini, uint8_t sa)
{
        struct cdb c = {{0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0}};
        return as(ini, c, 4096, NULL);
}

static uint8_t status_of(const char *ini, struct cdb c, uint32_t edtl, const void *out)
{
        struct run *r = as(ini, c, edtl, out);
        uint8_t st = r->cmd.status;
        run_free(r);
        return st;
}

Test(scsi, persistent_reservations)
{
        uint8_t *data = pattern(BS, 5);
        struct cdb rd = cdb10(0x28, 0, 0, 1), wr = cdb10(0x2a, 0, 0, 1);
        struct run *r = prin(INI_A, 0x02); /* REPORT CAPABILITIES */
        assert_good(r);
        cr_assert_eq(r->in_len, 8);
        cr_assert_eq(r->in[2] & 0x01, 0, "PTPL_C clear");
        cr_assert_eq(r->in[4], 0xea);
        cr_assert_eq(r->in[5], 0x01);
        run_free(r);

        cr_assert_eq(prout(INI_A, 0, 0, 0, 0xa, 0x01, &r), SCSI_STATUS_CHECK_CONDITION, "APTPL");
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        run_free(r);
        cr_assert_eq(prout(INI_A, 0, 0, 1, 0xa, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT,
                     "unregistered with a key");
        cr_assert_eq(prout(INI_A, 0, 0, 0, 0xa, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(prout(INI_B, 6, 0, 0x77, 0xb, 0, NULL), SCSI_STATUS_GOOD);
        r = prin(INI_A, 0x00);
        assert_good(r);
        cr_assert_eq(get32(&r->in[0]), 2, "generation");
        cr_assert_eq(get32(&r->in[4]), 16);
        run_free(r);

        /* A holds Write Exclusive: B reads but cannot write; A does both */
        cr_assert_eq(prout(INI_A, 1, 1, 0xa, 0, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, rd, BS, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, wr, BS, data), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(NULL, wr, BS, data), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_A, wr, BS, data), SCSI_STATUS_GOOD);
        cr_assert_eq(prout(INI_B, 1, 1, 0xb, 0, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        r = prin(INI_B, 0x01);
        assert_good(r);
        cr_assert_eq(get32(&r->in[4]), 16);
        cr_assert_eq(get64(&r->in[8]), 0xa);
        cr_assert_eq(r->in[21], 1);
        run_free(r);
        cr_assert_eq(prout(INI_A, 2, 3, 0xa, 0, 0, &r), SCSI_STATUS_CHECK_CONDITION,
                     "release of another type");
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_RELEASE_OF_PR);
        run_free(r);

        /* B preempts A into Exclusive Access: A loses its registration and all access */
        cr_assert_eq(prout(INI_B, 4, 3, 0xb, 0xa, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, rd, BS, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        struct cdb inq = {{0x12, 0, 0, 0, 96}};
        cr_assert_eq(status_of(INI_A, inq, 96, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, rd, BS, NULL), SCSI_STATUS_GOOD);
        r = prin(INI_A, 0x03); /* READ FULL STATUS */
        assert_good(r);
        cr_assert_eq(r->in[8 + 12], 0x01, "R_HOLDER");
        cr_assert_eq(r->in[8 + 13], 3);
        cr_assert_eq(get64(&r->in[8]), 0xb);
        cr_assert_eq(r->in[8 + 24], 0x45, "iSCSI TransportID, format 01b");
        cr_assert_str_eq((const char *)&r->in[8 + 28], INI_B ",i,0x000000000000");
        run_free(r);

        /* Exclusive Access, All Registrants: every registrant has access */
        cr_assert_eq(prout(INI_A, 0, 0, 0, 0xa, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(prout(INI_B, 2, 3, 0xb, 0, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(prout(INI_B, 1, 8, 0xb, 0, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, wr, BS, data), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(NULL, rd, BS, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(prout(INI_B, 0, 0, 0xb, 0, 0, NULL), SCSI_STATUS_GOOD, "unregister");
        r = prin(INI_A, 0x01);
        cr_assert_eq(get32(&r->in[4]), 16, "still reserved while A is registered");
        cr_assert_eq(get64(&r->in[8]), 0, "all registrants: key 0");
        run_free(r);

        /* CLEAR drops everything */
        cr_assert_eq(prout(INI_B, 3, 0, 0xb, 0, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(prout(INI_A, 3, 0, 0xa, 0, 0, NULL), SCSI_STATUS_GOOD);
        r = prin(INI_A, 0x00);
        cr_assert_eq(get32(&r->in[4]), 0);
        run_free(r);
        cr_assert_eq(status_of(NULL, wr, BS, data), SCSI_STATUS_GOOD);
        cr_assert_not(atomic_load(&lun.pr.active));

        struct cdb bad = {{0x5f, 1, 0x12, 0, 0, 0, 0, 0, 24}}; /* scope 1 */
        r = as(INI_A, bad, 24, NULL);
        assert_invalid_cdb(r, 2, 7);
        run_free(r);
        bad.b[2] = 0x02; /* type 2: obsolete */
        r = as(INI_A, bad, 24, NULL);
        assert_invalid_cdb(r, 2, 3);
        run_free(r);
        bad = (struct cdb){{0x5f, 0, 0, 0, 0, 0, 0, 0, 20}};
        r = as(INI_A, bad, 20, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        run_free(r);
        free(data);
}

/* SPC-2 RESERVE/RELEASE: exclusive to one I_T nexus, ended by its holder, a LU reset or
 * the loss of the nexus; refused while persistent reservations are in use. */
Test(scsi, spc2_reserve_release)
{
        struct cdb res6 = {{0x16}}, rel6 = {{0x17}}, res10 = {{0x56}}, rel10 = {{0x57}};
        struct cdb tur = {{0x00}}, inq = {{0x12, 0, 0, 0, 96}}, rd = cdb10(0x28, 0, 0, 1);
        cr_assert_eq(status_of(INI_A, res6, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, res6, 0, NULL), SCSI_STATUS_GOOD, "again: no-op");
        cr_assert_eq(status_of(INI_B, res10, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_B, tur, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_B, rd, BS, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_B, inq, 96, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, rel6, 0, NULL), SCSI_STATUS_GOOD, "not the holder: no-op");
        cr_assert_eq(status_of(INI_B, tur, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(prout(INI_B, 0, 0, 0, 0xb, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_A, rd, BS, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, rel10, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, tur, 0, NULL), SCSI_STATUS_GOOD);

        cr_assert_eq(status_of(INI_B, res6, 0, NULL), SCSI_STATUS_GOOD);
        scsi_lun_nexus_lost(&lun, INI_A, (const uint8_t[6]){0});
        cr_assert_eq(status_of(INI_A, tur, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        scsi_lun_nexus_lost(&lun, INI_B, (const uint8_t[6]){0});
        cr_assert_eq(status_of(INI_A, tur, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, res6, 0, NULL), SCSI_STATUS_GOOD);
        scsi_lun_reset(&lun);
        cr_assert_eq(status_of(INI_A, tur, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_not(atomic_load(&lun.pr.active));

        cr_assert_eq(prout(INI_A, 0, 0, 0, 0xa, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, res6, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(status_of(INI_B, rel6, 0, NULL), SCSI_STATUS_RESERVATION_CONFLICT);
        cr_assert_eq(prout(INI_A, 0, 0, 0xa, 0, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, res6, 0, NULL), SCSI_STATUS_GOOD);
        scsi_lun_reset(&lun);
}

/* ---------------- removable medium ---------------- */

static void assert_no_medium(const struct run *r)
{
        assert_sense(r, SK_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
}

static uint64_t volume_ios(void)
{
        uint64_t n = 0;
        for (size_t i = 0; i < sizeof(mem->count) / sizeof(mem->count[0]); i++)
                n += mem->count[i];
        return n;
}

/* Every command that needs the medium, with its data-out (if any) and EDTL. */
struct medium_cmd {
        struct cdb c;
        uint32_t edtl;
};

static unsigned medium_cmds(struct medium_cmd *m)
{
        unsigned n = 0;
        m[n++] = (struct medium_cmd){{{0x00}}, 0}; /* TEST UNIT READY */
        m[n++] = (struct medium_cmd){cdb6(0x08, 0, 1), BS};
        m[n++] = (struct medium_cmd){cdb6(0x0a, 0, 1), BS};
        const uint8_t ten[] = {0x28, 0x2a, 0x2e, 0x34, 0x35, 0x41};
        for (size_t i = 0; i < sizeof(ten); i++)
                m[n++] = (struct medium_cmd){cdb10(ten[i], 0, 0, 1), BS};
        m[n++] = (struct medium_cmd){cdb10(0x2f, 0x02, 0, 1), BS};       /* VERIFY, BYTCHK */
        m[n++] = (struct medium_cmd){cdb10(0x28, 0, NUM_BLOCKS, 1), BS}; /* beyond the end */
        const uint8_t twelve[] = {0xa8, 0xaa, 0xae};
        for (size_t i = 0; i < sizeof(twelve); i++)
                m[n++] = (struct medium_cmd){cdb12(twelve[i], 0, 0, 1), BS};
        m[n++] = (struct medium_cmd){cdb12(0xaf, 0x02, 0, 1), BS};
        const uint8_t sixteen[] = {0x88, 0x8a, 0x8e, 0x90, 0x91, 0x93};
        for (size_t i = 0; i < sizeof(sixteen); i++)
                m[n++] = (struct medium_cmd){cdb16(sixteen[i], 0, 0, 1), BS};
        m[n++] = (struct medium_cmd){cdb16(0x8f, 0x02, 0, 1), BS};
        m[n++] = (struct medium_cmd){{{0x25}}, 8};                  /* READ CAPACITY(10) */
        m[n++] = (struct medium_cmd){cdb16(0x9e, 0x10, 0, 32), 32}; /* READ CAPACITY(16) */
        m[n++] = (struct medium_cmd){cdb16(0x9e, 0x12, 0, 24), 24}; /* GET LBA STATUS */
        m[n++] = (struct medium_cmd){cdb10(0x42, 0, 0, 24), 24};    /* UNMAP */
        struct cdb caw = {{0x89}};
        caw.b[13] = 1;
        m[n++] = (struct medium_cmd){caw, 2 * BS};
        return n;
}

/* Ejected: every command that needs the medium is NOT READY, MEDIUM NOT PRESENT (before
 * any other check, and without touching the volume); the others still work. Loaded again:
 * the same data is there. */
Test(scsi, removable_eject_and_load)
{
        fill_lun();
        lun.removable = true;
        struct cdb c = inquiry(false, 0, 96);
        struct run *r = run(c.b, 96, NULL);
        cr_assert_eq(r->in[1], 0x80, "RMB");
        run_free(r);

        cr_assert_eq(status_on(start_stop(SSU_EJECT)), SCSI_STATUS_GOOD);
        struct medium_cmd m[40];
        unsigned n = medium_cmds(m);
        uint8_t *out = pattern(2 * BS, 3);
        uint64_t ios = volume_ios();
        for (unsigned i = 0; i < n; i++) {
                r = run(m[i].c.b, m[i].edtl, out);
                cr_assert_eq(r->prep, SCSI_CMD_COMPLETE, "opcode 0x%02x", m[i].c.b[0]);
                assert_no_medium(r);
                run_free(r);
        }
        cr_assert_eq(volume_ios(), ios, "no I/O reaches the volume");

        const struct cdb fine[] = {inquiry(false, 0, 96),
                                   inquiry(true, 0x83, 512),
                                   {{0x1a, 0, 0x3f, 0, 255}},           /* MODE SENSE(6) */
                                   {{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0}}, /* REPORT LUNS */
                                   {{0x16}},
                                   {{0x17}}, /* RESERVE, RELEASE */
                                   prevent_allow(0),
                                   start_stop(0x01)};
        for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
                r = run(fine[i].b, 512, NULL);
                assert_good(r);
                run_free(r);
        }
        c = (struct cdb){{0x03, 0, 0, 0, 18}}; /* REQUEST SENSE: says why */
        r = run(c.b, 18, NULL);
        assert_good(r);
        cr_assert_eq(r->in[2], SK_NOT_READY);
        cr_assert_eq(r->in[12] << 8 | r->in[13], ASC_MEDIUM_NOT_PRESENT);
        run_free(r);
        cr_assert_eq(status_on(start_stop(SSU_EJECT)), SCSI_STATUS_GOOD, "ejecting again");
        cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_CHECK_CONDITION);

        cr_assert_eq(status_on(start_stop(SSU_LOAD)), SCSI_STATUS_GOOD);
        cr_assert_eq(status_on(start_stop(SSU_LOAD)), SCSI_STATUS_GOOD, "loading again");
        cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_GOOD);
        c = cdb10(0x28, 0, 3, 2);
        r = run(c.b, 2 * BS, NULL);
        assert_good(r);
        cr_assert_arr_eq(r->in, mem->bytes + 3 * BS, 2 * BS);
        run_free(r);
        c = (struct cdb){{0x03, 0, 0, 0, 18}};
        r = run(c.b, 18, NULL);
        cr_assert_eq(r->in[2], SK_NO_SENSE);
        run_free(r);
        free(out);
}

/* Only LOEJ moves the medium, and not with a POWER CONDITION; NO_FLUSH changes nothing. */
Test(scsi, removable_start_stop_fields)
{
        lun.removable = true;
        const uint8_t stay[] = {0x00, 0x01, 0x04, 0x05};
        for (size_t i = 0; i < sizeof(stay); i++) {
                cr_assert_eq(status_on(start_stop(stay[i])), SCSI_STATUS_GOOD);
                cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_GOOD,
                             "byte 4 0x%02x: still loaded", stay[i]);
        }
        for (uint8_t pc = 1; pc < 16; pc++) {
                cr_assert_eq(status_on(start_stop((uint8_t)(pc << 4 | SSU_EJECT))),
                             SCSI_STATUS_GOOD);
                cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_GOOD,
                             "POWER CONDITION %u: not ejected", pc);
        }
        cr_assert_eq(status_on(start_stop(0x04 | SSU_EJECT)), SCSI_STATUS_GOOD);
        cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_CHECK_CONDITION, "NO_FLUSH");
        cr_assert_eq(status_on(start_stop(0x04 | SSU_LOAD)), SCSI_STATUS_GOOD);
        cr_assert_eq(status_on((struct cdb){{0x00}}), SCSI_STATUS_GOOD);
        struct cdb c = start_stop(SSU_EJECT);
        c.b[4] |= 0x08; /* reserved */
        struct run *r = run(c.b, 0, NULL);
        assert_invalid_cdb(r, 4, 3);
        run_free(r);
}

static struct run *as_isid(const char *ini, const uint8_t *isid, struct cdb c)
{
        nexus_isid = isid;
        struct run *r = as(ini, c, 0, NULL);
        nexus_isid = NULL;
        return r;
}

static void assert_removal_prevented(const char *ini, uint8_t b4)
{
        struct run *r = as(ini, start_stop(b4), 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_MEDIUM_REMOVAL_PREVENTED);
        run_free(r);
}

/* PREVENT holds the medium in for every nexus while any nexus prevents; loading is refused
 * too. Each nexus (initiator and ISID) prevents and allows for itself only. */
Test(scsi, removable_prevent_allow)
{
        lun.removable = true;
        cr_assert_eq(status_of(INI_A, prevent_allow(1), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, prevent_allow(1), 0, NULL), SCSI_STATUS_GOOD, "again");
        assert_removal_prevented(INI_A, SSU_EJECT);
        assert_removal_prevented(INI_B, SSU_EJECT);
        assert_removal_prevented(INI_A, SSU_LOAD);
        cr_assert_eq(status_of(INI_B, (struct cdb){{0x00}}, 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, prevent_allow(0), 0, NULL), SCSI_STATUS_GOOD);
        assert_removal_prevented(INI_B, SSU_EJECT);
        cr_assert_eq(status_of(INI_A, prevent_allow(0), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, start_stop(SSU_EJECT), 0, NULL), SCSI_STATUS_GOOD,
                     "one ALLOW ends any number of PREVENTs of its nexus");

        /* Ejected and prevented: the medium cannot come back either. */
        cr_assert_eq(status_of(INI_A, prevent_allow(1), 0, NULL), SCSI_STATUS_GOOD);
        assert_removal_prevented(INI_B, SSU_LOAD);
        const uint8_t isid1[6] = {0x80, 1, 2, 3, 0, 0}, isid2[6] = {0x80, 1, 2, 3, 0, 1};
        struct run *r = as_isid(INI_B, isid1, prevent_allow(1));
        assert_good(r);
        run_free(r);
        cr_assert_eq(status_of(INI_A, prevent_allow(0), 0, NULL), SCSI_STATUS_GOOD);
        r = as_isid(INI_B, isid2, prevent_allow(0)); /* another nexus of the same initiator */
        assert_good(r);
        run_free(r);
        assert_removal_prevented(INI_A, SSU_LOAD);
        r = as_isid(INI_B, isid1, prevent_allow(0));
        assert_good(r);
        run_free(r);
        cr_assert_eq(status_of(INI_A, start_stop(SSU_LOAD), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, (struct cdb){{0x00}}, 0, NULL), SCSI_STATUS_GOOD);

        for (uint8_t prevent = 2; prevent < 4; prevent++) { /* MMC's persistent prevention */
                r = as(INI_A, prevent_allow(prevent), 0, NULL);
                assert_invalid_cdb(r, 4, 1);
                run_free(r);
        }
        cr_assert_eq(status_of(INI_A, start_stop(SSU_EJECT), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_A, start_stop(SSU_LOAD), 0, NULL), SCSI_STATUS_GOOD);
}

/* A prevention ends with its I_T nexus and with a LU reset; the medium stays where it is. */
Test(scsi, removable_prevention_ends_with_nexus_loss_and_reset)
{
        lun.removable = true;
        const uint8_t isid[6] = {0x80, 9, 9, 9, 0, 0};
        struct run *r = as_isid(INI_A, isid, prevent_allow(1));
        assert_good(r);
        run_free(r);
        scsi_lun_nexus_lost(&lun, INI_A, (const uint8_t[6]){0}); /* another ISID */
        scsi_lun_nexus_lost(&lun, INI_B, isid);
        assert_removal_prevented(INI_B, SSU_EJECT);
        scsi_lun_nexus_lost(&lun, INI_A, isid);
        cr_assert_eq(status_of(INI_B, start_stop(SSU_EJECT), 0, NULL), SCSI_STATUS_GOOD);

        cr_assert_eq(status_of(INI_A, prevent_allow(1), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(INI_B, prevent_allow(1), 0, NULL), SCSI_STATUS_GOOD);
        scsi_lun_reset(&lun);
        cr_assert_eq(status_of(INI_A, (struct cdb){{0x00}}, 0, NULL), SCSI_STATUS_CHECK_CONDITION,
                     "a reset loads nothing");
        cr_assert_eq(status_of(INI_B, start_stop(SSU_LOAD), 0, NULL), SCSI_STATUS_GOOD);

        /* Room for SCSI_MEDIUM_MAX_PREVENT nexuses; one more is refused, and no more. */
        char names[SCSI_MEDIUM_MAX_PREVENT + 1][64];
        for (int i = 0; i <= SCSI_MEDIUM_MAX_PREVENT; i++) {
                snprintf(names[i], sizeof(names[i]), "iqn.2026-11.io.isergw:n%d", i);
                uint8_t st = status_of(names[i], prevent_allow(1), 0, NULL);
                cr_assert_eq(st, i < SCSI_MEDIUM_MAX_PREVENT ? SCSI_STATUS_GOOD
                                                             : SCSI_STATUS_CHECK_CONDITION);
        }
        r = as(names[SCSI_MEDIUM_MAX_PREVENT], prevent_allow(1), 0, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INSUFFICIENT_RESOURCES);
        run_free(r);
        cr_assert_eq(status_of(names[0], prevent_allow(0), 0, NULL), SCSI_STATUS_GOOD);
        cr_assert_eq(status_of(names[SCSI_MEDIUM_MAX_PREVENT], prevent_allow(1), 0, NULL),
                     SCSI_STATUS_GOOD, "room again");
        assert_removal_prevented(names[0], SSU_EJECT);
        scsi_lun_reset(&lun);
        cr_assert_eq(status_of(names[0], start_stop(SSU_EJECT), 0, NULL), SCSI_STATUS_GOOD);
}

/* ---------------- REPORT LUNS ---------------- */

Test(scsi, report_luns)
{
        const uint64_t luns[] = {0, 1, 300, 20000};
        struct cdb c = {{0xa0, 0, 0}};
        be32(&c.b[6], 1024);
        struct run *r = run_start(&lun, c.b, 1024, NULL, 333);
        run_wait(r);
        assert_good(r);
        cr_assert_eq(get32(&r->in[0]), 0, "no list given");
        run_free(r);

        for (int which = 0; which < 2; which++) {
                r = calloc(1, sizeof(*r));
                scsi_cmd_init(&r->cmd);
                r->cmd.lun = which ? NULL : &lun; /* works for a missing LUN too */
                r->cmd.lun_list = (struct scsi_lun_list){luns, 4};
                memcpy(r->cmd.cdb, c.b, 16);
                r->cmd.edtl = 1024;
                r->cmd.done = on_done;
                r->cmd.priv = r;
                r->prep = scsi_cmd_prepare(&r->cmd);
                cr_assert_eq(r->prep, SCSI_CMD_READY);
                make_iov(r, NULL, r->cmd.data_in_len, 5);
                r->cmd.iov = r->iov;
                r->cmd.iovcnt = r->iovcnt;
                scsi_cmd_execute(&r->cmd);
                run_wait(r);
                assert_good(r);
                const uint8_t want[] = {0, 0, 0, 24, 0, 0, 0, 0, 0,    0,    0, 0, 0, 0, 0, 0,
                                        0, 1, 0, 0,  0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0};
                cr_assert_eq(r->in_len, sizeof(want), "LUN 20000 cannot be addressed");
                cr_assert_arr_eq(r->in, want, sizeof(want));
                run_free(r);
        }

        c.b[2] = 0x01; /* well-known LUNs only: none */
        r = run(c.b, 1024, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 8);
        run_free(r);
        c.b[2] = 0x10;
        r = run(c.b, 1024, NULL);
        assert_invalid_cdb(r, 2, -1);
        run_free(r);
        c.b[2] = 0;
        be32(&c.b[6], 15);
        r = run(c.b, 15, NULL);
        assert_invalid_cdb(r, 6, -1);
        run_free(r);
}

Test(scsi, lun_encoding)
{
        uint8_t b[8];
        scsi_lun_encode(5, b);
        const uint8_t p[8] = {0, 5};
        cr_assert_arr_eq(b, p, 8);
        cr_assert_eq(scsi_lun_decode(b), 5);
        scsi_lun_encode(0x1234, b);
        const uint8_t f[8] = {0x52, 0x34};
        cr_assert_arr_eq(b, f, 8);
        cr_assert_eq(scsi_lun_decode(b), 0x1234);
        const uint8_t multi[8] = {0, 1, 0, 2};
        cr_assert_eq(scsi_lun_decode(multi), UINT64_MAX);
        const uint8_t bus[8] = {0x01, 1};
        cr_assert_eq(scsi_lun_decode(bus), UINT64_MAX);
        const uint8_t extended[8] = {0xc0, 1};
        cr_assert_eq(scsi_lun_decode(extended), UINT64_MAX);
}

Test(scsi, lun_identity)
{
        struct scsi_lun a = {0}, b = {0}, c = {0};
        scsi_lun_init_identity(&a, TARGET, 1);
        scsi_lun_init_identity(&b, TARGET, 1);
        scsi_lun_init_identity(&c, TARGET, 2);
        cr_assert_str_eq(a.serial, b.serial, "stable");
        cr_assert_arr_eq(a.naa_id, b.naa_id, 16);
        cr_assert_str_neq(a.serial, c.serial, "distinct per LUN");
        cr_assert_arr_neq(a.naa_id, c.naa_id, 16);
        cr_assert_eq(strlen(a.serial), 32);
        cr_assert_eq(a.naa_id[0] >> 4, 6);
        cr_assert_str_eq(a.vendor, "ISERGW  ");
        cr_assert_str_eq(a.target_name, TARGET);
        cr_assert_eq(a.lun, 1);
}

/* ---------------- REPORT SUPPORTED OPERATION CODES ---------------- */

static struct cdb rsoc(bool rctd, uint8_t options, uint8_t op, uint16_t sa, uint32_t alloc)
{
        struct cdb c = {{0xa3, 0x0c, (uint8_t)((rctd ? 0x80 : 0) | options), op}};
        be16(&c.b[4], sa);
        be32(&c.b[6], alloc);
        return c;
}

/* Finds opcode/sa in an all-commands list; returns the descriptor or NULL. */
static const uint8_t *rsoc_find(const struct run *r, uint8_t op, uint16_t sa, bool rctd)
{
        uint32_t len = get32(r->in) + 4;
        for (uint32_t pos = 4; pos < len; pos += rctd ? 20 : 8) {
                const uint8_t *d = &r->in[pos];
                if (d[0] == op && get16(&d[2]) == sa)
                        return d;
        }
        return NULL;
}

Test(scsi, report_supported_opcodes_all)
{
        struct cdb c = rsoc(false, 0, 0, 0, 65535);
        struct run *r = run(c.b, 65535, NULL);
        assert_good(r);
        uint32_t len = get32(r->in);
        cr_assert_eq(len % 8, 0);
        cr_assert_eq(len / 8, 51, "every command in the table");
        const uint8_t *d = rsoc_find(r, 0x28, 0, false);
        cr_assert_not_null(d);
        cr_assert_eq(d[5], 0);
        cr_assert_eq(get16(&d[6]), 10);
        d = rsoc_find(r, 0x9e, 0x10, false);
        cr_assert_not_null(d);
        cr_assert_eq(d[5], 0x01, "SERVACTV");
        cr_assert_eq(get16(&d[6]), 16);
        cr_assert_not_null(rsoc_find(r, 0x9e, 0x12, false));
        cr_assert_not_null(rsoc_find(r, 0xa3, 0x0c, false));
        cr_assert_not_null(rsoc_find(r, 0x42, 0, false));
        for (uint32_t pos = 4; pos < len + 4; pos += 8)
                cr_assert(r->in[pos + 5] & 0x01 || get16(&r->in[pos + 2]) == 0);
        run_free(r);

        lun.thin = false;
        r = run(c.b, 65535, NULL);
        cr_assert_eq(get32(r->in) / 8, 50);
        cr_assert_null(rsoc_find(r, 0x42, 0, false), "no UNMAP on a fully provisioned LU");
        run_free(r);
}

Test(scsi, report_supported_opcodes_rctd)
{
        struct cdb c = rsoc(true, 0, 0, 0, 65535);
        struct run *r = run(c.b, 65535, NULL);
        assert_good(r);
        uint32_t len = get32(r->in);
        cr_assert_eq(len, 51 * 20);
        for (uint32_t pos = 4; pos < len + 4; pos += 20) {
                cr_assert(r->in[pos + 5] & 0x02, "CTDP");
                cr_assert_eq(get16(&r->in[pos + 8]), 0x0a, "timeouts descriptor length");
                cr_assert_eq(get32(&r->in[pos + 16]), 60);
        }
        run_free(r);
        c = rsoc(false, 0, 0, 0, 1024); /* truncated */
        r = run(c.b, 1024, NULL);
        assert_good(r);
        cr_assert_eq(r->in_len, 4 + 51 * 8);
        run_free(r);
}

Test(scsi, report_supported_opcodes_one)
{
        struct cdb c = rsoc(false, 1, 0x28, 0, 65535);
        struct run *r = run(c.b, 65535, NULL);
        assert_good(r);
        const uint8_t want[] = {0,    0x03, 0,    10,   0x28, 0x1e, 0xff,
                                0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0};
        cr_assert_eq(r->in_len, sizeof(want));
        cr_assert_arr_eq(r->in, want, sizeof(want));
        cr_assert_eq(r->in[5] & 0x18, 0x18, "DPO and FUA usable");
        run_free(r);

        const uint8_t dpofua[] = {0x2a, 0xa8, 0xaa, 0x88, 0x8a, 0x89};
        for (size_t i = 0; i < sizeof(dpofua); i++) {
                c = rsoc(false, 1, dpofua[i], 0, 65535);
                r = run(c.b, 65535, NULL);
                cr_assert_eq(r->in[4], dpofua[i]);
                cr_assert_eq(r->in[5] & 0x18, 0x18);
                run_free(r);
        }
        const uint8_t dpo[] = {0x2f, 0x2e, 0xaf, 0x8f};
        for (size_t i = 0; i < sizeof(dpo); i++) {
                c = rsoc(false, 1, dpo[i], 0, 65535);
                r = run(c.b, 65535, NULL);
                cr_assert_eq(r->in[5] & 0x10, 0x10);
                run_free(r);
        }

        c = rsoc(true, 2, 0x9e, 0x10, 65535); /* with a service action, and timeouts */
        r = run(c.b, 65535, NULL);
        assert_good(r);
        cr_assert_eq(r->in[1], 0x83);
        cr_assert_eq(get16(&r->in[2]), 16);
        cr_assert_eq(r->in[4], 0x9e);
        cr_assert_eq(r->in[5], 0x10);
        cr_assert_eq(r->in_len, 4 + 16 + 12);
        cr_assert_eq(get16(&r->in[20]), 0x0a);
        run_free(r);

        c = rsoc(false, 1, 0x9e, 0x10, 65535); /* needs the service action form */
        r = run(c.b, 65535, NULL);
        assert_invalid_cdb(r, 2, 2);
        run_free(r);
        c = rsoc(false, 2, 0x28, 0, 65535); /* READ 10 has no service actions */
        r = run(c.b, 65535, NULL);
        assert_invalid_cdb(r, 2, 2);
        run_free(r);
        c = rsoc(false, 3, 0x28, 0, 65535);
        r = run(c.b, 65535, NULL);
        assert_good(r);
        cr_assert_eq(r->in[1], 0x03);
        run_free(r);
        c = rsoc(false, 5, 0x28, 0, 65535);
        r = run(c.b, 65535, NULL);
        assert_invalid_cdb(r, 2, 2);
        run_free(r);

        c = rsoc(false, 1, 0x3b, 0, 65535); /* not supported */
        r = run(c.b, 65535, NULL);
        assert_good(r);
        const uint8_t none[] = {0, 0x01, 0, 0};
        cr_assert_eq(r->in_len, 4);
        cr_assert_arr_eq(r->in, none, 4);
        run_free(r);
        c = rsoc(false, 2, 0x9e, 0x11, 65535);
        r = run(c.b, 65535, NULL);
        cr_assert_eq(r->in[1], 0x01);
        run_free(r);
        lun.thin = false;
        c = rsoc(false, 1, 0x42, 0, 65535);
        r = run(c.b, 65535, NULL);
        cr_assert_eq(r->in[1], 0x01, "UNMAP only on thin LUs");
        run_free(r);
}

/* The usage data is also what we accept: every CDB bit outside it is rejected. */
Test(scsi, usage_data_matches_checks)
{
        struct cdb c = rsoc(false, 1, 0x41, 0, 65535);
        struct run *r = run(c.b, 65535, NULL);
        uint8_t usage[16];
        memcpy(usage, &r->in[4], 10);
        run_free(r);
        cr_assert_eq(usage[1], 0x08, "WRITE SAME(10): UNMAP only (no ANCHOR)");
        uint8_t data[BS] = {0};
        c = cdb10(0x41, 0x10, 0, 1); /* ANCHOR */
        r = run(c.b, BS, data);
        assert_invalid_cdb(r, 1, 4);
        run_free(r);
        c = cdb10(0x41, 0x18, 0, 1); /* ANCHOR + UNMAP */
        r = run(c.b, BS, data);
        assert_invalid_cdb(r, 1, 4);
        run_free(r);
}

/* ---------------- WRITE SAME ---------------- */

Test(scsi, write_same_replicates_block)
{
        uint8_t *block = pattern(BS, 5);
        struct cdb c = cdb10(0x41, 0, 20, 7);
        struct run *r = run_on(&lun, c.b, BS, block, 100);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, BS);
        cr_assert_eq(r->cmd.data_out_lun_offset, -1);
        for (int i = 0; i < 7; i++)
                cr_assert_arr_eq(mem->bytes + (20 + i) * BS, block, BS, "block %d", i);
        cr_assert_eq(mem->count[VOLUME_WRITE], 1);
        cr_assert_eq(mem->count[VOLUME_WRITE_ZEROES], 0);
        run_free(r);
        free(block);
}

Test(scsi, write_same_zeroes_and_unmap)
{
        fill_lun();
        uint8_t zero[BS] = {0};
        struct cdb c = cdb16(0x93, 0, 0, 10);
        struct run *r = run(c.b, BS, zero);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_WRITE_ZEROES], 1);
        cr_assert_eq(mem->last.offset, 0);
        cr_assert_eq(mem->last.length, 10 * BS);
        cr_assert(!memcmp(mem->bytes, zero, BS) && !memcmp(mem->bytes + 9 * BS, zero, BS));
        cr_assert_neq(mem->bytes[10 * BS + 1], 0);
        run_free(r);

        c = cdb10(0x41, 0x08, 30, 5); /* UNMAP bit, zero data */
        r = run(c.b, BS, zero);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_WRITE_ZEROES], 2);
        run_free(r);

        uint8_t *block = pattern(BS, 44); /* UNMAP bit with data: still unmapped */
        c = cdb10(0x41, 0x08, 40, 2);
        r = run(c.b, BS, block);
        assert_good(r);
        cr_assert_arr_eq(mem->bytes + 41 * BS, zero, BS);
        cr_assert_eq(mem->count[VOLUME_WRITE_ZEROES], 3);
        cr_assert_eq(mem->count[VOLUME_WRITE], 0);
        run_free(r);
        free(block);

        c = cdb16(0x93, 0x01, 60, 3); /* NDOB: zeroes, no data-out */
        r = run(c.b, 0, NULL);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, 0);
        cr_assert_eq(mem->count[VOLUME_WRITE_ZEROES], 4);
        run_free(r);

        lun.thin = false;
        c = cdb10(0x41, 0x08, 30, 5);
        r = run(c.b, BS, zero);
        assert_invalid_cdb(r, 1, 3);
        run_free(r);
        c = cdb16(0x93, 0, 0, 10); /* plain zeroing works without thin provisioning */
        r = run(c.b, BS, zero);
        assert_good(r);
        run_free(r);
}

Test(scsi, write_same_ranges_and_lengths)
{
        uint8_t zero[BS] = {0};
        struct cdb c = cdb10(0x41, 0, NUM_BLOCKS - 5, 0); /* 0 blocks: to the end */
        struct run *r = run(c.b, BS, zero);
        assert_good(r);
        cr_assert_eq(mem->last.offset, (NUM_BLOCKS - 5) * (uint64_t)BS);
        cr_assert_eq(mem->last.length, 5 * BS);
        run_free(r);
        c = cdb10(0x41, 0, NUM_BLOCKS, 0);
        r = run(c.b, BS, zero);
        assert_good(r);
        run_free(r);
        c = cdb10(0x41, 0, NUM_BLOCKS + 1, 0);
        r = run(c.b, BS, zero);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        c = cdb16(0x93, 0, ~0ull, 1);
        r = run(c.b, BS, zero);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        c = cdb10(0x41, 0, NUM_BLOCKS - 1, 2);
        r = run(c.b, BS, zero);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        c = cdb10(0x41, 0, 0, 1);
        r = run(c.b, BS / 2, zero); /* data-out must be exactly one block */
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        run_free(r);
        r = run(c.b, 2 * BS, zero);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        run_free(r);
}

/* A LUN larger than the memory behind it: lengths beyond the limits and the chunking. */
Test(scsi, write_same_large)
{
        struct mem_backend *big = mem_create(1ull << 40, 8u << 20);
        struct volume *v = volume_create(&big->base);
        struct scsi_lun l;
        lun_setup(&l, v, (1ull << 40) / 4096, 4096);
        uint8_t zero[4096] = {0};
        struct cdb c = cdb16(0x93, 0, 0, 0); /* to the end: beyond MAXIMUM WRITE SAME LENGTH */
        struct run *r = run_on(&l, c.b, 4096, zero, 4096);
        assert_invalid_cdb(r, 10, -1);
        run_free(r);
        c = cdb16(0x93, 0, 0, 0x10000);
        r = run_on(&l, c.b, 4096, zero, 4096);
        assert_invalid_cdb(r, 10, -1);
        run_free(r);
        c = cdb16(0x93, 0, 0, 0xffff); /* 256 MiB of zeroes: 64 MiB pieces */
        r = run_on(&l, c.b, 4096, zero, 4096);
        assert_good(r);
        cr_assert_eq(big->count[VOLUME_WRITE_ZEROES], 4);
        cr_assert_eq(big->last.offset, 3ull * (64u << 20));
        cr_assert_eq(big->last.length, 0xffffull * 4096 - 3ull * (64u << 20));
        run_free(r);

        uint8_t *block = pattern(4096, 12); /* data: 1 MiB pieces from a bounce buffer */
        c = cdb16(0x93, 0, 16, 600);
        r = run_on(&l, c.b, 4096, block, 1000);
        assert_good(r);
        cr_assert_eq(big->count[VOLUME_WRITE], 3);
        for (int i = 0; i < 600; i++)
                cr_assert_arr_eq(big->bytes + (16 + i) * 4096ull, block, 4096, "block %d", i);
        run_free(r);
        free(block);
        volume_destroy(v);
        backend_destroy(&big->base);
}

/* ---------------- UNMAP ---------------- */

static uint8_t *unmap_list(unsigned n, const uint64_t *lba, const uint32_t *nb, uint32_t *len)
{
        *len = 8 + 16 * n;
        uint8_t *p = calloc(1, *len);
        be16(&p[0], (uint16_t)(*len - 2));
        be16(&p[2], (uint16_t)(16 * n));
        for (unsigned i = 0; i < n; i++) {
                be64(&p[8 + 16 * i], lba[i]);
                be32(&p[8 + 16 * i + 8], nb[i]);
        }
        return p;
}

static struct run *run_unmap(struct scsi_lun *l, const uint8_t *list, uint32_t len)
{
        struct cdb c = cdb10(0x42, 0, 0, (uint16_t)len);
        c.b[2] = c.b[3] = c.b[4] = c.b[5] = 0;
        return run_on(l, c.b, len, list, 7);
}

Test(scsi, unmap)
{
        fill_lun();
        const uint64_t lba[] = {10, 100, 200};
        const uint32_t nb[] = {5, 0, 1};
        uint32_t len;
        uint8_t *list = unmap_list(3, lba, nb, &len);
        struct run *r = run_unmap(&lun, list, len);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, len);
        cr_assert_eq(mem->count[VOLUME_UNMAP], 2, "empty descriptors cost nothing");
        uint8_t zero[5 * BS] = {0};
        cr_assert_arr_eq(mem->bytes + 10 * BS, zero, 5 * BS);
        cr_assert_arr_eq(mem->bytes + 200 * BS, zero, BS);
        cr_assert_neq(mem->bytes[15 * BS + 1], 0);
        cr_assert_neq(mem->bytes[9 * BS + 1], 0);
        run_free(r);
        free(list);

        const uint64_t end[] = {NUM_BLOCKS};
        const uint32_t none[] = {0};
        list = unmap_list(1, end, none, &len);
        r = run_unmap(&lun, list, len);
        assert_good(r);
        run_free(r);
        free(list);
        list = unmap_list(0, NULL, NULL, &len);
        r = run_unmap(&lun, list, len);
        assert_good(r);
        run_free(r);
        free(list);
}

Test(scsi, unmap_errors)
{
        fill_lun();
        uint32_t len;
        const uint64_t lba[] = {10, NUM_BLOCKS - 1};
        const uint32_t nb[] = {5, 2};
        uint8_t *list = unmap_list(2, lba, nb, &len);
        struct run *r = run_unmap(&lun, list, len);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        cr_assert_eq(mem->count[VOLUME_UNMAP], 0, "checked whole before unmapping");
        run_free(r);
        free(list);

        struct cdb c = cdb10(0x42, 0, 0, 0); /* parameter list length 0 */
        c.b[2] = c.b[3] = c.b[4] = c.b[5] = 0;
        r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        run_free(r);
        c.b[8] = 4; /* shorter than the header */
        r = run(c.b, 4, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        run_free(r);

        uint64_t many_lba[257];
        uint32_t many_nb[257];
        for (int i = 0; i < 257; i++) {
                many_lba[i] = (uint64_t)i;
                many_nb[i] = 1;
        }
        list = unmap_list(257, many_lba, many_nb, &len);
        r = run_unmap(&lun, list, len);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        assert_field(r, false, 2, -1);
        run_free(r);
        free(list);
        list = unmap_list(256, many_lba, many_nb, &len);
        r = run_unmap(&lun, list, len);
        assert_good(r);
        run_free(r);
        free(list);

        /* a descriptor length beyond the list is cut; a partial descriptor is ignored */
        list = unmap_list(1, lba, nb, &len);
        be16(&list[2], 40);
        r = run_unmap(&lun, list, len);
        assert_good(r);
        run_free(r);
        r = run_unmap(&lun, list, len - 1);
        assert_good(r);
        run_free(r);
        free(list);

        c.b[1] = 0x01; /* ANCHOR */
        c.b[8] = 24;
        r = run(c.b, 24, NULL);
        assert_invalid_cdb(r, 1, 0);
        run_free(r);

        lun.thin = false;
        list = unmap_list(1, lba, nb, &len);
        r = run_unmap(&lun, list, len);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        run_free(r);
        free(list);
}

Test(scsi, unmap_large_is_split)
{
        struct mem_backend *big = mem_create(1ull << 40, 1u << 20);
        struct volume *v = volume_create(&big->base);
        struct scsi_lun l;
        lun_setup(&l, v, (1ull << 40) / 4096, 4096);
        const uint64_t lba[] = {1000, 5000000};
        const uint32_t nb[] = {0x80000, 0x80000}; /* 2 GiB each, 1M blocks in total */
        uint32_t len;
        uint8_t *list = unmap_list(2, lba, nb, &len);
        struct run *r = run_unmap(&l, list, len);
        assert_good(r);
        cr_assert_eq(big->count[VOLUME_UNMAP], 2 * 32, "64 MiB pieces");
        cr_assert_eq(big->last.offset + big->last.length, (5000000ull + 0x80000) * 4096);
        run_free(r);
        free(list);
        const uint32_t too_many[] = {0x80000, 0x80001};
        list = unmap_list(2, lba, too_many, &len);
        r = run_unmap(&l, list, len);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        assert_field(r, false, 8 + 16 + 8, -1);
        run_free(r);
        free(list);
        volume_destroy(v);
        backend_destroy(&big->base);
}

/* ---------------- COMPARE AND WRITE ---------------- */

static struct cdb caw(uint64_t lba, uint8_t n, uint8_t b1)
{
        struct cdb c = {{0x89, b1}};
        be64(&c.b[2], lba);
        c.b[13] = n;
        return c;
}

Test(scsi, compare_and_write_match)
{
        fill_lun();
        uint32_t n = 3, len = n * BS;
        uint8_t *data = malloc(2 * len);
        memcpy(data, mem->bytes + 7 * BS, len);
        uint8_t *newdata = pattern(len, 99);
        memcpy(data + len, newdata, len);
        struct cdb c = caw(7, (uint8_t)n, 0x08);
        struct run *r = run_on(&lun, c.b, 2 * len, data, 300);
        assert_good(r);
        cr_assert_eq(r->cmd.data_out_len, 2 * len);
        cr_assert_eq(r->cmd.data_out_lun_offset, -1);
        cr_assert_arr_eq(mem->bytes + 7 * BS, newdata, len);
        cr_assert(mem->last.fua);
        cr_assert_eq(mem->count[VOLUME_READ], 1);
        cr_assert_eq(mem->count[VOLUME_WRITE], 1);
        run_free(r);
        free(data);
        free(newdata);
}

Test(scsi, compare_and_write_miscompare_writes_nothing)
{
        fill_lun();
        uint32_t n = 2, len = n * BS;
        uint8_t *data = malloc(2 * len);
        memcpy(data, mem->bytes + 7 * BS, len);
        data[len - 27] ^= 0x55;
        memset(data + len, 'B', len);
        uint8_t before[2 * BS];
        memcpy(before, mem->bytes + 7 * BS, len);
        struct cdb c = caw(7, (uint8_t)n, 0);
        struct run *r = run_on(&lun, c.b, 2 * len, data, 100);
        assert_sense(r, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
        cr_assert_eq(info(r), len - 27);
        cr_assert_arr_eq(mem->bytes + 7 * BS, before, len);
        cr_assert_eq(mem->count[VOLUME_WRITE], 0);
        run_free(r);
        free(data);
}

Test(scsi, compare_and_write_checks)
{
        uint8_t data[2 * BS] = {0};
        struct cdb c = caw(0, 0, 0); /* no blocks: nothing to do */
        struct run *r = run(c.b, 0, NULL);
        cr_assert_eq(r->prep, SCSI_CMD_COMPLETE);
        assert_good(r);
        run_free(r);
        r = run(c.b, 512 * BS, NULL); /* but a data-out that does not match */
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        run_free(r);
        c = caw(0, 1, 0);
        r = run(c.b, 4 * BS, NULL);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        run_free(r);
        r = run(c.b, BS, data);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        run_free(r);
        c = caw(NUM_BLOCKS, 1, 0);
        r = run(c.b, 2 * BS, data);
        assert_sense(r, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        run_free(r);
        c = caw(NUM_BLOCKS - 1, 1, 0x10); /* DPO, last block */
        r = run(c.b, 2 * BS, data);
        assert_good(r);
        run_free(r);
        lun.max_xfer_blocks = 8;
        c = caw(0, 5, 0);
        r = run(c.b, 10 * BS, NULL);
        assert_invalid_cdb(r, 13, -1);
        run_free(r);
}

/* With 8 logical blocks per physical block, unmaps need not be aligned to physical blocks
 * (they read back as zeroes all the same: LBPRZ), and the data-out of WRITE SAME and
 * COMPARE AND WRITE must still match the CDB exactly (iscsi-test-cu's UnmapUnaligned and
 * InvalidDataOutSize, which only run on such a LU). */
Test(scsi, unaligned_to_physical_block)
{
        lun.physical_block_size = 4096;
        uint8_t *block = pattern(BS, 3);
        uint8_t zero[8 * BS] = {0};
        for (uint32_t i = 1; i < 8; i++) {
                fill_lun();
                struct cdb c = i % 2 ? cdb10(0x41, 0x08, i, (uint16_t)(8 - i))
                                     : cdb16(0x93, 0x08, i, 8 - i); /* UNMAP bit */
                struct run *r = run(c.b, BS, block);
                assert_good(r);
                cr_assert_arr_eq(mem->bytes + i * BS, zero, (8 - i) * BS, "LBA %u", i);
                cr_assert_neq(mem->bytes[(i - 1) * BS + 1], 0, "block before, LBA %u", i);
                cr_assert_neq(mem->bytes[8 * BS + 1], 0, "next physical block, LBA %u", i);
                run_free(r);
        }
        free(block);

        fill_lun();
        const uint64_t lba[] = {3, 13};
        const uint32_t nb[] = {2, 6};
        uint32_t len;
        uint8_t *list = unmap_list(2, lba, nb, &len);
        struct run *r = run_unmap(&lun, list, len);
        assert_good(r);
        cr_assert_arr_eq(mem->bytes + 3 * BS, zero, 2 * BS);
        cr_assert_arr_eq(mem->bytes + 13 * BS, zero, 6 * BS);
        cr_assert_neq(mem->bytes[5 * BS + 1], 0);
        cr_assert_neq(mem->bytes[12 * BS + 1], 0);
        run_free(r);
        free(list);

        uint8_t data[4 * BS] = {0};
        const uint32_t ws_edtl[] = {BS / 2, 2 * BS};
        for (int k = 0; k < 2; k++) {
                struct cdb c = cdb10(0x41, 0x08, 0, 1);
                r = run(c.b, ws_edtl[k], data);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                run_free(r);
                c = cdb16(0x93, 0x08, 0, 1);
                r = run(c.b, ws_edtl[k], data);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                run_free(r);
        }
        const uint8_t caw_blocks[] = {1, 3}; /* 4 blocks of data-out: too much, too little */
        for (int k = 0; k < 2; k++) {
                struct cdb c = caw(0, caw_blocks[k], 0);
                r = run(c.b, 4 * BS, data);
                assert_sense(r, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                cr_assert_eq(mem->count[VOLUME_WRITE], 0);
                run_free(r);
        }
}

Test(scsi, compare_and_write_serialised)
{
        mem->async = true;
        memset(mem->bytes, 'A', BS);
        uint8_t a[2 * BS], b[2 * BS];
        memset(a, 'A', BS);
        memset(a + BS, 'B', BS);
        memset(b, 'B', BS); /* expects what the first one writes */
        memset(b + BS, 'C', BS);
        struct cdb c = caw(0, 1, 0);
        struct run *ra = run_start(&lun, c.b, 2 * BS, a, 512);
        struct run *rb = run_start(&lun, c.b, 2 * BS, b, 512);
        cr_assert_eq(mem->npending, 1, "the second waits for the first");
        cr_assert_eq(mem->count[VOLUME_READ], 1);
        cr_assert_eq(ra->done_calls + rb->done_calls, 0);
        mem_run(mem);
        cr_assert_eq(ra->done_calls, 1);
        cr_assert_eq(rb->done_calls, 1);
        assert_good(ra);
        assert_good(rb);
        cr_assert_eq(mem->bytes[0], 'C');
        cr_assert_eq(mem->count[VOLUME_READ], 2);
        cr_assert_eq(mem->count[VOLUME_WRITE], 2);
        cr_assert_not(lun.caw.busy, "the LU is free again");
        run_free(ra);
        run_free(rb);
        /* a miscompare releases the LU too */
        struct run *rc = run_start(&lun, c.b, 2 * BS, a, 512);
        struct run *rd = run_start(&lun, c.b, 2 * BS, b, 512);
        mem_run(mem);
        assert_sense(rc, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
        assert_sense(rd, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
        cr_assert_not(lun.caw.busy);
        run_free(rc);
        run_free(rd);
}

/* ---------------- volume errors and completion paths ---------------- */

Test(scsi, volume_errors)
{
        struct {
                enum volume_op op;
                int err;
                uint8_t status, key;
                uint16_t asc;
        } cases[] = {
            {VOLUME_READ, -EIO, SCSI_STATUS_CHECK_CONDITION, SK_MEDIUM_ERROR, 0x1100},
            {VOLUME_WRITE, -EIO, SCSI_STATUS_CHECK_CONDITION, SK_MEDIUM_ERROR, 0x0c00},
            {VOLUME_READ, -EINVAL, SCSI_STATUS_CHECK_CONDITION, SK_HARDWARE_ERROR, 0x4400},
            {VOLUME_WRITE, -ENOSPC, SCSI_STATUS_CHECK_CONDITION, SK_DATA_PROTECT, 0x2707},
            {VOLUME_WRITE, -EAGAIN, SCSI_STATUS_BUSY, 0, 0},
        };
        uint8_t data[BS] = {1};
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                mem->fail_op = cases[i].op;
                mem->fail_err = cases[i].err;
                struct cdb c = cdb10(cases[i].op == VOLUME_READ ? 0x28 : 0x2a, 0, 0, 1);
                struct run *r = run(c.b, BS, data);
                cr_assert_eq(r->cmd.status, cases[i].status, "case %zu", i);
                if (cases[i].status == SCSI_STATUS_CHECK_CONDITION)
                        assert_sense(r, cases[i].key, cases[i].asc);
                else
                        cr_assert_eq(r->cmd.sense_len, 0);
                cr_assert_eq(r->cmd.data_in_actual, 0);
                run_free(r);
        }
        /* mid-way through a chunked command */
        mem->fail_op = VOLUME_UNMAP;
        mem->fail_err = -EIO;
        const uint64_t lba[] = {0, 10};
        const uint32_t nb[] = {1, 1};
        uint32_t len;
        uint8_t *list = unmap_list(2, lba, nb, &len);
        struct run *r = run_unmap(&lun, list, len);
        assert_sense(r, SK_MEDIUM_ERROR, ASC_WRITE_ERROR);
        cr_assert_eq(mem->count[VOLUME_UNMAP], 1, "stops at the first error");
        run_free(r);
        free(list);
        mem->fail_op = VOLUME_READ;
        mem->fail_err = -EIO;
        struct cdb c = caw(0, 1, 0);
        uint8_t two[2 * BS] = {0};
        r = run(c.b, 2 * BS, two);
        assert_sense(r, SK_MEDIUM_ERROR, ASC_UNRECOVERED_READ_ERROR);
        cr_assert_not(lun.caw.busy);
        run_free(r);
}

Test(scsi, deferred_completions)
{
        mem->async = true;
        uint8_t *data = pattern(4 * BS, 31);
        struct cdb c = cdb10(0x2a, 0, 0, 4);
        struct run *r = run_start(&lun, c.b, 4 * BS, data, 1000);
        cr_assert_eq(r->done_calls, 0, "waits for the volume");
        run_wait(r);
        assert_good(r);
        run_free(r);
        c = cdb10(0x28, 0, 0, 4);
        r = run_start(&lun, c.b, 4 * BS, NULL, 1000);
        cr_assert_eq(r->done_calls, 0);
        run_wait(r);
        cr_assert_arr_eq(r->in, data, 4 * BS);
        run_free(r);
        /* a chunked command makes progress from the completion callbacks */
        c = cdb16(0x93, 0, 0, 3000);
        r = run_start(&lun, c.b, BS, data, BS);
        cr_assert_eq(r->done_calls, 0);
        run_wait(r);
        assert_good(r);
        cr_assert_eq(mem->count[VOLUME_WRITE], 1 + 2);
        cr_assert_arr_eq(mem->bytes + 2999 * BS, data, BS);
        run_free(r);
        free(data);
}

/* Inline completions of a long chunked command loop rather than recurse. */
Test(scsi, inline_completions_do_not_recurse)
{
        struct mem_backend *big = mem_create(1ull << 40, 1u << 20);
        struct volume *v = volume_create(&big->base);
        struct scsi_lun l;
        lun_setup(&l, v, (1ull << 40) / 512, 512);
        uint64_t lba[256];
        uint32_t nb[256];
        for (int i = 0; i < 256; i++) {
                lba[i] = (uint64_t)i * 8192;
                nb[i] = 4096;
        }
        uint32_t len;
        uint8_t *list = unmap_list(256, lba, nb, &len);
        struct run *r = run_unmap(&l, list, len);
        assert_good(r);
        cr_assert_eq(big->count[VOLUME_UNMAP], 256, "%u unmaps", big->count[VOLUME_UNMAP]);
        run_free(r);
        free(list);
        volume_destroy(v);
        backend_destroy(&big->base);
}

Test(scsi, execute_without_prepare_fails_cleanly)
{
        struct run *r = calloc(1, sizeof(*r));
        scsi_cmd_init(&r->cmd);
        r->cmd.lun = &lun;
        r->cmd.done = on_done;
        r->cmd.priv = r;
        scsi_cmd_execute(&r->cmd);
        cr_assert_eq(r->done_calls, 1);
        assert_sense(r, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
        run_free(r);
}

Test(scsi, release_after_prepare_only)
{
        struct cdb c = inquiry(true, 0x83, 255);
        struct scsi_cmd cmd;
        scsi_cmd_init(&cmd);
        cmd.lun = &lun;
        memcpy(cmd.cdb, c.b, 16);
        cmd.edtl = 255;
        cr_assert_eq(scsi_cmd_prepare(&cmd), SCSI_CMD_READY);
        scsi_cmd_release(&cmd); /* abandoned: frees the prepared response */
        scsi_cmd_release(&cmd); /* and is idempotent */
}
