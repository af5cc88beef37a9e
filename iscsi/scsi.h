/* scsi: SPC-4 / SBC-3 command emulation for a block logical unit. Owns CDB decoding, sense
 * data, INQUIRY/VPD/mode pages, and turning media commands into volume I/O. Knows nothing of
 * iSCSI PDUs, sessions or transports: it sees a CDB, a data buffer and a completion.
 *
 * Life of a command:
 *   scsi_cmd_init()      zeroes the command; the caller then fills cdb, edtl, direction
 *                        flags, lun, lun_number, lun list, reactor, done
 *   scsi_cmd_prepare()   decodes the CDB; either completes at once (error or no data) or says
 *                        how much data the target wants from the initiator (data_out_len,
 *                        and where on the LUN it lands: data_out_lun_offset) and how much it
 *                        may return (data_in_len)
 *   (caller receives min(edtl, data_out_len) bytes of data-out into iov, or provides room
 *    for data_in_len bytes of data-in there)
 *   scsi_cmd_execute()   runs it; done() is called exactly once, on cmd->reactor's thread.
 *                        done() may run before scsi_cmd_execute() returns (no I/O needed,
 *                        or the volume completed inline).
 *   scsi_cmd_release()   frees what prepare/execute allocated.
 *
 * Transfer lengths vs EDTL (the caller reports the iSCSI residuals):
 *   - data_out_len / data_in_len are what the CDB implies; they stay set on COMPLETE too so
 *     residuals can be computed for error responses. data_in_len may be less than the
 *     allocation length when the response is shorter.
 *   - data-out: if edtl < data_out_len, only edtl bytes arrive. Media writes and verifies
 *     then act on the whole blocks received (a partial block fails at prepare with INVALID
 *     FIELD IN INFORMATION UNIT); COMPARE AND WRITE and WRITE SAME demand edtl ==
 *     data_out_len (else INVALID FIELD IN CDB); parameter lists (MODE SELECT, UNMAP) are
 *     parsed from the bytes received.
 *   - data-in: execute always produces data_in_actual bytes (<= data_in_len) into iov; the
 *     caller sends min(edtl, data_in_actual).
 *
 * Threads: a command runs on one reactor. LUs are shared between reactors; the shared
 * mutable state is the LU's COMPARE AND WRITE queue (a spinlock; waiters are resumed on
 * their own reactor with reactor_call()), its reservations (a spinlock), SWP (atomic) and
 * its removable medium (a spinlock; whether it is ejected is atomic).
 *
 * Reservations: SPC-2 RESERVE/RELEASE and SPC-4 PERSISTENT RESERVE IN/OUT, keyed by the
 * I_T nexus the caller names in cmd->initiator / cmd->isid. A command the reservations
 * forbid completes at prepare with status RESERVATION CONFLICT, media commands included.
 *
 * Removable medium (a LU with 'removable' set): START STOP UNIT with LOEJ ejects and loads
 * it, PREVENT ALLOW MEDIUM REMOVAL holds it in per I_T nexus, and while it is ejected the
 * commands that need it complete at prepare with NOT READY, MEDIUM NOT PRESENT. Ejecting
 * only hides the volume; its data and cache are untouched.
 */
#ifndef ISERGW_ISCSI_SCSI_H
#define ISERGW_ISCSI_SCSI_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "cache/volume.h"

struct reactor;
struct scsi_op;

#define SCSI_SENSE_MAX 32

/* SAM status codes */
enum {
        SCSI_STATUS_GOOD = 0x00,
        SCSI_STATUS_CHECK_CONDITION = 0x02,
        SCSI_STATUS_CONDITION_MET = 0x04,
        SCSI_STATUS_BUSY = 0x08,
        SCSI_STATUS_RESERVATION_CONFLICT = 0x18,
        SCSI_STATUS_TASK_SET_FULL = 0x28,
        SCSI_STATUS_TASK_ABORTED = 0x40,
};

/* An I_T nexus as reservations and medium removal prevention know it: initiator port name
 * and ISID. */
#define SCSI_PR_MAX_REGS        32
#define SCSI_MEDIUM_MAX_PREVENT 32 /* I_T nexuses preventing medium removal at once */
struct scsi_nexus_id {
        char initiator[224];
        uint8_t isid[6];
};
struct scsi_pr_reg {
        bool used;
        uint64_t key;
        struct scsi_nexus_id id;
};

