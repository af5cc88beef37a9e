#include "src/daemon.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/backend.h"
#include "cache/cache.h"
#include "cache/linepool.h"
#include "rdma/iser.h"
#include "cache/volume.h"
#include "iscsi/iscsi.h"
#include "iscsi/scsi.h"
#include "src/config.h"
#include "src/daemon_internal.h"
#include "src/log.h"
#include "src/netaddr.h"
#include "src/portal.h"
#include "src/reactor.h"
#include "src/status.h"

static int mkdir_p(const char *path)
{
        char buf[4096];
        snprintf(buf, sizeof(buf), "%s", path);
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -1;
                *p = '/';
        }
        return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

static int start_reactors(struct daemon *d)
{
        d->nreactors = d->cfg->reactors;
        for (unsigned i = 0; i < d->nreactors; i++) {
                d->reactors[i] = reactor_create(i);
                if (!d->reactors[i] || reactor_start(d->reactors[i]) < 0)
                        return -1;
        }
        return 0;
}

static int build_gw(struct daemon *d)
{
        const struct config *cfg = d->cfg;
        struct iscsi_gw_conf gc = {
            .max_recv_dsl = cfg->iscsi.max_recv_data_segment_length,
            .max_burst = cfg->iscsi.max_burst_length,
            .first_burst = cfg->iscsi.first_burst_length,
            .max_outstanding_r2t = cfg->iscsi.max_outstanding_r2t,
            .immediate_data = cfg->iscsi.immediate_data,
            .initial_r2t = cfg->iscsi.initial_r2t,
            .queue_depth = 128,
            .nop_interval_s = cfg->nop_interval,
            .nop_timeout_s = cfg->nop_timeout,
            .discovery_chap_user = cfg->discovery_chap.user,
            .discovery_chap_secret = cfg->discovery_chap.secret,
            .pool = d->pool,
            .nreactors = d->nreactors,
        };
        d->gw = iscsi_gw_create(&gc);
        if (!d->gw)
                return -1;
        for (unsigned i = 0; i < d->nreactors; i++)
                if (iscsi_gw_attach_reactor(d->gw, i, d->reactors[i]) < 0)
                        return -1;
        return 0;
}

static struct iscsi_portal_conf portal_conf(const struct config_portal *p)
{
        return (struct iscsi_portal_conf){
            .address = p->address, .port = p->port, .iser = p->transport == CONFIG_TRANSPORT_ISER};
}

static int add_targets(struct daemon *d)
{
        const struct config *cfg = d->cfg;
        for (unsigned i = 0; i < cfg->ntargets; i++) {
                const struct config_target *t = &cfg->targets[i];
                struct iscsi_portal_conf pv[32];
                unsigned np = 0;
                for (unsigned k = 0; k < t->nportals && np < 32; k++)
                        pv[np++] = portal_conf(t->portals[k]);
                struct iscsi_target_conf tc = {
                    .name = t->name,
                    .alias = t->alias,
                    .chap_user = t->chap.user,
                    .chap_secret = t->chap.secret,
                    .mutual_user = t->chap.mutual_user,
                    .mutual_secret = t->chap.mutual_secret,
                    .allow = (const char *const *)t->allow,
                    .nallow = t->allow_any ? 0 : t->nallow,
                    .portals = pv,
                    .nportals = np,
                };
                if (iscsi_gw_add_target(d->gw, &tc) < 0) {
                        log_err("cannot add target %s", t->name);
                        return -1;
                }
        }
        return 0;
}

static int open_volume(struct daemon *d, const struct config_lun *l, struct daemon_lun *dl)
{
        snprintf(dl->name, sizeof(dl->name), "%s LUN %u", dl->target->name, l->number);
        struct volume_conf vc = {.name = dl->name,
                                 .block_size = l->block_size,
                                 .write_back = l->write_cache,
                                 .bypass_threshold = l->bypass_threshold,
                                 .home = d->reactors[(unsigned)(dl - d->luns) % d->nreactors]};
        dl->volume = volume_create_cached(d->cache, dl->backend, &vc);
        return dl->volume ? 0 : -1;
}

/* fault_injection = yes: the status socket's "fault" operation may make this LUN's backend
 * fail or slow down (tests). */
