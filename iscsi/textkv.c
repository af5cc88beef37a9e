#include "iscsi/textkv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parsing ---- */

static bool is_key_char(unsigned char ch)
{
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
                return true;
        /* standard-label punctuation, plus '#' for X#/Y#/Z# public extension names */
        return ch == '.' || ch == '-' || ch == '+' || ch == '@' || ch == '_' || ch == '#';
}

static bool key_chars_valid(const char *key, size_t len)
{
        unsigned char first = (unsigned char)key[0];
        if (!((first >= 'A' && first <= 'Z') || (first >= 'a' && first <= 'z')))
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_key_char((unsigned char)key[i]))
                        return false;
        return true;
}

/* Length of the UTF-8 sequence starting at s (at most n bytes), or 0 if it is malformed:
 * overlong forms, surrogates and code points above U+10FFFF are refused. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
        unsigned char c = s[0];
        size_t need;
        uint32_t cp;
        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                need = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                need = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                need = 4;
                cp = c & 0x07;
        } else {
                return 0;
        }
        if (n < need)
                return 0;
        for (size_t i = 1; i < need; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        if (cp >= 0xd800 && cp <= 0xdfff)
                return 0;
        return need;
}

static bool utf8_valid(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;
        while (i < len) {
                size_t step = utf8_seq_len(p + i, len - i);
                if (step == 0)
                        return false;
                i += step;
        }
        return true;
}

size_t textkv_value_limit(const char *key)
{
        if (strcmp(key, "CHAP_C") == 0 || strcmp(key, "CHAP_R") == 0)
                return TEXTKV_LARGE_VALUE_MAX;
        return TEXTKV_VALUE_MAX;
}

const char *textkv_find(const struct textkv_list *list, const char *key)
{
        for (size_t i = 0; i < list->count; i++)
                if (strcmp(list->pairs[i].key, key) == 0)
                        return list->pairs[i].value;
        return NULL;
}

/* Checks one "key=value" entry (NUL already written at entry[len]) and splits it in place. */
static enum textkv_error split_entry(char *entry, size_t len, struct textkv_pair *pair)
{
        char *eq = memchr(entry, '=', len);
        if (!eq)
                return TEXTKV_ERR_NO_EQUALS;
        size_t key_len = (size_t)(eq - entry);
        if (key_len == 0)
                return TEXTKV_ERR_EMPTY_KEY;
        if (key_len > TEXTKV_KEY_MAX)
                return TEXTKV_ERR_KEY_TOO_LONG;
        if (!key_chars_valid(entry, key_len))
                return TEXTKV_ERR_KEY_CHARS;
        *eq = '\0';
        const char *value = eq + 1;
        size_t value_len = len - key_len - 1;
        if (value_len > textkv_value_limit(entry))
                return TEXTKV_ERR_VALUE_TOO_LONG;
        if (!utf8_valid(value, value_len))
                return TEXTKV_ERR_VALUE_ENCODING;
        pair->key = entry;
        pair->value = value;
        return TEXTKV_OK;
}

static enum textkv_error add_pair(struct textkv_list *list, const struct textkv_pair *pair)
{
        if (textkv_find(list, pair->key))
                return TEXTKV_ERR_DUPLICATE;
        if (list->count == TEXTKV_MAX_PAIRS)
                return TEXTKV_ERR_TOO_MANY;
        list->pairs[list->count++] = *pair;
        return TEXTKV_OK;
}

static enum textkv_error parse_entries(struct textkv_list *list, size_t len)
{
        char *text = list->storage;
        size_t pos = 0;
        while (pos < len) {
                char *nul = memchr(text + pos, '\0', len - pos);
                if (!nul)
                        return TEXTKV_ERR_UNTERMINATED;
                size_t entry_len = (size_t)(nul - (text + pos));
                if (entry_len > 0) {
                        struct textkv_pair pair;
                        enum textkv_error err = split_entry(text + pos, entry_len, &pair);
                        if (err == TEXTKV_OK)
                                err = add_pair(list, &pair);
                        if (err != TEXTKV_OK)
                                return err;
                }
                pos += entry_len + 1;
        }
        return TEXTKV_OK;
}

