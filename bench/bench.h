/* isergw-bench: iSCSI load generator on libiscsi's asynchronous API. Shared declarations. */
#ifndef ISERGW_BENCH_H
#define ISERGW_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum bench_rw {
        BENCH_READ,      /* sequential read */
        BENCH_WRITE,     /* sequential write */
        BENCH_RANDREAD,  /* random read */
        BENCH_RANDWRITE, /* random write */
        BENCH_RANDRW,    /* random, --mix percent reads */
        BENCH_RW,        /* sequential, --mix percent reads */
};

enum { BENCH_DIR_READ = 0, BENCH_DIR_WRITE = 1 };

struct bench_opts {
        const char *url;
        const char *initiator;
        enum bench_rw rw;
        int mix_read_pct;
        uint32_t bs;
        int qd;
        int sessions;
        double time_s;  /* 0: no time limit (needs --bytes) */
        uint64_t bytes; /* 0: no byte limit */
        double warmup_s;
        uint64_t range; /* 0: whole LUN */
        uint64_t seed;
        bool verify;
        bool json;
        bool memcpy_mode;
};

/* ---- options (opts.c) ---- */
/* Returns 0 to run, 1 when --help/--version was handled, -1 on a usage error. */
int bench_parse_args(struct bench_opts *o, int argc, char **argv);
int bench_parse_size(const char *s, uint64_t *out);
const char *bench_rw_name(enum bench_rw rw);
bool bench_rw_random(enum bench_rw rw);

/* ---- log-linear latency histogram (hist.c), values in nanoseconds ---- */
#define HIST_SUB_BITS  7
#define HIST_SUB       (1u << HIST_SUB_BITS)
#define HIST_MAX_SHIFT 40
#define HIST_BUCKETS   (HIST_MAX_SHIFT * (HIST_SUB / 2) + HIST_SUB)

struct hist {
        uint64_t count;
        uint64_t sum;
        uint64_t max;
        uint64_t b[HIST_BUCKETS];
};

void hist_reset(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
uint64_t hist_percentile(const struct hist *h, double pct);
double hist_mean(const struct hist *h);

/* ---- verification pattern (pattern.c) ---- */
enum pat_result {
        PAT_OK,        /* our pattern, self-consistent, generation as expected */
        PAT_UNWRITTEN, /* all zeroes */
        PAT_FOREIGN,   /* not written by a verifying isergw-bench */
        PAT_MISMATCH,  /* ours but wrong LBA, wrong generation or damaged */
};

void pat_fill(unsigned char *buf, uint32_t blksz, uint64_t lba, uint32_t nblocks, uint64_t gen);
void pat_fill_noise(unsigned char *buf, size_t len, uint64_t seed);
/* expect_gen == 0: any generation is accepted. *got_gen gets the generation found. */
enum pat_result pat_check_block(const unsigned char *blk, uint32_t blksz, uint64_t lba,
                                uint64_t expect_gen, uint64_t *got_gen);

/* ---- results ---- */
struct bench_stats {
        uint64_t ops[2];
        uint64_t bytes[2];
        struct hist lat[2];
        uint64_t errors;
        uint64_t vfy_checked;   /* blocks that matched */
        uint64_t vfy_unchecked; /* blocks with no pattern (never written by a verifying run) */
        uint64_t vfy_mismatch;  /* blocks that did not match */
        double elapsed_s;
        double cpu_user_s;
        double cpu_sys_s;
};

struct bench_lun_info {
        uint32_t blksz;
        uint64_t lun_bytes;
        uint64_t range;
};

/* ---- engine (engine.c) ---- */
/* Runs the workload; fills *st and *li. Returns 0 if the run completed (even with I/O errors,
 * which are counted in st), -1 on a setup or connection failure. */
int bench_run(const struct bench_opts *o, struct bench_stats *st, struct bench_lun_info *li);

/* ---- output (report.c) ---- */
void bench_report_text(const struct bench_opts *o, const struct bench_lun_info *li,
                       const struct bench_stats *st);
int bench_report_json(const struct bench_opts *o, const struct bench_lun_info *li,
                      const struct bench_stats *st);

/* ---- memcpy bandwidth (memcpy_bw.c) ---- */
int bench_memcpy(const struct bench_opts *o);

/* ---- small helpers (util.c) ---- */
uint64_t bench_now_ns(void);
uint64_t bench_splitmix64(uint64_t *state);

#endif
