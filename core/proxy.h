/* The proxy layer's process-wide setup and shared maps (entry points: core/worker.h). */
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

struct locmap;

/* The process-wide location map of the built-in registrar (NULL before
 * proxy_global_init()). Any thread. */
struct locmap *proxy_locmap(void);

struct flowmap;
/* The process-wide flow map (phone address + transport -> connection). */
struct flowmap *proxy_flowmap(void);

#endif
