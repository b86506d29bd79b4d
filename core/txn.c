/* Transactions (RFC 3261 §17): the table, sends, Timers A-K, CANCEL/ACK, lingering. */
#include "core/txn.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/proxy-int.h"
#include "core/reply.h"

#define SWEEP_MS 250 /* granularity of freeing finished transactions */

static void on_sweep(struct worker *w, struct timer *t);
static void on_retx(struct worker *w, struct timer *t);
static void on_timeout(struct worker *w, struct timer *t);

/* ---- the table ------------------------------------------------------------ */

/* The owner's gauge and counter, when the table has an owner (one writer:
 * a plain load and store, as STAT_ADD). */
static void stat_update(struct txn_table *t, bool created)
{
    if (!t->stats) return;
    atomic_store_explicit(&t->stats->txns_live, t->live, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&t->stats->txns_created, memory_order_relaxed);
    atomic_store_explicit(&t->stats->txns_created, n + created, memory_order_relaxed);
}

int txn_table_init(struct txn_table *t, uint32_t max, uint64_t max_bytes)
{
    memset(t, 0, sizeof *t);
    t->max = max;
    t->max_bytes = max_bytes;
    t->nbuckets = 1024; /* doubled as transactions come (rehash) */
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    timer_init(&t->sweep, on_sweep);
    return t->buckets ? 0 : -ENOMEM;
}

void txn_table_cleanup(struct txn_table *t)
{
    timer_cancel(&t->sweep);
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i]) txn_free(t, t->slots[i]);
    free(t->slots);
    free(t->gens);
    free(t->free_list);
    free(t->buckets);
    free(t->chain);
    free(t->hash);
    memset(t, 0, sizeof *t);
}

/* *a resized to n entries; -ENOMEM leaves it as it was. */
static int realloc_u32(uint32_t **a, uint32_t n)
{
    uint32_t *p = realloc(*a, n * sizeof *p);
    if (!p) return -ENOMEM;
    *a = p;
    return 0;
}

static int grow(struct txn_table *t)
{
    uint32_t ncap = t->cap ? t->cap * 2 : 1024;
    if (ncap > t->max) ncap = t->max;
    if (ncap <= t->cap) return -ENOSPC;
    struct txn **s = realloc(t->slots, ncap * sizeof *s);
    if (!s) return -ENOMEM;
    t->slots = s;
    if (realloc_u32(&t->gens, ncap) < 0 || realloc_u32(&t->free_list, ncap) < 0 ||
        realloc_u32(&t->chain, ncap) < 0)
        return -ENOMEM;
    uint64_t *h = realloc(t->hash, ncap * sizeof *h);
    if (!h) return -ENOMEM;
    t->hash = h;
    for (uint32_t i = t->cap; i < ncap; i++) {
        t->slots[i] = NULL;
        t->gens[i] = 1;
    }
    t->cap = ncap;
    return 0;
}

/* Doubles the buckets once transactions outnumber them, so a chain holds
 * about one however many are live (the keyed hash keeps crafted keys from
 * piling onto one chain). On allocation failure the chains just grow. */
