/* The load loop: N sessions (one libiscsi context each), QD slots per session, one poll loop.
 * Each slot owns a buffer of --bs bytes that libiscsi reads into / sends from directly
 * (iov tasks), and is resubmitted from its own completion callback. */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "libiscsi.h"

#define STALL_NS          (30ull * 1000000000ull)
#define POLL_MS           100
#define MAX_VERIFY_CHUNKS (64ull << 20)
#define MAX_REPORTS       10
#define PICK_TRIES        1024

struct bench_run;
struct bench_session;

struct bench_slot {
        struct bench_session *sess;
        struct scsi_task *task;
        unsigned char *buf;
        struct scsi_iovec iov;
        uint64_t chunk;
        uint64_t t_submit;
        uint32_t gen; /* --verify: generation written, or expected on read (0: unknown) */
        int dir;
};

struct bench_session {
        struct bench_run *run;
        struct iscsi_context *ctx;
        int lun;
        int idx;
        uint64_t seq_first, seq_end, seq_next; /* sequential modes: this session's slice */
        struct bench_slot *slots;
};

enum bench_phase { PH_WARMUP, PH_MEASURE, PH_DRAIN, PH_DONE };

struct bench_run {
        const struct bench_opts *o;
        struct bench_stats *st;
        struct bench_session *sess;
        struct pollfd *pfd;
        unsigned char *bufs;
        uint32_t blksz;
        uint32_t chunk_blocks; /* LUN blocks per I/O */
        uint64_t lun_bytes, range, chunks;
        uint64_t rng;
        uint64_t run_id;
        uint32_t *gen_tab; /* --verify: last generation written per chunk (0: not this run) */
        uint8_t *busy;     /* --verify: chunk has a command in flight */
        uint32_t gen_next;
        enum bench_phase phase;
        uint64_t t_warm_end, t_measure, t_deadline, t_end, t_progress;
        uint64_t submitted_bytes;
        int inflight;
        bool stop;  /* no new submissions (error) */
        bool fatal; /* connection-level failure: leave the loop */
        struct rusage ru0;
        unsigned reports;
};

