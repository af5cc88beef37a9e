/* textkv: parsing of hostile data segments, response building, and chunking. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi/textkv.h"

static enum textkv_error parse_bytes(const char *bytes, size_t len, struct textkv_list *out)
{
        return textkv_parse((const uint8_t *)bytes, len, out);
}

/* sizeof a literal includes the compiler's NUL, which is the last pair's terminator. */
#define PARSE(lit, out) parse_bytes(lit, sizeof(lit) - 1 + 1, out)

Test(textkv, parses_pairs_in_order)
{
        struct textkv_list l;
        cr_assert_eq(PARSE("InitiatorName=iqn.1993-08.org.debian:01\0SessionType=Normal", &l),
                     TEXTKV_OK);
        cr_assert_eq(l.count, 2);
        cr_assert_str_eq(l.pairs[0].key, "InitiatorName");
        cr_assert_str_eq(l.pairs[0].value, "iqn.1993-08.org.debian:01");
        cr_assert_str_eq(l.pairs[1].key, "SessionType");
        cr_assert_str_eq(textkv_find(&l, "SessionType"), "Normal");
        cr_assert_null(textkv_find(&l, "TargetName"));
        textkv_list_free(&l);
}

Test(textkv, empty_segment_is_empty_list)
{
        struct textkv_list l;
        cr_assert_eq(textkv_parse(NULL, 0, &l), TEXTKV_OK);
        cr_assert_eq(l.count, 0);
        textkv_list_free(&l);
}

Test(textkv, value_may_be_empty_and_contain_equals)
{
        struct textkv_list l;
        cr_assert_eq(PARSE("CHAP_C=0bQUJD==\0X-empty=", &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "CHAP_C"), "0bQUJD==");
        cr_assert_str_eq(textkv_find(&l, "X-empty"), "");
        textkv_list_free(&l);
}

Test(textkv, padding_nuls_are_skipped)
{
        struct textkv_list l;
        static const char seg[] = "A=1\0\0\0B=2\0\0";
        cr_assert_eq(parse_bytes(seg, sizeof(seg) - 1, &l), TEXTKV_OK);
        cr_assert_eq(l.count, 2);
        textkv_list_free(&l);
}

Test(textkv, missing_final_nul_is_refused)
{
        struct textkv_list l;
        static const char seg[] = "A=1\0MaxBurstLength=26";
        cr_assert_eq(parse_bytes(seg, sizeof(seg) - 1, &l), TEXTKV_ERR_UNTERMINATED);
        cr_assert_eq(l.count, 0);
        cr_assert_null(l.pairs);
}

Test(textkv, malformed_pairs_are_refused)
{
        struct textkv_list l;
        cr_assert_eq(PARSE("NoEqualsHere", &l), TEXTKV_ERR_NO_EQUALS);
        cr_assert_eq(PARSE("=value", &l), TEXTKV_ERR_EMPTY_KEY);
        cr_assert_eq(PARSE("Bad Key=1", &l), TEXTKV_ERR_KEY_CHARS);
        cr_assert_eq(PARSE("1Key=1", &l), TEXTKV_ERR_KEY_CHARS);
        cr_assert_eq(PARSE("A=1\0A=2", &l), TEXTKV_ERR_DUPLICATE);
}

Test(textkv, key_length_limit_is_63)
{
        char seg[80];
        struct textkv_list l;
        memset(seg, 'K', 63);
        memcpy(seg + 63, "=v", 3);
        cr_assert_eq(parse_bytes(seg, 66, &l), TEXTKV_OK);
        textkv_list_free(&l);
        memset(seg, 'K', 64);
        memcpy(seg + 64, "=v", 3);
        cr_assert_eq(parse_bytes(seg, 67, &l), TEXTKV_ERR_KEY_TOO_LONG);
}

static enum textkv_error parse_value_of(const char *key, size_t value_len)
{
        size_t klen = strlen(key);
        char *seg = malloc(klen + value_len + 2);
        memcpy(seg, key, klen);
        seg[klen] = '=';
        memset(seg + klen + 1, 'a', value_len);
        seg[klen + 1 + value_len] = '\0';
        struct textkv_list l;
        enum textkv_error err = parse_bytes(seg, klen + value_len + 2, &l);
        textkv_list_free(&l);
        free(seg);
        return err;
}

Test(textkv, value_limits_255_and_8192_for_chap_binaries)
{
        cr_assert_eq(parse_value_of("TargetAlias", 255), TEXTKV_OK);
        cr_assert_eq(parse_value_of("TargetAlias", 256), TEXTKV_ERR_VALUE_TOO_LONG);
        cr_assert_eq(parse_value_of("CHAP_C", 8192), TEXTKV_OK);
        cr_assert_eq(parse_value_of("CHAP_R", 8193), TEXTKV_ERR_VALUE_TOO_LONG);
        cr_assert_eq(parse_value_of("CHAP_N", 256), TEXTKV_ERR_VALUE_TOO_LONG);
}

