/* The SIP Server pair and peer sites (ARCHITECTURE §5): where they are, if in service. */
#ifndef SIPEDGE_UPSTREAM_H
#define SIPEDGE_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/netaddr.h"
#include "core/sipuri.h"
#include "core/worker.h" /* struct rx_info */
#include "dns/dns.h"

/* One SIP Server or peer proxy. Per worker: every worker keeps its own copy,
 * written only by that worker (core/upstream.c), read by its routing. */
struct upstream {
    uint8_t proto; /* enum sip_transport of the target in use */
    struct netaddr addr;
    char host[256]; /* as configured, for logs */
    int port;
    bool down;    /* its last OPTIONS probe (or a transaction) went unanswered */
    bool probing; /* a probe is in flight */
    /* given by name (sip:domain, sips:domain): addr/proto/port come from
     * RFC 3263 resolution, refreshed every probe period; a target that does
     * not answer hands over to the next one */
    bool named, resolved, resolving;
    struct sip_uri uri;                         /* slices into the configuration's string */
    struct dns_target targets[DNS_MAX_TARGETS]; /* in failover order; addr = targets[cur] */
    uint8_t ntargets, cur;
    char tls_name[256]; /* named TLS upstream: the identity its certificate must prove */
};

/* A worker's SIP Servers (primary, backup) and peer sites. Written by
 * core/upstream.c on the owning worker; core/route.c reads it. */
struct upstream_set {
    struct upstream up[2];
    unsigned nup;
    unsigned active;                        /* index of the SIP Server in service */
    struct upstream peer[CONFIG_MAX_PEERS]; /* --peer: peer[i] serves cfg->peers[i].domain */
    unsigned npeer;
};

/* Parses an --upstream or --peer URI (sip: or sips:) into *up, which must be
 * zeroed. An IP literal is resolved at once; a name is marked `named` and out
 * of service until it resolves. text must outlive up (up->uri points into
 * it). 0, or -EINVAL / -EPROTONOSUPPORT for an unusable URI. Pure. */
int upstream_parse(const char *text, struct upstream *up);

/* Did rx come from u? Its address and port, or, over a stream, any port of
 * its IPv4 address other than a loopback one (a SIP Server may open its own
 * connections from any port). Pure. */
bool upstream_is_source(const struct upstream *u, const struct rx_info *rx);

/* Is a SIP Server configured and the active one answering? Pure. */
bool upstream_in_service(const struct upstream_set *s);

#endif
