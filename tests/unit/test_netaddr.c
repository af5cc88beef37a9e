/* Portal discovery: which addresses a configured portal offers (netaddr_expand_entries), which
 * interfaces are RDMA netdevs (a fake sysfs tree), and SendTargets built from an address
 * source (a fake one) with TCP/iSER de-duplication. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iscsi/iscsi.h"
#include "iscsi/iscsi_internal.h"
#include "iscsi/textkv.h"
#include "src/netaddr.h"

/* ---------------- the expansion rule ---------------- */

struct emitted {
        char list[512]; /* "a b c " */
};

static void collect(void *arg, const char *address)
{
        struct emitted *e = arg;
        strcat(e->list, address);
        strcat(e->list, " ");
}

static const char *expand(const struct netaddr_entry *v, size_t n, const char *addr, bool rdma)
{
        static struct emitted e;
        memset(&e, 0, sizeof(e));
        netaddr_expand_entries(v, n, addr, rdma, collect, &e);
        return e.list;
}

static const struct netaddr_entry host[] = {
    {.family = AF_INET, .address = "127.0.0.1", .ifname = "lo", .up = true, .host = true},
    {.family = AF_INET6, .address = "::1", .ifname = "lo", .up = true, .host = true},
    {.family = AF_INET, .address = "192.0.2.2", .ifname = "eth0", .up = true},
    {.family = AF_INET6, .address = "fd00::2", .ifname = "eth0", .up = true},
    {.family = AF_INET, .address = "10.0.0.5", .ifname = "eth1", .up = true, .rdma = true},
    {.family = AF_INET, .address = "10.9.0.1", .ifname = "eth2", .up = false, .rdma = true},
    {.family = AF_INET6, .address = "fe80::1", .ifname = "eth0", .up = true, .link = true},
};
#define NHOST (sizeof(host) / sizeof(host[0]))

Test(netaddr, wildcard_tcp_is_every_up_global_address_of_its_family)
{
        cr_assert_str_eq(expand(host, NHOST, "0.0.0.0", false), "192.0.2.2 10.0.0.5 ");
        cr_assert_str_eq(expand(host, NHOST, "::", false), "fd00::2 ");
        cr_assert_str_eq(expand(host, NHOST, "0:0::0", false), "fd00::2 ");
}

Test(netaddr, wildcard_iser_is_only_rdma_addresses)
{
        cr_assert_str_eq(expand(host, NHOST, "0.0.0.0", true), "10.0.0.5 ");
        cr_assert_str_eq(expand(host, NHOST, "::", true), "");
}

Test(netaddr, loopback_only_when_nothing_else)
{
        cr_assert_str_eq(expand(host, 2, "0.0.0.0", false), "127.0.0.1 ");
        cr_assert_str_eq(expand(host, 2, "::", false), "::1 ");
        cr_assert_str_eq(expand(host, 2, "0.0.0.0", true), "");
        cr_assert_str_eq(expand(NULL, 0, "0.0.0.0", false), "");
}

Test(netaddr, specific_address_while_the_host_has_it)
{
        cr_assert_str_eq(expand(host, NHOST, "192.0.2.2", false), "192.0.2.2 ");
        cr_assert_str_eq(expand(host, NHOST, "127.0.0.1", false), "127.0.0.1 ");
        cr_assert_str_eq(expand(host, NHOST, "192.0.2.77", false), "");
        /* As written, matched in binary form. */
        cr_assert_str_eq(expand(host, NHOST, "fd00:0::2", false), "fd00:0::2 ");
        cr_assert_str_eq(expand(host, NHOST, "192.0.2.2", true), "");
        cr_assert_str_eq(expand(host, NHOST, "10.0.0.5", true), "10.0.0.5 ");
        cr_assert_str_eq(expand(host, NHOST, "not-an-address", false), "");
        /* Link-local: named with its scope, never from a wildcard. */
        cr_assert_str_eq(expand(host, NHOST, "fe80::1%eth0", false), "fe80::1%eth0 ");
        cr_assert_str_eq(expand(host, NHOST, "fe80::2%eth0", false), "");
}

/* ---------------- RDMA netdevs ---------------- */

static void put(const char *root, const char *rel, const char *content)
{
        char path[1024], cmd[1200];
        snprintf(path, sizeof(path), "%s/%s", root, rel);
        snprintf(cmd, sizeof(cmd), "mkdir -p \"$(dirname '%s')\"", path);
        cr_assert_eq(system(cmd), 0);
        if (!content) {
                cr_assert_eq(mkdir(path, 0755), 0);
                return;
        }
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(content, f);
        fclose(f);
}

