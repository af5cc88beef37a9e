/* chap: digests against known vectors, encodings, challenge/verify, mutual CHAP. */
#include <criterion/criterion.h>
#include <string.h>

#include <openssl/evp.h>

#include "iscsi/chap.h"

static const char SECRET[] = "my-chap-secret";

/* H(id || secret || challenge) computed here in one shot, independently of chap_compute. */
static void reference_digest(const EVP_MD *md, uint8_t id, const char *secret,
                             const uint8_t *challenge, size_t clen, uint8_t *out)
{
        uint8_t buf[1 + 64 + CHAP_CHALLENGE_MAX];
        size_t slen = strlen(secret);
        buf[0] = id;
        memcpy(buf + 1, secret, slen);
        memcpy(buf + 1 + slen, challenge, clen);
        unsigned len = 0;
        cr_assert_eq(EVP_Digest(buf, 1 + slen + clen, out, &len, md, NULL), 1);
}

static void hex_to_bytes(const char *hex, uint8_t *out)
{
        for (size_t i = 0; hex[2 * i]; i++) {
                unsigned v;
                sscanf(hex + 2 * i, "%2x", &v);
                out[i] = (uint8_t)v;
        }
}

/* Vectors computed with Python hashlib: id 0x2a, secret "my-chap-secret", challenge 00..0f. */
Test(chap_digest, known_vectors)
{
        static const struct {
                enum chap_alg alg;
                const char *hex;
        } vectors[] = {
            {CHAP_ALG_MD5, "db6d93b563dbe3bb574aa7b7757a9d65"},
            {CHAP_ALG_SHA1, "589e1a462b8dbe535005d2ecaf2a0f304ad18975"},
            {CHAP_ALG_SHA256, "35604a2a3d2bc10658f1480c7d3872a23a2d50ae1a100ee7eb618d78f8266783"},
        };
        uint8_t challenge[16];
        for (int i = 0; i < 16; i++)
                challenge[i] = (uint8_t)i;
        for (size_t v = 0; v < sizeof(vectors) / sizeof(vectors[0]); v++) {
                uint8_t want[CHAP_DIGEST_MAX], got[CHAP_DIGEST_MAX];
                hex_to_bytes(vectors[v].hex, want);
                size_t dlen = chap_digest_len(vectors[v].alg);
                cr_assert_eq(dlen, strlen(vectors[v].hex) / 2);
                cr_assert_eq(
                    chap_compute(vectors[v].alg, 0x2a, SECRET, strlen(SECRET), challenge, 16, got),
                    0);
                cr_assert(memcmp(got, want, dlen) == 0, "algorithm %d", vectors[v].alg);
        }
}

Test(chap_digest, matches_evp_one_shot_for_long_challenges)
{
        uint8_t challenge[1024];
        for (size_t i = 0; i < sizeof(challenge); i++)
                challenge[i] = (uint8_t)(i * 7 + 3);
        const EVP_MD *mds[] = {EVP_md5(), EVP_sha1(), EVP_sha256()};
        enum chap_alg algs[] = {CHAP_ALG_MD5, CHAP_ALG_SHA1, CHAP_ALG_SHA256};
        for (int a = 0; a < 3; a++) {
                uint8_t want[CHAP_DIGEST_MAX], got[CHAP_DIGEST_MAX];
                reference_digest(mds[a], 200, "s", challenge, sizeof(challenge), want);
                cr_assert_eq(chap_compute(algs[a], 200, "s", 1, challenge, sizeof(challenge), got),
                             0);
                cr_assert(memcmp(got, want, chap_digest_len(algs[a])) == 0);
        }
        uint8_t out[CHAP_DIGEST_MAX];
        cr_assert_eq(chap_compute((enum chap_alg)8, 1, "s", 1, challenge, 1, out), -1);
}

Test(chap_alg, first_supported_in_initiator_order)
{
        cr_assert_eq(chap_select_alg("7,6,5"), CHAP_ALG_SHA256);
        cr_assert_eq(chap_select_alg("5,7"), CHAP_ALG_MD5);
        cr_assert_eq(chap_select_alg("8,6"), CHAP_ALG_SHA1); /* 8 (SHA3-256) unsupported */
        cr_assert_eq(chap_select_alg("junk,,0x5"), CHAP_ALG_MD5);
        cr_assert_eq(chap_select_alg("1,2,3"), CHAP_ALG_NONE);
        cr_assert_eq(chap_select_alg(""), CHAP_ALG_NONE);
}

