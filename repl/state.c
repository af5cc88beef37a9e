/* A mirrored volume's persistent state (repl/state.h). File: a 512-byte header (magic,
 * version, role, generations, granularity, regions, CRC-32C), then the bitmap from 4096 on. */
#include "repl/state.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "iscsi/crc32c.h"
#include "src/log.h"

#define STATE_MAGIC        0x54534d574749ull /* "IGWMST" */
#define STATE_VERSION      1u
#define BITMAP_OFFSET      4096u
#define STATE_INCONSISTENT 1u /* a secondary in the middle of a resync */
#define STATE_NEEDS_FULL   2u /* a primary demoted without a clean handover */

struct repl_state {
        int fd;
        char path[256];
        pthread_mutex_t lock;
        uint32_t role;
        uint64_t gen, shared_gen;
        uint32_t flags; /* STATE_* */
        uint32_t granularity;
        uint64_t regions;
        uint64_t *bits;
        size_t words;
        uint64_t count;
};

struct state_hdr {
        uint64_t magic;
        uint32_t version, role;
        uint64_t gen, shared_gen;
        uint32_t granularity, flags;
        uint64_t regions;
        uint32_t crc;
};

uint64_t repl_state_new_gen(void)
{
        uint64_t g = 0;
        while (g == 0)
                if (getrandom(&g, sizeof(g), 0) != sizeof(g))
                        g = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
        return g;
}

