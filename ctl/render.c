/* Human-readable rendering of status objects (shapes in docs/status.md §3). */
#include "ctl/ctl.h"

#include <stdlib.h>
#include <string.h>

#define CELL 128

static const char *jstr(const json_t *o, const char *key)
{
        const char *s = json_string_value(json_object_get(o, key));
        return s ? s : "-";
}

static long long jint(const json_t *o, const char *key)
{
        return (long long)json_integer_value(json_object_get(o, key));
}

static void fmt_bytes(char *buf, size_t len, double v)
{
        static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        unsigned u = 0;
        while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
                v /= 1024;
                u++;
        }
        if (u == 0)
                snprintf(buf, len, "%.0f B", v);
        else
                snprintf(buf, len, "%.1f %s", v, units[u]);
}

static void fmt_duration(char *buf, size_t len, long long s)
{
        long long d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
        if (d > 0)
                snprintf(buf, len, "%lldd %02lldh %02lldm %02llds", d, h, m, sec);
        else if (h > 0)
                snprintf(buf, len, "%lldh %02lldm %02llds", h, m, sec);
        else if (m > 0)
                snprintf(buf, len, "%lldm %02llds", m, sec);
        else
                snprintf(buf, len, "%llds", sec);
}

static void cell_int(struct table *t, const json_t *o, const char *key)
{
        const json_t *v = json_object_get(o, key);
        if (json_is_integer(v))
                table_cell(t, "%lld", (long long)json_integer_value(v));
        else
                table_cell(t, "-");
}

static void cell_bytes(struct table *t, const json_t *o, const char *key)
{
        const json_t *v = json_object_get(o, key);
        char buf[CELL];
        if (!json_is_number(v)) {
                table_cell(t, "-");
                return;
        }
        fmt_bytes(buf, sizeof(buf), json_number_value(v));
        table_cell(t, "%s", buf);
}

static void cell_bool(struct table *t, const json_t *o, const char *key)
{
        const json_t *v = json_object_get(o, key);
        table_cell(t, "%s", json_is_boolean(v) ? (json_is_true(v) ? "yes" : "no") : "-");
}

static bool has_suffix(const char *s, const char *suffix)
{
        size_t n = strlen(s), m = strlen(suffix);
        return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* A value in a key/value listing, and a human form of it for sizes and rates. */
static void value_text(char *buf, size_t len, char *human, size_t hlen, const char *key,
                       const json_t *v)
{
        human[0] = '\0';
        if (json_is_integer(v)) {
                long long n = (long long)json_integer_value(v);
                snprintf(buf, len, "%lld", n);
                if (n >= 1024 && (strstr(key, "bytes") || strcmp(key, "line_size") == 0))
                        fmt_bytes(human, hlen, (double)n);
        } else if (json_is_real(v) && strstr(key, "ratio")) {
                snprintf(buf, len, "%.1f%%", json_real_value(v) * 100);
        } else if (json_is_real(v) && has_suffix(key, "_bps")) {
                snprintf(buf, len, "%.0f", json_real_value(v));
                fmt_bytes(human, hlen, json_real_value(v));
                strncat(human, "/s", hlen - strlen(human) - 1);
        } else if (json_is_real(v)) {
                snprintf(buf, len, "%.3f", json_real_value(v));
        } else if (json_is_boolean(v)) {
                snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
        } else if (json_is_string(v)) {
                snprintf(buf, len, "%s", json_string_value(v));
        } else if (json_is_null(v)) {
                snprintf(buf, len, "-");
        } else {
                char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                snprintf(buf, len, "%s", s ? s : "?");
                free(s);
        }
}

/* Every member of an object as "key  value  human-form" lines. */
static void render_kv(FILE *out, const json_t *obj)
{
        struct table t;
        table_init(&t, 3, NULL);
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)obj, key, v)
        {
                char buf[1024], human[CELL];
                value_text(buf, sizeof(buf), human, sizeof(human), key, v);
                table_cell(&t, "%s", key);
                table_cell(&t, "%s", buf);
                table_cell(&t, "%s", human);
        }
        table_print(&t, out);
        table_free(&t);
}

