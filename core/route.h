/* The routing decision for a request (ARCHITECTURE §2 rules 1-5 and the edge
 * policy) as a pure function. */
#ifndef SIPEDGE_ROUTE_H
#define SIPEDGE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/sipmsg.h"
#include "core/sipuri.h"
#include "core/upstream.h"
#include "core/worker.h" /* struct rx_info, conn_ref */
#include "dns/dns.h"
#include "registry/locmap.h"

struct flowmap;
struct flowtoken_key;

/* The RFC 3263 answer for the one name a decision asked to resolve. */
struct route_dns {
    int status; /* 0, or the -errno of the lookup */
    unsigned n; /* targets in failover order */
    struct dns_target t[DNS_MAX_TARGETS];
};

/* What the decision may read. Borrowed for the call; nothing in it is
 * written. A worker builds one per request (route__view()); tests build
 * their own. */
struct route_view {
    const struct config *cfg;       /* listeners, --peer domains, --oos-force */
    const struct upstream_set *ups; /* SIP Servers and peers, their state */
    bool registrar;                 /* the built-in registrar is on */
    const struct flowtoken_key *key;
    struct flowmap *flows; /* looked up only; call as an RCU-registered thread */
    struct locmap *loc;    /* looked up only (registrar bindings) */
    uint64_t now_ms;       /* for binding expiry */
    /* Is host:port (port 0: the transport's default) one of our own
     * addresses? The runtime knows the listeners' hosts and private ports. */
    bool (*is_ours)(const void *ctx, struct slice host, int port);
    const void *ours_ctx;
    /* The answer for the name a previous decision asked for (ROUTE_RESOLVE),
     * or NULL: the decision then asks instead of guessing. */
    const struct route_dns *dns;
};

enum route_action {
    ROUTE_FORWARD = 0, /* forward along d->plan */
    ROUTE_REPLY,       /* answer d->code */
    ROUTE_REGISTRAR,   /* a REGISTER for the built-in registrar */
    ROUTE_RESOLVE,     /* d->resolve names a host: resolve it, then decide again */
    ROUTE_PARKED,      /* (route__decide only) waiting for the DNS answer */
};

/* Which rule of ARCHITECTURE §2 decided. */
enum route_rule {
    ROUTE_RULE_NONE = 0,
    ROUTE_RULE_OURS,          /* 1: the top Route is ours (popped); a flow token in it */
    ROUTE_RULE_ROUTE,         /* 2: a remaining Route is the next hop */
    ROUTE_RULE_LOCAL,         /* 3: the Request-URI is sipedge itself */
    ROUTE_RULE_LOCATION,      /* 3: the built-in location service has a binding */
    ROUTE_RULE_FROM_UPSTREAM, /* 4: from the SIP Server or a peer: to the Request-URI */
    ROUTE_RULE_PEER,          /* 5: an endpoint's request for a --peer domain */
    ROUTE_RULE_TO_UPSTREAM,   /* 5: an endpoint's request: to the SIP Server */
};

/* Where a forwarded request goes, and the edits that go with it. Written by
 * route_decide(); core/forward.c reads it. */
struct route_plan {
    uint8_t proto; /* enum sip_transport */
    struct netaddr dst;
    conn_ref conn;         /* this connection (a phone's flow), or NONE */
    bool to_upstream;      /* the next hop is SIP Server up[upstream_idx] */
    unsigned upstream_idx; /* (failover on timeout) */
    bool from_endpoint;    /* the request came from an endpoint, not the SIP Server or a peer */
    bool to_endpoint;      /* the next hop is an endpoint's flow or binding (then a dialog
                            * between two endpoints: each Record-Route entry carries the
                            * token of the end it faces) */
    unsigned npop;         /* Route entries on top to remove: our own, and on an endpoint's
                            * initial request every preloaded one (edge policy) */
    uint16_t new_ruri_len; /* > 0: new_ruri replaces the Request-URI */
    char new_ruri[LOCMAP_CONTACT_MAX];
    char tls_name[256]; /* identity a TLS next hop must prove (a resolved name), or "" */
};

/* A decision: written by route_decide() (and route__decide()), read by the
 * caller, which acts on it. Which fields mean something depends on action. */
struct route_decision {
    uint8_t action; /* enum route_action */
    uint8_t rule;   /* enum route_rule */
    struct route_plan plan;
    /* ROUTE_REPLY */
    int code;
    const char *warning;    /* static string or NULL */
    const char *extra;      /* static header lines or NULL */
    int retry_after;        /* seconds for Retry-After, -1 for none */
    int refusal;            /* enum stat_refusal the reply is counted as (logged), or -1 */
    struct sip_uri resolve; /* ROUTE_RESOLVE: slices into the message */
};

/* Decides where request m goes. m must have passed sipmsg_validate() and
 * the proxy's own checks (Max-Forwards, loops, ...); rx says how it came.
 * A request from an endpoint (not the SIP Server pair, not a --peer) goes
 * only to the SIP Server, a peer, or a flow or binding sipedge holds; any
 * other target is refused (403, d->refusal says why): the edge policy of
 * ARCHITECTURE §2, all of it in core/route.c's "edge policy" section.
 * Reads the flow and location maps through v (lock-free lookups: call as an
 * RCU-registered thread). Sends nothing, writes only *d. Any thread. */
void route_decide(const struct route_view *v, const struct sip_msg *m, const struct rx_info *rx,
                  struct route_decision *d);

/* Is host:port ours: one of our addresses (v->is_ours), or a --domain
 * name (on any port)? */
bool route_host_is_ours(const struct route_view *v, struct slice host, int port);
/* A sip: or sips: URI naming one of our own addresses. */
bool route_uri_is_ours(const struct route_view *v, const struct sip_uri *u);
/* From a SIP Server or a peer site (trusted: routed by Request-URI), as
 * opposed to an endpoint. */
bool route_from_upstream(const struct route_view *v, const struct rx_info *rx);

/* m's To carries a tag: inside a dialog. Pure. */
bool route_in_dialog(const struct sip_msg *m);
/* INVITE, SUBSCRIBE or REFER outside a dialog: gets our Record-Route. Pure. */
bool route_creates_dialog(const struct sip_msg *m);

#endif
