/* The file backend's WRITE_ZEROES and UNMAP on a file system that lacks the fallocate mode
 * (tmpfs has no FALLOC_FL_ZERO_RANGE): they still succeed, by writing zeroes, and the range
 * reads back as zeroes while the bytes around it keep their data. Found by the Linux
 * initiator's mkfs (WRITE SAME(16) of zeroes answered HARDWARE ERROR). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache/backend.h"
#include "src/reactor.h"

#define FILE_BYTES (4u << 20)

static struct reactor *reactor;
static char path[64];

struct op {
        struct volume_io io;
        bool done;
        int result;
};

static void op_done(struct volume_io *io, int result)
{
        struct op *o = io->priv;
        o->done = true;
        o->result = result;
}

static int run(struct backend *b, enum volume_op op, uint64_t offset, uint64_t length)
{
        struct op o = {.io = {.op = op,
                              .offset = offset,
                              .length = length,
                              .reactor = reactor,
                              .done = op_done,
                              .priv = &o}};
        o.io.priv = &o;
        backend_submit(b, &o.io);
        uint64_t deadline = reactor_now_ns() + 5000000000ull;
        while (!o.done && reactor_now_ns() < deadline)
                reactor_poll_once(reactor, 5);
        cr_assert(o.done, "I/O never completed");
        return o.result;
}

static void setup(void)
{
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        /* /dev/shm is tmpfs: punch holes yes, zero ranges no */
        snprintf(path, sizeof(path), "/dev/shm/isergw-zeroes.%d", getpid());
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
        cr_assert_geq(fd, 0);
        unsigned char *fill = malloc(FILE_BYTES);
        memset(fill, 0xa5, FILE_BYTES);
        cr_assert_eq(write(fd, fill, FILE_BYTES), FILE_BYTES);
        free(fill);
        close(fd);
}

static void teardown(void)
{
        unlink(path);
        reactor_destroy(reactor);
}

TestSuite(backend_file_zeroes, .init = setup, .fini = teardown);

static void expect_bytes(uint64_t offset, uint64_t length, unsigned char v)
{
        int fd = open(path, O_RDONLY);
        unsigned char *buf = malloc(length);
        cr_assert_eq(pread(fd, buf, length, (off_t)offset), (ssize_t)length);
        for (uint64_t i = 0; i < length; i++)
                cr_assert_eq(buf[i], v, "byte %llu: 0x%02x, not 0x%02x",
                             (unsigned long long)(offset + i), buf[i], v);
        free(buf);
        close(fd);
}

Test(backend_file_zeroes, write_zeroes_and_unmap_work_without_the_fallocate_mode)
{
        struct backend *b = backend_file_open(path, 0, false);
        cr_assert_not_null(b);
        /* larger than one zero chunk, unaligned to it: several writes */
        cr_assert_eq(run(b, VOLUME_WRITE_ZEROES, 512, (1u << 20) + 4096), 0);
        expect_bytes(0, 512, 0xa5);
        expect_bytes(512, (1u << 20) + 4096, 0);
        expect_bytes(512 + (1u << 20) + 4096, 512, 0xa5);
        /* again: now straight to the zero writes */
        cr_assert_eq(run(b, VOLUME_WRITE_ZEROES, 2u << 20, 8192), 0);
        expect_bytes(2u << 20, 8192, 0);
        cr_assert_eq(run(b, VOLUME_UNMAP, 3u << 20, 65536), 0);
        expect_bytes(3u << 20, 65536, 0);
        expect_bytes((3u << 20) + 65536, 512, 0xa5);
        struct backend_status st;
        backend_get_status(b, &st);
        cr_assert_eq(st.errors, 0);
        backend_destroy(b);
}
