/* Verification pattern. Every logical block written with --verify holds
 *   word 0: magic, word 1: LBA, word 2: generation, word 3: ~(magic ^ LBA ^ generation),
 *   words 4..: a sequence derived from (LBA, generation),
 * so a read can tell a misdirected, stale, torn or shifted block from the right one. */
#include "bench.h"

#include <string.h>

#define PAT_MAGIC 0x49534757424e4348ull /* "ISGWBNCH" */
#define PAT_K1    0x9e3779b97f4a7c15ull
#define PAT_K2    0xc2b2ae3d27d4eb4full
#define PAT_K3    0x165667b19e3779f9ull

static inline void put64(unsigned char *p, uint64_t v)
{
        memcpy(p, &v, sizeof(v));
}

static inline uint64_t get64(const unsigned char *p)
{
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return v;
}

static inline uint64_t filler_start(uint64_t lba, uint64_t gen)
{
        return (lba * PAT_K1) ^ (gen * PAT_K2);
}

static inline uint64_t filler_next(uint64_t *acc)
{
        *acc += PAT_K3;
        return *acc ^ (*acc >> 29);
}

static void fill_block(unsigned char *blk, uint32_t blksz, uint64_t lba, uint64_t gen)
{
        put64(blk, PAT_MAGIC);
        put64(blk + 8, lba);
        put64(blk + 16, gen);
        put64(blk + 24, ~(PAT_MAGIC ^ lba ^ gen));
        uint64_t acc = filler_start(lba, gen);
        for (uint32_t off = 32; off + 8 <= blksz; off += 8)
                put64(blk + off, filler_next(&acc));
}

void pat_fill(unsigned char *buf, uint32_t blksz, uint64_t lba, uint32_t nblocks, uint64_t gen)
{
        for (uint32_t i = 0; i < nblocks; i++)
                fill_block(buf + (size_t)i * blksz, blksz, lba + i, gen);
}

/* Data for unverified writes: never carries the magic, so verifying reads skip it. */
void pat_fill_noise(unsigned char *buf, size_t len, uint64_t seed)
{
        uint64_t st = seed;
        size_t off = 0;
        for (; off + 8 <= len; off += 8)
                put64(buf + off, bench_splitmix64(&st) | 1ull);
        memset(buf + off, 0x5a, len - off);
        if (len >= 8 && get64(buf) == PAT_MAGIC)
                buf[0] ^= 0xff;
}

static bool all_zero(const unsigned char *p, uint32_t len)
{
        for (uint32_t i = 0; i < len; i++)
                if (p[i])
                        return false;
        return true;
}

enum pat_result pat_check_block(const unsigned char *blk, uint32_t blksz, uint64_t lba,
                                uint64_t expect_gen, uint64_t *got_gen)
{
        uint64_t magic = get64(blk), blba = get64(blk + 8), gen = get64(blk + 16);
        *got_gen = 0;
        if (magic != PAT_MAGIC || get64(blk + 24) != ~(PAT_MAGIC ^ blba ^ gen))
                return all_zero(blk, blksz) ? PAT_UNWRITTEN : PAT_FOREIGN;
        *got_gen = gen;
        if (blba != lba || (expect_gen && gen != expect_gen))
                return PAT_MISMATCH;
        uint64_t acc = filler_start(lba, gen);
        for (uint32_t off = 32; off + 8 <= blksz; off += 8)
                if (get64(blk + off) != filler_next(&acc))
                        return PAT_MISMATCH;
        return PAT_OK;
}
