/* The daemon's side of the write log (cache/wlog.h): which log, which key names which LUN,
 * replay at start, the flush behind each checkpoint, and what shutdown leaves in it. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cache/wlog.h"
#include "src/daemon_internal.h"
#include "src/le.h"
#include "src/log.h"
#include "src/reactor.h"

#define CHECKPOINT_FLUSH_S 30 /* one LUN's flush; a failed checkpoint is retried */

/* A LUN's key in the log: stable across restarts as long as the target name and LUN number
 * stay (FNV-1a over "TARGET/LUN"). */
static uint64_t lun_key(const struct daemon_lun *l)
{
        char name[300];
        snprintf(name, sizeof(name), "%s/%u", l->target->name, l->conf->number);
        return fnv1a64(name);
}

static struct daemon_lun *lun_of_key(struct daemon *d, uint64_t key)
{
        for (unsigned i = 0; i < d->nluns; i++)
                if (lun_key(&d->luns[i]) == key)
                        return &d->luns[i];
        return NULL;
}

static const enum volume_op replay_ops[] = {
    [WLOG_WRITE] = VOLUME_WRITE,
    [WLOG_UNMAP] = VOLUME_UNMAP,
    [WLOG_WRITE_ZEROES] = VOLUME_WRITE_ZEROES,
};

/* One record into its LUN's cache. A record the configuration cannot take stops the start:
 * dropping it would lose an acknowledged write. */
static int replay_record(void *ctx, const struct wlog_record *r, const void *data)
{
        struct daemon *d = ctx;
        struct daemon_lun *l = lun_of_key(d, r->key);
        if (!l) {
                log_err("write log: a record (LSN %" PRIu64 ") belongs to a LUN this configuration "
                        "does not have (key %016" PRIx64 "); restore the target and LUN it was "
                        "written for",
                        r->lsn, r->key);
                return -ENOENT;
        }
        uint32_t bs = l->conf->block_size;
        if (r->offset % bs || r->length % bs || r->offset + r->length > volume_size(l->volume)) {
                log_err("write log: record LSN %" PRIu64 " (%s, offset %" PRIu64 " length %" PRIu64
                        ") does not fit the LUN's geometry",
                        r->lsn, l->name, r->offset, r->length);
                return -ERANGE;
        }
        int rc = daemon_volume_io(d, l->volume, replay_ops[r->op], r->offset, r->length,
                                  r->op == WLOG_WRITE ? (void *)data : NULL, 0, false);
        if (rc < 0)
                log_err("write log: replaying LSN %" PRIu64 " into %s: %s", r->lsn, l->name,
                        strerror(-rc));
        return rc;
}

static int flush_every_lun(struct daemon *d, unsigned timeout_s)
{
        for (unsigned i = 0; i < d->nluns; i++) {
                int rc = daemon_flush_lun(d, &d->luns[i], timeout_s, false);
                if (rc < 0)
                        return rc;
        }
        return 0;
}

/* The checkpoint's flush, on the log's checkpoint thread. */
static int checkpoint_flush(void *ctx)
{
        return flush_every_lun(ctx, CHECKPOINT_FLUSH_S);
}

static int replay(struct daemon *d)
{
        uint64_t start = reactor_now_ns();
        long n = wlog_replay(d->wlog, replay_record, d);
        if (n < 0) {
                log_err("write log %s: replay failed (%s); the log is kept, nothing was dropped",
                        d->cfg->write_log, strerror((int)-n));
                return -1;
        }
        int rc = n ? flush_every_lun(d, 0) : 0;
        if (rc < 0) {
                log_err("write log %s: the replayed writes could not be destaged (%s); the log is "
                        "kept",
                        d->cfg->write_log, strerror(-rc));
                return -1;
        }
        if (wlog_reset(d->wlog) < 0) {
                log_err("write log %s: cannot reset after replay", d->cfg->write_log);
                return -1;
        }
        struct wlog_stats st;
        wlog_get_stats(d->wlog, &st);
        log_info("write log %s: replayed %ld records (%" PRIu64 " bytes) in %.1f s%s",
                 d->cfg->write_log, n, st.replayed_bytes, (reactor_now_ns() - start) / 1e9,
                 n ? "; they are on the backends" : "");
        return 0;
}

int daemon_wlog_open(struct daemon *d)
{
        if (!d->cfg->write_log)
                return 0;
        d->wlog = wlog_open(d->cfg->write_log, d->cfg->write_log_size);
        if (!d->wlog || replay(d) < 0)
                return -1;
        for (unsigned i = 0; i < d->nluns; i++)
                volume_set_wlog(d->luns[i].volume, d->wlog, lun_key(&d->luns[i]));
        if (wlog_start(d->wlog, checkpoint_flush, d, d->cfg->write_log_checkpoint_interval * 1000) <
            0) {
                log_err("write log %s: cannot start its threads", d->cfg->write_log);
                return -1;
        }
        d->wlog_live = true;
        return 0;
}

bool daemon_wlog_drain(struct daemon *d)
{
        return !d->wlog || wlog_drain(d->wlog, 10000);
}

void daemon_wlog_close(struct daemon *d, bool flushed)
{
        if (!d->wlog)
                return;
        /* A log that was not replayed completely keeps everything for the next try. */
        if (flushed && d->wlog_live && wlog_reset(d->wlog) == 0)
                log_info("write log %s: emptied, everything is on the backends", d->cfg->write_log);
        else {
                struct wlog_stats st;
                wlog_get_stats(d->wlog, &st);
                log_warn("write log %s: kept (%" PRIu64 " bytes); the next start replays it",
                         d->cfg->write_log, st.used);
        }
        wlog_close(d->wlog);
        d->wlog = NULL;
}

json_t *daemon_wlog_json(struct daemon *d)
{
        if (!d->wlog)
                return json_pack("{s:b}", "enabled", 0);
        struct wlog_stats st;
        wlog_get_stats(d->wlog, &st);
        return json_pack("{s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s}",
                         "enabled", 1, "path", d->cfg->write_log, "size", (json_int_t)st.size,
                         "used", (json_int_t)st.used, "records", (json_int_t)st.records, "bytes",
                         (json_int_t)st.bytes, "commits", (json_int_t)st.commits, "checkpoints",
                         (json_int_t)st.checkpoints, "checkpoint_failures",
                         (json_int_t)st.checkpoint_failures, "replayed_records",
                         (json_int_t)st.replayed_records, "space_waits", (json_int_t)st.waits,
                         "errors", (json_int_t)st.errors, "head_lsn", (json_int_t)st.head_lsn,
                         "last_error", st.last_error);
}
