/* The status server against a fake provider: framing, errors, operations, many and slow
 * clients, permissions, metrics (text and HTTP), and isergw-ctl when it has been built. */
#include "src/status.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the fake provider ---- */

static const char *const fake_objects[][2] = {
    {"gateway", "{\"version\":\"0.1.0\",\"uptime_s\":3723,\"config_path\":null,"
                "\"reactors\":4,\"pid\":1234}"},
    {"targets", "{\"targets\":[{\"name\":\"iqn.2024-01.org.example:disk1\",\"alias\":\"disk1\","
                "\"portals\":[\"0.0.0.0:3260\",\"[::]:3260\"],\"luns\":[0,1]}]}"},
    {"luns", "{\"luns\":[{\"target\":\"iqn.2024-01.org.example:disk1\",\"lun\":0,"
             "\"size_bytes\":10737418240,\"block_size\":512,\"backend\":{\"type\":\"file\","
             "\"path\":\"/tmp/disk1.img\",\"state\":\"online\",\"last_error\":null},"
             "\"write_cache\":false},{\"target\":\"iqn.2024-01.org.example:disk1\",\"lun\":1,"
             "\"size_bytes\":1048576,\"block_size\":4096,\"backend\":{\"type\":\"file\","
             "\"path\":\"/tmp/disk2.img\",\"state\":\"failed\",\"last_error\":\"write at 0: "
             "Input/output error\"},\"write_cache\":true}]}"},
    {"sessions", "{\"sessions\":[{\"tsih\":1,\"isid\":\"23d000000001\",\"initiator_name\":"
                 "\"iqn.1993-08.org.debian:01:abc\",\"target\":\"iqn.2024-01.org.example:disk1\","
                 "\"type\":\"normal\",\"connections\":[{\"cid\":0,\"portal\":\"192.168.1.10:3260\","
                 "\"peer\":\"192.168.1.20:51234\",\"transport\":\"tcp\",\"reactor\":2,\"params\":{"
                 "\"header_digest\":\"None\",\"data_digest\":\"CRC32C\",\"max_recv_dsl\":262144,"
                 "\"max_xmit_dsl\":262144,\"max_burst\":1048576,\"first_burst\":65536,"
                 "\"immediate_data\":true,\"initial_r2t\":false,\"max_outstanding_r2t\":1},"
                 "\"commands_in_flight\":3}]}]}"},
    {"pool", "{\"line_size\":65536,\"lines_total\":16384,\"lines_free\":12000,"
             "\"lines_clean\":3000,\"lines_dirty\":1000,\"dpt_entries_in_use\":4000,"
             "\"dpt_high_water\":5120,\"commands_waiting_for_lines\":0,\"huge_pages\":true}"},
    {"cache", "{\"enabled\":false}"},
    {"mirror", "{\"volumes\":[]}"},
    {"stats", "{\"commands\":1000,\"read_commands\":600,\"write_commands\":380,"
              "\"read_bytes\":2457600,\"write_bytes\":1556480,\"write_data_bytes\":1556480,"
              "\"write_copy_bytes\":0,\"read_copy_bytes\":0,\"r2t_sent\":120,"
              "\"data_out_pdus\":240,\"data_in_pdus\":600,\"rejects\":0,\"digest_errors\":0,"
              "\"login_failures\":1,"
              "\"connections_accepted\":4,\"connections_active\":2,\"sessions_active\":2,"
              "\"errors\":3,\"protocol_errors\":5,\"tmf_requests\":6,\"nop_timeouts\":7}"},
};

#define NOBJECTS (sizeof(fake_objects) / sizeof(fake_objects[0]))

struct fake {
        pthread_mutex_t lock;
        int flushes;
        json_t *last_flush;
        int faults;
        json_t *last_fault; /* the whole request */
};

static json_t *fake_object(const char *name)
{
        for (size_t i = 0; i < NOBJECTS; i++) {
                if (strcmp(fake_objects[i][0], name) == 0)
                        return json_loads(fake_objects[i][1], 0, NULL);
        }
        return NULL;
}

static json_t *fake_query(void *ctx, const char *object, const json_t *args, char *err,
                          size_t errlen)
{
        json_t *v = fake_object(object);
        if (!v)
                snprintf(err, errlen, "no such object: %s", object);
        return v;
}

/* Answers like the daemon: the settings applied (absent ones are 0). */
static int fake_fault(struct fake *f, const json_t *args, json_t **result, char *err, size_t errlen)
{
        const json_t *lun = json_object_get(args, "lun");
        pthread_mutex_lock(&f->lock);
        f->faults++;
        json_decref(f->last_fault);
        f->last_fault = json_deep_copy(args);
        pthread_mutex_unlock(&f->lock);
        if (strcmp(json_string_value(json_object_get(lun, "target")), "iqn.plain") == 0) {
                snprintf(err, errlen, "LUN has no fault injection");
                return -1;
        }
        *result =
            json_pack("{s:O, s:O, s:I, s:I, s:I, s:I, s:I, s:s}", "target",
                      json_object_get(lun, "target"), "lun", json_object_get(lun, "lun"),
                      "fail_reads", json_integer_value(json_object_get(args, "fail_reads")),
                      "fail_writes", json_integer_value(json_object_get(args, "fail_writes")),
                      "fail_flushes", json_integer_value(json_object_get(args, "fail_flushes")),
                      "delay_ms", json_integer_value(json_object_get(args, "delay_ms")),
                      "backend_errors", (json_int_t)5, "last_error", "injected");
        return 0;
}

static int fake_operate(void *ctx, const char *op, const json_t *args, json_t **result, char *err,
                        size_t errlen)
{
        struct fake *f = ctx;
        if (strcmp(op, "fault") == 0)
                return fake_fault(f, args, result, err, errlen);
        if (strcmp(op, "flush") != 0) {
                snprintf(err, errlen, "%s: not supported yet", op);
                return -1;
        }
        const json_t *lun = json_object_get(args, "lun");
        const char *target = json_string_value(json_object_get(lun, "target"));
        pthread_mutex_lock(&f->lock);
        f->flushes++;
        json_decref(f->last_flush);
        f->last_flush = json_deep_copy(lun);
        pthread_mutex_unlock(&f->lock);
        if (strcmp(target, "iqn.fail") == 0) {
                snprintf(err, errlen, "flush failed: Input/output error");
                return -1;
        }
        *result = json_pack("{s:I}", "flushed_bytes", (json_int_t)4096);
        return 0;
}

/* ---- the server under test ---- */

struct fixture {
        char dir[64];
        char path[100];
        struct fake fake;
        struct status_provider provider;
        struct status_server *srv;
};

