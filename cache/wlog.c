/* The local write log: file format, group commit, checkpoints and replay (cache/wlog.h).
 *
 * File: two 512-byte header slots at 0 and 512 (the one with the higher generation and a good
 * CRC wins, so a torn header write loses nothing), then the record area at 4096. Positions in
 * the area are monotonic byte offsets taken modulo its size. A record is a 512-byte header
 * block and its data rounded up to 512 bytes; a record that would cross the area's end is
 * preceded by a wrap marker and starts again at the beginning. Every record carries the LSN
 * that must follow the previous one, so replay stops exactly where the log ends: at a torn
 * record, or at an older record from the previous lap. All integers are little-endian. */
#include "cache/wlog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "iscsi/crc32c.h"
#include "src/le.h"
#include "src/log.h"

#define SLOT_SIZE                 512u
#define HDR_MAGIC                 0x474f4c5747524549ull /* "IERGWLOG" */
#define HDR_VERSION               1u
#define REC_MAGIC                 0x52574749u /* "IGWR" */
#define REC_SKIP                  0x7fu       /* marker: the next record is length bytes on */
#define BATCH_MAX_BYTES           (8u << 20)
#define BATCH_MAX_RECS            256u
#define CHECKPOINT_BACKOFF_MS     500u
#define CHECKPOINT_BACKOFF_MAX_MS 8000u

struct wlog_header {
        uint64_t generation;
        uint64_t area_size;
        uint64_t tail_lsn; /* the first record after the checkpoint */
        uint64_t tail_off; /* and where it starts */
};

struct wlog {
        int fd;
        char path[PATH_MAX];
        uint64_t want_size; /* the configured size: applied at wlog_reset() */
        pthread_mutex_t lock;
        pthread_cond_t wcond; /* writer: work or space */
        pthread_cond_t ccond; /* checkpointer: time to work; waiters of drain */
        pthread_mutex_t hdr_lock;
        struct wlog_header hdr; /* as last written */

        uint64_t area;
        uint64_t head_off; /* where the next record goes (durable up to here) */
        uint64_t next_lsn; /* the next record's LSN */
        uint64_t tail_off; /* checkpointed: space before it is free */
        uint64_t tail_lsn;
        uint64_t skip_to; /* after a failed write: the next batch starts past its end */
        struct wlog_entry *q_head, *q_tail;
        struct wlog_entry *o_head, *o_tail; /* not yet applied */
        bool want_space;
        bool stopping;
        bool started;
        pthread_t writer, checkpointer;
        wlog_flush_fn flush;
        void *flush_ctx;
        uint32_t checkpoint_ms;
        uint32_t backoff_ms;  /* after a failed checkpoint: wait this long, doubling */
        uint64_t retry_at_ms; /* no checkpoint before */
        struct wlog_stats st;
};

/* ---------------- encoding ---------------- */

/* Header slot: magic 0, version 8, generation 12, area 20, tail_lsn 28, tail_off 36, crc 60. */
static void header_encode(const struct wlog_header *h, uint8_t slot[SLOT_SIZE])
{
        memset(slot, 0, SLOT_SIZE);
        le_put64(slot, HDR_MAGIC);
        le_put32(slot + 8, HDR_VERSION);
        le_put64(slot + 12, h->generation);
        le_put64(slot + 20, h->area_size);
        le_put64(slot + 28, h->tail_lsn);
        le_put64(slot + 36, h->tail_off);
        le_put32(slot + 60, crc32c(0, slot, 60));
}

static bool header_decode(const uint8_t slot[SLOT_SIZE], struct wlog_header *h)
{
        if (le_get64(slot) != HDR_MAGIC || le_get32(slot + 8) != HDR_VERSION ||
            le_get32(slot + 60) != crc32c(0, slot, 60))
                return false;
        h->generation = le_get64(slot + 12);
        h->area_size = le_get64(slot + 20);
        h->tail_lsn = le_get64(slot + 28);
        h->tail_off = le_get64(slot + 36);
        return h->area_size >= WLOG_MIN_SIZE && h->area_size % SLOT_SIZE == 0 &&
               h->tail_off % SLOT_SIZE == 0;
}

/* Record header: magic 0, op 4, lsn 8, key 16, offset 24, length 32, seq 40, data crc 44,
 * header crc 60. */
