/* Tests for repl/state (the bitmap's marks over word boundaries, persisted across a reopen;
 * the needs-full flag; a step-down's role and flag; a new generation on divergence; the
 * generation relation) and the HOST:PORT splitter of repl/proto. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repl/proto.h"
#include "repl/state.h"

#define GRAN    4096u
#define REGIONS 200u /* 4 words, the last one partial */

static char path[64];

static struct repl_state *fresh(void)
{
        snprintf(path, sizeof(path), "/tmp/test_repl_state.XXXXXX");
        int fd = mkstemp(path);
        cr_assert(fd >= 0);
        close(fd);
        struct repl_state *s =
            repl_state_open(path, (uint64_t)REGIONS * GRAN, GRAN, REPL_ROLE_PRIMARY);
        cr_assert_not_null(s);
        return s;
}

static struct repl_state *reopen(struct repl_state *s)
{
        repl_state_close(s);
        s = repl_state_open(path, (uint64_t)REGIONS * GRAN, GRAN, REPL_ROLE_SECONDARY);
        cr_assert_not_null(s);
        return s;
}

static void marked(struct repl_state *s, const uint64_t *want, size_t n)
{
        int64_t r = -1;
        for (size_t i = 0; i < n; i++) {
                r = repl_state_next(s, (uint64_t)(r + 1));
                cr_assert_eq(r, (int64_t)want[i], "region %zu: %lld, not %llu", i, (long long)r,
                             (unsigned long long)want[i]);
        }
        cr_assert_eq(repl_state_next(s, (uint64_t)(r + 1)), -1);
        cr_assert_eq(repl_state_count(s), n);
}

Test(repl_state, mark_ranges_across_words_and_persist)
{
        struct repl_state *s = fresh();
        /* regions 62..65 (two words), then 199 (the last), then past the end (ignored) */
        cr_assert_eq(repl_state_mark(s, 62ull * GRAN + 1, 3ull * GRAN), 0);
        cr_assert_eq(repl_state_mark(s, 199ull * GRAN, 1), 0);
        cr_assert_eq(repl_state_mark(s, 300ull * GRAN, GRAN), 0);
        cr_assert_eq(repl_state_mark(s, 63ull * GRAN, 2ull * GRAN), 0); /* already marked */
        uint64_t want[] = {62, 63, 64, 65, 199};
        marked(s, want, 5);
        s = reopen(s);
        marked(s, want, 5);
        cr_assert_eq(repl_state_role(s), REPL_ROLE_PRIMARY, "the file's role wins");
        repl_state_close(s);
        unlink(path);
}

Test(repl_state, mark_bits_and_all_and_clear_all)
{
        struct repl_state *s = fresh();
        uint64_t bits[4] = {1ull << 5, 0, 1ull << 63, 1ull << 7};
        cr_assert_eq(repl_state_mark_bits(s, bits), 0);
        uint64_t want[] = {5, 191, 199};
        marked(s, want, 3);
        cr_assert_eq(repl_state_mark_all(s), 0);
        cr_assert_eq(repl_state_count(s), REGIONS);
        cr_assert_eq(repl_state_clear_all(s), 0);
        s = reopen(s);
        cr_assert_eq(repl_state_count(s), 0);
        cr_assert_eq(repl_state_next(s, 0), -1);
        repl_state_close(s);
        unlink(path);
}

Test(repl_state, needs_full_and_diverge_persist)
{
        struct repl_state *s = fresh();
        uint64_t g = repl_state_gen(s);
        cr_assert_eq(repl_state_set(s, REPL_ROLE_PRIMARY, g, g), 0);
        cr_assert_not(repl_state_needs_full(s));
        cr_assert_eq(repl_state_set_needs_full(s, true), 0);
        cr_assert_eq(repl_state_diverge(s), 0);
        uint64_t g2 = repl_state_gen(s);
        cr_assert_neq(g2, g, "a write the peer lacks: a new generation");
        cr_assert_eq(repl_state_shared_gen(s), g);
        cr_assert_eq(repl_state_diverge(s), 0);
        cr_assert_eq(repl_state_gen(s), g2, "already diverged: the same generation");
        s = reopen(s);
        cr_assert(repl_state_needs_full(s));
        cr_assert(repl_state_consistent(s));
        cr_assert_eq(repl_state_gen(s), g2);
        cr_assert_eq(repl_state_set_needs_full(s, false), 0);
        cr_assert_not(repl_state_needs_full(s));
        repl_state_close(s);
        unlink(path);
}

