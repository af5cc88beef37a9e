#include "iscsi/params.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "iscsi/pdu.h"

/* How a key is negotiated (RFC 7143 section 6.2) or otherwise handled. */
enum key_kind {
        KIND_DIGEST,          /* list: None, CRC32C */
        KIND_NUM_MIN,         /* numerical, result is the minimum */
        KIND_NUM_MAX,         /* numerical, result is the maximum */
        KIND_BOOL_AND,        /* boolean, result is AND */
        KIND_BOOL_OR,         /* boolean, result is OR */
        KIND_DECL_DSL,        /* MaxRecvDataSegmentLength: declarative */
        KIND_ISER_DSL,        /* Target/InitiatorRecvDataSegmentLength (RFC 7145) */
        KIND_UNEXPECTED_PDUS, /* MaxOutstandingUnexpectedPDUs: minimum, 0 = no limit */
        KIND_NAME,            /* InitiatorName, TargetName: declarative identity */
        KIND_ALIAS,           /* InitiatorAlias: declarative */
        KIND_SESSION_TYPE,    /* declarative, first request only */
        KIND_TARGET_ONLY,     /* keys only a target may send */
        KIND_SEND_TARGETS,    /* full feature phase only */
        KIND_SECURITY,        /* AuthMethod, CHAP_*: the caller's */
        KIND_MARKER,          /* obsolete OFMarker/IFMarker */
        KIND_MARK_INT,        /* obsolete OFMarkInt/IFMarkInt */
        KIND_TASK_REPORTING,  /* list: RFC3720, ResponseFence, FastAbort */
};

enum key_flag {
        KF_NORMAL_ONLY = 1,  /* Irrelevant when SessionType=Discovery */
        KF_ISER_ONLY = 2,    /* Irrelevant when RDMAExtensions=No */
        KF_EARLY = 4,        /* other keys' relevance or bounds depend on it */
        KF_FIRST = 8,        /* ... including the KF_EARLY keys' (SessionType, RDMAExtensions) */
        KF_DECLARATIVE = 16, /* a repeat with the same value is tolerated */
};

struct key_def {
        const char *name;
        enum key_kind kind;
        uint8_t flags;
        uint32_t min, max; /* numerical range */
};

