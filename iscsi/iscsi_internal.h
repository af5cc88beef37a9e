/* Private to the iscsi/ module: the structures its files share. Nothing outside iscsi/
 * includes this header. */
#ifndef ISERGW_ISCSI_INTERNAL_H
#define ISERGW_ISCSI_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "cache/volume.h"
#include "iscsi/iscsi.h"
#include "iscsi/login.h"
#include "iscsi/pdu.h"
#include "iscsi/scsi.h"
#include "iscsi/transport.h"
#include "src/reactor.h"

#define ISCSI_MAX_TARGETS       256
#define ISCSI_MAX_LUNS          256
#define ISCSI_MAX_PORTALS       32
#define ISCSI_MAX_REACTORS      64
#define ISCSI_NONMEDIA_MAX_DATA (16u << 20) /* bound on a non-media command's buffer */

/* Counters. Each reactor owns one set and is its only writer; readers use relaxed loads. */
struct iscsi_stats {
        uint64_t commands;
        uint64_t read_commands;
        uint64_t write_commands;
        uint64_t read_bytes;
        uint64_t write_bytes;
        uint64_t write_data_bytes; /* received as write data */
        uint64_t write_copy_bytes; /* copied by the CPU on the write path after the socket read */
        uint64_t read_copy_bytes;  /* copied by the CPU on the read path */
        uint64_t r2t_sent;
        uint64_t data_out_pdus;
        uint64_t data_in_pdus;
        uint64_t rejects;
        uint64_t digest_errors;
        uint64_t login_failures;
        uint64_t connections_accepted;
        uint64_t protocol_errors;
        uint64_t tmf_requests;
        uint64_t nop_timeouts;
        uint64_t commands_waiting; /* gauge: tasks waiting for cache lines */
        uint64_t scsi_errors;
};

#define STAT_ADD(rc, field, n)                                                                     \
        __atomic_store_n(&(rc)->stats.field, (rc)->stats.field + (n), __ATOMIC_RELAXED)
#define STAT_SUB(rc, field, n)                                                                     \
        __atomic_store_n(&(rc)->stats.field, (rc)->stats.field - (n), __ATOMIC_RELAXED)

struct iscsi_task;
struct iscsi_conn;
struct iscsi_session;

/* One reactor's share of the data path. Touched only from that reactor's thread. */
struct iscsi_reactor_ctx {
        struct iscsi_gw *gw;
        struct reactor *reactor;
        unsigned index;
        struct dpt *dpt;
        struct line_part *lines;
        struct line_pool *pool;
        size_t line_size;
        uint16_t next_tag;
        struct iscsi_stats stats;
        /* Tasks waiting for a free line, served in arrival order. */
        struct iscsi_task *waiters_head, *waiters_tail;
        /* Lines come free on other threads too (the destager, evictions): waiters retry on
         * this timer as well as when a line is given back here. */
        struct reactor_timer wait_timer;
        struct iscsi_conn *conns;
        unsigned nconns;
};

/* A configured portal; SendTargets expands it (iscsi_gw_set_address_source). */
struct iscsi_portal {
        char address[64]; /* numeric, without brackets */
        uint16_t port;
        bool iser;
};

/* "addr:port" (IPv6 in brackets) of p, for TargetAddress and the status. */
void portal_format(const struct iscsi_portal *p, const char *address, char *buf, size_t len);

struct iscsi_target {
        char name[224];
        char alias[256];
        char *chap_user, *chap_secret, *mutual_user, *mutual_secret;
        char **allow;
        unsigned nallow;
        struct iscsi_portal *portals;
        unsigned nportals;
        struct scsi_lun *luns[ISCSI_MAX_LUNS];
        uint64_t lun_ids[ISCSI_MAX_LUNS];
        unsigned nluns;
        /* Bumped by each reset of a LUN; a session that has not seen the newest value owes
         * its initiator a unit attention (SAM: reset seen by the other I_T nexuses). */
        uint32_t lun_reset_gen[ISCSI_MAX_LUNS];
};

struct iscsi_gw {
        struct iscsi_gw_conf conf;
        struct iscsi_target *targets[ISCSI_MAX_TARGETS];
        unsigned ntargets;
        struct iscsi_portal portals[ISCSI_MAX_PORTALS];
        unsigned nportals;
        iscsi_address_source_fn address_source; /* NULL: portals advertised as configured */
        void *address_source_ctx;
        struct iscsi_reactor_ctx *rctx[ISCSI_MAX_REACTORS];
        unsigned nreactors;
        /* Sessions are found by any reactor (login, reinstatement) and by the status thread. */
        pthread_mutex_t sessions_lock;
        struct iscsi_session *sessions;
        uint16_t next_tsih;
        struct login_target_auth discovery_auth;
        bool discovery_chap;
};

