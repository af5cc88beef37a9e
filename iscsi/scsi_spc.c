/* scsi_spc: the SPC-4 commands of a block LU that need no media I/O: TEST UNIT READY,
 * INQUIRY (standard data and VPD pages), MODE SENSE / MODE SELECT (caching, control and
 * informational exceptions pages), REPORT LUNS, REQUEST SENSE and REPORT SUPPORTED
 * OPERATION CODES. Responses are built whole at prepare time and copied to the caller's
 * buffers by execute. */
#include <stdlib.h>
#include <string.h>

#include "iscsi/scsi_internal.h"

#define PAGE_BUF_MAX 1024 /* room for any INQUIRY or MODE SENSE response we build */

enum {
        VERSION_DESC_SAM5 = 0x00a0,
        VERSION_DESC_ISCSI = 0x0960,
        VERSION_DESC_SPC4 = 0x0460,
        VERSION_DESC_SBC3 = 0x04c0,
};

enum { PROTOCOL_ISCSI = 5 };

/* ASCII field padded with spaces; anything outside 0x20-0x7e becomes a space. */
static void put_ascii(uint8_t *dst, const char *src, size_t width)
{
        memset(dst, ' ', width);
        for (size_t i = 0; i < width && src[i]; i++)
                dst[i] = (src[i] >= 0x20 && src[i] <= 0x7e) ? (uint8_t)src[i] : ' ';
}

enum scsi_cmd_state spc_test_unit_ready(struct scsi_cmd *cmd)
{
        return scsi_good(cmd);
}

/* Sense is always delivered with the failing command (autosense), so nothing is pending:
 * NO SENSE, or, as SPC-4 asks, what keeps the LU from working: LOGICAL UNIT NOT SUPPORTED
 * for a LUN that does not exist, NOT READY / MEDIUM NOT PRESENT while the medium is out. */
enum scsi_cmd_state spc_request_sense(struct scsi_cmd *cmd)
{
        uint8_t *b = calloc(1, 18);
        if (b) {
                b[0] = 0x70;
                b[7] = 10;
                if (!cmd->lun) {
                        b[2] = SK_ILLEGAL_REQUEST;
                        b[12] = (uint8_t)(ASC_LUN_NOT_SUPPORTED >> 8);
                } else if (scsi_medium_ejected(cmd->lun)) {
                        b[2] = SK_NOT_READY;
                        b[12] = (uint8_t)(ASC_MEDIUM_NOT_PRESENT >> 8);
                }
        }
        return scsi_reply(cmd, b, 18, cmd->cdb[4]);
}

/* INQUIRY */

static uint32_t inquiry_standard(const struct scsi_lun *lun, uint8_t *b)
{
        b[0] = lun ? 0x00 : 0x7f;                /* direct access; or qualifier 3, type 1Fh */
        b[1] = lun && lun->removable ? 0x80 : 0; /* RMB */
        b[2] = 0x06;                             /* SPC-4 */
        b[3] = 0x12;                             /* HISUP, RESPONSE DATA FORMAT 2 */
        b[4] = 74 - 5;                           /* additional length */
        b[7] = 0x02;                             /* CMDQUE */
        put_ascii(&b[8], lun ? lun->vendor : "ISERGW", 8);
        put_ascii(&b[16], lun ? lun->product : "", 16);
        put_ascii(&b[32], lun ? lun->revision : "", 4);
        put_be16(&b[58], VERSION_DESC_SAM5);
        put_be16(&b[60], VERSION_DESC_ISCSI);
        put_be16(&b[62], VERSION_DESC_SPC4);
        put_be16(&b[64], VERSION_DESC_SBC3);
        return 74;
}

static uint32_t vpd_supported_pages(const struct scsi_lun *lun, uint8_t *b)
{
        static const uint8_t pages[] = {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}; /* ascending */
        memcpy(&b[4], pages, sizeof(pages));
        put_be16(&b[2], sizeof(pages));
        return 4 + sizeof(pages);
}