/* Under the lock. */
static int write_header(struct repl_state *s)
{
        struct state_hdr h = {.magic = STATE_MAGIC,
                              .version = STATE_VERSION,
                              .role = s->role,
                              .gen = s->gen,
                              .shared_gen = s->shared_gen,
                              .granularity = s->granularity,
                              .flags = s->flags,
                              .regions = s->regions};
        h.crc = crc32c(0, &h, offsetof(struct state_hdr, crc));
        if (pwrite(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
                return -EIO;
        return 0;
}

/* Under the lock: the bitmap words [first, last] and the header, then fdatasync. */
static int persist(struct repl_state *s, size_t first, size_t last)
{
        size_t n = (last - first + 1) * sizeof(uint64_t);
        off_t at = (off_t)(BITMAP_OFFSET + first * sizeof(uint64_t));
        if (pwrite(s->fd, &s->bits[first], n, at) != (ssize_t)n)
                return -EIO;
        return fdatasync(s->fd) < 0 ? -errno : 0;
}

static bool read_existing(struct repl_state *s, uint64_t regions, uint32_t granularity)
{
        struct state_hdr h;
        if (pread(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != STATE_MAGIC ||
            h.version != STATE_VERSION || h.crc != crc32c(0, &h, offsetof(struct state_hdr, crc)))
                return false;
        if (h.regions != regions || h.granularity != granularity) {
                log_err("mirror state %s: made for %llu regions of %u bytes, not %llu of %u",
                        s->path, (unsigned long long)h.regions, h.granularity,
                        (unsigned long long)regions, granularity);
                return false;
        }
        s->role = h.role;
        s->gen = h.gen;
        s->shared_gen = h.shared_gen;
        s->flags = h.flags;
        size_t n = s->words * sizeof(uint64_t);
        if (pread(s->fd, s->bits, n, BITMAP_OFFSET) != (ssize_t)n)
                return false;
        for (size_t i = 0; i < s->words; i++)
                s->count += (uint64_t)__builtin_popcountll(s->bits[i]);
        return true;
}

struct repl_state *repl_state_open(const char *path, uint64_t volume_size, uint32_t granularity,
                                   enum repl_role role)
{
        struct repl_state *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        snprintf(s->path, sizeof(s->path), "%s", path);
        pthread_mutex_init(&s->lock, NULL);
        s->granularity = granularity;
        s->regions = (volume_size + granularity - 1) / granularity;
        s->words = (s->regions + 63) / 64;
        s->bits = calloc(s->words, sizeof(uint64_t));
        s->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        off_t size = s->fd >= 0 ? lseek(s->fd, 0, SEEK_END) : -1;
        if (!s->bits || s->fd < 0 || size < 0) {
                log_err("mirror state %s: %s", path, strerror(errno));
                repl_state_close(s);
                return NULL;
        }
        if (size == 0) {
                s->role = role;
                s->gen = repl_state_new_gen();
                if (write_header(s) < 0 || persist(s, 0, s->words - 1) < 0) {
                        log_err("mirror state %s: cannot create it", path);
                        repl_state_close(s);
                        return NULL;
                }
        } else if (!read_existing(s, s->regions, granularity)) {
                log_err("mirror state %s: unreadable; refusing to guess what the peer lacks (move "
                        "it aside to start over with a full sync)",
                        path);
                repl_state_close(s);
                return NULL;
        }
        return s;
}

void repl_state_close(struct repl_state *s)
{
        if (!s)
                return;
        if (s->fd >= 0)
                close(s->fd);
        free(s->bits);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

enum repl_role repl_state_role(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        enum repl_role r = (enum repl_role)s->role;
        pthread_mutex_unlock(&s->lock);
        return r;
}

uint64_t repl_state_gen(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        uint64_t g = s->gen;
        pthread_mutex_unlock(&s->lock);
        return g;
}

uint64_t repl_state_shared_gen(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        uint64_t g = s->shared_gen;
        pthread_mutex_unlock(&s->lock);
        return g;
}

int repl_state_set(struct repl_state *s, enum repl_role role, uint64_t gen, uint64_t shared_gen)
{
        pthread_mutex_lock(&s->lock);
        s->role = role;
        s->gen = gen;
        s->shared_gen = shared_gen;
        int rc = write_header(s);
        if (rc == 0 && fdatasync(s->fd) < 0)
                rc = -errno;
        pthread_mutex_unlock(&s->lock);
        return rc;
}

uint32_t repl_state_granularity(const struct repl_state *s)
{
        return s->granularity;
}

uint64_t repl_state_regions(const struct repl_state *s)
{
        return s->regions;
}

/* Sets the bits of words [first, last] given by bit_of(i) and persists the words that changed.
 * Under the lock. */
static int set_bits(struct repl_state *s, size_t first, size_t last,
                    uint64_t (*bit_of)(size_t word, const void *arg), const void *arg)
{
        size_t lo = SIZE_MAX, hi = 0;
        for (size_t i = first; i <= last; i++) {
                uint64_t add = bit_of(i, arg) & ~s->bits[i];
                if (!add)
                        continue;
                s->bits[i] |= add;
                s->count += (uint64_t)__builtin_popcountll(add);
                lo = i < lo ? i : lo;
                hi = i;
        }
        return lo <= hi ? persist(s, lo, hi) : 0;
}

struct range {
        uint64_t first, last; /* regions */
};

static uint64_t range_bits(size_t word, const void *arg)
{
        const struct range *r = arg;
        uint64_t lo = word * 64, hi = lo + 63;
        if (r->last < lo || r->first > hi)
                return 0;
        uint64_t from = r->first > lo ? r->first - lo : 0;
        uint64_t to = r->last < hi ? r->last - lo : 63;
        uint64_t upto = to == 63 ? ~0ull : (1ull << (to + 1)) - 1;
        return upto & ~((1ull << from) - 1);
}

static uint64_t given_bits(size_t word, const void *arg)
{
        return ((const uint64_t *)arg)[word];
}

int repl_state_mark(struct repl_state *s, uint64_t offset, uint64_t length)
{
        if (!length)
                return 0;
        struct range r = {offset / s->granularity, (offset + length - 1) / s->granularity};
        if (r.last >= s->regions)
                r.last = s->regions - 1;
        pthread_mutex_lock(&s->lock);
        int rc = set_bits(s, r.first / 64, r.last / 64, range_bits, &r);
        pthread_mutex_unlock(&s->lock);
        return rc;
}

int repl_state_mark_bits(struct repl_state *s, const uint64_t *bits)
{
        pthread_mutex_lock(&s->lock);
        int rc = set_bits(s, 0, s->words - 1, given_bits, bits);
        pthread_mutex_unlock(&s->lock);
        return rc;
}

int repl_state_mark_all(struct repl_state *s)
{
        return repl_state_mark(s, 0, s->regions * (uint64_t)s->granularity);
}

int64_t repl_state_next(struct repl_state *s, uint64_t from)
{
        pthread_mutex_lock(&s->lock);
        int64_t found = -1;
        for (uint64_t r = from; r < s->regions; r++) {
                if (!(r % 64) && !s->bits[r / 64]) {
                        r += 63;
                        continue;
                }
                if (s->bits[r / 64] >> (r % 64) & 1) {
                        found = (int64_t)r;
                        break;
                }
        }
        pthread_mutex_unlock(&s->lock);
        return found;
}

void repl_state_clear(struct repl_state *s, uint64_t r)
{
        pthread_mutex_lock(&s->lock);
        uint64_t bit = 1ull << (r % 64);
        if (r < s->regions && (s->bits[r / 64] & bit)) {
                s->bits[r / 64] &= ~bit;
                s->count--;
        }
        pthread_mutex_unlock(&s->lock);
}

int repl_state_clear_all(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        memset(s->bits, 0, s->words * sizeof(uint64_t));
        s->count = 0;
        int rc = persist(s, 0, s->words - 1);
        pthread_mutex_unlock(&s->lock);
        return rc;
}

int repl_state_flush(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        int rc = persist(s, 0, s->words - 1);
        pthread_mutex_unlock(&s->lock);
        return rc;
}

uint64_t repl_state_count(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        uint64_t n = s->count;
        pthread_mutex_unlock(&s->lock);
        return n;
}

static bool get_flag(struct repl_state *s, uint32_t flag)
{
        pthread_mutex_lock(&s->lock);
        bool set = (s->flags & flag) != 0;
        pthread_mutex_unlock(&s->lock);
        return set;
}

static int set_flag(struct repl_state *s, uint32_t flag, bool on)
{
        pthread_mutex_lock(&s->lock);
        s->flags = on ? s->flags | flag : s->flags & ~flag;
        int rc = write_header(s);
        if (rc == 0 && fdatasync(s->fd) < 0)
                rc = -errno;
        pthread_mutex_unlock(&s->lock);
        return rc;
}

bool repl_state_consistent(struct repl_state *s)
{
        return !get_flag(s, STATE_INCONSISTENT);
}

int repl_state_set_consistent(struct repl_state *s, bool consistent)
{
        return set_flag(s, STATE_INCONSISTENT, !consistent);
}

bool repl_state_needs_full(struct repl_state *s)
{
        return get_flag(s, STATE_NEEDS_FULL);
}

int repl_state_set_needs_full(struct repl_state *s, bool needs_full)
{
        return set_flag(s, STATE_NEEDS_FULL, needs_full);
}

int repl_state_step_down(struct repl_state *s, bool needs_full)
{
        pthread_mutex_lock(&s->lock);
        uint32_t role = s->role, flags = s->flags;
        s->role = REPL_ROLE_SECONDARY;
        s->flags = needs_full ? s->flags | STATE_NEEDS_FULL : s->flags & ~STATE_NEEDS_FULL;
        int rc = write_header(s);
        if (rc == 0 && fdatasync(s->fd) < 0)
                rc = -errno;
        if (rc < 0) { /* still what the file says */
                s->role = role;
                s->flags = flags;
        }
        pthread_mutex_unlock(&s->lock);
        return rc;
}

int repl_state_diverge(struct repl_state *s)
{
        pthread_mutex_lock(&s->lock);
        int rc = 0;
        if (s->gen == s->shared_gen) {
                s->gen = repl_state_new_gen();
                rc = write_header(s);
                if (rc == 0 && fdatasync(s->fd) < 0)
                        rc = -errno;
        }
        pthread_mutex_unlock(&s->lock);
        return rc;
}

enum repl_gen_relation repl_gen_relation(uint64_t gen, uint64_t shared, uint64_t peer_gen,
                                         uint64_t peer_shared)
{
        if (peer_gen == gen)
                return REPL_GEN_SAME;
        if (peer_gen == shared)
                return REPL_GEN_PEER_BEHIND;
        if (peer_shared == gen)
                return REPL_GEN_PEER_AHEAD;
        return REPL_GEN_DIVERGED;
}
