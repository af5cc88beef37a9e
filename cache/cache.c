/* The write-back cache: index, line states, 2Q eviction, reads (hits, fills and merges),
 * writes (adopting the command's line where it can), flush waiters and barriers. The
 * destager is in destage.c. One mutex guards it all: critical sections are short (lookups,
 * bit masks, at most a line's copy) and I/O is only queued under it, never completed. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "cache/cache_internal.h"
#include "cache/linepool.h"
#include "src/log.h"

/* Per-I/O state inside volume_io.impl. */
struct cache_io_state {
        struct reactor_deferred later;
        int result;
        unsigned pending; /* fills outstanding, plus one while submitting */
        struct volume *v;
        struct volume_io *next_pending; /* volume.pending */
        uint32_t seq;
};
_Static_assert(sizeof(struct cache_io_state) <= sizeof(((struct volume_io *)0)->impl),
               "cache_io_state must fit in volume_io.impl");

static struct cache_io_state *io_state(struct volume_io *io)
{
        return (struct cache_io_state *)io->impl;
}

/* ---------------- completion ---------------- */

static void complete_deferred(struct reactor_deferred *d)
{
        struct cache_io_state *st =
            (struct cache_io_state *)((char *)d - offsetof(struct cache_io_state, later));
        struct volume_io *io = (struct volume_io *)((char *)st - offsetof(struct volume_io, impl));
        io->done(io, st->result);
}

static void complete_call(void *arg)
{
        struct volume_io *io = arg;
        io->done(io, io_state(io)->result);
}

/* Completes io on its own reactor, after the current callback returns. */
static void complete_io(struct volume_io *io, int result, struct reactor *here)
{
        struct cache_io_state *st = io_state(io);
        st->result = result;
        if (here == io->reactor) {
                st->later.cb = complete_deferred;
                st->later.queued = false;
                st->later.next = NULL;
                reactor_defer(io->reactor, &st->later);
        } else if (reactor_call(io->reactor, complete_call, io) < 0) {
                log_err("cache: cannot reach the reactor of a completed I/O");
        }
}

/* ---------------- iovec copies ---------------- */

/* Copies n bytes between buf and io's data at byte pos: into the iovec when to_iov. */
static void iov_copy(const struct volume_io *io, uint64_t pos, uint8_t *buf, size_t n, bool to_iov)
{
        for (int i = 0; i < io->iovcnt && n; i++) {
                size_t len = io->iov[i].iov_len;
                if (pos >= len) {
                        pos -= len;
                        continue;
                }
                size_t take = len - pos < n ? len - pos : n;
                uint8_t *at = (uint8_t *)io->iov[i].iov_base + pos;
                memcpy(to_iov ? at : buf, to_iov ? buf : at, take);
                buf += take;
                n -= take;
                pos = 0;
        }
}

static void copy_to_iov(const struct volume_io *io, uint64_t pos, const uint8_t *src, size_t n)
{
        iov_copy(io, pos, (uint8_t *)src, n, true);
}

static void copy_from_iov(uint8_t *dst, const struct volume_io *io, uint64_t pos, size_t n)
{
        iov_copy(io, pos, dst, n, false);
}

/* ---------------- index, queues, ghosts ---------------- */

static uint64_t key_hash(uint32_t vid, uint64_t lno)
{
        uint64_t k = lno * 0x9E3779B97F4A7C15ull ^ (uint64_t)vid * 0xC2B2AE3D27D4EB4Full;
        return k ^ (k >> 29);
}

static uint32_t *bucket_of(struct cache *c, struct volume *v, uint64_t lno)
{
        return &c->buckets[key_hash(v->id, lno) & (CACHE_BUCKETS - 1)];
}

struct cline *cache_lookup(struct cache *c, struct volume *v, uint64_t lno)
{
        for (struct cline *cl = c->hash[key_hash(v->id, lno) & c->hash_mask]; cl; cl = cl->hnext)
                if (cl->v == v && cl->lno == lno)
                        return cl;
        return NULL;
}

static void index_insert(struct cache *c, struct cline *cl)
{
        struct cline **slot = &c->hash[key_hash(cl->v->id, cl->lno) & c->hash_mask];
        cl->hnext = *slot;
        *slot = cl;
        cl->in_index = true;
}

static void index_remove(struct cache *c, struct cline *cl)
{
        struct cline **pp = &c->hash[key_hash(cl->v->id, cl->lno) & c->hash_mask];
        for (; *pp; pp = &(*pp)->hnext) {
                if (*pp == cl) {
                        *pp = cl->hnext;
                        break;
                }
        }
        cl->hnext = NULL;
        cl->in_index = false;
}

static struct cline_queue_head *queue_of(struct cache *c, struct cline *cl)
{
        switch (cl->q) {
        case Q_A1IN:
                return &c->a1in;
        case Q_AM:
                return &c->am;
        case Q_DIRTY:
                return &cl->v->dirty;
        case Q_RETIRED:
                return &cl->v->retired;
        case Q_NONE:
                break;
        }
        return NULL;
}

static void q_remove(struct cache *c, struct cline *cl)
{
        struct cline_queue_head *h = queue_of(c, cl);
        if (!h)
                return;
        if (cl->prev)
                cl->prev->next = cl->next;
        else
                h->head = cl->next;
        if (cl->next)
                cl->next->prev = cl->prev;
        else
                h->tail = cl->prev;
        h->count--;
        cl->prev = cl->next = NULL;
        cl->q = Q_NONE;
}

static void q_push(struct cache *c, struct cline *cl, enum cline_queue q, bool at_head)
{
        cl->q = q;
        struct cline_queue_head *h = queue_of(c, cl);
        if (at_head) {
                cl->prev = NULL;
                cl->next = h->head;
                if (h->head)
                        h->head->prev = cl;
                else
                        h->tail = cl;
                h->head = cl;
        } else {
                cl->next = NULL;
                cl->prev = h->tail;
                if (h->tail)
                        h->tail->next = cl;
                else
                        h->head = cl;
                h->tail = cl;
        }
        h->count++;
}