static int wrap_fault_injection(struct daemon_lun *dl)
{
        struct backend *wrapped = backend_fault_wrap(dl->backend);
        if (!wrapped)
                return -1;
        dl->backend = wrapped;
        log_warn("target %s LUN %u: fault injection enabled (for tests only)", dl->target->name,
                 dl->conf->number);
        return 0;
}

/* The LUN's backend; LUNs of remote targets spread their sessions over the reactors. */
static struct backend *open_backend(struct daemon *d, const struct config_lun *l, unsigned index)
{
        if (l->backend != CONFIG_BACKEND_ISCSI)
                return backend_file_open(l->path, l->size, l->create);
        struct backend *b = backend_iscsi_open(l->url, d->cfg->backend_initiator_name,
                                               d->reactors[index % d->nreactors]);
        if (!b)
                return NULL;
        uint32_t remote_bs = backend_iscsi_block_size(b);
        if (l->block_size % remote_bs != 0) {
                log_err("lun %u: block_size %u is not a multiple of the remote LU's block size %u",
                        l->number, l->block_size, remote_bs);
                backend_destroy(b);
                return NULL;
        }
        return b;
}

static int open_lun(struct daemon *d, const struct config_target *t, const struct config_lun *l,
                    struct daemon_lun *dl)
{
        dl->target = t;
        dl->conf = l;
        dl->backend = open_backend(d, l, (unsigned)(dl - d->luns));
        if (!dl->backend)
                return -1;
        uint64_t size = backend_size(dl->backend);
        if (l->size > size) {
                log_err("target %s LUN %u: size %llu exceeds the backend (%llu bytes)", t->name,
                        l->number, (unsigned long long)l->size, (unsigned long long)size);
                return -1;
        }
        if (l->size)
                size = l->size;
        if (l->fault_injection && wrap_fault_injection(dl) < 0)
                return -1;
        if (open_volume(d, l, dl) < 0)
                return -1;
        struct scsi_lun *s = &dl->scsi;
        s->lun = l->number;
        s->block_size = l->block_size;
        s->physical_block_size = l->physical_block_size;
        s->num_blocks = size / l->block_size;
        s->volume = dl->volume;
        s->write_cache = l->write_cache;
        s->read_only = l->read_only;
        s->thin = l->thin;
        s->removable = l->removable;
        s->max_xfer_blocks = (uint32_t)((16u << 20) / l->block_size);
        scsi_lun_init_identity(s, t->name, l->number);
        if (iscsi_gw_add_lun(d->gw, t->name, s) < 0)
                return -1;
        char where[PATH_MAX];
        if (l->path)
                snprintf(where, sizeof(where), "%s", l->path);
        else
                backend_iscsi_display_url(l->url, where, sizeof(where));
        log_info("target %s LUN %u: %s, %llu blocks of %u bytes (physical %u)%s", t->name,
                 l->number, where, (unsigned long long)s->num_blocks, l->block_size,
                 l->physical_block_size, l->read_only ? ", read-only" : "");
        return 0;
}

static int open_luns(struct daemon *d)
{
        const struct config *cfg = d->cfg;
        unsigned total = 0;
        for (unsigned i = 0; i < cfg->ntargets; i++)
                total += cfg->targets[i].nluns;
        d->luns = calloc(total ? total : 1, sizeof(*d->luns));
        if (!d->luns)
                return -1;
        for (unsigned i = 0; i < cfg->ntargets; i++) {
                const struct config_target *t = &cfg->targets[i];
                for (unsigned k = 0; k < t->nluns; k++)
                        if (open_lun(d, t, &t->luns[k], &d->luns[d->nluns++]) < 0)
                                return -1;
        }
        return 0;
}

/* SendTargets asks which addresses a configured portal offers now (src/netaddr.h). */
static void portal_addresses(void *ctx, const char *address, bool iser, iscsi_address_emit_fn emit,
                             void *arg)
{
        netaddr_expand(ctx, address, iser, emit, arg);
}

/* Without netlink, SendTargets advertises the portals as configured. */
static void watch_addresses(struct daemon *d)
{
        d->netaddr = netaddr_create(d->reactors[0]);
        if (d->netaddr)
                iscsi_gw_set_address_source(d->gw, portal_addresses, d->netaddr);
}

