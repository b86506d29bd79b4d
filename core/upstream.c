/* The SIP Server pair and peer sites: parse, pick, and the one owner of their
 * health (worker 0): it resolves and probes them, takes what the workers'
 * traffic showed, and publishes the state every worker reads without a lock. */
#include "core/upstream.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-qsbr.h>

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
    up->ntargets = 1;
    up->tg[0] = (struct upstream_target){.t = {.proto = up->proto, .addr = up->addr}};
    return 0;
}

/* Did rx come from address a (see upstream_is_source)? */
static bool from_addr(const struct netaddr *a, const struct rx_info *rx)
{
    if (netaddr_eq(&rx->src, a)) return true;
    /* a SIP Server may open its own stream connection from any port */
    if (rx->proto != SIP_TRANSPORT_UDP) {
        const struct netaddr *s = &rx->src;
        if (s->sa.sa_family == AF_INET && a->sa.sa_family == AF_INET &&
            s->in4.sin_addr.s_addr == a->in4.sin_addr.s_addr &&
            (ntohl(s->in4.sin_addr.s_addr) >> 24) != 127)
            return true;
    }
    return false;
}

bool upstream_is_source(const struct upstream *u, const struct rx_info *rx)
{
    if (from_addr(&u->addr, rx)) return true;
    for (unsigned t = 0; t < u->ntargets; t++)
        if (from_addr(&u->tg[t].t.addr, rx)) return true;
    return false;
}

bool upstream_in_service(const struct upstream_set *s)
{
    return s->nup > 0 && !s->up[s->active].down;
}

/* The target u should use: the first up, else the first unknown, else -1. */
static int best_target(const struct upstream *u)
{
    int unknown = -1;
    for (unsigned t = 0; t < u->ntargets; t++) {
        if (u->tg[t].state == UPSTREAM_UP) return (int)t;
        if (u->tg[t].state == UPSTREAM_UNKNOWN && unknown < 0) unknown = (int)t;
    }
    return unknown;
}

bool upstream_pick(struct upstream_set *s)
{
    bool has_up[2] = {false, false};
    for (unsigned i = 0; i < s->nup; i++) {
        struct upstream *u = &s->up[i];
        int t = u->resolved ? best_target(u) : -1;
        u->down = t < 0;
        if (t < 0) continue;
        u->cur = (uint8_t)t;
        u->proto = u->tg[t].t.proto;
        u->addr = u->tg[t].t.addr;
        u->port = netaddr_port(&u->addr);
        has_up[i] = u->tg[t].state == UPSTREAM_UP;
    }
    unsigned was = s->active;
    if (s->nup < 2 || (!s->up[0].down && (has_up[0] || !has_up[1])))
        s->active = 0;
    else if (!s->up[1].down)
        s->active = 1;
    /* with none in service the active one stays what it was */
    return s->active != was;
}

int upstream_target_of(const struct upstream *u, uint8_t proto, const struct netaddr *addr)
{
    for (unsigned t = 0; t < u->ntargets; t++)
        if (u->tg[t].t.proto == proto && netaddr_eq(&u->tg[t].t.addr, addr)) return (int)t;
    return -1;
}

bool upstream_next(const struct upstream_set *s, unsigned from, uint16_t tried, unsigned *ui,
                   unsigned *ti)
{
    /* pass 0 takes up targets, pass 1 unknown ones */
    for (unsigned pass = 0; pass < 2; pass++) {
        for (unsigned k = 0; k < s->nup; k++) {
            unsigned i = (from + k) % s->nup;
            const struct upstream *u = &s->up[i];
            for (unsigned t = 0; u->resolved && t < u->ntargets; t++) {
                uint8_t want = pass ? UPSTREAM_UNKNOWN : UPSTREAM_UP;
                if (u->tg[t].state != want || (tried >> (i * DNS_MAX_TARGETS + t) & 1)) continue;
                *ui = i;
                *ti = t;
                return true;
            }
        }
    }
    return false;
}

