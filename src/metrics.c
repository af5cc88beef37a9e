/* Prometheus text exposition (format 0.0.4) of a status snapshot; see docs/status.md §5. */
#include "src/status.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A metric taken from one member of one snapshot object. */
struct metric_def {
        const char *field;
        const char *name;
        const char *type;
        const char *help;
};

static const struct metric_def gateway_defs[] = {
    {"uptime_s", "isergw_uptime_seconds", "gauge", "Seconds since the daemon started."},
    {"reactors", "isergw_reactors", "gauge", "Number of reactor (data-path) threads."},
};

static const struct metric_def stats_defs[] = {
    {"commands", "isergw_commands_total", "counter", "SCSI commands received."},
    {"read_commands", "isergw_read_commands_total", "counter", "READ commands received."},
    {"write_commands", "isergw_write_commands_total", "counter", "WRITE commands received."},
    {"read_bytes", "isergw_read_bytes_total", "counter", "Bytes of read data sent to initiators."},
    {"write_bytes", "isergw_write_bytes_total", "counter",
     "Bytes written by completed write commands."},
    {"write_data_bytes", "isergw_write_data_bytes_total", "counter",
     "Bytes of write data received (immediate, Data-Out, RDMA)."},
    {"write_copy_bytes", "isergw_write_copy_bytes_total", "counter",
     "Bytes of write data copied in memory by the gateway."},
    {"read_copy_bytes", "isergw_read_copy_bytes_total", "counter",
     "Bytes of read data copied in memory by the gateway."},
    {"r2t_sent", "isergw_r2t_sent_total", "counter", "R2T PDUs sent."},
    {"data_out_pdus", "isergw_data_out_pdus_total", "counter", "SCSI Data-Out PDUs received."},
    {"data_in_pdus", "isergw_data_in_pdus_total", "counter", "SCSI Data-In PDUs sent."},
    {"rejects", "isergw_rejects_total", "counter", "Reject PDUs sent."},
    {"digest_errors", "isergw_digest_errors_total", "counter",
     "Header or data digest mismatches detected."},
    {"login_failures", "isergw_login_failures_total", "counter",
     "Logins answered with a failure status."},
    {"connections_accepted", "isergw_connections_accepted_total", "counter",
     "Transport connections accepted."},
    {"errors", "isergw_errors_total", "counter",
     "SCSI commands that ended with a status other than GOOD or were aborted."},
    {"protocol_errors", "isergw_protocol_errors_total", "counter",
     "iSCSI protocol violations detected in received PDUs."},
    {"tmf_requests", "isergw_tmf_requests_total", "counter",
     "Task management function requests received."},
    {"nop_timeouts", "isergw_nop_timeouts_total", "counter",
     "Connections dropped because a NOP-In ping went unanswered."},
    {"iser_connections", "isergw_iser_connections_total", "counter",
     "iSER (RDMA) connections accepted."},
    {"iser_rdma_reads", "isergw_iser_rdma_reads_total", "counter",
     "RDMA READs that pulled write data into cache lines."},
    {"iser_rdma_read_bytes", "isergw_iser_rdma_read_bytes_total", "counter",
     "Bytes of write data pulled by RDMA READ."},
    {"iser_rdma_writes", "isergw_iser_rdma_writes_total", "counter",
     "RDMA WRITEs that pushed read data from cache lines."},
    {"iser_rdma_write_bytes", "isergw_iser_rdma_write_bytes_total", "counter",
     "Bytes of read data pushed by RDMA WRITE."},
    {"iser_data_copy_bytes", "isergw_iser_data_copy_bytes_total", "counter",
     "Bytes of read or write data the CPU copied on the iSER path (0 by design)."},
    {"iser_wc_errors", "isergw_iser_wc_errors_total", "counter",
     "RDMA work requests that completed with an error (not flushes)."},
    {"connections_active", "isergw_connections_active", "gauge", "Transport connections open now."},
    {"sessions_active", "isergw_sessions_active", "gauge", "Sessions in full feature phase now."},
};

static const struct metric_def pool_defs[] = {
    {"line_size", "isergw_pool_line_size_bytes", "gauge", "Bytes per cache line."},
    {"lines_total", "isergw_pool_capacity_lines", "gauge", "Cache lines in the pool."},
    {"dpt_entries_in_use", "isergw_dpt_entries_in_use", "gauge",
     "Data pointer table entries in use."},
    {"dpt_high_water", "isergw_dpt_entries_high_water", "gauge",
     "Most data pointer table entries in use at once since start."},
    {"commands_waiting_for_lines", "isergw_pool_commands_waiting", "gauge",
     "Commands waiting for free cache lines."},
    {"huge_pages", "isergw_pool_huge_pages", "gauge", "1 if the pool is backed by huge pages."},
};

