/* The proxy pipeline: a message parsed, checked, matched to a transaction, routed. */
#include "core/proxy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/branch.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/overload.h"
#include "core/proxy-int.h"
#include "core/registrar.h"
#include "dns/dns.h"
#include "registry/flowmap.h"
#include "registry/flowtoken.h"
#include "registry/locmap.h"

/* ---- state shared by all workers (registry/) ------------------------------- */

/* Written by proxy_global_init() before the workers start, read-only afterwards
 * except through the maps' own lock-free operations and the atomics. */
static struct proxy_global {
    struct locmap *loc;       /* built-in registrar: AOR -> bindings */
    struct flowmap *flows;    /* phone address + transport -> connection */
    struct flowtoken_key key; /* flow token HMAC key */
    bool ready;               /* proxy_global_init() succeeded (main thread) */
    struct overload *ovl;     /* new-dialog rates, counted by every worker */
} global;

static int global_create(const struct config *cfg)
{
    global.loc = locmap_new(cfg->max_aors, cfg->max_bindings);
    global.flows = flowmap_new();
    global.ovl = overload_new(cfg->overload_dialog_rate, cfg->overload_source_rate);
    if (!global.loc || !global.flows || !global.ovl) return -ENOMEM;
    int rc = flowtoken_key_init(&global.key, cfg->flow_secret_file);
    if (rc < 0) {
        LOG_E("--flow-secret %s: %s", cfg->flow_secret_file, strerror(-rc));
        return rc;
    }
    /* the registrar's digest nonces are keyed from the flow-token key */
    return registrar_global_init(cfg, global.key.k, sizeof global.key.k);
}

int proxy_global_init(const struct config *cfg)
{
    if (global.ready) return 0;
    int rc = global_create(cfg);
    global.ready = rc == 0;
    return rc;
}

void proxy_global_cleanup(void)
{
    if (global.loc || global.flows) {
        /* freeing waits for RCU grace periods: this thread must be a reader */
        locmap_thread_register();
        locmap_free(global.loc);
        flowmap_free(global.flows);
        locmap_thread_unregister();
    }
    registrar_global_cleanup();
    overload_free(global.ovl);
    global.ovl = NULL;
    global.loc = NULL;
    global.flows = NULL;
    memset(&global.key, 0, sizeof global.key);
    global.ready = false;
}

struct locmap *proxy_locmap(void)
{
    return global.loc;
}
struct flowmap *proxy_flowmap(void)
{
    return global.flows;
}

/* A new INVITE under the rates (core/overload.c): --overload-source-rate
 * per source IP first (not for the SIP Server or a peer site, which relay
 * everyone's calls from one address), then --overload-dialog-rate for all
 * together. Over either: 503 with Retry-After, counted. False after
 * answering. */
static bool admit_new_dialog(struct worker *w, const struct route_view *v, const struct rx_info *rx,
                             const struct sip_msg *m)
{
    char as[NETADDR_STRLEN];
    if (!route_from_upstream(v, rx) && !overload_source_admits(global.ovl, &rx->src, w->now_ms)) {
        STAT_LIMIT(w, LIMIT_SOURCE_RATE);
        LOG_RL(LOG_WARN, "new INVITE from %s turned away: above --overload-source-rate %u/s",
               netaddr_ip_str(&rx->src, as, sizeof as) ? as : "?", w->cfg->overload_source_rate);
        reply__send_retry(w, rx, m, 503, "Overloaded", OVERLOAD_RETRY_AFTER_S);
        return false;
    }
    if (!overload_dialog_admits(global.ovl, w->now_ms)) {
        STAT_INC(w, overload);
        STAT_LIMIT(w, LIMIT_DIALOG_RATE);
        LOG_RL(LOG_WARN, "new INVITE turned away: above --overload-dialog-rate %u/s",
               w->cfg->overload_dialog_rate);
        reply__send_retry(w, rx, m, 503, "Overloaded", OVERLOAD_RETRY_AFTER_S);
        return false;
    }
    return true;
}

/* ---- the request pipeline ---------------------------------------------------- */

/* RFC 3261 §16.3 steps 1-2 (sipmsg_validate): false after answering a
 * request that fails them (400, 501 for an unknown method's CSeq mismatch),
 * or dropping it when it has no Via to answer along. */
