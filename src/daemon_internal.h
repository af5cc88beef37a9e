/* daemon_internal: the daemon's top-level context, shared by the files of src/ that build
 * and run it (daemon.c, writelog.c). Nothing outside src/ includes this. */
#ifndef ISERGW_SRC_DAEMON_INTERNAL_H
#define ISERGW_SRC_DAEMON_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache/volume.h"
#include "iscsi/scsi.h"
#include "src/config.h"

struct wlog;
struct repl_server;
struct repl_state;
struct mirror;
struct iser_mgr;
struct netaddr;

struct daemon_lun {
        const struct config_target *target;
        const struct config_lun *conf;
        struct backend *backend;
        struct volume *volume;
        struct scsi_lun scsi;
        char name[256]; /* "TARGET LUN N", for logs */
        /* Mirrored LUNs (mirroring.c) */
        char mirror_id[80];
        struct repl_state *mirror_state;
        struct mirror *mirror;     /* this side is the primary and has a peer */
        atomic_int mirror_startup; /* what became of its start-up hold (mirroring.c) */
};

struct daemon {
        const struct config *cfg;
        char *config_path;
        uint64_t started_ns;
        struct reactor *reactors[CONFIG_MAX_REACTORS];
        unsigned nreactors;
        struct line_pool *pool;
        struct cache *cache;
        struct iscsi_gw *gw;
        struct portal_mgr *portals;
        struct iser_mgr *iser;   /* NULL until an iSER portal is configured */
        struct netaddr *netaddr; /* NULL: no netlink, portals advertised as configured */
        struct daemon_lun *luns;
        unsigned nluns;
        struct status_server *status;
        struct wlog *wlog;               /* NULL: no write log */
        struct repl_server *repl_server; /* mirror_listen: this gateway takes mirrors */
        bool wlog_live;                  /* replayed and logging */
};

/* One I/O on v from a non-reactor thread, waited for (data: length bytes, or NULL). timeout_s 0
 * waits forever; at shutdown (at_exit) a second signal also ends the wait. Only flushes give
 * up early (-ETIMEDOUT). */
int daemon_volume_io(struct daemon *d, struct volume *v, enum volume_op op, uint64_t offset,
                     uint64_t length, void *data, unsigned timeout_s, bool at_exit);
/* Destages everything dirty of the LUN, then flushes its backend. */
int daemon_flush_lun(struct daemon *d, struct daemon_lun *l, unsigned timeout_s, bool at_exit);

/* writelog.c: the write log of the configuration (nothing when none is configured). Open
 * replays what a previous run left, destages it and starts logging; 0 or -1 (logged). */
int daemon_wlog_open(struct daemon *d);
/* At shutdown, after the sessions are closed: waits (a while) until every logged write has
 * reached its volume; false if some never did. */
bool daemon_wlog_drain(struct daemon *d);
/* Then, flushed says every LUN was flushed, so the log
 * can be emptied; otherwise it is kept for the next start. */
void daemon_wlog_close(struct daemon *d, bool flushed);
json_t *daemon_wlog_json(struct daemon *d);

/* mirroring.c: the mirrored LUNs (docs/replication.md). Open after the LUNs and the log,
 * before the portals; stop before the reactors stop. */
int daemon_mirror_open(struct daemon *d);
void daemon_mirror_stop(struct daemon *d);
void daemon_mirror_destroy(struct daemon *d);
json_t *daemon_mirror_json(struct daemon *d);
/* mirror-promote, -demote, -sever, -establish on LUN l. */
int daemon_mirror_operate(struct daemon *d, struct daemon_lun *l, const char *op,
                          const json_t *args, json_t **result, char *err, size_t errlen);

#endif
