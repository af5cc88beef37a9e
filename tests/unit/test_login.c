/* login: whole login conversations as initiators hold them, and the ways they go wrong. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "iscsi/chap.h"
#include "iscsi/login.h"
#include "iscsi/pdu.h"

#define INITIATOR   "iqn.1993-08.org.debian:01:test"
#define T_OPEN      "iqn.2024-01.org.isergw:open"
#define T_CHAP      "iqn.2024-01.org.isergw:chap"
#define T_MUTUAL    "iqn.2024-01.org.isergw:mutual"
#define T_ACL       "iqn.2024-01.org.isergw:acl"
#define T_BROKEN    "iqn.2024-01.org.isergw:broken"
#define CHAP_USER   "alice"
#define CHAP_PASS   "alice-secret-1"
#define MUTUAL_USER "target-user"
#define MUTUAL_PASS "target-secret-2"

static int lookup(void *cbctx, const char *target, const char *initiator,
                  struct login_target_info *info)
{
        (void)cbctx;
        (void)initiator;
        if (strcmp(target, T_ACL) == 0)
                return ISCSI_LOGIN_DETAIL_AUTHORIZATION;
        if (strcmp(target, T_BROKEN) == 0)
                return -1;
        if (strcmp(target, T_OPEN) == 0) {
                info->alias = "Open Disk";
                info->tpgt = 1;
                return 0;
        }
        if (strcmp(target, T_CHAP) == 0) {
                info->tpgt = 2;
                info->auth.chap_user = CHAP_USER;
                info->auth.chap_secret = CHAP_PASS;
                return 0;
        }
        if (strcmp(target, T_MUTUAL) == 0) {
                info->tpgt = 3;
                info->auth =
                    (struct login_target_auth){CHAP_USER, CHAP_PASS, MUTUAL_USER, MUTUAL_PASS};
                return 0;
        }
        return ISCSI_LOGIN_DETAIL_NOT_FOUND;
}

/* One login conversation and the last answer, parsed. */
struct conv {
        struct login_ctx *ctx;
        struct login_response rsp;
        struct textkv_list kv;
        int rc;
};

static void conv_open_with(struct conv *c, const struct iscsi_target_limits *limits,
                           const struct login_target_auth *discovery_auth, bool is_iser)
{
        memset(c, 0, sizeof(*c));
        struct login_callbacks cb = {.lookup_target = lookup, .discovery_auth = discovery_auth};
        c->ctx = login_create(limits, &cb, is_iser);
        cr_assert_not_null(c->ctx);
}

static void conv_open(struct conv *c)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        conv_open_with(c, &limits, NULL, false);
}

static void conv_close(struct conv *c)
{
        textkv_list_free(&c->kv);
        login_destroy(c->ctx);
}

static const char *rsp_value(struct conv *c, const char *key)
{
        return textkv_find(&c->kv, key);
}

/* Sends raw bytes as one Login Request; the answer is left unparsed (it may be one piece of
 * a longer text). */
static void send_piece(struct conv *c, int csg, int nsg, bool t, bool cont, const void *data,
                       size_t len)
{
        struct login_request req = {
            .csg = (uint8_t)csg,
            .nsg = (uint8_t)nsg,
            .transit = t,
            .cont = cont,
            .data = data,
            .len = len,
        };
        textkv_list_free(&c->kv);
        c->rc = login_step(c->ctx, &req, &c->rsp);
}

/* Sends raw bytes as one Login Request and parses a whole answer. */
static void send_raw(struct conv *c, int csg, int nsg, bool t, bool cont, const void *data,
                     size_t len)
{
        send_piece(c, csg, nsg, t, cont, data, len);
        if (c->rc == 0 && !c->rsp.cont)
                cr_assert_eq(textkv_parse(c->rsp.data, c->rsp.len, &c->kv), TEXTKV_OK);
}

/* Sends a request made of "key=value" strings (NULL-terminated array). */
static void send_kv(struct conv *c, int csg, int nsg, bool t, const char *const *kv)
{
        struct textbuf b;
        textbuf_init(&b);
        for (size_t i = 0; kv[i]; i++)
                textbuf_append(&b, kv[i], strlen(kv[i]) + 1);
        send_raw(c, csg, nsg, t, false, b.data, b.len);
        textbuf_free(&b);
}

#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_KEYS ((const char *const[]){NULL})

static void expect_ok(struct conv *c, bool transit, int nsg)
{
        cr_assert_eq(c->rc, 0);
        cr_assert_eq(c->rsp.status_class, 0, "status 0x%02x%02x", c->rsp.status_class,
                     c->rsp.status_detail);
        cr_assert_eq(c->rsp.transit, transit);
        if (transit)
                cr_assert_eq(c->rsp.nsg, nsg);
}

