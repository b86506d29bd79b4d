/* The transaction-stateful SIP proxy layer: the runtime's handlers
 * (main puts them in a struct worker_handlers) and the shared maps. */
#ifndef SIPEDGE_PROXY_H
#define SIPEDGE_PROXY_H

#include "core/worker.h"

/* Creates the state every worker of the proxy shares: the built-in
 * registrar's location map, the flow map and the flow-token key
 * (--flow-secret). Call once from main, before the workers start; cfg must
 * outlive proxy_global_cleanup(). 0, or -errno after logging the cause. */
int proxy_global_init(const struct config *cfg);
/* Frees what proxy_global_init() made. Call from main after the workers
 * stopped, when no thread uses the maps any more. Safe when init failed or
 * never ran. */
void proxy_global_cleanup(void);

/* The runtime's handlers (struct worker_handlers in core/worker.h). All run
 * on the worker's own thread. */
/* Starts the worker's resolver (dns/) first, then the proxy state. 0 or
 * -errno, with nothing left to clean up. */
int proxy_worker_init(struct worker *w);
/* After proxy_worker_init() returned 0: frees the proxy state, then the
 * resolver (its pending lookups end with -ECANCELED). */
void proxy_worker_cleanup(struct worker *w);
/* A complete SIP message (datagram or framed stream message); buf is
 * writable and only valid for the call. */
void proxy_on_message(struct worker *w, const struct rx_info *rx, char *buf, size_t len);
/* A message from another worker's ring (WMSG_SIP); the proxy owns it and
 * frees it. */
void proxy_on_worker_msg(struct worker *w, struct worker_msg *m);
/* A connection owned by w closed (peer, error, timeout). */
void proxy_on_conn_closed(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto);
/* Called once per loop turn when the worker holds no reference into the
 * shared RCU maps; sleeping says it is about to block in epoll_wait. */
void proxy_quiescent(struct worker *w, bool sleeping);
/* Called after a blocking epoll_wait returned (only when sleeping was true). */
void proxy_awake(struct worker *w);
/* True while transactions or DNS lookups are in flight (SIGTERM drain). */
bool proxy_busy(struct worker *w);
/* A CRLF keep-alive on connection c of w: noted on its flow (GET /flows). */
void proxy_on_keepalive(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto);
/* A datagram to dst drew an ICMP unreachable: a SIP Server target there is
 * taken out of service at once (RFC 3263 §4.3 failover follows). */
void proxy_on_unreachable(struct worker *w, const struct netaddr *dst, int err);

struct locmap;

/* The process-wide location map of the built-in registrar (NULL before
 * proxy_global_init()). Any thread. */
struct locmap *proxy_locmap(void);

struct flowmap;
/* The process-wide flow map (phone address + transport -> connection). */
struct flowmap *proxy_flowmap(void);

#endif
