/* The destager: writes dirty lines back to the backend, per volume, in the background. It
 * starts when the pool is dirty above the high-water mark and goes on to the low-water mark,
 * takes lines older than the maximum age regardless, and works for flushes and write-through
 * writes on demand. Adjacent dirty lines go in one backend write (up to DESTAGE_MAX_LINES),
 * in LBA order from the oldest dirty line. A line being written is immutable (writes to it
 * copy it, cache.c), and a line's successor waits for it, so two backend writes of the same
 * blocks are never in flight at once. A failing backend is retried with back-off and holds up
 * no other volume (RD3-M4). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "cache/cache_internal.h"
#include "src/log.h"

#define DESTAGE_TICK_NS     (10 * 1000000ull)
#define DESTAGE_BACKOFF_MIN (100 * 1000000ull)
#define DESTAGE_BACKOFF_MAX (5000 * 1000000ull)
#define DESTAGE_SCAN        64

struct destage_part {
        struct cline *cl;
        uint64_t mask;
};

struct destage_io {
        struct volume_io bio;
        struct volume *v;
        uint64_t number;
        unsigned nparts;
        struct destage_part parts[DESTAGE_MAX_LINES];
        struct iovec iov[DESTAGE_MAX_LINES];
};

static bool in_barrier(const struct volume *v, uint64_t lno)
{
        return v->barriers && lno >= v->barrier_first && lno <= v->barrier_last;
}

static bool eligible(const struct volume *v, const struct cline *cl)
{
        return cl->dirty && !cl->destaging && !cl->wait_prev && !in_barrier(v, cl->lno);
}

/* The first run of dirty blocks in cl at or after block 'from': [*b0, *b1). */
static bool dirty_run(const struct cline *cl, unsigned from, unsigned bpl, unsigned *b0,
                      unsigned *b1)
{
        unsigned b = from;
        while (b < bpl && !(cl->dirty >> b & 1))
                b++;
        if (b == bpl)
                return false;
        *b0 = b;
        while (b < bpl && (cl->dirty >> b & 1))
                b++;
        *b1 = b;
        return true;
}

static void destage_done(struct volume_io *bio, int res);

/* Writes the dirty runs of cl, extending a run that reaches the end of the line into the
 * following lines while they are dirty from their first block. */
static void destage_line(struct volume *v, struct cline *cl, struct reactor *here)
{
        struct cache *c = v->cache;
        uint32_t bs = v->conf.block_size;
        unsigned bpl = v->blocks_per_line;
        unsigned b0, b1, from = 0;
        while (dirty_run(cl, from, bpl, &b0, &b1)) {
                struct destage_io *d = calloc(1, sizeof(*d));
                if (!d)
                        return;
                d->v = v;
                d->parts[0] = (struct destage_part){cl, block_mask(b0, b1 - b0)};
                d->iov[0] = (struct iovec){cl->data + (size_t)b0 * bs, (size_t)(b1 - b0) * bs};
                d->nparts = 1;
                uint64_t length = d->iov[0].iov_len;
                struct cline *prev = cl;
                while (b1 == bpl && d->nparts < DESTAGE_MAX_LINES) {
                        struct cline *nx = cache_lookup(c, v, prev->lno + 1);
                        unsigned n0, n1;
                        if (!nx || !eligible(v, nx) || !dirty_run(nx, 0, bpl, &n0, &n1) || n0)
                                break;
                        d->parts[d->nparts] = (struct destage_part){nx, block_mask(0, n1)};
                        d->iov[d->nparts] = (struct iovec){nx->data, (size_t)n1 * bs};
                        d->nparts++;
                        length += (uint64_t)n1 * bs;
                        b1 = n1;
                        prev = nx;
                }
                for (unsigned i = 0; i < d->nparts; i++)
                        d->parts[i].cl->destaging++;
                d->bio = (struct volume_io){.op = VOLUME_WRITE,
                                            .offset = cl->lno * c->line_size + (uint64_t)b0 * bs,
                                            .length = length,
                                            .iov = d->iov,
                                            .iovcnt = (int)d->nparts,
                                            .reactor = here,
                                            .done = destage_done,
                                            .priv = d};
                v->inflight++;
                d->number = v->destages++;
                c->stats.destage_ios++;
                backend_submit(v->backend, &d->bio);
                if (prev != cl)
                        return; /* the rest of cl was a single run */
                from = b1;
        }
}

static void note_error(struct volume *v, int res)
{
        v->destage_errors++;
        v->backoff_ns = v->backoff_ns ? v->backoff_ns * 2 : DESTAGE_BACKOFF_MIN;
        if (v->backoff_ns > DESTAGE_BACKOFF_MAX)
                v->backoff_ns = DESTAGE_BACKOFF_MAX;
        v->backoff_until = reactor_now_ns() + v->backoff_ns;
        if (strcmp(v->last_error, strerror(-res)) != 0 || v->destage_errors == 1)
                log_warn("%s: destage failed: %s; the data stays dirty, retrying in %llu ms",
                         v->conf.name, strerror(-res),
                         (unsigned long long)(v->backoff_ns / 1000000));
        snprintf(v->last_error, sizeof(v->last_error), "%s", strerror(-res));
        v->retrying = true;
}