const char *upstream_state_name(unsigned state)
{
    static const char *const names[] = {"unknown", "up", "down"};
    return state < sizeof names / sizeof names[0] ? names[state] : "?";
}

/* Each reason's name (/stats, /metrics) and how log lines say it. */
static const struct {
    const char *name, *text;
} reasons[UPSTREAM_WHY__COUNT] = {
    [UPSTREAM_WHY_START] = {"start", "not heard from yet"},
    [UPSTREAM_WHY_PROBE_OK] = {"probe_answered", "answered a probe"},
    [UPSTREAM_WHY_PROBE_LOST] = {"probe_unanswered",
                                 "a probe and every request since went unanswered"},
    [UPSTREAM_WHY_ANSWERED] = {"request_answered", "answered a request"},
    [UPSTREAM_WHY_TIMEOUT] = {"request_timeout",
                              "no response at all to a request within --failover-timeout"},
    [UPSTREAM_WHY_503] = {"request_503", "503 with Retry-After"},
    [UPSTREAM_WHY_SEND] = {"probe_not_sent", "a probe could not be sent"},
    [UPSTREAM_WHY_UNREACHABLE] = {"icmp_unreachable", "ICMP unreachable for a datagram to it"},
};

const char *upstream_reason_name(unsigned reason)
{
    return reason < UPSTREAM_WHY__COUNT ? reasons[reason].name : "?";
}

static const char *reason_text(unsigned reason)
{
    return reason < UPSTREAM_WHY__COUNT ? reasons[reason].text : "?";
}

/* ---- the published state -------------------------------------------------- */

/* One immutable copy of the owner's state. */
struct ups_snap {
    struct upstream_set set;
    uint64_t gen;
    struct rcu_head rcu;
};

/* The state of the SIP Servers and peers as the owner last published it:
 * written by the owner (worker 0) only, with rcu_xchg_pointer; read by the
 * workers (upstream__sync) and the management thread under RCU (QSBR: the
 * workers hold a snapshot at most until their next quiescent state). */
static struct ups_snap *published;

static void snap_free(struct rcu_head *h)
{
    free(caa_container_of(h, struct ups_snap, rcu));
}

bool upstream_published(struct upstream_set *out)
{
    rcu_read_lock();
    struct ups_snap *s = rcu_dereference(published);
    if (s) *out = s->set;
    rcu_read_unlock();
    return s != NULL;
}

/* When each target last answered a request (monotonic ms), by SIP Server
 * and target index: any worker stores, the owner reads (relaxed atomics:
 * a heartbeat that needs no ring message). The indexes are the owner's;
 * a worker whose copy lags a re-resolution may credit the wrong target for
 * a moment, and the owner clears the slots of targets that changed. */
static _Atomic uint64_t answered_at[2][DNS_MAX_TARGETS];

void upstream__answered(struct worker *w, unsigned i, unsigned t)
{
    if (i >= 2 || t >= DNS_MAX_TARGETS) return;
    _Atomic uint64_t *a = &answered_at[i][t];
    /* one store per 10 ms at most: the line is shared by every worker */
    if (atomic_load_explicit(a, memory_order_relaxed) + 10 <= w->now_ms)
        atomic_store_explicit(a, w->now_ms, memory_order_relaxed);
}

static uint64_t answered_ms(unsigned i, unsigned t)
{
    return atomic_load_explicit(&answered_at[i][t], memory_order_relaxed);
}

/* A worker's own hint (upstream__local_down) gives way to the owner's
 * state after this long even when the owner published nothing new (its
 * report lost in a full ring, or the owner saw it otherwise). */
#define LOCAL_HINT_MS 1000

void upstream__sync(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    rcu_read_lock();
    struct ups_snap *s = rcu_dereference(published);
    if (s &&
        (s->gen != p->ups_gen || (p->ups_hint_ms && w->now_ms >= p->ups_hint_ms + LOCAL_HINT_MS))) {
        p->ups = s->set;
        p->ups_gen = s->gen;
        p->ups_hint_ms = 0;
    }
    rcu_read_unlock();
}

