/* The fault-injection backend over the memory backend, on an unstarted reactor driven by
 * reactor_poll_once: I/Os pass through untouched until faults are set; then exactly the next
 * N reads / writes / flushes fail with -EIO without reaching the inner backend, completions
 * are delayed by delay_ms, and the counters hold under concurrent submitters. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "src/reactor.h"
#include "tests/common/mem_backend.h"

#define LUN_BYTES (1u << 20)

static struct reactor *reactor;
static struct mem_backend *mem;
static struct backend *fault;

struct op {
        struct volume_io io;
        struct iovec iov;
        unsigned char buf[4096];
        bool done;
        int result;
        uint64_t done_ns;
};

static void setup(void)
{
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        mem = mem_backend_create(LUN_BYTES);
        cr_assert_not_null(mem);
        fault = backend_fault_wrap(&mem->base);
        cr_assert_not_null(fault);
}

static void teardown(void)
{
        backend_destroy(fault); /* destroys mem too */
        reactor_destroy(reactor);
}

TestSuite(backend_fault, .init = setup, .fini = teardown);

static void op_done(struct volume_io *io, int result)
{
        struct op *o = io->priv;
        cr_assert(!o->done, "completed twice");
        o->done = true;
        o->result = result;
        o->done_ns = reactor_now_ns();
}

static void op_init(struct op *o, enum volume_op op, uint64_t offset, unsigned char fill)
{
        memset(o, 0, sizeof(*o));
        memset(o->buf, fill, sizeof(o->buf));
        o->iov = (struct iovec){o->buf, sizeof(o->buf)};
        o->io = (struct volume_io){.op = op,
                                   .offset = offset,
                                   .length = op == VOLUME_FLUSH ? 0 : sizeof(o->buf),
                                   .iov = &o->iov,
                                   .iovcnt = 1,
                                   .reactor = reactor,
                                   .done = op_done,
                                   .priv = o};
}

/* Submits and checks it did not complete inside submit. */
static void submit(struct op *o)
{
        backend_submit(fault, &o->io);
        cr_assert(!o->done, "completed inside submit");
}

/* Runs the memory backend and the reactor until o completes (at most 5 s). */
static int wait_op(struct op *o)
{
        uint64_t deadline = reactor_now_ns() + 5000000000ull;
        while (!o->done && reactor_now_ns() < deadline) {
                mem_backend_complete_all(mem);
                reactor_poll_once(reactor, 5);
        }
        cr_assert(o->done, "I/O never completed");
        return o->result;
}

static int run_op(enum volume_op op, uint64_t offset, unsigned char fill)
{
        struct op o;
        op_init(&o, op, offset, fill);
        submit(&o);
        return wait_op(&o);
}

static void set_faults(uint32_t reads, uint32_t writes, uint32_t flushes, uint32_t delay_ms)
{
        struct backend_fault f = {reads, writes, flushes, delay_ms};
        cr_assert_eq(backend_fault_set(fault, &f), 0);
}

static bool mem_all(uint64_t offset, unsigned char v)
{
        for (size_t i = 0; i < 4096; i++)
                if (mem->bytes[offset + i] != v)
                        return false;
        return true;
}

Test(backend_fault, passes_everything_through_without_faults)
{
        cr_assert_eq(backend_size(fault), LUN_BYTES);
        cr_assert_eq(run_op(VOLUME_WRITE, 8192, 0xab), 0);
        cr_assert(mem_all(8192, 0xab));
        struct op r;
        op_init(&r, VOLUME_READ, 8192, 0);
        submit(&r);
        cr_assert_eq(wait_op(&r), 0);
        cr_assert_eq(r.buf[0], 0xab);
        cr_assert_eq(r.buf[4095], 0xab);
        cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), 0);
        cr_assert_eq(run_op(VOLUME_WRITE_ZEROES, 8192, 0), 0);
        cr_assert(mem_all(8192, 0));
        struct backend_status st;
        backend_get_status(fault, &st);
        cr_assert(st.online);
        cr_assert_eq(st.errors, 0);
        cr_assert_str_eq(st.last_error, "");
}

