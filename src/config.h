/* config: the gateway's configuration: what it serves (targets, LUNs), where (portals) and
 * how (gateway settings, iSCSI negotiation limits, CHAP). Owns the INI file format
 * (docs/config.md), the embedded default, and all validation: a struct config returned by
 * config_load() or config_default() is complete and consistent (every value in range, every
 * name valid, every reference resolved), so the daemon reads it without checking again.
 * A loaded config is immutable and may be read from any thread; config_free() releases it.
 * Secrets are never written to error messages or logs, and are wiped when freed. */
#ifndef ISERGW_CONFIG_H
#define ISERGW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "src/log.h"

#define CONFIG_MAX_REACTORS     64
#define CONFIG_MAX_LUN          16383 /* LUN numbers are 0..16383 (flat addressing) */
#define CONFIG_ISCSI_NAME_MAX   223   /* bytes (RFC 7143, iSCSI Names) */
#define CONFIG_CHAP_SECRET_MIN  12    /* bytes; shorter secrets are refused */
#define CONFIG_CHAP_SECRET_WARN 16    /* bytes; longer ones load with a warning */
#define CONFIG_CHAP_SECRET_MAX  255
#define CONFIG_DEFAULT_TARGET   "iqn.2026-11.io.isergw:default"

enum config_transport {
        CONFIG_TRANSPORT_TCP,
        CONFIG_TRANSPORT_ISER,
};

/* One direction or both of CHAP. user == NULL: no CHAP required (then all NULL).
 * mutual_user == NULL: the initiator is not offered target authentication. */
struct config_chap {
        char *user;          /* the CHAP_N the initiator must send */
        char *secret;        /* its secret, CONFIG_CHAP_SECRET_MIN..MAX bytes */
        char *mutual_user;   /* the CHAP_N this side answers with; needs user */
        char *mutual_secret; /* differs from every chap secret in the config */
};

/* [portal NAME]: one listening endpoint. */
struct config_portal {
        char *name;
        char *address; /* numeric IPv4 or IPv6 literal as written, without brackets */
        uint16_t port;
        enum config_transport transport;
        struct sockaddr_storage addr; /* address and port, ready for bind()/rdma_bind_addr() */
        socklen_t addr_len;
        unsigned line; /* of the section header (config_default(): in its built-in text) */
};

enum config_backend {
        CONFIG_BACKEND_FILE,  /* a regular file or block device (path) */
        CONFIG_BACKEND_ISCSI, /* a LUN of a remote iSCSI target (url) */
};

/* [lun TARGET:N]: one logical unit backed by a file, a block device or a remote LUN. */
struct config_lun {
        uint32_t number; /* 0..CONFIG_MAX_LUN, unique within its target */
        enum config_backend backend;
        char *path;    /* file backend: relative paths are relative to the daemon's working dir */
        char *url;     /* iscsi backend: iscsi://HOST[:PORT]/IQN/LUN */
        uint64_t size; /* bytes, multiple of block_size; 0 only when !create, meaning
                        * "the size of the existing file or device" */
        uint32_t block_size;          /* 512 or 4096 */
        uint32_t physical_block_size; /* 512 or 4096, >= block_size (READ CAPACITY 16 LBPPBE) */
        uint64_t bypass_threshold;    /* bytes; writes this large go write-through (0: never) */
        bool fault_injection;         /* the status socket may inject backend errors (tests) */
        bool create; /* create the file (sparse, size bytes) if it does not exist */
        bool read_only;
        bool write_cache;   /* write-back (acknowledged from cache); no: write-through */
        bool thin;          /* UNMAP / WRITE SAME with UNMAP allowed */
        bool removable;     /* removable medium (RMB): START STOP UNIT ejects and loads it */
        char *mirror_role;  /* "primary", "secondary" or NULL: not mirrored (docs/replication.md) */
        char *mirror_peer;  /* primary: the secondary gateway's mirror_listen, HOST:PORT */
        char *mirror_id;    /* the volume's name on both gateways; NULL: "TARGET/LUN" */
        bool mirror_strict; /* the peer acknowledges a write once its backend has it */
        char *mirror_transport; /* primary: "auto" (NULL), "tcp" or "rdma" */
        unsigned line;
};

/* [target NAME]: an iSCSI target and the LUNs it exposes. */
struct config_target {
        char *name;  /* iSCSI name, normalised to lower case; compare with strcasecmp */
        char *alias; /* TargetAlias, or NULL */
        struct config_chap chap;
        const struct config_portal **portals; /* where it is offered; never empty */
        unsigned nportals;
        bool allow_any; /* every initiator may log in (subject to CHAP) */
        char **allow;   /* else: these initiator names (lower case); empty if allow_any */
        unsigned nallow;
        struct config_lun *luns; /* sorted by number; never empty */
        unsigned nluns;
        unsigned line;
};