static uint32_t vpd_serial(const struct scsi_lun *lun, uint8_t *b)
{
        size_t n = strnlen(lun->serial, sizeof(lun->serial));
        put_ascii(&b[4], lun->serial, n);
        put_be16(&b[2], (uint16_t)n);
        return 4 + (uint32_t)n;
}

static uint32_t put_designator(uint8_t *p, uint8_t proto_codeset, uint8_t piv_assoc_type,
                               const void *data, size_t len)
{
        p[0] = proto_codeset;
        p[1] = piv_assoc_type;
        p[3] = (uint8_t)len;
        memcpy(&p[4], data, len);
        return 4 + (uint32_t)len;
}

/* Device identification: NAA 6 and T10 vendor id of the LU, SCSI name string of the target,
 * relative target port and target port group of the port the command came through. */
static uint32_t vpd_device_id(const struct scsi_cmd *cmd, uint8_t *b)
{
        const struct scsi_lun *lun = cmd->lun;
        uint32_t pos = 4;
        pos += put_designator(&b[pos], 0x01, 0x03, lun->naa_id, sizeof(lun->naa_id));

        uint8_t t10[8 + sizeof(lun->serial)];
        size_t serial_len = strnlen(lun->serial, sizeof(lun->serial));
        put_ascii(t10, lun->vendor, 8);
        put_ascii(&t10[8], lun->serial, serial_len);
        pos += put_designator(&b[pos], 0x02, 0x01, t10, 8 + serial_len);

        size_t name_len = strnlen(lun->target_name, sizeof(lun->target_name));
        if (name_len) { /* NUL-terminated, padded to a multiple of 4 */
                uint8_t name[sizeof(lun->target_name) + 4] = {0};
                memcpy(name, lun->target_name, name_len);
                pos += put_designator(&b[pos], PROTOCOL_ISCSI << 4 | 0x03, 0xa8, name,
                                      (name_len + 4) & ~(size_t)3);
        }

        uint8_t port[4] = {0};
        put_be16(&port[2], cmd->rel_tgt_port_id ? cmd->rel_tgt_port_id : 1);
        pos += put_designator(&b[pos], PROTOCOL_ISCSI << 4 | 0x01, 0x94, port, 4);
        put_be16(&port[2], cmd->tgt_port_group ? cmd->tgt_port_group : 1);
        pos += put_designator(&b[pos], PROTOCOL_ISCSI << 4 | 0x01, 0x95, port, 4);

        put_be16(&b[2], (uint16_t)(pos - 4));
        return pos;
}

/* The granularities are the physical block: smaller or unaligned writes make the backing
 * store read-modify-write, and an unmap only frees whole physical blocks. */
static uint32_t vpd_block_limits(const struct scsi_lun *lun, uint8_t *b)
{
        put_be16(&b[2], 0x3c);
        b[5] = (uint8_t)scsi_caw_max_blocks(lun);
        put_be16(&b[6], (uint16_t)scsi_lbppb(lun)); /* OPTIMAL TRANSFER LENGTH GRANULARITY */
        put_be32(&b[8], lun->max_xfer_blocks);
        if (lun->thin) {
                put_be32(&b[20], SCSI_MAX_UNMAP_BLOCKS);
                put_be32(&b[24], SCSI_MAX_UNMAP_DESCRIPTORS);
                put_be32(&b[28], scsi_lbppb(lun)); /* OPTIMAL UNMAP GRANULARITY */
                b[32] = 0x80; /* UGAVALID, UNMAP GRANULARITY ALIGNMENT 0 (as LOWEST ALIGNED LBA) */
        }
        put_be64(&b[36], SCSI_MAX_WS_BLOCKS);
        return 64;
}

static uint32_t vpd_block_characteristics(const struct scsi_lun *lun, uint8_t *b)
{
        put_be16(&b[2], 0x3c);
        put_be16(&b[4], 1); /* MEDIUM ROTATION RATE: non-rotating */
        return 64;
}

static uint32_t vpd_provisioning(const struct scsi_lun *lun, uint8_t *b)
{
        put_be16(&b[2], 4);
        if (lun->thin) {
                b[5] = 0x80 | 0x40 | 0x20 | 0x04; /* LBPU, LBPWS, LBPWS10, LBPRZ */
                b[6] = 0x02;                      /* provisioning type: thin */
        }
        return 8;
}