/* nw takes old's place in old's queue. */
static void q_replace(struct cache *c, struct cline *old, struct cline *nw)
{
        struct cline_queue_head *h = queue_of(c, old);
        nw->q = old->q;
        nw->prev = old->prev;
        nw->next = old->next;
        if (old->prev)
                old->prev->next = nw;
        else
                h->head = nw;
        if (old->next)
                old->next->prev = nw;
        else
                h->tail = nw;
        old->prev = old->next = NULL;
        old->q = Q_NONE;
}

static size_t ghost_slot(struct volume *v, uint64_t lno)
{
        return (size_t)(key_hash(v->id, lno) >> 7) & (CACHE_GHOST_HASH - 1);
}

/* 2Q's A1out: lines recently evicted from A1in; a fill of one of them goes to Am. Counts
 * per hash slot (false positives only promote a little early). */
static void ghost_add(struct cache *c, struct volume *v, uint64_t lno)
{
        uint64_t *ring = &c->ghost_ring[c->ghost_pos];
        if (*ring != UINT64_MAX && c->ghost_count[*ring])
                c->ghost_count[*ring]--;
        size_t s = ghost_slot(v, lno);
        *ring = s;
        if (c->ghost_count[s] < UINT8_MAX)
                c->ghost_count[s]++;
        c->ghost_pos = (c->ghost_pos + 1) % c->ghost_size;
}

static bool ghost_has(struct cache *c, struct volume *v, uint64_t lno)
{
        return c->ghost_count[ghost_slot(v, lno)] != 0;
}

/* ---------------- line states ---------------- */

static struct cline *cline_of(struct cache *c, uint8_t *data)
{
        return &c->clines[line_pool_index(c->pool, data)];
}

static struct cline *cline_init(struct cache *c, struct volume *v, uint64_t lno, uint8_t *data)
{
        struct cline *cl = cline_of(c, data);
        memset(cl, 0, sizeof(*cl));
        cl->v = v;
        cl->lno = lno;
        cl->data = data;
        return cl;
}

static void clean_enqueue(struct cache *c, struct cline *cl)
{
        bool am = cl->hot || ghost_has(c, cl->v, cl->lno);
        q_push(c, cl, am ? Q_AM : Q_A1IN, true);
        c->clean_lines++;
}

static void update_draining(struct cache *c)
{
        if (c->dirty_lines >= c->high_lines)
                c->draining = true;
        else if (c->dirty_lines <= c->low_lines)
                c->draining = false;
}

static unsigned origin_of(const struct volume_io *io)
{
        return reactor_index(io->reactor) % CACHE_MAX_REACTORS;
}

static void make_dirty(struct volume *v, struct cline *cl, unsigned origin)
{
        struct cache *c = v->cache;
        if (cl->q == Q_DIRTY)
                return;
        cl->origin = (uint8_t)origin;
        c->dirty_by[origin]++;
        if (cl->q == Q_A1IN || cl->q == Q_AM) {
                q_remove(c, cl);
                c->clean_lines--;
                cl->hot = true;
        }
        q_push(c, cl, Q_DIRTY, false);
        cl->dirty_seq = ++v->commit_count;
        cl->dirty_since = reactor_now_ns();
        c->dirty_lines++;
        v->stats.dirty_lines++;
        update_draining(c);
}

void cache_line_clean(struct cache *c, struct cline *cl)
{
        if (cl->q != Q_DIRTY)
                return;
        q_remove(c, cl);
        c->dirty_lines--;
        c->dirty_by[cl->origin]--;
        cl->v->stats.dirty_lines--;
        update_draining(c);
        if (!cl->retired)
                clean_enqueue(c, cl);
}

/* A retired line whose last destage ended: its successor may be destaged now. */
void cache_line_release(struct cache *c, struct cline *cl)
{
        if (cl->successor) {
                cl->successor->wait_prev = false;
                cl->successor->pred = NULL;
        }
        q_remove(c, cl);
        uint8_t *data = cl->data;
        memset(cl, 0, sizeof(*cl));
        line_pool_put(c->pool, data);
}

/* Blocks filled from the backend are older than every write still in flight. */
static uint32_t fill_stamp(struct volume *v)
{
        return (v->tickets_head ? v->tickets_head->seq : v->next_seq) - 1;
}

static bool evictable(const struct cache *c, const struct cline *cl)
{
        const struct volume *v = cl->v;
        if (cl->destaging || cl->dirty)
                return false;
        /* A write older than the line's newest data that overlaps it may still land: keep
         * the line, whose block tickets let that write lose where it should. */
        uint64_t start = cl->lno * c->line_size, end = start + c->line_size;
        for (const struct volume_ticket *t = v->tickets_head; t && seq_before(t->seq, cl->max_seq);
             t = t->next)
                if (t->offset < end && start < t->offset + t->length)
                        return false;
        return true;
}

static uint8_t *evict_from(struct cache *c, struct cline_queue_head *h)
{
        unsigned scanned = 0;
        for (struct cline *cl = h->tail; cl && scanned < 64; cl = cl->prev, scanned++) {
                if (!evictable(c, cl))
                        continue;
                bool from_a1in = cl->q == Q_A1IN;
                q_remove(c, cl);
                c->clean_lines--;
                index_remove(c, cl);
                (*bucket_of(c, cl->v, cl->lno))++;
                if (from_a1in)
                        ghost_add(c, cl->v, cl->lno);
                c->stats.evictions++;
                uint8_t *data = cl->data;
                memset(cl, 0, sizeof(*cl));
                return data;
        }
        return NULL;
}