void upstream__local_down(struct worker *w, unsigned i, uint8_t proto, const struct netaddr *addr)
{
    struct proxy_worker *p = w->layer;
    int t = i < p->ups.nup ? upstream_target_of(&p->ups.up[i], proto, addr) : -1;
    if (t < 0 || p->ups.up[i].tg[t].state == UPSTREAM_DOWN) return;
    p->ups.up[i].tg[t].state = UPSTREAM_DOWN;
    upstream_pick(&p->ups);
    p->ups_hint_ms = w->now_ms ? w->now_ms : 1;
}

/* Owner: publishes the master state as a new snapshot (gen + 1). On
 * allocation failure the workers keep the previous one until the next
 * change. */
static void publish(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    struct ups_snap *s = malloc(sizeof *s);
    if (!s) {
        LOG_RL(LOG_ERR, "upstream state: out of memory, workers keep the previous state");
        return;
    }
    s->set = *p->master;
    s->gen = p->ups_gen + 1;
    p->ups = s->set;
    p->ups_gen = s->gen;
    p->ups_hint_ms = 0;
    struct ups_snap *old = rcu_xchg_pointer(&published, s);
    if (old) call_rcu(&old->rcu, snap_free);
    STAT_SET(w, upstream_active, p->master->active);
    STAT_SET(w, upstream_down,
             (uint64_t)p->master->up[0].down | (uint64_t)p->master->up[1].down << 1);
}

static const char *role(unsigned i)
{
    return i ? "backup" : "primary";
}

/* A first probe usually comes back within milliseconds: while one younger
 * than this is in flight, the owner holds back its changes, so that the
 * backup's answer does not steer requests away from a primary whose own
 * answer is a moment behind. */
#define SETTLE_MS 500

/* Owner: true while a target not heard from yet waits for its first probe
 * (younger than SETTLE_MS) and the published state has a SIP Server in
 * service (otherwise publishing now can only help); *until: when the
 * youngest such wait ends. */
static bool settling(const struct worker *w, uint64_t *until)
{
    const struct upstream_set *m = proxy__of(w)->master;
    *until = 0;
    if (!upstream_in_service(&proxy__of(w)->ups)) return false;
    for (unsigned i = 0; i < m->nup; i++)
        for (unsigned t = 0; t < m->up[i].ntargets; t++) {
            const struct upstream_target *g = &m->up[i].tg[t];
            if (g->probing && g->state == UPSTREAM_UNKNOWN && g->reason == UPSTREAM_WHY_START &&
                !answered_ms(i, t) && g->probe_ms + SETTLE_MS > w->now_ms &&
                g->probe_ms + SETTLE_MS > *until)
                *until = g->probe_ms + SETTLE_MS;
        }
    return *until != 0;
}

static void commit(struct worker *w);

static void on_settled(struct worker *w, struct timer *t)
{
    (void)t;
    commit(w);
}

/* Owner: picks the targets and the active SIP Server again, logs a switch
 * and publishes (after the settle time of first probes). */
static void commit(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    struct upstream_set *m = p->master;
    uint64_t until;
    if (settling(w, &until)) {
        worker_timer_arm(w, &p->settle, until - w->now_ms);
        return;
    }
    bool was_down = m->nup && m->up[m->active].down;
    if (upstream_pick(m) || (m->nup && was_down != m->up[m->active].down)) {
        const struct upstream *a = &m->up[m->active];
        if (a->down)
            LOG_W("no SIP Server in service: new requests get 503");
        else
            LOG_W("SIP Server in service: %s %s:%d", role(m->active), a->host, a->port);
    }
    publish(w);
}

/* Owner: target t of SIP Server (or peer) u takes state `st` for `why`. */
static void set_state(struct worker *w, struct upstream *u, unsigned t, uint8_t st, uint8_t why)
{
    struct upstream_target *g = &u->tg[t];
    /* the same state again, except that a target not heard from yet whose
     * probe went unanswered says so (it stays unknown: judged by requests) */
    if (g->state == st && (st != UPSTREAM_UNKNOWN || g->reason != UPSTREAM_WHY_START)) return;
    char a[NETADDR_STRLEN];
    netaddr_str(&g->t.addr, a, sizeof a);
    log_msg(st == UPSTREAM_DOWN ? LOG_WARN : LOG_INFO, "upstream %s: target %s (%s) %s: %s",
            u->host, a, sipuri_transport_name(g->t.proto), upstream_state_name(st),
            reason_text(why));
    g->state = st;
    g->reason = why;
    g->changed_ms = w->now_ms;
}

