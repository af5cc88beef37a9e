/* The write log on a real file: records appended through the writer thread come back at
 * replay with their data, ordered by volume and ticket (tickets that wrap included); the log
 * ends at a torn record; checkpoints free space so more than the log's size can be written,
 * and replay then returns only what follows the last checkpoint; a torn header slot falls
 * back to the other one; a failing checkpoint makes appends wait, never fail. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/wlog.h"

#define MIB (1ull << 20)

static char path[64];

struct rec_entry {
        struct wlog_entry e;
        struct iovec iov;
        uint8_t *data;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool logged;
        int err;
};

static void on_logged(struct wlog_entry *e, int err)
{
        struct rec_entry *r = (struct rec_entry *)e;
        pthread_mutex_lock(&r->lock);
        r->logged = true;
        r->err = err;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
}

static struct rec_entry *rec_new(enum wlog_op op, uint64_t key, uint64_t offset, uint64_t len,
                                 uint32_t seq, uint8_t fill)
{
        struct rec_entry *r = calloc(1, sizeof(*r));
        r->e.rec =
            (struct wlog_record){.op = op, .key = key, .offset = offset, .length = len, .seq = seq};
        if (op == WLOG_WRITE) {
                r->data = malloc(len);
                for (uint64_t i = 0; i < len; i++)
                        r->data[i] = (uint8_t)(fill + i / 512);
                r->iov = (struct iovec){r->data, len};
                r->e.iov = &r->iov;
                r->e.iovcnt = 1;
        }
        r->e.logged = on_logged;
        pthread_mutex_init(&r->lock, NULL);
        pthread_cond_init(&r->cond, NULL);
        return r;
}

/* Appends and waits until durable; then marks it applied. Returns the logged() result. */
static int log_one(struct wlog *l, struct rec_entry *r)
{
        int rc = wlog_append(l, &r->e);
        if (rc < 0)
                return rc;
        pthread_mutex_lock(&r->lock);
        while (!r->logged)
                pthread_cond_wait(&r->cond, &r->lock);
        pthread_mutex_unlock(&r->lock);
        wlog_applied(l, &r->e);
        return r->err;
}

static void rec_free(struct rec_entry *r)
{
        pthread_cond_destroy(&r->cond);
        pthread_mutex_destroy(&r->lock);
        free(r->data);
        free(r);
}

struct replayed {
        struct wlog_record rec[512];
        uint8_t first[512]; /* first data byte */
        bool data_ok[512];
        int n;
};

static int collect(void *ctx, const struct wlog_record *r, const void *data)
{
        struct replayed *out = ctx;
        cr_assert_lt(out->n, 512);
        out->rec[out->n] = *r;
        bool ok = true;
        if (r->op == WLOG_WRITE) {
                const uint8_t *d = data;
                out->first[out->n] = d[0];
                for (uint64_t i = 0; i < r->length; i++)
                        ok = ok && d[i] == (uint8_t)(d[0] + i / 512);
        }
        out->data_ok[out->n++] = ok;
        return 0;
}

static int flush_ok(void *ctx)
{
        (*(int *)ctx)++;
        return 0;
}

/* ctx: {calls, fail} */
static int flush_until_told(void *ctx)
{
        int *c = ctx;
        c[0]++;
        return __atomic_load_n(&c[1], __ATOMIC_SEQ_CST) ? -EIO : 0;
}

static void setup(void)
{
        snprintf(path, sizeof(path), "/tmp/wlog-unit.%d", getpid());
        unlink(path);
}

static void teardown(void)
{
        unlink(path);
}

TestSuite(wlog, .init = setup, .fini = teardown);

static struct wlog *reopen(void)
{
        struct wlog *l = wlog_open(path, 16 * MIB);
        cr_assert_not_null(l);
        return l;
}

