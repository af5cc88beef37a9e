/* The iscsi backend: a LUN of a remote iSCSI target, driven through libiscsi's asynchronous
 * API. One session per backend, owned by its home reactor: after open, every libiscsi call
 * runs on that thread. I/Os submitted on any thread cross over through a locked inbox (an
 * eventfd wakes home) and complete on their own reactor.
 *
 * Reconnect (RD3-M4) is done here, with libiscsi's own switched off: its reconnect swaps the
 * context's contents and socket under the caller (so the fd registered with epoll changes
 * without notice), counts time in whole seconds with a 3 s floor and up to 30 s of back-off,
 * and re-queues commands with no deadline. Instead, when the session drops this backend
 * destroys the context (its commands come back cancelled and wait in the pending queue),
 * retries the login with a fresh context every 100 ms doubling to 2 s, re-issues what waited
 * once logged in (a write re-issued is idempotent) and fails an I/O with -EIO only once it has
 * waited IBE_IO_TIMEOUT_NS: the cache above keeps such data dirty and retries it later. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

/* The project root is on the include path and has its own iscsi/iscsi.h. */
#include </usr/include/iscsi/iscsi.h>
#include </usr/include/iscsi/scsi-lowlevel.h>

#include "cache/backend.h"
#include "src/log.h"
#include "src/reactor.h"

#define NS_PER_MS 1000000ull
#define NS_PER_S  1000000000ull

#define IBE_IO_TIMEOUT_NS    (30 * NS_PER_S)   /* an I/O that waited this long fails (-EIO) */
#define IBE_STALL_TIMEOUT_NS (15 * NS_PER_S)   /* commands out, no answer: the session is dead */
#define IBE_PING_AFTER_NS    (5 * NS_PER_S)    /* commands out, quiet: NOP-Out, is it alive? */
#define IBE_LOGIN_TIMEOUT_NS (10 * NS_PER_S)   /* one login attempt (connect, login, TUR) */
#define IBE_BACKOFF_MIN_NS   (100 * NS_PER_MS) /* between login attempts, doubling ... */
#define IBE_BACKOFF_MAX_NS   (2 * NS_PER_S)    /* ... up to this */
#define IBE_TICK_NS          (100 * NS_PER_MS) /* timeouts, retries and login attempts */
#define IBE_DRAIN_NS         (2 * NS_PER_S)    /* destroy waits this long for queued I/O */
#define IBE_MAX_CHUNK        (1u << 20)        /* bytes per READ/WRITE command at most */
#define IBE_MAX_WS_BYTES     (16u << 20)       /* per WRITE SAME when the LU states no limit */
#define IBE_MAX_UNMAP_BYTES  (1u << 30)        /* per UNMAP when the LU states no limit */
#define IBE_MAX_INFLIGHT     128               /* commands outstanding on the session */
#define IBE_UA_RETRIES       8 /* immediate re-issues after UNIT ATTENTION, then at the tick */

#define ASCQ_SPACE_ALLOC_FAILED_WRITE_PROTECT 0x2707
#define OP_UNMAP                              0x42
#define OP_WRITE_SAME_16                      0x93

_Static_assert(sizeof(struct scsi_iovec) == sizeof(struct iovec) &&
                   offsetof(struct scsi_iovec, iov_len) == offsetof(struct iovec, iov_len),
               "libiscsi's iovec is struct iovec");

struct ibe_link {
        struct ibe_link *next, *prev;
};

enum ibe_state {
        IBE_WAITING,    /* offline, next login attempt at next_attempt_ns */
        IBE_CONNECTING, /* a login attempt is under way */
        IBE_ONLINE,
        IBE_CLOSED, /* destroy() has taken it down */
};

struct backend_iscsi {
        struct backend base;
        char *display; /* the url without credentials, for logs (base.name may be cut) */
        struct reactor *home;
        /* Where and as whom to log in (from the url). */
        char *portal, *target, *user, *passwd, *target_user, *target_passwd, *initiator;
        int lun;
        /* One ISID for every login: a reconnect then reinstates the session, and the target
         * drops what the old connection still held before the new one re-issues it. */
        uint32_t isid_random, isid_qualifier;
        /* The remote LU, probed at open. */
        uint32_t block_size;
        uint64_t size;
        uint32_t max_chunk;        /* bytes per READ/WRITE command */
        uint32_t max_ws_blocks;    /* per WRITE SAME */
        uint32_t max_unmap_blocks; /* per UNMAP; 0: UNMAP is not used */
        bool ws_ok;                /* WRITE SAME(16) accepted (else zeroes are written) */
        bool ws_unmap_ok;          /* ... with the UNMAP bit (the LU reads unmapped as zeroes) */
        uint8_t *zeroes;           /* max_chunk bytes */
        /* The session: home thread only (or open/destroy while home does not run). */
        struct iscsi_context *ctx;
        struct reactor_fd sock;
        bool sock_watched;
        enum ibe_state state;
        int login_result;      /* during a login: 0 under way, 1 logged in, -1 failed */
        char login_error[160]; /* why it failed (libiscsi overwrites its own message) */
        bool lost;             /* a callback saw the session fail; handled after iscsi_service */
        bool tearing_down;     /* inside iscsi_destroy_context: cancelled commands stay queued */
        bool timeouts_logged;
        bool pinging;      /* a NOP-Out is outstanding */
        unsigned attempts; /* failed logins since the session dropped */
        uint64_t backoff_ns, next_attempt_ns, login_deadline_ns, last_answer_ns, offline_since_ns;
        struct ibe_link pending;  /* to issue, oldest first */
        struct ibe_link inflight; /* issued, in issue order */
        struct ibe_link delayed;  /* to issue again at the next tick (BUSY, NOT READY, ...) */
        unsigned ninflight;
        struct reactor_timer tick;
        /* I/Os submitted on any thread, for home to pick up. */
        pthread_mutex_t inbox_lock;
        struct ibe_link *inbox_head, *inbox_tail; /* singly linked through next */
        bool inbox_signalled;
        struct reactor_fd inbox;
        bool inbox_watched;
        /* For status(), any thread. */
        uint64_t queued; /* atomic: submitted, not yet completed */
        bool online;     /* atomic */
        uint64_t errors, reconnects;
        pthread_mutex_t status_lock;
        char last_error[128];
};