Test(textkv, utf8_values_checked)
{
        struct textkv_list l;
        cr_assert_eq(PARSE("InitiatorAlias=caf\xc3\xa9", &l), TEXTKV_OK);
        textkv_list_free(&l);
        cr_assert_eq(PARSE("InitiatorAlias=\xff\xfe", &l), TEXTKV_ERR_VALUE_ENCODING);
        cr_assert_eq(PARSE("InitiatorAlias=\xc0\xaf", &l),
                     TEXTKV_ERR_VALUE_ENCODING); /* overlong */
        cr_assert_eq(PARSE("InitiatorAlias=\xed\xa0\x80", &l), TEXTKV_ERR_VALUE_ENCODING);
        cr_assert_eq(PARSE("InitiatorAlias=\xe2\x82", &l), TEXTKV_ERR_VALUE_ENCODING);
}

Test(textkv, too_many_pairs_refused)
{
        struct textbuf b;
        textbuf_init(&b);
        for (int i = 0; i <= TEXTKV_MAX_PAIRS; i++) {
                char key[16];
                snprintf(key, sizeof(key), "X-k%d", i);
                textbuf_add_u32(&b, key, (uint32_t)i);
        }
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)b.data, b.len, &l), TEXTKV_ERR_TOO_MANY);
        textbuf_free(&b);
}

Test(textkv, random_bytes_never_crash)
{
        uint8_t buf[512];
        unsigned seed = 12345;
        for (int iter = 0; iter < 20000; iter++) {
                size_t len = (size_t)(rand_r(&seed) % sizeof(buf));
                for (size_t i = 0; i < len; i++) {
                        /* bias toward structure so parsing gets deep */
                        int r = rand_r(&seed) % 8;
                        buf[i] = r == 0 ? 0 : r == 1 ? '=' : (uint8_t)rand_r(&seed);
                }
                struct textkv_list l;
                enum textkv_error err = textkv_parse(buf, len, &l);
                if (err == TEXTKV_OK) {
                        for (size_t i = 0; i < l.count; i++)
                                cr_assert(strlen(l.pairs[i].key) <= TEXTKV_KEY_MAX);
                        textkv_list_free(&l);
                } else {
                        cr_assert_eq(l.count, 0);
                }
        }
}

Test(textbuf, builds_nul_separated_pairs)
{
        struct textbuf b;
        textbuf_init(&b);
        textbuf_add(&b, "HeaderDigest", "None");
        textbuf_add_u32(&b, "MaxRecvDataSegmentLength", 262144);
        textbuf_addf(&b, "TargetAddress", "%s:%d,%d", "10.0.0.1", 3260, 1);
        static const char want[] = "HeaderDigest=None\0MaxRecvDataSegmentLength=262144\0"
                                   "TargetAddress=10.0.0.1:3260,1";
        cr_assert_eq(b.len, sizeof(want));
        cr_assert(memcmp(b.data, want, sizeof(want)) == 0);
        cr_assert_not(b.failed);
        /* what we build, we parse back */
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)b.data, b.len, &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "TargetAddress"), "10.0.0.1:3260,1");
        textkv_list_free(&l);
        textbuf_free(&b);
}

Test(textbuf, grows_past_initial_capacity)
{
        struct textbuf b;
        textbuf_init(&b);
        for (int i = 0; i < 2000; i++) {
                char key[16];
                snprintf(key, sizeof(key), "X-key%d", i);
                cr_assert_eq(textbuf_add(&b, key, "value"), 0);
        }
        cr_assert_gt(b.len, 20000);
        cr_assert_not(b.failed);
        textbuf_free(&b);
}

Test(cursor, splits_into_pieces_of_at_most_max)
{
        uint8_t data[20000];
        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (uint8_t)i;
        struct textkv_cursor c;
        textkv_cursor_init(&c, data, sizeof(data));
        const uint8_t *piece;
        size_t len, total = 0;
        int pieces = 0;
        bool more;
        do {
                more = textkv_cursor_next(&c, 8192, &piece, &len);
                cr_assert_leq(len, 8192);
                cr_assert(memcmp(piece, data + total, len) == 0);
                total += len;
                pieces++;
        } while (more);
        cr_assert_eq(total, sizeof(data));
        cr_assert_eq(pieces, 3);
        cr_assert(textkv_cursor_done(&c));
}

Test(cursor, exact_multiple_has_no_empty_tail)
{
        uint8_t data[16384] = {0};
        struct textkv_cursor c;
        textkv_cursor_init(&c, data, sizeof(data));
        const uint8_t *piece;
        size_t len;
        cr_assert(textkv_cursor_next(&c, 8192, &piece, &len));
        cr_assert_not(textkv_cursor_next(&c, 8192, &piece, &len));
        cr_assert_eq(len, 8192);
}

Test(cursor, empty_response_is_one_empty_piece)
{
        struct textkv_cursor c;
        textkv_cursor_init(&c, NULL, 0);
        const uint8_t *piece;
        size_t len = 99;
        cr_assert_not(textkv_cursor_next(&c, 8192, &piece, &len));
        cr_assert_eq(len, 0);
}