static uint32_t inquiry_vpd(const struct scsi_cmd *cmd, uint8_t page, uint8_t *b)
{
        b[1] = page;
        switch (page) {
        case 0x00:
                return vpd_supported_pages(cmd->lun, b);
        case 0x80:
                return vpd_serial(cmd->lun, b);
        case 0x83:
                return vpd_device_id(cmd, b);
        case 0xb0:
                return vpd_block_limits(cmd->lun, b);
        case 0xb1:
                return vpd_block_characteristics(cmd->lun, b);
        case 0xb2:
                return vpd_provisioning(cmd->lun, b);
        default:
                return 0;
        }
}

enum scsi_cmd_state spc_inquiry(struct scsi_cmd *cmd)
{
        bool evpd = cmd->cdb[1] & 0x01;
        uint8_t page = cmd->cdb[2];
        uint32_t alloc = get_be16(&cmd->cdb[3]);
        if (!evpd && page)
                return scsi_fail_cdb(cmd, 2, -1);
        if (evpd && !cmd->lun)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_LUN_NOT_SUPPORTED);
        uint8_t *b = calloc(1, PAGE_BUF_MAX);
        if (!b)
                return scsi_reply(cmd, NULL, 0, alloc);
        uint32_t len = evpd ? inquiry_vpd(cmd, page, b) : inquiry_standard(cmd->lun, b);
        if (len == 0) {
                free(b);
                return scsi_fail_cdb(cmd, 2, -1);
        }
        return scsi_reply(cmd, b, len, alloc);
}

/* Mode pages. Only SWP of the control page is changeable; otherwise the current, default
 * and (absent) saved values coincide; pc is 0 current, 1 changeable, 2 default. */

enum { PC_CURRENT = 0, PC_CHANGEABLE = 1, PC_DEFAULT = 2, PC_SAVED = 3 };

static uint32_t page_caching(const struct scsi_lun *lun, uint8_t pc, uint8_t *p)
{
        p[0] = 0x08;
        p[1] = 0x12;
        if (pc != PC_CHANGEABLE && lun->write_cache)
                p[2] = 0x04; /* WCE */
        return 20;
}

static bool lun_swp(const struct scsi_lun *lun)
{
        return atomic_load_explicit((atomic_bool *)&lun->swp, memory_order_relaxed);
}

static uint32_t page_control(const struct scsi_lun *lun, uint8_t pc, uint8_t *p)
{
        p[0] = 0x0a;
        p[1] = 0x0a;
        if (pc == PC_CHANGEABLE)
                p[4] = 0x08; /* SWP */
        else if (pc == PC_CURRENT && lun_swp(lun))
                p[4] = 0x08;
        if (pc != PC_CHANGEABLE) {
                p[2] = 0x02;             /* GLTSD: no log parameters are saved */
                p[3] = 0x10;             /* QUEUE ALGORITHM MODIFIER 1: unrestricted reordering */
                put_be16(&p[8], 0xffff); /* BUSY TIMEOUT PERIOD: unlimited */
        }
        return 12;
}

static uint32_t page_informational_exceptions(const struct scsi_lun *lun, uint8_t pc, uint8_t *p)
{
        p[0] = 0x1c;
        p[1] = 0x0a;
        if (pc != PC_CHANGEABLE)
                p[2] = 0x08; /* DEXCPT: no informational exceptions */
        return 12;
}

/* Appends page 'code' (0x3f: all of them); 0 if we do not have it. */
static uint32_t mode_pages(const struct scsi_lun *lun, uint8_t code, uint8_t pc, uint8_t *p)
{
        switch (code) {
        case 0x08:
                return page_caching(lun, pc, p);
        case 0x0a:
                return page_control(lun, pc, p);
        case 0x1c:
                return page_informational_exceptions(lun, pc, p);
        case 0x3f: {
                uint32_t n = page_caching(lun, pc, p);
                n += page_control(lun, pc, p + n);
                return n + page_informational_exceptions(lun, pc, p + n);
        }
        default:
                return 0;
        }
}