/* Per-I/O state inside volume_io.impl: an I/O costs no allocation of ours. */
struct ibe_req {
        struct ibe_link link; /* first: in pending, inflight, delayed or the inbox */
        struct backend_iscsi *be;
        struct scsi_task *task; /* the command in flight, or NULL */
        uint64_t since_ns;      /* submitted at: the I/O timeout counts from here */
        uint64_t done;          /* bytes finished */
        uint32_t chunk;         /* bytes the command in flight covers */
        int16_t early;          /* decided at submit: 1 success, -errno failure, 0 issue it */
        uint8_t retries;        /* immediate re-issues after UNIT ATTENTION */
};
_Static_assert(sizeof(struct ibe_req) <= sizeof(((struct volume_io *)0)->impl),
               "ibe_req must fit in volume_io.impl");

/* ---------------- small helpers ---------------- */

static struct ibe_req *io_req(struct volume_io *io)
{
        return (struct ibe_req *)(void *)io->impl;
}

static struct volume_io *req_io(struct ibe_req *r)
{
        return (struct volume_io *)((char *)r - offsetof(struct volume_io, impl));
}

static struct ibe_req *link_req(struct ibe_link *l)
{
        return (struct ibe_req *)l;
}

static void list_init(struct ibe_link *l)
{
        l->next = l->prev = l;
}

static bool list_empty(const struct ibe_link *l)
{
        return l->next == l;
}

static void list_insert(struct ibe_link *prev, struct ibe_link *n)
{
        n->prev = prev;
        n->next = prev->next;
        prev->next->prev = n;
        prev->next = n;
}

static void list_add_tail(struct ibe_link *l, struct ibe_link *n)
{
        list_insert(l->prev, n);
}

static void list_add_head(struct ibe_link *l, struct ibe_link *n)
{
        list_insert(l, n);
}

static void list_del(struct ibe_link *n)
{
        n->prev->next = n->next;
        n->next->prev = n->prev;
        n->next = n->prev = n;
}

/* Moves every entry of from to the front (or the back) of to, keeping their order. */
static void list_splice(struct ibe_link *from, struct ibe_link *to, bool front)
{
        if (list_empty(from))
                return;
        struct ibe_link *first = from->next, *last = from->prev;
        struct ibe_link *prev = front ? to : to->prev, *next = prev->next;
        prev->next = first;
        first->prev = prev;
        last->next = next;
        next->prev = last;
        list_init(from);
}

static unsigned list_count(const struct ibe_link *l)
{
        unsigned n = 0;
        for (const struct ibe_link *x = l->next; x != l; x = x->next)
                n++;
        return n;
}

