/* isergw: the gateway daemon's entry point: arguments, configuration, signals. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/config.h"
#include "src/daemon.h"
#include "src/log.h"

static void usage(FILE *out)
{
        fprintf(
            out,
            "usage: isergw [--config FILE] [--log-level LEVEL] [--check-config]\n"
            "  --config FILE      configuration file (default: the embedded default:\n"
            "                     portal 127.0.0.1:3260, target %s,\n"
            "                     LUN 0 = var/lun0.img (1 GiB), status socket var/isergw.sock)\n"
            "  --log-level LEVEL  error, warn, info (default) or debug\n"
            "  --check-config     load and validate the configuration, then exit\n"
            "  --version          print the version\n",
            CONFIG_DEFAULT_TARGET);
}

static void print_how_to_reach(const struct config *cfg)
{
        const struct config_portal *p = &cfg->portals[0];
        const char *host = p->address;
        log_info("isergw %s serving %u target(s); try:", ISERGW_VERSION, cfg->ntargets);
        log_info("  iscsi-ls -s iscsi://%s:%u/", host, p->port);
        log_info("  iscsi-inq iscsi://%s:%u/%s/0", host, p->port, cfg->targets[0].name);
        log_info("  iscsiadm -m discovery -t st -p %s:%u", host, p->port);
        log_info("  build/bin/isergw-ctl --socket %s status", cfg->status_socket);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, NULL, 'c'}, {"log-level", required_argument, NULL, 'l'},
            {"check-config", no_argument, NULL, 'k'}, {"version", no_argument, NULL, 'V'},
            {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
        };
        const char *config_path = NULL, *level = NULL;
        bool check_only = false;
        int c;
        while ((c = getopt_long(argc, argv, "c:l:kVh", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        config_path = optarg;
                        break;
                case 'l':
                        level = optarg;
                        break;
                case 'k':
                        check_only = true;
                        break;
                case 'V':
                        printf("isergw %s\n", ISERGW_VERSION);
                        return 0;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (optind != argc) {
                usage(stderr);
                return 2;
        }
        char err[512];
        struct config *cfg =
            config_path ? config_load(config_path, err, sizeof(err)) : config_default();
        if (!cfg) {
                fprintf(stderr, "isergw: %s\n", config_path ? err : "out of memory");
                return 1;
        }
        enum log_level lvl = cfg->log_level;
        if (level && log_parse_level(level, &lvl) < 0) {
                fprintf(stderr, "isergw: unknown log level %s\n", level);
                config_free(cfg);
                return 2;
        }
        log_set_level(lvl);
        if (check_only) {
                printf("%s: OK\n", cfg->source);
                config_free(cfg);
                return 0;
        }
        /* Signals are taken synchronously by this thread; reactors never see them. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        struct daemon *d = daemon_start(cfg, config_path);
        if (!d) {
                log_err("start-up failed");
                config_free(cfg);
                return 1;
        }
        print_how_to_reach(cfg);
        int sig = 0;
        sigwait(&set, &sig);
        log_info("signal %d: shutting down", sig);
        daemon_stop(d);
        config_free(cfg);
        log_info("stopped");
        return 0;
}
