/* dpt: the data pointer table of RD4-M5/M6. Allocation order and the TTT layout
 * (index << 16 | tag), the reserved TTT 0xFFFFFFFF, refusal of stale, forged, foreign and
 * out-of-range TTTs, dpt_place bounds, and the in-use / high-water accounting. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>

#include "cache/dpt.h"

#define RSVD 0xffffffffu

static uint8_t region[1 << 20];
static const int owner_a_obj = 1, owner_b_obj = 2;
static const void *const owner_a = &owner_a_obj;
static const void *const owner_b = &owner_b_obj;
static int task_obj;

Test(dpt, create_limits)
{
        cr_assert_null(dpt_create(0));
        cr_assert_null(dpt_create(DPT_MAX_ENTRIES + 1));
        cr_assert_eq(DPT_MAX_ENTRIES, 65535u);
        struct dpt *d = dpt_create(DPT_MAX_ENTRIES);
        cr_assert_not_null(d);
        cr_assert_eq(dpt_capacity(d), DPT_MAX_ENTRIES);
        cr_assert_eq(dpt_in_use(d), 0);
        cr_assert_eq(dpt_high_water(d), 0);
        dpt_destroy(d);
        dpt_destroy(NULL); /* harmless */
}

Test(dpt, alloc_lookup_fields_and_ttt_layout)
{
        struct dpt *d = dpt_create(64);
        uint8_t *p = region + 0x54000;
        uint32_t ttt = dpt_alloc(d, p, 0x0, 0x4000, owner_a, &task_obj, 0x0123);
        /* The lowest free index comes first. */
        cr_assert_eq(ttt, 0x00000123u, "TTT 0x%08x", ttt);
        struct dpt_entry *e = dpt_lookup(d, ttt, owner_a);
        cr_assert_not_null(e);
        cr_assert_eq(e->data_pointer, p);
        cr_assert_eq(e->data_offset, 0x0);
        cr_assert_eq(e->data_length, 0x4000);
        cr_assert_eq(e->owner, owner_a);
        cr_assert_eq(e->task, &task_obj);
        cr_assert_eq(e->tag, 0x0123);
        cr_assert(e->in_use);
        cr_assert_eq(e->received, 0);
        cr_assert_eq(e->next_datasn, 0);

        /* Successive allocations take ascending indices; the tag sits in the low 16 bits. */
        for (unsigned i = 1; i < 20; i++) {
                uint16_t tag = (uint16_t)(0xA000 + i);
                uint32_t t =
                    dpt_alloc(d, region + i * 0x8000, i * 0x8000, 0x8000, owner_a, &task_obj, tag);
                cr_assert_eq(t >> 16, i, "index %u, TTT 0x%08x", i, t);
                cr_assert_eq(t & 0xffff, tag);
                struct dpt_entry *ei = dpt_lookup(d, t, owner_a);
                cr_assert_not_null(ei);
                cr_assert_eq(ei->data_pointer, region + i * 0x8000);
                cr_assert_eq(ei->data_offset, i * 0x8000);
        }
        cr_assert_eq(dpt_in_use(d), 20);
        dpt_destroy(d);
}

Test(dpt, reused_entry_is_reset)
{
        struct dpt *d = dpt_create(4);
        uint32_t t = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 7);
        struct dpt_entry *e = dpt_lookup(d, t, owner_a);
        e->received = 0x2000;
        e->next_datasn = 3;
        dpt_free(d, t);
        uint32_t t2 = dpt_alloc(d, region + 0x8000, 0x8000, 0x4000, owner_b, NULL, 8);
        cr_assert_eq(t2 >> 16, t >> 16, "the freed entry is reused first (LIFO)");
        e = dpt_lookup(d, t2, owner_b);
        cr_assert_not_null(e);
        cr_assert_eq(e->received, 0, "received carried over from the previous user");
        cr_assert_eq(e->next_datasn, 0, "DataSN carried over from the previous user");
        cr_assert_eq(e->data_length, 0x4000);
        dpt_destroy(d);
}

