/* config: loading and validating the INI configuration; see config.h and docs/config.md.
 *
 * libinih splits "key = value" lines and strips comments. It reads lines through read_line(),
 * which:
 *   - counts lines (the handler of a stock inih build gets no line numbers),
 *   - strips leading whitespace, so an indented line never becomes an inih continuation line,
 *   - handles [section] headers itself (inih truncates section names to 49 bytes, too short
 *     for iSCSI names, and never reports a section without keys) and gives inih an empty
 *     line instead,
 *   - refuses lines longer than inih's buffer rather than letting inih split them,
 *   - ends the parse at the first error.
 * Keys are checked one by one as they arrive (key tables below), each section as a whole when
 * the next one starts (close_section), and references between sections at the end (finish).
 * The first error wins; its message never contains a secret. */
#include "src/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <unistd.h>

#include "cache/wlog.h"

#define KIB             1024ull
#define MIB             (1024 * KIB)
#define GIB             (1024 * MIB)
#define TIB             (1024 * GIB)
#define MAX_TEXT        255 /* names, aliases, CHAP user names */
#define MAX_PORTAL_NAME 32
#define MAX_GROUP_NAME  32
#define MAX_KEYS        48
#define ISCSI_MAX_LEN   16777215u /* 2^24 - 1: data segment and burst lengths */

static const char default_config_text[] = "[portal default]\n"
                                          "address = 127.0.0.1\n"
                                          "[target " CONFIG_DEFAULT_TARGET "]\n"
                                          "[lun " CONFIG_DEFAULT_TARGET ":0]\n"
                                          "path = var/lun0.img\n"
                                          "size = 1G\n";

enum section_kind { SEC_NONE, SEC_GATEWAY, SEC_PORTAL, SEC_TARGET, SEC_LUN };

enum key_type {
        K_TEXT,      /* no control characters, at most max bytes */
        K_SECRET,    /* a CHAP secret */
        K_BOOL,      /* yes/no, true/false, on/off, 1/0 */
        K_UINT,      /* decimal, min..max */
        K_SIZE,      /* bytes, with an optional K/M/G/T suffix, min..max */
        K_POW2,      /* a K_SIZE that is a power of two */
        K_BLOCKSIZE, /* 512 or 4096 */
        K_MODE,      /* octal permission bits */
        K_LOGLEVEL,
        K_TRANSPORT,
        K_BACKEND,
        K_REACTORS, /* 1..64 or "auto" */
        K_GROUP,
        K_ADDRESS,  /* IP literal, checked with the port when the section ends */
        K_HOSTPORT, /* IPV4:PORT or [IPV6]:PORT */
        K_PORTALS,  /* comma list of portal names, repeatable */
        K_ALLOW,    /* comma list of initiator names or "*", repeatable */
};

struct key_def {
        const char *name;
        enum key_type type;
        size_t offset; /* of the field in the section's struct */
        size_t width;  /* of that field, for integers */
        uint64_t min, max;
};

#define KEY(type, field, name, kind, lo, hi)                                                       \
        {                                                                                          \
                name, kind, offsetof(type, field), sizeof(((type *)0)->field), lo, hi              \
        }
#define LIST(name, kind)                                                                           \
        {                                                                                          \
                name, kind, 0, 0, 0, 0                                                             \
        }

static const struct key_def gateway_keys[] = {
    KEY(struct config, var_dir, "var_dir", K_TEXT, 1, PATH_MAX - 1),
    KEY(struct config, status_socket, "status_socket", K_TEXT, 1, PATH_MAX - 1),
    KEY(struct config, status_socket_mode, "status_socket_mode", K_MODE, 0, 0777),
    KEY(struct config, status_socket_group, "status_socket_group", K_GROUP, 0, 0),
    KEY(struct config, reactors, "reactors", K_REACTORS, 1, CONFIG_MAX_REACTORS),
    KEY(struct config, log_level, "log_level", K_LOGLEVEL, 0, 0),
    KEY(struct config, pool_size, "pool_size", K_SIZE, MIB, TIB),
    KEY(struct config, line_size, "line_size", K_POW2, 4 * KIB, MIB),
    KEY(struct config, nop_interval, "nop_interval", K_UINT, 0, 3600),
    KEY(struct config, nop_timeout, "nop_timeout", K_UINT, 1, 3600),
    KEY(struct config, metrics_listen, "metrics_listen", K_HOSTPORT, 1, 80),
    KEY(struct config, dirty_high_water, "dirty_high_water", K_UINT, 1, 100),
    KEY(struct config, dirty_low_water, "dirty_low_water", K_UINT, 0, 100),
    KEY(struct config, dirty_hard_limit, "dirty_hard_limit", K_UINT, 1, 95),
    KEY(struct config, dirty_max_age_ms, "dirty_max_age_ms", K_UINT, 1, 3600000),
    KEY(struct config, shutdown_flush_timeout, "shutdown_flush_timeout", K_UINT, 1, 86400),
    KEY(struct config, write_log, "write_log", K_TEXT, 1, PATH_MAX - 1),
    KEY(struct config, write_log_size, "write_log_size", K_SIZE, MIB, TIB),
    KEY(struct config, write_log_checkpoint_interval, "write_log_checkpoint_interval", K_UINT, 1,
        3600),
    KEY(struct config, mirror_listen, "mirror_listen", K_HOSTPORT, 1, 80),
    KEY(struct config, mirror_timeout_ms, "mirror_timeout_ms", K_UINT, 100, 600000),
    KEY(struct config, mirror_startup_wait_ms, "mirror_startup_wait_ms", K_UINT, 0, 3600000),
    KEY(struct config, mirror_region_size, "mirror_region_size", K_SIZE, 64 * KIB, GIB),
    KEY(struct config, mirror_resync_rate, "mirror_resync_rate", K_SIZE, 0, 100 * GIB),
    KEY(struct config, backend_initiator_name, "backend_initiator_name", K_TEXT, 1,
        CONFIG_ISCSI_NAME_MAX),
    KEY(struct config, iscsi.max_recv_data_segment_length, "max_recv_data_segment_length", K_SIZE,
        512, ISCSI_MAX_LEN),
    KEY(struct config, iscsi.max_burst_length, "max_burst_length", K_SIZE, 512, ISCSI_MAX_LEN),
    KEY(struct config, iscsi.first_burst_length, "first_burst_length", K_SIZE, 512, ISCSI_MAX_LEN),
    KEY(struct config, iscsi.max_outstanding_r2t, "max_outstanding_r2t", K_UINT, 1, 65535),
    KEY(struct config, iscsi.immediate_data, "immediate_data", K_BOOL, 0, 0),
    KEY(struct config, iscsi.initial_r2t, "initial_r2t", K_BOOL, 0, 0),
    KEY(struct config, discovery_chap.user, "discovery_chap_user", K_TEXT, 1, MAX_TEXT),
    KEY(struct config, discovery_chap.secret, "discovery_chap_secret", K_SECRET, 0, 0),
    KEY(struct config, discovery_chap.mutual_user, "discovery_mutual_user", K_TEXT, 1, MAX_TEXT),
    KEY(struct config, discovery_chap.mutual_secret, "discovery_mutual_secret", K_SECRET, 0, 0),
    {0},
};

static const struct key_def portal_keys[] = {
    KEY(struct config_portal, address, "address", K_ADDRESS, 0, 0),
    KEY(struct config_portal, port, "port", K_UINT, 1, 65535),
    KEY(struct config_portal, transport, "transport", K_TRANSPORT, 0, 0),
    {0},
};

