/* conn: one iSCSI connection: receive dispatch, the login phase, control PDUs of the full
 * feature phase (NOP, Text, Logout, TMF, SNACK), sequence numbers and teardown. SCSI
 * commands and their data are in task.c. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/dpt.h"
#include "iscsi/iscsi_internal.h"
#include "iscsi/textkv.h"
#include "src/log.h"

#define LOGIN_MAX_DSL 8192

static inline bool sn_lt(uint32_t a, uint32_t b)
{
        return (int32_t)(a - b) < 0;
}

struct tx_pdu *tx_pdu_new(void)
{
        struct tx_pdu *p = calloc(1, sizeof(*p));
        return p;
}

void tx_pdu_free(struct tx_pdu *pdu)
{
        if (!pdu)
                return;
        free(pdu->owned);
        free(pdu);
}

void tx_pdu_finish_list(struct tx_pdu **head)
{
        while (*head) {
                struct tx_pdu *p = *head;
                *head = p->next;
                if (p->sent)
                        p->sent(p);
                tx_pdu_free(p);
        }
}

static const char *conn_name(const struct iscsi_conn *c)
{
        return c->peer;
}

void conn_update_window(struct iscsi_conn *c)
{
        struct iscsi_session *s = c->session;
        if (!s)
                return;
        uint32_t depth = c->gw->conf.queue_depth;
        uint32_t busy = c->ntasks < depth ? c->ntasks : depth - 1;
        uint32_t max = s->exp_cmdsn + (depth - busy) - 1;
        /* Never below what was advertised: an initiator keeps the largest MaxCmdSN it has seen
         * (RFC 7143 4.2.2.1), so commands up to it must still be taken. */
        if (!s->max_cmdsn_set || sn_lt(s->max_cmdsn, max)) {
                s->max_cmdsn = max;
                s->max_cmdsn_set = true;
        }
}

void conn_fill_sn(struct iscsi_conn *c, struct iscsi_bhs *bhs, bool advance_statsn)
{
        bhs_set_word(bhs, BHS_STATSN, c->stat_sn);
        if (advance_statsn)
                c->stat_sn++;
        if (c->session) {
                conn_update_window(c);
                bhs_set_word(bhs, BHS_EXPCMDSN, c->session->exp_cmdsn);
                bhs_set_word(bhs, BHS_MAXCMDSN, c->session->max_cmdsn);
        }
}

static void orphans_run(struct reactor_deferred *d)
{
        struct iscsi_conn *c =
            (struct iscsi_conn *)((char *)d - offsetof(struct iscsi_conn, orphan_work));
        c->orphans_running = true;
        while (c->orphans) {
                struct tx_pdu *p = c->orphans;
                c->orphans = p->next;
                if (p->sent)
                        p->sent(p);
                tx_pdu_free(p);
        }
        c->orphans_running = false;
        conn_maybe_free(c);
}

/* Transports complete a PDU (call sent()) only after send_pdu has returned. */
void conn_send_pdu(struct iscsi_conn *c, struct tx_pdu *pdu)
{
        if (!c->xc || c->closed_by_transport) {
                pdu->next = c->orphans;
                c->orphans = pdu;
                c->orphan_work.cb = orphans_run;
                reactor_defer(c->rc->reactor, &c->orphan_work);
                return;
        }
        c->xops->send_pdu(c->xc, pdu);
}

void conn_drop(struct iscsi_conn *c, const char *why)
{
        if (c->close_requested)
                return;
        c->close_requested = true;
        log_warn("conn %s: dropping connection: %s", conn_name(c), why);
        c->state = CONN_CLOSING;
        if (c->xc)
                c->xops->close(c->xc, why);
}

static struct tx_pdu *new_pdu(uint8_t opcode, uint8_t flags, uint32_t itt)
{
        struct tx_pdu *p = tx_pdu_new();
        if (!p)
                return NULL;
        bhs_set_opcode(&p->bhs, opcode, flags);
        bhs_set_itt(&p->bhs, itt);
        return p;
}

static void pdu_attach_copy(struct tx_pdu *p, const void *data, uint32_t len)
{
        if (!len)
                return;
        p->owned = malloc(len);
        if (!p->owned)
                return;
        memcpy(p->owned, data, len);
        p->data[0] = (struct iovec){p->owned, len};
        p->data_iovcnt = 1;
        p->data_len = len;
        bhs_set_dsl(&p->bhs, len);
}

void conn_send_reject(struct iscsi_conn *c, const struct iscsi_bhs *bad, uint8_t reason,
                      const char *why)
{
        STAT_ADD(c->rc, rejects, 1);
        log_warn("conn %s: Reject reason 0x%02x for %s (ITT 0x%08x): %s", conn_name(c), reason,
                 iscsi_opcode_name(bhs_opcode(bad)), bhs_itt(bad), why);
        struct tx_pdu *p = new_pdu(ISCSI_OP_REJECT, ISCSI_FLAG_FINAL, ISCSI_RSVD_TAG);
        if (!p)
                return;
        p->bhs.b[2] = reason;
        pdu_attach_copy(p, bad->b, ISCSI_BHS_LEN);
        conn_fill_sn(c, &p->bhs, true);
        bhs_set_word(&p->bhs, BHS_DATASN, 0);
        conn_send_pdu(c, p);
}

