/* RFC 3263 SIP server location with c-ares, driven by each worker's own epoll loop. */
#ifndef SIPEDGE_DNS_H
#define SIPEDGE_DNS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/slice.h"

struct worker;

/* One place to send a request: transport, address and port. priority and
 * weight are the SRV record's (0 when the target did not come from SRV). */
struct dns_target {
    uint8_t proto; /* enum sip_transport: UDP, TCP or TLS */
    struct netaddr addr;
    uint16_t priority, weight;
};

#define DNS_MAX_TARGETS 8

/* Completion of an asynchronous dns_resolve(). status is 0 with n >= 1
 * targets in failover order, or a negative errno with t NULL and n 0:
 *   -ENOENT       no such name, or no usable record at any step
 *   -ETIMEDOUT    the servers did not answer (c-ares timeout and retries)
 *   -ECONNREFUSED the servers refused the connection (ICMP port unreachable)
 *   -EIO          server failure (SERVFAIL, REFUSED, malformed answer)
 *   -ENOMEM, -EAGAIN (resolver limits reached)
 *   -ECANCELED    the worker is shutting down (from dns_worker_cleanup())
 * t is borrowed for the call only. Runs on the owning worker's thread, from
 * its loop (never from inside dns_resolve()); it may call dns_resolve(), not
 * dns_worker_cleanup(). */
typedef void (*dns_cb)(struct worker *w, void *arg, int status, const struct dns_target *t,
                       unsigned n);

/* Locates the SIP servers for a URI host (RFC 3263 §4). Owner thread only.
 *  - src: who the lookup is for (a request's sender, borrowed): at most
 *    cfg->dns_max_pending resolutions are in flight per worker, and at
 *    most 1/DNS_PENDING_PER_SOURCE_DIV of them for one source (its IP; an
 *    IPv6 source: its /64); one over either limit is still answered from
 *    the cache, else refused. NULL for sipedge's own lookups (SIP Servers,
 *    peers): the configuration bounds them and these limits never refuse
 *    them.
 *  - host: a name, or an IP literal (IPv6 with or without brackets);
 *    borrowed for the call only. port: 0 when the URI has none.
 *    transport: enum sip_transport of ;transport=, SIP_TRANSPORT_NONE if
 *    absent (UDP, TCP or TLS; others give -EPROTONOSUPPORT). sips: the URI
 *    is sips: (targets are TLS; sips with transport=udp is -EPROTONOSUPPORT).
 *  - IP literal: one target (port, or 5060 / 5061 for TLS).
 *  - port given: A/AAAA of host.
 *  - transport given, no port: SRV for that transport (TLS: _sips._tcp and
 *    _sips._tls), then A/AAAA of the SRV targets; no SRV: A/AAAA of host
 *    with the default port.
 *  - neither: NAPTR (SIP+D2U, SIP+D2T, SIPS+D2T; sips: SIPS+D2T only) →
 *    SRV → A/AAAA; no usable NAPTR: SRV _sip._udp, _sip._tcp, _sips._tcp,
 *    _sips._tls (sips: the last two); no SRV: A/AAAA of host, default port,
 *    UDP (TLS for sips; NAPTR's first transport when NAPTR was used).
 *  Targets: NAPTR order/preference (or the SRV query order above), then SRV
 *  priority, then RFC 2782 weighted random; each SRV target's addresses in
 *  answer order, A before AAAA. AAAA is asked only when the worker has an
 *  IPv6 listener, A only when it has an IPv4 one (both without listeners).
 * Returns:
 *   1  done now (IP literal, or every step answered from the cache):
 *      out[0..*nout) hold the targets, no callback will come;
 *   0  cb(w, arg, ...) will be called exactly once later, from the loop;
 *  <0  -errno now (bad name, unsupported transport, a cached negative
 *      answer: -ENOENT, or -ETIMEDOUT/-EIO/-ECONNREFUSED for a failure
 *      still remembered, limits: -EAGAIN (counted, LIMIT_DNS_PENDING) or
 *      -ENOMEM, after cleanup: -ESHUTDOWN); no callback will come.
 * out must have room for DNS_MAX_TARGETS. */
int dns_resolve(struct worker *w, const struct netaddr *src, struct slice host, int port,
                uint8_t transport, bool sips, dns_cb cb, void *arg, struct dns_target *out,
                unsigned *nout);

/* Creates w->dns: a c-ares channel (1 s timeout, 2 tries, EDNS) using the
 * servers of w->cfg->dns_servers ("IP", "IP:PORT", "[IPv6]:PORT"), or the
 * system resolver's (/etc/resolv.conf, read here, once) when there are none,
 * and an answer cache. Its sockets are watched through worker_watch_fd().
 * Runs on the worker's own thread, before anything resolves. 0 or -errno.
 *
 * The cache is per worker (not the shared RCU table ARCHITECTURE.md §4
 * foresees): at most cfg->dns_cache_size answers, LRU-evicted (an answer
 * evicted before its TTL ends counts as LIMIT_DNS_CACHE; queries in flight
 * are not answers: the pending limits above bound them); positive answers kept for their TTL (at
 * most 1 h; TTL 0 is not cached), NXDOMAIN/NODATA for the SOA negative TTL (RFC 2308), at most 30
 * s, and timeouts, refusals and server failures for DNS_FAIL_TTL_S, so that a flood of requests for
 * one dead name costs one query. Identical queries in flight are sent once. Counts dns_queries,
 * dns_failures and dns_cache_hits in w->stats. */
int dns_worker_init(struct worker *w);

/* dns_worker_init() for a loop other than the worker runtime (tests): watch
 * is called as worker_watch_fd() would be (events 0: forget fd), and the
 * loop hands the socket's events to dns_on_fd(). */
typedef int (*dns_watch_fn)(struct worker *w, int fd, uint32_t events);
int dns_worker_init_watch(struct worker *w, dns_watch_fn watch);

/* Ends every lookup in flight: each pending dns_resolve() gets its callback
 * with -ECANCELED during this call, none afterwards; dns_resolve() from then
 * on (also from those callbacks) returns -ESHUTDOWN. Frees w->dns and sets
 * it to NULL. Owner thread; NULL-safe (w->dns NULL: nothing to do). */
void dns_worker_cleanup(struct worker *w);

/* Loop hook: events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP) on a socket
 * handed to the watch. May run callbacks. Owner thread. */
void dns_on_fd(struct worker *w, int fd, uint32_t events);

/* True while lookups are in flight (for a drain or a test loop). */
bool dns_busy(const struct worker *w);

#define DNS_CACHE_DEFAULT          2048 /* entries per worker without --dns-cache-size */
#define DNS_PENDING_DEFAULT        4096 /* resolutions per worker without --dns-max-pending */
#define DNS_PENDING_PER_SOURCE_DIV 8    /* one source may hold 1/8 of them (at least 1) */
#define DNS_FAIL_TTL_S             5    /* timeouts and server failures are remembered */

#endif