static const struct key_def key_defs[ISCSI_KEY_COUNT] = {
    [ISCSI_KEY_HEADER_DIGEST] = {"HeaderDigest", KIND_DIGEST, 0, 0, 0},
    [ISCSI_KEY_DATA_DIGEST] = {"DataDigest", KIND_DIGEST, 0, 0, 0},
    [ISCSI_KEY_MAX_CONNECTIONS] = {"MaxConnections", KIND_NUM_MIN, KF_NORMAL_ONLY, 1, 65535},
    [ISCSI_KEY_SEND_TARGETS] = {"SendTargets", KIND_SEND_TARGETS, 0, 0, 0},
    [ISCSI_KEY_TARGET_NAME] = {"TargetName", KIND_NAME, KF_DECLARATIVE, 0, 0},
    [ISCSI_KEY_INITIATOR_NAME] = {"InitiatorName", KIND_NAME, KF_DECLARATIVE, 0, 0},
    [ISCSI_KEY_TARGET_ALIAS] = {"TargetAlias", KIND_TARGET_ONLY, 0, 0, 0},
    [ISCSI_KEY_INITIATOR_ALIAS] = {"InitiatorAlias", KIND_ALIAS, KF_DECLARATIVE, 0, 0},
    [ISCSI_KEY_TARGET_ADDRESS] = {"TargetAddress", KIND_TARGET_ONLY, 0, 0, 0},
    [ISCSI_KEY_TARGET_PORTAL_GROUP_TAG] = {"TargetPortalGroupTag", KIND_TARGET_ONLY, 0, 0, 0},
    [ISCSI_KEY_INITIAL_R2T] = {"InitialR2T", KIND_BOOL_OR, KF_NORMAL_ONLY | KF_EARLY, 0, 0},
    [ISCSI_KEY_IMMEDIATE_DATA] = {"ImmediateData", KIND_BOOL_AND, KF_NORMAL_ONLY | KF_EARLY, 0, 0},
    [ISCSI_KEY_MAX_RECV_DSL] = {"MaxRecvDataSegmentLength", KIND_DECL_DSL, KF_DECLARATIVE,
                                ISCSI_DSL_MIN, ISCSI_DSL_MAX},
    [ISCSI_KEY_MAX_BURST_LENGTH] = {"MaxBurstLength", KIND_NUM_MIN, KF_NORMAL_ONLY | KF_EARLY,
                                    ISCSI_DSL_MIN, ISCSI_DSL_MAX},
    [ISCSI_KEY_FIRST_BURST_LENGTH] = {"FirstBurstLength", KIND_NUM_MIN, KF_NORMAL_ONLY,
                                      ISCSI_DSL_MIN, ISCSI_DSL_MAX},
    [ISCSI_KEY_DEFAULT_TIME2WAIT] = {"DefaultTime2Wait", KIND_NUM_MAX, 0, 0, 3600},
    [ISCSI_KEY_DEFAULT_TIME2RETAIN] = {"DefaultTime2Retain", KIND_NUM_MIN, 0, 0, 3600},
    [ISCSI_KEY_MAX_OUTSTANDING_R2T] = {"MaxOutstandingR2T", KIND_NUM_MIN, KF_NORMAL_ONLY, 1, 65535},
    [ISCSI_KEY_DATA_PDU_IN_ORDER] = {"DataPDUInOrder", KIND_BOOL_OR, KF_NORMAL_ONLY, 0, 0},
    [ISCSI_KEY_DATA_SEQUENCE_IN_ORDER] = {"DataSequenceInOrder", KIND_BOOL_OR, KF_NORMAL_ONLY, 0,
                                          0},
    [ISCSI_KEY_ERROR_RECOVERY_LEVEL] = {"ErrorRecoveryLevel", KIND_NUM_MIN, 0, 0, 2},
    [ISCSI_KEY_SESSION_TYPE] = {"SessionType", KIND_SESSION_TYPE, KF_DECLARATIVE | KF_FIRST, 0, 0},
    [ISCSI_KEY_AUTH_METHOD] = {"AuthMethod", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_CHAP_A] = {"CHAP_A", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_CHAP_I] = {"CHAP_I", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_CHAP_C] = {"CHAP_C", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_CHAP_N] = {"CHAP_N", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_CHAP_R] = {"CHAP_R", KIND_SECURITY, 0, 0, 0},
    [ISCSI_KEY_OF_MARKER] = {"OFMarker", KIND_MARKER, 0, 0, 0},
    [ISCSI_KEY_IF_MARKER] = {"IFMarker", KIND_MARKER, 0, 0, 0},
    [ISCSI_KEY_OF_MARK_INT] = {"OFMarkInt", KIND_MARK_INT, 0, 0, 0},
    [ISCSI_KEY_IF_MARK_INT] = {"IFMarkInt", KIND_MARK_INT, 0, 0, 0},
    [ISCSI_KEY_TASK_REPORTING] = {"TaskReporting", KIND_TASK_REPORTING, KF_NORMAL_ONLY, 0, 0},
    [ISCSI_KEY_PROTOCOL_LEVEL] = {"iSCSIProtocolLevel", KIND_NUM_MIN, KF_NORMAL_ONLY, 0, 31},
    [ISCSI_KEY_RDMA_EXTENSIONS] = {"RDMAExtensions", KIND_BOOL_AND, KF_FIRST, 0, 0},
    [ISCSI_KEY_TARGET_RECV_DSL] = {"TargetRecvDataSegmentLength", KIND_ISER_DSL, KF_ISER_ONLY,
                                   ISCSI_DSL_MIN, ISCSI_DSL_MAX},
    [ISCSI_KEY_INITIATOR_RECV_DSL] = {"InitiatorRecvDataSegmentLength", KIND_ISER_DSL, KF_ISER_ONLY,
                                      ISCSI_DSL_MIN, ISCSI_DSL_MAX},
    [ISCSI_KEY_MAX_OUTSTANDING_UNEXPECTED_PDUS] = {"MaxOutstandingUnexpectedPDUs",
                                                   KIND_UNEXPECTED_PDUS, KF_ISER_ONLY, 0,
                                                   UINT32_MAX},
};

static const char REJECT[] = "Reject";
static const char IRRELEVANT[] = "Irrelevant";
static const char NOT_UNDERSTOOD[] = "NotUnderstood";

/* ---- defaults ---- */

void iscsi_target_limits_default(struct iscsi_target_limits *l)
{
        *l = (struct iscsi_target_limits){
            .max_recv_dsl = 262144,
            .max_burst_length = 262144,
            .first_burst_length = 65536,
            .max_outstanding_r2t = 1,
            .max_connections = 1,
            .default_time2wait = 2,
            .default_time2retain = 20,
            .error_recovery_level = 0,
            .initial_r2t = true,
            .immediate_data = true,
            .data_pdu_in_order = true,
            .data_sequence_in_order = true,
            .header_digest_crc32c = true,
            .data_digest_crc32c = true,
            .max_outstanding_unexpected_pdus = 0,
        };
}

