/* The routing decision (ARCHITECTURE §2 rules 1-5 and the edge policy), its
 * worker view and DNS parking. */
#include "core/route.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxy-int.h"
#include "registry/flowmap.h"
#include "registry/flowtoken.h"

/* ---- pure helpers ------------------------------------------------------------ */

static int default_port(uint8_t proto)
{
    return proto == SIP_TRANSPORT_TLS ? 5061 : 5060;
}

bool route_host_is_ours(const struct route_view *v, struct slice host, int port)
{
    if (v->is_ours(v->ours_ctx, host, port)) return true;
    /* --domain: served as our own (Kamailio's alias), whatever the port */
    for (unsigned i = 0; i < v->cfg->ndomains; i++) {
        const char *dn = v->cfg->domains[i];
        if (slice_case_eq(host, slice_make(dn, strlen(dn)))) return true;
    }
    return false;
}

bool route_uri_is_ours(const struct route_view *v, const struct sip_uri *u)
{
    if (u->scheme != SIP_SCHEME_SIP && u->scheme != SIP_SCHEME_SIPS) return false;
    return route_host_is_ours(v, u->host, u->port);
}

bool route_from_upstream(const struct route_view *v, const struct rx_info *rx)
{
    for (unsigned i = 0; i < v->ups->nup; i++)
        if (upstream_is_source(&v->ups->up[i], rx)) return true;
    for (unsigned i = 0; i < v->ups->npeer; i++)
        if (upstream_is_source(&v->ups->peer[i], rx)) return true;
    return false;
}

bool route_in_dialog(const struct sip_msg *m)
{
    struct sip_addr a;
    const struct sip_hdr *t = sipmsg_hdr(m, SIP_HDR_TO);
    return t && sipuri_parse_addr(t->value, &a) == 0 && a.tag.ptr != NULL;
}

bool route_creates_dialog(const struct sip_msg *m)
{
    return (m->method == SIP_METHOD_INVITE || m->method == SIP_METHOD_SUBSCRIBE ||
            m->method == SIP_METHOD_REFER) &&
           !route_in_dialog(m);
}

/* The --peer whose DOMAIN is the Request-URI's host, or -1. */
static int peer_for(const struct route_view *v, struct slice host)
{
    for (unsigned i = 0; i < v->ups->npeer; i++) {
        const char *d = v->cfg->peers[i].domain;
        if (slice_case_eq(host, slice_make(d, strlen(d)))) return (int)i;
    }
    return -1;
}

/* ---- the decision ------------------------------------------------------------ */

/* One decision in progress. */
struct decide {
    const struct route_view *v;
    const struct sip_msg *m;
    const struct rx_info *rx;
    struct route_decision *d;
    struct sip_uri ruri;
    bool local_ruri;   /* the Request-URI names one of our addresses */
    bool upstream_src; /* from the SIP Server or a peer */
    bool in_dialog;    /* To carries a tag */
    /* a valid flow token in the last of our popped Routes (the entry facing
     * the next hop), naming a flow other than the sender's */
    bool has_flow;
    struct flowtoken flow;
    /* rule 2: the Route followed; rule 3: where the binding registered from */
    struct sip_uri hop;
    struct netaddr binding_src;
};

static bool decide_reply(struct decide *c, enum route_rule rule, int code, const char *warning)
{
    c->d->action = ROUTE_REPLY;
    c->d->rule = (uint8_t)rule;
    c->d->code = code;
    c->d->warning = warning;
    return true;
}

/* A reply that refuses what an outsider asked for, counted by reason. */
static bool decide_refuse(struct decide *c, enum route_rule rule, int code, const char *warning,
                          enum stat_refusal why)
{
    c->d->refusal = (int)why;
    return decide_reply(c, rule, code, warning);
}

static bool decide_forward(struct decide *c, enum route_rule rule)
{
    c->d->action = ROUTE_FORWARD;
    c->d->rule = (uint8_t)rule;
    return true;
}

