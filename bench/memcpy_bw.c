/* --memcpy: single-thread memcpy bandwidth between two buffers, the memory half of the
 * machine's physical limits (the other half, loopback TCP, is measured with iperf3). */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MEMCPY_DEFAULT_BYTES (256ull << 20)
#define MEMCPY_DEFAULT_S     2.0

static void print_result(const struct bench_opts *o, uint64_t size, uint64_t copied, double s)
{
        double gbs = (double)copied / s / 1e9;
        if (!o->json) {
                printf("memcpy: %llu MiB buffers, %.2f GB/s (%.2f GiB/s) copied, %.2f s\n",
                       (unsigned long long)(size >> 20), gbs, (double)copied / s / 1073741824.0, s);
                return;
        }
        json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f}", "tool", "isergw-bench", "mode",
                              "memcpy", "buffer_bytes", (json_int_t)size, "copied_bytes",
                              (json_int_t)copied, "seconds", s, "gb_s", gbs);
        if (j)
                json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        printf("\n");
        json_decref(j);
}

int bench_memcpy(const struct bench_opts *o)
{
        uint64_t size = o->bytes ? o->bytes : MEMCPY_DEFAULT_BYTES;
        double limit = o->time_s > 0 ? o->time_s : MEMCPY_DEFAULT_S;
        unsigned char *src = malloc(size), *dst = malloc(size);
        if (!src || !dst) {
                fprintf(stderr, "isergw-bench: cannot allocate 2 x %llu bytes\n",
                        (unsigned long long)size);
                free(src);
                free(dst);
                return -1;
        }
        memset(src, 0x5a, size); /* fault every page in before timing */
        memset(dst, 0xa5, size);
        uint64_t copied = 0, t0 = bench_now_ns(), t = t0;
        while ((double)(t - t0) / 1e9 < limit) {
                memcpy(dst, src, size);
                __asm__ __volatile__("" : : "r"(dst) : "memory");
                copied += size;
                t = bench_now_ns();
        }
        print_result(o, size, copied, (double)(t - t0) / 1e9);
        free(src);
        free(dst);
        return 0;
}
