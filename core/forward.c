/* Forwarding a request: its transaction, Via, Record-Route, Path, Max-Forwards, send. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/branch.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/proxy-int.h"
#include "core/reply.h"
#include "core/rewrite.h"
#include "registry/flowtoken.h"

/* The header lines forward__request() splices in; they must live until the
 * rewrite is built. */
struct fwd_lines {
    char via[512];
    char rr[768];
    char path[512];
    char token[FLOWTOKEN_STR_LEN + 1];     /* the sender's flow */
    char hop_token[FLOWTOKEN_STR_LEN + 1]; /* the next hop's, towards an endpoint */
};

/* "Name: <sip:[token@]host:port;transport=x;lr[;ob]>\r\n" for one of our
 * listeners. Returns the length, or 0 when it does not fit. */
static int own_uri_line(const struct worker *w, const char *name, int listener, uint8_t proto,
                        const char *token, bool ob, char *out, size_t cap)
{
    struct buf b = buf_make(out, cap);
    buf_puts(&b, name);
    buf_puts(&b, ": <sip:");
    if (token) {
        buf_puts(&b, token);
        buf_put(&b, "@", 1);
    }
    buf_puts(&b, worker_listener_host(w, (unsigned)listener));
    buf_put(&b, ":", 1);
    buf_put_u(&b, (unsigned)worker_listener_port(w, (unsigned)listener));
    buf_puts(&b, ";transport=");
    buf_puts(&b, sipuri_transport_name(proto));
    buf_puts(&b, ob ? ";lr;ob>\r\n" : ";lr>\r\n");
    return buf_ok(&b) ? (int)b.len : 0;
}

/* RFC 5626: the UA said "Supported: outbound". */
static bool supports_outbound(const struct sip_msg *m)
{
    for (unsigned i = 0; i < m->count[SIP_HDR_SUPPORTED]; i++)
        if (slice_case_eq_lit(sipmsg_hdr_nth(m, SIP_HDR_SUPPORTED, i)->value, "outbound"))
            return true;
    return false;
}

/* The client+server transaction for a request forwarded along rp from
 * listener out_l, or NULL after answering 503 with Retry-After (over
 * --max-transactions or --max-transaction-memory, or out of memory). */
static struct txn *open_txn(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                            const struct route_plan *rp, int out_l, const char *key, size_t key_len)
{
    struct txn_table *t = &proxy__of(w)->txns;
    struct txn *x = txn__admit(w, key_len + m->msg_len) ? txn_new(t, key, key_len) : NULL;
    if (!x || txn_set_tls_name(t, x, rp->tls_name) < 0) {
        if (x) txn_free(t, x);
        reply__send_retry(w, rx, m, 503, "Too Many Transactions", PROXY_RETRY_AFTER_S);
        return NULL;
    }
    x->method = m->method;
    x->invite = m->method == SIP_METHOD_INVITE;
    x->rx = *rx;
    reply_dst(m, rx, &x->resp_dst);
    x->out_proto = rp->proto;
    /* over UDP the request leaves from, and its Via names, this worker's
     * private port: the responses come back to this worker */
    x->out_listener = rp->proto == SIP_TRANSPORT_UDP ? out_l | WORKER_SEND_PRIVATE : -1;
    x->out_dst = rp->dst;
    x->out_conn = rp->conn;
    x->to_upstream = rp->to_upstream;
    x->upstream_idx = (uint8_t)rp->upstream_idx;
    return x;
}

/* Our Via line: the listener's host, this worker's port, and a branch naming
 * transaction x (or, without one, derived from the sender's branch). */