static uint32_t block_descriptor(const struct scsi_lun *lun, bool long_lba, uint8_t *p)
{
        if (long_lba) {
                put_be64(&p[0], lun->num_blocks);
                put_be32(&p[12], lun->block_size);
                return 16;
        }
        put_be32(&p[0], (uint32_t)min_u64(lun->num_blocks, 0xffffffffu));
        put_be32(&p[4], lun->block_size & 0xffffff); /* density code 0, then 3 bytes */
        return 8;
}

enum scsi_cmd_state spc_mode_sense(struct scsi_cmd *cmd)
{
        const struct scsi_lun *lun = cmd->lun;
        bool ten = cmd->cdb[0] == 0x5a;
        bool dbd = cmd->cdb[1] & 0x08;
        bool llbaa = ten && (cmd->cdb[1] & 0x10);
        uint8_t pc = cmd->cdb[2] >> 6, code = cmd->cdb[2] & 0x3f, subpage = cmd->cdb[3];
        uint32_t alloc = ten ? get_be16(&cmd->cdb[7]) : cmd->cdb[4];
        if (pc == PC_SAVED)
                return scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_SAVING_PARAMS_NOT_SUPPORTED);
        if (subpage && !(code == 0x3f && subpage == 0xff))
                return scsi_fail_cdb(cmd, 3, -1); /* we have no subpages */
        uint8_t *b = calloc(1, PAGE_BUF_MAX);
        if (!b)
                return scsi_reply(cmd, NULL, 0, alloc);
        uint32_t hdr = ten ? 8 : 4;
        uint32_t bdl = dbd ? 0 : block_descriptor(lun, llbaa, &b[hdr]);
        uint32_t pages = mode_pages(lun, code, pc, &b[hdr + bdl]);
        if (!pages) {
                free(b);
                return scsi_fail_cdb(cmd, 2, 5);
        }
        uint32_t len = hdr + bdl + pages;
        uint8_t dsp = 0x10 | (lun->read_only || lun_swp(lun) ? 0x80 : 0); /* DPOFUA, WP */
        if (ten) {
                put_be16(&b[0], (uint16_t)(len - 2));
                b[3] = dsp;
                b[4] = bdl == 16 ? 0x01 : 0; /* LONGLBA */
                put_be16(&b[6], (uint16_t)bdl);
        } else {
                b[0] = (uint8_t)(len - 1);
                b[2] = dsp;
                b[3] = (uint8_t)bdl;
        }
        return scsi_reply(cmd, b, len, alloc);
}

/* MODE SELECT: accepted when it changes nothing but changeable fields (SWP). */

enum scsi_cmd_state spc_mode_select(struct scsi_cmd *cmd)
{
        bool ten = cmd->cdb[0] == 0x55;
        uint32_t len = ten ? get_be16(&cmd->cdb[7]) : cmd->cdb[4];
        cmd->data_out_len = len;
        if (cmd->cdb[1] & 0x01) /* SP: nothing can be saved */
                return scsi_fail_cdb(cmd, 1, 0);
        if (len == 0)
                return scsi_good(cmd);
        if (!(cmd->cdb[1] & 0x10)) /* PF: only the standard page format */
                return scsi_fail_cdb(cmd, 1, 4);
        return SCSI_CMD_NEEDS_DATA;
}

static bool block_descriptor_ok(const struct scsi_lun *lun, const uint8_t *d, uint32_t bdl)
{
        uint64_t blocks = bdl == 16 ? get_be64(d) : get_be32(d);
        uint32_t block_len = bdl == 16 ? get_be32(&d[12]) : get_be24(&d[5]);
        uint8_t cur[16] = {0};
        block_descriptor(lun, bdl == 16, cur);
        uint64_t cur_blocks = bdl == 16 ? get_be64(cur) : get_be32(cur);
        return block_len == lun->block_size && (blocks == 0 || blocks == cur_blocks);
}

