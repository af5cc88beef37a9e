/* scsi_pr: reservations of a LU. SPC-2 RESERVE/RELEASE (6 and 10) and SPC-4 PERSISTENT
 * RESERVE IN (READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS) and OUT
 * (REGISTER, REGISTER AND IGNORE EXISTING KEY, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT
 * AND ABORT), with the conflict rules that every command passes at prepare time.
 *
 * State lives in the LU (struct scsi_lun.pr) under a spinlock; nothing is saved, so APTPL
 * is refused and PTPL_C is reported clear. The SPC-2 reservation ends with its I_T nexus
 * and with LU resets (scsi_pr_nexus_lost, scsi_pr_reset, from the transport's events). Not
 * implemented: REGISTER AND MOVE, SPEC_I_PT, ALL_TG_PT, unit attentions to other I_T nexuses
 * (RESERVATIONS PREEMPTED / RELEASED, REGISTRATIONS PREEMPTED), and the task abort part of PREEMPT
 * AND ABORT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi/scsi_internal.h"

enum {
        PR_WE = 1,
        PR_EA = 3,
        PR_WERO = 5,
        PR_EARO = 6,
        PR_WEAR = 7,
        PR_EAAR = 8,
};

static void pr_lock(struct scsi_lun *lun)
{
        scsi_spin_lock(&lun->pr.lock);
}

static void pr_unlock(struct scsi_lun *lun)
{
        scsi_spin_unlock(&lun->pr.lock);
}

static bool type_valid(uint8_t type)
{
        return type == PR_WE || type == PR_EA || type == PR_WERO || type == PR_EARO ||
               type == PR_WEAR || type == PR_EAAR;
}

static bool type_all_registrants(uint8_t type)
{
        return type == PR_WEAR || type == PR_EAAR;
}

static bool type_registrants(uint8_t type) /* registrants only or all registrants */
{
        return type >= PR_WERO;
}

static bool type_exclusive_access(uint8_t type)
{
        return type == PR_EA || type == PR_EARO || type == PR_EAAR;
}

/* Index of the nexus's registration, or -1. Under the lock. */
static int reg_find(const struct scsi_lun *lun, const struct scsi_nexus_id *id)
{
        for (int i = 0; i < SCSI_PR_MAX_REGS; i++)
                if (lun->pr.regs[i].used && scsi_nexus_eq(&lun->pr.regs[i].id, id))
                        return i;
        return -1;
}

static bool pr_any(const struct scsi_lun *lun)
{
        if (lun->pr.spc2_held || lun->pr.held)
                return true;
        for (int i = 0; i < SCSI_PR_MAX_REGS; i++)
                if (lun->pr.regs[i].used)
                        return true;
        return false;
}

static void pr_update_active(struct scsi_lun *lun)
{
        atomic_store_explicit(&lun->pr.active, pr_any(lun), memory_order_release);
}

/* Whether registration i holds the persistent reservation. */
static bool reg_is_holder(const struct scsi_lun *lun, int i)
{
        if (!lun->pr.held || i < 0)
                return false;
        return type_all_registrants(lun->pr.type) || lun->pr.holder == i;
}

static void reg_remove(struct scsi_lun *lun, int i)
{
        lun->pr.regs[i].used = false;
        if (!lun->pr.held)
                return;
        if (type_all_registrants(lun->pr.type)) {
                for (int k = 0; k < SCSI_PR_MAX_REGS; k++)
                        if (lun->pr.regs[k].used)
                                return; /* the reservation stays while anyone is registered */
                lun->pr.held = false;
        } else if (lun->pr.holder == i) {
                lun->pr.held = false;
        }
}

/* Commands a persistent reservation never blocks (SPC-4 table 63 and SBC-3 table 13). */
static bool pr_always_allowed(uint8_t opcode)
{
        switch (opcode) {
        case 0x03: /* REQUEST SENSE */
        case 0x12: /* INQUIRY */
        case 0x25: /* READ CAPACITY (10) */
        case 0x5e: /* PERSISTENT RESERVE IN */
        case 0x5f: /* PERSISTENT RESERVE OUT: checks keys itself */
        case 0xa0: /* REPORT LUNS */
        case 0xa3: /* REPORT SUPPORTED OPERATION CODES */
                return true;
        default:
                return false;
        }
}

/* Commands that only read (allowed to non-holders under Write Exclusive types). */
static bool is_read_only_command(const struct scsi_cmd *cmd)
{
        switch (cmd->cdb[0]) {
        case 0x00: /* TEST UNIT READY */
        case 0x08:
        case 0x28:
        case 0xa8:
        case 0x88: /* READ */
        case 0x2f:
        case 0xaf:
        case 0x8f: /* VERIFY */
        case 0x1a:
        case 0x5a: /* MODE SENSE */
        case 0x34:
        case 0x90: /* PRE-FETCH */
        case 0x9e: /* READ CAPACITY (16), GET LBA STATUS */
                return true;
        default:
                return false;
        }
}