static void set_last_error(struct backend_iscsi *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_last_error(struct backend_iscsi *be, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        pthread_mutex_lock(&be->status_lock);
        vsnprintf(be->last_error, sizeof(be->last_error), fmt, ap);
        pthread_mutex_unlock(&be->status_lock);
        va_end(ap);
}

static const char *ctx_error(struct backend_iscsi *be)
{
        const char *e = be->ctx ? iscsi_get_error(be->ctx) : NULL;
        return e && *e ? e : "unknown error";
}

static const char *op_name(uint8_t opcode)
{
        switch (opcode) {
        case 0x88:
                return "READ(16)";
        case 0x8a:
                return "WRITE(16)";
        case 0x91:
                return "SYNCHRONIZE CACHE(16)";
        case OP_WRITE_SAME_16:
                return "WRITE SAME(16)";
        case OP_UNMAP:
                return "UNMAP";
        default:
                return "command";
        }
}

static void libiscsi_log(int level, const char *message)
{
        log_debug("libiscsi[%d]: %s", level, message);
}

/* ---------------- completion ---------------- */

static void complete_remote(void *arg)
{
        struct volume_io *io = arg;
        io->done(io, (int)io->impl_res);
}

/* Ends r with res on its own reactor. r is on no list. */
static void req_complete(struct backend_iscsi *be, struct ibe_req *r, int res)
{
        struct volume_io *io = req_io(r);
        if (res < 0)
                __atomic_add_fetch(&be->errors, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&be->queued, 1, __ATOMIC_RELEASE);
        io->impl_res = res;
        /* Once closed, a reactor that no longer runs cannot take the call: nothing else runs
         * it either, so this thread does. */
        if (io->reactor == be->home || (be->state == IBE_CLOSED && !reactor_running(io->reactor))) {
                io->done(io, res);
                return;
        }
        if (reactor_call(io->reactor, complete_remote, io) < 0) {
                log_err("backend %s: cannot hand a completion to its reactor; completing here",
                        be->display);
                io->done(io, res);
        }
}

/* ---------------- commands ---------------- */

/* Copies bytes [from, from + len) of io's buffers into a vector owned by task: libiscsi
 * adjusts the vector in place while it sends, so it never gets the caller's. */
static struct scsi_iovec *iov_slice(struct scsi_task *task, const struct volume_io *io,
                                    uint64_t from, uint64_t len, int *count)
{
        int i = 0;
        while (i < io->iovcnt && from >= io->iov[i].iov_len)
                from -= io->iov[i++].iov_len;
        int n = 0;
        uint64_t left = len, skip = from;
        for (int k = i; k < io->iovcnt && left; k++, n++) {
                uint64_t take = io->iov[k].iov_len - skip;
                left -= take < left ? take : left;
                skip = 0;
        }
        struct scsi_iovec *v = left ? NULL : scsi_malloc(task, (size_t)n * sizeof(*v));
        if (!v)
                return NULL;
        left = len;
        for (int k = 0; k < n; k++) {
                uint64_t take = io->iov[i + k].iov_len - from;
                take = take < left ? take : left;
                v[k].iov_base = (char *)io->iov[i + k].iov_base + from;
                v[k].iov_len = (size_t)take;
                left -= take;
                from = 0;
        }
        *count = n;
        return v;
}

static struct scsi_task *build_rw(struct backend_iscsi *be, struct ibe_req *r, uint64_t lba,
                                  uint64_t left)
{
        struct volume_io *io = req_io(r);
        r->chunk = (uint32_t)(left < be->max_chunk ? left : be->max_chunk);
        struct scsi_task *t;
        if (io->op == VOLUME_READ)
                t = scsi_cdb_read16(lba, r->chunk, (int)be->block_size, 0, 0, 0, 0, 0);
        else
                t = scsi_cdb_write16(lba, r->chunk, (int)be->block_size, 0, 0, io->fua, 0, 0);
        int n = 0;
        struct scsi_iovec *v = t ? iov_slice(t, io, r->done, r->chunk, &n) : NULL;
        if (!v) {
                if (t)
                        scsi_free_scsi_task(t);
                return NULL;
        }
        if (io->op == VOLUME_READ)
                scsi_task_set_iov_in(t, v, n);
        else
                scsi_task_set_iov_out(t, v, n);
        return t;
}

/* One data-out buffer of len bytes from buf (which outlives the task). */
static struct scsi_task *with_data_out(struct scsi_task *t, const void *buf, size_t len)
{
        struct scsi_iovec *v = t ? scsi_malloc(t, sizeof(*v)) : NULL;
        if (!v) {
                if (t)
                        scsi_free_scsi_task(t);
                return NULL;
        }
        v->iov_base = (void *)buf;
        v->iov_len = len;
        scsi_task_set_iov_out(t, v, 1);
        return t;
}

static struct scsi_task *build_unmap(struct backend_iscsi *be, struct ibe_req *r, uint64_t lba,
                                     uint64_t left)
{
        uint64_t blocks = left / be->block_size;
        if (blocks > be->max_unmap_blocks)
                blocks = be->max_unmap_blocks;
        r->chunk = (uint32_t)(blocks * be->block_size);
        struct scsi_task *t = scsi_cdb_unmap(0, 0, 24);
        unsigned char *p = t ? scsi_malloc(t, 24) : NULL;
        if (!p) {
                if (t)
                        scsi_free_scsi_task(t);
                return NULL;
        }
        memset(p, 0, 24);
        scsi_set_uint16(&p[0], 22);
        scsi_set_uint16(&p[2], 16);
        scsi_set_uint64(&p[8], lba);
        scsi_set_uint32(&p[16], (uint32_t)blocks);
        return with_data_out(t, p, 24);
}

/* Zeroes: WRITE SAME(16) of a zero block while the remote takes it, else plain writes. */
static struct scsi_task *build_zeroes(struct backend_iscsi *be, struct ibe_req *r, uint64_t lba,
                                      uint64_t left)
{
        if (!be->ws_ok) {
                r->chunk = (uint32_t)(left < be->max_chunk ? left : be->max_chunk);
                struct scsi_task *t =
                    scsi_cdb_write16(lba, r->chunk, (int)be->block_size, 0, 0, 0, 0, 0);
                return with_data_out(t, be->zeroes, r->chunk);
        }
        uint64_t blocks = left / be->block_size;
        if (blocks > be->max_ws_blocks)
                blocks = be->max_ws_blocks;
        r->chunk = (uint32_t)(blocks * be->block_size);
        struct scsi_task *t =
            scsi_cdb_writesame16(0, 0, be->ws_unmap_ok, lba, 0, (uint32_t)blocks, be->block_size);
        return with_data_out(t, be->zeroes, be->block_size);
}

/* The next command of r (sets r->chunk); NULL when out of memory. */
static struct scsi_task *build_command(struct backend_iscsi *be, struct ibe_req *r)
{
        struct volume_io *io = req_io(r);
        uint64_t left = io->length - r->done;
        uint64_t lba = (io->offset + r->done) / be->block_size;
        switch (io->op) {
        case VOLUME_READ:
        case VOLUME_WRITE:
                return build_rw(be, r, lba, left);
        case VOLUME_FLUSH:
                r->chunk = 0;
                return scsi_cdb_synchronizecache16(0, 0, 0, 0);
        case VOLUME_UNMAP:
                if (be->max_unmap_blocks)
                        return build_unmap(be, r, lba, left);
                /* The LU cannot unmap to zeroes (or refused): unmapped ranges read as zeroes
                 * on this gateway (LBPRZ), so write them. */
                return build_zeroes(be, r, lba, left);
        case VOLUME_WRITE_ZEROES:
                return build_zeroes(be, r, lba, left);
        }
        return NULL;
}

static void command_done(struct iscsi_context *ctx, int status, void *command_data,
                         void *private_data);

static void issue(struct backend_iscsi *be, struct ibe_req *r)
{
        struct scsi_task *t = build_command(be, r);
        if (!t) {
                set_last_error(be, "out of memory building a command");
                list_add_tail(&be->delayed, &r->link);
                return;
        }
        if (be->ninflight == 0)
                be->last_answer_ns = reactor_now_ns(); /* the stall clock starts now */
        if (iscsi_scsi_command_async(be->ctx, be->lun, t, command_done, NULL, r) != 0) {
                set_last_error(be, "%s: %s", op_name(t->cdb[0]), ctx_error(be));
                scsi_free_scsi_task(t);
                list_add_tail(&be->delayed, &r->link);
                return;
        }
        /* libiscsi never calls back from inside iscsi_scsi_command_async. */
        r->task = t;
        list_add_tail(&be->inflight, &r->link);
        be->ninflight++;
}

static void issue_pending(struct backend_iscsi *be)
{
        while (be->state == IBE_ONLINE && !be->lost && be->ninflight < IBE_MAX_INFLIGHT &&
               !list_empty(&be->pending)) {
                struct ibe_req *r = link_req(be->pending.next);
                list_del(&r->link);
                issue(be, r);
        }
}

enum verdict {
        V_DONE,        /* the command did its part */
        V_AGAIN,       /* issue the same command again now */
        V_LATER,       /* issue it again at the next tick */
        V_SESSION,     /* the session failed: it waits for the reconnect */
        V_FAIL_EIO,    /* the I/O fails */
        V_FAIL_ENOSPC, /* the I/O fails: thin provisioning out of space */
};

/* The remote refused an optional command: stop using it and say so once. */
static bool degrade(struct backend_iscsi *be, const struct scsi_task *t)
{
        if (t->cdb[0] == OP_UNMAP && be->max_unmap_blocks) {
                log_warn("backend %s: the target refuses UNMAP; writing zeroes instead",
                         be->display);
                be->max_unmap_blocks = 0;
                return true;
        }
        if (t->cdb[0] == OP_WRITE_SAME_16 && (t->cdb[1] & 0x08) && be->ws_unmap_ok) {
                log_warn("backend %s: the target refuses WRITE SAME with UNMAP; using it without",
                         be->display);
                be->ws_unmap_ok = false;
                return true;
        }
        if (t->cdb[0] == OP_WRITE_SAME_16 && be->ws_ok) {
                log_warn("backend %s: the target refuses WRITE SAME(16); writing zero buffers",
                         be->display);
                be->ws_ok = false;
                return true;
        }
        return false;
}

static enum verdict judge_sense(struct backend_iscsi *be, struct ibe_req *r,
                                const struct scsi_task *t)
{
        int key = t->sense.key, ascq = t->sense.ascq;
        switch (key) {
        case SCSI_SENSE_UNIT_ATTENTION: /* e.g. power on / nexus loss after a target restart */
                return ++r->retries <= IBE_UA_RETRIES ? V_AGAIN : V_LATER;
        case SCSI_SENSE_NOT_READY:
        case SCSI_SENSE_COMMAND_ABORTED:
                return V_LATER;
        case SCSI_SENSE_ILLEGAL_REQUEST:
                if ((ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE ||
                     ascq == SCSI_SENSE_ASCQ_INVALID_FIELD_IN_CDB ||
                     ascq == SCSI_SENSE_ASCQ_INVALID_FIELD_IN_PARAMETER_LIST) &&
                    degrade(be, t))
                        return V_AGAIN;
                break;
        case SCSI_SENSE_DATA_PROTECTION:
                if (ascq == ASCQ_SPACE_ALLOC_FAILED_WRITE_PROTECT) {
                        set_last_error(be, "%s: out of space on the target", op_name(t->cdb[0]));
                        return V_FAIL_ENOSPC;
                }
                break;
        default:
                break;
        }
        set_last_error(be, "%s: %s (%s)", op_name(t->cdb[0]), scsi_sense_key_str(key),
                       scsi_sense_ascq_str(ascq));
        return V_FAIL_EIO;
}

static enum verdict judge(struct backend_iscsi *be, struct ibe_req *r, int status,
                          const struct scsi_task *t)
{
        switch (status) {
        case SCSI_STATUS_GOOD:
        case SCSI_STATUS_CONDITION_MET:
                return V_DONE;
        case SCSI_STATUS_CHECK_CONDITION:
                return judge_sense(be, r, t);
        case SCSI_STATUS_BUSY:
        case SCSI_STATUS_TASK_SET_FULL:
        case SCSI_STATUS_TASK_ABORTED:
                return V_LATER;
        case SCSI_STATUS_CANCELLED:
        case SCSI_STATUS_ERROR:
        case SCSI_STATUS_TIMEOUT:
                return V_SESSION;
        case SCSI_STATUS_RESERVATION_CONFLICT:
                set_last_error(be, "%s: reservation conflict", op_name(t->cdb[0]));
                return V_FAIL_EIO;
        default:
                set_last_error(be, "%s: SCSI status 0x%x", op_name(t->cdb[0]), status);
                return V_FAIL_EIO;
        }
}

static bool req_finished(const struct ibe_req *r)
{
        const struct volume_io *io = req_io((struct ibe_req *)r);
        return io->op == VOLUME_FLUSH || r->done >= io->length;
}

/* libiscsi's callback for every command (inside iscsi_service, iscsi_destroy_context). */
static void command_done(struct iscsi_context *ctx, int status, void *command_data,
                         void *private_data)
{
        struct ibe_req *r = private_data;
        struct backend_iscsi *be = r->be;
        struct scsi_task *t = r->task;
        r->task = NULL;
        if (be->tearing_down) {
                /* Stays on inflight: drop_context() puts those back in front of pending. */
                scsi_free_scsi_task(t);
                return;
        }
        list_del(&r->link);
        be->ninflight--;
        be->last_answer_ns = reactor_now_ns();
        enum verdict v = judge(be, r, status, t);
        scsi_free_scsi_task(t);
        switch (v) {
        case V_DONE:
                r->done += r->chunk;
                r->retries = 0;
                if (req_finished(r))
                        req_complete(be, r, 0);
                else
                        list_add_head(&be->pending, &r->link); /* its next chunk, first */
                return;
        case V_AGAIN:
                list_add_head(&be->pending, &r->link);
                return;
        case V_LATER:
                list_add_tail(&be->delayed, &r->link);
                return;
        case V_SESSION:
                list_add_head(&be->pending, &r->link);
                be->lost = true;
                return;
        case V_FAIL_EIO:
                req_complete(be, r, -EIO);
                return;
        case V_FAIL_ENOSPC:
                req_complete(be, r, -ENOSPC);
                return;
        }
}

/* ---------------- the session ---------------- */

static struct iscsi_context *new_context(struct backend_iscsi *be)
{
        struct iscsi_context *ctx = iscsi_create_context(be->initiator);
        if (!ctx)
                return NULL;
        /* See the file comment: a dropped session fails its commands (cancelled) and the
         * reconnect is ours. */
        iscsi_set_noautoreconnect(ctx, 1);
        iscsi_set_isid_random(ctx, be->isid_random, be->isid_qualifier);
        if (log_get_level() >= LOG_LVL_DEBUG) {
                iscsi_set_log_level(ctx, 2);
                iscsi_set_log_fn(ctx, libiscsi_log);
        }
        if (iscsi_set_targetname(ctx, be->target) != 0 ||
            iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL) != 0 ||
            (be->user && iscsi_set_initiator_username_pwd(ctx, be->user, be->passwd) != 0) ||
            (be->target_user &&
             iscsi_set_target_username_pwd(ctx, be->target_user, be->target_passwd) != 0)) {
                iscsi_destroy_context(ctx);
                return NULL;
        }
        return ctx;
}

