/* status_json: snapshots of the iSCSI layer for the status socket, in the shapes that
 * docs/status.md defines. Called from the status thread: sessions are read under the session
 * lock, counters with relaxed loads. */
#include <stdio.h>
#include <string.h>

#include "cache/dpt.h"
#include "cache/linepool.h"
#include "iscsi/iscsi_internal.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static json_t *conn_params_json(const struct iscsi_conn *c)
{
        return json_pack(
            "{s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:I}", "header_digest",
            c->header_digest ? "CRC32C" : "None", "data_digest", c->data_digest ? "CRC32C" : "None",
            "max_recv_dsl", (json_int_t)c->max_recv_dsl, "max_xmit_dsl",
            (json_int_t)c->max_xmit_dsl, "max_burst", (json_int_t)c->max_burst, "first_burst",
            (json_int_t)c->first_burst, "immediate_data", c->immediate_data, "initial_r2t",
            c->initial_r2t, "max_outstanding_r2t", (json_int_t)c->max_r2t);
}

static json_t *conn_json(const struct iscsi_conn *c)
{
        return json_pack("{s:I, s:s, s:s, s:s, s:I, s:o, s:I}", "cid", (json_int_t)c->cid, "portal",
                         c->portal, "peer", c->peer, "transport", c->xops->name, "reactor",
                         (json_int_t)c->rc->index, "params", conn_params_json(c),
                         "commands_in_flight", (json_int_t)LOAD(c->ntasks));
}

static json_t *session_json(const struct iscsi_session *s)
{
        char isid[13];
        snprintf(isid, sizeof(isid), "%02x%02x%02x%02x%02x%02x", s->isid[0], s->isid[1], s->isid[2],
                 s->isid[3], s->isid[4], s->isid[5]);
        json_t *conns = json_array();
        if (s->conn)
                json_array_append_new(conns, conn_json(s->conn));
        return json_pack("{s:I, s:s, s:s, s:s?, s:s, s:o}", "tsih", (json_int_t)s->tsih, "isid",
                         isid, "initiator_name", s->initiator_name, "target",
                         s->target ? s->target->name : NULL, "type",
                         s->discovery ? "discovery" : "normal", "connections", conns);
}

json_t *iscsi_gw_sessions_json(struct iscsi_gw *gw)
{
        json_t *arr = json_array();
        pthread_mutex_lock(&gw->sessions_lock);
        for (const struct iscsi_session *s = gw->sessions; s; s = s->next)
                json_array_append_new(arr, session_json(s));
        pthread_mutex_unlock(&gw->sessions_lock);
        return json_pack("{s:o}", "sessions", arr);
}

unsigned iscsi_gw_session_count(struct iscsi_gw *gw)
{
        unsigned n = 0;
        pthread_mutex_lock(&gw->sessions_lock);
        for (const struct iscsi_session *s = gw->sessions; s; s = s->next)
                n++;
        pthread_mutex_unlock(&gw->sessions_lock);
        return n;
}

static void sum_stats(struct iscsi_gw *gw, struct iscsi_stats *sum, uint64_t *conns)
{
        *conns = 0;
        for (unsigned i = 0; i < gw->nreactors; i++) {
                const struct iscsi_reactor_ctx *rc = gw->rctx[i];
                if (!rc)
                        continue;
                const uint64_t *src = (const uint64_t *)&rc->stats;
                uint64_t *dst = (uint64_t *)sum;
                for (size_t k = 0; k < sizeof(*sum) / sizeof(uint64_t); k++)
                        dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
                *conns += LOAD(rc->nconns);
        }
}

json_t *iscsi_gw_stats_json(struct iscsi_gw *gw)
{
        struct iscsi_stats s = {0};
        uint64_t conns;
        sum_stats(gw, &s, &conns);
        json_t *o = json_object();
#define PUT(name, v) json_object_set_new(o, name, json_integer((json_int_t)(v)))
        PUT("commands", s.commands);
        PUT("read_commands", s.read_commands);
        PUT("write_commands", s.write_commands);
        PUT("read_bytes", s.read_bytes);
        PUT("write_bytes", s.write_bytes);
        PUT("write_data_bytes", s.write_data_bytes);
        PUT("write_copy_bytes", s.write_copy_bytes);
        PUT("read_copy_bytes", s.read_copy_bytes);
        PUT("r2t_sent", s.r2t_sent);
        PUT("data_out_pdus", s.data_out_pdus);
        PUT("data_in_pdus", s.data_in_pdus);
        PUT("rejects", s.rejects);
        PUT("digest_errors", s.digest_errors);
        PUT("login_failures", s.login_failures);
        PUT("connections_accepted", s.connections_accepted);
        PUT("connections_active", conns);
        PUT("sessions_active", iscsi_gw_session_count(gw));
        PUT("errors", s.scsi_errors);
        PUT("protocol_errors", s.protocol_errors);
        PUT("tmf_requests", s.tmf_requests);
        PUT("nop_timeouts", s.nop_timeouts);
#undef PUT
        return o;
}

json_t *iscsi_gw_pool_json(struct iscsi_gw *gw)
{
        uint64_t total = 0, free_lines = 0, dpt_use = 0, dpt_hw = 0, waiting = 0;
        for (unsigned i = 0; i < gw->nreactors; i++) {
                const struct iscsi_reactor_ctx *rc = gw->rctx[i];
                if (!rc)
                        continue;
                total += line_part_total(rc->lines);
                free_lines += line_part_free(rc->lines);
                dpt_use += dpt_in_use(rc->dpt);
                dpt_hw += dpt_high_water(rc->dpt);
                waiting += LOAD(rc->stats.commands_waiting);
        }
        return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "line_size",
                         (json_int_t)line_pool_line_size(gw->conf.pool), "lines_total",
                         (json_int_t)total, "lines_free", (json_int_t)free_lines, "lines_clean",
                         (json_int_t)0, "lines_dirty", (json_int_t)0, "dpt_entries_in_use",
                         (json_int_t)dpt_use, "dpt_high_water", (json_int_t)dpt_hw,
                         "commands_waiting_for_lines", (json_int_t)waiting, "huge_pages",
                         line_pool_huge_pages(gw->conf.pool));
}

/* The configured portals, "addr:port" once each (TCP and iSER on one address are one). */
static void add_configured_portal(json_t *portals, const struct iscsi_portal *p)
{
        char name[80];
        portal_format(p, p->address, name, sizeof(name));
        for (size_t i = 0; i < json_array_size(portals); i++)
                if (strcmp(json_string_value(json_array_get(portals, i)), name) == 0)
                        return;
        json_array_append_new(portals, json_string(name));
}

json_t *iscsi_gw_targets_json(struct iscsi_gw *gw)
{
        json_t *arr = json_array();
        for (unsigned i = 0; i < gw->ntargets; i++) {
                const struct iscsi_target *t = gw->targets[i];
                json_t *portals = json_array(), *luns = json_array();
                for (unsigned p = 0; p < gw->nportals; p++)
                        add_configured_portal(portals, &gw->portals[p]);
                for (unsigned l = 0; l < t->nluns; l++)
                        json_array_append_new(luns, json_integer((json_int_t)t->lun_ids[l]));
                json_array_append_new(arr, json_pack("{s:s, s:s?, s:o, s:o}", "name", t->name,
                                                     "alias", t->alias[0] ? t->alias : NULL,
                                                     "portals", portals, "luns", luns));
        }
        return json_pack("{s:o}", "targets", arr);
}