static void fx_init(struct fixture *fx)
{
        memset(fx, 0, sizeof(*fx));
        snprintf(fx->dir, sizeof(fx->dir), "/tmp/isergw-status-XXXXXX");
        cr_assert_not_null(mkdtemp(fx->dir));
        snprintf(fx->path, sizeof(fx->path), "%s/isergw.sock", fx->dir);
        pthread_mutex_init(&fx->fake.lock, NULL);
        fx->provider = (struct status_provider){
            .ctx = &fx->fake, .query = fake_query, .operate = fake_operate};
}

static struct status_server *fx_start(struct fixture *fx, struct status_server_conf conf)
{
        conf.path = fx->path;
        if (!conf.mode)
                conf.mode = 0660;
        fx->srv = status_server_start(&conf, &fx->provider);
        return fx->srv;
}

static void fx_start_default(struct fixture *fx)
{
        cr_assert_not_null(fx_start(fx, (struct status_server_conf){0}), "server did not start");
}

static void fx_done(struct fixture *fx)
{
        status_server_stop(fx->srv);
        fx->srv = NULL;
        unlink(fx->path);
        rmdir(fx->dir);
        json_decref(fx->fake.last_flush);
        json_decref(fx->fake.last_fault);
        pthread_mutex_destroy(&fx->fake.lock);
}

/* ---- clients (no assertions: also used from threads) ---- */

struct conn {
        int fd;
        char *buf;
        size_t len;
        size_t cap;
};

static int unix_connect(const char *path)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
                int err = errno;
                close(fd);
                errno = err;
                return -1;
        }
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        return fd;
}

static int send_all(int fd, const char *p, size_t len)
{
        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -1;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Reads one line; returns its length, or -1 on EOF or error. */
static long read_line(struct conn *c)
{
        for (;;) {
                char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
                if (nl)
                        return nl - c->buf;
                if (c->len == c->cap) {
                        c->cap = c->cap ? c->cap * 2 : 4096;
                        c->buf = realloc(c->buf, c->cap);
                }
                ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                c->len += (size_t)n;
        }
}

static json_t *read_reply(struct conn *c)
{
        long len = read_line(c);
        if (len < 0)
                return NULL;
        json_t *reply = json_loadb(c->buf, (size_t)len, 0, NULL);
        c->len -= (size_t)len + 1;
        memmove(c->buf, c->buf + len + 1, c->len);
        return reply;
}

static void conn_close(struct conn *c)
{
        if (c->fd >= 0)
                close(c->fd);
        free(c->buf);
        memset(c, 0, sizeof(*c));
        c->fd = -1;
}

/* ---- asserting helpers (test thread only) ---- */

static void conn_open(struct conn *c, const char *path)
{
        memset(c, 0, sizeof(*c));
        c->fd = unix_connect(path);
        cr_assert_geq(c->fd, 0, "connect %s: %s", path, strerror(errno));
}

static void conn_send(struct conn *c, const char *text)
{
        cr_assert_eq(send_all(c->fd, text, strlen(text)), 0, "send: %s", strerror(errno));
}

static json_t *conn_reply(struct conn *c)
{
        json_t *reply = read_reply(c);
        cr_assert_not_null(reply, "no reply (or not JSON)");
        cr_assert(json_is_object(reply));
        cr_assert_eq(json_integer_value(json_object_get(reply, "version")), 1);
        return reply;
}

static json_t *call(struct conn *c, const char *line)
{
        conn_send(c, line);
        conn_send(c, "\n");
        return conn_reply(c);
}

/* Asserts success; returns the result (new reference) and releases the reply. */
static json_t *expect_ok(json_t *reply)
{
        char *text = json_dumps(reply, JSON_COMPACT);
        cr_assert(json_is_true(json_object_get(reply, "ok")), "not ok: %s", text);
        free(text);
        cr_assert_null(json_object_get(reply, "error"));
        json_t *result = json_object_get(reply, "result");
        cr_assert(json_is_object(result));
        json_incref(result);
        json_decref(reply);
        return result;
}

/* Asserts failure with that code; returns a copy of the error text. */
static char *expect_error(json_t *reply, const char *code)
{
        cr_assert(json_is_false(json_object_get(reply, "ok")));
        cr_assert_null(json_object_get(reply, "result"));
        cr_assert_str_eq(json_string_value(json_object_get(reply, "code")), code);
        const char *error = json_string_value(json_object_get(reply, "error"));
        cr_assert(error && error[0], "empty error text");
        char *copy = strdup(error);
        json_decref(reply);
        return copy;
}

static void expect_error_free(json_t *reply, const char *code)
{
        free(expect_error(reply, code));
}

static void expect_query(struct conn *c, const char *object)
{
        char line[128];
        snprintf(line, sizeof(line), "{\"version\":1,\"cmd\":\"query\",\"object\":\"%s\"}", object);
        json_t *result = expect_ok(call(c, line));
        json_t *want = fake_object(object);
        cr_assert(json_equal(result, want), "%s differs", object);
        json_decref(want);
        json_decref(result);
}

/* ---- requests and replies ---- */

Test(status, query_every_object)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        for (size_t i = 0; i < NOBJECTS; i++)
                expect_query(&c, fake_objects[i][0]);
        conn_close(&c);
        fx_done(&fx);
}

Test(status, query_errors)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        char *error = expect_error(
            call(&c, "{\"version\":1,\"cmd\":\"query\",\"object\":\"nope\"}"), "failed");
        cr_assert(strstr(error, "no such object: nope"), "%s", error);
        free(error);
        expect_error_free(call(&c, "{\"version\":1,\"cmd\":\"query\"}"), "bad-request");
        expect_error_free(call(&c, "{\"version\":1,\"cmd\":\"query\",\"object\":7}"),
                          "bad-request");
        expect_query(&c, "stats");
        conn_close(&c);
        fx_done(&fx);
}

Test(status, id_is_echoed)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        json_t *reply =
            call(&c, "{\"version\":1,\"cmd\":\"query\",\"object\":\"pool\",\"id\":[7]}");
        json_t *want = json_pack("[i]", 7);
        cr_assert(json_equal(json_object_get(reply, "id"), want));
        json_decref(want);
        json_decref(expect_ok(reply));
        reply = call(&c, "{\"version\":1,\"cmd\":\"nope\",\"id\":\"x\"}");
        cr_assert_str_eq(json_string_value(json_object_get(reply, "id")), "x");
        expect_error_free(reply, "unknown-command");
        conn_close(&c);
        fx_done(&fx);
}