static bool decide_resolve(struct decide *c, enum route_rule rule, const struct sip_uri *u)
{
    c->d->action = ROUTE_RESOLVE;
    c->d->rule = (uint8_t)rule;
    c->d->resolve = *u;
    return true;
}

/* Next hop: the SIP Server in service. */
static void plan_upstream(struct decide *c)
{
    const struct upstream_set *s = c->v->ups;
    struct route_plan *rp = &c->d->plan;
    rp->to_upstream = true;
    rp->upstream_idx = s->active;
    rp->proto = s->up[s->active].proto;
    rp->dst = s->up[s->active].addr;
    if (s->up[s->active].tls_name[0])
        memcpy(rp->tls_name, s->up[s->active].tls_name, sizeof rp->tls_name);
}

/* Where URI u sends the request (RFC 3263). 0 with plan proto/dst (and
 * tls_name for a TLS name) set; 1 when u names a host and the view holds no
 * answer yet (ask for one); <0: -ENOENT no such name, other errors. */
static int next_hop(struct decide *c, const struct sip_uri *u)
{
    struct route_plan *rp = &c->d->plan;
    const struct route_dns *ans = c->v->dns;
    rp->tls_name[0] = 0;
    int rc = sipuri_target(u, &rp->proto, &rp->dst);
    if (rc != -EHOSTUNREACH || (u->scheme != SIP_SCHEME_SIP && u->scheme != SIP_SCHEME_SIPS))
        return rc;
    if (!ans) return 1;
    if (ans->status < 0) return ans->status;
    if (ans->n == 0) return -ENOENT;
    struct slice host = u->maddr.len ? u->maddr : u->host;
    rp->proto = ans->t[0].proto;
    rp->dst = ans->t[0].addr;
    if (rp->proto == SIP_TRANSPORT_TLS && host.len < sizeof rp->tls_name) {
        memcpy(rp->tls_name, host.ptr, host.len);
        rp->tls_name[host.len] = 0;
    }
    return 0;
}

/* A lookup the resolver refused for its limits (--dns-max-pending, the
 * cache full of queries) or for memory: the answer is 503 with
 * Retry-After, as for any overload (the limit was counted in dns/). */
static bool dns_refused(struct decide *c, int rc)
{
    if (rc != -EAGAIN && rc != -ENOMEM) return false;
    c->d->retry_after = PROXY_RETRY_AFTER_S;
    return true;
}

/* The stream connection sipedge holds to proto/dst (whichever worker owns
 * it), or CONN_REF_NONE. */
static conn_ref held_flow(const struct decide *c, uint8_t proto, const struct netaddr *dst)
{
    struct flow_entry fe;
    if (proto == SIP_TRANSPORT_UDP || !flowmap_lookup(c->v->flows, proto, dst, &fe))
        return CONN_REF_NONE;
    return fe.conn;
}

/* Rule 1: a flow token in one of our Route entries, checked against the use
 * it was handed out for (edge policy): a forged one is refused; a Path token
 * serves only requests from the SIP Server or a peer, a Record-Route token
 * only its own dialog (from an endpoint: a request inside it). A token
 * naming the sender's own flow delivers nothing: it is just our route. True
 * after deciding a refusal. */
static bool check_token(struct decide *c, struct slice user)
{
    struct flowtoken t;
    switch (flowtoken_decode(c->v->key, user, c->m->call_id, &t)) {
    case FLOWTOKEN_MALFORMED:
        return false; /* a user part that is not a token of ours */
    case FLOWTOKEN_FORGED:
        return decide_refuse(c, ROUTE_RULE_OURS, 403, "Invalid Flow Token", REFUSE_TOKEN_FORGED);
    case FLOWTOKEN_OTHER_DIALOG:
        return decide_refuse(c, ROUTE_RULE_OURS, 403, "Flow Token Of Another Dialog",
                             REFUSE_TOKEN_MISUSE);
    case FLOWTOKEN_OK:
        break;
    }
    if (t.proto == c->rx->proto && netaddr_eq(&t.peer, &c->rx->src)) return false;
    if (!c->upstream_src && (t.kind == FLOWTOKEN_PATH || !c->in_dialog))
        return decide_refuse(c, ROUTE_RULE_OURS, 403, "Flow Token Not For Endpoints",
                             REFUSE_TOKEN_MISUSE);
    c->flow = t;
    c->has_flow = true;
    return false;
}