static const struct key_def target_keys[] = {
    KEY(struct config_target, alias, "alias", K_TEXT, 1, MAX_TEXT),
    LIST("portals", K_PORTALS),
    LIST("allow", K_ALLOW),
    KEY(struct config_target, chap.user, "chap_user", K_TEXT, 1, MAX_TEXT),
    KEY(struct config_target, chap.secret, "chap_secret", K_SECRET, 0, 0),
    KEY(struct config_target, chap.mutual_user, "mutual_user", K_TEXT, 1, MAX_TEXT),
    KEY(struct config_target, chap.mutual_secret, "mutual_secret", K_SECRET, 0, 0),
    {0},
};

static const struct key_def lun_keys[] = {
    KEY(struct config_lun, backend, "backend", K_BACKEND, 0, 0),
    KEY(struct config_lun, path, "path", K_TEXT, 1, PATH_MAX - 1),
    KEY(struct config_lun, url, "url", K_TEXT, 1, PATH_MAX - 1),
    KEY(struct config_lun, size, "size", K_SIZE, 1, INT64_MAX),
    KEY(struct config_lun, block_size, "block_size", K_BLOCKSIZE, 0, 0),
    KEY(struct config_lun, physical_block_size, "physical_block_size", K_BLOCKSIZE, 0, 0),
    KEY(struct config_lun, bypass_threshold, "bypass_threshold", K_SIZE, 0, 1024 * MIB),
    KEY(struct config_lun, fault_injection, "fault_injection", K_BOOL, 0, 0),
    KEY(struct config_lun, create, "create", K_BOOL, 0, 0),
    KEY(struct config_lun, read_only, "read_only", K_BOOL, 0, 0),
    KEY(struct config_lun, write_cache, "write_cache", K_BOOL, 0, 0),
    KEY(struct config_lun, thin, "thin", K_BOOL, 0, 0),
    KEY(struct config_lun, removable, "removable", K_BOOL, 0, 0),
    KEY(struct config_lun, mirror_role, "mirror_role", K_TEXT, 1, 16),
    KEY(struct config_lun, mirror_peer, "mirror_peer", K_HOSTPORT, 1, 80),
    KEY(struct config_lun, mirror_id, "mirror_id", K_TEXT, 1, 64),
    KEY(struct config_lun, mirror_strict, "mirror_strict", K_BOOL, 0, 0),
    KEY(struct config_lun, mirror_transport, "mirror_transport", K_TEXT, 1, 8),
    {0},
};

_Static_assert(sizeof(gateway_keys) / sizeof(gateway_keys[0]) <= MAX_KEYS, "MAX_KEYS");
_Static_assert(sizeof(target_keys) / sizeof(target_keys[0]) <= MAX_KEYS, "MAX_KEYS");
_Static_assert(sizeof(lun_keys) / sizeof(lun_keys[0]) <= MAX_KEYS, "MAX_KEYS");

/* A portal name from a target's portals= list, resolved at the end. */
struct portal_ref {
        char *name;
        unsigned line;
};

/* What a target section leaves for finish(); parallel to cfg->targets. */
struct target_stage {
        struct portal_ref *refs;
        unsigned nrefs;
        bool allow_star;
        unsigned secret_line, mutual_secret_line;
};

/* A [lun] section; attached to its target at the end, since it may come first. */
struct lun_stage {
        char *target; /* normalised */
        struct config_lun lun;
        unsigned path_line;
};

struct parser {
        struct config *cfg;
        const char *source;
        FILE *file;       /* read from this, */
        const char *text; /* or from this */
        char *line;       /* the current raw line */
        size_t line_cap;
        unsigned lineno;

        enum section_kind kind;
        const struct key_def *keys;
        void *obj; /* the struct the current section's keys fill */
        unsigned index;
        unsigned section_line;
        unsigned key_line[MAX_KEYS]; /* where each key was given in this section; 0: not */

        unsigned gateway_line;
        unsigned discovery_secret_line, discovery_mutual_secret_line;
        struct target_stage *tstage;
        struct lun_stage *luns;
        unsigned nluns;

        bool failed;
        unsigned err_line; /* of the first error */
        char msg[512];
};

/* ---- errors and small helpers ---- */

/* Records the first error as "SOURCE:LINE: reason", or "SOURCE: reason" for line 0 (the file
 * as a whole could not be read). Always returns -1. */
__attribute__((format(printf, 3, 4))) static int fail(struct parser *p, unsigned line,
                                                      const char *fmt, ...)
{
        if (p->failed)
                return -1;
        p->failed = true;
        p->err_line = line ? line : p->lineno + 1;
        int n = line ? snprintf(p->msg, sizeof(p->msg), "%s:%u: ", p->source, line)
                     : snprintf(p->msg, sizeof(p->msg), "%s: ", p->source);
        if (n < 0 || (size_t)n >= sizeof(p->msg))
                return -1; /* a source name that long leaves no room for the reason */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->msg + n, sizeof(p->msg) - (size_t)n, fmt, ap);
        va_end(ap);
        return -1;
}

static int fail_oom(struct parser *p)
{
        return fail(p, p->lineno, "out of memory");
}

/* arr (count elements of size bytes) with room for one more, zeroed; NULL (error set) when
 * out of memory, arr untouched. */
static void *grow_array(struct parser *p, void *arr, unsigned count, size_t size)
{
        char *bigger = reallocarray(arr, (size_t)count + 1, size);
        if (!bigger) {
                fail_oom(p);
                return NULL;
        }
        memset(bigger + (size_t)count * size, 0, size);
        return bigger;
}

/* Appends a zeroed element to the array arr of count elements and yields a pointer to it, or
 * NULL when out of memory (arr unchanged). arr and count must be plain lvalues. */
#define APPEND(p, arr, count)                                                                      \
        ({                                                                                         \
                __typeof__(arr) grown_ = grow_array(p, arr, count, sizeof(*(arr)));                \
                grown_ ? ((arr) = grown_, &grown_[count]) : NULL;                                  \
        })

static char *dup_or_fail(struct parser *p, const char *s)
{
        char *copy = strdup(s);
        if (!copy)
                fail_oom(p);
        return copy;
}

static void free_secret(char *s)
{
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

static char *trim(char *s)
{
        while (*s == ' ' || *s == '\t')
                s++;
        size_t len = strlen(s);
        while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
                s[--len] = '\0';
        return s;
}

static void lower(char *s)
{
        for (; *s; s++)
                if (*s >= 'A' && *s <= 'Z')
                        *s = (char)(*s - 'A' + 'a');
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'f');
}

static bool is_alnum_lower(char c)
{
        return is_digit(c) || (c >= 'a' && c <= 'z');
}

static bool has_control_chars(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* "256M" for exact multiples, else the plain number: for range messages. */
static const char *format_size(char *buf, size_t len, uint64_t v)
{
        static const char suffix[] = "TGMK";
        for (int i = 0; i < 4; i++) {
                uint64_t unit = 1ull << (10 * (4 - i));
                if (v >= unit && v % unit == 0) {
                        snprintf(buf, len, "%llu%c", (unsigned long long)(v / unit), suffix[i]);
                        return buf;
                }
        }
        snprintf(buf, len, "%llu", (unsigned long long)v);
        return buf;
}

/* ---- value syntax ---- */

static int parse_decimal(const char *s, uint64_t *out)
{
        uint64_t v = 0;
        if (!is_digit(*s))
                return -1;
        for (; is_digit(*s); s++) {
                if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
                        return -1;
                v = v * 10 + (uint64_t)(*s - '0');
        }
        *out = v;
        return *s ? -1 : 0;
}

static int parse_size(const char *s, uint64_t *out)
{
        char digits[32];
        size_t n = strspn(s, "0123456789");
        if (n == 0 || n >= sizeof(digits))
                return -1;
        memcpy(digits, s, n);
        digits[n] = '\0';
        uint64_t v;
        if (parse_decimal(digits, &v) < 0)
                return -1;
        unsigned shift = 0;
        if (s[n]) {
                const char *units = strchr("KkMmGgTt", s[n]);
                if (!units || s[n + 1])
                        return -1;
                shift = 10 * (unsigned)((units - "KkMmGgTt") / 2 + 1);
        }
        if (shift && v > (UINT64_MAX >> shift))
                return -1;
        *out = v << shift;
        return 0;
}

static int parse_bool(const char *s, bool *out)
{
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
                if (strcasecmp(s, yes[i]) == 0 || strcasecmp(s, no[i]) == 0) {
                        *out = strcasecmp(s, yes[i]) == 0;
                        return 0;
                }
        }
        return -1;
}

