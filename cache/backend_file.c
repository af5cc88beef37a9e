/* The file backend: a regular file or block device driven through the submitting reactor's
 * io_uring. Reads and small writes go through the page cache; large aligned writes (the
 * destager's, FILE_DIRECT_MIN bytes or more) go O_DIRECT through a second descriptor, so
 * their bytes are not copied a second time into the page cache (the cache above already
 * holds them; the kernel drops the page cache's copy of a range written direct, so buffered
 * reads stay coherent). FUA maps to RWF_DSYNC, FLUSH to fdatasync, UNMAP to a punched hole,
 * WRITE_ZEROES to a zeroed range; where the file system has neither (tmpfs has no zeroed
 * ranges, some have no holes), both write zeroes instead. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/backend.h"
#include "src/log.h"
#include "src/reactor.h"

/* Writes this large and aligned go O_DIRECT. Small ones stay buffered: the page cache merges
 * and absorbs scattered small writes better than the disk takes them one by one. */
#define FILE_DIRECT_MIN (128u * 1024)

struct backend_file {
        struct backend base;
        int fd;
        int direct_fd;             /* O_DIRECT, or -1 */
        uint32_t dio_mem_align;    /* what O_DIRECT asks of buffers ... */
        uint32_t dio_offset_align; /* ... and of offsets and lengths */
        uint64_t size;
        bool is_blockdev;
        /* atomic; the file system refused that fallocate mode: write zeroes */
        bool no_punch_hole, no_zero_range;
        uint8_t *zeros;  /* ZERO_CHUNK bytes, for that */
        uint64_t errors; /* atomic */
        int last_error;  /* atomic; -errno of the latest failed I/O */
};

/* Per-I/O state kept inside volume_io.impl, so an I/O costs no allocation. */
struct file_io_state {
        struct reactor_io rio;
        struct volume_io *io;
        uint64_t done;                 /* bytes completed so far (short transfers are resumed) */
        struct reactor_deferred later; /* completion without an SQE, after submit returned */
        int later_res;
};
_Static_assert(sizeof(struct file_io_state) <= sizeof(((struct volume_io *)0)->impl),
               "file_io_state must fit in volume_io.impl");

static struct backend_file *to_file(struct backend *b)
{
        return (struct backend_file *)b;
}

static struct file_io_state *io_state(struct volume_io *io)
{
        return (struct file_io_state *)io->impl;
}

static void file_io_issue(struct backend_file *f, struct volume_io *io);

static void complete(struct volume_io *io, int res)
{
        if (res < 0) {
                struct backend_file *f = (struct backend_file *)(uintptr_t)io->impl_res;
                __atomic_add_fetch(&f->errors, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&f->last_error, res, __ATOMIC_RELAXED);
        }
        io->done(io, res);
}

static void complete_later_cb(struct reactor_deferred *d)
{
        struct file_io_state *st =
            (struct file_io_state *)((char *)d - offsetof(struct file_io_state, later));
        complete(st->io, st->later_res);
}

/* For completions decided at submit time: run them after volume_submit returned. */
static void complete_later(struct volume_io *io, int res)
{
        struct file_io_state *st = (struct file_io_state *)io->impl;
        st->later_res = res;
        st->later.cb = complete_later_cb;
        reactor_defer(io->reactor, &st->later);
}

/* Skips the first 'done' bytes of io's iovec into a temporary vector (rare: short I/O). */
static int iov_tail(struct volume_io *io, uint64_t done, struct iovec **out)
{
        struct iovec *v = calloc((size_t)io->iovcnt, sizeof(*v));
        if (!v)
                return -ENOMEM;
        int n = 0;
        for (int i = 0; i < io->iovcnt; i++) {
                size_t len = io->iov[i].iov_len;
                if (done >= len) {
                        done -= len;
                        continue;
                }
                v[n].iov_base = (char *)io->iov[i].iov_base + done;
                v[n].iov_len = len - done;
                done = 0;
                n++;
        }
        *out = v;
        return n;
}

static void file_rw_done(struct reactor_io *rio, int res)
{
        struct file_io_state *st = (struct file_io_state *)rio;
        struct volume_io *io = st->io;
        struct backend_file *f = (struct backend_file *)(uintptr_t)io->impl_res;
        if (res < 0) {
                complete(io, res);
                return;
        }
        if (res == 0 && io->op == VOLUME_READ) {
                /* Past end of a file shorter than the LUN: reads as zeroes. */
                struct iovec *v = NULL;
                int n = iov_tail(io, st->done, &v);
                for (int i = 0; i < n; i++)
                        memset(v[i].iov_base, 0, v[i].iov_len);
                free(v);
                complete(io, n < 0 ? n : 0);
                return;
        }
        if (res == 0) {
                complete(io, -EIO);
                return;
        }
        st->done += (uint64_t)res;
        if (st->done >= io->length) {
                complete(io, 0);
                return;
        }
        file_io_issue(f, io);
}

