/* The status server: a Unix stream socket (and an optional HTTP metrics listener) served by
 * one thread with its own epoll set. Requests and replies are one JSON object per line; see
 * docs/status.md. Nothing here blocks on a client: sockets are non-blocking, output is queued
 * up to a bound and a client that does not read its replies is dropped. */
#include "src/status.h"
#include "src/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HTTP_MAX_HEAD   8192u
#define READ_CHUNK      16384u
#define READS_PER_EVENT 4     /* then let other clients run */
#define KEEP_BUFFER     4096u /* buffers larger than this are freed once empty */
#define LISTEN_BACKLOG  128
#define ERR_LEN         512

/* epoll data: these tags, or TAG_CLIENT + slot. */
enum { TAG_STOP, TAG_UNIX, TAG_HTTP, TAG_CLIENT };

struct buf {
        char *data;
        size_t len; /* bytes held, from off */
        size_t off; /* bytes already consumed (output: sent) */
        size_t cap;
};

struct client {
        int fd;
        unsigned slot;
        bool http;
        bool eof;        /* no more input will be read */
        bool closing;    /* close once the output is sent */
        bool discarding; /* skipping the rest of an oversized line */
        uint32_t events; /* what epoll watches now */
        struct ucred cred;
        struct buf in;
        struct buf out;
};

struct status_server {
        char *path;
        gid_t gid;
        size_t max_output;
        unsigned max_clients;
        struct status_provider provider;
        int listen_fd;
        int http_fd;
        int http_port;
        int epoll_fd;
        int stop_fd;
        int spare_fd; /* released to accept-and-close when out of descriptors */
        dev_t sock_dev;
        ino_t sock_ino;
        pthread_t thread;
        bool thread_started;
        unsigned nclients;
        struct client **clients; /* max_clients slots */
};

/* The result of one request: a result object, or an error code and text. */
struct outcome {
        json_t *result;
        const char *code;
        char error[ERR_LEN];
};

static void fail(struct outcome *o, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(struct outcome *o, const char *code, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(o->error, sizeof(o->error), fmt, ap);
        va_end(ap);
        o->code = code;
}

/* ---- buffers ---- */

static int buf_append(struct buf *b, const char *data, size_t len)
{
        if (len == 0)
                return 0;
        if (b->off > 0 && b->len > 0)
                memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + len > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->len + len)
                        cap *= 2;
                char *p = realloc(b->data, cap);
                if (!p)
                        return -1;
                b->data = p;
                b->cap = cap;
        }
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

static void buf_consume(struct buf *b, size_t n)
{
        b->off += n;
        b->len -= n;
        if (b->len > 0)
                return;
        b->off = 0;
        if (b->cap > KEEP_BUFFER) {
                free(b->data);
                b->data = NULL;
                b->cap = 0;
        }
}

static void buf_free(struct buf *b)
{
        free(b->data);
        memset(b, 0, sizeof(*b));
}

/* ---- clients ---- */

static void client_close(struct status_server *s, struct client *c)
{
        epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        buf_free(&c->in);
        buf_free(&c->out);
        s->clients[c->slot] = NULL;
        s->nclients--;
        free(c);
}

static void client_update_events(struct status_server *s, struct client *c)
{
        uint32_t events = (c->eof ? 0 : EPOLLIN) | (c->out.len ? EPOLLOUT : 0);
        if (events == c->events)
                return;
        struct epoll_event ev = {.events = events, .data.u64 = TAG_CLIENT + c->slot};
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
                c->events = events;
}