static uint8_t *evict_one(struct cache *c)
{
        bool a1in_first = c->a1in.count > c->kin || c->am.count == 0;
        uint8_t *data = evict_from(c, a1in_first ? &c->a1in : &c->am);
        return data ? data : evict_from(c, a1in_first ? &c->am : &c->a1in);
}

/* The caller's own partition first, then a clean line of the cache, and only then another
 * reactor's free lines: a busy reactor must not drain the others' partitions. */
static uint8_t *get_line(struct cache *c, struct line_part *prefer)
{
        uint8_t *line = prefer ? line_alloc(prefer) : NULL;
        if (!line)
                line = evict_one(c);
        return line ? line : line_pool_get(c->pool, prefer);
}

/* Under the lock: whether a write from reactor r may take a line now. At the hard limit
 * nobody may; below it, a reactor that already made more dirty lines than one whose writes
 * are waiting lets that one go first, so one busy session cannot starve the others. */
static bool write_may_proceed(struct cache *c, unsigned r)
{
        if (c->dirty_lines >= c->hard_lines)
                return false;
        if (c->reactors_waiting == 0 || (c->reactors_waiting == 1 && c->waiting_since[r]))
                return true;
        for (unsigned o = 0; o < CACHE_MAX_REACTORS; o++)
                if (o != r && c->waiting_since[o] && c->dirty_by[r] > c->dirty_by[o])
                        return false;
        return true;
}

uint8_t *cache_line_get(struct volume *v, struct line_part *prefer, struct reactor *here,
                        bool for_write)
{
        struct cache *c = v->cache;
        unsigned r = reactor_index(here) % CACHE_MAX_REACTORS;
        pthread_mutex_lock(&c->lock);
        uint8_t *line = NULL;
        if (for_write && !write_may_proceed(c, r)) {
                c->stats.write_waits++;
                c->draining = true;
                if (!c->waiting_since[r]) {
                        c->waiting_since[r] = reactor_now_ns();
                        c->reactors_waiting++;
                }
        } else {
                line = get_line(c, prefer);
                if (line && for_write && c->waiting_since[r]) {
                        c->waiting_since[r] = 0;
                        c->reactors_waiting--;
                }
        }
        pthread_mutex_unlock(&c->lock);
        return line;
}

/* Bytes of an I/O that fall in one line: from line offset lo, at most 'left'. */
static uint32_t part_len(const struct cache *c, uint32_t lo, uint64_t left)
{
        return (uint32_t)(c->line_size - lo < left ? c->line_size - lo : left);
}

/* ---------------- reads ---------------- */

struct fill {
        struct volume_io bio;
        struct iovec iov;
        struct volume_io *io;
        struct volume *v;
        uint64_t lno;
        uint32_t lo, n; /* the part of the line the read wants */
        uint64_t pos;   /* where that part goes in io's data */
        uint8_t *line;  /* the whole line read into a spare pool line, or */
        uint8_t *buf;   /* (no spare line) just the part, merged with the cache after */
        bool buf_is_io; /* buf is the caller's own buffer: nothing to copy or free */
        uint32_t gen;   /* the line's bucket when the backend read was issued */
};

static void read_finish_one(struct volume_io *io, struct reactor *here)
{
        struct cache_io_state *st = io_state(io);
        if (--st->pending == 0)
                complete_io(io, st->result, here);
}

static void fill_merge_line(struct cache *c, struct fill *f)
{
        struct volume *v = f->v;
        uint32_t bs = v->conf.block_size;
        uint64_t vmask = block_mask(0, (unsigned)(f->bio.length / bs));
        struct cline *cl = cache_lookup(c, v, f->lno);
        uint32_t stamp = fill_stamp(v);
        if (!cl) {
                cl = cline_init(c, v, f->lno, f->line);
                f->line = NULL;
                cl->valid = vmask;
                for (unsigned b = 0; b < v->blocks_per_line; b++)
                        cl->bseq[b] = stamp;
                cl->max_seq = stamp;
                index_insert(c, cl);
                clean_enqueue(c, cl);
        } else {
                /* Only blocks the cache does not have: what it has is newer. */
                uint64_t missing = vmask & ~cl->valid;
                for (unsigned b = 0; b < v->blocks_per_line; b++) {
                        if (!(missing >> b & 1))
                                continue;
                        memcpy(cl->data + (size_t)b * bs, f->line + (size_t)b * bs, bs);
                        cl->bseq[b] = stamp;
                }
                cl->valid |= missing;
        }
        copy_to_iov(f->io, f->pos, cl->data + f->lo, f->n);
}

static void fill_merge_part(struct cache *c, struct fill *f)
{
        struct volume *v = f->v;
        uint32_t bs = v->conf.block_size;
        struct cline *cl = cache_lookup(c, v, f->lno);
        for (uint32_t off = 0; cl && off < f->n; off += bs) {
                unsigned b = (f->lo + off) / bs;
                if (cl->valid >> b & 1)
                        memcpy(f->buf + off, cl->data + f->lo + off, bs);
        }
        if (!f->buf_is_io)
                copy_to_iov(f->io, f->pos, f->buf, f->n);
}

static void fill_done(struct volume_io *bio, int res)
{
        struct fill *f = bio->priv;
        struct volume *v = f->v;
        struct cache *c = v->cache;
        struct volume_io *io = f->io;
        if (res < 0) {
                if (!io_state(io)->result)
                        io_state(io)->result = res;
        } else {
                pthread_mutex_lock(&c->lock);
                uint32_t gen = *bucket_of(c, v, f->lno);
                if (gen != f->gen) {
                        /* The line left the cache or was rewritten on the backend while this
                         * read ran: what came back may be older than what was acknowledged. */
                        f->gen = gen;
                        pthread_mutex_unlock(&c->lock);
                        backend_submit(v->backend, bio);
                        return;
                }
                if (f->line)
                        fill_merge_line(c, f);
                else
                        fill_merge_part(c, f);
                pthread_mutex_unlock(&c->lock);
        }
        if (f->line)
                line_pool_put(c->pool, f->line);
        if (!f->buf_is_io)
                free(f->buf);
        struct reactor *here = bio->reactor;
        free(f);
        read_finish_one(io, here);
}

