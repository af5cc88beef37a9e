#include "cache/dpt.h"

#include <stdlib.h>

#define DPT_RESERVED_TTT 0xffffffffu

struct dpt {
        unsigned capacity;
        unsigned in_use;
        unsigned high_water;
        unsigned free_top;
        uint32_t *free_stack;
        struct dpt_entry *entries;
};

struct dpt *dpt_create(unsigned entries)
{
        if (entries == 0 || entries > DPT_MAX_ENTRIES)
                return NULL;
        struct dpt *d = calloc(1, sizeof(*d));
        if (!d)
                return NULL;
        d->capacity = entries;
        d->entries = calloc(entries, sizeof(*d->entries));
        d->free_stack = calloc(entries, sizeof(*d->free_stack));
        if (!d->entries || !d->free_stack) {
                dpt_destroy(d);
                return NULL;
        }
        for (unsigned i = 0; i < entries; i++)
                d->free_stack[i] = entries - 1 - i;
        d->free_top = entries;
        return d;
}

void dpt_destroy(struct dpt *d)
{
        if (!d)
                return;
        free(d->entries);
        free(d->free_stack);
        free(d);
}

static uint32_t fill(struct dpt *d, unsigned idx, uint8_t *ptr, uint32_t off, uint32_t len,
                     const void *owner, void *task, uint16_t tag)
{
        struct dpt_entry *e = &d->entries[idx];
        *e = (struct dpt_entry){.data_pointer = ptr,
                                .data_offset = off,
                                .data_length = len,
                                .owner = owner,
                                .task = task,
                                .tag = tag,
                                .in_use = true};
        d->in_use++;
        if (d->in_use > d->high_water)
                __atomic_store_n(&d->high_water, d->in_use, __ATOMIC_RELAXED);
        return (uint32_t)idx << 16 | tag;
}

uint32_t dpt_alloc(struct dpt *d, uint8_t *data_pointer, uint32_t data_offset, uint32_t data_length,
                   const void *owner, void *task, uint16_t tag)
{
        if (d->free_top == 0)
                return DPT_RESERVED_TTT;
        unsigned idx = d->free_stack[--d->free_top];
        return fill(d, idx, data_pointer, data_offset, data_length, owner, task, tag);
}

uint32_t dpt_alloc_at(struct dpt *d, unsigned index, uint8_t *data_pointer, uint32_t data_offset,
                      uint32_t data_length, const void *owner, void *task, uint16_t tag)
{
        if (index >= d->capacity || d->entries[index].in_use)
                return DPT_RESERVED_TTT;
        for (unsigned i = 0; i < d->free_top; i++) {
                if (d->free_stack[i] == index) {
                        d->free_stack[i] = d->free_stack[--d->free_top];
                        return fill(d, index, data_pointer, data_offset, data_length, owner, task,
                                    tag);
                }
        }
        return DPT_RESERVED_TTT;
}

void dpt_free(struct dpt *d, uint32_t ttt)
{
        unsigned idx = ttt >> 16;
        /* A stale TTT (the entry since reused under another tag) must not free the new one. */
        if (idx >= d->capacity || !d->entries[idx].in_use || d->entries[idx].tag != (uint16_t)ttt)
                return;
        d->entries[idx].in_use = false;
        d->entries[idx].task = NULL;
        d->free_stack[d->free_top++] = idx;
        d->in_use--;
}

struct dpt_entry *dpt_lookup(struct dpt *d, uint32_t ttt, const void *owner)
{
        if (ttt == DPT_RESERVED_TTT)
                return NULL;
        unsigned idx = ttt >> 16;
        if (idx >= d->capacity)
                return NULL;
        struct dpt_entry *e = &d->entries[idx];
        if (!e->in_use || e->tag != (uint16_t)ttt || e->owner != owner)
                return NULL;
        return e;
}

uint8_t *dpt_place(const struct dpt_entry *e, uint32_t off, uint32_t len)
{
        if (off < e->data_offset || (uint64_t)off + len > (uint64_t)e->data_offset + e->data_length)
                return NULL;
        return e->data_pointer + (off - e->data_offset);
}

unsigned dpt_in_use(const struct dpt *d)
{
        return d->in_use;
}

unsigned dpt_high_water(const struct dpt *d)
{
        return __atomic_load_n(&d->high_water, __ATOMIC_RELAXED);
}

unsigned dpt_capacity(const struct dpt *d)
{
        return d->capacity;
}
