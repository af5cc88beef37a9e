/* The volume front: dispatches to the cache or, without one, straight to the backend, and
 * hands out write tickets and lines. */
#include "cache/volume.h"

#include <stdlib.h>

#include "cache/backend.h"
#include "cache/cache_internal.h"
#include "cache/linepool.h"

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

void volume_submit(struct volume *v, struct volume_io *io)
{
        io->line_kept = false;
        if (v->cache)
                cache_submit(v, io);
        else
                backend_submit(v->backend, io);
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
