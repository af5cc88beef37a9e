/* netaddr: the host's local addresses and which are on RDMA netdevs (see netaddr.h). */
#include "src/netaddr.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <netlink/cache.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>

#include "src/log.h"
#include "src/reactor.h"

/* RDMA devices can appear (modprobe rdma_rxe, rdma link add) without any netlink route
 * event: their netdevs are rechecked this often. */
#define NETADDR_RDMA_RECHECK_NS (5ull * 1000 * 1000 * 1000)

struct netaddr {
        struct reactor *reactor;
        struct nl_cache_mngr *mngr;
        struct nl_cache *links, *addrs;
        struct reactor_fd rfd;
        struct reactor_timer recheck;
        bool changed; /* set by the cache callbacks, consumed after each read */
        pthread_mutex_t lock;
        struct netaddr_entry *entries; /* under lock */
        size_t nentries;
};

/* ---------------- RDMA netdevs (sysfs) ---------------- */

/* buf = a/b; false if it does not fit (such a path is not one of ours). */
static bool join(char *buf, size_t len, const char *a, const char *b)
{
        int n = snprintf(buf, len, "%s/%s", a, b);
        return n >= 0 && (size_t)n < len;
}

static bool read_line(const char *path, char *buf, size_t len)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        bool ok = fgets(buf, (int)len, f) != NULL;
        fclose(f);
        if (ok)
                buf[strcspn(buf, "\n")] = 0;
        return ok;
}

static bool dir_names_netdev(const char *dir, const char *ifname)
{
        DIR *d = opendir(dir);
        if (!d)
                return false;
        bool found = false;
        struct dirent *e;
        char path[1024], name[IF_NAMESIZE + 2];
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                /* Unused GID entries read as EINVAL. */
                found = join(path, sizeof(path), dir, e->d_name) &&
                        read_line(path, name, sizeof(name)) && strcmp(name, ifname) == 0;
        }
        closedir(d);
        return found;
}

static bool ib_device_names_netdev(const char *devdir, const char *ifname)
{
        char path[1024], name[IF_NAMESIZE + 2];
        if (join(path, sizeof(path), devdir, "parent") && read_line(path, name, sizeof(name)) &&
            strcmp(name, ifname) == 0)
                return true;
        DIR *d = join(path, sizeof(path), devdir, "ports") ? opendir(path) : NULL;
        if (!d)
                return false;
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char port[1024], ndevs[1024];
                found = join(port, sizeof(port), path, e->d_name) &&
                        join(ndevs, sizeof(ndevs), port, "gid_attrs/ndevs") &&
                        dir_names_netdev(ndevs, ifname);
        }
        closedir(d);
        return found;
}

bool netaddr_is_rdma_netdev(const char *sysfs_root, const char *ifname)
{
        if (!ifname[0] || strchr(ifname, '/'))
                return false;
        char path[1024];
        snprintf(path, sizeof(path), "%s/class/net/%s/device/infiniband", sysfs_root, ifname);
        if (access(path, F_OK) == 0)
                return true;
        snprintf(path, sizeof(path), "%s/class/infiniband", sysfs_root);
        DIR *d = opendir(path);
        if (!d)
                return false;
        bool found = false;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char devdir[1024];
                found = join(devdir, sizeof(devdir), path, e->d_name) &&
                        ib_device_names_netdev(devdir, ifname);
        }
        closedir(d);
        return found;
}

/* ---------------- the expansion rule ---------------- */

/* The family of a numeric address (an IPv6 scope left out), with its binary form in bin; 0 if
 * not numeric. */
static int parse_address(const char *text, unsigned char bin[16])
{
        char plain[INET6_ADDRSTRLEN];
        size_t len = strcspn(text, "%");
        if (len >= sizeof(plain))
                return 0;
        memcpy(plain, text, len);
        plain[len] = 0;
        if (inet_pton(AF_INET, plain, bin) == 1)
                return AF_INET;
        if (inet_pton(AF_INET6, plain, bin) == 1)
                return AF_INET6;
        return 0;
}

static bool is_wildcard(int family, const unsigned char bin[16])
{
        static const unsigned char zero[16];
        return memcmp(bin, zero, family == AF_INET ? 4 : 16) == 0;
}

static bool same_address(const struct netaddr_entry *e, int family, const unsigned char bin[16])
{
        unsigned char ebin[16];
        return e->family == family && inet_pton(family, e->address, ebin) == 1 &&
               memcmp(ebin, bin, family == AF_INET ? 4 : 16) == 0;
}

static void expand_wildcard(const struct netaddr_entry *v, size_t n, int family, bool rdma_only,
                            netaddr_emit_fn emit, void *arg)
{
        /* Global addresses first; host-scope ones only if there are none. */
        for (int host = 0; host <= 1; host++) {
                bool any = false;
                for (size_t i = 0; i < n; i++) {
                        const struct netaddr_entry *e = &v[i];
                        if (e->family != family || !e->up || e->host != host || e->link ||
                            (rdma_only && !e->rdma))
                                continue;
                        emit(arg, e->address);
                        any = true;
                }
                if (any)
                        return;
        }
}