Test(netaddr, rdma_netdevs_from_sysfs)
{
        char root[] = "/tmp/isergw-sysfs.XXXXXX";
        cr_assert_not_null(mkdtemp(root));
        put(root, "class/net/ib0/device/infiniband", NULL);    /* an HCA's IPoIB netdev */
        put(root, "class/net/eth0/device/vendor", "0x8086\n"); /* a plain NIC */
        put(root, "class/infiniband/rxe0/parent", "eth3\n");   /* soft-RoCE */
        put(root, "class/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/0", "eth4\n");
        put(root, "class/infiniband/mlx5_0/ports/1/gid_attrs/ndevs/1", "");
        cr_assert(netaddr_is_rdma_netdev(root, "ib0"));
        cr_assert(netaddr_is_rdma_netdev(root, "eth3"));
        cr_assert(netaddr_is_rdma_netdev(root, "eth4"));
        cr_assert(!netaddr_is_rdma_netdev(root, "eth0"));
        cr_assert(!netaddr_is_rdma_netdev(root, "eth"));
        cr_assert(!netaddr_is_rdma_netdev(root, "../../x"));
        cr_assert(!netaddr_is_rdma_netdev(root, ""));
        cr_assert(!netaddr_is_rdma_netdev("/nonexistent", "eth3"));
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        cr_assert_eq(system(cmd), 0);
}

/* ---------------- SendTargets with an address source ---------------- */

static void fake_source(void *ctx, const char *address, bool iser, iscsi_address_emit_fn emit,
                        void *arg)
{
        netaddr_expand_entries(host, NHOST, address, iser, emit, arg);
        (*(int *)ctx)++;
}

static char *send_targets(struct iscsi_gw *gw)
{
        struct textbuf out;
        textbuf_init(&out);
        cr_assert_eq(target_send_targets(gw, "All", "iqn.x:ini", &out), 0);
        char *s = malloc(out.len + 1);
        for (size_t i = 0; i < out.len; i++)
                s[i] = out.data[i] ? out.data[i] : '|';
        s[out.len] = 0;
        textbuf_free(&out);
        return s;
}

static struct iscsi_gw *gw_with_portals(void)
{
        struct iscsi_gw *gw = iscsi_gw_create(&(struct iscsi_gw_conf){0});
        cr_assert_not_null(gw);
        cr_assert_eq(iscsi_gw_add_target(gw, &(struct iscsi_target_conf){.name = "iqn.x:t"}), 0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "0.0.0.0", 3260, false), 0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "0.0.0.0", 3260, true), 0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "192.0.2.2", 3261, true), 0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "fd00::2", 3260, false), 0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "192.0.2.99", 3260, false), 0);
        return gw;
}

Test(netaddr, send_targets_without_source_is_as_configured)
{
        struct iscsi_gw *gw = gw_with_portals();
        char *s = send_targets(gw);
        cr_assert_str_eq(s, "TargetName=iqn.x:t|TargetAddress=0.0.0.0:3260,1|"
                            "TargetAddress=192.0.2.2:3261,1|TargetAddress=[fd00::2]:3260,1|"
                            "TargetAddress=192.0.2.99:3260,1|");
        free(s);
        iscsi_gw_destroy(gw);
}

Test(netaddr, send_targets_expands_and_merges)
{
        struct iscsi_gw *gw = gw_with_portals();
        int calls = 0;
        iscsi_gw_set_address_source(gw, fake_source, &calls);
        char *s = send_targets(gw);
        /* 0.0.0.0 TCP: both global IPv4; 0.0.0.0 iSER: 10.0.0.5 again (merged); 192.0.2.2
         * iSER: not RDMA; fd00::2: present; 192.0.2.99: not on this host. */
        cr_assert_str_eq(s, "TargetName=iqn.x:t|TargetAddress=192.0.2.2:3260,1|"
                            "TargetAddress=10.0.0.5:3260,1|TargetAddress=[fd00::2]:3260,1|");
        cr_assert_eq(calls, 5);
        free(s);
        iscsi_gw_destroy(gw);
}

Test(netaddr, target_portals_expand_too)
{
        struct iscsi_gw *gw = iscsi_gw_create(&(struct iscsi_gw_conf){0});
        const struct iscsi_portal_conf pv[] = {{.address = "0.0.0.0", .port = 3262, .iser = true},
                                               {.address = "127.0.0.1", .port = 3262}};
        cr_assert_eq(
            iscsi_gw_add_target(
                gw, &(struct iscsi_target_conf){.name = "iqn.x:t", .portals = pv, .nportals = 2}),
            0);
        cr_assert_eq(iscsi_gw_add_portal(gw, "192.0.2.2", 3260, false), 0); /* not this target's */
        int calls = 0;
        iscsi_gw_set_address_source(gw, fake_source, &calls);
        char *s = send_targets(gw);
        cr_assert_str_eq(s, "TargetName=iqn.x:t|TargetAddress=10.0.0.5:3262,1|"
                            "TargetAddress=127.0.0.1:3262,1|");
        free(s);
        iscsi_gw_destroy(gw);
}
