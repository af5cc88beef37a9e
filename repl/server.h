/* repl/server: the secondary side of mirrored volumes. Owns the peer port's listener and its
 * connections (on one reactor): checks every message (framing, version, volume, range,
 * checksum) and answers each with the cause of a refusal (RD1-M4), applies a paired
 * primary's writes to the local volume in the primary's order, and records the generations
 * it adopts. Also promotes a secondary to primary. */
#ifndef ISERGW_REPL_SERVER_H
#define ISERGW_REPL_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct reactor;
struct repl_server;
struct repl_state;
struct volume;

struct repl_server_volume {
        const char *name; /* for logs */
        const char *id;   /* mirror_id */
        struct volume *volume;
        struct repl_state *state;
        uint64_t size;
        uint32_t block_size;
};

/* Binds addr:port (the reactor must be running); repl_server_listen() starts accepting. NULL
 * (logged) on failure. */
struct repl_server *repl_server_create(struct reactor *r, const char *addr, uint16_t port);
int repl_server_add(struct repl_server *s, const struct repl_server_volume *vol);
/* Starts accepting primaries (after the volumes are added). */
int repl_server_listen(struct repl_server *s);
/* On the running reactor set, before it stops: closes everything. */
void repl_server_stop(struct repl_server *s);
void repl_server_destroy(struct repl_server *s);

/* Promotes the volume named id: its role becomes primary (a new generation), peer writes are
 * refused from now on; the caller then lets its LUN serve. 0 also if it was primary already;
 * -EBUSY if it is in the middle of a resync (inconsistent) and !force; -ENOENT. */
int repl_server_promote(struct repl_server *s, const char *id, bool force);
/* The status entry of volume id (NULL if unknown). Any thread. */
json_t *repl_server_json(struct repl_server *s, const char *id);

#endif
