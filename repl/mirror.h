/* repl/mirror: the primary side of a mirrored volume (RD1). Owns the connection to the peer
 * gateway (on the volume's home reactor), the window of writes the peer has not acknowledged,
 * heartbeats and timeouts, the degraded mode (changed regions recorded in repl/state before a
 * write is acknowledged) and the resync of those regions. Sits in front of the volume's cache
 * through volume_set_mirror(): a write completes once the local copy and the peer have it. */
#ifndef ISERGW_REPL_MIRROR_H
#define ISERGW_REPL_MIRROR_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache/volume.h"
#include "repl/link.h"

struct mirror;
struct reactor;
struct repl_state;

struct mirror_conf {
        const char *name;              /* for logs: "TARGET LUN N" */
        const char *id;                /* mirror_id: the volume's name on both gateways */
        const char *peer;              /* HOST:PORT */
        enum repl_transport transport; /* mirror_transport: auto tries RDMA, then TCP */
        const char *source;            /* RDMA: the local address to connect from, or NULL */
        uint64_t size;
        uint32_t block_size;
        uint32_t timeout_ms;  /* the peer silent this long: degraded */
        uint64_t resync_rate; /* bytes per second; 0: as fast as it goes */
        bool strict;          /* the peer acknowledges once its backend has a write */
        struct reactor *home;
        struct volume *volume;
        struct repl_state *state;
};

extern const struct volume_mirror_ops mirror_volume_ops;

/* Starts connecting (on conf->home, which must be running). NULL on a bad peer address. */
struct mirror *mirror_create(const struct mirror_conf *conf);
/* Closes the connection and stops the timers; on a running home reactor, before it stops.
 * Writes still waiting for the peer complete as in degraded mode. */
void mirror_stop(struct mirror *m);
void mirror_destroy(struct mirror *m);

/* Operations (any thread): sever stops mirroring (degraded, no reconnect) until establish;
 * establish with full copies every region. 0 or -errno. */
int mirror_sever(struct mirror *m);
int mirror_establish(struct mirror *m, bool full);
/* Demote: this side stops being primary (the caller stops serving the LUN first). */
void mirror_forget_peer(struct mirror *m);

/* The status entry (docs/status.md "mirror"). Any thread. */
json_t *mirror_json(struct mirror *m);

#endif
