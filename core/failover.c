/* A request to a SIP Server target that gets no response at all within
 * --failover-timeout, or a 503 before anything but 100 Trying, goes to the
 * next target within the same transaction (RFC 3263 §4.3); and what the
 * traffic showed about each target goes to the owner of upstream health
 * (worker 0). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/proxy-int.h"

/* A worker tells the owner that a target it does not see up answered at
 * most this often (until the owner's state shows it up); the heartbeat of
 * targets up goes through upstream__answered(), without a message. */
#define ANSWERED_TELL_MS 50

/* Hands what traffic showed about target (proto, addr) of SIP Server i to
 * the owner: directly on worker 0, else through the ring (a full ring loses
 * the report; the next one will do). */
static void tell_owner(struct worker *w, unsigned i, uint8_t proto, const struct netaddr *addr,
                       uint8_t what)
{
    struct upstream_report r = {.what = what, .idx = (uint8_t)i, .proto = proto, .addr = *addr};
    if (w->id == 0) {
        upstream__on_report(w, &r, sizeof r);
        return;
    }
    struct worker_msg *m = worker_msg_new(sizeof r);
    if (!m) return;
    m->kind = WMSG_LAYER;
    memcpy(m->data, &r, sizeof r);
    if (worker_post(w, 0, m) < 0) worker_msg_free(m);
}

/* x's current target in this worker's copy of the state, or -1. */
static int target_of(const struct worker *w, const struct txn *x)
{
    const struct upstream_set *s = &proxy__of(w)->ups;
    if (x->upstream_idx >= s->nup) return -1;
    return upstream_target_of(&s->up[x->upstream_idx], x->out_proto, &x->out_dst);
}

/* The bit of `tried` for target t of SIP Server i. */
static uint16_t tried_bit(unsigned i, unsigned t)
{
    return (uint16_t)(1u << (i * DNS_MAX_TARGETS + t));
}

/* x's target answered (any response but a 503): noted for the owner, and
 * told at once when this worker's copy does not show it up. */
static void answered(struct worker *w, const struct txn *x)
{
    struct proxy_worker *p = w->layer;
    int t = target_of(w, x);
    if (t < 0) return;
    upstream__answered(w, x->upstream_idx, (unsigned)t);
    if (p->ups.up[x->upstream_idx].tg[t].state == UPSTREAM_UP) return;
    upstream__sync(w); /* the owner may have said so meanwhile */
    if ((t = target_of(w, x)) < 0 || p->ups.up[x->upstream_idx].tg[t].state == UPSTREAM_UP) return;
    uint64_t *told = &p->answered_told_ms[x->upstream_idx][t];
    if (*told && w->now_ms < *told + ANSWERED_TELL_MS) return;
    *told = w->now_ms;
    tell_owner(w, x->upstream_idx, x->out_proto, &x->out_dst, UPSTREAM_WHY_ANSWERED);
}

/* x's target failed it (`what`: no response in time, or 503): tell the
 * owner, which takes it out of service, stop using it on this worker at
 * once, and never try it again for x. */
static void failed(struct worker *w, struct txn *x, uint8_t what)
{
    int t = target_of(w, x);
    if (t >= 0) x->tried |= tried_bit(x->upstream_idx, (unsigned)t);
    tell_owner(w, x->upstream_idx, x->out_proto, &x->out_dst, what);
    upstream__local_down(w, x->upstream_idx, x->out_proto, &x->out_dst);
}

/* Sends x to target t of SIP Server i (this worker's copy of the state)
 * under a new branch; Timer B/F keeps running from the first attempt.
 * False when it could not go there. */
static bool retarget(struct worker *w, struct txn *x, unsigned i, unsigned t)
{
    struct proxy_worker *p = w->layer;
    const struct upstream *u = &p->ups.up[i];
    struct route_plan rp = {.proto = u->tg[t].t.proto,
                            .dst = u->tg[t].t.addr,
                            .to_upstream = true,
                            .upstream_idx = i,
                            .from_endpoint = x->orig_from_endpoint,
                            .npop = x->orig_npop};
    memcpy(rp.tls_name, u->tls_name, sizeof rp.tls_name);
    uint32_t gen = x->gen;
    txn_rebranch(&p->txns, x);
    if (forward__rebuild(w, x, &rp) < 0) {
        x->gen = gen;
        return false;
    }
    timer_cancel(&x->t_retx);
    x->state = TXN_TRYING; /* nothing back from the new target yet */
    x->provisional_seen = false;
    if (txn__send_client(w, x, x->req, x->req_len) < 0) return false;
    if (x->out_proto == SIP_TRANSPORT_UDP) {
        x->retx_ms = T1_MS;
        worker_timer_arm(w, &x->t_retx, T1_MS); /* Timer A / E again */
    }
    failover__arm(w, x);
    STAT_INC(w, failovers);
    return true;
}

/* Sends x on to the next target that is not down and was not tried. False
 * when there is none (x waits for its Timer B/F). */
