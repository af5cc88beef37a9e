/* tcp: the iSCSI-over-TCP transport (RFC 7143 framing: BHS, AHS, digests, padding) behind the
 * iscsi_transport_ops table. Owns the socket of each connection and its send queue. Data
 * segments are read straight into the buffers the iSCSI layer names (cache lines for write
 * data) and sent with scatter/gather from where they live. */
#ifndef ISERGW_SRC_TCP_H
#define ISERGW_SRC_TCP_H

struct iscsi_gw;
struct reactor;

/* Takes over an accepted, connected socket on reactor index ri (called on that reactor). */
int tcp_conn_start(struct iscsi_gw *gw, struct reactor *r, unsigned ri, int fd, const char *portal,
                   const char *peer);

#endif
