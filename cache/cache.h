/* cache: the write-back block cache in front of the backends (RD0, RD3). Owns the index from
 * (volume, line number) to pool line, per-block valid and dirty bits, 2Q eviction of clean
 * lines, the dirty marks and the destager. Writes are acknowledged once in cache (write-back),
 * or once destaged (write-through, FUA, writes at or above the bypass threshold); reads are
 * served from cache, partial hits merged with the backend. docs/cache.md has the policies and
 * the guarantees. One cache serves every volume of a daemon, over one line pool. */
#ifndef ISERGW_CACHE_CACHE_H
#define ISERGW_CACHE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

struct cache;
struct line_pool;
struct backend;
struct reactor;
struct volume;

struct cache_conf {
        unsigned high_water; /* percent of the pool dirty: destaging starts */
        unsigned low_water;  /* and stops */
        unsigned hard_limit; /* new writes wait for lines above this */
        uint32_t max_age_ms; /* dirty this long: destaged regardless */
};

struct cache_stats {
        uint64_t read_hits, read_misses;
        uint64_t destaged_bytes, destage_ios;
        uint64_t merge_copy_bytes; /* partial-line writes copied into a cached line */
        uint64_t cow_lines;        /* lines replaced while a destage was reading them */
        uint64_t evictions;
        uint64_t write_waits; /* line requests refused at the hard limit */
        /* Filled by cache_get_stats(): */
        uint64_t lines_total, lines_free, lines_clean, lines_dirty;
        double destage_rate_bps; /* over the last 10 s (or since the oldest sample) */
};

struct volume_conf {
        const char *name;    /* for logs: "TARGET LUN N" */
        uint32_t block_size; /* 512 or 4096; line_size / block_size <= 64 */
        bool write_back;
        uint64_t bypass_threshold; /* bytes; 0: none */
        struct reactor *home;      /* where its destager's timer runs */
};

struct volume_stats {
        uint64_t dirty_lines;
        uint64_t destaged_bytes;
        uint64_t destage_errors;
        unsigned destage_inflight;
        bool backing_off; /* the backend failed; retrying later */
        char last_error[128];
};

struct cache *cache_create(struct line_pool *pool, const struct cache_conf *conf);
/* After every volume is destroyed. */
void cache_destroy(struct cache *c);
void cache_get_stats(struct cache *c, struct cache_stats *st);

/* A volume fronted by the cache. NULL (logged) if the geometry does not fit. */
struct volume *volume_create_cached(struct cache *c, struct backend *b,
                                    const struct volume_conf *conf);
/* Stops the destager's timer; call on a running reactor set, before reactor_stop(). */
void volume_stop(struct volume *v);
void volume_get_stats(struct volume *v, struct volume_stats *st);

#endif
