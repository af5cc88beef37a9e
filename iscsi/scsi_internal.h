/* scsi_internal: what the scsi*.c files share and nobody else sees: the command table,
 * limits we advertise, sense and completion helpers, the volume I/O step loop, big-endian
 * field access and iovec copy helpers. */
#ifndef ISERGW_ISCSI_SCSI_INTERNAL_H
#define ISERGW_ISCSI_SCSI_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cache/volume.h"
#include "iscsi/scsi.h"

/* Limits reported in the Block Limits VPD page and enforced by the commands. */
#define SCSI_MAX_CAW_BLOCKS        255u      /* MAXIMUM COMPARE AND WRITE LENGTH */
#define SCSI_MAX_WS_BLOCKS         0xffffu   /* MAXIMUM WRITE SAME LENGTH */
#define SCSI_MAX_UNMAP_BLOCKS      0x100000u /* MAXIMUM UNMAP LBA COUNT */
#define SCSI_MAX_UNMAP_DESCRIPTORS 256u      /* MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT */
/* Bounds of one volume I/O issued on behalf of WRITE SAME, UNMAP and VERIFY. */
#define SCSI_ZERO_CHUNK_BYTES   (64u << 20) /* WRITE ZEROES / UNMAP */
#define SCSI_BOUNCE_CHUNK_BYTES (1u << 20)  /* pattern writes and verify reads */

/* Decoded CDB bits kept in cmd->flags. */
enum {
        SCSI_F_FUA = 1u << 0,
        SCSI_F_BYTCHK = 1u << 1,
        SCSI_F_UNMAP = 1u << 2,
        SCSI_F_NDOB = 1u << 3,
        SCSI_F_WRITE = 1u << 4,
};

/* One supported command (opcode + service action). */
enum {
        SCSI_OP_HAS_SA = 1u << 0, /* opcode with service actions: sa identifies the command */
        SCSI_OP_NO_LUN = 1u << 1, /* also valid for a LUN that does not exist */
        SCSI_OP_THIN = 1u << 2,   /* only on thin-provisioned LUs */
        SCSI_OP_MEDIUM = 1u << 3, /* needs the medium: NOT READY while it is ejected */
};
struct scsi_op {
        uint8_t opcode;
        uint8_t sa;
        uint8_t cdb_len;
        uint8_t flags;
        /* CDB USAGE DATA of REPORT SUPPORTED OPERATION CODES; also the reserved-bit check:
         * a CDB bit outside it is an invalid field. The control byte is special-cased. */
        uint8_t usage[16];
        enum scsi_cmd_state (*prepare)(struct scsi_cmd *cmd);
        void (*execute)(struct scsi_cmd *cmd);
};

const struct scsi_op *scsi_op_table(size_t *count);
/* The command for opcode/sa; *opcode_known tells an unknown opcode from an unknown SA. */
const struct scsi_op *scsi_op_find(uint8_t opcode, uint8_t sa, bool *opcode_known);
bool scsi_op_has_sa(uint8_t opcode);
/* Whether lun offers op (thin-only commands). */
bool scsi_op_available(const struct scsi_op *op, const struct scsi_lun *lun);

/* Failing and finishing. The scsi_fail* helpers set CHECK CONDITION and return
 * SCSI_CMD_COMPLETE so prepare handlers can "return scsi_fail(...)". */
enum scsi_cmd_state scsi_fail(struct scsi_cmd *cmd, uint8_t key, uint16_t asc);
/* INVALID FIELD IN CDB pointing at CDB byte 'byte', bit 'bit' (bit < 0: whole byte). */
enum scsi_cmd_state scsi_fail_cdb(struct scsi_cmd *cmd, unsigned byte, int bit);
/* INVALID FIELD IN PARAMETER LIST pointing at parameter byte 'byte'. */
enum scsi_cmd_state scsi_fail_param(struct scsi_cmd *cmd, unsigned byte, int bit);
enum scsi_cmd_state scsi_good(struct scsi_cmd *cmd);
/* Sets the INFORMATION field (and VALID) of the sense data already in cmd. */
void scsi_sense_set_info(struct scsi_cmd *cmd, uint32_t info);
/* The command is over (status set): state COMPLETE, then done(). */
void scsi_finish(struct scsi_cmd *cmd);

