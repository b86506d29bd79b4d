/* Management HTTP port (--stats-listen, --stats-tls): the workers' counters
 * as JSON (GET /stats) and in the Prometheus text format (GET /metrics).
 * Runs on its own unpinned thread and only reads the workers' statistics
 * (relaxed atomic loads); it never touches a worker's objects. */
#ifndef SIPEDGE_MGMT_H
#define SIPEDGE_MGMT_H

#include "core/config.h"
#include "tls/tls.h"

/* Binds cfg->stats_listen and starts serving, up to cfg->stats_max_clients
 * connections at once, each closed 5 s after it was accepted whatever it
 * did (TLS handshake included); one over the cap is closed at once and
 * counted (limit "stats_max_clients"). tls (taken, may be NULL) serves it
 * over TLS with the server context (and, with --tls-mutual, client
 * certificates required). Call after worker_runtime_start_tls. Returns 0,
 * or -errno after logging why. */
int mgmt_start(const struct config *cfg, struct tls_ctx *tls);
/* SIGHUP: new TLS material for the next connections (taken). */
void mgmt_tls_reload(struct tls_ctx *tls);
/* Stops the thread and closes the port; before worker_runtime_stop. */
void mgmt_stop(void);

#endif
