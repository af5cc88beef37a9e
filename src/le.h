/* le: little-endian integers in byte buffers and the FNV-1a name hash, for the formats isergw
 * defines itself (the write log, the mirror protocol). Stateless inline helpers. */
#ifndef ISERGW_SRC_LE_H
#define ISERGW_SRC_LE_H

#include <stdint.h>

static inline void le_put16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
}

static inline void le_put32(uint8_t *p, uint32_t v)
{
        for (int i = 0; i < 4; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static inline void le_put64(uint8_t *p, uint64_t v)
{
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t le_get16(const uint8_t *p)
{
        return (uint16_t)(p[0] | p[1] << 8);
}

static inline uint32_t le_get32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le_get64(const uint8_t *p)
{
        return (uint64_t)le_get32(p) | (uint64_t)le_get32(p + 4) << 32;
}

/* FNV-1a 64 of a string: the stable keys of names on disk and on the wire (write log LUN
 * keys, mirror volume keys). */
static inline uint64_t fnv1a64(const char *s)
{
        uint64_t h = 0xcbf29ce484222325ull;
        for (; *s; s++)
                h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
        return h;
}

#endif
