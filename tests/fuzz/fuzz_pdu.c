/* Fuzzes the iSCSI receive path of a real connection: the input is a stream of PDUs (BHS,
 * then the data segment its length field announces, padded) fed to the iSCSI layer through
 * a transport that records nothing. A LUN on a memory backend takes the I/O. Any input
 * must end in a clean teardown: no crash, no leak, no hang. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache/backend.h"
#include "tests/common/mem_backend.h"
#include "cache/linepool.h"
#include "cache/volume.h"
#include "iscsi/iscsi.h"
#include "iscsi/scsi.h"
#include "iscsi/transport.h"
#include "src/log.h"
#include "src/reactor.h"

#define LUN_BYTES (1u << 20)

struct xport_conn {
        bool closed;
        struct iscsi_conn *ic;
        struct tx_pdu *sent_list;
};

static void fx_send(struct xport_conn *xc, struct tx_pdu *pdu)
{
        pdu->next = xc->sent_list;
        xc->sent_list = pdu;
}

static void fx_complete_sent(struct xport_conn *xc)
{
        while (xc->sent_list) {
                struct tx_pdu *p = xc->sent_list;
                xc->sent_list = p->next;
                if (p->sent)
                        p->sent(p);
                tx_pdu_free(p);
        }
}

static void fx_digests(struct xport_conn *xc, bool h, bool d)
{
}

static void fx_dsl(struct xport_conn *xc, uint32_t dsl)
{
}

static void fx_close(struct xport_conn *xc, const char *why)
{
        xc->closed = true;
}

static void fx_pause(struct xport_conn *xc, bool paused)
{
}

static const struct iscsi_transport_ops fx_ops = {.name = "fuzz",
                                                  .send_pdu = fx_send,
                                                  .set_digests = fx_digests,
                                                  .set_max_recv_dsl = fx_dsl,
                                                  .close = fx_close,
                                                  .pause_rx = fx_pause};

struct world {
        struct reactor *reactor;
        struct line_pool *pool;
        struct iscsi_gw *gw;
        struct mem_backend *mem;
        struct volume *volume;
        struct scsi_lun lun;
};

static void settle(struct world *w, struct xport_conn *xc)
{
        for (int i = 0; i < 64 && (w->mem->pending || xc->sent_list); i++) {
                mem_backend_complete_all(w->mem);
                if (xc->ic)
                        fx_complete_sent(xc);
                reactor_poll_once(w->reactor, 0);
        }
}

static const char *const target_name = "iqn.2026-11.io.isergw:fuzz";

static int world_init(struct world *w)
{
        log_set_level(LOG_LVL_ERR);
        w->reactor = reactor_create(0);
        w->pool = line_pool_create(1u << 20, 32768, 1);
        struct iscsi_gw_conf gc = {.max_recv_dsl = 65536,
                                   .max_burst = 262144,
                                   .first_burst = 65536,
                                   .max_outstanding_r2t = 4,
                                   .immediate_data = true,
                                   .initial_r2t = false,
                                   .queue_depth = 32,
                                   .pool = w->pool,
                                   .nreactors = 1};
        w->gw = iscsi_gw_create(&gc);
        iscsi_gw_attach_reactor(w->gw, 0, w->reactor);
        struct iscsi_target_conf tc = {.name = target_name};
        iscsi_gw_add_target(w->gw, &tc);
        w->mem = mem_backend_create(LUN_BYTES);
        w->volume = volume_create(&w->mem->base);
        w->lun.lun = 0;
        w->lun.block_size = 512;
        w->lun.num_blocks = LUN_BYTES / 512;
        w->lun.volume = w->volume;
        w->lun.thin = true;
        w->lun.write_cache = true;
        w->lun.max_xfer_blocks = 2048;
        scsi_lun_init_identity(&w->lun, target_name, 0);
        iscsi_gw_add_lun(w->gw, target_name, &w->lun);
        iscsi_gw_add_portal(w->gw, "127.0.0.1", 3260, false);
        return 0;
}

static struct world the_world;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        return world_init(&the_world);
}

static size_t feed_pdu(struct xport_conn *xc, const uint8_t *data, size_t size)
{
        if (size < ISCSI_BHS_LEN)
                return size;
        struct iscsi_bhs bhs;
        memcpy(bhs.b, data, ISCSI_BHS_LEN);
        size_t pos = ISCSI_BHS_LEN;
        uint32_t ahs = bhs_ahs_bytes(&bhs);
        if (pos + ahs > size)
                return size;
        const uint8_t *ahs_bytes = data + pos;
        pos += ahs;
        struct rx_dest dest;
        if (iscsi_conn_rx_header(xc->ic, &bhs, ahs_bytes, ahs, &dest) < 0) {
                xc->closed = true;
                return size;
        }
        uint32_t dsl = bhs_dsl(&bhs);
        size_t avail = size - pos;
        size_t take = dsl < avail ? dsl : avail;
        if (!dest.discard) {
                size_t done = 0;
                for (int i = 0; i < dest.iovcnt && done < take; i++) {
                        size_t n =
                            dest.iov[i].iov_len < take - done ? dest.iov[i].iov_len : take - done;
                        memcpy(dest.iov[i].iov_base, data + pos + done, n);
                        done += n;
                }
        }
        pos += take + iscsi_pad(dsl);
        iscsi_conn_rx_pdu(xc->ic, true);
        return pos < size ? pos : size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct world *w = &the_world;
        struct xport_conn xc = {0};
        xc.ic = iscsi_conn_create(w->gw, 0, &fx_ops, &xc, "127.0.0.1:3260", "fuzz:1");
        if (!xc.ic)
                return 0;
        size_t pos = 0;
        for (int n = 0; pos < size && !xc.closed && n < 256; n++) {
                pos += feed_pdu(&xc, data + pos, size - pos);
                settle(w, &xc);
        }
        /* The transport goes: what it still holds completes first, as in the TCP transport. */
        fx_complete_sent(&xc);
        iscsi_conn_closed(xc.ic);
        xc.ic = NULL;
        settle(w, &xc);
        fx_complete_sent(&xc);
        return 0;
}