/* ---- status ---- */

static void status_gateway(struct table *t, const json_t *g)
{
        char up[CELL];
        fmt_duration(up, sizeof(up), jint(g, "uptime_s"));
        const json_t *config = json_object_get(g, "config_path");
        table_cell(t, "version");
        table_cell(t, "%s", jstr(g, "version"));
        table_cell(t, "pid");
        table_cell(t, "%lld", jint(g, "pid"));
        table_cell(t, "uptime");
        table_cell(t, "%s", up);
        table_cell(t, "config");
        table_cell(t, "%s",
                   json_is_string(config) ? json_string_value(config) : "(embedded default)");
        table_cell(t, "reactors");
        table_cell(t, "%lld", jint(g, "reactors"));
}

static void status_stats(struct table *t, const json_t *s)
{
        char rd[CELL], wr[CELL];
        fmt_bytes(rd, sizeof(rd), (double)jint(s, "read_bytes"));
        fmt_bytes(wr, sizeof(wr), (double)jint(s, "write_bytes"));
        table_cell(t, "sessions");
        table_cell(t, "%lld (%lld connections)", jint(s, "sessions_active"),
                   jint(s, "connections_active"));
        table_cell(t, "commands");
        table_cell(t, "%lld (%lld read, %lld write, %lld errors)", jint(s, "commands"),
                   jint(s, "read_commands"), jint(s, "write_commands"), jint(s, "errors"));
        table_cell(t, "read");
        table_cell(t, "%s", rd);
        table_cell(t, "written");
        table_cell(t, "%s", wr);
}

static void status_pool(struct table *t, const json_t *p)
{
        char line[CELL];
        fmt_bytes(line, sizeof(line), (double)jint(p, "line_size"));
        table_cell(t, "pool");
        table_cell(t, "%lld free, %lld clean, %lld dirty of %lld lines of %s",
                   jint(p, "lines_free"), jint(p, "lines_clean"), jint(p, "lines_dirty"),
                   jint(p, "lines_total"), line);
        table_cell(t, "dpt");
        table_cell(t, "%lld entries in use (high water %lld), %lld commands waiting",
                   jint(p, "dpt_entries_in_use"), jint(p, "dpt_high_water"),
                   jint(p, "commands_waiting_for_lines"));
}

static void status_cache(struct table *t, const json_t *c)
{
        char backlog[CELL], rate[CELL];
        table_cell(t, "cache");
        if (!json_is_true(json_object_get(c, "enabled"))) {
                table_cell(t, "disabled");
                return;
        }
        fmt_bytes(backlog, sizeof(backlog), (double)jint(c, "destage_backlog_bytes"));
        fmt_bytes(rate, sizeof(rate), json_number_value(json_object_get(c, "destage_rate_bps")));
        table_cell(t, "hit ratio %.1f%%, destage backlog %s, destaging %s/s",
                   json_number_value(json_object_get(c, "hit_ratio")) * 100, backlog, rate);
}

static void status_mirror(struct table *t, const json_t *m)
{
        const json_t *volumes = json_object_get(m, "volumes");
        size_t i, synced = 0;
        const json_t *v;
        json_array_foreach(volumes, i, v)
        {
                synced += strcmp(jstr(v, "state"), "synchronized") == 0;
        }
        table_cell(t, "mirror");
        if (json_array_size(volumes) == 0)
                table_cell(t, "no mirrored volumes");
        else
                table_cell(t, "%zu volume%s, %zu synchronized", json_array_size(volumes),
                           json_array_size(volumes) == 1 ? "" : "s", synced);
}

struct status_part {
        const char *name;
        void (*add)(struct table *t, const json_t *obj);
};

static const struct status_part status_parts[] = {
    {"gateway", status_gateway}, {"stats", status_stats},   {"pool", status_pool},
    {"cache", status_cache},     {"mirror", status_mirror},
};