struct iscsi_session {
        struct iscsi_gw *gw;
        uint8_t isid[6];
        uint16_t tsih;
        bool discovery;
        char initiator_name[224];
        char initiator_alias[256];
        struct iscsi_target *target; /* NULL for discovery */
        struct iscsi_conn *conn;     /* one connection per session (MaxConnections=1) */
        uint32_t exp_cmdsn;          /* owned by the connection's reactor */
        uint32_t max_cmdsn;          /* the largest advertised: it never decreases */
        bool max_cmdsn_set;
        time_t created;
        uint32_t seen_reset_gen[ISCSI_MAX_LUNS];
        struct iscsi_session *next;
};

/* A request held until ExpCmdSN reaches its CmdSN. */
struct held_pdu {
        struct iscsi_bhs bhs;
        struct held_pdu *next;
        uint32_t len;
        uint8_t data[];
};

enum iscsi_conn_state { CONN_LOGIN, CONN_FULL_FEATURE, CONN_LOGGED_OUT, CONN_CLOSING };

/* What the PDU being received is, decided at header time. */
enum rx_kind { RX_CONTROL, RX_CMD_IMMEDIATE, RX_DATA_OUT, RX_DISCARD };

struct iscsi_conn {
        struct iscsi_gw *gw;
        struct iscsi_reactor_ctx *rc;
        const struct iscsi_transport_ops *xops;
        struct xport_conn *xc;
        char portal[80];
        char peer[80];
        uint16_t cid;
        enum iscsi_conn_state state;
        struct login_ctx *login;
        struct iscsi_session *session;
        bool login_isid_set;
        uint8_t login_isid[6];
        uint16_t login_tsih;
        uint32_t login_itt;
        uint32_t stat_sn;
        uint64_t connected_at_ns;

        /* Negotiated */
        uint32_t max_xmit_dsl; /* the initiator's MaxRecvDataSegmentLength */
        uint32_t max_data_in;  /* largest Data-In (max_xmit_dsl; iSER: the burst length) */
        uint32_t max_recv_dsl; /* ours */
        uint32_t max_burst, first_burst, max_r2t;
        bool immediate_data, initial_r2t, header_digest, data_digest;

        /* Receive state for the PDU in flight */
        struct iscsi_bhs rx_bhs;
        enum rx_kind rx_kind;
        struct iscsi_task *rx_task;
        struct dpt_entry *rx_entry;
        struct iscsi_task *rx_failed_task; /* a command a refused Data-Out broke */
        uint32_t rx_offset, rx_len;        /* rx_len: bytes of the PDU the command keeps */
        uint32_t rx_total;                 /* the PDU's whole data segment */
        uint8_t *scratch;                  /* where bytes beyond what a command needs are dropped */
        uint32_t scratch_size;
        uint8_t *rx_buf;
        uint32_t rx_buf_size;
        const char *rx_error; /* why a PDU being discarded is bad, answered when it completes */
        uint8_t rx_reject_reason;

        /* Tasks */
        struct iscsi_task *tasks; /* all live tasks of this connection */
        unsigned ntasks;
        struct iscsi_task *cmd_queue; /* commands held for CmdSN order */
        struct held_pdu *held;        /* other requests held for CmdSN order */

        /* NOP-In keepalive */
        struct reactor_timer nop_timer;
        uint32_t nop_ttt; /* outstanding target NOP-In TTT, 0xffffffff: none */
        uint64_t nop_sent_ns;
        uint32_t next_nop_ttt;
        uint64_t rx_pdus, rx_pdus_at_tick; /* PDUs received: ever, and at the last tick */

        /* Text response continuation */
        uint8_t *text_buf;
        size_t text_len, text_off;
        uint32_t text_ttt;

        bool closed_by_transport;
        bool close_requested;
        /* PDUs sent after the transport went: completed later, never inside the sender. */
        struct tx_pdu *orphans;
        struct reactor_deferred orphan_work;
        bool orphans_running;
        unsigned hold;           /* >0: someone up the stack still uses the connection */
        struct iscsi_conn *next; /* on the reactor's list */
};

/* A segment of a task's data buffer: one cache line's worth for media commands, or a slice
 * of one heap buffer for the others. */
enum seg_state { SEG_EMPTY, SEG_FILLING, SEG_IO, SEG_READY, SEG_DONE };

struct task_seg {
        uint8_t *buf;      /* where data offset 'data_off' lives */
        uint8_t *line;     /* line to give back (NULL: none) */
        bool heap_line;    /* line came from malloc, not the pool */
        uint32_t data_off; /* offset within the command's data */
        uint32_t len;
        uint32_t received; /* write: bytes placed */
        uint32_t tx_refs;  /* read: Data-In PDUs not yet sent */
        enum seg_state state;
        struct volume_io io;
        struct iscsi_task *task;
        struct iovec iov;
};

enum task_kind { TASK_MEDIA_READ, TASK_MEDIA_WRITE, TASK_EMULATED };