static void record_encode(const struct wlog_record *r, uint32_t data_crc, uint8_t *b)
{
        memset(b, 0, WLOG_RECORD_HDR);
        le_put32(b, REC_MAGIC);
        le_put32(b + 4, (uint32_t)r->op);
        le_put64(b + 8, r->lsn);
        le_put64(b + 16, r->key);
        le_put64(b + 24, r->offset);
        le_put64(b + 32, r->length);
        le_put32(b + 40, r->seq);
        le_put32(b + 44, data_crc);
        le_put32(b + 60, crc32c(0, b, 60));
}

static bool record_decode(const uint8_t *b, struct wlog_record *r, uint32_t *data_crc)
{
        if (le_get32(b) != REC_MAGIC || le_get32(b + 60) != crc32c(0, b, 60))
                return false;
        uint32_t op = le_get32(b + 4);
        if (op != WLOG_WRITE && op != WLOG_UNMAP && op != WLOG_WRITE_ZEROES && op != REC_SKIP)
                return false;
        r->op = (enum wlog_op)op;
        r->lsn = le_get64(b + 8);
        r->key = le_get64(b + 16);
        r->offset = le_get64(b + 24);
        r->length = le_get64(b + 32);
        r->seq = le_get32(b + 40);
        *data_crc = le_get32(b + 44);
        if (op == REC_SKIP)
                return r->length >= WLOG_RECORD_HDR && r->length % SLOT_SIZE == 0;
        return op != WLOG_WRITE || r->length <= WLOG_MAX_RECORD;
}

static uint64_t round512(uint64_t n)
{
        return (n + SLOT_SIZE - 1) / SLOT_SIZE * SLOT_SIZE;
}

static uint64_t record_size(const struct wlog_record *r)
{
        return WLOG_RECORD_HDR + (r->op == WLOG_WRITE ? round512(r->length) : 0);
}

/* ---------------- file I/O ---------------- */