/* A strict IP literal: dotted-quad IPv4, or IPv6 (with an optional %scope). */
static int parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
        memset(ss, 0, sizeof(*ss));
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                sin->sin_port = htons(port);
                *len = sizeof(*sin);
                return 0;
        }
        if (!strchr(host, ':'))
                return -1;
        struct addrinfo hints = {.ai_family = AF_INET6,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
        struct addrinfo *ai;
        char service[8];
        snprintf(service, sizeof(service), "%u", (unsigned)port);
        if (getaddrinfo(host, service, &hints, &ai) != 0)
                return -1;
        memcpy(ss, ai->ai_addr, ai->ai_addrlen);
        *len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return 0;
}

/* ---- iSCSI names (RFC 7143 "iSCSI Names", RFC 3722), given in lower case ---- */

static const char *iqn_problem(const char *s)
{
        if (!is_digit(s[0]) || !is_digit(s[1]) || !is_digit(s[2]) || !is_digit(s[3]) ||
            s[4] != '-' || !is_digit(s[5]) || !is_digit(s[6]) || s[7] != '.')
                return "iqn. must be followed by a yyyy-mm. date";
        int month = (s[5] - '0') * 10 + (s[6] - '0');
        if (month < 1 || month > 12)
                return "the month of the date must be 01 to 12";
        size_t label = 0;
        for (s += 8; *s && *s != ':'; s++) {
                if (*s == '.' && label == 0)
                        return "empty label in the naming authority";
                if (*s == '.')
                        label = 0;
                else if (is_alnum_lower(*s) || *s == '-')
                        label++;
                else
                        return "the naming authority may only hold letters, digits, '-' and '.'";
        }
        if (label == 0)
                return "the naming authority (a reversed domain name) is missing or ends in '.'";
        if (*s == ':' && s[1] == '\0')
                return "nothing after ':'";
        for (; *s; s++)
                if (!is_alnum_lower(*s) && *s != '-' && *s != '.' && *s != ':')
                        return "only letters, digits, '-', '.' and ':' are allowed";
        return NULL;
}

static size_t hex_run(const char *s)
{
        size_t n = 0;
        while (is_hex(s[n]))
                n++;
        return n;
}

static const char *iscsi_name_problem(const char *name)
{
        size_t len = strlen(name);
        if (len > CONFIG_ISCSI_NAME_MAX)
                return "longer than 223 bytes";
        if (strncmp(name, "iqn.", 4) == 0)
                return iqn_problem(name + 4);
        if (strncmp(name, "eui.", 4) == 0)
                return hex_run(name + 4) == 16 && len == 20 ? NULL : "eui. needs 16 hex digits";
        if (strncmp(name, "naa.", 4) == 0) {
                size_t n = hex_run(name + 4);
                return (n == 16 || n == 32) && len == 4 + n ? NULL
                                                            : "naa. needs 16 or 32 hex digits";
        }
        return "must start with iqn., eui. or naa.";
}

bool config_iscsi_name_valid(const char *name)
{
        char buf[CONFIG_ISCSI_NAME_MAX + 1];
        if (!name || strlen(name) > CONFIG_ISCSI_NAME_MAX)
                return false;
        strcpy(buf, name);
        lower(buf);
        return iscsi_name_problem(buf) == NULL;
}

/* A lower-case copy of an iSCSI name, or NULL after failing with why it is invalid. */
static char *iscsi_name_dup(struct parser *p, const char *name)
{
        char *copy = dup_or_fail(p, name);
        if (!copy)
                return NULL;
        lower(copy);
        const char *why = iscsi_name_problem(copy);
        if (why) {
                fail(p, p->lineno, "bad iSCSI name '%s': %s", name, why);
                free(copy);
                return NULL;
        }
        return copy;
}

/* ---- key values ---- */

static unsigned online_cpus(void)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (cpus < 1)
                return 1;
        return cpus > CONFIG_MAX_REACTORS ? CONFIG_MAX_REACTORS : (unsigned)cpus;
}

static void store_uint(void *field, size_t width, uint64_t v)
{
        if (width == sizeof(uint16_t))
                *(uint16_t *)field = (uint16_t)v;
        else if (width == sizeof(uint32_t))
                *(uint32_t *)field = (uint32_t)v;
        else
                *(uint64_t *)field = v;
}

static int set_text(struct parser *p, const struct key_def *k, char **field, const char *v)
{
        if (strlen(v) > k->max)
                return fail(p, p->lineno, "%s is longer than %llu bytes", k->name,
                            (unsigned long long)k->max);
        if (has_control_chars(v))
                return fail(p, p->lineno, "%s contains control characters", k->name);
        char *copy = dup_or_fail(p, v);
        if (!copy)
                return -1;
        free(*field);
        *field = copy;
        return 0;
}

static int set_secret(struct parser *p, const struct key_def *k, char **field, const char *v)
{
        size_t len = strlen(v);
        if (len < CONFIG_CHAP_SECRET_MIN)
                return fail(p, p->lineno,
                            "%s must be at least %d bytes (RFC 7143: 96 bits unless IPsec is "
                            "used)",
                            k->name, CONFIG_CHAP_SECRET_MIN);
        if (len > CONFIG_CHAP_SECRET_MAX)
                return fail(p, p->lineno, "%s must be at most %d bytes", k->name,
                            CONFIG_CHAP_SECRET_MAX);
        if (has_control_chars(v))
                return fail(p, p->lineno, "%s contains control characters", k->name);
        if (len > CONFIG_CHAP_SECRET_WARN)
                log_warn("%s:%u: %s is longer than %d bytes; Microsoft initiators refuse such "
                         "secrets",
                         p->source, p->lineno, k->name, CONFIG_CHAP_SECRET_WARN);
        char *copy = dup_or_fail(p, v);
        if (!copy)
                return -1;
        free_secret(*field);
        *field = copy;
        return 0;
}

static int check_range(struct parser *p, const struct key_def *k, uint64_t v)
{
        if (v >= k->min && v <= k->max)
                return 0;
        if (k->type == K_UINT)
                return fail(p, p->lineno, "%s must be between %llu and %llu", k->name,
                            (unsigned long long)k->min, (unsigned long long)k->max);
        char lo[32], hi[32];
        return fail(p, p->lineno, "%s must be between %s and %s", k->name,
                    format_size(lo, sizeof(lo), k->min), format_size(hi, sizeof(hi), k->max));
}

