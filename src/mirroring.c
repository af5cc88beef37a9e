/* The daemon's side of mirroring (repl/): which LUNs are mirrored and in which role, their
 * state files under var_dir, the peer listener, the status entries and the operations. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/mirror.h"
#include "repl/proto.h"
#include "repl/server.h"
#include "repl/state.h"
#include "src/daemon_internal.h"
#include "src/log.h"

/* What the status says of a LUN's start-up hold (daemon_lun.mirror_startup; docs/status.md). */
enum lun_startup {
        LS_NONE, /* not a primary at start, or no hold */
        LS_WAITING,
        LS_PAIRED,
        LS_ALONE,
        LS_STEPPED_DOWN,
        LS_HELD,
        LS_OPERATOR, /* a promote or demote ended it */
};
static const char *const startup_names[] = {"",
                                            "waiting for the peer",
                                            "paired",
                                            "peer unreachable: serving degraded",
                                            "stepped down: peer promoted",
                                            "held: the peer is primary too",
                                            "ended by the operator"};

static bool mirrored(const struct daemon_lun *l)
{
        return l->conf->mirror_role != NULL;
}

static int start_server(struct daemon *d)
{
        char host[64], port[8];
        if (repl_split_hostport(d->cfg->mirror_listen, host, sizeof(host), port) < 0)
                return -1;
        d->repl_server =
            repl_server_create(d->reactors[0], host, (uint16_t)strtoul(port, NULL, 10));
        return d->repl_server ? 0 : -1;
}

static struct reactor *home_of(struct daemon *d, const struct daemon_lun *l)
{
        return d->reactors[(unsigned)(l - d->luns) % d->nreactors];
}

static int open_state(struct daemon *d, struct daemon_lun *l)
{
        if (l->conf->mirror_id)
                snprintf(l->mirror_id, sizeof(l->mirror_id), "%s", l->conf->mirror_id);
        else
                snprintf(l->mirror_id, sizeof(l->mirror_id), "%.60s/%u", l->target->name,
                         l->conf->number);
        char path[4200];
        snprintf(path, sizeof(path), "%s/mirror-%016" PRIx64 ".state", d->cfg->var_dir,
                 repl_volume_key(l->mirror_id));
        enum repl_role role =
            strcmp(l->conf->mirror_role, "primary") == 0 ? REPL_ROLE_PRIMARY : REPL_ROLE_SECONDARY;
        l->mirror_state = repl_state_open(path, volume_size(l->volume),
                                          (uint32_t)d->cfg->mirror_region_size, role);
        if (!l->mirror_state)
                return -1;
        if (repl_state_role(l->mirror_state) != role)
                log_warn("%s: mirror role %s from %s (an earlier promote or demote) overrides "
                         "mirror_role = %s",
                         l->name,
                         repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY ? "primary"
                                                                               : "secondary",
                         path, l->conf->mirror_role);
        return 0;
}

static void set_access(struct daemon_lun *l, enum scsi_lu_access access)
{
        atomic_store(&l->scsi.access, access);
}

/* The mirror's word on the start-up hold (on its home reactor): serve, stand by, or keep not
 * serving until the operator acts (docs/replication.md, "Start-up"). */
static void startup_outcome(void *ctx, enum mirror_startup outcome)
{
        struct daemon_lun *l = ctx;
        switch (outcome) {
        case MIRROR_START_PAIRED:
        case MIRROR_START_ALONE:
                atomic_store(&l->mirror_startup,
                             outcome == MIRROR_START_PAIRED ? LS_PAIRED : LS_ALONE);
                set_access(l, SCSI_LU_READY);
                log_info("%s: serves initiators now", l->name);
                return;
        case MIRROR_START_STEPPED_DOWN:
                atomic_store(&l->mirror_startup, LS_STEPPED_DOWN);
                set_access(l, SCSI_LU_STANDBY);
                return;
        case MIRROR_START_HELD:
                atomic_store(&l->mirror_startup, LS_HELD);
                set_access(l, SCSI_LU_STANDBY);
                log_err("%s: NOT serving: restarted as primary, but the mirror peer is primary too "
                        "('isergw-ctl mirror' says which side to demote; a pairing or "
                        "mirror-promote here ends this)",
                        l->name);
                return;
        }
}

/* The mirror of a LUN that names its peer, whatever its role: a secondary's stands by until
 * a promote activates it (reverse mirroring, docs/replication.md). */
