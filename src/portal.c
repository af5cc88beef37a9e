#include "src/portal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "src/log.h"
#include "src/reactor.h"
#include "src/tcp.h"

#define PORTAL_MAX 32

struct listener {
        struct portal_mgr *pm;
        int fd;
        char name[80]; /* "addr:port" */
        struct reactor_fd rfd;
};

struct portal_mgr {
        struct iscsi_gw *gw;
        struct reactor **reactors;
        unsigned nreactors;
        unsigned next_reactor;
        struct listener listeners[PORTAL_MAX];
        unsigned nlisteners;
};

struct handoff {
        struct portal_mgr *pm;
        unsigned ri;
        int fd;
        char portal[80];
        char peer[80];
};

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
        char host[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;
        if (ss->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
                port = ntohs(in->sin_port);
                snprintf(buf, len, "%s:%u", host, port);
        } else if (ss->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
                port = ntohs(in6->sin6_port);
                snprintf(buf, len, "[%s]:%u", host, port);
        } else {
                snprintf(buf, len, "unknown");
        }
}

static void start_on_reactor(void *arg)
{
        struct handoff *h = arg;
        tcp_conn_start(h->pm->gw, h->pm->reactors[h->ri], h->ri, h->fd, h->portal, h->peer);
        free(h);
}

static void accept_ready(struct reactor_fd *rfd, uint32_t events)
{
        struct listener *l = rfd->ctx;
        struct portal_mgr *pm = l->pm;
        for (int i = 0; i < 64; i++) {
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                                log_warn("portal %s: accept: %s", l->name, strerror(errno));
                        return;
                }
                struct handoff *h = calloc(1, sizeof(*h));
                if (!h) {
                        close(fd);
                        continue;
                }
                h->pm = pm;
                h->fd = fd;
                h->ri = pm->next_reactor++ % pm->nreactors;
                snprintf(h->portal, sizeof(h->portal), "%s", l->name);
                format_addr(&ss, h->peer, sizeof(h->peer));
                if (reactor_call(pm->reactors[h->ri], start_on_reactor, h) < 0) {
                        close(fd);
                        free(h);
                }
        }
}

struct portal_mgr *portal_mgr_create(struct iscsi_gw *gw, struct reactor **reactors,
                                     unsigned nreactors)
{
        struct portal_mgr *pm = calloc(1, sizeof(*pm));
        if (!pm)
                return NULL;
        pm->gw = gw;
        pm->reactors = reactors;
        pm->nreactors = nreactors;
        return pm;
}

struct listen_args {
        struct listener *l;
        int rc;
};

static void add_listener_fd(void *arg)
{
        struct listen_args *a = arg;
        a->rc = reactor_add_fd(a->l->pm->reactors[0], &a->l->rfd);
}

int portal_mgr_listen_tcp(struct portal_mgr *pm, const char *name,
                          const struct sockaddr_storage *addr, socklen_t len)
{
        if (pm->nlisteners == PORTAL_MAX)
                return -1;
        struct listener *l = &pm->listeners[pm->nlisteners];
        l->pm = pm;
        format_addr(addr, l->name, sizeof(l->name));
        l->fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l->fd < 0) {
                log_err("portal %s (%s): socket: %s", name, l->name, strerror(errno));
                return -1;
        }
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (addr->ss_family == AF_INET6)
                setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(l->fd, (const struct sockaddr *)addr, len) < 0 || listen(l->fd, 128) < 0) {
                log_err("portal %s (%s): cannot listen: %s", name, l->name, strerror(errno));
                close(l->fd);
                return -1;
        }
        l->rfd = (struct reactor_fd){.fd = l->fd, .events = EPOLLIN, .cb = accept_ready, .ctx = l};
        struct listen_args a = {.l = l};
        reactor_call_sync(pm->reactors[0], add_listener_fd, &a);
        if (a.rc < 0) {
                close(l->fd);
                return -1;
        }
        pm->nlisteners++;
        log_info("listening for iSCSI/TCP on %s (portal %s)", l->name, name);
        return 0;
}

static void remove_listeners(void *arg)
{
        struct portal_mgr *pm = arg;
        for (unsigned i = 0; i < pm->nlisteners; i++)
                reactor_del_fd(pm->reactors[0], &pm->listeners[i].rfd);
}

void portal_mgr_destroy(struct portal_mgr *pm)
{
        if (!pm)
                return;
        if (pm->nlisteners)
                reactor_call_sync(pm->reactors[0], remove_listeners, pm);
        for (unsigned i = 0; i < pm->nlisteners; i++)
                close(pm->listeners[i].fd);
        free(pm);
}
