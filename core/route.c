/* The routing decision (ARCHITECTURE §2 rules 1-5), its worker view and DNS parking. */
#include "core/route.h"

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
    return v->is_ours(v->ours_ctx, host, port);
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
    /* a valid flow token in one of our popped Routes */
    bool has_flow;
    uint64_t flow_conn;
    uint8_t flow_proto;
    struct netaddr flow_peer;
};

static bool decide_reply(struct decide *c, enum route_rule rule, int code, const char *warning)
{
    c->d->action = ROUTE_REPLY;
    c->d->rule = (uint8_t)rule;
    c->d->code = code;
    c->d->warning = warning;
    return true;
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

/* Rule 1: pops our own Route entries (one, or two after a double
 * Record-Route) and keeps a valid flow token found in them. */
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
        if (ra.uri.user.len == 0 || c->has_flow) continue;
        switch (flowtoken_decode(c->v->key, ra.uri.user, &c->flow_conn, &c->flow_proto,
                                 &c->flow_peer)) {
        case FLOWTOKEN_OK:
            c->has_flow = true;
            break;
        case FLOWTOKEN_FORGED:
            c->d->forged_token = true;
            return decide_reply(c, ROUTE_RULE_OURS, 403, "Invalid Flow Token");
        case FLOWTOKEN_MALFORMED:
            break; /* a user part that is not a token of ours */
        }
    }
    return false;
}

/* Rule 1: a flow token delivers over that flow, unless the request comes
 * from the flow's own endpoint (then the token is just our Record-Route) or
 * more Routes follow ours (loose routing continues past us). */
static bool deliver_on_flow(struct decide *c)
{
    struct route_plan *rp = &c->d->plan;
    if (!c->has_flow || (c->rx->proto == c->flow_proto && netaddr_eq(&c->rx->src, &c->flow_peer)) ||
        c->m->count[SIP_HDR_ROUTE] > rp->npop)
        return false;
    rp->proto = c->flow_proto;
    rp->dst = c->flow_peer;
    if (c->flow_proto == SIP_TRANSPORT_UDP) return decide_forward(c, ROUTE_RULE_OURS);
    /* The token names one connection: a newer connection from the same
     * address (the phone reconnected, or another device behind the same NAT
     * binding) is another flow, with its own token, so a stale token gets
     * 430 and never reaches it (RFC 5626 §5.3). */
    struct flow_entry fe;
    if (!flowmap_lookup(c->v->flows, c->flow_proto, &c->flow_peer, &fe) || fe.conn != c->flow_conn)
        return decide_reply(c, ROUTE_RULE_OURS, 430, NULL);
    rp->conn = fe.conn;
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
    int rc = sipuri_parse_addr(r->value, &ra) == 0 ? next_hop(c, &ra.uri) : -EINVAL;
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
    struct flow_entry fe;
    if (rp->proto != SIP_TRANSPORT_UDP && flowmap_lookup(c->v->flows, rp->proto, &rp->dst, &fe))
        rp->conn = fe.conn;
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

void route_decide(const struct route_view *v, const struct sip_msg *m, const struct rx_info *rx,
                  struct route_decision *d)
{
    struct decide c = {.v = v, .m = m, .rx = rx, .d = d};
    memset(d, 0, sizeof *d);
    d->retry_after = -1;
    sipuri_parse(m->ruri, &c.ruri); /* validated by the caller */
    c.local_ruri = route_uri_is_ours(v, &c.ruri);
    c.upstream_src = route_from_upstream(v, rx);
    d->plan.from_endpoint = !c.upstream_src;

    if (pop_own_routes(&c) || deliver_on_flow(&c)) return; /* 1 */
    if (follow_route(&c)) return;                          /* 2 */
    if (answer_local(&c) || find_binding(&c)) return;      /* 3 */
    if (to_peer(&c)) return;                               /* 5, a peer's domain */
    if (to_request_uri(&c)) return;                        /* 4 */
    to_upstream(&c);                                       /* 5 */
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