void iscsi_params_defaults(struct iscsi_params *p)
{
        *p = (struct iscsi_params){
            .session_type = ISCSI_SESSION_NORMAL,
            .header_digest = ISCSI_DIGEST_NONE,
            .data_digest = ISCSI_DIGEST_NONE,
            .max_recv_dsl = ISCSI_DEFAULT_MAX_RECV_DSL,
            .max_send_dsl = ISCSI_DEFAULT_MAX_RECV_DSL,
            .max_connections = 1,
            .initial_r2t = true,
            .immediate_data = true,
            .max_burst_length = 262144,
            .first_burst_length = 65536,
            .default_time2wait = 2,
            .default_time2retain = 20,
            .max_outstanding_r2t = 1,
            .data_pdu_in_order = true,
            .data_sequence_in_order = true,
            .error_recovery_level = 0,
            .protocol_level = ISCSI_PROTOCOL_LEVEL,
            .rdma_extensions = false,
            .target_recv_dsl = ISCSI_DEFAULT_MAX_RECV_DSL,
            .initiator_recv_dsl = ISCSI_DEFAULT_MAX_RECV_DSL,
            .max_outstanding_unexpected_pdus = 0,
        };
}

/* ---- key table lookups ---- */

enum iscsi_key iscsi_key_lookup(const char *name)
{
        for (unsigned k = 0; k < ISCSI_KEY_COUNT; k++)
                if (strcmp(key_defs[k].name, name) == 0)
                        return (enum iscsi_key)k;
        return ISCSI_KEY_UNKNOWN;
}

const char *iscsi_key_name(enum iscsi_key key)
{
        return key < ISCSI_KEY_COUNT ? key_defs[key].name : "unknown";
}

bool iscsi_key_is_security(enum iscsi_key key)
{
        return key < ISCSI_KEY_COUNT && key_defs[key].kind == KIND_SECURITY;
}

/* Where a numerical or boolean key's result lives, and what the target brings to it. */
static uint32_t *num_field(struct iscsi_params *p, enum iscsi_key k)
{
        switch (k) {
        case ISCSI_KEY_MAX_CONNECTIONS:
                return &p->max_connections;
        case ISCSI_KEY_MAX_BURST_LENGTH:
                return &p->max_burst_length;
        case ISCSI_KEY_FIRST_BURST_LENGTH:
                return &p->first_burst_length;
        case ISCSI_KEY_DEFAULT_TIME2WAIT:
                return &p->default_time2wait;
        case ISCSI_KEY_DEFAULT_TIME2RETAIN:
                return &p->default_time2retain;
        case ISCSI_KEY_MAX_OUTSTANDING_R2T:
                return &p->max_outstanding_r2t;
        case ISCSI_KEY_ERROR_RECOVERY_LEVEL:
                return &p->error_recovery_level;
        case ISCSI_KEY_PROTOCOL_LEVEL:
                return &p->protocol_level;
        case ISCSI_KEY_MAX_OUTSTANDING_UNEXPECTED_PDUS:
                return &p->max_outstanding_unexpected_pdus;
        default:
                return NULL;
        }
}

static uint32_t our_num(const struct iscsi_negotiation *n, enum iscsi_key k)
{
        const struct iscsi_target_limits *l = &n->limits;
        switch (k) {
        case ISCSI_KEY_MAX_CONNECTIONS:
                return l->max_connections;
        case ISCSI_KEY_MAX_BURST_LENGTH:
                return l->max_burst_length;
        case ISCSI_KEY_FIRST_BURST_LENGTH:
                /* FirstBurstLength must not exceed MaxBurstLength (RFC 7143 13.14) */
                return l->first_burst_length < n->params.max_burst_length
                           ? l->first_burst_length
                           : n->params.max_burst_length;
        case ISCSI_KEY_DEFAULT_TIME2WAIT:
                return l->default_time2wait;
        case ISCSI_KEY_DEFAULT_TIME2RETAIN:
                return l->default_time2retain;
        case ISCSI_KEY_MAX_OUTSTANDING_R2T:
                return l->max_outstanding_r2t;
        case ISCSI_KEY_ERROR_RECOVERY_LEVEL:
                return l->error_recovery_level;
        case ISCSI_KEY_PROTOCOL_LEVEL:
                return ISCSI_PROTOCOL_LEVEL;
        case ISCSI_KEY_MAX_OUTSTANDING_UNEXPECTED_PDUS:
                return l->max_outstanding_unexpected_pdus;
        case ISCSI_KEY_TARGET_RECV_DSL:
        case ISCSI_KEY_MAX_RECV_DSL:
                return l->max_recv_dsl;
        default:
                return 0;
        }
}