/* ---- what the workers' traffic showed ----------------------------------- */

static void send_probe(struct worker *w, unsigned i, unsigned t);

void upstream__on_report(struct worker *w, const void *data, size_t len)
{
    struct upstream_report r;
    struct upstream_set *m = proxy__of(w)->master;
    if (!m || len != sizeof r) return;
    memcpy(&r, data, sizeof r);
    if (r.idx >= m->nup) return;
    struct upstream *u = &m->up[r.idx];
    int t = upstream_target_of(u, r.proto, &r.addr);
    if (t < 0) return; /* re-resolved meanwhile: about a target gone */
    struct upstream_target *g = &u->tg[t];
    if (r.what == UPSTREAM_WHY_ANSWERED) {
        upstream__answered(w, r.idx, (unsigned)t);
        if (g->state == UPSTREAM_UP) return;
        set_state(w, u, (unsigned)t, UPSTREAM_UP, UPSTREAM_WHY_ANSWERED);
    } else if (r.what == UPSTREAM_WHY_TIMEOUT || r.what == UPSTREAM_WHY_503 ||
               r.what == UPSTREAM_WHY_UNREACHABLE) {
        if (g->state == UPSTREAM_DOWN) return;
        set_state(w, u, (unsigned)t, UPSTREAM_DOWN, r.what);
        commit(w);
        /* nowhere else to go: ask it at once rather than at the next period,
         * so one slow answer does not keep a lone server out for seconds */
        if (m->nup && m->up[m->active].down) send_probe(w, r.idx, (unsigned)t);
        return;
    } else {
        return;
    }
    commit(w);
}

/* ---- names: RFC 3263 resolution ------------------------------------------ */

/* arg of a resolution: which table (0 upstream, 1 peer) and index, plus 1 */
#define RESOLVE_ARG(peer, i) ((void *)(uintptr_t)(((peer) << 8 | (i)) + 1))

/* Owner: takes a new target list: a target still listed keeps what is known
 * of it, a new one is unknown and probed at once. */
static void take_targets(struct worker *w, struct upstream *u, bool peer, unsigned i,
                         const struct dns_target *t, unsigned n)
{
    struct upstream_target tg[DNS_MAX_TARGETS];
    bool fresh[DNS_MAX_TARGETS];
    uint64_t seen[DNS_MAX_TARGETS] = {0};
    for (unsigned k = 0; k < n; k++) {
        int old = upstream_target_of(u, t[k].proto, &t[k].addr);
        fresh[k] = old < 0;
        tg[k] = old < 0 ? (struct upstream_target){.changed_ms = w->now_ms} : u->tg[old];
        tg[k].t = t[k];
        if (!peer && old >= 0) seen[k] = answered_ms(i, (unsigned)old);
    }
    for (unsigned k = 0; k < DNS_MAX_TARGETS && !peer; k++) /* the slots follow the targets */
        atomic_store_explicit(&answered_at[i][k], seen[k], memory_order_relaxed);
    memcpy(u->tg, tg, n * sizeof *tg);
    u->ntargets = (uint8_t)n;
    for (unsigned k = 0; k < n && !peer; k++)
        if (fresh[k]) send_probe(w, i, k);
}