/* Rule 1: pops our own Route entries (one, or two after a double
 * Record-Route) and checks the tokens in them. The entry popped last faces
 * the next hop (a route set runs from the sender's side to the far end),
 * so its token, if any, names the flow to deliver on. */
static bool pop_own_routes(struct decide *c)
{
    const struct sip_msg *m = c->m;
    for (unsigned i = 0; i < 2 && i < m->count[SIP_HDR_ROUTE]; i++) {
        const struct sip_hdr *r = sipmsg_hdr_nth(m, SIP_HDR_ROUTE, i);
        struct sip_addr ra;
        if (sipuri_parse_addr(r->value, &ra) < 0)
            return decide_reply(c, ROUTE_RULE_OURS, 400, "Bad Route");
        if (!route_uri_is_ours(c->v, &ra.uri)) break;
        c->d->plan.npop++;
        c->has_flow = false;
        if (ra.uri.user.len && check_token(c, ra.uri.user)) return true;
    }
    return false;
}

/* Rule 1: a flow token delivers over that flow, unless more Routes follow
 * ours (loose routing continues past us). */
static bool deliver_on_flow(struct decide *c)
{
    struct route_plan *rp = &c->d->plan;
    if (!c->has_flow || c->m->count[SIP_HDR_ROUTE] > rp->npop) return false;
    rp->proto = c->flow.proto;
    rp->dst = c->flow.peer;
    rp->to_endpoint = true;
    if (c->flow.proto == SIP_TRANSPORT_UDP) return decide_forward(c, ROUTE_RULE_OURS);
    /* The token names one connection: a newer connection from the same
     * address (the phone reconnected, or another device behind the same NAT
     * binding) is another flow, with its own token, so a stale token gets
     * 430 and never reaches it (RFC 5626 §5.3). */
    rp->conn = held_flow(c, c->flow.proto, &c->flow.peer);
    if (rp->conn == CONN_REF_NONE || rp->conn != c->flow.conn) {
        rp->conn = CONN_REF_NONE;
        return decide_refuse(c, ROUTE_RULE_OURS, 430, NULL, REFUSE_FLOW_GONE);
    }
    return decide_forward(c, ROUTE_RULE_OURS);
}

/* Rule 2: a remaining Route is the next hop. One we cannot reach (unknown
 * name, no listener of its family): an endpoint's request still goes to the
 * SIP Server, which knows the route set; the SIP Server's gets 503. */
static bool follow_route(struct decide *c)
{
    struct route_plan *rp = &c->d->plan;
    if (c->m->count[SIP_HDR_ROUTE] <= rp->npop) return false;
    const struct sip_hdr *r = sipmsg_hdr_nth(c->m, SIP_HDR_ROUTE, rp->npop);
    struct sip_addr ra;
    int rc = -EINVAL;
    if (sipuri_parse_addr(r->value, &ra) == 0) {
        c->hop = ra.uri;
        rc = next_hop(c, &ra.uri);
    }
    if (rc == 1) return decide_resolve(c, ROUTE_RULE_ROUTE, &ra.uri);
    if (rc == 0 && config_pick_listener(c->v->cfg, rp->proto, rp->dst.sa.sa_family) >= 0)
        return decide_forward(c, ROUTE_RULE_ROUTE);
    rp->tls_name[0] = 0;
    if ((c->upstream_src || c->v->ups->nup == 0) && dns_refused(c, rc))
        return decide_reply(c, ROUTE_RULE_ROUTE, 503, "DNS Busy");
    if (c->upstream_src || c->v->ups->nup == 0)
        return decide_reply(c, ROUTE_RULE_ROUTE, 503, "Unroutable Route");
    plan_upstream(c);
    return decide_forward(c, ROUTE_RULE_ROUTE);
}