static const struct metric_def cache_defs[] = {
    {"enabled", "isergw_cache_enabled", "gauge", "1 if the write-back cache is active."},
    {"hit_ratio", "isergw_cache_hit_ratio", "gauge", "Read hit ratio since start (0..1)."},
    {"read_hits", "isergw_cache_read_hits_total", "counter",
     "Reads served entirely from the cache."},
    {"read_misses", "isergw_cache_read_misses_total", "counter", "Reads that went to the backend."},
    {"destage_backlog_bytes", "isergw_cache_destage_backlog_bytes", "gauge",
     "Dirty bytes waiting to be written to the backends."},
    {"destage_rate_bps", "isergw_cache_destage_rate_bytes_per_second", "gauge",
     "Bytes per second destaged, averaged over the last 10 seconds."},
    {"destaged_bytes", "isergw_cache_destaged_bytes_total", "counter",
     "Bytes destaged since start."},
    {"destage_ios", "isergw_cache_destage_ios_total", "counter",
     "Backend writes issued by the destager."},
    {"lines_dirty", "isergw_cache_lines_dirty", "gauge", "Cache lines holding dirty data."},
    {"merge_copy_bytes", "isergw_cache_merge_copy_bytes_total", "counter",
     "Bytes of partial-line writes copied into cached lines."},
    {"cow_lines", "isergw_cache_cow_lines_total", "counter",
     "Lines copied because a write hit a line being destaged."},
    {"evictions", "isergw_cache_evictions_total", "counter", "Clean lines evicted."},
    {"write_waits", "isergw_cache_write_waits_total", "counter",
     "Write line requests delayed at the dirty hard limit."},
};

#define NDEFS(a) (sizeof(a) / sizeof((a)[0]))

/* A sample value: numbers as they are, booleans as 0/1; false if v is neither. */
static bool sample_value(const json_t *v, double *out)
{
        if (json_is_boolean(v)) {
                *out = json_is_true(v) ? 1 : 0;
                return true;
        }
        if (!json_is_number(v))
                return false;
        *out = json_number_value(v);
        return true;
}

static void put_value(FILE *f, const json_t *v)
{
        if (json_is_integer(v)) {
                fprintf(f, " %" JSON_INTEGER_FORMAT "\n", json_integer_value(v));
                return;
        }
        double d = 0;
        sample_value(v, &d);
        fprintf(f, " %.15g\n", d);
}

static void put_header(FILE *f, const char *name, const char *type, const char *help)
{
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value, escaped as the exposition format requires. */
static void put_label_value(FILE *f, const char *s)
{
        fputc('"', f);
        for (; *s; s++) {
                if (*s == '\\' || *s == '"')
                        fputc('\\', f);
                if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
        }
        fputc('"', f);
}

static void render_defs(FILE *f, const json_t *obj, const struct metric_def *defs, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                const json_t *v = json_object_get(obj, defs[i].field);
                double d;
                if (!sample_value(v, &d))
                        continue;
                put_header(f, defs[i].name, defs[i].type, defs[i].help);
                fputs(defs[i].name, f);
                put_value(f, v);
        }
}

static void render_build_info(FILE *f, const json_t *gateway)
{
        const char *version = json_string_value(json_object_get(gateway, "version"));
        if (!version)
                return;
        put_header(f, "isergw_build_info", "gauge", "Always 1; the daemon's version as a label.");
        fputs("isergw_build_info{version=", f);
        put_label_value(f, version);
        fputs("} 1\n", f);
}

static void render_pool_lines(FILE *f, const json_t *pool)
{
        static const char *const states[] = {"free", "clean", "dirty"};
        bool header = false;
        for (size_t i = 0; i < NDEFS(states); i++) {
                char field[32];
                snprintf(field, sizeof(field), "lines_%s", states[i]);
                const json_t *v = json_object_get(pool, field);
                if (!json_is_number(v))
                        continue;
                if (!header)
                        put_header(f, "isergw_pool_lines", "gauge",
                                   "Cache lines by state (free, clean, dirty).");
                header = true;
                fprintf(f, "isergw_pool_lines{state=\"%s\"}", states[i]);
                put_value(f, v);
        }
}

static json_int_t connection_in_flight(const json_t *session)
{
        json_int_t sum = 0;
        size_t i;
        const json_t *conn;
        json_array_foreach(json_object_get(session, "connections"), i, conn)
        {
                sum += json_integer_value(json_object_get(conn, "commands_in_flight"));
        }
        return sum;
}

