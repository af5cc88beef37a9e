/* iscsi: the iSCSI target layer's public face for the daemon. Owns targets (names, LUNs,
 * ACLs, CHAP), sessions, connections and tasks, and the per-reactor data-path state (data
 * pointer table, line partition, counters). Transports hand it connections; the SCSI layer
 * executes its commands. */
#ifndef ISERGW_ISCSI_ISCSI_H
#define ISERGW_ISCSI_ISCSI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct iscsi_gw;
struct iscsi_conn;
struct reactor;
struct line_pool;
struct scsi_lun;
struct xport_conn;
struct iscsi_transport_ops;

struct iscsi_gw_conf {
        uint32_t max_recv_dsl; /* ours, declared to initiators */
        uint32_t max_burst;
        uint32_t first_burst;
        uint32_t max_outstanding_r2t;
        bool immediate_data;
        bool initial_r2t;
        uint32_t queue_depth;    /* commands per session (CmdSN window) */
        uint32_t nop_interval_s; /* 0: no target NOP-In */
        uint32_t nop_timeout_s;
        const char *discovery_chap_user, *discovery_chap_secret;
        struct line_pool *pool;
        unsigned nreactors;
};

/* A configured portal as SendTargets sees it: numeric address (no brackets), port, transport. */
struct iscsi_portal_conf {
        const char *address;
        uint16_t port;
        bool iser;
};

struct iscsi_target_conf {
        const char *name;
        const char *alias;
        const char *chap_user, *chap_secret;
        const char *mutual_user, *mutual_secret;
        const char *const *allow; /* initiator names; NULL or "*" entry: everyone */
        unsigned nallow;
        const struct iscsi_portal_conf *portals; /* advertised in SendTargets; NULL: all */
        unsigned nportals;
};

struct iscsi_gw *iscsi_gw_create(const struct iscsi_gw_conf *conf);
void iscsi_gw_destroy(struct iscsi_gw *gw);
int iscsi_gw_add_portal(struct iscsi_gw *gw, const char *addr, uint16_t port, bool iser);

/* Gives emit each address a configured portal (address, iSER or not) really offers now. */
typedef void (*iscsi_address_emit_fn)(void *arg, const char *address);
typedef void (*iscsi_address_source_fn)(void *ctx, const char *address, bool iser,
                                        iscsi_address_emit_fn emit, void *arg);
/* Optional, set before serving: SendTargets then advertises, for each configured portal, the
 * addresses fn gives (a wildcard becomes the host's addresses; an address the host lost or an
 * iSER portal without RDMA, none). Unset, the portals are advertised as configured. fn runs on
 * the reactor thread answering the request. */
void iscsi_gw_set_address_source(struct iscsi_gw *gw, iscsi_address_source_fn fn, void *ctx);
int iscsi_gw_add_target(struct iscsi_gw *gw, const struct iscsi_target_conf *tc);
/* The gateway takes no ownership of lun. */
int iscsi_gw_add_lun(struct iscsi_gw *gw, const char *target, struct scsi_lun *lun);
int iscsi_gw_attach_reactor(struct iscsi_gw *gw, unsigned index, struct reactor *r);

/* A new transport connection on reactor index ri. */
struct iscsi_conn *iscsi_conn_create(struct iscsi_gw *gw, unsigned ri,
                                     const struct iscsi_transport_ops *ops, struct xport_conn *xc,
                                     const char *portal, const char *peer);

/* Closes every connection (from any thread; waits until they are gone). */
void iscsi_gw_close_all(struct iscsi_gw *gw);

/* Status snapshots (from any thread). */
json_t *iscsi_gw_sessions_json(struct iscsi_gw *gw);
json_t *iscsi_gw_stats_json(struct iscsi_gw *gw);
json_t *iscsi_gw_pool_json(struct iscsi_gw *gw);
json_t *iscsi_gw_targets_json(struct iscsi_gw *gw);
unsigned iscsi_gw_session_count(struct iscsi_gw *gw);

#endif
