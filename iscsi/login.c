#include "iscsi/login.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "iscsi/chap.h"
#include "iscsi/pdu.h"
#include "src/log.h"

/* Where the CHAP exchange stands (RFC 7143 section 12.1.3). */
enum auth_state {
        AUTH_START,       /* no AuthMethod agreed yet */
        AUTH_CHAP_WAIT_A, /* AuthMethod=CHAP agreed: the initiator sends CHAP_A next */
        AUTH_CHAP_WAIT_R, /* challenge sent: CHAP_N and CHAP_R (and CHAP_I/C if mutual) next */
        AUTH_DONE,        /* authenticated, or nothing to authenticate */
};

/* Credentials copied out of the caller's configuration. */
struct owned_auth {
        char *chap_user, *chap_secret, *mutual_user, *mutual_secret;
};

struct login_ctx {
        struct login_callbacks cb;
        struct owned_auth discovery_auth;
        bool has_discovery_auth;
        struct iscsi_negotiation neg;

        unsigned steps;
        bool started;  /* the first complete request has been processed */
        bool finished; /* failed or completed: no further steps */
        uint8_t stage; /* ISCSI_STAGE_SECURITY or ISCSI_STAGE_OPERATIONAL */

        /* The target being logged into (or discovery). */
        struct owned_auth auth;
        bool auth_required;
        uint16_t tpgt;
        enum auth_state auth_state;
        struct chap_target chap;
        unsigned security_seen; /* bit per security key received: each is sent once */

        /* Request text joined across C=1 pieces. */
        uint8_t *req_text;
        size_t req_len;

        /* Response text and the pieces still to send. */
        struct textbuf rsp_text;
        struct textkv_cursor cursor;
        bool sending_pieces;
        bool decided_transit; /* what the whole response says once its last piece goes out */
        uint8_t decided_nsg;
};

/* ---- credentials ---- */

static char *dup_or_null(const char *s)
{
        return s ? strdup(s) : NULL;
}

static void free_secret(char *s)
{
        if (s) {
                OPENSSL_cleanse(s, strlen(s));
                free(s);
        }
}

static void owned_auth_clear(struct owned_auth *a)
{
        free(a->chap_user);
        free_secret(a->chap_secret);
        free(a->mutual_user);
        free_secret(a->mutual_secret);
        memset(a, 0, sizeof(*a));
}

static struct login_target_auth auth_view(const struct owned_auth *a)
{
        return (struct login_target_auth){a->chap_user, a->chap_secret, a->mutual_user,
                                          a->mutual_secret};
}

static int owned_auth_copy(struct owned_auth *dst, const struct login_target_auth *src)
{
        memset(dst, 0, sizeof(*dst));
        dst->chap_user = dup_or_null(src->chap_user);
        dst->chap_secret = dup_or_null(src->chap_secret);
        dst->mutual_user = dup_or_null(src->mutual_user);
        dst->mutual_secret = dup_or_null(src->mutual_secret);
        if ((src->chap_user && !dst->chap_user) || (src->chap_secret && !dst->chap_secret) ||
            (src->mutual_user && !dst->mutual_user) ||
            (src->mutual_secret && !dst->mutual_secret)) {
                owned_auth_clear(dst);
                return -1;
        }
        return 0;
}

/* ---- lifecycle ---- */

struct login_ctx *login_create(const struct iscsi_target_limits *limits,
                               const struct login_callbacks *cb, bool is_iser)
{
        if (!limits || !cb)
                return NULL;
        struct login_ctx *ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
                return NULL;
        ctx->cb = *cb;
        ctx->cb.discovery_auth = NULL; /* our copy below outlives the caller's */
        if (cb->discovery_auth) {
                if (owned_auth_copy(&ctx->discovery_auth, cb->discovery_auth) != 0) {
                        free(ctx);
                        return NULL;
                }
                ctx->has_discovery_auth = true;
        }
        iscsi_neg_init(&ctx->neg, limits, is_iser);
        textbuf_init(&ctx->rsp_text);
        ctx->stage = ISCSI_STAGE_SECURITY;
        return ctx;
}

void login_destroy(struct login_ctx *ctx)
{
        if (!ctx)
                return;
        owned_auth_clear(&ctx->discovery_auth);
        owned_auth_clear(&ctx->auth);
        chap_target_clear(&ctx->chap);
        free(ctx->req_text);
        textbuf_free(&ctx->rsp_text);
        free(ctx);
}