/* Where [pos, pos + n) of io's data is, if it is in one piece of one iovec. */
static uint8_t *io_span(const struct volume_io *io, uint64_t pos, uint32_t n)
{
        for (int i = 0; i < io->iovcnt; i++) {
                size_t len = io->iov[i].iov_len;
                if (pos < len)
                        return pos + n <= len ? (uint8_t *)io->iov[i].iov_base + pos : NULL;
                pos -= len;
        }
        return NULL;
}

/* Under the lock. A miss of a whole line is read straight into the caller's buffer and not
 * kept (a large sequential read would only push hot lines out: scan resistance, and no
 * copy); a partial miss reads the whole line into a spare line that joins the cache. */
static void start_fill(struct volume *v, struct volume_io *io, uint64_t lno, uint32_t lo,
                       uint32_t n, uint64_t pos)
{
        struct cache *c = v->cache;
        struct fill *f = calloc(1, sizeof(*f));
        uint8_t *direct = n == c->line_size ? io_span(io, pos, n) : NULL;
        if (f && direct) {
                f->buf = direct;
                f->buf_is_io = true;
        } else if (f && !(f->line = get_line(c, NULL))) {
                f->buf = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
        }
        if (!f || (!f->line && !f->buf)) {
                free(f);
                if (!io_state(io)->result)
                        io_state(io)->result = -ENOMEM;
                return;
        }
        uint64_t line_off = lno * c->line_size;
        *f = (struct fill){.io = io,
                           .v = v,
                           .lno = lno,
                           .lo = lo,
                           .n = n,
                           .pos = pos,
                           .line = f->line,
                           .buf = f->buf,
                           .buf_is_io = f->buf_is_io,
                           .gen = *bucket_of(c, v, lno)};
        if (f->line) {
                uint64_t len =
                    v->size - line_off < c->line_size ? v->size - line_off : c->line_size;
                f->iov = (struct iovec){f->line, len};
                f->bio.offset = line_off;
                f->bio.length = len;
        } else {
                f->iov = (struct iovec){f->buf, n};
                f->bio.offset = line_off + lo;
                f->bio.length = n;
        }
        f->bio.op = VOLUME_READ;
        f->bio.iov = &f->iov;
        f->bio.iovcnt = 1;
        f->bio.reactor = io->reactor;
        f->bio.done = fill_done;
        f->bio.priv = f;
        io_state(io)->pending++;
        backend_submit(v->backend, &f->bio);
}

static void read_submit(struct volume *v, struct volume_io *io)
{
        struct cache *c = v->cache;
        struct cache_io_state *st = io_state(io);
        *st = (struct cache_io_state){.pending = 1, .v = v};
        uint32_t bs = v->conf.block_size;
        bool missed = false;
        pthread_mutex_lock(&c->lock);
        for (uint64_t pos = 0; pos < io->length;) {
                uint64_t off = io->offset + pos;
                uint64_t lno = off / c->line_size;
                uint32_t lo = (uint32_t)(off % c->line_size);
                uint32_t n = part_len(c, lo, io->length - pos);
                uint64_t m = block_mask(lo / bs, n / bs);
                struct cline *cl = cache_lookup(c, v, lno);
                if (cl && (cl->valid & m) == m) {
                        copy_to_iov(io, pos, cl->data + lo, n);
                        if (cl->q == Q_AM) {
                                q_remove(c, cl);
                                q_push(c, cl, Q_AM, true);
                        }
                } else {
                        missed = true;
                        start_fill(v, io, lno, lo, n, pos);
                }
                pos += n;
        }
        if (missed)
                c->stats.read_misses++;
        else
                c->stats.read_hits++;
        pthread_mutex_unlock(&c->lock);
        read_finish_one(io, io->reactor);
}

/* ---------------- writes ---------------- */

static bool can_adopt(const struct volume_io *io, uint32_t lo, uint32_t n)
{
        return io->line && io->iovcnt == 1 && io->length == n &&
               io->iov[0].iov_base == io->line + lo;
}

/* Whether committing this part needs a spare line (no adoptable line of the command's). */
static bool needs_spare(struct volume *v, const struct volume_io *io, uint64_t lno, uint32_t lo,
                        uint32_t n)
{
        if (can_adopt(io, lo, n))
                return false;
        struct cline *cl = cache_lookup(v->cache, v, lno);
        return !cl || cl->destaging;
}

/* Puts the part [lo, lo+n) of line lno, from io's data at pos, into a line that replaces
 * old (NULL: none) in the index. */
