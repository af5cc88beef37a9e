/* login: the iSCSI login negotiation engine (RFC 7143 sections 6, 11.12, 11.13), one object
 * per connection in login phase. Owns the login stages and their transitions, the text of
 * each request (joining C=1 pieces) and response (splitting it into 8192-byte pieces), the
 * first-request checks (InitiatorName, TargetName, SessionType), target lookup through the
 * caller, AuthMethod and the CHAP exchange, and the operational negotiation (through params).
 *
 * The caller (the connection code) owns the PDU header: opcode, version, ITT, ISID, TSIH, CID,
 * CmdSN/StatSN. It hands login_step the CSG/NSG/T/C bits and the data segment of each Login
 * Request and sends back a Login Response built from struct login_response:
 *   - status_class != 0: send it (no data) and close the connection; the login failed.
 *   - complete: send it (T=1, NSG=3); the connection is in full feature phase and
 *     login_params() holds the negotiated values.
 *   - otherwise send it and wait for the next Login Request.
 * A response with cont=1 is one piece of a long answer; the initiator replies with an empty
 * request and login_step returns the next piece. */
#ifndef ISERGW_ISCSI_LOGIN_H
#define ISERGW_ISCSI_LOGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iscsi/params.h"
#include "iscsi/textkv.h"

/* Largest Login Response data segment: the login-phase MaxRecvDataSegmentLength. */
#define LOGIN_MAX_RSP_DATA 8192u
/* Largest request text accepted across C=1 pieces. */
#define LOGIN_MAX_REQ_TEXT (64u * 1024)
/* Login Requests accepted on one connection before the login is failed. */
#define LOGIN_MAX_STEPS 64u

/* CHAP credentials a target (or discovery) requires. chap_user NULL: no authentication is
 * required and AuthMethod=None is accepted. With chap_user set, only CHAP is accepted
 * (AuthMethod=None fails with 0x0201). mutual_user/mutual_secret: what the target answers
 * when the initiator asks it to authenticate itself (NULL: mutual CHAP is refused). */
struct login_target_auth {
        const char *chap_user, *chap_secret;
        const char *mutual_user, *mutual_secret;
};

/* What lookup_target reports about a Normal session's target. Strings are copied before
 * lookup_target's caller returns, so they may point at transient storage. */
struct login_target_info {
        const char *name;  /* canonical name (NULL: keep the initiator's TargetName) */
        const char *alias; /* TargetAlias to declare, or NULL */
        uint16_t tpgt;     /* TargetPortalGroupTag of the portal serving the login */
        struct login_target_auth auth;
};

struct login_callbacks {
        void *ctx;
        /* Called once, on the first request of a Normal session. Returns 0 and fills *info, a
         * class-2 status detail (ISCSI_LOGIN_DETAIL_NOT_FOUND, ISCSI_LOGIN_DETAIL_AUTHORIZATION
         * for an initiator not in the ACL, ...), or a negative value for a target error
         * (0x0300). */
        int (*lookup_target)(void *ctx, const char *target_name, const char *initiator_name,
                             struct login_target_info *info);
        /* CHAP required of Discovery sessions; NULL: none. Copied by login_create. */
        const struct login_target_auth *discovery_auth;
};

struct login_request {
        uint8_t csg, nsg; /* as in the PDU (2 bits each) */
        bool transit, cont;
        const uint8_t *data; /* the data segment, without padding; NULL when len is 0 */
        size_t len;
};

struct login_response {
        uint8_t status_class, status_detail; /* ISCSI_LOGIN_STATUS_* / ISCSI_LOGIN_DETAIL_* */
        bool transit, cont;
        uint8_t csg, nsg;
        const uint8_t *data; /* owned by the login object until the next login_step */
        size_t len;
        bool complete; /* login succeeded: enter full feature phase */
};

struct login_ctx;

/* is_iser: the connection is RDMA; a Normal session must then negotiate RDMAExtensions=Yes.
 * limits and cb are copied. Returns NULL when out of memory. */
struct login_ctx *login_create(const struct iscsi_target_limits *limits,
                               const struct login_callbacks *cb, bool is_iser);

/* Processes one Login Request and fills *rsp. Returns 0 when *rsp is to be sent, -1 when
 * there is nothing to send (NULL arguments, or the login already failed or completed): drop
 * the connection. Safe on any request contents. */
int login_step(struct login_ctx *ctx, const struct login_request *req, struct login_response *rsp);

/* The negotiated values (initiator name and alias, target name, session type, operational
 * keys). Final once a response has had complete set. */
const struct iscsi_params *login_params(const struct login_ctx *ctx);

/* The TargetPortalGroupTag declared for a Normal session (0 for discovery). */
uint16_t login_tpgt(const struct login_ctx *ctx);

void login_destroy(struct login_ctx *ctx);

/* Fuzzing entry: runs one whole login on requests taken from arbitrary bytes; never crashes
 * or leaks, returns the number of steps run. Each request is one flags byte (bits 0-1 CSG,
 * 2-3 NSG, 6 C, 7 T), a 16-bit big-endian data length and that many data bytes (fewer if the
 * input ends). A first byte with both T and C set (no valid request has them together) is a
 * configuration byte instead: bit 0 we refuse immediate data (so we offer ImmediateData=No),
 * bit 1 our MaxBurstLength limit is 65536 (another offer), bit 2 discovery requires CHAP
 * (user "disc", secret "disc-secret-0"), bit 3 the connection is iSER. Targets are told apart
 * by the end of their name: ":open" needs no authentication, ":denied" is refused by the ACL
 * (0x0202), ":missing" does not exist (0x0203); any other name requires CHAP, user "user",
 * secret "secret-0123456", and answers mutual CHAP as "target" / "tsecret-0123". */
int login_fuzz_one(const uint8_t *data, size_t size);

#endif
