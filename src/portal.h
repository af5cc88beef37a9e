/* portal: the connection manager. Owns the listening sockets of the configured portals,
 * accepts on reactor 0 and hands each new connection to a reactor, round robin, where the
 * transport takes it over. */
#ifndef ISERGW_SRC_PORTAL_H
#define ISERGW_SRC_PORTAL_H

#include <sys/socket.h>

struct iscsi_gw;
struct reactor;
struct portal_mgr;

struct portal_mgr *portal_mgr_create(struct iscsi_gw *gw, struct reactor **reactors,
                                     unsigned nreactors);
/* Binds and listens; returns -1 (logged) when the address cannot be used. */
int portal_mgr_listen_tcp(struct portal_mgr *pm, const char *name,
                          const struct sockaddr_storage *addr, socklen_t len);
void portal_mgr_destroy(struct portal_mgr *pm);

#endif