static void login_done(struct iscsi_context *ctx, int status, void *command_data,
                       void *private_data)
{
        struct backend_iscsi *be = private_data;
        be->login_result = status == SCSI_STATUS_GOOD ? 1 : -1;
        if (be->login_result < 0)
                snprintf(be->login_error, sizeof(be->login_error), "%s", iscsi_get_error(ctx));
}

/* Why the login under way failed: what libiscsi said when it did, else its latest error. */
static const char *login_error(struct backend_iscsi *be)
{
        return be->login_error[0] ? be->login_error : ctx_error(be);
}

/* Starts a login with a fresh context (connect, login, TEST UNIT READY until no UNIT
 * ATTENTION is left). */
static int start_login(struct backend_iscsi *be)
{
        be->ctx = new_context(be);
        if (!be->ctx) {
                set_last_error(be, "cannot create a libiscsi context");
                return -ENOMEM;
        }
        be->login_result = 0;
        be->login_error[0] = 0;
        be->lost = false;
        if (iscsi_full_connect_async(be->ctx, be->portal, be->lun, login_done, be) != 0) {
                set_last_error(be, "connect to %s: %s", be->portal, ctx_error(be));
                return -EIO;
        }
        be->state = IBE_CONNECTING;
        be->login_deadline_ns = reactor_now_ns() + IBE_LOGIN_TIMEOUT_NS;
        return 0;
}

static void unwatch_socket(struct backend_iscsi *be)
{
        if (be->sock_watched)
                reactor_del_fd(be->home, &be->sock);
        be->sock_watched = false;
}

/* Keeps the epoll registration in step with libiscsi: the events it wants, and (during a
 * login, where a redirect replaces the socket, maybe under the same number) the fd itself. */
static void watch_socket(struct backend_iscsi *be)
{
        int fd = be->ctx ? iscsi_get_fd(be->ctx) : -1;
        if (be->sock_watched && (fd != be->sock.fd || be->state == IBE_CONNECTING))
                unwatch_socket(be);
        if (fd < 0)
                return;
        uint32_t events = (uint32_t)iscsi_which_events(be->ctx) | EPOLLRDHUP;
        if (be->sock_watched) {
                reactor_mod_fd(be->home, &be->sock, events);
                return;
        }
        be->sock.fd = fd;
        be->sock.events = events;
        if (reactor_add_fd(be->home, &be->sock) == 0)
                be->sock_watched = true;
        else
                be->lost = true; /* handled like a dropped connection: retried */
}