Test(status, bad_requests_keep_the_connection)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        static const char *const bad[][2] = {
            {"{\"version\":1,\"cmd\":", "bad-request"},
            {"not json at all", "bad-request"},
            {"[1,2,3]", "bad-request"},
            {"\"query\"", "bad-request"},
            {"{\"version\":1,\"cmd\":\"query\",\"cmd\":\"query\",\"object\":\"pool\"}",
             "bad-request"},
            {"{\"version\":2,\"cmd\":\"query\",\"object\":\"pool\"}", "bad-version"},
            {"{\"version\":\"1\",\"cmd\":\"query\",\"object\":\"pool\"}", "bad-version"},
            {"{\"cmd\":\"query\",\"object\":\"pool\"}", "bad-version"},
            {"{\"version\":1}", "bad-request"},
            {"{\"version\":1,\"cmd\":42}", "bad-request"},
            {"{\"version\":1,\"cmd\":\"frobnicate\"}", "unknown-command"},
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                expect_error_free(call(&c, bad[i][0]), bad[i][1]);
                expect_query(&c, "gateway");
        }
        char *error = expect_error(call(&c, "{\"version\":3,\"cmd\":\"query\"}"), "bad-version");
        cr_assert(strstr(error, "version 3"), "%s", error);
        free(error);
        conn_close(&c);
        fx_done(&fx);
}

Test(status, oversized_line_is_discarded)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        /* A line far over the limit, sent in pieces, JSON-looking at the start. */
        size_t big = 3 * STATUS_MAX_LINE;
        char *line = malloc(big + 1);
        memset(line, ' ', big);
        memcpy(line, "{\"version\":1,\"cmd\":\"query\",\"object\":\"pool\"", 42);
        line[big] = '\0';
        for (size_t off = 0; off < big; off += 10000) {
                size_t n = big - off < 10000 ? big - off : 10000;
                cr_assert_eq(send_all(c.fd, line + off, n), 0);
        }
        conn_send(&c, "}\n");
        char *error = expect_error(conn_reply(&c), "too-long");
        cr_assert(strstr(error, "65536"), "%s", error);
        free(error);
        expect_query(&c, "pool");
        /* Exactly at the limit is fine. */
        memset(line, ' ', STATUS_MAX_LINE);
        memcpy(line, "{\"version\":1,\"cmd\":\"query\",\"object\":\"pool\"}", 43);
        line[STATUS_MAX_LINE] = '\0';
        json_decref(expect_ok(call(&c, line)));
        /* One byte more is not, and the next request on the same write is served. */
        line[STATUS_MAX_LINE] = ' ';
        cr_assert_eq(send_all(c.fd, line, STATUS_MAX_LINE + 1), 0);
        conn_send(&c, "\n{\"version\":1,\"cmd\":\"query\",\"object\":\"mirror\"}\n");
        expect_error_free(conn_reply(&c), "too-long");
        json_decref(expect_ok(conn_reply(&c)));
        free(line);
        conn_close(&c);
        fx_done(&fx);
}

Test(status, pipelined_requests_blank_lines_and_crlf)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        conn_send(&c, "\n   \n{\"version\":1,\"cmd\":\"query\",\"object\":\"pool\",\"id\":1}\r\n"
                      "{\"version\":1,\"cmd\":\"bogus\",\"id\":2}\n\r\n"
                      "{\"version\":1,\"cmd\":\"query\",\"object\":\"gateway\",\"id\":3}\n");
        for (int id = 1; id <= 3; id++) {
                json_t *reply = conn_reply(&c);
                cr_assert_eq(json_integer_value(json_object_get(reply, "id")), id);
                cr_assert_eq(json_is_true(json_object_get(reply, "ok")), id != 2);
                json_decref(reply);
        }
        /* Half-close: the reply still arrives, then the server closes. */
        conn_send(&c, "{\"version\":1,\"cmd\":\"query\",\"object\":\"stats\"}\n");
        shutdown(c.fd, SHUT_WR);
        json_decref(expect_ok(conn_reply(&c)));
        cr_assert_null(read_reply(&c));
        conn_close(&c);
        fx_done(&fx);
}

/* ---- operations ---- */

Test(status, flush)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        json_t *result = expect_ok(call(&c, "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":"
                                            "\"iqn.2024-01.org.example:disk1\",\"lun\":1}}"));
        json_t *want = json_pack("{s:s, s:i, s:i}", "target", "iqn.2024-01.org.example:disk1",
                                 "lun", 1, "flushed_bytes", 4096);
        cr_assert(json_equal(result, want));
        json_decref(result);
        json_decref(want);
        cr_assert_eq(fx.fake.flushes, 1);
        want = json_pack("{s:s, s:i}", "target", "iqn.2024-01.org.example:disk1", "lun", 1);
        cr_assert(json_equal(fx.fake.last_flush, want));
        json_decref(want);

        char *error = expect_error(
            call(&c, "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":\"iqn.fail\","
                     "\"lun\":0}}"),
            "failed");
        cr_assert_str_eq(error, "flush failed: Input/output error");
        free(error);
        cr_assert_eq(fx.fake.flushes, 2);
        conn_close(&c);
        fx_done(&fx);
}

Test(status, flush_bad_arguments_never_reach_the_daemon)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        static const char *const bad[] = {
            "{\"version\":1,\"cmd\":\"flush\"}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":0}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"lun\":0}}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":\"t\"}}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":\"t\",\"lun\":-1}}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":\"t\",\"lun\":\"0\"}}",
            "{\"version\":1,\"cmd\":\"flush\",\"lun\":{\"target\":1,\"lun\":0}}",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                expect_error_free(call(&c, bad[i]), "bad-request");
        cr_assert_eq(fx.fake.flushes, 0);
        char *error = expect_error(call(&c, "{\"version\":1,\"cmd\":\"mirror-establish\",\"lun\":"
                                            "{\"target\":\"t\",\"lun\":0},\"peer\":\"h:1\"}"),
                                   "failed");
        cr_assert_str_eq(error, "mirror-establish: not supported yet");
        free(error);
        /* mirror operations check their LUN and flags before the daemon sees them */
        expect_error_free(call(&c, "{\"version\":1,\"cmd\":\"mirror-promote\",\"lun\":"
                                   "{\"target\":\"t\"}}"),
                          "bad-request");
        expect_error_free(call(&c, "{\"version\":1,\"cmd\":\"mirror-promote\",\"lun\":"
                                   "{\"target\":\"t\",\"lun\":0},\"force\":\"yes\"}"),
                          "bad-request");
        conn_close(&c);
        fx_done(&fx);
}