/* ---------------- login ---------------- */

static int lookup_target_cb(void *ctx, const char *target_name, const char *initiator,
                            struct login_target_info *info)
{
        struct iscsi_conn *c = ctx;
        struct iscsi_target *t = target_find(c->gw, target_name);
        if (!t)
                return ISCSI_LOGIN_DETAIL_NOT_FOUND;
        if (!target_allows(t, initiator))
                return ISCSI_LOGIN_DETAIL_AUTHORIZATION;
        memset(info, 0, sizeof(*info));
        info->name = t->name;
        info->alias = t->alias[0] ? t->alias : NULL;
        info->tpgt = 1;
        info->auth.chap_user = t->chap_user;
        info->auth.chap_secret = t->chap_secret;
        info->auth.mutual_user = t->mutual_user;
        info->auth.mutual_secret = t->mutual_secret;
        return 0;
}

static void login_limits(const struct iscsi_gw *gw, struct iscsi_target_limits *l)
{
        iscsi_target_limits_default(l);
        l->max_recv_dsl = gw->conf.max_recv_dsl;
        l->max_burst_length = gw->conf.max_burst;
        l->first_burst_length = gw->conf.first_burst;
        l->max_outstanding_r2t = gw->conf.max_outstanding_r2t;
        l->immediate_data = gw->conf.immediate_data;
        l->initial_r2t = gw->conf.initial_r2t;
        l->max_connections = 1;
        l->error_recovery_level = 0;
        l->header_digest_crc32c = true;
        l->data_digest_crc32c = true;
}

static void close_after_sent(struct tx_pdu *pdu)
{
        struct iscsi_conn *c = pdu->sent_arg;
        conn_drop(c, "login failed");
}

static void logout_sent(struct tx_pdu *pdu)
{
        struct iscsi_conn *c = pdu->sent_arg;
        if (c->close_requested)
                return;
        /* An orderly end, not an error: no warning. */
        c->close_requested = true;
        c->state = CONN_CLOSING;
        if (c->xc)
                c->xops->close(c->xc, "logged out");
}

static void send_login_rsp(struct iscsi_conn *c, const struct login_response *rsp, uint16_t tsih)
{
        uint8_t flags = (uint8_t)(rsp->csg << 2 | rsp->nsg);
        if (rsp->transit)
                flags |= ISCSI_FLAG_LOGIN_TRANSIT;
        if (rsp->cont)
                flags |= ISCSI_FLAG_LOGIN_CONTINUE;
        struct tx_pdu *p = new_pdu(ISCSI_OP_LOGIN_RSP, flags, c->login_itt);
        if (!p) {
                conn_drop(c, "out of memory");
                return;
        }
        memcpy(p->bhs.b + 8, c->login_isid, 6);
        iscsi_put_be16(p->bhs.b + 14, tsih);
        p->bhs.b[36] = rsp->status_class;
        p->bhs.b[37] = rsp->status_detail;
        pdu_attach_copy(p, rsp->data, (uint32_t)rsp->len);
        bhs_set_word(&p->bhs, BHS_STATSN, c->stat_sn++);
        uint32_t exp = c->session ? c->session->exp_cmdsn : bhs_word(&c->rx_bhs, BHS_CMDSN);
        uint32_t max = c->session ? c->session->max_cmdsn : exp;
        bhs_set_word(&p->bhs, BHS_EXPCMDSN, exp);
        bhs_set_word(&p->bhs, BHS_MAXCMDSN, max);
        if (rsp->status_class != ISCSI_LOGIN_STATUS_SUCCESS) {
                p->sent = close_after_sent;
                p->sent_arg = c;
                c->state = CONN_CLOSING;
        }
        conn_send_pdu(c, p);
}

static void login_fail(struct iscsi_conn *c, uint8_t cls, uint8_t detail, const char *why)
{
        STAT_ADD(c->rc, login_failures, 1);
        log_warn("conn %s: login refused (0x%02x%02x): %s", conn_name(c), cls, detail, why);
        struct login_response rsp = {.status_class = cls, .status_detail = detail};
        uint8_t csg = (c->rx_bhs.b[1] >> 2) & 3;
        rsp.csg = csg;
        rsp.nsg = csg;
        send_login_rsp(c, &rsp, 0);
}

static void nop_timer_cb(struct reactor_timer *t);