/* Owner: a resolution's answer; a failed lookup keeps the last targets. */
static void resolved(struct worker *w, bool peer, unsigned i, int status,
                     const struct dns_target *t, unsigned n)
{
    struct upstream_set *m = proxy__of(w)->master;
    struct upstream *u = peer ? &m->peer[i] : &m->up[i];
    const char *what = peer ? "peer" : "upstream";
    u->resolving = false;
    if (status < 0 || n == 0) {
        /* a resolved one keeps its targets through a DNS outage */
        LOG_RL(LOG_WARN, "%s %s: DNS: %s%s", what, u->host, strerror(status < 0 ? -status : ENOENT),
               u->resolved ? ", keeping the last targets" : ", not in service");
        return;
    }
    if (n > DNS_MAX_TARGETS) n = DNS_MAX_TARGETS;
    bool changed = n != u->ntargets || !u->resolved;
    for (unsigned k = 0; k < n && !changed; k++)
        changed = t[k].proto != u->tg[k].t.proto || !netaddr_eq(&t[k].addr, &u->tg[k].t.addr);
    if (!changed) return;
    char a[NETADDR_STRLEN];
    netaddr_str(&t[0].addr, a, sizeof a);
    LOG_I("%s %s resolves to %s (%s)%s", what, u->host, a, sipuri_transport_name(t[0].proto),
          n > 1 ? ", more targets behind it" : "");
    if (t[0].proto != SIP_TRANSPORT_TLS) u->tls_name[0] = 0;
    take_targets(w, u, peer, i, t, n);
    u->resolved = true;
    if (peer) { /* peers are not probed: the first target serves */
        u->cur = 0;
        u->proto = u->tg[0].t.proto;
        u->addr = u->tg[0].t.addr;
        u->port = netaddr_port(&u->addr);
        u->down = false;
    }
    commit(w);
}

static void resolve_done(struct worker *w, void *arg, int status, const struct dns_target *t,
                         unsigned n)
{
    if (status == -ECANCELED || !w->layer || !proxy__of(w)->master) return;
    unsigned v = (unsigned)((uintptr_t)arg - 1);
    resolved(w, v >> 8, v & 0xff, status, t, n);
}

/* Owner: starts (or answers from the cache) the RFC 3263 lookup of a named one. */
static void resolve(struct worker *w, bool peer, unsigned i)
{
    struct upstream_set *m = proxy__of(w)->master;
    struct upstream *u = peer ? &m->peer[i] : &m->up[i];
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

/* Owner: resolves every name now, and again each --oos-check period
 * (answers come from the cache until their TTL ends), upstreams and peers. */
static void on_resolve(struct worker *w, struct timer *t)
{
    struct upstream_set *m = proxy__of(w)->master;
    bool any = false;
    for (unsigned i = 0; i < m->nup; i++) {
        resolve(w, false, i);
        any |= m->up[i].named;
    }
    for (unsigned i = 0; i < m->npeer; i++) {
        resolve(w, true, i);
        any |= m->peer[i].named;
    }
    if (any) worker_timer_arm(w, t, oos_check_ms(w));
}

/* ---- OPTIONS probes (owner) ---------------------------------------------- */

/* Writes the OPTIONS probe of target g sent from listener l as transaction
 * x into x->req. 0 or -1. */
static int build_probe(struct worker *w, const struct upstream_target *g, int l, struct txn *x)
{
    uint32_t seq = proxy__of(w)->probe_seq;
    const char *host = worker_listener_host(w, (unsigned)l);
    int port = g->t.proto == SIP_TRANSPORT_UDP ? worker_via_port(w, (unsigned)l)
                                               : worker_listener_port(w, (unsigned)l);
    char uh[NETADDR_STRLEN];
    netaddr_str(&g->t.addr, uh, sizeof uh);
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
                     uh, sipuri_transport_name(g->t.proto), sipuri_transport_str(g->t.proto), host,
                     port, (int)x->branch_len, x->branch, host, port, w->id & 0xff, seq, uh,
                     w->id & 0xff, seq, host, seq);
    if (n < 0 || (size_t)n >= sizeof req) return -1;
    return txn_set_request(&proxy__of(w)->txns, x, req, (size_t)n);
}

/* Owner: a probe could not go or went unanswered: it speaks against target
 * t only when no request was answered since it left, and then only for a
 * target that answers probes; one that never did (a sipp UAS) is unknown. */