/* Destroys the session's context. Commands in flight go back to the front of pending, in
 * the order they were issued. */
static void drop_context(struct backend_iscsi *be)
{
        unwatch_socket(be);
        if (be->ctx) {
                be->tearing_down = true;
                iscsi_destroy_context(be->ctx);
                be->tearing_down = false;
                be->ctx = NULL;
        }
        /* libiscsi only calls back the commands of a logged-in session: free the rest. */
        for (struct ibe_link *l = be->inflight.next; l != &be->inflight; l = l->next) {
                struct ibe_req *r = link_req(l);
                if (r->task)
                        scsi_free_scsi_task(r->task);
                r->task = NULL;
        }
        list_splice(&be->inflight, &be->pending, true);
        be->ninflight = 0;
        be->pinging = false;
        be->lost = false;
        be->login_result = 0;
}

static void wait_for_next_attempt(struct backend_iscsi *be)
{
        be->state = IBE_WAITING;
        be->next_attempt_ns = reactor_now_ns() + be->backoff_ns;
}

static void session_lost(struct backend_iscsi *be, const char *why)
{
        if (be->state == IBE_ONLINE) {
                unsigned waiting = be->ninflight + list_count(&be->pending);
                log_warn("backend %s: session lost (%s); %u I/Os wait for the reconnect "
                         "(at most %llu s each)",
                         be->display, why, waiting,
                         (unsigned long long)(IBE_IO_TIMEOUT_NS / NS_PER_S));
                set_last_error(be, "session lost: %s", why);
                __atomic_store_n(&be->online, false, __ATOMIC_RELAXED);
                be->offline_since_ns = reactor_now_ns();
                be->attempts = 0;
                be->backoff_ns = IBE_BACKOFF_MIN_NS;
                be->timeouts_logged = false;
        }
        drop_context(be);
        wait_for_next_attempt(be);
}

static void login_failed(struct backend_iscsi *be, const char *why)
{
        be->attempts++;
        set_last_error(be, "reconnect: %s", why);
        log_debug("backend %s: login attempt %u failed: %s", be->display, be->attempts, why);
        drop_context(be);
        wait_for_next_attempt(be);
        be->backoff_ns *= 2;
        if (be->backoff_ns > IBE_BACKOFF_MAX_NS)
                be->backoff_ns = IBE_BACKOFF_MAX_NS;
}

static void session_up(struct backend_iscsi *be)
{
        uint64_t now = reactor_now_ns();
        be->state = IBE_ONLINE;
        be->last_answer_ns = now;
        be->backoff_ns = IBE_BACKOFF_MIN_NS;
        __atomic_store_n(&be->online, true, __ATOMIC_RELAXED);
        __atomic_add_fetch(&be->reconnects, 1, __ATOMIC_RELAXED);
        log_info("backend %s: reconnected after %.1f s (%u failed attempts); re-issuing %u I/Os",
                 be->display, (double)(now - be->offline_since_ns) / 1e9, be->attempts,
                 list_count(&be->pending) + list_count(&be->delayed));
}

/* After anything that may have moved the session along: act on what the callbacks saw,
 * issue what waits, and watch for what libiscsi wants next. */
static void after_service(struct backend_iscsi *be, const char *why)
{
        if (be->state == IBE_CONNECTING) {
                if (be->lost || be->login_result < 0) {
                        login_failed(be, why ? why : login_error(be));
                        return;
                }
                if (be->login_result > 0)
                        session_up(be);
        } else if (be->state == IBE_ONLINE && (be->lost || iscsi_get_fd(be->ctx) < 0)) {
                session_lost(be, why ? why : ctx_error(be));
                return;
        }
        issue_pending(be);
        if (be->ctx)
                watch_socket(be);
}

static void socket_event(struct reactor_fd *rfd, uint32_t events)
{
        struct backend_iscsi *be = rfd->ctx;
        if (!be->ctx)
                return;
        /* epoll and poll share these bits on Linux. */
        int revents = (int)(events & (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP));
        const char *why = NULL;
        if (iscsi_service(be->ctx, revents) < 0) {
                be->lost = true;
        } else if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                /* What was in the socket has been read; the target is gone. */
                be->lost = true;
                if (be->state == IBE_ONLINE)
                        why = "connection closed by the target";
        }
        after_service(be, why);
}

/* ---------------- the inbox, the tick ---------------- */

static struct ibe_link *inbox_take(struct backend_iscsi *be)
{
        pthread_mutex_lock(&be->inbox_lock);
        struct ibe_link *head = be->inbox_head;
        be->inbox_head = be->inbox_tail = NULL;
        be->inbox_signalled = false;
        pthread_mutex_unlock(&be->inbox_lock);
        return head;
}

static void inbox_event(struct reactor_fd *rfd, uint32_t events)
{
        struct backend_iscsi *be = rfd->ctx;
        uint64_t v;
        while (read(be->inbox.fd, &v, sizeof(v)) == sizeof(v))
                ;
        struct ibe_link *l = inbox_take(be);
        while (l) {
                struct ibe_link *next = l->next;
                struct ibe_req *r = link_req(l);
                list_init(l);
                if (r->early)
                        req_complete(be, r, r->early > 0 ? 0 : r->early);
                else
                        list_add_tail(&be->pending, l);
                l = next;
        }
        if (be->state != IBE_CLOSED)
                after_service(be, NULL);
}

static void ping_done(struct iscsi_context *ctx, int status, void *command_data, void *private_data)
{
        struct backend_iscsi *be = private_data;
        be->pinging = false;
        if (status == SCSI_STATUS_GOOD)
                be->last_answer_ns = reactor_now_ns(); /* slow commands, live target */
}

/* Commands are out and the target has been quiet: a NOP-Out tells a slow target (it
 * answers) from a dead one (the stall timeout runs out). */
static void ping(struct backend_iscsi *be)
{
        if (iscsi_nop_out_async(be->ctx, ping_done, NULL, 0, be) == 0)
                be->pinging = true;
}

/* The command that has waited longest, or 0. */
static uint64_t oldest_inflight_ns(const struct backend_iscsi *be)
{
        uint64_t oldest = 0;
        for (const struct ibe_link *l = be->inflight.next; l != &be->inflight; l = l->next) {
                const struct ibe_req *r = (const struct ibe_req *)l;
                if (!oldest || r->since_ns < oldest)
                        oldest = r->since_ns;
        }
        return oldest;
}