/* Sends what the kernel takes. Returns -1 if the client was closed. */
static int client_flush(struct status_server *s, struct client *c)
{
        while (c->out.len > 0) {
                ssize_t n =
                    send(c->fd, c->out.data + c->out.off, c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                        buf_consume(&c->out, (size_t)n);
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        break;
                log_debug("status: client pid=%d gone: %s", (int)c->cred.pid, strerror(errno));
                client_close(s, c);
                return -1;
        }
        if (c->out.len == 0 && (c->closing || c->eof)) {
                client_close(s, c);
                return -1;
        }
        client_update_events(s, c);
        return 0;
}

/* Queues bytes for the client and tries to send them. Drops a client whose unread replies
 * already exceed the bound. Returns -1 if the client was closed. */
static int client_send(struct status_server *s, struct client *c, const char *data, size_t len)
{
        if (c->out.len > s->max_output) {
                log_warn("status: dropping client uid=%u pid=%d: %zu bytes of replies unread",
                         (unsigned)c->cred.uid, (int)c->cred.pid, c->out.len);
                client_close(s, c);
                return -1;
        }
        if (buf_append(&c->out, data, len) < 0) {
                log_err("status: out of memory queueing a reply; dropping client");
                client_close(s, c);
                return -1;
        }
        return client_flush(s, c);
}

/* ---- replies ---- */

static json_t *make_reply(json_t *id, struct outcome *o)
{
        json_t *r = json_object();
        json_object_set_new(r, "version", json_integer(STATUS_PROTOCOL_VERSION));
        if (id)
                json_object_set(r, "id", id);
        if (o->code) {
                json_object_set_new(r, "ok", json_false());
                json_object_set_new(r, "error", json_string(o->error));
                json_object_set_new(r, "code", json_string(o->code));
                json_decref(o->result);
        } else {
                json_object_set_new(r, "ok", json_true());
                json_object_set_new(r, "result", o->result ? o->result : json_object());
        }
        o->result = NULL;
        return r;
}

/* Serialises a reply as one line. Returns a malloc'd string. */
static char *reply_line(const json_t *reply, size_t *len)
{
        char *text = json_dumps(reply, JSON_COMPACT);
        if (!text)
                return NULL;
        *len = strlen(text);
        text[(*len)++] = '\n'; /* replaces the NUL; the length is kept */
        return text;
}

static int client_reply(struct status_server *s, struct client *c, json_t *reply)
{
        size_t len = 0;
        char *text = reply_line(reply, &len);
        json_decref(reply);
        if (!text) {
                log_err("status: cannot serialise a reply; dropping client");
                client_close(s, c);
                return -1;
        }
        int rc = client_send(s, c, text, len);
        free(text);
        return rc;
}

/* Best effort, for a client about to be closed: one error line, never blocking. */
static void send_error_now(int fd, const char *code, const char *text)
{
        struct outcome o = {0};
        fail(&o, code, "%s", text);
        json_t *reply = make_reply(NULL, &o);
        size_t len = 0;
        char *line = reply_line(reply, &len);
        json_decref(reply);
        if (line && send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                log_debug("status: error reply not sent: %s", strerror(errno));
        free(line);
}

/* ---- commands ---- */

struct command {
        const char *name;
        bool audited;
        void (*run)(struct status_server *s, const struct client *c, const char *cmd,
                    const json_t *req, struct outcome *o);
};

static json_t *provider_query(struct status_server *s, const char *object, const json_t *req,
                              struct outcome *o)
{
        char err[ERR_LEN] = "";
        if (!s->provider.query) {
                fail(o, "failed", "queries are not available");
                return NULL;
        }
        json_t *v = s->provider.query(s->provider.ctx, object, req, err, sizeof(err));
        if (!v) {
                fail(o, "failed", "%s", err[0] ? err : "the daemon cannot answer this query");
                return NULL;
        }
        if (!json_is_object(v)) {
                json_decref(v);
                fail(o, "internal", "the daemon's answer for \"%s\" is not an object", object);
                return NULL;
        }
        return v;
}

static void cmd_query(struct status_server *s, const struct client *c, const char *cmd,
                      const json_t *req, struct outcome *o)
{
        const char *object = json_string_value(json_object_get(req, "object"));
        if (!object) {
                fail(o, "bad-request", "query needs \"object\" (a string)");
                return;
        }
        log_debug("status: query %s from uid=%u pid=%d", object, (unsigned)c->cred.uid,
                  (int)c->cred.pid);
        o->result = provider_query(s, object, req, o);
}

/* The objects metrics are built from (docs/status.md §5). */
static const char *const metric_objects[] = {"gateway", "stats", "pool",
                                             "cache",   "luns",  "sessions"};

static char *metrics_text(struct status_server *s)
{
        json_t *snapshot = json_object();
        for (size_t i = 0; i < sizeof(metric_objects) / sizeof(metric_objects[0]); i++) {
                struct outcome o = {0};
                json_t *v = provider_query(s, metric_objects[i], NULL, &o);
                if (v)
                        json_object_set_new(snapshot, metric_objects[i], v);
                else
                        log_debug("status: metrics without %s: %s", metric_objects[i], o.error);
        }
        char *text = status_metrics_render(snapshot);
        json_decref(snapshot);
        return text;
}

static void cmd_metrics(struct status_server *s, const struct client *c, const char *cmd,
                        const json_t *req, struct outcome *o)
{
        char *text = metrics_text(s);
        json_t *str = text ? json_string(text) : NULL;
        free(text);
        if (!str) {
                fail(o, "internal", "cannot render metrics");
                return;
        }
        o->result = json_object();
        json_object_set_new(o->result, "text", str);
}

static void provider_operate(struct status_server *s, const char *op, const json_t *req,
                             struct outcome *o)
{
        char err[ERR_LEN] = "";
        json_t *result = NULL;
        if (!s->provider.operate) {
                fail(o, "failed", "operations are not available");
                return;
        }
        if (s->provider.operate(s->provider.ctx, op, req, &result, err, sizeof(err)) < 0) {
                json_decref(result);
                fail(o, "failed", "%s", err[0] ? err : "operation failed");
                return;
        }
        if (result && !json_is_object(result)) {
                json_decref(result);
                fail(o, "internal", "the daemon's answer for \"%s\" is not an object", op);
                return;
        }
        o->result = result;
}

static bool lun_ref_valid(const json_t *lun)
{
        const json_t *n = json_object_get(lun, "lun");
        return json_is_object(lun) && json_is_string(json_object_get(lun, "target")) &&
               json_is_integer(n) && json_integer_value(n) >= 0;
}

static void cmd_flush(struct status_server *s, const struct client *c, const char *cmd,
                      const json_t *req, struct outcome *o)
{
        const json_t *lun = json_object_get(req, "lun");
        if (!lun_ref_valid(lun)) {
                fail(o, "bad-request",
                     "flush needs \"lun\": {\"target\": string, \"lun\": integer >= 0}");
                return;
        }
        provider_operate(s, cmd, req, o);
        if (o->code)
                return;
        if (!o->result)
                o->result = json_object();
        if (!json_object_get(o->result, "target")) /* the daemon's spelling wins */
                json_object_set(o->result, "target", json_object_get(lun, "target"));
        if (!json_object_get(o->result, "lun"))
                json_object_set(o->result, "lun", json_object_get(lun, "lun"));
}

/* The settings of "fault": each optional, an integer 0..UINT32_MAX (delay_ms: 0..60000). */
static const struct {
        const char *key;
        json_int_t max;
} fault_fields[] = {
    {"fail_reads", UINT32_MAX},
    {"fail_writes", UINT32_MAX},
    {"fail_flushes", UINT32_MAX},
    {"delay_ms", STATUS_FAULT_MAX_DELAY_MS},
};

static void cmd_fault(struct status_server *s, const struct client *c, const char *cmd,
                      const json_t *req, struct outcome *o)
{
        if (!lun_ref_valid(json_object_get(req, "lun"))) {
                fail(o, "bad-request",
                     "fault needs \"lun\": {\"target\": string, \"lun\": integer >= 0}");
                return;
        }
        for (size_t i = 0; i < sizeof(fault_fields) / sizeof(fault_fields[0]); i++) {
                const json_t *v = json_object_get(req, fault_fields[i].key);
                if (v && (!json_is_integer(v) || json_integer_value(v) < 0 ||
                          json_integer_value(v) > fault_fields[i].max)) {
                        fail(o, "bad-request", "fault: \"%s\" must be an integer 0..%lld",
                             fault_fields[i].key, (long long)fault_fields[i].max);
                        return;
                }
        }
        provider_operate(s, cmd, req, o);
}

/* mirror-*: a LUN, and for promote "force", for establish "full" (booleans, optional). */
static void cmd_mirror(struct status_server *s, const struct client *c, const char *cmd,
                       const json_t *req, struct outcome *o)
{
        (void)c;
        const json_t *force = json_object_get(req, "force"), *full = json_object_get(req, "full");
        if (!lun_ref_valid(json_object_get(req, "lun")) || (force && !json_is_boolean(force)) ||
            (full && !json_is_boolean(full))) {
                fail(o, "bad-request",
                     "%s needs \"lun\": {\"target\": string, \"lun\": integer >= 0} (and "
                     "optional booleans \"force\", \"full\")",
                     cmd);
                return;
        }
        provider_operate(s, cmd, req, o);
}

static const struct command commands[] = {
    {"query", false, cmd_query},
    {"metrics", false, cmd_metrics},
    {"flush", true, cmd_flush},
    {"fault", true, cmd_fault},
    {"mirror-establish", true, cmd_mirror},
    {"mirror-sever", true, cmd_mirror},
    {"mirror-promote", true, cmd_mirror},
    {"mirror-demote", true, cmd_mirror},
};

static const struct command *find_command(const char *name)
{
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        }
        return NULL;
}

static void audit(const struct client *c, const char *cmd, const json_t *req,
                  const struct outcome *o)
{
        char *args = json_dumps(req, JSON_COMPACT);
        log_info("status: audit uid=%u gid=%u pid=%d op=%s args=%s result=%s%s",
                 (unsigned)c->cred.uid, (unsigned)c->cred.gid, (int)c->cred.pid, cmd,
                 args ? args : "?", o->code ? "error: " : "ok", o->code ? o->error : "");
        free(args);
}

/* Checks the envelope, then runs the command. */
static void run_request(struct status_server *s, const struct client *c, const json_t *req,
                        struct outcome *o)
{
        const json_t *version = json_object_get(req, "version");
        if (!json_is_integer(version) || json_integer_value(version) != STATUS_PROTOCOL_VERSION) {
                char *v = version ? json_dumps(version, JSON_ENCODE_ANY) : NULL;
                fail(o, "bad-version", "%s version %s (this gateway speaks version %d)",
                     version ? "unsupported" : "missing", v ? v : "field", STATUS_PROTOCOL_VERSION);
                free(v);
                return;
        }
        const json_t *cmd = json_object_get(req, "cmd");
        if (!json_is_string(cmd)) {
                fail(o, "bad-request", "%s", cmd ? "\"cmd\" must be a string" : "missing \"cmd\"");
                return;
        }
        const struct command *command = find_command(json_string_value(cmd));
        if (!command) {
                fail(o, "unknown-command", "unknown command \"%.64s\"", json_string_value(cmd));
                return;
        }
        command->run(s, c, command->name, req, o);
        if (command->audited)
                audit(c, command->name, req, o);
}

static json_t *handle_request(struct status_server *s, const struct client *c, const char *line,
                              size_t len)
{
        struct outcome o = {0};
        json_error_t jerr;
        json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!req) {
                fail(&o, "bad-request", "malformed JSON at column %d: %s", jerr.column, jerr.text);
                return make_reply(NULL, &o);
        }
        json_t *id = NULL;
        if (!json_is_object(req)) {
                fail(&o, "bad-request", "a request must be a JSON object");
        } else {
                id = json_object_get(req, "id");
                run_request(s, c, req, &o);
        }
        json_t *reply = make_reply(id, &o);
        json_decref(req);
        return reply;
}