static void expect_status(struct conv *c, uint8_t cls, uint8_t detail)
{
        cr_assert_eq(c->rc, 0);
        cr_assert_eq(c->rsp.status_class, cls, "class %u", c->rsp.status_class);
        cr_assert_eq(c->rsp.status_detail, detail, "detail 0x%02x", c->rsp.status_detail);
        cr_assert_eq(c->rsp.len, 0, "a failure carries no text");
        cr_assert_not(c->rsp.complete);
        /* the login is over */
        struct login_request req = {0};
        struct login_response rsp;
        cr_assert_eq(login_step(c->ctx, &req, &rsp), -1);
}

static void expect_initiator_error(struct conv *c, uint8_t detail)
{
        expect_status(c, ISCSI_LOGIN_STATUS_INITIATOR_ERR, detail);
}

static const char *const OP_KEYS[] = {
    "HeaderDigest=None",
    "DataDigest=None",
    "DefaultTime2Wait=2",
    "DefaultTime2Retain=0",
    "IFMarker=No",
    "OFMarker=No",
    "ErrorRecoveryLevel=0",
    "InitialR2T=No",
    "ImmediateData=Yes",
    "MaxBurstLength=16776192",
    "FirstBurstLength=262144",
    "MaxOutstandingR2T=1",
    "MaxConnections=1",
    "DataPDUInOrder=Yes",
    "DataSequenceInOrder=Yes",
    "MaxRecvDataSegmentLength=262144",
    NULL,
};

/* ---- successful logins ---- */

Test(login_ok, discovery_with_none_straight_to_full_feature)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 3, true,
                KV("InitiatorName=" INITIATOR, "SessionType=Discovery", "AuthMethod=None"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_eq(c.rsp.csg, 0);
        cr_assert_str_eq(rsp_value(&c, "AuthMethod"), "None");
        cr_assert_null(rsp_value(&c, "TargetPortalGroupTag"));
        const struct iscsi_params *p = login_params(c.ctx);
        cr_assert_eq(p->session_type, ISCSI_SESSION_DISCOVERY);
        cr_assert_str_eq(p->initiator_name, INITIATOR);
        cr_assert_eq(p->max_recv_dsl, 8192, "nothing declared: RFC default");
        cr_assert_eq(p->max_send_dsl, 8192);
        conv_close(&c);
}

Test(login_ok, discovery_through_operational_stage)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true,
                KV("InitiatorName=" INITIATOR, "SessionType=Discovery", "AuthMethod=None"));
        expect_ok(&c, true, 1);
        cr_assert_not(c.rsp.complete);
        send_kv(&c, 1, 3, true,
                KV("HeaderDigest=None", "MaxRecvDataSegmentLength=32768", "InitialR2T=Yes"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_eq(c.rsp.csg, 1);
        cr_assert_str_eq(rsp_value(&c, "MaxRecvDataSegmentLength"), "262144");
        cr_assert_str_eq(rsp_value(&c, "InitialR2T"), "Irrelevant");
        const struct iscsi_params *p = login_params(c.ctx);
        cr_assert_eq(p->max_send_dsl, 32768);
        cr_assert_eq(p->max_recv_dsl, 262144);
        conv_close(&c);
}

Test(login_ok, normal_with_none_two_stages)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true,
                KV("InitiatorName=" INITIATOR, "InitiatorAlias=test host", "TargetName=" T_OPEN,
                   "SessionType=Normal", "AuthMethod=None"));
        expect_ok(&c, true, 1);
        cr_assert_str_eq(rsp_value(&c, "AuthMethod"), "None");
        cr_assert_str_eq(rsp_value(&c, "TargetPortalGroupTag"), "1");
        cr_assert_str_eq(rsp_value(&c, "TargetAlias"), "Open Disk");
        send_kv(&c, 1, 3, true, OP_KEYS);
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_null(rsp_value(&c, "TargetPortalGroupTag"), "declared once, in the first answer");
        cr_assert_str_eq(rsp_value(&c, "InitialR2T"), "Yes");
        cr_assert_str_eq(rsp_value(&c, "MaxBurstLength"), "262144");
        cr_assert_str_eq(rsp_value(&c, "FirstBurstLength"), "65536");
        cr_assert_str_eq(rsp_value(&c, "MaxRecvDataSegmentLength"), "262144");
        const struct iscsi_params *p = login_params(c.ctx);
        cr_assert_str_eq(p->target_name, T_OPEN);
        cr_assert_str_eq(p->initiator_alias, "test host");
        cr_assert_eq(p->session_type, ISCSI_SESSION_NORMAL);
        cr_assert(p->initial_r2t);
        cr_assert(p->immediate_data);
        cr_assert_eq(p->max_burst_length, 262144);
        cr_assert_eq(p->first_burst_length, 65536);
        cr_assert_eq(p->default_time2retain, 0);
        cr_assert_eq(login_tpgt(c.ctx), 1);
        conv_close(&c);
}