static void render_in_flight(FILE *f, const json_t *sessions)
{
        const json_t *list = json_object_get(sessions, "sessions");
        if (!json_is_array(list))
                return;
        json_int_t sum = 0;
        size_t i;
        const json_t *session;
        json_array_foreach(list, i, session)
        {
                sum += connection_in_flight(session);
        }
        put_header(f, "isergw_commands_in_flight", "gauge",
                   "SCSI commands received and not yet answered.");
        fprintf(f, "isergw_commands_in_flight %" JSON_INTEGER_FORMAT "\n", sum);
}

/* One per-LUN family: how to get its value from a LUN entry. */
struct lun_metric {
        const char *name;
        const char *help;
        bool with_type; /* adds the backend type label */
        const json_t *(*get)(const json_t *lun, json_t **tmp);
};

static const json_t *lun_size(const json_t *lun, json_t **tmp)
{
        return json_object_get(lun, "size_bytes");
}

static const json_t *lun_block_size(const json_t *lun, json_t **tmp)
{
        return json_object_get(lun, "block_size");
}

static const json_t *lun_write_cache(const json_t *lun, json_t **tmp)
{
        return json_object_get(lun, "write_cache");
}

static const json_t *lun_backend_up(const json_t *lun, json_t **tmp)
{
        const json_t *backend = json_object_get(lun, "backend");
        const char *state = json_string_value(json_object_get(backend, "state"));
        if (!state)
                return NULL;
        *tmp = json_integer(strcmp(state, "online") == 0);
        return *tmp;
}

static const struct lun_metric lun_metrics[] = {
    {"isergw_lun_size_bytes", "LUN capacity in bytes.", false, lun_size},
    {"isergw_lun_block_size_bytes", "LUN logical block size in bytes.", false, lun_block_size},
    {"isergw_lun_backend_up", "1 if the LUN's backend is online.", true, lun_backend_up},
    {"isergw_lun_write_cache", "1 if writes are acknowledged before stable storage.", false,
     lun_write_cache},
};

static void put_lun_labels(FILE *f, const json_t *lun, bool with_type)
{
        const char *target = json_string_value(json_object_get(lun, "target"));
        fputs("{target=", f);
        put_label_value(f, target ? target : "");
        fprintf(f, ",lun=\"%" JSON_INTEGER_FORMAT "\"",
                json_integer_value(json_object_get(lun, "lun")));
        if (with_type) {
                const json_t *backend = json_object_get(lun, "backend");
                const char *type = json_string_value(json_object_get(backend, "type"));
                fputs(",type=", f);
                put_label_value(f, type ? type : "");
        }
        fputc('}', f);
}

static void render_lun_metric(FILE *f, const json_t *list, const struct lun_metric *m)
{
        bool header = false;
        size_t i;
        const json_t *lun;
        json_array_foreach(list, i, lun)
        {
                json_t *tmp = NULL;
                const json_t *v = m->get(lun, &tmp);
                double d;
                if (sample_value(v, &d)) {
                        if (!header)
                                put_header(f, m->name, "gauge", m->help);
                        header = true;
                        fputs(m->name, f);
                        put_lun_labels(f, lun, m->with_type);
                        put_value(f, v);
                }
                json_decref(tmp);
        }
}

static void render_luns(FILE *f, const json_t *luns)
{
        const json_t *list = json_object_get(luns, "luns");
        if (!json_is_array(list))
                return;
        for (size_t i = 0; i < NDEFS(lun_metrics); i++)
                render_lun_metric(f, list, &lun_metrics[i]);
}

static void render_snapshot(FILE *f, const json_t *snapshot)
{
        const json_t *gateway = json_object_get(snapshot, "gateway");
        render_build_info(f, gateway);
        render_defs(f, gateway, gateway_defs, NDEFS(gateway_defs));
        render_defs(f, json_object_get(snapshot, "stats"), stats_defs, NDEFS(stats_defs));
        render_in_flight(f, json_object_get(snapshot, "sessions"));
        const json_t *pool = json_object_get(snapshot, "pool");
        render_defs(f, pool, pool_defs, NDEFS(pool_defs));
        render_pool_lines(f, pool);
        render_defs(f, json_object_get(snapshot, "cache"), cache_defs, NDEFS(cache_defs));
        render_luns(f, json_object_get(snapshot, "luns"));
}

char *status_metrics_render(const json_t *snapshot)
{
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return NULL;
        render_snapshot(f, snapshot);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}
