/* backend: where a LUN's bytes finally live, behind one ops table (file today; remote
 * iSCSI and RBD later). Owns nothing of the cache or the SCSI layer. */
#ifndef ISERGW_CACHE_BACKEND_H
#define ISERGW_CACHE_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "cache/volume.h"

struct backend;

struct backend_ops {
        const char *name;
        /* Same semantics as volume_submit(); io->op is any volume_op. */
        void (*submit)(struct backend *b, struct volume_io *io);
        uint64_t (*size)(const struct backend *b);
        void (*destroy)(struct backend *b);
};

struct backend {
        const struct backend_ops *ops;
        char name[64];
};

/* Opens (creating a sparse file if missing and size is given) a file or block device.
 * size 0 means "use the existing size". Returns NULL and logs why on failure. */
struct backend *backend_file_open(const char *path, uint64_t size, bool create);

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

#endif