static bool *bool_field(struct iscsi_params *p, enum iscsi_key k)
{
        switch (k) {
        case ISCSI_KEY_INITIAL_R2T:
                return &p->initial_r2t;
        case ISCSI_KEY_IMMEDIATE_DATA:
                return &p->immediate_data;
        case ISCSI_KEY_DATA_PDU_IN_ORDER:
                return &p->data_pdu_in_order;
        case ISCSI_KEY_DATA_SEQUENCE_IN_ORDER:
                return &p->data_sequence_in_order;
        case ISCSI_KEY_RDMA_EXTENSIONS:
                return &p->rdma_extensions;
        default:
                return NULL;
        }
}

static bool our_bool(const struct iscsi_negotiation *n, enum iscsi_key k)
{
        const struct iscsi_target_limits *l = &n->limits;
        switch (k) {
        case ISCSI_KEY_INITIAL_R2T:
                return l->initial_r2t;
        case ISCSI_KEY_IMMEDIATE_DATA:
                return l->immediate_data;
        case ISCSI_KEY_DATA_PDU_IN_ORDER:
                return l->data_pdu_in_order;
        case ISCSI_KEY_DATA_SEQUENCE_IN_ORDER:
                return l->data_sequence_in_order;
        case ISCSI_KEY_RDMA_EXTENSIONS:
                return n->is_iser;
        default:
                return false;
        }
}

/* ---- value syntax (RFC 7143 section 6.1) ---- */