Test(repl_state, step_down_persists_role_and_flag_together)
{
        struct repl_state *s = fresh();
        cr_assert_eq(repl_state_set(s, REPL_ROLE_PRIMARY, 7, 5), 0);
        cr_assert_eq(repl_state_step_down(s, true), 0);
        cr_assert_eq(repl_state_role(s), REPL_ROLE_SECONDARY);
        s = reopen(s);
        cr_assert_eq(repl_state_role(s), REPL_ROLE_SECONDARY);
        cr_assert(repl_state_needs_full(s), "stepped down unsynchronized: needs every region");
        cr_assert_eq(repl_state_gen(s), 7, "the generations are kept");
        cr_assert_eq(repl_state_shared_gen(s), 5);
        cr_assert_eq(repl_state_set(s, REPL_ROLE_PRIMARY, 7, 7), 0);
        cr_assert_eq(repl_state_step_down(s, false), 0);
        s = reopen(s);
        cr_assert_eq(repl_state_role(s), REPL_ROLE_SECONDARY);
        cr_assert_not(repl_state_needs_full(s), "a clean handover clears the flag");
        repl_state_close(s);
        unlink(path);
}

Test(repl_state, generation_relation)
{
        /* this side gen 2 shared 1 */
        cr_assert_eq(repl_gen_relation(2, 1, 2, 1), REPL_GEN_SAME);
        cr_assert_eq(repl_gen_relation(2, 1, 1, 1), REPL_GEN_PEER_BEHIND);
        cr_assert_eq(repl_gen_relation(1, 1, 2, 1), REPL_GEN_PEER_AHEAD);
        cr_assert_eq(repl_gen_relation(2, 1, 3, 1), REPL_GEN_DIVERGED);
        /* never paired */
        cr_assert_eq(repl_gen_relation(5, 0, 6, 0), REPL_GEN_DIVERGED);
}

Test(repl_proto, split_hostport)
{
        char host[64], port[8];
        cr_assert_eq(repl_split_hostport("10.0.0.2:3270", host, sizeof(host), port), 0);
        cr_assert_str_eq(host, "10.0.0.2");
        cr_assert_str_eq(port, "3270");
        cr_assert_eq(repl_split_hostport("[fe80::1]:3270", host, sizeof(host), port), 0);
        cr_assert_str_eq(host, "fe80::1");
        cr_assert_str_eq(port, "3270");
        cr_assert_eq(repl_split_hostport("3270", host, sizeof(host), port), -1);
        cr_assert_eq(repl_split_hostport(":3270", host, sizeof(host), port), -1);
        cr_assert_eq(repl_split_hostport("[]:3270", host, sizeof(host), port), -1);
        cr_assert_eq(repl_split_hostport("host:", host, sizeof(host), port), -1);
        cr_assert_eq(repl_split_hostport("host:123456789", host, sizeof(host), port), -1);
        cr_assert_eq(repl_split_hostport("a-very-long-host-name:1", host, 8, port), -1);
}

Test(repl_proto, hello_flags_round_trip)
{
        struct repl_hello h = {.size = 1 << 20,
                               .block_size = 512,
                               .role = REPL_ROLE_SECONDARY,
                               .gen = 7,
                               .shared_gen = 6,
                               .flags = REPL_HELLO_F_NEEDS_FULL},
                          back;
        snprintf(h.id, sizeof(h.id), "vol");
        uint8_t buf[REPL_HELLO_LEN];
        repl_hello_encode(&h, buf);
        cr_assert(repl_hello_decode(buf, sizeof(buf), &back));
        cr_assert_eq(back.flags, REPL_HELLO_F_NEEDS_FULL);
        cr_assert_eq(back.gen, 7);
        cr_assert_eq(back.shared_gen, 6);
}