static int set_number(struct parser *p, const struct key_def *k, void *field, const char *v)
{
        uint64_t n;
        if (k->type == K_UINT && parse_decimal(v, &n) < 0)
                return fail(p, p->lineno, "bad number '%s' for %s", v, k->name);
        if (k->type != K_UINT && parse_size(v, &n) < 0)
                return fail(p, p->lineno,
                            "bad size '%s' for %s (bytes, or a number with K, M, G or T)", v,
                            k->name);
        if (k->type == K_BLOCKSIZE && n != 512 && n != 4096)
                return fail(p, p->lineno, "%s must be 512 or 4096", k->name);
        if (k->type != K_BLOCKSIZE && check_range(p, k, n) < 0)
                return -1;
        if (k->type == K_POW2 && (n & (n - 1)) != 0)
                return fail(p, p->lineno, "%s must be a power of two", k->name);
        store_uint(field, k->width, n);
        return 0;
}

static int set_mode(struct parser *p, const struct key_def *k, mode_t *field, const char *v)
{
        size_t n = strspn(v, "01234567");
        unsigned long mode = strtoul(v, NULL, 8);
        if (n == 0 || v[n] || n > 4 || mode > k->max)
                return fail(p, p->lineno, "%s must be octal permission bits, e.g. 0660", k->name);
        *field = (mode_t)mode;
        return 0;
}

static int set_reactors(struct parser *p, const struct key_def *k, unsigned *field, const char *v)
{
        if (strcasecmp(v, "auto") == 0) {
                *field = online_cpus();
                return 0;
        }
        uint64_t n;
        if (parse_decimal(v, &n) < 0)
                return fail(p, p->lineno, "bad number '%s' for reactors (or auto)", v);
        if (check_range(p, k, n) < 0)
                return -1;
        *field = (unsigned)n;
        return 0;
}

static int set_group(struct parser *p, const struct key_def *k, char **field, const char *v)
{
        size_t n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
        if (v[n] || n > MAX_GROUP_NAME)
                return fail(p, p->lineno, "bad group '%s' for %s (a group name or number)", v,
                            k->name);
        char *copy = dup_or_fail(p, v);
        if (!copy)
                return -1;
        free(*field);
        *field = copy;
        return 0;
}

static int set_address(struct parser *p, char **field, const char *v)
{
        size_t len = strlen(v);
        char *copy;
        if (v[0] == '[' && len > 2 && v[len - 1] == ']')
                copy = strndup(v + 1, len - 2);
        else
                copy = strdup(v);
        if (!copy)
                return fail_oom(p);
        free(*field);
        *field = copy;
        return 0; /* parsed with the port when the section ends */
}

static int set_hostport(struct parser *p, const struct key_def *k, char **field, const char *v)
{
        char host[INET6_ADDRSTRLEN + 64];
        const char *colon = strrchr(v, ':');
        size_t hlen = colon ? (size_t)(colon - v) : 0;
        uint64_t port;
        bool ok = colon && hlen > 0 && hlen < sizeof(host) &&
                  parse_decimal(colon + 1, &port) == 0 && port >= 1 && port <= 65535;
        if (ok) {
                bool bracketed = v[0] == '[' && v[hlen - 1] == ']';
                memcpy(host, v + bracketed, hlen - 2 * bracketed);
                host[hlen - 2 * bracketed] = '\0';
                struct sockaddr_storage ss;
                socklen_t sslen;
                ok = bracketed == (strchr(host, ':') != NULL) &&
                     parse_ip(host, (uint16_t)port, &ss, &sslen) == 0;
        }
        if (!ok)
                return fail(p, p->lineno, "bad %s '%s' (IPV4:PORT or [IPV6]:PORT)", k->name, v);
        return set_text(p, k, field, v);
}

static int set_enum(struct parser *p, const struct key_def *k, void *field, const char *v)
{
        if (k->type == K_LOGLEVEL) {
                enum log_level level;
                if (log_parse_level(v, &level) < 0)
                        return fail(p, p->lineno, "bad log_level '%s' (error, warn, info or debug)",
                                    v);
                *(enum log_level *)field = level;
                return 0;
        }
        if (k->type == K_BACKEND) {
                if (strcasecmp(v, "file") == 0)
                        *(enum config_backend *)field = CONFIG_BACKEND_FILE;
                else if (strcasecmp(v, "iscsi") == 0)
                        *(enum config_backend *)field = CONFIG_BACKEND_ISCSI;
                else
                        return fail(p, p->lineno, "bad backend '%s' (file or iscsi)", v);
                return 0;
        }
        if (strcasecmp(v, "tcp") == 0)
                *(enum config_transport *)field = CONFIG_TRANSPORT_TCP;
        else if (strcasecmp(v, "iser") == 0)
                *(enum config_transport *)field = CONFIG_TRANSPORT_ISER;
        else
                return fail(p, p->lineno, "bad transport '%s' (tcp or iser)", v);
        return 0;
}

static int add_portal_ref(struct parser *p, char *item)
{
        struct target_stage *ts = &p->tstage[p->index];
        for (unsigned i = 0; i < ts->nrefs; i++)
                if (strcmp(ts->refs[i].name, item) == 0)
                        return fail(p, p->lineno, "portal '%s' listed twice", item);
        struct portal_ref *ref = APPEND(p, ts->refs, ts->nrefs);
        if (!ref || !(ref->name = dup_or_fail(p, item)))
                return -1;
        ref->line = p->lineno;
        ts->nrefs++;
        return 0;
}

static int add_allowed(struct parser *p, char *item)
{
        struct config_target *t = &p->cfg->targets[p->index];
        struct target_stage *ts = &p->tstage[p->index];
        if (strcmp(item, "*") == 0)
                ts->allow_star = true;
        if (ts->allow_star && (t->nallow > 0 || strcmp(item, "*") != 0))
                return fail(p, p->lineno, "allow: '*' cannot be combined with names");
        if (ts->allow_star)
                return 0;
        char *name = iscsi_name_dup(p, item);
        if (!name)
                return -1;
        for (unsigned i = 0; i < t->nallow; i++) {
                if (strcmp(t->allow[i], name) == 0) {
                        free(name);
                        return fail(p, p->lineno, "initiator '%s' listed twice", item);
                }
        }
        char **slot = APPEND(p, t->allow, t->nallow);
        if (!slot) {
                free(name);
                return -1;
        }
        *slot = name;
        t->nallow++;
        t->allow_any = false;
        return 0;
}

/* Splits a comma list and hands each trimmed, non-empty item to add(). */
static int set_list(struct parser *p, const struct key_def *k, const char *v,
                    int (*add)(struct parser *p, char *item))
{
        char *copy = dup_or_fail(p, v);
        if (!copy)
                return -1;
        int rc = 0;
        char *item = copy;
        for (char *next; rc == 0 && item; item = next) {
                next = strchr(item, ',');
                if (next)
                        *next++ = '\0';
                char *t = trim(item);
                rc = *t ? add(p, t) : fail(p, p->lineno, "empty item in %s", k->name);
        }
        free(copy);
        return rc;
}

static int set_value(struct parser *p, const struct key_def *k, const char *v)
{
        void *field = (char *)p->obj + k->offset;
        switch (k->type) {
        case K_TEXT:
                return set_text(p, k, field, v);
        case K_SECRET:
                return set_secret(p, k, field, v);
        case K_BOOL:
                if (parse_bool(v, field) < 0)
                        return fail(p, p->lineno, "bad value '%s' for %s (yes or no)", v, k->name);
                return 0;
        case K_UINT:
        case K_SIZE:
        case K_POW2:
        case K_BLOCKSIZE:
                return set_number(p, k, field, v);
        case K_MODE:
                return set_mode(p, k, field, v);
        case K_LOGLEVEL:
        case K_TRANSPORT:
        case K_BACKEND:
                return set_enum(p, k, field, v);
        case K_REACTORS:
                return set_reactors(p, k, field, v);
        case K_GROUP:
                return set_group(p, k, field, v);
        case K_ADDRESS:
                return set_address(p, field, v);
        case K_HOSTPORT:
                return set_hostport(p, k, field, v);
        case K_PORTALS:
                return set_list(p, k, v, add_portal_ref);
        case K_ALLOW:
                return set_list(p, k, v, add_allowed);
        }
        return fail(p, p->lineno, "internal error: key type %d", (int)k->type);
}