static void rehash(struct txn_table *t)
{
    uint32_t n = t->nbuckets * 2;
    uint32_t *b = calloc(n, sizeof *b);
    if (!b) return;
    for (uint32_t s = 0; s < t->nslots; s++) {
        if (!t->slots[s]) continue;
        uint32_t i = (uint32_t)t->hash[s] & (n - 1);
        t->chain[s] = b[i];
        b[i] = s + 1;
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

enum txn_admit txn_table_admit(const struct txn_table *t, size_t bytes)
{
    if (t->live >= t->max) return TXN_ADMIT_COUNT;
    if (t->bytes + sizeof(struct txn) + bytes > t->max_bytes) return TXN_ADMIT_BYTES;
    return TXN_ADMIT_OK;
}

/* 64 bits from the CSPRNG, drawn from a buffer refilled a few hundred bytes
 * at a time (one RAND_bytes call per 32 transactions). */
static uint64_t random64(struct txn_table *t)
{
    if (t->rnd_left == 0) {
        RAND_bytes((uint8_t *)t->rnd, sizeof t->rnd); /* BoringSSL: never fails */
        t->rnd_left = sizeof t->rnd / sizeof t->rnd[0];
    }
    uint64_t v = t->rnd[--t->rnd_left];
    t->rnd[t->rnd_left] = 0; /* used bits do not stay around */
    return v;
}

struct txn *txn_new(struct txn_table *t, const char *key, size_t key_len)
{
    uint32_t slot;
    if (t->live >= t->max) return NULL;
    if (t->nfree) {
        slot = t->free_list[--t->nfree];
    } else {
        if (t->nslots == t->cap && grow(t) < 0) return NULL;
        slot = t->nslots++;
    }
    if (t->live >= t->nbuckets && t->nbuckets < (1u << 24)) rehash(t);
    struct txn *x = calloc(1, sizeof *x);
    char *k = malloc(key_len ? key_len : 1);
    if (!x || !k) {
        free(x);
        free(k);
        t->free_list[t->nfree++] = slot;
        return NULL;
    }
    memcpy(k, key, key_len);
    timer_init(&x->t_retx, on_retx);
    timer_init(&x->t_timeout, on_timeout);
    timer_init(&x->t_failover, failover__on_timer);
    x->slot = slot;
    x->gen = t->gens[slot]++;
    if (t->gens[slot] == 0) t->gens[slot] = 1;
    x->key = k;
    x->key_len = (uint16_t)key_len;
    x->nonce = random64(t);
    t->hash[slot] = hash_bytes(key, key_len);
    uint32_t b = (uint32_t)t->hash[slot] & (t->nbuckets - 1);
    t->chain[slot] = t->buckets[b];
    t->buckets[b] = slot + 1;
    t->slots[slot] = x;
    t->live++;
    t->bytes += sizeof *x + key_len;
    stat_update(t, true);
    return x;
}

void txn_rebranch(struct txn_table *t, struct txn *x)
{
    x->gen = t->gens[x->slot]++;
    if (t->gens[x->slot] == 0) t->gens[x->slot] = 1;
    x->nonce = random64(t); /* a new branch is as unguessable as the first */
}

void txn_free(struct txn_table *t, struct txn *x)
{
    uint32_t *pp = &t->buckets[(uint32_t)t->hash[x->slot] & (t->nbuckets - 1)];
    while (*pp && *pp != x->slot + 1)
        pp = &t->chain[*pp - 1];
    if (*pp) *pp = t->chain[x->slot];
    timer_cancel(&x->t_retx);
    timer_cancel(&x->t_timeout);
    timer_cancel(&x->t_failover);
    t->slots[x->slot] = NULL;
    t->free_list[t->nfree++] = x->slot;
    t->live--;
    t->bytes -= sizeof *x + x->key_len + x->req_len + x->resp_len +
                (x->tls_name ? strlen(x->tls_name) + 1 : 0);
    stat_update(t, false);
    free(x->key);
    free(x->req);
    free(x->resp);
    free(x->tls_name);
    free(x->orig);
    free(x);
}

struct txn *txn_find_key(struct txn_table *t, const char *key, size_t key_len)
{
    uint64_t h = hash_bytes(key, key_len);
    for (uint32_t s = t->buckets[(uint32_t)h & (t->nbuckets - 1)]; s; s = t->chain[s - 1]) {
        if (t->hash[s - 1] != h) continue;
        struct txn *x = t->slots[s - 1];
        if (x->key_len == key_len && memcmp(x->key, key, key_len) == 0) return x;
    }
    return NULL;
}

struct txn *txn_find_slot(struct txn_table *t, uint32_t slot, uint32_t gen)
{
    if (slot >= t->nslots || !t->slots[slot] || t->slots[slot]->gen != gen) return NULL;
    return t->slots[slot];
}

bool txn_table_in_flight(const struct txn_table *t)
{
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i] && t->slots[i]->state != TXN_COMPLETED) return true;
    return false;
}

