/* isergw-bench: iSCSI load generator (libiscsi, asynchronous) and memcpy bandwidth probe. */
#include "bench.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static int run_iscsi(const struct bench_opts *o)
{
        struct bench_stats *st = calloc(1, sizeof(*st));
        struct bench_lun_info li;
        int rc = 1;
        if (!st)
                return 1;
        if (bench_run(o, st, &li) == 0) {
                if (o->json)
                        bench_report_json(o, &li, st);
                else
                        bench_report_text(o, &li, st);
                rc = (st->errors || st->vfy_mismatch) ? 1 : 0;
                if (rc)
                        fprintf(stderr,
                                "isergw-bench: FAILED: %llu I/O errors, %llu verify mismatches\n",
                                (unsigned long long)st->errors,
                                (unsigned long long)st->vfy_mismatch);
        } else {
                fprintf(stderr, "isergw-bench: FAILED: no results\n");
        }
        free(st);
        return rc;
}

int main(int argc, char **argv)
{
        struct bench_opts o;
        int prc = bench_parse_args(&o, argc, argv);
        if (prc)
                return prc > 0 ? 0 : 2;
        signal(SIGPIPE, SIG_IGN);
        if (o.memcpy_mode)
                return bench_memcpy(&o) ? 1 : 0;
        return run_iscsi(&o);
}
