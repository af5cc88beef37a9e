/* transport: what the iSCSI layer needs from a transport (TCP today, iSER next), as an ops
 * table, and what a transport calls back. The iSCSI layer builds PDUs; the transport owns
 * framing on the wire (digests, padding, socket or RDMA queue pairs) and moving bytes. */
#ifndef ISERGW_ISCSI_TRANSPORT_H
#define ISERGW_ISCSI_TRANSPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "iscsi/pdu.h"

#define TX_PDU_MAX_IOV 40

struct xport_conn; /* the transport's connection */
struct iscsi_conn; /* the iSCSI layer's connection */

/* A target PDU on its way out. Data segment buffers are referenced, not copied; they stay
 * valid until sent() is called (then they may be reused or freed). */
struct tx_pdu {
        struct iscsi_bhs bhs;
        struct iovec data[TX_PDU_MAX_IOV];
        int data_iovcnt;
        uint32_t data_len;
        void *owned; /* freed with the PDU */
        void (*sent)(struct tx_pdu *pdu);
        void *sent_arg;
        struct tx_pdu *next;
        /* Transport private framing state */
        uint8_t hdr_digest[4];
        uint8_t data_digest[4];
        uint8_t pad[4];
        bool with_hdr_digest, with_data_digest; /* as when queued: digests start later */
        uint64_t wire_done;
        uint64_t wire_total;
};

struct iscsi_transport_ops {
        const char *name; /* "tcp", "iser" */
        /* Queue pdu for sending in order; the transport calls sent() and frees the PDU later,
         * never from within send_pdu itself (callers may hold state sent() releases). */
        void (*send_pdu)(struct xport_conn *xc, struct tx_pdu *pdu);
        /* Switch digests on after login (they apply from the next PDU each way). */
        void (*set_digests)(struct xport_conn *xc, bool header, bool data);
        /* Largest data segment this side accepts (our MaxRecvDataSegmentLength). */
        void (*set_max_recv_dsl)(struct xport_conn *xc, uint32_t dsl);
        /* Start tearing the connection down; iscsi_conn_closed() follows once nothing the
         * transport holds references iSCSI-layer memory. Idempotent. */
        void (*close)(struct xport_conn *xc, const char *reason);
        /* Stop or resume reading new PDUs (back-pressure). */
        void (*pause_rx)(struct xport_conn *xc, bool paused);
        /* iSER (RFC 7145): the transport moves data by RDMA. R2Ts it gets become RDMA READs
         * whose data it reports back as Data-Out PDUs (iscsi_conn_solicited_dest() says where
         * they land); Data-In PDUs become RDMA WRITEs. The iSCSI layer negotiates
         * RDMAExtensions=Yes, ImmediateData=No and InitialR2T=Yes (every write byte comes by
         * RDMA READ, none through a receive buffer) and sends Data-In up to the burst length. */
        bool rdma;
        /* rdma only: largest control-PDU data segment its registered buffers hold, each way
         * (TargetRecvDataSegmentLength is never declared above it, and nothing larger is
         * sent); 0: no limit of the transport's own. */
        uint32_t max_control_dsl;
};

/* Where a received PDU's data segment goes. */
struct rx_dest {
        struct iovec iov[48]; /* a 1 MiB segment over 32 KiB lines, plus a scratch tail */
        int iovcnt;           /* 0 with discard=true: read and throw away */
        bool discard;
        bool placed; /* data lands in a cache line (counted as zero-copy write data) */
};

/* Callbacks into the iSCSI layer, called on the connection's reactor. */
/* A header (BHS; AHS in ahs/ahs_len) has arrived. Returns 0 and fills dest for the data
 * segment, or -1 to drop the connection (already logged). */
int iscsi_conn_rx_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs, const uint8_t *ahs,
                         uint32_t ahs_len, struct rx_dest *dest);
/* The PDU whose header came last is complete; digest_ok is false on a data digest error. */
void iscsi_conn_rx_pdu(struct iscsi_conn *c, bool data_digest_ok);
/* A header digest error, unreadable framing or peer close: the transport is closing. */
void iscsi_conn_closed(struct iscsi_conn *c);
/* rdma transports: where bytes [off, off+len) of the solicited transfer ttt (an R2T this
 * connection sent) land, contiguous, or NULL when ttt is unknown or the range is outside it.
 * The data pointer table entry is the scatter list of the RDMA READ (RD4). No side effects. */
uint8_t *iscsi_conn_solicited_dest(struct iscsi_conn *c, uint32_t ttt, uint32_t off, uint32_t len);

struct tx_pdu *tx_pdu_new(void);
void tx_pdu_free(struct tx_pdu *pdu);
/* Runs sent() and frees every PDU on the list (linked by next), emptying it: what a transport
 * does with PDUs that have left, outside the call that queued them. */
void tx_pdu_finish_list(struct tx_pdu **head);

#endif
