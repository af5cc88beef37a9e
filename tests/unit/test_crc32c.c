/* Tests for iscsi/crc32c: RFC 3720 B.4 vectors on both implementations, every table entry and
 * every length/alignment against a bit-at-a-time reference, hardware against table,
 * streaming, iovecs and the digest byte order. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "iscsi/crc32c.h"

typedef uint32_t (*crc_fn)(uint32_t crc, const void *buf, size_t len);

/* The definition itself: reflected polynomial, one bit at a time, pre/post inversion. */
static uint32_t crc_reference(uint32_t crc, const void *buf, size_t len)
{
        const uint8_t *p = buf;
        uint32_t c = ~crc;
        while (len--) {
                c ^= *p++;
                for (int bit = 0; bit < 8; bit++)
                        c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        }
        return ~c;
}

/* xorshift64: deterministic bytes, so a failure reproduces. */
static uint64_t next_random(uint64_t *state)
{
        uint64_t x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        return x;
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
        uint64_t state = seed;
        for (size_t i = 0; i < len; i++)
                buf[i] = (uint8_t)(next_random(&state) >> 24);
}

static const uint8_t rfc_read_pdu[48] = {
    0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
    0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static void check_rfc_vectors(crc_fn fn, const char *name)
{
        uint8_t buf[32];

        memset(buf, 0, sizeof(buf));
        cr_expect_eq(fn(0, buf, 32), 0x8a9136aa, "%s: 32 x 00", name);
        memset(buf, 0xff, sizeof(buf));
        cr_expect_eq(fn(0, buf, 32), 0x62a8ab43, "%s: 32 x ff", name);
        for (int i = 0; i < 32; i++)
                buf[i] = (uint8_t)i;
        cr_expect_eq(fn(0, buf, 32), 0x46dd794e, "%s: 00..1f", name);
        for (int i = 0; i < 32; i++)
                buf[i] = (uint8_t)(31 - i);
        cr_expect_eq(fn(0, buf, 32), 0x113fdb5c, "%s: 1f..00", name);
        cr_expect_eq(fn(0, rfc_read_pdu, 48), 0xd9963a56, "%s: read PDU", name);
        cr_expect_eq(fn(0, "123456789", 9), 0xe3069283, "%s: check value", name);
        cr_expect_eq(fn(0, NULL, 0), 0, "%s: empty", name);
        cr_expect_eq(fn(0x12345678, NULL, 0), 0x12345678, "%s: empty continues", name);
}

Test(crc32c, rfc3720_vectors_reference)
{
        check_rfc_vectors(crc_reference, "reference");
}

Test(crc32c, rfc3720_vectors_table)
{
        check_rfc_vectors(crc32c_sw, "sw");
}

Test(crc32c, rfc3720_vectors_hardware)
{
        if (!crc32c_hw_available())
                cr_skip_test("CPU has no SSE4.2");
        check_rfc_vectors(crc32c_hw, "hw");
}

Test(crc32c, rfc3720_vectors_dispatch)
{
        check_rfc_vectors(crc32c, "crc32c");
}

Test(crc32c, digest_wire_order)
{
        uint8_t zeros[32] = {0};
        uint8_t digest[4];
        crc32c_put_digest(digest, crc32c(0, zeros, sizeof(zeros)));
        const uint8_t wire[4] = {0xaa, 0x36, 0x91, 0x8a}; /* RFC 3720 B.4 */
        cr_assert_arr_eq(digest, wire, 4);
        cr_assert_eq(crc32c_get_digest(wire), 0x8a9136aa);

        uint8_t pdu[52];
        memcpy(pdu, rfc_read_pdu, 48);
        crc32c_put_digest(pdu + 48, crc32c(0, pdu, 48));
        const uint8_t pdu_wire[4] = {0x56, 0x3a, 0x96, 0xd9};
        cr_assert_arr_eq(pdu + 48, pdu_wire, 4);
}

/* Every byte value at every position of an 8-byte block reaches every entry of every table of
 * the slice-by-8 loop (each position uses its own table, indexed by byte ^ constant). */
Test(crc32c, every_table_entry)
{
        for (int pos = 0; pos < 8; pos++) {
                for (int value = 0; value < 256; value++) {
                        uint8_t block[8] = {0};
                        block[pos] = (uint8_t)value;
                        uint32_t want = crc_reference(0, block, 8);
                        cr_assert_eq(crc32c_sw(0, block, 8), want, "pos %d value %d", pos, value);
                        cr_assert_eq(crc32c_sw(0x5a5a5a5a, block, 8),
                                     crc_reference(0x5a5a5a5a, block, 8));
                }
        }
}

#define MAX_LEN   4096
#define MAX_ALIGN 16

Test(crc32c, table_matches_reference_all_lengths)
{
        static uint8_t buf[MAX_LEN + MAX_ALIGN];
        fill_random(buf, sizeof(buf), 1);
        for (size_t align = 0; align < 8; align++) {
                for (size_t len = 0; len <= MAX_LEN; len += (len < 600 ? 1 : 61)) {
                        uint32_t want = crc_reference(0, buf + align, len);
                        cr_assert_eq(crc32c_sw(0, buf + align, len), want, "align %zu len %zu",
                                     align, len);
                }
        }
}

Test(crc32c, hardware_matches_table_all_alignments_and_lengths)
{
        if (!crc32c_hw_available())
                cr_skip_test("CPU has no SSE4.2");
        static uint8_t buf[MAX_LEN + MAX_ALIGN];
        fill_random(buf, sizeof(buf), 2);
        for (size_t align = 0; align < MAX_ALIGN; align++) {
                for (size_t len = 0; len <= MAX_LEN; len++) {
                        uint32_t sw = crc32c_sw(0, buf + align, len);
                        uint32_t hw = crc32c_hw(0, buf + align, len);
                        if (sw != hw)
                                cr_assert_fail("align %zu len %zu: sw %08x hw %08x", align, len, sw,
                                               hw);
                }
        }
}

static void check_streaming(crc_fn fn, const char *name)
{
        static uint8_t buf[1024];
        fill_random(buf, sizeof(buf), 3);
        for (size_t len = 0; len <= 200; len++) {
                uint32_t whole = fn(0, buf, len);
                for (size_t cut = 0; cut <= len; cut++) {
                        uint32_t crc = fn(fn(0, buf, cut), buf + cut, len - cut);
                        if (crc != whole)
                                cr_assert_fail("%s: len %zu cut %zu", name, len, cut);
                }
        }
        uint64_t state = 4;
        uint32_t whole = fn(0, buf, sizeof(buf));
        for (int round = 0; round < 200; round++) {
                uint32_t crc = 0;
                size_t off = 0;
                while (off < sizeof(buf)) {
                        size_t piece = next_random(&state) % 70;
                        if (piece > sizeof(buf) - off)
                                piece = sizeof(buf) - off;
                        crc = fn(crc, buf + off, piece);
                        off += piece;
                }
                cr_assert_eq(crc, whole, "%s: round %d", name, round);
        }
}

Test(crc32c, streaming_equals_one_shot)
{
        check_streaming(crc32c_sw, "sw");
        check_streaming(crc32c, "crc32c");
        if (crc32c_hw_available())
                check_streaming(crc32c_hw, "hw");
}

Test(crc32c, iovec_equals_one_shot)
{
        static uint8_t buf[8192];
        fill_random(buf, sizeof(buf), 5);
        uint64_t state = 6;
        cr_assert_eq(crc32c_iov(0, NULL, 0), 0);
        cr_assert_eq(crc32c_iov(0xdeadbeef, NULL, 0), 0xdeadbeef);
        for (int round = 0; round < 300; round++) {
                size_t len = next_random(&state) % sizeof(buf);
                struct iovec iov[64];
                int n = 0;
                size_t off = 0;
                while (off < len && n < 63) {
                        size_t piece = next_random(&state) % 600; /* includes empty pieces */
                        if (piece > len - off)
                                piece = len - off;
                        iov[n++] = (struct iovec){.iov_base = buf + off, .iov_len = piece};
                        off += piece;
                }
                iov[n++] = (struct iovec){.iov_base = buf + off, .iov_len = len - off};
                cr_assert_eq(crc32c_iov(0, iov, n), crc32c_sw(0, buf, len), "round %d", round);
        }
}

Test(crc32c, iovec_continues_a_crc)
{
        uint8_t head[48];
        memcpy(head, rfc_read_pdu, sizeof(head));
        struct iovec iov[2] = {{.iov_base = head + 10, .iov_len = 20},
                               {.iov_base = head + 30, .iov_len = 18}};
        cr_assert_eq(crc32c_iov(crc32c(0, head, 10), iov, 2), 0xd9963a56);
}
