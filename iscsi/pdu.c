#include "iscsi/pdu.h"

#include <string.h>

void bhs_set_opcode(struct iscsi_bhs *h, uint8_t opcode, uint8_t flags)
{
        h->b[0] = opcode;
        h->b[1] = flags;
}

void bhs_set_dsl(struct iscsi_bhs *h, uint32_t dsl)
{
        h->b[5] = (uint8_t)(dsl >> 16);
        h->b[6] = (uint8_t)(dsl >> 8);
        h->b[7] = (uint8_t)dsl;
}

void bhs_set_lun(struct iscsi_bhs *h, uint64_t lun)
{
        iscsi_put_be64(h->b + 8, lun);
}

void bhs_set_itt(struct iscsi_bhs *h, uint32_t itt)
{
        iscsi_put_be32(h->b + 16, itt);
}

static bool is_initiator_opcode(uint8_t op)
{
        switch (op) {
        case ISCSI_OP_NOP_OUT:
        case ISCSI_OP_SCSI_CMD:
        case ISCSI_OP_TMF_REQ:
        case ISCSI_OP_LOGIN_REQ:
        case ISCSI_OP_TEXT_REQ:
        case ISCSI_OP_DATA_OUT:
        case ISCSI_OP_LOGOUT_REQ:
        case ISCSI_OP_SNACK_REQ:
                return true;
        default:
                return false;
        }
}

enum bhs_verdict iscsi_bhs_check(const struct iscsi_bhs *h, uint32_t max_recv_dsl)
{
        uint8_t op = bhs_opcode(h);
        if (!is_initiator_opcode(op))
                return BHS_BAD_OPCODE;
        if (bhs_dsl(h) > max_recv_dsl)
                return BHS_DSL_TOO_LARGE;
        switch (op) {
        case ISCSI_OP_DATA_OUT:
                if (bhs_immediate(h) || bhs_ahs_bytes(h) != 0)
                        return BHS_BAD_FIELD;
                break;
        case ISCSI_OP_LOGIN_REQ:
                /* Login requests are always immediate; Continue with Transit is invalid. */
                if ((h->b[1] & ISCSI_FLAG_LOGIN_TRANSIT) && (h->b[1] & ISCSI_FLAG_LOGIN_CONTINUE))
                        return BHS_BAD_FIELD;
                break;
        case ISCSI_OP_TEXT_REQ:
                if ((h->b[1] & ISCSI_FLAG_FINAL) && (h->b[1] & ISCSI_FLAG_TEXT_CONTINUE))
                        return BHS_BAD_FIELD;
                break;
        default:
                break;
        }
        return BHS_OK;
}

const char *iscsi_opcode_name(uint8_t opcode)
{
        static const struct {
                uint8_t op;
                const char *name;
        } names[] = {
            {ISCSI_OP_NOP_OUT, "NOP-Out"},
            {ISCSI_OP_SCSI_CMD, "SCSI-Command"},
            {ISCSI_OP_TMF_REQ, "TMF-Request"},
            {ISCSI_OP_LOGIN_REQ, "Login-Request"},
            {ISCSI_OP_TEXT_REQ, "Text-Request"},
            {ISCSI_OP_DATA_OUT, "Data-Out"},
            {ISCSI_OP_LOGOUT_REQ, "Logout"},
            {ISCSI_OP_SNACK_REQ, "SNACK"},
            {ISCSI_OP_NOP_IN, "NOP-In"},
            {ISCSI_OP_SCSI_RSP, "SCSI-Response"},
            {ISCSI_OP_TMF_RSP, "TMF-Response"},
            {ISCSI_OP_LOGIN_RSP, "Login-Response"},
            {ISCSI_OP_TEXT_RSP, "Text-Response"},
            {ISCSI_OP_DATA_IN, "Data-In"},
            {ISCSI_OP_LOGOUT_RSP, "Logout-Response"},
            {ISCSI_OP_R2T, "R2T"},
            {ISCSI_OP_ASYNC_MSG, "Async-Message"},
            {ISCSI_OP_REJECT, "Reject"},
        };
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                if (names[i].op == opcode)
                        return names[i].name;
        return "unknown";
}