static bool validate(struct worker *w, const struct rx_info *rx, struct sip_msg *m)
{
    enum sip_err e = sipmsg_validate(m);
    if (!e) return true;
    STAT_INC(w, bad_msgs);
    LOG_RL(LOG_INFO, "rejected %.*s: %s", (int)m->method_name.len, m->method_name.ptr,
           sipmsg_err_str(e));
    /* 400, unless the bytes sit where the 400 would copy them (reply_build) */
    if (e == SIP_ERR_CONTROL_BYTES) STAT_REFUSED(w, REFUSE_CONTROL_BYTES);
    if (sipmsg_hdr(m, SIP_HDR_VIA) == NULL) return false; /* nowhere to answer */
    int code = sipmsg_err_status(e);
    if (e == SIP_ERR_CSEQ_METHOD && m->method == SIP_METHOD_OTHER) code = 501;
    reply__send(w, rx, m, code, sipmsg_err_str(e), NULL);
    return false;
}

/* RFC 3261 §17.2.3: a request of an existing server transaction. True when
 * it was handled here: a retransmission (absorbed, our last response sent
 * again), the ACK of our non-2xx, or a CANCEL (200, and CANCEL forwarded
 * once a provisional came; 481 without a transaction). */
static bool match_transaction(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                              const char *key, size_t key_len)
{
    struct txn *x = txn_find_key(&proxy__of(w)->txns, key, key_len);
    if (m->method == SIP_METHOD_ACK) {
        if (!x || x->resp_status < 300) return false; /* forwarded, without a transaction */
        /* ACK for our non-2xx: ends Timer G, absorbed (RFC 3261 §17.2.1) */
        x->ack_seen = true;
        timer_cancel(&x->t_retx);
        STAT_INC(w, absorbed);
        return true;
    }
    if (m->method == SIP_METHOD_CANCEL) {
        if (!x) {
            reply__send(w, rx, m, 481, NULL, NULL);
            return true;
        }
        reply__send(w, rx, m, 200, NULL, NULL);
        if (x->state == TXN_COMPLETED || x->cancelled) return true;
        if (x->provisional_seen)
            txn__send_cancel(w, x);
        else
            x->cancel_pending = true;
        return true;
    }
    if (!x) return false;
    /* a retransmission: resend what we last sent, if anything */
    STAT_INC(w, absorbed);
    if (x->resp) txn__send_server(w, x, x->resp, x->resp_len);
    return true;
}

/* While the SIGTERM drain runs, a new request gets 503 with Retry-After, so
 * its sender tries another proxy; in-dialog requests, ACK and CANCEL still
 * pass (they finish what exists), as does a request processed again after
 * its DNS answer (it arrived before). True when it was turned away. */
static bool turn_away_draining(struct worker *w, const struct rx_info *rx, const struct sip_msg *m)
{
    if (!worker_draining(w) || proxy__of(w)->dns_replay || m->method == SIP_METHOD_ACK ||
        m->method == SIP_METHOD_CANCEL || route_in_dialog(m))
        return false;
    reply__send_retry(w, rx, m, 503, "Shutting Down", PROXY_RETRY_AFTER_S);
    return true;
}

/* A stream endpoint's flow is recorded when it REGISTERs and when it starts
 * a dialog: both hand out its flow token (Path, Record-Route), and a token
 * is honoured only while its flow is in the map, so an endpoint that never
 * registers (a gateway) still gets its in-dialog requests. This worker owns
 * rx->conn: it is the one writer of its entry. */
static void record_flow(struct worker *w, const struct route_view *v, const struct rx_info *rx,
                        const struct sip_msg *m)
{
    if (rx->proto == SIP_TRANSPORT_UDP || route_from_upstream(v, rx)) return;
    struct flowmap *flows = proxy__of(w)->flows;
    bool reg = m->method == SIP_METHOD_REGISTER;
    struct flow_entry fe = {.conn = rx->conn,
                            .proto = rx->proto,
                            .peer = rx->src,
                            .register_ms = reg ? w->now_ms : 0,
                            .since_ms = w->now_ms},
                      cur;
    struct sip_addr to;
    if (reg && sipuri_parse_addr(sipmsg_hdr(m, SIP_HDR_TO)->value, &to) == 0)
        fe.aor_len = (uint16_t)locmap_aor_key(to.uri_text, fe.aor, sizeof fe.aor);
    if (reg || (route_creates_dialog(m) &&
                !(flowmap_lookup(flows, rx->proto, &rx->src, &cur) && cur.conn == rx->conn)))
        flowmap_set(flows, &fe);
}

/* RFC 3261 §16.3 step 3 and §16.6 step 3: "Unsupported: <tag>" lines for
 * every Proxy-Require (sipedge supports no extension). False without any. */