static void commit_replacing(struct volume *v, struct volume_io *io, struct cline *old,
                             uint64_t lno, uint32_t lo, uint32_t n, uint64_t pos, uint32_t seq,
                             uint8_t **spare)
{
        struct cache *c = v->cache;
        uint32_t bs = v->conf.block_size;
        uint64_t m = block_mask(lo / bs, n / bs);
        uint8_t *data;
        if (can_adopt(io, lo, n)) {
                data = io->line;
                io->line_kept = true;
        } else {
                data = *spare;
                *spare = NULL;
                copy_from_iov(data + lo, io, pos, n);
        }
        struct cline *nw = cline_init(c, v, lno, data);
        for (unsigned b = 0; b < v->blocks_per_line; b++)
                if (m >> b & 1)
                        nw->bseq[b] = seq;
        nw->valid = m;
        nw->max_seq = seq;
        if (old) {
                uint64_t keep = old->valid & ~m;
                for (unsigned b = 0; b < v->blocks_per_line; b++) {
                        bool newer =
                            (m >> b & 1) && (old->valid >> b & 1) && seq_before(seq, old->bseq[b]);
                        if ((keep >> b & 1) || newer) {
                                memcpy(data + (size_t)b * bs, old->data + (size_t)b * bs, bs);
                                nw->bseq[b] = old->bseq[b];
                                c->stats.merge_copy_bytes += bs;
                        }
                }
                nw->valid |= old->valid;
                nw->dirty = old->dirty;
                nw->hot = true;
                nw->origin = old->origin;
                if (seq_before(nw->max_seq, old->max_seq))
                        nw->max_seq = old->max_seq;
                index_remove(c, old);
                if (old->q == Q_DIRTY) {
                        q_replace(c, old, nw);
                        nw->dirty_seq = old->dirty_seq;
                        nw->dirty_since = old->dirty_since;
                } else if (old->q != Q_NONE) {
                        q_remove(c, old);
                        c->clean_lines--;
                }
                if (old->pred) { /* old was itself waiting for a retired predecessor */
                        nw->pred = old->pred;
                        nw->wait_prev = true;
                        old->pred->successor = nw;
                }
                if (old->destaging) {
                        old->retired = true;
                        old->successor = nw;
                        nw->pred = old;
                        nw->wait_prev = true;
                        q_push(c, old, Q_RETIRED, false);
                        c->stats.cow_lines++;
                } else {
                        uint8_t *old_data = old->data;
                        memset(old, 0, sizeof(*old));
                        line_pool_put(c->pool, old_data);
                }
        }
        index_insert(c, nw);
        nw->dirty |= m;
        make_dirty(v, nw, origin_of(io));
}

/* Under the lock. Merges [lo, lo+n) of io's data (at pos) into line lno. */
static void commit_part(struct volume *v, struct volume_io *io, uint64_t lno, uint32_t lo,
                        uint32_t n, uint64_t pos, uint32_t seq, uint8_t **spare)
{
        struct cache *c = v->cache;
        uint32_t bs = v->conf.block_size;
        uint64_t m = block_mask(lo / bs, n / bs);
        uint64_t full = block_mask(0, v->blocks_per_line);
        struct cline *cl = cache_lookup(c, v, lno);
        if (!cl || cl->destaging || (m == full && can_adopt(io, lo, n))) {
                commit_replacing(v, io, cl, lno, lo, n, pos, seq, spare);
                return;
        }
        /* In place: copy each block unless a later write already set it. */
        uint64_t take = 0;
        for (unsigned b = lo / bs; b < (lo + n) / bs; b++)
                if (!(cl->valid >> b & 1) || !seq_before(seq, cl->bseq[b]))
                        take |= 1ull << b;
        for (unsigned b = lo / bs; b < (lo + n) / bs; b++) {
                if (!(take >> b & 1))
                        continue;
                copy_from_iov(cl->data + (size_t)b * bs, io, pos + (size_t)b * bs - lo, bs);
                cl->bseq[b] = seq;
        }
        c->stats.merge_copy_bytes += (uint64_t)__builtin_popcountll(take) * bs;
        if (!take)
                return;
        cl->valid |= take;
        cl->dirty |= take;
        if (seq_before(cl->max_seq, seq))
                cl->max_seq = seq;
        make_dirty(v, cl, origin_of(io));
}

static void add_waiter(struct volume *v, struct volume_io *io, uint64_t first, uint64_t last,
                       bool backend_flush, bool barrier, struct reactor *here)
{
        struct flush_waiter *w = calloc(1, sizeof(*w));
        if (!w) {
                complete_io(io, -ENOMEM, here);
                return;
        }
        *w = (struct flush_waiter){.io = io,
                                   .first = first,
                                   .last = last,
                                   .target = v->commit_count,
                                   .backend_flush = backend_flush,
                                   .barrier = barrier,
                                   .next = v->waiters};
        v->waiters = w;
}

/* Under the lock: how many spare lines committing io needs now. */
static unsigned spares_needed(struct volume *v, const struct volume_io *io)
{
        struct cache *c = v->cache;
        unsigned need = 0;
        for (uint64_t pos = 0; pos < io->length;) {
                uint64_t off = io->offset + pos;
                uint32_t lo = (uint32_t)(off % c->line_size);
                uint32_t n = part_len(c, lo, io->length - pos);
                need += needs_spare(v, io, off / c->line_size, lo, n);
                pos += n;
        }
        return need;
}

/* Under the lock: takes the spare lines io needs into spares[] (*n of them). Taking one may
 * evict a clean line of io's own range, whose part then needs a spare as well: so the need
 * is counted again until the lines taken cover it. 1: done; 0: the pool is short now (the
 * lines taken stay in spares[]); -1: more than CACHE_MAX_SPARES. */
static int take_spares(struct volume *v, const struct volume_io *io, uint8_t **spares, unsigned *n)
{
        for (;;) {
                unsigned need = spares_needed(v, io);
                if (need > CACHE_MAX_SPARES)
                        return -1;
                if (*n >= need)
                        return 1;
                while (*n < need) {
                        if (!(spares[*n] = get_line(v->cache, NULL)))
                                return 0;
                        (*n)++;
                }
        }
}

/* Under the lock, on reactor 'here' (io's own, or the destager's when a queued write is
 * retried): I/O is queued and completions deferred from here. */
