/* linepool: the cache-line pool. Argument checks, alignment of the region and of every line,
 * how the region is split into partitions, exhaustion (NULL, never a shared line), the LIFO
 * free/alloc order, and the totals. Also partitions built over caller memory. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/linepool.h"
#include "src/log.h"

#define K32 32768u

static void quiet(void)
{
        log_set_level(LOG_LVL_ERR);
}

TestSuite(linepool, .init = quiet);

Test(linepool, create_rejects_bad_arguments)
{
        cr_assert_null(line_pool_create(1 << 20, 0, 1), "line size 0");
        cr_assert_null(line_pool_create(1 << 20, 3 * 4096, 1), "line size not a power of two");
        cr_assert_null(line_pool_create(1 << 20, K32, 0), "no partition");
        cr_assert_null(line_pool_create(K32 * 3, K32, 4), "fewer lines than partitions");
        cr_assert_null(line_pool_create(K32 - 1, K32, 1), "smaller than one line");
        line_pool_destroy(NULL); /* harmless */
}

Test(linepool, geometry_and_alignment)
{
        struct line_pool *p = line_pool_create(1 << 20, K32, 1);
        cr_assert_not_null(p);
        uint8_t *base = line_pool_base(p);
        cr_assert_not_null(base);
        cr_assert_eq((uintptr_t)base % 4096, 0, "pool base %p not page aligned", (void *)base);
        if (line_pool_huge_pages(p))
                cr_assert_eq((uintptr_t)base % (2u << 20), 0, "huge-page pool not 2 MiB aligned");
        cr_assert_eq(line_pool_bytes(p), 1u << 20);
        cr_assert_eq(line_pool_line_size(p), K32);
        cr_assert_null(line_pool_part(p, 1));
        struct line_part *part = line_pool_part(p, 0);
        cr_assert_not_null(part);
        cr_assert_eq(line_part_total(part), 32);
        cr_assert_eq(line_part_free(part), 32);
        for (unsigned i = 0; i < 32; i++) {
                uint8_t *l = line_alloc(part);
                cr_assert_not_null(l);
                cr_assert_eq((size_t)(l - base) % K32, 0, "line %u at +0x%zx", i,
                             (size_t)(l - base));
                cr_assert_eq((uintptr_t)l % 4096, 0);
                cr_assert(l >= base && l + K32 <= base + (1u << 20));
        }
        line_pool_destroy(p);
}

Test(linepool, first_allocations_ascend_from_base)
{
        struct line_pool *p = line_pool_create(1 << 20, K32, 1);
        struct line_part *part = line_pool_part(p, 0);
        uint8_t *base = line_pool_base(p);
        for (unsigned i = 0; i < 32; i++) {
                uint8_t *l = line_alloc(part);
                cr_assert_eq(l, base + (size_t)i * K32, "allocation %u at +0x%zx", i,
                             (size_t)(l - base));
        }
        line_pool_destroy(p);
}

Test(linepool, lines_are_usable_and_disjoint)
{
        struct line_pool *p = line_pool_create(1 << 20, K32, 1);
        struct line_part *part = line_pool_part(p, 0);
        uint8_t *lines[32];
        for (unsigned i = 0; i < 32; i++) {
                lines[i] = line_alloc(part);
                memset(lines[i], (int)(i + 1), K32);
        }
        for (unsigned i = 0; i < 32; i++)
                for (size_t k = 0; k < K32; k += 511)
                        cr_assert_eq(lines[i][k], (uint8_t)(i + 1), "line %u overwritten", i);
        line_pool_destroy(p);
}

Test(linepool, exhaustion_returns_null)
{
        struct line_pool *p = line_pool_create(8 * K32, K32, 1);
        struct line_part *part = line_pool_part(p, 0);
        void *l[8];
        for (unsigned i = 0; i < 8; i++) {
                l[i] = line_alloc(part);
                cr_assert_not_null(l[i]);
                for (unsigned j = 0; j < i; j++)
                        cr_assert_neq(l[i], l[j], "line handed out twice");
        }
        cr_assert_eq(line_part_free(part), 0);
        for (unsigned i = 0; i < 4; i++)
                cr_assert_null(line_alloc(part), "allocation past exhaustion");
        cr_assert_eq(line_part_free(part), 0);
        cr_assert_eq(line_part_total(part), 8);
        line_free(part, l[3]);
        cr_assert_eq(line_part_free(part), 1);
        cr_assert_eq(line_alloc(part), l[3]);
        cr_assert_null(line_alloc(part));
        line_pool_destroy(p);
}

Test(linepool, free_alloc_order_is_lifo)
{
        struct line_pool *p = line_pool_create(1 << 20, K32, 1);
        struct line_part *part = line_pool_part(p, 0);
        uint8_t *base = line_pool_base(p);
        void *all[32];
        for (unsigned i = 0; i < 32; i++)
                all[i] = line_alloc(part);
        /* The worked example's arrangement: free 0x80000, 0x68000, 0x50000 so that they come
         * back as 0x50000, 0x68000, 0x80000. */
        line_free(part, base + 0x80000);
        line_free(part, base + 0x68000);
        line_free(part, base + 0x50000);
        cr_assert_eq(line_part_free(part), 3);
        cr_assert_eq(line_alloc(part), base + 0x50000);
        cr_assert_eq(line_alloc(part), base + 0x68000);
        cr_assert_eq(line_alloc(part), base + 0x80000);
        cr_assert_null(line_alloc(part));
        /* Interleaved: the most recently freed line is the next one handed out. */
        line_free(part, all[7]);
        line_free(part, all[2]);
        cr_assert_eq(line_alloc(part), all[2]);
        line_free(part, all[9]);
        cr_assert_eq(line_alloc(part), all[9]);
        cr_assert_eq(line_alloc(part), all[7]);
        line_pool_destroy(p);
}