static void probe_lost(struct worker *w, unsigned i, unsigned t, uint8_t why)
{
    struct upstream *u = &proxy__of(w)->master->up[i];
    struct upstream_target *g = &u->tg[t];
    g->probing = false;
    if (answered_ms(i, t) >= g->probe_ms) return;
    if (g->options_ok)
        set_state(w, u, t, UPSTREAM_DOWN, why);
    else if (g->state != UPSTREAM_DOWN || g->probe_ms >= g->changed_ms)
        set_state(w, u, t, UPSTREAM_UNKNOWN, why);
    commit(w);
}

/* Owner: sends an OPTIONS to target t of SIP Server i over its own
 * transport, as a client transaction of this worker. */
static void send_probe(struct worker *w, unsigned i, unsigned t)
{
    struct proxy_worker *p = w->layer;
    struct upstream_target *g = &p->master->up[i].tg[t];
    char key[64];
    int kn = snprintf(key, sizeof key, "probe|%u|%u", i, ++p->probe_seq);
    int l = config_pick_listener(w->cfg, g->t.proto, g->t.addr.sa.sa_family);
    if (l < 0) l = config_pick_listener(w->cfg, g->t.proto, AF_UNSPEC);
    if (l < 0 || g->probing) return;
    struct txn *x = txn_new(&p->txns, key, (size_t)kn);
    if (!x) return;
    x->probe = true;
    x->method = SIP_METHOD_OPTIONS;
    x->state = TXN_TRYING;
    x->upstream_idx = (uint8_t)i;
    x->out_proto = g->t.proto;
    x->out_listener = g->t.proto == SIP_TRANSPORT_UDP ? l | WORKER_SEND_PRIVATE : -1;
    x->out_dst = g->t.addr;
    const char *tn = p->master->up[i].tls_name[0] ? p->master->up[i].tls_name : NULL;
    if (txn_set_tls_name(&p->txns, x, tn) < 0 || build_probe(w, g, l, x) < 0) {
        txn_free(&p->txns, x);
        return;
    }
    g->probing = true;
    g->probe_ms = w->now_ms;
    if (txn__send_client(w, x, x->req, x->req_len) < 0) {
        x->state = TXN_COMPLETED;
        txn__linger(w, x);
        probe_lost(w, i, t, UPSTREAM_WHY_SEND);
        return;
    }
    txn__arm(w, x);
    /* a probe waits at most one --oos-force period, not Timer F's 32 s */
    unsigned wait_s = w->cfg->oos_force_s ? w->cfg->oos_force_s : 5;
    worker_timer_arm(w, &x->t_timeout, (uint64_t)(wait_s < 32 ? wait_s : 32) * 1000);
}

/* Owner: every --oos-check seconds (--oos-force while the active SIP Server
 * is not known to be up) each target is asked, except one that answered a
 * request within the period: probes matter when there is no traffic. */
static void on_probe(struct worker *w, struct timer *tm)
{
    struct upstream_set *m = proxy__of(w)->master;
    const struct upstream *a = &m->up[m->active];
    bool trouble = a->down || a->tg[a->cur].state != UPSTREAM_UP;
    uint64_t period = trouble ? (uint64_t)(w->cfg->oos_force_s ? w->cfg->oos_force_s : 5) * 1000
                              : oos_check_ms(w);
    for (unsigned i = 0; i < m->nup; i++)
        for (unsigned t = 0; m->up[i].resolved && t < m->up[i].ntargets; t++)
            if (!answered_ms(i, t) || answered_ms(i, t) + period <= w->now_ms) send_probe(w, i, t);
    worker_timer_arm(w, tm, period);
}

/* The probe transaction x's target, or -1 (re-resolved meanwhile). */
static int probe_target(struct worker *w, const struct txn *x)
{
    struct upstream_set *m = proxy__of(w)->master;
    if (!m || x->upstream_idx >= m->nup) return -1;
    return upstream_target_of(&m->up[x->upstream_idx], x->out_proto, &x->out_dst);
}

