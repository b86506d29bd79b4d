/* Relaying responses through their client transaction back towards the sender. */
#include <stdlib.h>
#include <string.h>

#include "core/branch.h"
#include "core/proxy-int.h"
#include "core/rewrite.h"

/* Relays a response without a transaction (RFC 3261 §16.11 / §18.2.2): pop
 * our Via and send to the next one. */
static void forward_stateless(struct worker *w, const struct sip_msg *m, const char *buf)
{
    struct proxy_worker *p = w->layer;
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
    /* responses are not validated: one without To gets an ACK with ours */
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
        txn_keep_response(x, p->out, n, code);
        if (x->invite && code >= 300 && x->rx.proto == SIP_TRANSPORT_UDP) {
            x->retx_ms = T1_MS;
            worker_timer_arm(w, &x->t_retx, T1_MS);         /* Timer G */
            worker_timer_arm(w, &x->t_timeout, 64 * T1_MS); /* Timer H */
        } else {
            x->ack_seen = true;
            txn__linger(w, x);
        }
    } else if (code < 200) {
        txn_keep_response(x, p->out, n, code);
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
    rewrite_init(&rw, buf, m->msg_len);
    rewrite_remove_value(&rw, m, sipmsg_hdr(m, SIP_HDR_VIA));
    ssize_t n = rewrite_build(&rw, proxy__of(w)->out, OUT_CAP);
    if (n < 0) return;
    txn__send_server(w, x, proxy__of(w)->out, (size_t)n);
    after_relay(w, x, code, (size_t)n);
}

void response__handle(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                      const char *buf, size_t len)
{
    const struct sip_hdr *vh = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via v;
    struct branch_id id;
    if (!vh || sipuri_parse_via(vh->value, &v) < 0 || m->count[SIP_HDR_CSEQ] == 0) {
        STAT_INC(w, dropped);
        return;
    }
    if (!branch_decode(v.branch, &id)) {
        STAT_INC(w, dropped); /* not a branch of ours */
        return;
    }
    if (id.worker != w->id) {
        hand_over(w, id.worker, rx, buf, len);
        return;
    }
    struct txn *x = txn_find_slot(&proxy__of(w)->txns, id.slot, id.gen);
    if (m->count[SIP_HDR_VIA] < 2 && !(x && x->probe)) {
        STAT_INC(w, dropped); /* nothing to relay it to */
        return;
    }
    if (x) {
        relay(w, x, m, buf);
        return;
    }
    /* late 2xx retransmissions for INVITE still go upstream */
    if (m->cseq_method == SIP_METHOD_INVITE && m->status >= 200 && m->status < 300)
        forward_stateless(w, m, buf);
    else
        STAT_INC(w, dropped);
}