static int open_portals(struct daemon *d)
{
        const struct config *cfg = d->cfg;
        watch_addresses(d);
        d->portals = portal_mgr_create(d->gw, d->reactors, d->nreactors);
        if (!d->portals)
                return -1;
        unsigned listening = 0;
        for (unsigned i = 0; i < cfg->nportals; i++) {
                const struct config_portal *p = &cfg->portals[i];
                if (p->transport == CONFIG_TRANSPORT_ISER) {
                        /* No RDMA here is a warning, not an error: TCP portals carry on. */
                        if (!d->iser)
                                d->iser =
                                    iser_mgr_create(d->gw, d->pool, d->reactors, d->nreactors);
                        if (!d->iser || iser_listen(d->iser, p->name, &p->addr, p->addr_len) < 0)
                                continue;
                        iscsi_gw_add_portal(d->gw, p->address, p->port, true);
                        listening++;
                        continue;
                }
                if (portal_mgr_listen_tcp(d->portals, p->name, &p->addr, p->addr_len) < 0)
                        return -1;
                iscsi_gw_add_portal(d->gw, p->address, p->port, false);
                listening++;
        }
        return listening ? 0 : -1;
}

/* ---------------- status provider ---------------- */

/* The iSCSI layer knows the lines and the DPT; the cache knows which lines it holds. */
static json_t *pool_json(struct daemon *d)
{
        json_t *pool = iscsi_gw_pool_json(d->gw);
        struct cache_stats st;
        cache_get_stats(d->cache, &st);
        if (pool) {
                json_object_set_new(pool, "lines_clean", json_integer((json_int_t)st.lines_clean));
                json_object_set_new(pool, "lines_dirty", json_integer((json_int_t)st.lines_dirty));
        }
        return pool;
}

static json_t *cache_json(struct daemon *d)
{
        struct cache_stats st;
        cache_get_stats(d->cache, &st);
        uint64_t reads = st.read_hits + st.read_misses;
        return json_pack(
            "{s:b, s:f, s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
            "s:I, s:I, s:o}",
            "enabled", 1, "hit_ratio", reads ? (double)st.read_hits / reads : 0.0, "read_hits",
            (json_int_t)st.read_hits, "read_misses", (json_int_t)st.read_misses,
            "destage_backlog_bytes", (json_int_t)(st.lines_dirty * d->cfg->line_size),
            "destage_rate_bps", st.destage_rate_bps, "destaged_bytes",
            (json_int_t)st.destaged_bytes, "destage_ios", (json_int_t)st.destage_ios, "lines_total",
            (json_int_t)st.lines_total, "lines_free", (json_int_t)st.lines_free, "lines_clean",
            (json_int_t)st.lines_clean, "lines_dirty", (json_int_t)st.lines_dirty,
            "merge_copy_bytes", (json_int_t)st.merge_copy_bytes, "cow_lines",
            (json_int_t)st.cow_lines, "evictions", (json_int_t)st.evictions, "write_waits",
            (json_int_t)st.write_waits, "write_log", daemon_wlog_json(d));
}

static json_t *backend_json(const struct daemon_lun *l)
{
        struct backend_status st;
        backend_get_status(l->backend, &st);
        json_t *b = json_pack("{s:s, s:s, s:b, s:s?, s:I, s:I}", "type", l->backend->ops->name,
                              "state", st.online ? "online" : "offline", "online", st.online,
                              "last_error", st.last_error[0] ? st.last_error : NULL, "errors",
                              (json_int_t)st.errors, "reconnects", (json_int_t)st.reconnects);
        if (l->conf->backend == CONFIG_BACKEND_ISCSI) {
                char url[PATH_MAX];
                backend_iscsi_display_url(l->conf->url, url, sizeof(url));
                json_object_set_new(b, "url", json_string(url));
        } else {
                json_object_set_new(b, "path", json_string(l->conf->path));
        }
        return b;
}

static json_t *luns_json(struct daemon *d)
{
        json_t *arr = json_array();
        for (unsigned i = 0; i < d->nluns; i++) {
                const struct daemon_lun *l = &d->luns[i];
                json_t *backend = backend_json(l);
                struct volume_stats vs;
                volume_get_stats(l->volume, &vs);
                json_t *cache = json_pack(
                    "{s:s, s:I, s:I, s:I, s:I, s:b, s:s?}", "mode",
                    l->conf->write_cache ? "write-back" : "write-through", "dirty_lines",
                    (json_int_t)vs.dirty_lines, "destaged_bytes", (json_int_t)vs.destaged_bytes,
                    "destage_inflight", (json_int_t)vs.destage_inflight, "destage_errors",
                    (json_int_t)vs.destage_errors, "backing_off", vs.backing_off, "last_error",
                    vs.last_error[0] ? vs.last_error : NULL);
                json_array_append_new(
                    arr,
                    json_pack("{s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:b, s:b}", "target",
                              l->target->name, "lun", (json_int_t)l->conf->number, "size_bytes",
                              (json_int_t)(l->scsi.num_blocks * l->scsi.block_size), "block_size",
                              (json_int_t)l->scsi.block_size, "physical_block_size",
                              (json_int_t)l->conf->physical_block_size, "backend", backend, "cache",
                              cache, "write_cache", l->scsi.write_cache, "read_only",
                              l->scsi.read_only));
        }
        return json_pack("{s:o}", "luns", arr);
}

