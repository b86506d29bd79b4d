/* Private to the proxy layer: its per-worker state and the helpers its files share. */
#ifndef SIPEDGE_PROXY_INT_H
#define SIPEDGE_PROXY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/proxy.h"
#include "core/route.h"
#include "core/sipmsg.h"
#include "core/txn.h"
#include "core/upstream.h"
#include "core/worker.h"

#define T1_MS      500    /* RFC 3261 Timer T1 */
#define T2_MS      4000   /* RFC 3261 Timer T2 */
#define TIMER_C_MS 180000 /* RFC 3261 §16.6 step 11 */
#define MAX_HDRS   128
#define OUT_CAP    (65536 + 4096)
/* Retry-After of a 503 that says "try again shortly" */
#define PROXY_RETRY_AFTER_S 5
/* what OPTIONS to sipedge itself is answered with */
#define PROXY_ALLOW_HDR "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER\r\n"

struct locmap;
struct flowmap;
struct flowtoken_key;

/* The proxy layer's state on one worker (w->layer). Created by
 * proxy_worker_init() and freed by proxy_worker_cleanup() on the worker's
 * own thread; only that thread touches it. The comment on each field names
 * the file that writes it; any file of the layer may read. */
struct proxy_worker {
    struct txn_table txns; /* core/txn.c (forward.c, upstream.c add entries) */
    /* core/upstream.c: this worker's copy of the SIP Servers' state as the
     * owner of upstream health (worker 0) published it (upstream__sync) */
    struct upstream_set ups;
    uint64_t ups_gen;
    uint64_t ups_hint_ms; /* when this worker marked a target down in ups itself, or 0 */
    /* core/upstream.c, worker 0 only (NULL elsewhere): the owner's state,
     * its probes and its resolutions */
    struct upstream_set *master;
    struct timer probe;   /* OPTIONS service-state checks */
    struct timer resolve; /* re-resolution of names */
    struct timer settle;  /* publication after first probes' answers */
    uint32_t probe_seq;
    /* core/failover.c: when this worker last told the owner that a target
     * it does not see up answered, by SIP Server and target */
    uint64_t answered_told_ms[2][DNS_MAX_TARGETS];
    /* the process-wide maps and key (proxy_global_init()); core/proxy.c sets
     * them at init, read-only afterwards */
    struct locmap *loc;
    struct flowmap *flows;
    const struct flowtoken_key *key;
    bool registrar;           /* core/proxy.c at init: --registrar */
    struct sipmsg_limits lim; /* core/proxy.c at init */
    /* core/route.c: set while a request parked on DNS is processed again */
    bool dns_replay;
    struct route_dns dns_answer;
    /* scratch output, valid during one call: `out` for what is forwarded
     * (requests, responses), `aux` for what sipedge builds (replies, ACK,
     * CANCEL) */
    char out[OUT_CAP];
    char aux[OUT_CAP];
};

/* The proxy layer's state on w (w->layer, which the runtime never reads). */
static inline struct proxy_worker *proxy__of(const struct worker *w)
{
    return (struct proxy_worker *)w->layer;
}

/* Every function below runs on the worker w's own thread and borrows its
 * arguments for the call. */

/* core/proxy.c: parses and handles one message (buf writable, len bytes):
 * the pipeline's entry, also for a request processed again after DNS. */
void proxy__process(struct worker *w, const struct rx_info *rx, char *buf, size_t len);

/* core/reply.c: sends buf back the way rx came (the same connection, or
 * from the same UDP listener to dst). 0 or -errno (logged, rate-limited). */
int reply__send_back(struct worker *w, const struct rx_info *rx, const struct netaddr *dst,
                     const char *buf, size_t len);
/* core/reply.c: answers request m (never an ACK) with reply_build()'s
 * response, counted in own_replies. */
void reply__send(struct worker *w, const struct rx_info *rx, const struct sip_msg *m, int code,
                 const char *warning, const char *extra);
/* core/reply.c: reply__send() with "Retry-After: retry_after_s". */
void reply__send_retry(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                       int code, const char *warning, unsigned retry_after_s);

/* core/txn.c: sends buf to x's next hop (remembering the connection used).
 * 0 or -errno. */
int txn__send_client(struct worker *w, struct txn *x, const char *buf, size_t len);
/* core/txn.c: sends buf to x's sender, where its responses go. */
void txn__send_server(struct worker *w, struct txn *x, const char *buf, size_t len);
/* core/txn.c: answers x's sender with our own response to m (the request,
 * or our forwarded copy) and keeps it for retransmitted requests. */
void txn__reply(struct worker *w, struct txn *x, const struct sip_msg *m, int code,
                const char *warning);
/* core/txn.c: CANCELs x's forwarded INVITE (RFC 3261 §9.1); marks x cancelled. */
void txn__send_cancel(struct worker *w, struct txn *x);
/* core/txn.c: ACKs a non-2xx final response to x's INVITE; `to` is the
 * response's To (empty: the request's). */
void txn__send_ack(struct worker *w, struct txn *x, struct slice to);
/* core/txn.c: whether a new request's transaction (keeping about `bytes`)
 * fits under --max-transactions and --max-transaction-memory; false after
 * counting the limit that bit (and logging it, rate-limited): the caller
 * answers 503 with Retry-After. */
bool txn__admit(struct worker *w, size_t bytes);
/* core/txn.c: arms Timer A/E (UDP next hop) and B/F for a request just sent. */
void txn__arm(struct worker *w, struct txn *x);
/* core/txn.c: a completed x stops its timers and absorbs retransmissions
 * for a while (Timer D/J/K), then the sweep frees it. Idempotent. */
