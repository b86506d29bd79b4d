/* The transaction-stateful SIP proxy: routing (RFC 3261 §16), transactions
 * (§17), the built-in registrar, and the replies sipedge makes itself. */
#include "core/proxy.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/rewrite.h"
#include "core/sipmsg.h"
#include "core/sipuri.h"
#include "core/txn.h"
#include "dns/dns.h"
#include "registry/flowmap.h"
#include "registry/flowtoken.h"
#include "registry/locmap.h"

#define T1_MS             500
#define T2_MS             4000
#define TIMER_C_MS        180000
#define SWEEP_MS          250 /* granularity of freeing finished transactions */
#define MAX_HDRS          128
#define OUT_CAP           (65536 + 4096)
#define BRANCH_PREFIX     "z9hG4bKSe"
#define BRANCH_PREFIX_LEN 9
#define BRANCH_LEN        (BRANCH_PREFIX_LEN + 2 + 6 + 8 + 8)

struct upstream {
    uint8_t proto;
    struct netaddr addr;
    char host[256];
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

struct proxy_worker {
    struct txn_table txns;
    struct upstream up[2];
    unsigned nup;
    unsigned active;                        /* index of the upstream in service */
    struct upstream peer[CONFIG_MAX_PEERS]; /* --peer: peer[i] serves cfg->peers[i].domain */
    unsigned npeer;
    struct locmap *loc;
    struct flowmap *flows;
    const struct flowtoken_key *key;
    bool registrar;
    struct sipmsg_limits lim;
    struct txn *linger_head[2], *linger_tail[2]; /* [0] UDP, [1] streams */
    struct timer sweep;
    struct timer probe;   /* OPTIONS service-state checks of the upstreams */
    struct timer resolve; /* resolution of upstreams and peers given by name */
    uint32_t probe_seq;
    bool dns_replay; /* processing a request again after its DNS answer */
    int dns_status;  /* that answer's status */
    struct dns_target dns_targets[DNS_MAX_TARGETS]; /* and its targets */
    unsigned dns_ntargets;
    char out[OUT_CAP];
    char aux[OUT_CAP];
};

/* ---- state shared by all workers (registry/) --------------------------- */

/* Created once by the first worker to start, read-only afterwards except
 * through the maps' own lock-free operations. */
static struct shared {
    struct locmap *loc;       /* built-in registrar: AOR -> bindings */
    struct flowmap *flows;    /* phone address + transport -> connection */
    struct flowtoken_key key; /* flow token HMAC key */
    int rc;
    /* --overload-dialog-rate: new INVITEs admitted in the current second,
     * counted by every worker (one atomic add per new INVITE) */
    _Alignas(64) _Atomic uint64_t ovl_second;
    _Atomic uint32_t ovl_count;
} shared;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;
static const struct config *shared_cfg;

static void shared_create(void)
{
    shared.loc = locmap_new();
    shared.flows = flowmap_new();
    if (!shared.loc || !shared.flows) {
        shared.rc = -ENOMEM;
        return;
    }
    shared.rc = flowtoken_key_init(&shared.key, shared_cfg->flow_secret_file);
    if (shared.rc < 0)
        LOG_E("--flow-secret %s: %s", shared_cfg->flow_secret_file, strerror(-shared.rc));
}

struct locmap *proxy_locmap(void)
{
    return shared.loc;
}
struct flowmap *proxy_flowmap(void)
{
    return shared.flows;
}

/* ---- small helpers -------------------------------------------------- */

static uint64_t fnv(uint64_t h, struct slice s)
{
    for (size_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.ptr[i]) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL;
}
#define FNV_INIT 1469598103934665603ULL

static int default_port(uint8_t proto)
{
    return proto == SIP_TRANSPORT_TLS ? 5061 : 5060;
}

static const char *proto_lc(uint8_t proto)
{
    switch (proto) {
    case SIP_TRANSPORT_TCP:
        return "tcp";
    case SIP_TRANSPORT_TLS:
        return "tls";
    default:
        return "udp";
    }
}

/* First listener of proto whose address family matches fam (AF_UNSPEC: any). */
static int pick_listener(const struct worker *w, uint8_t proto, int fam)
{
    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        const struct listen_cfg *l = &w->cfg->listen[i];
        if (l->proto == proto && (fam == AF_UNSPEC || l->addr.sa.sa_family == fam)) return (int)i;
    }
    return -1;
}

