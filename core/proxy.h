/* The transaction-stateful SIP proxy layer (entry points in core/worker.h). */
#ifndef SIPEDGE_PROXY_H
#define SIPEDGE_PROXY_H

#include "core/worker.h"

struct locmap;

/* The process-wide location map of the built-in registrar, created on first
 * use. Any thread. */
struct locmap *proxy_locmap(void);

struct flowmap;
/* The process-wide flow map (phone address + transport -> connection). */
struct flowmap *proxy_flowmap(void);

#endif