/* ---- line framing ---- */

static bool blank(const char *p, size_t len)
{
        for (size_t i = 0; i < len; i++) {
                if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
                        return false;
        }
        return true;
}

static int handle_line(struct status_server *s, struct client *c)
{
        if (c->in.len == 0)
                return 0; /* empty line */
        const char *line = c->in.data + c->in.off;
        size_t len = c->in.len;
        json_t *reply = blank(line, len) ? NULL : handle_request(s, c, line, len);
        buf_consume(&c->in, c->in.len); /* may free the line */
        return reply ? client_reply(s, c, reply) : 0;
}

static int reply_too_long(struct status_server *s, struct client *c)
{
        struct outcome o = {0};
        fail(&o, "too-long", "request line longer than %u bytes", STATUS_MAX_LINE);
        buf_consume(&c->in, c->in.len);
        return client_reply(s, c, make_reply(NULL, &o));
}

/* Takes one segment of input (up to and including a newline, if any). */
static int line_segment(struct status_server *s, struct client *c, const char *p, size_t len,
                        bool newline)
{
        if (c->discarding) {
                c->discarding = !newline;
                return 0;
        }
        if (c->in.len + len > STATUS_MAX_LINE) {
                c->discarding = !newline;
                return reply_too_long(s, c);
        }
        if (buf_append(&c->in, p, len) < 0) {
                log_err("status: out of memory reading a request; dropping client");
                client_close(s, c);
                return -1;
        }
        return newline ? handle_line(s, c) : 0;
}