static void apply_params(struct iscsi_conn *c, const struct iscsi_params *p)
{
        c->max_xmit_dsl = p->max_send_dsl;
        c->max_recv_dsl = p->max_recv_dsl;
        c->max_burst = p->max_burst_length;
        c->first_burst = p->first_burst_length;
        c->max_r2t = p->max_outstanding_r2t;
        c->max_data_in = c->max_xmit_dsl;
        if (p->rdma_extensions) {
                /* RFC 7145: control-type PDUs are bounded by the iSER keys; Data-In and R2T
                 * never go on the wire (RDMA WRITE and READ do), so a Data-In may span a whole
                 * segment and a command may have several RDMA READs in flight (the transport
                 * bounds them by the initiator's and the device's read limits). */
                c->max_xmit_dsl = p->initiator_recv_dsl;
                c->max_recv_dsl = p->target_recv_dsl;
                uint32_t cap = c->xops->max_control_dsl;
                if (cap && c->max_xmit_dsl > cap)
                        c->max_xmit_dsl = cap;
                c->max_data_in = c->max_burst;
                c->max_r2t = 16;
        }
        if (c->max_r2t > 16)
                c->max_r2t = 16;
        c->immediate_data = p->immediate_data;
        c->initial_r2t = p->initial_r2t;
        c->header_digest = p->header_digest == ISCSI_DIGEST_CRC32C;
        c->data_digest = p->data_digest == ISCSI_DIGEST_CRC32C;
}

static int login_complete(struct iscsi_conn *c)
{
        const struct iscsi_params *p = login_params(c->login);
        bool discovery = p->session_type == ISCSI_SESSION_DISCOVERY;
        struct iscsi_target *t = NULL;
        if (!discovery) {
                t = target_find(c->gw, p->target_name);
                if (!t)
                        return -1;
                session_reinstate(c->gw, c->login_isid, p->initiator_name, t);
        }
        struct iscsi_session *s = session_create(c->gw, c, c->login_isid, p->initiator_name,
                                                 p->initiator_alias, t, discovery);
        if (!s)
                return -1;
        s->exp_cmdsn = bhs_word(&c->rx_bhs, BHS_CMDSN);
        c->session = s;
        conn_update_window(c);
        apply_params(c, p);
        log_info("conn %s: %s session TSIH %u for %s%s%s, digests hdr=%s data=%s, "
                 "MaxRecvDSL %u/%u, burst %u/%u, ImmediateData=%s InitialR2T=%s",
                 conn_name(c), discovery ? "discovery" : "normal", s->tsih, p->initiator_name,
                 t ? " -> " : "", t ? t->name : "", c->header_digest ? "CRC32C" : "None",
                 c->data_digest ? "CRC32C" : "None", c->max_recv_dsl, c->max_xmit_dsl,
                 c->first_burst, c->max_burst, c->immediate_data ? "Yes" : "No",
                 c->initial_r2t ? "Yes" : "No");
        return 0;
}

static void enter_full_feature(struct iscsi_conn *c)
{
        c->state = CONN_FULL_FEATURE;
        /* Digests and the new data segment limit apply from the first PDU after login. */
        c->xops->set_digests(c->xc, c->header_digest, c->data_digest);
        c->xops->set_max_recv_dsl(c->xc, c->max_recv_dsl);
        login_destroy(c->login);
        c->login = NULL;
        if (c->gw->conf.nop_interval_s) {
                c->rx_pdus_at_tick = c->rx_pdus; /* silent from here on: pinged at the tick */
                c->nop_timer.cb = nop_timer_cb;
                c->nop_timer.ctx = c;
                reactor_timer_arm(c->rc->reactor, &c->nop_timer,
                                  (uint64_t)c->gw->conf.nop_interval_s * 1000000000ull);
        }
}

static bool login_header_ok(struct iscsi_conn *c, const struct iscsi_bhs *h)
{
        uint8_t vmax = h->b[2], vmin = h->b[3];
        if (vmin > 0 || vmax < vmin) {
                login_fail(c, ISCSI_LOGIN_STATUS_INITIATOR_ERR,
                           ISCSI_LOGIN_DETAIL_UNSUPPORTED_VERSION, "unsupported version");
                return false;
        }
        if (!c->login_isid_set) {
                memcpy(c->login_isid, h->b + 8, 6);
                c->login_tsih = iscsi_get_be16(h->b + 14);
                c->cid = iscsi_get_be16(h->b + 20);
                c->stat_sn = bhs_word(h, BHS_EXPSTATSN);
                c->login_isid_set = true;
        } else if (memcmp(c->login_isid, h->b + 8, 6) != 0 ||
                   c->login_tsih != iscsi_get_be16(h->b + 14)) {
                login_fail(c, ISCSI_LOGIN_STATUS_INITIATOR_ERR, ISCSI_LOGIN_DETAIL_INVALID_REQUEST,
                           "ISID or TSIH changed during login");
                return false;
        }
        c->login_itt = bhs_itt(h);
        if (c->login_tsih != 0) {
                /* Adding a connection to a session: one connection per session here. */
                login_fail(c, ISCSI_LOGIN_STATUS_INITIATOR_ERR,
                           ISCSI_LOGIN_DETAIL_SESSION_DOESNT_EXIST,
                           "TSIH given: multiple connections per session are not supported");
                return false;
        }
        return true;
}

