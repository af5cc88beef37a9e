/* iser_ls: what libiscsi's iscsi-ls -s does, over iSER (libiscsi 1.19's iscsi-ls only takes
 * iscsi:// portal URLs, so it cannot list over iSER).
 *   iser_ls [--initiator-name IQN] iser://HOST[:PORT]     (iscsi://HOST[:PORT]: the same over TCP)
 * 1. A discovery session on the portal over the URL's transport: SendTargets=All, one line
 *    per target and portal: "Target:IQN Portal:HOST:PORT,TPGT" (iscsi-ls's format).
 * 2. For each target and each of its portals, a normal session over the same transport:
 *    REPORT LUNS, then per LUN a standard INQUIRY and, for a disk, READ CAPACITY(16):
 *    "Lun:N Type:DIRECT_ACCESS Vendor:V Product:P Size:BYTES (BLOCKS blocks of LEN bytes)".
 * Exit status: 0 if every step succeeded, 1 on any failure, 2 on a usage error.
 *
 * libiscsi 1.19's iSER transport leaves a freed PDU on the context's wait list when it cannot
 * send a command (iscsi_iser_queue_pdu links it before sending; the caller frees it on
 * failure), and a command that failed in the event loop still points at the caller's stack.
 * So after a synchronous call returned no task, the context is never touched again (no
 * logout, no destroy): the tool reports and exits. */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The project root is on the include path and has its own iscsi/iscsi.h. */
#include </usr/include/iscsi/iscsi.h>
#include </usr/include/iscsi/scsi-lowlevel.h>

#define MAX_TARGETS      64
#define MAX_PORTALS      16
#define DISCOVERY_WAIT_S 30

struct ls_target {
        char *name;
        char *portals[MAX_PORTALS];
        int nportals;
};

struct ls_discovery {
        bool finished;
        int status;
        bool truncated;
        struct ls_target targets[MAX_TARGETS];
        int ntargets;
};

static const char *transport_name(enum iscsi_transport_type t)
{
        return t == ISER_TRANSPORT ? "iSER" : "TCP";
}

/* ---------------- discovery ---------------- */

static void copy_target(struct ls_discovery *d, const struct iscsi_discovery_address *a)
{
        if (d->ntargets == MAX_TARGETS) {
                d->truncated = true;
                return;
        }
        struct ls_target *t = &d->targets[d->ntargets++];
        t->name = strdup(a->target_name);
        for (const struct iscsi_target_portal *p = a->portals; p; p = p->next) {
                if (t->nportals == MAX_PORTALS) {
                        d->truncated = true;
                        break;
                }
                t->portals[t->nportals++] = strdup(p->portal);
        }
}

/* The answer is only valid during the callback: copy it, in the target's order. */
static void discovery_cb(struct iscsi_context *ctx, int status, void *command_data, void *priv)
{
        struct ls_discovery *d = priv;
        (void)ctx;
        d->status = status;
        d->finished = true;
        if (status != SCSI_STATUS_GOOD)
                return;
        for (const struct iscsi_discovery_address *a = command_data; a; a = a->next)
                copy_target(d, a);
}

/* The asynchronous SendTargets (iscsi_discovery_sync cannot tell an error from an empty
 * answer). Returns 0 when the callback ran; -1 if the context is no longer usable. */
static int run_discovery(struct iscsi_context *ctx, struct ls_discovery *d)
{
        if (iscsi_discovery_async(ctx, discovery_cb, d) != 0) {
                fprintf(stderr, "iser_ls: cannot send SendTargets: %s\n", iscsi_get_error(ctx));
                return -1;
        }
        for (int idle_s = 0; !d->finished;) {
                struct pollfd p = {.fd = iscsi_get_fd(ctx), .events = iscsi_which_events(ctx)};
                int n = poll(&p, 1, 1000);
                if (n < 0 || iscsi_service(ctx, n > 0 ? p.revents : 0) < 0) {
                        fprintf(stderr, "iser_ls: discovery connection failed: %s\n",
                                iscsi_get_error(ctx));
                        return -1;
                }
                if (n == 0 && ++idle_s == DISCOVERY_WAIT_S) {
                        fprintf(stderr, "iser_ls: no SendTargets answer in %d s\n", idle_s);
                        return -1;
                }
        }
        return 0;
}