static int line_input(struct status_server *s, struct client *c, const char *p, size_t len)
{
        while (len > 0) {
                const char *nl = memchr(p, '\n', len);
                size_t seg = nl ? (size_t)(nl - p) : len;
                if (line_segment(s, c, p, seg, nl != NULL) < 0)
                        return -1;
                seg += nl ? 1 : 0;
                p += seg;
                len -= seg;
        }
        return 0;
}

/* ---- HTTP ---- */

static int http_respond(struct status_server *s, struct client *c, const char *status,
                        const char *ctype, const char *body, bool head)
{
        char hdr[256];
        size_t blen = strlen(body);
        int n = snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "%sConnection: close\r\n\r\n",
                         status, ctype, blen,
                         strncmp(status, "405", 3) == 0 ? "Allow: GET, HEAD\r\n" : "");
        c->eof = true;
        c->closing = true;
        if (buf_append(&c->out, hdr, (size_t)n) < 0 ||
            (!head && buf_append(&c->out, body, blen) < 0)) {
                client_close(s, c);
                return -1;
        }
        return client_flush(s, c);
}

static int http_metrics(struct status_server *s, struct client *c, bool head)
{
        char *text = metrics_text(s);
        if (!text)
                return http_respond(s, c, "500 Internal Server Error", "text/plain",
                                    "cannot render metrics\n", head);
        int rc =
            http_respond(s, c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", text, head);
        free(text);
        return rc;
}

/* Answers the request line "METHOD TARGET HTTP/x.y". */
static int http_request(struct status_server *s, struct client *c, char *line)
{
        char *save = NULL;
        const char *method = strtok_r(line, " ", &save);
        char *target = strtok_r(NULL, " ", &save);
        const char *proto = strtok_r(NULL, " \r", &save);
        const char *plain = "text/plain; charset=utf-8";
        if (!method || !target || !proto || strncmp(proto, "HTTP/1.", 7) != 0)
                return http_respond(s, c, "400 Bad Request", plain, "bad request\n", false);
        bool head = strcmp(method, "HEAD") == 0;
        if (!head && strcmp(method, "GET") != 0)
                return http_respond(s, c, "405 Method Not Allowed", plain, "method not allowed\n",
                                    false);
        target[strcspn(target, "?")] = '\0';
        if (strcmp(target, "/metrics") != 0)
                return http_respond(s, c, "404 Not Found", plain, "not found\n", head);
        return http_metrics(s, c, head);
}

static int http_input(struct status_server *s, struct client *c, const char *p, size_t len)
{
        if (c->closing)
                return 0;
        if (c->in.len + len > HTTP_MAX_HEAD)
                return http_respond(s, c, "400 Bad Request", "text/plain; charset=utf-8",
                                    "request too large\n", false);
        if (buf_append(&c->in, p, len) < 0 || buf_append(&c->in, "", 1) < 0) {
                client_close(s, c);
                return -1;
        }
        c->in.len--; /* keep the data NUL-terminated without counting the NUL */
        char *head = c->in.data + c->in.off;
        if (!strstr(head, "\r\n\r\n") && !strstr(head, "\n\n"))
                return 0;
        head[strcspn(head, "\n")] = '\0';
        return http_request(s, c, head);
}

/* ---- events ---- */

static void client_eof(struct status_server *s, struct client *c)
{
        c->eof = true;
        if (c->out.len == 0) {
                client_close(s, c);
                return;
        }
        client_update_events(s, c);
}

static void client_readable(struct status_server *s, struct client *c)
{
        char chunk[READ_CHUNK];
        for (int i = 0; i < READS_PER_EVENT && !c->eof; i++) {
                ssize_t n = recv(c->fd, chunk, sizeof(chunk), MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                if (n < 0) {
                        log_debug("status: client read: %s", strerror(errno));
                        client_close(s, c);
                        return;
                }
                if (n == 0) {
                        client_eof(s, c);
                        return;
                }
                int rc = c->http ? http_input(s, c, chunk, (size_t)n)
                                 : line_input(s, c, chunk, (size_t)n);
                if (rc < 0)
                        return;
        }
}

static void client_event(struct status_server *s, unsigned slot, uint32_t events)
{
        struct client *c = slot < s->max_clients ? s->clients[slot] : NULL;
        if (!c)
                return;
        if (events & EPOLLOUT) {
                if (client_flush(s, c) < 0)
                        return;
        }
        if (c->eof) {
                if (events & (EPOLLERR | EPOLLHUP))
                        client_flush(s, c);
                return;
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                client_readable(s, c);
}

static bool gid_listed(const gid_t *groups, size_t n, gid_t gid)
{
        for (size_t i = 0; i < n; i++) {
                if (groups[i] == gid)
                        return true;
        }
        return false;
}

/* Whether the peer's supplementary groups (SO_PEERGROUPS) include gid. */
static bool peer_groups_include(int fd, gid_t gid)
{
        gid_t small[64], *groups = small;
        socklen_t len = sizeof(small);
        int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
        if (rc < 0 && errno == ERANGE && (groups = malloc(len)))
                rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
        if (rc < 0)
                log_debug("status: SO_PEERGROUPS: %s", strerror(errno));
        bool found = rc == 0 && groups && gid_listed(groups, len / sizeof(gid_t), gid);
        if (groups != small)
                free(groups);
        return found;
}

/* Root, our own uid, or a member of the socket's group. */
static bool peer_in_group(const struct status_server *s, int fd, const struct ucred *cred)
{
        if (cred->uid == 0 || cred->uid == geteuid() || cred->gid == s->gid)
                return true;
        return peer_groups_include(fd, s->gid);
}

static bool peer_allowed(const struct status_server *s, int fd, struct ucred *cred)
{
        socklen_t len = sizeof(*cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0) {
                log_warn("status: SO_PEERCRED: %s; refusing client", strerror(errno));
                return false;
        }
        if (peer_in_group(s, fd, cred))
                return true;
        log_warn("status: refused client uid=%u gid=%u pid=%d: not root, not uid %u, not in "
                 "group %u",
                 (unsigned)cred->uid, (unsigned)cred->gid, (int)cred->pid, (unsigned)geteuid(),
                 (unsigned)s->gid);
        send_error_now(fd, "permission-denied", "permission denied");
        return false;
}

static int free_slot(const struct status_server *s)
{
        for (unsigned i = 0; i < s->max_clients; i++) {
                if (!s->clients[i])
                        return (int)i;
        }
        return -1;
}

static void client_add(struct status_server *s, int fd, bool http, const struct ucred *cred)
{
        int slot = free_slot(s);
        struct client *c = slot >= 0 ? calloc(1, sizeof(*c)) : NULL;
        if (!c) {
                log_warn("status: refused a client: %u clients already connected", s->nclients);
                send_error_now(fd, "busy", "too many clients");
                close(fd);
                return;
        }
        *c = (struct client){.fd = fd, .slot = (unsigned)slot, .http = http, .cred = *cred};
        c->events = EPOLLIN;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_CLIENT + (unsigned)slot};
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                log_err("status: epoll_ctl: %s", strerror(errno));
                close(fd);
                free(c);
                return;
        }
        s->clients[slot] = c;
        s->nclients++;
}

/* Out of descriptors: accept and close one client so the listener does not stay ready. */
static void shed_one(struct status_server *s, int lfd)
{
        log_warn("status: out of file descriptors; refusing a client");
        if (s->spare_fd < 0)
                return;
        close(s->spare_fd);
        int fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
                close(fd);
        s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_accept(struct status_server *s, int lfd, bool http)
{
        for (;;) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
                        continue;
                if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
                        shed_one(s, lfd);
                        return;
                }
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                log_warn("status: accept: %s", strerror(errno));
                        return;
                }
                struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
                if (!http && !peer_allowed(s, fd, &cred)) {
                        close(fd);
                        continue;
                }
                client_add(s, fd, http, &cred);
        }
}