/* One logical unit as the SCSI layer describes it. Built by the config/target code, which
 * must zero-initialise it (the private part needs no other set-up). Everything but the
 * private part is read-only once commands run. */
/* Whether a LUN's commands that need the medium run (struct scsi_lun .access). The other
 * commands (INQUIRY, REPORT LUNS...) always do. */
enum scsi_lu_access {
        SCSI_LU_READY = 0,
        /* A mirror primary starting, until it knows whether its peer was promoted meanwhile
         * (docs/replication.md, "Start-up"): NOT READY, LOGICAL UNIT IS IN PROCESS OF BECOMING
         * READY, which initiators retry on the same path. Lasts about a second, at most
         * mirror_startup_wait_ms. */
        SCSI_LU_BECOMING_READY,
        /* A mirror secondary, or a primary that must not serve: NOT READY, LOGICAL UNIT NOT
         * ACCESSIBLE, TARGET PORT IN STANDBY STATE (a multipath initiator fails the path and
         * uses another at once). */
        SCSI_LU_STANDBY,
};

struct scsi_lun {
        uint64_t lun;        /* LUN number */
        uint32_t block_size; /* 512 or 4096 */
        /* 512 or 4096, a power-of-two multiple of block_size (0: block_size). Reported as
         * READ CAPACITY(16) LBPPBE and as the optimal transfer and unmap granularities of
         * the Block Limits VPD page; no command requires alignment to it. */
        uint32_t physical_block_size;
        uint64_t num_blocks;
        struct volume *volume;
        char vendor[9];        /* "ISERGW  " */
        char product[17];      /* e.g. "VIRTUAL-DISK" */
        char revision[5];      /* e.g. "0001" */
        char serial[33];       /* VPD 0x80 */
        uint8_t naa_id[16];    /* NAA type 6 designator for VPD 0x83 */
        char target_name[224]; /* for the SCSI name string designator */
        bool write_cache;      /* WCE in the caching mode page */
        bool read_only;
        bool thin;                /* UNMAP and WRITE SAME with UNMAP supported; reads of unmapped
                                     blocks must return zeroes (LBPRZ is reported) */
        bool removable;           /* RMB: the medium can be ejected and loaded */
        uint32_t max_xfer_blocks; /* Block Limits VPD MAXIMUM TRANSFER LENGTH; 0: no limit */

        /* Whether commands that need the medium run (enum scsi_lu_access; mirroring, repl/).
         * Any thread may set it. */
        atomic_int access;

        /* Private to the SCSI layer. SWP of the control mode page (software write protect,
         * set by MODE SELECT; not saved). */
        atomic_bool swp;
        /* SPC-2 RESERVE/RELEASE and SPC-4 persistent reservations (not persistent across
         * restarts: APTPL is refused). Guarded by lock; 'active' says whether any
         * reservation or registration exists, so commands skip the lock when none does. */
        struct {
                atomic_int lock;
                atomic_bool active;
                bool spc2_held; /* SPC-2 reservation by spc2_holder */
                struct scsi_nexus_id spc2_holder;
                uint32_t generation;
                bool held;    /* persistent reservation: type, holder */
                uint8_t type; /* 1 WE, 3 EA, 5 WERO, 6 EARO, 7 WEAR, 8 EAAR */
                int holder;   /* index in regs (not for all-registrants types) */
                struct scsi_pr_reg regs[SCSI_PR_MAX_REGS];
        } pr;
        /* Removable medium: whether it is ejected, and the I_T nexuses that prevent its
         * removal (PREVENT ALLOW MEDIUM REMOVAL). Guarded by lock; 'ejected' is also read
         * without it by every command that needs the medium. */
        struct {
                atomic_int lock;
                atomic_bool ejected;
                unsigned nprevent; /* used entries at the start of prevent[] */
                struct scsi_nexus_id prevent[SCSI_MEDIUM_MAX_PREVENT];
        } medium;
        /* Serialises COMPARE AND WRITE on this LU. */
        struct {
                atomic_int lock;              /* spinlock over the fields below */
                bool busy;                    /* a COMPARE AND WRITE owns the LU */
                struct scsi_cmd *head, *tail; /* waiting COMPARE AND WRITEs, in arrival order */
        } caw;
};

