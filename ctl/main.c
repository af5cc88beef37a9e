/* isergw-ctl [--socket PATH] [--json] [--watch SECONDS] COMMAND [ARGS]: queries and operates a
 * running isergw through its status socket (docs/status.md §6). */
#include "ctl/ctl.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_SOCKET "var/isergw.sock"
#define EXIT_USAGE     2

struct opts {
        const char *socket;
        bool json;
        double watch; /* seconds; 0: once */
};

struct ctl_command {
        const char *name;
        const char *args; /* usage of the arguments */
        int nargs;
        int (*run)(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                   FILE *out, char *err, size_t errlen);
        void (*render)(FILE *out, const json_t *result);
        int optional_args; /* up to this many more arguments */
};

static void print_json(FILE *out, const json_t *v)
{
        json_dumpf(v, out, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
        fputc('\n', out);
}

static int run_object(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                      FILE *out, char *err, size_t errlen)
{
        json_t *result = ctl_query(c, cmd->name, err, errlen);
        if (!result)
                return -1;
        if (json)
                print_json(out, result);
        else
                cmd->render(out, result);
        json_decref(result);
        return 0;
}

/* status: several objects; only "gateway" is required, the others may be unavailable. */
static int run_status(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                      FILE *out, char *err, size_t errlen)
{
        static const char *const parts[] = {"gateway", "stats", "pool", "cache", "mirror"};
        json_t *snapshot = json_object(), *errors = json_object();
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
                json_t *v = ctl_query(c, parts[i], err, errlen);
                if (!v && (i == 0 || c->fd < 0)) {
                        json_decref(snapshot);
                        json_decref(errors);
                        return -1;
                }
                json_object_set_new(snapshot, parts[i], v ? v : json_null());
                if (!v)
                        json_object_set_new(errors, parts[i], json_string(err));
        }
        if (json_object_size(errors) > 0)
                json_object_set(snapshot, "errors", errors);
        json_decref(errors);
        if (json)
                print_json(out, snapshot);
        else
                render_status(out, snapshot);
        json_decref(snapshot);
        return 0;
}

static int run_metrics(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                       FILE *out, char *err, size_t errlen)
{
        json_t *result = ctl_call(c, json_pack("{s:s}", "cmd", "metrics"), 30000, err, errlen);
        if (!result)
                return -1;
        if (json)
                print_json(out, result);
        else
                fputs(json_string_value(json_object_get(result, "text")) ?: "", out);
        json_decref(result);
        return 0;
}

static int parse_lun(const char *s, long long *lun)
{
        char *end = NULL;
        errno = 0;
        *lun = strtoll(s, &end, 10);
        return errno == 0 && end != s && *end == '\0' && *lun >= 0 ? 0 : -1;
}

static int run_flush(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                     FILE *out, char *err, size_t errlen)
{
        long long lun = 0;
        parse_lun(argv[1], &lun); /* checked in main() */
        json_t *req = json_pack("{s:s, s:{s:s, s:I}}", "cmd", "flush", "lun", "target", argv[0],
                                "lun", (json_int_t)lun);
        json_t *result = ctl_call(c, req, -1, err, errlen);
        if (!result)
                return -1;
        if (json)
                print_json(out, result);
        else
                fprintf(out, "flushed %s lun %lld\n", argv[0], lun);
        json_decref(result);
        return 0;
}

/* fault's KEY=VALUE arguments; VALUE "always" means every I/O until changed (UINT32_MAX). */
static const char *const fault_keys[] = {"fail_reads", "fail_writes", "fail_flushes", "delay_ms"};
#define NFAULT_KEYS (sizeof(fault_keys) / sizeof(fault_keys[0]))

/* Parses "KEY=VALUE" into fault_keys[*key] = *value; -1 (with err) if it is not one. */
static int parse_fault_arg(const char *arg, size_t *key, long long *value, char *err, size_t errlen)
{
        const char *eq = strchr(arg, '=');
        for (size_t k = 0; eq && k < NFAULT_KEYS; k++) {
                if (strlen(fault_keys[k]) != (size_t)(eq - arg) ||
                    strncmp(arg, fault_keys[k], (size_t)(eq - arg)) != 0)
                        continue;
                bool delay = strcmp(fault_keys[k], "delay_ms") == 0;
                long long max = delay ? 60000 : UINT32_MAX;
                *key = k;
                if (!delay && strcmp(eq + 1, "always") == 0) {
                        *value = UINT32_MAX;
                        return 0;
                }
                if (parse_lun(eq + 1, value) == 0 && *value <= max)
                        return 0;
                snprintf(err, errlen, "%s wants a number 0..%lld%s, not \"%s\"", fault_keys[k], max,
                         delay ? "" : " or \"always\"", eq + 1);
                return -1;
        }
        snprintf(err, errlen,
                 "\"%s\" is not KEY=VALUE with KEY one of fail_reads, fail_writes, "
                 "fail_flushes, delay_ms",
                 arg);
        return -1;
}