/* pread or pwrite of all len bytes (a short transfer is continued). */
static int rw_all(int fd, void *buf, size_t len, off_t off, bool write)
{
        uint8_t *p = buf;
        while (len) {
                ssize_t n = write ? pwrite(fd, p, len, off) : pread(fd, p, len, off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n, len -= (size_t)n, off += n;
        }
        return 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
        return rw_all(fd, (void *)buf, len, off, true);
}

static int pread_all(int fd, void *buf, size_t len, off_t off)
{
        return rw_all(fd, buf, len, off, false);
}

/* Writes the next header generation into the other slot and makes it durable. */
static int header_write(struct wlog *l, uint64_t area, uint64_t tail_lsn, uint64_t tail_off)
{
        pthread_mutex_lock(&l->hdr_lock);
        struct wlog_header h = {.generation = l->hdr.generation + 1,
                                .area_size = area,
                                .tail_lsn = tail_lsn,
                                .tail_off = tail_off};
        uint8_t slot[SLOT_SIZE];
        header_encode(&h, slot);
        int rc = pwrite_all(l->fd, slot, SLOT_SIZE, (off_t)(h.generation % 2 * SLOT_SIZE));
        if (rc == 0 && fdatasync(l->fd) < 0)
                rc = -errno;
        if (rc == 0)
                l->hdr = h;
        pthread_mutex_unlock(&l->hdr_lock);
        return rc;
}

static int preallocate(int fd, uint64_t area)
{
        int rc = posix_fallocate(fd, 0, (off_t)(WLOG_AREA_OFFSET + area));
        return rc == EOPNOTSUPP ? (ftruncate(fd, (off_t)(WLOG_AREA_OFFSET + area)) < 0 ? -errno : 0)
                                : -rc;
}

static bool read_header(struct wlog *l)
{
        uint8_t slots[2 * SLOT_SIZE];
        if (pread_all(l->fd, slots, sizeof(slots), 0) < 0)
                return false;
        struct wlog_header h[2];
        bool ok[2] = {header_decode(slots, &h[0]), header_decode(slots + SLOT_SIZE, &h[1])};
        if (!ok[0] && !ok[1])
                return false;
        l->hdr = ok[0] && (!ok[1] || h[0].generation > h[1].generation) ? h[0] : h[1];
        return true;
}

static void log_state_from_header(struct wlog *l)
{
        l->area = l->hdr.area_size;
        l->tail_lsn = l->next_lsn = l->hdr.tail_lsn;
        l->tail_off = l->head_off = l->hdr.tail_off;
}

struct wlog *wlog_open(const char *path, uint64_t size)
{
        if (size < WLOG_MIN_SIZE || size % SLOT_SIZE) {
                log_err("write log %s: size %llu must be a multiple of 512 and at least %llu", path,
                        (unsigned long long)size, (unsigned long long)WLOG_MIN_SIZE);
                return NULL;
        }
        struct wlog *l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        snprintf(l->path, sizeof(l->path), "%s", path);
        l->want_size = size;
        pthread_mutex_init(&l->lock, NULL);
        pthread_mutex_init(&l->hdr_lock, NULL);
        pthread_cond_init(&l->wcond, NULL);
        pthread_cond_init(&l->ccond, NULL);
        l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct stat sb;
        if (l->fd < 0 || fstat(l->fd, &sb) < 0) {
                log_err("write log %s: %s", path, strerror(errno));
                goto fail;
        }
        if (sb.st_size == 0) {
                int rc = preallocate(l->fd, size);
                if (rc == 0)
                        rc = header_write(l, size, 1, 0);
                if (rc < 0) {
                        log_err("write log %s: cannot create: %s", path, strerror(-rc));
                        goto fail;
                }
                log_info("write log %s: created, %llu bytes", path, (unsigned long long)size);
        } else if (!read_header(l) || (uint64_t)sb.st_size < WLOG_AREA_OFFSET + l->hdr.area_size) {
                log_err("write log %s: not a write log of this version, or its header is damaged; "
                        "refusing to start (acknowledged writes in it would be lost). Move it "
                        "aside only if its data is no longer needed",
                        path);
                goto fail;
        }
        log_state_from_header(l);
        l->st.size = l->area;
        return l;
fail:
        wlog_close(l);
        return NULL;
}

/* ---------------- replay ---------------- */

struct replay_item {
        struct wlog_record rec;
        uint64_t data_off; /* file offset of the data */
        uint32_t order;    /* the ticket relative to the volume's first record */
};

static int replay_cmp(const void *a, const void *b)
{
        const struct replay_item *x = a, *y = b;
        if (x->rec.key != y->rec.key)
                return x->rec.key < y->rec.key ? -1 : 1;
        if (x->order != y->order)
                return x->order < y->order ? -1 : 1;
        return x->rec.lsn < y->rec.lsn ? -1 : x->rec.lsn > y->rec.lsn;
}

/* Reads the record at monotonic offset off: 1 and *r if it is the expected one (a skip
 * marker sets r->op to REC_SKIP), 0 at the end of the log. */
static int scan_one(struct wlog *l, uint64_t off, uint64_t expect, struct wlog_record *r,
                    uint8_t *data)
{
        uint8_t b[WLOG_RECORD_HDR];
        uint64_t pos = off % l->area;
        uint32_t data_crc;
        if (pread_all(l->fd, b, sizeof(b), (off_t)(WLOG_AREA_OFFSET + pos)) < 0 ||
            !record_decode(b, r, &data_crc) || r->lsn != expect)
                return 0;
        if ((uint32_t)r->op == REC_SKIP)
                return r->length < l->area;
        if (pos + record_size(r) > l->area)
                return 0;
        if (r->op == WLOG_WRITE &&
            (pread_all(l->fd, data, r->length, (off_t)(WLOG_AREA_OFFSET + pos + WLOG_RECORD_HDR)) <
                 0 ||
             crc32c(0, data, r->length) != data_crc))
                return 0;
        return 1;
}

static long scan_log(struct wlog *l, struct replay_item **items_out, uint8_t *data)
{
        size_t n = 0, cap = 1024;
        struct replay_item *items = malloc(cap * sizeof(*items));
        uint64_t off = l->tail_off, lsn = l->tail_lsn;
        struct wlog_record r;
        while (items && off - l->tail_off < l->area && scan_one(l, off, lsn, &r, data) == 1) {
                if ((uint32_t)r.op == REC_SKIP) {
                        off += r.length;
                        continue;
                }
                if (n == cap) {
                        struct replay_item *bigger = realloc(items, 2 * cap * sizeof(*items));
                        if (!bigger) {
                                free(items);
                                return -ENOMEM;
                        }
                        items = bigger, cap *= 2;
                }
                items[n++] = (struct replay_item){
                    .rec = r, .data_off = WLOG_AREA_OFFSET + off % l->area + WLOG_RECORD_HDR};
                off += record_size(&r);
                lsn++;
        }
        if (!items)
                return -ENOMEM;
        l->head_off = off;
        l->next_lsn = lsn;
        *items_out = items;
        return (long)n;
}

/* Tickets wrap around: order each volume's relative to its first record in the log, which is
 * far less than 2^31 tickets from any other. Items are in LSN order here; volumes are few. */
static int order_tickets(struct replay_item *items, size_t n)
{
        struct {
                uint64_t key;
                uint32_t base;
        } *bases = NULL;
        size_t nbases = 0;
        for (size_t i = 0; i < n; i++) {
                size_t k = 0;
                while (k < nbases && bases[k].key != items[i].rec.key)
                        k++;
                if (k == nbases) {
                        void *more = realloc(bases, (nbases + 1) * sizeof(*bases));
                        if (!more) {
                                free(bases);
                                return -ENOMEM;
                        }
                        bases = more;
                        bases[nbases].key = items[i].rec.key;
                        bases[nbases++].base = items[i].rec.seq;
                }
                items[i].order = items[i].rec.seq - bases[k].base + 0x80000000u;
        }
        free(bases);
        return 0;
}

long wlog_replay(struct wlog *l, wlog_replay_fn fn, void *ctx)
{
        uint8_t *data = malloc(WLOG_MAX_RECORD);
        if (!data)
                return -ENOMEM;
        struct replay_item *items = NULL;
        long n = scan_log(l, &items, data);
        if (n > 0 && order_tickets(items, (size_t)n) < 0)
                n = -ENOMEM;
        if (n > 0)
                qsort(items, (size_t)n, sizeof(*items), replay_cmp);
        long rc = n;
        for (long i = 0; i < n && rc >= 0; i++) {
                const struct wlog_record *r = &items[i].rec;
                if (r->op == WLOG_WRITE &&
                    pread_all(l->fd, data, r->length, (off_t)items[i].data_off) < 0) {
                        rc = -errno;
                        break;
                }
                int frc = fn(ctx, r, data);
                if (frc < 0)
                        rc = frc;
                else {
                        l->st.replayed_records++;
                        l->st.replayed_bytes += r->op == WLOG_WRITE ? r->length : 0;
                }
        }
        free(items);
        free(data);
        return rc;
}

int wlog_reset(struct wlog *l)
{
        pthread_mutex_lock(&l->lock);
        uint64_t area = l->area, off = l->head_off;
        if (l->want_size != l->area) {
                int rc = preallocate(l->fd, l->want_size);
                if (rc < 0) {
                        pthread_mutex_unlock(&l->lock);
                        return rc;
                }
                area = l->want_size;
                off = 0;
        }
        int rc = header_write(l, area, l->next_lsn, off);
        if (rc == 0) {
                l->area = l->st.size = area;
                l->head_off = l->tail_off = off;
                l->tail_lsn = l->next_lsn;
        }
        pthread_mutex_unlock(&l->lock);
        return rc;
}

/* ---------------- appends: the writer ---------------- */

int wlog_append(struct wlog *l, struct wlog_entry *e)
{
        if (record_size(&e->rec) > l->area / 2 || e->rec.length > WLOG_MAX_RECORD)
                return -E2BIG;
        e->qnext = NULL;
        e->assigned = false;
        pthread_mutex_lock(&l->lock);
        if (l->q_tail)
                l->q_tail->qnext = e;
        else
                l->q_head = e;
        l->q_tail = e;
        e->onext = NULL;
        e->oprev = l->o_tail;
        if (l->o_tail)
                l->o_tail->onext = e;
        else
                l->o_head = e;
        l->o_tail = e;
        e->outstanding = true;
        pthread_cond_signal(&l->wcond);
        pthread_mutex_unlock(&l->lock);
        return 0;
}

void wlog_applied(struct wlog *l, struct wlog_entry *e)
{
        pthread_mutex_lock(&l->lock);
        if (e->outstanding) {
                if (e->oprev)
                        e->oprev->onext = e->onext;
                else
                        l->o_head = e->onext;
                if (e->onext)
                        e->onext->oprev = e->oprev;
                else
                        l->o_tail = e->oprev;
                e->outstanding = false;
                pthread_cond_broadcast(&l->ccond);
        }
        pthread_mutex_unlock(&l->lock);
}

/* One write of the writer: records and the skip markers between them. */
struct batch {
        struct batch_item {
                struct wlog_entry *e; /* NULL: a skip marker of 'skip' bytes */
                uint64_t off;         /* monotonic */
                uint64_t skip;
                uint64_t lsn; /* a marker carries the LSN of the record after it */
        } items[2 * BATCH_MAX_RECS + 1];
        unsigned n, records;
        uint64_t end, bytes;
};

static void batch_marker(struct batch *b, uint64_t *off, uint64_t skip, uint64_t lsn)
{
        b->items[b->n++] = (struct batch_item){.off = *off, .skip = skip, .lsn = lsn};
        *off += skip;
}

/* Takes from the queue what fits before the checkpoint; assigns LSNs and positions. After a
 * failed write the first marker skips the region it may have half written, so its records can
 * never be mistaken for the next ones. Under the lock. */
static void take_batch(struct wlog *l, struct batch *b)
{
        uint64_t off = l->head_off, lsn = l->next_lsn;
        b->n = b->records = 0;
        b->bytes = 0;
        if (l->skip_to > off)
                batch_marker(b, &off, l->skip_to - off, lsn);
        while (l->q_head && b->records < BATCH_MAX_RECS && b->bytes < BATCH_MAX_BYTES) {
                struct wlog_entry *e = l->q_head;
                uint64_t rs = record_size(&e->rec), pos = off % l->area;
                uint64_t waste = pos + rs > l->area ? l->area - pos : 0;
                if (off + waste + rs - l->tail_off > l->area)
                        break;
                l->q_head = e->qnext;
                if (!l->q_head)
                        l->q_tail = NULL;
                e->qnext = NULL;
                if (waste)
                        batch_marker(b, &off, waste, lsn);
                e->rec.lsn = lsn++;
                e->assigned = true;
                b->items[b->n++] = (struct batch_item){.e = e, .off = off, .lsn = e->rec.lsn};
                off += rs;
                b->bytes += rs;
                b->records++;
        }
        b->end = off;
}

static int write_marker(struct wlog *l, const struct batch_item *it)
{
        struct wlog_record m = {.op = (enum wlog_op)REC_SKIP, .lsn = it->lsn, .length = it->skip};
        uint8_t hdr[WLOG_RECORD_HDR];
        record_encode(&m, 0, hdr);
        return pwrite_all(l->fd, hdr, sizeof(hdr), (off_t)(WLOG_AREA_OFFSET + it->off % l->area));
}

/* The record's data as iovecs of exactly rec.length bytes, after the header block and before
 * the padding; -EINVAL if the caller's iovecs hold less. */
static int record_iov(struct wlog_entry *e, struct iovec *iov, int max)
{
        static const uint8_t zeros[SLOT_SIZE];
        int n = 0;
        iov[n++] = (struct iovec){e->hdr, WLOG_RECORD_HDR};
        if (e->rec.op != WLOG_WRITE)
                return n;
        uint64_t left = e->rec.length;
        for (int i = 0; i < e->iovcnt && left; i++) {
                if (n >= max - 1)
                        return -E2BIG;
                size_t len = e->iov[i].iov_len < left ? e->iov[i].iov_len : left;
                iov[n++] = (struct iovec){e->iov[i].iov_base, len};
                left -= len;
        }
        if (left)
                return -EINVAL;
        uint64_t pad = round512(e->rec.length) - e->rec.length;
        if (pad)
                iov[n++] = (struct iovec){(void *)zeros, pad};
        return n;
}

static int write_record(struct wlog *l, struct wlog_entry *e, uint64_t off)
{
        struct iovec iov[IOV_MAX];
        int n = record_iov(e, iov, IOV_MAX);
        if (n < 0)
                return n;
        bool padded = e->rec.op == WLOG_WRITE && e->rec.length % SLOT_SIZE;
        uint32_t crc = e->rec.op == WLOG_WRITE ? crc32c_iov(0, iov + 1, n - 1 - padded) : 0;
        record_encode(&e->rec, crc, e->hdr);
        uint64_t rs = record_size(&e->rec);
        off_t at = (off_t)(WLOG_AREA_OFFSET + off % l->area);
        ssize_t w = pwritev(l->fd, iov, n, at);
        if (w < 0)
                return -errno;
        if ((uint64_t)w == rs)
                return 0;
        /* Rare: finish a short write from a flat copy. */
        uint8_t *flat = malloc(rs);
        if (!flat)
                return -ENOMEM;
        size_t pos = 0;
        for (int i = 0; i < n; i++) {
                memcpy(flat + pos, iov[i].iov_base, iov[i].iov_len);
                pos += iov[i].iov_len;
        }
        int rc = pwrite_all(l->fd, flat + w, rs - (uint64_t)w, at + w);
        free(flat);
        return rc;
}

static int write_batch(struct wlog *l, const struct batch *b)
{
        for (unsigned i = 0; i < b->n; i++) {
                const struct batch_item *it = &b->items[i];
                int rc = it->e ? write_record(l, it->e, it->off) : write_marker(l, it);
                if (rc < 0)
                        return rc;
        }
        return fdatasync(l->fd) < 0 ? -errno : 0;
}

static void batch_done(struct wlog *l, const struct batch *b, int rc)
{
        if (rc == 0) {
                l->head_off = b->end;
                l->next_lsn += b->records;
                l->skip_to = 0;
                l->st.records += b->records;
                for (unsigned i = 0; i < b->n; i++)
                        if (b->items[i].e && b->items[i].e->rec.op == WLOG_WRITE)
                                l->st.bytes += b->items[i].e->rec.length;
                l->st.commits++;
                return;
        }
        /* The next batch reuses these LSNs and jumps over what this one may have written. */
        if (b->end > l->skip_to)
                l->skip_to = b->end;
        l->st.errors += b->records;
        snprintf(l->st.last_error, sizeof(l->st.last_error), "log write: %s", strerror(-rc));
        for (unsigned i = 0; i < b->n; i++)
                if (b->items[i].e)
                        b->items[i].e->assigned = false;
}

static void *writer_main(void *arg)
{
        struct wlog *l = arg;
        struct batch *b = malloc(sizeof(*b));
        pthread_mutex_lock(&l->lock);
        while (b) {
                if (!l->q_head) {
                        if (l->stopping)
                                break;
                        pthread_cond_wait(&l->wcond, &l->lock);
                        continue;
                }
                take_batch(l, b);
                if (!b->records) {
                        /* Full: the checkpoint frees space (never fail a write for it). */
                        l->st.waits++;
                        l->want_space = true;
                        pthread_cond_broadcast(&l->ccond);
                        pthread_cond_wait(&l->wcond, &l->lock);
                        continue;
                }
                pthread_mutex_unlock(&l->lock);
                int rc = write_batch(l, b);
                pthread_mutex_lock(&l->lock);
                batch_done(l, b, rc);
                if (l->head_off - l->tail_off >= l->area / 4)
                        pthread_cond_broadcast(&l->ccond);
                pthread_mutex_unlock(&l->lock);
                if (rc < 0)
                        log_err("write log %s: %s; %u writes fail", l->path, strerror(-rc),
                                b->records);
                for (unsigned i = 0; i < b->n; i++)
                        if (b->items[i].e)
                                b->items[i].e->logged(b->items[i].e, rc);
                pthread_mutex_lock(&l->lock);
        }
        pthread_mutex_unlock(&l->lock);
        free(b);
        return NULL;
}

/* ---------------- checkpoints ---------------- */

static void timed_wait(pthread_cond_t *c, pthread_mutex_t *m, uint32_t ms)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long)(ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(c, m, &ts);
}

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool checkpoint_due(struct wlog *l, uint64_t last_ms)
{
        uint64_t used = l->head_off - l->tail_off;
        return used && now_ms() >= l->retry_at_ms &&
               (l->want_space || used >= l->area / 4 || now_ms() - last_ms >= l->checkpoint_ms);
}