/* The LUN numbers of the I_T nexus's target, for REPORT LUNS. */
struct scsi_lun_list {
        const uint64_t *luns;
        unsigned count;
};

enum scsi_cmd_state { SCSI_CMD_NEW, SCSI_CMD_COMPLETE, SCSI_CMD_NEEDS_DATA, SCSI_CMD_READY };

struct scsi_cmd {
        /* Filled by the caller before prepare */
        struct scsi_lun *lun; /* NULL when the addressed LUN does not exist */
        uint64_t lun_number;  /* as addressed, even if it does not exist */
        struct scsi_lun_list lun_list;
        uint8_t cdb[16];
        uint32_t edtl;            /* Expected Data Transfer Length from the initiator */
        bool read_flag;           /* initiator expects data in */
        bool write_flag;          /* initiator sends data out */
        uint16_t rel_tgt_port_id; /* relative target port for VPD 0x83 (0: report 1) */
        uint16_t tgt_port_group;  /* target port group for VPD 0x83 (0: report 1) */
        /* The I_T nexus, for reservations: initiator name and ISID (6 bytes); both must
         * outlive the command. NULL: an anonymous nexus (tests). */
        const char *initiator;
        const uint8_t *isid;
        struct reactor *reactor; /* NULL only in tests: everything then runs inline */
        void (*done)(struct scsi_cmd *cmd);
        void *priv; /* the caller's */

        /* Set by prepare */
        uint32_t data_out_len;       /* bytes wanted from the initiator (0: none) */
        int64_t data_out_lun_offset; /* LUN byte offset of data-out byte 0, or -1 if not mapped */
        uint32_t data_in_len;        /* bytes the command may return (<= what the CDB allows) */
        int64_t data_in_lun_offset;  /* LUN byte offset of data-in byte 0, or -1 */
        /* Plain READ/WRITE/WRITE AND VERIFY: the data maps 1:1 onto the LUN at the offsets
         * above, so the caller may move it with its own volume I/O (then calling
         * scsi_set_io_error() on failure) instead of scsi_cmd_execute(). */
        bool media;
        bool fua; /* media writes must reach stable storage (FUA bit, WRITE AND VERIFY) */

        /* Buffers, provided by the caller before execute: data-out received, or room for
         * data-in of data_in_len bytes. Any number of chunks of any size. */
        struct iovec *iov;
        int iovcnt;

        /* Result */
        uint32_t data_in_actual; /* bytes of data-in produced */
        uint8_t status;
        uint8_t sense[SCSI_SENSE_MAX];
        uint8_t sense_len;

        /* Private to the SCSI layer */
        enum scsi_cmd_state state;
        const struct scsi_op *op;
        struct volume_io io;  /* the one volume I/O in flight */
        struct iovec *io_iov; /* io's vector when the caller's cannot be used as is */
        struct iovec buf_iov; /* describes buf for volume I/O */
        void *buf;            /* response, bounce, pattern or parameter buffer */
        uint64_t lba;         /* decoded range, in blocks */
        uint64_t nblocks;
        uint64_t progress; /* blocks or descriptors done by multi-I/O commands */
        uint32_t flags;    /* SCSI_F_* decoded CDB bits */
        uint8_t phase;
        bool in_submit;      /* inside volume_submit(): completion is deferred to the loop */
        bool io_done_inline; /* the volume completed inside volume_submit() */
        int io_result;
        bool (*step)(struct scsi_cmd *cmd, int result);
        struct scsi_cmd *caw_next;
};

