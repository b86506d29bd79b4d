/* sipload's UAC role: calls (INVITE / 1xx / 200 / ACK / BYE / 200) started
 * open loop from a token bucket, with the RFC 3261 UDP retransmissions. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/sipload/sipload.h"
#include "core/sipuri.h"

#define call_of(tp) ((struct sl_call *)(void *)((char *)(tp)-offsetof(struct sl_call, t)))

static void call_timer(struct worker *w, struct timer *t);

/* The local address a socket towards dst would use (no --src-addrs). */
static int local_towards(const struct netaddr *dst, struct netaddr *out)
{
    int fd = socket(dst->sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof out->in6;
    int rc = fd >= 0 && connect(fd, &dst->sa, dst->len) == 0 && getsockname(fd, &out->sa, &len) == 0
                 ? 0
                 : -1;
    if (fd >= 0) close(fd);
    out->len = len;
    return rc;
}

static void sender_ready(struct sl_thread *th, struct sl_sender *s, const struct netaddr *local)
{
    msg_via(s->via, sizeof s->via, s->proto, local);
    msg_contact(s->contact, sizeof s->contact, "sipload", s->proto, local);
    msg_invite_tmpl(&s->invite, th->o, s, th->id, th->o->to_phones);
    s->up = true;
}

static int open_senders(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    th->nsenders = o->senders;
    th->senders = calloc(th->nsenders, sizeof *th->senders);
    if (!th->senders) return -1;
    for (unsigned i = 0; i < th->nsenders; i++) {
        struct sl_sender *s = &th->senders[i];
        struct netaddr src;
        s->proto = o->proto;
        if (o->proto != SL_UDP) {
            s->c = net_connect(th, &o->proxy, o->proto, ROLE_UAC);
            if (!s->c) return -1;
            s->c->sender = (int)i;
            continue;
        }
        if (!net_src_addr(th, &o->proxy, &src)) {
            if (local_towards(&o->proxy, &src) < 0) return -1;
            src.in4.sin_port = 0;
            if (src.sa.sa_family == AF_INET6) src.in6.sin6_port = 0;
        }
        s->u = net_udp_open(th, &src, false);
        if (!s->u) return -1;
        sender_ready(th, s, &s->u->local);
    }
    return 0;
}

int uac_setup(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    if (o->mode != SL_MODE_CALL) return 0;
    th->ncalls = (o->max_concurrent + th->run->nthreads - 1) / th->run->nthreads;
    th->calls = calloc(th->ncalls, sizeof *th->calls);
    th->freelist = calloc(th->ncalls, sizeof *th->freelist);
    if (!th->calls || !th->freelist) return -1;
    th->next_callee = (uint32_t)th->id;
    return open_senders(th);
}

void uac_sender_up(struct sl_thread *th, int sender, struct sl_conn *c)
{
    if (sender < 0 || (unsigned)sender >= th->nsenders) return;
    sender_ready(th, &th->senders[sender], &c->local);
}

void uac_sender_down(struct sl_thread *th, int sender)
{
    if (sender < 0 || (unsigned)sender >= th->nsenders) return;
    th->senders[sender].up = false;
    th->senders[sender].c = NULL;
}

uint32_t uac_live(const struct sl_thread *th)
{
    return th->calls_hw - th->nfree;
}

/* A free call slot: a released one, else one never used; NULL at the cap. */
static struct sl_call *alloc_call(struct sl_thread *th)
{
    if (th->nfree) return &th->calls[th->freelist[--th->nfree]];
    if (th->calls_hw == th->ncalls) return NULL;
    struct sl_call *c = &th->calls[th->calls_hw++];
    timer_init(&c->t, call_timer);
    return c;
}

static struct sl_peer peer_of(const struct sl_thread *th, const struct sl_sender *s)
{
    struct sl_peer p = {.u = s->u, .c = s->c};
    if (s->u) p.src = th->o->proxy;
    return p;
}

static void free_call(struct sl_thread *th, struct sl_call *c)
{
    timer_cancel(&c->t);
    c->state = CALL_FREE;
    th->freelist[th->nfree++] = (uint32_t)(c - th->calls);
}

static void fail(struct sl_thread *th, struct sl_call *c, int code)
{
    th->st.calls_failed++;
    if (code >= 300 && code < 700) {
        th->st.fail_status++;
        th->st.codes[code]++;
    } else if (!th->senders[c->sender].up) {
        th->st.fail_conn++;
    } else {
        th->st.fail_timeout++;
    }
    free_call(th, c);
}

static uint64_t id_of(const struct sl_thread *th, const struct sl_call *c)
{
    return sl_call_id((uint32_t)(c - th->calls), c->gen);
}

static bool send_invite(struct sl_thread *th, struct sl_call *c)
{
    struct sl_sender *s = &th->senders[c->sender];
    if (!s->up) return false;
    struct sl_peer p = peer_of(th, s);
    struct buf b = out_open(th, &p);
    uint64_t vals[TF__COUNT] = {id_of(th, c), c->callee};
    b.len = tmpl_render(&s->invite, b.p, b.cap, vals);
    if (b.len == 0) b.overflow = true;
    out_commit(th, &p, &b);
    return buf_ok(&b);
}

static bool send_ack_bye(struct sl_thread *th, struct sl_call *c, bool bye)
{
    struct sl_sender *s = &th->senders[c->sender];
    if (!s->up) return false;
    struct sl_peer p = peer_of(th, s);
    struct buf b = out_open(th, &p);
    msg_ack_bye(&b, th->o, s, th->id, c, id_of(th, c), bye);
    out_commit(th, &p, &b);
    return buf_ok(&b);
}

/* Round robin over the senders that are up; -1 when none is. */
static int pick_sender(struct sl_thread *th)
{
    for (unsigned k = 0; k < th->nsenders; k++) {
        unsigned i = th->rr++ % th->nsenders;
        if (th->senders[i].up) return (int)i;
    }
    return -1;
}

static void arm(struct sl_thread *th, struct sl_call *c, uint64_t at_ms)
{
    timer_arm_at(&th->wheel, &c->t, at_ms < c->deadline_ms ? at_ms : c->deadline_ms);
}

static void start_call(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    int sender = pick_sender(th);
    struct sl_call *c = sender >= 0 ? alloc_call(th) : NULL;
    if (!c) {
        th->st.not_started++;
        return;
    }
    c->gen++;
    c->sender = (uint16_t)sender;
    c->callee = 0;
    if (o->to_phones) {
        c->callee = th->next_callee % o->phones;
        th->next_callee += th->run->nthreads;
    }
    c->state = CALL_INVITING;
    c->t_invite_ns = th->now_ns;
    c->deadline_ms = th->now_ms + o->timeout_ms;
    c->rtx_ms = SL_T1_MS;
    th->st.calls_started++;
    if (!send_invite(th, c)) {
        fail(th, c, 0);
        return;
    }
    arm(th, c, th->senders[sender].proto == SL_UDP ? th->now_ms + SL_T1_MS : c->deadline_ms);
}

void uac_pump(struct sl_thread *th, uint64_t until_ns)
{
    if (!th->generating) return;
    unsigned n = tb_take(&th->tb, until_ns, th->tb.rate > 0 ? UINT_MAX : th->ncalls - uac_live(th));
    while (n--)
        start_call(th);
}

/* The 200's dialog: its To line (with the UAS's tag), the remote target
 * (its Contact) and the route set (its Record-Route, reversed). false
 * when one is missing or does not fit. */
bool uac__save_dialog(struct sl_call *c, const struct sip_msg *m)
{
    const struct sip_hdr *to = sipmsg_hdr(m, SIP_HDR_TO), *ct = sipmsg_hdr(m, SIP_HDR_CONTACT);
    struct sip_addr ca;
    if (!to || !ct || to->line.len > sizeof c->to || sipuri_parse_addr(ct->value, &ca) < 0 ||
        ca.uri_text.len > sizeof c->target)
        return false;
    memcpy(c->to, to->line.ptr, to->line.len);
    c->to_len = (uint16_t)to->line.len;
    memcpy(c->target, ca.uri_text.ptr, ca.uri_text.len);
    c->target_len = (uint16_t)ca.uri_text.len;
    struct buf b = buf_make(c->route, sizeof c->route);
    unsigned n = sipmsg_hdr_count(m, SIP_HDR_RECORD_ROUTE);
    if (n) buf_puts(&b, "Route: ");
    for (unsigned i = n; i-- > 0;) {
        buf_put_slice(&b, sipmsg_hdr_nth(m, SIP_HDR_RECORD_ROUTE, i)->value);
        buf_puts(&b, i ? ", " : "\r\n");
    }
    c->route_len = (uint16_t)b.len;
    return buf_ok(&b);
}

static void send_bye(struct sl_thread *th, struct sl_call *c)
{
    c->state = CALL_BYE;
    c->deadline_ms = th->now_ms + th->o->timeout_ms;
    c->rtx_ms = SL_T1_MS;
    if (!send_ack_bye(th, c, true)) {
        fail(th, c, 0);
        return;
    }
    arm(th, c, th->senders[c->sender].proto == SL_UDP ? th->now_ms + SL_T1_MS : c->deadline_ms);
}

static void on_invite_response(struct sl_thread *th, struct sl_call *c, const struct sip_msg *m)
{
    bool early = c->state == CALL_INVITING || c->state == CALL_PROCEEDING;
    if (m->status < 200) {
        if (c->state == CALL_INVITING) {
            c->state = CALL_PROCEEDING; /* no more INVITE retransmissions */
            arm(th, c, c->deadline_ms);
        }
        return;
    }
    if (m->status >= 300) { /* acknowledged hop by hop, the call failed */
        struct sl_sender *s = &th->senders[c->sender];
        struct sl_peer p = peer_of(th, s);
        struct buf b = out_open(th, &p);
        msg_ack_non2xx(&b, th->o, s, th->id, id_of(th, c), c->callee, m);
        out_commit(th, &p, &b);
        if (early) fail(th, c, m->status);
        return;
    }
    if (!early) { /* a retransmitted 200: our ACK was lost */
        th->st.rtx_rcvd++;
        send_ack_bye(th, c, false);
        return;
    }
    hist_add(&th->st.h_setup, th->now_ns - c->t_invite_ns);
    if (!uac__save_dialog(c, m)) {
        th->st.build_errors++;
        fail(th, c, 0);
        return;
    }
    if (!send_ack_bye(th, c, false)) {
        fail(th, c, 0);
        return;
    }
    c->state = CALL_ESTABLISHED;
    if (th->o->hold_ms == 0) {
        send_bye(th, c);
        return;
    }
    c->deadline_ms = th->now_ms + th->o->hold_ms;
    arm(th, c, c->deadline_ms);
}

void uac_on_response(struct sl_thread *th, const struct sip_msg *m)
{
    uint64_t id;
    struct slice cid = m->call_id;
    /* ours: 16 hex digits of slot and generation, then "-<thread>" */
    if (!sl_parse_id(cid, &id) || cid.len < TF_ID_W + 3 || cid.ptr[TF_ID_W] != '-' || !th->calls) {
        th->st.stray++;
        return;
    }
    uint32_t idx = (uint32_t)id, gen = (uint32_t)(id >> 32);
    struct sl_call *c = idx < th->ncalls ? &th->calls[idx] : NULL;
    if (!c || c->gen != gen || c->state == CALL_FREE) {
        th->st.stray++; /* late: a retransmission for a call already over */
        return;
    }
    if (m->cseq_method == SIP_METHOD_INVITE) {
        on_invite_response(th, c, m);
    } else if (m->cseq_method == SIP_METHOD_BYE && c->state == CALL_BYE) {
        if (m->status < 200) return;
        if (m->status >= 300) {
            fail(th, c, m->status);
            return;
        }
        th->st.calls_ok++;
        free_call(th, c);
    } else {
        th->st.stray++;
    }
}

static void call_timer(struct worker *w, struct timer *t)
{
    struct sl_thread *th = sl_thread_of(w);
    struct sl_call *c = call_of(t);
    bool udp = th->senders[c->sender].proto == SL_UDP;

    if (c->state == CALL_ESTABLISHED) { /* the call's hold time is over */
        send_bye(th, c);
        return;
    }
    if (th->now_ms >= c->deadline_ms || !udp || c->state == CALL_PROCEEDING) {
        fail(th, c, 0);
        return;
    }
    /* Timer A (INVITE, doubling) or E (BYE, doubling up to T2) */
    th->st.rtx_sent++;
    if (c->state == CALL_INVITING ? !send_invite(th, c) : !send_ack_bye(th, c, true)) {
        fail(th, c, 0);
        return;
    }
    c->rtx_ms *= 2;
    if (c->state == CALL_BYE && c->rtx_ms > SL_T2_MS) c->rtx_ms = SL_T2_MS;
    arm(th, c, th->now_ms + c->rtx_ms);
}