/* Rule 3: addressed to sipedge itself: OPTIONS is answered, REGISTER goes to
 * the built-in registrar; without a SIP Server (and for ACK) 404. */
static bool answer_local(struct decide *c)
{
    const struct sip_msg *m = c->m;
    if (!c->local_ruri || c->ruri.user.len) return false;
    if (m->method == SIP_METHOD_OPTIONS) {
        c->d->extra = PROXY_ALLOW_HDR;
        return decide_reply(c, ROUTE_RULE_LOCAL, 200, NULL);
    }
    if (m->method == SIP_METHOD_REGISTER && c->v->registrar) {
        c->d->action = ROUTE_REGISTRAR;
        c->d->rule = ROUTE_RULE_LOCAL;
        return true;
    }
    if (c->v->ups->nup == 0 || m->method == SIP_METHOD_ACK)
        return decide_reply(c, ROUTE_RULE_LOCAL, 404, NULL);
    return false;
}

/* Rule 3: the built-in location service: a registered contact of the
 * Request-URI's AOR becomes the new Request-URI; a stream binding goes back
 * over the connection its REGISTER came on. */
static bool find_binding(struct decide *c)
{
    const struct route_view *v = c->v;
    struct route_plan *rp = &c->d->plan;
    if (!v->registrar || c->ruri.user.len == 0) return false;
    char aor[LOCMAP_AOR_MAX];
    size_t alen = locmap_aor_key(c->m->ruri, aor, sizeof aor);
    struct locmap_binding b;
    if (!alen || !locmap_lookup(v->loc, slice_make(aor, alen), v->now_ms, &b)) {
        if (c->local_ruri && v->ups->nup == 0)
            return decide_reply(c, ROUTE_RULE_LOCATION, 404, "Not Registered");
        return false;
    }
    memcpy(rp->new_ruri, b.contact, b.contact_len);
    rp->new_ruri_len = b.contact_len;
    struct sip_uri cu;
    if (sipuri_parse(slice_make(rp->new_ruri, rp->new_ruri_len), &cu) < 0)
        return decide_reply(c, ROUTE_RULE_LOCATION, 500, "Bad Binding");
    c->binding_src = b.src;
    rp->to_endpoint = true;
    if (b.proto != SIP_TRANSPORT_UDP) {
        rp->proto = b.proto;
        rp->dst = b.src;
        rp->conn = b.conn;
    } else if (sipuri_target(&cu, &rp->proto, &rp->dst) < 0) {
        rp->proto = SIP_TRANSPORT_UDP;
        rp->dst = b.src;
    }
    return decide_forward(c, ROUTE_RULE_LOCATION);
}

/* Rule 5 (checked before rule 4): a peer site's domain (--peer DOMAIN=URI)
 * goes to that site's proxy, unless the request comes from it (then it is
 * for us to deliver, rule 4). */
static bool to_peer(struct decide *c)
{
    const struct upstream_set *s = c->v->ups;
    struct route_plan *rp = &c->d->plan;
    int pi = peer_for(c->v, c->ruri.host);
    if (pi < 0 || upstream_is_source(&s->peer[pi], c->rx)) return false;
    if (!s->peer[pi].resolved) {
        c->d->retry_after = PROXY_RETRY_AFTER_S;
        return decide_reply(c, ROUTE_RULE_PEER, 503, "Peer Site Not Resolved");
    }
    rp->proto = s->peer[pi].proto;
    rp->dst = s->peer[pi].addr;
    if (s->peer[pi].tls_name[0]) memcpy(rp->tls_name, s->peer[pi].tls_name, sizeof rp->tls_name);
    return decide_forward(c, ROUTE_RULE_PEER);
}

/* Rule 4: from the SIP Server or a peer site (or with no SIP Server): to the
 * Request-URI; over a stream, the connection the phone holds, whichever
 * worker owns it (stickiness without Path). */