/* Every record below lsn has been applied by its volume. */
static bool applied_below(struct wlog *l, uint64_t lsn)
{
        return !l->o_head || !l->o_head->assigned || l->o_head->rec.lsn >= lsn;
}

/* One checkpoint to the durable head. Under the lock; drops it while flushing. */
static void checkpoint(struct wlog *l)
{
        uint64_t lsn = l->next_lsn, off = l->head_off;
        while (!applied_below(l, lsn) && !l->stopping)
                timed_wait(&l->ccond, &l->lock, 100);
        if (l->stopping)
                return;
        pthread_mutex_unlock(&l->lock);
        int rc = l->flush(l->flush_ctx);
        if (rc == 0)
                rc = header_write(l, l->area, lsn, off);
        pthread_mutex_lock(&l->lock);
        if (rc < 0) {
                l->st.checkpoint_failures++;
                snprintf(l->st.last_error, sizeof(l->st.last_error), "checkpoint: %s",
                         strerror(-rc));
                pthread_mutex_unlock(&l->lock);
                log_warn("write log %s: checkpoint failed: %s; retrying in %u ms", l->path,
                         strerror(-rc), l->backoff_ms);
                pthread_mutex_lock(&l->lock);
                l->retry_at_ms = now_ms() + l->backoff_ms;
                if (l->backoff_ms < CHECKPOINT_BACKOFF_MAX_MS)
                        l->backoff_ms *= 2;
                return;
        }
        l->backoff_ms = CHECKPOINT_BACKOFF_MS;
        l->tail_off = off;
        l->tail_lsn = lsn;
        l->want_space = false;
        l->st.checkpoints++;
        pthread_cond_broadcast(&l->wcond);
}