static size_t our_via(struct worker *w, const struct sip_msg *m, struct txn *x,
                      const struct route_plan *rp, int out_l, char *out, size_t cap)
{
    const char *host = worker_listener_host(w, (unsigned)out_l);
    int port = x && rp->proto == SIP_TRANSPORT_UDP ? worker_via_port(w, (unsigned)out_l)
                                                   : worker_listener_port(w, (unsigned)out_l);
    struct buf vb = buf_make(out, cap);
    buf_puts(&vb, "Via: SIP/2.0/");
    buf_puts(&vb, sipuri_transport_str(rp->proto));
    buf_put(&vb, " ", 1);
    buf_puts(&vb, host);
    buf_put(&vb, ":", 1);
    buf_put_u(&vb, (unsigned)port);
    buf_puts(&vb, ";branch=");
    if (x) {
        struct branch_id id = {w->id, x->slot, x->gen, branch_loop_hash(m), x->nonce};
        x->branch_len = (uint8_t)branch_encode(&id, x->branch, sizeof x->branch);
        buf_put(&vb, x->branch, x->branch_len);
    } else {
        /* stateless: derived from the incoming branch, stable across retransmissions */
        struct sip_via tv;
        char br[BRANCH_STATELESS_LEN];
        sipuri_parse_via(sipmsg_hdr(m, SIP_HDR_VIA)->value, &tv);
        buf_put(&vb, br, branch_stateless(tv.branch, br, sizeof br));
    }
    buf_put(&vb, "\r\n", 2);
    return buf_ok(&vb) ? vb.len : 0;
}

/* received / rport on the sender's Via (RFC 3261 §18.2.1, RFC 3581). */
static void mark_sender_via(struct rewrite *rw, const struct sip_msg *m, const struct rx_info *rx)
{
    const struct sip_hdr *tvh = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via tv;
    if (sipuri_parse_via(tvh->value, &tv) < 0) return;
    char ip[NETADDR_STRLEN];
    size_t iplen = netaddr_ip_str(&rx->src, ip, sizeof ip);
    bool differs = !slice_eq(tv.host, slice_make(ip, iplen));
    if ((differs || tv.has_rport) && tv.received.len == 0)
        rewrite_via_received(rw, tvh, slice_make(ip, iplen),
                             tv.has_rport ? netaddr_port(&rx->src) : -1);
    else if (tv.has_rport)
        rewrite_via_received(rw, tvh, SLICE_NULL, netaddr_port(&rx->src));
}

/* A flow token of kind `kind` (Record-Route tokens bound to m's Call-ID)
 * for the flow proto/peer/conn, into out; NULL when it does not fit. */
static const char *flow_token(struct worker *w, uint8_t kind, uint8_t proto,
                              const struct netaddr *peer, conn_ref conn, const struct sip_msg *m,
                              char *out, size_t cap)
{
    struct flowtoken t = {.kind = kind, .proto = proto, .conn = conn, .peer = *peer};
    size_t tn = flowtoken_encode(proxy__of(w)->key, &t, m->call_id, out, cap - 1);
    out[tn] = 0;
    return tn ? out : NULL;
}

/* Record-Route on dialog-creating requests; two entries when the transport
 * or interface changes (RFC 5658): the top one faces the next hop, the
 * second faces the sender. An endpoint's entry carries a token naming the
 * connection its request came on, so later requests of the dialog routed
 * through it go back over that very connection (RFC 5626 §5.2 style); over
 * UDP only between two endpoints (the built-in registrar's calls), which
 * always get both entries, each with the token of the end it faces, so that
 * each end's in-dialog requests reach the other (edge policy: an endpoint
 * reaches only flows sipedge holds). Path, with a token, on a REGISTER
 * relayed to the SIP Server (RFC 3327). */
static void add_record_route_path(struct worker *w, struct rewrite *rw, const struct rx_info *rx,
                                  const struct sip_msg *m, const struct route_plan *rp, int out_l,
                                  struct fwd_lines *l)
{
    bool ep = rp->from_endpoint;
    if (route_creates_dialog(m)) {
        bool both = ep && rp->to_endpoint;
        const char *tok = ep && (both || rx->proto != SIP_TRANSPORT_UDP)
                              ? flow_token(w, FLOWTOKEN_RR, rx->proto, &rx->src, rx->conn, m,
                                           l->token, sizeof l->token)
                              : NULL;
        const char *hop = both ? flow_token(w, FLOWTOKEN_RR, rp->proto, &rp->dst, rp->conn, m,
                                            l->hop_token, sizeof l->hop_token)
                               : NULL;
        int in_l = rx->listener;
        bool twice = both || in_l != out_l || rx->proto != rp->proto;
        int rrn = own_uri_line(w, "Record-Route", out_l, rp->proto, twice ? hop : tok, false, l->rr,
                               sizeof l->rr);
        if (twice)
            rrn += own_uri_line(w, "Record-Route", in_l, rx->proto, tok, false, l->rr + rrn,
                                sizeof l->rr - (size_t)rrn);
        rewrite_add_before(rw, m, SIP_HDR_RECORD_ROUTE, slice_make(l->rr, (size_t)rrn));
    }
    if (m->method == SIP_METHOD_REGISTER && rp->to_upstream) {
        const char *tok = ep ? flow_token(w, FLOWTOKEN_PATH, rx->proto, &rx->src, rx->conn, m,
                                          l->token, sizeof l->token)
                             : NULL;
        int pn = own_uri_line(w, "Path", out_l, rp->proto, tok, supports_outbound(m), l->path,
                              sizeof l->path);
        rewrite_add_before(rw, m, SIP_HDR_PATH, slice_make(l->path, (size_t)pn));
    }
}