Test(login_ok, normal_skipping_security_in_one_request)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 1, 3, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "SessionType=Normal",
                   "HeaderDigest=None,CRC32C", "MaxRecvDataSegmentLength=65536",
                   "ImmediateData=Yes", "InitialR2T=Yes"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_eq(c.rsp.csg, 1);
        cr_assert_str_eq(rsp_value(&c, "HeaderDigest"), "None");
        cr_assert_str_eq(rsp_value(&c, "TargetPortalGroupTag"), "1");
        cr_assert_eq(login_params(c.ctx)->max_send_dsl, 65536);
        conv_close(&c);
}

/* What the target's challenge step sent. */
struct challenge {
        enum chap_alg alg;
        uint8_t id;
        uint8_t bytes[CHAP_CHALLENGE_MAX];
        size_t len;
};

/* Runs the CHAP exchange up to the challenge, in libiscsi's order: AuthMethod with T=1
 * (answered with T=0), then CHAP_A. */
static void chap_until_challenge(struct conv *c, const char *target, const char *chap_a,
                                 struct challenge *ch)
{
        char tn[300], ca[64];
        snprintf(tn, sizeof(tn), "TargetName=%s", target);
        snprintf(ca, sizeof(ca), "CHAP_A=%s", chap_a);
        send_kv(c, 0, 1, true,
                KV("InitiatorName=" INITIATOR, tn, "SessionType=Normal", "AuthMethod=CHAP,None"));
        expect_ok(c, false, 0);
        cr_assert_str_eq(rsp_value(c, "AuthMethod"), "CHAP");
        send_kv(c, 0, 1, false, KV(ca));
        expect_ok(c, false, 0);
        ch->alg = (enum chap_alg)atoi(rsp_value(c, "CHAP_A"));
        ch->id = (uint8_t)atoi(rsp_value(c, "CHAP_I"));
        long n = chap_decode(rsp_value(c, "CHAP_C"), ch->bytes, sizeof(ch->bytes));
        cr_assert_gt(n, 0);
        ch->len = (size_t)n;
}

static const EVP_MD *md_of(enum chap_alg alg)
{
        return alg == CHAP_ALG_MD5 ? EVP_md5() : alg == CHAP_ALG_SHA1 ? EVP_sha1() : EVP_sha256();
}

/* "CHAP_R=0x..." for id, secret, challenge, computed here with one EVP call. */
static void chap_r_pair(enum chap_alg alg, uint8_t id, const char *secret, const uint8_t *chal,
                        size_t len, char *out, size_t cap)
{
        uint8_t buf[1 + 64 + CHAP_CHALLENGE_MAX], md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        buf[0] = id;
        memcpy(buf + 1, secret, strlen(secret));
        memcpy(buf + 1 + strlen(secret), chal, len);
        cr_assert_eq(EVP_Digest(buf, 1 + strlen(secret) + len, md, &mdlen, md_of(alg), NULL), 1);
        char hex[2 * EVP_MAX_MD_SIZE + 3];
        chap_encode_hex(md, mdlen, hex, sizeof(hex));
        snprintf(out, cap, "CHAP_R=%s", hex);
}

