/* The SIP Server pair and peer sites: parse, resolve, probe, service state. */
#include "core/upstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/branch.h"
#include "core/log.h"
#include "core/proxy-int.h"

/* ---- pure parts ---------------------------------------------------------- */

int upstream_parse(const char *text, struct upstream *up)
{
    struct sip_uri u;
    struct slice s = slice_make(text, strlen(text));
    if (sipuri_parse(s, &u) < 0 || (u.scheme != SIP_SCHEME_SIP && u.scheme != SIP_SCHEME_SIPS))
        return -EINVAL;
    up->uri = u;
    snprintf(up->host, sizeof up->host, "%.*s", (int)u.host.len, u.host.ptr);
    int rc = sipuri_target(&u, &up->proto, &up->addr);
    if (rc == -EHOSTUNREACH) {
        /* a name: out of service until it resolves */
        up->named = true;
        up->down = true;
        up->port = u.port;
        up->proto = u.scheme == SIP_SCHEME_SIPS         ? SIP_TRANSPORT_TLS
                    : u.transport != SIP_TRANSPORT_NONE ? u.transport
                                                        : SIP_TRANSPORT_UDP;
        struct slice host = u.maddr.len ? u.maddr : u.host;
        if (host.len >= sizeof up->tls_name) return -EINVAL;
        memcpy(up->tls_name, host.ptr, host.len);
        up->tls_name[host.len] = 0;
        return 0;
    }
    if (rc < 0) return rc;
    up->resolved = true;
    up->port = netaddr_port(&up->addr);
    return 0;
}

bool upstream_is_source(const struct upstream *u, const struct rx_info *rx)
{
    if (netaddr_eq(&rx->src, &u->addr)) return true;
    /* a SIP Server may open its own stream connection from any port */
    if (rx->proto != SIP_TRANSPORT_UDP) {
        struct netaddr a = rx->src, b = u->addr;
        if (a.sa.sa_family == AF_INET && b.sa.sa_family == AF_INET &&
            a.in4.sin_addr.s_addr == b.in4.sin_addr.s_addr &&
            (ntohl(a.in4.sin_addr.s_addr) >> 24) != 127)
            return true;
    }
    return false;
}

bool upstream_in_service(const struct upstream_set *s)
{
    return s->nup > 0 && !s->up[s->active].down;
}

/* ---- service state ---------------------------------------------------------- */

/* The next target of a name with several (RFC 3263 §4.3). True when it
 * wrapped around: every target failed in turn. */
static bool next_target(struct upstream *u)
{
    char a[NETADDR_STRLEN], b[NETADDR_STRLEN];
    netaddr_str(&u->addr, a, sizeof a);
    u->cur = (uint8_t)((u->cur + 1) % u->ntargets);
    u->addr = u->targets[u->cur].addr;
    u->proto = u->targets[u->cur].proto;
    u->port = netaddr_port(&u->addr);
    netaddr_str(&u->addr, b, sizeof b);
    LOG_W("upstream %s: target %s is not answering, next: %s", u->host, a, b);
    return u->cur == 0;
}

void upstream__state(struct worker *w, unsigned i, bool up)
{
    struct upstream_set *s = &proxy__of(w)->ups;
    struct upstream *u = &s->up[i];
    /* a name with several targets is down only when each failed in turn */
    if (!up && u->ntargets > 1 && !next_target(u)) return;
    if (u->down == !up) return;
    u->down = !up;
    if (!up)
        LOG_W("upstream %s:%d (%s) is not answering", u->host, u->port, i ? "backup" : "primary");
    else
        LOG_I("upstream %s:%d (%s) is in service", u->host, u->port, i ? "backup" : "primary");
    unsigned other = i ^ 1;
    if (!up && i == s->active && s->nup == 2 && !s->up[other].down) {
        s->active = other;
        LOG_W("switching to upstream %s:%d", s->up[other].host, s->up[other].port);
    } else if (up && s->up[s->active].down) {
        s->active = i;
        LOG_W("switching to upstream %s:%d", u->host, u->port);
    }
    STAT_SET(w, upstream_active, s->active);
    STAT_SET(w, upstream_down, (uint64_t)s->up[0].down | (uint64_t)s->up[1].down << 1);
}

/* ---- names: RFC 3263 resolution ------------------------------------------ */

/* arg of a resolution: which table (0 upstream, 1 peer) and index, plus 1 */
#define RESOLVE_ARG(peer, i) ((void *)(uintptr_t)(((peer) << 8 | (i)) + 1))

/* Takes a resolution's answer: stays on the target in use while the answer
 * still lists it; a failed lookup keeps the last address. */