static const char *section_label(enum section_kind kind)
{
        static const char *const labels[] = {"", "[gateway]", "[portal]", "[target]", "[lun]"};
        return labels[kind];
}

static unsigned key_index(const struct key_def *keys, const char *name)
{
        unsigned i = 0;
        while (keys[i].name && strcmp(keys[i].name, name) != 0)
                i++;
        return i;
}

/* Where key name was given in the current section, else the section header. */
static unsigned line_of(const struct parser *p, const char *name)
{
        unsigned line = p->key_line[key_index(p->keys, name)];
        return line ? line : p->section_line;
}

static bool key_given(const struct parser *p, const char *name)
{
        return p->key_line[key_index(p->keys, name)] != 0;
}

static int handle_key(struct parser *p, const char *name, const char *value)
{
        if (p->kind == SEC_NONE)
                return fail(p, p->lineno, "'%s' outside of any section", name);
        if (!*name)
                return fail(p, p->lineno, "missing key name before '='");
        unsigned i = key_index(p->keys, name);
        const struct key_def *k = &p->keys[i];
        if (!k->name)
                return fail(p, p->lineno, "unknown key '%s' in %s", name, section_label(p->kind));
        bool repeatable = k->type == K_PORTALS || k->type == K_ALLOW;
        if (p->key_line[i] && !repeatable)
                return fail(p, p->lineno, "duplicate key '%s' (first at line %u)", name,
                            p->key_line[i]);
        if (!*value)
                return fail(p, p->lineno, "empty value for %s", name);
        p->key_line[i] = p->lineno;
        return set_value(p, k, value);
}

/* The inih handler: one "key = value" line (section is always "": see read_line). */
static int on_key(void *user, const char *section, const char *name, const char *value)
{
        struct parser *p = user;
        return !p->failed && handle_key(p, name, value) == 0;
}

/* ---- whole sections ---- */

static int check_chap(struct parser *p, const struct config_chap *c, const char *prefix)
{
        char user[40], secret[40], muser[40], msecret[40];
        snprintf(user, sizeof(user), "%schap_user", prefix);
        snprintf(secret, sizeof(secret), "%schap_secret", prefix);
        snprintf(muser, sizeof(muser), "%smutual_user", prefix);
        snprintf(msecret, sizeof(msecret), "%smutual_secret", prefix);
        if (!c->user != !c->secret)
                return fail(p, line_of(p, c->user ? user : secret), "%s needs %s",
                            c->user ? user : secret, c->user ? secret : user);
        if (!c->mutual_user != !c->mutual_secret)
                return fail(p, line_of(p, c->mutual_user ? muser : msecret), "%s needs %s",
                            c->mutual_user ? muser : msecret, c->mutual_user ? msecret : muser);
        if (c->mutual_user && !c->user)
                return fail(p, line_of(p, muser),
                            "%s needs %s: mutual CHAP follows the initiator's authentication",
                            muser, user);
        if (c->mutual_secret && strcmp(c->mutual_secret, c->secret) == 0)
                return fail(p, line_of(p, msecret), "%s must differ from %s", msecret, secret);
        return 0;
}