static inline uint64_t rng_next(uint64_t *s)
{
        uint64_t x = *s;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545f4914f6cdd1dull;
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
        return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

static uint64_t full_gen(const struct bench_run *r, uint32_t g)
{
        return (r->run_id << 32) | g;
}

static void set_fatal(struct bench_run *r)
{
        r->fatal = true;
        r->stop = true;
}

/* ---------------- sessions ---------------- */

static int session_open(struct bench_run *r, struct bench_session *s)
{
        const struct bench_opts *o = r->o;
        s->ctx = iscsi_create_context(o->initiator);
        if (!s->ctx) {
                fprintf(stderr, "isergw-bench: cannot create an iSCSI context\n");
                return -1;
        }
        struct iscsi_url *u = iscsi_parse_full_url(s->ctx, o->url);
        if (!u) {
                fprintf(stderr, "isergw-bench: bad URL '%s': %s\n", o->url,
                        iscsi_get_error(s->ctx));
                return -1;
        }
        s->lun = u->lun;
        iscsi_set_session_type(s->ctx, ISCSI_SESSION_NORMAL);
        iscsi_set_header_digest(s->ctx, ISCSI_HEADER_DIGEST_NONE);
        iscsi_set_isid_random(s->ctx, (uint32_t)(r->run_id & 0xffffff), (uint32_t)s->idx);
        iscsi_set_noautoreconnect(s->ctx, 1);
        int rc = iscsi_full_connect_sync(s->ctx, u->portal, u->lun);
        if (rc)
                fprintf(stderr, "isergw-bench: session %d: login to %s failed: %s\n", s->idx,
                        u->portal, iscsi_get_error(s->ctx));
        iscsi_destroy_url(u);
        return rc ? -1 : 0;
}

static int sessions_open(struct bench_run *r)
{
        for (int i = 0; i < r->o->sessions; i++) {
                r->sess[i].run = r;
                r->sess[i].idx = i;
                if (session_open(r, &r->sess[i]))
                        return -1;
        }
        return 0;
}

static void sessions_close(struct bench_run *r, bool logout)
{
        r->phase = PH_DONE;
        for (int i = 0; r->sess && i < r->o->sessions; i++) {
                struct iscsi_context *ctx = r->sess[i].ctx;
                if (!ctx)
                        continue;
                if (logout && iscsi_is_logged_in(ctx))
                        iscsi_logout_sync(ctx);
                iscsi_destroy_context(ctx);
                r->sess[i].ctx = NULL;
        }
}

static int read_capacity(struct bench_run *r, struct bench_session *s)
{
        struct scsi_task *t = iscsi_readcapacity16_sync(s->ctx, s->lun);
        struct scsi_readcapacity16 *rc16 = NULL;
        if (t && t->status == SCSI_STATUS_GOOD)
                rc16 = scsi_datain_unmarshall(t);
        if (!rc16 || rc16->block_length < 512 || (rc16->block_length & 7)) {
                fprintf(stderr, "isergw-bench: READ CAPACITY(16) failed (%s): %s\n",
                        !t     ? "no reply"
                        : rc16 ? "bad block size"
                               : "bad status",
                        iscsi_get_error(s->ctx));
                if (t)
                        scsi_free_scsi_task(t);
                return -1;
        }
        r->blksz = rc16->block_length;
        r->lun_bytes = (rc16->returned_lba + 1) * (uint64_t)rc16->block_length;
        scsi_free_scsi_task(t);
        return 0;
}

/* ---------------- geometry and buffers ---------------- */

static int check_geometry(const struct bench_run *r)
{
        const struct bench_opts *o = r->o;
        uint64_t slots = (uint64_t)o->qd * (uint64_t)o->sessions;
        if (o->bs % r->blksz) {
                fprintf(stderr,
                        "isergw-bench: --bs %" PRIu32 " is not a multiple of the LUN block "
                        "size %" PRIu32 "\n",
                        o->bs, r->blksz);
                return -1;
        }
        if (r->chunks < (uint64_t)o->sessions) {
                fprintf(stderr, "isergw-bench: range of %" PRIu64 " bytes is too small\n",
                        r->range);
                return -1;
        }
        if (o->verify && (r->chunks < 2 * slots || r->chunks > MAX_VERIFY_CHUNKS)) {
                fprintf(stderr,
                        "isergw-bench: --verify needs between %" PRIu64 " and %llu I/Os "
                        "of --bs in --range (have %" PRIu64 ")\n",
                        2 * slots, MAX_VERIFY_CHUNKS, r->chunks);
                return -1;
        }
        return 0;
}

static int setup_geometry(struct bench_run *r, struct bench_lun_info *li)
{
        const struct bench_opts *o = r->o;
        r->range = (o->range && o->range < r->lun_bytes) ? o->range : r->lun_bytes;
        r->chunk_blocks = o->bs / r->blksz;
        r->chunks = r->range / o->bs;
        li->blksz = r->blksz;
        li->lun_bytes = r->lun_bytes;
        li->range = r->chunks * o->bs;
        if (check_geometry(r))
                return -1;
        if (o->verify) {
                r->gen_tab = calloc(r->chunks, sizeof(*r->gen_tab));
                r->busy = calloc(r->chunks, 1);
                if (!r->gen_tab || !r->busy)
                        return -1;
        }
        return 0;
}

static void session_slots_init(struct bench_run *r, struct bench_session *s, unsigned char *buf)
{
        uint64_t per = r->chunks / (uint64_t)r->o->sessions;
        s->seq_first = per * (uint64_t)s->idx;
        s->seq_end = s->seq_first + per;
        s->seq_next = s->seq_first;
        for (int i = 0; i < r->o->qd; i++) {
                struct bench_slot *sl = &s->slots[i];
                sl->sess = s;
                sl->buf = buf + (size_t)i * r->o->bs;
                sl->iov.iov_base = sl->buf;
                sl->iov.iov_len = r->o->bs;
        }
}

static int slots_init(struct bench_run *r)
{
        const struct bench_opts *o = r->o;
        size_t per_sess = (size_t)o->qd * o->bs;
        void *p;
        if (posix_memalign(&p, 4096, per_sess * (size_t)o->sessions))
                return -1;
        r->bufs = p;
        if (o->verify)
                memset(r->bufs, 0, per_sess * (size_t)o->sessions);
        else
                pat_fill_noise(r->bufs, per_sess * (size_t)o->sessions, o->seed);
        for (int i = 0; i < o->sessions; i++) {
                r->sess[i].slots = calloc((size_t)o->qd, sizeof(struct bench_slot));
                if (!r->sess[i].slots)
                        return -1;
                session_slots_init(r, &r->sess[i], r->bufs + per_sess * (size_t)i);
        }
        return 0;
}

/* ---------------- choosing the next I/O ---------------- */

static int pick_dir(struct bench_run *r)
{
        switch (r->o->rw) {
        case BENCH_READ:
        case BENCH_RANDREAD:
                return BENCH_DIR_READ;
        case BENCH_WRITE:
        case BENCH_RANDWRITE:
                return BENCH_DIR_WRITE;
        default:
                return rng_below(&r->rng, 100) < (uint64_t)r->o->mix_read_pct ? BENCH_DIR_READ
                                                                              : BENCH_DIR_WRITE;
        }
}

static uint64_t next_chunk(struct bench_session *s)
{
        struct bench_run *r = s->run;
        if (bench_rw_random(r->o->rw))
                return rng_below(&r->rng, r->chunks);
        uint64_t c = s->seq_next++;
        if (s->seq_next >= s->seq_end)
                s->seq_next = s->seq_first;
        return c;
}

/* With --verify, never two commands on one chunk at once (the result would be undefined). */
static int pick_chunk(struct bench_session *s, uint64_t *out)
{
        const uint8_t *busy = s->run->busy;
        for (int i = 0; i < PICK_TRIES; i++) {
                uint64_t c = next_chunk(s);
                if (!busy || !busy[c]) {
                        *out = c;
                        return 0;
                }
        }
        return -1;
}

static void prepare_verify(struct bench_run *r, struct bench_slot *sl, uint64_t lba)
{
        r->busy[sl->chunk] = 1;
        if (sl->dir == BENCH_DIR_READ) {
                sl->gen = r->gen_tab[sl->chunk];
                memset(sl->buf, 0, r->o->bs);
                return;
        }
        if (++r->gen_next == 0)
                r->gen_next = 1;
        sl->gen = r->gen_next;
        pat_fill(sl->buf, r->blksz, lba, r->chunk_blocks, full_gen(r, sl->gen));
}

/* ---------------- submission and completion ---------------- */

static void io_done(struct iscsi_context *ctx, int status, void *command_data, void *priv);

static struct scsi_task *queue_task(struct bench_run *r, struct bench_slot *sl, uint64_t lba)
{
        struct bench_session *s = sl->sess;
        uint32_t bs = r->o->bs;
        if (sl->dir == BENCH_DIR_READ)
                return iscsi_read16_iov_task(s->ctx, s->lun, lba, bs, (int)r->blksz, 0, 0, 0, 0, 0,
                                             io_done, sl, &sl->iov, 1);
        return iscsi_write16_iov_task(s->ctx, s->lun, lba, NULL, bs, (int)r->blksz, 0, 0, 0, 0, 0,
                                      io_done, sl, &sl->iov, 1);
}

static void count_submit(struct bench_run *r)
{
        r->inflight++;
        if (r->phase != PH_MEASURE)
                return;
        r->submitted_bytes += r->o->bs;
        if (r->o->bytes && r->submitted_bytes >= r->o->bytes)
                r->phase = PH_DRAIN;
}

static int slot_submit(struct bench_slot *sl, uint64_t now)
{
        struct bench_run *r = sl->sess->run;
        if (pick_chunk(sl->sess, &sl->chunk)) {
                fprintf(stderr, "isergw-bench: no idle chunk found (range too small?)\n");
                set_fatal(r);
                return -1;
        }
        sl->dir = pick_dir(r);
        uint64_t lba = sl->chunk * r->chunk_blocks;
        if (r->busy)
                prepare_verify(r, sl, lba);
        sl->iov.iov_base = sl->buf;
        sl->iov.iov_len = r->o->bs;
        sl->t_submit = now;
        sl->task = queue_task(r, sl, lba);
        if (!sl->task) {
                fprintf(stderr, "isergw-bench: session %d: cannot queue a command: %s\n",
                        sl->sess->idx, iscsi_get_error(sl->sess->ctx));
                if (r->busy)
                        r->busy[sl->chunk] = 0;
                set_fatal(r);
                return -1;
        }
        count_submit(r);
        return 0;
}

static void report_mismatch(struct bench_run *r, uint64_t lba, enum pat_result pr, uint64_t expect,
                            uint64_t got)
{
        static const char *const what[] = {"ok", "all zeroes", "not our pattern",
                                           "wrong LBA, generation or contents"};
        r->st->vfy_mismatch++;
        if (r->reports++ >= MAX_REPORTS)
                return;
        fprintf(stderr,
                "isergw-bench: verify: LBA %" PRIu64 ": %s (expected generation %#" PRIx64
                ", found %#" PRIx64 ")\n",
                lba, what[pr], expect, got);
}

static void verify_read(struct bench_run *r, struct bench_slot *sl)
{
        uint64_t lba = sl->chunk * r->chunk_blocks;
        uint64_t expect = sl->gen ? full_gen(r, sl->gen) : 0;
        for (uint32_t i = 0; i < r->chunk_blocks; i++) {
                uint64_t got;
                enum pat_result pr = pat_check_block(sl->buf + (size_t)i * r->blksz, r->blksz,
                                                     lba + i, expect, &got);
                if (pr == PAT_OK)
                        r->st->vfy_checked++;
                else if (!expect && pr != PAT_MISMATCH)
                        r->st->vfy_unchecked++;
                else
                        report_mismatch(r, lba + i, pr, expect, got);
        }
}

static void io_ok(struct bench_run *r, struct bench_slot *sl, uint64_t now)
{
        struct bench_stats *st = r->st;
        if (r->busy && sl->dir == BENCH_DIR_READ)
                verify_read(r, sl);
        else if (r->busy)
                r->gen_tab[sl->chunk] = sl->gen;
        st->ops[sl->dir]++;
        st->bytes[sl->dir] += r->o->bs;
        hist_add(&st->lat[sl->dir], now - sl->t_submit);
}

static void io_failed(struct bench_run *r, struct bench_slot *sl, int status)
{
        r->st->errors++;
        r->stop = true;
        if (r->busy && sl->dir == BENCH_DIR_WRITE)
                r->gen_tab[sl->chunk] = 0; /* contents now unknown */
        if (r->reports++ >= MAX_REPORTS)
                return;
        fprintf(stderr, "isergw-bench: session %d: %s at LBA %" PRIu64 " failed: status %#x: %s\n",
                sl->sess->idx, sl->dir == BENCH_DIR_READ ? "read" : "write",
                sl->chunk * r->chunk_blocks, (unsigned)status, iscsi_get_error(sl->sess->ctx));
}

static bool transfer_complete(const struct scsi_task *t)
{
        return t->residual_status == SCSI_RESIDUAL_NO_RESIDUAL || t->residual == 0;
}

static void io_done(struct iscsi_context *ctx, int status, void *command_data, void *priv)
{
        struct bench_slot *sl = priv;
        struct bench_run *r = sl->sess->run;
        struct scsi_task *task = sl->task;
        (void)ctx;
        (void)command_data;
        sl->task = NULL;
        r->inflight--;
        if (r->phase == PH_DONE) { /* teardown: libiscsi cancels what is left */
                scsi_free_scsi_task(task);
                return;
        }
        uint64_t now = bench_now_ns();
        r->t_progress = now;
        if (status == SCSI_STATUS_GOOD && transfer_complete(task))
                io_ok(r, sl, now);
        else
                io_failed(r, sl, status == SCSI_STATUS_GOOD ? -1 : status);
        scsi_free_scsi_task(task);
        if (r->busy)
                r->busy[sl->chunk] = 0;
        if (r->phase == PH_MEASURE && now >= r->t_deadline)
                r->phase = PH_DRAIN;
        if (!r->stop && r->phase <= PH_MEASURE)
                slot_submit(sl, now);
}

/* ---------------- phases and the poll loop ---------------- */

static void begin_measure(struct bench_run *r, uint64_t now)
{
        struct bench_stats *st = r->st;
        uint64_t errors = st->errors, mismatches = st->vfy_mismatch; /* warm-up failures count */
        memset(st, 0, sizeof(*st));
        st->errors = errors;
        st->vfy_mismatch = mismatches;
        r->t_measure = now;
        r->t_deadline = r->o->time_s > 0 ? now + (uint64_t)(r->o->time_s * 1e9) : UINT64_MAX;
        getrusage(RUSAGE_SELF, &r->ru0);
        r->phase = PH_MEASURE;
}

static double tv_diff(struct timeval a, struct timeval b)
{
        return (double)(a.tv_sec - b.tv_sec) + (double)(a.tv_usec - b.tv_usec) / 1e6;
}

static void end_measure(struct bench_run *r, uint64_t now)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        r->t_end = now;
        r->st->elapsed_s = (double)(now - r->t_measure) / 1e9;
        r->st->cpu_user_s = tv_diff(ru.ru_utime, r->ru0.ru_utime);
        r->st->cpu_sys_s = tv_diff(ru.ru_stime, r->ru0.ru_stime);
        r->phase = PH_DONE;
}