static void *status_thread(void *arg)
{
        struct status_server *s = arg;
        struct epoll_event ev[64];
        for (;;) {
                int n = epoll_wait(s->epoll_fd, ev, 64, -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        log_err("status: epoll_wait: %s; status socket stops", strerror(errno));
                        return NULL;
                }
                for (int i = 0; i < n; i++) {
                        uint64_t tag = ev[i].data.u64;
                        if (tag == TAG_STOP)
                                return NULL;
                        if (tag == TAG_UNIX || tag == TAG_HTTP)
                                on_accept(s, tag == TAG_UNIX ? s->listen_fd : s->http_fd,
                                          tag == TAG_HTTP);
                        else
                                client_event(s, (unsigned)(tag - TAG_CLIENT), ev[i].events);
                }
        }
}

/* ---- the Unix socket ---- */

static int set_unix_addr(struct sockaddr_un *sun, const char *path)
{
        memset(sun, 0, sizeof(*sun));
        sun->sun_family = AF_UNIX;
        if (strlen(path) >= sizeof(sun->sun_path)) {
                log_err("status: socket path too long: %s", path);
                return -1;
        }
        strcpy(sun->sun_path, path);
        return 0;
}

/* Removes a stale socket; fails if someone listens there or the path is not a socket. */
static int clear_stale(const char *path)
{
        struct stat st;
        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                log_err("status: %s: %s", path, strerror(errno));
                return -1;
        }
        if (!S_ISSOCK(st.st_mode)) {
                log_err("status: %s exists and is not a socket; not touching it", path);
                return -1;
        }
        struct sockaddr_un sun;
        if (set_unix_addr(&sun, path) < 0)
                return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        int rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
        int err = errno;
        close(fd);
        if (rc < 0 && err == ECONNREFUSED) {
                log_info("status: removing stale socket %s", path);
                return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
        }
        log_err("status: another isergw is listening on %s%s%s", path, rc < 0 ? ": " : "",
                rc < 0 ? strerror(err) : "");
        return -1;
}

