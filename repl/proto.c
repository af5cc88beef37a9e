/* The peer protocol's wire format (repl/proto.h). */
#include "repl/proto.h"

#include <string.h>

#include "iscsi/crc32c.h"
#include "src/le.h"

uint64_t repl_volume_key(const char *mirror_id)
{
        return fnv1a64(mirror_id);
}

/* magic 0, version 4, type 6, msg_id 8, volume 16, offset 24, length 32, seq 36, status 40,
 * span 44, payload_crc 52, flags 56, header crc 60 */
void repl_hdr_encode(const struct repl_hdr *h, uint8_t out[REPL_HDR_LEN])
{
        memset(out, 0, REPL_HDR_LEN);
        le_put32(out, REPL_MAGIC);
        le_put16(out + 4, REPL_VERSION);
        le_put16(out + 6, h->type);
        le_put64(out + 8, h->msg_id);
        le_put64(out + 16, h->volume);
        le_put64(out + 24, h->offset);
        le_put32(out + 32, h->length);
        le_put32(out + 36, h->seq);
        le_put32(out + 40, h->status);
        le_put64(out + 44, h->span);
        le_put32(out + 52, h->payload_crc);
        le_put32(out + 56, h->flags);
        le_put32(out + 60, crc32c(0, out, 60));
}

enum repl_status repl_hdr_decode(const uint8_t in[REPL_HDR_LEN], struct repl_hdr *h)
{
        if (le_get32(in) != REPL_MAGIC || le_get32(in + 60) != crc32c(0, in, 60))
                return REPL_E_PROTOCOL;
        *h = (struct repl_hdr){.version = le_get16(in + 4),
                               .type = le_get16(in + 6),
                               .msg_id = le_get64(in + 8),
                               .volume = le_get64(in + 16),
                               .offset = le_get64(in + 24),
                               .length = le_get32(in + 32),
                               .seq = le_get32(in + 36),
                               .status = le_get32(in + 40),
                               .span = le_get64(in + 44),
                               .payload_crc = le_get32(in + 52),
                               .flags = le_get32(in + 56)};
        if (h->version != REPL_VERSION)
                return REPL_E_VERSION;
        if (h->type < REPL_HELLO || h->type > REPL_SYNCED || h->length > REPL_MAX_PAYLOAD)
                return REPL_E_PROTOCOL;
        return REPL_OK;
}

/* id 0..63, size 64, block_size 72, role 76, gen 80, shared_gen 88, flags 96, reserved to 104 */
void repl_hello_encode(const struct repl_hello *hello, uint8_t out[REPL_HELLO_LEN])
{
        memset(out, 0, REPL_HELLO_LEN);
        memcpy(out, hello->id, strnlen(hello->id, REPL_ID_MAX));
        le_put64(out + 64, hello->size);
        le_put32(out + 72, hello->block_size);
        le_put32(out + 76, hello->role);
        le_put64(out + 80, hello->gen);
        le_put64(out + 88, hello->shared_gen);
        le_put32(out + 96, hello->flags);
}

bool repl_hello_decode(const uint8_t *in, size_t len, struct repl_hello *hello)
{
        if (len != REPL_HELLO_LEN)
                return false;
        memset(hello, 0, sizeof(*hello));
        memcpy(hello->id, in, REPL_ID_MAX);
        hello->id[REPL_ID_MAX] = 0;
        hello->size = le_get64(in + 64);
        hello->block_size = le_get32(in + 72);
        hello->role = le_get32(in + 76);
        hello->gen = le_get64(in + 80);
        hello->shared_gen = le_get64(in + 88);
        hello->flags = le_get32(in + 96);
        return hello->id[0] &&
               (hello->role == REPL_ROLE_PRIMARY || hello->role == REPL_ROLE_SECONDARY);
}

int repl_split_hostport(const char *hostport, char *host, size_t hostlen, char port[8])
{
        const char *colon = strrchr(hostport, ':');
        if (!colon || colon == hostport || !colon[1] || strlen(colon + 1) >= 8)
                return -1;
        const char *h = hostport, *e = colon;
        if (*h == '[' && e - h >= 2 && e[-1] == ']')
                h++, e--;
        if (e == h || (size_t)(e - h) >= hostlen)
                return -1;
        memcpy(host, h, (size_t)(e - h));
        host[e - h] = 0;
        memcpy(port, colon + 1, strlen(colon + 1) + 1);
        return 0;
}

const char *repl_status_str(uint32_t status)
{
        static const char *const names[] = {"ok",
                                            "unknown volume",
                                            "volume size mismatch",
                                            "checksum error",
                                            "device fault",
                                            "role conflict",
                                            "address out of range",
                                            "split brain",
                                            "unsupported version",
                                            "no space",
                                            "protocol error",
                                            "not paired"};
        return status < sizeof(names) / sizeof(names[0]) ? names[status] : "unknown error";
}
