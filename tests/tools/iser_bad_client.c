/* iser_bad_client: a deliberately misbehaving iSER initiator (librdmacm, libibverbs) for the
 * bad-input tests of isergw's iSER transport (docs/iser.md). One case per run:
 *   privdata    connect with reserved bits set in the iSER CM private data: must be rejected
 *   bad-stag    log in, WRITE(10) of 4 KiB whose write STag is not a key of ours: the target's
 *               RDMA READ fails and the target must end the connection
 *   short-mr    log in, WRITE(10) of 2 MiB of which only the first 1 MiB is registered: the
 *               READs past it fail, the target ends the connection
 *   disconnect  log in, WRITE(10) of 4 MiB (valid buffer), disconnect 1 ms later, mid-transfer
 * Usage: iser_bad_client CASE ADDR PORT TARGET-IQN INITIATOR-IQN
 * Exit 0 when the target behaved as required, 1 otherwise; one line says what happened. */
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HDRS    (28 + 48)
#define RX_SIZE (HDRS + 8192)
#define NRX     8
#define BIG     (4u << 20)
#define WAIT_MS 20000

struct client {
        struct rdma_event_channel *ech;
        struct rdma_cm_id *id;
        struct ibv_pd *pd;
        struct ibv_cq *cq;
        uint8_t rx[NRX][RX_SIZE];
        uint8_t tx[RX_SIZE];
        struct ibv_mr *rx_mr, *tx_mr, *data_mr;
        uint8_t *data;
        uint32_t statsn;
};

static void die(const char *what)
{
        printf("iser_bad_client: FAIL: %s (%s)\n", what, strerror(errno));
        exit(1);
}

static struct rdma_cm_event *wait_event(struct client *c, int ms)
{
        struct pollfd p = {.fd = c->ech->fd, .events = POLLIN};
        if (poll(&p, 1, ms) <= 0)
                return NULL;
        struct rdma_cm_event *ev;
        return rdma_get_cm_event(c->ech, &ev) == 0 ? ev : NULL;
}

static void expect_event(struct client *c, enum rdma_cm_event_type type)
{
        struct rdma_cm_event *ev = wait_event(c, WAIT_MS);
        if (!ev || ev->event != type) {
                printf("iser_bad_client: FAIL: wanted %s, got %s\n", rdma_event_str(type),
                       ev ? rdma_event_str(ev->event) : "nothing");
                exit(1);
        }
        rdma_ack_cm_event(ev);
}

static void post_rx(struct client *c, int i)
{
        struct ibv_sge sge = {(uintptr_t)c->rx[i], RX_SIZE, c->rx_mr->lkey};
        struct ibv_recv_wr wr = {.wr_id = (uint64_t)i, .sg_list = &sge, .num_sge = 1}, *bad;
        if (ibv_post_recv(c->id->qp, &wr, &bad))
                die("ibv_post_recv");
}

static void setup(struct client *c, const char *addr, const char *port)
{
        struct rdma_addrinfo hints = {.ai_port_space = RDMA_PS_TCP}, *ai;
        c->ech = rdma_create_event_channel();
        if (!c->ech || rdma_create_id(c->ech, &c->id, c, RDMA_PS_TCP))
                die("rdma_create_id");
        if (rdma_getaddrinfo(addr, port, &hints, &ai))
                die("rdma_getaddrinfo");
        if (rdma_resolve_addr(c->id, NULL, ai->ai_dst_addr, 2000))
                die("rdma_resolve_addr");
        rdma_freeaddrinfo(ai);
        expect_event(c, RDMA_CM_EVENT_ADDR_RESOLVED);
        if (rdma_resolve_route(c->id, 2000))
                die("rdma_resolve_route");
        expect_event(c, RDMA_CM_EVENT_ROUTE_RESOLVED);
        c->pd = ibv_alloc_pd(c->id->verbs);
        c->cq = ibv_create_cq(c->id->verbs, 64, NULL, NULL, 0);
        struct ibv_qp_init_attr qa = {
            .send_cq = c->cq,
            .recv_cq = c->cq,
            .qp_type = IBV_QPT_RC,
            .cap = {.max_send_wr = 16, .max_recv_wr = NRX, .max_send_sge = 1, .max_recv_sge = 1},
            .sq_sig_all = 1};
        if (!c->pd || !c->cq || rdma_create_qp(c->id, c->pd, &qa))
                die("queue pair");
        c->rx_mr = ibv_reg_mr(c->pd, c->rx, sizeof(c->rx), IBV_ACCESS_LOCAL_WRITE);
        c->tx_mr = ibv_reg_mr(c->pd, c->tx, sizeof(c->tx), 0);
        c->data = aligned_alloc(4096, BIG);
        if (!c->rx_mr || !c->tx_mr || !c->data)
                die("registration");
        for (uint32_t i = 0; i < BIG; i++)
                c->data[i] = (uint8_t)(i * 7 + 1);
        for (int i = 0; i < NRX; i++)
                post_rx(c, i);
}