const struct iscsi_params *login_params(const struct login_ctx *ctx)
{
        return &ctx->neg.params;
}

uint16_t login_tpgt(const struct login_ctx *ctx)
{
        return ctx->tpgt;
}

/* ---- response helpers ---- */

static const char *initiator_of(const struct login_ctx *ctx)
{
        const char *name = ctx->neg.params.initiator_name;
        return name[0] ? name : "(unnamed)";
}

/* Turns *rsp into the final, failed answer. Returns 1, the helpers' "*rsp holds a failure"
 * result. */
static int end_login(struct login_ctx *ctx, struct login_response *rsp, uint8_t status_class,
                     uint8_t detail)
{
        memset(rsp, 0, sizeof(*rsp));
        rsp->status_class = status_class;
        rsp->status_detail = detail;
        rsp->csg = ctx->stage;
        ctx->finished = true;
        return 1;
}

/* Ends the login with a status; the reason goes to the log only. */
static int fail_login(struct login_ctx *ctx, struct login_response *rsp, uint8_t status_class,
                      uint8_t detail, const char *reason)
{
        log_info("login: initiator %s refused (status 0x%02x%02x): %s", initiator_of(ctx),
                 status_class, detail, reason);
        return end_login(ctx, rsp, status_class, detail);
}

static int fail_initiator(struct login_ctx *ctx, struct login_response *rsp, uint8_t detail,
                          const char *reason)
{
        return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_INITIATOR_ERR, detail, reason);
}

/* Every authentication failure gets one status, whatever the cause (a wrong user name and a
 * wrong secret must look alike), and one log line with the cause. */
static int fail_auth(struct login_ctx *ctx, struct login_response *rsp, const char *reason)
{
        log_warn("login: authentication failed for initiator %s (status 0x0201): %s",
                 initiator_of(ctx), reason);
        return end_login(ctx, rsp, ISCSI_LOGIN_STATUS_INITIATOR_ERR,
                         ISCSI_LOGIN_DETAIL_AUTH_FAILED);
}

/* Copies an initiator-supplied value for a log line, control characters replaced. */
static void printable_copy(char *dst, size_t cap, const char *src)
{
        size_t i = 0;
        for (; src[i] && i + 1 < cap; i++) {
                unsigned char ch = (unsigned char)src[i];
                dst[i] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
        }
        dst[i] = '\0';
}

/* ---- request checks ---- */

/* The CSG/NSG/T/C bits are acceptable in the current state; else why not. */
static const char *flags_problem(const struct login_ctx *ctx, const struct login_request *req)
{
        if (req->csg != ISCSI_STAGE_SECURITY && req->csg != ISCSI_STAGE_OPERATIONAL)
                return "CSG is not a login stage";
        if (ctx->started || ctx->req_len > 0 || ctx->sending_pieces) {
                if (req->csg != ctx->stage)
                        return "CSG differs from the current stage";
        }
        if (req->transit && req->cont)
                return "T and C both set";
        if (req->transit) {
                if (req->nsg != ISCSI_STAGE_OPERATIONAL && req->nsg != ISCSI_STAGE_FULL_FEATURE)
                        return "NSG is not a valid next stage";
                if (req->nsg <= req->csg)
                        return "NSG does not move forward";
        }
        if (req->len > 0 && !req->data)
                return "data length without data";
        return NULL;
}

/* Appends a request's data to the text being gathered. */
static int gather_text(struct login_ctx *ctx, const struct login_request *req)
{
        if (req->len == 0)
                return 0;
        if (req->len > LOGIN_MAX_REQ_TEXT - ctx->req_len)
                return -1;
        uint8_t *p = realloc(ctx->req_text, ctx->req_len + req->len);
        if (!p)
                return -1;
        memcpy(p + ctx->req_len, req->data, req->len);
        ctx->req_text = p;
        ctx->req_len += req->len;
        return 0;
}

/* ---- first request: who is logging in to what ---- */

static int adopt_target(struct login_ctx *ctx, const struct login_target_info *info)
{
        struct iscsi_params *p = &ctx->neg.params;
        if (info->name)
                snprintf(p->target_name, sizeof(p->target_name), "%s", info->name);
        ctx->tpgt = info->tpgt;
        if (owned_auth_copy(&ctx->auth, &info->auth) != 0)
                return -1;
        /* RFC 7143 13.9: TargetPortalGroupTag goes in the response to the first request that
         * names the target; TargetAlias SHOULD be declared for Normal sessions. */
        textbuf_add_u32(&ctx->rsp_text, "TargetPortalGroupTag", info->tpgt);
        if (info->alias && info->alias[0])
                textbuf_add(&ctx->rsp_text, "TargetAlias", info->alias);
        return 0;
}

