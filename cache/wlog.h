/* wlog: the local write log (RD3-M5/M6). Owns one preallocated file on a local disk: two
 * header slots and a circular area of records, one per write, UNMAP or WRITE ZEROES that a
 * volume accepts, in arrival order, each with its log sequence number (LSN), its volume's
 * key, its command-order ticket and CRC-32C checksums. A record is on stable storage
 * (fdatasync; a writer thread commits records in groups) before the volume goes on with the
 * I/O, so nothing is acknowledged that the log does not hold.
 *
 * Space comes back through checkpoints: once every record below a point has been applied
 * (the cache holds it) the checkpoint thread calls the owner's flush callback (every volume
 * destaged and its backend flushed), then records that point in the header. At start the
 * records after the last checkpoint are handed back for replay, ordered by volume and ticket.
 *
 * Knows nothing of caches, volumes or reactors: completions are callbacks on its threads. */
#ifndef ISERGW_CACHE_WLOG_H
#define ISERGW_CACHE_WLOG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define WLOG_MIN_SIZE    (16ull << 20)
#define WLOG_MAX_RECORD  (4ull << 20) /* data bytes of one record */
#define WLOG_RECORD_HDR  512u         /* each record's header block */
#define WLOG_AREA_OFFSET 4096u        /* records start here; the header slots come before */

struct wlog;

enum wlog_op { WLOG_WRITE = 1, WLOG_UNMAP = 2, WLOG_WRITE_ZEROES = 3 };

/* What one record says. */
struct wlog_record {
        enum wlog_op op;
        uint64_t key;    /* the volume's (the owner's choice: stable across restarts) */
        uint64_t offset; /* bytes */
        uint64_t length; /* bytes; the data's length for WLOG_WRITE */
        uint32_t seq;    /* command-order ticket: where records overlap, the later wins */
        uint64_t lsn;    /* set by the log's writer */
};

/* One record on its way to the log. The caller owns the memory (it embeds the entry in its own
 * per-I/O state) and keeps iov valid until logged() has been called. */
struct wlog_entry {
        struct wlog_record rec;
        const struct iovec *iov; /* WLOG_WRITE: rec.length bytes */
        int iovcnt;
        /* On the log's writer thread, once the record is durable (0) or cannot be (-errno). */
        void (*logged)(struct wlog_entry *e, int err);
        /* Owned by the log. */
        uint8_t hdr[WLOG_RECORD_HDR];
        struct wlog_entry *qnext;         /* the writer's queue, then its batch */
        struct wlog_entry *onext, *oprev; /* not yet applied, in append (= LSN) order */
        bool assigned;                    /* has its LSN */
        bool outstanding;
};

struct wlog_stats {
        uint64_t size;           /* of the record area */
        uint64_t used;           /* bytes between the checkpoint and the head */
        uint64_t records, bytes; /* appended since start */
        uint64_t commits;        /* fdatasync calls */
        uint64_t checkpoints, checkpoint_failures;
        uint64_t replayed_records, replayed_bytes; /* at start */
        uint64_t waits;                            /* appends that waited for space */
        uint64_t errors;                           /* records that could not be written */
        uint64_t head_lsn, tail_lsn;
        char last_error[128];
};

/* Opens the log at path, creating and preallocating it (size bytes of records) if it does not
 * exist. An existing log keeps its own size until wlog_reset(). NULL (logged) if the file is
 * not a write log of this version or cannot be read: the caller must not start without it. */
struct wlog *wlog_open(const char *path, uint64_t size);

/* Hands every record after the last checkpoint to fn, ordered by key, then by ticket (later
 * last), then by LSN; data is the record's data for WLOG_WRITE. Stops at the first record
 * that is torn or out of sequence (the end of the log). Returns the number of records, or
 * the first negative value fn returned. Before wlog_start() only. */
typedef int (*wlog_replay_fn)(void *ctx, const struct wlog_record *r, const void *data);
long wlog_replay(struct wlog *l, wlog_replay_fn fn, void *ctx);

/* Every record so far is on the backends (replayed and flushed, or flushed at shutdown):
 * empties the log, at the size given to wlog_open(). Not while appends are outstanding. */
int wlog_reset(struct wlog *l);

/* Starts the writer and checkpoint threads. flush(ctx) must put everything the volumes have
 * acknowledged on their backends' stable storage, blocking; 0 or -errno. */
typedef int (*wlog_flush_fn)(void *ctx);
int wlog_start(struct wlog *l, wlog_flush_fn flush, void *ctx, uint32_t checkpoint_ms);

/* Queues e (the writer sets rec.lsn). -E2BIG if the record can never fit; otherwise 0 and
 * logged() follows. Appends wait (never fail) while the log is full. Any thread. */
int wlog_append(struct wlog *l, struct wlog_entry *e);
/* The volume now holds e's write (or failed it): checkpoints may pass it. Any thread. */
void wlog_applied(struct wlog *l, struct wlog_entry *e);

/* Waits until every appended entry has been applied; false after timeout_ms. */
bool wlog_drain(struct wlog *l, uint32_t timeout_ms);

void wlog_get_stats(struct wlog *l, struct wlog_stats *st);

/* Stops the threads (appends must have ended) and closes the file. The log keeps whatever it
 * holds: call wlog_reset() first after a complete flush. */
void wlog_close(struct wlog *l);

#endif