Test(status, fault)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        const char *req = "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":\"iqn.t\","
                          "\"lun\":2},\"fail_reads\":0,\"fail_writes\":4294967295,"
                          "\"fail_flushes\":3,\"delay_ms\":60000}";
        json_t *result = expect_ok(call(&c, req));
        cr_assert_eq(json_integer_value(json_object_get(result, "fail_writes")), 4294967295ll);
        cr_assert_eq(json_integer_value(json_object_get(result, "delay_ms")), 60000);
        json_decref(result);
        cr_assert_eq(fx.fake.faults, 1);
        json_t *want = json_loads(req, 0, NULL);
        cr_assert(json_equal(fx.fake.last_fault, want));
        json_decref(want);
        /* Every setting is optional (absent: 0, i.e. clear). */
        result = expect_ok(call(&c, "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":"
                                    "\"iqn.t\",\"lun\":0}}"));
        json_decref(result);
        cr_assert_eq(fx.fake.faults, 2);
        char *error = expect_error(call(&c, "{\"version\":1,\"cmd\":\"fault\",\"lun\":{"
                                            "\"target\":\"iqn.plain\",\"lun\":0},"
                                            "\"fail_writes\":1}"),
                                   "failed");
        cr_assert_str_eq(error, "LUN has no fault injection");
        free(error);
        conn_close(&c);
        fx_done(&fx);
}

Test(status, fault_bad_arguments_never_reach_the_daemon)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
#define LUN_OK "\"lun\":{\"target\":\"t\",\"lun\":0}"
        static const char *const bad[] = {
            "{\"version\":1,\"cmd\":\"fault\"}",
            "{\"version\":1,\"cmd\":\"fault\",\"fail_writes\":1}",
            "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":\"t\",\"lun\":-1}}",
            "{\"version\":1,\"cmd\":\"fault\",\"lun\":{\"target\":\"t\"}}",
            "{\"version\":1,\"cmd\":\"fault\",\"lun\":\"t:0\"}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_reads\":-1}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_reads\":\"3\"}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_writes\":1.5}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_writes\":true}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_writes\":null}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_writes\":4294967296}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"fail_flushes\":[1]}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"delay_ms\":60001}",
            "{\"version\":1,\"cmd\":\"fault\"," LUN_OK ",\"delay_ms\":-5}",
        };
#undef LUN_OK
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char *error = expect_error(call(&c, bad[i]), "bad-request");
                cr_assert(strstr(error, "fault"), "%s: %s", bad[i], error);
                free(error);
        }
        cr_assert_eq(fx.fake.faults, 0);
        conn_close(&c);
        fx_done(&fx);
}

/* ---- metrics ---- */

struct family {
        char name[128];
        char type[16];
        bool help;
        bool sampled;
};

struct checker {
        struct family fam[256];
        size_t nfam;
        const char *current; /* family of the previous sample */
        char why[512];
};

static bool name_char(char ch, bool first)
{
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
               (!first && ch >= '0' && ch <= '9');
}

/* Length of the metric or label name at p (0 if none). */
static size_t name_len(const char *p)
{
        size_t n = 0;
        while (p[n] && name_char(p[n], n == 0))
                n++;
        return n;
}

static struct family *family(struct checker *k, const char *name, size_t len)
{
        for (size_t i = 0; i < k->nfam; i++) {
                if (strlen(k->fam[i].name) == len && strncmp(k->fam[i].name, name, len) == 0)
                        return &k->fam[i];
        }
        if (k->nfam == 256 || len >= sizeof(k->fam[0].name))
                return NULL;
        struct family *f = &k->fam[k->nfam++];
        memcpy(f->name, name, len);
        f->name[len] = '\0';
        return f;
}

static bool check_help(struct checker *k, const char *p)
{
        size_t n = name_len(p);
        struct family *f = n ? family(k, p, n) : NULL;
        if (!f || p[n] != ' ' || !p[n + 1] || f->help || f->sampled)
                return false;
        f->help = true;
        return true;
}

static bool check_type(struct checker *k, const char *p)
{
        static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
        size_t n = name_len(p);
        struct family *f = n ? family(k, p, n) : NULL;
        if (!f || p[n] != ' ' || f->type[0] || f->sampled)
                return false;
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
                if (strcmp(p + n + 1, types[i]) == 0) {
                        snprintf(f->type, sizeof(f->type), "%s", types[i]);
                        return true;
                }
        }
        return false;
}