static void handle_login(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        if (!login_header_ok(c, h))
                return;
        struct login_request req = {
            .csg = (uint8_t)((h->b[1] >> 2) & 3),
            .nsg = (uint8_t)(h->b[1] & 3),
            .transit = (h->b[1] & ISCSI_FLAG_LOGIN_TRANSIT) != 0,
            .cont = (h->b[1] & ISCSI_FLAG_LOGIN_CONTINUE) != 0,
            .data = data,
            .len = len,
        };
        struct login_response rsp;
        memset(&rsp, 0, sizeof(rsp));
        if (login_step(c->login, &req, &rsp) < 0) {
                conn_drop(c, "login cannot continue");
                return;
        }
        if (rsp.status_class != ISCSI_LOGIN_STATUS_SUCCESS) {
                STAT_ADD(c->rc, login_failures, 1);
                log_warn("conn %s: login failed, status 0x%02x%02x", conn_name(c), rsp.status_class,
                         rsp.status_detail);
                send_login_rsp(c, &rsp, 0);
                return;
        }
        if (rsp.complete && login_complete(c) < 0) {
                login_fail(c, ISCSI_LOGIN_STATUS_TARGET_ERR, ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES,
                           "cannot create session");
                return;
        }
        send_login_rsp(c, &rsp, rsp.complete ? c->session->tsih : 0);
        if (rsp.complete)
                enter_full_feature(c);
}

/* ---------------- full feature phase control PDUs ---------------- */

/* Sequencing of a non-SCSI request: true when its CmdSN is acceptable. The CmdSN is taken
 * (cmdsn_commit) only once the request is found valid: a rejected request is, per RFC 7143
 * 7.3, not received, and its CmdSN may be used again. */
static bool control_cmdsn_ok(struct iscsi_conn *c, const struct iscsi_bhs *h)
{
        struct iscsi_session *s = c->session;
        uint32_t sn = bhs_word(h, BHS_CMDSN);
        if (bhs_immediate(h))
                return true;
        if (sn_lt(sn, s->exp_cmdsn) || sn_lt(s->max_cmdsn, sn)) {
                log_warn("conn %s: %s CmdSN %u outside window [%u, %u], ignored", conn_name(c),
                         iscsi_opcode_name(bhs_opcode(h)), sn, s->exp_cmdsn, s->max_cmdsn);
                return false;
        }
        return true;
}

static void cmdsn_commit(struct iscsi_conn *c, const struct iscsi_bhs *h)
{
        struct iscsi_session *s = c->session;
        if (bhs_immediate(h) || bhs_word(h, BHS_CMDSN) != s->exp_cmdsn)
                return;
        s->exp_cmdsn++;
        task_run_queued(c);
}

/* The usual case: acceptable and taken at once. */
static bool control_cmdsn_take(struct iscsi_conn *c, const struct iscsi_bhs *h)
{
        if (!control_cmdsn_ok(c, h))
                return false;
        cmdsn_commit(c, h);
        return true;
}

static void handle_nop_out(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        uint32_t itt = bhs_itt(h), ttt = bhs_word(h, BHS_TTT);
        if (ttt != ISCSI_RSVD_TAG && ttt == c->nop_ttt) {
                c->nop_ttt = ISCSI_RSVD_TAG; /* the answer to our NOP-In */
                c->rx_pdus_at_tick++;        /* is no traffic of its own: pinged on */
        }
        if (itt == ISCSI_RSVD_TAG && ttt != ISCSI_RSVD_TAG)
                return;
        if (itt == ISCSI_RSVD_TAG) {
                if (!bhs_immediate(h)) {
                        conn_send_reject(c, h, ISCSI_REJECT_PROTOCOL_ERROR,
                                         "NOP-Out with reserved ITT must be immediate");
                }
                return;
        }
        if (!control_cmdsn_take(c, h))
                return;
        struct tx_pdu *p = new_pdu(ISCSI_OP_NOP_IN, ISCSI_FLAG_FINAL, itt);
        if (!p)
                return;
        bhs_set_word(&p->bhs, BHS_TTT, ISCSI_RSVD_TAG);
        memcpy(p->bhs.b + 8, h->b + 8, 8); /* LUN echoed */
        pdu_attach_copy(p, data, len < c->max_xmit_dsl ? len : c->max_xmit_dsl);
        conn_fill_sn(c, &p->bhs, true);
        conn_send_pdu(c, p);
}

static void send_nop_in_ping(struct iscsi_conn *c)
{
        struct tx_pdu *p = new_pdu(ISCSI_OP_NOP_IN, ISCSI_FLAG_FINAL, ISCSI_RSVD_TAG);
        if (!p)
                return;
        c->nop_ttt = ++c->next_nop_ttt == ISCSI_RSVD_TAG ? ++c->next_nop_ttt : c->next_nop_ttt;
        c->nop_sent_ns = reactor_now_ns();
        bhs_set_word(&p->bhs, BHS_TTT, c->nop_ttt);
        conn_fill_sn(c, &p->bhs, false);
        conn_send_pdu(c, p);
}