static json_t *gateway_json(struct daemon *d)
{
        uint64_t up = (reactor_now_ns() - d->started_ns) / 1000000000ull;
        return json_pack("{s:s, s:I, s:s?, s:I, s:I}", "version", ISERGW_VERSION, "uptime_s",
                         (json_int_t)up, "config_path", d->config_path, "reactors",
                         (json_int_t)d->nreactors, "pid", (json_int_t)getpid());
}

static json_t *status_query(void *ctx, const char *object, const json_t *args, char *err,
                            size_t errlen)
{
        struct daemon *d = ctx;
        if (strcmp(object, "gateway") == 0)
                return gateway_json(d);
        if (strcmp(object, "targets") == 0)
                return iscsi_gw_targets_json(d->gw);
        if (strcmp(object, "luns") == 0)
                return luns_json(d);
        if (strcmp(object, "sessions") == 0)
                return iscsi_gw_sessions_json(d->gw);
        if (strcmp(object, "pool") == 0)
                return pool_json(d);
        if (strcmp(object, "stats") == 0) {
                json_t *stats = iscsi_gw_stats_json(d->gw);
                json_t *iser = iser_stats_json(d->iser);
                if (stats && iser)
                        json_object_update(stats, iser);
                json_decref(iser);
                return stats;
        }
        if (strcmp(object, "cache") == 0)
                return cache_json(d);
        if (strcmp(object, "mirror") == 0)
                return daemon_mirror_json(d);
        snprintf(err, errlen, "unknown object \"%s\"", object);
        return NULL;
}

struct io_wait {
        struct volume_io io;
        struct volume *v;
        struct iovec iov;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool done;
        bool abandoned; /* the waiter gave up: the completion frees it */
        int result;
};

static void io_wait_free(struct io_wait *w)
{
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        free(w);
}

static void io_wait_done(struct volume_io *io, int result)
{
        struct io_wait *w = io->priv;
        pthread_mutex_lock(&w->lock);
        w->result = result;
        w->done = true;
        bool abandoned = w->abandoned;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&w->lock);
        if (abandoned)
                io_wait_free(w);
}

static void io_wait_submit(void *arg)
{
        struct io_wait *w = arg;
        volume_submit(w->v, &w->io);
}

/* Whether SIGTERM or SIGINT came again (they are blocked and taken by sigwait in main). */
static bool second_signal(void)
{
        sigset_t pending;
        if (sigpending(&pending) < 0)
                return false;
        return sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT);
}

int daemon_volume_io(struct daemon *d, struct volume *v, enum volume_op op, uint64_t offset,
                     uint64_t length, void *data, unsigned timeout_s, bool at_exit)
{
        struct io_wait *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->iov = (struct iovec){data, length};
        w->io = (struct volume_io){.op = op,
                                   .offset = offset,
                                   .length = length,
                                   .iov = data ? &w->iov : NULL,
                                   .iovcnt = data ? 1 : 0,
                                   .cmd_bytes = length,
                                   .reactor = d->reactors[0],
                                   .done = io_wait_done,
                                   .priv = w};
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        w->v = v;
        if (reactor_call(d->reactors[0], io_wait_submit, w) < 0) {
                io_wait_free(w);
                return -EIO;
        }
        uint64_t deadline = reactor_now_ns() + (uint64_t)timeout_s * 1000000000ull;
        pthread_mutex_lock(&w->lock);
        while (!w->done) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 100 * 1000000;
                if (ts.tv_nsec >= 1000000000) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&w->cond, &w->lock, &ts);
                if (w->done)
                        break;
                /* data (the caller's) must outlive the I/O: only flushes may be abandoned */
                if (op == VOLUME_FLUSH &&
                    ((timeout_s && reactor_now_ns() > deadline) || (at_exit && second_signal()))) {
                        w->abandoned = true;
                        pthread_mutex_unlock(&w->lock);
                        return -ETIMEDOUT;
                }
        }
        int rc = w->result;
        pthread_mutex_unlock(&w->lock);
        io_wait_free(w);
        return rc;
}