/* {name="value",...}; returns the position after it, or NULL. */
static const char *check_labels(const char *p)
{
        if (*p != '{')
                return p;
        p++;
        while (*p != '}') {
                size_t n = name_len(p);
                if (!n || p[n] != '=' || p[n + 1] != '"')
                        return NULL;
                for (p += n + 2; *p != '"'; p++) {
                        if (!*p || *p == '\n')
                                return NULL;
                        if (*p == '\\' && p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                                return NULL;
                        if (*p == '\\')
                                p++;
                }
                p++;
                if (*p == ',')
                        p++;
                else if (*p != '}')
                        return NULL;
        }
        return p + 1;
}

static bool check_sample(struct checker *k, const char *p)
{
        size_t n = name_len(p);
        struct family *f = n ? family(k, p, n) : NULL;
        if (!f || !f->type[0] || !f->help)
                return false;
        if (strcmp(f->type, "counter") == 0 && (n < 6 || strncmp(p + n - 6, "_total", 6) != 0))
                return false;
        if (f->sampled && k->current != f->name)
                return false; /* a family's samples must be together */
        f->sampled = true;
        k->current = f->name;
        const char *v = check_labels(p + n);
        if (!v || *v != ' ')
                return false;
        char *end = NULL;
        strtod(v + 1, &end);
        return end != v + 1 && *end == '\0';
}

static bool check_line(struct checker *k, const char *line)
{
        if (strncmp(line, "# HELP ", 7) == 0)
                return check_help(k, line + 7);
        if (strncmp(line, "# TYPE ", 7) == 0)
                return check_type(k, line + 7);
        if (line[0] == '#')
                return true;
        return check_sample(k, line);
}

/* Checks the exposition format line by line; on failure k->why says where. */
static bool check_exposition(struct checker *k, const char *text)
{
        memset(k, 0, sizeof(*k));
        size_t len = strlen(text);
        if (len > 0 && text[len - 1] != '\n') {
                snprintf(k->why, sizeof(k->why), "no newline at the end");
                return false;
        }
        char *copy = strdup(text), *save = NULL;
        bool ok = true;
        for (char *line = strtok_r(copy, "\n", &save); line && ok;
             line = strtok_r(NULL, "\n", &save)) {
                ok = check_line(k, line);
                if (!ok)
                        snprintf(k->why, sizeof(k->why), "bad line: %s", line);
        }
        for (size_t i = 0; ok && i < k->nfam; i++) {
                ok = k->fam[i].sampled;
                if (!ok)
                        snprintf(k->why, sizeof(k->why), "%s has no samples", k->fam[i].name);
        }
        free(copy);
        return ok;
}

static bool has_line(const char *text, const char *line)
{
        size_t n = strlen(line);
        for (const char *p = text; (p = strstr(p, line)); p += n) {
                if ((p == text || p[-1] == '\n') && p[n] == '\n')
                        return true;
        }
        return false;
}

/* Runs promtool, if installed, on the text; returns its exit status or -1 if absent. */
static int promtool_check(const char *text)
{
        if (system("command -v promtool >/dev/null 2>&1") != 0)
                return -1;
        char path[] = "/tmp/isergw-metrics-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
        int rc = system(cmd);
        unlink(path);
        return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static json_t *full_snapshot(void)
{
        static const char *const names[] = {"gateway", "stats", "pool",
                                            "cache",   "luns",  "sessions"};
        json_t *snapshot = json_object();
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                json_object_set_new(snapshot, names[i], fake_object(names[i]));
        return snapshot;
}

static void check_metrics_text(const char *text)
{
        struct checker k;
        cr_assert(check_exposition(&k, text), "%s\n%s", k.why, text);
        int rc = promtool_check(text);
        cr_assert(rc == -1 || rc == 0, "promtool check metrics failed (%d) on:\n%s", rc, text);
}

Test(metrics, render_format_and_values)
{
        json_t *snapshot = full_snapshot();
        json_object_set_new(snapshot, "cache",
                            json_pack("{s:b, s:f, s:i, s:i, s:i, s:f, s:i}", "enabled", 1,
                                      "hit_ratio", 0.75, "read_hits", 30, "read_misses", 10,
                                      "destage_backlog_bytes", 8192, "destage_rate_bps", 1e6,
                                      "destaged_bytes", 123));
        char *text = status_metrics_render(snapshot);
        json_decref(snapshot);
        cr_assert_not_null(text);
        check_metrics_text(text);
        static const char *const want[] = {
            "# TYPE isergw_commands_total counter",
            "isergw_commands_total 1000",
            "isergw_read_bytes_total 2457600",
            "isergw_write_copy_bytes_total 0",
            "isergw_errors_total 3",
            "isergw_data_in_pdus_total 600",
            "isergw_protocol_errors_total 5",
            "isergw_tmf_requests_total 6",
            "isergw_nop_timeouts_total 7",
            "isergw_pool_huge_pages 1",
            "# TYPE isergw_sessions_active gauge",
            "isergw_sessions_active 2",
            "isergw_connections_active 2",
            "isergw_commands_in_flight 3",
            "isergw_build_info{version=\"0.1.0\"} 1",
            "isergw_uptime_seconds 3723",
            "isergw_reactors 4",
            "isergw_pool_lines{state=\"free\"} 12000",
            "isergw_pool_lines{state=\"dirty\"} 1000",
            "isergw_pool_capacity_lines 16384",
            "isergw_dpt_entries_high_water 5120",
            "isergw_cache_enabled 1",
            "isergw_cache_hit_ratio 0.75",
            "isergw_cache_destage_rate_bytes_per_second 1000000",
            "isergw_lun_size_bytes{target=\"iqn.2024-01.org.example:disk1\",lun=\"0\"} "
            "10737418240",
            "isergw_lun_backend_up{target=\"iqn.2024-01.org.example:disk1\",lun=\"1\","
            "type=\"file\"} 0",
            "isergw_lun_write_cache{target=\"iqn.2024-01.org.example:disk1\",lun=\"1\"} 1",
        };
        for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                cr_assert(has_line(text, want[i]), "missing \"%s\" in:\n%s", want[i], text);
        free(text);
}

Test(metrics, label_escaping_and_missing_objects)
{
        json_t *snapshot =
            json_pack("{s:{s:[{s:s, s:i, s:i, s:{s:s, s:s}}]}, s:{s:i}}", "luns", "luns", "target",
                      "iqn.x\"y\\z\nw", "lun", 3, "size_bytes", 1024, "backend", "type", "fi\"le",
                      "state", "online", "stats", "commands", 5);
        char *text = status_metrics_render(snapshot);
        json_decref(snapshot);
        check_metrics_text(text);
        cr_assert(has_line(text, "isergw_lun_size_bytes{target=\"iqn.x\\\"y\\\\z\\nw\",lun=\"3\"} "
                                 "1024"),
                  "%s", text);
        cr_assert(has_line(text, "isergw_commands_total 5"), "%s", text);
        cr_assert_null(strstr(text, "isergw_reads_total"));
        cr_assert_null(strstr(text, "isergw_pool"));
        free(text);
        text = status_metrics_render(NULL);
        cr_assert_str_eq(text, "");
        free(text);
}

Test(metrics, checker_rejects_bad_text)
{
        struct checker k;
        cr_assert_not(check_exposition(&k, "isergw_x_total 1\n"));
        cr_assert_not(check_exposition(&k, "# HELP a x\n# TYPE a counter\na 1\n"));
        cr_assert_not(check_exposition(&k, "# HELP a x\n# TYPE a gauge\na{b=\"c} 1\n"));
        cr_assert_not(check_exposition(&k, "# HELP a x\n# TYPE a gauge\na one\n"));
        cr_assert_not(check_exposition(
            &k, "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na 1\nb 1\na 2\n"));
        cr_assert(check_exposition(&k, "# HELP a x\n# TYPE a gauge\na{b=\"c\\\"\"} 1.5\n"));
}

Test(status, metrics_command)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        json_t *result = expect_ok(call(&c, "{\"version\":1,\"cmd\":\"metrics\"}"));
        const char *text = json_string_value(json_object_get(result, "text"));
        cr_assert_not_null(text);
        check_metrics_text(text);
        cr_assert(has_line(text, "isergw_commands_total 1000"), "%s", text);
        cr_assert(has_line(text, "isergw_cache_enabled 0"), "%s", text);
        json_decref(result);
        conn_close(&c);
        fx_done(&fx);
}

/* GETs over TCP; returns the whole response (malloc'd). */
static char *http_get(int port, const char *request)
{
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "%s", strerror(errno));
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        cr_assert_eq(send_all(fd, request, strlen(request)), 0);
        struct conn c = {.fd = fd};
        c.cap = 1 << 20;
        c.buf = malloc(c.cap);
        ssize_t n;
        while ((n = recv(fd, c.buf + c.len, c.cap - c.len - 1, 0)) > 0)
                c.len += (size_t)n;
        c.buf[c.len] = '\0';
        close(fd);
        return c.buf;
}

