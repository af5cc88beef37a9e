/* netaddr: the host's local addresses, for portal discovery (docs/iser.md, RD2-M3). Owns a
 * libnl-route cache of links and addresses kept current by netlink notifications
 * (RTM_NEWADDR/DELADDR, RTM_NEWLINK/DELLINK) read on one reactor, and a mutex-protected
 * snapshot of them that any thread can copy. Tells which interfaces are netdevs of an RDMA
 * device (sysfs), rechecked on every change and every few seconds. Decides which addresses a
 * configured portal really offers now; it knows nothing of iSCSI. */
#ifndef ISERGW_SRC_NETADDR_H
#define ISERGW_SRC_NETADDR_H

#include <net/if.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

struct reactor;
struct netaddr;

struct netaddr_entry {
        int family;                     /* AF_INET or AF_INET6 */
        char address[INET6_ADDRSTRLEN]; /* numeric, no brackets, no scope */
        char ifname[IF_NAMESIZE];
        bool up;   /* the interface is up and running, the address usable (not tentative) */
        bool host; /* host scope (loopback) */
        bool link; /* link scope (fe80::/10): only a portal naming it offers it */
        bool rdma; /* the interface is a netdev of an RDMA device */
};

/* Dumps the links and addresses and follows their changes on reactor r (running). NULL
 * (logged) when netlink cannot be used. */
struct netaddr *netaddr_create(struct reactor *r);
/* From the thread that created it, while r runs or after r stopped. */
void netaddr_destroy(struct netaddr *na);

/* A copy of the current addresses (free() it); *n entries. NULL with *n 0 when empty. */
struct netaddr_entry *netaddr_snapshot(struct netaddr *na, size_t *n);

typedef void (*netaddr_emit_fn)(void *arg, const char *address);

/* The addresses a portal configured on address (numeric) offers now, each given to emit:
 *  - a wildcard (0.0.0.0, ::): every up address of that family with global scope; host-scope
 *    (loopback) ones only when the host has no other (so a lone host still answers);
 *  - a specific address: itself, as written, while some interface has it (a scope, as in
 *    fe80::1%eth0, is not compared);
 *  - rdma_only (an iSER portal): only addresses on RDMA-capable interfaces.
 * Any thread. */
void netaddr_expand(struct netaddr *na, const char *address, bool rdma_only, netaddr_emit_fn emit,
                    void *arg);
/* The same rule over given entries (unit tests). */
void netaddr_expand_entries(const struct netaddr_entry *v, size_t n, const char *address,
                            bool rdma_only, netaddr_emit_fn emit, void *arg);

/* Whether interface ifname is a netdev of an RDMA device, looking under sysfs_root ("/sys"
 * on a host; a fake tree in tests): /sys/class/net/IF/device/infiniband exists (HCAs, IPoIB),
 * or a device of /sys/class/infiniband names it in its parent file (rxe) or in
 * ports/N/gid_attrs/ndevs/M (RoCE). */
bool netaddr_is_rdma_netdev(const char *sysfs_root, const char *ifname);

#endif