/* Checks one page at p (n bytes available) against the current values. Returns the page's
 * size, 0 for a parameter list length error, or sets *bad to the offending byte. */
static uint32_t check_page(const struct scsi_lun *lun, const uint8_t *p, uint32_t n, uint32_t *bad)
{
        uint8_t cur[64] = {0}, chg[64] = {0};
        if (n < 2)
                return 0;
        uint32_t len = 2u + p[1];
        if (len > n)
                return 0;
        uint32_t cur_len = (p[0] & 0x40) ? 0 : mode_pages(lun, p[0] & 0x3f, PC_CURRENT, cur);
        if (cur_len == 0 || (p[0] & 0x3f) == 0x3f) {
                *bad = 0;
                return len;
        }
        if (len != cur_len) {
                *bad = 1;
                return len;
        }
        mode_pages(lun, p[0] & 0x3f, PC_CHANGEABLE, chg);
        for (uint32_t i = 2; i < len; i++) {
                if ((p[i] ^ cur[i]) & (uint8_t)~chg[i]) {
                        *bad = i;
                        return len;
                }
        }
        return len;
}

static void mode_select_parse(struct scsi_cmd *cmd, const uint8_t *b, uint32_t n)
{
        bool ten = cmd->cdb[0] == 0x55;
        uint32_t hdr = ten ? 8 : 4;
        if (n < hdr) {
                scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
                return;
        }
        uint32_t bdl = ten ? get_be16(&b[6]) : b[3];
        bool long_lba = ten && (b[4] & 0x01);
        if (bdl != 0 && bdl != (long_lba ? 16u : 8u)) {
                scsi_fail_param(cmd, ten ? 6 : 3, -1);
                return;
        }
        if (hdr + bdl > n) {
                scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
                return;
        }
        if (bdl && !block_descriptor_ok(cmd->lun, &b[hdr], bdl)) {
                scsi_fail_param(cmd, hdr, -1);
                return;
        }
        for (uint32_t pos = hdr + bdl; pos < n;) {
                uint32_t bad = UINT32_MAX;
                uint32_t len = check_page(cmd->lun, &b[pos], n - pos, &bad);
                if (len == 0) {
                        scsi_fail(cmd, SK_ILLEGAL_REQUEST, ASC_PARAM_LIST_LENGTH_ERROR);
                        return;
                }
                if (bad != UINT32_MAX) {
                        scsi_fail_param(cmd, pos + bad, -1);
                        return;
                }
                pos += len;
        }
        /* All valid: apply the changeable fields. */
        for (uint32_t pos = hdr + bdl; pos < n; pos += 2u + b[pos + 1]) {
                if ((b[pos] & 0x3f) == 0x0a)
                        atomic_store(&cmd->lun->swp, (b[pos + 4] & 0x08) != 0);
        }
        scsi_good(cmd);
}

void spc_exec_mode_select(struct scsi_cmd *cmd)
{
        uint32_t n = min_u32(cmd->edtl, cmd->data_out_len);
        cmd->buf = malloc(n ? n : 1);
        if (!cmd->buf) {
                scsi_set_sense(cmd, SK_HARDWARE_ERROR, ASC_INTERNAL_TARGET_FAILURE);
        } else {
                n = (uint32_t)scsi_iov_to_buf(cmd->iov, cmd->iovcnt, 0, cmd->buf, n);
                mode_select_parse(cmd, cmd->buf, n);
        }
        scsi_finish(cmd);
}

/* REPORT LUNS */

enum scsi_cmd_state spc_report_luns(struct scsi_cmd *cmd)
{
        uint8_t select = cmd->cdb[2];
        uint32_t alloc = get_be32(&cmd->cdb[6]);
        if (alloc < 16)
                return scsi_fail_cdb(cmd, 6, -1);
        if (select > 0x02)
                return scsi_fail_cdb(cmd, 2, -1);
        /* 0: all LUNs; 1: well-known LUNs only (we have none); 2: both */
        unsigned count = select == 0x01 ? 0 : cmd->lun_list.count;
        uint8_t *b = calloc(1, 8 + 8 * (size_t)count);
        if (!b)
                return scsi_reply(cmd, NULL, 0, alloc);
        unsigned n = 0;
        for (unsigned i = 0; i < count; i++) {
                if (cmd->lun_list.luns[i] < 0x4000) /* what single-level addressing reaches */
                        scsi_lun_encode(cmd->lun_list.luns[i], &b[8 + 8 * n++]);
        }
        put_be32(&b[0], 8 * n);
        return scsi_reply(cmd, b, 8 + 8 * n, alloc);
}

