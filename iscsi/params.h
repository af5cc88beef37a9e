/* params: the iSCSI text keys of RFC 7143 section 13, iSCSIProtocolLevel (RFC 7144) and the
 * iSER keys (RFC 7145): their types, ranges, defaults, phases and negotiation rules, as the
 * target (responder) applies them. Owns struct iscsi_params (the negotiated result), the
 * target's declared values and limits (struct iscsi_target_limits) and the per-login
 * negotiation state. Security keys (AuthMethod, CHAP_*) are recognised but left to the
 * caller; login owns stages, authentication and PDU flow. */
#ifndef ISERGW_ISCSI_PARAMS_H
#define ISERGW_ISCSI_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include "iscsi/textkv.h"

#define ISCSI_NAME_MAX             223 /* bytes in an iSCSI name (RFC 7143 section 4.2.7.1) */
#define ISCSI_ALIAS_MAX            TEXTKV_VALUE_MAX
#define ISCSI_DSL_MIN              512u
#define ISCSI_DSL_MAX              16777215u /* 2^24 - 1 */
#define ISCSI_DEFAULT_MAX_RECV_DSL 8192u
#define ISCSI_PROTOCOL_LEVEL       1u /* RFC 7143 */

enum iscsi_digest { ISCSI_DIGEST_NONE = 0, ISCSI_DIGEST_CRC32C = 1 };
enum iscsi_session_type { ISCSI_SESSION_NORMAL = 0, ISCSI_SESSION_DISCOVERY = 1 };

/* The outcome of a login: identities and every operational value in force. Fields hold the
 * RFC 7143 default until a key is negotiated. */
struct iscsi_params {
        enum iscsi_session_type session_type;
        char initiator_name[ISCSI_NAME_MAX + 1];
        char initiator_alias[ISCSI_ALIAS_MAX + 1];
        char target_name[ISCSI_NAME_MAX + 1]; /* empty for discovery */
        /* Connection-wide */
        enum iscsi_digest header_digest;
        enum iscsi_digest data_digest;
        uint32_t max_recv_dsl; /* ours as declared: largest data segment the initiator may send */
        uint32_t max_send_dsl; /* the initiator's MaxRecvDataSegmentLength: our send limit */
        /* Session-wide */
        uint32_t max_connections;
        bool initial_r2t;
        bool immediate_data;
        uint32_t max_burst_length;
        uint32_t first_burst_length;
        uint32_t default_time2wait;
        uint32_t default_time2retain;
        uint32_t max_outstanding_r2t;
        bool data_pdu_in_order;
        bool data_sequence_in_order;
        uint32_t error_recovery_level;
        uint32_t protocol_level; /* iSCSIProtocolLevel */
        /* iSER (RFC 7145); the two lengths apply only when rdma_extensions is true */
        bool rdma_extensions;
        uint32_t target_recv_dsl;    /* largest iSCSI control-type PDU data the target receives */
        uint32_t initiator_recv_dsl; /* ... the initiator receives */
        uint32_t max_outstanding_unexpected_pdus; /* 0: no limit */
};

/* The target's own side of every negotiation. Out-of-range fields are clamped into the RFC
 * range when a negotiation starts. These are preferences and bounds, not guarantees: keys
 * never negotiated keep their RFC default (e.g. a login that goes from the security stage
 * straight to full feature phase leaves no room for our offers, so ImmediateData=Yes and
 * MaxRecvDataSegmentLength=8192 apply). struct iscsi_params is always authoritative. */
