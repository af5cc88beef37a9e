/* What both links share (repl/link.h): names and counters. */
#include "repl/link.h"

#include <jansson.h>
#include <string.h>

const char *repl_link_kind_name(enum repl_link_kind kind)
{
        return kind == REPL_LINK_RDMA ? "rdma" : "tcp";
}

const char *repl_transport_name(enum repl_transport t)
{
        return t == REPL_TRANSPORT_TCP ? "tcp" : t == REPL_TRANSPORT_RDMA ? "rdma" : "auto";
}

int repl_transport_parse(const char *s)
{
        if (!s || strcmp(s, "auto") == 0)
                return REPL_TRANSPORT_AUTO;
        if (strcmp(s, "tcp") == 0)
                return REPL_TRANSPORT_TCP;
        if (strcmp(s, "rdma") == 0)
                return REPL_TRANSPORT_RDMA;
        return -1;
}

#define SET(key, v) json_object_set_new(obj, key, json_integer((json_int_t)atomic_load(&(v))))

void repl_link_stats_json(json_t *obj, struct repl_link_stats *s)
{
        SET("tcp_tx_bytes", s->tx_bytes[REPL_LINK_TCP]);
        SET("tcp_rx_bytes", s->rx_bytes[REPL_LINK_TCP]);
        SET("rdma_tx_bytes", s->tx_bytes[REPL_LINK_RDMA]);
        SET("rdma_rx_bytes", s->rx_bytes[REPL_LINK_RDMA]);
        SET("rdma_sends", s->rdma_sends);
        SET("rdma_recvs", s->rdma_recvs);
        SET("rdma_credit_updates", s->rdma_credit_updates);
        SET("rdma_wc_errors", s->rdma_wc_errors);
}
