/* Relaying responses through their client transaction back towards the sender. */
#include <stdlib.h>
#include <string.h>

#include "core/branch.h"
#include "core/log.h"
#include "core/proxy-int.h"
#include "core/rewrite.h"

/* The transaction lives on worker wk: hand the bytes over through the ring. */
static void hand_over(struct worker *w, unsigned wk, const struct rx_info *rx, const char *buf,
                      size_t len)
{
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
}

/* A provisional response: the transaction proceeds; the first one stops
 * INVITE retransmissions, starts Timer C and lets a pending CANCEL go.
 * False when it is not relayed (100 Trying is hop by hop, or too late). */
static bool on_provisional(struct worker *w, struct txn *x, int code)
{
    if (x->state == TXN_COMPLETED) return false;
    x->state = TXN_PROCEEDING;
    if (!x->provisional_seen) {
        x->provisional_seen = true;
        if (x->invite) {
            timer_cancel(&x->t_retx);
            worker_timer_arm(w, &x->t_timeout, TIMER_C_MS);
        }
        if (x->cancel_pending && !x->cancelled) txn__send_cancel(w, x);
    }
    return code != 100;
}

/* A final response: completes the transaction and ACKs a non-2xx to an
 * INVITE (RFC 3261 §17.1.1.3). A retransmitted final response is only
 * re-ACKed; a 2xx to INVITE is always relayed (it is end to end). False
 * when it is not relayed. */
static bool on_final(struct worker *w, struct txn *x, const struct sip_msg *m, int code)
{
    /* validated, so it has a To; the ACK takes its tag (an empty one would
     * make the ACK take our request's To) */
    const struct sip_hdr *th = sipmsg_hdr(m, SIP_HDR_TO);
    struct slice to = th ? th->value : SLICE_NULL;
    bool again = x->state == TXN_COMPLETED;
    if (again && !(x->invite && code < 300)) {
        if (x->invite && code >= 300) txn__send_ack(w, x, to);
        return false;
    }
    if (x->invite && code >= 300) txn__send_ack(w, x, to);
    x->state = TXN_COMPLETED;
    timer_cancel(&x->t_retx);
    timer_cancel(&x->t_timeout);
    return true;
}

/* After relaying a response: keep it for retransmitted requests; a final
 * one either waits for the ACK (Timer G/H: a non-2xx to INVITE over UDP) or
 * lingers. */
static void after_relay(struct worker *w, struct txn *x, int code, size_t n)
{
    struct proxy_worker *p = w->layer;
    if (code >= 200 && x->state == TXN_COMPLETED && !x->lingering) {
        txn_keep_response(&p->txns, x, p->out, n, code);
        if (x->invite && code >= 300 && x->rx.proto == SIP_TRANSPORT_UDP) {
            x->retx_ms = T1_MS;
            worker_timer_arm(w, &x->t_retx, T1_MS);         /* Timer G */
            worker_timer_arm(w, &x->t_timeout, 64 * T1_MS); /* Timer H */
        } else {
            x->ack_seen = true;
            txn__linger(w, x);
        }
    } else if (code < 200) {
        txn_keep_response(&p->txns, x, p->out, n, code);
    }
}

/* Response m for transaction x of this worker: through its state, then our
 * Via popped and relayed towards the request's sender. */
static void relay(struct worker *w, struct txn *x, const struct sip_msg *m, const char *buf)
{
    int code = m->status;
    if (x->probe) {
        upstream__probe_answered(w, x, code);
        return;
    }
    if (x->to_upstream && failover__response(w, x, m, code)) return;
    if (!(code < 200 ? on_provisional(w, x, code) : on_final(w, x, m, code))) return;
    struct rewrite rw;
    rewrite_init_msg(&rw, m, buf); /* what Content-Length framed, with one */
    rewrite_remove_value(&rw, m, sipmsg_hdr(m, SIP_HDR_VIA));
    ssize_t n = rewrite_build(&rw, proxy__of(w)->out, OUT_CAP);
    if (n < 0) return;
    txn__send_server(w, x, proxy__of(w)->out, (size_t)n);
    after_relay(w, x, code, (size_t)n);
}

/* RFC 3261 §16.7 step 1 checks the proxy can rely on: the mandatory headers
 * (a response without them cannot be matched safely), a sound top Via, no
 * control bytes. False after counting and dropping m. */
static bool response_ok(struct worker *w, struct sip_msg *m)
{
    enum sip_err e = sipmsg_validate(m);
    if (!e) return true;
    STAT_INC(w, bad_msgs);
    STAT_INC(w, dropped);
    STAT_REFUSED(w, e == SIP_ERR_CONTROL_BYTES ? REFUSE_CONTROL_BYTES : REFUSE_MALFORMED_RESPONSE);
    LOG_RL(LOG_INFO, "response %d dropped: %s", m->status, sipmsg_err_str(e));
    return false;
}

/* Edge policy (ARCHITECTURE §2): a response belongs to x only when its
 * branch carries x's random bits and it comes from where x's request went:
 * over UDP from that address and port, over a stream on that connection. */
static bool from_next_hop(const struct txn *x, const struct branch_id *id, const struct rx_info *rx)
{
    if (id->rand != x->nonce) return false;
    if (x->out_proto == SIP_TRANSPORT_UDP)
        return rx->proto == SIP_TRANSPORT_UDP && netaddr_eq(&rx->src, &x->out_dst);
    return rx->conn != CONN_REF_NONE && rx->conn == x->out_conn;
}

/* RFC 3261 §17.1.3: the CSeq method is part of the match. The one other
 * method answered on an INVITE's branch is our own CANCEL (it reuses the
 * branch, §9.1): its response ends here. True when m is for x itself. */
static bool method_matches(struct worker *w, const struct txn *x, const struct sip_msg *m)
{
    if (m->cseq_method == x->method) return true;
    if (x->invite && m->cseq_method == SIP_METHOD_CANCEL)
        STAT_INC(w, absorbed);
    else
        STAT_INC(w, dropped);
    return false;
}

void response__handle(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                      const char *buf, size_t len)
{
    struct sip_via v;
    struct branch_id id;
    if (!response_ok(w, m)) return;
    sipuri_parse_via(sipmsg_hdr(m, SIP_HDR_VIA)->value, &v); /* validated */
    if (!branch_decode(v.branch, &id)) {
        STAT_INC(w, dropped); /* not a branch of ours */
        return;
    }
    if (id.worker != w->id) {
        hand_over(w, id.worker, rx, buf, len);
        return;
    }
    struct txn *x = txn_find_slot(&proxy__of(w)->txns, id.slot, id.gen);
    if (!x) {
        /* no such transaction (any more): a late retransmission, or a guess.
         * An INVITE's 2xx retransmissions are relayed while it lingers
         * (RFC 6026 Timer L); after that, nothing is relayed without one. */
        STAT_INC(w, dropped);
        return;
    }
    if (!from_next_hop(x, &id, rx)) {
        char a[NETADDR_STRLEN];
        netaddr_str(&rx->src, a, sizeof a);
        STAT_INC(w, dropped);
        STAT_REFUSED(w, REFUSE_RESPONSE_MISMATCH);
        LOG_RL(LOG_WARN, "response %d from %s dropped: not from where its request went", m->status,
               a);
        return;
    }
    if (!method_matches(w, x, m)) return;
    if (sipmsg_hdr_count(m, SIP_HDR_VIA) < 2 && !x->probe) {
        STAT_INC(w, dropped); /* nothing to relay it to */
        return;
    }
    relay(w, x, m, buf);
}