/* Is host:port one of our own addresses? */
static bool is_local(const struct worker *w, struct slice host, int port)
{
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

static bool uri_is_local(const struct worker *w, const struct sip_uri *u)
{
    if (u->scheme != SIP_SCHEME_SIP && u->scheme != SIP_SCHEME_SIPS) return false;
    return is_local(w, u->host, u->port);
}

/* Where a URI sends us: transport, address. Only IP literals resolve here. */
static int uri_target(const struct sip_uri *u, uint8_t *proto, struct netaddr *dst)
{
    uint8_t p = u->transport;
    if (u->scheme == SIP_SCHEME_SIPS) p = SIP_TRANSPORT_TLS;
    if (p == SIP_TRANSPORT_NONE) p = SIP_TRANSPORT_UDP;
    if (p != SIP_TRANSPORT_UDP && p != SIP_TRANSPORT_TCP && p != SIP_TRANSPORT_TLS)
        return -EPROTONOSUPPORT;
    struct slice host = u->maddr.len ? u->maddr : u->host;
    if (slice_case_eq_lit(host, "localhost")) host = SLICE_LIT("127.0.0.1");
    if (netaddr_from_ip(dst, host, u->port ? u->port : default_port(p)) < 0) return -EHOSTUNREACH;
    *proto = p;
    return 0;
}

/* ---- replies built by sipedge --------------------------------------- */

struct buf {
    char *p;
    size_t len, cap;
    bool overflow;
};

static void put(struct buf *b, const char *s, size_t n)
{
    if (n == 0) return; /* s may be NULL for an absent value */
    if (b->len + n > b->cap) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
static void puts_(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}
static void puts_sl(struct buf *b, struct slice s)
{
    put(b, s.ptr, s.len);
}
static void putf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->overflow = true;
    else
        b->len += (size_t)n;
}

/* printf-free pieces for the per-message paths */
static void put_u(struct buf *b, unsigned long v)
{
    char t[20];
    size_t n = 0;
    do {
        t[sizeof t - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(b, t + sizeof t - n, n);
}
static void put_hex(struct buf *b, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    char t[16];
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        t[i] = hex[v & 15];
    put(b, t, (size_t)digits);
}

/* "Name: <sip:[token@]host:port;transport=x;lr[;ob]>\r\n" for one of our listeners. */
static int own_uri_line(const struct worker *w, const char *name, int listener, uint8_t proto,
                        const char *token, bool ob, char *out, size_t cap)
{
    struct buf b = {out, 0, cap, false};
    puts_(&b, name);
    puts_(&b, ": <sip:");
    if (token) {
        puts_(&b, token);
        put(&b, "@", 1);
    }
    puts_(&b, worker_listener_host(w, (unsigned)listener));
    put(&b, ":", 1);
    put_u(&b, (unsigned)worker_listener_port(w, (unsigned)listener));
    puts_(&b, ";transport=");
    puts_(&b, proto_lc(proto));
    puts_(&b, ob ? ";lr;ob>\r\n" : ";lr>\r\n");
    return b.overflow ? 0 : (int)b.len;
}

/* A deterministic To-tag for our own replies, so retransmitted requests get
 * the same one. */
static uint32_t reply_tag(const struct sip_msg *m)
{
    uint64_t h = fnv(FNV_INIT, m->call_id);
    const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM);
    if (f) h = fnv(h, f->value);
    h ^= m->cseq;
    return (uint32_t)(h ^ (h >> 32));
}

static const char *reason_of(int code)
{
    switch (code) {
    case 100:
        return "Trying";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 416:
        return "Unsupported URI Scheme";
    case 420:
        return "Bad Extension";
    case 430:
        return "Flow Failed";
    case 480:
        return "Temporarily Unavailable";
    case 481:
        return "Call/Transaction Does Not Exist";
    case 482:
        return "Loop Detected";
    case 483:
        return "Too Many Hops";
    case 500:
        return "Server Internal Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "Version Not Supported";
    case 513:
        return "Message Too Large";
    default:
        return "Unknown";
    }
}

/* Builds a response to request m: Vias (the top one with received/rport),
 * From, To (with our tag unless 100 or already tagged), Call-ID, CSeq,
 * `extra` header lines, and an empty body. Returns the length or -1. */
static ssize_t build_reply(const struct sip_msg *m, const struct rx_info *rx, int code,
                           const char *warning, const char *extra, char *out, size_t cap)
{
    struct buf b = {out, 0, cap, false};
    puts_(&b, "SIP/2.0 ");
    put_u(&b, (unsigned)code);
    put(&b, " ", 1);
    puts_(&b, reason_of(code));
    put(&b, "\r\n", 2);
    bool top = true;
    for (unsigned i = 0; i < m->nhdrs; i++) {
        const struct sip_hdr *h = &m->hdrs[i];
        switch (h->kind) {
        case SIP_HDR_VIA:
            puts_(&b, "Via: ");
            puts_sl(&b, h->value);
            if (top) {
                struct sip_via v;
                char ip[NETADDR_STRLEN];
                size_t iplen = netaddr_ip_str(&rx->src, ip, sizeof ip);
                if (sipuri_parse_via(h->value, &v) == 0) {
                    bool differs = !slice_eq(v.host, slice_make(ip, iplen));
                    if (v.received.len == 0 && (differs || v.has_rport)) {
                        puts_(&b, ";received=");
                        put(&b, ip, iplen);
                    }
                    if (v.has_rport && v.rport.len == 0) {
                        puts_(&b, ";rport=");
                        put_u(&b, (unsigned)netaddr_port(&rx->src));
                    }
                }
                top = false;
            }
            puts_(&b, "\r\n");
            break;
        case SIP_HDR_FROM:
        case SIP_HDR_CALL_ID:
        case SIP_HDR_CSEQ:
            puts_sl(&b, h->name);
            puts_(&b, ": ");
            puts_sl(&b, h->value);
            puts_(&b, "\r\n");
            break;
        case SIP_HDR_TO: {
            puts_(&b, "To: ");
            puts_sl(&b, h->value);
            struct sip_addr a;
            if (code > 100 && sipuri_parse_addr(h->value, &a) == 0 && a.tag.ptr == NULL) {
                puts_(&b, ";tag=se");
                put_hex(&b, reply_tag(m), 8);
            }
            puts_(&b, "\r\n");
            break;
        }
        }
    }
    if (warning) putf(&b, "Warning: 399 sipedge \"%s\"\r\n", warning);
    if (extra) puts_(&b, extra);
    puts_(&b, "Server: sipedge/" SIPEDGE_VERSION "\r\nContent-Length: 0\r\n\r\n");
    return b.overflow ? -1 : (ssize_t)b.len;
}

/* Where responses to a request go (RFC 3261 §18.2.2, RFC 3581). */
static void response_dst(const struct sip_msg *m, const struct rx_info *rx, struct netaddr *dst)
{
    *dst = rx->src;
    const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via v;
    if (rx->proto != SIP_TRANSPORT_UDP || !h || sipuri_parse_via(h->value, &v) < 0 || v.has_rport)
        return;
    int port = v.port ? v.port : 5060;
    if (dst->sa.sa_family == AF_INET)
        dst->in4.sin_port = htons((uint16_t)port);
    else
        dst->in6.sin6_port = htons((uint16_t)port);
}

static int send_back(struct worker *w, const struct rx_info *rx, const struct netaddr *dst,
                     const char *buf, size_t len)
{
    int rc = worker_send(w, rx->proto, rx->proto == SIP_TRANSPORT_UDP ? rx->listener : -1, dst,
                         rx->conn, NULL, buf, len, NULL);
    if (rc < 0) LOG_RL(LOG_DEBUG, "reply not sent: %s", strerror(-rc));
    return rc;
}

static void reply(struct worker *w, const struct rx_info *rx, const struct sip_msg *m, int code,
                  const char *warning, const char *extra)
{
    if (m->is_request && m->method == SIP_METHOD_ACK) return; /* never answer an ACK */
    ssize_t n = build_reply(m, rx, code, warning, extra, w->proxy->aux, OUT_CAP);
    if (n < 0) return;
    struct netaddr dst;
    response_dst(m, rx, &dst);
    STAT_INC(w, own_replies);
    send_back(w, rx, &dst, w->proxy->aux, (size_t)n);
}

/* ---- init ------------------------------------------------------------ */

static int parse_upstream(const char *text, struct upstream *up)
{
    struct sip_uri u;
    struct slice s = slice_make(text, strlen(text));
    if (sipuri_parse(s, &u) < 0 || (u.scheme != SIP_SCHEME_SIP && u.scheme != SIP_SCHEME_SIPS))
        return -EINVAL;
    up->uri = u;
    snprintf(up->host, sizeof up->host, "%.*s", (int)u.host.len, u.host.ptr);
    int rc = uri_target(&u, &up->proto, &up->addr);
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

/* ---- upstreams and peers given by name ------------------------------- */

static void upstream_state(struct worker *w, unsigned i, bool up);

/* arg of a resolution: which table (0 upstream, 1 peer) and index, plus 1 */
#define RESOLVE_ARG(peer, i) ((void *)(uintptr_t)(((peer) << 8 | (i)) + 1))

static void resolved(struct worker *w, bool peer, unsigned i, int status,
                     const struct dns_target *t, unsigned n)
{
    struct proxy_worker *p = w->proxy;
    struct upstream *u = peer ? &p->peer[i] : &p->up[i];
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
    /* stay on the target in use while the answer still lists it */
    unsigned cur = 0;
    for (unsigned k = 0; k < n && u->resolved; k++)
        if (netaddr_eq(&t[k].addr, &u->addr) && t[k].proto == u->proto) cur = k;
    if (first || !netaddr_eq(&u->addr, &t[cur].addr) || u->proto != t[cur].proto) {
        char a[NETADDR_STRLEN];
        netaddr_str(&t[cur].addr, a, sizeof a);
        LOG_I("%s %s resolves to %s (%s)%s", what, u->host, a, proto_lc(t[cur].proto),
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
    if (first && !peer) upstream_state(w, i, true);
}

static void resolve_done(struct worker *w, void *arg, int status, const struct dns_target *t,
                         unsigned n)
{
    if (status == -ECANCELED || !w->proxy) return;
    unsigned v = (unsigned)((uintptr_t)arg - 1);
    resolved(w, v >> 8, v & 0xff, status, t, n);
}

/* Starts (or answers from the cache) the RFC 3263 lookup of a named one. */
static void resolve(struct worker *w, bool peer, unsigned i)
{
    struct proxy_worker *p = w->proxy;
    struct upstream *u = peer ? &p->peer[i] : &p->up[i];
    if (!u->named || u->resolving || !w->dns) return;
    struct slice host = u->uri.maddr.len ? u->uri.maddr : u->uri.host;
    struct dns_target out[DNS_MAX_TARGETS];
    unsigned n = 0;
    int rc = dns_resolve(w, host, u->uri.port, u->uri.transport, u->uri.scheme == SIP_SCHEME_SIPS,
                         resolve_done, RESOLVE_ARG(peer, i), out, &n);
    if (rc == 0) {
        u->resolving = true;
        return;
    }
    resolved(w, peer, i, rc < 0 ? rc : 0, rc < 0 ? NULL : out, rc < 0 ? 0 : n);
}

/* Resolves every name now, and again each --oos-check period (answers come
 * from the cache until their TTL ends), for upstreams and peers alike: a
 * peer is refreshed even when no SIP Server is probed. */
static void on_resolve(struct worker *w, struct timer *t)
{
    struct proxy_worker *p = w->proxy;
    bool any = false;
    for (unsigned i = 0; i < p->nup; i++) {
        resolve(w, false, i);
        any |= p->up[i].named;
    }
    for (unsigned i = 0; i < p->npeer; i++) {
        resolve(w, true, i);
        any |= p->peer[i].named;
    }
    if (any) worker_timer_arm(w, t, (uint64_t)(w->cfg->oos_check_s ? w->cfg->oos_check_s : 5) * 1000);
}

static void on_sweep(struct worker *w, struct timer *t);
static void on_probe(struct worker *w, struct timer *t);

static int worker_state_init(struct worker *w)
{
    /* every worker reads the shared maps: it is an RCU (QSBR) reader */
    locmap_thread_register();
    shared_cfg = w->cfg;
    pthread_once(&shared_once, shared_create);
    if (shared.rc < 0) {
        locmap_thread_unregister();
        return shared.rc;
    }
    struct proxy_worker *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    if (txn_table_init(&p->txns, 1u << 20) < 0) {
        free(p);
        return -ENOMEM;
    }
    timer_init(&p->sweep, on_sweep);
    timer_init(&p->probe, on_probe);
    timer_init(&p->resolve, on_resolve);
    p->lim.max_msg_size = w->cfg->max_message_size;
    p->lim.max_headers = MAX_HDRS;
    p->registrar = w->cfg->registrar;
    for (unsigned i = 0; i < w->cfg->nupstream; i++) {
        if (parse_upstream(w->cfg->upstream[i], &p->up[p->nup]) < 0) {
            LOG_E("upstream %s: not a usable sip:/sips: URI", w->cfg->upstream[i]);
            txn_table_cleanup(&p->txns);
            free(p);
            return -EINVAL;
        }
        p->nup++;
    }
    for (unsigned i = 0; i < w->cfg->npeers; i++) {
        if (parse_upstream(w->cfg->peers[i].uri, &p->peer[p->npeer]) < 0) {
            LOG_E("--peer %s=%s: not a usable sip:/sips: URI", w->cfg->peers[i].domain,
                  w->cfg->peers[i].uri);
            txn_table_cleanup(&p->txns);
            free(p);
            return -EINVAL;
        }
        p->npeer++;
    }
    p->loc = shared.loc;
    p->flows = shared.flows;
    p->key = &shared.key;
    w->proxy = p;
    /* names resolve from the loop (the resolver starts after this) */
    worker_timer_arm(w, &p->resolve, 1);
    /* the first check comes one --oos-check period after start */
    if (p->nup)
        worker_timer_arm(w, &p->probe, (uint64_t)(w->cfg->oos_check_s ? w->cfg->oos_check_s : 5) * 1000);
    return 0;
}

int proxy_worker_init(struct worker *w)
{
    /* dns/ first: the proxy resolves from its first timer on */
    int rc = dns_worker_init(w);
    if (rc == 0 && (rc = worker_state_init(w)) < 0) dns_worker_cleanup(w);
    return rc;
}

void proxy_worker_cleanup(struct worker *w)
{
    if (!w->proxy) return;
#define S(f) (unsigned long long)atomic_load_explicit(&w->stats.f, memory_order_relaxed)
    LOG_I("proxy: forwarded %llu, retransmissions absorbed %llu, own replies %llu, "
          "timeouts %llu, new INVITEs over --overload-dialog-rate %llu",
          S(forwarded), S(absorbed), S(own_replies), S(timeouts), S(overload));
#undef S
    timer_cancel(&w->proxy->sweep);
    timer_cancel(&w->proxy->probe);
    timer_cancel(&w->proxy->resolve);
    txn_table_cleanup(&w->proxy->txns);
    free(w->proxy);
    w->proxy = NULL;
    locmap_thread_unregister();
    /* last: lookups still pending end with -ECANCELED, which the
     * callbacks take as "drop it" (they check w->proxy) */
    dns_worker_cleanup(w);
}

void proxy_quiescent(struct worker *w, bool sleeping)
{
    if (sleeping)
        locmap_thread_offline();
    else
        locmap_quiescent();
}

void proxy_awake(struct worker *w)
{
    locmap_thread_online();
}

bool proxy_busy(struct worker *w)
{
    if (dns_busy(w)) return true; /* requests parked on a DNS answer */
    /* in flight = transactions that have not sent a final response */
    struct txn_table *t = &w->proxy->txns;
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i] && t->slots[i]->state != TXN_COMPLETED) return true;
    return false;
}

/* ---- transaction keys and branches ---------------------------------- */

/* Server transaction key (RFC 3261 §17.2.3): branch + sent-by + method, or
 * for RFC 2543 requests Call-ID, CSeq number, From tag, R-URI and top Via.
 * ACK and CANCEL are looked up with INVITE to find the INVITE transaction. */
static size_t server_key(const struct sip_msg *m, const struct sip_via *v, struct slice method,
                         char *buf, size_t cap)
{
    struct buf b = {buf, 0, cap, false};
    if (v->branch.len > 7 && memcmp(v->branch.ptr, "z9hG4bK", 7) == 0) {
        puts_sl(&b, v->branch);
        put(&b, "|", 1);
        puts_sl(&b, v->host_raw);
        put(&b, ":", 1);
        put_u(&b, (unsigned)v->port);
        put(&b, "|", 1);
    } else {
        struct sip_addr from;
        const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM);
        puts_sl(&b, m->call_id);
        put(&b, "|", 1);
        put_u(&b, m->cseq);
        put(&b, "|", 1);
        if (f && sipuri_parse_addr(f->value, &from) == 0) puts_sl(&b, from.tag);
        put(&b, "|", 1);
        puts_sl(&b, m->ruri);
        put(&b, "|", 1);
        puts_sl(&b, sipmsg_hdr(m, SIP_HDR_VIA)->value);
        put(&b, "|", 1);
    }
    puts_sl(&b, method);
    return b.overflow ? 0 : b.len;
}

/* The part of the branch that detects loops (RFC 3261 §16.6 step 8). */
static uint32_t loop_hash(const struct sip_msg *m)
{
    uint64_t h = fnv(FNV_INIT, m->ruri);
    h = fnv(h, m->call_id);
    h ^= m->cseq;
    const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM), *t = sipmsg_hdr(m, SIP_HDR_TO);
    const struct sip_hdr *r = sipmsg_hdr(m, SIP_HDR_ROUTE);
    if (f) h = fnv(h, f->value);
    if (t) h = fnv(h, t->value);
    if (r) h = fnv(h, r->value);
    return (uint32_t)(h ^ (h >> 32));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static bool hex_field(const char *p, unsigned n, uint32_t *out)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++) {
        int d = hexval(p[i]);
        if (d < 0) return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

/* Decodes a branch sipedge made: owner worker, slot, generation, loop hash. */
static bool branch_decode(struct slice br, uint32_t *wk, uint32_t *slot, uint32_t *gen,
                          uint32_t *lh)
{
    if (br.len != BRANCH_LEN || memcmp(br.ptr, BRANCH_PREFIX, BRANCH_PREFIX_LEN) != 0) return false;
    const char *p = br.ptr + BRANCH_PREFIX_LEN;
    return hex_field(p, 2, wk) && hex_field(p + 2, 6, slot) && hex_field(p + 8, 8, gen) &&
           hex_field(p + 16, 8, lh);
}

/* ---- sending on the client side ------------------------------------- */

static void arm_timers(struct worker *w, struct txn *x);

static int send_downstream(struct worker *w, struct txn *x, const char *buf, size_t len)
{
    conn_ref used = CONN_REF_NONE;
    int rc = worker_send(w, x->out_proto, x->out_listener, &x->out_dst, x->out_conn, x->tls_name,
                         buf, len, &used);
    if (rc == 0 && used != CONN_REF_NONE) x->out_conn = used;
    return rc;
}

static void server_send(struct worker *w, struct txn *x, const char *buf, size_t len)
{
    send_back(w, &x->rx, &x->resp_dst, buf, len);
}

/* Stores the response last sent upstream, for retransmitted requests. */
static void keep_response(struct txn *x, const char *buf, size_t len, int status)
{
    char *c = realloc(x->resp, len);
    if (!c) return;
    memcpy(c, buf, len);
    x->resp = c;
    x->resp_len = (uint32_t)len;
    x->resp_status = status;
}

/* A CANCEL or ACK for the forwarded INVITE, built from what we sent
 * (RFC 3261 §9.1, §17.1.1.3): same R-URI, our Via only, Route, From,
 * Call-ID, CSeq number; To from the response for ACK. */
static ssize_t build_hop_request(const struct txn *x, const char *method, struct slice to,
                                 char *out, size_t cap)
{
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sipmsg_limits lim = {OUT_CAP, MAX_HDRS};
    if (sipmsg_parse(x->req, x->req_len, &m, hdrs, &lim, SIPMSG_DATAGRAM) < 0) return -1;
    struct buf b = {out, 0, cap, false};
    putf(&b, "%s ", method);
    puts_sl(&b, m.ruri);
    puts_(&b, " SIP/2.0\r\n");
    const struct sip_hdr *v = sipmsg_hdr(&m, SIP_HDR_VIA);
    puts_(&b, "Via: ");
    puts_sl(&b, v->value);
    puts_(&b, "\r\n");
    for (unsigned i = 0; i < m.nhdrs; i++) {
        const struct sip_hdr *h = &m.hdrs[i];
        if (h->kind == SIP_HDR_ROUTE || h->kind == SIP_HDR_FROM || h->kind == SIP_HDR_CALL_ID ||
            (h->kind == SIP_HDR_TO && to.len == 0)) {
            puts_sl(&b, h->name);
            puts_(&b, ": ");
            puts_sl(&b, h->value);
            puts_(&b, "\r\n");
        }
    }
    if (to.len) {
        puts_(&b, "To: ");
        puts_sl(&b, to);
        puts_(&b, "\r\n");
    }
    putf(&b, "CSeq: %u %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", m.cseq, method);
    return b.overflow ? -1 : (ssize_t)b.len;
}

static void send_cancel(struct worker *w, struct txn *x)
{
    ssize_t n = build_hop_request(x, "CANCEL", SLICE_NULL, w->proxy->aux, OUT_CAP);
    if (n > 0) send_downstream(w, x, w->proxy->aux, (size_t)n);
    x->cancelled = true;
}

/* ---- upstream service state (ARCHITECTURE §5) ----------------------------- */

static void on_probe(struct worker *w, struct timer *t);

/* ---- timers ----------------------------------------------------------- */

/* Frees the lingering transactions whose time is up. One timer for all of
 * them: a list per linger duration is already in expiry order, so finished
 * transactions cost no wheel entry and no wake-up of their own. */
static void on_sweep(struct worker *w, struct timer *t)
{
    struct proxy_worker *p = w->proxy;
    bool more = false;
    for (unsigned k = 0; k < 2; k++) {
        struct txn *x;
        while ((x = p->linger_head[k]) && x->linger_until <= w->now_ms) {
            p->linger_head[k] = x->lnext;
            if (!p->linger_head[k]) p->linger_tail[k] = NULL;
            txn_free(&p->txns, x);
        }
        more |= p->linger_head[k] != NULL;
    }
    if (more) worker_timer_arm(w, &p->sweep, SWEEP_MS);
}

static void linger(struct worker *w, struct txn *x)
{
    struct proxy_worker *p = w->proxy;
    timer_cancel(&x->t_retx);
    timer_cancel(&x->t_timeout);
    if (x->lingering) return;
    /* Timer J / K / D: absorb retransmissions for a while, then forget */
    unsigned k = x->rx.proto != SIP_TRANSPORT_UDP;
    x->lingering = true;
    x->linger_until = w->now_ms + (k ? 1000 : 64 * T1_MS);
    x->lnext = NULL;
    if (p->linger_tail[k])
        p->linger_tail[k]->lnext = x;
    else
        p->linger_head[k] = x;
    p->linger_tail[k] = x;
    if (!timer_armed(&p->sweep)) worker_timer_arm(w, &p->sweep, SWEEP_MS);
}

static void on_retx(struct worker *w, struct timer *t)
{
    struct txn *x = (struct txn *)((char *)t - offsetof(struct txn, t_retx));
    if (x->state == TXN_COMPLETED) {
        /* Timer G: our non-2xx final response until the ACK arrives */
        if (x->ack_seen || !x->resp) return;
        server_send(w, x, x->resp, x->resp_len);
        x->retx_ms = x->retx_ms * 2 < T2_MS ? x->retx_ms * 2 : T2_MS;
        worker_timer_arm(w, &x->t_retx, x->retx_ms);
        return;
    }
    /* Timer A (INVITE) / E (non-INVITE) */
    if (x->invite && x->state == TXN_PROCEEDING) return;
    send_downstream(w, x, x->req, x->req_len);
    if (x->invite || x->state == TXN_TRYING) x->retx_ms *= 2;
    if (!x->invite && x->retx_ms > T2_MS) x->retx_ms = T2_MS;
    if (x->state == TXN_PROCEEDING && !x->invite) x->retx_ms = T2_MS;
    worker_timer_arm(w, &x->t_retx, x->retx_ms);
}

static void on_timeout(struct worker *w, struct timer *t)
{
    struct txn *x = (struct txn *)((char *)t - offsetof(struct txn, t_timeout));
    struct proxy_worker *p = w->proxy;
    if (x->probe) {
        p->up[x->upstream_idx].probing = false;
        upstream_state(w, x->upstream_idx, false);
        x->state = TXN_COMPLETED;
        linger(w, x);
        return;
    }
    if (x->state == TXN_COMPLETED) {
        /* Timer H: no ACK for our non-2xx response */
        linger(w, x);
        return;
    }
    if (x->to_upstream && x->upstream_idx == p->active && !x->provisional_seen)
        upstream_state(w, x->upstream_idx, false); /* the active SIP Server did not answer */
    STAT_INC(w, timeouts);
    if (x->invite && x->provisional_seen && !x->cancelled) send_cancel(w, x); /* Timer C */
    if (!x->invite || !x->resp_status || x->resp_status < 200) {
        /* 408 towards the sender */
        struct sip_msg m;
        struct sip_hdr hdrs[MAX_HDRS];
        struct sipmsg_limits lim = {OUT_CAP, MAX_HDRS};
        /* rebuild the reply from our forwarded copy minus our own Via */
        if (sipmsg_parse(x->req, x->req_len, &m, hdrs, &lim, SIPMSG_DATAGRAM) > 0 &&
            m.count[SIP_HDR_VIA] > 1) {
            hdrs[m.first[SIP_HDR_VIA]].kind = SIP_HDR_OTHER; /* skip our Via */
            /* the sender's Via in our copy already carries received/rport,
             * so build_reply adds neither a second time */
            ssize_t n = build_reply(&m, &x->rx, 408, NULL, NULL, p->aux, OUT_CAP);
            if (n > 0) {
                server_send(w, x, p->aux, (size_t)n);
                keep_response(x, p->aux, (size_t)n, 408);
            }
        }
    }
    x->state = TXN_COMPLETED;
    x->ack_seen = true; /* no Timer G for a 408 we made; a late ACK is absorbed */
    linger(w, x);
}

static void arm_timers(struct worker *w, struct txn *x)
{
    if (x->out_proto == SIP_TRANSPORT_UDP) {
        x->retx_ms = T1_MS;
        worker_timer_arm(w, &x->t_retx, T1_MS);
    }
    worker_timer_arm(w, &x->t_timeout, 64 * T1_MS); /* Timer B / F */
}

/* Records whether upstream i answered, and picks the one in service: the
 * active one while it answers, else the other one if it does. */
static void upstream_state(struct worker *w, unsigned i, bool up)
{
    struct proxy_worker *p = w->proxy;
    struct upstream *u = &p->up[i];
    if (!up && u->ntargets > 1) {
        /* a name with several targets: the next one (RFC 3263 §4.3); only
         * when every one of them failed in turn is the upstream down */
        char a[NETADDR_STRLEN], b[NETADDR_STRLEN];
        netaddr_str(&u->addr, a, sizeof a);
        u->cur = (uint8_t)((u->cur + 1) % u->ntargets);
        u->addr = u->targets[u->cur].addr;
        u->proto = u->targets[u->cur].proto;
        u->port = netaddr_port(&u->addr);
        netaddr_str(&u->addr, b, sizeof b);
        LOG_W("upstream %s: target %s is not answering, next: %s", u->host, a, b);
        if (u->cur != 0) return;
    }
    if (u->down == !up) return;
    u->down = !up;
    if (!up)
        LOG_W("upstream %s:%d (%s) is not answering", u->host, u->port, i ? "backup" : "primary");
    else
        LOG_I("upstream %s:%d (%s) is in service", u->host, u->port, i ? "backup" : "primary");
    unsigned other = i ^ 1;
    if (!up && i == p->active && p->nup == 2 && !p->up[other].down) {
        p->active = other;
        LOG_W("switching to upstream %s:%d", p->up[other].host, p->up[other].port);
    } else if (up && p->up[p->active].down) {
        p->active = i;
        LOG_W("switching to upstream %s:%d", u->host, u->port);
    }
    STAT_SET(w, upstream_active, p->active);
    STAT_SET(w, upstream_down, (uint64_t)p->up[0].down | (uint64_t)p->up[1].down << 1);
}

static bool upstream_in_service(const struct proxy_worker *p)
{
    return p->nup > 0 && !p->up[p->active].down;
}

/* Sends an OPTIONS to upstream i over its own transport, as a client
 * transaction of this worker (its answer comes back by our branch). */
static void send_probe(struct worker *w, unsigned i)
{
    struct proxy_worker *p = w->proxy;
    struct upstream *u = &p->up[i];
    char key[64];
    if (!u->resolved) return;
    int kn = snprintf(key, sizeof key, "probe|%u|%u", i, ++p->probe_seq);
    int l = pick_listener(w, u->proto, u->addr.sa.sa_family);
    if (l < 0) l = pick_listener(w, u->proto, AF_UNSPEC);
    if (l < 0 || u->probing) return;
    struct txn *x = txn_new(&p->txns, key, (size_t)kn);
    if (!x) return;
    timer_init(&x->t_retx, on_retx);
    timer_init(&x->t_timeout, on_timeout);
    x->probe = true;
    x->method = SIP_METHOD_OPTIONS;
    x->state = TXN_TRYING;
    x->upstream_idx = (uint8_t)i;
    x->out_proto = u->proto;
    x->out_listener = u->proto == SIP_TRANSPORT_UDP ? l | WORKER_SEND_PRIVATE : -1;
    x->out_dst = u->addr;
    if (u->tls_name[0]) x->tls_name = strdup(u->tls_name);
    const char *host = worker_listener_host(w, (unsigned)l);
    int port = u->proto == SIP_TRANSPORT_UDP ? worker_via_port(w, (unsigned)l)
                                             : worker_listener_port(w, (unsigned)l);
    char uh[NETADDR_STRLEN];
    netaddr_str(&u->addr, uh, sizeof uh);
    x->branch_len = (uint8_t)snprintf(x->branch, sizeof x->branch, BRANCH_PREFIX "%02x%06x%08x%08x",
                                      w->id & 0xff, x->slot & 0xffffff, x->gen, 0u);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "OPTIONS sip:%s;transport=%s SIP/2.0\r\n"
                     "Via: SIP/2.0/%s %s:%d;branch=%s\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:sipedge@%s:%d>;tag=se%02x%08x\r\n"
                     "To: <sip:%s>\r\n"
                     "Call-ID: probe-%02x-%08x@%s\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "User-Agent: sipedge/" SIPEDGE_VERSION "\r\n"
                     "Content-Length: 0\r\n\r\n",
                     uh, proto_lc(u->proto), sipuri_transport_str(u->proto), host, port, x->branch,
                     host, port, w->id & 0xff, p->probe_seq, uh, w->id & 0xff, p->probe_seq, host,
                     p->probe_seq);
    if (n < 0 || (size_t)n >= sizeof req || !(x->req = malloc((size_t)n))) {
        txn_free(&p->txns, x);
        return;
    }
    memcpy(x->req, req, (size_t)n);
    x->req_len = (uint32_t)n;
    u->probing = true;
    if (send_downstream(w, x, x->req, x->req_len) < 0) {
        u->probing = false;
        upstream_state(w, i, false);
        x->state = TXN_COMPLETED;
        linger(w, x);
        return;
    }
    arm_timers(w, x);
    /* a probe waits at most one --oos-force period, not Timer F's 32 s */
    unsigned wait_s = w->cfg->oos_force_s ? w->cfg->oos_force_s : 5;
    worker_timer_arm(w, &x->t_timeout, (uint64_t)(wait_s < 32 ? wait_s : 32) * 1000);
}

/* Every --oos-check seconds the active upstream is asked; while it does not
 * answer, both are asked every --oos-force seconds. */
static void on_probe(struct worker *w, struct timer *t)
{
    struct proxy_worker *p = w->proxy;
    bool trouble = p->up[p->active].down;
    for (unsigned i = 0; i < p->nup; i++)
        if (i == p->active || trouble || p->up[i].down) send_probe(w, i);
    unsigned s = trouble ? w->cfg->oos_force_s : w->cfg->oos_check_s;
    worker_timer_arm(w, &p->probe, (uint64_t)(s ? s : 5) * 1000);
}

/* ---- the registrar --------------------------------------------------- */

static void do_register(struct worker *w, const struct rx_info *rx, const struct sip_msg *m)
{
    struct proxy_worker *p = w->proxy;
    const struct sip_hdr *to = sipmsg_hdr(m, SIP_HDR_TO);
    struct sip_addr toa;
    char aor[LOCMAP_AOR_MAX];
    if (sipuri_parse_addr(to->value, &toa) < 0) {
        reply(w, rx, m, 400, "Bad To", NULL);
        return;
    }
    size_t aor_len = locmap_aor_key(toa.uri_text, aor, sizeof aor);
    if (aor_len == 0) {
        /* RFC 3261 §10.3: an AOR must be a sip or sips URI */
        reply(w, rx, m, 400, "AOR Must Be A SIP URI", NULL);
        return;
    }
    uint64_t dflt_exp = 3600;
    const struct sip_hdr *eh = sipmsg_hdr(m, SIP_HDR_EXPIRES);
    if (eh) {
        uint64_t v;
        if (!slice_to_u64(eh->value, UINT32_MAX, &v)) {
            reply(w, rx, m, 400, "Bad Expires", NULL);
            return;
        }
        dflt_exp = v;
    }
    struct locmap_binding add[LOCMAP_MAX_BINDINGS];
    unsigned nadd = 0;
    bool star = false;
    for (unsigned i = 0; i < m->count[SIP_HDR_CONTACT]; i++) {
        const struct sip_hdr *c = sipmsg_hdr_nth(m, SIP_HDR_CONTACT, i);
        struct sip_addr ca;
        if (sipuri_parse_addr(c->value, &ca) < 0) {
            reply(w, rx, m, 400, "Bad Contact", NULL);
            return;
        }
        if (ca.star) {
            /* RFC 3261 §10.3 step 6: '*' only alone and with Expires: 0 */
            if (m->count[SIP_HDR_CONTACT] != 1 || !eh || dflt_exp != 0) {
                reply(w, rx, m, 400, "Invalid Wildcard Contact", NULL);
                return;
            }
            star = true;
            break;
        }
        if (nadd == LOCMAP_MAX_BINDINGS || ca.uri_text.len > LOCMAP_CONTACT_MAX) {
            reply(w, rx, m, 403, "Too Many Contacts", NULL);
            return;
        }
        struct locmap_binding *b = &add[nadd++];
        memset(b, 0, sizeof *b);
        memcpy(b->contact, ca.uri_text.ptr, ca.uri_text.len);
        b->contact_len = (uint16_t)ca.uri_text.len;
        uint64_t exp = dflt_exp;
        if (ca.expires.len && !slice_to_u64(ca.expires, UINT32_MAX, &exp)) {
            reply(w, rx, m, 400, "Bad Contact Expires", NULL);
            return;
        }
        b->expires_ms = exp ? w->now_ms + exp * 1000 : 0;
        b->q = 1000;
        if (ca.q.len) {
            /* q = 0.xxx or 1[.000] */
            unsigned q = 0, digits = 0;
            const char *s = ca.q.ptr;
            q = (unsigned)(s[0] - '0') * 1000;
            for (size_t k = 2; k < ca.q.len && digits < 3; k++, digits++)
                q += (unsigned)(s[k] - '0') * (digits == 0 ? 100 : digits == 1 ? 10 : 1);
            b->q = (uint16_t)(q > 1000 ? 1000 : q);
        }
        b->proto = rx->proto;
        b->conn = rx->proto == SIP_TRANSPORT_UDP ? 0 : rx->conn;
        b->src = rx->src;
    }
    struct locmap_binding cur[LOCMAP_MAX_BINDINGS];
    unsigned ncur = 0;
    int rc =
        locmap_update(p->loc, slice_make(aor, aor_len), star, add, nadd, w->now_ms, cur, &ncur);
    if (rc == -ENOSPC) {
        reply(w, rx, m, 403, "Too Many Bindings", NULL);
        return;
    }
    if (rc < 0) {
        reply(w, rx, m, 500, NULL, NULL);
        return;
    }
    char extra[LOCMAP_MAX_BINDINGS * (LOCMAP_CONTACT_MAX + 32)];
    struct buf b = {extra, 0, sizeof extra - 1, false};
    for (unsigned i = 0; i < ncur; i++) {
        uint64_t left = cur[i].expires_ms > w->now_ms ? (cur[i].expires_ms - w->now_ms) / 1000 : 0;
        putf(&b, "Contact: <%.*s>;expires=%llu\r\n", (int)cur[i].contact_len, cur[i].contact,
             (unsigned long long)left);
    }
    extra[b.len] = 0;
    reply(w, rx, m, 200, NULL, extra);
}

/* ---- requests -------------------------------------------------------- */

struct route_plan {
    uint8_t proto;
    struct netaddr dst;
    conn_ref conn;
    bool to_upstream;
    unsigned upstream_idx;
    struct slice new_ruri; /* when non-empty, replaces the Request-URI */
    char ruri_buf[LOCMAP_CONTACT_MAX];
    unsigned npop;      /* our own Route entries on top, to remove */
    char tls_name[256]; /* identity a TLS next hop must prove (a resolved name) */
    bool has_flow;      /* a popped Route carried a valid flow token */
    uint64_t flow_conn;
    uint8_t flow_proto;
    struct netaddr flow_peer;
};

/* Did rx come from this SIP Server or peer proxy? */
static bool from_host(const struct rx_info *rx, const struct upstream *u)
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

/* From the SIP Server or a peer site (trusted: routed by Request-URI), as
 * opposed to an endpoint. */
static bool from_upstream(const struct worker *w, const struct rx_info *rx)
{
    const struct proxy_worker *p = w->proxy;
    for (unsigned i = 0; i < p->nup; i++)
        if (from_host(rx, &p->up[i])) return true;
    for (unsigned i = 0; i < p->npeer; i++)
        if (from_host(rx, &p->peer[i])) return true;
    return false;
}

/* The --peer whose DOMAIN is the Request-URI's host, or -1. */
static int peer_for(const struct worker *w, struct slice host)
{
    for (unsigned i = 0; i < w->proxy->npeer; i++) {
        const char *d = w->cfg->peers[i].domain;
        if (slice_case_eq(host, slice_make(d, strlen(d)))) return (int)i;
    }
    return -1;
}

/* RFC 5626: the UA said "Supported: outbound". */
static bool supports_outbound(const struct sip_msg *m)
{
    for (unsigned i = 0; i < m->count[SIP_HDR_SUPPORTED]; i++)
        if (slice_case_eq_lit(sipmsg_hdr_nth(m, SIP_HDR_SUPPORTED, i)->value, "outbound"))
            return true;
    return false;
}

static bool has_to_tag(const struct sip_msg *m)
{
    struct sip_addr a;
    const struct sip_hdr *t = sipmsg_hdr(m, SIP_HDR_TO);
    return t && sipuri_parse_addr(t->value, &a) == 0 && a.tag.ptr != NULL;
}

/* INVITE, SUBSCRIBE or REFER outside a dialog: gets our Record-Route. */
static bool creates_dialog(const struct sip_msg *m)
{
    return (m->method == SIP_METHOD_INVITE || m->method == SIP_METHOD_SUBSCRIBE ||
            m->method == SIP_METHOD_REFER) &&
           !has_to_tag(m);
}

/* Builds and sends the forwarded request; creates the transaction unless
 * stateless (ACK). */
static void forward_request(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                            const char *buf, size_t len, struct route_plan *rp, const char *key,
                            size_t key_len)
{
    struct proxy_worker *p = w->proxy;
    if (netaddr_is_forbidden(&rp->dst)) {
        reply(w, rx, m, 403, "Forbidden Next Hop", NULL);
        return;
    }
    int fam = rp->dst.sa.sa_family;
    int out_l = pick_listener(w, rp->proto, fam);
    if (out_l < 0) out_l = pick_listener(w, rp->proto, AF_UNSPEC);
    if (out_l < 0) {
        reply(w, rx, m, 503, "No Listener For Transport", NULL);
        return;
    }
    bool stateless = m->method == SIP_METHOD_ACK;
    struct txn *x = NULL;
    if (!stateless) {
        x = txn_new(&p->txns, key, key_len);
        if (!x) {
            reply(w, rx, m, 503, "Transaction Table Full", "Retry-After: 5\r\n");
            return;
        }
        timer_init(&x->t_retx, on_retx);
        timer_init(&x->t_timeout, on_timeout);
        x->method = m->method;
        x->invite = m->method == SIP_METHOD_INVITE;
        x->rx = *rx;
        response_dst(m, rx, &x->resp_dst);
        x->out_proto = rp->proto;
        /* over UDP the request leaves from, and its Via names, this
         * worker's private port: the responses come back to this worker */
        x->out_listener = rp->proto == SIP_TRANSPORT_UDP ? out_l | WORKER_SEND_PRIVATE : -1;
        x->out_dst = rp->dst;
        x->out_conn = rp->conn;
        x->to_upstream = rp->to_upstream;
        x->upstream_idx = (uint8_t)rp->upstream_idx;
        if (rp->tls_name[0]) x->tls_name = strdup(rp->tls_name);
    }

    /* our Via */
    char via[512];
    const char *host = worker_listener_host(w, (unsigned)out_l);
    int port = x && rp->proto == SIP_TRANSPORT_UDP ? worker_via_port(w, (unsigned)out_l)
                                                   : worker_listener_port(w, (unsigned)out_l);
    uint32_t lh = loop_hash(m);
    struct buf vb = {via, 0, sizeof via, false};
    puts_(&vb, "Via: SIP/2.0/");
    puts_(&vb, sipuri_transport_str(rp->proto));
    put(&vb, " ", 1);
    puts_(&vb, host);
    put(&vb, ":", 1);
    put_u(&vb, (unsigned)port);
    puts_(&vb, ";branch=");
    if (x) {
        struct buf bb = {x->branch, 0, sizeof x->branch, false};
        put(&bb, BRANCH_PREFIX, BRANCH_PREFIX_LEN);
        put_hex(&bb, w->id & 0xff, 2);
        put_hex(&bb, x->slot & 0xffffff, 6);
        put_hex(&bb, x->gen, 8);
        put_hex(&bb, lh, 8);
        x->branch_len = (uint8_t)bb.len;
        put(&vb, x->branch, bb.len);
    } else {
        /* stateless: derived from the incoming branch, stable across retransmissions */
        struct sip_via tv;
        sipuri_parse_via(sipmsg_hdr(m, SIP_HDR_VIA)->value, &tv);
        puts_(&vb, "z9hG4bKSa");
        put_hex(&vb, fnv(FNV_INIT, tv.branch), 16);
    }
    put(&vb, "\r\n", 2);
    int vn = vb.overflow ? 0 : (int)vb.len;

    struct rewrite rw;
    rewrite_init(&rw, buf, m->msg_len < len ? m->msg_len : len);
    if (m->body.len < (size_t)(buf + len - m->body.ptr) && rx->proto == SIP_TRANSPORT_UDP) {
        /* datagram bytes beyond Content-Length are not forwarded (RFC 4475 dblreq) */
        size_t end = sipmsg_off(buf, m->body) + m->body.len;
        rewrite_init(&rw, buf, end);
    }
    rewrite_add_top(&rw, m, slice_make(via, (size_t)vn));

    /* received / rport on the sender's Via */
    const struct sip_hdr *tvh = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via tv;
    if (sipuri_parse_via(tvh->value, &tv) == 0) {
        char ip[NETADDR_STRLEN];
        size_t iplen = netaddr_ip_str(&rx->src, ip, sizeof ip);
        bool differs = !slice_eq(tv.host, slice_make(ip, iplen));
        if ((differs || tv.has_rport) && tv.received.len == 0)
            rewrite_via_received(&rw, tvh, slice_make(ip, iplen),
                                 tv.has_rport ? netaddr_port(&rx->src) : -1);
        else if (tv.has_rport)
            rewrite_via_received(&rw, tvh, SLICE_NULL, netaddr_port(&rx->src));
    }

    rewrite_dec_max_forwards(&rw, m, 70);
    rewrite_remove_top(&rw, m, SIP_HDR_ROUTE, rp->npop);
    if (rp->new_ruri.len) rewrite_splice(&rw, sipmsg_off(buf, m->ruri), m->ruri.len, rp->new_ruri);

    /* Record-Route on dialog-creating requests; two entries when the
     * transport or interface changes (RFC 5658): the top one faces the next
     * hop, the second faces the sender. */
    /* A flow token names the connection the endpoint's request came on, so
     * later requests routed through this entry go back over that very
     * connection (RFC 5626 §5.2 style). Only for requests from endpoints. */
    char token[FLOWTOKEN_STR_LEN + 1];
    const char *tok = NULL;
    bool from_endpoint = !from_upstream(w, rx);
    if (from_endpoint && (m->method == SIP_METHOD_REGISTER || rx->proto != SIP_TRANSPORT_UDP)) {
        size_t tn = flowtoken_encode(p->key, rx->conn, rx->proto, &rx->src, token, sizeof token);
        token[tn] = 0;
        tok = tn ? token : NULL;
    }
    bool ob = supports_outbound(m);

    char rr[768];
    int rrn = 0;
    bool dialog_creating = creates_dialog(m);
    if (dialog_creating) {
        int in_l = rx->listener;
        bool twice = in_l != out_l || rx->proto != rp->proto;
        /* the top entry faces the next hop, the second faces the sender */
        rrn = own_uri_line(w, "Record-Route", out_l, rp->proto, twice ? NULL : tok, false, rr,
                           sizeof rr);
        if (twice)
            rrn += own_uri_line(w, "Record-Route", in_l, rx->proto, tok, false, rr + rrn,
                                sizeof rr - (size_t)rrn);
        rewrite_add_before(&rw, m, SIP_HDR_RECORD_ROUTE, slice_make(rr, (size_t)rrn));
    }
    /* Path on a REGISTER relayed to the SIP Server (RFC 3327) */
    char path[512];
    if (m->method == SIP_METHOD_REGISTER && rp->to_upstream) {
        int pn = own_uri_line(w, "Path", out_l, rp->proto, tok, ob, path, sizeof path);
        rewrite_add_before(&rw, m, SIP_HDR_PATH, slice_make(path, (size_t)pn));
    }

    ssize_t n = rewrite_build(&rw, p->out, OUT_CAP);
    if (n < 0 || (size_t)n > w->cfg->max_message_size) {
        if (x) txn_free(&p->txns, x);
        reply(w, rx, m, 513, NULL, NULL);
        return;
    }
    if (x) {
        x->req = malloc((size_t)n);
        if (!x->req) {
            txn_free(&p->txns, x);
            reply(w, rx, m, 500, NULL, NULL);
            return;
        }
        memcpy(x->req, p->out, (size_t)n);
        x->req_len = (uint32_t)n;
        if (x->invite) {
            ssize_t tn = build_reply(m, rx, 100, NULL, NULL, p->aux, OUT_CAP);
            if (tn > 0) {
                server_send(w, x, p->aux, (size_t)tn);
                keep_response(x, p->aux, (size_t)tn, 100);
            }
        }
        int rc = send_downstream(w, x, x->req, x->req_len);
        if (rc < 0) {
            LOG_RL(LOG_WARN, "forwarding failed: %s", strerror(-rc));
            int code = rp->conn != CONN_REF_NONE ? 480 : 503;
            ssize_t en = build_reply(m, rx, code, "Next Hop Unreachable", NULL, p->aux, OUT_CAP);
            if (en > 0) {
                server_send(w, x, p->aux, (size_t)en);
                keep_response(x, p->aux, (size_t)en, code);
            }
            x->state = TXN_COMPLETED;
            x->ack_seen = true;
            linger(w, x);
            return;
        }
        arm_timers(w, x);
    } else {
        conn_ref used;
        int out_listener = rp->proto == SIP_TRANSPORT_UDP ? out_l : -1;
        worker_send(w, rp->proto, out_listener, &rp->dst, rp->conn,
                    rp->tls_name[0] ? rp->tls_name : NULL, p->out, (size_t)n, &used);
    }
    STAT_INC(w, forwarded);
}

static bool unknown_proxy_require(const struct sip_msg *m, char *extra, size_t cap)
{
    if (!m->count[SIP_HDR_PROXY_REQUIRE]) return false;
    struct buf b = {extra, 0, cap - 1, false};
    for (unsigned i = 0; i < m->count[SIP_HDR_PROXY_REQUIRE]; i++) {
        const struct sip_hdr *h = sipmsg_hdr_nth(m, SIP_HDR_PROXY_REQUIRE, i);
        puts_(&b, "Unsupported: ");
        puts_sl(&b, h->value);
        puts_(&b, "\r\n");
    }
    extra[b.overflow ? 0 : b.len] = 0;
    return true;
}

static bool via_loops(const struct worker *w, const struct sip_msg *m, uint32_t lh)
{
    for (unsigned i = m->first[SIP_HDR_VIA]; i < m->nhdrs; i++) {
        const struct sip_hdr *h = &m->hdrs[i];
        if (h->kind != SIP_HDR_VIA) continue;
        struct sip_via v;
        uint32_t wk, slot, gen, vlh;
        if (sipuri_parse_via(h->value, &v) == 0 && is_local(w, v.host, v.port) &&
            branch_decode(v.branch, &wk, &slot, &gen, &vlh) && vlh == lh)
            return true;
    }
    return false;
}

static void process(struct worker *w, const struct rx_info *rx, char *buf, size_t len);

/* --overload-dialog-rate N: at most N new INVITEs per second (of the
 * monotonic clock) over all workers. The count restarts when the second
 * changes; two workers crossing the boundary together may each restart it,
 * so a second can admit a few more than N. */
static bool dialog_rate_admits(const struct worker *w)
{
    unsigned limit = w->cfg->overload_dialog_rate;
    if (limit == 0) return true;
    uint64_t sec = w->now_ms / 1000;
    uint64_t cur = atomic_load_explicit(&shared.ovl_second, memory_order_relaxed);
    if (cur != sec && atomic_compare_exchange_strong(&shared.ovl_second, &cur, sec))
        atomic_store_explicit(&shared.ovl_count, 0, memory_order_relaxed);
    return atomic_fetch_add_explicit(&shared.ovl_count, 1, memory_order_relaxed) < limit;
}

/* Next hop: the SIP Server in service. */
static void plan_upstream(const struct proxy_worker *p, struct route_plan *rp)
{
    rp->to_upstream = true;
    rp->upstream_idx = p->active;
    rp->proto = p->up[p->active].proto;
    rp->dst = p->up[p->active].addr;
    if (p->up[p->active].tls_name[0])
        memcpy(rp->tls_name, p->up[p->active].tls_name, sizeof rp->tls_name);
}

/* A request waiting for its next hop's DNS answer: a private copy. */
struct dns_park {
    struct rx_info rx;
    size_t len;
    char buf[];
};

/* The answer came: the request is processed again from the start, and its
 * next_hop() takes these targets (answers with TTL 0 are not cached). */
static void dns_done(struct worker *w, void *arg, int status, const struct dns_target *t,
                     unsigned n)
{
    struct dns_park *pk = arg;
    struct proxy_worker *p = w->proxy;
    if (pk && status != -ECANCELED && p) {
        p->dns_replay = true;
        p->dns_status = status;
        p->dns_ntargets = status == 0 ? (n < DNS_MAX_TARGETS ? n : DNS_MAX_TARGETS) : 0;
        if (p->dns_ntargets) memcpy(p->dns_targets, t, p->dns_ntargets * sizeof *t);
        process(w, &pk->rx, pk->buf, pk->len);
        p->dns_replay = false;
    }
    free(pk);
}

/* Where a URI sends the request (RFC 3263). Returns 0 with rp->proto/dst
 * (and tls_name for a TLS name) set, 1 when the request was parked until the
 * DNS answer (the caller stops), or <0: -ENOENT no such name, other errors. */
static int next_hop(struct worker *w, const struct rx_info *rx, const char *buf, size_t len,
                    const struct sip_uri *u, struct route_plan *rp)
{
    struct proxy_worker *p = w->proxy;
    rp->tls_name[0] = 0;
    int rc = uri_target(u, &rp->proto, &rp->dst);
    if (rc != -EHOSTUNREACH || (u->scheme != SIP_SCHEME_SIP && u->scheme != SIP_SCHEME_SIPS))
        return rc;
    struct slice host = u->maddr.len ? u->maddr : u->host;
    struct dns_target out[DNS_MAX_TARGETS];
    const struct dns_target *t = out;
    unsigned n = 0;
    if (p->dns_replay) {
        /* the answer this request was parked for */
        if (p->dns_status < 0) return p->dns_status;
        t = p->dns_targets;
        n = p->dns_ntargets;
    } else {
        struct dns_park *pk = malloc(sizeof *pk + len);
        if (!pk) return -ENOMEM;
        pk->rx = *rx;
        pk->len = len;
        memcpy(pk->buf, buf, len);
        rc = dns_resolve(w, host, u->port, u->transport, u->scheme == SIP_SCHEME_SIPS, dns_done, pk,
                         out, &n);
        if (rc == 0) return 1;
        free(pk);
        if (rc < 0) return rc;
    }
    if (n == 0) return -ENOENT;
    rp->proto = t[0].proto;
    rp->dst = t[0].addr;
    if (rp->proto == SIP_TRANSPORT_TLS && host.len < sizeof rp->tls_name) {
        memcpy(rp->tls_name, host.ptr, host.len);
        rp->tls_name[host.len] = 0;
    }
    return 0;
}

static void handle_request(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                           const char *buf, size_t len)
{
    struct proxy_worker *p = w->proxy;
    enum sip_err e = sipmsg_validate(m);
    if (e) {
        STAT_INC(w, bad_msgs);
        LOG_RL(LOG_INFO, "rejected %.*s: %s", (int)m->method_name.len, m->method_name.ptr,
               sipmsg_err_str(e));
        if (sipmsg_hdr(m, SIP_HDR_VIA) == NULL) return; /* nowhere to answer */
        int code = sipmsg_err_status(e);
        if (e == SIP_ERR_CSEQ_METHOD && m->method == SIP_METHOD_OTHER) code = 501;
        reply(w, rx, m, code, sipmsg_err_str(e), NULL);
        return;
    }
    struct sip_uri ruri;
    sipuri_parse(m->ruri, &ruri); /* validated above */
    struct sip_via tv;
    sipuri_parse_via(sipmsg_hdr(m, SIP_HDR_VIA)->value, &tv);

    char key[1024];
    struct slice kmethod = m->method_name;
    if (m->method == SIP_METHOD_ACK || m->method == SIP_METHOD_CANCEL)
        kmethod = SLICE_LIT("INVITE");
    size_t key_len = server_key(m, &tv, kmethod, key, sizeof key);
    if (key_len == 0) {
        reply(w, rx, m, 400, "Transaction Key Too Long", NULL);
        return;
    }

    if (m->method == SIP_METHOD_ACK) {
        struct txn *x = txn_find_key(&p->txns, key, key_len);
        if (x && x->resp_status >= 300) {
            /* ACK for our non-2xx: ends Timer G, absorbed (RFC 3261 §17.2.1) */
            x->ack_seen = true;
            timer_cancel(&x->t_retx);
            STAT_INC(w, absorbed);
            return;
        }
    } else if (m->method == SIP_METHOD_CANCEL) {
        struct txn *x = txn_find_key(&p->txns, key, key_len);
        if (!x) {
            reply(w, rx, m, 481, NULL, NULL);
            return;
        }
        reply(w, rx, m, 200, NULL, NULL);
        if (x->state == TXN_COMPLETED || x->cancelled) return;
        if (x->provisional_seen)
            send_cancel(w, x);
        else
            x->cancel_pending = true;
        return;
    } else {
        struct txn *x = txn_find_key(&p->txns, key, key_len);
        if (x) {
            /* a retransmission: resend what we last sent, if anything */
            STAT_INC(w, absorbed);
            if (x->resp) server_send(w, x, x->resp, x->resp_len);
            return;
        }
    }

    /* A stream endpoint's flow is recorded when it REGISTERs and when it
     * starts a dialog: both hand out its flow token (Path, Record-Route), and
     * a token is honoured only while its flow is in the map, so an endpoint
     * that never registers (a gateway) still gets its in-dialog requests.
     * This worker owns rx->conn: it is the one writer of its entry. */
    if (rx->proto != SIP_TRANSPORT_UDP && !from_upstream(w, rx)) {
        bool reg = m->method == SIP_METHOD_REGISTER;
        struct flow_entry fe = {.conn = rx->conn,
                                .proto = rx->proto,
                                .peer = rx->src,
                                .register_ms = reg ? w->now_ms : 0},
                          cur;
        if (reg || (creates_dialog(m) &&
                    !(flowmap_lookup(p->flows, rx->proto, &rx->src, &cur) && cur.conn == rx->conn)))
            flowmap_set(p->flows, &fe);
    }
    bool local_ruri = uri_is_local(w, &ruri);
    if (ruri.scheme == SIP_SCHEME_OTHER) {
        reply(w, rx, m, 416, NULL, NULL);
        return;
    }
    if (m->max_forwards == 0) {
        if (m->method == SIP_METHOD_OPTIONS && local_ruri && ruri.user.len == 0)
            reply(w, rx, m, 200, NULL, "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n");
        else
            reply(w, rx, m, 483, NULL, NULL);
        return;
    }
    char extra[1024];
    if (unknown_proxy_require(m, extra, sizeof extra)) {
        reply(w, rx, m, 420, NULL, extra);
        return;
    }
    uint32_t lh = loop_hash(m);
    if (via_loops(w, m, lh)) {
        reply(w, rx, m, 482, NULL, NULL);
        return;
    }
    if (m->method == SIP_METHOD_INVITE && !has_to_tag(m) && !p->dns_replay &&
        !dialog_rate_admits(w)) {
        STAT_INC(w, overload);
        LOG_RL(LOG_WARN, "new INVITE turned away: above --overload-dialog-rate %u/s",
               w->cfg->overload_dialog_rate);
        reply(w, rx, m, 503, "Overloaded", NULL);
        return;
    }

    struct route_plan rp;
    memset(&rp, 0, sizeof rp);
    /* 1. our own Route entries (one, or two after a double Record-Route) */
    for (unsigned i = 0; i < 2 && i < m->count[SIP_HDR_ROUTE]; i++) {
        const struct sip_hdr *r = sipmsg_hdr_nth(m, SIP_HDR_ROUTE, i);
        struct sip_addr ra;
        if (sipuri_parse_addr(r->value, &ra) < 0) {
            reply(w, rx, m, 400, "Bad Route", NULL);
            return;
        }
        if (!uri_is_local(w, &ra.uri)) break;
        rp.npop++;
        if (ra.uri.user.len && !rp.has_flow) {
            switch (flowtoken_decode(p->key, ra.uri.user, &rp.flow_conn, &rp.flow_proto,
                                     &rp.flow_peer)) {
            case FLOWTOKEN_OK:
                rp.has_flow = true;
                break;
            case FLOWTOKEN_FORGED:
                STAT_INC(w, bad_msgs);
                LOG_RL(LOG_WARN, "forged flow token in Route");
                reply(w, rx, m, 403, "Invalid Flow Token", NULL);
                return;
            case FLOWTOKEN_MALFORMED:
                break; /* a user part that is not a token of ours */
            }
        }
    }
    /* 1b. a flow token: deliver over that flow, unless the request comes from
     * the flow's own endpoint (then the token is just our Record-Route) */
    if (rp.has_flow && !(rx->proto == rp.flow_proto && netaddr_eq(&rx->src, &rp.flow_peer))) {
        if (m->count[SIP_HDR_ROUTE] > rp.npop) {
            /* more Routes after ours: loose routing continues past us */
        } else if (rp.flow_proto == SIP_TRANSPORT_UDP) {
            rp.proto = SIP_TRANSPORT_UDP;
            rp.dst = rp.flow_peer;
            forward_request(w, rx, m, buf, len, &rp, key, key_len);
            return;
        } else {
            /* The token names one connection: a newer connection from the
             * same address (the phone reconnected, or another device behind
             * the same NAT binding) is another flow, with its own token, so a
             * stale token gets 430 and never reaches it (RFC 5626 §5.3). */
            struct flow_entry fe;
            if (!flowmap_lookup(p->flows, rp.flow_proto, &rp.flow_peer, &fe) ||
                fe.conn != rp.flow_conn) {
                reply(w, rx, m, 430, NULL, NULL);
                return;
            }
            rp.proto = rp.flow_proto;
            rp.dst = rp.flow_peer;
            rp.conn = fe.conn;
            forward_request(w, rx, m, buf, len, &rp, key, key_len);
            return;
        }
    }
    /* 2. a remaining Route is the next hop */
    bool upstream_src = from_upstream(w, rx);
    if (m->count[SIP_HDR_ROUTE] > rp.npop) {
        const struct sip_hdr *r = sipmsg_hdr_nth(m, SIP_HDR_ROUTE, rp.npop);
        struct sip_addr ra;
        int rc = sipuri_parse_addr(r->value, &ra) == 0 ? next_hop(w, rx, buf, len, &ra.uri, &rp)
                                                       : -EINVAL;
        if (rc == 1) return; /* parked until the DNS answer */
        if (rc == 0 && pick_listener(w, rp.proto, rp.dst.sa.sa_family) >= 0) {
            forward_request(w, rx, m, buf, len, &rp, key, key_len);
            return;
        }
        /* a Route we cannot reach (unknown name, no listener of its family):
         * an endpoint's request still goes to the SIP Server, which knows
         * the route set; a request from the SIP Server cannot be delivered */
        rp.tls_name[0] = 0;
        if (upstream_src || p->nup == 0) {
            reply(w, rx, m, 503, "Unroutable Route", NULL);
            return;
        }
        plan_upstream(p, &rp);
        forward_request(w, rx, m, buf, len, &rp, key, key_len);
        return;
    }
    /* 3. addressed to sipedge itself */
    if (local_ruri && ruri.user.len == 0) {
        if (m->method == SIP_METHOD_OPTIONS) {
            reply(w, rx, m, 200, NULL, "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n");
            return;
        }
        if (m->method == SIP_METHOD_REGISTER && p->registrar) {
            do_register(w, rx, m);
            return;
        }
        if (p->nup == 0 || m->method == SIP_METHOD_ACK) {
            reply(w, rx, m, 404, NULL, NULL);
            return;
        }
    }
    /* the built-in location service */
    if (p->registrar && ruri.user.len) {
        char aor[LOCMAP_AOR_MAX];
        size_t alen = locmap_aor_key(m->ruri, aor, sizeof aor);
        struct locmap_binding b;
        if (alen && locmap_lookup(p->loc, slice_make(aor, alen), w->now_ms, &b)) {
            memcpy(rp.ruri_buf, b.contact, b.contact_len);
            rp.new_ruri = slice_make(rp.ruri_buf, b.contact_len);
            struct sip_uri cu;
            if (sipuri_parse(rp.new_ruri, &cu) < 0) {
                reply(w, rx, m, 500, "Bad Binding", NULL);
                return;
            }
            if (b.proto != SIP_TRANSPORT_UDP) {
                /* back over the connection the REGISTER came on */
                rp.proto = b.proto;
                rp.dst = b.src;
                rp.conn = b.conn;
            } else if (uri_target(&cu, &rp.proto, &rp.dst) < 0) {
                rp.proto = SIP_TRANSPORT_UDP;
                rp.dst = b.src;
            }
            forward_request(w, rx, m, buf, len, &rp, key, key_len);
            return;
        }
        if (local_ruri && p->nup == 0) {
            reply(w, rx, m, 404, "Not Registered", NULL);
            return;
        }
    }
    /* a peer site's domain (--peer DOMAIN=URI): to that site's proxy, unless
     * the request comes from it (then it is for us to deliver, rule 4) */
    int pi = peer_for(w, ruri.host);
    if (pi >= 0 && !from_host(rx, &p->peer[pi])) {
        if (!p->peer[pi].resolved) {
            reply(w, rx, m, 503, "Peer Site Not Resolved", "Retry-After: 5\r\n");
            return;
        }
        rp.proto = p->peer[pi].proto;
        rp.dst = p->peer[pi].addr;
        if (p->peer[pi].tls_name[0]) memcpy(rp.tls_name, p->peer[pi].tls_name, sizeof rp.tls_name);
        forward_request(w, rx, m, buf, len, &rp, key, key_len);
        return;
    }
    /* 4. from the SIP Server or a peer site (or with no SIP Server): to the
     * Request-URI */
    if (upstream_src || p->nup == 0) {
        if (local_ruri) {
            reply(w, rx, m, 404, NULL, NULL);
            return;
        }
        int rc = next_hop(w, rx, buf, len, &ruri, &rp);
        if (rc == 1) return; /* parked until the DNS answer */
        if (rc < 0) {
            int code = rc == -ENOENT || rc == -EINVAL ? 404 : 503;
            reply(w, rx, m, code,
                  rc == -EPROTONOSUPPORT ? "Unsupported Transport"
                  : code == 404          ? "Unresolvable Request-URI"
                                         : "DNS Failure",
                  NULL);
            return;
        }
        /* a phone's contact over a stream: use the connection it registered
         * over, whichever worker holds it (stickiness without Path) */
        struct flow_entry fe;
        if (rp.proto != SIP_TRANSPORT_UDP && flowmap_lookup(p->flows, rp.proto, &rp.dst, &fe))
            rp.conn = fe.conn;
        forward_request(w, rx, m, buf, len, &rp, key, key_len);
        return;
    }
    /* 5. from an endpoint: to the SIP Server in service, 503 when none is */
    if (!upstream_in_service(p)) {
        char ra[48];
        snprintf(ra, sizeof ra, "Retry-After: %u\r\n", w->cfg->oos_force_s);
        reply(w, rx, m, 503, "No SIP Server In Service", ra);
        return;
    }
    plan_upstream(p, &rp);
    forward_request(w, rx, m, buf, len, &rp, key, key_len);
}

/* ---- responses ------------------------------------------------------- */

/* Relays a response without a transaction (RFC 3261 §16.11 / §18.2.2): pop
 * our Via and send to the next one. */
static void forward_response_stateless(struct worker *w, const struct sip_msg *m, const char *buf)
{
    struct proxy_worker *p = w->proxy;
    const struct sip_hdr *our = sipmsg_hdr(m, SIP_HDR_VIA);
    const struct sip_hdr *next = sipmsg_hdr_nth(m, SIP_HDR_VIA, 1);
    struct sip_via nv;
    if (!next || sipuri_parse_via(next->value, &nv) < 0) {
        STAT_INC(w, dropped);
        return;
    }
    struct netaddr dst;
    struct slice host = nv.received.len ? nv.received : nv.host;
    if (host.len > 2 && host.ptr[0] == '[') host = slice_make(host.ptr + 1, host.len - 2);
    uint64_t rport = 0;
    int port = nv.port ? nv.port : 5060;
    if (nv.rport.len && slice_to_u64(nv.rport, 65535, &rport)) port = (int)rport;
    if (netaddr_from_ip(&dst, host, port) < 0 || netaddr_is_forbidden(&dst)) {
        STAT_INC(w, dropped);
        return;
    }
    struct rewrite rw;
    rewrite_init(&rw, buf, m->msg_len);
    rewrite_remove_value(&rw, m, our);
    ssize_t n = rewrite_build(&rw, p->out, OUT_CAP);
    if (n < 0) return;
    uint8_t proto = nv.transport == SIP_TRANSPORT_TCP   ? SIP_TRANSPORT_TCP
                    : nv.transport == SIP_TRANSPORT_TLS ? SIP_TRANSPORT_TLS
                                                        : SIP_TRANSPORT_UDP;
    worker_send(w, proto, -1, &dst, CONN_REF_NONE, NULL, p->out, (size_t)n, NULL);
}

static void handle_response(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                            const char *buf, size_t len)
{
    struct proxy_worker *p = w->proxy;
    const struct sip_hdr *vh = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via v;
    if (!vh || sipuri_parse_via(vh->value, &v) < 0 || m->count[SIP_HDR_CSEQ] == 0) {
        STAT_INC(w, dropped);
        return;
    }
    uint32_t wk, slot, gen, lh;
    if (!branch_decode(v.branch, &wk, &slot, &gen, &lh)) {
        STAT_INC(w, dropped); /* not a branch of ours */
        return;
    }
    if (wk != w->id) {
        /* the transaction lives on another worker: hand the bytes over */
        if (wk >= w->nworkers) {
            STAT_INC(w, dropped);
            return;
        }
        struct worker_msg *wm = worker_msg_new(len);
        if (!wm) return;
        wm->kind = WMSG_SIP;
        wm->rx = *rx;
        wm->len = (uint32_t)len;
        memcpy(wm->data, buf, len);
        if (worker_post(w, wk, wm) < 0) {
            worker_msg_free(wm);
            STAT_INC(w, dropped);
        }
        return;
    }
    struct txn *x = txn_find_slot(&p->txns, slot, gen);
    if (m->count[SIP_HDR_VIA] < 2 && !(x && x->probe)) {
        STAT_INC(w, dropped); /* nothing to relay it to */
        return;
    }
    if (!x) {
        /* late 2xx retransmissions for INVITE still go upstream */
        if (m->cseq_method == SIP_METHOD_INVITE && m->status >= 200 && m->status < 300)
            forward_response_stateless(w, m, buf);
        else
            STAT_INC(w, dropped);
        return;
    }
    int code = m->status;
    if (x->probe) {
        /* any final answer, even 404 or 405, says the SIP Server is alive */
        if (code >= 200 && x->state != TXN_COMPLETED) {
            p->up[x->upstream_idx].probing = false;
            upstream_state(w, x->upstream_idx, true);
            x->state = TXN_COMPLETED;
            linger(w, x);
        } else if (code < 200) {
            timer_cancel(&x->t_retx);
        }
        return;
    }
    if (code < 200) {
        if (x->state == TXN_COMPLETED) return;
        x->state = TXN_PROCEEDING;
        if (!x->provisional_seen) {
            x->provisional_seen = true;
            if (x->invite) {
                timer_cancel(&x->t_retx);
                worker_timer_arm(w, &x->t_timeout, TIMER_C_MS);
            }
            if (x->cancel_pending && !x->cancelled) send_cancel(w, x);
        }
        if (code == 100) return; /* 100 Trying is hop by hop */
    } else {
        bool again = x->state == TXN_COMPLETED;
        if (again && !(x->invite && code < 300)) {
            /* a retransmitted final response: re-ACK a non-2xx, nothing else */
            if (x->invite && code >= 300) {
                ssize_t an = build_hop_request(x, "ACK", m->hdrs[m->first[SIP_HDR_TO]].value,
                                               p->aux, OUT_CAP);
                if (an > 0) send_downstream(w, x, p->aux, (size_t)an);
            }
            return;
        }
        if (x->invite && code >= 300) {
            ssize_t an =
                build_hop_request(x, "ACK", m->hdrs[m->first[SIP_HDR_TO]].value, p->aux, OUT_CAP);
            if (an > 0) send_downstream(w, x, p->aux, (size_t)an);
        }
        x->state = TXN_COMPLETED;
        timer_cancel(&x->t_retx);
        timer_cancel(&x->t_timeout);
    }
    struct rewrite rw;
    rewrite_init(&rw, buf, m->msg_len);
    rewrite_remove_value(&rw, m, vh);
    ssize_t n = rewrite_build(&rw, p->out, OUT_CAP);
    if (n < 0) return;
    server_send(w, x, p->out, (size_t)n);
    if (code >= 200 && x->state == TXN_COMPLETED && !x->lingering) {
        keep_response(x, p->out, (size_t)n, code);
        if (x->invite && code >= 300 && x->rx.proto == SIP_TRANSPORT_UDP) {
            x->retx_ms = T1_MS;
            worker_timer_arm(w, &x->t_retx, T1_MS);         /* Timer G */
            worker_timer_arm(w, &x->t_timeout, 64 * T1_MS); /* Timer H */
        } else {
            x->ack_seen = true;
            linger(w, x);
        }
    } else if (code < 200) {
        keep_response(x, p->out, (size_t)n, code);
    }
}

/* ---- entry points ---------------------------------------------------- */

static void process(struct worker *w, const struct rx_info *rx, char *buf, size_t len)
{
    struct proxy_worker *p = w->proxy;
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    unsigned flags = rx->proto == SIP_TRANSPORT_UDP ? SIPMSG_DATAGRAM : 0;
    int r = sipmsg_parse(buf, len, &m, hdrs, &p->lim, flags);
    if (r < 0) {
        STAT_INC(w, bad_msgs);
        LOG_RL(LOG_INFO, "malformed message from %s: %s", "peer", sipmsg_err_str(m.err));
        /* a request we can still answer gets 400/505/513; responses are dropped */
        if (m.is_request && m.method_name.len && m.count[SIP_HDR_VIA] &&
            m.err != SIP_ERR_TOO_MANY_HEADERS && m.err != SIP_ERR_HEADER_SYNTAX)
            reply(w, rx, &m, sipmsg_err_status(m.err), sipmsg_err_str(m.err), NULL);
        return;
    }
    if (m.is_request)
        handle_request(w, rx, &m, buf, len);
    else
        handle_response(w, rx, &m, buf, len);
}

void proxy_on_message(struct worker *w, const struct rx_info *rx, char *buf, size_t len)
{
    process(w, rx, buf, len);
}

void proxy_on_worker_msg(struct worker *w, struct worker_msg *m)
{
    if (m->kind == WMSG_SIP) process(w, &m->rx, m->data, m->len);
    worker_msg_free(m);
}

void proxy_on_conn_closed(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto)
{
    if (!w->proxy) return;
    struct flow_entry fe;
    bool registered =
        flowmap_lookup(w->proxy->flows, proto, peer, &fe) && fe.conn == c && fe.register_ms != 0;
    flowmap_remove(w->proxy->flows, proto, peer, c);
    /* only a connection that REGISTERed can hold bindings: spare the scan */
    if (w->proxy->registrar && registered) locmap_drop_conn(w->proxy->loc, c);
}