static bool to_request_uri(struct decide *c)
{
    struct route_plan *rp = &c->d->plan;
    if (!c->upstream_src && c->v->ups->nup != 0) return false;
    if (c->local_ruri) return decide_reply(c, ROUTE_RULE_FROM_UPSTREAM, 404, NULL);
    int rc = next_hop(c, &c->ruri);
    if (rc == 1) return decide_resolve(c, ROUTE_RULE_FROM_UPSTREAM, &c->ruri);
    if (rc < 0) {
        int code = rc == -ENOENT || rc == -EINVAL ? 404 : 503;
        if (dns_refused(c, rc)) return decide_reply(c, ROUTE_RULE_FROM_UPSTREAM, 503, "DNS Busy");
        return decide_reply(c, ROUTE_RULE_FROM_UPSTREAM, code,
                            rc == -EPROTONOSUPPORT ? "Unsupported Transport"
                            : code == 404          ? "Unresolvable Request-URI"
                                                   : "DNS Failure");
    }
    rp->conn = held_flow(c, rp->proto, &rp->dst);
    rp->to_endpoint = rp->conn != CONN_REF_NONE;
    return decide_forward(c, ROUTE_RULE_FROM_UPSTREAM);
}

/* Rule 5: from an endpoint: to the SIP Server in service, 503 when none is. */
static bool to_upstream(struct decide *c)
{
    if (!upstream_in_service(c->v->ups)) {
        c->d->retry_after = (int)c->v->cfg->oos_force_s;
        return decide_reply(c, ROUTE_RULE_TO_UPSTREAM, 503, "No SIP Server In Service");
    }
    plan_upstream(c);
    return decide_forward(c, ROUTE_RULE_TO_UPSTREAM);
}

/* ---- the edge policy (ARCHITECTURE §2) -----------------------------------------
 * What sipedge refuses to do for an endpoint (any sender that is not the SIP
 * Server pair or a --peer, which keep full RFC 3261 routing), in one place:
 *  - preloaded Routes on an endpoint's initial request are removed, except
 *    our own on top (Kamailio's remove_hf("Route")): it goes where the
 *    Request-URI rules send it, the SIP Server in practice;
 *  - its request goes only to the SIP Server pair or a peer (configured by
 *    the operator, so allowed on any address), or a flow or binding sipedge
 *    holds; anything else is 403, and a name is not even resolved;
 *  - a binding whose Contact points elsewhere than where it registered from
 *    may reach a loopback, private or link-local address only inside an
 *    --allow-destination prefix, and never the management port;
 *  - flow tokens serve only the use they were handed out for (check_token). */

static bool upstream_has_addr(const struct upstream *u, const struct netaddr *a)
{
    if (u->resolved && netaddr_eq(&u->addr, a)) return true;
    for (unsigned i = 0; i < u->ntargets && i < DNS_MAX_TARGETS; i++)
        if (netaddr_eq(&u->tg[i].t.addr, a)) return true;
    return false;
}

/* Does u name, by name, the host of SIP Server or peer s (and its port, if
 * u gives one)? An address is compared once known, port included. */
static bool upstream_has_name(const struct upstream *s, const struct sip_uri *u)
{
    struct slice h = u->maddr.len ? u->maddr : u->host;
    struct slice sh = s->uri.maddr.len ? s->uri.maddr : s->uri.host;
    return !sipuri_is_ipv4(h) && !sipuri_is_ipv6(h) && slice_case_eq(h, sh) &&
           (u->port == 0 || u->port == s->uri.port);
}

/* Is u (a name, or an address once known) one of the operator's: a SIP
 * Server or a peer site? dst: the address u led to, or NULL. */
static bool operator_target(const struct route_view *v, const struct sip_uri *u,
                            const struct netaddr *dst)
{
    const struct upstream_set *s = v->ups;
    for (unsigned i = 0; i < s->nup + s->npeer; i++) {
        const struct upstream *t = i < s->nup ? &s->up[i] : &s->peer[i - s->nup];
        if ((u && upstream_has_name(t, u)) || (dst && upstream_has_addr(t, dst))) return true;
    }
    return false;
}

/* The management address (--stats-listen): never a SIP destination. A
 * wildcard one is taken to cover every address on its port. */
