/* repl/state: what one gateway remembers of one mirrored volume across restarts, in one file
 * under var_dir: its role, its data generation and the last generation both sides shared
 * (split-brain detection), and the bitmap of regions the peer may not have (RD1-M5). A bit is
 * on stable storage before the write that set it is acknowledged. Thread-safe. */
#ifndef ISERGW_REPL_STATE_H
#define ISERGW_REPL_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "repl/proto.h"

struct repl_state;

/* Opens or creates path. A new file takes role; gen is a fresh random generation and
 * shared_gen 0 (never paired: the first pairing copies everything). NULL (logged) on error or
 * when an existing file was made for another size or granularity. */
struct repl_state *repl_state_open(const char *path, uint64_t volume_size, uint32_t granularity,
                                   enum repl_role role);
void repl_state_close(struct repl_state *s);

enum repl_role repl_state_role(struct repl_state *s);
uint64_t repl_state_gen(struct repl_state *s);
uint64_t repl_state_shared_gen(struct repl_state *s);
/* Persists role and generations; 0 or -errno. */
int repl_state_set(struct repl_state *s, enum repl_role role, uint64_t gen, uint64_t shared_gen);
uint64_t repl_state_new_gen(void);
/* A secondary that has started receiving a resync holds a mix of old and new data until it
 * completes: inconsistent (not to be promoted without force). Persisted. */
bool repl_state_consistent(struct repl_state *s);
int repl_state_set_consistent(struct repl_state *s, bool consistent);
/* A primary demoted without a clean handover (it was not synchronized, or it had crashed) may
 * hold writes beyond its generation that no initiator saw acknowledged but the peer never
 * got: the primary that pairs with it next must copy every region. Persisted; cleared at
 * SYNCED and by a promote. */
bool repl_state_needs_full(struct repl_state *s);
int repl_state_set_needs_full(struct repl_state *s, bool needs_full);
/* A primary becomes secondary (a demote, or a start-up step-down): role and needs-full flag
 * in one write of the header, so a crash never leaves a secondary without the flag it
 * needs. Keeps the generations. 0 or -errno (then nothing changed). */
int repl_state_step_down(struct repl_state *s, bool needs_full);
/* This side is about to hold a write the peer lacks: if it still names the shared data
 * (gen == shared_gen), it takes a new generation first. Persisted; 0 or -errno. */
int repl_state_diverge(struct repl_state *s);

/* How the peer's data relates to this side's, from both sides' generations: the same data; the
 * peer's is what both last shared and this side went on (the peer is behind); the other way
 * round (the peer is ahead); or both went on apart (split brain). */
enum repl_gen_relation {
        REPL_GEN_SAME,
        REPL_GEN_PEER_BEHIND,
        REPL_GEN_PEER_AHEAD,
        REPL_GEN_DIVERGED,
};
enum repl_gen_relation repl_gen_relation(uint64_t gen, uint64_t shared, uint64_t peer_gen,
                                         uint64_t peer_shared);

uint32_t repl_state_granularity(const struct repl_state *s);
uint64_t repl_state_regions(const struct repl_state *s);
/* Marks the regions [offset, offset + length) touches; persists any new bit before it
 * returns. 0 or -errno (then the caller must not acknowledge the write). */
int repl_state_mark(struct repl_state *s, uint64_t offset, uint64_t length);
int repl_state_mark_all(struct repl_state *s);
/* Marks every region whose bit is set in bits (repl_state_regions() bits); persists. */
int repl_state_mark_bits(struct repl_state *s, const uint64_t *bits);
/* The first marked region at or after 'from', or -1. */
int64_t repl_state_next(struct repl_state *s, uint64_t from);
/* Clears region r (in memory; persisted by the next repl_state_flush or mark). */
void repl_state_clear(struct repl_state *s, uint64_t r);
/* Clears every region and persists (a secondary in sync: what it recorded as a primary is
 * void). 0 or -errno. */
int repl_state_clear_all(struct repl_state *s);
int repl_state_flush(struct repl_state *s);
uint64_t repl_state_count(struct repl_state *s);

#endif