/* Fails what waited longer than the I/O timeout (the session down, or a target that will
 * not take a command). */
static void expire_waiting(struct backend_iscsi *be, uint64_t now)
{
        struct ibe_link expired;
        list_init(&expired);
        for (struct ibe_link *l = be->pending.next, *next; l != &be->pending; l = next) {
                next = l->next;
                if (now - link_req(l)->since_ns > IBE_IO_TIMEOUT_NS) {
                        list_del(l);
                        list_add_tail(&expired, l);
                }
        }
        if (list_empty(&expired))
                return;
        if (!be->timeouts_logged)
                log_warn("backend %s: I/Os waited more than %llu s (%s); failing them with EIO",
                         be->display, (unsigned long long)(IBE_IO_TIMEOUT_NS / NS_PER_S),
                         be->state == IBE_ONLINE ? "target not answering" : "session down");
        be->timeouts_logged = true;
        set_last_error(be, "I/O timed out after %llu s (%s)",
                       (unsigned long long)(IBE_IO_TIMEOUT_NS / NS_PER_S),
                       be->state == IBE_ONLINE ? "target not answering" : "session down");
        while (!list_empty(&expired)) {
                struct ibe_link *l = expired.next;
                list_del(l);
                req_complete(be, link_req(l), -EIO);
        }
}

static void tick_work(struct backend_iscsi *be)
{
        uint64_t now = reactor_now_ns();
        list_splice(&be->delayed, &be->pending, false);
        switch (be->state) {
        case IBE_WAITING:
                if (now >= be->next_attempt_ns && start_login(be) < 0)
                        login_failed(be, "cannot start a login");
                break;
        case IBE_CONNECTING:
                if (now >= be->login_deadline_ns)
                        login_failed(be, "login timed out");
                break;
        case IBE_ONLINE: {
                uint64_t oldest = oldest_inflight_ns(be);
                if (be->ninflight && now - be->last_answer_ns > IBE_STALL_TIMEOUT_NS)
                        session_lost(be, "the target stopped answering");
                else if (oldest && now - oldest > IBE_IO_TIMEOUT_NS)
                        session_lost(be, "a command did not complete in time");
                else if (be->ninflight && !be->pinging &&
                         now - be->last_answer_ns > IBE_PING_AFTER_NS)
                        ping(be);
                break;
        }
        case IBE_CLOSED:
                return;
        }
        expire_waiting(be, now);
        after_service(be, NULL);
}

static void tick(struct reactor_timer *t)
{
        struct backend_iscsi *be = t->ctx;
        tick_work(be);
        if (be->state != IBE_CLOSED)
                reactor_timer_arm(be->home, &be->tick, IBE_TICK_NS);
}

/* ---------------- ops ---------------- */

static struct backend_iscsi *to_iscsi(struct backend *b)
{
        return (struct backend_iscsi *)b;
}

/* 0 to issue io, 1 to complete it successfully at once, -errno to fail it. */
static int check_io(const struct backend_iscsi *be, const struct volume_io *io)
{
        switch (io->op) {
        case VOLUME_FLUSH:
                return 0;
        case VOLUME_READ:
        case VOLUME_WRITE:
        case VOLUME_UNMAP:
        case VOLUME_WRITE_ZEROES:
                break;
        default:
                return -EINVAL;
        }
        if (io->offset % be->block_size || io->length % be->block_size || io->offset > be->size ||
            io->length > be->size - io->offset)
                return -EINVAL;
        if (io->length == 0)
                return 1;
        if (io->op == VOLUME_READ || io->op == VOLUME_WRITE) {
                uint64_t total = 0;
                for (int i = 0; i < io->iovcnt; i++)
                        total += io->iov[i].iov_len;
                if (total < io->length)
                        return -EINVAL;
        }
        return 0;
}

