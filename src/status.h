/* status: the operator's Unix-domain socket. Owns the listening socket, its clients and the
 * request/reply framing (one JSON object per line each way, with a "version" field). Runs on
 * its own thread so a slow or stuck client never touches the data path. What it reports and
 * does comes from a provider the daemon supplies; it knows no daemon internals.
 * docs/status.md is the protocol and the exact shape of every object. */
#ifndef ISERGW_STATUS_H
#define ISERGW_STATUS_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#define STATUS_PROTOCOL_VERSION   1
#define STATUS_MAX_LINE           65536u             /* request line, without the newline */
#define STATUS_MAX_CLIENTS        1024u              /* default for conf.max_clients */
#define STATUS_MAX_OUTPUT         (4u * 1024 * 1024) /* default for conf.max_output */
#define STATUS_FAULT_MAX_DELAY_MS 60000u             /* "fault": the largest delay_ms */

struct status_provider {
        void *ctx;
        /* Returns a new JSON object for a query ("gateway", "targets", "luns", "sessions",
         * "pool", "cache", "mirror", "stats"; shapes in docs/status.md), or NULL with err
         * filled (unknown object...). args is the whole request object (read "args" from it
         * for filters), or NULL when the server gathers metrics. Called on the status thread; the
         * provider gathers what it needs safely. */
        json_t *(*query)(void *ctx, const char *object, const json_t *args, char *err,
                         size_t errlen);
        /* Runs an operation ("flush", "fault", later "mirror-establish", "mirror-sever",
         * "mirror-promote", "mirror-demote"). args is the whole request object; for "flush"
         * and "fault" the server has already checked that args.lun is {"target": string,
         * "lun": int >= 0}, and for "fault" that fail_reads, fail_writes, fail_flushes are
         * absent or integers 0..UINT32_MAX and delay_ms absent or 0..STATUS_FAULT_MAX_DELAY_MS.
         * Returns 0 and *result (a new JSON object, may be left NULL), or -1 with err filled.
         * May block the status thread. */
        int (*operate)(void *ctx, const char *op, const json_t *args, json_t **result, char *err,
                       size_t errlen);
};

struct status_server_conf {
        const char *path;           /* socket path */
        mode_t mode;                /* e.g. 0660 */
        const char *group;          /* NULL: the daemon's group */
        const char *metrics_listen; /* NULL: no HTTP listener; else "127.0.0.1:PORT" */
        unsigned max_clients;       /* 0: STATUS_MAX_CLIENTS */
        size_t max_output;          /* bytes of unread replies per client; 0: STATUS_MAX_OUTPUT */
};

struct status_server;

/* Creates the socket (and the HTTP listener) and starts the status thread. Returns NULL,
 * after logging why, if anything fails (unknown group, someone already listening...). */
struct status_server *status_server_start(const struct status_server_conf *conf,
                                          const struct status_provider *provider);
/* Stops the thread, closes every client and removes the socket file. NULL is a no-op. */
void status_server_stop(struct status_server *s);

/* The TCP port the HTTP metrics listener is bound to (useful with port 0), or 0 if none. */
int status_server_metrics_port(const struct status_server *s);

/* Prometheus text exposition (docs/status.md §5) of a snapshot: a JSON object whose members
 * are query results keyed by object name ("gateway", "stats", "pool", "cache", "luns",
 * "sessions"); absent members are skipped. Returns a malloc'd string (never NULL except on
 * out of memory). */
char *status_metrics_render(const json_t *snapshot);

#endif
