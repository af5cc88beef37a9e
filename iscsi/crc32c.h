/* crc32c: CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), the checksum of
 * iSCSI header and data digests (RFC 7143 section 13.1, examples in RFC 3720 appendix B.4).
 * Owns the SSE4.2 implementation, the portable slice-by-8 table implementation and the choice
 * between them, made per call from the CPU's features. Holds no state: the running CRC is the
 * caller's.
 *
 * Convention (the zlib crc32() one): start with crc = 0, pass the previous return value to
 * continue over more bytes; every return value is a finished CRC. Internally the register is
 * initialised to 0xFFFFFFFF and the result complemented, as RFC 3720 B.4 specifies, so
 *     crc32c(crc32c(0, a, la), b, lb) == crc32c(0, ab, la + lb)
 * and crc32c(0, 32 zero bytes, 32) == 0x8a9136aa.
 *
 * On the wire an iSCSI digest is the CRC in little-endian byte order (0x8a9136aa is sent as
 * aa 36 91 8a): use crc32c_put_digest() / crc32c_get_digest(). Padding bytes of a data segment
 * are part of its digest. */
#ifndef ISERGW_ISCSI_CRC32C_H
#define ISERGW_ISCSI_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* The best implementation this CPU has. Any alignment, any length (0 returns crc). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Over the iovcnt buffers in order, as if they were one. */
uint32_t crc32c_iov(uint32_t crc, const struct iovec *iov, int iovcnt);

/* The portable table implementation; same results as crc32c(). */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* True when crc32c_hw() may be called: x86-64 with SSE4.2 (checked at run time). */
bool crc32c_hw_available(void);

/* The SSE4.2 crc32 instruction implementation. Only when crc32c_hw_available(); on builds for
 * other architectures it is crc32c_sw(). */
uint32_t crc32c_hw(uint32_t crc, const void *buf, size_t len);

/* The 4 digest bytes as sent on the wire, and back. */
static inline void crc32c_put_digest(uint8_t out[4], uint32_t crc)
{
        out[0] = (uint8_t)crc;
        out[1] = (uint8_t)(crc >> 8);
        out[2] = (uint8_t)(crc >> 16);
        out[3] = (uint8_t)(crc >> 24);
}

static inline uint32_t crc32c_get_digest(const uint8_t in[4])
{
        return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
               (uint32_t)in[3] << 24;
}

#endif