static void iscsi_submit(struct backend *b, struct volume_io *io)
{
        struct backend_iscsi *be = to_iscsi(b);
        struct ibe_req *r = io_req(io);
        memset(r, 0, sizeof(*r));
        list_init(&r->link);
        r->be = be;
        r->since_ns = reactor_now_ns();
        int early = check_io(be, io);
        if (early < 0)
                log_debug("backend %s: I/O op %d at %llu +%llu rejected: %s", be->display,
                          (int)io->op, (unsigned long long)io->offset,
                          (unsigned long long)io->length, strerror(-early));
        r->early = (int16_t)early;
        __atomic_add_fetch(&be->queued, 1, __ATOMIC_RELAXED);
        pthread_mutex_lock(&be->inbox_lock);
        r->link.next = NULL;
        if (be->inbox_tail)
                be->inbox_tail->next = &r->link;
        else
                be->inbox_head = &r->link;
        be->inbox_tail = &r->link;
        bool wake = !be->inbox_signalled;
        be->inbox_signalled = true;
        pthread_mutex_unlock(&be->inbox_lock);
        uint64_t one = 1;
        if (wake && write(be->inbox.fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_err("backend %s: cannot wake its reactor: %s", be->display, strerror(errno));
}

static uint64_t iscsi_size(const struct backend *b)
{
        return ((const struct backend_iscsi *)b)->size;
}

static void iscsi_status(const struct backend *b, struct backend_status *st)
{
        struct backend_iscsi *be = (struct backend_iscsi *)b;
        *st = (struct backend_status){
            .online = __atomic_load_n(&be->online, __ATOMIC_RELAXED),
            .errors = __atomic_load_n(&be->errors, __ATOMIC_RELAXED),
            .reconnects = __atomic_load_n(&be->reconnects, __ATOMIC_RELAXED),
        };
        pthread_mutex_lock(&be->status_lock);
        memcpy(st->last_error, be->last_error, sizeof(st->last_error));
        pthread_mutex_unlock(&be->status_lock);
}

/* Takes the session down for good and fails whatever still waits (on home, or on the
 * destroying thread when home no longer runs). */
static void close_on_home(void *arg)
{
        struct backend_iscsi *be = arg;
        be->state = IBE_CLOSED;
        reactor_timer_cancel(be->home, &be->tick);
        if (be->inbox_watched)
                reactor_del_fd(be->home, &be->inbox);
        be->inbox_watched = false;
        drop_context(be);
        __atomic_store_n(&be->online, false, __ATOMIC_RELAXED);
        list_splice(&be->delayed, &be->pending, false);
        inbox_event(&be->inbox, 0); /* completes early ones, queues the rest on pending */
        unsigned n = list_count(&be->pending);
        if (n)
                log_warn("backend %s: closed with %u I/Os waiting; failing them with EIO",
                         be->display, n);
        while (!list_empty(&be->pending)) {
                struct ibe_link *l = be->pending.next;
                list_del(l);
                req_complete(be, link_req(l), -EIO);
        }
}

/* Moves the session along on this thread, for at most ms (destroy, home not running). */
static void drive_here(struct backend_iscsi *be, int ms)
{
        inbox_event(&be->inbox, 0);
        if (be->ctx && iscsi_get_fd(be->ctx) >= 0) {
                struct pollfd p = {.fd = iscsi_get_fd(be->ctx),
                                   .events = (short)(iscsi_which_events(be->ctx) | POLLRDHUP)};
                if (poll(&p, 1, ms) > 0)
                        socket_event(&be->sock, (uint32_t)p.revents);
        } else {
                usleep((useconds_t)ms * 1000);
        }
        tick_work(be);
}

static void free_backend(struct backend_iscsi *be)
{
        drop_context(be);
        if (be->inbox.fd >= 0)
                close(be->inbox.fd);
        free(be->portal);
        free(be->target);
        free(be->user);
        free(be->passwd);
        free(be->target_user);
        free(be->target_passwd);
        free(be->initiator);
        free(be->display);
        free(be->zeroes);
        pthread_mutex_destroy(&be->inbox_lock);
        pthread_mutex_destroy(&be->status_lock);
        free(be);
}

static void barrier(void *arg)
{
}

static void iscsi_destroy(struct backend *b)
{
        struct backend_iscsi *be = to_iscsi(b);
        bool home_runs = reactor_running(be->home);
        uint64_t deadline = reactor_now_ns() + IBE_DRAIN_NS;
        while (__atomic_load_n(&be->queued, __ATOMIC_ACQUIRE) > 0 && reactor_now_ns() < deadline) {
                if (home_runs)
                        usleep(5000);
                else
                        drive_here(be, 5);
        }
        if (home_runs) {
                reactor_call_sync(be->home, close_on_home, be);
                /* Home may still hold events for our fds from the loop iteration that ran
                 * close_on_home; a second call runs in a later iteration. */
                reactor_call_sync(be->home, barrier, NULL);
        } else {
                close_on_home(be);
        }
        free_backend(be);
}

static const struct backend_ops iscsi_ops = {
    .name = "iscsi",
    .submit = iscsi_submit,
    .size = iscsi_size,
    .destroy = iscsi_destroy,
    .status = iscsi_status,
};

uint32_t backend_iscsi_block_size(const struct backend *b)
{
        return b->ops == &iscsi_ops ? ((const struct backend_iscsi *)b)->block_size : 0;
}

/* ---------------- open ---------------- */

/* Drives the session on the calling thread until *flag is set (open only: home does not
 * own the session yet). */
static int run_here(struct backend_iscsi *be, const int *flag, uint64_t deadline)
{
        while (!*flag) {
                uint64_t now = reactor_now_ns();
                if (now >= deadline)
                        return -ETIMEDOUT;
                uint64_t left_ms = (deadline - now) / NS_PER_MS + 1;
                struct pollfd p = {.fd = iscsi_get_fd(be->ctx),
                                   .events = (short)iscsi_which_events(be->ctx)};
                int n = poll(&p, 1, left_ms < 100 ? (int)left_ms : 100);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (iscsi_service(be->ctx, n > 0 ? p.revents : 0) < 0 || be->lost)
                        return -EIO;
        }
        return 0;
}

struct probe {
        int finished;
        int status;
};

static void probe_done(struct iscsi_context *ctx, int status, void *command_data,
                       void *private_data)
{
        struct probe *p = private_data;
        p->status = status;
        p->finished = 1;
}

/* Runs task to its end on this thread (open only). Returns its SCSI status, or -1. */
static int run_command(struct backend_iscsi *be, struct scsi_task *task)
{
        struct probe p = {0};
        if (!task || iscsi_scsi_command_async(be->ctx, be->lun, task, probe_done, NULL, &p) != 0)
                return -1;
        if (run_here(be, &p.finished, reactor_now_ns() + IBE_LOGIN_TIMEOUT_NS) < 0) {
                /* Take it out of the session: its callback points at p. */
                iscsi_scsi_cancel_task(be->ctx, task);
                return -1;
        }
        return p.status;
}

static int probe_capacity(struct backend_iscsi *be, bool *lbpme, bool *lbprz)
{
        struct scsi_task *t = scsi_cdb_readcapacity16();
        int status = run_command(be, t);
        struct scsi_readcapacity16 *rc16 =
            status == SCSI_STATUS_GOOD && t ? scsi_datain_unmarshall(t) : NULL;
        if (!rc16) {
                if (status == SCSI_STATUS_CHECK_CONDITION)
                        log_err("backend %s: READ CAPACITY(16): %s (%s)", be->display,
                                scsi_sense_key_str(t->sense.key),
                                scsi_sense_ascq_str(t->sense.ascq));
                else
                        log_err("backend %s: READ CAPACITY(16) failed: %s", be->display,
                                ctx_error(be));
                if (t)
                        scsi_free_scsi_task(t);
                return -1;
        }
        be->block_size = rc16->block_length;
        be->size = (rc16->returned_lba + 1) * (uint64_t)rc16->block_length;
        *lbpme = rc16->lbpme;
        *lbprz = rc16->lbprz;
        scsi_free_scsi_task(t);
        if (be->block_size < 512 || be->block_size > IBE_MAX_CHUNK ||
            (be->block_size & (be->block_size - 1))) {
                log_err("backend %s: the LU's block size %u is not supported", be->display,
                        be->block_size);
                return -1;
        }
        return 0;
}

/* A VPD page, unmarshalled into *task (the caller frees it), or NULL if the LU does not
 * offer it. *status < 0 when the session failed. */
static void *probe_vpd(struct backend_iscsi *be, int page, struct scsi_task **task, int *status)
{
        *task = scsi_cdb_inquiry(1, page, 255);
        *status = run_command(be, *task);
        if (*status != SCSI_STATUS_GOOD)
                return NULL;
        return scsi_datain_unmarshall(*task);
}

/* What the LU can do: block size and capacity, transfer and unmap limits. */
static int probe_lu(struct backend_iscsi *be)
{
        bool lbpme = false, lbprz = false;
        if (probe_capacity(be, &lbpme, &lbprz) < 0)
                return -1;
        be->max_chunk = IBE_MAX_CHUNK;
        be->max_ws_blocks = IBE_MAX_WS_BYTES / be->block_size;
        be->ws_ok = true;
        struct scsi_task *t = NULL;
        int status = 0;
        struct scsi_inquiry_block_limits *bl =
            probe_vpd(be, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, &t, &status);
        uint32_t max_unmap = 0;
        if (bl) {
                if (bl->max_xfer_len && (uint64_t)bl->max_xfer_len * be->block_size < be->max_chunk)
                        be->max_chunk = bl->max_xfer_len * be->block_size;
                if (bl->max_ws_len && bl->max_ws_len < be->max_ws_blocks)
                        be->max_ws_blocks = (uint32_t)bl->max_ws_len;
                max_unmap = bl->max_unmap;
        }
        if (t)
                scsi_free_scsi_task(t);
        t = NULL;
        struct scsi_inquiry_logical_block_provisioning *lbp =
            lbpme && status >= 0
                ? probe_vpd(be, SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING, &t, &status)
                : NULL;
        /* Unmapped blocks must read back as zeroes (the gateway's LUN says LBPRZ). */
        bool zeroes_after_unmap = lbp && (lbprz || lbp->lbprz);
        if (zeroes_after_unmap && lbp->lbpu && max_unmap) {
                uint32_t cap = IBE_MAX_UNMAP_BYTES / be->block_size;
                be->max_unmap_blocks = max_unmap < cap ? max_unmap : cap;
        }
        be->ws_unmap_ok = zeroes_after_unmap && lbp->lbpws;
        if (t)
                scsi_free_scsi_task(t);
        if (status < 0) {
                log_err("backend %s: INQUIRY failed: %s", be->display, ctx_error(be));
                return -1;
        }
        be->zeroes = calloc(1, be->max_chunk);
        return be->zeroes ? 0 : -1;
}

void backend_iscsi_display_url(const char *url, char *buf, size_t len)
{
        const char *rest = strncmp(url, "iscsi://", 8) == 0 ? url + 8 : url;
        const char *at = strchr(rest, '@'), *slash = strchr(rest, '/');
        if (at && (!slash || at < slash))
                snprintf(buf, len, "iscsi://%s", at + 1);
        else
                snprintf(buf, len, "%s", url);
}

static char *dup_or_null(const char *s)
{
        return s && *s ? strdup(s) : NULL;
}

static int parse_url(struct backend_iscsi *be, const char *url)
{
        struct iscsi_context *ctx = iscsi_create_context(be->initiator);
        struct iscsi_url *u = ctx ? iscsi_parse_full_url(ctx, url) : NULL;
        if (!u) {
                log_err("backend %s: bad url: %s", be->display,
                        ctx ? iscsi_get_error(ctx) : "out of memory");
                if (ctx)
                        iscsi_destroy_context(ctx);
                return -1;
        }
        be->portal = strdup(u->portal);
        be->target = strdup(u->target);
        be->user = dup_or_null(u->user);
        be->passwd = dup_or_null(u->passwd);
        be->target_user = dup_or_null(u->target_user);
        be->target_passwd = dup_or_null(u->target_passwd);
        be->lun = u->lun;
        iscsi_destroy_url(u);
        iscsi_destroy_context(ctx);
        return be->portal && be->target ? 0 : -1;
}

/* Hands the logged-in session to home: from now on only home touches it. */
static void attach_on_home(void *arg)
{
        struct backend_iscsi *be = arg;
        be->inbox_watched = reactor_add_fd(be->home, &be->inbox) == 0;
        if (!be->inbox_watched)
                log_err("backend %s: cannot watch its inbox: %s", be->display, strerror(errno));
        watch_socket(be);
        be->tick.cb = tick;
        be->tick.ctx = be;
        reactor_timer_arm(be->home, &be->tick, IBE_TICK_NS);
}

static struct backend_iscsi *alloc_backend(const char *url, const char *initiator_name,
                                           struct reactor *home)
{
        struct backend_iscsi *be = calloc(1, sizeof(*be));
        if (!be)
                return NULL;
        be->base.ops = &iscsi_ops;
        char shown[PATH_MAX];
        backend_iscsi_display_url(url, shown, sizeof(shown));
        /* base.name may be cut short; display keeps it whole. */
        memcpy(be->base.name, shown, strnlen(shown, sizeof(be->base.name) - 1));
        be->display = strdup(shown);
        be->home = home;
        be->initiator = strdup(initiator_name);
        be->backoff_ns = IBE_BACKOFF_MIN_NS;
        uint32_t rnd[2] = {0};
        if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd)) {
                rnd[0] = (uint32_t)reactor_now_ns() ^ (uint32_t)(uintptr_t)be;
                rnd[1] = (uint32_t)getpid();
        }
        be->isid_random = rnd[0] & 0xffffff;
        be->isid_qualifier = rnd[1] & 0xffff;
        list_init(&be->pending);
        list_init(&be->inflight);
        list_init(&be->delayed);
        pthread_mutex_init(&be->inbox_lock, NULL);
        pthread_mutex_init(&be->status_lock, NULL);
        be->sock = (struct reactor_fd){.fd = -1, .cb = socket_event, .ctx = be};
        be->inbox = (struct reactor_fd){
            .fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), .cb = inbox_event, .ctx = be};
        if (!be->initiator || !be->display || be->inbox.fd < 0) {
                free_backend(be);
                return NULL;
        }
        return be;
}