int daemon_flush_lun(struct daemon *d, struct daemon_lun *l, unsigned timeout_s, bool at_exit)
{
        return daemon_volume_io(d, l->volume, VOLUME_FLUSH, 0, 0, NULL, timeout_s, at_exit);
}

/* SIGTERM: everything dirty goes to the backends before exit, within the timeout. */
static bool flush_all(struct daemon *d)
{
        if (!d->nreactors || !d->reactors[0])
                return false;
        struct cache_stats st = {0};
        if (d->cache)
                cache_get_stats(d->cache, &st);
        if (st.lines_dirty)
                log_info("flushing %llu dirty lines before exit (at most %u s; a second signal "
                         "stops waiting)",
                         (unsigned long long)st.lines_dirty, d->cfg->shutdown_flush_timeout);
        bool all = true;
        for (unsigned i = 0; i < d->nluns; i++) {
                if (!d->luns[i].volume)
                        continue;
                int rc = daemon_flush_lun(d, &d->luns[i], d->cfg->shutdown_flush_timeout, true);
                if (rc < 0) {
                        log_err("%s: flush at exit failed: %s", d->luns[i].name, strerror(-rc));
                        all = false;
                        if (rc == -ETIMEDOUT)
                                break;
                }
        }
        if (all && st.lines_dirty)
                log_info("flushed: every acknowledged write is on its backend");
        return all;
}

/* The LUN named by args.lun (status.c has checked its shape), or NULL with err filled. */
static struct daemon_lun *find_lun(struct daemon *d, const json_t *args, char *err, size_t errlen)
{
        json_t *lun = json_object_get(args, "lun");
        const char *target = json_string_value(json_object_get(lun, "target"));
        json_int_t number = json_integer_value(json_object_get(lun, "lun"));
        for (unsigned i = 0; target && i < d->nluns; i++) {
                struct daemon_lun *l = &d->luns[i];
                if (strcasecmp(l->target->name, target) == 0 && l->conf->number == number)
                        return l;
        }
        snprintf(err, errlen, "no LUN %lld on target %s", (long long)number,
                 target ? target : "(none)");
        return NULL;
}

static int operate_flush(struct daemon *d, struct daemon_lun *l, json_t **result, char *err,
                         size_t errlen)
{
        int rc = daemon_flush_lun(d, l, 0, false);
        if (rc < 0) {
                snprintf(err, errlen, "flush failed: %s", strerror(-rc));
                return -1;
        }
        *result =
            json_pack("{s:s, s:I}", "target", l->target->name, "lun", (json_int_t)l->conf->number);
        return 0;
}

/* A count from the request; status.c has checked it is an integer 0..UINT32_MAX if present. */
static uint32_t fault_arg(const json_t *args, const char *key)
{
        json_int_t v = json_integer_value(json_object_get(args, key));
        return v < 0 ? 0 : v > (json_int_t)UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static int operate_fault(struct daemon_lun *l, const json_t *args, json_t **result, char *err,
                         size_t errlen)
{
        struct backend_fault f = {
            .fail_reads = fault_arg(args, "fail_reads"),
            .fail_writes = fault_arg(args, "fail_writes"),
            .fail_flushes = fault_arg(args, "fail_flushes"),
            .delay_ms = fault_arg(args, "delay_ms"),
        };
        if (backend_fault_set(l->backend, &f) < 0) {
                snprintf(err, errlen,
                         "LUN has no fault injection (fault_injection = yes in its "
                         "[lun] section)");
                return -1;
        }
        struct backend_status st;
        backend_get_status(l->backend, &st);
        *result = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}", "target", l->target->name,
                            "lun", (json_int_t)l->conf->number, "fail_reads",
                            (json_int_t)f.fail_reads, "fail_writes", (json_int_t)f.fail_writes,
                            "fail_flushes", (json_int_t)f.fail_flushes, "delay_ms",
                            (json_int_t)f.delay_ms, "backend_errors", (json_int_t)st.errors,
                            "last_error", st.last_error[0] ? st.last_error : NULL);
        return 0;
}