void render_status(FILE *out, const json_t *snapshot)
{
        struct table t;
        table_init(&t, 2, NULL);
        const json_t *errors = json_object_get(snapshot, "errors");
        for (size_t i = 0; i < sizeof(status_parts) / sizeof(status_parts[0]); i++) {
                const struct status_part *p = &status_parts[i];
                const json_t *obj = json_object_get(snapshot, p->name);
                if (json_is_object(obj)) {
                        p->add(&t, obj);
                        continue;
                }
                table_cell(&t, "%s", p->name);
                table_cell(&t, "unavailable: %s", jstr(errors, p->name));
        }
        table_print(&t, out);
        table_free(&t);
}

/* ---- targets ---- */

static void cell_joined(struct table *t, const json_t *list)
{
        char buf[1024] = "";
        size_t used = 0, i;
        const json_t *v;
        json_array_foreach(list, i, v)
        {
                char item[CELL], human[CELL];
                value_text(item, sizeof(item), human, sizeof(human), "", v);
                int n = snprintf(buf + used, sizeof(buf) - used, "%s%s", i ? "," : "", item);
                if (n < 0 || (size_t)n >= sizeof(buf) - used)
                        break;
                used += (size_t)n;
        }
        table_cell(t, "%s", used ? buf : "-");
}

void render_targets(FILE *out, const json_t *result)
{
        static const char *const headers[] = {"TARGET", "ALIAS", "PORTALS", "LUNS"};
        const json_t *list = json_object_get(result, "targets");
        if (json_array_size(list) == 0) {
                fputs("no targets\n", out);
                return;
        }
        struct table t;
        table_init(&t, 4, headers);
        size_t i;
        const json_t *tg;
        json_array_foreach(list, i, tg)
        {
                table_cell(&t, "%s", jstr(tg, "name"));
                table_cell(&t, "%s", jstr(tg, "alias"));
                cell_joined(&t, json_object_get(tg, "portals"));
                cell_joined(&t, json_object_get(tg, "luns"));
        }
        table_print(&t, out);
        table_free(&t);
}

/* ---- sessions ---- */

static void session_row(struct table *t, const json_t *sess, const json_t *conn)
{
        cell_int(t, sess, "tsih");
        table_cell(t, "%s", jstr(sess, "isid"));
        table_cell(t, "%s", jstr(sess, "initiator_name"));
        table_cell(t, "%s", jstr(sess, "target"));
        table_cell(t, "%s", jstr(sess, "type"));
        cell_int(t, conn, "cid");
        table_cell(t, "%s", jstr(conn, "transport"));
        table_cell(t, "%s", jstr(conn, "portal"));
        table_cell(t, "%s", jstr(conn, "peer"));
        cell_int(t, conn, "reactor");
        cell_int(t, conn, "commands_in_flight");
}

static void params_row(struct table *t, const json_t *sess, const json_t *conn)
{
        const json_t *p = json_object_get(conn, "params");
        cell_int(t, sess, "tsih");
        cell_int(t, conn, "cid");
        table_cell(t, "%s", jstr(p, "header_digest"));
        table_cell(t, "%s", jstr(p, "data_digest"));
        cell_int(t, p, "max_recv_dsl");
        cell_int(t, p, "max_xmit_dsl");
        cell_int(t, p, "max_burst");
        cell_int(t, p, "first_burst");
        cell_bool(t, p, "immediate_data");
        cell_bool(t, p, "initial_r2t");
        cell_int(t, p, "max_outstanding_r2t");
}

static void session_rows(struct table *t, const json_t *list,
                         void (*row)(struct table *, const json_t *, const json_t *))
{
        size_t i, j;
        const json_t *sess, *conn;
        json_array_foreach(list, i, sess)
        {
                const json_t *conns = json_object_get(sess, "connections");
                if (json_array_size(conns) == 0)
                        row(t, sess, NULL);
                json_array_foreach(conns, j, conn)
                {
                        row(t, sess, conn);
                }
        }
}

