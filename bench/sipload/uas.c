/* sipload's UAS role: answers INVITE with 180 and 200, other requests with
 * 200, ACK with nothing, from no state but this: over UDP a 200 to an
 * INVITE is resent until its ACK comes (as any UAS core does), so one lost
 * datagram does not fail a call. Phones answer the same way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sipload/sipload.h"
#include "core/hash.h"

#define UAS_BUCKETS 65536
#define CID_MAX     128 /* longer Call-IDs are answered but not tracked */

struct uas_2xx {
    struct timer t;              /* the owner's: resend, then release */
    struct uas_2xx *hnext;       /* the table's chain, under its lock */
    struct uas_2xx *prev, *next; /* the owner's list */
    struct sl_thread *owner;
    uint64_t hash;
    bool acked, linked; /* under the table's lock */
    uint32_t cseq, rtx_ms, waited_ms;
    struct sl_udp *u;
    struct netaddr dst;
    uint16_t cid_len, len180, len200;
    char cid[CID_MAX];
    char msg[]; /* the 180, then the 200 */
};

static __thread char uas_contact[160];

int uas_table_init(struct uas_table *t)
{
    t->b = calloc(UAS_BUCKETS, sizeof *t->b);
    t->mask = UAS_BUCKETS - 1;
    return t->b && pthread_mutex_init(&t->lock, NULL) == 0 ? 0 : -1;
}

void uas_table_free(struct uas_table *t)
{
    if (!t->b) return;
    free(t->b);
    t->b = NULL;
    pthread_mutex_destroy(&t->lock);
}

int uas_setup(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    if (!o->uas) return 0;
    msg_contact(uas_contact, sizeof uas_contact, "uas", o->uas_proto, &o->uas_addr);
    if (o->uas_proto == SL_UDP) {
        th->uas_udp = net_udp_open(th, &o->uas_addr, true);
        return th->uas_udp ? 0 : -1;
    }
    return net_listen(th, &th->uas_lis, &o->uas_addr, o->uas_proto);
}

/* ---- the table (call with its lock held) ---- */

static struct uas_2xx *find(struct uas_table *t, uint64_t hash, struct slice cid)
{
    for (struct uas_2xx *e = t->b[hash & t->mask]; e; e = e->hnext)
        if (e->hash == hash && slice_eq(slice_make(e->cid, e->cid_len), cid)) return e;
    return NULL;
}

static void unlink_entry(struct uas_table *t, struct uas_2xx *e)
{
    struct uas_2xx **pp = &t->b[e->hash & t->mask];
    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    e->linked = false;
}

/* ---- the owner's side ---- */

static void release(struct sl_thread *th, struct uas_2xx *e)
{
    timer_cancel(&e->t);
    if (e->prev)
        e->prev->next = e->next;
    else
        th->uas_owned = e->next;
    if (e->next) e->next->prev = e->prev;
    free(e);
}

static void resend(struct worker *w, struct timer *tm)
{
    struct sl_thread *th = sl_thread_of(w);
    struct uas_2xx *e = (struct uas_2xx *)(void *)tm; /* t is the first member */
    struct uas_table *t = &th->run->uas;
    bool acked, give_up = e->waited_ms >= 64 * SL_T1_MS; /* Timer H */

    pthread_mutex_lock(&t->lock);
    acked = e->acked;
    if (!acked && give_up) unlink_entry(t, e);
    pthread_mutex_unlock(&t->lock);
    if (acked || give_up) {
        if (!acked) th->st.uas_unacked++;
        release(th, e);
        return;
    }
    struct sl_peer p = {.u = e->u, .src = e->dst};
    struct buf b = out_open(th, &p);
    buf_put(&b, e->msg + e->len180, e->len200);
    out_commit(th, &p, &b);
    th->st.uas_rtx++;
    e->waited_ms += e->rtx_ms;
    e->rtx_ms = e->rtx_ms * 2 > SL_T2_MS ? SL_T2_MS : e->rtx_ms * 2;
    timer_arm_at(&th->wheel, &e->t, th->now_ms + e->rtx_ms);
}

