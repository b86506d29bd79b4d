/* Admission of new dialogs under overload: --overload-dialog-rate for all
 * sources together and --overload-source-rate per source IP, shared by
 * every worker (atomics, no lock). */
#ifndef SIPEDGE_OVERLOAD_H
#define SIPEDGE_OVERLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"

/* Retry-After of the 503 either rate sends: both count per second. */
#define OVERLOAD_RETRY_AFTER_S 1

/* Sources tracked at once by the per-source rate: sets of ways. A flood of
 * new sources evicts the sources with the fewest new dialogs this second,
 * never one over its rate while another way of its set is below it. */
#define OVERLOAD_SETS 1024 /* power of two */
#define OVERLOAD_WAYS 4

struct overload;

/* Creates the shared state for the rates (per second; 0: that rate is
 * off). NULL when out of memory. Main thread, before the workers start;
 * the caller owns it. */
struct overload *overload_new(unsigned dialog_rate, unsigned source_rate);
/* Frees o; NULL-safe. Only once no worker uses it. */
void overload_free(struct overload *o);

/* One new dialog at now_ms (monotonic): true when it is within the rate of
 * all sources together (--overload-dialog-rate), counting it. The count
 * restarts when the second changes; two workers crossing the boundary
 * together may each restart it, so a second can admit a few more than the
 * rate. Any thread. */
bool overload_dialog_admits(struct overload *o, uint64_t now_ms);

/* One new dialog from src at now_ms: true when src (netaddr_source(): its
 * IP, an IPv6 /64) is within --overload-source-rate this second, counting
 * it. Shared by the workers, so the rate holds wherever the source's
 * packets land. Approximate at the edges: a source evicted by a flood of
 * new sources starts again at 0, and two workers meeting a new source at
 * the same instant may each give it a way (its count is then split). Any
 * thread. */
bool overload_source_admits(struct overload *o, const struct netaddr *src, uint64_t now_ms);

#endif
