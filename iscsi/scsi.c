/* scsi: the command life cycle (init, prepare, execute, release), the command table and its
 * CDB checks, sense data, the volume I/O step loop, the per-LU COMPARE AND WRITE queue, I_T
 * nexus identity and the LU events of the transport, LU identity and LUN encoding. Command
 * semantics live in scsi_spc.c, scsi_sbc.c, scsi_pr.c and scsi_medium.c. */
#include "iscsi/scsi.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iscsi/scsi_internal.h"
#include "src/log.h"
#include "src/reactor.h"

#define B4 0xff, 0xff, 0xff, 0xff
#define B8 B4, B4

/* Every command we implement, in opcode order. usage[] is the CDB USAGE DATA reported by
 * REPORT SUPPORTED OPERATION CODES and the mask of CDB bits we accept. */
/* clang-format off */
static const struct scsi_op op_table[] = {
        {0x00, 0, 6, SCSI_OP_MEDIUM, {0x00, 0, 0, 0, 0, 0}, spc_test_unit_ready, NULL},
        {0x03, 0, 6, SCSI_OP_NO_LUN, {0x03, 0, 0, 0, 0xff, 0}, spc_request_sense, scsi_exec_reply},
        {0x08, 0, 6, SCSI_OP_MEDIUM, {0x08, 0x1f, 0xff, 0xff, 0xff, 0}, sbc_read, sbc_exec_rw},
        {0x0a, 0, 6, SCSI_OP_MEDIUM, {0x0a, 0x1f, 0xff, 0xff, 0xff, 0}, sbc_write, sbc_exec_rw},
        {0x12, 0, 6, SCSI_OP_NO_LUN, {0x12, 0x01, 0xff, 0xff, 0xff, 0},
         spc_inquiry, scsi_exec_reply},
        {0x15, 0, 6, 0, {0x15, 0x11, 0, 0, 0xff, 0}, spc_mode_select, spc_exec_mode_select},
        {0x16, 0, 6, 0, {0x16, 0, 0, 0, 0, 0}, spc_reserve, NULL},
        {0x17, 0, 6, 0, {0x17, 0, 0, 0, 0, 0}, spc_release, NULL},
        {0x1a, 0, 6, 0, {0x1a, 0x08, 0xff, 0xff, 0xff, 0}, spc_mode_sense, scsi_exec_reply},
        {0x1b, 0, 6, 0, {0x1b, 0x01, 0, 0x0f, 0xf7, 0}, sbc_start_stop_unit, NULL},
        {0x1e, 0, 6, 0, {0x1e, 0, 0, 0, 0x03, 0}, sbc_prevent_allow, NULL},
        {0x25, 0, 10, SCSI_OP_MEDIUM, {0x25, 0, B4, 0, 0, 0x01, 0},
         sbc_read_capacity10, scsi_exec_reply},
        {0x28, 0, 10, SCSI_OP_MEDIUM, {0x28, 0x1e, B4, 0x1f, 0xff, 0xff, 0}, sbc_read, sbc_exec_rw},
        {0x2a, 0, 10, SCSI_OP_MEDIUM, {0x2a, 0x1a, B4, 0x1f, 0xff, 0xff, 0},
         sbc_write, sbc_exec_rw},
        {0x2e, 0, 10, SCSI_OP_MEDIUM, {0x2e, 0x12, B4, 0x1f, 0xff, 0xff, 0},
         sbc_write, sbc_exec_rw},
        {0x2f, 0, 10, SCSI_OP_MEDIUM, {0x2f, 0x12, B4, 0x1f, 0xff, 0xff, 0},
         sbc_verify, sbc_exec_verify},
        {0x34, 0, 10, SCSI_OP_MEDIUM, {0x34, 0x02, B4, 0x1f, 0xff, 0xff, 0}, sbc_prefetch, NULL},
        {0x35, 0, 10, SCSI_OP_MEDIUM, {0x35, 0x06, B4, 0x1f, 0xff, 0xff, 0},
         sbc_sync_cache, sbc_exec_sync_cache},
        {0x41, 0, 10, SCSI_OP_MEDIUM, {0x41, 0x08, B4, 0x1f, 0xff, 0xff, 0},
         sbc_write_same, sbc_exec_write_same},
        {0x42, 0, 10, SCSI_OP_THIN | SCSI_OP_MEDIUM, {0x42, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0},
         sbc_unmap, sbc_exec_unmap},
        {0x55, 0, 10, 0, {0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
         spc_mode_select, spc_exec_mode_select},
        {0x56, 0, 10, 0, {0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}, spc_reserve, NULL},
        {0x57, 0, 10, 0, {0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0}, spc_release, NULL},
        {0x5a, 0, 10, 0, {0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0},
         spc_mode_sense, scsi_exec_reply},
        {0x5e, 0x00, 10, SCSI_OP_HAS_SA, {0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
         spc_pr_in, scsi_exec_reply},
        {0x5e, 0x01, 10, SCSI_OP_HAS_SA, {0x5e, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
         spc_pr_in, scsi_exec_reply},
        {0x5e, 0x02, 10, SCSI_OP_HAS_SA, {0x5e, 0x02, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
         spc_pr_in, scsi_exec_reply},
        {0x5e, 0x03, 10, SCSI_OP_HAS_SA, {0x5e, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
         spc_pr_in, scsi_exec_reply},
        {0x5f, 0x00, 10, SCSI_OP_HAS_SA, {0x5f, 0x00, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x01, 10, SCSI_OP_HAS_SA, {0x5f, 0x01, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x02, 10, SCSI_OP_HAS_SA, {0x5f, 0x02, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x03, 10, SCSI_OP_HAS_SA, {0x5f, 0x03, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x04, 10, SCSI_OP_HAS_SA, {0x5f, 0x04, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x05, 10, SCSI_OP_HAS_SA, {0x5f, 0x05, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x5f, 0x06, 10, SCSI_OP_HAS_SA, {0x5f, 0x06, 0xff, 0, 0, B4, 0},
         spc_pr_out, spc_exec_pr_out},
        {0x88, 0, 16, SCSI_OP_MEDIUM, {0x88, 0x1e, B8, B4, 0x1f, 0}, sbc_read, sbc_exec_rw},
        {0x89, 0, 16, SCSI_OP_MEDIUM, {0x89, 0x1a, B8, 0, 0, 0, 0xff, 0x1f, 0},
         sbc_compare_and_write, sbc_exec_compare_and_write},
        {0x8a, 0, 16, SCSI_OP_MEDIUM, {0x8a, 0x1a, B8, B4, 0x1f, 0}, sbc_write, sbc_exec_rw},
        {0x8e, 0, 16, SCSI_OP_MEDIUM, {0x8e, 0x12, B8, B4, 0x1f, 0}, sbc_write, sbc_exec_rw},
        {0x8f, 0, 16, SCSI_OP_MEDIUM, {0x8f, 0x12, B8, B4, 0x1f, 0}, sbc_verify, sbc_exec_verify},
        {0x90, 0, 16, SCSI_OP_MEDIUM, {0x90, 0x02, B8, B4, 0x1f, 0}, sbc_prefetch, NULL},
        {0x91, 0, 16, SCSI_OP_MEDIUM, {0x91, 0x06, B8, B4, 0x1f, 0},
         sbc_sync_cache, sbc_exec_sync_cache},
        {0x93, 0, 16, SCSI_OP_MEDIUM, {0x93, 0x09, B8, B4, 0x1f, 0},
         sbc_write_same, sbc_exec_write_same},
        {0x9e, 0x10, 16, SCSI_OP_HAS_SA | SCSI_OP_MEDIUM, {0x9e, 0x10, B8, B4, 0x01, 0},
         sbc_read_capacity16, scsi_exec_reply},
        {0x9e, 0x12, 16, SCSI_OP_HAS_SA | SCSI_OP_MEDIUM, {0x9e, 0x12, B8, B4, 0, 0},
         sbc_get_lba_status, scsi_exec_reply},
        {0xa0, 0, 12, SCSI_OP_NO_LUN, {0xa0, 0, 0xff, 0, 0, 0, B4, 0, 0},
         spc_report_luns, scsi_exec_reply},
        {0xa3, 0x0c, 12, SCSI_OP_HAS_SA, {0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, B4, 0, 0},
         spc_report_opcodes, scsi_exec_reply},
        {0xa8, 0, 12, SCSI_OP_MEDIUM, {0xa8, 0x1e, B4, B4, 0x1f, 0}, sbc_read, sbc_exec_rw},
        {0xaa, 0, 12, SCSI_OP_MEDIUM, {0xaa, 0x1a, B4, B4, 0x1f, 0}, sbc_write, sbc_exec_rw},
        {0xae, 0, 12, SCSI_OP_MEDIUM, {0xae, 0x12, B4, B4, 0x1f, 0}, sbc_write, sbc_exec_rw},
        {0xaf, 0, 12, SCSI_OP_MEDIUM, {0xaf, 0x12, B4, B4, 0x1f, 0}, sbc_verify, sbc_exec_verify},
};
/* clang-format on */

const struct scsi_op *scsi_op_table(size_t *count)
{
        *count = sizeof(op_table) / sizeof(op_table[0]);
        return op_table;
}

const struct scsi_op *scsi_op_find(uint8_t opcode, uint8_t sa, bool *opcode_known)
{
        *opcode_known = false;
        for (size_t i = 0; i < sizeof(op_table) / sizeof(op_table[0]); i++) {
                const struct scsi_op *op = &op_table[i];
                if (op->opcode != opcode)
                        continue;
                *opcode_known = true;
                if (!(op->flags & SCSI_OP_HAS_SA) || op->sa == sa)
                        return op;
        }
        return NULL;
}

bool scsi_op_has_sa(uint8_t opcode)
{
        bool known;
        const struct scsi_op *op = scsi_op_find(opcode, 0xff, &known);
        return known && (!op || (op->flags & SCSI_OP_HAS_SA));
}

bool scsi_op_available(const struct scsi_op *op, const struct scsi_lun *lun)
{
        return !(op->flags & SCSI_OP_THIN) || (lun && lun->thin);
}

/* Sense data */

void scsi_set_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq)
{
        uint8_t *s = cmd->sense;
        memset(s, 0, SCSI_SENSE_MAX);
        s[0] = 0x70; /* current error, fixed format */
        s[2] = key & 0x0f;
        s[7] = 10; /* additional sense length */
        s[12] = (uint8_t)(asc_ascq >> 8);
        s[13] = (uint8_t)asc_ascq;
        cmd->sense_len = 18;
        cmd->status = SCSI_STATUS_CHECK_CONDITION;
}

void scsi_sense_set_info(struct scsi_cmd *cmd, uint32_t info)
{
        cmd->sense[0] |= 0x80; /* VALID */
        put_be32(&cmd->sense[3], info);
}

/* SENSE KEY SPECIFIC field pointer: which byte (and bit) of the CDB or parameter list. */
static void sense_set_field(struct scsi_cmd *cmd, bool in_cdb, unsigned byte, int bit)
{
        uint8_t *sks = &cmd->sense[15];
        sks[0] = 0x80 | (in_cdb ? 0x40 : 0); /* SKSV, C/D */
        if (bit >= 0)
                sks[0] |= 0x08 | (uint8_t)(bit & 7); /* BPV, bit pointer */
        put_be16(&sks[1], (uint16_t)byte);
}

enum scsi_cmd_state scsi_fail(struct scsi_cmd *cmd, uint8_t key, uint16_t asc)
{
        scsi_set_sense(cmd, key, asc);
        return SCSI_CMD_COMPLETE;
}

enum scsi_cmd_state scsi_fail_cdb(struct scsi_cmd *cmd, unsigned byte, int bit)
{
        scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        sense_set_field(cmd, true, byte, bit);
        return SCSI_CMD_COMPLETE;
}

enum scsi_cmd_state scsi_fail_param(struct scsi_cmd *cmd, unsigned byte, int bit)
{
        scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_PARAM);
        sense_set_field(cmd, false, byte, bit);
        return SCSI_CMD_COMPLETE;
}

enum scsi_cmd_state scsi_good(struct scsi_cmd *cmd)
{
        cmd->status = SCSI_STATUS_GOOD;
        cmd->sense_len = 0;
        return SCSI_CMD_COMPLETE;
}

void scsi_set_io_error(struct scsi_cmd *cmd, int err, bool writing)
{
        switch (err) {
        case -EIO:
                scsi_set_sense(cmd, SK_MEDIUM_ERROR,
                               writing ? ASC_WRITE_ERROR : ASC_UNRECOVERED_READ_ERROR);
                break;
        case -ENOSPC: /* thin backing store full */
                scsi_set_sense(cmd, SK_DATA_PROTECT, ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT);
                break;
        case -EAGAIN:
        case -EBUSY:
        case -ENOMEM: /* transient: the initiator retries */
                cmd->status = SCSI_STATUS_BUSY;
                cmd->sense_len = 0;
                break;
        default:
                scsi_set_sense(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
                break;
        }
}

void scsi_finish(struct scsi_cmd *cmd)
{
        cmd->state = SCSI_CMD_COMPLETE;
        cmd->done(cmd);
}

/* Emulated data-in */

enum scsi_cmd_state scsi_reply(struct scsi_cmd *cmd, uint8_t *buf, uint32_t len, uint32_t alloc_len)
{
        if (!buf)
                return scsi_fail(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
        cmd->buf = buf;
        cmd->data_in_len = min_u32(len, alloc_len);
        if (cmd->data_in_len == 0)
                return scsi_good(cmd); /* allocation length 0 is not an error */
        return SCSI_CMD_READY;
}

void scsi_exec_reply(struct scsi_cmd *cmd)
{
        cmd->data_in_actual =
            (uint32_t)scsi_iov_from_buf(cmd->iov, cmd->iovcnt, 0, cmd->buf, cmd->data_in_len);
        scsi_good(cmd);
        scsi_finish(cmd);
}

/* Life cycle */

void scsi_cmd_init(struct scsi_cmd *cmd)
{
        memset(cmd, 0, sizeof(*cmd));
        cmd->data_out_lun_offset = -1;
        cmd->data_in_lun_offset = -1;
        cmd->state = SCSI_CMD_NEW;
}

/* Bits set in the CDB that the command does not define. The control byte is checked only
 * for NACA (we do not support ACA); its vendor bits and obsolete LINK are ignored. */
static enum scsi_cmd_state check_cdb_bits(struct scsi_cmd *cmd, const struct scsi_op *op)
{
        for (unsigned i = 1; i < op->cdb_len; i++) {
                uint8_t allowed = op->usage[i];
                if (i == 1 && (op->flags & SCSI_OP_HAS_SA))
                        allowed |= 0x1f;
                if (i == op->cdb_len - 1u)
                        allowed = (uint8_t)~0x04;
                uint8_t bad = cmd->cdb[i] & (uint8_t)~allowed;
                if (bad) {
                        int bit = 7;
                        while (!(bad & (1u << bit)))
                                bit--;
                        return scsi_fail_cdb(cmd, i, bit);
                }
        }
        return SCSI_CMD_READY;
}

static enum scsi_cmd_state decode(struct scsi_cmd *cmd)
{
        uint8_t opcode = cmd->cdb[0];
        bool known;
        const struct scsi_op *op = scsi_op_find(opcode, cmd->cdb[1] & 0x1f, &known);
        if (!cmd->lun && !(op && (op->flags & SCSI_OP_NO_LUN)))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        if (!known || (op && !scsi_op_available(op, cmd->lun)))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_OPCODE);
        if (!op) /* a service action we do not implement */
                return scsi_fail_cdb(cmd, 1, 4);
        cmd->op = op;
        if (check_cdb_bits(cmd, op) == SCSI_CMD_COMPLETE)
                return SCSI_CMD_COMPLETE;
        if (cmd->lun && !scsi_pr_check(cmd))
                return SCSI_CMD_COMPLETE;
        if (cmd->lun && !scsi_medium_check(cmd))
                return SCSI_CMD_COMPLETE;
        if (cmd->lun && (op->flags & SCSI_OP_MEDIUM)) {
                int access = atomic_load_explicit(&cmd->lun->access, memory_order_relaxed);
                if (access == SCSI_LU_STANDBY)
                        return scsi_fail(cmd, SK_NOT_READY, ASC_LU_NOT_ACCESSIBLE_STANDBY);
                if (access == SCSI_LU_BECOMING_READY)
                        return scsi_fail(cmd, SK_NOT_READY, ASC_LU_BECOMING_READY);
        }
        return op->prepare(cmd);
}

enum scsi_cmd_state scsi_cmd_prepare(struct scsi_cmd *cmd)
{
        if (cmd->state != SCSI_CMD_NEW) {
                log_err("scsi: prepare called twice (opcode 0x%02x)", cmd->cdb[0]);
                return cmd->state;
        }
        cmd->status = SCSI_STATUS_GOOD;
        cmd->state = decode(cmd);
        return cmd->state;
}

void scsi_cmd_execute(struct scsi_cmd *cmd)
{
        if (cmd->state != SCSI_CMD_READY && cmd->state != SCSI_CMD_NEEDS_DATA) {
                log_err("scsi: execute in state %d (opcode 0x%02x)", cmd->state, cmd->cdb[0]);
                if (cmd->state == SCSI_CMD_NEW)
                        scsi_set_sense(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
                scsi_finish(cmd);
                return;
        }
        cmd->op->execute(cmd);
}

void scsi_cmd_release(struct scsi_cmd *cmd)
{
        free(cmd->buf);
        cmd->buf = NULL;
        free(cmd->io_iov);
        cmd->io_iov = NULL;
}

/* Volume I/O step loop */

static void run_steps(struct scsi_cmd *cmd, int result)
{
        for (;;) {
                if (!cmd->step(cmd, result))
                        return; /* finished or parked: cmd may be gone */
                cmd->io_done_inline = false;
                cmd->in_submit = true;
                volume_submit(cmd->lun->volume, &cmd->io);
                cmd->in_submit = false;
                if (!cmd->io_done_inline)
                        return; /* completes later on this reactor */
                result = cmd->io_result;
        }
}

static void io_done(struct volume_io *io, int result)
{
        struct scsi_cmd *cmd = io->priv;
        if (cmd->in_submit) { /* completed inside volume_submit(): let the loop go on */
                cmd->io_done_inline = true;
                cmd->io_result = result;
                return;
        }
        run_steps(cmd, result);
}

void scsi_io_run(struct scsi_cmd *cmd, bool (*step)(struct scsi_cmd *cmd, int result))
{
        cmd->step = step;
        cmd->phase = 0;
        run_steps(cmd, 0);
}

void scsi_io_prep(struct scsi_cmd *cmd, enum volume_op op, uint64_t offset, uint64_t length,
                  struct iovec *iov, int iovcnt, bool fua)
{
        struct volume_io *io = &cmd->io;
        memset(io, 0, sizeof(*io));
        io->op = op;
        io->offset = offset;
        io->length = length;
        io->iov = iov;
        io->iovcnt = iovcnt;
        io->fua = fua;
        io->reactor = cmd->reactor;
        io->done = io_done;
        io->priv = cmd;
}

bool scsi_io_use_iov(struct scsi_cmd *cmd, size_t off, size_t len)
{
        if (off == 0 && scsi_iov_total(cmd->iov, cmd->iovcnt) == len) {
                cmd->io.iov = cmd->iov; /* the common case: exactly the caller's buffers */
                cmd->io.iovcnt = cmd->iovcnt;
                return true;
        }
        if (!cmd->io_iov) {
                cmd->io_iov =
                    calloc((size_t)(cmd->iovcnt > 0 ? cmd->iovcnt : 1), sizeof(*cmd->io_iov));
                if (!cmd->io_iov)
                        return false;
        }
        int n = scsi_iov_slice(cmd->iov, cmd->iovcnt, off, len, cmd->io_iov);
        if (n < 0)
                return false;
        cmd->io.iov = cmd->io_iov;
        cmd->io.iovcnt = n;
        return true;
}

/* COMPARE AND WRITE queue. The spinlock only guards a few pointer updates. */

static void caw_spin_lock(struct scsi_lun *lun)
{
        scsi_spin_lock(&lun->caw.lock);
}

static void caw_spin_unlock(struct scsi_lun *lun)
{
        scsi_spin_unlock(&lun->caw.lock);
}

/* Runs on the waiter's own reactor once it owns the LU. */
static void caw_resume(void *arg)
{
        struct scsi_cmd *cmd = arg;
        scsi_io_run(cmd, cmd->step);
}

bool scsi_caw_lock(struct scsi_cmd *cmd, bool (*step)(struct scsi_cmd *cmd, int result))
{
        struct scsi_lun *lun = cmd->lun;
        bool owned = false;
        caw_spin_lock(lun);
        if (!lun->caw.busy) {
                lun->caw.busy = true;
                owned = true;
        } else {
                cmd->step = step;
                cmd->caw_next = NULL;
                if (lun->caw.tail)
                        lun->caw.tail->caw_next = cmd;
                else
                        lun->caw.head = cmd;
                lun->caw.tail = cmd;
        }
        caw_spin_unlock(lun);
        return owned;
}

void scsi_caw_unlock(struct scsi_lun *lun)
{
        caw_spin_lock(lun);
        struct scsi_cmd *next = lun->caw.head;
        if (next) { /* ownership passes straight to the next waiter */
                lun->caw.head = next->caw_next;
                if (!lun->caw.head)
                        lun->caw.tail = NULL;
        } else {
                lun->caw.busy = false;
        }
        caw_spin_unlock(lun);
        if (!next)
                return;
        if (!next->reactor) {
                caw_resume(next);
                return;
        }
        if (reactor_call(next->reactor, caw_resume, next) != 0) {
                /* Out of memory for the message: running it here is the lesser evil */
                log_err("scsi: cannot hand COMPARE AND WRITE to its reactor; running inline");
                caw_resume(next);
        }
}

/* I_T nexus identity and the LU events of the transport */

void scsi_nexus_of(const struct scsi_cmd *cmd, struct scsi_nexus_id *id)
{
        memset(id, 0, sizeof(*id));
        if (cmd->initiator)
                snprintf(id->initiator, sizeof(id->initiator), "%s", cmd->initiator);
        if (cmd->isid)
                memcpy(id->isid, cmd->isid, sizeof(id->isid));
}

bool scsi_nexus_eq(const struct scsi_nexus_id *a, const struct scsi_nexus_id *b)
{
        return memcmp(a->isid, b->isid, sizeof(a->isid)) == 0 &&
               strcmp(a->initiator, b->initiator) == 0;
}

void scsi_lun_reset(struct scsi_lun *lun)
{
        scsi_pr_reset(lun);
        scsi_medium_reset(lun);
}

void scsi_lun_nexus_lost(struct scsi_lun *lun, const char *initiator, const uint8_t isid[6])
{
        struct scsi_cmd tmp = {.initiator = initiator, .isid = isid};
        struct scsi_nexus_id id;
        scsi_nexus_of(&tmp, &id);
        scsi_pr_nexus_lost(lun, &id);
        scsi_medium_nexus_lost(lun, &id);
}

/* LU identity and LUN encoding */

void scsi_lun_init_identity(struct scsi_lun *lun, const char *target_name, uint64_t lun_number)
{
        char key[300];
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        int n = snprintf(key, sizeof(key), "isergw:%s:%" PRIu64, target_name, lun_number);
        if (n < 0 || !EVP_Digest(key, strlen(key), md, &md_len, EVP_sha256(), NULL) || md_len < 16)
                memset(md, 0, sizeof(md));

        lun->lun = lun_number;
        snprintf(lun->vendor, sizeof(lun->vendor), "%-8s", "ISERGW");
        snprintf(lun->product, sizeof(lun->product), "%-16s", "VIRTUAL-DISK");
        snprintf(lun->revision, sizeof(lun->revision), "%-4s", "0001");
        snprintf(lun->target_name, sizeof(lun->target_name), "%s", target_name);
        for (int i = 0; i < 16; i++)
                snprintf(&lun->serial[2 * i], 3, "%02x", md[i]);
        /* NAA 6 (IEEE Registered Extended). We have no IEEE company id of our own, so the
         * OUI is zero and the 100 vendor-specific bits come from the hash. */
        memcpy(lun->naa_id, md + 16, 16);
        lun->naa_id[0] = 0x60;
        lun->naa_id[1] = 0x00;
        lun->naa_id[2] = 0x00;
        lun->naa_id[3] &= 0x0f;
}

void scsi_lun_encode(uint64_t lun, uint8_t out[8])
{
        memset(out, 0, 8);
        if (lun < 256) {
                out[1] = (uint8_t)lun; /* peripheral device addressing, bus 0 */
        } else {
                out[0] = (uint8_t)(0x40 | ((lun >> 8) & 0x3f)); /* flat space addressing */
                out[1] = (uint8_t)lun;
        }
}

uint64_t scsi_lun_decode(const uint8_t in[8])
{
        for (int i = 2; i < 8; i++)
                if (in[i])
                        return UINT64_MAX; /* multi-level LUNs */
        switch (in[0] >> 6) {
        case 0: /* peripheral: only bus 0 */
                return (in[0] & 0x3f) ? UINT64_MAX : in[1];
        case 1: /* flat */
                return (uint64_t)(in[0] & 0x3f) << 8 | in[1];
        default:
                return UINT64_MAX;
        }
}

/* iovec helpers */

size_t scsi_iov_total(const struct iovec *iov, int iovcnt)
{
        size_t total = 0;
        for (int i = 0; i < iovcnt; i++)
                total += iov[i].iov_len;
        return total;
}

/* Finds the entry holding byte 'off'; *skip is the offset inside it. */
static int iov_seek(const struct iovec *iov, int iovcnt, size_t off, size_t *skip)
{
        int i = 0;
        while (i < iovcnt && off >= iov[i].iov_len) {
                off -= iov[i].iov_len;
                i++;
        }
        *skip = off;
        return i;
}

size_t scsi_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off, void *buf, size_t len)
{
        size_t skip, done = 0;
        for (int i = iov_seek(iov, iovcnt, off, &skip); i < iovcnt && done < len; i++) {
                size_t n = min_u64(iov[i].iov_len - skip, len - done);
                memcpy((uint8_t *)buf + done, (const uint8_t *)iov[i].iov_base + skip, n);
                done += n;
                skip = 0;
        }
        return done;
}

size_t scsi_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off, const void *buf,
                         size_t len)
{
        size_t skip, done = 0;
        for (int i = iov_seek(iov, iovcnt, off, &skip); i < iovcnt && done < len; i++) {
                size_t n = min_u64(iov[i].iov_len - skip, len - done);
                memcpy((uint8_t *)iov[i].iov_base + skip, (const uint8_t *)buf + done, n);
                done += n;
                skip = 0;
        }
        return done;
}

static size_t first_difference(const uint8_t *a, const uint8_t *b, size_t len)
{
        size_t i = 0;
        while (i < len && a[i] == b[i])
                i++;
        return i;
}

bool scsi_iov_equal(const struct iovec *iov, int iovcnt, size_t off, const void *buf, size_t len,
                    size_t *mismatch)
{
        size_t skip, done = 0;
        for (int i = iov_seek(iov, iovcnt, off, &skip); i < iovcnt && done < len; i++) {
                size_t n = min_u64(iov[i].iov_len - skip, len - done);
                const uint8_t *a = (const uint8_t *)iov[i].iov_base + skip;
                const uint8_t *b = (const uint8_t *)buf + done;
                if (memcmp(a, b, n) != 0) {
                        *mismatch = done + first_difference(a, b, n);
                        return false;
                }
                done += n;
                skip = 0;
        }
        *mismatch = done;
        return done == len;
}

int scsi_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len, struct iovec *out)
{
        size_t skip, done = 0;
        int n = 0;
        for (int i = iov_seek(iov, iovcnt, off, &skip); i < iovcnt && done < len; i++) {
                size_t take = min_u64(iov[i].iov_len - skip, len - done);
                if (take == 0)
                        continue;
                out[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
                out[n].iov_len = take;
                n++;
                done += take;
                skip = 0;
        }
        return done == len ? n : -1;
}

bool scsi_is_zero(const void *buf, size_t len)
{
        const uint8_t *p = buf;
        return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}