/* SPC-2 reservation held by another nexus: only these pass. */
static bool spc2_allowed(uint8_t opcode)
{
        switch (opcode) {
        case 0x03: /* REQUEST SENSE */
        case 0x12: /* INQUIRY */
        case 0x17:
        case 0x57: /* RELEASE: succeeds without effect */
        case 0xa0: /* REPORT LUNS */
                return true;
        default:
                return false;
        }
}

static bool conflict(struct scsi_cmd *cmd)
{
        cmd->status = SCSI_STATUS_RESERVATION_CONFLICT;
        cmd->sense_len = 0;
        return false;
}

bool scsi_pr_check(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        if (!atomic_load_explicit(&lun->pr.active, memory_order_acquire))
                return true;
        uint8_t opcode = cmd->cdb[0];
        struct scsi_nexus_id id;
        scsi_nexus_of(cmd, &id);
        bool ok = true;
        pr_lock(lun);
        if (lun->pr.spc2_held) {
                if (!scsi_nexus_eq(&lun->pr.spc2_holder, &id) && !spc2_allowed(opcode))
                        ok = false;
        } else if (lun->pr.held && !pr_always_allowed(opcode) &&
                   !(opcode == 0x9e && (cmd->cdb[1] & 0x1f) == 0x10)) { /* READ CAPACITY 16 */
                int i = reg_find(lun, &id);
                bool access = reg_is_holder(lun, i) || (i >= 0 && type_registrants(lun->pr.type));
                if (!access) {
                        if (type_exclusive_access(lun->pr.type))
                                ok = false;
                        else
                                ok = is_read_only_command(cmd);
                }
        }
        pr_unlock(lun);
        return ok || conflict(cmd);
}

/* SPC-2 RESERVE / RELEASE */

void scsi_pr_reset(struct scsi_lun *lun)
{
        pr_lock(lun);
        lun->pr.spc2_held = false;
        pr_update_active(lun);
        pr_unlock(lun);
}

void scsi_pr_nexus_lost(struct scsi_lun *lun, const struct scsi_nexus_id *id)
{
        pr_lock(lun);
        if (lun->pr.spc2_held && scsi_nexus_eq(&lun->pr.spc2_holder, id)) {
                lun->pr.spc2_held = false;
                pr_update_active(lun);
        }
        pr_unlock(lun);
}

enum scsi_cmd_state spc_reserve(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        struct scsi_nexus_id id;
        scsi_nexus_of(cmd, &id);
        bool ok = true;
        pr_lock(lun);
        bool pr_in_use = !lun->pr.spc2_held && pr_any(lun);
        if (pr_in_use || (lun->pr.spc2_held && !scsi_nexus_eq(&lun->pr.spc2_holder, &id))) {
                ok = false;
        } else {
                lun->pr.spc2_held = true;
                lun->pr.spc2_holder = id;
                pr_update_active(lun);
        }
        pr_unlock(lun);
        if (!ok) {
                conflict(cmd);
                return SCSI_CMD_COMPLETE;
        }
        return scsi_good(cmd);
}

enum scsi_cmd_state spc_release(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        struct scsi_nexus_id id;
        scsi_nexus_of(cmd, &id);
        bool ok = true;
        pr_lock(lun);
        if (!lun->pr.spc2_held && (lun->pr.held || pr_any(lun))) {
                ok = false; /* persistent reservations in use */
        } else if (lun->pr.spc2_held && scsi_nexus_eq(&lun->pr.spc2_holder, &id)) {
                lun->pr.spc2_held = false;
                pr_update_active(lun);
        }
        pr_unlock(lun);
        if (!ok) {
                conflict(cmd);
                return SCSI_CMD_COMPLETE;
        }
        return scsi_good(cmd);
}

/* PERSISTENT RESERVE IN */

/* iSCSI TransportID, format 01b: "name,i,0xISID", NUL-terminated, padded to 4. */
static uint32_t put_transport_id(uint8_t *p, const struct scsi_nexus_id *id)
{
        char s[260];
        int n =
            snprintf(s, sizeof(s), "%s,i,0x%02x%02x%02x%02x%02x%02x", id->initiator, id->isid[0],
                     id->isid[1], id->isid[2], id->isid[3], id->isid[4], id->isid[5]);
        uint32_t len = ((uint32_t)n + 1 + 3) & ~3u;
        if (len < 20)
                len = 20;
        p[0] = 0x40 | 0x05; /* FORMAT CODE 01b, PROTOCOL IDENTIFIER iSCSI */
        put_be16(&p[2], (uint16_t)len);
        memcpy(&p[4], s, (size_t)n);
        return 4 + len;
}

