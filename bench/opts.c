/* isergw-bench command line. */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef ISERGW_VERSION
#define ISERGW_VERSION "dev"
#endif

#define DEFAULT_INITIATOR "iqn.2024-01.org.isergw:bench"

static const char *const rw_names[] = {
    [BENCH_READ] = "read",           [BENCH_WRITE] = "write",   [BENCH_RANDREAD] = "randread",
    [BENCH_RANDWRITE] = "randwrite", [BENCH_RANDRW] = "randrw", [BENCH_RW] = "rw",
};

const char *bench_rw_name(enum bench_rw rw)
{
        return rw_names[rw];
}

bool bench_rw_random(enum bench_rw rw)
{
        return rw == BENCH_RANDREAD || rw == BENCH_RANDWRITE || rw == BENCH_RANDRW;
}

static int parse_rw(const char *s, enum bench_rw *rw)
{
        for (size_t i = 0; i < sizeof(rw_names) / sizeof(rw_names[0]); i++) {
                if (strcmp(s, rw_names[i]) == 0) {
                        *rw = (enum bench_rw)i;
                        return 0;
                }
        }
        return -1;
}

/* Sizes: a number with an optional binary suffix k, m, g, t (KiB, MiB, ...; "K", "KiB" and
 * "KB" all mean 1024). */
int bench_parse_size(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || s[0] == '-')
                return -1;
        unsigned shift = 0;
        switch (*end) {
        case 'k':
        case 'K':
                shift = 10;
                break;
        case 'm':
        case 'M':
                shift = 20;
                break;
        case 'g':
        case 'G':
                shift = 30;
                break;
        case 't':
        case 'T':
                shift = 40;
                break;
        case '\0':
                break;
        default:
                return -1;
        }
        if (*end)
                end++;
        if (*end && strcasecmp(end, "b") != 0 && strcasecmp(end, "ib") != 0)
                return -1;
        if (shift && v > (UINT64_MAX >> shift))
                return -1;
        *out = (uint64_t)v << shift;
        return 0;
}

static int parse_double(const char *s, double *out)
{
        char *end;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || end == s || *end || v < 0)
                return -1;
        *out = v;
        return 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < lo || v > hi)
                return -1;
        *out = (int)v;
        return 0;
}

static void usage(FILE *f)
{
        fprintf(
            f,
            "usage: isergw-bench --url iscsi://HOST:PORT/IQN/LUN [options]\n"
            "       isergw-bench --memcpy [--bytes SIZE] [--time S] [--json]\n"
            "\n"
            "  --url URL             target LUN (the URL may also be the last argument)\n"
            "  --rw MODE             read|write|randread|randwrite|randrw|rw (default randread)\n"
            "                        read/write/rw are sequential; each session walks its own\n"
            "                        slice of the range\n"
            "  --mix PCT             percent reads for randrw and rw (default 50)\n"
            "  --bs SIZE             I/O size, multiple of the LUN block size (default 4k)\n"
            "  --qd N                outstanding commands per session (default 1)\n"
            "  --sessions N          iSCSI sessions, each its own connection (default 1)\n"
            "  --time S              measured seconds (default 10 unless --bytes is given)\n"
            "  --bytes SIZE          stop after SIZE bytes were submitted (with --time: first "
            "wins)\n"
            "  --warmup S            seconds of unmeasured load before measuring (default 0)\n"
            "  --range SIZE          use only the first SIZE bytes of the LUN (default: all)\n"
            "  --verify              write a per-block pattern (LBA + generation); check reads\n"
            "  --seed N              random seed (default 1)\n"
            "  --initiator-name IQN  (default " DEFAULT_INITIATOR ")\n"
            "  --json                print one JSON object instead of text\n"
            "  --memcpy              measure memcpy bandwidth (buffers of --bytes, default 256M)\n"
            "  --help, --version\n"
            "Sizes take binary suffixes: 4k = 4096, 1M = 1048576. Exit status: 0 success,\n"
            "1 I/O error, verify mismatch or connection failure, 2 usage error.\n");
}

static void set_defaults(struct bench_opts *o)
{
        memset(o, 0, sizeof(*o));
        o->initiator = DEFAULT_INITIATOR;
        o->rw = BENCH_RANDREAD;
        o->mix_read_pct = 50;
        o->bs = 4096;
        o->qd = 1;
        o->sessions = 1;
        o->time_s = -1;
        o->seed = 1;
}