static int status_operate(void *ctx, const char *op, const json_t *args, json_t **result, char *err,
                          size_t errlen)
{
        struct daemon *d = ctx;
        bool flush = strcmp(op, "flush") == 0, fault = strcmp(op, "fault") == 0;
        bool mirror = strncmp(op, "mirror-", 7) == 0;
        if (!flush && !fault && !mirror) {
                snprintf(err, errlen, "%s is not supported", op);
                return -1;
        }
        struct daemon_lun *l = find_lun(d, args, err, errlen);
        if (!l)
                return -1;
        if (mirror)
                return daemon_mirror_operate(d, l, op, args, result, err, errlen);
        return flush ? operate_flush(d, l, result, err, errlen)
                     : operate_fault(l, args, result, err, errlen);
}

static int start_status(struct daemon *d)
{
        static const struct status_provider provider_template = {
            .query = status_query,
            .operate = status_operate,
        };
        struct status_provider p = provider_template;
        p.ctx = d;
        struct status_server_conf sc = {
            .path = d->cfg->status_socket,
            .mode = d->cfg->status_socket_mode,
            .group = d->cfg->status_socket_group,
            .metrics_listen = d->cfg->metrics_listen,
        };
        d->status = status_server_start(&sc, &p);
        return d->status ? 0 : -1;
}

/* ---------------- life cycle ---------------- */

struct daemon *daemon_start(const struct config *cfg, const char *config_path)
{
        struct daemon *d = calloc(1, sizeof(*d));
        if (!d)
                return NULL;
        d->cfg = cfg;
        d->config_path = config_path ? strdup(config_path) : NULL;
        d->started_ns = reactor_now_ns();
        if (mkdir_p(cfg->var_dir) < 0) {
                log_err("cannot create %s: %s", cfg->var_dir, strerror(errno));
                goto fail;
        }
        d->pool = line_pool_create(cfg->pool_size, cfg->line_size, cfg->reactors);
        if (!d->pool) {
                log_err("cannot allocate the %llu-byte cache-line pool",
                        (unsigned long long)cfg->pool_size);
                goto fail;
        }
        d->cache = cache_create(d->pool, &(struct cache_conf){.high_water = cfg->dirty_high_water,
                                                              .low_water = cfg->dirty_low_water,
                                                              .hard_limit = cfg->dirty_hard_limit,
                                                              .max_age_ms = cfg->dirty_max_age_ms});
        if (!d->cache)
                goto fail;
        if (start_reactors(d) < 0 || build_gw(d) < 0 || add_targets(d) < 0 || open_luns(d) < 0 ||
            daemon_wlog_open(d) < 0 || daemon_mirror_open(d) < 0 || start_status(d) < 0 ||
            open_portals(d) < 0)
                goto fail;
        return d;
fail:
        daemon_stop(d);
        return NULL;
}

void daemon_stop(struct daemon *d)
{
        if (!d)
                return;
        if (d->status)
                status_server_stop(d->status);
        portal_mgr_destroy(d->portals);
        iser_mgr_stop_listening(d->iser);
        if (d->gw)
                iscsi_gw_close_all(d->gw);
        daemon_mirror_stop(d); /* no peer writes arrive during the final flush */
        bool drained = daemon_wlog_drain(d);
        bool flushed = flush_all(d);
        daemon_wlog_close(d, drained && flushed);
        for (unsigned i = 0; i < d->nluns; i++)
                volume_stop(d->luns[i].volume);
        for (unsigned i = 0; i < d->nreactors; i++)
                if (d->reactors[i])
                        reactor_stop(d->reactors[i]);
        netaddr_destroy(d->netaddr); /* no SendTargets asks any more */
        for (unsigned i = 0; i < d->nluns; i++) {
                volume_destroy(d->luns[i].volume);
                if (d->luns[i].backend)
                        backend_destroy(d->luns[i].backend);
        }
        daemon_mirror_destroy(d);
        cache_destroy(d->cache);
        iscsi_gw_destroy(d->gw);
        for (unsigned i = 0; i < d->nreactors; i++)
                reactor_destroy(d->reactors[i]);
        iser_mgr_destroy(d->iser); /* the pool's registration goes before the pool */
        line_pool_destroy(d->pool);
        free(d->luns);
        free(d->config_path);
        free(d);
}
