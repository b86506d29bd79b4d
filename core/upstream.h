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

/* What is known of one target (an address a SIP Server's name leads to). */
enum upstream_state {
    UPSTREAM_UNKNOWN = 0, /* not heard from yet, or it ignores OPTIONS and carries no traffic */
    UPSTREAM_UP,          /* answered a probe or a request */
    UPSTREAM_DOWN,        /* failed a request, or stopped answering the probes it answered */
};

/* Why a target's state last changed (/stats, /metrics, logs). Append only. */
enum upstream_reason {
    UPSTREAM_WHY_START = 0,   /* configured or resolved, not heard from yet */
    UPSTREAM_WHY_PROBE_OK,    /* answered an OPTIONS probe */
    UPSTREAM_WHY_PROBE_LOST,  /* an OPTIONS probe and every request since went unanswered */
    UPSTREAM_WHY_ANSWERED,    /* answered a request */
    UPSTREAM_WHY_TIMEOUT,     /* no response at all to a request within --failover-timeout */
    UPSTREAM_WHY_503,         /* 503 with Retry-After: the server says it is unavailable */
    UPSTREAM_WHY_SEND,        /* a probe could not be sent to it */
    UPSTREAM_WHY_UNREACHABLE, /* ICMP port or host unreachable for a datagram to it */
    UPSTREAM_WHY__COUNT
};

/* One target of a SIP Server and what is known of it. Written by the owner
 * of upstream health (core/upstream.c on worker 0), published to all. */
struct upstream_target {
    struct dns_target t; /* transport, address, SRV priority/weight */
    uint8_t state;       /* enum upstream_state */
    uint8_t reason;      /* enum upstream_reason of the last change */
    bool options_ok;     /* has answered an OPTIONS probe: its probes speak for it */
    bool probing;        /* a probe is in flight */
    uint64_t changed_ms; /* when the state last changed (monotonic ms) */
    uint64_t probe_ms;   /* when the probe in flight left */
};

/* One SIP Server or peer proxy. Workers read a copy of the owner's
 * (upstream__sync()); core/route.c reads addr, proto, down, resolved and
 * tls_name: they always describe tg[cur], the target in use. */
struct upstream {
    uint8_t proto; /* enum sip_transport of the target in use */
    struct netaddr addr;
    char host[256]; /* as configured, for logs */
    int port;
    bool down; /* not in service: no target up or unknown, or not resolved */
    /* given by name (sip:domain, sips:domain): the targets come from RFC
     * 3263 resolution, refreshed every --oos-check period */
    bool named, resolved, resolving;
    struct sip_uri uri;                         /* slices into the configuration's string */
    struct upstream_target tg[DNS_MAX_TARGETS]; /* in failover order */
    uint8_t ntargets, cur;                      /* cur: the target in use */
    char tls_name[256]; /* named TLS upstream: the identity its certificate must prove */
};

/* The SIP Servers (primary, backup) and peer sites. */
struct upstream_set {
    struct upstream up[2];
    unsigned nup;
    unsigned active;                        /* index of the SIP Server in service */
    struct upstream peer[CONFIG_MAX_PEERS]; /* --peer: peer[i] serves cfg->peers[i].domain */
    unsigned npeer;
};

/* Parses an --upstream or --peer URI (sip: or sips:) into *up, which must be
 * zeroed. An IP literal is one target, in service (state unknown) at once;
 * a name is marked `named` and out of service until it resolves. text must
 * outlive up (up->uri points into it). 0, or -EINVAL / -EPROTONOSUPPORT
 * for an unusable URI. Pure. */
int upstream_parse(const char *text, struct upstream *up);

/* Did rx come from u, from any of its targets? The address and port, or,
 * over a stream, any port of the IPv4 address other than a loopback one (a
 * SIP Server may open its own connections from any port). Pure. */
bool upstream_is_source(const struct upstream *u, const struct rx_info *rx);

/* Is a SIP Server configured and the active one in service? Pure. */
bool upstream_in_service(const struct upstream_set *s);

/* Recomputes from the targets' states which target each SIP Server uses
 * (the first one up, else the first unknown one: RFC 3263 order, so a
 * preferred target that answers again is used again), which SIP Servers are
 * down, and the active one (the primary while it has a target up or, with
 * the backup not up either, unknown). True when the active one changed. Pure. */
bool upstream_pick(struct upstream_set *s);

/* The target of u that proto/addr names, or -1. Pure. */
int upstream_target_of(const struct upstream *u, uint8_t proto, const struct netaddr *addr);

/* The next place a request that SIP Server `from` failed on may go (RFC
 * 3263 §4.3): a target not in `tried` (bit i * DNS_MAX_TARGETS + t) and
 * not down, the remaining targets of `from` first, then the other SIP
 * Server's, up ones before unknown ones. True with *ui, *ti set. Pure. */
bool upstream_next(const struct upstream_set *s, unsigned from, uint16_t tried, unsigned *ui,
                   unsigned *ti);

/* Names for /stats, /metrics and logs. Pure. */
const char *upstream_state_name(unsigned state);
const char *upstream_reason_name(unsigned reason);

/* The state the owner published last, copied into *out (false before the
 * first one). For the management thread: call it as an RCU-registered
 * thread (locmap_thread_register()); workers use upstream__sync(). */
bool upstream_published(struct upstream_set *out);

#endif