/* Keeps the 180 and 200 just queued to p for m, to resend the 200. */
static void keep(struct sl_thread *th, const struct sl_peer *p, const struct sip_msg *m,
                 uint64_t hash, struct slice r180, struct slice r200)
{
    struct uas_table *t = &th->run->uas;
    struct uas_2xx *e = malloc(sizeof *e + r180.len + r200.len);
    if (!e) return;
    memset(e, 0, sizeof *e);
    e->owner = th;
    e->hash = hash;
    e->cseq = m->cseq;
    e->u = p->u;
    e->dst = p->src;
    e->rtx_ms = SL_T1_MS;
    e->cid_len = (uint16_t)m->call_id.len;
    memcpy(e->cid, m->call_id.ptr, m->call_id.len);
    e->len180 = (uint16_t)r180.len;
    e->len200 = (uint16_t)r200.len;
    memcpy(e->msg, r180.ptr, r180.len);
    memcpy(e->msg + r180.len, r200.ptr, r200.len);
    timer_init(&e->t, resend);
    e->next = th->uas_owned;
    if (e->next) e->next->prev = e;
    th->uas_owned = e;
    pthread_mutex_lock(&t->lock);
    e->hnext = t->b[hash & t->mask];
    t->b[hash & t->mask] = e;
    e->linked = true;
    pthread_mutex_unlock(&t->lock);
    timer_arm_at(&th->wheel, &e->t, th->now_ms + e->rtx_ms);
}

void uas_cleanup(struct sl_thread *th)
{
    struct uas_table *t = &th->run->uas;
    while (th->uas_owned) {
        struct uas_2xx *e = th->uas_owned;
        pthread_mutex_lock(&t->lock);
        if (e->linked) unlink_entry(t, e);
        pthread_mutex_unlock(&t->lock);
        release(th, e);
    }
}

/* ---- answering ---- */

/* Queues one response to m for p; its bytes, empty when none was queued. */
static struct slice answer(struct sl_thread *th, const struct sl_peer *p, const struct sip_msg *m,
                           int code, const char *reason, const char *contact, const char *tag,
                           bool sdp)
{
    struct buf b = out_open(th, p);
    msg_response(&b, m, code, reason, contact, tag, sdp && th->o->sdp,
                 m->method == SIP_METHOD_REGISTER);
    out_commit(th, p, &b);
    return buf_ok(&b) ? slice_make(b.p, b.len) : SLICE_NULL;
}

/* An INVITE over UDP: its 180 and 200 again when it is a retransmission
 * whose 200 still waits for the ACK, else new ones, kept for resending. */
static void invite_udp(struct sl_thread *th, const struct sl_peer *p, const struct sip_msg *m,
                       const char *contact, const char *tag)
{
    struct uas_table *t = &th->run->uas;
    bool track = t->b && m->call_id.len <= CID_MAX;
    uint64_t hash = track ? hash_slice(m->call_id) : 0;
    if (track) {
        pthread_mutex_lock(&t->lock);
        struct uas_2xx *e = find(t, hash, m->call_id);
        if (e) {
            struct buf b = out_open(th, p);
            buf_put(&b, e->msg, e->len180);
            out_commit(th, p, &b);
            b = out_open(th, p);
            buf_put(&b, e->msg + e->len180, e->len200);
            out_commit(th, p, &b);
        }
        pthread_mutex_unlock(&t->lock);
        if (e) return;
    }
    struct slice r180 = answer(th, p, m, 180, "Ringing", contact, tag, false);
    struct slice r200 = answer(th, p, m, 200, "OK", contact, tag, true);
    if (track && r180.len && r200.len) keep(th, p, m, hash, r180, r200);
}

/* An ACK over UDP: its 200 is no longer resent. */
static void ack_udp(struct sl_thread *th, const struct sip_msg *m)
{
    struct uas_table *t = &th->run->uas;
    if (!t->b || m->call_id.len > CID_MAX) return;
    uint64_t hash = hash_slice(m->call_id);
    struct sl_thread *owner = NULL;
    pthread_mutex_lock(&t->lock);
    struct uas_2xx *e = find(t, hash, m->call_id);
    if (e && e->cseq == m->cseq) {
        unlink_entry(t, e);
        e->acked = true;
        owner = e->owner; /* e is the owner's to free: read it under the lock */
    }
    pthread_mutex_unlock(&t->lock);
    if (owner == th) release(th, e); /* else its owner's timer does */
}

void uas_on_request(struct sl_thread *th, const struct sl_peer *p, const struct sip_msg *m,
                    const char *contact, const char *tag)
{
    th->st.uas_requests++;
    if (m->method == SIP_METHOD_ACK) {
        if (p->u) ack_udp(th, m);
        return;
    }
    if (!contact) contact = uas_contact;
    if (!tag) tag = "sl-uas";
    if (m->method == SIP_METHOD_INVITE && p->u) {
        invite_udp(th, p, m, contact, tag);
    } else if (m->method == SIP_METHOD_INVITE) {
        answer(th, p, m, 180, "Ringing", contact, tag, false);
        answer(th, p, m, 200, "OK", contact, tag, true);
    } else {
        answer(th, p, m, 200, "OK", NULL, tag, false);
    }
}