Test(login_ok, chap_one_way_then_operational)
{
        struct conv c;
        conv_open(&c);
        struct challenge ch;
        chap_until_challenge(&c, T_CHAP, "5", &ch);
        cr_assert_eq(ch.alg, CHAP_ALG_MD5);
        char r[160];
        chap_r_pair(ch.alg, ch.id, CHAP_PASS, ch.bytes, ch.len, r, sizeof(r));
        send_kv(&c, 0, 1, true, KV("CHAP_N=" CHAP_USER, r));
        expect_ok(&c, true, 1);
        cr_assert_null(rsp_value(&c, "CHAP_N"), "no mutual CHAP asked");
        /* libiscsi repeats its declarations in the operational stage */
        send_kv(&c, 1, 3, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP, "SessionType=Normal",
                   "MaxRecvDataSegmentLength=262144", "ImmediateData=No"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_not(login_params(c.ctx)->immediate_data);
        conv_close(&c);
}

Test(login_ok, chap_mutual_sha256)
{
        struct conv c;
        conv_open(&c);
        struct challenge ch;
        chap_until_challenge(&c, T_MUTUAL, "7,5", &ch);
        cr_assert_eq(ch.alg, CHAP_ALG_SHA256);
        cr_assert_geq(ch.len, 32);
        char r[160];
        chap_r_pair(ch.alg, ch.id, CHAP_PASS, ch.bytes, ch.len, r, sizeof(r));
        uint8_t mine[32];
        for (size_t i = 0; i < sizeof(mine); i++)
                mine[i] = (uint8_t)(i * 13 + 1);
        char mine_hex[80], ci[100];
        chap_encode_hex(mine, sizeof(mine), mine_hex, sizeof(mine_hex));
        snprintf(ci, sizeof(ci), "CHAP_C=%s", mine_hex);
        send_kv(&c, 0, 3, true, KV("CHAP_N=" CHAP_USER, r, "CHAP_I=99", ci));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_str_eq(rsp_value(&c, "CHAP_N"), MUTUAL_USER);
        char want[160];
        chap_r_pair(ch.alg, 99, MUTUAL_PASS, mine, sizeof(mine), want, sizeof(want));
        cr_assert_str_eq(rsp_value(&c, "CHAP_R"), want + strlen("CHAP_R="));
        conv_close(&c);
}

Test(login_ok, discovery_with_chap)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        const struct login_target_auth disc = {"disc", "disc-secret", NULL, NULL};
        struct conv c;
        conv_open_with(&c, &limits, &disc, false);
        send_kv(&c, 0, 3, true,
                KV("InitiatorName=" INITIATOR, "SessionType=Discovery", "AuthMethod=CHAP"));
        expect_ok(&c, false, 0);
        send_kv(&c, 0, 3, false, KV("CHAP_A=6"));
        struct challenge ch;
        ch.alg = (enum chap_alg)atoi(rsp_value(&c, "CHAP_A"));
        ch.id = (uint8_t)atoi(rsp_value(&c, "CHAP_I"));
        ch.len = (size_t)chap_decode(rsp_value(&c, "CHAP_C"), ch.bytes, sizeof(ch.bytes));
        char r[160];
        chap_r_pair(ch.alg, ch.id, "disc-secret", ch.bytes, ch.len, r, sizeof(r));
        send_kv(&c, 0, 3, true, KV("CHAP_N=disc", r));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        conv_close(&c);
}

Test(login_ok, iser_normal_session)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        struct conv c;
        conv_open_with(&c, &limits, NULL, true);
        send_kv(&c, 0, 1, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "AuthMethod=None"));
        expect_ok(&c, true, 1);
        send_kv(&c, 1, 3, true,
                KV("RDMAExtensions=Yes", "InitiatorRecvDataSegmentLength=262144",
                   "TargetRecvDataSegmentLength=8192", "MaxOutstandingUnexpectedPDUs=0"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_str_eq(rsp_value(&c, "RDMAExtensions"), "Yes");
        cr_assert_str_eq(rsp_value(&c, "TargetRecvDataSegmentLength"), "8192");
        cr_assert_null(rsp_value(&c, "MaxRecvDataSegmentLength"));
        const struct iscsi_params *p = login_params(c.ctx);
        cr_assert(p->rdma_extensions);
        cr_assert_eq(p->initiator_recv_dsl, 262144);
        cr_assert_eq(p->target_recv_dsl, 8192);
        conv_close(&c);
}

Test(login_ok, target_offer_answered_before_transit)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        limits.immediate_data = false;
        struct conv c;
        conv_open_with(&c, &limits, NULL, false);
        send_kv(&c, 1, 3, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "InitialR2T=Yes"));
        expect_ok(&c, false, 0); /* our offer is outstanding: no transit yet */
        cr_assert_str_eq(rsp_value(&c, "ImmediateData"), "No");
        send_kv(&c, 1, 3, true, KV("ImmediateData=No"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_eq(c.kv.count, 0, "an answer to our offer gets no reply");
        cr_assert_not(login_params(c.ctx)->immediate_data);
        conv_close(&c);
}

Test(login_ok, operational_keys_answered_in_security_stage)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 3, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "AuthMethod=None",
                   "MaxBurstLength=65536", "X-private=1"));
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        cr_assert_str_eq(rsp_value(&c, "MaxBurstLength"), "65536");
        cr_assert_str_eq(rsp_value(&c, "X-private"), "NotUnderstood");
        /* no operational stage: nothing of ours declared, RFC defaults stand */
        cr_assert_null(rsp_value(&c, "MaxRecvDataSegmentLength"));
        cr_assert_eq(login_params(c.ctx)->max_recv_dsl, 8192);
        cr_assert_eq(login_params(c.ctx)->max_burst_length, 65536);
        conv_close(&c);
}

Test(login_ok, transit_only_when_asked)
{
        /* A request with T=0 is never answered with T=1, even with nothing left to settle; the
         * transition comes when the initiator asks for it, here with an empty request. */
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, false, KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN));
        expect_ok(&c, false, 0);
        send_kv(&c, 0, 1, true, NO_KEYS);
        expect_ok(&c, true, 1);
        conv_close(&c);
}