static void nop_timer_cb(struct reactor_timer *t)
{
        struct iscsi_conn *c = t->ctx;
        if (c->state != CONN_FULL_FEATURE)
                return;
        uint64_t timeout = (uint64_t)c->gw->conf.nop_timeout_s * 1000000000ull;
        if (c->nop_ttt != ISCSI_RSVD_TAG && reactor_now_ns() - c->nop_sent_ns >= timeout) {
                STAT_ADD(c->rc, nop_timeouts, 1);
                conn_drop(c, "initiator did not answer NOP-In (dead initiator)");
                return;
        }
        /* Only an idle connection is pinged: one that sent PDUs since the last tick is alive.
         * (libiscsi also fails a session when it must answer a ping while Data-Out PDUs wait
         * in its queue: the NOP-Out takes the stale CmdSN of the queue's head.) */
        if (c->nop_ttt == ISCSI_RSVD_TAG && c->rx_pdus == c->rx_pdus_at_tick)
                send_nop_in_ping(c);
        c->rx_pdus_at_tick = c->rx_pdus;
        uint64_t next = (uint64_t)c->gw->conf.nop_interval_s * 1000000000ull;
        if (c->nop_ttt != ISCSI_RSVD_TAG && timeout < next)
                next = timeout;
        reactor_timer_arm(c->rc->reactor, t, next);
}

static void send_text_chunk(struct iscsi_conn *c, uint32_t itt)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        size_t left = c->text_len - c->text_off;
        uint32_t chunk = (uint32_t)(left < c->max_xmit_dsl ? left : c->max_xmit_dsl);
        bool more = left > chunk;
        struct tx_pdu *p =
            new_pdu(ISCSI_OP_TEXT_RSP, more ? ISCSI_FLAG_TEXT_CONTINUE : ISCSI_FLAG_FINAL, itt);
        if (!p)
                return;
        memcpy(p->bhs.b + 8, h->b + 8, 8);
        if (more) {
                c->text_ttt = (c->text_ttt + 1) & 0x7fffffff;
                bhs_set_word(&p->bhs, BHS_TTT, c->text_ttt | 1);
        } else {
                bhs_set_word(&p->bhs, BHS_TTT, ISCSI_RSVD_TAG);
        }
        pdu_attach_copy(p, c->text_buf + c->text_off, chunk);
        c->text_off += chunk;
        if (!more) {
                free(c->text_buf);
                c->text_buf = NULL;
                c->text_len = c->text_off = 0;
        }
        conn_fill_sn(c, &p->bhs, true);
        conn_send_pdu(c, p);
}

static void handle_text(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        if (!control_cmdsn_ok(c, h))
                return;
        uint32_t ttt = bhs_word(h, BHS_TTT);
        if (ttt != ISCSI_RSVD_TAG) {
                if (!c->text_buf || ttt != (c->text_ttt | 1)) {
                        conn_send_reject(c, h, ISCSI_REJECT_INVALID_PDU_FIELD,
                                         "Text continuation with unknown TTT");
                        return;
                }
                cmdsn_commit(c, h);
                send_text_chunk(c, bhs_itt(h));
                return;
        }
        free(c->text_buf);
        c->text_buf = NULL;
        struct textbuf out;
        textbuf_init(&out);
        struct textkv_list kv;
        if (textkv_parse(data, len, &kv) != TEXTKV_OK) {
                textbuf_free(&out);
                conn_send_reject(c, h, ISCSI_REJECT_PROTOCOL_ERROR, "malformed Text data");
                return;
        }
        cmdsn_commit(c, h);
        for (size_t i = 0; i < kv.count; i++) {
                const char *k = kv.pairs[i].key, *v = kv.pairs[i].value;
                if (strcmp(k, "SendTargets") == 0) {
                        struct iscsi_session *s = c->session;
                        if (!s->discovery && !v[0])
                                v = s->target->name; /* empty: the session's own target */
                        if (s->discovery || strcmp(v, "All") != 0)
                                target_send_targets(c->gw, v, s->initiator_name, &out);
                        else
                                textbuf_add(&out, "SendTargets", "Reject");
                } else {
                        textbuf_add(&out, k, "NotUnderstood");
                }
        }
        textkv_list_free(&kv);
        c->text_len = out.len;
        c->text_buf = malloc(out.len ? out.len : 1);
        if (c->text_buf && out.len)
                memcpy(c->text_buf, out.data, out.len);
        c->text_off = 0;
        textbuf_free(&out);
        send_text_chunk(c, bhs_itt(h));
}

static void handle_logout(struct iscsi_conn *c)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        uint8_t reason = h->b[1] & 0x7f;
        if (!control_cmdsn_ok(c, h))
                return;
        if (reason > ISCSI_LOGOUT_REMOVE_FOR_RECOVERY) {
                conn_send_reject(c, h, ISCSI_REJECT_PROTOCOL_ERROR, "bad logout reason");
                return;
        }
        cmdsn_commit(c, h);
        uint8_t response = ISCSI_LOGOUT_RSP_OK;
        if (reason == ISCSI_LOGOUT_REMOVE_FOR_RECOVERY)
                response = ISCSI_LOGOUT_RSP_RECOVERY_UNSUPPORTED;
        else if (reason == ISCSI_LOGOUT_CLOSE_CONNECTION && iscsi_get_be16(h->b + 20) != c->cid)
                response = ISCSI_LOGOUT_RSP_CID_NOT_FOUND;
        struct tx_pdu *p = new_pdu(ISCSI_OP_LOGOUT_RSP, ISCSI_FLAG_FINAL, bhs_itt(h));
        if (!p)
                return;
        p->bhs.b[2] = response;
        if (response == ISCSI_LOGOUT_RSP_OK) {
                /* Closing the session aborts what is left; nothing more is answered. */
                task_abort_all(c, false, 0);
                c->state = CONN_LOGGED_OUT;
                p->sent = logout_sent;
                p->sent_arg = c;
                iscsi_put_be16(p->bhs.b + 40, 2);  /* Time2Wait */
                iscsi_put_be16(p->bhs.b + 42, 20); /* Time2Retain */
        }
        conn_fill_sn(c, &p->bhs, true);
        log_info("conn %s: logout (reason %u), response %u", conn_name(c), reason, response);
        conn_send_pdu(c, p);
}

