/* The PDU layer: field access, framing sizes and the header checks applied to every
 * initiator PDU before its data is read. */
#include <criterion/criterion.h>
#include <string.h>

#include "iscsi/pdu.h"

static struct iscsi_bhs bhs_of(uint8_t op, uint8_t flags, uint32_t dsl)
{
        struct iscsi_bhs h;
        memset(&h, 0, sizeof(h));
        bhs_set_opcode(&h, op, flags);
        bhs_set_dsl(&h, dsl);
        return h;
}

Test(pdu, fields_round_trip)
{
        struct iscsi_bhs h =
            bhs_of(ISCSI_OP_SCSI_CMD | ISCSI_OP_IMMEDIATE, ISCSI_FLAG_FINAL, 0x123456);
        bhs_set_lun(&h, 0x0001000000000000ull);
        bhs_set_itt(&h, 0xdeadbeef);
        bhs_set_word(&h, BHS_CMDSN, 42);
        h.b[4] = 3; /* TotalAHSLength in words */
        cr_assert_eq(bhs_opcode(&h), ISCSI_OP_SCSI_CMD);
        cr_assert(bhs_immediate(&h));
        cr_assert_eq(bhs_flags(&h), ISCSI_FLAG_FINAL);
        cr_assert_eq(bhs_dsl(&h), 0x123456);
        cr_assert_eq(bhs_ahs_bytes(&h), 12);
        cr_assert_eq(bhs_lun(&h), 0x0001000000000000ull);
        cr_assert_eq(bhs_itt(&h), 0xdeadbeef);
        cr_assert_eq(bhs_word(&h, BHS_CMDSN), 42);
        /* big-endian on the wire */
        cr_assert_eq(h.b[16], 0xde);
        cr_assert_eq(h.b[19], 0xef);
        cr_assert_eq(h.b[5], 0x12);
        cr_assert_eq(h.b[7], 0x56);
}

Test(pdu, padding)
{
        cr_assert_eq(iscsi_pad(0), 0);
        cr_assert_eq(iscsi_pad(1), 3);
        cr_assert_eq(iscsi_pad(2), 2);
        cr_assert_eq(iscsi_pad(3), 1);
        cr_assert_eq(iscsi_pad(4), 0);
        cr_assert_eq(iscsi_pad(8193), 3);
}

Test(pdu, check_accepts_initiator_opcodes)
{
        const uint8_t ops[] = {ISCSI_OP_NOP_OUT,    ISCSI_OP_SCSI_CMD, ISCSI_OP_TMF_REQ,
                               ISCSI_OP_LOGIN_REQ,  ISCSI_OP_TEXT_REQ, ISCSI_OP_DATA_OUT,
                               ISCSI_OP_LOGOUT_REQ, ISCSI_OP_SNACK_REQ};
        for (size_t i = 0; i < sizeof(ops); i++) {
                struct iscsi_bhs h = bhs_of(ops[i], ISCSI_FLAG_FINAL, 0);
                cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_OK, "opcode 0x%02x", ops[i]);
        }
}

Test(pdu, check_refuses_target_and_unknown_opcodes)
{
        for (unsigned op = 0; op < 64; op++) {
                bool initiator = op <= 0x06 || op == 0x10;
                struct iscsi_bhs h = bhs_of((uint8_t)op, 0, 0);
                enum bhs_verdict v = iscsi_bhs_check(&h, 8192);
                if (initiator)
                        continue;
                cr_assert_eq(v, BHS_BAD_OPCODE, "opcode 0x%02x", op);
        }
}

Test(pdu, check_data_segment_limit)
{
        struct iscsi_bhs h = bhs_of(ISCSI_OP_SCSI_CMD, ISCSI_FLAG_FINAL, 8192);
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_OK);
        bhs_set_dsl(&h, 8193);
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_DSL_TOO_LARGE);
        bhs_set_dsl(&h, ISCSI_MAX_DSL);
        cr_assert_eq(iscsi_bhs_check(&h, ISCSI_MAX_DSL), BHS_OK);
}

Test(pdu, check_field_rules)
{
        /* Data-Out is never immediate and carries no AHS. */
        struct iscsi_bhs h = bhs_of(ISCSI_OP_DATA_OUT | ISCSI_OP_IMMEDIATE, ISCSI_FLAG_FINAL, 0);
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_BAD_FIELD);
        h = bhs_of(ISCSI_OP_DATA_OUT, ISCSI_FLAG_FINAL, 0);
        h.b[4] = 1;
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_BAD_FIELD);
        /* Login: Transit and Continue together. */
        h = bhs_of(ISCSI_OP_LOGIN_REQ, ISCSI_FLAG_LOGIN_TRANSIT | ISCSI_FLAG_LOGIN_CONTINUE, 0);
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_BAD_FIELD);
        /* Text: Final and Continue together. */
        h = bhs_of(ISCSI_OP_TEXT_REQ, ISCSI_FLAG_FINAL | ISCSI_FLAG_TEXT_CONTINUE, 0);
        cr_assert_eq(iscsi_bhs_check(&h, 8192), BHS_BAD_FIELD);
}

Test(pdu, opcode_names)
{
        cr_assert_str_eq(iscsi_opcode_name(ISCSI_OP_DATA_OUT), "Data-Out");
        cr_assert_str_eq(iscsi_opcode_name(ISCSI_OP_R2T), "R2T");
        cr_assert_str_eq(iscsi_opcode_name(0x3e), "unknown");
}
