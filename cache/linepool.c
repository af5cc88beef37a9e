#include "cache/linepool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "src/log.h"

struct line_part {
        pthread_mutex_t lock; /* lines come back from other threads once the cache holds them */
        uint8_t *base;
        size_t line_size;
        unsigned total;
        unsigned free_count;
        uint32_t *free_stack; /* indices of free lines; LIFO keeps hot lines hot */
};

struct line_pool {
        uint8_t *base;
        size_t bytes;
        size_t line_size;
        bool huge;
        unsigned nparts;
        struct line_part **parts;
};

static int part_init(struct line_part *part, void *base, size_t bytes, size_t line_size)
{
        part->base = base;
        part->line_size = line_size;
        part->total = (unsigned)(bytes / line_size);
        part->free_stack = calloc(part->total ? part->total : 1, sizeof(uint32_t));
        if (!part->free_stack)
                return -1;
        /* Lowest address on top so allocation order is predictable (tests rely on it). */
        for (unsigned i = 0; i < part->total; i++)
                part->free_stack[i] = part->total - 1 - i;
        part->free_count = part->total;
        pthread_mutex_init(&part->lock, NULL);
        return 0;
}

struct line_part *line_part_create_at(void *base, size_t bytes, size_t line_size)
{
        struct line_part *part = calloc(1, sizeof(*part));
        if (part && part_init(part, base, bytes, line_size) < 0) {
                free(part);
                return NULL;
        }
        return part;
}

void line_part_destroy(struct line_part *part)
{
        if (!part)
                return;
        pthread_mutex_destroy(&part->lock);
        free(part->free_stack);
        free(part);
}

static void *map_region(size_t bytes, bool *huge)
{
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0);
        if (p != MAP_FAILED) {
                *huge = true;
                return p;
        }
        *huge = false;
        p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        madvise(p, bytes, MADV_HUGEPAGE);
        return p;
}

struct line_pool *line_pool_create(size_t pool_bytes, size_t line_size, unsigned partitions)
{
        if (!line_size || (line_size & (line_size - 1)) || !partitions ||
            pool_bytes < line_size * partitions)
                return NULL;
        struct line_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return NULL;
        size_t per_part = pool_bytes / partitions / line_size * line_size;
        p->bytes = per_part * partitions;
        p->line_size = line_size;
        p->base = map_region(p->bytes, &p->huge);
        p->parts = calloc(partitions, sizeof(*p->parts));
        if (!p->base || !p->parts)
                goto fail;
        p->nparts = partitions;
        for (unsigned i = 0; i < partitions; i++) {
                p->parts[i] = line_part_create_at(p->base + i * per_part, per_part, line_size);
                if (!p->parts[i])
                        goto fail;
        }
        log_info("cache-line pool: %zu MiB in %zu KiB lines, %u partitions, %s pages",
                 p->bytes >> 20, line_size >> 10, partitions, p->huge ? "huge" : "normal");
        return p;
fail:
        line_pool_destroy(p);
        return NULL;
}

void line_pool_destroy(struct line_pool *p)
{
        if (!p)
                return;
        for (unsigned i = 0; i < p->nparts; i++)
                line_part_destroy(p->parts[i]);
        free(p->parts);
        if (p->base)
                munmap(p->base, p->bytes);
        free(p);
}

void *line_pool_base(const struct line_pool *p)
{
        return p->base;
}

size_t line_pool_bytes(const struct line_pool *p)
{
        return p->bytes;
}

size_t line_pool_line_size(const struct line_pool *p)
{
        return p->line_size;
}

bool line_pool_huge_pages(const struct line_pool *p)
{
        return p->huge;
}

struct line_part *line_pool_part(struct line_pool *p, unsigned index)
{
        return index < p->nparts ? p->parts[index] : NULL;
}

void *line_alloc(struct line_part *part)
{
        void *line = NULL;
        pthread_mutex_lock(&part->lock);
        if (part->free_count) {
                uint32_t idx = part->free_stack[part->free_count - 1];
                __atomic_store_n(&part->free_count, part->free_count - 1, __ATOMIC_RELAXED);
                line = part->base + (size_t)idx * part->line_size;
        }
        pthread_mutex_unlock(&part->lock);
        return line;
}

void line_free(struct line_part *part, void *line)
{
        size_t idx = (size_t)((uint8_t *)line - part->base) / part->line_size;
        pthread_mutex_lock(&part->lock);
        if (part->free_count >= part->total || idx >= part->total) {
                log_err("line pool: line %zu given back twice or not ours", idx);
                abort();
        }
        part->free_stack[part->free_count] = (uint32_t)idx;
        __atomic_store_n(&part->free_count, part->free_count + 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&part->lock);
}

void *line_pool_get(struct line_pool *p, struct line_part *prefer)
{
        void *line = prefer ? line_alloc(prefer) : NULL;
        for (unsigned i = 0; !line && i < p->nparts; i++)
                if (p->parts[i] != prefer)
                        line = line_alloc(p->parts[i]);
        return line;
}

void line_pool_put(struct line_pool *p, void *line)
{
        size_t per_part = p->bytes / p->nparts;
        size_t i = (size_t)((uint8_t *)line - p->base) / per_part;
        line_free(p->parts[i], line);
}

size_t line_pool_index(const struct line_pool *p, const void *line)
{
        return (size_t)((const uint8_t *)line - p->base) / p->line_size;
}

size_t line_pool_lines(const struct line_pool *p)
{
        return p->bytes / p->line_size;
}

bool line_pool_owns(const struct line_pool *p, const void *line)
{
        const uint8_t *l = line;
        return l >= p->base && l < p->base + p->bytes;
}

unsigned line_pool_free_lines(const struct line_pool *p)
{
        unsigned n = 0;
        for (unsigned i = 0; i < p->nparts; i++)
                n += line_part_free(p->parts[i]);
        return n;
}

unsigned line_part_total(const struct line_part *part)
{
        return part->total;
}

unsigned line_part_free(const struct line_part *part)
{
        return __atomic_load_n(&part->free_count, __ATOMIC_RELAXED);
}
