/* The mirror link interface (repl/link.h): the TCP link over a socketpair on an unstarted
 * reactor driven by reactor_poll_once (bytes both ways, EPOLLIN/EPOLLOUT as documented, the
 * end of the stream, counters), transport names, and the RDMA link's refusal on a host
 * without an RDMA device. The RDMA data path itself runs in vm.test_mirror_rdma. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "repl/link.h"
#include "src/reactor.h"

static struct reactor *reactor;
static struct repl_link_stats stats;
static uint32_t seen; /* events the callback got */
static unsigned calls;

static void on_event(struct repl_link *l, uint32_t events)
{
        (void)l;
        seen |= events;
        calls++;
}

static void setup(void)
{
        reactor = reactor_create(0);
        cr_assert_not_null(reactor);
        memset(&stats, 0, sizeof(stats));
        seen = 0;
        calls = 0;
}

static void teardown(void)
{
        reactor_destroy(reactor);
}

TestSuite(repl_link, .init = setup, .fini = teardown);

static struct repl_link *tcp_pair(int *other)
{
        int sv[2];
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        struct repl_link_conf c = {.r = reactor, .cb = on_event, .ctx = NULL, .stats = &stats};
        struct repl_link *l = repl_link_tcp_wrap(&c, sv[0]);
        cr_assert_not_null(l);
        cr_assert_eq(l->kind, REPL_LINK_TCP);
        *other = sv[1];
        return l;
}

Test(repl_link, tcp_moves_bytes_both_ways_and_counts_them)
{
        int peer;
        struct repl_link *l = tcp_pair(&peer);
        uint8_t hdr[64], payload[1000];
        memset(hdr, 0xa5, sizeof(hdr));
        for (size_t i = 0; i < sizeof(payload); i++)
                payload[i] = (uint8_t)i;
        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {payload, sizeof(payload)}};
        cr_assert_eq(repl_link_writev(l, iov, 2), 1064);
        uint8_t got[1064];
        cr_assert_eq(read(peer, got, sizeof(got)), 1064);
        cr_assert_eq(memcmp(got, hdr, 64), 0);
        cr_assert_eq(memcmp(got + 64, payload, 1000), 0);

        uint8_t buf[16];
        cr_assert_eq(repl_link_read(l, buf, sizeof(buf)), -EAGAIN);
        cr_assert_eq(write(peer, "0123456789", 10), 10);
        for (int i = 0; i < 50 && !(seen & EPOLLIN); i++)
                reactor_poll_once(reactor, 10);
        cr_assert(seen & EPOLLIN, "no EPOLLIN for bytes from the peer");
        cr_assert_eq(repl_link_read(l, buf, sizeof(buf)), 10);
        cr_assert_eq(memcmp(buf, "0123456789", 10), 0);
        cr_assert_eq(atomic_load(&stats.tx_bytes[REPL_LINK_TCP]), 1064);
        cr_assert_eq(atomic_load(&stats.rx_bytes[REPL_LINK_TCP]), 10);
        cr_assert_eq(atomic_load(&stats.tx_bytes[REPL_LINK_RDMA]), 0);

        close(peer); /* the end of the stream: read says 0 */
        seen = 0;
        for (int i = 0; i < 50 && !seen; i++)
                reactor_poll_once(reactor, 10);
        cr_assert(seen & (EPOLLIN | EPOLLHUP));
        cr_assert_eq(repl_link_read(l, buf, sizeof(buf)), 0);
        repl_link_close(l);
}

Test(repl_link, tcp_full_socket_says_eagain_then_epollout_when_asked)
{
        int peer;
        struct repl_link *l = tcp_pair(&peer);
        static uint8_t chunk[65536];
        struct iovec iov = {chunk, sizeof(chunk)};
        ssize_t n;
        while ((n = repl_link_writev(l, &iov, 1)) > 0)
                ;
        cr_assert_eq(n, -EAGAIN);
        /* Not asked: no EPOLLOUT even once the peer drains. */
        static uint8_t sink[1 << 20];
        while (read(peer, sink, sizeof(sink)) > 0)
                ;
        seen = 0;
        for (int i = 0; i < 5; i++)
                reactor_poll_once(reactor, 10);
        cr_assert_eq(seen & EPOLLOUT, 0);
        repl_link_want_out(l, true);
        for (int i = 0; i < 50 && !(seen & EPOLLOUT); i++)
                reactor_poll_once(reactor, 10);
        cr_assert(seen & EPOLLOUT, "no EPOLLOUT once asked");
        repl_link_want_out(l, false);
        char desc[64];
        repl_link_describe(l, desc, sizeof(desc));
        cr_assert_str_eq(desc, "tcp");
        repl_link_close(l);
        close(peer);
}

Test(repl_link, tcp_connect_refused_says_why)
{
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &len), 0);
        close(s); /* nobody listens there now */
        struct repl_link_conf c = {.r = reactor, .cb = on_event, .stats = &stats};
        struct repl_link *l = repl_link_tcp_connect(&c, (struct sockaddr *)&a, sizeof(a));
        if (!l) { /* refused at once: also a valid answer */
                cr_assert_eq(errno, ECONNREFUSED);
                return;
        }
        for (int i = 0; i < 50 && !seen; i++)
                reactor_poll_once(reactor, 10);
        cr_assert(seen & (EPOLLOUT | EPOLLERR));
        cr_assert_eq(repl_link_connect_error(l), -ECONNREFUSED);
        repl_link_close(l);
}

Test(repl_link, transport_names)
{
        cr_assert_eq(repl_transport_parse(NULL), REPL_TRANSPORT_AUTO);
        cr_assert_eq(repl_transport_parse("auto"), REPL_TRANSPORT_AUTO);
        cr_assert_eq(repl_transport_parse("tcp"), REPL_TRANSPORT_TCP);
        cr_assert_eq(repl_transport_parse("rdma"), REPL_TRANSPORT_RDMA);
        cr_assert_eq(repl_transport_parse("RDMA"), -1);
        cr_assert_eq(repl_transport_parse("iser"), -1);
        cr_assert_str_eq(repl_transport_name(REPL_TRANSPORT_RDMA), "rdma");
        cr_assert_str_eq(repl_link_kind_name(REPL_LINK_TCP), "tcp");
        cr_assert_str_eq(repl_link_kind_name(REPL_LINK_RDMA), "rdma");
        json_t *j = json_object();
        atomic_store(&stats.rx_bytes[REPL_LINK_RDMA], 42);
        repl_link_stats_json(j, &stats);
        cr_assert_eq(json_integer_value(json_object_get(j, "rdma_rx_bytes")), 42);
        cr_assert_eq(json_integer_value(json_object_get(j, "tcp_tx_bytes")), 0);
        cr_assert_not_null(json_object_get(j, "rdma_wc_errors"));
        json_decref(j);
}

/* Where there is no RDMA device, connecting says so at once (auto then falls back to TCP). */
Test(repl_link, rdma_connect_without_a_device_is_enodev)
{
        if (repl_link_rdma_available())
                cr_skip_test("this host has an RDMA device");
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons(3270),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct repl_link_conf c = {.r = reactor, .cb = on_event, .stats = &stats};
        errno = 0;
        cr_assert_null(repl_link_rdma_connect(&c, (struct sockaddr *)&a, sizeof(a), NULL));
        cr_assert_eq(errno, ENODEV);
}