void txn__linger(struct worker *w, struct txn *x);

/* core/upstream.c: parses the configured SIP Servers and peers into
 * proxy__of(w)->ups and starts resolving and probing them. 0, or -EINVAL
 * (logged) for an unusable URI. */
int upstream__worker_init(struct worker *w);
/* core/upstream.c: stops the probe and resolve timers. */
void upstream__worker_cleanup(struct worker *w);
/* core/upstream.c: response `code` to our OPTIONS probe x (owner). */
void upstream__probe_answered(struct worker *w, struct txn *x, int code);
/* core/upstream.c: our OPTIONS probe x went unanswered (owner). */
void upstream__probe_timed_out(struct worker *w, struct txn *x);
/* core/upstream.c: brings proxy__of(w)->ups up to the state the owner
 * published last (a copy, taken when the generation changed). Any worker,
 * online for RCU (as during a loop turn). */
void upstream__sync(struct worker *w);

/* core/upstream.c: target t of SIP Server i (this worker's copy's indexes)
 * answered a request now: noted for the owner without a message. Any
 * worker. */
void upstream__answered(struct worker *w, unsigned i, unsigned t);
/* core/upstream.c: this worker saw target proto/addr of SIP Server i fail
 * a request: its own copy stops using the target at once, before the
 * owner's state says so (or for a second at most, should the owner not). */
void upstream__local_down(struct worker *w, unsigned i, uint8_t proto, const struct netaddr *addr);

/* What a worker's traffic showed about a SIP Server target, for the owner
 * of upstream health: carried in a WMSG_LAYER message (core/failover.c
 * sends it; worker 0 calls upstream__on_report). */
struct upstream_report {
    uint8_t what;  /* UPSTREAM_WHY_ANSWERED, _TIMEOUT or _503 */
    uint8_t idx;   /* SIP Server: 0 primary, 1 backup */
    uint8_t proto; /* the target: transport and address */
    struct netaddr addr;
};
/* core/upstream.c: the owner takes a report (data, len bytes: a struct
 * upstream_report; anything else is ignored). Worker 0 only. */
void upstream__on_report(struct worker *w, const void *data, size_t len);

/* core/failover.c: a datagram to dst drew an ICMP port/host unreachable:
 * a SIP Server target there is out of service at once (this worker's copy,
 * and the owner's state through a report). Other destinations: nothing. */
void failover__unreachable(struct worker *w, const struct netaddr *dst);

/* core/failover.c: arms x's --failover-timeout (a request to a SIP Server
 * target was just sent). */
void failover__arm(struct worker *w, struct txn *x);
/* core/failover.c: x's --failover-timeout passed (x->t_failover's callback). */
void failover__on_timer(struct worker *w, struct timer *t);
/* core/failover.c: response `code` (m) to x, a request sent to a SIP Server
 * target: tells the owner the target answered; a 503 before anything but
 * 100 Trying sends x to the next target (RFC 3263 §4.3). True when it was
 * taken here (x went on to the next target): do not relay it. */
bool failover__response(struct worker *w, struct txn *x, const struct sip_msg *m, int code);
/* core/failover.c: x timed out (Timer B/F) while its failover timer still ran
 * (--failover-timeout above Timer B/F): the target did not answer. */
void failover__timed_out(struct worker *w, struct txn *x);

/* core/route.c: the view route_decide() reads, for w now. */
void route__view(const struct worker *w, struct route_view *v);
/* core/route.c: route_decide() through v; when it asks for a name, resolves
 * it (RFC 3263) and decides again with the answer, or parks a copy of the
 * request (buf, len) and returns ROUTE_PARKED (it is processed again from
 * the start when the answer comes). Never returns ROUTE_RESOLVE. */
enum route_action route__decide(struct worker *w, struct route_view *v, const struct rx_info *rx,
                                const struct sip_msg *m, const char *buf, size_t len,
                                struct route_decision *d);

/* core/forward.c: forwards request m (buf, len as received) along rp,
 * creating its transaction under server key `key` (none for ACK), or
 * answers it when it cannot go (403, 503, 513, 430). */
void forward__request(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                      const char *buf, size_t len, const struct route_plan *rp, const char *key,
                      size_t key_len);

/* core/forward.c: buf (len bytes, writable) is what this worker handed to
 * the owner of connection conn, which could not write it (the connection
 * closed): a request of a live transaction gets 430 Flow Failed at once. */
void forward__undelivered(struct worker *w, conn_ref conn, char *buf, size_t len);
/* core/forward.c: keeps the request as received (buf, len) and what
 * forward__rebuild() needs of plan rp in x, when x may fail over to another
 * SIP Server target; without memory x just does not fail over. */
void forward__keep_original(struct worker *w, struct txn *x, const char *buf, size_t len,
                            const struct route_plan *rp);
/* core/forward.c: forwards x's kept request again along rp (a SIP Server
 * target), under x's current branch (txn_rebranch() first): x->req and its
 * next hop are replaced. 0, or -1 with x unchanged. */
int forward__rebuild(struct worker *w, struct txn *x, const struct route_plan *rp);

/* core/response.c: a parsed response: handed to the worker owning its
 * transaction, or relayed through it. */
void response__handle(struct worker *w, const struct rx_info *rx, struct sip_msg *m,
                      const char *buf, size_t len);

/* core/registrar.c: REGISTER m for the built-in registrar, answered. */
void registrar__register(struct worker *w, const struct rx_info *rx, const struct sip_msg *m);

#endif