static int login_at_open(struct backend_iscsi *be)
{
        int rc = start_login(be);
        if (rc == 0)
                rc = run_here(be, &be->login_result, reactor_now_ns() + IBE_LOGIN_TIMEOUT_NS);
        if (rc == 0 && be->login_result > 0)
                return 0;
        log_err("backend %s: cannot log in to %s as %s: %s", be->display, be->portal, be->initiator,
                rc == -ETIMEDOUT ? "timed out" : login_error(be));
        return -1;
}

struct backend *backend_iscsi_open(const char *url, const char *initiator_name,
                                   struct reactor *home)
{
        struct backend_iscsi *be = alloc_backend(url, initiator_name, home);
        if (!be) {
                log_err("iscsi backend: out of memory");
                return NULL;
        }
        if (parse_url(be, url) < 0 || login_at_open(be) < 0 || probe_lu(be) < 0) {
                free_backend(be);
                return NULL;
        }
        be->state = IBE_ONLINE;
        be->online = true;
        be->last_answer_ns = reactor_now_ns();
        if (reactor_running(home))
                reactor_call_sync(home, attach_on_home, be);
        else
                attach_on_home(be);
        log_info("backend %s: logged in to %s as %s: %llu blocks of %u bytes; up to %u bytes per "
                 "command; unmap %s; write same %s",
                 be->display, be->portal, be->initiator,
                 (unsigned long long)(be->size / be->block_size), be->block_size, be->max_chunk,
                 be->max_unmap_blocks ? "UNMAP"
                 : be->ws_unmap_ok    ? "WRITE SAME + UNMAP"
                                      : "zeroes",
                 be->ws_ok ? "yes" : "no");
        return &be->base;
}