static void print_fault(FILE *out, const char *target, long long lun, const json_t *result)
{
        fprintf(out, "fault %s lun %lld:", target, lun);
        for (size_t k = 0; k < NFAULT_KEYS; k++) {
                json_int_t v = json_integer_value(json_object_get(result, fault_keys[k]));
                if (v == UINT32_MAX && k < NFAULT_KEYS - 1)
                        fprintf(out, " %s=always", fault_keys[k]);
                else
                        fprintf(out, " %s=%lld", fault_keys[k], (long long)v);
        }
        const char *last = json_string_value(json_object_get(result, "last_error"));
        fprintf(out, "; backend errors so far: %lld%s%s\n",
                (long long)json_integer_value(json_object_get(result, "backend_errors")),
                last ? ", last: " : "", last ? last : "");
}

/* fault TARGET LUN [KEY=VALUE...]: sets every setting (those not given to 0). */
static int run_fault(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                     FILE *out, char *err, size_t errlen)
{
        long long lun = 0;
        parse_lun(argv[1], &lun); /* checked in main() */
        json_t *req = json_pack("{s:s, s:{s:s, s:I}}", "cmd", "fault", "lun", "target", argv[0],
                                "lun", (json_int_t)lun);
        for (size_t k = 0; k < NFAULT_KEYS; k++)
                json_object_set_new(req, fault_keys[k], json_integer(0));
        for (char **a = argv + 2; *a; a++) {
                size_t key;
                long long value;
                if (parse_fault_arg(*a, &key, &value, err, errlen) == 0) /* checked in main() */
                        json_object_set_new(req, fault_keys[key], json_integer(value));
        }
        json_t *result = ctl_call(c, req, 30000, err, errlen);
        if (!result)
                return -1;
        if (json)
                print_json(out, result);
        else
                print_fault(out, argv[0], lun, result);
        json_decref(result);
        return 0;
}

/* mirror-promote / -demote / -sever / -establish TARGET LUN [force | full]. */
static int run_mirror_op(struct ctl_conn *c, const struct ctl_command *cmd, char **argv, bool json,
                         FILE *out, char *err, size_t errlen)
{
        long long lun = 0;
        parse_lun(argv[1], &lun); /* checked in main() */
        json_t *req = json_pack("{s:s, s:{s:s, s:I}}", "cmd", cmd->name, "lun", "target", argv[0],
                                "lun", (json_int_t)lun);
        if (argv[2])
                json_object_set_new(req, argv[2], json_true());
        json_t *result = ctl_call(c, req, 60000, err, errlen);
        if (!result)
                return -1;
        if (json)
                print_json(out, result);
        else
                fprintf(out, "%s %s lun %lld: %s\n", cmd->name, argv[0], lun,
                        json_string_value(json_object_get(result, "state"))
                            ? json_string_value(json_object_get(result, "state"))
                            : "done");
        json_decref(result);
        return 0;
}

static const struct ctl_command commands[] = {
    {"status", "", 0, run_status, NULL, 0},
    {"targets", "", 0, run_object, render_targets, 0},
    {"sessions", "", 0, run_object, render_sessions, 0},
    {"luns", "", 0, run_object, render_luns, 0},
    {"pool", "", 0, run_object, render_pool, 0},
    {"cache", "", 0, run_object, render_cache, 0},
    {"mirror", "", 0, run_object, render_mirror, 0},
    {"stats", "", 0, run_object, render_stats, 0},
    {"metrics", "", 0, run_metrics, NULL, 0},
    {"flush", " TARGET LUN", 2, run_flush, NULL, 0},
    {"fault", " TARGET LUN [fail_reads=N] [fail_writes=N] [fail_flushes=N] [delay_ms=MS]", 2,
     run_fault, NULL, NFAULT_KEYS},
    {"mirror-promote", " TARGET LUN [force]", 2, run_mirror_op, NULL, 1},
    {"mirror-demote", " TARGET LUN", 2, run_mirror_op, NULL, 0},
    {"mirror-sever", " TARGET LUN", 2, run_mirror_op, NULL, 0},
    {"mirror-establish", " TARGET LUN [full]", 2, run_mirror_op, NULL, 1},
};

static const struct ctl_command *find_command(const char *name)
{
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        }
        return NULL;
}

