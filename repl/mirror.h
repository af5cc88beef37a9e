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

/* How the start-up hold of a primary ended, or why it goes on (docs/replication.md,
 * "Start-up"): a primary that starts serves nobody until its first pairing attempt has an
 * outcome, so that a gateway that crashed and was replaced by a promote of its peer never
 * serves its stale copy. */
enum mirror_startup {
        MIRROR_START_PAIRED,       /* paired with the secondary: serve */
        MIRROR_START_ALONE,        /* no answer within the wait, or the pairing refused: serve
                                      degraded */
        MIRROR_START_STEPPED_DOWN, /* the peer was promoted and this side holds no write it
                                      lacks: this side is its secondary now (needs-full) */
        MIRROR_START_HELD,         /* the peer is primary too (split brain, or both primary):
                                      not serving until the operator acts */
};

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
        /* A primary's start-up hold: 0, none (it serves at once); otherwise the longest wait
         * for the peer's answer. Each outcome is reported on home, until the hold ends. */
        uint32_t startup_wait_ms;
        void (*startup)(void *ctx, enum mirror_startup outcome);
        void *startup_ctx;
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
/* A mirror starts in standby when its state file says secondary: it connects to no one and
 * passes writes to the local copy (recording them, and taking a new generation, since the peer
 * lacks them: only a write that raced a demote gets here). Activate after a promote, before
 * the LUN serves: it connects and pairs as a configured primary does. 0 or -errno. */
int mirror_activate(struct mirror *m);
/* The operator decided (a promote or demote of a primary in its start-up hold): the hold ends
 * with no further outcome report; the caller says what the LUN does. */
void mirror_end_hold(struct mirror *m);
/* Demote (the caller has stopped the LUN serving): waits up to timeout_ms for a clean
 * handover (synchronized, every write answered, one more FLUSH answered), then closes the link
 * and stands by. 1: clean, the peer holds every acknowledged write; 0: not clean; -errno. */
int mirror_step_down(struct mirror *m, unsigned timeout_ms);

/* The status entry (docs/status.md "mirror"). Any thread. */
json_t *mirror_json(struct mirror *m);

#endif