static bool is_management(const struct config *cfg, const struct netaddr *dst)
{
    struct netaddr mg;
    if (!cfg->stats_listen[0] ||
        netaddr_parse(&mg, slice_make(cfg->stats_listen, strlen(cfg->stats_listen))) < 0 ||
        netaddr_port(&mg) != netaddr_port(dst))
        return false;
    bool any = mg.sa.sa_family == AF_INET ? mg.in4.sin_addr.s_addr == htonl(INADDR_ANY)
                                          : IN6_IS_ADDR_UNSPECIFIED(&mg.in6.sin6_addr);
    return any || netaddr_eq(&mg, dst);
}

/* May an endpoint's request reach dst, which is neither the operator's nor
 * a flow sipedge holds? */
static bool destination_allowed(const struct config *cfg, const struct netaddr *dst)
{
    if (is_management(cfg, dst)) return false;
    if (!netaddr_is_internal(dst)) return true;
    for (unsigned i = 0; i < cfg->nallow_dest; i++)
        if (netaddr_cidr_match(&cfg->allow_dest[i], dst)) return true;
    return false;
}

/* An endpoint's initial request: preloaded Routes below ours are removed. */
static void strip_preloaded(struct decide *c)
{
    if (!c->upstream_src && !c->in_dialog) c->d->plan.npop = c->m->count[SIP_HDR_ROUTE];
}

/* The gate every decision for an endpoint's request passes last. */
static void police(struct decide *c)
{
    struct route_decision *d = c->d;
    struct route_plan *rp = &d->plan;
    enum route_rule rule = d->rule;
    if (c->upstream_src || (d->action != ROUTE_FORWARD && d->action != ROUTE_RESOLVE)) return;
    if (rule == ROUTE_RULE_OURS || rule == ROUTE_RULE_PEER || rule == ROUTE_RULE_TO_UPSTREAM)
        return; /* a token checked in rule 1, the operator's own targets */
    if (rule == ROUTE_RULE_LOCATION) {
        if (rp->conn != CONN_REF_NONE || netaddr_eq(&rp->dst, &c->binding_src) ||
            destination_allowed(c->v->cfg, &rp->dst))
            return;
        decide_refuse(c, rule, 403, "Forbidden Destination", REFUSE_DESTINATION);
        return;
    }
    /* rule 2 (a Route inside a dialog), or rule 4 without a SIP Server */
    const struct sip_uri *u = rule == ROUTE_RULE_ROUTE ? &c->hop : &c->ruri;
    bool known = d->action == ROUTE_FORWARD;
    if (known && rule == ROUTE_RULE_ROUTE && rp->conn == CONN_REF_NONE)
        rp->conn = held_flow(c, rp->proto, &rp->dst);
    if (rp->to_upstream || operator_target(c->v, u, known ? &rp->dst : NULL) ||
        (known && rp->conn != CONN_REF_NONE))
        return;
    decide_refuse(c, rule, 403, "Relaying Forbidden", REFUSE_RELAY);
}

/* Rules 1-5 in their order (ARCHITECTURE §2). */
static void decide_rules(struct decide *c)
{
    if (pop_own_routes(c) || deliver_on_flow(c)) return; /* 1 */
    strip_preloaded(c);
    if (follow_route(c)) return;                    /* 2 */
    if (answer_local(c) || find_binding(c)) return; /* 3 */
    if (to_peer(c)) return;                         /* 5, a peer's domain */
    if (to_request_uri(c)) return;                  /* 4 */
    to_upstream(c);                                 /* 5 */
}

void route_decide(const struct route_view *v, const struct sip_msg *m, const struct rx_info *rx,
                  struct route_decision *d)
{
    struct decide c = {.v = v, .m = m, .rx = rx, .d = d};
    memset(d, 0, sizeof *d);
    d->retry_after = -1;
    d->refusal = -1;
    sipuri_parse(m->ruri, &c.ruri); /* validated by the caller */
    c.local_ruri = route_uri_is_ours(v, &c.ruri);
    c.upstream_src = route_from_upstream(v, rx);
    c.in_dialog = route_in_dialog(m);
    d->plan.from_endpoint = !c.upstream_src;
    decide_rules(&c);
    police(&c);
}