Test(chap_encoding, hex_and_base64)
{
        uint8_t out[32];
        cr_assert_eq(chap_decode("0x000102", out, sizeof(out)), 3);
        cr_assert_eq(out[2], 2);
        cr_assert_eq(chap_decode("0XABC", out, sizeof(out)), 2); /* odd: leading nibble */
        cr_assert_eq(out[0], 0x0a);
        cr_assert_eq(out[1], 0xbc);
        cr_assert_eq(chap_decode("0bAAECAwQFBgcICQoLDA0ODw==", out, sizeof(out)), 16);
        cr_assert_eq(out[15], 15);
        cr_assert_eq(chap_decode("0bAAECAwQFBgcICQoLDA0ODw", out, sizeof(out)), 16);
        cr_assert_eq(chap_decode("0bQQ", out, sizeof(out)), 1);
        cr_assert_eq(out[0], 'A');
        cr_assert_eq(chap_decode("0x", out, sizeof(out)), -1);
        cr_assert_eq(chap_decode("0xzz", out, sizeof(out)), -1);
        cr_assert_eq(chap_decode("0bA", out, sizeof(out)), -1);
        cr_assert_eq(chap_decode("0bQQ=Q", out, sizeof(out)), -1);
        cr_assert_eq(chap_decode("1234", out, sizeof(out)), -1);
        cr_assert_eq(chap_decode("0x0001020304", out, 4), -1, "longer than cap");
        char hex[16];
        uint8_t in[] = {0xde, 0xad, 0x01};
        cr_assert_eq(chap_encode_hex(in, 3, hex, sizeof(hex)), 0);
        cr_assert_str_eq(hex, "0xdead01");
        cr_assert_eq(chap_encode_hex(in, 3, hex, 8), -1);
}

/* Runs the target's challenge step and pulls out what it sent. */
static void challenge(struct chap_target *t, const char *chap_a, uint8_t *id, uint8_t *chal,
                      size_t *chal_len, enum chap_alg *alg)
{
        struct textbuf rsp;
        textbuf_init(&rsp);
        cr_assert_eq(chap_target_challenge(t, chap_a, &rsp), CHAP_OK);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)rsp.data, rsp.len, &l), TEXTKV_OK);
        *alg = (enum chap_alg)atoi(textkv_find(&l, "CHAP_A"));
        *id = (uint8_t)atoi(textkv_find(&l, "CHAP_I"));
        long n = chap_decode(textkv_find(&l, "CHAP_C"), chal, CHAP_CHALLENGE_MAX);
        cr_assert_geq(n, CHAP_CHALLENGE_MIN);
        *chal_len = (size_t)n;
        textkv_list_free(&l);
        textbuf_free(&rsp);
}

static void response_hex(enum chap_alg alg, uint8_t id, const char *secret, const uint8_t *chal,
                         size_t len, char *hex)
{
        uint8_t r[CHAP_DIGEST_MAX];
        cr_assert_eq(chap_compute(alg, id, secret, strlen(secret), chal, len, r), 0);
        chap_encode_hex(r, chap_digest_len(alg), hex, 2 * CHAP_DIGEST_MAX + 3);
}

Test(chap_target, one_way_exchange_each_algorithm)
{
        const char *lists[] = {"5", "6", "7"};
        for (int i = 0; i < 3; i++) {
                struct chap_target t;
                uint8_t id, chal[CHAP_CHALLENGE_MAX];
                size_t len;
                enum chap_alg alg;
                challenge(&t, lists[i], &id, chal, &len, &alg);
                cr_assert_eq(alg, (enum chap_alg)(5 + i));
                cr_assert_geq(len, chap_digest_len(alg));
                char hex[2 * CHAP_DIGEST_MAX + 3];
                response_hex(alg, id, SECRET, chal, len, hex);
                cr_assert_eq(chap_target_verify(&t, "alice", hex, "alice", SECRET), CHAP_OK);
                chap_target_clear(&t);
        }
}

Test(chap_target, challenges_are_fresh)
{
        struct chap_target a, b;
        uint8_t ida, idb, ca[CHAP_CHALLENGE_MAX], cb[CHAP_CHALLENGE_MAX];
        size_t la, lb;
        enum chap_alg alg;
        challenge(&a, "5", &ida, ca, &la, &alg);
        challenge(&b, "5", &idb, cb, &lb, &alg);
        cr_assert(memcmp(ca, cb, la) != 0);
}

