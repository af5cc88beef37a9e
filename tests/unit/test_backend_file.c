/* The file backend on an unstarted reactor driven by reactor_poll_once: large aligned writes
 * (O_DIRECT where the file system offers it) and small or unaligned ones (buffered) mix on one
 * file, and every read, write and the file's own bytes agree with the last write of each
 * range, in whatever order the two kinds came. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/backend.h"
#include "src/reactor.h"

#define FILE_BYTES (8u << 20)
#define BIG        (1u << 20)

static struct reactor *reactor;
static struct backend *be;
static char path[] = "/tmp/isergw-test-backend-file-XXXXXX";

static void setup(void)
{
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        close(fd);
        be = backend_file_open(path, FILE_BYTES, true);
        cr_assert_not_null(be);
}

static void teardown(void)
{
        backend_destroy(be);
        reactor_destroy(reactor);
        unlink(path);
}

TestSuite(backend_file, .init = setup, .fini = teardown);

struct op {
        struct volume_io io;
        struct iovec iov[2];
        bool done;
        int result;
};

static void op_done(struct volume_io *io, int result)
{
        struct op *o = io->priv;
        cr_assert(!o->done, "completed twice");
        o->done = true;
        o->result = result;
}

/* Runs one I/O over buf (one iovec, or two halves when split) to its end. */
static int run_io(enum volume_op op, uint64_t offset, uint8_t *buf, size_t len, bool split)
{
        struct op o = {0};
        size_t first = split ? len / 2 : len;
        o.iov[0] = (struct iovec){buf, first};
        o.iov[1] = (struct iovec){buf ? buf + first : NULL, len - first}; /* FLUSH: none */
        o.io = (struct volume_io){.op = op,
                                  .offset = offset,
                                  .length = op == VOLUME_FLUSH ? 0 : len,
                                  .iov = o.iov,
                                  .iovcnt = split ? 2 : 1,
                                  .reactor = reactor,
                                  .done = op_done,
                                  .priv = &o};
        backend_submit(be, &o.io);
        cr_assert(!o.done, "completed inside submit");
        uint64_t deadline = reactor_now_ns() + 10000000000ull;
        while (!o.done && reactor_now_ns() < deadline)
                reactor_poll_once(reactor, 5);
        cr_assert(o.done, "I/O never completed");
        return o.result;
}

static uint8_t *filled(size_t len, uint8_t seed)
{
        uint8_t *b = aligned_alloc(4096, len);
        cr_assert_not_null(b);
        for (size_t i = 0; i < len; i++)
                b[i] = (uint8_t)(seed + i * 7 + i / 4096);
        return b;
}

/* The backend's read and the file's bytes (another descriptor) both equal want. */
static void expect_bytes(uint64_t offset, const uint8_t *want, size_t len)
{
        uint8_t *got = aligned_alloc(4096, len);
        cr_assert_not_null(got);
        memset(got, 0xee, len);
        cr_assert_eq(run_io(VOLUME_READ, offset, got, len, false), 0);
        cr_assert(memcmp(got, want, len) == 0, "backend read differs at %llu",
                  (unsigned long long)offset);
        int fd = open(path, O_RDONLY);
        cr_assert_geq(fd, 0);
        memset(got, 0xee, len);
        cr_assert_eq(pread(fd, got, len, (off_t)offset), (ssize_t)len);
        close(fd);
        cr_assert(memcmp(got, want, len) == 0, "file differs at %llu", (unsigned long long)offset);
        free(got);
}

Test(backend_file, large_aligned_writes_read_back_buffered)
{
        uint8_t *a = filled(BIG, 1);
        /* Read first, so the page cache holds the old (zero) bytes of the range. */
        uint8_t *zero = calloc(1, BIG);
        expect_bytes(0, zero, BIG);
        cr_assert_eq(run_io(VOLUME_WRITE, 0, a, BIG, true), 0);
        expect_bytes(0, a, BIG);
        free(a);
        free(zero);
}

Test(backend_file, small_buffered_write_then_large_write_over_it)
{
        uint8_t *small = filled(4096, 2), *big = filled(BIG, 3);
        /* Dirty in the page cache, then overwritten by a large write: the large one wins. */
        cr_assert_eq(run_io(VOLUME_WRITE, BIG + 8192, small, 4096, false), 0);
        cr_assert_eq(run_io(VOLUME_WRITE, BIG, big, BIG, false), 0);
        expect_bytes(BIG, big, BIG);
        /* And the other way round: a small write over a large one's range. */
        cr_assert_eq(run_io(VOLUME_WRITE, BIG + 4096, small, 4096, false), 0);
        memcpy(big + 4096, small, 4096);
        expect_bytes(BIG, big, BIG);
        cr_assert_eq(run_io(VOLUME_FLUSH, 0, NULL, 0, false), 0);
        free(small);
        free(big);
}

Test(backend_file, unaligned_large_writes_still_work)
{
        /* A buffer not aligned for O_DIRECT, and an offset of one 512-byte block. */
        uint8_t *raw = filled(BIG + 4096, 4);
        uint8_t *buf = raw + 1;
        cr_assert_eq(run_io(VOLUME_WRITE, 2 * BIG, buf, BIG, false), 0);
        expect_bytes(2 * BIG, buf, BIG);
        uint8_t *b2 = filled(BIG, 5);
        cr_assert_eq(run_io(VOLUME_WRITE, 3 * BIG + 512, b2, BIG, false), 0);
        expect_bytes(3 * BIG + 512, b2, BIG);
        free(raw);
        free(b2);
}

Test(backend_file, fua_large_write)
{
        uint8_t *a = filled(BIG, 6);
        struct op o = {0};
        o.iov[0] = (struct iovec){a, BIG};
        o.io = (struct volume_io){.op = VOLUME_WRITE,
                                  .offset = 4 * BIG,
                                  .length = BIG,
                                  .iov = o.iov,
                                  .iovcnt = 1,
                                  .fua = true,
                                  .reactor = reactor,
                                  .done = op_done,
                                  .priv = &o};
        backend_submit(be, &o.io);
        while (!o.done)
                reactor_poll_once(reactor, 5);
        cr_assert_eq(o.result, 0);
        expect_bytes(4 * BIG, a, BIG);
        free(a);
}
