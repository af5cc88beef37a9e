/* iser: the iSCSI-over-RDMA transport (iSER, RFC 7145) behind iscsi_transport_ops, built on
 * librdmacm and libibverbs. Owns the RDMA CM listeners of the iSER portals; per RDMA device
 * one protection domain and one memory region over the whole cache-line pool (registered
 * once, never per I/O); per connection its queue pair, completion queue, registered receive
 * buffers for control PDUs and send buffers. Write data is pulled by RDMA READ from the
 * initiator straight into cache lines (the data pointer table is the scatter list), read data
 * is pushed by RDMA WRITE from the lines; the CPU copies no data byte. */
#ifndef ISERGW_RDMA_ISER_H
#define ISERGW_RDMA_ISER_H

#include <jansson.h>
#include <sys/socket.h>

struct iscsi_gw;
struct line_pool;
struct reactor;
struct iser_mgr;

struct iser_mgr *iser_mgr_create(struct iscsi_gw *gw, struct line_pool *pool,
                                 struct reactor **reactors, unsigned nreactors);
/* Listens for iSER connections on addr (RDMA CM). 0: listening; -1 when this host cannot:
 * no RDMA device, no RDMA CM, or the address is not on an RDMA-capable interface (logged as
 * a warning: the portal is skipped, everything else carries on). */
int iser_listen(struct iser_mgr *m, const char *name, const struct sockaddr_storage *addr,
                socklen_t len);
/* Stops listening (the reactors still run); connections are closed through the iSCSI layer. */
void iser_mgr_stop_listening(struct iser_mgr *m);
/* After every connection is gone and the reactors stopped: frees devices and registrations. */
void iser_mgr_destroy(struct iser_mgr *m);
/* Counters, flat "iser_*" keys for the status "stats" object: RDMA READ/WRITE operations and
 * bytes, data bytes the CPU copied on the iSER path (0 by design), connections, failed work
 * completions. m may be NULL (all zero). Any thread. */
json_t *iser_stats_json(struct iser_mgr *m);

#endif