static int bind_listen_unix(const char *path, mode_t mode, gid_t gid)
{
        struct sockaddr_un sun;
        if (set_unix_addr(&sun, path) < 0)
                return -1;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                log_err("status: socket: %s", strerror(errno));
                return -1;
        }
        const char *what = "bind";
        if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
                goto fail;
        what = "chmod";
        if (chmod(path, mode & 07777) < 0)
                goto fail;
        what = "chown";
        if (chown(path, (uid_t)-1, gid) < 0)
                goto fail;
        what = "listen";
        if (listen(fd, LISTEN_BACKLOG) < 0)
                goto fail;
        return fd;
fail:
        log_err("status: %s %s: %s", what, path, strerror(errno));
        close(fd);
        return -1;
}

/* The socket is made in a private directory next to its final path, given its mode and
 * group there and renamed into place: it is never reachable with other permissions, and the
 * process-wide umask is not touched. */
static int create_unix_socket(struct status_server *s, mode_t mode)
{
        char *copy = strdup(s->path);
        char tmpdir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char tmpsock[sizeof(tmpdir) + 2];
        int n = copy ? snprintf(tmpdir, sizeof(tmpdir), "%s/.isergw-XXXXXX", dirname(copy)) : -1;
        free(copy);
        if (n < 0 || (size_t)n + 2 >= sizeof(tmpdir) || !mkdtemp(tmpdir)) {
                log_err("status: cannot make a temporary directory next to %s: %s", s->path,
                        n < 0 || (size_t)n + 2 >= sizeof(tmpdir) ? "path too long"
                                                                 : strerror(errno));
                return -1;
        }
        snprintf(tmpsock, sizeof(tmpsock), "%s/s", tmpdir);
        int fd = bind_listen_unix(tmpsock, mode, s->gid);
        if (fd >= 0 && rename(tmpsock, s->path) < 0) {
                log_err("status: rename %s to %s: %s", tmpsock, s->path, strerror(errno));
                close(fd);
                fd = -1;
        }
        unlink(tmpsock);
        rmdir(tmpdir);
        return fd;
}