static void usage(FILE *out)
{
        fprintf(out, "usage: isergw-ctl [--socket PATH] [--json] [--watch SECONDS] COMMAND [ARGS]\n"
                     "  -s, --socket PATH      status socket (default " DEFAULT_SOCKET ")\n"
                     "  -j, --json             print the raw JSON result\n"
                     "  -w, --watch SECONDS    redraw every SECONDS until interrupted\n"
                     "  -h, --help             this text\n"
                     "commands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(out, "  %s%s\n", commands[i].name, commands[i].args);
}

/* One connection, one command. Returns 0, or -1 with err. */
static int run_once(const struct opts *o, const struct ctl_command *cmd, char **argv, FILE *out,
                    char *err, size_t errlen)
{
        struct ctl_conn c;
        if (ctl_connect(&c, o->socket, err, errlen) < 0)
                return -1;
        int rc = cmd->run(&c, cmd, argv, o->json, out, err, errlen);
        ctl_close(&c);
        return rc;
}

static void sleep_seconds(double s)
{
        time_t whole = (time_t)s;
        struct timespec ts = {.tv_sec = whole, .tv_nsec = (long)((s - (double)whole) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Redraws until interrupted (SIGINT ends the process). */
static int watch_loop(const struct opts *o, const struct ctl_command *cmd, char **argv)
{
        for (;;) {
                char *text = NULL, err[CTL_ERR_LEN], stamp[32];
                size_t len = 0;
                FILE *mem = open_memstream(&text, &len);
                if (!mem)
                        return 1;
                time_t now = time(NULL);
                strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&now));
                fprintf(mem, "every %gs: isergw-ctl %s    %s\n\n", o->watch, cmd->name, stamp);
                if (run_once(o, cmd, argv, mem, err, sizeof(err)) < 0)
                        fprintf(mem, "isergw-ctl: %s\n", err);
                fclose(mem);
                fputs("\033[H\033[2J", stdout);
                fwrite(text, 1, len, stdout);
                fflush(stdout);
                free(text);
                sleep_seconds(o->watch);
        }
}

static int parse_watch(const char *s, double *out)
{
        char *end = NULL;
        *out = strtod(s, &end);
        return end != s && *end == '\0' && isfinite(*out) && *out > 0 && *out < INT_MAX ? 0 : -1;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
        static const struct option longopts[] = {{"socket", required_argument, NULL, 's'},
                                                 {"json", no_argument, NULL, 'j'},
                                                 {"watch", required_argument, NULL, 'w'},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {NULL, 0, NULL, 0}};
        int ch;
        while ((ch = getopt_long(argc, argv, "s:jw:h", longopts, NULL)) != -1) {
                if (ch == 's') {
                        o->socket = optarg;
                } else if (ch == 'j') {
                        o->json = true;
                } else if (ch == 'w' && parse_watch(optarg, &o->watch) == 0) {
                        continue;
                } else if (ch == 'w') {
                        fprintf(stderr, "isergw-ctl: --watch wants a number of seconds > 0\n");
                        return EXIT_USAGE;
                } else if (ch == 'h') {
                        usage(stdout);
                        return EXIT_SUCCESS;
                } else {
                        usage(stderr);
                        return EXIT_USAGE;
                }
        }
        return -1;
}

static int check_fault_args(char **argv, char *err, size_t errlen)
{
        for (char **a = argv; *a; a++) {
                size_t key;
                long long value;
                if (parse_fault_arg(*a, &key, &value, err, errlen) < 0)
                        return -1;
        }
        return 0;
}

/* Checks the command and its arguments; returns it, or NULL after printing why. */
static const struct ctl_command *check_command(int argc, char **argv, const struct opts *o)
{
        if (argc < 1) {
                usage(stderr);
                return NULL;
        }
        const struct ctl_command *cmd = find_command(argv[0]);
        long long lun;
        bool operation =
            cmd && (cmd->run == run_flush || cmd->run == run_fault || cmd->run == run_mirror_op);
        char err[CTL_ERR_LEN];
        if (!cmd)
                fprintf(stderr, "isergw-ctl: unknown command \"%s\" (see --help)\n", argv[0]);
        else if (argc - 1 < cmd->nargs || argc - 1 > cmd->nargs + cmd->optional_args)
                fprintf(stderr, "isergw-ctl: usage: isergw-ctl %s%s\n", cmd->name, cmd->args);
        else if (operation && parse_lun(argv[2], &lun) < 0)
                fprintf(stderr, "isergw-ctl: LUN must be a number >= 0, not \"%s\"\n", argv[2]);
        else if (operation && o->watch > 0)
                fprintf(stderr, "isergw-ctl: --watch does not go with %s\n", cmd->name);
        else if (cmd->run == run_fault && check_fault_args(argv + 3, err, sizeof(err)) < 0)
                fprintf(stderr, "isergw-ctl: %s\n", err);
        else if (cmd->run == run_mirror_op && argv[3] &&
                 strcmp(argv[3], strcmp(cmd->name, "mirror-promote") == 0 ? "force" : "full") != 0)
                fprintf(stderr, "isergw-ctl: usage: isergw-ctl %s%s\n", cmd->name, cmd->args);
        else
                return cmd;
        return NULL;
}

int main(int argc, char **argv)
{
        struct opts o = {.socket = DEFAULT_SOCKET};
        int rc = parse_opts(argc, argv, &o);
        if (rc >= 0)
                return rc;
        const struct ctl_command *cmd = check_command(argc - optind, argv + optind, &o);
        if (!cmd)
                return EXIT_USAGE;
        if (o.watch > 0)
                return watch_loop(&o, cmd, argv + optind + 1);
        char err[CTL_ERR_LEN];
        if (run_once(&o, cmd, argv + optind + 1, stdout, err, sizeof(err)) < 0) {
                fflush(stdout);
                fprintf(stderr, "isergw-ctl: %s\n", err);
                return EXIT_FAILURE;
        }
        return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