static bool unknown_proxy_require(const struct sip_msg *m, char *extra, size_t cap)
{
    const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_PROXY_REQUIRE);
    if (!h) return false;
    struct buf b = buf_make(extra, cap - 1);
    for (; h; h = sipmsg_hdr_next(m, h)) {
        buf_puts(&b, "Unsupported: ");
        buf_put_slice(&b, h->value);
        buf_puts(&b, "\r\n");
    }
    extra[buf_ok(&b) ? b.len : 0] = 0;
    return true;
}

/* RFC 3261 §16.3 step 4: a Via of ours whose branch carries this request's
 * loop hash means it came back unchanged. */
static bool via_loops(const struct route_view *v, const struct sip_msg *m)
{
    uint32_t lh = branch_loop_hash(m);
    for (const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_VIA); h; h = sipmsg_hdr_next(m, h)) {
        struct sip_via via;
        struct branch_id id;
        if (sipuri_parse_via(h->value, &via) == 0 && route_host_is_ours(v, via.host, via.port) &&
            branch_decode(via.branch, &id) && id.loop == lh)
            return true;
    }
    return false;
}

/* The checks before routing: URI scheme (416), Max-Forwards (483; OPTIONS
 * to sipedge itself is answered), Proxy-Require (420), loops (482), and
 * the new-dialog rates for new INVITEs (503). False after answering. */
static bool proxy_checks(struct worker *w, const struct route_view *v, const struct rx_info *rx,
                         const struct sip_msg *m)
{
    struct sip_uri ruri;
    char extra[1024];
    sipuri_parse(m->ruri, &ruri); /* validated */
    if (ruri.scheme == SIP_SCHEME_OTHER) {
        reply__send(w, rx, m, 416, NULL, NULL);
        return false;
    }
    if (m->max_forwards == 0) {
        if (m->method == SIP_METHOD_OPTIONS && route_uri_is_ours(v, &ruri) && ruri.user.len == 0)
            reply__send(w, rx, m, 200, NULL, PROXY_ALLOW_HDR);
        else
            reply__send(w, rx, m, 483, NULL, NULL);
        return false;
    }
    if (unknown_proxy_require(m, extra, sizeof extra)) {
        reply__send(w, rx, m, 420, NULL, extra);
        return false;
    }
    if (via_loops(v, m)) {
        reply__send(w, rx, m, 482, NULL, NULL);
        return false;
    }
    /* a request processed again after its DNS answer was admitted before */
    if (m->method == SIP_METHOD_INVITE && !route_in_dialog(m) && !proxy__of(w)->dns_replay)
        return admit_new_dialog(w, v, rx, m);
    return true;
}

/* Carries out a routing decision: forward, the registrar, or a reply. */
static void act(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                const char *buf, size_t len, const struct route_decision *d, const char *key,
                size_t key_len)
{
    switch (d->action) {
    case ROUTE_FORWARD:
        forward__request(w, rx, m, buf, len, &d->plan, key, key_len);
        return;
    case ROUTE_REGISTRAR:
        registrar__register(w, rx, m);
        return;
    case ROUTE_REPLY:
        if (d->refusal >= 0) {
            char a[NETADDR_STRLEN] = "?";
            STAT_REFUSED(w, d->refusal);
            netaddr_str(&rx->src, a, sizeof a);
            LOG_RL(LOG_INFO, "refused %.*s from %s: %d %s", (int)m->method_name.len,
                   m->method_name.ptr, a, d->code, d->warning ? d->warning : "");
        }
        if (d->retry_after >= 0)
            reply__send_retry(w, rx, m, d->code, d->warning, (unsigned)d->retry_after);
        else
            reply__send(w, rx, m, d->code, d->warning, d->extra);
        return;
    default:
        return; /* parked on DNS: processed again with the answer */
    }
}

/* A request, in the order of RFC 3261 §16.3 and ARCHITECTURE §2. */
static void handle_request(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                           const char *buf, size_t len)
{
    char key[1024];
    struct route_view v;
    struct route_decision d;

    if (!validate(w, rx, m)) return;
    size_t key_len = branch_server_key(m, key, sizeof key);
    if (key_len == 0) {
        reply__send(w, rx, m, 400, "Transaction Key Too Long", NULL);
        return;
    }
    if (match_transaction(w, rx, m, key, key_len)) return;
    if (turn_away_draining(w, rx, m)) return;
    upstream__sync(w);
    route__view(w, &v);
    record_flow(w, &v, rx, m);
    if (!proxy_checks(w, &v, rx, m)) return;
    if (route__decide(w, &v, rx, m, buf, len, &d) == ROUTE_PARKED) return;
    act(w, rx, m, buf, len, &d, key, key_len);
}

