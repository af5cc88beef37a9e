/* The socket side of isergw-ctl: connect, send one request line, read one reply line. */
#include "ctl/ctl.h"
#include "src/status.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPLY (256u * 1024 * 1024)

static const char *connect_hint(int err)
{
        if (err == EACCES || err == EPERM)
                return "are you root or in the socket's group?";
        return "is isergw running?";
}

int ctl_connect(struct ctl_conn *c, const char *path, char *err, size_t errlen)
{
        memset(c, 0, sizeof(*c));
        c->fd = -1;
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sun.sun_path)) {
                snprintf(err, errlen, "cannot connect to %s: path too long", path);
                return -1;
        }
        strcpy(sun.sun_path, path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
                int e = errno;
                snprintf(err, errlen, "cannot connect to %s: %s (%s)", path, strerror(e),
                         connect_hint(e));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        c->fd = fd;
        return 0;
}

void ctl_close(struct ctl_conn *c)
{
        if (c->fd >= 0)
                close(c->fd);
        free(c->buf);
        memset(c, 0, sizeof(*c));
        c->fd = -1;
}

static int send_all(int fd, const char *p, size_t len, char *err, size_t errlen)
{
        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        snprintf(err, errlen, "sending the request: %s", strerror(errno));
                        return -1;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int send_request(struct ctl_conn *c, json_t *req, char *err, size_t errlen)
{
        json_t *full = json_pack("{s:i}", "version", STATUS_PROTOCOL_VERSION);
        json_object_update(full, req);
        json_decref(req);
        char *line = json_dumps(full, JSON_COMPACT);
        json_decref(full);
        if (!line) {
                snprintf(err, errlen, "cannot encode the request");
                return -1;
        }
        size_t len = strlen(line);
        int rc = send_all(c->fd, line, len, err, errlen);
        if (rc == 0)
                rc = send_all(c->fd, "\n", 1, err, errlen);
        free(line);
        return rc;
}

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_readable(int fd, long long deadline, char *err, size_t errlen)
{
        for (;;) {
                int timeout = -1;
                if (deadline >= 0) {
                        long long left = deadline - now_ms();
                        timeout = left > 0 ? (int)left : 0;
                }
                struct pollfd pfd = {.fd = fd, .events = POLLIN};
                int n = poll(&pfd, 1, timeout);
                if (n > 0)
                        return 0;
                if (n == 0) {
                        snprintf(err, errlen, "no reply from isergw (timed out)");
                        return -1;
                }
                if (errno != EINTR) {
                        snprintf(err, errlen, "waiting for the reply: %s", strerror(errno));
                        return -1;
                }
        }
}

static int grow(struct ctl_conn *c, char *err, size_t errlen)
{
        if (c->len < c->cap)
                return 0;
        size_t cap = c->cap ? c->cap * 2 : 65536;
        char *p = cap <= MAX_REPLY ? realloc(c->buf, cap) : NULL;
        if (!p) {
                snprintf(err, errlen, "reply too large");
                return -1;
        }
        c->buf = p;
        c->cap = cap;
        return 0;
}

/* Reads until c->buf holds a full line; returns its length (without the newline). */
static long read_line(struct ctl_conn *c, int timeout_ms, char *err, size_t errlen)
{
        long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
        for (;;) {
                char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
                if (nl)
                        return nl - c->buf;
                if (grow(c, err, errlen) < 0 || wait_readable(c->fd, deadline, err, errlen) < 0)
                        return -1;
                ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        snprintf(err, errlen, "isergw closed the connection without replying%s%s",
                                 n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
                        return -1;
                }
                c->len += (size_t)n;
        }
}

/* Checks the envelope; returns the result (new reference) or NULL with err. */
static json_t *unwrap(json_t *reply, char *err, size_t errlen)
{
        const json_t *version = json_object_get(reply, "version");
        const json_t *ok = json_object_get(reply, "ok");
        if (!json_is_boolean(ok) || !json_is_integer(version)) {
                snprintf(err, errlen, "unexpected reply from isergw");
                return NULL;
        }
        if (json_integer_value(version) != STATUS_PROTOCOL_VERSION) {
                snprintf(err, errlen, "isergw speaks protocol version %lld, isergw-ctl %d",
                         (long long)json_integer_value(version), STATUS_PROTOCOL_VERSION);
                return NULL;
        }
        if (json_is_false(ok)) {
                const char *text = json_string_value(json_object_get(reply, "error"));
                snprintf(err, errlen, "%s", text ? text : "request refused");
                return NULL;
        }
        json_t *result = json_object_get(reply, "result");
        if (!json_is_object(result)) {
                snprintf(err, errlen, "reply from isergw has no result");
                return NULL;
        }
        return json_incref(result);
}

/* After a transport error the connection is closed (fd -1). */
static void broken(struct ctl_conn *c)
{
        close(c->fd);
        c->fd = -1;
}

json_t *ctl_call(struct ctl_conn *c, json_t *req, int timeout_ms, char *err, size_t errlen)
{
        if (c->fd < 0) {
                json_decref(req);
                snprintf(err, errlen, "not connected");
                return NULL;
        }
        char send_err[CTL_ERR_LEN] = "";
        if (send_request(c, req, send_err, sizeof(send_err)) < 0)
                timeout_ms = 1000; /* a refusal may be waiting to be read */
        long len = read_line(c, timeout_ms, err, errlen);
        if (len < 0 && send_err[0])
                snprintf(err, errlen, "%s", send_err);
        if (len < 0) {
                broken(c);
                return NULL;
        }
        json_error_t jerr;
        json_t *reply = json_loadb(c->buf, (size_t)len, 0, &jerr);
        c->len -= (size_t)len + 1;
        memmove(c->buf, c->buf + len + 1, c->len);
        if (!reply) {
                snprintf(err, errlen, "unreadable reply from isergw: %s", jerr.text);
                return NULL;
        }
        json_t *result = unwrap(reply, err, errlen);
        json_decref(reply);
        return result;
}

json_t *ctl_query(struct ctl_conn *c, const char *object, char *err, size_t errlen)
{
        json_t *req = json_pack("{s:s, s:s}", "cmd", "query", "object", object);
        return ctl_call(c, req, 30000, err, errlen);
}