static void send_tmf_rsp(struct iscsi_conn *c, uint32_t itt, uint8_t response)
{
        struct tx_pdu *p = new_pdu(ISCSI_OP_TMF_RSP, ISCSI_FLAG_FINAL, itt);
        if (!p)
                return;
        p->bhs.b[2] = response;
        conn_fill_sn(c, &p->bhs, true);
        conn_send_pdu(c, p);
}

static uint8_t tmf_abort_task(struct iscsi_conn *c, const struct iscsi_bhs *h)
{
        uint32_t ref = bhs_word(h, BHS_REF_TASK_TAG);
        struct iscsi_task *t = task_find(c, ref);
        if (!t) {
                /* Never received or already answered: per RFC 7143 11.5.1 both are "done". */
                uint32_t ref_sn = bhs_word(h, BHS_REF_CMDSN);
                return sn_lt(ref_sn, c->session->exp_cmdsn) ? ISCSI_TMF_RSP_NO_TASK
                                                            : ISCSI_TMF_RSP_COMPLETE;
        }
        if (t->lun != bhs_lun(h))
                return ISCSI_TMF_RSP_NO_TASK;
        task_abort(t);
        return ISCSI_TMF_RSP_COMPLETE;
}

static void handle_tmf(struct iscsi_conn *c)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        if (!control_cmdsn_take(c, h))
                return;
        STAT_ADD(c->rc, tmf_requests, 1);
        uint8_t fn = h->b[1] & 0x7f;
        uint64_t lun = bhs_lun(h);
        uint8_t rsp = ISCSI_TMF_RSP_COMPLETE;
        struct iscsi_target *t = c->session->target;
        switch (fn) {
        case ISCSI_TMF_ABORT_TASK:
                rsp = tmf_abort_task(c, h);
                break;
        case ISCSI_TMF_ABORT_TASK_SET:
        case ISCSI_TMF_CLEAR_TASK_SET:
        case ISCSI_TMF_LOGICAL_UNIT_RESET:
                if (!t || !target_lun(t, lun_from_wire(lun))) {
                        rsp = ISCSI_TMF_RSP_NO_LUN;
                        break;
                }
                task_abort_all(c, true, lun);
                if (fn == ISCSI_TMF_LOGICAL_UNIT_RESET)
                        target_note_reset(t, target_lun_index(t, lun_from_wire(lun)));
                break;
        case ISCSI_TMF_TARGET_WARM_RESET:
        case ISCSI_TMF_TARGET_COLD_RESET:
                task_abort_all(c, false, 0);
                if (t)
                        target_note_reset(t, -1);
                break;
        case ISCSI_TMF_CLEAR_ACA:
        case ISCSI_TMF_TASK_REASSIGN:
                rsp = fn == ISCSI_TMF_TASK_REASSIGN ? ISCSI_TMF_RSP_NO_FAILOVER
                                                    : ISCSI_TMF_RSP_NOT_SUPPORTED;
                break;
        default:
                rsp = ISCSI_TMF_RSP_REJECTED;
                break;
        }
        log_info("conn %s: task management function %u LUN %llu -> response %u", conn_name(c), fn,
                 (unsigned long long)lun_from_wire(lun), rsp);
        send_tmf_rsp(c, bhs_itt(h), rsp);
        if (fn == ISCSI_TMF_TARGET_COLD_RESET)
                conn_drop(c, "target cold reset");
}

/* ---------------- receive dispatch ---------------- */

static int control_dest(struct iscsi_conn *c, uint32_t dsl, struct rx_dest *dest)
{
        c->rx_kind = RX_CONTROL;
        if (dsl == 0)
                return 0;
        if (dsl > c->rx_buf_size) {
                uint8_t *b = realloc(c->rx_buf, dsl);
                if (!b)
                        return -1;
                c->rx_buf = b;
                c->rx_buf_size = dsl;
        }
        dest->iov[0] = (struct iovec){c->rx_buf, dsl};
        dest->iovcnt = 1;
        return 0;
}

static void discard_dest(struct iscsi_conn *c, struct rx_dest *dest, const char *why,
                         uint8_t reason)
{
        c->rx_kind = RX_DISCARD;
        c->rx_error = why;
        c->rx_reject_reason = reason;
        dest->iovcnt = 0;
        dest->discard = true;
}