/* ---- authentication failures: all 0x0201, no hint of which part was wrong ---- */

Test(login_auth, wrong_secret_and_unknown_user_look_the_same)
{
        const char *users[] = {CHAP_USER, "mallory"};
        const char *secrets[] = {"wrong-secret", CHAP_PASS};
        struct login_response seen[2];
        for (int i = 0; i < 2; i++) {
                struct conv c;
                conv_open(&c);
                struct challenge ch;
                chap_until_challenge(&c, T_CHAP, "5", &ch);
                char r[160], n[64];
                chap_r_pair(ch.alg, ch.id, secrets[i], ch.bytes, ch.len, r, sizeof(r));
                snprintf(n, sizeof(n), "CHAP_N=%s", users[i]);
                send_kv(&c, 0, 1, true, KV(n, r));
                seen[i] = c.rsp;
                expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
                conv_close(&c);
        }
        /* nothing in the answer tells the two apart */
        cr_assert_eq(seen[0].status_class, seen[1].status_class);
        cr_assert_eq(seen[0].status_detail, seen[1].status_detail);
        cr_assert_eq(seen[0].transit, seen[1].transit);
        cr_assert_eq(seen[0].cont, seen[1].cont);
        cr_assert_eq(seen[0].csg, seen[1].csg);
        cr_assert_eq(seen[0].nsg, seen[1].nsg);
        cr_assert_eq(seen[0].len, seen[1].len);
        cr_assert_eq(seen[0].complete, seen[1].complete);
}

Test(login_auth, none_refused_when_chap_required)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP, "AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, skipping_security_refused_when_chap_required)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 1, 3, true, KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, leaving_security_without_authenticating_refused)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, false,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP, "AuthMethod=CHAP"));
        expect_ok(&c, false, 0);
        send_kv(&c, 0, 1, true, NO_KEYS);
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, reflected_mutual_challenge_refused)
{
        struct conv c;
        conv_open(&c);
        struct challenge ch;
        chap_until_challenge(&c, T_MUTUAL, "5", &ch);
        char r[160], ours[2 * CHAP_CHALLENGE_MAX + 3], ci[2 * CHAP_CHALLENGE_MAX + 10];
        chap_r_pair(ch.alg, ch.id, CHAP_PASS, ch.bytes, ch.len, r, sizeof(r));
        chap_encode_hex(ch.bytes, ch.len, ours, sizeof(ours));
        snprintf(ci, sizeof(ci), "CHAP_C=%s", ours);
        send_kv(&c, 0, 1, true, KV("CHAP_N=" CHAP_USER, r, "CHAP_I=1", ci));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, mutual_asked_of_target_without_credentials)
{
        struct conv c;
        conv_open(&c);
        struct challenge ch;
        chap_until_challenge(&c, T_CHAP, "5", &ch);
        char r[160];
        chap_r_pair(ch.alg, ch.id, CHAP_PASS, ch.bytes, ch.len, r, sizeof(r));
        send_kv(&c, 0, 1, true, KV("CHAP_N=" CHAP_USER, r, "CHAP_I=1", "CHAP_C=0x0102030405"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, chap_out_of_order_or_unsupported)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, false,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP, "AuthMethod=CHAP"));
        send_kv(&c, 0, 1, false, KV("CHAP_N=" CHAP_USER, "CHAP_R=0x00"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);

        conv_open(&c);
        send_kv(&c, 0, 1, false,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_CHAP, "AuthMethod=CHAP"));
        send_kv(&c, 0, 1, false, KV("CHAP_A=1,2,3"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

Test(login_auth, discovery_chap_required)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        const struct login_target_auth disc = {"disc", "disc-secret", NULL, NULL};
        struct conv c;
        conv_open_with(&c, &limits, &disc, false);
        send_kv(&c, 0, 3, true,
                KV("InitiatorName=" INITIATOR, "SessionType=Discovery", "AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTH_FAILED);
        conv_close(&c);
}

/* ---- first request checks and lookup ---- */

Test(login_first, missing_initiator_name)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("TargetName=" T_OPEN, "AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_MISSING_PARAM);
        conv_close(&c);
}

Test(login_first, missing_target_name_for_normal)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("InitiatorName=" INITIATOR, "AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_MISSING_PARAM);
        conv_close(&c);
}

Test(login_first, unknown_target_acl_and_broken_lookup)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("InitiatorName=" INITIATOR, "TargetName=iqn.2024-01.org.x:no"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_NOT_FOUND);
        conv_close(&c);
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("InitiatorName=" INITIATOR, "TargetName=" T_ACL));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_AUTHORIZATION);
        conv_close(&c);
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("InitiatorName=" INITIATOR, "TargetName=" T_BROKEN));
        expect_status(&c, ISCSI_LOGIN_STATUS_TARGET_ERR, ISCSI_LOGIN_DETAIL_TARGET_ERROR);
        conv_close(&c);
}