Test(dpt, reserved_ttt_never_produced)
{
        /* Fill the largest table with tag 0xFFFF: index 0xFFFF does not exist, so no TTT can be
         * 0xFFFFFFFF; once full the table answers the reserved value (meaning "full"). */
        struct dpt *d = dpt_create(DPT_MAX_ENTRIES);
        for (unsigned i = 0; i < DPT_MAX_ENTRIES; i++) {
                uint32_t t = dpt_alloc(d, region, 0, 512, owner_a, &task_obj, 0xffff);
                cr_assert_neq(t, RSVD, "allocation %u produced the reserved TTT", i);
                cr_assert_eq(t, (i << 16) | 0xffffu);
        }
        cr_assert_eq(dpt_in_use(d), DPT_MAX_ENTRIES);
        cr_assert_eq(dpt_alloc(d, region, 0, 512, owner_a, &task_obj, 1), RSVD, "full table");
        /* The reserved TTT is never a live entry, whatever tag index 0xFFFE carries. */
        cr_assert_null(dpt_lookup(d, RSVD, owner_a));
        cr_assert_not_null(dpt_lookup(d, 0xfffeffffu, owner_a));
        /* Freeing the reserved value is harmless. */
        dpt_free(d, RSVD);
        cr_assert_eq(dpt_in_use(d), DPT_MAX_ENTRIES);
        dpt_destroy(d);

        /* A chosen index of 0xFFFF is refused, so even alloc_at cannot make 0xFFFFFFFF. */
        d = dpt_create(DPT_MAX_ENTRIES);
        cr_assert_eq(dpt_alloc_at(d, 0xffff, region, 0, 512, owner_a, NULL, 0xffff), RSVD);
        cr_assert_eq(dpt_in_use(d), 0);
        dpt_destroy(d);
}

Test(dpt, full_table_and_recovery)
{
        struct dpt *d = dpt_create(4);
        uint32_t t[4];
        for (unsigned i = 0; i < 4; i++)
                t[i] = dpt_alloc(d, region, 0, 512, owner_a, NULL, (uint16_t)i);
        cr_assert_eq(dpt_alloc(d, region, 0, 512, owner_a, NULL, 9), RSVD);
        dpt_free(d, t[2]);
        uint32_t n = dpt_alloc(d, region, 0, 512, owner_a, NULL, 9);
        cr_assert_eq(n, (2u << 16) | 9);
        cr_assert_eq(dpt_in_use(d), 4);
        dpt_destroy(d);
}

Test(dpt, lifo_reuse_order)
{
        struct dpt *d = dpt_create(8);
        uint32_t t[8];
        for (unsigned i = 0; i < 8; i++)
                t[i] = dpt_alloc(d, region, 0, 512, owner_a, NULL, 1);
        dpt_free(d, t[5]);
        dpt_free(d, t[1]);
        cr_assert_eq(dpt_alloc(d, region, 0, 512, owner_a, NULL, 2) >> 16, 1);
        cr_assert_eq(dpt_alloc(d, region, 0, 512, owner_a, NULL, 2) >> 16, 5);
        dpt_destroy(d);
}

Test(dpt, stale_ttt_after_free)
{
        struct dpt *d = dpt_create(16);
        uint32_t t = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 0x0042);
        cr_assert_not_null(dpt_lookup(d, t, owner_a));
        dpt_free(d, t);
        cr_assert_null(dpt_lookup(d, t, owner_a), "a freed entry is still found");
        cr_assert_eq(dpt_in_use(d), 0);
        /* Freeing twice changes nothing. */
        dpt_free(d, t);
        cr_assert_eq(dpt_in_use(d), 0);
        uint32_t a = dpt_alloc(d, region, 0, 512, owner_a, NULL, 1);
        uint32_t b = dpt_alloc(d, region, 0, 512, owner_a, NULL, 2);
        cr_assert_neq(a >> 16, b >> 16, "a double free handed one entry out twice");
        dpt_destroy(d);
}

Test(dpt, stale_ttt_after_reuse_with_another_tag)
{
        struct dpt *d = dpt_create(16);
        uint32_t old = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 0x0042);
        dpt_free(d, old);
        uint32_t cur = dpt_alloc(d, region + 0x8000, 0x8000, 0x8000, owner_a, &task_obj, 0x0043);
        cr_assert_eq(cur >> 16, old >> 16, "same index reused");
        cr_assert_neq(cur, old);
        cr_assert_null(dpt_lookup(d, old, owner_a), "the stale TTT finds the new user's entry");
        struct dpt_entry *e = dpt_lookup(d, cur, owner_a);
        cr_assert_not_null(e);
        cr_assert_eq(e->data_pointer, region + 0x8000);
        dpt_destroy(d);
}