enum scsi_cmd_state spc_pr_in(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        uint8_t sa = cmd->cdb[1] & 0x1f;
        uint32_t alloc = get_be16(&cmd->cdb[7]);
        uint8_t *b = calloc(1, 8 + SCSI_PR_MAX_REGS * (24 + 264));
        if (!b)
                return scsi_reply(cmd, NULL, 0, alloc);
        uint32_t len = 8;
        pr_lock(lun);
        put_be32(&b[0], lun->pr.generation);
        switch (sa) {
        case 0x00: /* READ KEYS */
                for (int i = 0; i < SCSI_PR_MAX_REGS; i++) {
                        if (!lun->pr.regs[i].used)
                                continue;
                        put_be64(&b[len], lun->pr.regs[i].key);
                        len += 8;
                }
                put_be32(&b[4], len - 8);
                break;
        case 0x01: /* READ RESERVATION */
                if (lun->pr.held) {
                        uint64_t key = type_all_registrants(lun->pr.type)
                                           ? 0
                                           : lun->pr.regs[lun->pr.holder].key;
                        put_be64(&b[8], key);
                        b[21] = lun->pr.type; /* scope 0: LU */
                        len += 16;
                }
                put_be32(&b[4], len - 8);
                break;
        case 0x02: /* REPORT CAPABILITIES */
                memset(b, 0, 8);
                put_be16(&b[0], 8);
                b[2] = 0x10;        /* CRH: RESERVE/RELEASE(6/10) handled as SPC-4 says */
                b[3] = 0x80 | 0x10; /* TMV, ALLOW COMMANDS 001b */
                b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; /* WEAR, EARO, WERO, EA, WE */
                b[5] = 0x01;                             /* EAAR */
                len = 8;
                break;
        case 0x03: /* READ FULL STATUS */
                for (int i = 0; i < SCSI_PR_MAX_REGS; i++) {
                        const struct scsi_pr_reg *r = &lun->pr.regs[i];
                        if (!r->used)
                                continue;
                        uint8_t *d = &b[len];
                        put_be64(&d[0], r->key);
                        if (reg_is_holder(lun, i)) {
                                d[12] = 0x01; /* R_HOLDER */
                                d[13] = lun->pr.type;
                        }
                        put_be16(&d[18], cmd->rel_tgt_port_id ? cmd->rel_tgt_port_id : 1);
                        uint32_t tid = put_transport_id(&d[24], &r->id);
                        put_be32(&d[20], tid);
                        len += 24 + tid;
                }
                put_be32(&b[4], len - 8);
                break;
        }
        pr_unlock(lun);
        return scsi_reply(cmd, b, len, alloc);
}

/* PERSISTENT RESERVE OUT */

enum scsi_cmd_state spc_pr_out(struct scsi_cmd *cmd)
{
        uint8_t sa = cmd->cdb[1] & 0x1f;
        uint8_t scope = cmd->cdb[2] >> 4, type = cmd->cdb[2] & 0x0f;
        uint32_t len = get_be32(&cmd->cdb[5]);
        cmd->data_out_len = len;
        bool needs_type = sa == 0x01 || sa == 0x02 || sa == 0x04 || sa == 0x05;
        if (needs_type && scope != 0)
                return scsi_fail_cdb(cmd, 2, 7);
        if (needs_type && !type_valid(type))
                return scsi_fail_cdb(cmd, 2, 3);
        if (len != 24)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        if (cmd->edtl < len)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        return SCSI_CMD_NEEDS_DATA;
}

/* Removes every registration with key sark other than self's; returns how many. */
static int remove_key(struct scsi_lun *lun, uint64_t sark, int self)
{
        int n = 0;
        for (int i = 0; i < SCSI_PR_MAX_REGS; i++) {
                if (i != self && lun->pr.regs[i].used && lun->pr.regs[i].key == sark) {
                        reg_remove(lun, i);
                        n++;
                }
        }
        return n;
}

/* Runs a PROUT service action under the lock. Returns a status: GOOD, RESERVATION
 * CONFLICT, or CHECK CONDITION with sense set in cmd. */