Test(login_first, unsupported_session_type)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, true, KV("InitiatorName=" INITIATOR, "SessionType=Boot"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_SESSION_TYPE_UNSUPPORTED);
        conv_close(&c);
}

/* ---- stage transitions and PDU flags ---- */

static void bad_flags(int csg, int nsg, bool t, bool cont)
{
        struct conv c;
        conv_open(&c);
        static const char text[] = "InitiatorName=" INITIATOR "\0TargetName=" T_OPEN;
        send_raw(&c, csg, nsg, t, cont, text, sizeof(text));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INVALID_REQUEST);
        conv_close(&c);
}

Test(login_stage, invalid_transitions)
{
        bad_flags(2, 3, true, false);  /* CSG reserved */
        bad_flags(3, 3, false, false); /* CSG full feature */
        bad_flags(0, 0, true, false);  /* NSG not forward */
        bad_flags(1, 1, true, false);
        bad_flags(0, 2, true, false); /* NSG reserved */
        bad_flags(1, 0, true, false); /* backwards */
        bad_flags(0, 1, true, true);  /* T and C */
}

Test(login_stage, csg_must_follow_the_current_stage)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, false, KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN));
        expect_ok(&c, false, 0);
        send_kv(&c, 1, 3, true, NO_KEYS); /* we never agreed to leave security */
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INVALID_REQUEST);
        conv_close(&c);
}

Test(login_stage, security_key_in_operational_stage)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 1, 3, false, KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN));
        expect_ok(&c, false, 0);
        send_kv(&c, 1, 3, true, KV("AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);
}

Test(login_stage, key_offered_twice_in_one_login)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 1, 3, false,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "MaxBurstLength=65536"));
        expect_ok(&c, false, 0);
        send_kv(&c, 1, 3, true, KV("MaxBurstLength=65536"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);

        conv_open(&c);
        send_kv(&c, 0, 1, false,
                KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN, "AuthMethod=None"));
        send_kv(&c, 0, 1, true, KV("AuthMethod=None"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);
}

Test(login_stage, malformed_text_is_initiator_error)
{
        struct conv c;
        conv_open(&c);
        static const char text[] = "InitiatorName=" INITIATOR "\0garbage-without-equals";
        send_raw(&c, 0, 1, true, false, text, sizeof(text));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);
}

Test(login_stage, too_many_requests)
{
        struct conv c;
        conv_open(&c);
        send_kv(&c, 0, 1, false, KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN));
        for (unsigned i = 1; i < LOGIN_MAX_STEPS; i++) {
                send_kv(&c, 0, 1, false, NO_KEYS);
                expect_ok(&c, false, 0);
        }
        send_kv(&c, 0, 1, false, NO_KEYS);
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);
}

/* ---- C bit: request accumulation and response continuation ---- */

Test(login_cont, request_text_joined_across_pieces)
{
        struct conv c;
        conv_open(&c);
        static const char text[] = "InitiatorName=" INITIATOR "\0TargetName=" T_OPEN
                                   "\0SessionType=Normal\0AuthMethod=None";
        size_t cut1 = 7, cut2 = sizeof("InitiatorName=" INITIATOR) + 4; /* mid-key cuts */
        send_raw(&c, 0, 1, false, true, text, cut1);
        expect_ok(&c, false, 0);
        cr_assert_eq(c.rsp.len, 0, "a C=1 piece is acknowledged empty");
        cr_assert_not(c.rsp.cont);
        send_raw(&c, 0, 1, false, true, text + cut1, cut2 - cut1);
        expect_ok(&c, false, 0);
        cr_assert_eq(c.rsp.len, 0);
        send_raw(&c, 0, 1, true, false, text + cut2, sizeof(text) - cut2);
        expect_ok(&c, true, 1);
        cr_assert_str_eq(rsp_value(&c, "AuthMethod"), "None");
        cr_assert_str_eq(rsp_value(&c, "TargetPortalGroupTag"), "1");
        cr_assert_str_eq(login_params(c.ctx)->target_name, T_OPEN);
        conv_close(&c);
}

Test(login_cont, stage_change_inside_a_continued_request)
{
        struct conv c;
        conv_open(&c);
        static const char text[] = "InitiatorName=" INITIATOR "\0TargetName=" T_OPEN;
        send_raw(&c, 0, 1, false, true, text, 10);
        send_raw(&c, 1, 3, false, false, text + 10, sizeof(text) - 10);
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INVALID_REQUEST);
        conv_close(&c);
}