static void write_commit(struct volume *v, struct volume_io *io, uint32_t seq, struct reactor *here)
{
        struct cache *c = v->cache;
        uint8_t *spares[CACHE_MAX_SPARES];
        unsigned nspares = 0;
        uint64_t first = io->offset / c->line_size;
        uint64_t last = (io->offset + io->length - 1) / c->line_size;
        int took = take_spares(v, io, spares, &nspares);
        if (took <= 0) {
                for (unsigned i = 0; i < nspares; i++)
                        line_pool_put(c->pool, spares[i]);
        }
        if (took < 0) {
                log_err("%s: a %llu-byte write needs more spare lines than %d", v->conf.name,
                        (unsigned long long)io->length, CACHE_MAX_SPARES);
                complete_io(io, -EINVAL, here);
                return;
        }
        if (took == 0) {
                /* No line to put it in now: wait for the destager (writes without a line of
                 * their own: emulated commands and a mirror secondary's writes). */
                io_state(io)->seq = seq;
                io_state(io)->next_pending = v->pending;
                v->pending = io;
                c->draining = true;
                return;
        }
        unsigned used = 0;
        for (uint64_t pos = 0; pos < io->length;) {
                uint64_t off = io->offset + pos;
                uint32_t lo = (uint32_t)(off % c->line_size);
                uint32_t n = part_len(c, lo, io->length - pos);
                uint8_t *spare = used < nspares ? spares[used] : NULL;
                commit_part(v, io, off / c->line_size, lo, n, pos, seq, &spare);
                if (!spare && used < nspares)
                        used++;
                pos += n;
        }
        for (unsigned i = used; i < nspares; i++)
                line_pool_put(c->pool, spares[i]);
        bool through = !v->conf.write_back || io->fua ||
                       (v->conf.bypass_threshold && io->cmd_bytes >= v->conf.bypass_threshold);
        if (!through) {
                complete_io(io, 0, here);
                return;
        }
        add_waiter(v, io, first, last, io->fua, false, here);
        destage_range(v, first, last, here);
        cache_check_waiters(v, here);
}

static void write_submit(struct volume *v, struct volume_io *io)
{
        struct cache *c = v->cache;
        *io_state(io) = (struct cache_io_state){.v = v};
        io->line_kept = false;
        pthread_mutex_lock(&c->lock);
        uint32_t seq = io->seq ? io->seq : v->next_seq++;
        write_commit(v, io, seq, io->reactor);
        pthread_mutex_unlock(&c->lock);
}

void cache_retry_pending(struct volume *v, struct reactor *here)
{
        struct volume_io *list = v->pending;
        v->pending = NULL;
        while (list) {
                struct volume_io *io = list;
                list = io_state(io)->next_pending;
                write_commit(v, io, io_state(io)->seq, here);
        }
}

/* ---------------- flushes and barriers ---------------- */

struct backend_step {
        struct volume_io bio;
        struct volume_io *io;
        struct volume *v;
        bool barrier;
};

static void backend_step_done(struct volume_io *bio, int res)
{
        struct backend_step *s = bio->priv;
        struct volume *v = s->v;
        struct cache *c = v->cache;
        if (s->barrier) {
                pthread_mutex_lock(&c->lock);
                v->barriers--;
                for (size_t i = 0; i < CACHE_BUCKETS; i++)
                        c->buckets[i]++;
                destage_run(v, bio->reactor);
                pthread_mutex_unlock(&c->lock);
        }
        struct volume_io *io = s->io;
        struct reactor *here = bio->reactor;
        free(s);
        complete_io(io, res, here);
}

/* Under the lock: a satisfied waiter's last step (the backend FLUSH, UNMAP or WRITE ZEROES)
 * or its completion. */
static void waiter_finish(struct volume *v, struct flush_waiter *w, struct reactor *here)
{
        struct volume_io *io = w->io;
        if (w->result || (!w->backend_flush && !w->barrier)) {
                complete_io(io, w->result, here);
                return;
        }
        struct backend_step *s = calloc(1, sizeof(*s));
        if (!s) {
                if (w->barrier)
                        v->barriers--;
                complete_io(io, -ENOMEM, here);
                return;
        }
        s->io = io;
        s->v = v;
        s->barrier = w->barrier;
        s->bio = (struct volume_io){.op = w->barrier ? io->op : VOLUME_FLUSH,
                                    .offset = w->barrier ? io->offset : 0,
                                    .length = w->barrier ? io->length : 0,
                                    .reactor = here,
                                    .done = backend_step_done,
                                    .priv = s};
        backend_submit(v->backend, &s->bio);
}

/* Calls fn on each cached line of v in [first, last] until it returns true (then true): by
 * lookup when the range is smaller than the pool, else by one pass over the pool's lines. */
static bool any_line_in(struct volume *v, uint64_t first, uint64_t last,
                        bool (*fn)(struct cline *cl, const void *arg), const void *arg)
{
        struct cache *c = v->cache;
        if (last - first < c->nlines) {
                for (uint64_t lno = first; lno <= last; lno++) {
                        struct cline *cl = cache_lookup(c, v, lno);
                        if (cl && fn(cl, arg))
                                return true;
                }
                return false;
        }
        for (size_t i = 0; i < c->nlines; i++) {
                struct cline *cl = &c->clines[i];
                if (cl->v == v && cl->in_index && cl->lno >= first && cl->lno <= last &&
                    fn(cl, arg))
                        return true;
        }
        return false;
}

static bool is_destaging(struct cline *cl, const void *arg)
{
        (void)arg;
        return cl->destaging != 0;
}

static bool dirty_since_before(struct cline *cl, const void *arg)
{
        const struct flush_waiter *w = arg;
        return cl->dirty && !seq_before(w->target, cl->dirty_seq);
}

/* Whether w must still wait: a barrier for destages in its range (retired lines included),
 * a flush or write-through write for lines dirty since before it. */
static bool range_has(struct volume *v, const struct flush_waiter *w)
{
        if (w->barrier) {
                for (struct cline *cl = v->retired.head; cl; cl = cl->next)
                        if (cl->lno >= w->first && cl->lno <= w->last)
                                return true;
                return any_line_in(v, w->first, w->last, is_destaging, NULL);
        }
        if (w->last - w->first >= v->cache->nlines) {
                /* The whole volume: the oldest dirty line tells. */
                struct cline *cl = v->dirty.head;
                return cl && !seq_before(w->target, cl->dirty_seq);
        }
        return any_line_in(v, w->first, w->last, dirty_since_before, w);
}