enum textkv_error textkv_parse(const uint8_t *data, size_t len, struct textkv_list *out)
{
        memset(out, 0, sizeof(*out));
        if (len == 0)
                return TEXTKV_OK;
        out->storage = malloc(len + 1);
        out->pairs = calloc(TEXTKV_MAX_PAIRS, sizeof(*out->pairs));
        if (!out->storage || !out->pairs) {
                textkv_list_free(out);
                return TEXTKV_ERR_NOMEM;
        }
        memcpy(out->storage, data, len);
        out->storage[len] = '\0'; /* a guard only: a missing terminator is still reported */
        enum textkv_error err = parse_entries(out, len);
        if (err != TEXTKV_OK)
                textkv_list_free(out);
        return err;
}

void textkv_list_free(struct textkv_list *list)
{
        free(list->pairs);
        free(list->storage);
        memset(list, 0, sizeof(*list));
}

const char *textkv_error_str(enum textkv_error err)
{
        switch (err) {
        case TEXTKV_OK:
                return "ok";
        case TEXTKV_ERR_NO_EQUALS:
                return "pair without '='";
        case TEXTKV_ERR_EMPTY_KEY:
                return "empty key";
        case TEXTKV_ERR_KEY_TOO_LONG:
                return "key too long";
        case TEXTKV_ERR_KEY_CHARS:
                return "invalid character in key";
        case TEXTKV_ERR_VALUE_TOO_LONG:
                return "value too long";
        case TEXTKV_ERR_VALUE_ENCODING:
                return "value is not UTF-8";
        case TEXTKV_ERR_UNTERMINATED:
                return "last pair not NUL-terminated";
        case TEXTKV_ERR_DUPLICATE:
                return "duplicate key";
        case TEXTKV_ERR_TOO_MANY:
                return "too many pairs";
        case TEXTKV_ERR_NOMEM:
                return "out of memory";
        }
        return "unknown error";
}

/* ---- building ---- */

void textbuf_init(struct textbuf *b)
{
        memset(b, 0, sizeof(*b));
}

void textbuf_free(struct textbuf *b)
{
        free(b->data);
        textbuf_init(b);
}

void textbuf_reset(struct textbuf *b)
{
        b->len = 0;
        b->failed = false;
}

static int textbuf_reserve(struct textbuf *b, size_t extra)
{
        if (extra > TEXTBUF_MAX || b->len + extra > TEXTBUF_MAX)
                return -1;
        size_t need = b->len + extra;
        if (need <= b->cap)
                return 0;
        size_t cap = b->cap ? b->cap : 256;
        while (cap < need)
                cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
                return -1;
        b->data = p;
        b->cap = cap;
        return 0;
}

int textbuf_append(struct textbuf *b, const void *bytes, size_t len)
{
        if (textbuf_reserve(b, len) != 0) {
                b->failed = true;
                return -1;
        }
        if (len)
                memcpy(b->data + b->len, bytes, len);
        b->len += len;
        return 0;
}

int textbuf_add(struct textbuf *b, const char *key, const char *value)
{
        size_t klen = strlen(key), vlen = strlen(value);
        if (textbuf_reserve(b, klen + vlen + 2) != 0) {
                b->failed = true;
                return -1;
        }
        memcpy(b->data + b->len, key, klen);
        b->data[b->len + klen] = '=';
        memcpy(b->data + b->len + klen + 1, value, vlen);
        b->data[b->len + klen + 1 + vlen] = '\0';
        b->len += klen + vlen + 2;
        return 0;
}

int textbuf_addf(struct textbuf *b, const char *key, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *value = NULL;
        int n = vasprintf(&value, fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->failed = true;
                return -1;
        }
        int rc = textbuf_add(b, key, value);
        free(value);
        return rc;
}

int textbuf_add_u32(struct textbuf *b, const char *key, uint32_t value)
{
        char num[16];
        snprintf(num, sizeof(num), "%u", value);
        return textbuf_add(b, key, num);
}

/* ---- chunking ---- */

void textkv_cursor_init(struct textkv_cursor *c, const void *data, size_t len)
{
        c->data = data;
        c->len = data ? len : 0;
        c->off = 0;
}

bool textkv_cursor_next(struct textkv_cursor *c, size_t max, const uint8_t **piece,
                        size_t *piece_len)
{
        if (max == 0)
                max = 1; /* never stall a caller that forgot to set a limit */
        size_t left = c->len - c->off;
        size_t n = left < max ? left : max;
        *piece = c->data ? c->data + c->off : NULL;
        *piece_len = n;
        c->off += n;
        return c->off < c->len;
}

bool textkv_cursor_done(const struct textkv_cursor *c)
{
        return c->off >= c->len;
}