static void destage_done(struct volume_io *bio, int res)
{
        struct destage_io *d = bio->priv;
        struct volume *v = d->v;
        struct cache *c = v->cache;
        pthread_mutex_lock(&c->lock);
        v->inflight--;
        for (unsigned i = 0; i < d->nparts; i++) {
                struct cline *cl = d->parts[i].cl;
                cl->destaging--;
                if (res == 0 && !cl->retired) {
                        cl->dirty &= ~d->parts[i].mask;
                        if (!cl->dirty)
                                cache_line_clean(c, cl);
                }
                if (cl->retired && !cl->destaging)
                        cache_line_release(c, cl);
        }
        uint64_t first = bio->offset / c->line_size;
        uint64_t last = (bio->offset + bio->length - 1) / c->line_size;
        if (res == 0) {
                c->stats.destaged_bytes += bio->length;
                v->stats.destaged_bytes += bio->length;
                if (v->backoff_ns)
                        log_info("%s: destaging works again", v->conf.name);
                v->backoff_ns = 0;
                v->backoff_until = 0;
                v->retrying = false;
                v->last_error[0] = '\0';
                cache_check_waiters(v, bio->reactor);
        } else {
                note_error(v, res);
                cache_fail_waiters(v, first, last, d->number, res, bio->reactor);
        }
        cache_retry_pending(v, bio->reactor);
        destage_run(v, bio->reactor);
        pthread_mutex_unlock(&c->lock);
        free(d);
}

static bool wanted(const struct volume *v, const struct cline *cl, uint64_t now)
{
        return v->waiters || v->cache->draining || v->stopping || v->retrying ||
               now - cl->dirty_since >= v->cache->max_age_ns;
}

/* Under the lock, on a reactor thread (here): starts what should be written now. */
void destage_run(struct volume *v, struct reactor *here)
{
        uint64_t now = reactor_now_ns();
        if (now < v->backoff_until)
                return;
        while (v->inflight < v->cache->max_inflight) {
                struct cline *pick = NULL;
                unsigned scanned = 0;
                for (struct cline *cl = v->dirty.head; cl && scanned < DESTAGE_SCAN;
                     cl = cl->next, scanned++) {
                        if (!wanted(v, cl, now))
                                break; /* the rest are younger */
                        if (eligible(v, cl)) {
                                pick = cl;
                                break;
                        }
                }
                unsigned before = v->inflight;
                if (pick)
                        destage_line(v, pick, here);
                if (v->inflight == before)
                        return;
        }
}

/* A write-through or FUA write's lines, now, ahead of the queue. */
void destage_range(struct volume *v, uint64_t first, uint64_t last, struct reactor *here)
{
        if (reactor_now_ns() < v->backoff_until)
                return;
        for (uint64_t lno = first; lno <= last && lno - first < 4 * DESTAGE_MAX_LINES; lno++) {
                struct cline *cl = cache_lookup(v->cache, v, lno);
                if (cl && eligible(v, cl))
                        destage_line(v, cl, here);
        }
}

static void destage_tick(struct reactor_timer *t)
{
        struct volume *v = t->ctx;
        struct cache *c = v->cache;
        pthread_mutex_lock(&c->lock);
        if (!v->timer_running) {
                pthread_mutex_unlock(&c->lock);
                return;
        }
        destage_run(v, v->conf.home);
        cache_retry_pending(v, v->conf.home);
        cache_check_waiters(v, v->conf.home);
        pthread_mutex_unlock(&c->lock);
        reactor_timer_arm(v->conf.home, &v->timer, DESTAGE_TICK_NS);
}

static void start_on_home(void *arg)
{
        struct volume *v = arg;
        reactor_timer_arm(v->conf.home, &v->timer, DESTAGE_TICK_NS);
}

void destage_start_timer(struct volume *v)
{
        v->timer.cb = destage_tick;
        v->timer.ctx = v;
        v->timer_running = true;
        if (reactor_call(v->conf.home, start_on_home, v) < 0)
                log_err("%s: cannot start the destager", v->conf.name);
}

static void stop_on_home(void *arg)
{
        struct volume *v = arg;
        pthread_mutex_lock(&v->cache->lock);
        v->timer_running = false;
        pthread_mutex_unlock(&v->cache->lock);
        reactor_timer_cancel(v->conf.home, &v->timer);
}

void destage_stop_timer(struct volume *v)
{
        reactor_call_sync(v->conf.home, stop_on_home, v);
}