static int hex_digit(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int iscsi_parse_number(const char *text, uint64_t *out)
{
        uint64_t v = 0;
        if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
                const char *p = text + 2;
                if (*p == '\0' || strlen(p) > 16)
                        return -1;
                for (; *p; p++) {
                        int d = hex_digit(*p);
                        if (d < 0)
                                return -1;
                        v = v << 4 | (uint64_t)d;
                }
                *out = v;
                return 0;
        }
        /* decimal-constant: a single 0, or a non-zero digit followed by digits */
        if (text[0] < '0' || text[0] > '9' || (text[0] == '0' && text[1] != '\0'))
                return -1;
        for (const char *p = text; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -1;
                unsigned d = (unsigned)(*p - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -1;
                v = v * 10 + d;
        }
        *out = v;
        return 0;
}

int iscsi_parse_bool(const char *text, bool *out)
{
        if (strcmp(text, "Yes") == 0) {
                *out = true;
                return 0;
        }
        if (strcmp(text, "No") == 0) {
                *out = false;
                return 0;
        }
        return -1;
}

bool iscsi_name_valid(const char *name)
{
        size_t len = strlen(name);
        if (len < 5 || len > ISCSI_NAME_MAX)
                return false;
        if (strncasecmp(name, "iqn.", 4) != 0 && strncasecmp(name, "eui.", 4) != 0 &&
            strncasecmp(name, "naa.", 4) != 0)
                return false;
        for (const unsigned char *p = (const unsigned char *)name; *p; p++)
                if (*p <= ' ' || *p == 0x7f || *p == ',')
                        return false;
        return true;
}

static bool is_reserved_answer(const char *value)
{
        return strcmp(value, REJECT) == 0 || strcmp(value, IRRELEVANT) == 0 ||
               strcmp(value, NOT_UNDERSTOOD) == 0;
}

/* ---- answering ---- */

static void answer(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                   struct textbuf *rsp)
{
        textbuf_add(rsp, key_defs[k].name, value);
        n->state[k] |= ISCSI_KS_SENT;
}

static void answer_u32(struct iscsi_negotiation *n, enum iscsi_key k, uint32_t value,
                       struct textbuf *rsp)
{
        textbuf_add_u32(rsp, key_defs[k].name, value);
        n->state[k] |= ISCSI_KS_SENT;
}

static int fail_with(struct iscsi_neg_failure *fail, uint8_t detail, const char *fmt,
                     const char *arg)
{
        fail->status_detail = detail;
        snprintf(fail->reason, sizeof(fail->reason), fmt, arg);
        return -1;
}

/* A numerical offer within the key's range, or false. */
static bool parse_in_range(enum iscsi_key k, const char *value, uint32_t *out)
{
        uint64_t v;
        if (iscsi_parse_number(value, &v) != 0)
                return false;
        if (v < key_defs[k].min || v > key_defs[k].max)
                return false;
        *out = (uint32_t)v;
        return true;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
        return a < b ? a : b;
}

/* MaxOutstandingUnexpectedPDUs: minimum, where 0 means "no limit" on either side. */
static uint32_t unexpected_pdus_result(uint32_t ours, uint32_t theirs)
{
        if (ours == 0)
                return theirs;
        if (theirs == 0)
                return ours;
        return min_u32(ours, theirs);
}

/* First value of the offered list we accept, in the initiator's order of preference. */
static void negotiate_digest(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                             struct textbuf *rsp)
{
        /* iSER carries no digests (RFC 7145): only None is acceptable on RDMA. */
        bool crc_ok = !n->params.rdma_extensions &&
                      (k == ISCSI_KEY_HEADER_DIGEST ? n->limits.header_digest_crc32c
                                                    : n->limits.data_digest_crc32c);
        enum iscsi_digest *field =
            k == ISCSI_KEY_HEADER_DIGEST ? &n->params.header_digest : &n->params.data_digest;
        char items[TEXTKV_VALUE_MAX + 1];
        snprintf(items, sizeof(items), "%s", value);
        char *save = NULL;
        for (char *item = strtok_r(items, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                if (strcmp(item, "None") == 0) {
                        *field = ISCSI_DIGEST_NONE;
                        answer(n, k, "None", rsp);
                        return;
                }
                if (strcmp(item, "CRC32C") == 0 && crc_ok) {
                        *field = ISCSI_DIGEST_CRC32C;
                        answer(n, k, "CRC32C", rsp);
                        return;
                }
        }
        answer(n, k, REJECT, rsp);
}

static void negotiate_task_reporting(struct iscsi_negotiation *n, const char *value,
                                     struct textbuf *rsp)
{
        /* We implement only the RFC 3720 semantics (no ResponseFence, no FastAbort). */
        char items[TEXTKV_VALUE_MAX + 1];
        snprintf(items, sizeof(items), "%s", value);
        char *save = NULL;
        for (char *item = strtok_r(items, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                if (strcmp(item, "RFC3720") == 0) {
                        answer(n, ISCSI_KEY_TASK_REPORTING, "RFC3720", rsp);
                        return;
                }
        }
        answer(n, ISCSI_KEY_TASK_REPORTING, REJECT, rsp);
}

static void negotiate_number(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                             struct textbuf *rsp)
{
        uint32_t theirs;
        bool unexpected_pdus = key_defs[k].kind == KIND_UNEXPECTED_PDUS;
        /* MaxOutstandingUnexpectedPDUs is 0 or 2..2^32-1: 1 is out of range */
        if (!parse_in_range(k, value, &theirs) || (unexpected_pdus && theirs == 1)) {
                answer(n, k, REJECT, rsp);
                return;
        }
        uint32_t ours = our_num(n, k);
        uint32_t result;
        if (key_defs[k].kind == KIND_NUM_MAX)
                result = theirs > ours ? theirs : ours;
        else if (unexpected_pdus)
                result = unexpected_pdus_result(ours, theirs);
        else
                result = min_u32(theirs, ours);
        *num_field(&n->params, k) = result;
        answer_u32(n, k, result, rsp);
}

static void negotiate_bool(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                           struct textbuf *rsp)
{
        bool theirs;
        if (iscsi_parse_bool(value, &theirs) != 0) {
                answer(n, k, REJECT, rsp);
                return;
        }
        bool ours = our_bool(n, k);
        bool result = key_defs[k].kind == KIND_BOOL_AND ? (theirs && ours) : (theirs || ours);
        *bool_field(&n->params, k) = result;
        answer(n, k, result ? "Yes" : "No", rsp);
}

/* MaxRecvDataSegmentLength from the initiator declares its receive limit: our send limit. */
static void declare_max_recv_dsl(struct iscsi_negotiation *n, const char *value,
                                 struct textbuf *rsp)
{
        uint32_t theirs;
        if (n->params.rdma_extensions) {
                answer(n, ISCSI_KEY_MAX_RECV_DSL, IRRELEVANT, rsp); /* RFC 7145: not used on iSER */
                return;
        }
        if (!parse_in_range(ISCSI_KEY_MAX_RECV_DSL, value, &theirs)) {
                answer(n, ISCSI_KEY_MAX_RECV_DSL, REJECT, rsp);
                return;
        }
        n->params.max_send_dsl = theirs;
}

static void negotiate_iser_dsl(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                               struct textbuf *rsp)
{
        uint32_t theirs;
        if (!parse_in_range(k, value, &theirs)) {
                answer(n, k, REJECT, rsp);
                return;
        }
        if (k == ISCSI_KEY_TARGET_RECV_DSL) {
                /* What the target receives can never exceed what it declared it can. */
                n->params.target_recv_dsl = min_u32(theirs, n->limits.max_recv_dsl);
                answer_u32(n, k, n->params.target_recv_dsl, rsp);
        } else {
                n->params.initiator_recv_dsl = theirs;
                answer_u32(n, k, theirs, rsp);
        }
}

static void negotiate_marker(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                             struct textbuf *rsp)
{
        /* RFC 7143 section 13.25 obsoletes markers: OF/IFMarker SHOULD get Reject and MAY get
         * "No"; we say "No" (the AND result of a boolean we never enable) because widely used
         * initiators offer IFMarker=No and treat a plain No as the normal answer. The
         * *MarkInt keys MUST get Reject. */
        bool ignored;
        if (key_defs[k].kind == KIND_MARKER && iscsi_parse_bool(value, &ignored) == 0)
                answer(n, k, "No", rsp);
        else
                answer(n, k, REJECT, rsp);
}

static int declare_session_type(struct iscsi_negotiation *n, const char *value,
                                struct iscsi_neg_failure *fail)
{
        enum iscsi_session_type type;
        if (strcmp(value, "Discovery") == 0)
                type = ISCSI_SESSION_DISCOVERY;
        else if (strcmp(value, "Normal") == 0)
                type = ISCSI_SESSION_NORMAL;
        else
                return fail_with(fail, ISCSI_LOGIN_DETAIL_SESSION_TYPE_UNSUPPORTED,
                                 "unsupported SessionType '%s'", value);
        /* The first request fixed the session type (and the target it was checked against). */
        if (n->requests > 0 && type != n->params.session_type)
                return fail_with(fail, ISCSI_LOGIN_DETAIL_INIT_ERR,
                                 "SessionType=%s after the first request", value);
        n->params.session_type = type;
        return 0;
}

static int declare_name(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                        struct iscsi_neg_failure *fail)
{
        if (!iscsi_name_valid(value)) {
                /* A malformed TargetName cannot name one of our targets. */
                uint8_t detail = k == ISCSI_KEY_TARGET_NAME ? ISCSI_LOGIN_DETAIL_NOT_FOUND
                                                            : ISCSI_LOGIN_DETAIL_INIT_ERR;
                return fail_with(fail, detail, "malformed iSCSI name in %s", key_defs[k].name);
        }
        char *field = k == ISCSI_KEY_TARGET_NAME ? n->params.target_name : n->params.initiator_name;
        snprintf(field, ISCSI_NAME_MAX + 1, "%s", value);
        return 0;
}

/* The key is relevant to this session as negotiated so far. */
static bool key_relevant(const struct iscsi_negotiation *n, enum iscsi_key k)
{
        const struct iscsi_params *p = &n->params;
        if ((key_defs[k].flags & KF_NORMAL_ONLY) && p->session_type == ISCSI_SESSION_DISCOVERY)
                return false;
        if ((key_defs[k].flags & KF_ISER_ONLY) && !p->rdma_extensions)
                return false;
        if (k == ISCSI_KEY_FIRST_BURST_LENGTH && p->initial_r2t && !p->immediate_data)
                return false;
        return true;
}

/* Applies a fresh offer of a known, non-security key. */
static int negotiate_key(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                         struct textbuf *rsp, struct iscsi_neg_failure *fail)
{
        switch (key_defs[k].kind) {
        case KIND_SESSION_TYPE:
                return declare_session_type(n, value, fail);
        case KIND_NAME:
                return declare_name(n, k, value, fail);
        case KIND_ALIAS:
                snprintf(n->params.initiator_alias, sizeof(n->params.initiator_alias), "%s", value);
                return 0;
        default:
                break;
        }
        if (!key_relevant(n, k)) {
                answer(n, k, IRRELEVANT, rsp);
                return 0;
        }
        switch (key_defs[k].kind) {
        case KIND_DIGEST:
                negotiate_digest(n, k, value, rsp);
                break;
        case KIND_NUM_MIN:
        case KIND_NUM_MAX:
        case KIND_UNEXPECTED_PDUS:
                negotiate_number(n, k, value, rsp);
                break;
        case KIND_BOOL_AND:
        case KIND_BOOL_OR:
                negotiate_bool(n, k, value, rsp);
                break;
        case KIND_DECL_DSL:
                declare_max_recv_dsl(n, value, rsp);
                break;
        case KIND_ISER_DSL:
                negotiate_iser_dsl(n, k, value, rsp);
                break;
        case KIND_MARKER:
        case KIND_MARK_INT:
                negotiate_marker(n, k, value, rsp);
                break;
        case KIND_TASK_REPORTING:
                negotiate_task_reporting(n, value, rsp);
                break;
        default: /* target-only keys, SendTargets outside full feature phase */
                answer(n, k, REJECT, rsp);
                break;
        }
        return 0;
}

/* The initiator's answer to an offer of ours: the result, with no reply. */
static int take_answer(struct iscsi_negotiation *n, enum iscsi_key k, const char *value,
                       struct iscsi_neg_failure *fail)
{
        n->state[k] &= (uint8_t)~ISCSI_KS_OFFERED;
        if (is_reserved_answer(value))
                return 0; /* Reject / Irrelevant: the default stays in force */
        if (key_defs[k].kind == KIND_BOOL_AND || key_defs[k].kind == KIND_BOOL_OR) {
                bool theirs;
                if (iscsi_parse_bool(value, &theirs) != 0)
                        return fail_with(fail, ISCSI_LOGIN_DETAIL_INIT_ERR,
                                         "malformed answer to our %s", key_defs[k].name);
                bool ours = our_bool(n, k);
                *bool_field(&n->params, k) =
                    key_defs[k].kind == KIND_BOOL_AND ? (theirs && ours) : (theirs || ours);
                return 0;
        }
        uint32_t theirs;
        if (!parse_in_range(k, value, &theirs))
                return fail_with(fail, ISCSI_LOGIN_DETAIL_INIT_ERR, "malformed answer to our %s",
                                 key_defs[k].name);
        /* Our offers are all minimum-result keys. */
        *num_field(&n->params, k) = min_u32(theirs, our_num(n, k));
        return 0;
}

static int process_pair(struct iscsi_negotiation *n, const struct textkv_pair *pair,
                        struct textbuf *rsp, struct iscsi_neg_failure *fail)
{
        enum iscsi_key k = iscsi_key_lookup(pair->key);
        if (k == ISCSI_KEY_UNKNOWN) {
                textbuf_add(rsp, pair->key, NOT_UNDERSTOOD);
                return 0;
        }
        if (key_defs[k].kind == KIND_SECURITY)
                return 0;
        uint8_t *state = &n->state[k];
        if ((*state & ISCSI_KS_OFFERED) && !(*state & ISCSI_KS_RECEIVED)) {
                *state |= ISCSI_KS_RECEIVED;
                return take_answer(n, k, pair->value, fail);
        }
        if (*state & ISCSI_KS_RECEIVED) {
                /* RFC 7143 section 6.2: no key is negotiated or declared twice in a login.
                 * Some initiators repeat their declarations unchanged in each stage. */
                if ((key_defs[k].flags & KF_DECLARATIVE) &&
                    strcmp(n->first_value[k], pair->value) == 0)
                        return 0;
                return fail_with(fail, ISCSI_LOGIN_DETAIL_INIT_ERR, "%s sent twice in one login",
                                 key_defs[k].name);
        }
        *state |= ISCSI_KS_RECEIVED;
        snprintf(n->first_value[k], sizeof(n->first_value[k]), "%s", pair->value);
        if (is_reserved_answer(pair->value))
                return 0; /* an answer to nothing we offered: nothing to say */
        return negotiate_key(n, k, pair->value, rsp, fail);
}

/* ---- public negotiation entry points ---- */

static uint32_t clamp_u32(uint32_t v, uint32_t lo, uint32_t hi)
{
        return v < lo ? lo : v > hi ? hi : v;
}

static void clamp_limits(struct iscsi_target_limits *l)
{
        l->max_recv_dsl = clamp_u32(l->max_recv_dsl, ISCSI_DSL_MIN, ISCSI_DSL_MAX);
        l->max_burst_length = clamp_u32(l->max_burst_length, ISCSI_DSL_MIN, ISCSI_DSL_MAX);
        l->first_burst_length =
            clamp_u32(l->first_burst_length, ISCSI_DSL_MIN, l->max_burst_length);
        l->max_outstanding_r2t = clamp_u32(l->max_outstanding_r2t, 1, 65535);
        l->max_connections = clamp_u32(l->max_connections, 1, 65535);
        l->default_time2wait = clamp_u32(l->default_time2wait, 0, 3600);
        l->default_time2retain = clamp_u32(l->default_time2retain, 0, 3600);
        l->error_recovery_level = clamp_u32(l->error_recovery_level, 0, 2);
        if (l->max_outstanding_unexpected_pdus == 1)
                l->max_outstanding_unexpected_pdus = 2;
}

void iscsi_neg_init(struct iscsi_negotiation *n, const struct iscsi_target_limits *limits,
                    bool is_iser)
{
        memset(n, 0, sizeof(*n));
        iscsi_params_defaults(&n->params);
        n->limits = *limits;
        clamp_limits(&n->limits);
        n->is_iser = is_iser;
}

/* 0: SessionType, RDMAExtensions; 1: keys whose values bound others; 2: the rest. */
static int key_pass(enum iscsi_key k)
{
        if (k == ISCSI_KEY_UNKNOWN)
                return 2;
        if (key_defs[k].flags & KF_FIRST)
                return 0;
        return (key_defs[k].flags & KF_EARLY) ? 1 : 2;
}

int iscsi_neg_process(struct iscsi_negotiation *n, const struct textkv_list *req,
                      struct textbuf *rsp, struct iscsi_neg_failure *fail)
{
        memset(fail, 0, sizeof(*fail));
        /* Keys others depend on first, so one request's order never changes the result. */
        for (int pass = 0; pass < 3; pass++) {
                for (size_t i = 0; i < req->count; i++) {
                        if (key_pass(iscsi_key_lookup(req->pairs[i].key)) != pass)
                                continue;
                        if (process_pair(n, &req->pairs[i], rsp, fail) != 0)
                                return -1;
                }
        }
        n->requests++;
        return 0;
}

/* Offers an unsent key at our value when the RFC default is more than we accept. */
static void offer_if_needed(struct iscsi_negotiation *n, enum iscsi_key k, struct textbuf *rsp)
{
        if (n->state[k] & (ISCSI_KS_RECEIVED | ISCSI_KS_SENT) || !key_relevant(n, k))
                return;
        if (k == ISCSI_KEY_IMMEDIATE_DATA) {
                if (n->limits.immediate_data || !n->params.immediate_data)
                        return;
                answer(n, k, "No", rsp);
        } else {
                if (our_num(n, k) >= *num_field(&n->params, k))
                        return;
                answer_u32(n, k, our_num(n, k), rsp);
        }
        n->state[k] |= ISCSI_KS_OFFERED;
}

void iscsi_neg_add_target_keys(struct iscsi_negotiation *n, struct textbuf *rsp)
{
        if (n->params.rdma_extensions) {
                if (!(n->state[ISCSI_KEY_TARGET_RECV_DSL] & ISCSI_KS_SENT)) {
                        n->params.target_recv_dsl = n->limits.max_recv_dsl;
                        answer_u32(n, ISCSI_KEY_TARGET_RECV_DSL, n->params.target_recv_dsl, rsp);
                }
        } else if (!(n->state[ISCSI_KEY_MAX_RECV_DSL] & ISCSI_KS_SENT)) {
                /* Declarative: the target always states its own receive limit. */
                n->params.max_recv_dsl = n->limits.max_recv_dsl;
                answer_u32(n, ISCSI_KEY_MAX_RECV_DSL, n->params.max_recv_dsl, rsp);
        }
        if (n->params.session_type != ISCSI_SESSION_NORMAL)
                return;
        offer_if_needed(n, ISCSI_KEY_IMMEDIATE_DATA, rsp);
        offer_if_needed(n, ISCSI_KEY_MAX_BURST_LENGTH, rsp);
        offer_if_needed(n, ISCSI_KEY_FIRST_BURST_LENGTH, rsp);
}

bool iscsi_neg_offers_pending(const struct iscsi_negotiation *n)
{
        for (unsigned k = 0; k < ISCSI_KEY_COUNT; k++)
                if (n->state[k] & ISCSI_KS_OFFERED)
                        return true;
        return false;
}

int iscsi_neg_finish(struct iscsi_negotiation *n, struct iscsi_neg_failure *fail)
{
        struct iscsi_params *p = &n->params;
        memset(fail, 0, sizeof(*fail));
        if (p->session_type != ISCSI_SESSION_NORMAL)
                return 0;
        if (p->first_burst_length > p->max_burst_length)
                p->first_burst_length = p->max_burst_length;
        if (n->is_iser && !p->rdma_extensions)
                return fail_with(fail, ISCSI_LOGIN_DETAIL_INIT_ERR, "%s",
                                 "RDMAExtensions=Yes not negotiated on an iSER connection");
        return 0;
}

/* ---- full feature phase ---- */

static void text_key(struct iscsi_params *params, const struct textkv_pair *pair,
                     struct textbuf *rsp)
{
        enum iscsi_key k = iscsi_key_lookup(pair->key);
        switch (k) {
        case ISCSI_KEY_UNKNOWN:
                textbuf_add(rsp, pair->key, NOT_UNDERSTOOD);
                break;
        case ISCSI_KEY_SEND_TARGETS:
                break; /* the caller's */
        case ISCSI_KEY_INITIATOR_ALIAS:
                snprintf(params->initiator_alias, sizeof(params->initiator_alias), "%s",
                         pair->value);
                break;
        case ISCSI_KEY_MAX_RECV_DSL: {
                uint32_t theirs;
                if (params->rdma_extensions)
                        textbuf_add(rsp, pair->key, IRRELEVANT);
                else if (!parse_in_range(k, pair->value, &theirs))
                        textbuf_add(rsp, pair->key, REJECT);
                else
                        params->max_send_dsl = theirs;
                break;
        }
        default:
                /* Login-only (LO/IO) and security keys cannot change in full feature phase. */
                textbuf_add(rsp, pair->key, REJECT);
                break;
        }
}

int iscsi_text_negotiate(struct iscsi_params *params, const struct textkv_list *req,
                         struct textbuf *rsp)
{
        for (size_t i = 0; i < req->count; i++)
                text_key(params, &req->pairs[i], rsp);
        return (int)req->count;
}