/* Operational parameters this side offers in login negotiation (RFC 7143 section 13). */
struct config_iscsi {
        uint32_t max_recv_data_segment_length; /* 512..16777215 */
        uint32_t max_burst_length;             /* 512..16777215 */
        uint32_t first_burst_length;           /* 512..max_burst_length */
        uint32_t max_outstanding_r2t;          /* 1..65535 */
        bool immediate_data;
        bool initial_r2t;
};

struct config {
        char *source; /* the file loaded, or "(default)" */

        /* [gateway] */
        char *var_dir;
        char *status_socket;       /* fits in sockaddr_un.sun_path */
        mode_t status_socket_mode; /* 0..0777 */
        char *status_socket_group; /* NULL: the daemon's group */
        unsigned reactors;         /* 1..CONFIG_MAX_REACTORS */
        enum log_level log_level;
        uint64_t pool_size;    /* bytes, a multiple of line_size */
        uint32_t line_size;    /* power of two, 4K..1M */
        uint32_t nop_interval; /* seconds between NOP-In pings of an idle connection; 0: off */
        uint32_t nop_timeout;  /* seconds to wait for the NOP-Out answer */
        char *metrics_listen;  /* "IPV4:PORT" or "[IPV6]:PORT", or NULL: no HTTP listener */
        /* The write-back cache (docs/cache.md); the dirty marks are percent of the pool. */
        uint32_t dirty_high_water;              /* destaging starts above this */
        uint32_t dirty_low_water;               /* and stops below this */
        uint32_t dirty_hard_limit;              /* new writes wait (R2Ts delayed) above this */
        uint32_t dirty_max_age_ms;              /* a line dirty this long is destaged regardless */
        uint32_t shutdown_flush_timeout;        /* seconds SIGTERM waits for the flush */
        char *write_log;                        /* local write log file, or NULL: none */
        uint64_t write_log_size;                /* its size in bytes */
        uint32_t write_log_checkpoint_interval; /* seconds between checkpoints (at most) */
        char *mirror_listen;             /* where mirror primaries connect (secondaries), or NULL */
        uint32_t mirror_timeout_ms;      /* a peer silent this long: the mirror goes degraded */
        uint32_t mirror_startup_wait_ms; /* a starting primary waits this long for its peer's
                                            answer before it serves alone; 0: no hold */
        uint64_t mirror_region_size;     /* bytes per bit of the out-of-sync bitmap */
        uint64_t mirror_resync_rate;     /* bytes per second a resync may copy; 0: no limit */
        char *backend_initiator_name;    /* the name the iscsi backend logs in with */
        struct config_iscsi iscsi;
        struct config_chap discovery_chap;

        struct config_portal *portals; /* never empty */
        unsigned nportals;
        struct config_target *targets; /* never empty */
        unsigned ntargets;
};

/* The configuration used when no file is given: portal 127.0.0.1:3260 (tcp), target
 * CONFIG_DEFAULT_TARGET, LUN 0 = var/lun0.img, 1 GiB, created sparse if missing, 512-byte
 * blocks, status socket var/isergw.sock, one reactor per online CPU. NULL only when out of
 * memory. docs/examples/default.conf is the same configuration as a file. */
struct config *config_default(void);

/* Loads and validates an INI file. NULL on error, with err set to "FILE:LINE: reason" (LINE
 * is the last line for errors about the file as a whole, e.g. no targets), or "FILE: reason"
 * when the file cannot be read. Warnings (e.g. CHAP secrets longer than 16 bytes) are logged. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* The same from text in memory; source names it in messages and in cfg->source. */
struct config *config_load_string(const char *text, const char *source, char *err, size_t errlen);

/* Frees everything, wiping secrets first. NULL is fine. */
void config_free(struct config *cfg);

/* The target of that name (case-insensitive), or NULL. */
const struct config_target *config_find_target(const struct config *cfg, const char *name);

/* Whether the initiator of that name may log in to the target (before CHAP). */
bool config_target_allows(const struct config_target *t, const char *initiator_name);

/* Whether a string is a valid iqn./eui./naa. iSCSI name (case-insensitive, ASCII only). */
bool config_iscsi_name_valid(const char *name);

const char *config_transport_name(enum config_transport t);

#endif