void proxy__process(struct worker *w, const struct rx_info *rx, char *buf, size_t len)
{
    struct proxy_worker *p = w->layer;
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    unsigned flags = rx->proto == SIP_TRANSPORT_UDP ? SIPMSG_DATAGRAM : 0;
    int r = sipmsg_parse(buf, len, &m, hdrs, &p->lim, flags);
    if (r < 0) {
        STAT_INC(w, bad_msgs);
        if (m.err == SIP_ERR_BODY_SHORT) STAT_REFUSED(w, REFUSE_BODY_LENGTH);
        LOG_RL(LOG_INFO, "malformed message from %s: %s", "peer", sipmsg_err_str(m.err));
        /* a request we can still answer gets 400/505/513; responses are dropped */
        if (m.is_request && m.method_name.len && m.count[SIP_HDR_VIA] &&
            m.err != SIP_ERR_TOO_MANY_HEADERS && m.err != SIP_ERR_HEADER_SYNTAX)
            reply__send(w, rx, &m, sipmsg_err_status(m.err), sipmsg_err_str(m.err), NULL);
        return;
    }
    if (m.is_request)
        handle_request(w, rx, &m, buf, len);
    else
        response__handle(w, rx, &m, buf, len);
}

/* ---- entry points the runtime calls (core/worker.h) -------------------------- */

static int worker_state_init(struct worker *w)
{
    /* every worker reads the shared maps: it is an RCU (QSBR) reader */
    locmap_thread_register();
    if (!global.ready) {
        locmap_thread_unregister();
        return -EINVAL; /* main did not call proxy_global_init() */
    }
    struct proxy_worker *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    if (txn_table_init(&p->txns, w->cfg->max_transactions,
                       (uint64_t)w->cfg->max_transaction_mb << 20) < 0) {
        free(p);
        return -ENOMEM;
    }
    p->txns.stats = &w->stats;
    p->lim.max_msg_size = w->cfg->max_message_size;
    p->lim.max_headers = MAX_HDRS;
    p->registrar = w->cfg->registrar;
    p->loc = global.loc;
    p->flows = global.flows;
    p->key = &global.key;
    w->layer = p;
    int rc = upstream__worker_init(w);
    if (rc < 0) {
        w->layer = NULL;
        txn_table_cleanup(&p->txns);
        free(p);
        return rc;
    }
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
    if (!w->layer) return;
#define S(f) (unsigned long long)atomic_load_explicit(&w->stats.f, memory_order_relaxed)
    LOG_I("proxy: forwarded %llu, retransmissions absorbed %llu, own replies %llu, "
          "timeouts %llu, new INVITEs over --overload-dialog-rate %llu",
          S(forwarded), S(absorbed), S(own_replies), S(timeouts), S(overload));
#undef S
    upstream__worker_cleanup(w);
    txn_table_cleanup(&proxy__of(w)->txns);
    free(w->layer);
    w->layer = NULL;
    locmap_thread_unregister();
    /* last: lookups still pending end with -ECANCELED, which the
     * callbacks take as "drop it" (they check w->layer) */
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
    return txn_table_in_flight(&proxy__of(w)->txns);
}

void proxy_on_message(struct worker *w, const struct rx_info *rx, char *buf, size_t len)
{
    proxy__process(w, rx, buf, len);
}

void proxy_on_worker_msg(struct worker *w, struct worker_msg *m)
{
    if (m->kind == WMSG_SIP)
        proxy__process(w, &m->rx, m->data, m->len);
    else if (m->kind == WMSG_SEND_FAILED && w->layer)
        forward__undelivered(w, m->conn, m->data, m->len);
    else if (m->kind == WMSG_LAYER)
        upstream__on_report(w, m->data, m->len);
    worker_msg_free(m);
}

void proxy_on_keepalive(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto)
{
    if (w->layer) flowmap_touch(proxy__of(w)->flows, proto, peer, c, w->now_ms);
}

void proxy_on_conn_closed(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto)
{
    if (!w->layer) return;
    flowmap_remove(proxy__of(w)->flows, proto, peer, c);
    /* its bindings, found through the location map's connection index */
    if (proxy__of(w)->registrar) locmap_drop_conn(proxy__of(w)->loc, c);
}

void proxy_on_unreachable(struct worker *w, const struct netaddr *dst, int err)
{
    char a[NETADDR_STRLEN];
    if (!w->layer) return;
    netaddr_str(dst, a, sizeof a);
    LOG_RL(LOG_INFO, "udp %s: ICMP %s", a, strerror(err));
    failover__unreachable(w, dst);
}