static uint8_t pr_out_locked(struct scsi_cmd *cmd, const uint8_t *p)
{
        struct scsi_lun *lun = cmd->lun;
        uint8_t sa = cmd->cdb[1] & 0x1f, type = cmd->cdb[2] & 0x0f;
        uint64_t key = get_be64(&p[0]), sark = get_be64(&p[8]);
        struct scsi_nexus_id id;
        scsi_nexus_of(cmd, &id);
        if (lun->pr.spc2_held && !scsi_nexus_eq(&lun->pr.spc2_holder, &id))
                return SCSI_STATUS_RESERVATION_CONFLICT;
        int self = reg_find(lun, &id);

        if (sa == 0x00 || sa == 0x06) { /* REGISTER, REGISTER AND IGNORE EXISTING KEY */
                if (sa == 0x00 && (self < 0 ? key != 0 : key != lun->pr.regs[self].key))
                        return SCSI_STATUS_RESERVATION_CONFLICT;
                if (self < 0 && sark == 0)
                        return SCSI_STATUS_GOOD;
                if (sark == 0) {
                        reg_remove(lun, self);
                } else if (self >= 0) {
                        lun->pr.regs[self].key = sark;
                } else {
                        int i = 0;
                        while (i < SCSI_PR_MAX_REGS && lun->pr.regs[i].used)
                                i++;
                        if (i == SCSI_PR_MAX_REGS) {
                                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST,
                                               ASC_INSUFFICIENT_REG_RESOURCES);
                                return SCSI_STATUS_CHECK_CONDITION;
                        }
                        lun->pr.regs[i] = (struct scsi_pr_reg){true, sark, id};
                }
                lun->pr.generation++;
                return SCSI_STATUS_GOOD;
        }

        if (self < 0 || key != lun->pr.regs[self].key)
                return SCSI_STATUS_RESERVATION_CONFLICT;

        switch (sa) {
        case 0x01: /* RESERVE */
                if (!lun->pr.held) {
                        lun->pr.held = true;
                        lun->pr.type = type;
                        lun->pr.holder = self;
                        return SCSI_STATUS_GOOD;
                }
                if (reg_is_holder(lun, self) && lun->pr.type == type)
                        return SCSI_STATUS_GOOD;
                return SCSI_STATUS_RESERVATION_CONFLICT;
        case 0x02: /* RELEASE */
                if (!reg_is_holder(lun, self))
                        return SCSI_STATUS_GOOD;
                if (lun->pr.type != type) {
                        scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_RELEASE_OF_PR);
                        return SCSI_STATUS_CHECK_CONDITION;
                }
                lun->pr.held = false;
                return SCSI_STATUS_GOOD;
        case 0x03: /* CLEAR */
                for (int i = 0; i < SCSI_PR_MAX_REGS; i++)
                        lun->pr.regs[i].used = false;
                lun->pr.held = false;
                lun->pr.generation++;
                return SCSI_STATUS_GOOD;
        case 0x04: /* PREEMPT */
        case 0x05: /* PREEMPT AND ABORT (tasks are not aborted) */
                if (lun->pr.held && type_all_registrants(lun->pr.type)) {
                        if (sark == 0) { /* everyone else goes; self takes a new reservation */
                                for (int i = 0; i < SCSI_PR_MAX_REGS; i++)
                                        if (i != self)
                                                lun->pr.regs[i].used = false;
                                lun->pr.held = true;
                                lun->pr.type = type;
                                lun->pr.holder = self;
                        } else if (remove_key(lun, sark, self) == 0) {
                                return SCSI_STATUS_RESERVATION_CONFLICT;
                        }
                } else if (lun->pr.held && lun->pr.regs[lun->pr.holder].key == sark) {
                        remove_key(lun, sark, self);
                        lun->pr.held = true;
                        lun->pr.type = type;
                        lun->pr.holder = self;
                } else {
                        if (sark == 0) {
                                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
                                return SCSI_STATUS_CHECK_CONDITION;
                        }
                        if (remove_key(lun, sark, self) == 0 && lun->pr.regs[self].key != sark)
                                return SCSI_STATUS_RESERVATION_CONFLICT;
                }
                lun->pr.generation++;
                return SCSI_STATUS_GOOD;
        default:
                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
                return SCSI_STATUS_CHECK_CONDITION;
        }
}

void spc_exec_pr_out(struct scsi_cmd *cmd)
{
        uint8_t p[24];
        if (scsi_iov_to_buf(cmd->iov, cmd->iovcnt, 0, p, sizeof(p)) != sizeof(p)) {
                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
                scsi_finish(cmd);
                return;
        }
        if (p[20] & 0x01) { /* APTPL: nothing persists across restarts */
                scsi_fail_param(cmd, 20, 0);
                scsi_finish(cmd);
                return;
        }
        if (p[20] & 0x0c) { /* SPEC_I_PT, ALL_TG_PT: not supported */
                scsi_fail_param(cmd, 20, (p[20] & 0x08) ? 3 : 2);
                scsi_finish(cmd);
                return;
        }
        struct scsi_lun *lun = cmd->lun;
        pr_lock(lun);
        uint8_t status = pr_out_locked(cmd, p);
        pr_update_active(lun);
        pr_unlock(lun);
        if (status == SCSI_STATUS_GOOD)
                scsi_good(cmd);
        else if (status == SCSI_STATUS_RESERVATION_CONFLICT)
                conflict(cmd);
        scsi_finish(cmd);
}