Test(wlog, records_come_back_in_volume_and_ticket_order)
{
        struct wlog *l = reopen();
        int flushes = 0;
        cr_assert_eq(wlog_start(l, flush_ok, &flushes, 3600000), 0);
        /* key 2 first in the log; key 1's tickets arrive out of order and wrap */
        struct rec_entry *r[] = {
            rec_new(WLOG_WRITE, 2, 0, 4096, 7, 10),
            rec_new(WLOG_WRITE, 1, 8192, 1024, 0xfffffff0u, 20),
            rec_new(WLOG_WRITE, 1, 8192, 1024, 3, 30),
            rec_new(WLOG_UNMAP, 1, 0, 65536, 0xfffffff8u, 0),
            rec_new(WLOG_WRITE_ZEROES, 2, 512, 512, 9, 0),
        };
        for (size_t i = 0; i < 5; i++)
                cr_assert_eq(log_one(l, r[i]), 0);
        wlog_close(l); /* no reset: as after kill -9 */
        l = reopen();
        struct replayed out = {0};
        cr_assert_eq(wlog_replay(l, collect, &out), 5);
        cr_assert_eq(out.rec[0].key, 1);
        cr_assert_eq(out.rec[0].seq, 0xfffffff0u);
        cr_assert_eq(out.first[0], 20);
        cr_assert_eq(out.rec[1].op, WLOG_UNMAP);
        cr_assert_eq(out.rec[1].length, 65536);
        cr_assert_eq(out.rec[2].seq, 3); /* after the wrap: last */
        cr_assert_eq(out.first[2], 30);
        cr_assert_eq(out.rec[3].key, 2);
        cr_assert_eq(out.rec[3].offset, 0);
        cr_assert_eq(out.rec[4].op, WLOG_WRITE_ZEROES);
        for (int i = 0; i < 5; i++)
                cr_assert(out.data_ok[i], "record %d's data", i);
        cr_assert_eq(wlog_reset(l), 0);
        wlog_close(l);
        l = reopen();
        cr_assert_eq(wlog_replay(l, collect, &(struct replayed){0}), 0, "reset emptied the log");
        wlog_close(l);
        for (size_t i = 0; i < 5; i++)
                rec_free(r[i]);
}

Test(wlog, a_torn_record_ends_the_log)
{
        struct wlog *l = reopen();
        int flushes = 0;
        cr_assert_eq(wlog_start(l, flush_ok, &flushes, 3600000), 0);
        struct rec_entry *r[3];
        for (int i = 0; i < 3; i++) {
                r[i] =
                    rec_new(WLOG_WRITE, 1, (uint64_t)i * 4096, 4096, (uint32_t)i + 1, (uint8_t)i);
                cr_assert_eq(log_one(l, r[i]), 0);
        }
        wlog_close(l);
        /* damage one byte of the second record's data */
        int fd = open(path, O_RDWR);
        uint8_t b = 0xff;
        cr_assert_eq(pwrite(fd, &b, 1, WLOG_AREA_OFFSET + 4608 + 512 + 100), 1);
        close(fd);
        l = reopen();
        struct replayed out = {0};
        cr_assert_eq(wlog_replay(l, collect, &out), 1);
        cr_assert_eq(out.rec[0].offset, 0);
        wlog_close(l);
        for (int i = 0; i < 3; i++)
                rec_free(r[i]);
}