static void resolved(struct worker *w, bool peer, unsigned i, int status,
                     const struct dns_target *t, unsigned n)
{
    struct upstream_set *s = &proxy__of(w)->ups;
    struct upstream *u = peer ? &s->peer[i] : &s->up[i];
    const char *what = peer ? "peer" : "upstream";
    u->resolving = false;
    if (status < 0 || n == 0) {
        /* a resolved one keeps its address through a DNS outage */
        LOG_RL(LOG_WARN, "%s %s: DNS: %s%s", what, u->host, strerror(status < 0 ? -status : ENOENT),
               u->resolved ? ", keeping the last address" : ", not in service");
        return;
    }
    bool first = !u->resolved;
    if (n > DNS_MAX_TARGETS) n = DNS_MAX_TARGETS;
    unsigned cur = 0;
    for (unsigned k = 0; k < n && u->resolved; k++)
        if (netaddr_eq(&t[k].addr, &u->addr) && t[k].proto == u->proto) cur = k;
    if (first || !netaddr_eq(&u->addr, &t[cur].addr) || u->proto != t[cur].proto) {
        char a[NETADDR_STRLEN];
        netaddr_str(&t[cur].addr, a, sizeof a);
        LOG_I("%s %s resolves to %s (%s)%s", what, u->host, a, sipuri_transport_name(t[cur].proto),
              n > 1 ? ", more targets behind it" : "");
    }
    memcpy(u->targets, t, n * sizeof *t);
    u->ntargets = (uint8_t)n;
    u->cur = (uint8_t)cur;
    u->addr = t[cur].addr;
    u->proto = t[cur].proto;
    u->port = netaddr_port(&u->addr);
    if (u->proto != SIP_TRANSPORT_TLS) u->tls_name[0] = 0;
    u->resolved = true;
    if (first && !peer) upstream__state(w, i, true);
}

static void resolve_done(struct worker *w, void *arg, int status, const struct dns_target *t,
                         unsigned n)
{
    if (status == -ECANCELED || !w->layer) return;
    unsigned v = (unsigned)((uintptr_t)arg - 1);
    resolved(w, v >> 8, v & 0xff, status, t, n);
}

/* Starts (or answers from the cache) the RFC 3263 lookup of a named one. */
static void resolve(struct worker *w, bool peer, unsigned i)
{
    struct upstream_set *s = &proxy__of(w)->ups;
    struct upstream *u = peer ? &s->peer[i] : &s->up[i];
    if (!u->named || u->resolving || !w->dns) return;
    struct slice host = u->uri.maddr.len ? u->uri.maddr : u->uri.host;
    struct dns_target out[DNS_MAX_TARGETS];
    unsigned n = 0;
    int rc =
        dns_resolve(w, NULL, host, u->uri.port, u->uri.transport, u->uri.scheme == SIP_SCHEME_SIPS,
                    resolve_done, RESOLVE_ARG(peer, i), out, &n);
    if (rc == 0) {
        u->resolving = true;
        return;
    }
    resolved(w, peer, i, rc < 0 ? rc : 0, rc < 0 ? NULL : out, rc < 0 ? 0 : n);
}

static uint64_t oos_check_ms(const struct worker *w)
{
    return (uint64_t)(w->cfg->oos_check_s ? w->cfg->oos_check_s : 5) * 1000;
}

/* Resolves every name now, and again each --oos-check period (answers come
 * from the cache until their TTL ends), for upstreams and peers alike: a
 * peer is refreshed even when no SIP Server is probed. */
static void on_resolve(struct worker *w, struct timer *t)
{
    struct upstream_set *s = &proxy__of(w)->ups;
    bool any = false;
    for (unsigned i = 0; i < s->nup; i++) {
        resolve(w, false, i);
        any |= s->up[i].named;
    }
    for (unsigned i = 0; i < s->npeer; i++) {
        resolve(w, true, i);
        any |= s->peer[i].named;
    }
    if (any) worker_timer_arm(w, t, oos_check_ms(w));
}

/* ---- OPTIONS probes ---------------------------------------------------------- */

/* Writes the OPTIONS probe of upstream u sent from listener l as transaction
 * x into x->req. 0 or -1. */
static int build_probe(struct worker *w, const struct upstream *u, int l, struct txn *x)
{
    uint32_t seq = proxy__of(w)->probe_seq;
    const char *host = worker_listener_host(w, (unsigned)l);
    int port = u->proto == SIP_TRANSPORT_UDP ? worker_via_port(w, (unsigned)l)
                                             : worker_listener_port(w, (unsigned)l);
    char uh[NETADDR_STRLEN];
    netaddr_str(&u->addr, uh, sizeof uh);
    struct branch_id id = {w->id, x->slot, x->gen, 0, x->nonce};
    x->branch_len = (uint8_t)branch_encode(&id, x->branch, sizeof x->branch);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "OPTIONS sip:%s;transport=%s SIP/2.0\r\n"
                     "Via: SIP/2.0/%s %s:%d;branch=%.*s\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:sipedge@%s:%d>;tag=se%02x%08x\r\n"
                     "To: <sip:%s>\r\n"
                     "Call-ID: probe-%02x-%08x@%s\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "User-Agent: sipedge/" SIPEDGE_VERSION "\r\n"
                     "Content-Length: 0\r\n\r\n",
                     uh, sipuri_transport_name(u->proto), sipuri_transport_str(u->proto), host,
                     port, (int)x->branch_len, x->branch, host, port, w->id & 0xff, seq, uh,
                     w->id & 0xff, seq, host, seq);
    if (n < 0 || (size_t)n >= sizeof req) return -1;
    return txn_set_request(&proxy__of(w)->txns, x, req, (size_t)n);
}