void upstream__probe_answered(struct worker *w, struct txn *x, int code)
{
    if (code < 200) {
        timer_cancel(&x->t_retx);
        return;
    }
    if (x->state == TXN_COMPLETED) return;
    x->state = TXN_COMPLETED;
    txn__linger(w, x);
    int t = probe_target(w, x);
    if (t < 0) return;
    /* any final answer, even 404 or 405, says the SIP Server is alive */
    struct upstream_set *m = proxy__of(w)->master;
    struct upstream_target *g = &m->up[x->upstream_idx].tg[t];
    g->probing = false;
    g->options_ok = true;
    /* but one that failed a request answers probes for a while before it
     * gets requests again, while another target serves them: a server that
     * answers OPTIONS and drops requests must not cost every request the
     * --failover-timeout */
    uint64_t hold = (uint64_t)(w->cfg->oos_force_s ? w->cfg->oos_force_s : 5) * 1000;
    if (g->state == UPSTREAM_DOWN &&
        (g->reason == UPSTREAM_WHY_TIMEOUT || g->reason == UPSTREAM_WHY_503) &&
        w->now_ms < g->changed_ms + hold && !m->up[m->active].down)
        return;
    set_state(w, &m->up[x->upstream_idx], (unsigned)t, UPSTREAM_UP, UPSTREAM_WHY_PROBE_OK);
    commit(w);
}

void upstream__probe_timed_out(struct worker *w, struct txn *x)
{
    x->state = TXN_COMPLETED;
    txn__linger(w, x);
    int t = probe_target(w, x);
    if (t >= 0) probe_lost(w, x->upstream_idx, (unsigned)t, UPSTREAM_WHY_PROBE_LOST);
}

/* ---- per worker ---------------------------------------------------------- */

/* Parses the configured SIP Servers and peers into s. */
static int parse_all(const struct config *cfg, struct upstream_set *s)
{
    for (unsigned i = 0; i < cfg->nupstream; i++) {
        if (upstream_parse(cfg->upstream[i], &s->up[s->nup]) < 0) {
            LOG_E("upstream %s: not a usable sip:/sips: URI", cfg->upstream[i]);
            return -EINVAL;
        }
        s->nup++;
    }
    for (unsigned i = 0; i < cfg->npeers; i++) {
        if (upstream_parse(cfg->peers[i].uri, &s->peer[s->npeer]) < 0) {
            LOG_E("--peer %s=%s: not a usable sip:/sips: URI", cfg->peers[i].domain,
                  cfg->peers[i].uri);
            return -EINVAL;
        }
        s->npeer++;
    }
    upstream_pick(s);
    return 0;
}

int upstream__worker_init(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    timer_init(&p->probe, on_probe);
    timer_init(&p->resolve, on_resolve);
    timer_init(&p->settle, on_settled);
    /* every worker starts from the configuration, until the owner publishes */
    int rc = parse_all(w->cfg, &p->ups);
    if (rc < 0 || w->id != 0) return rc;
    /* worker 0 owns upstream health */
    if (!(p->master = malloc(sizeof *p->master))) return -ENOMEM;
    *p->master = p->ups;
    for (unsigned i = 0; i < p->master->nup; i++)
        for (unsigned t = 0; t < p->master->up[i].ntargets; t++)
            p->master->up[i].tg[t].changed_ms = w->now_ms;
    publish(w);
    /* names resolve from the loop (the resolver starts after this); every
     * target is probed at once, before the first request */
    worker_timer_arm(w, &p->resolve, 1);
    if (p->master->nup) worker_timer_arm(w, &p->probe, 1);
    return 0;
}

void upstream__worker_cleanup(struct worker *w)
{
    struct proxy_worker *p = w->layer;
    timer_cancel(&p->probe);
    timer_cancel(&p->resolve);
    timer_cancel(&p->settle);
    if (!p->master) return;
    /* the other workers keep their copies; the management thread stopped */
    struct ups_snap *old = rcu_xchg_pointer(&published, NULL);
    if (old) call_rcu(&old->rcu, snap_free);
    free(p->master);
    p->master = NULL;
}