Test(chap_target, wrong_secret_wrong_user_malformed_missing)
{
        struct chap_target t;
        uint8_t id, chal[CHAP_CHALLENGE_MAX];
        size_t len;
        enum chap_alg alg;
        challenge(&t, "5", &id, chal, &len, &alg);
        char good[2 * CHAP_DIGEST_MAX + 3], bad[2 * CHAP_DIGEST_MAX + 3];
        response_hex(alg, id, SECRET, chal, len, good);
        response_hex(alg, id, "not-the-secret", chal, len, bad);
        cr_assert_eq(chap_target_verify(&t, "alice", bad, "alice", SECRET), CHAP_ERR_BAD_RESPONSE);
        cr_assert_eq(chap_target_verify(&t, "mallory", good, "alice", SECRET), CHAP_ERR_BAD_USER);
        cr_assert_eq(chap_target_verify(&t, "alic", good, "alice", SECRET), CHAP_ERR_BAD_USER);
        cr_assert_eq(chap_target_verify(&t, "alice", "0xzz", "alice", SECRET), CHAP_ERR_MALFORMED);
        cr_assert_eq(chap_target_verify(&t, "alice", "0x00", "alice", SECRET),
                     CHAP_ERR_BAD_RESPONSE, "truncated response");
        cr_assert_eq(chap_target_verify(&t, NULL, good, "alice", SECRET), CHAP_ERR_MISSING);
        cr_assert_eq(chap_target_verify(&t, "alice", NULL, "alice", SECRET), CHAP_ERR_MISSING);
        /* a user configured without a secret accepts nothing, not even the empty secret */
        char empty[2 * CHAP_DIGEST_MAX + 3];
        response_hex(alg, id, "", chal, len, empty);
        cr_assert_eq(chap_target_verify(&t, "alice", empty, "alice", NULL), CHAP_ERR_BAD_RESPONSE);
        cr_assert_eq(chap_target_verify(&t, "alice", empty, "alice", ""), CHAP_ERR_BAD_RESPONSE);
        /* the right answer computed for another identifier fails */
        response_hex(alg, (uint8_t)(id + 1), SECRET, chal, len, bad);
        cr_assert_eq(chap_target_verify(&t, "alice", bad, "alice", SECRET), CHAP_ERR_BAD_RESPONSE);
        /* base64 encoding of the right answer passes */
        uint8_t r[CHAP_DIGEST_MAX];
        chap_compute(alg, id, SECRET, strlen(SECRET), chal, len, r);
        char b64[64] = "0b";
        EVP_EncodeBlock((unsigned char *)b64 + 2, r, 16);
        cr_assert_eq(chap_target_verify(&t, "alice", b64, "alice", SECRET), CHAP_OK);
}

Test(chap_target, no_supported_algorithm)
{
        struct chap_target t;
        struct textbuf rsp;
        textbuf_init(&rsp);
        cr_assert_eq(chap_target_challenge(&t, "1,2", &rsp), CHAP_ERR_NO_ALGORITHM);
        cr_assert_eq(rsp.len, 0);
        textbuf_free(&rsp);
}

Test(chap_target, mutual_answer_and_reflection)
{
        struct chap_target t;
        uint8_t id, chal[CHAP_CHALLENGE_MAX];
        size_t len;
        enum chap_alg alg;
        challenge(&t, "7", &id, chal, &len, &alg);
        /* the initiator's own challenge to us */
        uint8_t ichal[24];
        for (size_t i = 0; i < sizeof(ichal); i++)
                ichal[i] = (uint8_t)(0xa0 + i);
        char ichal_hex[64];
        chap_encode_hex(ichal, sizeof(ichal), ichal_hex, sizeof(ichal_hex));
        struct textbuf rsp;
        textbuf_init(&rsp);
        cr_assert_eq(chap_target_answer(&t, "77", ichal_hex, "target-user", "target-secret", &rsp),
                     CHAP_OK);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)rsp.data, rsp.len, &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "CHAP_N"), "target-user");
        uint8_t want[CHAP_DIGEST_MAX], got[CHAP_DIGEST_MAX];
        reference_digest(EVP_sha256(), 77, "target-secret", ichal, sizeof(ichal), want);
        cr_assert_eq(chap_decode(textkv_find(&l, "CHAP_R"), got, sizeof(got)), 32);
        cr_assert(memcmp(got, want, 32) == 0);
        textkv_list_free(&l);

        /* our own challenge sent back is refused, in hex or base64 */
        char ours[2 * CHAP_CHALLENGE_MAX + 3];
        chap_encode_hex(chal, len, ours, sizeof(ours));
        textbuf_reset(&rsp);
        cr_assert_eq(chap_target_answer(&t, "1", ours, "target-user", "target-secret", &rsp),
                     CHAP_ERR_REFLECTED);
        char b64[128] = "0b";
        EVP_EncodeBlock((unsigned char *)b64 + 2, chal, (int)len);
        cr_assert_eq(chap_target_answer(&t, "1", b64, "target-user", "target-secret", &rsp),
                     CHAP_ERR_REFLECTED);
        cr_assert_eq(rsp.len, 0);

        cr_assert_eq(chap_target_answer(&t, "256", ichal_hex, "u", "s", &rsp), CHAP_ERR_MALFORMED);
        cr_assert_eq(chap_target_answer(&t, "1", NULL, "u", "s", &rsp), CHAP_ERR_MALFORMED);
        cr_assert_eq(chap_target_answer(&t, "1", ichal_hex, NULL, NULL, &rsp), CHAP_ERR_NO_MUTUAL);
        textbuf_free(&rsp);
}