static void *checkpointer_main(void *arg)
{
        struct wlog *l = arg;
        uint64_t last = now_ms();
        pthread_mutex_lock(&l->lock);
        while (!l->stopping) {
                if (!checkpoint_due(l, last)) {
                        timed_wait(&l->ccond, &l->lock, 200);
                        continue;
                }
                checkpoint(l);
                last = now_ms();
        }
        pthread_mutex_unlock(&l->lock);
        return NULL;
}

int wlog_start(struct wlog *l, wlog_flush_fn flush, void *ctx, uint32_t checkpoint_ms)
{
        l->flush = flush;
        l->flush_ctx = ctx;
        l->checkpoint_ms = checkpoint_ms ? checkpoint_ms : 30000;
        l->backoff_ms = CHECKPOINT_BACKOFF_MS;
        if (pthread_create(&l->writer, NULL, writer_main, l) != 0)
                return -EAGAIN;
        if (pthread_create(&l->checkpointer, NULL, checkpointer_main, l) != 0) {
                pthread_mutex_lock(&l->lock);
                l->stopping = true;
                pthread_cond_broadcast(&l->wcond);
                pthread_mutex_unlock(&l->lock);
                pthread_join(l->writer, NULL);
                return -EAGAIN;
        }
        l->started = true;
        return 0;
}

