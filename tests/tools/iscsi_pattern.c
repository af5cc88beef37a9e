/* iscsi_pattern: data-integrity test client (synchronous libiscsi).
 *
 * Writes distinct per-block patterns at many offsets and sizes (one block up to --max-size,
 * aligned and misaligned to 32 KiB, in a random order fixed by --seed) and
 *   1. reads every write back at once and compares byte for byte,
 *   2. checks that the --guard blocks before and after each write did not change,
 *   3. at the end re-reads every case and compares it with what the last write covering each
 *      block put there (catches later writes spilling over earlier ones, lost writes).
 * Exit status 0 only if every byte matched. Last line: "pattern: N passed, M failed".
 *
 * libiscsi 1.19 always offers MaxRecvDataSegmentLength=262144 and has no call to change it;
 * the size of the Data-Out PDUs it sends is bounded by the *target's* declared
 * MaxRecvDataSegmentLength, so small segments are forced on the target side (for tgt:
 * TGT_PARAMS in scripts/lib-tgt.sh). ImmediateData, InitialR2T and HeaderDigest can be forced
 * here.
 *
 * A synchronous libiscsi call that returns no task at all leaves the context unusable: over
 * iSER (libiscsi 1.19) a command it could not send stays on the context's wait list after
 * being freed (iscsi_iser_queue_pdu links it before sending, iscsi_scsi_command_async frees
 * it when sending fails), and a command lost in the event loop keeps a pointer into the
 * caller's stack. Any later call on the context (another command, logout, destroy) walks that
 * list and crashes, so after such a failure the run stops and the context is left alone. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The project root is on the include path and has its own iscsi/iscsi.h. */
#if __has_include("/usr/include/iscsi/iscsi.h")
#include "/usr/include/iscsi/iscsi.h"
#include "/usr/include/iscsi/scsi-lowlevel.h"
#else
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#endif

#define PAT_MAGIC        0x4953475750415454ull /* "ISGWPATT" */
#define ALIGN_BYTES      32768u
#define DEFAULT_MAX_SIZE (16u << 20)
#define DEFAULT_RANGE    (256ull << 20)
#define MAX_FAIL_REPORTS 20

struct pat_opts {
        const char *url;
        const char *initiator;
        uint64_t max_size;
        uint64_t range;
        uint64_t seed;
        int count;
        int guard;
        int immediate_data; /* -1: libiscsi default */
        int initial_r2t;    /* -1: libiscsi default */
        int header_digest;  /* -1: libiscsi default */
        bool verbose;
};

struct pat_case {
        uint64_t lba;
        uint32_t nblocks;
        bool failed;
};

struct pat_run {
        const struct pat_opts *o;
        struct iscsi_context *ctx;
        bool ctx_dead; /* a call returned no task: never touch ctx again (see the top) */
        int lun;
        uint32_t blksz;
        uint64_t lun_blocks;
        uint64_t range_blocks;
        uint32_t max_blocks;
        uint32_t align_blocks;
        uint64_t rng;
        uint64_t nonce;  /* differs between runs, so stale data from an earlier run never matches */
        uint32_t *model; /* per block: index + 1 of the last case that wrote it (0: none) */
        struct pat_case *cases;
        unsigned char *wbuf;   /* max_blocks */
        unsigned char *guards; /* 2 * guard blocks, captured before a write */
        unsigned char *expect; /* one block */
        int reports;
};

/* ---------------- helpers ---------------- */

/* The task of a synchronous call; a NULL one marks the context dead. */
static struct scsi_task *sync_task(struct pat_run *r, struct scsi_task *t)
{
        if (!t)
                r->ctx_dead = true;
        return t;
}