void netaddr_expand_entries(const struct netaddr_entry *v, size_t n, const char *address,
                            bool rdma_only, netaddr_emit_fn emit, void *arg)
{
        unsigned char bin[16];
        int family = parse_address(address, bin);
        if (!family)
                return;
        if (is_wildcard(family, bin)) {
                expand_wildcard(v, n, family, rdma_only, emit, arg);
                return;
        }
        for (size_t i = 0; i < n; i++) {
                if (same_address(&v[i], family, bin) && (!rdma_only || v[i].rdma)) {
                        emit(arg, address);
                        return;
                }
        }
}

struct netaddr_entry *netaddr_snapshot(struct netaddr *na, size_t *n)
{
        pthread_mutex_lock(&na->lock);
        struct netaddr_entry *copy = NULL;
        *n = 0;
        if (na->nentries && (copy = malloc(na->nentries * sizeof(*copy)))) {
                memcpy(copy, na->entries, na->nentries * sizeof(*copy));
                *n = na->nentries;
        }
        pthread_mutex_unlock(&na->lock);
        return copy;
}

void netaddr_expand(struct netaddr *na, const char *address, bool rdma_only, netaddr_emit_fn emit,
                    void *arg)
{
        size_t n;
        struct netaddr_entry *v = netaddr_snapshot(na, &n);
        netaddr_expand_entries(v, n, address, rdma_only, emit, arg);
        free(v);
}

/* ---------------- the snapshot from the libnl caches ---------------- */

struct build {
        struct netaddr *na;
        struct netaddr_entry *v;
        size_t n, cap;
};

static bool entry_from_addr(struct netaddr *na, struct rtnl_addr *a, struct netaddr_entry *e)
{
        struct nl_addr *local = rtnl_addr_get_local(a);
        int family = rtnl_addr_get_family(a);
        int scope = rtnl_addr_get_scope(a);
        if (!local || (family != AF_INET && family != AF_INET6))
                return false;
        if (scope == RT_SCOPE_NOWHERE)
                return false;
        memset(e, 0, sizeof(*e));
        e->family = family;
        if (!inet_ntop(family, nl_addr_get_binary_addr(local), e->address, sizeof(e->address)))
                return false;
        e->host = scope == RT_SCOPE_HOST;
        /* A wildcard does not offer these: they need a scope id that the initiator's side
         * would have to name. */
        e->link = scope == RT_SCOPE_LINK;
        unsigned flags = 0;
        struct rtnl_link *link = rtnl_link_get(na->links, rtnl_addr_get_ifindex(a));
        if (link) {
                snprintf(e->ifname, sizeof(e->ifname), "%s", rtnl_link_get_name(link));
                flags = rtnl_link_get_flags(link);
                rtnl_link_put(link);
        }
        bool usable = !(rtnl_addr_get_flags(a) & (IFA_F_TENTATIVE | IFA_F_DADFAILED));
        e->up = (flags & IFF_UP) && (flags & IFF_RUNNING) && usable;
        e->rdma = netaddr_is_rdma_netdev("/sys", e->ifname);
        return true;
}

static void add_addr_entry(struct nl_object *obj, void *arg)
{
        struct build *b = arg;
        struct netaddr_entry e;
        if (!entry_from_addr(b->na, (struct rtnl_addr *)obj, &e))
                return;
        if (b->n == b->cap) {
                size_t cap = b->cap ? 2 * b->cap : 16;
                struct netaddr_entry *v = realloc(b->v, cap * sizeof(*v));
                if (!v)
                        return;
                b->v = v;
                b->cap = cap;
        }
        b->v[b->n++] = e;
}

static const struct netaddr_entry *find_entry(const struct netaddr_entry *v, size_t n,
                                              const struct netaddr_entry *e)
{
        for (size_t i = 0; i < n; i++)
                if (v[i].family == e->family && strcmp(v[i].address, e->address) == 0 &&
                    strcmp(v[i].ifname, e->ifname) == 0)
                        return &v[i];
        return NULL;
}

static void log_entry(char sign, const struct netaddr_entry *e)
{
        log_info("portal addresses: %c %s (%s%s%s)", sign, e->address,
                 e->ifname[0] ? e->ifname : "?", e->up ? "" : ", down", e->rdma ? ", rdma" : "");
}

