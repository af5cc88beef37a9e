/* repl/proto: the peer protocol between two gateways that mirror a volume (docs/replication.md).
 * Owns the wire format: a 64-byte header (little-endian, CRC-32C of its own bytes) and an
 * optional payload with its own CRC-32C; the HELLO payload; the error causes (RD1-M2..M4).
 * Pure encoding and checking: no sockets, no state. */
#ifndef ISERGW_REPL_PROTO_H
#define ISERGW_REPL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REPL_MAGIC       0x4d574749u /* "IGWM" */
#define REPL_VERSION     1u
#define REPL_HDR_LEN     64u
#define REPL_MAX_PAYLOAD (4u << 20)
#define REPL_HELLO_LEN   104u
#define REPL_ID_MAX      64u /* mirror_id bytes, NUL padded */

enum repl_type {
        REPL_HELLO = 1,       /* primary -> secondary: who I am, which volume */
        REPL_HELLO_REPLY = 2, /* secondary's HELLO payload, status says whether it pairs */
        REPL_WRITE = 3,       /* offset, length = payload, seq: command order */
        REPL_UNMAP = 4,       /* offset; span: bytes */
        REPL_WRITE_ZEROES = 5,
        REPL_FLUSH = 6,
        REPL_REPLY = 7, /* msg_id echoed; status 0 or a cause */
        REPL_PING = 8,
        REPL_PONG = 9,
        REPL_SYNCED = 10, /* primary -> secondary: resync complete, adopt my generation */
};

enum repl_status {
        REPL_OK = 0,
        REPL_E_UNKNOWN_VOLUME = 1,
        REPL_E_SIZE_MISMATCH = 2,
        REPL_E_CHECKSUM = 3,
        REPL_E_DEVICE_FAULT = 4,
        REPL_E_ROLE = 5, /* the receiver is not the secondary of that volume */
        REPL_E_RANGE = 6,
        REPL_E_SPLIT_BRAIN = 7,
        REPL_E_VERSION = 8,
        REPL_E_NO_SPACE = 9,
        REPL_E_PROTOCOL = 10, /* bad framing, a message out of place */
        REPL_E_NOT_PAIRED = 11,
};

struct repl_hdr {
        uint16_t version;
        uint16_t type;
        uint64_t msg_id;
        uint64_t volume; /* repl_volume_key(mirror_id) */
        uint64_t offset;
        uint32_t length; /* payload bytes */
        uint32_t seq;    /* command-order ticket on the primary */
        uint32_t status;
        uint64_t span; /* UNMAP / WRITE_ZEROES: bytes */
        uint32_t payload_crc;
        uint32_t flags; /* REPL_F_* */
};

/* WRITE: acknowledge only once it is on the secondary's stable storage (strict mode). */
#define REPL_F_STABLE 1u

enum repl_role { REPL_ROLE_PRIMARY = 1, REPL_ROLE_SECONDARY = 2 };

/* HELLO and HELLO_REPLY payload. Generations detect split brain: 'gen' names the sender's
 * current data; 'shared_gen' the last one both sides held in sync. */
struct repl_hello {
        char id[REPL_ID_MAX + 1];
        uint64_t size;
        uint32_t block_size;
        uint32_t role;
        uint64_t gen, shared_gen;
        uint32_t flags; /* REPL_HELLO_F_* */
};

/* HELLO_REPLY: this secondary was a primary demoted without a clean handover; it may hold
 * writes the primary never had, so it needs every region (docs/replication.md). */
#define REPL_HELLO_F_NEEDS_FULL 1u

uint64_t repl_volume_key(const char *mirror_id);

void repl_hdr_encode(const struct repl_hdr *h, uint8_t out[REPL_HDR_LEN]);
/* REPL_OK, REPL_E_PROTOCOL (magic, CRC, unknown type, oversized payload) or REPL_E_VERSION. A
 * header that fails says nothing trustworthy, except that version mismatches still decode
 * msg_id so they can be answered. */
enum repl_status repl_hdr_decode(const uint8_t in[REPL_HDR_LEN], struct repl_hdr *h);

void repl_hello_encode(const struct repl_hello *hello, uint8_t out[REPL_HELLO_LEN]);
bool repl_hello_decode(const uint8_t *in, size_t len, struct repl_hello *hello);

const char *repl_status_str(uint32_t status);

/* Splits a mirror_peer or mirror_listen value, HOST:PORT or [IPV6]:PORT (config.c has checked
 * its shape), into host (no brackets) and port (digits). 0 or -1. */
int repl_split_hostport(const char *hostport, char *host, size_t hostlen, char port[8]);

#endif