void cache_check_waiters(struct volume *v, struct reactor *here)
{
        for (struct flush_waiter **pp = &v->waiters; *pp;) {
                struct flush_waiter *w = *pp;
                if (!w->result && range_has(v, w)) {
                        pp = &w->next;
                        continue;
                }
                *pp = w->next;
                waiter_finish(v, w, here);
                free(w);
        }
}

/* Destage number destage_no of [first, last] failed: the writes that were waiting on it
 * (write-through, FUA, flushes that were registered before it started, so it may have carried
 * their data) fail with it; their data stays dirty and is retried. */
void cache_fail_waiters(struct volume *v, uint64_t first, uint64_t last, uint64_t destage_no,
                        int err, struct reactor *here)
{
        for (struct flush_waiter *w = v->waiters; w; w = w->next)
                if (!w->barrier && w->first <= last && first <= w->last &&
                    w->since_destage <= destage_no)
                        w->result = err;
        cache_check_waiters(v, here);
}

static void flush_submit(struct volume *v, struct volume_io *io)
{
        struct cache *c = v->cache;
        *io_state(io) = (struct cache_io_state){.v = v};
        pthread_mutex_lock(&c->lock);
        add_waiter(v, io, 0, UINT64_MAX, true, false, io->reactor);
        destage_run(v, io->reactor);
        cache_check_waiters(v, io->reactor);
        pthread_mutex_unlock(&c->lock);
}

/* UNMAP and WRITE ZEROES: the cached blocks become zeroes (valid, clean, so no destage can
 * bring old data back), the range is closed to the destager, and once the destages already
 * reading those lines end, the backend does the operation. */
struct zero_range {
        uint64_t start, end; /* bytes */
        uint32_t seq;
};

/* any_line_in() callback; never stops the walk. */
static bool zero_cached(struct cline *cl, const void *arg)
{
        const struct zero_range *zr = arg;
        uint64_t start = zr->start, end = zr->end;
        uint32_t seq = zr->seq;
        struct volume *v = cl->v;
        struct cache *c = v->cache;
        uint32_t bs = v->conf.block_size;
        uint64_t lstart = cl->lno * c->line_size;
        uint64_t lo = start > lstart ? start - lstart : 0;
        uint64_t hi = end - lstart < c->line_size ? end - lstart : c->line_size;
        uint64_t m = block_mask((unsigned)(lo / bs), (unsigned)((hi - lo) / bs));
        memset(cl->data + lo, 0, hi - lo);
        for (unsigned b = 0; b < v->blocks_per_line; b++)
                if (m >> b & 1)
                        cl->bseq[b] = seq;
        uint64_t in_volume = block_mask(
            0,
            (unsigned)((v->size - lstart < c->line_size ? v->size - lstart : c->line_size) / bs));
        cl->valid |= m & in_volume;
        cl->dirty &= ~m;
        if (seq_before(cl->max_seq, seq))
                cl->max_seq = seq;
        if (!cl->dirty)
                cache_line_clean(c, cl);
        return false;
}

static void barrier_submit(struct volume *v, struct volume_io *io)
{
        struct cache *c = v->cache;
        *io_state(io) = (struct cache_io_state){.v = v};
        uint64_t first = io->offset / c->line_size;
        uint64_t last = (io->offset + io->length - 1) / c->line_size;
        pthread_mutex_lock(&c->lock);
        struct zero_range zr = {io->offset, io->offset + io->length,
                                io->seq ? io->seq : v->next_seq++};
        any_line_in(v, first, last, zero_cached, &zr);
        if (v->barriers++ == 0 || first < v->barrier_first)
                v->barrier_first = first;
        if (v->barriers == 1 || last > v->barrier_last)
                v->barrier_last = last;
        for (size_t i = 0; i < CACHE_BUCKETS; i++)
                c->buckets[i]++;
        add_waiter(v, io, first, last, false, true, io->reactor);
        cache_check_waiters(v, io->reactor);
        pthread_mutex_unlock(&c->lock);
}

void cache_submit(struct volume *v, struct volume_io *io)
{
        if (io->length == 0 && io->op != VOLUME_FLUSH) {
                *io_state(io) = (struct cache_io_state){.v = v};
                complete_io(io, 0, io->reactor);
                return;
        }
        switch (io->op) {
        case VOLUME_READ:
                read_submit(v, io);
                return;
        case VOLUME_WRITE:
                write_submit(v, io);
                return;
        case VOLUME_FLUSH:
                flush_submit(v, io);
                return;
        case VOLUME_UNMAP:
        case VOLUME_WRITE_ZEROES:
                barrier_submit(v, io);
                return;
        }
}

/* ---------------- life cycle ---------------- */

struct cache *cache_create(struct line_pool *pool, const struct cache_conf *conf)
{
        struct cache *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->pool = pool;
        c->nlines = line_pool_lines(pool);
        c->line_size = line_pool_line_size(pool);
        size_t buckets = 1;
        while (buckets < c->nlines * 2)
                buckets <<= 1;
        c->hash_mask = buckets - 1;
        c->hash = calloc(buckets, sizeof(*c->hash));
        c->clines = calloc(c->nlines, sizeof(*c->clines));
        c->ghost_size = c->nlines / 2 ? c->nlines / 2 : 1;
        c->ghost_ring = malloc(c->ghost_size * sizeof(*c->ghost_ring));
        if (!c->hash || !c->clines || !c->ghost_ring) {
                cache_destroy(c);
                return NULL;
        }
        for (size_t i = 0; i < c->ghost_size; i++)
                c->ghost_ring[i] = UINT64_MAX;
        c->kin = c->nlines / 4;
        c->max_inflight = (unsigned)(c->nlines / 16);
        if (c->max_inflight < 4)
                c->max_inflight = 4;
        if (c->max_inflight > DESTAGE_MAX_INFLIGHT)
                c->max_inflight = DESTAGE_MAX_INFLIGHT;
        c->high_lines = c->nlines * conf->high_water / 100;
        c->low_lines = c->nlines * conf->low_water / 100;
        c->hard_lines = c->nlines * conf->hard_limit / 100;
        if (c->hard_lines == 0)
                c->hard_lines = 1;
        c->max_age_ns = (uint64_t)conf->max_age_ms * 1000000ull;
        pthread_mutex_init(&c->lock, NULL);
        log_info("cache: %zu lines, destage from %u%% to %u%% dirty, writes wait at %u%%, "
                 "maximum age %u ms",
                 c->nlines, conf->high_water, conf->low_water, conf->hard_limit, conf->max_age_ms);
        return c;
}

