/* The cache's writes that bring no line of their own (a mirror secondary's writes, emulated
 * commands): each part of the write that has no cached line takes a spare line, and taking
 * one may evict a clean line of the write's own range, which then needs a spare as well. On
 * an unstarted reactor driven by reactor_poll_once, over the memory backend. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "cache/linepool.h"
#include "cache/volume.h"
#include "src/reactor.h"
#include "tests/common/mem_backend.h"

#define LINE       4096u
#define POOL_LINES 16u
#define LUN_BYTES  (1u << 20)

static struct reactor *reactor;
static struct mem_backend *mem;
static struct line_pool *pool;
static struct cache *cache;
static struct volume *vol;

static void setup(void)
{
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        mem = mem_backend_create(LUN_BYTES);
        cr_assert_not_null(mem);
        pool = line_pool_create(POOL_LINES * LINE, LINE, 1);
        cr_assert_not_null(pool);
        cache = cache_create(pool, &(struct cache_conf){.high_water = 90,
                                                        .low_water = 50,
                                                        .hard_limit = 95,
                                                        .max_age_ms = 3600 * 1000});
        cr_assert_not_null(cache);
        vol = volume_create_cached(
            cache, &mem->base,
            &(struct volume_conf){
                .name = "spares", .block_size = 512, .write_back = true, .home = reactor});
        cr_assert_not_null(vol);
}

static void teardown(void)
{
        volume_destroy(vol);
        cache_destroy(cache);
        backend_destroy(&mem->base);
        line_pool_destroy(pool);
        reactor_destroy(reactor);
}

TestSuite(cache_spares, .init = setup, .fini = teardown);

struct op {
        struct volume_io io;
        struct iovec iov;
        uint8_t *buf;
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

/* A write (fill byte), read or flush of [offset, offset + length) without a line of its own. */
static int run(enum volume_op op, uint64_t offset, uint64_t length, int fill)
{
        struct op o = {.buf = calloc(1, length ? length : 1)};
        cr_assert_not_null(o.buf);
        if (op == VOLUME_WRITE)
                memset(o.buf, fill, length);
        o.iov = (struct iovec){o.buf, length};
        o.io = (struct volume_io){.op = op,
                                  .offset = offset,
                                  .length = length,
                                  .iov = length ? &o.iov : NULL,
                                  .iovcnt = length ? 1 : 0,
                                  .reactor = reactor,
                                  .done = op_done,
                                  .priv = &o,
                                  .cmd_bytes = length};
        volume_submit(vol, &o.io);
        uint64_t deadline = reactor_now_ns() + 5000000000ull;
        while (!o.done && reactor_now_ns() < deadline) {
                mem_backend_complete_all(mem);
                reactor_poll_once(reactor, 1);
        }
        cr_assert(o.done, "I/O never completed");
        if (op == VOLUME_READ)
                for (uint64_t i = 0; i < length; i++)
                        cr_assert_eq(o.buf[i], (uint8_t)fill, "byte %llu: %#x, not %#x",
                                     (unsigned long long)(offset + i), o.buf[i], fill);
        free(o.buf);
        return o.result;
}

/* Line 0 is the cache's only clean line: the spare for line 1 evicts it, so line 0 needs a
 * spare too (it used to be written through a NULL spare). */
Test(cache_spares, eviction_inside_the_write)
{
        cr_assert_eq(run(VOLUME_WRITE, 0, LINE, 0x11), 0);
        cr_assert_eq(run(VOLUME_FLUSH, 0, 0, 0), 0); /* line 0 clean, the only one */
        cr_assert_eq(run(VOLUME_WRITE, 0, 2 * LINE, 0x22), 0);
        cr_assert_eq(run(VOLUME_READ, 0, 2 * LINE, 0x22), 0);
        cr_assert_eq(run(VOLUME_FLUSH, 0, 0, 0), 0);
        cr_assert_eq(mem->bytes[0], 0x22);
        cr_assert_eq(mem->bytes[2 * LINE - 1], 0x22);
}

/* The same with several clean lines of the write's range at the eviction end of the queue,
 * and a partial first line (its clean blocks stay readable from the backend). */
Test(cache_spares, several_evictions_inside_the_write)
{
        cr_assert_eq(run(VOLUME_WRITE, 0, 4 * LINE, 0x33), 0);
        cr_assert_eq(run(VOLUME_FLUSH, 0, 0, 0), 0);
        cr_assert_eq(run(VOLUME_WRITE, 512, 6 * LINE - 512, 0x44), 0);
        cr_assert_eq(run(VOLUME_READ, 0, 512, 0x33), 0);
        cr_assert_eq(run(VOLUME_READ, 512, 6 * LINE - 512, 0x44), 0);
        cr_assert_eq(run(VOLUME_FLUSH, 0, 0, 0), 0);
        cr_assert_eq(mem->bytes[511], 0x33);
        cr_assert_eq(mem->bytes[512], 0x44);
        cr_assert_eq(mem->bytes[6 * LINE - 1], 0x44);
}