/* Data-in emulation: prepare builds the whole response in a malloc'd buffer and hands it
 * over; execute then copies it out. Takes ownership of buf (NULL: out of memory). */
enum scsi_cmd_state scsi_reply(struct scsi_cmd *cmd, uint8_t *buf, uint32_t len,
                               uint32_t alloc_len);
void scsi_exec_reply(struct scsi_cmd *cmd);

/* Volume I/O loop. step() is called with the previous I/O's result (0 on the first call);
 * it either sets up cmd->io and returns true to submit it, or finishes (or parks) the
 * command and returns false. Inline completions loop instead of recursing. */
void scsi_io_run(struct scsi_cmd *cmd, bool (*step)(struct scsi_cmd *cmd, int result));
void scsi_io_prep(struct scsi_cmd *cmd, enum volume_op op, uint64_t offset, uint64_t length,
                  struct iovec *iov, int iovcnt, bool fua);
/* Points cmd->io at the caller's iov restricted to [off, off + len); false if too short. */
bool scsi_io_use_iov(struct scsi_cmd *cmd, size_t off, size_t len);

/* COMPARE AND WRITE serialisation per LU. lock returns true when cmd owns the LU now;
 * otherwise cmd is queued and scsi_io_run(cmd, step) runs on its reactor once it does.
 * unlock hands the LU to the next waiter; call it before finishing the owner. */
bool scsi_caw_lock(struct scsi_cmd *cmd, bool (*step)(struct scsi_cmd *cmd, int result));
void scsi_caw_unlock(struct scsi_lun *lun);