static int open_unix(struct status_server *s, mode_t mode)
{
        if (clear_stale(s->path) < 0)
                return -1;
        s->listen_fd = create_unix_socket(s, mode);
        if (s->listen_fd < 0)
                return -1;
        struct stat st;
        if (stat(s->path, &st) == 0) {
                s->sock_dev = st.st_dev;
                s->sock_ino = st.st_ino;
        }
        return 0;
}

static int resolve_group(const char *name, gid_t *gid)
{
        if (!name) {
                *gid = getegid();
                return 0;
        }
        char buf[4096];
        struct group gr, *res = NULL;
        int rc = getgrnam_r(name, &gr, buf, sizeof(buf), &res);
        if (rc != 0 || !res) {
                log_err("status: unknown group \"%s\"%s%s", name, rc ? ": " : "",
                        rc ? strerror(rc) : "");
                return -1;
        }
        *gid = gr.gr_gid;
        return 0;
}

/* ---- the HTTP listener ---- */

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port (in buf). */
static int split_listen(const char *spec, char *buf, size_t buflen, const char **host,
                        const char **port)
{
        if (snprintf(buf, buflen, "%s", spec) >= (int)buflen)
                return -1;
        char *colon = strrchr(buf, ':');
        if (!colon || colon[1] == '\0')
                return -1;
        *colon = '\0';
        *port = colon + 1;
        char *h = buf;
        size_t hlen = strlen(h);
        if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
                h[hlen - 1] = '\0';
                h++;
        }
        *host = h[0] ? h : "127.0.0.1";
        return 0;
}

static bool is_loopback(const struct sockaddr *sa)
{
        if (sa->sa_family == AF_INET)
                return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
        if (sa->sa_family == AF_INET6)
                return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
        return false;
}

static int listen_tcp(const struct addrinfo *ai)
{
        int fd =
            socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
                return -1;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
                int err = errno;
                close(fd);
                errno = err;
                return -1;
        }
        return fd;
}