Test(status, http_metrics)
{
        struct fixture fx;
        fx_init(&fx);
        cr_assert_not_null(
            fx_start(&fx, (struct status_server_conf){.metrics_listen = "127.0.0.1:0"}));
        int port = status_server_metrics_port(fx.srv);
        cr_assert_gt(port, 0);
        char *resp = http_get(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        cr_assert(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", resp);
        cr_assert(strstr(resp, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        char *body = strstr(resp, "\r\n\r\n");
        cr_assert_not_null(body);
        body += 4;
        char clen[64];
        snprintf(clen, sizeof(clen), "\r\nContent-Length: %zu\r\n", strlen(body));
        cr_assert(strstr(resp, clen), "%s", resp);
        check_metrics_text(body);
        cr_assert(has_line(body, "isergw_commands_total 1000"));
        free(resp);

        resp = http_get(port, "GET /metrics?x=1 HTTP/1.0\n\n");
        cr_assert(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", resp);
        free(resp);
        resp = http_get(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
        cr_assert(strncmp(resp, "HTTP/1.1 200 OK\r\n", 17) == 0, "%s", resp);
        cr_assert_str_eq(strstr(resp, "\r\n\r\n"), "\r\n\r\n");
        free(resp);
        resp = http_get(port, "GET / HTTP/1.1\r\n\r\n");
        cr_assert(strncmp(resp, "HTTP/1.1 404 ", 13) == 0, "%s", resp);
        free(resp);
        resp = http_get(port, "POST /metrics HTTP/1.1\r\n\r\n");
        cr_assert(strncmp(resp, "HTTP/1.1 405 ", 13) == 0, "%s", resp);
        free(resp);
        resp = http_get(port, "garbage\r\n\r\n");
        cr_assert(strncmp(resp, "HTTP/1.1 400 ", 13) == 0, "%s", resp);
        free(resp);
        fx_done(&fx);
}

Test(status, bad_metrics_listen_address)
{
        struct fixture fx;
        fx_init(&fx);
        cr_assert_null(fx_start(&fx, (struct status_server_conf){.metrics_listen = "nonsense"}));
        cr_assert_null(fx_start(&fx, (struct status_server_conf){.metrics_listen = "1.2.3:x"}));
        fx_done(&fx);
}

/* ---- slow and many clients ---- */

Test(status, client_that_never_reads_is_dropped)
{
        struct fixture fx;
        fx_init(&fx);
        cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.max_output = 65536}));
        struct conn slow, fast;
        conn_open(&slow, fx.path);
        conn_open(&fast, fx.path);
        const char *req = "{\"version\":1,\"cmd\":\"query\",\"object\":\"sessions\"}\n";
        size_t len = strlen(req);
        int sent = 0;
        bool dropped = false;
        for (; sent < 20000 && !dropped; sent++) {
                ssize_t n = send(slow.fd, req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        struct pollfd pfd = {.fd = slow.fd, .events = POLLOUT};
                        poll(&pfd, 1, 100);
                        sent--;
                        continue;
                }
                dropped = n < 0;
                cr_assert(n < 0 || (size_t)n == len);
                if (sent % 1000 == 0)
                        expect_query(&fast, "gateway");
        }
        /* Whatever was queued can still be read, then the connection ends. */
        size_t replies = 0;
        while (read_line(&slow) >= 0) {
                char *nl = memchr(slow.buf, '\n', slow.len);
                slow.len -= (size_t)(nl - slow.buf) + 1;
                memmove(slow.buf, nl + 1, slow.len);
                replies++;
        }
        cr_assert(errno != EAGAIN, "the slow client was never dropped");
        cr_assert_lt(replies, (size_t)sent, "every reply arrived: not dropped");
        expect_query(&fast, "sessions");
        conn_close(&slow);
        conn_close(&fast);
        fx_done(&fx);
}

struct worker {
        const char *path;
        pthread_barrier_t *barrier;
        int index;
        int good;
        char why[128];
};

static bool worker_round(struct worker *w, struct conn *c, int i)
{
        const char *object = fake_objects[(size_t)(w->index + i) % NOBJECTS][0];
        char line[160];
        int id = w->index * 1000 + i;
        snprintf(line, sizeof(line),
                 "{\"version\":1,\"cmd\":\"query\",\"object\":\"%s\",\"id\":%d}\n", object, id);
        if (send_all(c->fd, line, strlen(line)) < 0)
                return false;
        json_t *reply = read_reply(c), *want = fake_object(object);
        bool ok = reply && json_integer_value(json_object_get(reply, "id")) == id &&
                  json_is_true(json_object_get(reply, "ok")) &&
                  json_equal(json_object_get(reply, "result"), want);
        json_decref(reply);
        json_decref(want);
        return ok;
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        pthread_barrier_wait(w->barrier);
        struct conn c = {.fd = unix_connect(w->path)};
        if (c.fd < 0) {
                snprintf(w->why, sizeof(w->why), "connect: %s", strerror(errno));
                return NULL;
        }
        for (int i = 0; i < 20; i++) {
                if (!worker_round(w, &c, i)) {
                        snprintf(w->why, sizeof(w->why), "round %d: bad or no reply", i);
                        break;
                }
                w->good++;
        }
        conn_close(&c);
        return NULL;
}

Test(status, hundred_concurrent_clients)
{
        enum { N = 100 };
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, N);
        struct worker w[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
                w[i] = (struct worker){.path = fx.path, .barrier = &barrier, .index = i};
                cr_assert_eq(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        for (int i = 0; i < N; i++)
                pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++)
                cr_assert_eq(w[i].good, 20, "client %d: %s", i, w[i].why);
        pthread_barrier_destroy(&barrier);
        fx_done(&fx);
}

Test(status, too_many_clients_are_refused)
{
        struct fixture fx;
        fx_init(&fx);
        cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.max_clients = 3}));
        struct conn c[4];
        for (int i = 0; i < 3; i++) {
                conn_open(&c[i], fx.path);
                expect_query(&c[i], "pool");
        }
        conn_open(&c[3], fx.path);
        expect_error_free(conn_reply(&c[3]), "busy");
        cr_assert_null(read_reply(&c[3]));
        conn_close(&c[3]);
        conn_close(&c[0]);
        /* The freed slot is reused once the server has seen the close. */
        bool served = false;
        for (int tries = 0; tries < 100 && !served; tries++) {
                conn_open(&c[3], fx.path);
                conn_send(&c[3], "{\"version\":1,\"cmd\":\"query\",\"object\":\"pool\"}\n");
                json_t *reply = conn_reply(&c[3]);
                served = json_is_true(json_object_get(reply, "ok"));
                json_decref(reply);
                conn_close(&c[3]);
                if (!served)
                        usleep(10000);
        }
        cr_assert(served);
        conn_close(&c[1]);
        conn_close(&c[2]);
        fx_done(&fx);
}

/* ---- the socket file ---- */

Test(status, socket_mode_group_and_removal)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct stat st;
        cr_assert_eq(lstat(fx.path, &st), 0);
        cr_assert(S_ISSOCK(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0660, "mode %o", st.st_mode & 07777);
        cr_assert_eq(st.st_gid, getegid());
        cr_assert_eq(st.st_uid, geteuid());
        status_server_stop(fx.srv);
        fx.srv = NULL;
        cr_assert_neq(lstat(fx.path, &st), 0, "socket left behind");
        /* Nothing else is left in the directory (the private temporary directory). */
        cr_assert_eq(rmdir(fx.dir), 0, "%s", strerror(errno));
        cr_assert_eq(mkdir(fx.dir, 0700), 0);

        cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.mode = 0600}));
        cr_assert_eq(lstat(fx.path, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0600);
        fx_done(&fx);
}