static void update_phase(struct bench_run *r, uint64_t now)
{
        if (r->phase == PH_WARMUP && (now >= r->t_warm_end || r->stop))
                begin_measure(r, now);
        if (r->phase == PH_MEASURE && (now >= r->t_deadline || r->stop))
                r->phase = PH_DRAIN;
        if (r->phase == PH_DRAIN && r->inflight == 0)
                end_measure(r, now);
        if (r->inflight && now - r->t_progress > STALL_NS) {
                fprintf(stderr,
                        "isergw-bench: no completion for %llu s with %d commands in flight\n",
                        STALL_NS / 1000000000ull, r->inflight);
                set_fatal(r);
        }
}

static void start_io(struct bench_run *r)
{
        uint64_t now = bench_now_ns();
        r->t_progress = now;
        r->t_warm_end = now + (uint64_t)(r->o->warmup_s * 1e9);
        r->phase = PH_WARMUP;
        if (r->o->warmup_s <= 0)
                begin_measure(r, now);
        for (int i = 0; i < r->o->sessions; i++)
                for (int q = 0; q < r->o->qd && r->phase <= PH_MEASURE && !r->stop; q++)
                        slot_submit(&r->sess[i].slots[q], now);
}

static int service_ready(struct bench_run *r)
{
        for (int i = 0; i < r->o->sessions; i++) {
                if (!r->pfd[i].revents)
                        continue;
                if (iscsi_service(r->sess[i].ctx, r->pfd[i].revents) < 0) {
                        fprintf(stderr, "isergw-bench: session %d: %s\n", i,
                                iscsi_get_error(r->sess[i].ctx));
                        set_fatal(r);
                        return -1;
                }
        }
        return 0;
}

