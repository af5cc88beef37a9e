/* daemon: the gateway's top-level context. Owns the reactors, the cache-line pool, the
 * backends, volumes and LUNs built from the configuration, the iSCSI layer, the portals and
 * the status server, and their start-up and shutdown order. This is the only place that
 * holds process-wide state. */
#ifndef ISERGW_SRC_DAEMON_H
#define ISERGW_SRC_DAEMON_H

struct config;
struct daemon;

/* Builds and starts everything the config describes. NULL (logged) on failure. */
struct daemon *daemon_start(const struct config *cfg, const char *config_path);
/* Stops serving, closes every connection, flushes the backends and frees everything. */
void daemon_stop(struct daemon *d);

#endif
