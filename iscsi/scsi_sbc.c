/* scsi_sbc: the SBC-3 commands of a block LU: READ/WRITE 6/10/12/16, WRITE AND VERIFY,
 * VERIFY, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY 10/16, GET LBA STATUS, WRITE SAME
 * 10/16, UNMAP and COMPARE AND WRITE. Owns their CDB decoding, range and limit checks, and
 * the sequences of volume I/Os that carry them out (one I/O in flight per command). */
#include <stdlib.h>
#include <string.h>

#include "iscsi/scsi_internal.h"

/* LBA and transfer length of a media CDB, wherever its size puts them. */
struct media_range {
        uint64_t lba;
        uint32_t nblocks;
        unsigned len_byte; /* CDB byte of the TRANSFER LENGTH field, for sense pointers */
};

static struct media_range decode_range(const uint8_t *cdb)
{
        struct media_range r;
        switch (cdb[0] >> 5) { /* the group code gives the CDB size */
        case 0:                /* 6 bytes: 21-bit LBA, 0 blocks means 256 */
                r.lba = get_be24(&cdb[1]) & 0x1fffff;
                r.nblocks = cdb[4] ? cdb[4] : 256;
                r.len_byte = 4;
                break;
        case 4: /* 16 bytes */
                r.lba = get_be64(&cdb[2]);
                r.nblocks = get_be32(&cdb[10]);
                r.len_byte = 10;
                break;
        case 5: /* 12 bytes */
                r.lba = get_be32(&cdb[2]);
                r.nblocks = get_be32(&cdb[6]);
                r.len_byte = 6;
                break;
        default: /* 10 bytes */
                r.lba = get_be32(&cdb[2]);
                r.nblocks = get_be16(&cdb[7]);
                r.len_byte = 7;
                break;
        }
        return r;
}

static bool range_ok(const struct scsi_lun *lun, uint64_t lba, uint64_t nblocks)
{
        return lba <= lun->num_blocks && nblocks <= lun->num_blocks - lba;
}

/* Within MAXIMUM TRANSFER LENGTH and expressible as an iSCSI transfer length. */
static bool xfer_ok(const struct scsi_lun *lun, uint64_t nblocks)
{
        if (lun->max_xfer_blocks && nblocks > lun->max_xfer_blocks)
                return false;
        return nblocks * lun->block_size <= UINT32_MAX;
}

static uint32_t xfer_bytes(const struct scsi_lun *lun, uint64_t nblocks)
{
        return (uint32_t)min_u64(nblocks * lun->block_size, UINT32_MAX);
}

/* The initiator sends fewer bytes than the CDB implies: act on the whole blocks that do
 * arrive (an iSCSI overflow the caller reports); a partial block cannot be written. */
static enum scsi_cmd_state clamp_to_edtl(struct scsi_cmd *cmd)
{
        uint32_t bs = cmd->lun->block_size;
        if (cmd->edtl >= cmd->data_out_len)
                return SCSI_CMD_NEEDS_DATA;
        if (cmd->edtl % bs)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_INFORMATION_UNIT);
        cmd->nblocks = cmd->edtl / bs;
        return cmd->nblocks ? SCSI_CMD_NEEDS_DATA : scsi_good(cmd);
}

static bool finish_good(struct scsi_cmd *cmd)
{
        scsi_good(cmd);
        scsi_finish(cmd);
        return false;
}

static bool finish_io_error(struct scsi_cmd *cmd, int result, bool writing)
{
        scsi_set_io_error(cmd, result, writing);
        scsi_finish(cmd);
        return false;
}