/* Sends an OPTIONS to upstream i over its own transport, as a client
 * transaction of this worker (its answer comes back by our branch). */
static void send_probe(struct worker *w, unsigned i)
{
    struct proxy_worker *p = w->layer;
    struct upstream *u = &p->ups.up[i];
    char key[64];
    if (!u->resolved) return;
    int kn = snprintf(key, sizeof key, "probe|%u|%u", i, ++p->probe_seq);
    int l = config_pick_listener(w->cfg, u->proto, u->addr.sa.sa_family);
    if (l < 0) l = config_pick_listener(w->cfg, u->proto, AF_UNSPEC);
    if (l < 0 || u->probing) return;
    struct txn *x = txn_new(&p->txns, key, (size_t)kn);
    if (!x) return;
    x->probe = true;
    x->method = SIP_METHOD_OPTIONS;
    x->state = TXN_TRYING;
    x->upstream_idx = (uint8_t)i;
    x->out_proto = u->proto;
    x->out_listener = u->proto == SIP_TRANSPORT_UDP ? l | WORKER_SEND_PRIVATE : -1;
    x->out_dst = u->addr;
    if (txn_set_tls_name(&p->txns, x, u->tls_name) < 0 || build_probe(w, u, l, x) < 0) {
        txn_free(&p->txns, x);
        return;
    }
    u->probing = true;
    if (txn__send_client(w, x, x->req, x->req_len) < 0) {
        u->probing = false;
        upstream__state(w, i, false);
        x->state = TXN_COMPLETED;
        txn__linger(w, x);
        return;
    }
    txn__arm(w, x);
    /* a probe waits at most one --oos-force period, not Timer F's 32 s */
    unsigned wait_s = w->cfg->oos_force_s ? w->cfg->oos_force_s : 5;
    worker_timer_arm(w, &x->t_timeout, (uint64_t)(wait_s < 32 ? wait_s : 32) * 1000);
}

/* Every --oos-check seconds the active upstream is asked; while it does not
 * answer, both are asked every --oos-force seconds. */
static void on_probe(struct worker *w, struct timer *t)
{
    struct upstream_set *s = &proxy__of(w)->ups;
    bool trouble = s->up[s->active].down;
    for (unsigned i = 0; i < s->nup; i++)
        if (i == s->active || trouble || s->up[i].down) send_probe(w, i);
    unsigned sec = trouble ? w->cfg->oos_force_s : w->cfg->oos_check_s;
    worker_timer_arm(w, &proxy__of(w)->probe, (uint64_t)(sec ? sec : 5) * 1000);
}

void upstream__probe_answered(struct worker *w, struct txn *x, int code)
{
    /* any final answer, even 404 or 405, says the SIP Server is alive */
    if (code >= 200 && x->state != TXN_COMPLETED) {
        proxy__of(w)->ups.up[x->upstream_idx].probing = false;
        upstream__state(w, x->upstream_idx, true);
        x->state = TXN_COMPLETED;
        txn__linger(w, x);
    } else if (code < 200) {
        timer_cancel(&x->t_retx);
    }
}

void upstream__probe_timed_out(struct worker *w, struct txn *x)
{
    proxy__of(w)->ups.up[x->upstream_idx].probing = false;
    upstream__state(w, x->upstream_idx, false);
    x->state = TXN_COMPLETED;
    txn__linger(w, x);
}

/* ---- per worker ---------------------------------------------------------- */

int upstream__worker_init(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    struct upstream_set *s = &p->ups;
    timer_init(&p->probe, on_probe);
    timer_init(&p->resolve, on_resolve);
    for (unsigned i = 0; i < w->cfg->nupstream; i++) {
        if (upstream_parse(w->cfg->upstream[i], &s->up[s->nup]) < 0) {
            LOG_E("upstream %s: not a usable sip:/sips: URI", w->cfg->upstream[i]);
            return -EINVAL;
        }
        s->nup++;
    }
    for (unsigned i = 0; i < w->cfg->npeers; i++) {
        if (upstream_parse(w->cfg->peers[i].uri, &s->peer[s->npeer]) < 0) {
            LOG_E("--peer %s=%s: not a usable sip:/sips: URI", w->cfg->peers[i].domain,
                  w->cfg->peers[i].uri);
            return -EINVAL;
        }
        s->npeer++;
    }
    /* names resolve from the loop (the resolver starts after this) */
    worker_timer_arm(w, &p->resolve, 1);
    /* the first check comes one --oos-check period after start */
    if (s->nup) worker_timer_arm(w, &p->probe, oos_check_ms(w));
    return 0;
}

void upstream__worker_cleanup(struct worker *w)
{
    timer_cancel(&proxy__of(w)->probe);
    timer_cancel(&proxy__of(w)->resolve);
}
