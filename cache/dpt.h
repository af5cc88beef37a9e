/* dpt: the data pointer table (RD4-M5/M6). Owns the entries that say where solicited and
 * unsolicited write data lands: {data pointer, data offset, data length, owner, task, tag}.
 * A Target Transfer Tag is (entry index << 16) | task tag, so a Data-Out is placed with one
 * array lookup and a bounds check, and a stale, forged or cross-connection TTT is refused.
 * One table per reactor; used only from that reactor's thread. */
#ifndef ISERGW_CACHE_DPT_H
#define ISERGW_CACHE_DPT_H

#include <stdbool.h>
#include <stdint.h>

#define DPT_MAX_ENTRIES 65535u /* index 0xFFFF with tag 0xFFFF would be the reserved TTT */

struct dpt_entry {
        uint8_t *data_pointer; /* where byte data_offset of the transfer lands */
        uint32_t data_offset;  /* buffer offset (in the command's data) of the first byte */
        uint32_t data_length;
        uint32_t received;    /* bytes placed so far */
        uint32_t next_datasn; /* DataSN expected next within this burst */
        const void *owner;    /* the connection the R2T went out on */
        void *task;
        uint16_t tag;
        bool in_use;
};

struct dpt;

struct dpt *dpt_create(unsigned entries);
void dpt_destroy(struct dpt *d);

/* Fills a free entry and returns its TTT, or ISCSI reserved 0xFFFFFFFF when the table is
 * full. The caller chooses the tag (per task). */
uint32_t dpt_alloc(struct dpt *d, uint8_t *data_pointer, uint32_t data_offset, uint32_t data_length,
                   const void *owner, void *task, uint16_t tag);
/* Same, at a chosen index (for reproducing layouts in tests). */
uint32_t dpt_alloc_at(struct dpt *d, unsigned index, uint8_t *data_pointer, uint32_t data_offset,
                      uint32_t data_length, const void *owner, void *task, uint16_t tag);
void dpt_free(struct dpt *d, uint32_t ttt);

/* The live entry for ttt owned by owner, or NULL (unknown, stale, foreign). */
struct dpt_entry *dpt_lookup(struct dpt *d, uint32_t ttt, const void *owner);

/* Where a Data-Out of len bytes at buffer offset off lands, or NULL when it falls outside
 * the entry. RD4-M6: addr = data_pointer + (off - data_offset). */
uint8_t *dpt_place(const struct dpt_entry *e, uint32_t off, uint32_t len);

unsigned dpt_in_use(const struct dpt *d);
unsigned dpt_high_water(const struct dpt *d);
unsigned dpt_capacity(const struct dpt *d);

#endif