static int derive_status_socket(struct parser *p, unsigned line)
{
        struct config *cfg = p->cfg;
        if (!cfg->status_socket &&
            asprintf(&cfg->status_socket, "%s/isergw.sock", cfg->var_dir) < 0) {
                cfg->status_socket = NULL;
                return fail_oom(p);
        }
        if (strlen(cfg->status_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
                return fail(p, line, "status_socket '%s' is longer than %zu bytes",
                            cfg->status_socket, sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return 0;
}

static int close_gateway(struct parser *p)
{
        struct config *cfg = p->cfg;
        /* The default first burst follows a smaller max_burst_length down (RFC 7143 13.14);
         * only a first_burst_length the user gave is an error. */
        if (!key_given(p, "first_burst_length") &&
            cfg->iscsi.first_burst_length > cfg->iscsi.max_burst_length)
                cfg->iscsi.first_burst_length = cfg->iscsi.max_burst_length;
        if (cfg->iscsi.first_burst_length > cfg->iscsi.max_burst_length)
                return fail(p, line_of(p, "first_burst_length"),
                            "first_burst_length (%u) exceeds max_burst_length (%u)",
                            cfg->iscsi.first_burst_length, cfg->iscsi.max_burst_length);
        if (cfg->pool_size % cfg->line_size != 0)
                return fail(p, line_of(p, key_given(p, "pool_size") ? "pool_size" : "line_size"),
                            "pool_size is not a multiple of line_size");
        if (cfg->dirty_low_water >= cfg->dirty_high_water)
                return fail(p,
                            line_of(p, key_given(p, "dirty_low_water") ? "dirty_low_water"
                                                                       : "dirty_high_water"),
                            "dirty_low_water (%u) must be below dirty_high_water (%u)",
                            cfg->dirty_low_water, cfg->dirty_high_water);
        if (cfg->dirty_hard_limit < cfg->dirty_high_water)
                return fail(p,
                            line_of(p, key_given(p, "dirty_hard_limit") ? "dirty_hard_limit"
                                                                        : "dirty_high_water"),
                            "dirty_hard_limit (%u) is below dirty_high_water (%u)",
                            cfg->dirty_hard_limit, cfg->dirty_high_water);
        if (cfg->write_log_size < WLOG_MIN_SIZE || cfg->write_log_size % 512)
                return fail(p, line_of(p, "write_log_size"),
                            "write_log_size must be a multiple of 512 and at least 16M");
        if (cfg->backend_initiator_name && !config_iscsi_name_valid(cfg->backend_initiator_name))
                return fail(p, line_of(p, "backend_initiator_name"),
                            "backend_initiator_name is not a valid iSCSI name");
        if (check_chap(p, &cfg->discovery_chap, "discovery_") < 0)
                return -1;
        p->discovery_secret_line = p->key_line[key_index(p->keys, "discovery_chap_secret")];
        p->discovery_mutual_secret_line =
            p->key_line[key_index(p->keys, "discovery_mutual_secret")];
        return derive_status_socket(
            p, line_of(p, key_given(p, "status_socket") ? "status_socket" : "var_dir"));
}

static int close_portal(struct parser *p)
{
        struct config_portal *portal = p->obj;
        if (!portal->address)
                return fail(p, p->section_line, "portal '%s' has no address", portal->name);
        if (parse_ip(portal->address, portal->port, &portal->addr, &portal->addr_len) < 0)
                return fail(p, line_of(p, "address"), "bad address '%s' (an IPv4 or IPv6 literal)",
                            portal->address);
        return 0;
}

static int close_target(struct parser *p)
{
        struct target_stage *ts = &p->tstage[p->index];
        if (check_chap(p, &p->cfg->targets[p->index].chap, "") < 0)
                return -1;
        ts->secret_line = p->key_line[key_index(p->keys, "chap_secret")];
        ts->mutual_secret_line = p->key_line[key_index(p->keys, "mutual_secret")];
        return 0;
}

static int close_lun(struct parser *p)
{
        struct lun_stage *ls = &p->luns[p->index];
        struct config_lun *lun = &ls->lun;
        if (lun->backend == CONFIG_BACKEND_ISCSI) {
                if (!lun->url)
                        return fail(p, p->section_line, "lun %u: backend iscsi needs url",
                                    lun->number);
                if (strncmp(lun->url, "iscsi://", 8) != 0)
                        return fail(p, line_of(p, "url"),
                                    "lun %u: url must look like iscsi://HOST[:PORT]/IQN/LUN",
                                    lun->number);
                if (lun->path)
                        return fail(p, line_of(p, "path"), "lun %u: path is for backend file",
                                    lun->number);
                lun->create = false;
        } else if (!lun->path) {
                return fail(p, p->section_line, "lun %u has no path", lun->number);
        } else if (lun->url) {
                return fail(p, line_of(p, "url"), "lun %u: url is for backend iscsi", lun->number);
        }
        if (lun->mirror_role && strcmp(lun->mirror_role, "primary") != 0 &&
            strcmp(lun->mirror_role, "secondary") != 0)
                return fail(p, line_of(p, "mirror_role"),
                            "lun %u: mirror_role must be primary or secondary", lun->number);
        if (lun->mirror_role && strcmp(lun->mirror_role, "primary") == 0 && !lun->mirror_peer)
                return fail(p, line_of(p, "mirror_role"),
                            "lun %u: a mirror primary needs mirror_peer", lun->number);
        if (lun->mirror_transport && strcmp(lun->mirror_transport, "auto") != 0 &&
            strcmp(lun->mirror_transport, "tcp") != 0 && strcmp(lun->mirror_transport, "rdma") != 0)
                return fail(p, line_of(p, "mirror_transport"),
                            "lun %u: mirror_transport must be auto, tcp or rdma", lun->number);
        if ((lun->mirror_peer || lun->mirror_id) && !lun->mirror_role)
                return fail(p, line_of(p, lun->mirror_peer ? "mirror_peer" : "mirror_id"),
                            "lun %u: mirror_peer and mirror_id need mirror_role", lun->number);
        if (lun->physical_block_size == 0)
                lun->physical_block_size = lun->block_size;
        if (lun->physical_block_size < lun->block_size)
                return fail(p, line_of(p, "physical_block_size"),
                            "physical_block_size is smaller than block_size (%u)", lun->block_size);
        if (lun->create && lun->size == 0)
                return fail(p, p->section_line, "lun %u: size missing (required when create = yes)",
                            lun->number);
        if (lun->size % lun->block_size != 0)
                return fail(p, line_of(p, "size"), "size is not a multiple of block_size (%u)",
                            lun->block_size);
        ls->path_line = line_of(p, lun->path ? "path" : "url");
        return 0;
}

static int close_section(struct parser *p)
{
        int rc = 0;
        switch (p->kind) {
        case SEC_GATEWAY:
                rc = close_gateway(p);
                break;
        case SEC_PORTAL:
                rc = close_portal(p);
                break;
        case SEC_TARGET:
                rc = close_target(p);
                break;
        case SEC_LUN:
                rc = close_lun(p);
                break;
        case SEC_NONE:
                break;
        }
        p->kind = SEC_NONE;
        return rc;
}

static int open_gateway(struct parser *p, const char *name)
{
        if (*name)
                return fail(p, p->lineno, "[gateway] takes no name");
        if (p->gateway_line)
                return fail(p, p->lineno, "duplicate section [gateway] (first at line %u)",
                            p->gateway_line);
        p->gateway_line = p->lineno;
        p->obj = p->cfg;
        return 0;
}

static int open_portal(struct parser *p, const char *name)
{
        struct config *cfg = p->cfg;
        size_t n =
            strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
        if (!*name || name[n] || n > MAX_PORTAL_NAME)
                return fail(p, p->lineno,
                            "bad portal name '%s' (1 to %d letters, digits, '_', '.' or '-')", name,
                            MAX_PORTAL_NAME);
        for (unsigned i = 0; i < cfg->nportals; i++)
                if (strcmp(cfg->portals[i].name, name) == 0)
                        return fail(p, p->lineno, "duplicate portal '%s' (first at line %u)", name,
                                    cfg->portals[i].line);
        struct config_portal *portal = APPEND(p, cfg->portals, cfg->nportals);
        if (!portal)
                return -1;
        cfg->nportals++;
        portal->port = 3260;
        portal->transport = CONFIG_TRANSPORT_TCP;
        portal->line = p->lineno;
        p->obj = portal;
        return (portal->name = dup_or_fail(p, name)) ? 0 : -1;
}

static int open_target(struct parser *p, const char *name)
{
        struct config *cfg = p->cfg;
        char *norm = iscsi_name_dup(p, name);
        if (!norm)
                return -1;
        for (unsigned i = 0; i < cfg->ntargets; i++) {
                if (strcmp(cfg->targets[i].name, norm) == 0) {
                        free(norm);
                        return fail(p, p->lineno, "duplicate target '%s' (first at line %u)", name,
                                    cfg->targets[i].line);
                }
        }
        if (!APPEND(p, p->tstage, cfg->ntargets)) {
                free(norm);
                return -1;
        }
        struct config_target *t = APPEND(p, cfg->targets, cfg->ntargets);
        if (!t) {
                free(norm);
                return -1;
        }
        p->index = cfg->ntargets++;
        t->name = norm;
        t->allow_any = true;
        t->line = p->lineno;
        p->obj = t;
        return 0;
}

/* "[lun TARGET:N]": the LUN number follows the last ':'. */
static int open_lun(struct parser *p, char *name)
{
        char *colon = strrchr(name, ':');
        uint64_t number;
        if (!colon || parse_decimal(colon + 1, &number) < 0)
                return fail(p, p->lineno, "[lun] needs a name of the form TARGET:NUMBER");
        if (number > CONFIG_MAX_LUN)
                return fail(p, p->lineno, "lun number must be between 0 and %d", CONFIG_MAX_LUN);
        *colon = '\0';
        char *target = iscsi_name_dup(p, name);
        if (!target)
                return -1;
        for (unsigned i = 0; i < p->nluns; i++) {
                if (p->luns[i].lun.number == number && strcmp(p->luns[i].target, target) == 0) {
                        free(target);
                        return fail(p, p->lineno, "duplicate lun %s:%u (first at line %u)", name,
                                    (unsigned)number, p->luns[i].lun.line);
                }
        }
        struct lun_stage *ls = APPEND(p, p->luns, p->nluns);
        if (!ls) {
                free(target);
                return -1;
        }
        p->index = p->nluns++;
        ls->target = target;
        ls->lun = (struct config_lun){.number = (uint32_t)number,
                                      .block_size = 512,
                                      .create = true,
                                      .write_cache = true,
                                      .thin = true,
                                      .line = p->lineno};
        p->obj = &ls->lun;
        return 0;
}

static int open_section(struct parser *p, enum section_kind kind, char *name)
{
        static const struct key_def *const tables[] = {NULL, gateway_keys, portal_keys, target_keys,
                                                       lun_keys};
        int rc;
        if (kind == SEC_GATEWAY)
                rc = open_gateway(p, name);
        else if (kind == SEC_PORTAL)
                rc = open_portal(p, name);
        else if (kind == SEC_TARGET)
                rc = open_target(p, name);
        else
                rc = open_lun(p, name);
        if (rc < 0)
                return -1;
        p->kind = kind;
        p->keys = tables[kind];
        p->section_line = p->lineno;
        memset(p->key_line, 0, sizeof(p->key_line));
        return 0;
}

/* A "[type name]" line, s at the '['. */
static int section_header(struct parser *p, char *s)
{
        static const char *const types[] = {"", "gateway", "portal", "target", "lun"};
        char *end = strchr(s, ']');
        if (!end)
                return fail(p, p->lineno, "missing ']' in section header");
        char *after = end + 1 + strspn(end + 1, " \t");
        if (*after && *after != ';' && *after != '#')
                return fail(p, p->lineno, "unexpected text after ']'");
        *end = '\0';
        char *type = trim(s + 1);
        char *name = type + strcspn(type, " \t");
        if (*name)
                *name++ = '\0';
        name = trim(name);
        if (close_section(p) < 0)
                return -1;
        for (int kind = SEC_GATEWAY; kind <= SEC_LUN; kind++)
                if (strcmp(type, types[kind]) == 0)
                        return open_section(p, (enum section_kind)kind, name);
        return fail(p, p->lineno, "unknown section type '%s' (gateway, portal, target or lun)",
                    type);
}

/* ---- reading lines ---- */

/* The next raw line into p->line, without its line ending; -1 at the end or on error. */
static int next_line(struct parser *p)
{
        ssize_t n;
        if (p->file) {
                errno = 0;
                n = getline(&p->line, &p->line_cap, p->file);
                if (n < 0 && ferror(p->file))
                        return fail(p, 0, "cannot read: %s", strerror(errno ? errno : EIO));
        } else {
                size_t len = strcspn(p->text, "\n");
                n = *p->text ? (ssize_t)len : -1;
                if (n >= 0 && len + 1 > p->line_cap) {
                        char *bigger = realloc(p->line, len + 1);
                        if (!bigger)
                                return fail_oom(p);
                        p->line = bigger;
                        p->line_cap = len + 1;
                }
                if (n >= 0) {
                        memcpy(p->line, p->text, len);
                        p->line[len] = '\0';
                        p->text += len + (p->text[len] == '\n');
                }
        }
        if (n < 0)
                return -1;
        p->lineno++;
        if (strlen(p->line) != (size_t)n)
                return fail(p, p->lineno, "NUL byte in line");
        while (n > 0 && (p->line[n - 1] == '\n' || p->line[n - 1] == '\r'))
                p->line[--n] = '\0';
        return 0;
}

/* inih's reader: see the header comment. */
static char *read_line(char *str, int num, void *stream)
{
        struct parser *p = stream;
        if (p->failed || next_line(p) < 0)
                return NULL;
        char *s = p->line;
        if (p->lineno == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0)
                s += 3;
        s += strspn(s, " \t");
        if (*s == '[') {
                section_header(p, s);
                str[0] = '\0'; /* inih sees an empty line */
                return str;
        }
        size_t len = strlen(s);
        if (len + 1 > (size_t)num) {
                fail(p, p->lineno, "line longer than %d characters", num - 1);
                return NULL;
        }
        memcpy(str, s, len + 1);
        return str;
}

/* ---- references between sections ---- */

static int cmp_lun(const void *a, const void *b)
{
        const struct config_lun *x = a, *y = b;
        return (x->number > y->number) - (x->number < y->number);
}

static int attach_luns(struct parser *p)
{
        struct config *cfg = p->cfg;
        for (unsigned i = 0; i < p->nluns; i++) {
                struct lun_stage *ls = &p->luns[i];
                unsigned t = 0;
                while (t < cfg->ntargets && strcmp(cfg->targets[t].name, ls->target) != 0)
                        t++;
                if (t == cfg->ntargets)
                        return fail(p, ls->lun.line, "lun for unknown target '%s'", ls->target);
                struct config_target *target = &cfg->targets[t];
                struct config_lun *lun = APPEND(p, target->luns, target->nluns);
                if (!lun)
                        return -1;
                *lun = ls->lun;
                ls->lun.path = NULL; /* now the target's */
                ls->lun.url = NULL;
                ls->lun.mirror_role = ls->lun.mirror_peer = ls->lun.mirror_id = NULL;
                ls->lun.mirror_transport = NULL;
                target->nluns++;
        }
        for (unsigned t = 0; t < cfg->ntargets; t++) {
                struct config_target *target = &cfg->targets[t];
                if (target->nluns == 0)
                        return fail(p, target->line, "target '%s' has no lun", target->name);
                qsort(target->luns, target->nluns, sizeof(*target->luns), cmp_lun);
        }
        return 0;
}

static const struct config_portal *find_portal(const struct config *cfg, const char *name)
{
        for (unsigned i = 0; i < cfg->nportals; i++)
                if (strcmp(cfg->portals[i].name, name) == 0)
                        return &cfg->portals[i];
        return NULL;
}

static int resolve_portals(struct parser *p)
{
        struct config *cfg = p->cfg;
        for (unsigned t = 0; t < cfg->ntargets; t++) {
                struct config_target *target = &cfg->targets[t];
                struct target_stage *ts = &p->tstage[t];
                unsigned n = ts->nrefs ? ts->nrefs : cfg->nportals;
                target->portals = calloc(n, sizeof(*target->portals));
                if (!target->portals)
                        return fail_oom(p);
                for (unsigned i = 0; i < n; i++) {
                        const struct config_portal *portal =
                            ts->nrefs ? find_portal(cfg, ts->refs[i].name) : &cfg->portals[i];
                        if (!portal)
                                return fail(p, ts->refs[i].line, "unknown portal '%s'",
                                            ts->refs[i].name);
                        target->portals[target->nportals++] = portal;
                }
        }
        return 0;
}

static bool is_wildcard(const struct sockaddr_storage *ss)
{
        if (ss->ss_family == AF_INET)
                return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

/* Two listeners that cannot both bind: same transport, family and port, and the same
 * address or one of them the wildcard. */
static bool portals_clash(const struct config_portal *a, const struct config_portal *b)
{
        if (a->transport != b->transport || a->port != b->port ||
            a->addr.ss_family != b->addr.ss_family)
                return false;
        return is_wildcard(&a->addr) || is_wildcard(&b->addr) ||
               (a->addr_len == b->addr_len && memcmp(&a->addr, &b->addr, a->addr_len) == 0);
}

static int check_portal_clashes(struct parser *p)
{
        const struct config *cfg = p->cfg;
        for (unsigned j = 1; j < cfg->nportals; j++)
                for (unsigned i = 0; i < j; i++)
                        if (portals_clash(&cfg->portals[i], &cfg->portals[j]))
                                return fail(p, cfg->portals[j].line,
                                            "portal '%s' overlaps portal '%s' (line %u): same "
                                            "transport and port, and the same or a wildcard "
                                            "address",
                                            cfg->portals[j].name, cfg->portals[i].name,
                                            cfg->portals[i].line);
        return 0;
}

static int check_lun_paths(struct parser *p)
{
        for (unsigned j = 1; j < p->nluns; j++) {
                for (unsigned i = 0; i < j; i++) {
                        const struct lun_stage *a = &p->luns[i], *b = &p->luns[j];
                        const char *pa = a->lun.path ? a->lun.path : a->lun.url;
                        const char *pb = b->lun.path ? b->lun.path : b->lun.url;
                        if (strcmp(pa, pb) == 0)
                                return fail(p, b->path_line,
                                            "%s '%s' is already used by lun %s:%u (line %u)",
                                            b->lun.path ? "path" : "url", pb, a->target,
                                            a->lun.number, a->lun.line);
                }
        }
        return 0;
}

/* RFC 7143: a secret that authenticates initiators must not authenticate targets. */
static int check_secret_reuse(struct parser *p)
{
        const struct config *cfg = p->cfg;
        unsigned n = cfg->ntargets + 1;
        for (unsigned m = 0; m < n; m++) {
                const struct config_chap *mc = m ? &cfg->targets[m - 1].chap : &cfg->discovery_chap;
                unsigned mline =
                    m ? p->tstage[m - 1].mutual_secret_line : p->discovery_mutual_secret_line;
                for (unsigned s = 0; mc->mutual_secret && s < n; s++) {
                        const struct config_chap *sc =
                            s ? &cfg->targets[s - 1].chap : &cfg->discovery_chap;
                        unsigned sline =
                            s ? p->tstage[s - 1].secret_line : p->discovery_secret_line;
                        if (sc->secret && strcmp(sc->secret, mc->mutual_secret) == 0)
                                return fail(p, mline,
                                            "mutual secret equals the chap secret at line %u: "
                                            "a secret must not authenticate both initiators "
                                            "and targets",
                                            sline);
                }
        }
        return 0;
}

static int finish(struct parser *p)
{
        unsigned last = p->lineno ? p->lineno : 1;
        if (close_section(p) < 0)
                return -1;
        if (p->cfg->mirror_startup_wait_ms == UINT32_MAX)
                p->cfg->mirror_startup_wait_ms = p->cfg->mirror_timeout_ms;
        if (p->cfg->nportals == 0)
                return fail(p, last, "no [portal] section");
        if (p->cfg->ntargets == 0)
                return fail(p, last, "no [target] section");
        /* check_lun_paths() reads the staged LUNs, which attach_luns() empties. */
        if (check_lun_paths(p) < 0 || attach_luns(p) < 0 || resolve_portals(p) < 0 ||
            check_portal_clashes(p) < 0 || check_secret_reuse(p) < 0)
                return -1;
        return derive_status_socket(p, p->gateway_line ? p->gateway_line : last);
}

/* ---- the public API ---- */

static struct config *config_new(const char *source)
{
        struct config *cfg = calloc(1, sizeof(*cfg));
        if (!cfg)
                return NULL;
        cfg->reactors = online_cpus();
        cfg->source = strdup(source);
        cfg->var_dir = strdup("var");
        cfg->status_socket_mode = 0660;
        cfg->log_level = LOG_LVL_INFO;
        cfg->pool_size = 256 * MIB;
        cfg->line_size = 32 * KIB;
        cfg->nop_interval = 30;
        cfg->nop_timeout = 30;
        cfg->dirty_high_water = 50;
        cfg->dirty_low_water = 25;
        cfg->dirty_hard_limit = 80;
        cfg->dirty_max_age_ms = 5000;
        cfg->shutdown_flush_timeout = 60;
        cfg->write_log_size = 256 * MIB;
        cfg->write_log_checkpoint_interval = 10;
        cfg->mirror_timeout_ms = 5000;
        cfg->mirror_startup_wait_ms = UINT32_MAX; /* finish(): mirror_timeout_ms */
        cfg->mirror_region_size = MIB;
        cfg->backend_initiator_name = strdup("iqn.2026-11.io.isergw:gateway");
        cfg->iscsi = (struct config_iscsi){.max_recv_data_segment_length = 262144,
                                           .max_burst_length = 1048576,
                                           .first_burst_length = 262144,
                                           .max_outstanding_r2t = 8,
                                           .immediate_data = true,
                                           .initial_r2t = false};
        if (!cfg->source || !cfg->var_dir || !cfg->backend_initiator_name) {
                config_free(cfg);
                return NULL;
        }
        return cfg;
}

static void parser_cleanup(struct parser *p)
{
        for (unsigned t = 0; p->tstage && t < p->cfg->ntargets; t++) {
                for (unsigned i = 0; i < p->tstage[t].nrefs; i++)
                        free(p->tstage[t].refs[i].name);
                free(p->tstage[t].refs);
        }
        free(p->tstage);
        for (unsigned i = 0; i < p->nluns; i++) {
                free(p->luns[i].target);
                free(p->luns[i].lun.path);
                free(p->luns[i].lun.url);
                free(p->luns[i].lun.mirror_role);
                free(p->luns[i].lun.mirror_peer);
                free(p->luns[i].lun.mirror_id);
                free(p->luns[i].lun.mirror_transport);
        }
        free(p->luns);
        if (p->line)
                explicit_bzero(p->line, p->line_cap); /* may have held a secret */
        free(p->line);
}

static struct config *parse(struct parser *p, char *err, size_t errlen)
{
        p->cfg = config_new(p->source);
        if (!p->cfg) {
                snprintf(err, errlen, "%s: out of memory", p->source);
                return NULL;
        }
        int syntax = ini_parse_stream(read_line, p, on_key, p);
        /* inih reports lines it could not split; it goes on after them, so an error of ours
         * may come from a later line. The earlier one wins. */
        if (syntax > 0 && (!p->failed || (unsigned)syntax < p->err_line)) {
                p->failed = false;
                fail(p, (unsigned)syntax, "expected 'key = value'");
        } else if (syntax < 0 && !p->failed) {
                fail(p, p->lineno, "out of memory");
        }
        if (!p->failed)
                finish(p);
        parser_cleanup(p);
        if (p->failed) {
                if (err && errlen)
                        snprintf(err, errlen, "%s", p->msg);
                config_free(p->cfg);
                return NULL;
        }
        return p->cfg;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
        struct parser p = {.source = path};
        p.file = fopen(path, "re");
        if (!p.file) {
                if (err && errlen)
                        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
                return NULL;
        }
        struct config *cfg = parse(&p, err, errlen);
        fclose(p.file);
        return cfg;
}

struct config *config_load_string(const char *text, const char *source, char *err, size_t errlen)
{
        struct parser p = {.source = source, .text = text};
        return parse(&p, err, errlen);
}

struct config *config_default(void)
{
        char err[256];
        struct config *cfg = config_load_string(default_config_text, "(default)", err, sizeof(err));
        if (!cfg)
                log_err("%s", err); /* out of memory: the text itself is tested */
        return cfg;
}

static void free_chap(struct config_chap *c)
{
        free(c->user);
        free_secret(c->secret);
        free(c->mutual_user);
        free_secret(c->mutual_secret);
}

static void free_target(struct config_target *t)
{
        free(t->name);
        free(t->alias);
        free_chap(&t->chap);
        free(t->portals);
        for (unsigned i = 0; i < t->nallow; i++)
                free(t->allow[i]);
        free(t->allow);
        for (unsigned i = 0; i < t->nluns; i++) {
                free(t->luns[i].path);
                free(t->luns[i].url);
                free(t->luns[i].mirror_role);
                free(t->luns[i].mirror_peer);
                free(t->luns[i].mirror_id);
                free(t->luns[i].mirror_transport);
        }
        free(t->luns);
}

void config_free(struct config *cfg)
{
        if (!cfg)
                return;
        for (unsigned i = 0; i < cfg->ntargets; i++)
                free_target(&cfg->targets[i]);
        free(cfg->targets);
        for (unsigned i = 0; i < cfg->nportals; i++) {
                free(cfg->portals[i].name);
                free(cfg->portals[i].address);
        }
        free(cfg->portals);
        free_chap(&cfg->discovery_chap);
        free(cfg->source);
        free(cfg->var_dir);
        free(cfg->status_socket);
        free(cfg->status_socket_group);
        free(cfg->metrics_listen);
        free(cfg->mirror_listen);
        free(cfg->write_log);
        free(cfg->backend_initiator_name);
        free(cfg);
}

const struct config_target *config_find_target(const struct config *cfg, const char *name)
{
        for (unsigned i = 0; i < cfg->ntargets; i++)
                if (strcasecmp(cfg->targets[i].name, name) == 0)
                        return &cfg->targets[i];
        return NULL;
}

bool config_target_allows(const struct config_target *t, const char *initiator_name)
{
        if (t->allow_any)
                return true;
        for (unsigned i = 0; i < t->nallow; i++)
                if (strcasecmp(t->allow[i], initiator_name) == 0)
                        return true;
        return false;
}

const char *config_transport_name(enum config_transport t)
{
        return t == CONFIG_TRANSPORT_ISER ? "iser" : "tcp";
}
