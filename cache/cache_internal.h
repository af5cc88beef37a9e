/* Private to cache/: the structures shared by the cache (cache.c), its destager (destage.c)
 * and the volume front (volume.c). Everything here is guarded by cache.lock. */
#ifndef ISERGW_CACHE_INTERNAL_H
#define ISERGW_CACHE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache/cache.h"
#include "cache/volume.h"
#include "src/reactor.h"

#define CACHE_MAX_BLOCKS 64 /* blocks per line: valid/dirty are 64-bit masks */
#define CACHE_BUCKETS    4096
/* Lines one write without its own line may need (emulated commands write at most
 * SCSI_BOUNCE_CHUNK_BYTES, 1 MiB: 256 lines of 4 KiB). */
#define CACHE_MAX_SPARES     512
#define CACHE_MAX_REACTORS   64
#define CACHE_GHOST_HASH     65536
#define DESTAGE_MAX_INFLIGHT 32 /* per LUN; fewer in a small pool (cache.max_inflight) */
#define DESTAGE_MAX_LINES    32 /* one backend write covers at most this many lines */

enum cline_queue { Q_NONE, Q_A1IN, Q_AM, Q_DIRTY, Q_RETIRED };

/* A line of a volume in the cache. One per pool line (indexed like the pool), so the cache
 * never allocates metadata on the I/O path. */
struct cline {
        struct volume *v;
        uint64_t lno; /* line number within the volume */
        uint8_t *data;
        uint64_t valid;
        uint64_t dirty;
        uint32_t bseq[CACHE_MAX_BLOCKS]; /* ticket of the write that last set each block */
        uint32_t max_seq;
        uint32_t dirty_seq;   /* volume commit count when the line went dirty (flushes) */
        uint64_t dirty_since; /* ns; the destager's maximum age */
        uint32_t destaging;   /* backend writes in flight reading this line: immutable */
        bool in_index;
        bool retired;   /* replaced in the index while destaging; freed when that ends */
        bool wait_prev; /* a retired predecessor is still being written: wait for it */
        bool hot;       /* referenced again since it came in (2Q: goes to Am) */
        uint8_t origin; /* reactor whose write made it dirty (fair shares of the hard limit) */
        struct cline *successor; /* retired: the line that replaced it */
        struct cline *pred;      /* wait_prev: the retired line it waits for */
        struct cline *hnext;
        struct cline *prev, *next;
        enum cline_queue q;
};

struct cline_queue_head {
        struct cline *head, *tail; /* head: most recent (clean) / oldest (dirty) */
        size_t count;
};

/* An I/O waiting for lines to become clean: FLUSH, FUA and write-through writes, and the
 * barrier of UNMAP / WRITE ZEROES (which waits for destages in flight instead). */
struct flush_waiter {
        struct volume_io *io;
        uint64_t first, last;   /* line numbers */
        uint32_t target;        /* lines that went dirty at or before this commit count */
        bool backend_flush;     /* then flush the backend (FUA, SYNCHRONIZE CACHE) */
        bool barrier;           /* UNMAP / WRITE ZEROES: wait for no destage in range */
        uint64_t since_destage; /* destages numbered below this were under way before it */
        int result;
        struct flush_waiter *next;
};

struct volume {
        struct cache *cache; /* NULL: pass-through */
        struct backend *backend;
        struct volume_conf conf;
        uint32_t id;
        uint64_t size;
        uint32_t blocks_per_line;
        struct wlog *wlog; /* NULL: no write log */
        uint64_t wlog_key;
        const struct volume_mirror_ops *mirror_ops; /* NULL: not mirrored */
        void *mirror_ctx;

        /* Command order. */
        uint32_t next_seq;
        struct volume_ticket *tickets_head, *tickets_tail; /* oldest first */

        uint32_t commit_count;
        struct cline_queue_head dirty;   /* in the order lines went dirty */
        struct cline_queue_head retired; /* replaced while destaging */
        struct flush_waiter *waiters;
        struct volume_io *pending; /* writes waiting for a spare line (rare) */
        /* Ranges a barrier is rewriting on the backend: not destaged meanwhile. */
        uint64_t barrier_first, barrier_last;
        unsigned barriers;

        /* Destager. */
        struct reactor_timer timer;
        bool timer_running;
        bool stopping;
        unsigned inflight;
        uint64_t destages;      /* destage writes ever started (numbers them) */
        bool retrying;          /* a destage failed: retry after the back-off regardless */
        uint64_t backoff_until; /* ns; a failing backend is retried after this */
        uint64_t backoff_ns;
        char last_error[128];
        uint64_t destage_errors;

        struct volume_stats stats;
        struct volume *next_in_cache;
};

struct cache {
        pthread_mutex_t lock;
        struct line_pool *pool;
        size_t nlines;
        size_t line_size;
        struct cline *clines;
        struct cline **hash;
        size_t hash_mask;
        struct cline_queue_head a1in, am;
        size_t kin;            /* A1in's target size (2Q) */
        unsigned max_inflight; /* destage writes per LUN: lines they pin cannot take writes */
        uint8_t ghost_count[CACHE_GHOST_HASH];
        uint64_t *ghost_ring;
        size_t ghost_size, ghost_pos;
        uint32_t buckets[CACHE_BUCKETS]; /* bumped when a line leaves or is rewritten */
        size_t dirty_lines, clean_lines;
        /* Per reactor: dirty lines its writes made, and since when its writes wait (0: not). */
        size_t dirty_by[CACHE_MAX_REACTORS];
        uint64_t waiting_since[CACHE_MAX_REACTORS];
        unsigned reactors_waiting; /* how many waiting_since[] are set */
        size_t high_lines, low_lines, hard_lines;
        uint64_t max_age_ns;
        bool draining;
        uint32_t next_volume_id;
        struct volume *volumes;
        struct cache_stats stats;
        /* destaged_bytes sampled about once a second, for the 10-second rate */
        struct {
                uint64_t ns, bytes;
        } rate_samples[12];
        unsigned rate_next;
};

static inline bool seq_before(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) < 0;
}

static inline uint64_t block_mask(unsigned first, unsigned count)
{
        return count >= 64 ? ~0ull : ((1ull << count) - 1) << first;
}

/* cache.c, for the destager */
struct cline *cache_lookup(struct cache *c, struct volume *v, uint64_t lno);
void cache_line_clean(struct cache *c, struct cline *cl);
void cache_line_release(struct cache *c, struct cline *cl);
void cache_check_waiters(struct volume *v, struct reactor *here);
void cache_retry_pending(struct volume *v, struct reactor *here);
void cache_fail_waiters(struct volume *v, uint64_t first, uint64_t last, uint64_t destage_no,
                        int err, struct reactor *here);
uint8_t *cache_line_get(struct volume *v, struct line_part *prefer, struct reactor *here,
                        bool for_write);
void cache_submit(struct volume *v, struct volume_io *io);
void cache_volume_forget(struct volume *v);

/* destage.c */
void destage_run(struct volume *v, struct reactor *here);
void destage_start_timer(struct volume *v);
void destage_stop_timer(struct volume *v);
void destage_range(struct volume *v, uint64_t first, uint64_t last, struct reactor *here);

#endif