static uint64_t splitmix64(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* Uniform in [lo, hi] (hi >= lo). */
static uint64_t rnd_range(struct pat_run *r, uint64_t lo, uint64_t hi)
{
        return lo + splitmix64(&r->rng) % (hi - lo + 1);
}

static void put64(unsigned char *p, uint64_t v)
{
        memcpy(p, &v, sizeof(v));
}

static uint64_t case_gen(const struct pat_run *r, uint32_t case_no)
{
        return (r->nonce << 32) ^ ((uint64_t)case_no + 1);
}

/* Block lba as written by case case_no: header (magic, lba, generation, ~sum) + filler. */
static void fill_block(const struct pat_run *r, unsigned char *blk, uint64_t lba, uint32_t case_no)
{
        uint64_t gen = case_gen(r, case_no);
        uint64_t acc = (lba * 0x9e3779b97f4a7c15ull) ^ (gen * 0xc2b2ae3d27d4eb4full);
        put64(blk, PAT_MAGIC);
        put64(blk + 8, lba);
        put64(blk + 16, gen);
        put64(blk + 24, ~(PAT_MAGIC ^ lba ^ gen));
        for (uint32_t off = 32; off + 8 <= r->blksz; off += 8) {
                acc += 0x165667b19e3779f9ull;
                put64(blk + off, acc ^ (acc >> 29) ^ off);
        }
}

static void fill_case(const struct pat_run *r, uint32_t case_no)
{
        const struct pat_case *c = &r->cases[case_no];
        for (uint32_t i = 0; i < c->nblocks; i++)
                fill_block(r, r->wbuf + (size_t)i * r->blksz, c->lba + i, case_no);
}

/* ---------------- options ---------------- */

static int parse_size(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        unsigned shift = 0;
        if (errno || end == s || s[0] == '-')
                return -1;
        switch (*end) {
        case 'k':
        case 'K':
                shift = 10;
                end++;
                break;
        case 'm':
        case 'M':
                shift = 20;
                end++;
                break;
        case 'g':
        case 'G':
                shift = 30;
                end++;
                break;
        default:
                break;
        }
        if (*end && strcasecmp(end, "b") && strcasecmp(end, "ib"))
                return -1;
        *out = (uint64_t)v << shift;
        return 0;
}

static int parse_yes_no(const char *s)
{
        if (!strcasecmp(s, "yes") || !strcmp(s, "1"))
                return 1;
        if (!strcasecmp(s, "no") || !strcmp(s, "0"))
                return 0;
        return -2;
}

static int parse_digest(const char *s)
{
        if (!strcasecmp(s, "none"))
                return ISCSI_HEADER_DIGEST_NONE;
        if (!strcasecmp(s, "crc32c"))
                return ISCSI_HEADER_DIGEST_CRC32C;
        return -2;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: iscsi_pattern [options] iscsi://HOST:PORT/IQN/LUN\n"
                "  --url URL              target LUN (or the last argument)\n"
                "  --max-size SIZE        largest write (default 16M; capped by the LUN's Block\n"
                "                         Limits maximum transfer length)\n"
                "  --count N              number of write cases (default 100)\n"
                "  --seed N               random seed (default 1)\n"
                "  --range SIZE           use the first SIZE bytes of the LUN (default 256M or\n"
                "                         4 x max-size, whichever is larger, capped at the LUN)\n"
                "  --guard N              blocks checked on each side of a write (default 8)\n"
                "  --initiator-name IQN   (default iqn.2024-01.org.isergw:pattern)\n"
                "  --immediate-data yes|no   ask for ImmediateData (libiscsi default: yes)\n"
                "  --initial-r2t yes|no      ask for InitialR2T (libiscsi default: no)\n"
                "  --header-digest none|crc32c   (libiscsi default: offer None,CRC32C)\n"
                "  --verbose              print every case\n"
                "Small MaxRecvDataSegmentLength cannot be requested with libiscsi 1.19; set it on\n"
                "the target. Exit status: 0 all data matched, 1 mismatch or error, 2 usage.\n");
}