static int lookup_normal_target(struct login_ctx *ctx, struct login_response *rsp)
{
        const struct iscsi_params *p = &ctx->neg.params;
        struct login_target_info info;
        memset(&info, 0, sizeof(info));
        int rc = ctx->cb.lookup_target
                     ? ctx->cb.lookup_target(ctx->cb.ctx, p->target_name, p->initiator_name, &info)
                     : ISCSI_LOGIN_DETAIL_NOT_FOUND;
        if (rc < 0 || rc > 0xff)
                return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                                  ISCSI_LOGIN_DETAIL_TARGET_ERROR, "target lookup failed");
        if (rc > 0) {
                char reason[ISCSI_NAME_MAX + 48];
                snprintf(reason, sizeof(reason), "target %s refused by lookup", p->target_name);
                return fail_initiator(ctx, rsp, (uint8_t)rc, reason);
        }
        if (adopt_target(ctx, &info) != 0)
                return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                                  ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES, "out of memory");
        return 0;
}

/* Returns 0 to go on, or 1 when *rsp already holds a failure. */
static int first_request(struct login_ctx *ctx, struct login_response *rsp)
{
        const struct iscsi_params *p = &ctx->neg.params;
        if (!p->initiator_name[0])
                return fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_MISSING_PARAM,
                                      "InitiatorName missing from the first request");
        if (p->session_type == ISCSI_SESSION_NORMAL) {
                if (!p->target_name[0])
                        return fail_initiator(
                            ctx, rsp, ISCSI_LOGIN_DETAIL_MISSING_PARAM,
                            "TargetName missing from a Normal session's first request");
                if (lookup_normal_target(ctx, rsp))
                        return 1;
        } else if (ctx->has_discovery_auth) {
                struct login_target_auth view = auth_view(&ctx->discovery_auth);
                if (owned_auth_copy(&ctx->auth, &view) != 0)
                        return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                                          ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES, "out of memory");
        }
        ctx->auth_required = ctx->auth.chap_user != NULL;
        ctx->auth_state = ctx->auth_required ? AUTH_START : AUTH_DONE;
        ctx->started = true;
        if (ctx->stage == ISCSI_STAGE_OPERATIONAL && ctx->auth_required)
                return fail_auth(ctx, rsp,
                                 "skipped the security stage of a target that requires CHAP");
        return 0;
}

/* ---- security stage ---- */

struct security_keys {
        const char *auth_method, *chap_a, *chap_i, *chap_c, *chap_n, *chap_r;
};

static void find_security_keys(const struct textkv_list *list, struct security_keys *k)
{
        k->auth_method = textkv_find(list, "AuthMethod");
        k->chap_a = textkv_find(list, "CHAP_A");
        k->chap_i = textkv_find(list, "CHAP_I");
        k->chap_c = textkv_find(list, "CHAP_C");
        k->chap_n = textkv_find(list, "CHAP_N");
        k->chap_r = textkv_find(list, "CHAP_R");
}

static bool has_security_key(const struct textkv_list *list)
{
        for (size_t i = 0; i < list->count; i++)
                if (iscsi_key_is_security(iscsi_key_lookup(list->pairs[i].key)))
                        return true;
        return false;
}

/* RFC 7143 6.2: each key once per login. Returns the name of a repeated key, or NULL. */
static const char *repeated_security_key(struct login_ctx *ctx, const struct textkv_list *list)
{
        for (size_t i = 0; i < list->count; i++) {
                enum iscsi_key k = iscsi_key_lookup(list->pairs[i].key);
                if (!iscsi_key_is_security(k))
                        continue;
                unsigned bit = 1u << (k - ISCSI_KEY_AUTH_METHOD);
                if (ctx->security_seen & bit)
                        return list->pairs[i].key;
                ctx->security_seen |= bit;
        }
        return NULL;
}

/* True when the comma-separated list holds item. */
static bool list_has(const char *list, const char *item)
{
        size_t n = strlen(item);
        for (const char *p = list; p;) {
                const char *end = strchr(p, ',');
                size_t len = end ? (size_t)(end - p) : strlen(p);
                if (len == n && memcmp(p, item, n) == 0)
                        return true;
                p = end ? end + 1 : NULL;
        }
        return false;
}