int iscsi_conn_rx_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs, const uint8_t *ahs,
                         uint32_t ahs_len, struct rx_dest *dest)
{
        c->rx_bhs = *bhs;
        c->rx_error = NULL;
        c->rx_failed_task = NULL;
        c->rx_pdus++;
        memset(dest, 0, sizeof(*dest));
        uint32_t dsl = bhs_dsl(bhs);
        uint8_t op = bhs_opcode(bhs);
        if (c->state == CONN_CLOSING || c->state == CONN_LOGGED_OUT) {
                discard_dest(c, dest, NULL, 0);
                return 0;
        }
        if (c->state == CONN_LOGIN) {
                if (op != ISCSI_OP_LOGIN_REQ) {
                        log_warn("conn %s: %s during login", conn_name(c), iscsi_opcode_name(op));
                        return -1;
                }
                if (dsl > LOGIN_MAX_DSL) {
                        log_warn("conn %s: login data segment of %u bytes exceeds %u", conn_name(c),
                                 dsl, LOGIN_MAX_DSL);
                        return -1;
                }
                return control_dest(c, dsl, dest);
        }
        switch (iscsi_bhs_check(bhs, c->max_recv_dsl)) {
        case BHS_OK:
                break;
        case BHS_BAD_OPCODE:
                discard_dest(c, dest, "unsupported opcode", ISCSI_REJECT_CMD_NOT_SUPPORTED);
                return 0;
        case BHS_DSL_TOO_LARGE:
                log_warn("conn %s: %s data segment %u exceeds MaxRecvDataSegmentLength %u",
                         conn_name(c), iscsi_opcode_name(op), dsl, c->max_recv_dsl);
                STAT_ADD(c->rc, protocol_errors, 1);
                return -1;
        case BHS_BAD_FIELD:
                discard_dest(c, dest, "invalid header field", ISCSI_REJECT_PROTOCOL_ERROR);
                return 0;
        }
        switch (op) {
        case ISCSI_OP_SCSI_CMD:
                return task_rx_command_header(c, bhs, ahs, ahs_len, dest);
        case ISCSI_OP_DATA_OUT:
                return task_rx_data_out_header(c, bhs, dest);
        case ISCSI_OP_LOGIN_REQ:
                discard_dest(c, dest, "Login in full feature phase", ISCSI_REJECT_PROTOCOL_ERROR);
                return 0;
        case ISCSI_OP_SNACK_REQ:
                discard_dest(c, dest, "SNACK at ErrorRecoveryLevel 0", ISCSI_REJECT_PROTOCOL_ERROR);
                return 0;
        default:
                return control_dest(c, dsl, dest);
        }
}

/* A non-immediate request ahead of ExpCmdSN waits for its turn, like a SCSI command. */
static bool hold_if_ahead(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
        const struct iscsi_bhs *h = &c->rx_bhs;
        struct iscsi_session *s = c->session;
        uint32_t sn = bhs_word(h, BHS_CMDSN);
        if (bhs_immediate(h) || !sn_lt(s->exp_cmdsn, sn) || sn_lt(s->max_cmdsn, sn))
                return false;
        struct held_pdu *p = malloc(sizeof(*p) + len);
        if (!p)
                return false;
        p->bhs = *h;
        p->len = len;
        memcpy(p->data, data, len);
        p->next = c->held;
        c->held = p;
        return true;
}

static void dispatch_control(struct iscsi_conn *c, const uint8_t *data, uint32_t len);

/* Runs the held request whose turn has come, if any. */
bool conn_run_held(struct iscsi_conn *c)
{
        for (struct held_pdu **pp = &c->held; *pp; pp = &(*pp)->next) {
                struct held_pdu *p = *pp;
                if (bhs_word(&p->bhs, BHS_CMDSN) != c->session->exp_cmdsn)
                        continue;
                *pp = p->next;
                struct iscsi_bhs saved = c->rx_bhs;
                c->rx_bhs = p->bhs;
                dispatch_control(c, p->data, p->len);
                c->rx_bhs = saved;
                free(p);
                return true;
        }
        return false;
}

static void dispatch_control(struct iscsi_conn *c, const uint8_t *data, uint32_t len)
{
        if (hold_if_ahead(c, data, len))
                return;
        switch (bhs_opcode(&c->rx_bhs)) {
        case ISCSI_OP_NOP_OUT:
                handle_nop_out(c, data, len);
                break;
        case ISCSI_OP_TEXT_REQ:
                handle_text(c, data, len);
                break;
        case ISCSI_OP_LOGOUT_REQ:
                handle_logout(c);
                break;
        case ISCSI_OP_TMF_REQ:
                handle_tmf(c);
                break;
        default:
                conn_send_reject(c, &c->rx_bhs, ISCSI_REJECT_CMD_NOT_SUPPORTED, "unexpected PDU");
                break;
        }
}

