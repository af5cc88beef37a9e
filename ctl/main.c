/* isergw-ctl [--socket PATH] [--json] [--watch SECONDS] COMMAND [ARGS]: queries and operates a
 * running isergw through its status socket (docs/status.md §6). */
#include "ctl/ctl.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
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

static const struct ctl_command commands[] = {
    {"status", "", 0, run_status, NULL},
    {"targets", "", 0, run_object, render_targets},
    {"sessions", "", 0, run_object, render_sessions},
    {"luns", "", 0, run_object, render_luns},
    {"pool", "", 0, run_object, render_pool},
    {"cache", "", 0, run_object, render_cache},
    {"mirror", "", 0, run_object, render_mirror},
    {"stats", "", 0, run_object, render_stats},
    {"metrics", "", 0, run_metrics, NULL},
    {"flush", " TARGET LUN", 2, run_flush, NULL},
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
        fprintf(out, "usage: isergw-ctl [--socket PATH] [--json] [--watch SECONDS] COMMAND\n"
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

/* Checks the command and its arguments; returns it, or NULL after printing why. */
static const struct ctl_command *check_command(int argc, char **argv, const struct opts *o)
{
        if (argc < 1) {
                usage(stderr);
                return NULL;
        }
        const struct ctl_command *cmd = find_command(argv[0]);
        long long lun;
        if (!cmd)
                fprintf(stderr, "isergw-ctl: unknown command \"%s\" (see --help)\n", argv[0]);
        else if (argc - 1 != cmd->nargs)
                fprintf(stderr, "isergw-ctl: usage: isergw-ctl %s%s\n", cmd->name, cmd->args);
        else if (cmd->run == run_flush && parse_lun(argv[2], &lun) < 0)
                fprintf(stderr, "isergw-ctl: LUN must be a number >= 0, not \"%s\"\n", argv[2]);
        else if (cmd->run == run_flush && o->watch > 0)
                fprintf(stderr, "isergw-ctl: --watch does not go with flush\n");
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
