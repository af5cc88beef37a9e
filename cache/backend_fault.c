/* The fault-injection backend: wraps another backend and, as told by backend_fault_set()
 * (the status socket's "fault" operation), fails the next N reads, writes or flushes with
 * -EIO and delays completions, so tests can check what the layers above do with a failing or
 * slow disk. A failed I/O never reaches the inner backend: a failed write changes nothing.
 *
 * Each I/O is forwarded as a shadow volume_io (the inner backend owns the shadow's impl[]),
 * allocated per I/O: this backend is test equipment, its cost does not matter. The outer
 * io's impl[] holds only what is needed to fail it when that allocation fails. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "src/log.h"
#include "src/reactor.h"

enum fault_kind { FAULT_READ, FAULT_WRITE, FAULT_FLUSH, FAULT_KINDS };

struct backend_fault_b {
        struct backend base;
        struct backend *inner;
        /* Settings and counters: atomics, since submit runs on any reactor and the status
         * thread changes the settings. */
        uint32_t fail_left[FAULT_KINDS]; /* UINT32_MAX: every one until changed */
        uint32_t delay_ms;
        uint64_t injected[FAULT_KINDS];
        uint64_t in_flight;
        int last_error_injected; /* the latest error seen was one we made up */
};

/* One forwarded I/O. */
struct fault_io {
        struct volume_io shadow; /* what the inner backend sees */
        struct volume_io *outer;
        struct backend_fault_b *f;
        uint32_t delay_ms; /* as set when the I/O was submitted */
        int result;
        struct reactor_timer timer;
        struct reactor_deferred later;
};

/* When even the fault_io cannot be allocated: fail the outer io from its own impl[]. */
struct fault_nomem {
        struct reactor_deferred later;
        struct volume_io *io;
};
_Static_assert(sizeof(struct fault_nomem) <= sizeof(((struct volume_io *)0)->impl),
               "fault_nomem must fit in volume_io.impl");

static const struct backend_ops fault_ops;

static struct backend_fault_b *to_fault(struct backend *b)
{
        return (struct backend_fault_b *)b;
}

static enum fault_kind kind_of(enum volume_op op)
{
        switch (op) {
        case VOLUME_READ:
                return FAULT_READ;
        case VOLUME_FLUSH:
                return FAULT_FLUSH;
        case VOLUME_WRITE:
        case VOLUME_UNMAP:
        case VOLUME_WRITE_ZEROES:
                break;
        }
        return FAULT_WRITE;
}