static bool fail_over(struct worker *w, struct txn *x)
{
    struct proxy_worker *p = w->layer;
    char from[NETADDR_STRLEN], to[NETADDR_STRLEN];
    unsigned i, t;
    netaddr_str(&x->out_dst, from, sizeof from);
    upstream__sync(w); /* the report of the failure may have been taken already */
    while (x->orig && upstream_next(&p->ups, x->upstream_idx, x->tried, &i, &t)) {
        x->tried |= tried_bit(i, t);
        netaddr_str(&p->ups.up[i].tg[t].t.addr, to, sizeof to);
        if (retarget(w, x, i, t)) {
            LOG_RL(LOG_WARN, "%s to %s: %s did not answer, sent on to %s",
                   x->invite ? "INVITE" : "request", p->ups.up[i].host, from, to);
            return true;
        }
    }
    return false;
}

static unsigned timeout_ms(const struct worker *w)
{
    return w->cfg->failover_timeout_ms ? w->cfg->failover_timeout_ms : 2000;
}

void failover__arm(struct worker *w, struct txn *x)
{
    worker_timer_arm(w, &x->t_failover, timeout_ms(w));
}

/* No response at all came for x, but the worker is behind on what the
 * target sent: over a stream, bytes from the target wait unread on x's
 * connection; over UDP, this worker's own receive queue overflowed within
 * the last --failover-timeout (it may have dropped the answer). Blaming
 * the target would turn the proxy's own overload into 503s for everyone;
 * its OPTIONS probes still judge it. True when x's silence is excused so
 * (counted, logged). */
static bool own_overflow(struct worker *w, const struct txn *x)
{
    const char *why;
    uint64_t t;
    if (x->out_proto != SIP_TRANSPORT_UDP && worker_conn_unread(w, x->out_conn))
        why = "bytes from it wait unread on its connection";
    else if (x->out_proto == SIP_TRANSPORT_UDP && (t = worker_rx_overflow_ms(w)) &&
             w->now_ms - t <= timeout_ms(w))
        why = "this worker's own UDP receive queue overflowed";
    else
        return false;
    char a[NETADDR_STRLEN];
    netaddr_str(&x->out_dst, a, sizeof a);
    STAT_INC(w, failover_excused);
    LOG_RL(LOG_WARN,
           "no response from %s within --failover-timeout while %s (this worker is "
           "overloaded): not marked down",
           a, why);
    return true;
}

void failover__on_timer(struct worker *w, struct timer *tm)
{
    struct txn *x = (struct txn *)((char *)tm - offsetof(struct txn, t_failover));
    /* only when nothing at all came back: a provisional means the target
     * has the request, and CANCEL semantics say leave it there */
    if (x->state != TXN_TRYING || x->provisional_seen || own_overflow(w, x)) return;
    failed(w, x, UPSTREAM_WHY_TIMEOUT);
    if (!x->cancel_pending) fail_over(w, x);
}

void failover__timed_out(struct worker *w, struct txn *x)
{
    if (!timer_armed(&x->t_failover)) return;
    timer_cancel(&x->t_failover);
    if (x->state == TXN_TRYING && !x->provisional_seen && !own_overflow(w, x))
        failed(w, x, UPSTREAM_WHY_TIMEOUT);
}

bool failover__response(struct worker *w, struct txn *x, const struct sip_msg *m, int code)
{
    if (x->state == TXN_COMPLETED) return false; /* a retransmitted final */
    timer_cancel(&x->t_failover);
    if (code != 503) {
        answered(w, x);
        if (code > 100) { /* the request is served there: no failover any more */
            free(x->orig);
            x->orig = NULL;
        }
        return false;
    }
    /* 503 (RFC 3263 §4.3): with Retry-After the server says it is
     * unavailable, so it goes out of service; without, it refused this
     * request only. Either way the request tries the next target while the
     * sender has seen nothing from this one but our 100 Trying. */
    int t = target_of(w, x);
    if (m->count[SIP_HDR_RETRY_AFTER])
        failed(w, x, UPSTREAM_WHY_503);
    else if (t >= 0)
        x->tried |= tried_bit(x->upstream_idx, (unsigned)t);
    unsigned ni, nt;
    upstream__sync(w);
    if (x->resp_status > 100 || x->cancel_pending || x->cancelled || !x->orig ||
        !upstream_next(&proxy__of(w)->ups, x->upstream_idx, x->tried, &ni, &nt))
        return false; /* relayed */
    const struct sip_hdr *th = sipmsg_hdr(m, SIP_HDR_TO);
    if (x->invite) txn__send_ack(w, x, th ? th->value : SLICE_NULL); /* hop by hop */
    return fail_over(w, x);
}

void failover__unreachable(struct worker *w, const struct netaddr *dst)
{
    const struct upstream_set *s = &proxy__of(w)->ups;
    for (unsigned i = 0; i < s->nup; i++) {
        if (upstream_target_of(&s->up[i], SIP_TRANSPORT_UDP, dst) < 0) continue;
        tell_owner(w, i, SIP_TRANSPORT_UDP, dst, UPSTREAM_WHY_UNREACHABLE);
        upstream__local_down(w, i, SIP_TRANSPORT_UDP, dst);
    }
}