Test(dpt, free_with_stale_ttt_leaves_reused_entry_alone)
{
        /* A stale TTT must not release the entry's new user either: dpt_free has to check the
         * tag the same way dpt_lookup does. */
        struct dpt *d = dpt_create(16);
        uint32_t old = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 0x0042);
        dpt_free(d, old);
        uint32_t cur = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 0x0043);
        dpt_free(d, old);
        bool live = dpt_lookup(d, cur, owner_a) != NULL;
        unsigned in_use = dpt_in_use(d);
        dpt_destroy(d);
        cr_assert(live, "dpt_free(stale TTT 0x%08x) released the live entry 0x%08x", old, cur);
        cr_assert_eq(in_use, 1);
}

Test(dpt, forged_tag_and_foreign_owner)
{
        struct dpt *d = dpt_create(16);
        uint32_t t = dpt_alloc(d, region, 0, 0x8000, owner_a, &task_obj, 0x1234);
        cr_assert_not_null(dpt_lookup(d, t, owner_a));
        cr_assert_null(dpt_lookup(d, t, owner_b), "another connection's TTT accepted");
        cr_assert_null(dpt_lookup(d, t, NULL));
        cr_assert_null(dpt_lookup(d, (t & 0xffff0000u) | 0x1235, owner_a), "forged tag accepted");
        cr_assert_null(dpt_lookup(d, (t & 0xffff0000u) | 0x0000, owner_a));
        /* Right tag, an index that is free. */
        cr_assert_null(dpt_lookup(d, (5u << 16) | 0x1234, owner_a));
        dpt_destroy(d);
}

Test(dpt, out_of_range_index)
{
        struct dpt *d = dpt_create(16);
        for (unsigned i = 0; i < 16; i++)
                dpt_alloc(d, region, 0, 512, owner_a, NULL, 0x0077);
        cr_assert_null(dpt_lookup(d, (16u << 16) | 0x0077, owner_a));
        cr_assert_null(dpt_lookup(d, (0xfffeu << 16) | 0x0077, owner_a));
        cr_assert_null(dpt_lookup(d, 0xffff0077u, owner_a));
        /* Freeing an out-of-range TTT is ignored. */
        dpt_free(d, (16u << 16) | 0x0077);
        dpt_free(d, 0xffff0077u);
        cr_assert_eq(dpt_in_use(d), 16);
        cr_assert_eq(dpt_alloc_at(d, 16, region, 0, 512, owner_a, NULL, 1), RSVD);
        dpt_destroy(d);
}

Test(dpt, alloc_at_chosen_index)
{
        struct dpt *d = dpt_create(32);
        uint32_t t =
            dpt_alloc_at(d, 0x12, region + 0x80000, 0xC000, 0x4000, owner_a, &task_obj, 0x0123);
        cr_assert_eq(t, 0x00120123u);
        cr_assert_eq(dpt_alloc_at(d, 0x12, region, 0, 512, owner_a, NULL, 1), RSVD, "in use");
        struct dpt_entry *e = dpt_lookup(d, t, owner_a);
        cr_assert_not_null(e);
        cr_assert_eq(e->data_pointer, region + 0x80000);
        /* Ordinary allocation never hands out the chosen index again while it is in use. */
        for (unsigned i = 0; i < 31; i++) {
                uint32_t n = dpt_alloc(d, region, 0, 512, owner_a, NULL, 1);
                cr_assert_neq(n, RSVD);
                cr_assert_neq(n >> 16, 0x12);
        }
        cr_assert_eq(dpt_alloc(d, region, 0, 512, owner_a, NULL, 1), RSVD);
        cr_assert_eq(dpt_in_use(d), 32);
        dpt_destroy(d);
}