/* Consumes one fault of this kind if any is left; true if this I/O must fail. */
static bool take_fault(struct backend_fault_b *f, enum fault_kind k)
{
        uint32_t left = __atomic_load_n(&f->fail_left[k], __ATOMIC_RELAXED);
        while (left != 0) {
                if (left == UINT32_MAX)
                        return true;
                if (__atomic_compare_exchange_n(&f->fail_left[k], &left, left - 1, false,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                        return true;
        }
        return false;
}

static void fault_finish(struct fault_io *fio)
{
        struct volume_io *outer = fio->outer;
        struct backend_fault_b *f = fio->f;
        int result = fio->result;
        free(fio);
        __atomic_sub_fetch(&f->in_flight, 1, __ATOMIC_RELAXED);
        outer->done(outer, result);
}

static void fault_timer_cb(struct reactor_timer *t)
{
        fault_finish(t->ctx);
}

static void fault_later_cb(struct reactor_deferred *d)
{
        fault_finish((struct fault_io *)((char *)d - offsetof(struct fault_io, later)));
}

/* Completes fio with result, after its delay; never from inside submit. */
static void fault_complete(struct fault_io *fio, int result)
{
        fio->result = result;
        if (fio->delay_ms) {
                fio->timer.cb = fault_timer_cb;
                fio->timer.ctx = fio;
                reactor_timer_arm(fio->outer->reactor, &fio->timer,
                                  (uint64_t)fio->delay_ms * 1000000ull);
                return;
        }
        fio->later.cb = fault_later_cb;
        reactor_defer(fio->outer->reactor, &fio->later);
}

static void fault_inner_done(struct volume_io *shadow, int result)
{
        struct fault_io *fio = shadow->priv;
        if (result < 0)
                __atomic_store_n(&fio->f->last_error_injected, 0, __ATOMIC_RELAXED);
        fault_complete(fio, result);
}

static void fault_nomem_cb(struct reactor_deferred *d)
{
        struct fault_nomem *st = (struct fault_nomem *)d;
        st->io->done(st->io, -ENOMEM);
}

static void fault_submit(struct backend *b, struct volume_io *io)
{
        struct backend_fault_b *f = to_fault(b);
        struct fault_io *fio = calloc(1, sizeof(*fio));
        if (!fio) {
                struct fault_nomem *st = (struct fault_nomem *)io->impl;
                *st = (struct fault_nomem){.later.cb = fault_nomem_cb, .io = io};
                reactor_defer(io->reactor, &st->later);
                return;
        }
        __atomic_add_fetch(&f->in_flight, 1, __ATOMIC_RELAXED);
        fio->outer = io;
        fio->f = f;
        fio->delay_ms = __atomic_load_n(&f->delay_ms, __ATOMIC_RELAXED);
        enum fault_kind k = kind_of(io->op);
        if (take_fault(f, k)) {
                __atomic_add_fetch(&f->injected[k], 1, __ATOMIC_RELAXED);
                __atomic_store_n(&f->last_error_injected, 1, __ATOMIC_RELAXED);
                fault_complete(fio, -EIO);
                return;
        }
        fio->shadow = (struct volume_io){
            .op = io->op,
            .offset = io->offset,
            .length = io->length,
            .iov = io->iov,
            .iovcnt = io->iovcnt,
            .fua = io->fua,
            .reactor = io->reactor,
            .done = fault_inner_done,
            .priv = fio,
        };
        backend_submit(f->inner, &fio->shadow);
}

static uint64_t fault_size(const struct backend *b)
{
        return backend_size(((const struct backend_fault_b *)b)->inner);
}

static void fault_destroy(struct backend *b)
{
        struct backend_fault_b *f = to_fault(b);
        uint64_t left = __atomic_load_n(&f->in_flight, __ATOMIC_RELAXED);
        if (left)
                log_warn("backend %s: destroyed with %llu I/Os still in flight", b->name,
                         (unsigned long long)left);
        backend_destroy(f->inner);
        free(f);
}

static void fault_status(const struct backend *b, struct backend_status *st)
{
        const struct backend_fault_b *f = (const struct backend_fault_b *)b;
        backend_get_status(f->inner, st);
        uint64_t n[FAULT_KINDS];
        for (int k = 0; k < FAULT_KINDS; k++)
                n[k] = __atomic_load_n(&f->injected[k], __ATOMIC_RELAXED);
        uint64_t total = n[FAULT_READ] + n[FAULT_WRITE] + n[FAULT_FLUSH];
        st->errors += total;
        bool ours = __atomic_load_n(&f->last_error_injected, __ATOMIC_RELAXED);
        if (total && (ours || !st->last_error[0]))
                snprintf(st->last_error, sizeof(st->last_error),
                         "injected Input/output error (%llu reads, %llu writes, %llu flushes "
                         "failed so far)",
                         (unsigned long long)n[FAULT_READ], (unsigned long long)n[FAULT_WRITE],
                         (unsigned long long)n[FAULT_FLUSH]);
}

static const struct backend_ops fault_ops = {
    .name = "fault",
    .submit = fault_submit,
    .size = fault_size,
    .destroy = fault_destroy,
    .status = fault_status,
};

/* On failure (out of memory) returns NULL and inner stays the caller's. */
struct backend *backend_fault_wrap(struct backend *inner)
{
        struct backend_fault_b *f = calloc(1, sizeof(*f));
        if (!f) {
                log_err("backend %s: no memory for fault injection", inner->name);
                return NULL;
        }
        f->base.ops = &fault_ops;
        f->inner = inner;
        snprintf(f->base.name, sizeof(f->base.name), "%.63s", inner->name);
        return &f->base;
}

int backend_fault_set(struct backend *b, const struct backend_fault *set)
{
        if (!b || b->ops != &fault_ops)
                return -EINVAL;
        struct backend_fault_b *f = to_fault(b);
        __atomic_store_n(&f->fail_left[FAULT_READ], set->fail_reads, __ATOMIC_RELAXED);
        __atomic_store_n(&f->fail_left[FAULT_WRITE], set->fail_writes, __ATOMIC_RELAXED);
        __atomic_store_n(&f->fail_left[FAULT_FLUSH], set->fail_flushes, __ATOMIC_RELAXED);
        __atomic_store_n(&f->delay_ms, set->delay_ms, __ATOMIC_RELAXED);
        return 0;
}
