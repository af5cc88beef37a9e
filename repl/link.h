/* repl/link: the connection between two gateways that mirror a volume, over TCP or RDMA
 * (docs/replication.md "The link"). Owns the transport's resources (a socket; or an RDMA CM
 * id, queue pair, completion queue and registered buffers) and presents them to repl/mirror
 * and repl/server as one non-blocking, ordered, reliable byte stream on one reactor: the
 * protocol's 64-byte headers and payloads are framed by the caller exactly as on a socket.
 * writev takes bytes from the caller's buffers before it returns (TCP: into the socket; RDMA:
 * into registered send buffers), so a buffer may be reused as soon as writev counted it.
 * Events are epoll bits: EPOLLIN (bytes to read, or the end: read says which), EPOLLOUT
 * (connected, or writing may go on after -EAGAIN), EPOLLERR/EPOLLHUP (the link failed). */
#ifndef ISERGW_REPL_LINK_H
#define ISERGW_REPL_LINK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct reactor;
struct repl_link;

enum repl_link_kind { REPL_LINK_TCP, REPL_LINK_RDMA };

/* mirror_transport: which link a primary opens. */
enum repl_transport { REPL_TRANSPORT_AUTO, REPL_TRANSPORT_TCP, REPL_TRANSPORT_RDMA };
const char *repl_transport_name(enum repl_transport t);
/* "auto", "tcp" or "rdma"; -1 otherwise. */
int repl_transport_parse(const char *s);

/* Bytes moved, per transport; owned by the link's user (a mirror, the server), shared by its
 * successive links. Any thread reads them. */
struct repl_link_stats {
        atomic_uint_fast64_t tx_bytes[2], rx_bytes[2]; /* [enum repl_link_kind] */
        atomic_uint_fast64_t rdma_sends, rdma_recvs, rdma_credit_updates, rdma_wc_errors;
};

struct repl_link_ops {
        /* Bytes taken from iov (the caller may reuse them at once), or -errno; -EAGAIN: none
         * now, EPOLLOUT follows once want_out(true) was asked. */
        ssize_t (*writev)(struct repl_link *l, const struct iovec *iov, int iovcnt);
        /* Bytes read, 0 at the peer's orderly end, or -errno (-EAGAIN: nothing yet). */
        ssize_t (*read)(struct repl_link *l, void *buf, size_t len);
        /* Whether the caller wants EPOLLOUT (after -EAGAIN, or to hear of the connection). */
        void (*want_out)(struct repl_link *l, bool on);
        /* A connecting link's result once EPOLLOUT or EPOLLERR came: 0 or -errno. */
        int (*connect_error)(struct repl_link *l);
        /* The transport's state in a few words, for the log line of a link that ended. */
        void (*describe)(struct repl_link *l, char *buf, size_t len);
        /* Ends the link and frees it: no callback after this; for RDMA the queue pair is
         * drained (flushed) and destroyed before its buffers are freed. */
        void (*close)(struct repl_link *l);
};

struct repl_link {
        const struct repl_link_ops *ops;
        enum repl_link_kind kind;
        struct reactor *r;
        void (*cb)(struct repl_link *l, uint32_t events);
        void *ctx;
        struct repl_link_stats *stats; /* may be NULL */
        char why[128];                 /* why it failed, for logs */
};

static inline ssize_t repl_link_writev(struct repl_link *l, const struct iovec *iov, int n)
{
        return l->ops->writev(l, iov, n);
}
static inline ssize_t repl_link_read(struct repl_link *l, void *buf, size_t len)
{
        return l->ops->read(l, buf, len);
}
static inline void repl_link_want_out(struct repl_link *l, bool on)
{
        l->ops->want_out(l, on);
}
static inline int repl_link_connect_error(struct repl_link *l)
{
        return l->ops->connect_error(l);
}
static inline void repl_link_describe(struct repl_link *l, char *buf, size_t len)
{
        l->ops->describe(l, buf, len);
}
static inline void repl_link_close(struct repl_link *l)
{
        if (l)
                l->ops->close(l);
}
const char *repl_link_kind_name(enum repl_link_kind kind);
/* Adds the counters to a status object: tcp_tx_bytes, tcp_rx_bytes, rdma_tx_bytes,
 * rdma_rx_bytes, rdma_sends, rdma_recvs, rdma_credit_updates, rdma_wc_errors. */
struct json_t;
void repl_link_stats_json(struct json_t *obj, struct repl_link_stats *s);

/* Common arguments of a new link. */
struct repl_link_conf {
        struct reactor *r; /* everything runs there */
        void (*cb)(struct repl_link *l, uint32_t events);
        void *ctx;
        struct repl_link_stats *stats;
};

/* TCP (repl/link_tcp.c). connect: non-blocking, EPOLLOUT when it is done (connect_error says
 * how). wrap: an accepted socket. NULL and errno on failure. */
struct repl_link *repl_link_tcp_connect(const struct repl_link_conf *c, const struct sockaddr *to,
                                        socklen_t tolen);
struct repl_link *repl_link_tcp_wrap(const struct repl_link_conf *c, int fd);

/* RDMA (repl/link_rdma.c), RDMA CM over the same IP addresses. connect: resolves the address
 * and route from 'from' (NULL: any local address) and connects; EPOLLOUT once established,
 * EPOLLERR with connect_error and why when any step fails (no RDMA device, no route, refused).
 * NULL and errno when it cannot even start (no RDMA device on this host: ENODEV). */
struct repl_link *repl_link_rdma_connect(const struct repl_link_conf *c, const struct sockaddr *to,
                                         socklen_t tolen, const struct sockaddr *from);
bool repl_link_rdma_available(void);

/* An RDMA CM listener beside the TCP one (the secondary). Each accepted connection becomes a
 * link the callback owns (its conf->cb and ctx set by the callback before it returns). */
struct repl_rdma_listener;
struct repl_rdma_listener *
repl_rdma_listen(struct reactor *r, const struct sockaddr *addr, socklen_t len,
                 void (*on_accept)(void *ctx, struct repl_link *l, const char *peer), void *ctx,
                 struct repl_link_stats *stats);
void repl_rdma_listener_close(struct repl_rdma_listener *rl);

#endif