static const struct option long_opts[] = {
    {"url", required_argument, NULL, 'u'},
    {"max-size", required_argument, NULL, 'M'},
    {"count", required_argument, NULL, 'c'},
    {"seed", required_argument, NULL, 's'},
    {"range", required_argument, NULL, 'r'},
    {"guard", required_argument, NULL, 'g'},
    {"initiator-name", required_argument, NULL, 'i'},
    {"immediate-data", required_argument, NULL, 'I'},
    {"initial-r2t", required_argument, NULL, 'R'},
    {"header-digest", required_argument, NULL, 'H'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Returns 0 if the option was valid. */
static int apply_opt(struct pat_opts *o, int c, const char *a)
{
        switch (c) {
        case 'u':
                o->url = a;
                return 0;
        case 'M':
                return parse_size(a, &o->max_size) || o->max_size == 0 ? -1 : 0;
        case 'c':
                o->count = atoi(a);
                return o->count > 0 ? 0 : -1;
        case 's':
                return sscanf(a, "%" SCNu64, &o->seed) == 1 ? 0 : -1;
        case 'r':
                return parse_size(a, &o->range);
        case 'g':
                o->guard = atoi(a);
                return o->guard >= 0 && o->guard <= 1024 ? 0 : -1;
        case 'i':
                o->initiator = a;
                return 0;
        case 'I':
                o->immediate_data = parse_yes_no(a);
                return o->immediate_data < -1 ? -1 : 0;
        case 'R':
                o->initial_r2t = parse_yes_no(a);
                return o->initial_r2t < -1 ? -1 : 0;
        case 'H':
                o->header_digest = parse_digest(a);
                return o->header_digest < -1 ? -1 : 0;
        case 'v':
                o->verbose = true;
                return 0;
        default:
                return -1;
        }
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(struct pat_opts *o, int argc, char **argv)
{
        int c;
        *o = (struct pat_opts){.initiator = "iqn.2024-01.org.isergw:pattern",
                               .max_size = DEFAULT_MAX_SIZE,
                               .seed = 1,
                               .count = 100,
                               .guard = 8,
                               .immediate_data = -1,
                               .initial_r2t = -1,
                               .header_digest = -1};
        while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        return 1;
                }
                if (c == '?' || apply_opt(o, c, optarg)) {
                        usage(stderr);
                        return -1;
                }
        }
        if (optind < argc && !o->url)
                o->url = argv[optind++];
        if (!o->url || optind < argc) {
                usage(stderr);
                return -1;
        }
        return 0;
}

/* ---------------- connection and LUN geometry ---------------- */

static void apply_login_opts(struct pat_run *r)
{
        const struct pat_opts *o = r->o;
        iscsi_set_session_type(r->ctx, ISCSI_SESSION_NORMAL);
        iscsi_set_noautoreconnect(r->ctx, 1);
        if (o->immediate_data >= 0)
                iscsi_set_immediate_data(r->ctx, o->immediate_data ? ISCSI_IMMEDIATE_DATA_YES
                                                                   : ISCSI_IMMEDIATE_DATA_NO);
        if (o->initial_r2t >= 0)
                iscsi_set_initial_r2t(r->ctx, o->initial_r2t ? ISCSI_INITIAL_R2T_YES
                                                             : ISCSI_INITIAL_R2T_NO);
        if (o->header_digest >= 0)
                iscsi_set_header_digest(r->ctx, (enum iscsi_header_digest)o->header_digest);
}

static int connect_lun(struct pat_run *r)
{
        r->ctx = iscsi_create_context(r->o->initiator);
        if (!r->ctx)
                return -1;
        struct iscsi_url *u = iscsi_parse_full_url(r->ctx, r->o->url);
        if (!u) {
                fprintf(stderr, "iscsi_pattern: bad URL: %s\n", iscsi_get_error(r->ctx));
                return -1;
        }
        r->lun = u->lun;
        apply_login_opts(r);
        int rc = iscsi_full_connect_sync(r->ctx, u->portal, u->lun);
        if (rc)
                fprintf(stderr, "iscsi_pattern: login to %s failed: %s\n", u->portal,
                        iscsi_get_error(r->ctx));
        iscsi_destroy_url(u);
        return rc ? -1 : 0;
}

static int read_capacity(struct pat_run *r)
{
        struct scsi_task *t = sync_task(r, iscsi_readcapacity16_sync(r->ctx, r->lun));
        struct scsi_readcapacity16 *rc16 = NULL;
        if (t && t->status == SCSI_STATUS_GOOD)
                rc16 = scsi_datain_unmarshall(t);
        if (rc16 && rc16->block_length >= 64 && !(rc16->block_length & 7)) {
                r->blksz = rc16->block_length;
                r->lun_blocks = rc16->returned_lba + 1;
        }
        if (t)
                scsi_free_scsi_task(t);
        if (!r->blksz)
                fprintf(stderr, "iscsi_pattern: READ CAPACITY(16) failed: %s\n",
                        iscsi_get_error(r->ctx));
        return r->blksz ? 0 : -1;
}

/* Maximum transfer length from the Block Limits VPD page; 0 if none. */
static uint32_t max_transfer_blocks(struct pat_run *r)
{
        struct scsi_task *t = sync_task(
            r, iscsi_inquiry_sync(r->ctx, r->lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255));
        uint32_t max = 0;
        if (t && t->status == SCSI_STATUS_GOOD) {
                struct scsi_inquiry_block_limits *bl = scsi_datain_unmarshall(t);
                if (bl)
                        max = bl->max_xfer_len;
        }
        if (t)
                scsi_free_scsi_task(t);
        return max;
}

static int setup_geometry(struct pat_run *r)
{
        const struct pat_opts *o = r->o;
        uint64_t max_blocks = o->max_size / r->blksz, xfer = max_transfer_blocks(r);
        if (r->ctx_dead) {
                fprintf(stderr, "iscsi_pattern: INQUIRY (Block Limits) failed: %s\n",
                        iscsi_get_error(r->ctx));
                return -1;
        }
        if (max_blocks == 0)
                max_blocks = 1;
        if (xfer && max_blocks > xfer) {
                printf("iscsi_pattern: max size capped at the LUN's maximum transfer length of "
                       "%" PRIu64 " blocks\n",
                       xfer);
                max_blocks = xfer;
        }
        uint64_t range = o->range ? o->range : DEFAULT_RANGE;
        if (!o->range && range < 4 * max_blocks * r->blksz)
                range = 4 * max_blocks * r->blksz;
        r->range_blocks = range / r->blksz < r->lun_blocks ? range / r->blksz : r->lun_blocks;
        if (r->range_blocks < max_blocks + 2 * (uint64_t)o->guard) {
                fprintf(stderr,
                        "iscsi_pattern: range of %" PRIu64 " blocks is too small for writes "
                        "of %" PRIu64 " blocks\n",
                        r->range_blocks, max_blocks);
                return -1;
        }
        r->max_blocks = (uint32_t)max_blocks;
        r->align_blocks = ALIGN_BYTES > r->blksz ? ALIGN_BYTES / r->blksz : 1;
        return 0;
}

static int alloc_buffers(struct pat_run *r)
{
        size_t g = (size_t)(2 * r->o->guard + 1) * r->blksz;
        r->model = calloc(r->range_blocks, sizeof(*r->model));
        r->cases = calloc((size_t)r->o->count, sizeof(*r->cases));
        r->wbuf = malloc((size_t)r->max_blocks * r->blksz);
        r->guards = malloc(g);
        r->expect = malloc(r->blksz);
        return (r->model && r->cases && r->wbuf && r->guards && r->expect) ? 0 : -1;
}

/* ---------------- planning the cases ---------------- */

static uint32_t pick_size(struct pat_run *r)
{
        uint32_t a = r->align_blocks, m = r->max_blocks,
                 k = m / a ? (uint32_t)rnd_range(r, 1, m / a) : 0;
        uint32_t n;
        switch (rnd_range(r, 0, 7)) {
        case 0:
                n = 1;
                break;
        case 1:
                n = (uint32_t)rnd_range(r, 1, 64);
                break;
        case 2:
                n = k * a;
                break;
        case 3:
                n = k * a + 1;
                break;
        case 4:
                n = k * a - 1;
                break;
        case 5:
                n = (uint32_t)rnd_range(r, 1, m);
                break;
        case 6:
                n = m;
                break;
        default:
                n = (uint32_t)rnd_range(r, 1, 4 * a);
                break;
        }
        return n < 1 ? 1 : n > m ? m : n;
}

/* Aligned to 32 KiB, one to (align - 1) blocks past it, or ending on it. */
static uint64_t pick_lba(struct pat_run *r, uint32_t n)
{
        uint64_t last = r->range_blocks - n, a = r->align_blocks;
        uint64_t base = rnd_range(r, 0, last / a) * a, lba = base;
        switch (rnd_range(r, 0, 2)) {
        case 0:
                break;
        case 1:
                lba = base + (a > 1 ? rnd_range(r, 1, a - 1) : 0);
                break;
        default:
                lba = base + a > n ? base + a - n : base;
                break;
        }
        return lba > last ? last : lba;
}

static void set_case(struct pat_run *r, int i, uint64_t lba, uint32_t n)
{
        if (n > r->max_blocks)
                n = r->max_blocks;
        if (lba + n > r->range_blocks)
                lba = r->range_blocks - n;
        r->cases[i].lba = lba;
        r->cases[i].nblocks = n;
}

/* A few fixed edge cases, the rest random; then shuffled. */
static void plan_cases(struct pat_run *r)
{
        int n = r->o->count;
        uint32_t a = r->align_blocks, m = r->max_blocks;
        for (int i = 0; i < n; i++) {
                uint32_t sz = pick_size(r);
                set_case(r, i, pick_lba(r, sz), sz);
        }
        if (n > 0)
                set_case(r, 0, 0, 1);
        if (n > 1)
                set_case(r, 1, a, m);
        if (n > 2)
                set_case(r, 2, a + 1, m);
        if (n > 3)
                set_case(r, 3, 2 * a - 1, a + 2);
        for (int i = n - 1; i > 0; i--) {
                int j = (int)rnd_range(r, 0, (uint64_t)i);
                struct pat_case t = r->cases[i];
                r->cases[i] = r->cases[j];
                r->cases[j] = t;
        }
}

/* ---------------- I/O ---------------- */

static int do_write(struct pat_run *r, uint64_t lba, uint32_t n)
{
        if (r->ctx_dead)
                return -1;
        struct scsi_task *t =
            sync_task(r, iscsi_write16_sync(r->ctx, r->lun, lba, r->wbuf, n * r->blksz,
                                            (int)r->blksz, 0, 0, 0, 0, 0));
        int ok = t && t->status == SCSI_STATUS_GOOD;
        if (!ok)
                fprintf(stderr,
                        "iscsi_pattern: WRITE(16) LBA %" PRIu64 " +%" PRIu32 " failed: %s\n", lba,
                        n, iscsi_get_error(r->ctx));
        if (t)
                scsi_free_scsi_task(t);
        return ok ? 0 : -1;
}

/* Reads n blocks at lba; returns the task (caller frees) or NULL. */
static struct scsi_task *do_read(struct pat_run *r, uint64_t lba, uint32_t n)
{
        if (r->ctx_dead)
                return NULL;
        struct scsi_task *t = sync_task(
            r, iscsi_read16_sync(r->ctx, r->lun, lba, n * r->blksz, (int)r->blksz, 0, 0, 0, 0, 0));
        if (t && t->status == SCSI_STATUS_GOOD && t->datain.size == (int)(n * r->blksz))
                return t;
        fprintf(stderr, "iscsi_pattern: READ(16) LBA %" PRIu64 " +%" PRIu32 " failed: %s\n", lba, n,
                t && t->status == SCSI_STATUS_GOOD ? "short read" : iscsi_get_error(r->ctx));
        if (t)
                scsi_free_scsi_task(t);
        return NULL;
}

static void report(struct pat_run *r, int case_no, const char *what, uint64_t lba, size_t off)
{
        const struct pat_case *c = &r->cases[case_no];
        if (r->reports++ >= MAX_FAIL_REPORTS)
                return;
        printf("FAIL case %d (LBA %" PRIu64 " +%" PRIu32 " blocks): %s at LBA %" PRIu64
               ", byte %zu of the block\n",
               case_no, c->lba, c->nblocks, what, lba, off);
}

static size_t first_diff(const unsigned char *a, const unsigned char *b, size_t len)
{
        size_t i = 0;
        while (i < len && a[i] == b[i])
                i++;
        return i;
}

/* Compare data read at lba with the write buffer (what this case just wrote). */
static int check_readback(struct pat_run *r, int case_no, const unsigned char *got)
{
        const struct pat_case *c = &r->cases[case_no];
        size_t len = (size_t)c->nblocks * r->blksz;
        if (memcmp(got, r->wbuf, len) == 0)
                return 0;
        size_t d = first_diff(got, r->wbuf, len);
        report(r, case_no, "read-back differs", c->lba + d / r->blksz, d % r->blksz);
        return -1;
}

/* ---------------- guards ---------------- */

struct guard_span {
        uint64_t lba;
        uint32_t n;
};

static void guard_spans(const struct pat_run *r, const struct pat_case *c,
                        struct guard_span *before, struct guard_span *after)
{
        uint64_t g = (uint64_t)r->o->guard, end = c->lba + c->nblocks;
        before->lba = c->lba > g ? c->lba - g : 0;
        before->n = (uint32_t)(c->lba - before->lba);
        after->lba = end;
        after->n = (uint32_t)(end + g <= r->lun_blocks ? g : r->lun_blocks - end);
}

static int read_span(struct pat_run *r, const struct guard_span *s, unsigned char *dst)
{
        if (s->n == 0)
                return 0;
        struct scsi_task *t = do_read(r, s->lba, s->n);
        if (!t)
                return -1;
        memcpy(dst, t->datain.data, (size_t)s->n * r->blksz);
        scsi_free_scsi_task(t);
        return 0;
}

static int capture_guards(struct pat_run *r, const struct pat_case *c)
{
        struct guard_span b, a;
        guard_spans(r, c, &b, &a);
        return read_span(r, &b, r->guards) ||
               read_span(r, &a, r->guards + (size_t)r->o->guard * r->blksz);
}

static int check_span(struct pat_run *r, int case_no, const struct guard_span *s,
                      const unsigned char *saved)
{
        if (s->n == 0)
                return 0;
        struct scsi_task *t = do_read(r, s->lba, s->n);
        if (!t)
                return -1;
        size_t len = (size_t)s->n * r->blksz, d = first_diff(t->datain.data, saved, len);
        scsi_free_scsi_task(t);
        if (d == len)
                return 0;
        report(r, case_no, "neighbouring block changed", s->lba + d / r->blksz, d % r->blksz);
        return -1;
}

static int check_guards(struct pat_run *r, int case_no)
{
        struct guard_span b, a;
        guard_spans(r, &r->cases[case_no], &b, &a);
        int rb = check_span(r, case_no, &b, r->guards);
        int ra = check_span(r, case_no, &a, r->guards + (size_t)r->o->guard * r->blksz);
        return rb || ra ? -1 : 0;
}

/* ---------------- the two passes ---------------- */

static void model_update(struct pat_run *r, int case_no)
{
        const struct pat_case *c = &r->cases[case_no];
        for (uint32_t i = 0; i < c->nblocks; i++)
                r->model[c->lba + i] = (uint32_t)case_no + 1;
}

static int write_case(struct pat_run *r, int case_no)
{
        struct pat_case *c = &r->cases[case_no];
        if (r->o->verbose)
                printf("case %d: LBA %" PRIu64 " +%" PRIu32 " blocks\n", case_no, c->lba,
                       c->nblocks);
        if (capture_guards(r, c))
                return -1;
        fill_case(r, (uint32_t)case_no);
        if (do_write(r, c->lba, c->nblocks))
                return -1;
        model_update(r, case_no);
        struct scsi_task *t = do_read(r, c->lba, c->nblocks);
        if (!t)
                return -1;
        int rc = check_readback(r, case_no, t->datain.data);
        scsi_free_scsi_task(t);
        return check_guards(r, case_no) || rc ? -1 : 0;
}

/* Final pass: every block of the case must hold what the last write over it put there. */
static int recheck_case(struct pat_run *r, int case_no)
{
        const struct pat_case *c = &r->cases[case_no];
        struct scsi_task *t = do_read(r, c->lba, c->nblocks);
        int rc = 0;
        if (!t)
                return -1;
        for (uint32_t i = 0; i < c->nblocks && rc == 0; i++) {
                uint64_t lba = c->lba + i;
                const unsigned char *got = t->datain.data + (size_t)i * r->blksz;
                fill_block(r, r->expect, lba, r->model[lba] - 1);
                size_t d = first_diff(got, r->expect, r->blksz);
                if (d < r->blksz) {
                        report(r, case_no, "final re-read differs", lba, d);
                        rc = -1;
                }
        }
        scsi_free_scsi_task(t);
        return rc;
}

static bool connection_lost(const struct pat_run *r)
{
        return r->ctx_dead || !iscsi_is_logged_in(r->ctx);
}

static int run_cases(struct pat_run *r)
{
        int failed = 0, n = r->o->count;
        for (int i = 0; i < n && !connection_lost(r); i++)
                if (write_case(r, i))
                        r->cases[i].failed = true;
        for (int i = 0; i < n && !connection_lost(r); i++)
                if (!r->cases[i].failed && recheck_case(r, i))
                        r->cases[i].failed = true;
        if (r->ctx_dead)
                fprintf(stderr, "iscsi_pattern: a command was not sent or not answered; "
                                "stopping\n");
        else if (connection_lost(r))
                fprintf(stderr, "iscsi_pattern: connection lost\n");
        for (int i = 0; i < n; i++)
                failed += r->cases[i].failed || connection_lost(r);
        printf("pattern: %d passed, %d failed\n", n - failed, failed);
        return failed ? 1 : 0;
}

static void run_free(struct pat_run *r)
{
        /* A dead context is leaked on purpose: destroying it would walk freed PDUs. */
        if (r->ctx && !r->ctx_dead) {
                if (iscsi_is_logged_in(r->ctx))
                        iscsi_logout_sync(r->ctx);
                iscsi_destroy_context(r->ctx);
        }
        free(r->model);
        free(r->cases);
        free(r->wbuf);
        free(r->guards);
        free(r->expect);
}

int main(int argc, char **argv)
{
        struct pat_opts o;
        struct pat_run r = {0};
        int rc = parse_args(&o, argc, argv);
        if (rc)
                return rc > 0 ? 0 : 2;
        r.o = &o;
        r.rng = o.seed;
        r.nonce = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
        r.nonce = splitmix64(&r.nonce) & 0xffffffffull;
        rc = 1;
        if (connect_lun(&r) == 0 && read_capacity(&r) == 0 && setup_geometry(&r) == 0 &&
            alloc_buffers(&r) == 0) {
                printf("iscsi_pattern: %d cases, 1 to %" PRIu32 " blocks of %" PRIu32 " bytes, "
                       "range %" PRIu64 " blocks, seed %" PRIu64 "\n",
                       o.count, r.max_blocks, r.blksz, r.range_blocks, o.seed);
                plan_cases(&r);
                rc = run_cases(&r);
        } else {
                printf("pattern: 0 passed, %d failed\n", o.count);
        }
        run_free(&r);
        return rc;
}