static int bound_port(int fd)
{
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return 0;
        if (ss.ss_family == AF_INET)
                return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int open_http(struct status_server *s, const char *spec)
{
        char buf[256];
        const char *host, *port;
        if (split_listen(spec, buf, sizeof(buf), &host, &port) < 0) {
                log_err("status: bad metrics listen address \"%s\" (want HOST:PORT)", spec);
                return -1;
        }
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
        struct addrinfo *ai = NULL;
        int rc = getaddrinfo(host, port, &hints, &ai);
        if (rc != 0) {
                log_err("status: metrics listen address \"%s\": %s", spec, gai_strerror(rc));
                return -1;
        }
        s->http_fd = listen_tcp(ai);
        if (s->http_fd < 0)
                log_err("status: metrics listener on %s: %s", spec, strerror(errno));
        else if (!is_loopback(ai->ai_addr))
                log_warn("status: metrics on %s are reachable from the network, unauthenticated",
                         spec);
        freeaddrinfo(ai);
        if (s->http_fd < 0)
                return -1;
        s->http_port = bound_port(s->http_fd);
        bool v6 = strchr(host, ':') != NULL;
        log_info("status: metrics on http://%s%s%s:%d/metrics", v6 ? "[" : "", host, v6 ? "]" : "",
                 s->http_port);
        return 0;
}

/* ---- lifecycle ---- */

static int watch(struct status_server *s, int fd, uint64_t tag)
{
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
        if (epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                log_err("status: epoll_ctl: %s", strerror(errno));
                return -1;
        }
        return 0;
}

static int start_thread(struct status_server *s)
{
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread takes no signals */
        int rc = pthread_create(&s->thread, NULL, status_thread, s);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc != 0) {
                log_err("status: cannot start thread: %s", strerror(rc));
                return -1;
        }
        pthread_setname_np(s->thread, "isergw-status");
        s->thread_started = true;
        return 0;
}

static struct status_server *server_alloc(const struct status_server_conf *conf,
                                          const struct status_provider *provider)
{
        struct status_server *s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->listen_fd = s->http_fd = s->epoll_fd = s->stop_fd = s->spare_fd = -1;
        s->provider = *provider;
        s->max_clients = conf->max_clients ? conf->max_clients : STATUS_MAX_CLIENTS;
        s->max_output = conf->max_output ? conf->max_output : STATUS_MAX_OUTPUT;
        s->path = strdup(conf->path);
        s->clients = calloc(s->max_clients, sizeof(*s->clients));
        if (!s->path || !s->clients) {
                free(s->path);
                free(s->clients);
                free(s);
                return NULL;
        }
        return s;
}

static int server_open(struct status_server *s, const struct status_server_conf *conf)
{
        if (resolve_group(conf->group, &s->gid) < 0)
                return -1;
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (s->epoll_fd < 0 || s->stop_fd < 0) {
                log_err("status: %s", strerror(errno));
                return -1;
        }
        if (conf->metrics_listen && open_http(s, conf->metrics_listen) < 0)
                return -1;
        if (open_unix(s, conf->mode) < 0)
                return -1;
        if (watch(s, s->stop_fd, TAG_STOP) < 0 || watch(s, s->listen_fd, TAG_UNIX) < 0)
                return -1;
        if (s->http_fd >= 0 && watch(s, s->http_fd, TAG_HTTP) < 0)
                return -1;
        return start_thread(s);
}

struct status_server *status_server_start(const struct status_server_conf *conf,
                                          const struct status_provider *provider)
{
        if (!conf || !conf->path || !provider) {
                log_err("status: no socket path or provider");
                return NULL;
        }
        struct status_server *s = server_alloc(conf, provider);
        if (!s) {
                log_err("status: out of memory");
                return NULL;
        }
        if (server_open(s, conf) < 0) {
                status_server_stop(s);
                return NULL;
        }
        log_info("status: listening on %s (mode %04o, group %u)", s->path,
                 (unsigned)(conf->mode & 07777), (unsigned)s->gid);
        return s;
}

/* Removes the socket file only if it is still the one we made. */
static void remove_socket_file(const struct status_server *s)
{
        struct stat st;
        if (stat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
                unlink(s->path);
}

static void close_fd(int fd)
{
        if (fd >= 0)
                close(fd);
}

void status_server_stop(struct status_server *s)
{
        if (!s)
                return;
        if (s->thread_started) {
                uint64_t one = 1;
                if (write(s->stop_fd, &one, sizeof(one)) < 0)
                        log_err("status: cannot signal the status thread: %s", strerror(errno));
                pthread_join(s->thread, NULL);
        }
        for (unsigned i = 0; i < s->max_clients; i++) {
                if (s->clients[i])
                        client_close(s, s->clients[i]);
        }
        if (s->listen_fd >= 0) {
                close(s->listen_fd);
                remove_socket_file(s);
        }
        close_fd(s->http_fd);
        close_fd(s->epoll_fd);
        close_fd(s->stop_fd);
        close_fd(s->spare_fd);
        free(s->clients);
        free(s->path);
        free(s);
}

int status_server_metrics_port(const struct status_server *s)
{
        return s ? s->http_port : 0;
}
