#include "iscsi/chap.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "iscsi/params.h"

static const EVP_MD *chap_md(enum chap_alg alg)
{
        switch (alg) {
        case CHAP_ALG_MD5:
                return EVP_md5();
        case CHAP_ALG_SHA1:
                return EVP_sha1();
        case CHAP_ALG_SHA256:
                return EVP_sha256();
        default:
                return NULL;
        }
}

size_t chap_digest_len(enum chap_alg alg)
{
        switch (alg) {
        case CHAP_ALG_MD5:
                return 16;
        case CHAP_ALG_SHA1:
                return 20;
        case CHAP_ALG_SHA256:
                return 32;
        default:
                return 0;
        }
}

enum chap_alg chap_select_alg(const char *list)
{
        const char *p = list;
        while (*p) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                char item[24];
                uint64_t v;
                if (len > 0 && len < sizeof(item)) {
                        memcpy(item, p, len);
                        item[len] = '\0';
                        if (iscsi_parse_number(item, &v) == 0 && chap_digest_len((enum chap_alg)v))
                                return (enum chap_alg)v;
                }
                if (!end)
                        break;
                p = end + 1;
        }
        return CHAP_ALG_NONE;
}

int chap_compute(enum chap_alg alg, uint8_t id, const void *secret, size_t secret_len,
                 const uint8_t *challenge, size_t challenge_len, uint8_t *out)
{
        const EVP_MD *md = chap_md(alg);
        if (!md)
                return -1;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -1;
        unsigned out_len = 0;
        int ok = EVP_DigestInit_ex(ctx, md, NULL) == 1 && EVP_DigestUpdate(ctx, &id, 1) == 1 &&
                 EVP_DigestUpdate(ctx, secret, secret_len) == 1 &&
                 EVP_DigestUpdate(ctx, challenge, challenge_len) == 1 &&
                 EVP_DigestFinal_ex(ctx, out, &out_len) == 1 && out_len == chap_digest_len(alg);
        EVP_MD_CTX_free(ctx);
        return ok ? 0 : -1;
}

/* ---- encodings (RFC 7143 section 6.1 binary-value) ---- */

static int hex_value(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static long decode_hex(const char *digits, uint8_t *out, size_t cap)
{
        size_t n = strlen(digits);
        size_t bytes = (n + 1) / 2;
        if (n == 0 || bytes > cap)
                return -1;
        /* An odd digit count means the first byte has one digit. */
        size_t i = 0, o = 0;
        if (n % 2) {
                int v = hex_value(digits[0]);
                if (v < 0)
                        return -1;
                out[o++] = (uint8_t)v;
                i = 1;
        }
        for (; i < n; i += 2) {
                int hi = hex_value(digits[i]), lo = hex_value(digits[i + 1]);
                if (hi < 0 || lo < 0)
                        return -1;
                out[o++] = (uint8_t)(hi << 4 | lo);
        }
        return (long)o;
}

static int base64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

static long decode_base64(const char *text, uint8_t *out, size_t cap)
{
        size_t n = strlen(text);
        while (n > 0 && text[n - 1] == '=')
                n--;
        if (n == 0 || n % 4 == 1 || strlen(text) - n > 2)
                return -1;
        size_t bytes = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
        if (bytes > cap)
                return -1;
        uint32_t acc = 0;
        unsigned bits = 0;
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                int v = base64_value(text[i]);
                if (v < 0)
                        return -1;
                acc = (acc << 6 | (uint32_t)v) & 0xffffff;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t)(acc >> bits);
                }
        }
        return (long)o;
}

long chap_decode(const char *text, uint8_t *out, size_t cap)
{
        if (text[0] != '0')
                return -1;
        if (text[1] == 'x' || text[1] == 'X')
                return decode_hex(text + 2, out, cap);
        if (text[1] == 'b' || text[1] == 'B')
                return decode_base64(text + 2, out, cap);
        return -1;
}

int chap_encode_hex(const uint8_t *bytes, size_t len, char *out, size_t cap)
{
        static const char digits[] = "0123456789abcdef";
        if (cap < 2 * len + 3)
                return -1;
        out[0] = '0';
        out[1] = 'x';
        for (size_t i = 0; i < len; i++) {
                out[2 + 2 * i] = digits[bytes[i] >> 4];
                out[3 + 2 * i] = digits[bytes[i] & 0xf];
        }
        out[2 + 2 * len] = '\0';
        return 0;
}

const char *chap_error_str(enum chap_error err)
{
        switch (err) {
        case CHAP_OK:
                return "ok";
        case CHAP_ERR_NO_ALGORITHM:
                return "no supported CHAP_A algorithm offered";
        case CHAP_ERR_RANDOM:
                return "random generator failed";
        case CHAP_ERR_MISSING:
                return "CHAP_N or CHAP_R missing";
        case CHAP_ERR_MALFORMED:
                return "malformed CHAP value";
        case CHAP_ERR_BAD_USER:
                return "unknown CHAP user name";
        case CHAP_ERR_BAD_RESPONSE:
                return "wrong CHAP response (secret mismatch)";
        case CHAP_ERR_REFLECTED:
                return "mutual CHAP challenge reflects ours";
        case CHAP_ERR_NO_MUTUAL:
                return "mutual CHAP requested but no target credentials configured";
        case CHAP_ERR_CRYPTO:
                return "digest computation failed";
        }
        return "unknown CHAP error";
}