static bool finish_internal_error(struct scsi_cmd *cmd)
{
        scsi_set_sense(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
        scsi_finish(cmd);
        return false;
}

/* A bounce buffer of len bytes described by cmd->buf_iov. */
static bool alloc_buf(struct scsi_cmd *cmd, size_t len)
{
        cmd->buf = malloc(len ? len : 1);
        cmd->buf_iov.iov_base = cmd->buf;
        cmd->buf_iov.iov_len = len;
        return cmd->buf != NULL;
}

/* READ, WRITE, WRITE AND VERIFY */

static bool is_write_and_verify(uint8_t opcode)
{
        return opcode == 0x2e || opcode == 0x8e || opcode == 0xae;
}

static enum scsi_cmd_state rw_prepare(struct scsi_cmd *cmd, bool writing)
{
        struct scsi_lun *lun = cmd->lun;
        struct media_range r = decode_range(cmd->cdb);
        uint32_t bytes = xfer_bytes(lun, r.nblocks);
        if (writing)
                cmd->data_out_len = bytes;
        else
                cmd->data_in_len = bytes;
        if (writing && scsi_check_write_protect(cmd) == SCSI_CMD_COMPLETE)
                return SCSI_CMD_COMPLETE;
        if (!range_ok(lun, r.lba, r.nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        if (!xfer_ok(lun, r.nblocks))
                return scsi_fail_cdb(cmd, r.len_byte, -1);
        if (r.nblocks == 0)
                return scsi_good(cmd);
        int64_t offset = (int64_t)(r.lba * lun->block_size);
        if (writing)
                cmd->data_out_lun_offset = offset;
        else
                cmd->data_in_lun_offset = offset;
        cmd->lba = r.lba;
        cmd->nblocks = r.nblocks;
        /* FUA is bit 3 of byte 1 beyond 6-byte CDBs; WRITE AND VERIFY must reach the medium */
        bool fua =
            (cmd->cdb[0] >= 0x20 && (cmd->cdb[1] & 0x08)) || is_write_and_verify(cmd->cdb[0]);
        cmd->flags = (fua ? SCSI_F_FUA : 0) | (writing ? SCSI_F_WRITE : 0);
        cmd->media = true;
        cmd->fua = writing && fua;
        return writing ? clamp_to_edtl(cmd) : SCSI_CMD_READY;
}

enum scsi_cmd_state sbc_read(struct scsi_cmd *cmd)
{
        return rw_prepare(cmd, false);
}

/* WRITE AND VERIFY is a write that completes on stable storage: reading back what the
 * volume just acknowledged would verify nothing more. */
enum scsi_cmd_state sbc_write(struct scsi_cmd *cmd)
{
        return rw_prepare(cmd, true);
}

static bool rw_step(struct scsi_cmd *cmd, int result)
{
        bool writing = cmd->flags & SCSI_F_WRITE;
        uint64_t len = cmd->nblocks * cmd->lun->block_size;
        if (cmd->phase++ == 0) {
                scsi_io_prep(cmd, writing ? VOLUME_WRITE : VOLUME_READ,
                             cmd->lba * cmd->lun->block_size, len, NULL, 0,
                             cmd->flags & SCSI_F_FUA);
                return scsi_io_use_iov(cmd, 0, len) || finish_internal_error(cmd);
        }
        if (result)
                return finish_io_error(cmd, result, writing);
        if (!writing)
                cmd->data_in_actual = (uint32_t)len;
        return finish_good(cmd);
}

void sbc_exec_rw(struct scsi_cmd *cmd)
{
        scsi_io_run(cmd, rw_step);
}

/* VERIFY: BYTCHK 0 checks the range only; BYTCHK 1 compares the data-out with the medium,
 * reading it in bounded chunks. */

enum scsi_cmd_state sbc_verify(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        struct media_range r = decode_range(cmd->cdb);
        bool bytchk = cmd->cdb[1] & 0x02;
        if (bytchk)
                cmd->data_out_len = xfer_bytes(lun, r.nblocks);
        if (!range_ok(lun, r.lba, r.nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        if (bytchk && !xfer_ok(lun, r.nblocks))
                return scsi_fail_cdb(cmd, r.len_byte, -1);
        if (!bytchk || r.nblocks == 0)
                return scsi_good(cmd);
        cmd->lba = r.lba;
        cmd->nblocks = r.nblocks;
        cmd->flags = SCSI_F_BYTCHK;
        return clamp_to_edtl(cmd);
}

static uint64_t bounce_blocks(const struct scsi_cmd *cmd)
{
        return min_u64(cmd->nblocks, SCSI_BOUNCE_CHUNK_BYTES / cmd->lun->block_size);
}

static bool verify_step(struct scsi_cmd *cmd, int result)
{
        uint32_t bs = cmd->lun->block_size;
        bool chunk_done = cmd->phase > 0; /* (phase only says "started": loops are long) */
        cmd->phase = 1;
        if (chunk_done) { /* a chunk has been read: compare it */
                if (result)
                        return finish_io_error(cmd, result, false);
                size_t off = cmd->progress * bs, mismatch;
                if (!scsi_iov_equal(cmd->iov, cmd->iovcnt, off, cmd->buf, cmd->io.length,
                                    &mismatch)) {
                        scsi_set_sense(cmd, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
                        scsi_sense_set_info(cmd, (uint32_t)(off + mismatch));
                        scsi_finish(cmd);
                        return false;
                }
                cmd->progress += cmd->io.length / bs;
        }
        if (cmd->progress == cmd->nblocks)
                return finish_good(cmd);
        uint64_t n = min_u64(cmd->nblocks - cmd->progress, bounce_blocks(cmd));
        scsi_io_prep(cmd, VOLUME_READ, (cmd->lba + cmd->progress) * bs, n * bs, &cmd->buf_iov, 1,
                     false);
        return true;
}

void sbc_exec_verify(struct scsi_cmd *cmd)
{
        if (!alloc_buf(cmd, bounce_blocks(cmd) * cmd->lun->block_size)) {
                finish_internal_error(cmd);
                return;
        }
        scsi_io_run(cmd, verify_step);
}

/* SYNCHRONIZE CACHE flushes the whole volume; the range is only checked. */

enum scsi_cmd_state sbc_sync_cache(struct scsi_cmd *cmd)
{
        struct media_range r = decode_range(cmd->cdb);
        uint64_t nblocks =
            r.nblocks ? r.nblocks : cmd->lun->num_blocks - min_u64(r.lba, cmd->lun->num_blocks);
        if (!range_ok(cmd->lun, r.lba, nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        cmd->lba = r.lba;
        cmd->nblocks = nblocks;
        return SCSI_CMD_READY;
}

static bool flush_step(struct scsi_cmd *cmd, int result)
{
        uint32_t bs = cmd->lun->block_size;
        if (cmd->phase++ == 0) {
                scsi_io_prep(cmd, VOLUME_FLUSH, cmd->lba * bs, cmd->nblocks * bs, NULL, 0, false);
                return true;
        }
        return result ? finish_io_error(cmd, result, true) : finish_good(cmd);
}

void sbc_exec_sync_cache(struct scsi_cmd *cmd)
{
        scsi_io_run(cmd, flush_step);
}

/* PRE-FETCH: there is no read cache to warm; GOOD says so. */
enum scsi_cmd_state sbc_prefetch(struct scsi_cmd *cmd)
{
        struct media_range r = decode_range(cmd->cdb);
        if (!range_ok(cmd->lun, r.lba, r.nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        return scsi_good(cmd);
}

/* READ CAPACITY and GET LBA STATUS */

static uint64_t last_lba(const struct scsi_lun *lun)
{
        return lun->num_blocks ? lun->num_blocks - 1 : 0;
}

enum scsi_cmd_state sbc_read_capacity10(struct scsi_cmd *cmd)
{
        bool pmi = cmd->cdb[8] & 0x01;
        if (!pmi && get_be32(&cmd->cdb[2]))
                return scsi_fail_cdb(cmd, 2, -1);
        uint8_t *b = calloc(1, 8);
        if (b) {
                put_be32(&b[0], (uint32_t)min_u64(last_lba(cmd->lun), 0xffffffffu));
                put_be32(&b[4], cmd->lun->block_size);
        }
        return scsi_reply(cmd, b, 8, 8);
}

enum scsi_cmd_state sbc_read_capacity16(struct scsi_cmd *cmd)
{
        uint8_t *b = calloc(1, 32);
        if (b) {
                put_be64(&b[0], last_lba(cmd->lun));
                put_be32(&b[8], cmd->lun->block_size);
                /* LBPPBE; LOWEST ALIGNED LBA (bytes 14-15) 0: LBA 0 starts a physical block */
                b[13] = scsi_lbppbe(cmd->lun) & 0x0f;
                if (cmd->lun->thin)
                        b[14] = 0x80 | 0x40; /* LBPME, LBPRZ */
        }
        return scsi_reply(cmd, b, 32, get_be32(&cmd->cdb[10]));
}

/* Mapping status is not tracked: everything from the starting LBA on is mapped. */
enum scsi_cmd_state sbc_get_lba_status(struct scsi_cmd *cmd)
{
        uint64_t lba = get_be64(&cmd->cdb[2]);
        uint32_t alloc = get_be32(&cmd->cdb[10]);
        if (lba >= cmd->lun->num_blocks)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        uint8_t *b = calloc(1, 24);
        if (b) {
                put_be32(&b[0], 20); /* parameter data length */
                put_be64(&b[8], lba);
                put_be32(&b[16], (uint32_t)min_u64(cmd->lun->num_blocks - lba, 0xffffffffu));
                b[20] = 0; /* provisioning status: mapped */
        }
        return scsi_reply(cmd, b, 24, alloc);
}

/* WRITE SAME: an all-zero block, NDOB or the UNMAP bit become WRITE ZEROES (the volume
 * may deallocate; with LBPRZ the range must read back as zeroes whatever the data-out
 * held, which is what initiators and iscsi-test-cu expect of an unmap); other data is
 * replicated into a bounce buffer and written chunk by chunk. */

enum scsi_cmd_state sbc_write_same(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        bool ws16 = cmd->cdb[0] == 0x93;
        struct media_range r = decode_range(cmd->cdb);
        bool unmap = cmd->cdb[1] & 0x08, ndob = ws16 && (cmd->cdb[1] & 0x01);
        cmd->data_out_len = ndob ? 0 : lun->block_size;
        if (scsi_check_write_protect(cmd) == SCSI_CMD_COMPLETE)
                return SCSI_CMD_COMPLETE;
        if (unmap && !lun->thin)
                return scsi_fail_cdb(cmd, 1, 3);
        if (r.lba > lun->num_blocks)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        uint64_t nblocks = r.nblocks ? r.nblocks : lun->num_blocks - r.lba; /* 0: to the end */
        if (!range_ok(lun, r.lba, nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        if (nblocks > SCSI_MAX_WS_BLOCKS)
                return scsi_fail_cdb(cmd, r.len_byte, -1);
        if (cmd->edtl != cmd->data_out_len) /* exactly one block, or none with NDOB */
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        if (nblocks == 0)
                return scsi_good(cmd);
        cmd->lba = r.lba;
        cmd->nblocks = nblocks;
        cmd->flags = (unmap ? SCSI_F_UNMAP : 0) | (ndob ? SCSI_F_NDOB : 0);
        return ndob ? SCSI_CMD_READY : SCSI_CMD_NEEDS_DATA;
}

static uint64_t write_same_chunk_blocks(const struct scsi_cmd *cmd)
{
        uint32_t bs = cmd->lun->block_size;
        return cmd->buf ? cmd->buf_iov.iov_len / bs : SCSI_ZERO_CHUNK_BYTES / bs;
}

static bool write_same_step(struct scsi_cmd *cmd, int result)
{
        uint32_t bs = cmd->lun->block_size;
        bool chunk_done = cmd->phase > 0;
        cmd->phase = 1;
        if (chunk_done) {
                if (result)
                        return finish_io_error(cmd, result, true);
                cmd->progress += cmd->io.length / bs;
        }
        if (cmd->progress == cmd->nblocks)
                return finish_good(cmd);
        uint64_t n = min_u64(cmd->nblocks - cmd->progress, write_same_chunk_blocks(cmd));
        uint64_t offset = (cmd->lba + cmd->progress) * bs;
        if (!cmd->buf) {
                scsi_io_prep(cmd, VOLUME_WRITE_ZEROES, offset, n * bs, NULL, 0, false);
                return true;
        }
        cmd->io_iov[0] = (struct iovec){cmd->buf, n * bs};
        scsi_io_prep(cmd, VOLUME_WRITE, offset, n * bs, cmd->io_iov, 1, false);
        return true;
}

/* Fills the bounce buffer with copies of the data-out block, or drops it when the block is
 * all zeroes (WRITE ZEROES needs no data). False if the data-out is missing. */
static bool write_same_pattern(struct scsi_cmd *cmd)
{
        uint32_t bs = cmd->lun->block_size;
        uint64_t blocks = min_u64(cmd->nblocks, SCSI_BOUNCE_CHUNK_BYTES / bs);
        cmd->io_iov = calloc(1, sizeof(*cmd->io_iov));
        if (!cmd->io_iov || !alloc_buf(cmd, blocks * bs))
                return false;
        uint8_t *b = cmd->buf;
        if (scsi_iov_to_buf(cmd->iov, cmd->iovcnt, 0, b, bs) != bs)
                return false;
        if (scsi_is_zero(b, bs)) {
                free(cmd->buf);
                cmd->buf = NULL;
                return true;
        }
        for (size_t off = bs; off < cmd->buf_iov.iov_len; off += bs)
                memcpy(b + off, b, bs);
        return true;
}

void sbc_exec_write_same(struct scsi_cmd *cmd)
{
        bool zeroes = cmd->flags & (SCSI_F_NDOB | SCSI_F_UNMAP);
        if (!zeroes && !write_same_pattern(cmd)) {
                finish_internal_error(cmd);
                return;
        }
        scsi_io_run(cmd, write_same_step);
}

/* UNMAP: the parameter list is checked whole before anything is unmapped. */

struct unmap_list {
        uint32_t count;
        struct {
                uint64_t lba, nblocks;
        } d[];
};

enum scsi_cmd_state sbc_unmap(struct scsi_cmd *cmd)
{
        uint32_t len = get_be16(&cmd->cdb[7]);
        cmd->data_out_len = len;
        if (scsi_check_write_protect(cmd) == SCSI_CMD_COMPLETE)
                return SCSI_CMD_COMPLETE;
        if (len == 0)
                return scsi_good(cmd);
        if (len < 8)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
        return SCSI_CMD_NEEDS_DATA;
}

/* Validates the parameter list p (n bytes) into list; false with sense set. */
static bool unmap_parse(struct scsi_cmd *cmd, const uint8_t *p, uint32_t n, struct unmap_list *list)
{
        const struct scsi_lun *lun = cmd->lun;
        if (n < 8) {
                scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
                return false;
        }
        /* A descriptor length beyond what arrived is cut to it; partial descriptors are
         * ignored, as SBC-3 allows. */
        uint32_t count = min_u32(get_be16(&p[2]), n - 8) / 16;
        if (count > SCSI_MAX_UNMAP_DESCRIPTORS) {
                scsi_fail_param(cmd, 2, -1);
                return false;
        }
        uint64_t total = 0;
        for (uint32_t i = 0; i < count; i++) {
                const uint8_t *d = &p[8 + 16 * i];
                uint64_t lba = get_be64(d), nblocks = get_be32(&d[8]);
                total += nblocks;
                if (nblocks > SCSI_MAX_UNMAP_BLOCKS || total > SCSI_MAX_UNMAP_BLOCKS) {
                        scsi_fail_param(cmd, 8 + 16 * i + 8, -1);
                        return false;
                }
                if (!range_ok(lun, lba, nblocks)) {
                        scsi_set_sense(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
                        return false;
                }
                list->d[i].lba = lba;
                list->d[i].nblocks = nblocks;
        }
        list->count = count;
        return true;
}

static bool unmap_step(struct scsi_cmd *cmd, int result)
{
        const struct unmap_list *list = cmd->buf;
        uint32_t bs = cmd->lun->block_size;
        bool chunk_done = cmd->phase > 0;
        cmd->phase = 1;
        if (chunk_done) {
                if (result)
                        return finish_io_error(cmd, result, true);
                cmd->lba += cmd->io.length / bs;
                cmd->nblocks -= cmd->io.length / bs;
        }
        while (cmd->nblocks == 0) { /* next descriptor that covers something */
                if (cmd->progress == list->count)
                        return finish_good(cmd);
                cmd->lba = list->d[cmd->progress].lba;
                cmd->nblocks = list->d[cmd->progress].nblocks;
                cmd->progress++;
        }
        uint64_t n = min_u64(cmd->nblocks, SCSI_ZERO_CHUNK_BYTES / bs);
        scsi_io_prep(cmd, VOLUME_UNMAP, cmd->lba * bs, n * bs, NULL, 0, false);
        return true;
}

void sbc_exec_unmap(struct scsi_cmd *cmd)
{
        uint32_t n = min_u32(cmd->edtl, cmd->data_out_len);
        uint8_t *param = malloc(n ? n : 1);
        struct unmap_list *list =
            malloc(sizeof(*list) + SCSI_MAX_UNMAP_DESCRIPTORS * sizeof(list->d[0]));
        if (!param || !list) {
                free(param);
                free(list);
                finish_internal_error(cmd);
                return;
        }
        n = (uint32_t)scsi_iov_to_buf(cmd->iov, cmd->iovcnt, 0, param, n);
        bool ok = unmap_parse(cmd, param, n, list);
        free(param);
        cmd->buf = list;
        if (!ok) {
                scsi_finish(cmd);
                return;
        }
        cmd->nblocks = 0;
        cmd->progress = 0;
        scsi_io_run(cmd, unmap_step);
}

/* COMPARE AND WRITE: read, compare with the first half of the data-out, write the second
 * half. COMPARE AND WRITEs to one LU run one at a time (scsi_caw_lock), which makes them
 * atomic with respect to each other; ordinary writes to the range are not held off. */

enum scsi_cmd_state sbc_compare_and_write(struct scsi_cmd *cmd)
{
        struct scsi_lun *lun = cmd->lun;
        uint64_t lba = get_be64(&cmd->cdb[2]);
        uint32_t nblocks = cmd->cdb[13];
        cmd->data_out_len = 2 * nblocks * lun->block_size;
        if (scsi_check_write_protect(cmd) == SCSI_CMD_COMPLETE)
                return SCSI_CMD_COMPLETE;
        if (nblocks > scsi_caw_max_blocks(lun))
                return scsi_fail_cdb(cmd, 13, -1);
        if (cmd->edtl != cmd->data_out_len) /* both halves, exactly */
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_INVALID_FIELD_IN_CDB);
        if (!range_ok(lun, lba, nblocks))
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
        if (nblocks == 0)
                return scsi_good(cmd);
        cmd->lba = lba;
        cmd->nblocks = nblocks;
        cmd->flags = (cmd->cdb[1] & 0x08) ? SCSI_F_FUA : 0;
        return SCSI_CMD_NEEDS_DATA;
}

/* Releases the LU before finishing: done() may free cmd. */
static bool caw_finish(struct scsi_cmd *cmd)
{
        scsi_caw_unlock(cmd->lun);
        scsi_finish(cmd);
        return false;
}

static bool caw_compare(struct scsi_cmd *cmd)
{
        size_t len = cmd->nblocks * cmd->lun->block_size, mismatch;
        if (scsi_iov_equal(cmd->iov, cmd->iovcnt, 0, cmd->buf, len, &mismatch))
                return true;
        scsi_set_sense(cmd, SK_MISCOMPARE, ASC_MISCOMPARE_DURING_VERIFY);
        scsi_sense_set_info(cmd, (uint32_t)mismatch);
        return false;
}

static bool caw_step(struct scsi_cmd *cmd, int result)
{
        uint32_t bs = cmd->lun->block_size;
        size_t len = cmd->nblocks * bs;
        switch (cmd->phase++) {
        case 0:
                if (!alloc_buf(cmd, len)) {
                        scsi_set_sense(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
                        return caw_finish(cmd);
                }
                scsi_io_prep(cmd, VOLUME_READ, cmd->lba * bs, len, &cmd->buf_iov, 1, false);
                return true;
        case 1:
                if (result) {
                        scsi_set_io_error(cmd, result, false);
                        return caw_finish(cmd);
                }
                if (!caw_compare(cmd))
                        return caw_finish(cmd);
                scsi_iov_to_buf(cmd->iov, cmd->iovcnt, len, cmd->buf, len);
                scsi_io_prep(cmd, VOLUME_WRITE, cmd->lba * bs, len, &cmd->buf_iov, 1,
                             cmd->flags & SCSI_F_FUA);
                return true;
        default:
                if (result)
                        scsi_set_io_error(cmd, result, true);
                else
                        scsi_good(cmd);
                return caw_finish(cmd);
        }
}

void sbc_exec_compare_and_write(struct scsi_cmd *cmd)
{
        if (scsi_caw_lock(cmd, caw_step))
                scsi_io_run(cmd, caw_step);
        /* else queued: caw_step runs once the LU is ours */
}