void txn_keep_response(struct txn_table *t, struct txn *x, const char *buf, size_t len, int status)
{
    char *c = realloc(x->resp, len ? len : 1);
    if (!c) return;
    memcpy(c, buf, len);
    t->bytes = t->bytes - x->resp_len + len;
    x->resp = c;
    x->resp_len = (uint32_t)len;
    x->resp_status = status;
}

int txn_set_request(struct txn_table *t, struct txn *x, const char *buf, size_t len)
{
    char *c = malloc(len ? len : 1);
    if (!c) return -ENOMEM;
    memcpy(c, buf, len);
    free(x->req);
    t->bytes = t->bytes - x->req_len + len;
    x->req = c;
    x->req_len = (uint32_t)len;
    return 0;
}

int txn_set_tls_name(struct txn_table *t, struct txn *x, const char *name)
{
    char *c = name && name[0] ? strdup(name) : NULL;
    if (name && name[0] && !c) return -ENOMEM;
    if (x->tls_name) t->bytes -= strlen(x->tls_name) + 1;
    free(x->tls_name);
    x->tls_name = c;
    if (c) t->bytes += strlen(c) + 1;
    return 0;
}

bool txn__admit(struct worker *w, size_t bytes)
{
    const struct txn_table *t = &proxy__of(w)->txns;
    switch (txn_table_admit(t, bytes)) {
    case TXN_ADMIT_OK:
        return true;
    case TXN_ADMIT_COUNT:
        STAT_LIMIT(w, LIMIT_TRANSACTIONS);
        LOG_RL(LOG_WARN, "new request turned away: %u transactions live (--max-transactions)",
               t->live);
        return false;
    default:
        STAT_LIMIT(w, LIMIT_TRANSACTION_MEMORY);
        LOG_RL(LOG_WARN,
               "new request turned away: transactions keep %llu bytes "
               "(--max-transaction-memory %u MB)",
               (unsigned long long)t->bytes, w->cfg->max_transaction_mb);
        return false;
    }
}

/* ---- sending ---------------------------------------------------------------- */

int txn__send_client(struct worker *w, struct txn *x, const char *buf, size_t len)
{
    conn_ref used = CONN_REF_NONE;
    int rc = worker_send(w, x->out_proto, x->out_listener, &x->out_dst, x->out_conn, x->tls_name,
                         buf, len, &used);
    if (rc == 0 && used != CONN_REF_NONE) x->out_conn = used;
    return rc;
}

void txn__send_server(struct worker *w, struct txn *x, const char *buf, size_t len)
{
    reply__send_back(w, &x->rx, &x->resp_dst, buf, len);
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
    if (!x->req || sipmsg_parse(x->req, x->req_len, &m, hdrs, &lim, SIPMSG_DATAGRAM) < 0)
        return -1; /* shed as it lingers (shed) */
    struct buf b = buf_make(out, cap);
    buf_printf(&b, "%s ", method);
    buf_put_slice(&b, m.ruri);
    buf_puts(&b, " SIP/2.0\r\n");
    const struct sip_hdr *v = sipmsg_hdr(&m, SIP_HDR_VIA);
    if (!v) return -1;
    buf_puts(&b, "Via: ");
    buf_put_slice(&b, v->value);
    buf_puts(&b, "\r\n");
    for (const struct sip_hdr *h = m.hdrs; h < m.hdrs + m.nhdrs; h++) {
        if (h->kind == SIP_HDR_ROUTE || h->kind == SIP_HDR_FROM || h->kind == SIP_HDR_CALL_ID ||
            (h->kind == SIP_HDR_TO && to.len == 0)) {
            buf_put_slice(&b, h->name);
            buf_puts(&b, ": ");
            buf_put_slice(&b, h->value);
            buf_puts(&b, "\r\n");
        }
    }
    if (to.len) {
        buf_puts(&b, "To: ");
        buf_put_slice(&b, to);
        buf_puts(&b, "\r\n");
    }
    buf_printf(&b, "CSeq: %u %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", m.cseq, method);
    return buf_ok(&b) ? (ssize_t)b.len : -1;
}