void cache_destroy(struct cache *c)
{
        if (!c)
                return;
        if (c->clines)
                pthread_mutex_destroy(&c->lock);
        free(c->hash);
        free(c->clines);
        free(c->ghost_ring);
        free(c);
}

/* Under the lock: samples destaged_bytes (at most once a second) and returns the rate since
 * the oldest sample of the last 10 seconds. */
static double destage_rate(struct cache *c)
{
        const size_t n = sizeof(c->rate_samples) / sizeof(c->rate_samples[0]);
        uint64_t now = reactor_now_ns();
        unsigned last = (c->rate_next + n - 1) % n;
        if (!c->rate_samples[last].ns || now - c->rate_samples[last].ns >= 1000000000ull) {
                c->rate_samples[c->rate_next].ns = now;
                c->rate_samples[c->rate_next].bytes = c->stats.destaged_bytes;
                c->rate_next = (c->rate_next + 1) % n;
        }
        uint64_t t0 = 0, b0 = 0;
        for (size_t i = 0; i < n; i++) {
                uint64_t t = c->rate_samples[i].ns;
                if (t && now - t <= 10500000000ull && (!t0 || t < t0)) {
                        t0 = t;
                        b0 = c->rate_samples[i].bytes;
                }
        }
        if (!t0 || now <= t0)
                return 0.0;
        return (double)(c->stats.destaged_bytes - b0) * 1e9 / (double)(now - t0);
}

void cache_get_stats(struct cache *c, struct cache_stats *st)
{
        pthread_mutex_lock(&c->lock);
        *st = c->stats;
        st->destage_rate_bps = destage_rate(c);
        st->lines_total = c->nlines;
        st->lines_clean = c->clean_lines;
        st->lines_dirty = c->dirty_lines;
        pthread_mutex_unlock(&c->lock);
        st->lines_free = line_pool_free_lines(c->pool);
}

struct volume *volume_create_cached(struct cache *c, struct backend *b,
                                    const struct volume_conf *conf)
{
        if (c->line_size / conf->block_size > CACHE_MAX_BLOCKS || c->line_size < conf->block_size) {
                log_err("%s: line_size %zu holds more than %d blocks of %u bytes; the cache "
                        "needs line_size <= %u",
                        conf->name, c->line_size, CACHE_MAX_BLOCKS, conf->block_size,
                        CACHE_MAX_BLOCKS * conf->block_size);
                return NULL;
        }
        struct volume *v = calloc(1, sizeof(*v));
        if (!v)
                return NULL;
        v->cache = c;
        v->backend = b;
        v->conf = *conf;
        v->size = backend_size(b);
        v->blocks_per_line = (uint32_t)(c->line_size / conf->block_size);
        v->next_seq = 1;
        pthread_mutex_lock(&c->lock);
        v->id = ++c->next_volume_id;
        v->next_in_cache = c->volumes;
        c->volumes = v;
        pthread_mutex_unlock(&c->lock);
        destage_start_timer(v);
        return v;
}

/* Frees the volume's lines (after volume_stop and the reactors are gone). */
void cache_volume_forget(struct volume *v)
{
        struct cache *c = v->cache;
        pthread_mutex_lock(&c->lock);
        size_t lost = 0;
        for (size_t i = 0; i < c->nlines; i++) {
                struct cline *cl = &c->clines[i];
                if (cl->v != v)
                        continue;
                lost += cl->dirty != 0;
                if (cl->in_index)
                        index_remove(c, cl);
                if (cl->q == Q_A1IN || cl->q == Q_AM)
                        c->clean_lines--;
                if (cl->q == Q_DIRTY) {
                        c->dirty_lines--;
                        c->dirty_by[cl->origin]--;
                }
                q_remove(c, cl);
                uint8_t *data = cl->data;
                memset(cl, 0, sizeof(*cl));
                line_pool_put(c->pool, data);
        }
        for (struct volume **pp = &c->volumes; *pp; pp = &(*pp)->next_in_cache) {
                if (*pp == v) {
                        *pp = v->next_in_cache;
                        break;
                }
        }
        while (v->waiters) {
                struct flush_waiter *w = v->waiters;
                v->waiters = w->next;
                free(w);
        }
        pthread_mutex_unlock(&c->lock);
        if (lost)
                log_err("%s: %zu dirty lines were never destaged", v->conf.name, lost);
}

void volume_get_stats(struct volume *v, struct volume_stats *st)
{
        if (!v->cache) {
                memset(st, 0, sizeof(*st));
                return;
        }
        pthread_mutex_lock(&v->cache->lock);
        *st = v->stats;
        st->destage_inflight = v->inflight;
        st->destage_errors = v->destage_errors;
        st->backing_off = v->backoff_until > reactor_now_ns();
        snprintf(st->last_error, sizeof(st->last_error), "%s", v->last_error);
        pthread_mutex_unlock(&v->cache->lock);
}
