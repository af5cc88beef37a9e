/* chap: CHAP (RFC 1994) as iSCSI uses it (RFC 7143 section 12.1.3), target side. Owns the
 * digest algorithms (CHAP_A 5 MD5, 6 SHA-1, 7 SHA-256, through OpenSSL EVP), challenge and
 * identifier generation, the 0x (hex) / 0b (base64) binary encodings, constant-time response
 * checking and the target's answer to a mutual-CHAP challenge. Knows nothing of login stages
 * or PDUs; the caller logs and decides the login status. */
#ifndef ISERGW_ISCSI_CHAP_H
#define ISERGW_ISCSI_CHAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi/textkv.h"

enum chap_alg {
        CHAP_ALG_NONE = 0,
        CHAP_ALG_MD5 = 5,
        CHAP_ALG_SHA1 = 6,
        CHAP_ALG_SHA256 = 7,
};

#define CHAP_DIGEST_MAX    32   /* SHA-256 */
#define CHAP_CHALLENGE_MIN 16   /* bytes of challenge we generate, at least */
#define CHAP_CHALLENGE_MAX 1024 /* RFC 7143: CHAP_C is at most 1024 bytes */
#define CHAP_NAME_MAX      TEXTKV_VALUE_MAX

/* The first algorithm of a CHAP_A list ("7,5") we support, in the initiator's order;
 * unknown or malformed entries are skipped. CHAP_ALG_NONE if there is none. */
enum chap_alg chap_select_alg(const char *list);
size_t chap_digest_len(enum chap_alg alg); /* 0 for an unsupported algorithm */

/* response = H(identifier || secret || challenge). Returns 0, or -1 for an unsupported
 * algorithm or a crypto failure. out holds chap_digest_len(alg) bytes. */
int chap_compute(enum chap_alg alg, uint8_t id, const void *secret, size_t secret_len,
                 const uint8_t *challenge, size_t challenge_len, uint8_t *out);

/* Decodes a binary value: "0x" / "0X" hex (an odd digit count gets a leading zero) or "0b" /
 * "0B" base64 (padding optional). Returns the byte count, or -1 when malformed, empty or
 * longer than cap. */
long chap_decode(const char *text, uint8_t *out, size_t cap);
/* Writes "0x" and lowercase hex of len bytes plus a NUL. Returns 0, or -1 if cap is short
 * (cap must be at least 2 * len + 3). */
int chap_encode_hex(const uint8_t *bytes, size_t len, char *out, size_t cap);

/* Why a CHAP step failed; for the log only. The initiator always sees the same status. */
enum chap_error {
        CHAP_OK = 0,
        CHAP_ERR_NO_ALGORITHM, /* CHAP_A lists nothing we support */
        CHAP_ERR_RANDOM,       /* RAND_bytes failed */
        CHAP_ERR_MISSING,      /* CHAP_N or CHAP_R absent */
        CHAP_ERR_MALFORMED,    /* CHAP_R / CHAP_I / CHAP_C not decodable */
        CHAP_ERR_BAD_USER,     /* CHAP_N is not the configured user */
        CHAP_ERR_BAD_RESPONSE, /* CHAP_R does not match the secret */
        CHAP_ERR_REFLECTED,    /* mutual: the initiator sent our own challenge back */
        CHAP_ERR_NO_MUTUAL,    /* mutual CHAP asked for but no target credentials set */
        CHAP_ERR_CRYPTO,
};

const char *chap_error_str(enum chap_error err);

/* One authentication exchange, target side: the challenge we sent and how to check the
 * answer. Wiped by chap_target_clear. */
struct chap_target {
        enum chap_alg alg;
        uint8_t id;
        uint8_t challenge[CHAP_CHALLENGE_MAX];
        size_t challenge_len;
};

/* Step 1 (initiator sent CHAP_A): picks the algorithm, makes identifier and challenge, and
 * appends CHAP_A, CHAP_I and CHAP_C to rsp. */
enum chap_error chap_target_challenge(struct chap_target *t, const char *chap_a,
                                      struct textbuf *rsp);

/* Step 2 (initiator sent CHAP_N and CHAP_R): checks them against the configured user and
 * secret. The user and response checks both run and are combined, so a wrong name and a
 * wrong secret take the same path. chap_n/chap_r may be NULL (missing). A NULL or empty
 * configured secret never verifies. */
enum chap_error chap_target_verify(const struct chap_target *t, const char *chap_n,
                                   const char *chap_r, const char *user, const char *secret);

/* Mutual step (initiator also sent CHAP_I and CHAP_C): refuses a challenge equal to ours,
 * then appends CHAP_N=<mutual_user> and CHAP_R=H(I || mutual_secret || C) to rsp. */
enum chap_error chap_target_answer(const struct chap_target *t, const char *chap_i,
                                   const char *chap_c, const char *mutual_user,
                                   const char *mutual_secret, struct textbuf *rsp);

void chap_target_clear(struct chap_target *t);

#endif
