/* isergw-bench results as text or JSON. Latencies are in microseconds, MB = 10^6 bytes,
 * MiB = 2^20 bytes. */
#include "bench.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#ifndef ISERGW_VERSION
#define ISERGW_VERSION "dev"
#endif

struct lat_summary {
        double mean, p50, p99, p999, max;
};

static struct lat_summary summarize(const struct hist *h)
{
        struct lat_summary s = {
            .mean = hist_mean(h) / 1e3,
            .p50 = (double)hist_percentile(h, 50.0) / 1e3,
            .p99 = (double)hist_percentile(h, 99.0) / 1e3,
            .p999 = (double)hist_percentile(h, 99.9) / 1e3,
            .max = (double)h->max / 1e3,
        };
        return s;
}

/* Reads and writes together; the histogram is too big for the stack. */
static struct hist *merged(const struct bench_stats *st)
{
        struct hist *h = calloc(1, sizeof(*h));
        if (h) {
                hist_merge(h, &st->lat[BENCH_DIR_READ]);
                hist_merge(h, &st->lat[BENCH_DIR_WRITE]);
        }
        return h;
}

static double per_sec(uint64_t v, double elapsed)
{
        return elapsed > 0 ? (double)v / elapsed : 0.0;
}

static void print_lat(const char *label, const struct hist *h)
{
        struct lat_summary s = summarize(h);
        printf("  %-5s lat us: mean %.1f  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f  (%" PRIu64
               " ops)\n",
               label, s.mean, s.p50, s.p99, s.p999, s.max, h->count);
}

void bench_report_text(const struct bench_opts *o, const struct bench_lun_info *li,
                       const struct bench_stats *st)
{
        uint64_t ops = st->ops[0] + st->ops[1], bytes = st->bytes[0] + st->bytes[1];
        double cpu = st->cpu_user_s + st->cpu_sys_s;
        struct hist *all = merged(st);
        printf("isergw-bench: %s", bench_rw_name(o->rw));
        if (o->rw == BENCH_RANDRW || o->rw == BENCH_RW)
                printf(" (%d%% reads)", o->mix_read_pct);
        printf(" bs=%" PRIu32 " qd=%d sessions=%d range=%" PRIu64 " (LUN %" PRIu64
               " bytes, block %" PRIu32 ")%s\n",
               o->bs, o->qd, o->sessions, li->range, li->lun_bytes, li->blksz,
               o->verify ? " verify" : "");
        printf("  %.2f s: %" PRIu64 " ops, %.1f IOPS, %.1f MB/s (%.1f MiB/s)\n", st->elapsed_s, ops,
               per_sec(ops, st->elapsed_s), per_sec(bytes, st->elapsed_s) / 1e6,
               per_sec(bytes, st->elapsed_s) / 1048576.0);
        if (all)
                print_lat("all", all);
        free(all);
        if (st->ops[0] && st->ops[1]) {
                print_lat("read", &st->lat[0]);
                print_lat("write", &st->lat[1]);
        }
        printf("  client cpu: user %.2f s, sys %.2f s (%.0f%% of one core)\n", st->cpu_user_s,
               st->cpu_sys_s, st->elapsed_s > 0 ? 100.0 * cpu / st->elapsed_s : 0.0);
        printf("  errors %" PRIu64, st->errors);
        if (o->verify)
                printf(", verify: %" PRIu64 " blocks ok, %" PRIu64 " mismatched, %" PRIu64
                       " not checkable",
                       st->vfy_checked, st->vfy_mismatch, st->vfy_unchecked);
        printf("\n");
}

static json_t *lat_json(const struct hist *h)
{
        struct lat_summary s = summarize(h);
        return json_pack("{s:f, s:f, s:f, s:f, s:f}", "mean", s.mean, "p50", s.p50, "p99", s.p99,
                         "p99_9", s.p999, "max", s.max);
}

static json_t *dir_json(const struct bench_stats *st, int dir)
{
        return json_pack("{s:I, s:I, s:f, s:f, s:o}", "ops", (json_int_t)st->ops[dir], "bytes",
                         (json_int_t)st->bytes[dir], "iops", per_sec(st->ops[dir], st->elapsed_s),
                         "mb_s", per_sec(st->bytes[dir], st->elapsed_s) / 1e6, "lat_us",
                         lat_json(&st->lat[dir]));
}

static json_t *config_json(const struct bench_opts *o, const struct bench_lun_info *li)
{
        return json_pack("{s:s, s:s, s:i, s:I, s:i, s:i, s:f, s:I, s:f, s:I, s:b, s:I, s:s, s:I, "
                         "s:I}",
                         "url", o->url, "rw", bench_rw_name(o->rw), "mix_read_pct", o->mix_read_pct,
                         "bs", (json_int_t)o->bs, "qd", o->qd, "sessions", o->sessions, "time_s",
                         o->time_s, "bytes_limit", (json_int_t)o->bytes, "warmup_s", o->warmup_s,
                         "range", (json_int_t)li->range, "verify", o->verify, "seed",
                         (json_int_t)o->seed, "initiator", o->initiator, "lun_bytes",
                         (json_int_t)li->lun_bytes, "block_size", (json_int_t)li->blksz);
}

static json_t *result_json(const struct bench_stats *st, const struct hist *all)
{
        uint64_t ops = st->ops[0] + st->ops[1], bytes = st->bytes[0] + st->bytes[1];
        double cpu = st->cpu_user_s + st->cpu_sys_s;
        return json_pack(
            "{s:f, s:I, s:I, s:f, s:f, s:f, s:o, s:o, s:o, s:{s:f, s:f, s:f}, s:I, "
            "s:{s:I, s:I, s:I}}",
            "elapsed_s", st->elapsed_s, "ops", (json_int_t)ops, "bytes", (json_int_t)bytes, "iops",
            per_sec(ops, st->elapsed_s), "mb_s", per_sec(bytes, st->elapsed_s) / 1e6, "mib_s",
            per_sec(bytes, st->elapsed_s) / 1048576.0, "lat_us", lat_json(all), "read",
            dir_json(st, BENCH_DIR_READ), "write", dir_json(st, BENCH_DIR_WRITE), "cpu", "user_s",
            st->cpu_user_s, "sys_s", st->cpu_sys_s, "total_s", cpu, "errors",
            (json_int_t)st->errors, "verify", "checked_blocks", (json_int_t)st->vfy_checked,
            "mismatched_blocks", (json_int_t)st->vfy_mismatch, "unchecked_blocks",
            (json_int_t)st->vfy_unchecked);
}

int bench_report_json(const struct bench_opts *o, const struct bench_lun_info *li,
                      const struct bench_stats *st)
{
        struct hist *all = merged(st);
        json_t *root = all ? result_json(st, all) : NULL;
        json_t *cfg = config_json(o, li);
        free(all);
        if (!root || !cfg) {
                json_decref(root);
                json_decref(cfg);
                fprintf(stderr, "isergw-bench: cannot build JSON output\n");
                return -1;
        }
        json_object_set_new(root, "tool", json_string("isergw-bench"));
        json_object_set_new(root, "version", json_string(ISERGW_VERSION));
        json_object_set_new(root, "config", cfg);
        int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("\n");
        json_decref(root);
        return rc;
}