/* ---- target side ---- */

enum chap_error chap_target_challenge(struct chap_target *t, const char *chap_a,
                                      struct textbuf *rsp)
{
        memset(t, 0, sizeof(*t));
        t->alg = chap_select_alg(chap_a);
        if (t->alg == CHAP_ALG_NONE)
                return CHAP_ERR_NO_ALGORITHM;
        size_t dlen = chap_digest_len(t->alg);
        t->challenge_len = dlen > CHAP_CHALLENGE_MIN ? dlen : CHAP_CHALLENGE_MIN;
        if (RAND_bytes(&t->id, 1) != 1 || RAND_bytes(t->challenge, (int)t->challenge_len) != 1)
                return CHAP_ERR_RANDOM;
        char hex[2 * CHAP_DIGEST_MAX + 3];
        chap_encode_hex(t->challenge, t->challenge_len, hex, sizeof(hex));
        textbuf_add_u32(rsp, "CHAP_A", (uint32_t)t->alg);
        textbuf_add_u32(rsp, "CHAP_I", t->id);
        textbuf_add(rsp, "CHAP_C", hex);
        return CHAP_OK;
}

/* Equal strings, compared without an early exit on the first differing byte. */
static bool names_equal(const char *a, const char *b)
{
        size_t la = strlen(a), lb = strlen(b);
        return la == lb && CRYPTO_memcmp(a, b, la) == 0;
}

enum chap_error chap_target_verify(const struct chap_target *t, const char *chap_n,
                                   const char *chap_r, const char *user, const char *secret)
{
        if (!chap_n || !chap_r)
                return CHAP_ERR_MISSING;
        uint8_t got[CHAP_CHALLENGE_MAX];
        long got_len = chap_decode(chap_r, got, sizeof(got));
        if (got_len < 0)
                return CHAP_ERR_MALFORMED;
        size_t dlen = chap_digest_len(t->alg);
        uint8_t want[CHAP_DIGEST_MAX];
        /* No (or an empty) secret configured: nothing may verify, not even an empty one. */
        bool secret_set = secret && secret[0];
        const char *key = secret_set ? secret : "";
        if (chap_compute(t->alg, t->id, key, strlen(key), t->challenge, t->challenge_len, want))
                return CHAP_ERR_CRYPTO;
        /* Both checks always run; their results are combined only at the end. */
        bool user_ok = user && names_equal(chap_n, user);
        bool response_ok =
            secret_set && (size_t)got_len == dlen && CRYPTO_memcmp(got, want, dlen) == 0;
        OPENSSL_cleanse(want, sizeof(want));
        if (!user_ok)
                return CHAP_ERR_BAD_USER;
        return response_ok ? CHAP_OK : CHAP_ERR_BAD_RESPONSE;
}

enum chap_error chap_target_answer(const struct chap_target *t, const char *chap_i,
                                   const char *chap_c, const char *mutual_user,
                                   const char *mutual_secret, struct textbuf *rsp)
{
        uint64_t id;
        uint8_t challenge[CHAP_CHALLENGE_MAX];
        if (!chap_i || !chap_c || iscsi_parse_number(chap_i, &id) != 0 || id > 255)
                return CHAP_ERR_MALFORMED;
        long len = chap_decode(chap_c, challenge, sizeof(challenge));
        if (len <= 0)
                return CHAP_ERR_MALFORMED;
        /* RFC 7143 12.1.3: a challenge equal to ours would let the initiator replay our own
         * answer back to us. */
        if ((size_t)len == t->challenge_len &&
            CRYPTO_memcmp(challenge, t->challenge, t->challenge_len) == 0)
                return CHAP_ERR_REFLECTED;
        if (!mutual_user || !mutual_secret || !mutual_secret[0])
                return CHAP_ERR_NO_MUTUAL;
        uint8_t response[CHAP_DIGEST_MAX];
        if (chap_compute(t->alg, (uint8_t)id, mutual_secret, strlen(mutual_secret), challenge,
                         (size_t)len, response) != 0)
                return CHAP_ERR_CRYPTO;
        char hex[2 * CHAP_DIGEST_MAX + 3];
        chap_encode_hex(response, chap_digest_len(t->alg), hex, sizeof(hex));
        OPENSSL_cleanse(response, sizeof(response));
        textbuf_add(rsp, "CHAP_N", mutual_user);
        textbuf_add(rsp, "CHAP_R", hex);
        return CHAP_OK;
}

void chap_target_clear(struct chap_target *t)
{
        OPENSSL_cleanse(t, sizeof(*t));
}