/* The forwarded request into proxy__of(w)->out: our Via on top, the sender's
 * Via marked, Max-Forwards decremented, our Routes popped, the new
 * Request-URI, Record-Route and Path. Returns its length or -1. */
static ssize_t build_forwarded(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                               const char *buf, const struct route_plan *rp, struct txn *x,
                               int out_l)
{
    struct fwd_lines l;
    struct rewrite rw;
    size_t vn = our_via(w, m, x, rp, out_l, l.via, sizeof l.via);
    /* exactly the body Content-Length framed, with a Content-Length */
    rewrite_init_msg(&rw, m, buf);
    rewrite_add_top(&rw, m, slice_make(l.via, vn));
    mark_sender_via(&rw, m, rx);
    rewrite_dec_max_forwards(&rw, m, 70);
    rewrite_remove_top(&rw, m, SIP_HDR_ROUTE, rp->npop);
    if (rp->new_ruri_len)
        rewrite_splice(&rw, sipmsg_off(buf, m->ruri), m->ruri.len,
                       slice_make(rp->new_ruri, rp->new_ruri_len));
    add_record_route_path(w, &rw, rx, m, rp, out_l, &l);
    return rewrite_build(&rw, proxy__of(w)->out, OUT_CAP);
}

/* Transaction x's request never left: its sender gets `code` at once. */
static void unsent(struct worker *w, struct txn *x, const struct sip_msg *m, int code,
                   const char *warning)
{
    txn__reply(w, x, m, code, warning);
    x->state = TXN_COMPLETED;
    x->ack_seen = true;
    txn__linger(w, x);
}

/* The flow x was to go over is gone (RFC 5626 §5.3): 430 Flow Failed. */
static void flow_failed(struct worker *w, struct txn *x, const struct sip_msg *m)
{
    STAT_REFUSED(w, REFUSE_FLOW_GONE);
    unsent(w, x, m, 430, NULL);
}

/* Sends the forwarded request (n bytes in proxy__of(w)->out) as transaction x:
 * 100 Trying first for INVITE, then the request; when it cannot leave,
 * 430 (a phone's flow failed) or 503 towards the sender. */
static void send_stateful(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                          const struct route_plan *rp, struct txn *x, size_t n)
{
    struct proxy_worker *p = w->layer;
    if (txn_set_request(&p->txns, x, p->out, n) < 0) {
        txn_free(&p->txns, x);
        reply__send(w, rx, m, 500, NULL, NULL);
        return;
    }
    if (x->invite) txn__reply(w, x, m, 100, NULL);
    int rc = txn__send_client(w, x, x->req, x->req_len);
    if (rc < 0) {
        LOG_RL(LOG_WARN, "forwarding failed: %s", strerror(-rc));
        /* a flow that cannot carry it (closed, reset) failed; a full ring
         * or no memory is our own overload */
        if (rp->conn != CONN_REF_NONE && rc != -EAGAIN && rc != -ENOMEM)
            flow_failed(w, x, m);
        else
            unsent(w, x, m, 503, "Next Hop Unreachable");
        return;
    }
    txn__arm(w, x);
    STAT_INC(w, forwarded);
}

/* The listener a request along rp leaves from: rp's transport, its
 * destination's family if there is one. -1 when there is none. */
static int out_listener(const struct worker *w, const struct route_plan *rp)
{
    int out_l = config_pick_listener(w->cfg, rp->proto, rp->dst.sa.sa_family);
    return out_l >= 0 ? out_l : config_pick_listener(w->cfg, rp->proto, AF_UNSPEC);
}