/* AuthMethod: with CHAP required, CHAP is the only acceptable choice; without, None. */
static int negotiate_auth_method(struct login_ctx *ctx, const char *offer,
                                 struct login_response *rsp)
{
        if (!ctx->auth_required) {
                textbuf_add(&ctx->rsp_text, "AuthMethod",
                            list_has(offer, "None") ? "None" : "Reject");
                return 0;
        }
        if (!list_has(offer, "CHAP")) {
                char shown[TEXTKV_VALUE_MAX + 1], reason[TEXTKV_VALUE_MAX + 48];
                printable_copy(shown, sizeof(shown), offer);
                snprintf(reason, sizeof(reason), "AuthMethod=%s offered, CHAP required", shown);
                return fail_auth(ctx, rsp, reason);
        }
        textbuf_add(&ctx->rsp_text, "AuthMethod", "CHAP");
        ctx->auth_state = AUTH_CHAP_WAIT_A;
        return 0;
}

static int chap_send_challenge(struct login_ctx *ctx, const char *chap_a,
                               struct login_response *rsp)
{
        enum chap_error err = chap_target_challenge(&ctx->chap, chap_a, &ctx->rsp_text);
        if (err != CHAP_OK)
                return fail_auth(ctx, rsp, chap_error_str(err));
        ctx->auth_state = AUTH_CHAP_WAIT_R;
        return 0;
}

static int chap_check_response(struct login_ctx *ctx, const struct security_keys *k,
                               struct login_response *rsp)
{
        enum chap_error err = chap_target_verify(&ctx->chap, k->chap_n, k->chap_r,
                                                 ctx->auth.chap_user, ctx->auth.chap_secret);
        if (err == CHAP_OK && (k->chap_i || k->chap_c))
                err = chap_target_answer(&ctx->chap, k->chap_i, k->chap_c, ctx->auth.mutual_user,
                                         ctx->auth.mutual_secret, &ctx->rsp_text);
        chap_target_clear(&ctx->chap);
        if (err != CHAP_OK)
                return fail_auth(ctx, rsp, chap_error_str(err));
        ctx->auth_state = AUTH_DONE;
        log_info("login: initiator %s authenticated by CHAP%s", initiator_of(ctx),
                 k->chap_c ? " (mutual)" : "");
        return 0;
}

/* Runs this request's share of the authentication exchange. Sets *progressed when the
 * exchange moved on (so an early T=1 is answered with T=0 rather than refused). Returns 0,
 * or 1 when *rsp holds a failure. */
static int security_step(struct login_ctx *ctx, const struct textkv_list *list, bool *progressed,
                         struct login_response *rsp)
{
        const char *repeated = repeated_security_key(ctx, list);
        if (repeated) {
                char reason[TEXTKV_KEY_MAX + 32];
                snprintf(reason, sizeof(reason), "%s sent twice in one login", repeated);
                return fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INIT_ERR, reason);
        }
        struct security_keys k;
        find_security_keys(list, &k);
        bool any_chap = k.chap_a || k.chap_i || k.chap_c || k.chap_n || k.chap_r;
        *progressed = false;
        if (k.auth_method) {
                if (negotiate_auth_method(ctx, k.auth_method, rsp))
                        return 1;
                *progressed = true;
        }
        if (!any_chap)
                return 0;
        *progressed = true;
        switch (ctx->auth_state) {
        case AUTH_CHAP_WAIT_A:
                if (!k.chap_a || k.chap_n || k.chap_r || k.chap_i || k.chap_c)
                        return fail_auth(ctx, rsp, "CHAP keys out of order (CHAP_A expected)");
                return chap_send_challenge(ctx, k.chap_a, rsp);
        case AUTH_CHAP_WAIT_R:
                return chap_check_response(ctx, &k, rsp);
        default:
                return fail_auth(ctx, rsp, "CHAP keys without AuthMethod=CHAP agreed");
        }
}

/* ---- one complete request ---- */

/* Whether the answer to this request may carry T=1. */
static bool may_transit(const struct login_ctx *ctx)
{
        if (ctx->stage == ISCSI_STAGE_SECURITY && ctx->auth_state != AUTH_DONE)
                return false;
        return !iscsi_neg_offers_pending(&ctx->neg);
}