/* A request whose answer is longer than one 8192-byte response. */
static void build_many_unknown_keys(struct textbuf *b, int n)
{
        textbuf_init(b);
        textbuf_add(b, "InitiatorName", INITIATOR);
        textbuf_add(b, "TargetName", T_OPEN);
        char key[TEXTKV_KEY_MAX + 1];
        for (int i = 0; i < n; i++) {
                snprintf(key, sizeof(key),
                         "X-org.example.padding.key.number.%05d.abcdefghijklmnopqrs", i);
                textbuf_add(b, key, "1");
        }
}

Test(login_cont, long_response_goes_out_in_pieces)
{
        struct conv c;
        conv_open(&c);
        struct textbuf req;
        build_many_unknown_keys(&req, 240);
        /* sent in 8192-byte request pieces, as a peer with our login limit must */
        size_t off = 0;
        while (req.len - off > 8192) {
                send_raw(&c, 1, 3, false, true, req.data + off, 8192);
                expect_ok(&c, false, 0);
                off += 8192;
        }
        send_piece(&c, 1, 3, true, false, req.data + off, req.len - off);
        textbuf_free(&req);

        struct textbuf all;
        textbuf_init(&all);
        int pieces = 1;
        cr_assert_eq(c.rc, 0);
        cr_assert(c.rsp.cont);
        cr_assert_not(c.rsp.transit, "no transit while pieces remain");
        cr_assert_eq(c.rsp.len, LOGIN_MAX_RSP_DATA);
        textbuf_append(&all, c.rsp.data, c.rsp.len);
        while (c.rsp.cont) {
                send_piece(&c, 1, 3, true, false, NULL, 0);
                cr_assert_eq(c.rc, 0);
                cr_assert_eq(c.rsp.status_class, 0);
                cr_assert_leq(c.rsp.len, LOGIN_MAX_RSP_DATA);
                textbuf_append(&all, c.rsp.data, c.rsp.len);
                pieces++;
        }
        cr_assert_geq(pieces, 3);
        cr_assert(c.rsp.transit);
        cr_assert(c.rsp.complete);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)all.data, all.len, &l), TEXTKV_OK);
        cr_assert_str_eq(
            textkv_find(&l, "X-org.example.padding.key.number.00239.abcdefghijklmnopqrs"),
            "NotUnderstood");
        cr_assert_str_eq(textkv_find(&l, "MaxRecvDataSegmentLength"), "262144");
        textkv_list_free(&l);
        textbuf_free(&all);
        conv_close(&c);
}

Test(login_cont, last_piece_without_t_does_not_transit)
{
        struct conv c;
        conv_open(&c);
        struct textbuf req;
        build_many_unknown_keys(&req, 200);
        cr_assert_gt(req.len, 8192);
        send_piece(&c, 1, 3, false, true, req.data, 8192);
        send_piece(&c, 1, 3, true, false, req.data + 8192, req.len - 8192);
        textbuf_free(&req);
        cr_assert(c.rsp.cont);
        send_piece(&c, 1, 3, false, false, NULL, 0);
        cr_assert_not(c.rsp.cont);
        cr_assert_not(c.rsp.transit);
        cr_assert_not(c.rsp.complete);
        send_kv(&c, 1, 3, true, NO_KEYS);
        expect_ok(&c, true, 3);
        cr_assert(c.rsp.complete);
        conv_close(&c);
}

Test(login_cont, data_during_response_pieces_refused)
{
        struct conv c;
        conv_open(&c);
        struct textbuf req;
        build_many_unknown_keys(&req, 200);
        cr_assert_gt(req.len, 8192);
        send_piece(&c, 1, 3, false, true, req.data, 8192);
        send_piece(&c, 1, 3, true, false, req.data + 8192, req.len - 8192);
        textbuf_free(&req);
        cr_assert(c.rsp.cont);
        send_kv(&c, 1, 3, true, KV("MaxBurstLength=4096"));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INVALID_REQUEST);
        conv_close(&c);
}

/* ---- iSER requirement ---- */

Test(login_iser, normal_session_without_rdma_extensions_fails)
{
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        struct conv c;
        conv_open_with(&c, &limits, NULL, true);
        send_kv(&c, 1, 3, true, KV("InitiatorName=" INITIATOR, "TargetName=" T_OPEN));
        expect_initiator_error(&c, ISCSI_LOGIN_DETAIL_INIT_ERR);
        conv_close(&c);
}

/* ---- robustness ---- */