Test(backend_fault, failed_writes_never_reach_the_inner_backend)
{
        set_faults(0, 3, 0, 0);
        struct op w;
        op_init(&w, VOLUME_WRITE, 0, 0x11);
        submit(&w);
        cr_assert_null(mem->pending, "a failing write was forwarded");
        cr_assert_eq(wait_op(&w), -EIO);
        cr_assert_eq(run_op(VOLUME_WRITE_ZEROES, 0, 0), -EIO);
        cr_assert_eq(run_op(VOLUME_UNMAP, 0, 0), -EIO);
        cr_assert_eq(mem->writes, 0);
        cr_assert(mem_all(0, 0), "a failed write changed the disk");
        /* Reads and flushes are not writes: untouched by write faults. */
        cr_assert_eq(run_op(VOLUME_READ, 0, 0), 0);
        cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), 0);
        /* Three writes failed; the fourth goes through. */
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 0x22), 0);
        cr_assert(mem_all(0, 0x22));
        cr_assert_eq(mem->writes, 1);
        struct backend_status st;
        backend_get_status(fault, &st);
        cr_assert_eq(st.errors, 3);
        cr_assert(strstr(st.last_error, "injected"), "last_error: %s", st.last_error);
        cr_assert(strstr(st.last_error, "3 writes"), "last_error: %s", st.last_error);
}

Test(backend_fault, read_and_flush_faults_count_down_separately)
{
        memset(mem->bytes, 0x5a, 4096);
        set_faults(2, 0, 1, 0);
        struct op r;
        op_init(&r, VOLUME_READ, 0, 0xee);
        submit(&r);
        cr_assert_null(mem->pending);
        cr_assert_eq(wait_op(&r), -EIO);
        cr_assert_eq(r.buf[0], 0xee, "a failed read touched the buffer");
        cr_assert_eq(run_op(VOLUME_WRITE, 4096, 0x33), 0);
        cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), -EIO);
        cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), 0);
        cr_assert_eq(run_op(VOLUME_READ, 0, 0), -EIO);
        op_init(&r, VOLUME_READ, 0, 0);
        submit(&r);
        cr_assert_eq(wait_op(&r), 0);
        cr_assert_eq(r.buf[100], 0x5a);
        struct backend_status st;
        backend_get_status(fault, &st);
        cr_assert_eq(st.errors, 3);
}

Test(backend_fault, always_fails_until_changed)
{
        set_faults(UINT32_MAX, UINT32_MAX, UINT32_MAX, 0);
        for (int i = 0; i < 50; i++) {
                cr_assert_eq(run_op(VOLUME_WRITE, 0, 1), -EIO);
                cr_assert_eq(run_op(VOLUME_READ, 0, 1), -EIO);
                cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), -EIO);
        }
        set_faults(0, 0, 0, 0);
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 1), 0);
        cr_assert_eq(run_op(VOLUME_READ, 0, 1), 0);
        cr_assert_eq(run_op(VOLUME_FLUSH, 0, 0), 0);
        struct backend_status st;
        backend_get_status(fault, &st);
        cr_assert_eq(st.errors, 150);
}

Test(backend_fault, setting_replaces_the_previous_counts)
{
        set_faults(0, 10, 0, 0);
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 1), -EIO);
        set_faults(0, 1, 0, 0);
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 1), -EIO);
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 1), 0);
}