void iscsi_conn_rx_pdu(struct iscsi_conn *c, bool data_digest_ok)
{
        uint32_t dsl = bhs_dsl(&c->rx_bhs);
        if (!data_digest_ok)
                STAT_ADD(c->rc, digest_errors, 1);
        switch (c->rx_kind) {
        case RX_DISCARD:
                if (c->rx_error)
                        conn_send_reject(c, &c->rx_bhs, c->rx_reject_reason, c->rx_error);
                task_rx_discarded(c);
                return;
        case RX_CMD_IMMEDIATE:
                task_rx_command_done(c, data_digest_ok);
                return;
        case RX_DATA_OUT:
                task_rx_data_out_done(c, data_digest_ok);
                return;
        case RX_CONTROL:
                break;
        }
        if (!data_digest_ok) {
                conn_send_reject(c, &c->rx_bhs, ISCSI_REJECT_DIGEST_ERROR, "data digest error");
                return;
        }
        if (c->state == CONN_LOGIN)
                handle_login(c, c->rx_buf, dsl);
        else if (c->state == CONN_FULL_FEATURE)
                dispatch_control(c, c->rx_buf, dsl);
}

/* ---------------- life cycle ---------------- */

struct iscsi_conn *iscsi_conn_create(struct iscsi_gw *gw, unsigned ri,
                                     const struct iscsi_transport_ops *ops, struct xport_conn *xc,
                                     const char *portal, const char *peer)
{
        struct iscsi_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->gw = gw;
        c->rc = gw->rctx[ri];
        c->xops = ops;
        c->xc = xc;
        snprintf(c->portal, sizeof(c->portal), "%s", portal);
        snprintf(c->peer, sizeof(c->peer), "%s", peer);
        c->state = CONN_LOGIN;
        c->max_recv_dsl = LOGIN_MAX_DSL;
        c->max_xmit_dsl = LOGIN_MAX_DSL;
        c->nop_ttt = ISCSI_RSVD_TAG;
        c->connected_at_ns = reactor_now_ns();
        struct iscsi_target_limits limits;
        login_limits(gw, &limits);
        struct login_callbacks cbs = {
            .ctx = c,
            .lookup_target = lookup_target_cb,
            .discovery_auth = gw->discovery_chap ? &gw->discovery_auth : NULL,
        };
        if (ops->rdma) {
                /* Immediate and unsolicited data would land in a receive buffer and need a
                 * CPU copy into its line: over iSER every write byte comes by RDMA READ. */
                limits.immediate_data = false;
                limits.initial_r2t = true;
                if (ops->max_control_dsl && limits.max_recv_dsl > ops->max_control_dsl)
                        limits.max_recv_dsl = ops->max_control_dsl;
        }
        c->login = login_create(&limits, &cbs, ops->rdma);
        c->rx_buf_size = LOGIN_MAX_DSL;
        c->rx_buf = malloc(c->rx_buf_size);
        if (!c->login || !c->rx_buf) {
                login_destroy(c->login);
                free(c->rx_buf);
                free(c);
                return NULL;
        }
        c->next = c->rc->conns;
        c->rc->conns = c;
        c->rc->nconns++;
        STAT_ADD(c->rc, connections_accepted, 1);
        log_info("conn %s: connected to portal %s", conn_name(c), c->portal);
        return c;
}

void iscsi_conn_closed(struct iscsi_conn *c)
{
        c->closed_by_transport = true;
        c->xc = NULL;
        c->state = CONN_CLOSING;
        reactor_timer_cancel(c->rc->reactor, &c->nop_timer);
        c->hold++;
        task_abort_all(c, false, 0);
        c->hold--;
        conn_maybe_free(c);
}

void conn_maybe_free(struct iscsi_conn *c)
{
        if (!c->closed_by_transport || c->ntasks || c->hold || c->orphans_running ||
            c->orphan_work.queued)
                return;
        struct iscsi_conn **pp = &c->rc->conns;
        while (*pp && *pp != c)
                pp = &(*pp)->next;
        if (*pp)
                *pp = c->next;
        c->rc->nconns--;
        if (c->session)
                session_destroy(c->session);
        log_info("conn %s: closed", conn_name(c));
        login_destroy(c->login);
        while (c->held) {
                struct held_pdu *p = c->held;
                c->held = p->next;
                free(p);
        }
        free(c->rx_buf);
        free(c->scratch);
        free(c->text_buf);
        free(c);
}

static void drop_all_on_reactor(void *arg)
{
        struct iscsi_reactor_ctx *rc = arg;
        for (struct iscsi_conn *c = rc->conns; c; c = c->next)
                conn_drop(c, "gateway shutting down");
}

void iscsi_gw_close_all(struct iscsi_gw *gw)
{
        for (unsigned i = 0; i < gw->nreactors; i++)
                if (gw->rctx[i])
                        reactor_call_sync(gw->rctx[i]->reactor, drop_all_on_reactor, gw->rctx[i]);
        /* Connections go once their in-flight backend I/O has completed. */
        for (int wait_ms = 0; wait_ms < 10000; wait_ms += 10) {
                unsigned left = 0;
                for (unsigned i = 0; i < gw->nreactors; i++)
                        if (gw->rctx[i])
                                left += __atomic_load_n(&gw->rctx[i]->nconns, __ATOMIC_RELAXED);
                if (!left)
                        return;
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        log_warn("shutdown: connections still open after 10 s");
}