Test(status, socket_group)
{
        struct fixture fx;
        fx_init(&fx);
        cr_assert_null(fx_start(&fx, (struct status_server_conf){.group = "no-such-group-xyz"}));
        struct stat st;
        cr_assert_neq(lstat(fx.path, &st), 0);
        struct group *gr = getgrgid(getegid());
        cr_assert_not_null(gr);
        char name[64];
        snprintf(name, sizeof(name), "%s", gr->gr_name);
        cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.group = name}));
        cr_assert_eq(lstat(fx.path, &st), 0);
        cr_assert_eq(st.st_gid, getegid());
        status_server_stop(fx.srv);
        fx.srv = NULL;
        if (geteuid() == 0 && (gr = getgrnam("daemon"))) {
                cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.group = "daemon"}));
                cr_assert_eq(lstat(fx.path, &st), 0);
                cr_assert_eq(st.st_gid, gr->gr_gid);
        }
        fx_done(&fx);
}

static void make_stale_socket(const char *path)
{
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        cr_assert_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
        close(fd);
}

Test(status, stale_socket_is_replaced)
{
        struct fixture fx;
        fx_init(&fx);
        make_stale_socket(fx.path);
        fx_start_default(&fx);
        struct conn c;
        conn_open(&c, fx.path);
        expect_query(&c, "gateway");
        conn_close(&c);
        fx_done(&fx);
}

Test(status, refuses_to_start_over_a_live_daemon_or_a_file)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct status_server_conf conf = {.path = fx.path, .mode = 0660};
        cr_assert_null(status_server_start(&conf, &fx.provider));
        struct conn c;
        conn_open(&c, fx.path);
        expect_query(&c, "gateway");
        conn_close(&c);
        status_server_stop(fx.srv);
        fx.srv = NULL;

        int fd = open(fx.path, O_CREAT | O_WRONLY, 0600);
        cr_assert_geq(fd, 0);
        close(fd);
        cr_assert_null(fx_start(&fx, (struct status_server_conf){0}));
        struct stat st;
        cr_assert_eq(lstat(fx.path, &st), 0);
        cr_assert(S_ISREG(st.st_mode), "the regular file was touched");
        fx_done(&fx);
}

Test(status, stop_with_clients_connected)
{
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        struct conn c[5];
        for (int i = 0; i < 5; i++)
                conn_open(&c[i], fx.path);
        conn_send(&c[0], "{\"version\":1,\"cmd\":\"query\",");
        expect_query(&c[1], "stats");
        status_server_stop(fx.srv);
        fx.srv = NULL;
        for (int i = 0; i < 5; i++) {
                cr_assert_null(read_reply(&c[i]));
                conn_close(&c[i]);
        }
        status_server_stop(NULL);
        fx_done(&fx);
}

/* ---- a user who is not allowed ---- */

/* In a child: become nobody (with extra groups), connect, report through the exit status:
 * 0 refused at connect (EACCES), 1 refused by the server, 2 served, >= 10 setup trouble. */
static int as_nobody(const char *path, const gid_t *groups, size_t ngroups)
{
        struct passwd *pw = getpwnam("nobody");
        if (!pw)
                return 10;
        if (setgroups(ngroups, groups) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                return 11;
        struct conn c = {.fd = unix_connect(path)};
        if (c.fd < 0)
                return errno == EACCES ? 0 : 12;
        const char *req = "{\"version\":1,\"cmd\":\"query\",\"object\":\"gateway\"}\n";
        send_all(c.fd, req, strlen(req)); /* fails if the refusal came first */
        json_t *reply = read_reply(&c);
        const char *code = json_string_value(json_object_get(reply, "code"));
        int rc = json_is_true(json_object_get(reply, "ok"))       ? 2
                 : code && strcmp(code, "permission-denied") == 0 ? 1
                                                                  : 14;
        json_decref(reply);
        if (rc == 1 && read_reply(&c))
                rc = 15; /* the server must close after refusing */
        return rc;
}

static int run_as_nobody(const char *path, const gid_t *groups, size_t ngroups)
{
        fflush(NULL);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(as_nobody(path, groups, ngroups));
        int status = 0;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFEXITED(status));
        return WEXITSTATUS(status);
}

Test(status, non_permitted_user_is_refused)
{
        if (geteuid() != 0 || !getpwnam("nobody"))
                cr_skip_test("needs root and a 'nobody' user");
        struct fixture fx;
        fx_init(&fx);
        cr_assert_eq(chmod(fx.dir, 0711), 0);
        fx_start_default(&fx);
        cr_assert_eq(run_as_nobody(fx.path, NULL, 0), 0, "connect was not refused (EACCES)");
        status_server_stop(fx.srv);
        fx.srv = NULL;

        /* World-writable socket: the SO_PEERCRED check refuses instead. */
        cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.mode = 0666}));
        cr_assert_eq(run_as_nobody(fx.path, NULL, 0), 1, "the server did not refuse");
        struct conn c;
        conn_open(&c, fx.path);
        expect_query(&c, "gateway"); /* root still is */
        conn_close(&c);
        status_server_stop(fx.srv);
        fx.srv = NULL;

        /* A member of the socket's group (supplementary) is served. */
        struct group *gr = getgrnam("daemon");
        if (gr) {
                gid_t gid = gr->gr_gid;
                cr_assert_not_null(fx_start(&fx, (struct status_server_conf){.group = "daemon"}));
                cr_assert_eq(run_as_nobody(fx.path, &gid, 1), 2, "a group member was refused");
        }
        fx_done(&fx);
}

/* ---- isergw-ctl (built next to this test) ---- */

struct ctl_run {
        int status;
        char *out;
        char *err;
};

static char *slurp(const char *path)
{
        FILE *f = fopen(path, "r");
        cr_assert_not_null(f);
        char *text = calloc(1, 1 << 20);
        size_t n = fread(text, 1, (1 << 20) - 1, f);
        text[n] = '\0';
        fclose(f);
        return text;
}

static void ctl_path(char *buf, size_t len)
{
        char exe[512];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        cr_assert_gt(n, 0);
        exe[n] = '\0';
        snprintf(buf, len, "%s/isergw-ctl", dirname(exe));
}