Test(wlog, checkpoints_free_space_and_replay_starts_after_the_last)
{
        struct wlog *l = reopen();
        int flush[2] = {0, 0};
        cr_assert_eq(wlog_start(l, flush_until_told, flush, 3600000), 0);
        /* 40 MiB through a 16 MiB log: only possible if checkpoints free space; then 3 more
         * that no checkpoint may cover */
        for (uint32_t i = 0; i < 43; i++) {
                if (i == 40)
                        __atomic_store_n(&flush[1], 1, __ATOMIC_SEQ_CST);
                struct rec_entry *r =
                    rec_new(WLOG_WRITE, 5, (uint64_t)i * MIB, MIB, i + 1, (uint8_t)(i * 3));
                cr_assert_eq(log_one(l, r), 0);
                rec_free(r);
        }
        struct wlog_stats st;
        wlog_get_stats(l, &st);
        cr_assert_gt(st.checkpoints, 0);
        cr_assert_gt(flush[0], 0);
        cr_assert_eq(st.errors, 0);
        cr_assert_leq(st.used, 16 * MIB);
        wlog_close(l);
        l = reopen();
        struct replayed out = {0};
        long n = wlog_replay(l, collect, &out);
        cr_assert_geq(n, 3);
        cr_assert_lt(n, 43);
        /* the newest records, consecutive, ending with the last one written */
        for (long i = 0; i < n; i++) {
                cr_assert_eq(out.rec[i].seq, (uint32_t)(43 - n + i + 1));
                cr_assert(out.data_ok[i]);
                cr_assert_eq(out.first[i], (uint8_t)((43 - n + i) * 3));
        }
        wlog_close(l);
}

Test(wlog, a_torn_header_slot_falls_back_to_the_other)
{
        struct wlog *l = reopen();
        int flushes = 0;
        cr_assert_eq(wlog_start(l, flush_ok, &flushes, 3600000), 0);
        struct rec_entry *r = rec_new(WLOG_WRITE, 1, 0, 4096, 1, 1);
        cr_assert_eq(log_one(l, r), 0);
        wlog_close(l);
        l = reopen();
        cr_assert_eq(wlog_replay(l, collect, &(struct replayed){0}), 1);
        cr_assert_eq(wlog_reset(l), 0); /* generation 2, in slot 0 */
        wlog_close(l);
        int fd = open(path, O_RDWR);
        uint8_t junk[16] = {1, 2, 3};
        cr_assert_eq(pwrite(fd, junk, sizeof(junk), 20), (ssize_t)sizeof(junk));
        close(fd);
        /* slot 1 (generation 1, before the reset) wins: the record is replayed again, which is
         * safe (replay is idempotent) */
        l = reopen();
        struct replayed out = {0};
        cr_assert_eq(wlog_replay(l, collect, &out), 1);
        cr_assert_eq(out.first[0], 1);
        wlog_close(l);
        rec_free(r);
}

static int flush_fails_then_works(void *ctx)
{
        int *calls = ctx;
        return ++*calls < 3 ? -EIO : 0;
}

Test(wlog, a_failing_checkpoint_makes_appends_wait_not_fail)
{
        struct wlog *l = reopen();
        int calls = 0;
        cr_assert_eq(wlog_start(l, flush_fails_then_works, &calls, 3600000), 0);
        for (uint32_t i = 0; i < 24; i++) {
                struct rec_entry *r = rec_new(WLOG_WRITE, 1, 0, MIB, i + 1, 0);
                cr_assert_eq(log_one(l, r), 0);
                rec_free(r);
        }
        struct wlog_stats st;
        wlog_get_stats(l, &st);
        cr_assert_geq(st.checkpoint_failures, 2);
        cr_assert_gt(st.checkpoints, 0);
        cr_assert_eq(st.errors, 0);
        wlog_close(l);
}

Test(wlog, refuses_what_it_cannot_hold)
{
        struct wlog *l = reopen();
        struct rec_entry *r = rec_new(WLOG_WRITE, 1, 0, 2 * WLOG_MAX_RECORD, 1, 0);
        cr_assert_eq(wlog_append(l, &r->e), -E2BIG);
        wlog_close(l);
        rec_free(r);
        cr_assert_null(wlog_open(path, 1 * MIB), "too small");
        int fd = open(path, O_RDWR | O_TRUNC);
        cr_assert_eq(write(fd, "not a log", 9), 9);
        close(fd);
        cr_assert_null(wlog_open(path, 16 * MIB), "not a write log");
}