static int run_loop(struct bench_run *r)
{
        nfds_t n = (nfds_t)r->o->sessions;
        while (r->phase != PH_DONE && !r->fatal) {
                for (nfds_t i = 0; i < n; i++) {
                        r->pfd[i].fd = iscsi_get_fd(r->sess[i].ctx);
                        r->pfd[i].events = (short)iscsi_which_events(r->sess[i].ctx);
                        r->pfd[i].revents = 0;
                }
                int rc = poll(r->pfd, n, POLL_MS);
                if (rc < 0 && errno != EINTR) {
                        perror("isergw-bench: poll");
                        set_fatal(r);
                }
                if (rc > 0)
                        service_ready(r);
                update_phase(r, bench_now_ns());
        }
        return r->fatal ? -1 : 0;
}

/* ---------------- entry point ---------------- */

static int run_init(struct bench_run *r, const struct bench_opts *o, struct bench_stats *st)
{
        uint64_t s = o->seed ^ bench_now_ns() ^ ((uint64_t)getpid() << 32);
        r->o = o;
        r->st = st;
        r->run_id = bench_splitmix64(&s) & 0xffffffffull;
        s = o->seed;
        r->rng = bench_splitmix64(&s) | 1;
        r->sess = calloc((size_t)o->sessions, sizeof(*r->sess));
        r->pfd = calloc((size_t)o->sessions, sizeof(*r->pfd));
        return (r->sess && r->pfd) ? 0 : -1;
}

static void run_free(struct bench_run *r)
{
        for (int i = 0; r->sess && i < r->o->sessions; i++)
                free(r->sess[i].slots);
        free(r->sess);
        free(r->pfd);
        free(r->bufs);
        free(r->gen_tab);
        free(r->busy);
        free(r);
}

int bench_run(const struct bench_opts *o, struct bench_stats *st, struct bench_lun_info *li)
{
        struct bench_run *r = calloc(1, sizeof(*r));
        int rc = -1;
        if (!r)
                return -1;
        memset(st, 0, sizeof(*st));
        memset(li, 0, sizeof(*li));
        if (run_init(r, o, st) == 0 && sessions_open(r) == 0 &&
            read_capacity(r, &r->sess[0]) == 0 && setup_geometry(r, li) == 0 &&
            slots_init(r) == 0) {
                start_io(r);
                rc = run_loop(r);
        }
        sessions_close(r, rc == 0);
        run_free(r);
        return rc;
}