static int start_mirror(struct daemon *d, struct daemon_lun *l)
{
        if (!l->conf->mirror_peer) {
                if (repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY)
                        log_warn("%s: primary without mirror_peer: not mirrored", l->name);
                return 0;
        }
        /* RDMA connects from this gateway's mirror_listen address (its RDMA device). */
        char source[64] = "", port[8];
        if (d->cfg->mirror_listen &&
            repl_split_hostport(d->cfg->mirror_listen, source, sizeof(source), port) < 0)
                source[0] = '\0';
        struct mirror_conf mc = {.name = l->name,
                                 .id = l->mirror_id,
                                 .peer = l->conf->mirror_peer,
                                 .transport = repl_transport_parse(l->conf->mirror_transport),
                                 .source = source[0] ? source : NULL,
                                 .size = volume_size(l->volume),
                                 .block_size = l->conf->block_size,
                                 .timeout_ms = d->cfg->mirror_timeout_ms,
                                 .resync_rate = d->cfg->mirror_resync_rate,
                                 .strict = l->conf->mirror_strict,
                                 .home = home_of(d, l),
                                 .volume = l->volume,
                                 .state = l->mirror_state,
                                 .startup_wait_ms = d->cfg->mirror_startup_wait_ms,
                                 .startup = startup_outcome,
                                 .startup_ctx = l};
        /* A primary that starts serves nobody until its peer's answer says it may: the peer
         * may have been promoted while this gateway was down. NOT READY, BECOMING READY meanwhile:
         * an initiator retries it in place, so a normal restart fails no command. */
        if (repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY && mc.startup_wait_ms) {
                atomic_store(&l->mirror_startup, LS_WAITING);
                set_access(l, SCSI_LU_BECOMING_READY);
                log_info("%s: mirror primary: not serving until %s answers (at most %u ms)",
                         l->name, mc.peer, mc.startup_wait_ms);
        }
        l->mirror = mirror_create(&mc);
        if (!l->mirror)
                return -1;
        volume_set_mirror(l->volume, &mirror_volume_ops, l->mirror);
        return 0;
}

static int open_lun_mirror(struct daemon *d, struct daemon_lun *l)
{
        if (open_state(d, l) < 0)
                return -1;
        if (d->repl_server) {
                struct repl_server_volume sv = {.name = l->name,
                                                .id = l->mirror_id,
                                                .volume = l->volume,
                                                .state = l->mirror_state,
                                                .size = volume_size(l->volume),
                                                .block_size = l->conf->block_size};
                if (repl_server_add(d->repl_server, &sv) < 0)
                        return -1;
        }
        if (repl_state_role(l->mirror_state) == REPL_ROLE_SECONDARY) {
                if (!d->repl_server) {
                        log_err("%s: a mirror secondary needs mirror_listen in [gateway]", l->name);
                        return -1;
                }
                set_access(l, SCSI_LU_STANDBY);
                log_info("%s: mirror secondary of '%s': standby until promoted", l->name,
                         l->mirror_id);
        }
        return start_mirror(d, l);
}

int daemon_mirror_open(struct daemon *d)
{
        if (d->cfg->mirror_listen && start_server(d) < 0)
                return -1;
        for (unsigned i = 0; i < d->nluns; i++)
                if (mirrored(&d->luns[i]) && open_lun_mirror(d, &d->luns[i]) < 0)
                        return -1;
        return d->repl_server ? repl_server_listen(d->repl_server) : 0;
}

void daemon_mirror_stop(struct daemon *d)
{
        for (unsigned i = 0; i < d->nluns; i++)
                if (d->luns[i].mirror)
                        mirror_stop(d->luns[i].mirror);
        repl_server_stop(d->repl_server);
}

void daemon_mirror_destroy(struct daemon *d)
{
        for (unsigned i = 0; i < d->nluns; i++) {
                mirror_destroy(d->luns[i].mirror);
                d->luns[i].mirror = NULL;
                repl_state_close(d->luns[i].mirror_state);
                d->luns[i].mirror_state = NULL;
        }
        repl_server_destroy(d->repl_server);
        d->repl_server = NULL;
}

static json_t *lun_entry(struct daemon *d, struct daemon_lun *l)
{
        json_t *e = NULL;
        if (l->mirror && repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY)
                e = mirror_json(l->mirror);
        else if (d->repl_server)
                e = repl_server_json(d->repl_server, l->mirror_id);
        if (!e)
                e = json_pack("{s:s, s:s, s:s}", "mirror_id", l->mirror_id, "role",
                              repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY ? "primary"
                                                                                    : "secondary",
                              "state", "unmirrored");
        json_object_set_new(e, "target", json_string(l->target->name));
        json_object_set_new(e, "lun", json_integer(l->conf->number));
        json_object_set_new(e, "serving",
                            json_boolean(atomic_load(&l->scsi.access) == SCSI_LU_READY));
        json_object_set_new(e, "startup",
                            json_string(startup_names[atomic_load(&l->mirror_startup)]));
        return e;
}

json_t *daemon_mirror_json(struct daemon *d)
{
        json_t *list = json_array();
        for (unsigned i = 0; i < d->nluns; i++)
                if (d->luns[i].mirror_state)
                        json_array_append_new(list, lun_entry(d, &d->luns[i]));
        return json_pack("{s:o}", "volumes", list);
}

static bool flag(const json_t *args, const char *key)
{
        return json_is_true(json_object_get(args, key));
}