void forward__keep_original(struct worker *w, struct txn *x, const char *buf, size_t len,
                            const struct route_plan *rp)
{
    const struct upstream_set *s = &proxy__of(w)->ups;
    /* only where there is somewhere else to go */
    if (s->nup < 2 && (rp->upstream_idx >= s->nup || s->up[rp->upstream_idx].ntargets < 2)) return;
    if (!(x->orig = malloc(len))) return;
    memcpy(x->orig, buf, len);
    x->orig_len = (uint32_t)len;
    x->orig_npop = (uint8_t)rp->npop;
    x->orig_from_endpoint = rp->from_endpoint;
}

int forward__rebuild(struct worker *w, struct txn *x, const struct route_plan *rp)
{
    struct proxy_worker *p = w->layer;
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    unsigned flags = x->rx.proto == SIP_TRANSPORT_UDP ? SIPMSG_DATAGRAM : 0;
    int out_l = out_listener(w, rp);
    if (!x->orig || out_l < 0 || netaddr_is_forbidden(&rp->dst) ||
        sipmsg_parse(x->orig, x->orig_len, &m, hdrs, &p->lim, flags) < 0)
        return -1;
    ssize_t n = build_forwarded(w, &x->rx, &m, x->orig, rp, x, out_l);
    if (n <= 0 || (size_t)n > w->cfg->max_message_size ||
        txn_set_request(&p->txns, x, p->out, (size_t)n) < 0 ||
        txn_set_tls_name(&p->txns, x, rp->tls_name[0] ? rp->tls_name : NULL) < 0)
        return -1;
    x->out_proto = rp->proto;
    x->out_listener = rp->proto == SIP_TRANSPORT_UDP ? out_l | WORKER_SEND_PRIVATE : -1;
    x->out_dst = rp->dst;
    x->out_conn = CONN_REF_NONE;
    x->upstream_idx = (uint8_t)rp->upstream_idx;
    return 0;
}

void forward__request(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                      const char *buf, size_t len, const struct route_plan *rp, const char *key,
                      size_t key_len)
{
    struct proxy_worker *p = w->layer;
    if (netaddr_is_forbidden(&rp->dst)) {
        reply__send(w, rx, m, 403, "Forbidden Next Hop", NULL);
        return;
    }
    int out_l = out_listener(w, rp);
    if (out_l < 0) {
        reply__send(w, rx, m, 503, "No Listener For Transport", NULL);
        return;
    }
    /* ACK is forwarded without a transaction */
    struct txn *x = NULL;
    if (m->method != SIP_METHOD_ACK && !(x = open_txn(w, rx, m, rp, out_l, key, key_len))) return;
    ssize_t n = build_forwarded(w, rx, m, buf, rp, x, out_l);
    if (n < 0 || (size_t)n > w->cfg->max_message_size) {
        if (x) txn_free(&p->txns, x);
        reply__send(w, rx, m, 513, NULL, NULL);
        return;
    }
    if (x) {
        if (rp->to_upstream) forward__keep_original(w, x, buf, len, rp);
        send_stateful(w, rx, m, rp, x, (size_t)n);
        return;
    }
    conn_ref used;
    worker_send(w, rp->proto, rp->proto == SIP_TRANSPORT_UDP ? out_l : -1, &rp->dst, rp->conn,
                rp->tls_name[0] ? rp->tls_name : NULL, p->out, (size_t)n, &used);
    STAT_INC(w, forwarded);
}

void forward__undelivered(struct worker *w, conn_ref conn, char *buf, size_t len)
{
    struct proxy_worker *p = w->layer;
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sip_via via;
    struct branch_id id;
    /* our own forwarded request, but parsed like any bytes: the top Via's
     * branch names the transaction (a response, ACK or CANCEL waits for
     * nothing: their loss is for retransmissions and timers to handle) */
    if (sipmsg_parse(buf, len, &m, hdrs, &p->lim, 0) < 0 || !m.is_request ||
        !sipmsg_hdr(&m, SIP_HDR_VIA) ||
        sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &via) < 0 ||
        !branch_decode(via.branch, &id) || id.worker != w->id)
        return;
    struct txn *x = txn_find_slot(&p->txns, id.slot, id.gen);
    if (!x || x->probe || x->out_conn != conn || x->method != m.method || x->state == TXN_COMPLETED)
        return;
    LOG_RL(LOG_INFO, "flow gone before the request could be written: 430");
    flow_failed(w, x, &m);
}