struct iscsi_target_limits {
        uint32_t max_recv_dsl;         /* declared MaxRecvDataSegmentLength, also iSER
                                        * TargetRecvDataSegmentLength */
        uint32_t max_burst_length;     /* largest MaxBurstLength accepted (result: minimum) */
        uint32_t first_burst_length;   /* largest FirstBurstLength accepted (minimum) */
        uint32_t max_outstanding_r2t;  /* minimum */
        uint32_t max_connections;      /* minimum */
        uint32_t default_time2wait;    /* ours; result is the maximum */
        uint32_t default_time2retain;  /* ours; result is the minimum */
        uint32_t error_recovery_level; /* highest level implemented (minimum) */
        bool initial_r2t;              /* true: we want an R2T before any non-immediate data (OR) */
        bool immediate_data;           /* false: we refuse immediate data (AND) */
        bool data_pdu_in_order;        /* true: we need Data PDUs in order (OR) */
        bool data_sequence_in_order;   /* OR */
        bool header_digest_crc32c;     /* CRC32C acceptable as HeaderDigest */
        bool data_digest_crc32c;       /* ... as DataDigest */
        uint32_t max_outstanding_unexpected_pdus; /* iSER; 0: no limit */
};

/* A sensible gateway configuration: 256 KiB data segments and bursts, immediate data,
 * InitialR2T=Yes, one R2T, ERL 0, both digests allowed. */
void iscsi_target_limits_default(struct iscsi_target_limits *l);
/* RFC 7143 defaults for every field; names empty, session Normal. */
void iscsi_params_defaults(struct iscsi_params *p);

/* Every key this module knows. */
enum iscsi_key {
        ISCSI_KEY_HEADER_DIGEST,
        ISCSI_KEY_DATA_DIGEST,
        ISCSI_KEY_MAX_CONNECTIONS,
        ISCSI_KEY_SEND_TARGETS,
        ISCSI_KEY_TARGET_NAME,
        ISCSI_KEY_INITIATOR_NAME,
        ISCSI_KEY_TARGET_ALIAS,
        ISCSI_KEY_INITIATOR_ALIAS,
        ISCSI_KEY_TARGET_ADDRESS,
        ISCSI_KEY_TARGET_PORTAL_GROUP_TAG,
        ISCSI_KEY_INITIAL_R2T,
        ISCSI_KEY_IMMEDIATE_DATA,
        ISCSI_KEY_MAX_RECV_DSL,
        ISCSI_KEY_MAX_BURST_LENGTH,
        ISCSI_KEY_FIRST_BURST_LENGTH,
        ISCSI_KEY_DEFAULT_TIME2WAIT,
        ISCSI_KEY_DEFAULT_TIME2RETAIN,
        ISCSI_KEY_MAX_OUTSTANDING_R2T,
        ISCSI_KEY_DATA_PDU_IN_ORDER,
        ISCSI_KEY_DATA_SEQUENCE_IN_ORDER,
        ISCSI_KEY_ERROR_RECOVERY_LEVEL,
        ISCSI_KEY_SESSION_TYPE,
        ISCSI_KEY_AUTH_METHOD,
        ISCSI_KEY_CHAP_A,
        ISCSI_KEY_CHAP_I,
        ISCSI_KEY_CHAP_C,
        ISCSI_KEY_CHAP_N,
        ISCSI_KEY_CHAP_R,
        ISCSI_KEY_OF_MARKER,
        ISCSI_KEY_IF_MARKER,
        ISCSI_KEY_OF_MARK_INT,
        ISCSI_KEY_IF_MARK_INT,
        ISCSI_KEY_TASK_REPORTING,
        ISCSI_KEY_PROTOCOL_LEVEL,
        ISCSI_KEY_RDMA_EXTENSIONS,
        ISCSI_KEY_TARGET_RECV_DSL,
        ISCSI_KEY_INITIATOR_RECV_DSL,
        ISCSI_KEY_MAX_OUTSTANDING_UNEXPECTED_PDUS,
        ISCSI_KEY_COUNT,
        ISCSI_KEY_UNKNOWN = ISCSI_KEY_COUNT,
};

enum iscsi_key iscsi_key_lookup(const char *name); /* ISCSI_KEY_UNKNOWN if not a known key */
const char *iscsi_key_name(enum iscsi_key key);
bool iscsi_key_is_security(enum iscsi_key key); /* AuthMethod and CHAP_* */