bool wlog_drain(struct wlog *l, uint32_t timeout_ms)
{
        uint64_t deadline = now_ms() + timeout_ms;
        pthread_mutex_lock(&l->lock);
        while (l->o_head && now_ms() < deadline)
                timed_wait(&l->ccond, &l->lock, 100);
        bool drained = !l->o_head;
        pthread_mutex_unlock(&l->lock);
        return drained;
}

void wlog_get_stats(struct wlog *l, struct wlog_stats *st)
{
        pthread_mutex_lock(&l->lock);
        *st = l->st;
        st->used = l->head_off - l->tail_off;
        st->head_lsn = l->next_lsn;
        st->tail_lsn = l->tail_lsn;
        pthread_mutex_unlock(&l->lock);
}

void wlog_close(struct wlog *l)
{
        if (!l)
                return;
        if (l->started) {
                pthread_mutex_lock(&l->lock);
                l->stopping = true;
                pthread_cond_broadcast(&l->wcond);
                pthread_cond_broadcast(&l->ccond);
                pthread_mutex_unlock(&l->lock);
                pthread_join(l->writer, NULL);
                pthread_join(l->checkpointer, NULL);
        }
        if (l->fd >= 0)
                close(l->fd);
        pthread_cond_destroy(&l->wcond);
        pthread_cond_destroy(&l->ccond);
        pthread_mutex_destroy(&l->hdr_lock);
        pthread_mutex_destroy(&l->lock);
        free(l);
}
