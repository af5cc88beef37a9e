/* iscsi_model: randomized model-based test of one gateway LUN (asynchronous libiscsi).
 *
 * Keeps many random commands in flight at once (WRITE(10/16) with and without FUA, READ(10/16),
 * SYNCHRONIZE CACHE(10/16)), biased towards what a write-back cache gets wrong: a small hot
 * region, 32 KiB cache-line boundaries, partial lines, overlapping writes in flight together.
 * Through the status socket it also forces destaging ("flush") and makes the backend fail or
 * slow down ("fault"; the LUN needs fault_injection = yes). Every read is checked against a
 * model of the LUN; --backend-file (the file backend's image) is checked after FUA writes,
 * after every write when the LUN reports write-through (WCE = 0), after flushes, and byte for
 * byte at the end.
 *
 * The model. Every write has an id (its op index) and stamps each 512-byte sector with a
 * header (magic, LBA, op id, seed, run nonce) and filler derived from them, so a block read
 * back names the write it came from. Each block keeps the writes that may currently be on it
 * ("candidates"), with logical times (ticks: every issue and completion is one tick):
 *   - a write is a candidate from its issue on;
 *   - when write W is acknowledged, a candidate X that had completed before W was issued is
 *     superseded ("until" = now): W came after it. Candidates still in flight, or completed
 *     after W was issued, were concurrent with W and may have landed after it: they stay;
 *   - a write that fails (CHECK CONDITION) may or may not have landed, per block: it stays a
 *     candidate and supersedes nothing;
 *   - a read issued at tick ri may return a candidate whose "until" is after ri;
 *   - a read during which nothing on a block changed pins that block to the value it saw
 *     (the other candidates are superseded): the LUN may not change its mind later. This
 *     assumes a write that failed never lands after a read showed it had not.
 *   - after SYNCHRONIZE CACHE or a status flush issued at tick s, the backend may hold only
 *     candidates whose "until" is after s; after a FUA (or write-through) write W only current
 *     candidates ("until" not set), W itself or writes issued after W (newer than W, though
 *     perhaps superseded in the cache by now: they need not be durable, W had to be).
 * A failure is accepted only while faults are injected (a read failure only while read
 * faults are; a failed write or SYNCHRONIZE CACHE also up to 6 s after a write or flush fault
 * window closed, the gateway's longest destage back-off plus a margin): anything else, and any
 * content that is not an allowed candidate, prints the seed, op index, LBA, what was expected and
 * what was found, and exits 1. At the end: drain, SYNCHRONIZE CACHE + flush, stop injecting, read
 * the whole range, then SYNCHRONIZE CACHE + flush again (these must succeed) and compare the
 * backend file. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* The project root is on the include path and has its own iscsi/iscsi.h. */
#if __has_include("/usr/include/iscsi/iscsi.h")
#include "/usr/include/iscsi/iscsi.h"
#include "/usr/include/iscsi/scsi-lowlevel.h"
#else
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#endif

#define MODEL_MAGIC  0x4c444f4d57475349ull /* "ISGWMODL" */
#define SECTOR       512u
#define LINE_BYTES   32768u
#define HOT_LINES    8u
#define INF          UINT64_MAX
#define STUCK_S      60 /* no completion for this long: the target is stuck */
#define MAX_REPORTS  8  /* mismatching blocks printed before exiting */
#define DEFAULT_SEED 20261121u

/* ---------------- options ---------------- */

struct opts {
        const char *url;
        const char *initiator;
        const char *status_socket;
        const char *backend_file;
        uint64_t seed;
        uint64_t ops; /* 0: --seconds */
        double seconds;
        unsigned qd;
        uint64_t lun_size; /* bytes of the LUN used; 0: min(LUN, 64 MiB) */
        uint32_t block_size;
        uint32_t max_blocks;
        const char *crash_cmd; /* run under the last commands in flight: kill -9 and restart */
        bool no_faults;
        bool verbose;
};

/* ---------------- the model ---------------- */

enum cand_state { C_INFLIGHT, C_OK, C_FAILED };

struct cand {
        uint64_t wid;   /* op index of the write; 0: the content found at start */
        uint64_t done;  /* tick of its completion (0 while in flight) */
        uint64_t until; /* tick from which it is certainly overwritten; INF: not yet */
        enum cand_state state;
};

struct block {
        struct cand *c;
        uint32_t n, cap;
};

/* Faults injected from tick 'from' (request sent) to 'to' (clearing acknowledged). */
enum { F_READ = 1, F_WRITE = 2, F_FLUSH = 4 };
struct window {
        uint64_t from, to;
        unsigned mask;
        uint64_t to_ns; /* wall clock when it closed */
};

enum kind { K_NONE, K_WRITE, K_READ, K_SYNC };

struct slot {
        enum kind kind;
        uint64_t op; /* op index (the write id for writes) */
        uint64_t lba;
        uint32_t n;
        uint64_t issue;
        bool fua;
        bool cdb16;
        bool final; /* part of the final read: pins every block */
        unsigned char *buf;
        struct model *m;
};

enum status_kind { S_NONE, S_FLUSH, S_ARM, S_CLEAR };

struct status_conn {
        int fd;
        char out[1024];
        size_t out_len, out_off;
        char in[65536];
        size_t in_len;
        enum status_kind pending;
        uint64_t issue;
        uint64_t op;
        bool must_succeed;
};

struct model {
        const struct opts *o;
        struct iscsi_context *ctx;
        int lun;
        char target[256];
        uint32_t blksz;
        uint64_t lun_blocks;
        uint64_t blocks; /* range used */
        uint32_t max_blocks;
        uint32_t line_blocks;
        uint64_t hot_lba;
        uint32_t hot_blocks;
        bool write_through; /* the LUN reports WCE = 0 */
        uint64_t rng;       /* the I/O stream: a function of the seed alone */
        uint64_t srng;      /* status ops (their timing depends on the target's speed) */
        uint64_t nonce;
        uint64_t tick;
        uint64_t next_op;
        struct block *blk;
        unsigned char *initial; /* the range as read at start */
        unsigned char *scratch; /* one block */
        unsigned char *filebuf; /* max_blocks, for backend checks */
        int backend_fd;
        struct slot *slots;
        unsigned inflight;
        uint64_t min_pending;   /* oldest issue tick of in-flight reads and flushes */
        uint64_t min_fua_wid;   /* oldest in-flight FUA / write-through write (its check) */
        uint64_t check_min_wid; /* during a FUA check: writes from this one on are allowed */
        struct window *windows;
        size_t nwindows, capwindows;
        bool armed;
        bool armed_always;     /* every write fails: no status flush until cleared */
        uint64_t arm_until_op; /* clear the faults once this op index is reached... */
        uint64_t arm_until_ns; /* ...or this time, whichever comes first */
        uint64_t status_ops;
        struct status_conn st;
        uint64_t last_progress_ns;
        unsigned reports;
        /* counters */
        uint64_t n_write, n_fua, n_read, n_sync, n_flush, n_arm;
        uint64_t f_write, f_read, f_sync, f_flush;
        uint64_t backend_checks;
        uint64_t torn; /* blocks seen half old, half new while a write moved them */
        uint64_t bytes_written, bytes_read;
        bool crashed; /* the target was killed under the commands in flight: ignore them */
};