/* Per-key progress within one login. */
enum {
        ISCSI_KS_RECEIVED = 1, /* the initiator sent the key */
        ISCSI_KS_OFFERED = 2,  /* we offered it and wait for the initiator's answer */
        ISCSI_KS_SENT = 4,     /* we answered, declared or offered it */
};

/* One login's negotiation. Embed it or allocate it; no heap memory is held. */
struct iscsi_negotiation {
        struct iscsi_params params;
        struct iscsi_target_limits limits; /* clamped copy */
        bool is_iser;                      /* the connection is RDMA (iSER-capable) */
        unsigned requests;                 /* requests processed so far */
        uint8_t state[ISCSI_KEY_COUNT];
        char first_value[ISCSI_KEY_COUNT][TEXTKV_VALUE_MAX + 1]; /* to spot redeclarations */
};

/* Why a request cannot be answered: the login must end with this status (class 2). */
struct iscsi_neg_failure {
        uint8_t status_detail; /* ISCSI_LOGIN_DETAIL_* of class ISCSI_LOGIN_STATUS_INITIATOR_ERR */
        char reason[160];      /* for the log; never sent to the initiator */
};

void iscsi_neg_init(struct iscsi_negotiation *n, const struct iscsi_target_limits *limits,
                    bool is_iser);

/* Answers the non-security keys of one complete login request into rsp (operational keys
 * are welcome in both login stages, RFC 7143 section 6.3): results for negotiated keys,
 * NotUnderstood for unknown ones, Irrelevant / Reject where RFC 7143 says so, nothing for
 * declarations and for answers to our own offers. Security keys are skipped (the caller
 * handles them). Returns 0, or -1 with *fail filled when the login must fail (a key
 * renegotiated, a bad InitiatorName or SessionType, SessionType changed after the first
 * request). */
int iscsi_neg_process(struct iscsi_negotiation *n, const struct textkv_list *req,
                      struct textbuf *rsp, struct iscsi_neg_failure *fail);

/* Appends what the target must say on its own in an operational-stage response: its
 * declarative keys not yet sent (MaxRecvDataSegmentLength, or TargetRecvDataSegmentLength on
 * iSER) and offers for keys whose RFC default we cannot accept (ImmediateData=No, burst
 * lengths below the default). Offers stay pending until the initiator answers them. */
void iscsi_neg_add_target_keys(struct iscsi_negotiation *n, struct textbuf *rsp);

/* True while an offer of ours waits for the initiator's answer (no stage transition yet). */
bool iscsi_neg_offers_pending(const struct iscsi_negotiation *n);

/* Settles the result when the login enters full feature phase: FirstBurstLength is kept
 * within MaxBurstLength, and a Normal session on an iSER connection must have negotiated
 * RDMAExtensions=Yes. Returns 0 or -1 with *fail filled. */
int iscsi_neg_finish(struct iscsi_negotiation *n, struct iscsi_neg_failure *fail);

/* Full feature phase Text Request: answers the keys of req into rsp against params, which
 * it updates (only MaxRecvDataSegmentLength and InitiatorAlias may change then; other known
 * keys get Reject, unknown ones NotUnderstood). SendTargets is left out for the caller to
 * answer. Returns the number of keys answered or skipped. */
int iscsi_text_negotiate(struct iscsi_params *params, const struct textkv_list *req,
                         struct textbuf *rsp);

/* Value parsers shared with login and chap (RFC 7143 section 6.1 syntax). */
int iscsi_parse_number(const char *text, uint64_t *out); /* decimal or 0x hex */
int iscsi_parse_bool(const char *text, bool *out);       /* "Yes" / "No" */
bool iscsi_name_valid(const char *name);                 /* iqn. / eui. / naa., <= 223 */

#endif