/* A promote or demote ends a start-up hold: the mirror reports nothing more, the caller says
 * what the LUN does. */
static void hold_ended_by_operator(struct daemon_lun *l)
{
        if (l->mirror)
                mirror_end_hold(l->mirror);
        int s = atomic_load(&l->mirror_startup);
        if (s == LS_WAITING || s == LS_HELD)
                atomic_store(&l->mirror_startup, LS_OPERATOR);
}

static int promote(struct daemon *d, struct daemon_lun *l, const json_t *args, char *err,
                   size_t errlen)
{
        bool primary = repl_state_role(l->mirror_state) == REPL_ROLE_PRIMARY;
        if (!primary && !d->repl_server) {
                snprintf(err, errlen, "%s: not a mirror secondary", l->name);
                return -1;
        }
        int rc =
            primary ? 0 : repl_server_promote(d->repl_server, l->mirror_id, flag(args, "force"));
        if (rc == 0)
                hold_ended_by_operator(l);
        /* Mirroring first, then initiators: no write the peer should get passes unrecorded. */
        if (rc == 0 && l->mirror)
                rc = mirror_activate(l->mirror);
        if (rc == 0) {
                set_access(l, SCSI_LU_READY);
                log_warn("%s: serves initiators now%s", l->name,
                         l->mirror ? "; mirrored to its peer once it is reachable and secondary"
                                   : " (no mirror_peer: unmirrored)");
        }
        if (rc == -EBUSY)
                snprintf(err, errlen,
                         "%s: in the middle of a resync, its data is inconsistent; promote with "
                         "force only if this copy is the only one left",
                         l->name);
        else if (rc < 0)
                snprintf(err, errlen, "%s: promote failed: %s", l->name, strerror(-rc));
        return rc;
}

/* The primary steps down: it stops serving initiators and mirroring, and takes the other
 * side's writes from now on. A clean handover (synchronized, the peer flushed everything)
 * leaves both sides naming the same data, so a promote of the peer resyncs only what it
 * writes; otherwise this side may hold writes the peer never got, and the peer's next pairing
 * copies every region (docs/replication.md, "Failover and switchover"). */
static int demote(struct daemon *d, struct daemon_lun *l, char *err, size_t errlen)
{
        if (repl_state_role(l->mirror_state) != REPL_ROLE_PRIMARY) {
                snprintf(err, errlen, "%s: already secondary", l->name);
                return -1;
        }
        if (!d->repl_server) {
                snprintf(err, errlen, "%s: demote needs mirror_listen in [gateway]", l->name);
                return -1;
        }
        hold_ended_by_operator(l);
        int was = atomic_exchange(&l->scsi.access, SCSI_LU_STANDBY);
        int rc = daemon_flush_lun(d, l, 60, false);
        if (rc < 0) {
                if (was == SCSI_LU_READY) /* a LUN held at start-up stays off */
                        set_access(l, was);
                snprintf(err, errlen, "%s: demote failed, still primary: flush: %s", l->name,
                         strerror(-rc));
                return -1;
        }
        int clean = l->mirror ? mirror_step_down(l->mirror, 2 * d->cfg->mirror_timeout_ms) : 0;
        rc = clean < 0 ? clean : repl_state_step_down(l->mirror_state, clean != 1);
        if (rc < 0) {
                snprintf(err, errlen, "%s: demote failed: %s", l->name, strerror(-rc));
                return -1;
        }
        log_warn("%s: demoted to secondary: standby, waiting for a primary (%s)", l->name,
                 clean == 1 ? "clean handover: the peer holds everything"
                            : "its next pairing copies every region");
        return 0;
}

int daemon_mirror_operate(struct daemon *d, struct daemon_lun *l, const char *op,
                          const json_t *args, json_t **result, char *err, size_t errlen)
{
        if (!l->mirror_state) {
                snprintf(err, errlen, "%s is not mirrored", l->name);
                return -1;
        }
        int rc;
        if (strcmp(op, "mirror-promote") == 0) {
                rc = promote(d, l, args, err, errlen);
        } else if (strcmp(op, "mirror-demote") == 0) {
                rc = demote(d, l, err, errlen);
        } else if (!l->mirror || repl_state_role(l->mirror_state) != REPL_ROLE_PRIMARY) {
                snprintf(err, errlen, "%s: %s is for a primary with a mirror_peer", l->name, op);
                return -1;
        } else if (strcmp(op, "mirror-sever") == 0) {
                rc = mirror_sever(l->mirror);
        } else if (strcmp(op, "mirror-establish") == 0) {
                rc = mirror_establish(l->mirror, flag(args, "full"));
        } else {
                snprintf(err, errlen, "unknown operation %s", op);
                return -1;
        }
        if (rc < 0) {
                if (!err[0])
                        snprintf(err, errlen, "%s: %s failed: %s", l->name, op, strerror(-rc));
                return -1;
        }
        *result = lun_entry(d, l);
        return 0;
}