/* Sense keys and common additional sense codes (ASC << 8 | ASCQ) */
enum {
        SK_NO_SENSE = 0x0,
        SK_NOT_READY = 0x2,
        SK_MEDIUM_ERROR = 0x3,
        SK_HARDWARE_ERROR = 0x4,
        SK_ILLEGAL_REQUEST = 0x5,
        SK_UNIT_ATTENTION = 0x6,
        SK_DATA_PROTECT = 0x7,
        SK_ABORTED_COMMAND = 0xb,
        SK_MISCOMPARE = 0xe,
};
enum {
        ASC_INVALID_OPCODE = 0x2000,
        ASC_LBA_OUT_OF_RANGE = 0x2100,
        ASC_INVALID_FIELD_IN_CDB = 0x2400,
        ASC_LUN_NOT_SUPPORTED = 0x2500,
        ASC_INVALID_FIELD_IN_PARAM = 0x2600,
        ASC_PARAM_LIST_LENGTH_ERROR = 0x1a00,
        ASC_WRITE_PROTECTED = 0x2700,
        ASC_SOFTWARE_WRITE_PROTECTED = 0x2702,
        ASC_SPACE_ALLOC_FAILED_WRITE_PROTECT = 0x2707,
        ASC_UNRECOVERED_READ_ERROR = 0x1100,
        ASC_WRITE_ERROR = 0x0c00,
        ASC_INVALID_FIELD_IN_INFORMATION_UNIT = 0x0e03,
        ASC_MISCOMPARE_DURING_VERIFY = 0x1d00,
        ASC_SAVING_PARAMS_NOT_SUPPORTED = 0x3900,
        ASC_INTERNAL_TARGET_FAILURE = 0x4400,
        ASC_COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = 0x2f00,
        ASC_POWER_ON_RESET = 0x2900,
        ASC_INVALID_RELEASE_OF_PR = 0x2604,
        ASC_INSUFFICIENT_REG_RESOURCES = 0x5504,
        ASC_INSUFFICIENT_RESOURCES = 0x5503,
        ASC_MEDIUM_NOT_PRESENT = 0x3a00,
        ASC_LU_NOT_ACCESSIBLE_STANDBY = 0x040b,
        ASC_LU_BECOMING_READY = 0x0401,
        ASC_MEDIUM_REMOVAL_PREVENTED = 0x5302,
};

/* Zeroes cmd and sets the LUN offsets to -1; the caller fills its fields afterwards. */
void scsi_cmd_init(struct scsi_cmd *cmd);
/* Returns the state: SCSI_CMD_COMPLETE (status/sense set, no data exchanged, done() is NOT
 * called), or SCSI_CMD_NEEDS_DATA / SCSI_CMD_READY (caller sets up buffers, then execute). */
enum scsi_cmd_state scsi_cmd_prepare(struct scsi_cmd *cmd);
void scsi_cmd_execute(struct scsi_cmd *cmd);
/* Frees what prepare/execute allocated; call once done() has run, or instead of execute
 * when the command is abandoned after prepare. Never while it executes. */
void scsi_cmd_release(struct scsi_cmd *cmd);

/* CHECK CONDITION with fixed-format sense data of the given key and ASC/ASCQ, for callers
 * that fail a command themselves (e.g. a data-out problem). */
void scsi_set_sense(struct scsi_cmd *cmd, uint8_t key, uint16_t asc_ascq);

/* Maps a volume error (-errno) to status and sense: -EIO is MEDIUM ERROR (UNRECOVERED READ
 * ERROR or WRITE ERROR), -ENOSPC DATA PROTECT / SPACE ALLOCATION FAILED, -EAGAIN, -EBUSY and
 * -ENOMEM status BUSY, anything else HARDWARE ERROR / INTERNAL TARGET FAILURE. */
void scsi_set_io_error(struct scsi_cmd *cmd, int err, bool writing);

/* I_T nexus and reset events from the transport. A LU reset (LOGICAL UNIT RESET, target
 * reset) releases the SPC-2 reservation and ends every prevention of medium removal; the
 * loss of an I_T nexus (logout, session end) releases the SPC-2 reservation it holds and
 * ends its prevention. Persistent reservations and the medium's state survive both. Any
 * thread. */
void scsi_lun_reset(struct scsi_lun *lun);
void scsi_lun_nexus_lost(struct scsi_lun *lun, const char *initiator, const uint8_t isid[6]);

/* Fills a LUN's identity from the target name and LUN number (serial, NAA id, strings).
 * Stable: the same names give the same identity on every start. */
void scsi_lun_init_identity(struct scsi_lun *lun, const char *target_name, uint64_t lun_number);

/* The 8-byte LUN field of SAM-5 (single level, peripheral or flat addressing): LUNs below
 * 256 use peripheral addressing, up to 16383 flat. Decoding returns UINT64_MAX for formats
 * this target never hands out. */
void scsi_lun_encode(uint64_t lun, uint8_t out[8]);
uint64_t scsi_lun_decode(const uint8_t in[8]);

#endif
