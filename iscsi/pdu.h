/* pdu: the iSCSI PDU wire format (RFC 7143 section 11). Owns the Basic Header Segment
 * layout, opcodes, big-endian field access, header validation and PDU framing sizes.
 * Knows nothing of sessions, connections or SCSI. */
#ifndef ISERGW_ISCSI_PDU_H
#define ISERGW_ISCSI_PDU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ISCSI_BHS_LEN       48
#define ISCSI_DIGEST_LEN    4
#define ISCSI_RSVD_TAG      0xffffffffu
#define ISCSI_MAX_DSL       0xffffffu /* 24-bit DataSegmentLength */
#define ISCSI_MAX_AHS_BYTES (255 * 4)
#define ISCSI_DEFAULT_PORT  3260

/* Initiator opcodes */
enum {
        ISCSI_OP_NOP_OUT = 0x00,
        ISCSI_OP_SCSI_CMD = 0x01,
        ISCSI_OP_TMF_REQ = 0x02,
        ISCSI_OP_LOGIN_REQ = 0x03,
        ISCSI_OP_TEXT_REQ = 0x04,
        ISCSI_OP_DATA_OUT = 0x05,
        ISCSI_OP_LOGOUT_REQ = 0x06,
        ISCSI_OP_SNACK_REQ = 0x10,
};

/* Target opcodes */
enum {
        ISCSI_OP_NOP_IN = 0x20,
        ISCSI_OP_SCSI_RSP = 0x21,
        ISCSI_OP_TMF_RSP = 0x22,
        ISCSI_OP_LOGIN_RSP = 0x23,
        ISCSI_OP_TEXT_RSP = 0x24,
        ISCSI_OP_DATA_IN = 0x25,
        ISCSI_OP_LOGOUT_RSP = 0x26,
        ISCSI_OP_R2T = 0x31,
        ISCSI_OP_ASYNC_MSG = 0x32,
        ISCSI_OP_REJECT = 0x3f,
};

/* Byte 1 flags */
#define ISCSI_FLAG_FINAL              0x80
#define ISCSI_FLAG_CMD_READ           0x40
#define ISCSI_FLAG_CMD_WRITE          0x20
#define ISCSI_FLAG_CMD_ATTR           0x07
#define ISCSI_FLAG_LOGIN_TRANSIT      0x80
#define ISCSI_FLAG_LOGIN_CONTINUE     0x40
#define ISCSI_FLAG_TEXT_CONTINUE      0x40
#define ISCSI_FLAG_DATA_ACK           0x40
#define ISCSI_FLAG_DATA_OVERFLOW      0x04
#define ISCSI_FLAG_DATA_UNDERFLOW     0x02
#define ISCSI_FLAG_DATA_STATUS        0x01
#define ISCSI_FLAG_RSP_BIDI_OVERFLOW  0x10
#define ISCSI_FLAG_RSP_BIDI_UNDERFLOW 0x08
#define ISCSI_FLAG_RSP_OVERFLOW       0x04
#define ISCSI_FLAG_RSP_UNDERFLOW      0x02
#define ISCSI_OPCODE_MASK             0x3f
#define ISCSI_OP_IMMEDIATE            0x40

/* Reject reasons (RFC 7143 11.17.1) */
enum {
        ISCSI_REJECT_DIGEST_ERROR = 0x02,
        ISCSI_REJECT_SNACK_REJECT = 0x03,
        ISCSI_REJECT_PROTOCOL_ERROR = 0x04,
        ISCSI_REJECT_CMD_NOT_SUPPORTED = 0x05,
        ISCSI_REJECT_IMM_CMD_REJECT = 0x06,
        ISCSI_REJECT_TASK_IN_PROGRESS = 0x07,
        ISCSI_REJECT_INVALID_DATA_ACK = 0x08,
        ISCSI_REJECT_INVALID_PDU_FIELD = 0x09,
        ISCSI_REJECT_OUT_OF_RESOURCES = 0x0a,
        ISCSI_REJECT_NEGOTIATION_RESET = 0x0b,
        ISCSI_REJECT_WAITING_FOR_LOGOUT = 0x0c,
};