/* Negotiates the keys of one request. Returns 0 with ctx->rsp_text and the transit decision
 * set, or 1 when *rsp holds a failure. */
static int answer_request(struct login_ctx *ctx, const struct login_request *req,
                          const struct textkv_list *list, struct login_response *rsp)
{
        struct iscsi_neg_failure nf;
        if (ctx->stage == ISCSI_STAGE_OPERATIONAL && has_security_key(list))
                return fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INIT_ERR,
                                      "security key in the operational stage");
        if (iscsi_neg_process(&ctx->neg, list, &ctx->rsp_text, &nf) != 0)
                return fail_initiator(ctx, rsp, nf.status_detail, nf.reason);
        if (!ctx->started && first_request(ctx, rsp))
                return 1;
        bool progressed = false;
        if (ctx->stage == ISCSI_STAGE_SECURITY && security_step(ctx, list, &progressed, rsp))
                return 1;
        if (ctx->stage == ISCSI_STAGE_OPERATIONAL)
                iscsi_neg_add_target_keys(&ctx->neg, &ctx->rsp_text);
        ctx->decided_transit = req->transit && may_transit(ctx);
        ctx->decided_nsg = req->nsg;
        /* Asking to leave the security stage with nothing done toward authentication is an
         * attempt to skip it. */
        if (req->transit && ctx->stage == ISCSI_STAGE_SECURITY && ctx->auth_state != AUTH_DONE &&
            !progressed)
                return fail_auth(ctx, rsp, "asked to leave the security stage unauthenticated");
        return 0;
}

static int process_text(struct login_ctx *ctx, const struct login_request *req,
                        struct login_response *rsp)
{
        struct textkv_list list;
        enum textkv_error err = textkv_parse(ctx->req_text, ctx->req_len, &list);
        ctx->req_len = 0;
        textbuf_reset(&ctx->rsp_text);
        if (err == TEXTKV_ERR_NOMEM)
                return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                                  ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES, "out of memory");
        if (err != TEXTKV_OK)
                return fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INIT_ERR, textkv_error_str(err));
        int rc = answer_request(ctx, req, &list, rsp);
        textkv_list_free(&list);
        if (rc == 0 && ctx->rsp_text.failed)
                return fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                                  ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES, "response too large");
        return rc;
}

/* Applies a stage transition carried by the last piece of a response. Returns 0, or 1 when
 * *rsp now holds a failure. */
static int enter_next_stage(struct login_ctx *ctx, struct login_response *rsp)
{
        if (ctx->decided_nsg != ISCSI_STAGE_FULL_FEATURE) {
                ctx->stage = ctx->decided_nsg;
                return 0;
        }
        struct iscsi_neg_failure nf;
        if (iscsi_neg_finish(&ctx->neg, &nf) != 0)
                return fail_initiator(ctx, rsp, nf.status_detail, nf.reason);
        rsp->complete = true;
        ctx->finished = true;
        log_info("login: initiator %s entered full feature phase (%s session%s%s)",
                 initiator_of(ctx),
                 ctx->neg.params.session_type == ISCSI_SESSION_DISCOVERY ? "discovery" : "normal",
                 ctx->neg.params.target_name[0] ? " to " : "", ctx->neg.params.target_name);
        return 0;
}

/* Fills *rsp with the next piece of the current response. 'transit_ok' is the latest
 * request's T bit: a transition is only ever answered to a request that asked for it. */
static int send_piece(struct login_ctx *ctx, bool transit_ok, struct login_response *rsp)
{
        const uint8_t *piece;
        size_t len;
        bool more = textkv_cursor_next(&ctx->cursor, LOGIN_MAX_RSP_DATA, &piece, &len);
        memset(rsp, 0, sizeof(*rsp));
        rsp->csg = ctx->stage;
        rsp->data = len ? piece : NULL;
        rsp->len = len;
        rsp->cont = more;
        ctx->sending_pieces = more;
        if (more || !ctx->decided_transit || !transit_ok)
                return 0;
        rsp->transit = true;
        rsp->nsg = ctx->decided_nsg;
        enter_next_stage(ctx, rsp); /* on failure *rsp becomes the failure */
        return 0;
}

static int next_piece(struct login_ctx *ctx, const struct login_request *req,
                      struct login_response *rsp)
{
        /* RFC 7143 11.13: the initiator acknowledges each C=1 piece with an empty request. */
        if (req->len != 0 || req->cont) {
                fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INVALID_REQUEST,
                               "data while a partial response was outstanding");
                return 0;
        }
        return send_piece(ctx, req->transit, rsp);
}