void txn__send_cancel(struct worker *w, struct txn *x)
{
    ssize_t n = build_hop_request(x, "CANCEL", SLICE_NULL, proxy__of(w)->aux, OUT_CAP);
    if (n > 0) txn__send_client(w, x, proxy__of(w)->aux, (size_t)n);
    x->cancelled = true;
}

void txn__send_ack(struct worker *w, struct txn *x, struct slice to)
{
    ssize_t n = build_hop_request(x, "ACK", to, proxy__of(w)->aux, OUT_CAP);
    if (n > 0) txn__send_client(w, x, proxy__of(w)->aux, (size_t)n);
}

void txn__reply(struct worker *w, struct txn *x, const struct sip_msg *m, int code,
                const char *warning)
{
    struct proxy_worker *p = w->layer;
    ssize_t n = reply_build(m, &x->rx.src, code, warning, NULL, p->aux, OUT_CAP);
    if (n <= 0) return;
    txn__send_server(w, x, p->aux, (size_t)n);
    txn_keep_response(&p->txns, x, p->aux, (size_t)n, code);
}

/* ---- timers ------------------------------------------------------------------ */

/* Frees the lingering transactions whose time is up. One timer for all of
 * them: a list per linger duration is already in expiry order, so finished
 * transactions cost no wheel entry and no wake-up of their own. */
static void on_sweep(struct worker *w, struct timer *t)
{
    struct txn_table *tt = (struct txn_table *)((char *)t - offsetof(struct txn_table, sweep));
    bool more = false;
    for (unsigned k = 0; k < 2; k++) {
        struct txn *x;
        while ((x = tt->linger_head[k]) && x->linger_until <= w->now_ms) {
            tt->linger_head[k] = x->lnext;
            if (!tt->linger_head[k]) tt->linger_tail[k] = NULL;
            txn_free(tt, x);
        }
        more |= tt->linger_head[k] != NULL;
    }
    if (more) worker_timer_arm(w, &tt->sweep, SWEEP_MS);
}

/* What a finished transaction no longer needs, freed as it starts to
 * linger (a worker at R calls/s over UDP holds 64 R of them, RFC 3261 Timers
 * J and L): the request copy, unless an INVITE's non-2xx may come again and
 * need its ACK rebuilt from it; the failover copy; and an accepted INVITE's
 * 2xx, since a retransmitted INVITE is then absorbed without an answer (RFC
 * 6026 §8.5: the UAS retransmits its 2xx itself until the ACK). */
static void shed(struct txn_table *t, struct txn *x, bool accepted)
{
    if (!x->invite || accepted) {
        t->bytes -= x->req_len + (x->tls_name ? strlen(x->tls_name) + 1 : 0);
        free(x->req);
        free(x->tls_name);
        x->req = x->tls_name = NULL;
        x->req_len = 0;
    }
    if (accepted) {
        t->bytes -= x->resp_len;
        free(x->resp);
        x->resp = NULL;
        x->resp_len = 0;
    }
    free(x->orig);
    x->orig = NULL;
    x->orig_len = 0;
}

void txn__linger(struct worker *w, struct txn *x)
{
    struct txn_table *tt = &proxy__of(w)->txns;
    timer_cancel(&x->t_retx);
    timer_cancel(&x->t_timeout);
    timer_cancel(&x->t_failover);
    if (x->lingering) return;
    /* Timer J / K / D: absorb retransmissions for a while, then forget. An
     * INVITE answered 2xx stays 64*T1 whatever the transport (RFC 6026
     * Timer L): the UAS retransmits its 2xx end to end until the ACK, and
     * those retransmissions are relayed only through this transaction,
     * which checks where they come from. The lists are by duration, so each
     * stays in expiry order. */
    bool accepted = x->invite && x->resp_status >= 200 && x->resp_status < 300;
    unsigned k = x->rx.proto != SIP_TRANSPORT_UDP && !accepted;
    shed(tt, x, accepted);
    x->lingering = true;
    x->linger_until = w->now_ms + (k ? 1000 : 64 * T1_MS);
    x->lnext = NULL;
    if (tt->linger_tail[k])
        tt->linger_tail[k]->lnext = x;
    else
        tt->linger_head[k] = x;
    tt->linger_tail[k] = x;
    if (!timer_armed(&tt->sweep)) worker_timer_arm(w, &tt->sweep, SWEEP_MS);
}