/* Logs what changed from old to new: + added, - removed, * up or rdma changed. */
static void log_changes(const struct netaddr_entry *old, size_t nold, const struct netaddr_entry *v,
                        size_t n)
{
        for (size_t i = 0; i < n; i++) {
                const struct netaddr_entry *o = find_entry(old, nold, &v[i]);
                if (!o)
                        log_entry('+', &v[i]);
                else if (o->up != v[i].up || o->rdma != v[i].rdma)
                        log_entry('*', &v[i]);
        }
        for (size_t i = 0; i < nold; i++)
                if (!find_entry(v, n, &old[i]))
                        log_entry('-', &old[i]);
}

static void rebuild_snapshot(struct netaddr *na)
{
        struct build b = {.na = na};
        nl_cache_foreach(na->addrs, add_addr_entry, &b);
        pthread_mutex_lock(&na->lock);
        struct netaddr_entry *old = na->entries;
        size_t nold = na->nentries;
        na->entries = b.v;
        na->nentries = b.n;
        pthread_mutex_unlock(&na->lock);
        log_changes(old, nold, b.v, b.n);
        free(old);
}

/* ---------------- netlink and the reactor ---------------- */

static void cache_changed(struct nl_cache *cache, struct nl_object *obj, int action, void *arg)
{
        struct netaddr *na = arg;
        na->changed = true;
}

/* After a lost notification (socket buffer overrun) the caches are dumped again. */
static void resync_caches(struct netaddr *na)
{
        struct nl_sock *sk = nl_socket_alloc();
        if (sk && nl_connect(sk, NETLINK_ROUTE) == 0) {
                nl_cache_refill(sk, na->links);
                nl_cache_refill(sk, na->addrs);
        }
        nl_socket_free(sk);
        na->changed = true;
}

static void netlink_readable(struct reactor_fd *rfd, uint32_t events)
{
        struct netaddr *na = rfd->ctx;
        int rc = nl_cache_mngr_data_ready(na->mngr);
        if (rc < 0) {
                log_warn("portal addresses: netlink: %s; dumping the addresses again",
                         nl_geterror(rc));
                resync_caches(na);
        }
        if (na->changed) {
                na->changed = false;
                rebuild_snapshot(na);
        }
}

static void recheck_rdma(struct reactor_timer *t)
{
        struct netaddr *na = t->ctx;
        rebuild_snapshot(na); /* logs only what changed */
        reactor_timer_arm(na->reactor, &na->recheck, NETADDR_RDMA_RECHECK_NS);
}

static void start_on_reactor(void *arg)
{
        struct netaddr *na = arg;
        na->recheck.cb = recheck_rdma;
        na->recheck.ctx = na;
        reactor_timer_arm(na->reactor, &na->recheck, NETADDR_RDMA_RECHECK_NS);
        if (reactor_add_fd(na->reactor, &na->rfd) < 0)
                na->rfd.fd = -1;
}

static void stop_on_reactor(void *arg)
{
        struct netaddr *na = arg;
        reactor_timer_cancel(na->reactor, &na->recheck);
        if (na->rfd.fd >= 0)
                reactor_del_fd(na->reactor, &na->rfd);
}

static int open_caches(struct netaddr *na)
{
        int rc = nl_cache_mngr_alloc(NULL, NETLINK_ROUTE, 0, &na->mngr);
        if (rc == 0)
                rc = nl_cache_mngr_add(na->mngr, "route/link", cache_changed, na, &na->links);
        if (rc == 0)
                rc = nl_cache_mngr_add(na->mngr, "route/addr", cache_changed, na, &na->addrs);
        if (rc < 0) {
                log_warn("portal addresses: netlink unavailable (%s): SendTargets advertises the "
                         "portals as configured",
                         nl_geterror(rc));
                return -1;
        }
        return 0;
}

struct netaddr *netaddr_create(struct reactor *r)
{
        struct netaddr *na = calloc(1, sizeof(*na));
        if (!na)
                return NULL;
        na->reactor = r;
        na->rfd.fd = -1;
        pthread_mutex_init(&na->lock, NULL);
        if (open_caches(na) < 0) {
                netaddr_destroy(na);
                return NULL;
        }
        rebuild_snapshot(na);
        na->rfd = (struct reactor_fd){.fd = nl_cache_mngr_get_fd(na->mngr),
                                      .events = EPOLLIN,
                                      .cb = netlink_readable,
                                      .ctx = na};
        if (reactor_call_sync(r, start_on_reactor, na) < 0 || na->rfd.fd < 0) {
                log_warn("portal addresses: cannot watch netlink: changes are not followed");
                na->rfd.fd = -1;
        }
        return na;
}

void netaddr_destroy(struct netaddr *na)
{
        if (!na)
                return;
        if (na->mngr) {
                if (reactor_running(na->reactor))
                        reactor_call_sync(na->reactor, stop_on_reactor, na);
                else
                        stop_on_reactor(na);
                nl_cache_mngr_free(na->mngr); /* frees its caches too */
        }
        pthread_mutex_destroy(&na->lock);
        free(na->entries);
        free(na);
}