void render_sessions(FILE *out, const json_t *result)
{
        static const char *const conn_headers[] = {"TSIH", "ISID",    "INITIATOR", "TARGET",
                                                   "TYPE", "CID",     "TRANSPORT", "PORTAL",
                                                   "PEER", "REACTOR", "IN-FLIGHT"};
        static const char *const param_headers[] = {"TSIH",        "CID",          "HEADER-DIGEST",
                                                    "DATA-DIGEST", "MAX-RECV-DSL", "MAX-XMIT-DSL",
                                                    "MAX-BURST",   "FIRST-BURST",  "IMMEDIATE",
                                                    "INITIAL-R2T", "MAX-R2T"};
        const json_t *list = json_object_get(result, "sessions");
        if (json_array_size(list) == 0) {
                fputs("no sessions\n", out);
                return;
        }
        struct table t;
        table_init(&t, 11, conn_headers);
        session_rows(&t, list, session_row);
        table_print(&t, out);
        table_free(&t);
        fputc('\n', out);
        table_init(&t, 11, param_headers);
        session_rows(&t, list, params_row);
        table_print(&t, out);
        table_free(&t);
}

/* ---- luns ---- */

void render_luns(FILE *out, const json_t *result)
{
        static const char *const headers[] = {"TARGET", "LUN",         "SIZE",
                                              "BLOCK",  "BACKEND",     "PATH",
                                              "STATE",  "WRITE-CACHE", "LAST-ERROR"};
        const json_t *list = json_object_get(result, "luns");
        if (json_array_size(list) == 0) {
                fputs("no LUNs\n", out);
                return;
        }
        struct table t;
        table_init(&t, 9, headers);
        size_t i;
        const json_t *lun;
        json_array_foreach(list, i, lun)
        {
                const json_t *be = json_object_get(lun, "backend");
                table_cell(&t, "%s", jstr(lun, "target"));
                cell_int(&t, lun, "lun");
                cell_bytes(&t, lun, "size_bytes");
                cell_int(&t, lun, "block_size");
                table_cell(&t, "%s", jstr(be, "type"));
                table_cell(&t, "%s", jstr(be, "path"));
                table_cell(&t, "%s", jstr(be, "state"));
                cell_bool(&t, lun, "write_cache");
                table_cell(&t, "%s", jstr(be, "last_error"));
        }
        table_print(&t, out);
        table_free(&t);
}

/* ---- pool, cache, stats ---- */

void render_pool(FILE *out, const json_t *result)
{
        render_kv(out, result);
}

void render_cache(FILE *out, const json_t *result)
{
        if (!json_is_true(json_object_get(result, "enabled"))) {
                fputs("cache disabled\n", out);
                return;
        }
        render_kv(out, result);
}

void render_stats(FILE *out, const json_t *result)
{
        render_kv(out, result);
}

/* ---- mirror ---- */

void render_mirror(FILE *out, const json_t *result)
{
        static const char *const headers[] = {"TARGET", "LUN",  "ROLE", "STATE",
                                              "PEER",   "LINK", "LAG",  "RESYNC"};
        const json_t *list = json_object_get(result, "volumes");
        if (json_array_size(list) == 0) {
                fputs("no mirrored volumes\n", out);
                return;
        }
        struct table t;
        table_init(&t, 8, headers);
        size_t i;
        const json_t *v;
        json_array_foreach(list, i, v)
        {
                long long done = jint(v, "resync_done_bytes"),
                          total = jint(v, "resync_total_bytes");
                table_cell(&t, "%s", jstr(v, "target"));
                cell_int(&t, v, "lun");
                table_cell(&t, "%s", jstr(v, "role"));
                table_cell(&t, "%s", jstr(v, "state"));
                table_cell(&t, "%s", jstr(v, "peer"));
                table_cell(&t, "%s", jstr(v, "transport"));
                cell_bytes(&t, v, "lag_bytes");
                if (total > 0)
                        table_cell(&t, "%.1f%%", 100.0 * (double)done / (double)total);
                else
                        table_cell(&t, "-");
        }
        table_print(&t, out);
        table_free(&t);
}
