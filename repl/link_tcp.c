/* The TCP link (repl/link.h): a non-blocking socket in the reactor's epoll set. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "repl/link.h"
#include "src/reactor.h"

struct tcp_link {
        struct repl_link base; /* first */
        int fd;
        struct reactor_fd rfd;
        bool in_epoll;
};

static void on_fd(struct reactor_fd *rfd, uint32_t events)
{
        struct tcp_link *t = rfd->ctx;
        t->base.cb(&t->base, events);
}

static ssize_t tcp_writev(struct repl_link *l, const struct iovec *iov, int iovcnt)
{
        struct tcp_link *t = (struct tcp_link *)l;
        ssize_t n = writev(t->fd, iov, iovcnt);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (l->stats)
                atomic_fetch_add(&l->stats->tx_bytes[REPL_LINK_TCP], (uint64_t)n);
        return n;
}

static ssize_t tcp_read(struct repl_link *l, void *buf, size_t len)
{
        struct tcp_link *t = (struct tcp_link *)l;
        ssize_t n = read(t->fd, buf, len);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (l->stats)
                atomic_fetch_add(&l->stats->rx_bytes[REPL_LINK_TCP], (uint64_t)n);
        return n;
}

static void tcp_want_out(struct repl_link *l, bool on)
{
        struct tcp_link *t = (struct tcp_link *)l;
        if (t->in_epoll)
                reactor_mod_fd(l->r, &t->rfd, on ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static int tcp_connect_error(struct repl_link *l)
{
        struct tcp_link *t = (struct tcp_link *)l;
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        return -err;
}

static void tcp_describe(struct repl_link *l, char *buf, size_t len)
{
        snprintf(buf, len, "tcp");
}

static void tcp_close(struct repl_link *l)
{
        struct tcp_link *t = (struct tcp_link *)l;
        if (t->in_epoll)
                reactor_del_fd(l->r, &t->rfd);
        close(t->fd);
        free(t);
}

static const struct repl_link_ops tcp_ops = {
    .writev = tcp_writev,
    .read = tcp_read,
    .want_out = tcp_want_out,
    .connect_error = tcp_connect_error,
    .describe = tcp_describe,
    .close = tcp_close,
};

/* Both ends, connected or accepted: a reply or a small message must not wait for the peer's
 * delayed ACK (Nagle), which stalled mirrored writes by 40 ms. */
static struct repl_link *wrap(const struct repl_link_conf *c, int fd, uint32_t events)
{
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct tcp_link *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->base = (struct repl_link){.ops = &tcp_ops,
                                     .kind = REPL_LINK_TCP,
                                     .r = c->r,
                                     .cb = c->cb,
                                     .ctx = c->ctx,
                                     .stats = c->stats};
        t->fd = fd;
        t->rfd = (struct reactor_fd){.fd = fd, .events = events, .cb = on_fd, .ctx = t};
        if (reactor_add_fd(c->r, &t->rfd) < 0) {
                free(t);
                return NULL;
        }
        t->in_epoll = true;
        return &t->base;
}

struct repl_link *repl_link_tcp_wrap(const struct repl_link_conf *c, int fd)
{
        return wrap(c, fd, EPOLLIN);
}

struct repl_link *repl_link_tcp_connect(const struct repl_link_conf *c, const struct sockaddr *to,
                                        socklen_t tolen)
{
        int fd = socket(to->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return NULL;
        if (connect(fd, to, tolen) < 0 && errno != EINPROGRESS) {
                int e = errno;
                close(fd);
                errno = e;
                return NULL;
        }
        struct repl_link *l = wrap(c, fd, EPOLLIN | EPOLLOUT);
        if (!l)
                close(fd);
        return l;
}