Test(linepool, partitions_split_the_region)
{
        struct line_pool *p = line_pool_create(1 << 20, K32, 2);
        cr_assert_not_null(p);
        uint8_t *base = line_pool_base(p);
        struct line_part *a = line_pool_part(p, 0), *b = line_pool_part(p, 1);
        cr_assert_not_null(a);
        cr_assert_not_null(b);
        cr_assert_null(line_pool_part(p, 2));
        cr_assert_eq(line_part_total(a), 16);
        cr_assert_eq(line_part_total(b), 16);
        /* Partition 0 owns the first half, partition 1 the second. */
        for (unsigned i = 0; i < 16; i++) {
                uint8_t *la = line_alloc(a), *lb = line_alloc(b);
                cr_assert_eq(la, base + (size_t)i * K32);
                cr_assert_eq(lb, base + (512u << 10) + (size_t)i * K32);
        }
        cr_assert_null(line_alloc(a), "partition 0 exhausted");
        cr_assert_null(line_alloc(b), "partition 1 exhausted");
        /* Exhausting one partition does not take lines from the other. */
        line_free(b, base + (512u << 10));
        cr_assert_null(line_alloc(a));
        cr_assert_eq(line_part_free(b), 1);
        line_pool_destroy(p);
}

Test(linepool, uneven_split_rounds_down_per_partition)
{
        /* 33 lines over 2 partitions: 16 each; the odd line is not mapped at all. */
        struct line_pool *p = line_pool_create(33 * K32, K32, 2);
        cr_assert_not_null(p);
        cr_assert_eq(line_pool_bytes(p), 32 * K32);
        cr_assert_eq(line_part_total(line_pool_part(p, 0)), 16);
        cr_assert_eq(line_part_total(line_pool_part(p, 1)), 16);
        line_pool_destroy(p);
        /* A size that is not a multiple of the line size. */
        p = line_pool_create(5 * K32 + 1000, K32, 1);
        cr_assert_not_null(p);
        cr_assert_eq(line_pool_bytes(p), 5 * K32);
        cr_assert_eq(line_part_total(line_pool_part(p, 0)), 5);
        line_pool_destroy(p);
}

Test(linepool, totals_track_every_operation)
{
        struct line_pool *p = line_pool_create(4u << 20, K32, 4);
        unsigned total = 0, free_lines = 0;
        for (unsigned i = 0; i < 4; i++) {
                total += line_part_total(line_pool_part(p, i));
                free_lines += line_part_free(line_pool_part(p, i));
        }
        cr_assert_eq(total, (4u << 20) / K32);
        cr_assert_eq(free_lines, total);
        struct line_part *part = line_pool_part(p, 2);
        void *l[10];
        for (unsigned i = 0; i < 10; i++) {
                l[i] = line_alloc(part);
                cr_assert_eq(line_part_free(part), 32 - 1 - i);
                cr_assert_eq(line_part_total(part), 32);
        }
        for (unsigned i = 0; i < 10; i++) {
                line_free(part, l[i]);
                cr_assert_eq(line_part_free(part), 22 + 1 + i);
        }
        line_pool_destroy(p);
}

Test(linepool, other_line_sizes)
{
        static const size_t sizes[] = {4096, 65536, 1u << 20};
        for (unsigned s = 0; s < 3; s++) {
                struct line_pool *p = line_pool_create(4u << 20, sizes[s], 1);
                cr_assert_not_null(p, "line size %zu", sizes[s]);
                cr_assert_eq(line_pool_line_size(p), sizes[s]);
                struct line_part *part = line_pool_part(p, 0);
                cr_assert_eq(line_part_total(part), (4u << 20) / sizes[s]);
                uint8_t *base = line_pool_base(p);
                uint8_t *l0 = line_alloc(part), *l1 = line_alloc(part);
                cr_assert_eq(l0, base);
                cr_assert_eq(l1, base + sizes[s]);
                line_pool_destroy(p);
        }
}

Test(linepool, partition_over_caller_memory)
{
        size_t bytes = 0x90000; /* 18 lines of 32 KiB */
        uint8_t *mem = aligned_alloc(4096, bytes);
        cr_assert_not_null(mem);
        struct line_part *part = line_part_create_at(mem, bytes, K32);
        cr_assert_not_null(part);
        cr_assert_eq(line_part_total(part), 18);
        cr_assert_eq(line_part_free(part), 18);
        for (unsigned i = 0; i < 18; i++)
                cr_assert_eq(line_alloc(part), mem + (size_t)i * K32);
        cr_assert_null(line_alloc(part));
        line_free(part, mem + 0x80000);
        line_free(part, mem + 0x68000);
        line_free(part, mem + 0x50000);
        cr_assert_eq(line_alloc(part), mem + 0x50000);
        cr_assert_eq(line_alloc(part), mem + 0x68000);
        cr_assert_eq(line_alloc(part), mem + 0x80000);
        line_part_destroy(part);

        /* Less than one line: an empty partition that never hands anything out. */
        part = line_part_create_at(mem, K32 - 1, K32);
        cr_assert_not_null(part);
        cr_assert_eq(line_part_total(part), 0);
        cr_assert_null(line_alloc(part));
        line_part_destroy(part);
        line_part_destroy(NULL);
        free(mem);
}