Test(dpt, place_inside)
{
        struct dpt *d = dpt_create(4);
        uint8_t *p = region + 0x68000;
        uint32_t t = dpt_alloc(d, p, 0x4000, 0x8000, owner_a, NULL, 1);
        const struct dpt_entry *e = dpt_lookup(d, t, owner_a);
        cr_assert_eq(dpt_place(e, 0x4000, 0x8000), p, "whole entry");
        cr_assert_eq(dpt_place(e, 0x4000, 0x2000), p);
        cr_assert_eq(dpt_place(e, 0x6000, 0x2000), p + 0x2000);
        cr_assert_eq(dpt_place(e, 0x8000, 0x2000), p + 0x4000);
        cr_assert_eq(dpt_place(e, 0xA000, 0x2000), p + 0x6000, "ends exactly at the end");
        cr_assert_eq(dpt_place(e, 0x4001, 1), p + 1);
        cr_assert_eq(dpt_place(e, 0xBFFF, 1), p + 0x7FFF, "last byte");
        dpt_destroy(d);
}

Test(dpt, place_straddling_and_beyond)
{
        struct dpt *d = dpt_create(4);
        uint8_t *p = region + 0x68000;
        uint32_t t = dpt_alloc(d, p, 0x4000, 0x8000, owner_a, NULL, 1);
        const struct dpt_entry *e = dpt_lookup(d, t, owner_a);
        /* straddling the start or the end */
        cr_assert_null(dpt_place(e, 0x3000, 0x2000));
        cr_assert_null(dpt_place(e, 0x3FFF, 2));
        cr_assert_null(dpt_place(e, 0xB000, 0x2000));
        cr_assert_null(dpt_place(e, 0xBFFF, 2));
        cr_assert_null(dpt_place(e, 0x4000, 0x8001), "one byte too long");
        cr_assert_null(dpt_place(e, 0x0, 0x10000), "covers the entry and more");
        /* entirely outside */
        cr_assert_null(dpt_place(e, 0x0, 0x2000));
        cr_assert_null(dpt_place(e, 0x3FFF, 1));
        cr_assert_null(dpt_place(e, 0xC000, 1));
        cr_assert_null(dpt_place(e, 0xE000, 0x2000));
        /* 32-bit wrap-around must not sneak past the check */
        cr_assert_null(dpt_place(e, 0xFFFFF000u, 0x2000));
        cr_assert_null(dpt_place(e, 0x4000, 0xFFFFFFFFu));
        cr_assert_null(dpt_place(e, 0x6000, 0xFFFFE000u));
        dpt_destroy(d);
}

Test(dpt, place_entry_at_offset_zero)
{
        struct dpt *d = dpt_create(4);
        uint8_t *p = region + 0x54000;
        uint32_t t = dpt_alloc(d, p, 0x0, 0x4000, owner_a, NULL, 1);
        const struct dpt_entry *e = dpt_lookup(d, t, owner_a);
        cr_assert_eq(dpt_place(e, 0x0, 0x2000), p);
        cr_assert_eq(dpt_place(e, 0x2000, 0x2000), p + 0x2000);
        cr_assert_null(dpt_place(e, 0x2000, 0x2001));
        cr_assert_null(dpt_place(e, 0x4000, 0x2000));
        dpt_destroy(d);
}

Test(dpt, in_use_and_high_water)
{
        struct dpt *d = dpt_create(64);
        uint32_t t[10];
        for (unsigned i = 0; i < 5; i++)
                t[i] = dpt_alloc(d, region, 0, 512, owner_a, NULL, 1);
        cr_assert_eq(dpt_in_use(d), 5);
        cr_assert_eq(dpt_high_water(d), 5);
        dpt_free(d, t[0]);
        dpt_free(d, t[3]);
        dpt_free(d, t[4]);
        cr_assert_eq(dpt_in_use(d), 2);
        cr_assert_eq(dpt_high_water(d), 5, "high water went down");
        for (unsigned i = 0; i < 3; i++)
                t[i] = dpt_alloc(d, region, 0, 512, owner_a, NULL, 2);
        cr_assert_eq(dpt_in_use(d), 5);
        cr_assert_eq(dpt_high_water(d), 5);
        for (unsigned i = 0; i < 4; i++)
                dpt_alloc(d, region, 0, 512, owner_a, NULL, 3);
        cr_assert_eq(dpt_in_use(d), 9);
        cr_assert_eq(dpt_high_water(d), 9);
        /* Refused operations do not count. */
        dpt_free(d, 0x00200003u);                             /* index 32: free */
        dpt_alloc_at(d, 1, region, 0, 512, owner_a, NULL, 4); /* index 1: in use */
        cr_assert_eq(dpt_in_use(d), 9);
        cr_assert_eq(dpt_high_water(d), 9);
        dpt_destroy(d);
}