/* ---- the worker's side ------------------------------------------------------- */

/* Is host:port one of this process's addresses: a listener's host with its
 * port, or with some worker's private port? ctx is the worker. */
static bool listener_is_ours(const void *ctx, struct slice host, int port)
{
    const struct worker *w = ctx;
    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        const char *lh = worker_listener_host(w, i);
        struct slice ls = slice_make(lh, strlen(lh));
        if (ls.len > 2 && lh[0] == '[') /* IPv6 hosts come bracketed */
            ls = slice_make(lh + 1, ls.len - 2);
        int lp = worker_listener_port(w, i);
        int p = port ? port : default_port(w->cfg->listen[i].proto);
        if ((p == lp || worker_is_private_port(w, i, p)) && slice_case_eq(host, ls)) return true;
    }
    return false;
}

void route__view(const struct worker *w, struct route_view *v)
{
    const struct proxy_worker *p = w->layer;
    *v = (struct route_view){
        .cfg = w->cfg,
        .ups = &p->ups,
        .registrar = p->registrar,
        .key = p->key,
        .flows = p->flows,
        .loc = p->loc,
        .now_ms = w->now_ms,
        .is_ours = listener_is_ours,
        .ours_ctx = w,
        .dns = p->dns_replay ? &p->dns_answer : NULL,
    };
}

/* A request waiting for its next hop's DNS answer: a private copy. */
struct dns_park {
    struct rx_info rx;
    size_t len;
    char buf[];
};

/* The answer came: the request is processed again from the start, and its
 * decision takes this answer (answers with TTL 0 are not cached). */
static void dns_done(struct worker *w, void *arg, int status, const struct dns_target *t,
                     unsigned n)
{
    struct dns_park *pk = arg;
    struct proxy_worker *p = w->layer;
    if (pk && status != -ECANCELED && p) {
        struct route_dns *a = &p->dns_answer;
        a->status = status;
        a->n = status == 0 ? (n < DNS_MAX_TARGETS ? n : DNS_MAX_TARGETS) : 0;
        if (a->n) memcpy(a->t, t, a->n * sizeof *t);
        p->dns_replay = true;
        proxy__process(w, &pk->rx, pk->buf, pk->len);
        p->dns_replay = false;
    }
    free(pk);
}

/* Resolves u's host (RFC 3263) for the request in buf. Returns 1 when the
 * request was parked until the answer (dns_done replays it), else 0 with
 * *ans holding the answer the cache or an error gave at once. */
static int resolve_or_park(struct worker *w, const struct rx_info *rx, const char *buf, size_t len,
                           const struct sip_uri *u, struct route_dns *ans)
{
    struct slice host = u->maddr.len ? u->maddr : u->host;
    unsigned n = 0;
    struct dns_park *pk = malloc(sizeof *pk + len);
    ans->n = 0;
    if (!pk) {
        ans->status = -ENOMEM;
        return 0;
    }
    pk->rx = *rx;
    pk->len = len;
    memcpy(pk->buf, buf, len);
    int rc = dns_resolve(w, &rx->src, host, u->port, u->transport, u->scheme == SIP_SCHEME_SIPS,
                         dns_done, pk, ans->t, &n);
    if (rc == 0) return 1;
    free(pk);
    ans->status = rc < 0 ? rc : 0;
    ans->n = rc < 0 ? 0 : n;
    return 0;
}

enum route_action route__decide(struct worker *w, struct route_view *v, const struct rx_info *rx,
                                const struct sip_msg *m, const char *buf, size_t len,
                                struct route_decision *d)
{
    struct route_dns ans;
    route_decide(v, m, rx, d);
    if (d->action != ROUTE_RESOLVE) return d->action;
    if (resolve_or_park(w, rx, buf, len, &d->resolve, &ans)) return d->action = ROUTE_PARKED;
    v->dns = &ans;
    route_decide(v, m, rx, d);
    v->dns = NULL;
    return d->action;
}