static int do_connect(struct client *c, const uint8_t priv[4])
{
        struct rdma_conn_param cp = {.private_data = priv,
                                     .private_data_len = 4,
                                     .responder_resources = 4,
                                     .initiator_depth = 1,
                                     .retry_count = 7,
                                     .rnr_retry_count = 7};
        if (rdma_connect(c->id, &cp))
                die("rdma_connect");
        struct rdma_cm_event *ev = wait_event(c, WAIT_MS);
        int type = ev ? (int)ev->event : -1;
        if (ev)
                rdma_ack_cm_event(ev);
        return type;
}

static void put32(uint8_t *p, uint32_t v)
{
        p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
        put32(p, (uint32_t)(v >> 32));
        put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Sends tx[0..HDRS+dlen) and waits for its completion. */
static void send_tx(struct client *c, uint32_t dlen)
{
        struct ibv_sge sge = {(uintptr_t)c->tx, HDRS + dlen, c->tx_mr->lkey};
        struct ibv_send_wr wr = {.wr_id = 1000,
                                 .sg_list = &sge,
                                 .num_sge = 1,
                                 .opcode = IBV_WR_SEND},
                           *bad;
        if (ibv_post_send(c->id->qp, &wr, &bad))
                die("ibv_post_send");
}

/* Waits for one received PDU (send completions are skipped); NULL on an error completion or
 * after ms. */
static const uint8_t *recv_pdu(struct client *c, int ms)
{
        for (int waited = 0; waited < ms; waited++) {
                struct ibv_wc wc;
                int n;
                while ((n = ibv_poll_cq(c->cq, 1, &wc)) > 0) {
                        if (wc.status != IBV_WC_SUCCESS)
                                return NULL;
                        if (wc.opcode & IBV_WC_RECV) {
                                post_rx(c, (int)wc.wr_id);
                                return c->rx[wc.wr_id];
                        }
                }
                usleep(1000);
        }
        return NULL;
}

static void login(struct client *c, const char *target, const char *initiator)
{
        for (int round = 0; round < 4; round++) {
                memset(c->tx, 0, HDRS);
                c->tx[0] = 0x10;
                uint8_t *b = c->tx + 28;
                b[0] = 0x43;
                b[1] = 0x80 | 0x04 | 0x03; /* T, CSG operational, NSG full feature */
                memcpy(b + 8, "\x80\x00\x00\x00\x00\x07", 6);
                put32(b + 16, 1);
                put32(b + 24, 1);
                put32(b + 28, c->statsn);
                char *d = (char *)c->tx + HDRS;
                int len = 0;
                if (round == 0)
                        len = snprintf(d, 1024,
                                       "InitiatorName=%s%cTargetName=%s%cSessionType=Normal%c"
                                       "RDMAExtensions=Yes%cHeaderDigest=None%cDataDigest=None%c"
                                       "ImmediateData=No%cInitialR2T=Yes%cMaxBurstLength=65536%c"
                                       "FirstBurstLength=65536%cMaxOutstandingR2T=1%c"
                                       "ErrorRecoveryLevel=0%c",
                                       initiator, 0, target, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
                b[5] = (uint8_t)(len >> 16), b[6] = (uint8_t)(len >> 8), b[7] = (uint8_t)len;
                send_tx(c, (uint32_t)len);
                const uint8_t *r = recv_pdu(c, WAIT_MS);
                if (!r)
                        die("no login response");
                const uint8_t *rb = r + 28;
                if ((rb[0] & 0x3f) != 0x23 || rb[36] != 0) {
                        printf("iser_bad_client: FAIL: login refused (class %u detail %u)\n",
                               rb[36], rb[37]);
                        exit(1);
                }
                c->statsn = get32(rb + 24) + 1;
                if ((rb[1] & 0x80) && (rb[1] & 3) == 3)
                        return;
        }
        printf("iser_bad_client: FAIL: login did not reach full feature phase\n");
        exit(1);
}

/* A WRITE(10) at LBA 0 of len bytes, with write STag and VA as given. */
static void send_write(struct client *c, uint32_t len, uint32_t stag, uint64_t va)
{
        memset(c->tx, 0, HDRS);
        c->tx[0] = 0x10 | 0x08; /* control-type PDU, write STag valid */
        put32(c->tx + 4, stag);
        put64(c->tx + 8, va);
        uint8_t *b = c->tx + 28;
        b[0] = 0x01;
        b[1] = 0x80 | 0x20 | 0x01; /* F, W, simple */
        put32(b + 16, 0x1234);
        put32(b + 20, len);
        put32(b + 24, 1);
        put32(b + 28, c->statsn);
        b[32] = 0x2a;
        uint32_t blocks = len / 512;
        b[39] = (uint8_t)(blocks >> 8), b[40] = (uint8_t)blocks;
        send_tx(c, 0);
}

/* The target must end the connection: a DISCONNECTED event or a failed completion. */
static int expect_target_disconnect(struct client *c, const char *why)
{
        struct rdma_cm_event *ev = wait_event(c, WAIT_MS);
        if (ev && ev->event == RDMA_CM_EVENT_DISCONNECTED) {
                rdma_ack_cm_event(ev);
                printf("iser_bad_client: PASS: %s: the target ended the connection\n", why);
                return 0;
        }
        printf("iser_bad_client: FAIL: %s: %s\n", why,
               ev ? rdma_event_str(ev->event) : "the connection stayed up");
        return 1;
}

int main(int argc, char **argv)
{
        if (argc != 6) {
                fprintf(stderr,
                        "usage: %s privdata|bad-stag|short-mr|disconnect ADDR PORT "
                        "TARGET INITIATOR\n",
                        argv[0]);
                return 2;
        }
        const char *mode = argv[1];
        static struct client c;
        setup(&c, argv[2], argv[3]);
        static const uint8_t good[4] = {0xc0, 0, 0, 0}, bad[4] = {0xc0, 0x5a, 0, 0};
        if (strcmp(mode, "privdata") == 0) {
                int type = do_connect(&c, bad);
                if (type == RDMA_CM_EVENT_REJECTED) {
                        printf("iser_bad_client: PASS: bad private data: connection rejected\n");
                        return 0;
                }
                printf("iser_bad_client: FAIL: bad private data: %s\n",
                       type < 0 ? "no answer" : rdma_event_str((enum rdma_cm_event_type)type));
                return 1;
        }
        if (do_connect(&c, good) != RDMA_CM_EVENT_ESTABLISHED)
                die("connect");
        login(&c, argv[4], argv[5]);
        if (strcmp(mode, "bad-stag") == 0) {
                send_write(&c, 4096, 0x0badbad0, (uintptr_t)c.data);
                return expect_target_disconnect(&c, "invalid write STag");
        }
        if (strcmp(mode, "short-mr") == 0) {
                c.data_mr = ibv_reg_mr(c.pd, c.data, 1u << 20, IBV_ACCESS_REMOTE_READ);
                if (!c.data_mr)
                        die("ibv_reg_mr");
                send_write(&c, 2u << 20, c.data_mr->rkey, (uintptr_t)c.data);
                return expect_target_disconnect(&c, "write longer than the registered buffer");
        }
        if (strcmp(mode, "disconnect") == 0) {
                c.data_mr = ibv_reg_mr(c.pd, c.data, BIG, IBV_ACCESS_REMOTE_READ);
                if (!c.data_mr)
                        die("ibv_reg_mr");
                send_write(&c, BIG, c.data_mr->rkey, (uintptr_t)c.data);
                usleep(1000);
                rdma_disconnect(c.id);
                printf("iser_bad_client: PASS: disconnected 1 ms after a 4 MiB WRITE\n");
                return 0;
        }
        fprintf(stderr, "unknown case %s\n", mode);
        return 2;
}
