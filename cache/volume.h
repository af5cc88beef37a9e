/* volume: a LUN's storage as the SCSI layer sees it: byte-addressed, asynchronous reads,
 * writes, flushes, unmaps. Today a pass-through to the backend; the write-back cache will
 * implement this same interface in front of it. Completions run on the caller's reactor. */
#ifndef ISERGW_CACHE_VOLUME_H
#define ISERGW_CACHE_VOLUME_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct reactor;
struct volume;
struct backend;

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
        /* Owned by the implementation while the I/O is in flight. Implementations never
         * call done() from inside volume_submit(). */
        uint64_t impl[8];
        int64_t impl_res;
};

struct volume *volume_create(struct backend *backend);
void volume_destroy(struct volume *v);
uint64_t volume_size(const struct volume *v);
void volume_submit(struct volume *v, struct volume_io *io);

#endif