static struct ctl_run ctl(const struct fixture *fx, const char *args)
{
        char bin[600], cmd[2048], out[160], err[160];
        ctl_path(bin, sizeof(bin));
        snprintf(out, sizeof(out), "%s/ctl.out", fx->dir);
        snprintf(err, sizeof(err), "%s/ctl.err", fx->dir);
        snprintf(cmd, sizeof(cmd), "{ '%s' %s ; } >'%s' 2>'%s'", bin, args, out, err);
        int rc = system(cmd);
        struct ctl_run r = {.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1};
        r.out = slurp(out);
        r.err = slurp(err);
        unlink(out);
        unlink(err);
        return r;
}

static void ctl_free(struct ctl_run *r)
{
        free(r->out);
        free(r->err);
}

static void skip_without_ctl(void)
{
        char bin[600];
        ctl_path(bin, sizeof(bin));
        if (access(bin, X_OK) != 0)
                cr_skip_test("%s not built", bin);
}

Test(ctl, tables_json_and_flush)
{
        skip_without_ctl();
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        char args[512];
        static const char *const cases[][2] = {
            {"stats", "commands"},
            {"stats", "2.3 MiB"},
            {"status", "1h 02m 03s"},
            {"status", "(embedded default)"},
            {"status", "12000 free, 3000 clean, 1000 dirty of 16384 lines of 64.0 KiB"},
            {"sessions", "iqn.1993-08.org.debian:01:abc"},
            {"sessions", "CRC32C"},
            {"luns", "10.0 GiB"},
            {"luns", "write at 0: Input/output error"},
            {"targets", "0.0.0.0:3260,[::]:3260"},
            {"pool", "dpt_high_water"},
            {"cache", "cache disabled"},
            {"mirror", "no mirrored volumes"},
            {"metrics", "# TYPE isergw_commands_total counter"},
            {"flush iqn.2024-01.org.example:disk1 0",
             "flushed iqn.2024-01.org.example:disk1 lun 0"},
            {"fault iqn.t 1 fail_writes=3 delay_ms=20 fail_reads=always",
             "fault iqn.t lun 1: fail_reads=always fail_writes=3 fail_flushes=0 delay_ms=20; "
             "backend errors so far: 5, last: injected"},
            {"fault iqn.t 0", "fail_reads=0 fail_writes=0 fail_flushes=0 delay_ms=0"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                snprintf(args, sizeof(args), "--socket '%s' %s", fx.path, cases[i][0]);
                struct ctl_run r = ctl(&fx, args);
                cr_assert_eq(r.status, 0, "%s: exit %d: %s", cases[i][0], r.status, r.err);
                cr_assert(strstr(r.out, cases[i][1]), "%s: no \"%s\" in:\n%s", cases[i][0],
                          cases[i][1], r.out);
                ctl_free(&r);
        }
        snprintf(args, sizeof(args), "-s '%s' --json stats", fx.path);
        struct ctl_run r = ctl(&fx, args);
        cr_assert_eq(r.status, 0);
        json_t *got = json_loads(r.out, 0, NULL), *want = fake_object("stats");
        cr_assert(json_equal(got, want), "%s", r.out);
        json_decref(got);
        json_decref(want);
        ctl_free(&r);
        snprintf(args, sizeof(args), "--json --socket='%s' status", fx.path);
        r = ctl(&fx, args);
        got = json_loads(r.out, 0, NULL);
        cr_assert_eq(json_integer_value(json_object_get(json_object_get(got, "gateway"), "pid")),
                     1234, "%s", r.out);
        json_decref(got);
        ctl_free(&r);
        fx_done(&fx);
}

Test(ctl, errors_and_exit_status)
{
        skip_without_ctl();
        struct fixture fx;
        fx_init(&fx);
        char args[512];
        snprintf(args, sizeof(args), "--socket '%s' status", fx.path);
        struct ctl_run r = ctl(&fx, args);
        cr_assert_eq(r.status, 1);
        char want[512];
        snprintf(want, sizeof(want),
                 "isergw-ctl: cannot connect to %s: No such file or directory (is isergw "
                 "running?)\n",
                 fx.path);
        cr_assert_str_eq(r.err, want);
        ctl_free(&r);

        fx_start_default(&fx);
        snprintf(args, sizeof(args), "--socket '%s' flush iqn.fail 3", fx.path);
        r = ctl(&fx, args);
        cr_assert_eq(r.status, 1);
        cr_assert_str_eq(r.err, "isergw-ctl: flush failed: Input/output error\n");
        ctl_free(&r);

        static const char *const usage_errors[] = {
            "",
            "frobnicate",
            "flush t",
            "flush t x",
            "flush t -1",
            "--watch 0 stats",
            "--watch 1 flush t 0",
            "stats extra",
            "fault t",
            "fault t x",
            "fault t 0 bogus=1",
            "fault t 0 fail_writes",
            "fault t 0 fail_writes=",
            "fault t 0 fail_reads=-1",
            "fault t 0 fail_reads=4294967296",
            "fault t 0 delay_ms=always",
            "fault t 0 delay_ms=60001",
            "fault t 0 delay_ms=1 delay_ms=1 delay_ms=1 delay_ms=1 delay_ms=1",
            "--watch 1 fault t 0"};
        for (size_t i = 0; i < sizeof(usage_errors) / sizeof(usage_errors[0]); i++) {
                snprintf(args, sizeof(args), "--socket '%s' %s", fx.path, usage_errors[i]);
                r = ctl(&fx, args);
                cr_assert_eq(r.status, 2, "\"%s\": exit %d", usage_errors[i], r.status);
                cr_assert(r.err[0], "\"%s\": no message", usage_errors[i]);
                ctl_free(&r);
        }
        r = ctl(&fx, "--help");
        cr_assert_eq(r.status, 0);
        cr_assert(strstr(r.out, "flush TARGET LUN"));
        cr_assert(strstr(r.out, "fault TARGET LUN [fail_reads=N]"));
        ctl_free(&r);
        snprintf(args, sizeof(args), "--socket '%s' fault iqn.plain 0 fail_writes=1", fx.path);
        r = ctl(&fx, args);
        cr_assert_eq(r.status, 1);
        cr_assert_str_eq(r.err, "isergw-ctl: LUN has no fault injection\n");
        ctl_free(&r);
        cr_assert_eq(fx.fake.faults, 1, "usage errors reached the daemon");
        fx_done(&fx);
}

Test(ctl, watch_redraws)
{
        skip_without_ctl();
        struct fixture fx;
        fx_init(&fx);
        fx_start_default(&fx);
        char args[512];
        snprintf(args, sizeof(args), "--socket '%s' --watch 0.2 stats & sleep 1; kill $!", fx.path);
        struct ctl_run r = ctl(&fx, args);
        size_t clears = 0;
        for (const char *p = r.out; (p = strstr(p, "\033[H\033[2J")); p++)
                clears++;
        cr_assert_geq(clears, 2, "%s", r.out);
        cr_assert(strstr(r.out, "commands"));
        ctl_free(&r);
        fx_done(&fx);
}
