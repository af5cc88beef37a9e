/* textkv: the iSCSI text format (RFC 7143 section 6.1) used by Login and Text PDUs. Owns
 * parsing a data segment of "key=value\0" pairs into a list (safe on any bytes), building
 * responses in a growable buffer, and cutting a long response into pieces that fit the peer's
 * MaxRecvDataSegmentLength (sent with the C bit; each piece is answered by an empty request).
 * Knows no key meanings beyond the per-key value length limit. */
#ifndef ISERGW_ISCSI_TEXTKV_H
#define ISERGW_ISCSI_TEXTKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TEXTKV_KEY_MAX         63   /* bytes in a key name */
#define TEXTKV_VALUE_MAX       255  /* bytes in a value, most keys */
#define TEXTKV_LARGE_VALUE_MAX 8192 /* bytes in a CHAP_C / CHAP_R value (encoded binary) */
#define TEXTKV_MAX_PAIRS       256  /* more pairs than any sane login needs */

struct textkv_pair {
        const char *key;   /* NUL-terminated, 1..63 bytes of [A-Za-z0-9.+@_#-] */
        const char *value; /* NUL-terminated, valid UTF-8, may be empty */
};

/* The pairs of one data segment, in arrival order. Strings live in 'storage'. */
struct textkv_list {
        struct textkv_pair *pairs;
        size_t count;
        char *storage;
};

enum textkv_error {
        TEXTKV_OK = 0,
        TEXTKV_ERR_NO_EQUALS,      /* a pair without '=' */
        TEXTKV_ERR_EMPTY_KEY,      /* "=value" */
        TEXTKV_ERR_KEY_TOO_LONG,   /* key over 63 bytes */
        TEXTKV_ERR_KEY_CHARS,      /* key with a byte outside the standard-label set */
        TEXTKV_ERR_VALUE_TOO_LONG, /* value over the key's limit */
        TEXTKV_ERR_VALUE_ENCODING, /* value is not UTF-8 */
        TEXTKV_ERR_UNTERMINATED,   /* last pair not followed by NUL */
        TEXTKV_ERR_DUPLICATE,      /* same key twice in one segment */
        TEXTKV_ERR_TOO_MANY,       /* over TEXTKV_MAX_PAIRS */
        TEXTKV_ERR_NOMEM,
};

/* Parses len bytes (any content; data may be NULL when len is 0). Empty entries (a NUL
 * right after a NUL, as in padding) are skipped. On success fills *out, which the caller
 * releases with textkv_list_free; on error *out is empty. */
enum textkv_error textkv_parse(const uint8_t *data, size_t len, struct textkv_list *out);
void textkv_list_free(struct textkv_list *list);
const char *textkv_error_str(enum textkv_error err);

/* The value of key, or NULL. */
const char *textkv_find(const struct textkv_list *list, const char *key);

/* Longest value (bytes) a key may carry: TEXTKV_LARGE_VALUE_MAX for CHAP_C and CHAP_R,
 * TEXTKV_VALUE_MAX for the rest. */
size_t textkv_value_limit(const char *key);

/* A growable "key=value\0" buffer. A failed append (no memory or over TEXTBUF_MAX) leaves
 * the buffer as it was and sets 'failed', so callers may append several pairs and check once. */
#define TEXTBUF_MAX (16u << 20)

struct textbuf {
        char *data;
        size_t len;
        size_t cap;
        bool failed;
};

void textbuf_init(struct textbuf *b);
void textbuf_free(struct textbuf *b);
void textbuf_reset(struct textbuf *b); /* empties, keeps the memory, clears 'failed' */
int textbuf_add(struct textbuf *b, const char *key, const char *value);
int textbuf_addf(struct textbuf *b, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int textbuf_add_u32(struct textbuf *b, const char *key, uint32_t value);
/* Appends raw bytes (already in "key=value\0" form). */
int textbuf_append(struct textbuf *b, const void *bytes, size_t len);

/* Walks a response in pieces of at most 'max' bytes. A piece may split a pair: the text
 * format allows pairs to span PDUs. */
struct textkv_cursor {
        const uint8_t *data;
        size_t len;
        size_t off;
};

void textkv_cursor_init(struct textkv_cursor *c, const void *data, size_t len);
/* Next piece; returns true when more bytes remain after it (send this piece with C=1). An
 * empty response yields one empty piece. max must be > 0. */
bool textkv_cursor_next(struct textkv_cursor *c, size_t max, const uint8_t **piece,
                        size_t *piece_len);
bool textkv_cursor_done(const struct textkv_cursor *c);

#endif
