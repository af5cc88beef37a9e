/* volume: a LUN's storage as the SCSI layer sees it: byte-addressed, asynchronous reads,
 * writes, flushes, unmaps. A volume is either a pass-through to its backend (unit tests) or
 * fronted by the write-back cache (cache/cache.h), which owns its lines, its dirty state and
 * its destager. Completions run on the caller's reactor, never inside volume_submit(). */
#ifndef ISERGW_CACHE_VOLUME_H
#define ISERGW_CACHE_VOLUME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct reactor;
struct volume;
struct wlog;
struct backend;
struct line_part;

enum volume_op {
        VOLUME_READ,
        VOLUME_WRITE,
        VOLUME_FLUSH,        /* everything acknowledged so far reaches stable storage */
        VOLUME_UNMAP,        /* the range may read back as zeroes */
        VOLUME_WRITE_ZEROES, /* the range reads back as zeroes */
};

struct volume_io {
        enum volume_op op;
        uint64_t offset; /* bytes */
        uint64_t length; /* bytes */
        struct iovec *iov;
        int iovcnt;
        bool fua; /* complete only once on stable storage */
        struct reactor *reactor;
        void (*done)(struct volume_io *io, int result); /* 0 or -errno */
        void *priv;                                     /* the caller's */
        /* Writes: the pool line the data sits in (iov inside it, at the line offset of
         * 'offset'), or NULL. The cache may keep that line instead of copying; it then sets
         * line_kept before done() and the caller must not free the line. */
        uint8_t *line;
        bool line_kept;
        uint32_t seq;       /* writes: order ticket from volume_write_begin(); 0: now */
        uint64_t cmd_bytes; /* writes: the whole command's size (bypass threshold) */
        bool replica;       /* a peer's write applied on a mirror secondary: not mirrored back */
        /* Owned by the implementation while the I/O is in flight. */
        uint64_t impl[8];
        int64_t impl_res;
};

/* Command order for overlapping writes: a write takes a ticket when its command starts
 * executing and gives it back when the command ends; its I/Os carry the ticket's seq, and
 * where two writes overlap the one with the later ticket wins, whichever lands first. */
struct volume_ticket {
        uint32_t seq;
        uint64_t offset, length; /* bytes the write covers */
        struct volume_ticket *prev, *next;
        bool active;
};

/* A volume without a cache: every I/O goes to the backend. */
struct volume *volume_create(struct backend *backend);
void volume_destroy(struct volume *v);
uint64_t volume_size(const struct volume *v);
void volume_submit(struct volume *v, struct volume_io *io);

void volume_write_begin(struct volume *v, struct volume_ticket *t, uint64_t offset,
                        uint64_t length);
void volume_write_end(struct volume *v, struct volume_ticket *t);

/* From now on every write, UNMAP and WRITE ZEROES of v is in the write log (cache/wlog.h) under
 * key before the volume goes on with it. Before any I/O is submitted. */
void volume_set_wlog(struct volume *v, struct wlog *log, uint64_t key);

/* A mirror in front of the cache (repl/mirror.h): writes, UNMAPs and WRITE ZEROES of v (after
 * the write log, with their order ticket set) go to submit(ctx, io) instead of the cache; the
 * mirror calls volume_submit_local() when the local copy may be written and completes io on
 * io->reactor itself. Set before any I/O is submitted. */
struct volume_mirror_ops {
        void (*submit)(void *ctx, struct volume_io *io);
};
void volume_set_mirror(struct volume *v, const struct volume_mirror_ops *ops, void *ctx);
void volume_submit_local(struct volume *v, struct volume_io *io);

/* Order tickets for a peer: reserves n consecutive tickets and returns the first, so that the
 * peer's writes order after every write this volume has seen so far. */
uint32_t volume_reserve_seqs(struct volume *v, uint32_t n);
/* Whether a write with an older ticket than t that overlaps t's range is still running (a
 * resync must not read the range before it ends). */
bool volume_older_write_active(struct volume *v, const struct volume_ticket *t);

/* A line for an I/O of this volume, from the caller's partition if it can (evicting clean
 * cache lines when the pool is short). NULL means "wait and try again": the pool is full of
 * dirty or busy lines, or (for_write) dirty data is at the hard limit, so new writes wait
 * for the destager (RD3-M3; writes of the reactor 'here' that has made more dirty lines than
 * a waiting one wait too, so sessions share the limit). Lines not kept go back with
 * line_pool_put(). */
uint8_t *volume_line_get(struct volume *v, struct line_part *prefer, struct reactor *here,
                         bool for_write);

#endif