/* Task management functions and responses (RFC 7143 11.5, 11.6) */
enum {
        ISCSI_TMF_ABORT_TASK = 1,
        ISCSI_TMF_ABORT_TASK_SET = 2,
        ISCSI_TMF_CLEAR_ACA = 3,
        ISCSI_TMF_CLEAR_TASK_SET = 4,
        ISCSI_TMF_LOGICAL_UNIT_RESET = 5,
        ISCSI_TMF_TARGET_WARM_RESET = 6,
        ISCSI_TMF_TARGET_COLD_RESET = 7,
        ISCSI_TMF_TASK_REASSIGN = 8,
};
enum {
        ISCSI_TMF_RSP_COMPLETE = 0,
        ISCSI_TMF_RSP_NO_TASK = 1,
        ISCSI_TMF_RSP_NO_LUN = 2,
        ISCSI_TMF_RSP_TASK_ALLEGIANT = 3,
        ISCSI_TMF_RSP_NO_FAILOVER = 4,
        ISCSI_TMF_RSP_NOT_SUPPORTED = 5,
        ISCSI_TMF_RSP_AUTH_FAILED = 6,
        ISCSI_TMF_RSP_REJECTED = 255,
};

/* Login status classes / details (RFC 7143 11.13.5) */
enum {
        ISCSI_LOGIN_STATUS_SUCCESS = 0x00,
        ISCSI_LOGIN_STATUS_REDIRECT = 0x01,
        ISCSI_LOGIN_STATUS_INITIATOR_ERR = 0x02,
        ISCSI_LOGIN_STATUS_TARGET_ERR = 0x03,
};
enum {
        ISCSI_LOGIN_DETAIL_INIT_ERR = 0x00,
        ISCSI_LOGIN_DETAIL_AUTH_FAILED = 0x01,
        ISCSI_LOGIN_DETAIL_AUTHORIZATION = 0x02,
        ISCSI_LOGIN_DETAIL_NOT_FOUND = 0x03,
        ISCSI_LOGIN_DETAIL_TARGET_REMOVED = 0x04,
        ISCSI_LOGIN_DETAIL_UNSUPPORTED_VERSION = 0x05,
        ISCSI_LOGIN_DETAIL_TOO_MANY_CONNS = 0x06,
        ISCSI_LOGIN_DETAIL_MISSING_PARAM = 0x07,
        ISCSI_LOGIN_DETAIL_CANT_INCLUDE_IN_SESSION = 0x08,
        ISCSI_LOGIN_DETAIL_SESSION_TYPE_UNSUPPORTED = 0x09,
        ISCSI_LOGIN_DETAIL_SESSION_DOESNT_EXIST = 0x0a,
        ISCSI_LOGIN_DETAIL_INVALID_REQUEST = 0x0b,
        /* class 3 */
        ISCSI_LOGIN_DETAIL_TARGET_ERROR = 0x00,
        ISCSI_LOGIN_DETAIL_SERVICE_UNAVAILABLE = 0x01,
        ISCSI_LOGIN_DETAIL_OUT_OF_RESOURCES = 0x02,
};

/* Login stages (CSG/NSG) */
enum {
        ISCSI_STAGE_SECURITY = 0,
        ISCSI_STAGE_OPERATIONAL = 1,
        ISCSI_STAGE_FULL_FEATURE = 3,
};

/* Logout reasons / responses */
enum {
        ISCSI_LOGOUT_CLOSE_SESSION = 0,
        ISCSI_LOGOUT_CLOSE_CONNECTION = 1,
        ISCSI_LOGOUT_REMOVE_FOR_RECOVERY = 2,
};
enum {
        ISCSI_LOGOUT_RSP_OK = 0,
        ISCSI_LOGOUT_RSP_CID_NOT_FOUND = 1,
        ISCSI_LOGOUT_RSP_RECOVERY_UNSUPPORTED = 2,
        ISCSI_LOGOUT_RSP_CLEANUP_FAILED = 3,
};

/* SCSI Response byte 2 */
enum { ISCSI_RSP_COMPLETED = 0x00, ISCSI_RSP_TARGET_FAILURE = 0x01 };

/* The 48-byte Basic Header Segment, raw. Fields are read and written with the accessors
 * below; offsets follow RFC 7143 section 11. */
struct iscsi_bhs {
        uint8_t b[ISCSI_BHS_LEN];
};