void txn__arm(struct worker *w, struct txn *x)
{
    if (x->out_proto == SIP_TRANSPORT_UDP) {
        x->retx_ms = T1_MS;
        worker_timer_arm(w, &x->t_retx, T1_MS);
    }
    worker_timer_arm(w, &x->t_timeout, 64 * T1_MS); /* Timer B / F */
    if (x->to_upstream) failover__arm(w, x);
}

static void on_retx(struct worker *w, struct timer *t)
{
    struct txn *x = (struct txn *)((char *)t - offsetof(struct txn, t_retx));
    if (x->state == TXN_COMPLETED) {
        /* Timer G: our non-2xx final response until the ACK arrives */
        if (x->ack_seen || !x->resp) return;
        txn__send_server(w, x, x->resp, x->resp_len);
        x->retx_ms = x->retx_ms * 2 < T2_MS ? x->retx_ms * 2 : T2_MS;
        worker_timer_arm(w, &x->t_retx, x->retx_ms);
        return;
    }
    /* Timer A (INVITE) / E (non-INVITE) */
    if (x->invite && x->state == TXN_PROCEEDING) return;
    txn__send_client(w, x, x->req, x->req_len);
    if (x->invite || x->state == TXN_TRYING) x->retx_ms *= 2;
    if (!x->invite && x->retx_ms > T2_MS) x->retx_ms = T2_MS;
    if (x->state == TXN_PROCEEDING && !x->invite) x->retx_ms = T2_MS;
    worker_timer_arm(w, &x->t_retx, x->retx_ms);
}

/* 408 towards the sender, rebuilt from our forwarded copy minus our own Via. */
static void reply_timeout(struct worker *w, struct txn *x)
{
    struct sip_msg m;
    struct sip_hdr hdrs[MAX_HDRS];
    struct sipmsg_limits lim = {OUT_CAP, MAX_HDRS};
    if (!x->req || sipmsg_parse(x->req, x->req_len, &m, hdrs, &lim, SIPMSG_DATAGRAM) <= 0 ||
        sipmsg_hdr_count(&m, SIP_HDR_VIA) < 2)
        return;
    hdrs[sipmsg_hdr(&m, SIP_HDR_VIA) - hdrs].kind = SIP_HDR_OTHER; /* skip our Via */
    /* the sender's Via in our copy already carries received/rport, so
     * reply_build adds neither a second time */
    txn__reply(w, x, &m, 408, NULL);
}

/* Timer B / F / H, and Timer C once a provisional came. */
static void on_timeout(struct worker *w, struct timer *t)
{
    struct txn *x = (struct txn *)((char *)t - offsetof(struct txn, t_timeout));
    if (x->probe) {
        upstream__probe_timed_out(w, x);
        return;
    }
    if (x->state == TXN_COMPLETED) {
        /* Timer H: no ACK for our non-2xx response */
        txn__linger(w, x);
        return;
    }
    if (x->to_upstream) failover__timed_out(w, x);
    STAT_INC(w, timeouts);
    if (x->invite)
        STAT_INC(w, txn_timeouts_invite);
    else
        STAT_INC(w, txn_timeouts_other);
    if (x->invite && x->provisional_seen && !x->cancelled) txn__send_cancel(w, x); /* Timer C */
    if (!x->invite || !x->resp_status || x->resp_status < 200) reply_timeout(w, x);
    x->state = TXN_COMPLETED;
    x->ack_seen = true; /* no Timer G for a 408 we made; a late ACK is absorbed */
    txn__linger(w, x);
}
