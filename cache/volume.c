/* The volume front: puts writes in the write log when there is one, dispatches to the cache
 * or, without one, straight to the backend, and hands out write tickets and lines. */
#include "cache/volume.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/backend.h"
#include "cache/cache_internal.h"
#include "cache/linepool.h"
#include "cache/wlog.h"
#include "src/log.h"

struct volume *volume_create(struct backend *backend)
{
        struct volume *v = calloc(1, sizeof(*v));
        if (!v)
                return NULL;
        v->backend = backend;
        v->size = backend_size(backend);
        v->next_seq = 1;
        return v;
}

void volume_stop(struct volume *v)
{
        if (v && v->cache)
                destage_stop_timer(v);
}

void volume_destroy(struct volume *v)
{
        if (!v)
                return;
        if (v->cache)
                cache_volume_forget(v);
        free(v);
}

uint64_t volume_size(const struct volume *v)
{
        return v->size;
}

void volume_submit_local(struct volume *v, struct volume_io *io)
{
        if (v->cache)
                cache_submit(v, io);
        else
                backend_submit(v->backend, io);
}

static bool changes_data(const struct volume_io *io)
{
        return io->length &&
               (io->op == VOLUME_WRITE || io->op == VOLUME_UNMAP || io->op == VOLUME_WRITE_ZEROES);
}

/* After the log: the mirror, then the local copy (a peer's write only the local copy). */
static void submit_now(struct volume *v, struct volume_io *io)
{
        if (v->mirror_ops && changes_data(io) && !io->replica)
                v->mirror_ops->submit(v->mirror_ctx, io);
        else
                volume_submit_local(v, io);
}

static void ticket_lock(struct volume *v)
{
        if (v->cache)
                pthread_mutex_lock(&v->cache->lock);
}

static void ticket_unlock(struct volume *v)
{
        if (v->cache)
                pthread_mutex_unlock(&v->cache->lock);
}

/* Writes that arrive without a ticket (emulated commands) take one now: the log and the
 * mirror record it, so both order them as the cache does. */
static void ensure_seq(struct volume *v, struct volume_io *io)
{
        if (io->seq)
                return;
        ticket_lock(v);
        io->seq = v->next_seq++;
        if (!io->seq)
                io->seq = v->next_seq++;
        ticket_unlock(v);
}

void volume_set_mirror(struct volume *v, const struct volume_mirror_ops *ops, void *ctx)
{
        v->mirror_ops = ops;
        v->mirror_ctx = ctx;
}

uint32_t volume_reserve_seqs(struct volume *v, uint32_t n)
{
        ticket_lock(v);
        uint32_t first = v->next_seq;
        v->next_seq += n;
        ticket_unlock(v);
        return first;
}

bool volume_older_write_active(struct volume *v, const struct volume_ticket *t)
{
        bool found = false;
        ticket_lock(v);
        for (const struct volume_ticket *o = v->tickets_head; o && o != t && !found; o = o->next)
                found = o->offset < t->offset + t->length && t->offset < o->offset + o->length;
        ticket_unlock(v);
        return found;
}

void volume_set_wlog(struct volume *v, struct wlog *log, uint64_t key)
{
        v->wlog = log;
        v->wlog_key = key;
}

/* A write, UNMAP or WRITE ZEROES on its way through the log: the caller's done/priv are kept
 * here while the volume runs it. */
struct logged_io {
        struct wlog_entry entry; /* first: the log hands it back */
        struct volume *v;
        struct volume_io *io;
        void (*done)(struct volume_io *io, int result);
        void *priv;
        int err;
};

static void logged_io_finish(struct logged_io *lio, int result)
{
        struct volume_io *io = lio->io;
        io->done = lio->done;
        io->priv = lio->priv;
        wlog_applied(lio->v->wlog, &lio->entry);
        free(lio);
        io->done(io, result);
}

static void logged_io_done(struct volume_io *io, int result)
{
        logged_io_finish(io->priv, result);
}

/* On the I/O's reactor, once the record is durable (or could not be written). */
static void logged_on_reactor(void *arg)
{
        struct logged_io *lio = arg;
        if (lio->err) {
                logged_io_finish(lio, lio->err);
                return;
        }
        lio->io->done = logged_io_done;
        lio->io->priv = lio;
        submit_now(lio->v, lio->io);
}

/* On the log's writer thread. */
static void logged(struct wlog_entry *e, int err)
{
        struct logged_io *lio = (struct logged_io *)e;
        lio->err = err;
        reactor_post(lio->io->reactor, logged_on_reactor, lio);
}

static const enum wlog_op wlog_ops[] = {
    [VOLUME_WRITE] = WLOG_WRITE,
    [VOLUME_UNMAP] = WLOG_UNMAP,
    [VOLUME_WRITE_ZEROES] = WLOG_WRITE_ZEROES,
};

static void log_then_submit(struct volume *v, struct volume_io *io)
{
        struct logged_io *lio;
        while (!(lio = malloc(sizeof(*lio))))
                usleep(1000); /* a write is never failed for want of memory for its record */
        *lio = (struct logged_io){.v = v, .io = io, .done = io->done, .priv = io->priv};
        lio->entry.rec = (struct wlog_record){.op = wlog_ops[io->op],
                                              .key = v->wlog_key,
                                              .offset = io->offset,
                                              .length = io->length,
                                              .seq = io->seq};
        lio->entry.iov = io->iov;
        lio->entry.iovcnt = io->iovcnt;
        lio->entry.logged = logged;
        int rc = wlog_append(v->wlog, &lio->entry);
        if (rc < 0) {
                log_err("%s: write log: %s", v->conf.name ? v->conf.name : "volume", strerror(-rc));
                logged(&lio->entry, rc); /* completes on the reactor, as always */
        }
}

void volume_submit(struct volume *v, struct volume_io *io)
{
        io->line_kept = false;
        if ((v->wlog || v->mirror_ops) && changes_data(io))
                ensure_seq(v, io);
        if (v->wlog && changes_data(io))
                log_then_submit(v, io);
        else
                submit_now(v, io);
}

void volume_write_begin(struct volume *v, struct volume_ticket *t, uint64_t offset, uint64_t length)
{
        t->offset = offset;
        t->length = length;
        ticket_lock(v);
        t->seq = v->next_seq++;
        t->next = NULL;
        t->prev = v->tickets_tail;
        if (v->tickets_tail)
                v->tickets_tail->next = t;
        else
                v->tickets_head = t;
        v->tickets_tail = t;
        t->active = true;
        ticket_unlock(v);
}

void volume_write_end(struct volume *v, struct volume_ticket *t)
{
        if (!t->active)
                return;
        ticket_lock(v);
        if (t->prev)
                t->prev->next = t->next;
        else
                v->tickets_head = t->next;
        if (t->next)
                t->next->prev = t->prev;
        else
                v->tickets_tail = t->prev;
        t->prev = t->next = NULL;
        t->active = false;
        ticket_unlock(v);
}

uint8_t *volume_line_get(struct volume *v, struct line_part *prefer, struct reactor *here,
                         bool for_write)
{
        if (v->cache)
                return cache_line_get(v, prefer, here, for_write);
        return line_alloc(prefer);
}