static inline uint32_t iscsi_get_be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint16_t iscsi_get_be16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint64_t iscsi_get_be64(const uint8_t *p)
{
        return (uint64_t)iscsi_get_be32(p) << 32 | iscsi_get_be32(p + 4);
}
static inline void iscsi_put_be32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}
static inline void iscsi_put_be16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}
static inline void iscsi_put_be64(uint8_t *p, uint64_t v)
{
        iscsi_put_be32(p, (uint32_t)(v >> 32));
        iscsi_put_be32(p + 4, (uint32_t)v);
}

/* Common fields */
static inline uint8_t bhs_opcode(const struct iscsi_bhs *h)
{
        return h->b[0] & ISCSI_OPCODE_MASK;
}
static inline bool bhs_immediate(const struct iscsi_bhs *h)
{
        return (h->b[0] & ISCSI_OP_IMMEDIATE) != 0;
}
static inline uint8_t bhs_flags(const struct iscsi_bhs *h)
{
        return h->b[1];
}
static inline uint32_t bhs_ahs_bytes(const struct iscsi_bhs *h)
{
        return (uint32_t)h->b[4] * 4;
}
static inline uint32_t bhs_dsl(const struct iscsi_bhs *h)
{
        return (uint32_t)h->b[5] << 16 | (uint32_t)h->b[6] << 8 | h->b[7];
}
static inline uint64_t bhs_lun(const struct iscsi_bhs *h)
{
        return iscsi_get_be64(h->b + 8);
}
static inline uint32_t bhs_itt(const struct iscsi_bhs *h)
{
        return iscsi_get_be32(h->b + 16);
}
/* Word at byte offset 20, 24, ... 44: meaning depends on the opcode. */
static inline uint32_t bhs_word(const struct iscsi_bhs *h, unsigned off)
{
        return iscsi_get_be32(h->b + off);
}
static inline void bhs_set_word(struct iscsi_bhs *h, unsigned off, uint32_t v)
{
        iscsi_put_be32(h->b + off, v);
}

/* Named word offsets used by several opcodes */
enum {
        BHS_TTT = 20,          /* Data-Out, NOP-Out, Text, R2T, Data-In */
        BHS_CMD_EDTL = 20,     /* SCSI Command: Expected Data Transfer Length */
        BHS_CMDSN = 24,        /* initiator PDUs */
        BHS_STATSN = 24,       /* target PDUs */
        BHS_EXPSTATSN = 28,    /* initiator PDUs */
        BHS_EXPCMDSN = 28,     /* target PDUs */
        BHS_MAXCMDSN = 32,     /* target PDUs */
        BHS_DATASN = 36,       /* Data-Out, Data-In; R2TSN in R2T */
        BHS_BUFOFF = 40,       /* Data-Out, Data-In, R2T */
        BHS_R2T_DDTL = 44,     /* R2T: Desired Data Transfer Length */
        BHS_RESIDUAL = 44,     /* SCSI Response, Data-In */
        BHS_CDB = 32,          /* SCSI Command: 16-byte CDB */
        BHS_REF_TASK_TAG = 20, /* TMF request */
        BHS_REF_CMDSN = 32,    /* TMF request */
};

void bhs_set_opcode(struct iscsi_bhs *h, uint8_t opcode, uint8_t flags);
void bhs_set_dsl(struct iscsi_bhs *h, uint32_t dsl);
void bhs_set_lun(struct iscsi_bhs *h, uint64_t lun);
void bhs_set_itt(struct iscsi_bhs *h, uint32_t itt);

/* Bytes of padding after a data segment of dsl bytes. */
static inline uint32_t iscsi_pad(uint32_t dsl)
{
        return (4 - (dsl & 3)) & 3;
}

/* Why a received header is not acceptable before any of its data is read. */
enum bhs_verdict {
        BHS_OK = 0,
        BHS_BAD_OPCODE,    /* not an initiator opcode: Reject(CMD_NOT_SUPPORTED) */
        BHS_DSL_TOO_LARGE, /* data segment over the negotiated limit: drop connection */
        BHS_BAD_FIELD,     /* reserved bits or inconsistent fields: Reject(PROTOCOL_ERROR) */
};

/* Checks an initiator-sent BHS against the data segment limit this side declared
 * (max_recv_dsl). Pure: no state, safe on any bytes. */
enum bhs_verdict iscsi_bhs_check(const struct iscsi_bhs *h, uint32_t max_recv_dsl);
const char *iscsi_opcode_name(uint8_t opcode);

#endif