/* Discovery session on the portal of URL; fills d. Returns 0 on success. */
static int discover(const char *initiator, const char *url, struct ls_discovery *d,
                    enum iscsi_transport_type *transport, char *portal, size_t portal_len)
{
        struct iscsi_context *ctx = iscsi_create_context(initiator);
        if (!ctx)
                return -1;
        /* An iser:// URL switches the context to the iSER transport. */
        struct iscsi_url *u = iscsi_parse_portal_url(ctx, url);
        if (!u) {
                fprintf(stderr, "iser_ls: bad portal URL: %s\n", iscsi_get_error(ctx));
                iscsi_destroy_context(ctx);
                return -1;
        }
        *transport = u->transport;
        snprintf(portal, portal_len, "%s", u->portal);
        iscsi_destroy_url(u);
        iscsi_set_session_type(ctx, ISCSI_SESSION_DISCOVERY);
        iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE);
        iscsi_set_noautoreconnect(ctx, 1);
        printf("iser_ls: discovery session over %s to %s\n", transport_name(*transport), portal);
        if (iscsi_connect_sync(ctx, portal) || iscsi_login_sync(ctx)) {
                fprintf(stderr, "iser_ls: discovery login to %s over %s failed: %s\n", portal,
                        transport_name(*transport), iscsi_get_error(ctx));
                iscsi_destroy_context(ctx);
                return -1;
        }
        if (run_discovery(ctx, d))
                return -1; /* the context may hold stale PDUs: left alone (see the top) */
        int rc = 0;
        if (d->status != SCSI_STATUS_GOOD) {
                fprintf(stderr, "iser_ls: SendTargets failed (status %d): %s\n", d->status,
                        iscsi_get_error(ctx));
                rc = -1;
        }
        if (iscsi_logout_sync(ctx)) {
                fprintf(stderr, "iser_ls: discovery logout failed: %s\n", iscsi_get_error(ctx));
                rc = -1;
        }
        iscsi_destroy_context(ctx);
        return rc;
}

/* ---------------- LUNs of one target ---------------- */

/* A synchronous command's task, or NULL (message printed) if it was not answered with GOOD.
 * *dead is set when libiscsi returned no task at all: the context must be left alone. */
static struct scsi_task *answered(struct iscsi_context *ctx, struct scsi_task *t, const char *what,
                                  bool *dead)
{
        if (!t) {
                *dead = true;
                fprintf(stderr, "iser_ls: %s not sent or not answered: %s\n", what,
                        iscsi_get_error(ctx));
                return NULL;
        }
        if (t->status == SCSI_STATUS_GOOD)
                return t;
        fprintf(stderr, "iser_ls: %s failed: status %d, sense key %d ASC/ASCQ %04x: %s\n", what,
                t->status, t->sense.key, t->sense.ascq, iscsi_get_error(ctx));
        scsi_free_scsi_task(t);
        return NULL;
}

/* Standard INQUIRY: device type, vendor, product. Returns the device type or -1. */
static int lun_inquiry(struct iscsi_context *ctx, int lun, char *vendor, char *product, bool *dead)
{
        struct scsi_task *t =
            answered(ctx, iscsi_inquiry_sync(ctx, lun, 0, 0, 96), "INQUIRY", dead);
        if (!t)
                return -1;
        struct scsi_inquiry_standard *inq = scsi_datain_unmarshall(t);
        int type = -1;
        if (inq) {
                type = inq->device_type;
                snprintf(vendor, 9, "%.8s", inq->vendor_identification);
                snprintf(product, 17, "%.16s", inq->product_identification);
                /* Trailing blanks are padding. */
                for (char *s = vendor + strlen(vendor); s > vendor && s[-1] == ' ';)
                        *--s = '\0';
                for (char *s = product + strlen(product); s > product && s[-1] == ' ';)
                        *--s = '\0';
        } else {
                fprintf(stderr, "iser_ls: LUN %d: INQUIRY data unreadable\n", lun);
        }
        scsi_free_scsi_task(t);
        return type;
}

static int lun_capacity(struct iscsi_context *ctx, int lun, uint64_t *blocks, uint32_t *blksz,
                        bool *dead)
{
        struct scsi_task *t =
            answered(ctx, iscsi_readcapacity16_sync(ctx, lun), "READ CAPACITY(16)", dead);
        if (!t)
                return -1;
        struct scsi_readcapacity16 *rc16 = scsi_datain_unmarshall(t);
        if (rc16) {
                *blocks = rc16->returned_lba + 1;
                *blksz = rc16->block_length;
        } else {
                fprintf(stderr, "iser_ls: LUN %d: READ CAPACITY(16) data unreadable\n", lun);
        }
        scsi_free_scsi_task(t);
        return rc16 ? 0 : -1;
}

static int show_lun(struct iscsi_context *ctx, int lun, bool *dead)
{
        char vendor[9] = "", product[17] = "";
        int type = lun_inquiry(ctx, lun, vendor, product, dead);
        if (type < 0)
                return -1;
        printf("Lun:%d Type:%s Vendor:%s Product:%s", lun,
               scsi_devtype_to_str((enum scsi_inquiry_peripheral_device_type)type), vendor,
               product);
        if (type != SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
                printf("\n");
                return 0;
        }
        uint64_t blocks = 0;
        uint32_t blksz = 0;
        if (lun_capacity(ctx, lun, &blocks, &blksz, dead)) {
                printf(" Size:unknown\n");
                return -1;
        }
        printf(" Size:%" PRIu64 " (%" PRIu64 " blocks of %" PRIu32 " bytes)\n", blocks * blksz,
               blocks, blksz);
        return 0;
}