enum {
        OPT_URL = 256,
        OPT_RW,
        OPT_MIX,
        OPT_BS,
        OPT_QD,
        OPT_SESSIONS,
        OPT_TIME,
        OPT_BYTES,
        OPT_WARMUP,
        OPT_RANGE,
        OPT_VERIFY,
        OPT_SEED,
        OPT_INITIATOR,
        OPT_JSON,
        OPT_MEMCPY,
        OPT_HELP,
        OPT_VERSION,
};

static const struct option long_opts[] = {
    {"url", required_argument, NULL, OPT_URL},
    {"rw", required_argument, NULL, OPT_RW},
    {"mix", required_argument, NULL, OPT_MIX},
    {"bs", required_argument, NULL, OPT_BS},
    {"qd", required_argument, NULL, OPT_QD},
    {"sessions", required_argument, NULL, OPT_SESSIONS},
    {"time", required_argument, NULL, OPT_TIME},
    {"bytes", required_argument, NULL, OPT_BYTES},
    {"warmup", required_argument, NULL, OPT_WARMUP},
    {"range", required_argument, NULL, OPT_RANGE},
    {"verify", no_argument, NULL, OPT_VERIFY},
    {"seed", required_argument, NULL, OPT_SEED},
    {"initiator-name", required_argument, NULL, OPT_INITIATOR},
    {"json", no_argument, NULL, OPT_JSON},
    {"memcpy", no_argument, NULL, OPT_MEMCPY},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static int parse_bs(const char *s, uint32_t *bs)
{
        uint64_t v;
        if (bench_parse_size(s, &v) || v == 0 || v > (64u << 20))
                return -1;
        *bs = (uint32_t)v;
        return 0;
}

/* Returns 0 if handled, -1 on a bad value. */
static int apply_opt(struct bench_opts *o, int c, const char *arg)
{
        switch (c) {
        case OPT_URL:
                o->url = arg;
                return 0;
        case OPT_RW:
                return parse_rw(arg, &o->rw);
        case OPT_MIX:
                return parse_int(arg, 0, 100, &o->mix_read_pct);
        case OPT_BS:
                return parse_bs(arg, &o->bs);
        case OPT_QD:
                return parse_int(arg, 1, 4096, &o->qd);
        case OPT_SESSIONS:
                return parse_int(arg, 1, 256, &o->sessions);
        case OPT_TIME:
                return parse_double(arg, &o->time_s);
        case OPT_BYTES:
                return bench_parse_size(arg, &o->bytes);
        case OPT_WARMUP:
                return parse_double(arg, &o->warmup_s);
        case OPT_RANGE:
                return bench_parse_size(arg, &o->range);
        case OPT_VERIFY:
                o->verify = true;
                return 0;
        case OPT_SEED:
                return sscanf(arg, "%" SCNu64, &o->seed) == 1 ? 0 : -1;
        case OPT_INITIATOR:
                o->initiator = arg;
                return 0;
        case OPT_JSON:
                o->json = true;
                return 0;
        case OPT_MEMCPY:
                o->memcpy_mode = true;
                return 0;
        default:
                return -1;
        }
}

static int finish_opts(struct bench_opts *o)
{
        if (o->time_s < 0)
                o->time_s = (o->bytes || o->memcpy_mode) ? 0 : 10;
        if (o->memcpy_mode)
                return 0;
        if (!o->url) {
                fprintf(stderr, "isergw-bench: --url is required\n");
                return -1;
        }
        if (o->time_s == 0 && o->bytes == 0) {
                fprintf(stderr, "isergw-bench: need --time > 0 or --bytes\n");
                return -1;
        }
        return 0;
}

int bench_parse_args(struct bench_opts *o, int argc, char **argv)
{
        int c;
        set_defaults(o);
        while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
                if (c == OPT_HELP) {
                        usage(stdout);
                        return 1;
                }
                if (c == OPT_VERSION) {
                        printf("isergw-bench %s\n", ISERGW_VERSION);
                        return 1;
                }
                if (c == '?' || apply_opt(o, c, optarg) != 0) {
                        if (c != '?')
                                fprintf(stderr, "isergw-bench: bad value '%s' for --%s\n", optarg,
                                        long_opts[c - OPT_URL].name);
                        fprintf(stderr, "isergw-bench: see --help\n");
                        return -1;
                }
        }
        if (optind < argc && !o->url)
                o->url = argv[optind++];
        if (optind < argc) {
                fprintf(stderr, "isergw-bench: unexpected argument '%s'\n", argv[optind]);
                return -1;
        }
        return finish_opts(o);
}
