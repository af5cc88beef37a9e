/* backend: where a LUN's bytes finally live, behind one ops table (file today; remote
 * iSCSI and RBD later). Owns nothing of the cache or the SCSI layer. */
#ifndef ISERGW_CACHE_BACKEND_H
#define ISERGW_CACHE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/volume.h"

struct backend;
struct reactor;

/* What the status socket shows of a backend. */
struct backend_status {
        bool online;          /* false while a remote backend is disconnected */
        char last_error[128]; /* "" when none yet */
        uint64_t errors;      /* I/Os that completed with an error */
        uint64_t reconnects;  /* remote backends: sessions re-established */
};

struct backend_ops {
        const char *name;
        /* Same semantics as volume_submit(); io->op is any volume_op. Callable from any
         * reactor thread; done() runs on io->reactor, never inside submit. A remote backend
         * that is disconnected queues the I/O until it reconnects (or fails it with -EIO
         * after its own timeout), so callers see either success or an error, never a hang. */
        void (*submit)(struct backend *b, struct volume_io *io);
        uint64_t (*size)(const struct backend *b);
        void (*destroy)(struct backend *b);
        void (*status)(const struct backend *b, struct backend_status *st); /* any thread */
};

struct backend {
        const struct backend_ops *ops;
        char name[64];
};

/* Opens (creating a sparse file if missing and size is given) a file or block device.
 * size 0 means "use the existing size". Returns NULL and logs why on failure. */
struct backend *backend_file_open(const char *path, uint64_t size, bool create);

/* A LUN of a remote iSCSI target (libiscsi), url "iscsi://HOST[:PORT]/IQN/LUN". Its session
 * lives on reactor home; it logs in before returning (NULL and a log line if it cannot). */
/* url ("iscsi://user%secret@host/...") without the credentials, for logs and status. */
void backend_iscsi_display_url(const char *url, char *buf, size_t len);

struct backend *backend_iscsi_open(const char *url, const char *initiator_name,
                                   struct reactor *home);
/* The remote LU's logical block size: every offset and length submitted is a multiple of it. */
uint32_t backend_iscsi_block_size(const struct backend *b);

/* Wraps inner so tests can inject errors through the status socket (fault_injection = yes).
 * Takes ownership of inner. */
struct backend *backend_fault_wrap(struct backend *inner);

/* What the next I/Os of a fault-wrapped backend do. Counts of 0 mean "no fault";
 * UINT32_MAX means "until changed". delay_ms delays every completion (a slow backend). */
struct backend_fault {
        uint32_t fail_reads;  /* this many reads fail with -EIO */
        uint32_t fail_writes; /* this many writes (and write-zeroes/unmaps) fail with -EIO */
        uint32_t fail_flushes;
        uint32_t delay_ms;
};
/* Returns -EINVAL when b is not fault-wrapped. Any thread. */
int backend_fault_set(struct backend *b, const struct backend_fault *f);
static inline void backend_submit(struct backend *b, struct volume_io *io)
{
        b->ops->submit(b, io);
}
static inline uint64_t backend_size(const struct backend *b)
{
        return b->ops->size(b);
}
static inline void backend_destroy(struct backend *b)
{
        b->ops->destroy(b);
}
static inline void backend_get_status(const struct backend *b, struct backend_status *st)
{
        b->ops->status(b, st);
}

#endif