/* REPORT LUNS (16 bytes first: some targets refuse more, then the full list). */
static struct scsi_reportluns_list *report_luns(struct iscsi_context *ctx, struct scsi_task **tp,
                                                bool *dead)
{
        struct scsi_task *t = answered(ctx, iscsi_reportluns_sync(ctx, 0, 16), "REPORT LUNS", dead);
        if (!t)
                return NULL;
        int full = scsi_datain_getfullsize(t);
        if (full > t->datain.size) {
                scsi_free_scsi_task(t);
                t = answered(ctx, iscsi_reportluns_sync(ctx, 0, full), "REPORT LUNS", dead);
                if (!t)
                        return NULL;
        }
        struct scsi_reportluns_list *list = scsi_datain_unmarshall(t);
        if (!list) {
                fprintf(stderr, "iser_ls: REPORT LUNS data unreadable\n");
                scsi_free_scsi_task(t);
                return NULL;
        }
        *tp = t;
        return list;
}

/* "HOST:PORT,TPGT" from SendTargets -> "HOST:PORT". */
static void portal_address(const char *portal, char *out, size_t len)
{
        snprintf(out, len, "%s", portal);
        char *comma = strrchr(out, ',');
        if (comma)
                *comma = '\0';
}

/* A normal session to target over transport: its LUNs. Returns 0 if all were listed. */
static int list_luns(const char *initiator, enum iscsi_transport_type transport, const char *target,
                     const char *portal)
{
        struct iscsi_context *ctx = iscsi_create_context(initiator);
        if (!ctx)
                return -1;
        char addr[MAX_STRING_SIZE + 1];
        portal_address(portal, addr, sizeof(addr));
        if (iscsi_init_transport(ctx, transport) || iscsi_set_targetname(ctx, target)) {
                fprintf(stderr, "iser_ls: %s\n", iscsi_get_error(ctx));
                iscsi_destroy_context(ctx);
                return -1;
        }
        iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
        iscsi_set_noautoreconnect(ctx, 1);
        if (iscsi_full_connect_sync(ctx, addr, -1)) {
                fprintf(stderr, "iser_ls: login to %s at %s over %s failed: %s\n", target, addr,
                        transport_name(transport), iscsi_get_error(ctx));
                iscsi_destroy_context(ctx);
                return -1;
        }
        bool dead = false;
        struct scsi_task *t = NULL;
        struct scsi_reportluns_list *list = report_luns(ctx, &t, &dead);
        int rc = list ? 0 : -1;
        for (uint32_t i = 0; list && i < list->num && !dead; i++)
                if (show_lun(ctx, list->luns[i], &dead))
                        rc = -1;
        if (list && list->num == 0)
                printf("(no LUNs)\n");
        if (t)
                scsi_free_scsi_task(t);
        if (dead)
                return -1; /* see the top: the context is left alone */
        if (iscsi_logout_sync(ctx)) {
                fprintf(stderr, "iser_ls: logout from %s failed: %s\n", target,
                        iscsi_get_error(ctx));
                rc = -1;
        }
        iscsi_destroy_context(ctx);
        return rc;
}

/* ---------------- main ---------------- */

static void usage(FILE *f)
{
        fprintf(f,
                "usage: iser_ls [--initiator-name IQN] iser://HOST[:PORT] | iscsi://HOST[:PORT]\n"
                "Lists the targets of a portal (discovery session) and the LUNs of each\n"
                "(normal sessions), over iSER for iser:// and over TCP for iscsi://.\n"
                "Exit status: 0 all listed, 1 a step failed, 2 usage.\n");
}

static void free_discovery(struct ls_discovery *d)
{
        for (int i = 0; i < d->ntargets; i++) {
                free(d->targets[i].name);
                for (int j = 0; j < d->targets[i].nportals; j++)
                        free(d->targets[i].portals[j]);
        }
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"initiator-name", required_argument, NULL, 'i'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
        };
        const char *initiator = "iqn.2024-01.org.isergw:iser-ls";
        int c;
        while ((c = getopt_long(argc, argv, "i:h", opts, NULL)) != -1) {
                if (c == 'i') {
                        initiator = optarg;
                } else if (c == 'h') {
                        usage(stdout);
                        return 0;
                } else {
                        usage(stderr);
                        return 2;
                }
        }
        if (optind != argc - 1) {
                usage(stderr);
                return 2;
        }
        static struct ls_discovery d;
        enum iscsi_transport_type transport = TCP_TRANSPORT;
        char portal[MAX_STRING_SIZE + 1];
        if (discover(initiator, argv[optind], &d, &transport, portal, sizeof(portal))) {
                free_discovery(&d);
                return 1;
        }
        int failed = d.truncated;
        if (d.truncated)
                fprintf(stderr, "iser_ls: more than %d targets or %d portals: list cut\n",
                        MAX_TARGETS, MAX_PORTALS);
        if (d.ntargets == 0)
                printf("iser_ls: no targets on %s\n", portal);
        for (int i = 0; i < d.ntargets; i++)
                for (int j = 0; j < d.targets[i].nportals; j++) {
                        printf("Target:%s Portal:%s\n", d.targets[i].name, d.targets[i].portals[j]);
                        failed |= list_luns(initiator, transport, d.targets[i].name,
                                            d.targets[i].portals[j]) != 0;
                }
        free_discovery(&d);
        return failed ? 1 : 0;
}