struct iscsi_task {
        struct iscsi_conn *conn;
        uint32_t itt;
        uint32_t cmdsn;
        uint64_t lun;
        bool immediate;
        bool final_flag; /* F bit of the command PDU */
        struct iscsi_bhs cmd_bhs;
        struct scsi_cmd cmd;
        enum task_kind kind;
        uint16_t tag;
        bool executing; /* CmdSN order reached */
        bool aborted;
        bool failed;
        bool response_sent;
        bool on_wait_list;
        uint32_t edtl;
        int64_t lun_offset; /* media: LUN byte offset of data byte 0 */
        uint32_t xfer_len;  /* media: bytes moved (min of edtl and CDB length) */

        /* Data buffer */
        struct task_seg *segs;
        unsigned nsegs;
        uint8_t *heap_buf; /* emulated commands' contiguous buffer */
        struct iovec *iov; /* emulated: one iovec of heap_buf */

        /* Write side */
        uint32_t immediate_len;
        uint32_t unsolicited_len; /* bytes expected without R2T (immediate + unsolicited) */
        uint32_t unsolicited_recv;
        uint32_t unsolicited_datasn;
        uint32_t next_r2t_off; /* first byte not yet asked for */
        uint32_t r2t_outstanding;
        uint32_t r2tsn;
        uint32_t data_received;
        unsigned segs_writing;
        unsigned segs_done;
        int io_error;
        uint32_t ttts[16];           /* outstanding R2T TTTs (max MaxOutstandingR2T) */
        bool unsolicited_done;       /* the initiator has ended its unsolicited data (F bit) */
        bool pressure;               /* waited for lines: full segments are written early */
        struct volume_ticket ticket; /* command order among overlapping writes */

        /* Read side */
        unsigned next_read_seg; /* next segment to start reading */
        unsigned next_send_seg; /* next segment to send in order */
        uint32_t datasn;
        uint32_t data_sent;
        unsigned reads_inflight;
        unsigned tx_inflight;

        struct iscsi_task *next;      /* conn->tasks */
        struct iscsi_task *next_wait; /* reactor waiters */
        struct iscsi_task *next_cmd;  /* conn->cmd_queue */
        /* A TMF waiting for this task to drain */
        struct iscsi_task *tmf_waiter;
};

/* conn.c */
void conn_send_pdu(struct iscsi_conn *c, struct tx_pdu *pdu);
void conn_fill_sn(struct iscsi_conn *c, struct iscsi_bhs *bhs, bool advance_statsn);
void conn_send_reject(struct iscsi_conn *c, const struct iscsi_bhs *bad, uint8_t reason,
                      const char *why);
void conn_drop(struct iscsi_conn *c, const char *why);
void conn_maybe_free(struct iscsi_conn *c);
void conn_update_window(struct iscsi_conn *c);
bool conn_run_held(struct iscsi_conn *c);

/* task.c */
int task_rx_command_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs, const uint8_t *ahs,
                           uint32_t ahs_len, struct rx_dest *dest);
void task_rx_command_done(struct iscsi_conn *c, bool digest_ok);
int task_rx_data_out_header(struct iscsi_conn *c, const struct iscsi_bhs *bhs,
                            struct rx_dest *dest);
void task_rx_data_out_done(struct iscsi_conn *c, bool digest_ok);
void task_rx_discarded(struct iscsi_conn *c);
void task_run_queued(struct iscsi_conn *c);
void task_abort(struct iscsi_task *t);
void task_abort_all(struct iscsi_conn *c, bool lun_only, uint64_t lun);
struct iscsi_task *task_find(struct iscsi_conn *c, uint32_t itt);
void task_free(struct iscsi_task *t);
bool task_idle(const struct iscsi_task *t);
void reactor_ctx_wake_waiters(struct iscsi_reactor_ctx *rc);

/* session.c */
struct iscsi_session *session_create(struct iscsi_gw *gw, struct iscsi_conn *c,
                                     const uint8_t isid[6], const char *initiator,
                                     const char *alias, struct iscsi_target *target,
                                     bool discovery);
void session_destroy(struct iscsi_session *s);
/* Detaches an existing session with the same initiator/ISID/target so a new login can
 * replace it; closes its connection on its reactor. */
void session_reinstate(struct iscsi_gw *gw, const uint8_t isid[6], const char *initiator,
                       const struct iscsi_target *target);

/* target.c */
struct iscsi_target *target_find(struct iscsi_gw *gw, const char *name);
bool target_allows(const struct iscsi_target *t, const char *initiator);
struct scsi_lun *target_lun(const struct iscsi_target *t, uint64_t lun);
int target_lun_index(const struct iscsi_target *t, uint64_t lun);
/* A reset of LUN index i (or every LUN if i < 0): every session gets a unit attention. */
void target_note_reset(struct iscsi_target *t, int i);
/* True (and cleared) when s owes a unit attention for LUN index i. */
bool session_take_ua(struct iscsi_session *s, int i);
uint64_t lun_from_wire(uint64_t wire);
/* Appends SendTargets text for value ("All" or a target name) to buf. */
int target_send_targets(struct iscsi_gw *gw, const char *value, const char *initiator,
                        struct textbuf *out);

#endif