static bool aligned_to(uint64_t x, uint32_t align)
{
        return (x & (align - 1)) == 0;
}

/* Whether a whole write (not a resumed short one) may go O_DIRECT. */
static bool goes_direct(const struct backend_file *f, const struct volume_io *io)
{
        if (f->direct_fd < 0 || io->op != VOLUME_WRITE || io->length < FILE_DIRECT_MIN ||
            !aligned_to(io->offset, f->dio_offset_align) ||
            !aligned_to(io->length, f->dio_offset_align))
                return false;
        for (int i = 0; i < io->iovcnt; i++)
                if (!aligned_to((uintptr_t)io->iov[i].iov_base, f->dio_mem_align) ||
                    !aligned_to(io->iov[i].iov_len, f->dio_offset_align))
                        return false;
        return true;
}

static void file_rw_issue(struct backend_file *f, struct volume_io *io, struct io_uring_sqe *sqe)
{
        struct file_io_state *st = io_state(io);
        struct iovec *v = io->iov;
        unsigned n = (unsigned)io->iovcnt;
        if (st->done) {
                /* Resuming a short transfer (rare): issue the rest of the segment that holds
                 * byte 'done'; the completion comes back here for the next one. */
                uint64_t skip = st->done;
                int i = 0;
                while (i < io->iovcnt && skip >= io->iov[i].iov_len) {
                        skip -= io->iov[i].iov_len;
                        i++;
                }
                char *base = (char *)io->iov[i].iov_base + skip;
                unsigned len = (unsigned)(io->iov[i].iov_len - skip);
                if (io->op == VOLUME_READ)
                        io_uring_prep_read(sqe, f->fd, base, len, io->offset + st->done);
                else
                        io_uring_prep_write(sqe, f->fd, base, len, io->offset + st->done);
        } else if (io->op == VOLUME_READ) {
                io_uring_prep_readv(sqe, f->fd, v, n, io->offset);
        } else {
                /* A short transfer above is resumed buffered: its remainder may not be
                 * aligned. */
                io_uring_prep_writev(sqe, goes_direct(f, io) ? f->direct_fd : f->fd, v, n,
                                     io->offset);
                if (io->fua)
                        sqe->rw_flags = RWF_DSYNC;
        }
        st->rio.cb = file_rw_done;
        io_uring_sqe_set_data(sqe, &st->rio);
}

#define ZERO_CHUNK (1u << 20)

static void file_zero_done(struct reactor_io *rio, int res);

/* UNMAP or WRITE_ZEROES as plain writes of zeroes, a chunk at a time. */
static void file_zero_issue(struct backend_file *f, struct volume_io *io, struct io_uring_sqe *sqe)
{
        struct file_io_state *st = io_state(io);
        uint64_t left = io->length - st->done;
        io_uring_prep_write(sqe, f->fd, f->zeros, left < ZERO_CHUNK ? (unsigned)left : ZERO_CHUNK,
                            io->offset + st->done);
        st->rio.cb = file_zero_done;
        io_uring_sqe_set_data(sqe, &st->rio);
}

static void file_zero_done(struct reactor_io *rio, int res)
{
        struct file_io_state *st = (struct file_io_state *)rio;
        struct volume_io *io = st->io;
        if (res <= 0) {
                complete(io, res < 0 ? res : -EIO);
                return;
        }
        st->done += (uint64_t)res;
        if (st->done >= io->length) {
                complete(io, 0);
                return;
        }
        file_io_issue((struct backend_file *)(uintptr_t)io->impl_res, io);
}

static void file_simple_done(struct reactor_io *rio, int res)
{
        struct file_io_state *st = (struct file_io_state *)rio;
        struct volume_io *io = st->io;
        struct backend_file *f = (struct backend_file *)(uintptr_t)io->impl_res;
        bool zeroing = io->op == VOLUME_UNMAP || io->op == VOLUME_WRITE_ZEROES;
        if (zeroing && (res == -EOPNOTSUPP || res == -EINVAL)) {
                bool *refused = io->op == VOLUME_UNMAP ? &f->no_punch_hole : &f->no_zero_range;
                if (!__atomic_exchange_n(refused, true, __ATOMIC_RELAXED))
                        log_warn("backend %s: the file system cannot %s (%s); writing zeroes "
                                 "instead from now on",
                                 f->base.name,
                                 io->op == VOLUME_UNMAP ? "punch holes" : "zero ranges",
                                 strerror(-res));
                file_io_issue(f, io);
                return;
        }
        complete(io, res < 0 ? res : 0);
}