/* REPORT SUPPORTED OPERATION CODES */

static uint32_t put_timeouts(uint8_t *p)
{
        put_be16(&p[0], 0x0a);
        put_be32(&p[8], 60); /* recommended timeout, seconds; nominal left unspecified */
        return 12;
}

static uint32_t opcodes_all(const struct scsi_lun *lun, bool rctd, uint8_t *b)
{
        size_t count;
        const struct scsi_op *ops = scsi_op_table(&count);
        uint32_t pos = 4;
        for (size_t i = 0; i < count; i++) {
                const struct scsi_op *op = &ops[i];
                if (!scsi_op_available(op, lun))
                        continue;
                uint8_t *d = &b[pos];
                d[0] = op->opcode;
                put_be16(&d[2], (op->flags & SCSI_OP_HAS_SA) ? op->sa : 0);
                d[5] = (rctd ? 0x02 : 0) | ((op->flags & SCSI_OP_HAS_SA) ? 0x01 : 0);
                put_be16(&d[6], op->cdb_len);
                pos += 8;
                if (rctd)
                        pos += put_timeouts(&b[pos]);
        }
        put_be32(&b[0], pos - 4);
        return pos;
}

static uint32_t opcodes_one(const struct scsi_lun *lun, bool rctd, const struct scsi_op *op,
                            uint8_t *b)
{
        if (!op || !scsi_op_available(op, lun)) {
                b[1] = 0x01; /* SUPPORT: not supported */
                return 4;
        }
        b[1] = (rctd ? 0x80 : 0) | 0x03; /* CTDP, SUPPORT: supported per standard */
        put_be16(&b[2], op->cdb_len);
        memcpy(&b[4], op->usage, op->cdb_len);
        uint32_t pos = 4u + op->cdb_len;
        if (rctd)
                pos += put_timeouts(&b[pos]);
        return pos;
}

/* Which command a one-command request names, or an invalid request, per SPC-4. */
static bool opcodes_lookup(const uint8_t *cdb, const struct scsi_op **op)
{
        uint8_t options = cdb[2] & 0x07, opcode = cdb[3];
        uint16_t sa = get_be16(&cdb[4]);
        bool known, has_sa = scsi_op_has_sa(opcode);
        scsi_op_find(opcode, 0, &known);
        if (options == 0x01 && known && has_sa)
                return false; /* needs a service action */
        if (options == 0x02 && known && !has_sa)
                return false; /* has no service actions */
        *op = NULL;
        if (known && has_sa && sa <= 0x1f)
                *op = scsi_op_find(opcode, (uint8_t)sa, &known);
        else if (known && !has_sa)
                *op = scsi_op_find(opcode, 0, &known);
        return true;
}

enum scsi_cmd_state spc_report_opcodes(struct scsi_cmd *cmd)
{
        bool rctd = cmd->cdb[2] & 0x80;
        uint8_t options = cmd->cdb[2] & 0x07;
        uint32_t alloc = get_be32(&cmd->cdb[6]);
        const struct scsi_op *op = NULL;
        if (options > 0x03 || (options && !opcodes_lookup(cmd->cdb, &op)))
                return scsi_fail_cdb(cmd, 2, 2);
        size_t count;
        scsi_op_table(&count);
        uint8_t *b = calloc(1, 4 + count * 20);
        if (!b)
                return scsi_reply(cmd, NULL, 0, alloc);
        uint32_t len =
            options ? opcodes_one(cmd->lun, rctd, op, b) : opcodes_all(cmd->lun, rctd, b);
        return scsi_reply(cmd, b, len, alloc);
}