Test(login_fuzz, misuse_returns_minus_one)
{
        struct conv c;
        conv_open(&c);
        struct login_request req = {0};
        struct login_response rsp;
        cr_assert_eq(login_step(NULL, &req, &rsp), -1);
        cr_assert_eq(login_step(c.ctx, NULL, &rsp), -1);
        cr_assert_eq(login_step(c.ctx, &req, NULL), -1);
        req.len = 5; /* length without data */
        cr_assert_eq(login_step(c.ctx, &req, &rsp), 0);
        cr_assert_eq(rsp.status_detail, ISCSI_LOGIN_DETAIL_INVALID_REQUEST);
        conv_close(&c);
        login_destroy(NULL);
}

/* Appends one fuzz-encoded request (see login_fuzz_one). */
static void fuzz_req(struct textbuf *b, uint8_t flags, const char *const *kv)
{
        struct textbuf text;
        textbuf_init(&text);
        for (size_t i = 0; kv[i]; i++)
                textbuf_append(&text, kv[i], strlen(kv[i]) + 1);
        uint8_t hdr[3] = {flags, (uint8_t)(text.len >> 8), (uint8_t)text.len};
        textbuf_append(b, hdr, 3);
        textbuf_append(b, text.data, text.len);
        textbuf_free(&text);
}

/* Steps login_fuzz_one runs on a seed, and whether the login it drives completes. */
Test(login_fuzz, documented_encoding_reaches_full_feature_phase)
{
        /* open target, no config byte: security -> operational -> full feature */
        struct textbuf in;
        textbuf_init(&in);
        fuzz_req(&in, 0x80 | (1 << 2),
                 KV("InitiatorName=iqn.2000-01.org.fuzz:i", "TargetName=iqn.2000-01.org.x:open",
                    "AuthMethod=None"));
        fuzz_req(&in, 0x80 | 1 | (3 << 2), OP_KEYS);
        fuzz_req(&in, 0, NO_KEYS); /* after completion: not run */
        cr_assert_eq(login_fuzz_one((const uint8_t *)in.data, in.len), 2);
        /* the same with a config byte (iSER): the Normal session lacks RDMAExtensions and
         * fails at the end, so the third request is not run either */
        uint8_t config = 0xc0 | 8;
        struct textbuf cfg;
        textbuf_init(&cfg);
        textbuf_append(&cfg, &config, 1);
        textbuf_append(&cfg, in.data, in.len);
        cr_assert_eq(login_fuzz_one((const uint8_t *)cfg.data, cfg.len), 2);
        textbuf_free(&cfg);
        textbuf_free(&in);
}

Test(login_fuzz, random_and_mutated_inputs_never_crash)
{
        /* a valid-looking seed: a CHAP target's login as the fuzz entry configures it */
        struct textbuf seed;
        textbuf_init(&seed);
        uint8_t config = 0xc0 | 1 | 2;
        textbuf_append(&seed, &config, 1);
        fuzz_req(&seed, 0x80 | (1 << 2),
                 KV("InitiatorName=iqn.2000-01.org.fuzz:i", "TargetName=iqn.2000-01.org.x:t",
                    "AuthMethod=CHAP,None", "MaxBurstLength=65536"));
        fuzz_req(&seed, 1 << 2, KV("CHAP_A=7,5"));
        fuzz_req(&seed, 0x80 | (1 << 2),
                 KV("CHAP_N=user", "CHAP_R=0x00112233445566778899aabbccddeeff", "CHAP_I=3",
                    "CHAP_C=0b3q2+7w=="));
        fuzz_req(&seed, 0x80 | 1 | (3 << 2), OP_KEYS);
        fuzz_req(&seed, 0x80 | (3 << 2),
                 KV("InitiatorName=iqn.2000-01.org.fuzz:i", "SessionType=Discovery",
                    "AuthMethod=None", "TargetName=iqn.2000-01.org.x:open"));
        cr_assert_eq(login_fuzz_one((const uint8_t *)seed.data, seed.len), 3,
                     "challenge answered, then the zero CHAP_R fails the login");

        unsigned state = 7;
        uint8_t buf[4096];
        for (int iter = 0; iter < 4000; iter++) {
                size_t len;
                if (iter % 2) {
                        len = seed.len < sizeof(buf) ? seed.len : sizeof(buf);
                        memcpy(buf, seed.data, len);
                        int flips = 1 + rand_r(&state) % 8;
                        for (int f = 0; f < flips; f++)
                                buf[(size_t)rand_r(&state) % len] = (uint8_t)rand_r(&state);
                } else {
                        len = (size_t)rand_r(&state) % sizeof(buf);
                        for (size_t i = 0; i < len; i++)
                                buf[i] = (uint8_t)rand_r(&state);
                }
                login_fuzz_one(buf, len);
        }
        textbuf_free(&seed);
}