int login_step(struct login_ctx *ctx, const struct login_request *req, struct login_response *rsp)
{
        if (!ctx || !req || !rsp || ctx->finished)
                return -1;
        memset(rsp, 0, sizeof(*rsp));
        if (++ctx->steps > LOGIN_MAX_STEPS) {
                fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INIT_ERR, "too many login requests");
                return 0;
        }
        const char *problem = flags_problem(ctx, req);
        if (problem) {
                fail_initiator(ctx, rsp, ISCSI_LOGIN_DETAIL_INVALID_REQUEST, problem);
                return 0;
        }
        if (!ctx->started && ctx->req_len == 0)
                ctx->stage = req->csg; /* CSG=1 first: the initiator skips security */
        if (ctx->sending_pieces)
                return next_piece(ctx, req, rsp);
        if (gather_text(ctx, req) != 0) {
                fail_login(ctx, rsp, ISCSI_LOGIN_STATUS_TARGET_ERR,
                           ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES, "request text too large");
                return 0;
        }
        if (req->cont) {
                rsp->csg = ctx->stage; /* empty acknowledgement; the text continues */
                return 0;
        }
        if (process_text(ctx, req, rsp) != 0)
                return 0;
        textkv_cursor_init(&ctx->cursor, ctx->rsp_text.data, ctx->rsp_text.len);
        return send_piece(ctx, req->transit, rsp);
}

/* ---- fuzzing entry ---- */

static bool name_ends_with(const char *name, const char *suffix)
{
        size_t n = strlen(name), m = strlen(suffix);
        return n >= m && strcmp(name + n - m, suffix) == 0;
}

static int fuzz_lookup(void *cbctx, const char *target, const char *initiator,
                       struct login_target_info *info)
{
        (void)cbctx;
        (void)initiator;
        if (name_ends_with(target, ":denied"))
                return ISCSI_LOGIN_DETAIL_AUTHORIZATION;
        if (name_ends_with(target, ":missing"))
                return ISCSI_LOGIN_DETAIL_NOT_FOUND;
        info->tpgt = 1;
        if (name_ends_with(target, ":open")) {
                info->alias = "open";
                return 0;
        }
        info->auth = (struct login_target_auth){"user", "secret-0123456", "target", "tsecret-0123"};
        return 0;
}

/* Fuzz input configuration byte: T and C both set, which no valid request carries. */
#define FUZZ_CONFIG_MARK (ISCSI_FLAG_LOGIN_TRANSIT | ISCSI_FLAG_LOGIN_CONTINUE)

static struct login_ctx *fuzz_create(uint8_t config)
{
        static const struct login_target_auth discovery = {"disc", "disc-secret-0", NULL, NULL};
        struct iscsi_target_limits limits;
        iscsi_target_limits_default(&limits);
        limits.immediate_data = !(config & 1);
        if (config & 2)
                limits.max_burst_length = 65536;
        struct login_callbacks cb = {
            .lookup_target = fuzz_lookup,
            .discovery_auth = (config & 4) ? &discovery : NULL,
        };
        return login_create(&limits, &cb, (config & 8) != 0);
}

int login_fuzz_one(const uint8_t *data, size_t size)
{
        size_t pos = 0;
        uint8_t config = 0;
        if (size > 0 && (data[0] & FUZZ_CONFIG_MARK) == FUZZ_CONFIG_MARK) {
                config = data[0];
                pos = 1;
        }
        struct login_ctx *ctx = fuzz_create(config);
        if (!ctx)
                return 0;
        int steps = 0;
        while (pos + 3 <= size) {
                uint8_t flags = data[pos];
                size_t len = (size_t)data[pos + 1] << 8 | data[pos + 2];
                pos += 3;
                if (len > size - pos)
                        len = size - pos;
                struct login_request req = {
                    .csg = flags & 3,
                    .nsg = (flags >> 2) & 3,
                    .cont = (flags & ISCSI_FLAG_LOGIN_CONTINUE) != 0,
                    .transit = (flags & ISCSI_FLAG_LOGIN_TRANSIT) != 0,
                    .data = len ? data + pos : NULL,
                    .len = len,
                };
                pos += len;
                struct login_response rsp;
                if (login_step(ctx, &req, &rsp) != 0)
                        break;
                steps++;
        }
        login_destroy(ctx);
        return steps;
}