static void file_io_issue(struct backend_file *f, struct volume_io *io)
{
        struct io_uring_sqe *sqe = reactor_get_sqe(io->reactor);
        if (!sqe) {
                complete_later(io, -EAGAIN);
                return;
        }
        struct file_io_state *st = io_state(io);
        switch (io->op) {
        case VOLUME_READ:
        case VOLUME_WRITE:
                file_rw_issue(f, io, sqe);
                return;
        case VOLUME_FLUSH:
                io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
                break;
        case VOLUME_UNMAP:
        case VOLUME_WRITE_ZEROES:
                if (__atomic_load_n(io->op == VOLUME_UNMAP ? &f->no_punch_hole : &f->no_zero_range,
                                    __ATOMIC_RELAXED)) {
                        file_zero_issue(f, io, sqe);
                        return;
                }
                io_uring_prep_fallocate(
                    sqe, f->fd,
                    (io->op == VOLUME_UNMAP ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE) |
                        FALLOC_FL_KEEP_SIZE,
                    (off_t)io->offset, (off_t)io->length);
                break;
        }
        st->rio.cb = file_simple_done;
        io_uring_sqe_set_data(sqe, &st->rio);
}

static void file_submit(struct backend *b, struct volume_io *io)
{
        struct backend_file *f = to_file(b);
        struct file_io_state *st = io_state(io);
        st->io = io;
        st->done = 0;
        io->impl_res = (int64_t)(uintptr_t)f;
        if (io->length == 0 && io->op != VOLUME_FLUSH) {
                complete_later(io, 0);
                return;
        }
        file_io_issue(f, io);
}

static uint64_t file_size(const struct backend *b)
{
        return ((const struct backend_file *)b)->size;
}

static void file_destroy(struct backend *b)
{
        struct backend_file *f = to_file(b);
        if (f->fd >= 0) {
                fdatasync(f->fd);
                close(f->fd);
        }
        if (f->direct_fd >= 0)
                close(f->direct_fd);
        free(f->zeros);
        free(f);
}

static void file_status(const struct backend *b, struct backend_status *st)
{
        const struct backend_file *f = (const struct backend_file *)b;
        int err = __atomic_load_n(&f->last_error, __ATOMIC_RELAXED);
        *st = (struct backend_status){.online = true,
                                      .errors = __atomic_load_n(&f->errors, __ATOMIC_RELAXED)};
        if (err)
                snprintf(st->last_error, sizeof(st->last_error), "%s", strerror(-err));
}

static const struct backend_ops file_ops = {
    .name = "file",
    .submit = file_submit,
    .size = file_size,
    .destroy = file_destroy,
    .status = file_status,
};

static int file_prepare_size(struct backend_file *f, const char *path, uint64_t size)
{
        struct stat st;
        if (fstat(f->fd, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                uint64_t bytes;
                if (ioctl(f->fd, BLKGETSIZE64, &bytes) < 0)
                        return -errno;
                f->is_blockdev = true;
                f->size = size ? size : bytes;
                if (f->size > bytes) {
                        log_err("backend %s: size %llu exceeds the device (%llu bytes)", path,
                                (unsigned long long)f->size, (unsigned long long)bytes);
                        return -EINVAL;
                }
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (size && (uint64_t)st.st_size < size && ftruncate(f->fd, (off_t)size) < 0)
                return -errno;
        f->size = size ? size : (uint64_t)st.st_size;
        return 0;
}

/* A second descriptor for O_DIRECT writes, where the file system says what alignment they
 * need (statx STATX_DIOALIGN); otherwise every write stays buffered. */
static void file_open_direct(struct backend_file *f, const char *path)
{
        struct statx sx;
        if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) < 0 ||
            !(sx.stx_mask & STATX_DIOALIGN) || !sx.stx_dio_mem_align || !sx.stx_dio_offset_align)
                return;
        int fd = open(path, O_RDWR | O_CLOEXEC | O_DIRECT);
        if (fd < 0) {
                log_info("backend %s: no O_DIRECT (%s); every write goes through the page cache",
                         path, strerror(errno));
                return;
        }
        f->direct_fd = fd;
        f->dio_mem_align = sx.stx_dio_mem_align;
        f->dio_offset_align = sx.stx_dio_offset_align;
}

struct backend *backend_file_open(const char *path, uint64_t size, bool create)
{
        struct backend_file *f = calloc(1, sizeof(*f));
        if (!f)
                return NULL;
        f->direct_fd = -1;
        f->base.ops = &file_ops;
        snprintf(f->base.name, sizeof(f->base.name), "%s", path);
        int flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0);
        f->fd = open(path, flags, 0600);
        if (f->fd < 0) {
                log_err("backend %s: open: %s", path, strerror(errno));
                free(f);
                return NULL;
        }
        f->zeros = calloc(1, ZERO_CHUNK);
        int rc = f->zeros ? file_prepare_size(f, path, size) : -ENOMEM;
        if (rc < 0 || f->size == 0) {
                log_err("backend %s: cannot size it: %s", path, rc < 0 ? strerror(-rc) : "empty");
                file_destroy(&f->base);
                return NULL;
        }
        file_open_direct(f, path);
        return &f->base;
}