static uint64_t splitmix64(uint64_t *s)
{
        uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static uint64_t rnd(struct model *m, uint64_t lo, uint64_t hi)
{
        return lo + splitmix64(&m->rng) % (hi - lo + 1);
}

static uint64_t srnd(struct model *m, uint64_t lo, uint64_t hi)
{
        return lo + splitmix64(&m->srng) % (hi - lo + 1);
}

static bool chance(struct model *m, unsigned percent)
{
        return rnd(m, 0, 99) < percent;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(struct model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void die(struct model *m, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        printf("FAIL seed=%" PRIu64 ": ", m->o->seed);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\nmodel: FAIL (reproduce with --seed %" PRIu64 ")\n", m->o->seed);
        fflush(stdout);
        exit(1);
}

/* ---------------- stamped data ---------------- */

static void put64(unsigned char *p, uint64_t v)
{
        memcpy(p, &v, sizeof(v));
}

static uint64_t get64(const unsigned char *p)
{
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return v;
}

static uint64_t header_check(uint64_t lba, uint64_t sector, uint64_t wid, uint64_t seed,
                             uint64_t nonce)
{
        uint64_t s = lba ^ (sector << 48) ^ (wid * 0x9e3779b97f4a7c15ull) ^ seed ^ (nonce << 17);
        return splitmix64(&s);
}

/* Sector 'sector' of block lba as written by write wid. */
static void fill_sector(const struct model *m, unsigned char *p, uint64_t lba, uint64_t sector,
                        uint64_t wid)
{
        uint64_t check = header_check(lba, sector, wid, m->o->seed, m->nonce);
        put64(p, MODEL_MAGIC);
        put64(p + 8, lba);
        put64(p + 16, sector);
        put64(p + 24, wid);
        put64(p + 32, m->o->seed);
        put64(p + 40, m->nonce);
        put64(p + 48, check);
        uint64_t s = check;
        for (unsigned off = 56; off < SECTOR; off += 8)
                put64(p + off, splitmix64(&s));
}

static void fill_block(const struct model *m, unsigned char *p, uint64_t lba, uint64_t wid)
{
        if (wid == 0) {
                memcpy(p, m->initial + lba * m->blksz, m->blksz);
                return;
        }
        for (uint32_t s = 0; s < m->blksz / SECTOR; s++)
                fill_sector(m, p + (size_t)s * SECTOR, lba, s, wid);
}

#define VALUE_BAD UINT64_MAX

/* Which write block lba holds (0: its initial content), or VALUE_BAD. */
static uint64_t decode_block(struct model *m, const unsigned char *p, uint64_t lba)
{
        if (get64(p) == MODEL_MAGIC && get64(p + 32) == m->o->seed && get64(p + 40) == m->nonce &&
            get64(p + 8) == lba && get64(p + 16) == 0) {
                uint64_t wid = get64(p + 24);
                fill_block(m, m->scratch, lba, wid);
                if (wid != 0 && memcmp(p, m->scratch, m->blksz) == 0)
                        return wid;
        }
        return memcmp(p, m->initial + lba * m->blksz, m->blksz) == 0 ? 0 : VALUE_BAD;
}

/* What a block that matches no candidate looks like, per sector. */
static void describe_actual(struct model *m, const unsigned char *p, uint64_t lba)
{
        for (uint32_t s = 0; s < m->blksz / SECTOR; s++) {
                const unsigned char *q = p + (size_t)s * SECTOR;
                printf("    actual sector %u: ", s);
                if (get64(q) != MODEL_MAGIC) {
                        bool zero = true;
                        for (unsigned i = 0; i < SECTOR && zero; i++)
                                zero = q[i] == 0;
                        printf("%s, bytes", zero ? "all zero" : "not stamped");
                        for (int i = 0; i < 16; i++)
                                printf(" %02x", q[i]);
                        printf("\n");
                        continue;
                }
                uint64_t wlba = get64(q + 8), sec = get64(q + 16), wid = get64(q + 24);
                fill_sector(m, m->scratch, wlba, sec, wid);
                size_t d = 0;
                while (d < SECTOR && q[d] == m->scratch[d])
                        d++;
                printf("stamped LBA %" PRIu64 " sector %" PRIu64 " by op %" PRIu64 " seed %" PRIu64
                       "%s%s",
                       wlba, sec, wid, get64(q + 32),
                       get64(q + 40) == m->nonce ? "" : " (other run)",
                       wlba != lba || sec != s ? " MISPLACED" : "");
                if (d < SECTOR)
                        printf(", differs from that write at byte %zu", d);
                printf("\n");
        }
}

static const char *state_name(const struct cand *c)
{
        return c->state == C_INFLIGHT ? "in flight" : c->state == C_OK ? "acknowledged" : "failed";
}

static void describe_expected(const struct model *m, const struct block *b, uint64_t since)
{
        for (uint32_t i = 0; i < b->n; i++) {
                const struct cand *c = &b->c[i];
                printf("    %s op %" PRIu64 "%s (%s", c->until > since ? "allowed" : "superseded",
                       c->wid, c->wid ? "" : " = content at start", state_name(c));
                if (c->done)
                        printf(" at tick %" PRIu64, c->done);
                if (c->until != INF)
                        printf(", overwritten at tick %" PRIu64, c->until);
                printf(")\n");
        }
}

/* ---------------- candidates ---------------- */

static void prune(struct model *m, struct block *b)
{
        uint32_t k = 0;
        for (uint32_t i = 0; i < b->n; i++)
                if (b->c[i].until > m->min_pending || b->c[i].wid >= m->min_fua_wid)
                        b->c[k++] = b->c[i];
        b->n = k;
}

static void add_cand(struct model *m, struct block *b, uint64_t wid)
{
        prune(m, b);
        if (b->n == b->cap) {
                b->cap = b->cap ? b->cap * 2 : 4;
                b->c = realloc(b->c, b->cap * sizeof(*b->c));
                if (!b->c)
                        die(m, "out of memory");
        }
        b->c[b->n++] = (struct cand){.wid = wid, .until = INF, .state = C_INFLIGHT};
}

static struct cand *find_cand(struct block *b, uint64_t wid)
{
        for (uint32_t i = 0; i < b->n; i++)
                if (b->c[i].wid == wid)
                        return &b->c[i];
        return NULL;
}

/* Write wid, issued at tick issue, completed now (ok or failed). */
static void complete_write_block(struct model *m, struct block *b, uint64_t wid, uint64_t issue,
                                 bool ok)
{
        for (uint32_t i = 0; i < b->n; i++) {
                struct cand *c = &b->c[i];
                if (c->wid == wid) {
                        c->done = m->tick;
                        c->state = ok ? C_OK : C_FAILED;
                } else if (ok && c->until == INF && c->state != C_INFLIGHT && c->done < issue) {
                        c->until = m->tick;
                }
        }
        prune(m, b);
}

/* After a read issued at ri saw wid on b: pins b to it if nothing changed meanwhile. */
static void pin_block(struct model *m, struct block *b, uint64_t wid, uint64_t ri)
{
        for (uint32_t i = 0; i < b->n; i++) {
                const struct cand *c = &b->c[i];
                if (c->until == INF && (c->state == C_INFLIGHT || c->done >= ri))
                        return;
        }
        for (uint32_t i = 0; i < b->n; i++)
                if (b->c[i].until == INF && b->c[i].wid != wid)
                        b->c[i].until = m->tick;
        prune(m, b);
}

/* A block read while writes to it were moving may be torn: every byte from one of the
 * allowed candidates (until after 'since'). With need_motion, one of them must have been in
 * flight after that tick (an initiator's write); without, any two allowed values will do (a
 * destage we cannot see may be under way in the backend). A block the final read pins has a
 * single value, so a torn block that stays torn is always caught. */
static bool torn_ok(struct model *m, const unsigned char *p, uint64_t lba, const struct block *b,
                    uint64_t since, bool need_motion)
{
        unsigned k = 0;
        bool moving = !need_motion;
        for (uint32_t i = 0; i < b->n; i++) {
                const struct cand *c = &b->c[i];
                if (c->until > since || c->wid >= m->check_min_wid) {
                        k++;
                        moving |= c->state == C_INFLIGHT || c->done > since;
                }
        }
        if (k < 2 || !moving)
                return false;
        unsigned char *v = malloc((size_t)k * m->blksz);
        if (!v)
                die(m, "out of memory");
        k = 0;
        for (uint32_t i = 0; i < b->n; i++)
                if (b->c[i].until > since || b->c[i].wid >= m->check_min_wid)
                        fill_block(m, v + (size_t)k++ * m->blksz, lba, b->c[i].wid);
        bool ok = true;
        for (uint32_t byte = 0; byte < m->blksz && ok; byte++) {
                ok = false;
                for (unsigned j = 0; j < k && !ok; j++)
                        ok = p[byte] == v[(size_t)j * m->blksz + byte];
        }
        free(v);
        if (ok)
                m->torn++;
        return ok;
}

static void update_min_pending(struct model *m)
{
        uint64_t min = m->tick;
        for (unsigned i = 0; i < m->o->qd; i++) {
                const struct slot *s = &m->slots[i];
                if ((s->kind == K_READ || s->kind == K_SYNC) && s->issue < min)
                        min = s->issue;
        }
        if (m->st.pending == S_FLUSH && m->st.issue < min)
                min = m->st.issue;
        m->min_pending = min;
        uint64_t wid = UINT64_MAX;
        for (unsigned i = 0; i < m->o->qd; i++) {
                const struct slot *s = &m->slots[i];
                if (s->kind == K_WRITE && (s->fua || m->write_through) && s->op < wid)
                        wid = s->op;
        }
        m->min_fua_wid = wid;
}

/* ---------------- fault windows ---------------- */

static bool fault_window(const struct model *m, uint64_t issue, unsigned mask)
{
        for (size_t i = 0; i < m->nwindows; i++) {
                const struct window *w = &m->windows[i];
                if ((w->mask & mask) && w->from < m->tick && w->to > issue)
                        return true;
        }
        return false;
}

/* A write fault may leave data dirty in the gateway's cache past the window: its destager
 * retries after a back-off of up to 5 s, and a flush or write-through write that waits on
 * that data may still fail with it. So a failed write or SYNCHRONIZE CACHE is explained too
 * by a write or flush fault window that closed less than that (plus margin) ago. */
#define DESTAGE_RETRY_GRACE_NS (6ull * 1000000000ull)

static bool recent_write_window(const struct model *m)
{
        uint64_t now = now_ns();
        for (size_t i = 0; i < m->nwindows; i++) {
                const struct window *w = &m->windows[i];
                if ((w->mask & (F_WRITE | F_FLUSH)) && w->to_ns &&
                    now - w->to_ns < DESTAGE_RETRY_GRACE_NS)
                        return true;
        }
        return false;
}

static void open_window(struct model *m, unsigned mask)
{
        if (m->nwindows == m->capwindows) {
                m->capwindows = m->capwindows ? m->capwindows * 2 : 16;
                m->windows = realloc(m->windows, m->capwindows * sizeof(*m->windows));
                if (!m->windows)
                        die(m, "out of memory");
        }
        m->windows[m->nwindows++] = (struct window){.from = m->tick, .to = INF, .mask = mask};
}

/* ---------------- backend file checks ---------------- */

/* The backend's blocks [lba, lba + n) must each hold a candidate whose until is after 'since'
 * (INF - 1: a current one), or one issued at or after write min_wid (a FUA write W: W itself
 * or any write issued after it, even one a later write superseded in the cache since: only
 * W had to be durable, and those are newer than W). */
static void check_backend_from(struct model *m, uint64_t lba, uint32_t n, uint64_t since,
                               uint64_t min_wid, const char *why, uint64_t op)
{
        if (m->backend_fd < 0)
                return;
        m->backend_checks++;
        m->check_min_wid = min_wid;
        while (n > 0) {
                uint32_t chunk = n < m->max_blocks ? n : m->max_blocks;
                size_t len = (size_t)chunk * m->blksz;
                ssize_t got = pread(m->backend_fd, m->filebuf, len, (off_t)(lba * m->blksz));
                if (got != (ssize_t)len)
                        die(m, "reading %s at LBA %" PRIu64 ": %s", m->o->backend_file, lba,
                            got < 0 ? strerror(errno) : "short read");
                for (uint32_t i = 0; i < chunk; i++) {
                        const unsigned char *p = m->filebuf + (size_t)i * m->blksz;
                        struct block *b = &m->blk[lba + i];
                        uint64_t v = decode_block(m, p, lba + i);
                        struct cand *c = v == VALUE_BAD ? NULL : find_cand(b, v);
                        if ((c && (c->until > since || c->wid >= min_wid)) ||
                            torn_ok(m, p, lba + i, b, since, false))
                                continue;
                        printf("MISMATCH seed=%" PRIu64 " op=%" PRIu64 " backend file after %s: "
                               "LBA %" PRIu64 "\n",
                               m->o->seed, op, why, lba + i);
                        describe_expected(m, b, since);
                        describe_actual(m, p, lba + i);
                        die(m, "the backend does not hold what was acknowledged");
                }
                lba += chunk;
                n -= chunk;
        }
        m->check_min_wid = UINT64_MAX;
}

static void check_backend(struct model *m, uint64_t lba, uint32_t n, uint64_t since,
                          const char *why, uint64_t op)
{
        check_backend_from(m, lba, n, since, UINT64_MAX, why, op);
}

/* ---------------- status socket ---------------- */

static int status_connect(struct model *m)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(m->o->status_socket) >= sizeof(sun.sun_path))
                return -1;
        strcpy(sun.sun_path, m->o->status_socket);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
                fprintf(stderr, "iscsi_model: cannot connect to %s: %s\n", m->o->status_socket,
                        strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        m->st.fd = fd;
        return 0;
}

static void status_send(struct model *m, enum status_kind kind, json_t *req, bool must_succeed)
{
        json_object_set_new(req, "version", json_integer(1));
        json_object_set_new(req, "lun",
                            json_pack("{s:s, s:i}", "target", m->target, "lun", m->lun));
        char *line = json_dumps(req, JSON_COMPACT);
        json_decref(req);
        size_t len = line ? strlen(line) : 0;
        if (!line || len + 1 > sizeof(m->st.out))
                die(m, "cannot encode a status request");
        memcpy(m->st.out, line, len);
        m->st.out[len] = '\n';
        m->st.out_len = len + 1;
        m->st.out_off = 0;
        free(line);
        m->st.pending = kind;
        m->st.issue = ++m->tick;
        m->st.op = ++m->status_ops;
        m->st.must_succeed = must_succeed;
        update_min_pending(m);
        if (m->o->verbose)
                printf("status request %" PRIu64 ": %.*s", m->st.op, (int)m->st.out_len, m->st.out);
}

static void send_flush(struct model *m, bool must_succeed)
{
        m->n_flush++;
        status_send(m, S_FLUSH, json_pack("{s:s}", "cmd", "flush"), must_succeed);
}

/* Random faults: mostly a few failing writes, sometimes reads, flushes, all writes, delays. */
static void send_arm(struct model *m)
{
        uint32_t reads = 0, writes = 0, flushes = 0, delay = 0;
        switch (srnd(m, 0, 9)) {
        case 0:
        case 1:
        case 2:
        case 3:
                writes = (uint32_t)srnd(m, 1, 8);
                break;
        case 4:
        case 5:
                reads = (uint32_t)srnd(m, 1, 8);
                break;
        case 6:
                flushes = (uint32_t)srnd(m, 1, 3);
                break;
        case 7:
                writes = UINT32_MAX; /* a backend that rejects every write for a while */
                break;
        default:
                reads = (uint32_t)srnd(m, 0, 3);
                writes = (uint32_t)srnd(m, 0, 3);
                flushes = (uint32_t)srnd(m, 0, 2);
                break;
        }
        if (srnd(m, 0, 4) == 0)
                delay = (uint32_t)srnd(m, 1, 4);
        unsigned mask = (reads ? F_READ : 0) | (writes ? F_WRITE : 0) | (flushes ? F_FLUSH : 0);
        m->n_arm++;
        m->armed = true;
        m->armed_always = writes == UINT32_MAX;
        m->arm_until_op = m->next_op + srnd(m, 20, 300);
        m->arm_until_ns = now_ns() + srnd(m, 20, 300) * 1000000ull;
        status_send(m, S_ARM,
                    json_pack("{s:s, s:I, s:I, s:I, s:I}", "cmd", "fault", "fail_reads",
                              (json_int_t)reads, "fail_writes", (json_int_t)writes, "fail_flushes",
                              (json_int_t)flushes, "delay_ms", (json_int_t)delay),
                    true);
        open_window(m, mask);
}

static void send_clear(struct model *m)
{
        m->armed = false;
        m->armed_always = false;
        status_send(m, S_CLEAR, json_pack("{s:s}", "cmd", "fault"), true);
}

static void status_reply(struct model *m, const char *line)
{
        json_error_t jerr;
        json_t *r = json_loads(line, 0, &jerr);
        bool ok = r && json_is_true(json_object_get(r, "ok"));
        const char *error = json_string_value(json_object_get(r, "error"));
        enum status_kind kind = m->st.pending;
        uint64_t op = m->st.op, issue = m->st.issue;
        m->tick++;
        m->st.pending = S_NONE;
        m->last_progress_ns = now_ns();
        if (kind == S_CLEAR && ok && m->nwindows && m->windows[m->nwindows - 1].to == INF) {
                m->windows[m->nwindows - 1].to = m->tick;
                m->windows[m->nwindows - 1].to_ns = now_ns();
        }
        if (!ok && (m->st.must_succeed ||
                    !fault_window(m, issue, kind == S_FLUSH ? F_READ | F_WRITE | F_FLUSH : 0)))
                die(m, "status request %" PRIu64 " (%s) failed: %s", op,
                    kind == S_FLUSH ? "flush" : "fault", error ? error : line);
        if (!ok)
                m->f_flush++;
        if (ok && kind == S_FLUSH)
                check_backend(m, 0, (uint32_t)m->blocks, issue, "a status flush", m->next_op);
        json_decref(r);
        update_min_pending(m);
}

static void status_service(struct model *m, short revents)
{
        struct status_conn *st = &m->st;
        if ((revents & POLLOUT) && st->out_off < st->out_len) {
                ssize_t n =
                    send(st->fd, st->out + st->out_off, st->out_len - st->out_off, MSG_NOSIGNAL);
                if (n < 0 && errno != EAGAIN)
                        die(m, "status socket: %s", strerror(errno));
                if (n > 0)
                        st->out_off += (size_t)n;
        }
        if (!(revents & (POLLIN | POLLHUP | POLLERR)))
                return;
        ssize_t n = recv(st->fd, st->in + st->in_len, sizeof(st->in) - 1 - st->in_len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN))
                die(m, "status socket closed: %s", n ? strerror(errno) : "by the daemon");
        if (n < 0)
                return;
        st->in_len += (size_t)n;
        char *nl;
        while ((nl = memchr(st->in, '\n', st->in_len))) {
                *nl = '\0';
                if (st->pending == S_NONE)
                        die(m, "status socket: unexpected reply %s", st->in);
                status_reply(m, st->in);
                size_t used = (size_t)(nl + 1 - st->in);
                memmove(st->in, nl + 1, st->in_len - used);
                st->in_len -= used;
        }
        if (st->in_len == sizeof(st->in) - 1)
                die(m, "status socket: reply line too long");
}

/* ---------------- commands ---------------- */

static struct slot *free_slot(struct model *m)
{
        for (unsigned i = 0; i < m->o->qd; i++)
                if (m->slots[i].kind == K_NONE)
                        return &m->slots[i];
        return NULL;
}

static const char *slot_name(const struct slot *s)
{
        switch (s->kind) {
        case K_WRITE:
                return s->fua ? (s->cdb16 ? "WRITE(16) FUA" : "WRITE(10) FUA")
                              : (s->cdb16 ? "WRITE(16)" : "WRITE(10)");
        case K_READ:
                return s->cdb16 ? "READ(16)" : "READ(10)";
        case K_SYNC:
                return s->cdb16 ? "SYNCHRONIZE CACHE(16)" : "SYNCHRONIZE CACHE(10)";
        default:
                return "?";
        }
}

static void release(struct model *m, struct slot *s, struct scsi_task *t)
{
        if (t)
                scsi_free_scsi_task(t);
        s->kind = K_NONE;
        m->inflight--;
        m->last_progress_ns = now_ns();
        update_min_pending(m);
}

/* A failed command is fine only if faults that can explain it were injected meanwhile (a
 * read: read faults; anything else: any fault, since a cache may read, write or flush the
 * backend for it) and it failed as a backend I/O error does: MEDIUM or HARDWARE ERROR. */
static void command_failed(struct model *m, struct slot *s, struct scsi_task *t, int status)
{
        unsigned mask = s->kind == K_READ ? F_READ : F_READ | F_WRITE | F_FLUSH;
        bool window =
            fault_window(m, s->issue, mask) || (s->kind != K_READ && recent_write_window(m));
        bool check = status == SCSI_STATUS_CHECK_CONDITION && t;
        if (window && check &&
            (t->sense.key == SCSI_SENSE_MEDIUM_ERROR || t->sense.key == SCSI_SENSE_HARDWARE_ERROR))
                return;
        die(m,
            "op %" PRIu64 ": %s LBA %" PRIu64 " +%u failed: status 0x%02x, %s, ASC/ASCQ 0x%04x "
            "(%s)",
            s->op, slot_name(s), s->lba, s->n, (unsigned)status,
            check ? scsi_sense_key_str(t->sense.key) : iscsi_get_error(m->ctx),
            check ? (unsigned)t->sense.ascq : 0,
            window ? "injected faults explain a MEDIUM or HARDWARE ERROR, not this"
                   : "no fault was injected that could explain a failure");
}

static void write_done(struct iscsi_context *ctx, int status, void *data, void *priv)
{
        struct slot *s = priv;
        struct model *m = s->m;
        if (m->crashed) {
                if (data)
                        scsi_free_scsi_task(data);
                return;
        }
        bool ok = status == SCSI_STATUS_GOOD;
        m->tick++;
        if (!ok) {
                command_failed(m, s, data, status);
                m->f_write++;
        }
        for (uint32_t i = 0; i < s->n; i++)
                complete_write_block(m, &m->blk[s->lba + i], s->op, s->issue, ok);
        if (ok && (s->fua || m->write_through))
                check_backend_from(m, s->lba, s->n, INF - 1, s->op,
                                   s->fua ? "a FUA write" : "a write-through write", s->op);
        release(m, s, data);
}

static void mismatch(struct model *m, const struct slot *s, uint64_t lba, const unsigned char *p)
{
        printf("MISMATCH seed=%" PRIu64 " op=%" PRIu64 " %s LBA %" PRIu64 " +%u (issued at tick "
               "%" PRIu64 "): block LBA %" PRIu64 "\n",
               m->o->seed, s->op, slot_name(s), s->lba, s->n, s->issue, lba);
        describe_expected(m, &m->blk[lba], s->issue);
        describe_actual(m, p, lba);
}

static void read_done(struct iscsi_context *ctx, int status, void *data, void *priv)
{
        struct slot *s = priv;
        struct model *m = s->m;
        if (m->crashed) {
                if (data)
                        scsi_free_scsi_task(data);
                return;
        }
        struct scsi_task *t = data;
        m->tick++;
        if (status != SCSI_STATUS_GOOD) {
                if (s->final)
                        die(m, "op %" PRIu64 ": final %s LBA %" PRIu64 " failed: %s", s->op,
                            slot_name(s), s->lba, iscsi_get_error(m->ctx));
                command_failed(m, s, t, status);
                m->f_read++;
                release(m, s, t);
                return;
        }
        if (!t || t->datain.size != (int)(s->n * m->blksz))
                die(m, "op %" PRIu64 ": %s LBA %" PRIu64 " +%u returned %d bytes", s->op,
                    slot_name(s), s->lba, s->n, t ? t->datain.size : -1);
        bool bad = false;
        for (uint32_t i = 0; i < s->n; i++) {
                const unsigned char *p = t->datain.data + (size_t)i * m->blksz;
                struct block *b = &m->blk[s->lba + i];
                uint64_t v = decode_block(m, p, s->lba + i);
                struct cand *c = v == VALUE_BAD ? NULL : find_cand(b, v);
                if (c && c->until > s->issue) {
                        pin_block(m, b, v, s->issue);
                        continue;
                }
                if (torn_ok(m, p, s->lba + i, b, s->issue, true))
                        continue;
                mismatch(m, s, s->lba + i, p);
                bad = true;
                if (++m->reports >= MAX_REPORTS)
                        break;
        }
        if (bad)
                die(m, "op %" PRIu64 ": read data does not match the model", s->op);
        release(m, s, t);
}

static void sync_done(struct iscsi_context *ctx, int status, void *data, void *priv)
{
        struct slot *s = priv;
        struct model *m = s->m;
        if (m->crashed) {
                if (data)
                        scsi_free_scsi_task(data);
                return;
        }
        m->tick++;
        if (status != SCSI_STATUS_GOOD) {
                if (s->final)
                        die(m, "op %" PRIu64 ": final %s failed: %s", s->op, slot_name(s),
                            iscsi_get_error(m->ctx));
                command_failed(m, s, data, status);
                m->f_sync++;
        } else {
                /* The hot region and one random stretch: a full check costs too much here. */
                check_backend(m, m->hot_lba, m->hot_blocks, s->issue, slot_name(s), s->op);
                check_backend(m, s->lba, s->n, s->issue, slot_name(s), s->op);
        }
        release(m, s, data);
}

static void fill_write(struct model *m, struct slot *s)
{
        for (uint32_t i = 0; i < s->n; i++)
                fill_block(m, s->buf + (size_t)i * m->blksz, s->lba + i, s->op);
}

/* Counts per kind for the summary. */
static void count_op(struct model *m, const struct slot *s)
{
        if (s->kind == K_WRITE) {
                m->n_write++;
                m->n_fua += s->fua;
        } else if (s->kind == K_READ) {
                m->n_read++;
        } else if (s->kind == K_SYNC) {
                m->n_sync++;
        }
}

static void issue(struct model *m, struct slot *s)
{
        struct scsi_task *t = NULL;
        uint32_t len = s->n * m->blksz;
        int bs = (int)m->blksz;
        s->issue = ++m->tick;
        s->op = m->next_op++;
        s->m = m;
        switch (s->kind) {
        case K_WRITE:
                fill_write(m, s);
                for (uint32_t i = 0; i < s->n; i++)
                        add_cand(m, &m->blk[s->lba + i], s->op);
                t = s->cdb16 ? iscsi_write16_task(m->ctx, m->lun, s->lba, s->buf, len, bs, 0, 0,
                                                  s->fua, 0, 0, write_done, s)
                             : iscsi_write10_task(m->ctx, m->lun, (uint32_t)s->lba, s->buf, len, bs,
                                                  0, 0, s->fua, 0, 0, write_done, s);
                m->bytes_written += len;
                break;
        case K_READ:
                t = s->cdb16 ? iscsi_read16_task(m->ctx, m->lun, s->lba, len, bs, 0, 0, 0, 0, 0,
                                                 read_done, s)
                             : iscsi_read10_task(m->ctx, m->lun, (uint32_t)s->lba, len, bs, 0, 0, 0,
                                                 0, 0, read_done, s);
                m->bytes_read += len;
                break;
        case K_SYNC:
                t = s->cdb16
                        ? iscsi_synchronizecache16_task(m->ctx, m->lun, 0, 0, 0, 0, sync_done, s)
                        : iscsi_synchronizecache10_task(m->ctx, m->lun, 0, 0, 0, 0, sync_done, s);
                break;
        case K_NONE:
                break;
        }
        if (!t)
                die(m, "op %" PRIu64 ": cannot queue %s: %s", s->op, slot_name(s),
                    iscsi_get_error(m->ctx));
        m->inflight++;
        count_op(m, s);
        if (m->o->verbose)
                printf("op %" PRIu64 ": %s LBA %" PRIu64 " +%u\n", s->op, slot_name(s), s->lba,
                       s->n);
        update_min_pending(m);
}

/* ---------------- choosing ops ---------------- */

static uint32_t pick_size(struct model *m)
{
        uint32_t line = m->line_blocks, max = m->max_blocks, n;
        switch (rnd(m, 0, 9)) {
        case 0:
        case 1:
        case 2:
                n = (uint32_t)rnd(m, 1, 8); /* a few blocks of a line */
                break;
        case 3:
        case 4:
                n = line * (uint32_t)rnd(m, 1, max / line ? max / line : 1); /* whole lines */
                break;
        case 5: /* one line, give or take a block */
                n = chance(m, 50) ? line + 1 : line - 1;
                break;
        case 6:
        case 7:
                n = (uint32_t)rnd(m, 1, line > 1 ? line - 1 : 1); /* a partial line */
                break;
        default:
                n = (uint32_t)rnd(m, 1, max);
                break;
        }
        return n < 1 ? 1 : n > max ? max : n;
}

static uint64_t pick_lba(struct model *m, uint32_t n)
{
        uint64_t line = m->line_blocks, lines = m->blocks / line, lba;
        switch (rnd(m, 0, 9)) {
        case 0:
        case 1:
        case 2:
        case 3: /* the hot region, often on or next to its line boundaries */
                lba = m->hot_lba + rnd(m, 0, m->hot_blocks - 1);
                if (chance(m, 40))
                        lba -= (lba - m->hot_lba) % line;
                break;
        case 4:
        case 5:
                lba = rnd(m, 0, lines - 1) * line; /* on a line boundary */
                break;
        case 6: /* ending on a line boundary */
                lba = rnd(m, 1, lines) * line;
                lba = lba > n ? lba - n : 0;
                break;
        case 7: /* just past a line boundary */
                lba = rnd(m, 0, lines - 1) * line + rnd(m, 1, 3);
                break;
        default:
                lba = rnd(m, 0, m->blocks - 1);
                break;
        }
        return lba + n > m->blocks ? m->blocks - n : lba;
}

/* After each I/O op: now and then inject faults or force a flush. A flush never goes out
 * while every write fails: a cache may retry its destage until the faults stop, and the
 * status socket serves one request at a time, so the clearing request would wait behind it. */
/* With --crash-cmd the last tenth of the ops neither syncs nor flushes, so the crash finds
 * acknowledged writes that only the cache (and its log) holds. */
static bool before_crash(const struct model *m)
{
        return m->o->crash_cmd && m->o->ops && m->next_op > m->o->ops / 10 * 9;
}

static void maybe_status_op(struct model *m)
{
        uint64_t r = srnd(m, 0, 599);
        if (m->st.fd < 0 || m->st.pending != S_NONE || before_crash(m))
                return;
        if (!m->armed && !m->o->no_faults && r < 3)
                send_arm(m);
        else if (r >= 598 && !m->armed_always)
                send_flush(m, false);
}

/* Faults stay on for a number of ops or some time, whichever ends first: time, because a
 * cache may hold every command until its backend works again. */
static void maybe_clear(struct model *m)
{
        if (m->armed && m->st.pending == S_NONE &&
            (m->next_op >= m->arm_until_op || now_ns() >= m->arm_until_ns))
                send_clear(m);
}

static void next_io(struct model *m, struct slot *s)
{
        unsigned r = (unsigned)rnd(m, 0, 99);
        s->kind = r < 45 ? K_WRITE : r < 48 ? K_SYNC : K_READ;
        s->fua = s->kind == K_WRITE && chance(m, 10);
        if (before_crash(m) && (s->kind == K_SYNC || s->fua)) {
                s->kind = s->kind == K_SYNC ? K_READ : K_WRITE;
                s->fua = false;
        }
        s->cdb16 = chance(m, 50);
        s->final = false;
        s->n = pick_size(m);
        s->lba = pick_lba(m, s->n);
        issue(m, s);
}

/* ---------------- the event loop ---------------- */

static void service(struct model *m, int timeout_ms)
{
        struct pollfd p[2] = {
            {.fd = iscsi_get_fd(m->ctx), .events = (short)iscsi_which_events(m->ctx)},
            {.fd = m->st.fd, .events = POLLIN}};
        if (m->st.out_off < m->st.out_len)
                p[1].events |= POLLOUT;
        int nfds = m->st.fd >= 0 ? 2 : 1;
        int n = poll(p, (nfds_t)nfds, timeout_ms);
        if (n < 0 && errno != EINTR)
                die(m, "poll: %s", strerror(errno));
        if (iscsi_service(m->ctx, n > 0 ? p[0].revents : 0) < 0)
                die(m, "iSCSI connection failed: %s", iscsi_get_error(m->ctx));
        if (!iscsi_is_logged_in(m->ctx))
                die(m, "iSCSI session lost: %s", iscsi_get_error(m->ctx));
        if (nfds == 2 && n > 0 && p[1].revents)
                status_service(m, p[1].revents);
        if ((m->inflight || m->st.pending) &&
            now_ns() - m->last_progress_ns > STUCK_S * 1000000000ull)
                die(m, "no completion for %d s with %u commands in flight (target stuck?)", STUCK_S,
                    m->inflight);
}

/* Until every command and status request has completed. */
static void drain(struct model *m)
{
        m->last_progress_ns = now_ns();
        while (m->inflight || m->st.pending) {
                maybe_clear(m);
                service(m, 100);
        }
}

static bool time_left(struct model *m, uint64_t start)
{
        if (m->o->ops)
                return m->next_op < m->o->ops;
        return (double)(now_ns() - start) / 1e9 < m->o->seconds;
}

static void run_random(struct model *m, bool keep_in_flight)
{
        uint64_t start = now_ns(), report = start;
        m->last_progress_ns = start;
        while (time_left(m, start)) {
                struct slot *s;
                while (m->inflight < m->o->qd && time_left(m, start) && (s = free_slot(m))) {
                        next_io(m, s);
                        maybe_status_op(m);
                }
                maybe_clear(m);
                service(m, 100);
                if (!m->o->ops && now_ns() - report > 10000000000ull) {
                        report = now_ns();
                        printf("iscsi_model: %" PRIu64 " ops so far\n", m->next_op);
                        fflush(stdout);
                }
        }
        if (!keep_in_flight)
                drain(m);
}

static int connect_lun(struct model *m);

/* --crash-cmd: the target is killed and started again (by the command) under the commands in
 * flight. None of them completes: a write in flight may or may not have happened (as a failed
 * one); everything acknowledged before must still be there. */
static void crash_and_restart(struct model *m)
{
        unsigned lost = m->inflight;
        printf("iscsi_model: crash with %u commands in flight: %s\n", lost, m->o->crash_cmd);
        int rc = system(m->o->crash_cmd);
        if (rc != 0)
                die(m, "--crash-cmd failed (status %d)", rc);
        m->crashed = true;
        iscsi_destroy_context(m->ctx);
        m->ctx = NULL;
        m->tick++;
        for (unsigned i = 0; i < m->o->qd; i++) {
                struct slot *s = &m->slots[i];
                if (s->kind == K_WRITE)
                        for (uint32_t k = 0; k < s->n; k++)
                                complete_write_block(m, &m->blk[s->lba + k], s->op, s->issue,
                                                     false);
                if (s->kind != K_NONE)
                        release(m, s, NULL);
        }
        if (m->st.fd >= 0)
                close(m->st.fd);
        m->st = (struct status_conn){.fd = -1};
        m->armed = m->armed_always = false;
        m->crashed = false;
        update_min_pending(m);
        if (connect_lun(m) || (m->o->status_socket && status_connect(m)))
                die(m, "cannot reconnect after the crash");
        printf("iscsi_model: reconnected; %u commands were lost in flight\n", lost);
}

/* Prepares a free slot (keeping its buffer) for a command of the final phase. */
static struct slot *final_slot(struct model *m, enum kind kind, bool must_succeed)
{
        struct slot *s = free_slot(m);
        unsigned char *buf = s->buf;
        *s = (struct slot){.kind = kind, .final = must_succeed, .buf = buf, .cdb16 = true};
        return s;
}

static void sync_and_flush(struct model *m, bool must_succeed)
{
        struct slot *s = final_slot(m, K_SYNC, must_succeed);
        s->cdb16 = chance(m, 50);
        issue(m, s);
        drain(m);
        if (m->st.fd >= 0) {
                send_flush(m, must_succeed);
                drain(m);
        }
}

/* Reads the whole range (every block gets pinned to what it holds). */
static void read_all(struct model *m)
{
        uint64_t lba = 0;
        while (lba < m->blocks || m->inflight) {
                struct slot *s;
                while (lba < m->blocks && free_slot(m)) {
                        uint64_t left = m->blocks - lba;
                        s = final_slot(m, K_READ, true);
                        s->n = left < m->max_blocks ? (uint32_t)left : m->max_blocks;
                        s->lba = lba;
                        issue(m, s);
                        lba += s->n;
                }
                service(m, 100);
        }
}

/* After the final read and flush every block has one value; the backend must hold exactly it. */
static void compare_backend(struct model *m)
{
        if (m->backend_fd < 0)
                return;
        for (uint64_t lba = 0; lba < m->blocks; lba++) {
                struct block *b = &m->blk[lba];
                unsigned current = 0;
                for (uint32_t i = 0; i < b->n; i++)
                        current += b->c[i].until == INF;
                if (current != 1)
                        die(m, "LBA %" PRIu64 ": the final read left %u values", lba, current);
        }
        check_backend(m, 0, (uint32_t)m->blocks, INF - 1, "the final flush", m->next_op);
}

/* ---------------- setup ---------------- */

static int connect_lun(struct model *m)
{
        m->ctx = iscsi_create_context(m->o->initiator);
        if (!m->ctx)
                return -1;
        struct iscsi_url *u = iscsi_parse_full_url(m->ctx, m->o->url);
        if (!u) {
                fprintf(stderr, "iscsi_model: bad URL: %s\n", iscsi_get_error(m->ctx));
                return -1;
        }
        m->lun = u->lun;
        snprintf(m->target, sizeof(m->target), "%s", u->target);
        iscsi_set_session_type(m->ctx, ISCSI_SESSION_NORMAL);
        iscsi_set_noautoreconnect(m->ctx, 1);
        iscsi_set_header_digest(m->ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
        int rc = iscsi_full_connect_sync(m->ctx, u->portal, u->lun);
        if (rc)
                fprintf(stderr, "iscsi_model: login to %s failed: %s\n", u->portal,
                        iscsi_get_error(m->ctx));
        iscsi_destroy_url(u);
        return rc ? -1 : 0;
}

static int read_geometry(struct model *m)
{
        struct scsi_task *t = iscsi_readcapacity16_sync(m->ctx, m->lun);
        struct scsi_readcapacity16 *rc16 = NULL;
        if (t && t->status == SCSI_STATUS_GOOD)
                rc16 = scsi_datain_unmarshall(t);
        if (rc16 && rc16->block_length >= SECTOR && rc16->block_length % SECTOR == 0) {
                m->blksz = rc16->block_length;
                m->lun_blocks = rc16->returned_lba + 1;
        }
        if (t)
                scsi_free_scsi_task(t);
        if (!m->blksz) {
                fprintf(stderr, "iscsi_model: READ CAPACITY(16) failed: %s\n",
                        iscsi_get_error(m->ctx));
                return -1;
        }
        if (m->o->block_size && m->o->block_size != m->blksz) {
                fprintf(stderr, "iscsi_model: the LUN has %u-byte blocks, not %u\n", m->blksz,
                        m->o->block_size);
                return -1;
        }
        return 0;
}

static uint32_t max_transfer_blocks(struct model *m)
{
        struct scsi_task *t =
            iscsi_inquiry_sync(m->ctx, m->lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 255);
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

/* WCE of the caching mode page: false means every write must be on the backend when acked. */
static bool write_cache_enabled(struct model *m)
{
        struct scsi_task *t = iscsi_modesense6_sync(m->ctx, m->lun, 1, SCSI_MODESENSE_PC_CURRENT,
                                                    SCSI_MODEPAGE_CACHING, 0, 255);
        bool wce = true;
        if (t && t->status == SCSI_STATUS_GOOD) {
                struct scsi_mode_sense *ms = scsi_datain_unmarshall(t);
                for (struct scsi_mode_page *p = ms ? ms->pages : NULL; p; p = p->next)
                        if (p->page_code == SCSI_MODEPAGE_CACHING)
                                wce = p->caching.wce;
        }
        if (t)
                scsi_free_scsi_task(t);
        return wce;
}

static int setup_range(struct model *m)
{
        const struct opts *o = m->o;
        uint64_t want = o->lun_size ? o->lun_size : 64ull << 20;
        m->blocks = want / m->blksz;
        if (m->blocks > m->lun_blocks) {
                if (o->lun_size) {
                        fprintf(stderr, "iscsi_model: --lun-size is larger than the LUN\n");
                        return -1;
                }
                m->blocks = m->lun_blocks;
        }
        m->line_blocks = LINE_BYTES > m->blksz ? LINE_BYTES / m->blksz : 1;
        uint32_t xfer = max_transfer_blocks(m);
        m->max_blocks = o->max_blocks ? o->max_blocks : 4 * m->line_blocks;
        if (xfer && m->max_blocks > xfer)
                m->max_blocks = xfer;
        if (m->max_blocks > 65535)
                m->max_blocks = 65535; /* WRITE(10) */
        if (m->blocks < 2 * (uint64_t)m->line_blocks || m->blocks < 2 * (uint64_t)m->max_blocks) {
                fprintf(stderr, "iscsi_model: range of %" PRIu64 " blocks is too small\n",
                        m->blocks);
                return -1;
        }
        uint64_t lines = m->blocks / m->line_blocks;
        uint64_t hot_lines = lines < HOT_LINES ? lines : HOT_LINES;
        m->hot_blocks = (uint32_t)(hot_lines * m->line_blocks);
        m->hot_lba = rnd(m, 0, lines - hot_lines) * m->line_blocks;
        m->write_through = !write_cache_enabled(m);
        return 0;
}

static int alloc_model(struct model *m)
{
        size_t slot_bytes = (size_t)m->max_blocks * m->blksz;
        m->blk = calloc(m->blocks, sizeof(*m->blk));
        m->initial = malloc(m->blocks * m->blksz);
        m->scratch = malloc(m->blksz);
        m->filebuf = malloc(slot_bytes);
        m->slots = calloc(m->o->qd, sizeof(*m->slots));
        if (!m->blk || !m->initial || !m->scratch || !m->filebuf || !m->slots)
                return -1;
        for (unsigned i = 0; i < m->o->qd; i++)
                if (!(m->slots[i].buf = malloc(slot_bytes)))
                        return -1;
        for (uint64_t lba = 0; lba < m->blocks; lba++) {
                struct block *b = &m->blk[lba];
                b->cap = 4;
                b->c = malloc(b->cap * sizeof(*b->c));
                if (!b->c)
                        return -1;
                b->c[0] = (struct cand){.wid = 0, .until = INF, .state = C_OK};
                b->n = 1;
        }
        return 0;
}

/* The range as it is before the test: what "op 0" means. */
static int read_initial(struct model *m)
{
        for (uint64_t lba = 0; lba < m->blocks; lba += m->max_blocks) {
                uint64_t left = m->blocks - lba;
                uint32_t n = left < m->max_blocks ? (uint32_t)left : m->max_blocks;
                struct scsi_task *t = iscsi_read16_sync(m->ctx, m->lun, lba, n * m->blksz,
                                                        (int)m->blksz, 0, 0, 0, 0, 0);
                bool ok =
                    t && t->status == SCSI_STATUS_GOOD && t->datain.size == (int)(n * m->blksz);
                if (ok)
                        memcpy(m->initial + lba * m->blksz, t->datain.data, (size_t)n * m->blksz);
                if (t)
                        scsi_free_scsi_task(t);
                if (!ok) {
                        fprintf(stderr, "iscsi_model: initial read at LBA %" PRIu64 " failed: %s\n",
                                lba, iscsi_get_error(m->ctx));
                        return -1;
                }
        }
        return 0;
}

static int open_backend(struct model *m)
{
        m->backend_fd = -1;
        if (!m->o->backend_file)
                return 0;
        m->backend_fd = open(m->o->backend_file, O_RDONLY | O_CLOEXEC);
        if (m->backend_fd < 0) {
                fprintf(stderr, "iscsi_model: %s: %s\n", m->o->backend_file, strerror(errno));
                return -1;
        }
        return 0;
}

static void free_model(struct model *m)
{
        if (m->ctx) {
                if (iscsi_is_logged_in(m->ctx))
                        iscsi_logout_sync(m->ctx);
                iscsi_destroy_context(m->ctx);
        }
        for (uint64_t lba = 0; m->blk && lba < m->blocks; lba++)
                free(m->blk[lba].c);
        for (unsigned i = 0; m->slots && i < m->o->qd; i++)
                free(m->slots[i].buf);
        free(m->blk);
        free(m->slots);
        free(m->initial);
        free(m->scratch);
        free(m->filebuf);
        free(m->windows);
        if (m->backend_fd >= 0)
                close(m->backend_fd);
        if (m->st.fd >= 0)
                close(m->st.fd);
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
        if (*end == 'k' || *end == 'K')
                shift = 10;
        else if (*end == 'm' || *end == 'M')
                shift = 20;
        else if (*end == 'g' || *end == 'G')
                shift = 30;
        if (shift)
                end++;
        if (*end && strcasecmp(end, "b") && strcasecmp(end, "ib"))
                return -1;
        *out = (uint64_t)v << shift;
        return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        *out = strtoull(s, &end, 10);
        return errno || end == s || *end || s[0] == '-' ? -1 : 0;
}

static void usage(FILE *f)
{
        fprintf(
            f,
            "usage: iscsi_model [options] --url iscsi://HOST:PORT/IQN/LUN\n"
            "  --seed N             random seed (default %u); the run is a function of it\n"
            "  --ops N              number of random ops (default 20000)\n"
            "  --seconds S          run for S seconds instead of --ops\n"
            "  --qd N               commands in flight (default 16, at most 256)\n"
            "  --lun-size SIZE      bytes of the LUN used from LBA 0 (default: LUN, at most "
            "64M)\n"
            "  --block-size N       expected logical block size (checked)\n"
            "  --max-blocks N       largest read/write in blocks (default 4 cache lines)\n"
            "  --status-socket PATH the gateway's status socket: flush and fault ops\n"
            "  --no-faults          with --status-socket: flush ops only\n"
            "  --crash-cmd CMD      at the end, with commands in flight, run CMD (it must kill\n"
            "                       the target and start it again), reconnect, then check\n"
            "                       that every acknowledged write survived\n"
            "  --backend-file PATH  the file backend's image, checked against the model\n"
            "  --initiator-name IQN (default iqn.2024-01.org.isergw:model)\n"
            "  --verbose            print every op\n"
            "Exit status: 0 the LUN behaved, 1 a mismatch or unexpected error, 2 usage.\n",
            DEFAULT_SEED);
}

static const struct option long_opts[] = {
    {"url", required_argument, NULL, 'u'},
    {"seed", required_argument, NULL, 's'},
    {"ops", required_argument, NULL, 'o'},
    {"seconds", required_argument, NULL, 'S'},
    {"qd", required_argument, NULL, 'q'},
    {"lun-size", required_argument, NULL, 'l'},
    {"block-size", required_argument, NULL, 'b'},
    {"max-blocks", required_argument, NULL, 'm'},
    {"status-socket", required_argument, NULL, 'x'},
    {"backend-file", required_argument, NULL, 'f'},
    {"no-faults", no_argument, NULL, 'n'},
    {"crash-cmd", required_argument, NULL, 'K'},
    {"initiator-name", required_argument, NULL, 'i'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int apply_opt(struct opts *o, int c, const char *a)
{
        uint64_t v;
        char *end;
        switch (c) {
        case 'u':
                o->url = a;
                return 0;
        case 's':
                return parse_u64(a, &o->seed);
        case 'o':
                return parse_u64(a, &o->ops) || o->ops == 0 ? -1 : 0;
        case 'S':
                o->seconds = strtod(a, &end);
                o->ops = 0;
                return *end || end == a || !(o->seconds > 0) ? -1 : 0;
        case 'q':
                if (parse_u64(a, &v) || v < 1 || v > 256)
                        return -1;
                o->qd = (unsigned)v;
                return 0;
        case 'l':
                return parse_size(a, &o->lun_size) || o->lun_size == 0 ? -1 : 0;
        case 'b':
                if (parse_u64(a, &v) || v < SECTOR || v % SECTOR || v > 65536)
                        return -1;
                o->block_size = (uint32_t)v;
                return 0;
        case 'm':
                if (parse_u64(a, &v) || v < 1 || v > 65535)
                        return -1;
                o->max_blocks = (uint32_t)v;
                return 0;
        case 'x':
                o->status_socket = a;
                return 0;
        case 'f':
                o->backend_file = a;
                return 0;
        case 'n':
                o->no_faults = true;
                return 0;
        case 'K':
                o->crash_cmd = a;
                return 0;
        case 'i':
                o->initiator = a;
                return 0;
        case 'v':
                o->verbose = true;
                return 0;
        default:
                return -1;
        }
}

/* 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(struct opts *o, int argc, char **argv)
{
        *o = (struct opts){.initiator = "iqn.2024-01.org.isergw:model",
                           .seed = DEFAULT_SEED,
                           .ops = 20000,
                           .qd = 16};
        int c, idx = 0;
        while ((c = getopt_long(argc, argv, "", long_opts, &idx)) != -1) {
                if (c == 'h') {
                        usage(stdout);
                        return 1;
                }
                if (c == '?' || apply_opt(o, c, optarg)) {
                        if (c != '?')
                                fprintf(stderr, "iscsi_model: bad value for --%s: %s\n",
                                        long_opts[idx].name, optarg ? optarg : "");
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

/* ---------------- main ---------------- */

static void print_summary(const struct model *m, double secs)
{
        printf("iscsi_model: %" PRIu64 " ops in %.1f s: %" PRIu64 " writes (%" PRIu64
               " FUA, %" PRIu64 " failed), %" PRIu64 " reads (%" PRIu64 " failed), %" PRIu64
               " syncs (%" PRIu64 " failed), %" PRIu64 " flushes (%" PRIu64 " failed), %" PRIu64
               " fault windows, %" PRIu64 " backend checks, %" PRIu64
               " torn blocks seen in motion, %.1f MiB "
               "written, %.1f MiB read\n",
               m->next_op, secs, m->n_write, m->n_fua, m->f_write, m->n_read, m->f_read, m->n_sync,
               m->f_sync, m->n_flush, m->f_flush, m->n_arm, m->backend_checks, m->torn,
               (double)m->bytes_written / 1048576.0, (double)m->bytes_read / 1048576.0);
}

static int setup(struct model *m)
{
        if (connect_lun(m) || read_geometry(m) || setup_range(m) || alloc_model(m) ||
            read_initial(m) || open_backend(m))
                return -1;
        if (m->o->status_socket && status_connect(m))
                return -1;
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o;
        struct model m = {.o = &o, .st.fd = -1, .backend_fd = -1, .check_min_wid = UINT64_MAX};
        int rc = parse_args(&o, argc, argv);
        if (rc)
                return rc > 0 ? 0 : 2;
        m.rng = o.seed;
        m.srng = o.seed ^ 0x5ca1ab1e0ddba11ull;
        m.nonce = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
        m.nonce = splitmix64(&m.nonce);
        m.next_op = 1;
        m.tick = 1;
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (setup(&m)) {
                free_model(&m);
                return 1;
        }
        printf("iscsi_model: seed %" PRIu64 ", %s, qd %u, %" PRIu64 " blocks of %u bytes, up to "
               "%u per command, hot region LBA %" PRIu64 " +%u, write cache %s%s%s\n",
               o.seed, o.ops ? "bounded by ops" : "bounded by time", o.qd, m.blocks, m.blksz,
               m.max_blocks, m.hot_lba, m.hot_blocks, m.write_through ? "off" : "on",
               o.status_socket ? (o.no_faults ? ", flushes" : ", flushes and faults") : "",
               o.backend_file ? ", backend file checked" : "");
        uint64_t start = now_ns();
        run_random(&m, o.crash_cmd != NULL);
        if (o.crash_cmd)
                crash_and_restart(&m);
        /* Final phase: flush (may fail while faults are on), stop faults, read, flush, compare. */
        if (m.armed_always) {
                send_clear(&m);
                drain(&m);
        }
        sync_and_flush(&m, false);
        if (m.n_arm) {
                send_clear(&m);
                drain(&m);
        }
        read_all(&m);
        sync_and_flush(&m, true);
        compare_backend(&m);
        print_summary(&m, (double)(now_ns() - start) / 1e9);
        printf("model: PASS (seed %" PRIu64 ")\n", o.seed);
        free_model(&m);
        return 0;
}