Test(backend_fault, delays_successes_and_failures)
{
        set_faults(0, 1, 0, 60);
        struct op a, b;
        op_init(&a, VOLUME_WRITE, 0, 0x44);
        op_init(&b, VOLUME_WRITE, 4096, 0x55);
        uint64_t start = reactor_now_ns();
        submit(&a);
        submit(&b);
        cr_assert_eq(wait_op(&a), -EIO);
        cr_assert_eq(wait_op(&b), 0);
        cr_assert_geq(a.done_ns - start, 60000000ull, "failure after %llu ns",
                      (unsigned long long)(a.done_ns - start));
        cr_assert_geq(b.done_ns - start, 60000000ull, "success after %llu ns",
                      (unsigned long long)(b.done_ns - start));
        cr_assert(mem_all(4096, 0x55), "the delayed write did not land");
        cr_assert(mem_all(0, 0), "the failed write landed");
        /* Back to no delay: completes on the next loop iterations. */
        set_faults(0, 0, 0, 0);
        struct op c;
        op_init(&c, VOLUME_READ, 0, 0);
        start = reactor_now_ns();
        submit(&c);
        cr_assert_eq(wait_op(&c), 0);
        cr_assert_lt(c.done_ns - start, 50000000ull);
}

Test(backend_fault, set_refuses_a_backend_without_fault_injection)
{
        struct mem_backend *plain = mem_backend_create(4096);
        struct backend_fault f = {1, 1, 1, 0};
        cr_assert_eq(backend_fault_set(&plain->base, &f), -EINVAL);
        cr_assert_eq(backend_fault_set(NULL, &f), -EINVAL);
        backend_destroy(&plain->base);
}

/* ---- several reactor threads share one backend ---- */

#define THREADS        4
#define OPS_PER_THREAD 2000

struct submitter {
        pthread_t thread;
        struct reactor *r;
        unsigned failed;
        unsigned completed;
};

static void counted_done(struct volume_io *io, int result)
{
        struct submitter *s = io->priv;
        s->completed++;
        if (result == -EIO)
                s->failed++;
}

static void *submit_many(void *arg)
{
        struct submitter *s = arg;
        static unsigned char buf[512];
        struct iovec iov = {buf, sizeof(buf)};
        struct volume_io *ios = calloc(OPS_PER_THREAD, sizeof(*ios));
        for (int i = 0; i < OPS_PER_THREAD; i++) {
                ios[i] = (struct volume_io){.op = VOLUME_WRITE,
                                            .length = sizeof(buf),
                                            .iov = &iov,
                                            .iovcnt = 1,
                                            .reactor = s->r,
                                            .done = counted_done,
                                            .priv = s};
                backend_submit(fault, &ios[i]);
                if (i % 64 == 0)
                        reactor_poll_once(s->r, 0);
        }
        uint64_t deadline = reactor_now_ns() + 10000000000ull;
        while (s->completed < OPS_PER_THREAD && reactor_now_ns() < deadline)
                reactor_poll_once(s->r, 5);
        free(ios);
        return NULL;
}

Test(backend_fault, counts_hold_across_threads)
{
        /* Every write fails, so the (single-threaded) memory backend is never entered. */
        set_faults(0, THREADS * OPS_PER_THREAD, 0, 0);
        struct submitter s[THREADS] = {0};
        for (int i = 0; i < THREADS; i++) {
                s[i].r = reactor_create((unsigned)i + 1);
                cr_assert_not_null(s[i].r);
                cr_assert_eq(pthread_create(&s[i].thread, NULL, submit_many, &s[i]), 0);
        }
        unsigned failed = 0;
        for (int i = 0; i < THREADS; i++) {
                pthread_join(s[i].thread, NULL);
                cr_assert_eq(s[i].completed, OPS_PER_THREAD);
                failed += s[i].failed;
                reactor_destroy(s[i].r);
        }
        cr_assert_eq(failed, THREADS * OPS_PER_THREAD);
        cr_assert_null(mem->pending);
        /* Exactly used up: the next write passes. */
        cr_assert_eq(run_op(VOLUME_WRITE, 0, 7), 0);
        struct backend_status st;
        backend_get_status(fault, &st);
        cr_assert_eq(st.errors, THREADS * OPS_PER_THREAD);
}