/* Prepare handlers (scsi_spc.c) */
enum scsi_cmd_state spc_test_unit_ready(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_request_sense(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_inquiry(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_mode_sense(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_mode_select(struct scsi_cmd *cmd);
void spc_exec_mode_select(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_report_luns(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_report_opcodes(struct scsi_cmd *cmd);

/* The I_T nexus a command comes from, and nexus comparison (scsi.c). */
void scsi_nexus_of(const struct scsi_cmd *cmd, struct scsi_nexus_id *id);
bool scsi_nexus_eq(const struct scsi_nexus_id *a, const struct scsi_nexus_id *b);

/* Reservations (scsi_pr.c). scsi_pr_check: true when cmd (decoded to op) may run; else it
 * has completed with RESERVATION CONFLICT. reset and nexus_lost: the LU events of
 * scsi_lun_reset() and scsi_lun_nexus_lost(). */
bool scsi_pr_check(struct scsi_cmd *cmd);
void scsi_pr_reset(struct scsi_lun *lun);
void scsi_pr_nexus_lost(struct scsi_lun *lun, const struct scsi_nexus_id *id);
enum scsi_cmd_state spc_reserve(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_release(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_pr_in(struct scsi_cmd *cmd);
enum scsi_cmd_state spc_pr_out(struct scsi_cmd *cmd);
void spc_exec_pr_out(struct scsi_cmd *cmd);

/* Removable medium (scsi_medium.c). scsi_medium_check: true when cmd (decoded to op) may
 * run; else the medium is ejected and it has completed with NOT READY. */
bool scsi_medium_check(struct scsi_cmd *cmd);
bool scsi_medium_ejected(const struct scsi_lun *lun);
void scsi_medium_reset(struct scsi_lun *lun);
void scsi_medium_nexus_lost(struct scsi_lun *lun, const struct scsi_nexus_id *id);
enum scsi_cmd_state sbc_start_stop_unit(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_prevent_allow(struct scsi_cmd *cmd);

/* Prepare and execute handlers (scsi_sbc.c) */
enum scsi_cmd_state sbc_read_capacity10(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_read_capacity16(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_get_lba_status(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_read(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_write(struct scsi_cmd *cmd);
void sbc_exec_rw(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_verify(struct scsi_cmd *cmd);
void sbc_exec_verify(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_sync_cache(struct scsi_cmd *cmd);
void sbc_exec_sync_cache(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_prefetch(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_write_same(struct scsi_cmd *cmd);
void sbc_exec_write_same(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_unmap(struct scsi_cmd *cmd);
void sbc_exec_unmap(struct scsi_cmd *cmd);
enum scsi_cmd_state sbc_compare_and_write(struct scsi_cmd *cmd);
void sbc_exec_compare_and_write(struct scsi_cmd *cmd);

/* iovec helpers: byte ranges of a chunked buffer. Copies stop at the end of the vector and
 * return the number of bytes copied. */
size_t scsi_iov_total(const struct iovec *iov, int iovcnt);
size_t scsi_iov_to_buf(const struct iovec *iov, int iovcnt, size_t off, void *buf, size_t len);
size_t scsi_iov_from_buf(const struct iovec *iov, int iovcnt, size_t off, const void *buf,
                         size_t len);
/* Compares iov[off, off + len) with buf; false with *mismatch = offset (relative to off) of
 * the first differing byte, or of the end of the vector if it is short. */
bool scsi_iov_equal(const struct iovec *iov, int iovcnt, size_t off, const void *buf, size_t len,
                    size_t *mismatch);
/* Describes iov[off, off + len) in out (room for iovcnt entries); returns the entry count,
 * or -1 if the vector is shorter than off + len. */
int scsi_iov_slice(const struct iovec *iov, int iovcnt, size_t off, size_t len, struct iovec *out);
bool scsi_is_zero(const void *buf, size_t len);

/* Big-endian fields */
static inline uint16_t get_be16(const uint8_t *p)
{
        return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t get_be24(const uint8_t *p)
{
        return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}
static inline uint32_t get_be32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_be64(const uint8_t *p)
{
        return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}
static inline void put_be16(uint8_t *p, uint16_t v)
{
        p[0] = (uint8_t)(v >> 8);
        p[1] = (uint8_t)v;
}
static inline void put_be32(uint8_t *p, uint32_t v)
{
        put_be16(p, (uint16_t)(v >> 16));
        put_be16(p + 2, (uint16_t)v);
}
static inline void put_be64(uint8_t *p, uint64_t v)
{
        put_be32(p, (uint32_t)(v >> 32));
        put_be32(p + 4, (uint32_t)v);
}

/* MAXIMUM COMPARE AND WRITE LENGTH: the command moves twice its blocks, so keep that
 * within the transfer limit. */
static inline uint32_t scsi_caw_max_blocks(const struct scsi_lun *lun)
{
        uint32_t half = lun->max_xfer_blocks / 2;
        if (lun->max_xfer_blocks && half < SCSI_MAX_CAW_BLOCKS)
                return half ? half : 1;
        return SCSI_MAX_CAW_BLOCKS;
}

/* Logical blocks per physical block (1 when physical_block_size is unset or no larger). */
static inline uint32_t scsi_lbppb(const struct scsi_lun *lun)
{
        uint32_t pbs = lun->physical_block_size;
        return pbs > lun->block_size ? pbs / lun->block_size : 1;
}

/* READ CAPACITY(16) LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: log2 of scsi_lbppb(). */
static inline uint8_t scsi_lbppbe(const struct scsi_lun *lun)
{
        return (uint8_t)__builtin_ctz(scsi_lbppb(lun));
}

/* Writes are refused: a read-only LU (WRITE PROTECTED), or SWP set by MODE SELECT (LOGICAL
 * UNIT SOFTWARE WRITE PROTECTED). Returns COMPLETE with the sense set, or READY. */
static inline enum scsi_cmd_state scsi_check_write_protect(struct scsi_cmd *cmd)
{
        if (cmd->lun->read_only)
                return scsi_fail(cmd, SK_DATA_PROTECT, ASC_WRITE_PROTECTED);
        if (atomic_load_explicit(&cmd->lun->swp, memory_order_relaxed))
                return scsi_fail(cmd, SK_DATA_PROTECT, ASC_SOFTWARE_WRITE_PROTECTED);
        return SCSI_CMD_READY;
}

/* The LU's spinlocks (reservations, COMPARE AND WRITE queue, medium): each guards a few
 * field updates and is never held across anything that may block. */
static inline void scsi_spin_lock(atomic_int *lock)
{
        while (atomic_exchange_explicit(lock, 1, memory_order_acquire))
                while (atomic_load_explicit(lock, memory_order_relaxed))
                        ;
}
static inline void scsi_spin_unlock(atomic_int *lock)
{
        atomic_store_explicit(lock, 0, memory_order_release);
}

static inline uint32_t min_u32(uint32_t a, uint32_t b)
{
        return a < b ? a : b;
}
static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
        return a < b ? a : b;
}

#endif
