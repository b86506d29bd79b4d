/* sipload's phones: TCP/TLS connections from their own source addresses
 * that register (connect, handshake, REGISTER, 200), then either close (a
 * registration storm) or stay idle with CRLFCRLF keep-alives and answer the
 * calls the proxy delivers on them. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sipload/sipload.h"

#define phone_of(tp) ((struct sl_phone *)(void *)((char *)(tp)-offsetof(struct sl_phone, t)))

static void phone_timer(struct worker *w, struct timer *t);

int phone_setup(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    unsigned nt = th->run->nthreads, id = (unsigned)th->id;
    if (o->mode == SL_MODE_CALL && !o->to_phones) return 0;
    th->nphones = o->phones / nt + (id < o->phones % nt);
    if (th->nphones == 0) return 0;
    th->phones = calloc(th->nphones, sizeof *th->phones);
    if (!th->phones) return -1;
    for (uint32_t k = 0; k < th->nphones; k++) {
        th->phones[k].idx = id + k * nt;
        timer_init(&th->phones[k].t, phone_timer);
    }
    th->reg_conc = o->reg_concurrency / nt + (id < o->reg_concurrency % nt);
    if (th->reg_conc == 0) th->reg_conc = 1;
    return 0;
}

void phone_begin(struct sl_thread *th)
{
    tb_init(&th->reg_tb, th->o->reg_rate / th->run->nthreads, th->now_ns);
    th->reg_active = true;
}

static void finish(struct sl_thread *th, struct sl_phone *ph, uint8_t state)
{
    timer_cancel(&ph->t);
    ph->state = state;
    th->reg_live--;
    th->reg_done++;
}

static void fail(struct sl_thread *th, struct sl_phone *ph)
{
    th->st.reg_failed++;
    ph->failed = true;
    finish(th, ph, PH_DONE);
    if (ph->c) {
        struct sl_conn *c = ph->c;
        ph->c = NULL;
        c->phone = NULL;
        net_conn_close(th, c, CLOSE_ERROR);
    }
}

static void start(struct sl_thread *th, struct sl_phone *ph)
{
    ph->t_start_ns = th->now_ns;
    ph->state = PH_CONNECTING;
    th->st.reg_started++;
    th->reg_live++;
    ph->c = net_connect(th, &th->o->reg_proxy, th->o->reg_proto, ROLE_PHONE);
    if (!ph->c) {
        th->st.reg_conn_failed++;
        fail(th, ph);
        return;
    }
    ph->c->phone = ph;
    timer_arm_at(&th->wheel, &ph->t, th->now_ms + th->o->timeout_ms);
}

void phone_pump(struct sl_thread *th)
{
    if (!th->reg_active || th->phone_next == th->nphones) return;
    unsigned room = th->reg_conc > th->reg_live ? th->reg_conc - th->reg_live : 0;
    unsigned left = th->nphones - th->phone_next;
    unsigned n = tb_take(&th->reg_tb, th->now_ns, room < left ? room : left);
    while (n--)
        start(th, &th->phones[th->phone_next++]);
}

void phone_on_open(struct sl_thread *th, struct sl_phone *ph)
{
    struct sl_conn *c = ph->c;
    struct buf b = buf_make(th->scratch, sizeof th->scratch);
    msg_register(&b, th->o, ph->idx, c->proto, &c->local, 1);
    if (!buf_ok(&b)) {
        th->st.build_errors++;
        fail(th, ph);
        return;
    }
    /* the Contact, kept to answer calls with */
    char user[16];
    msg_phone_user(user, ph->idx);
    msg_contact(ph->contact, sizeof ph->contact, user, c->proto, &c->local);
    net_conn_write(th, c, b.p, b.len);
    th->st.msgs_tx++;
    ph->t_reg_ns = sl_now_ns();
    ph->state = PH_REGISTERING;
}

/* Spreads the keep-alives of phones registered together over the period. */
static uint64_t keepalive_at(const struct sl_thread *th, const struct sl_phone *ph)
{
    uint64_t period = (uint64_t)th->o->keepalive_s * 1000;
    return th->now_ms + period / 2 + (ph->idx * 7919u) % (period / 2 + 1);
}

static void registered(struct sl_thread *th, struct sl_phone *ph)
{
    const struct sl_opts *o = th->o;
    th->st.reg_ok++;
    hist_add(&th->st.h_reg, th->now_ns - ph->t_start_ns);
    hist_add(&th->st.h_first, th->now_ns - ph->t_reg_ns);
    if (o->mode == SL_MODE_REGISTER && !o->keep) {
        struct sl_conn *c = ph->c;
        finish(th, ph, PH_DONE);
        ph->c = NULL;
        c->phone = NULL;
        net_conn_close(th, c, CLOSE_DONE);
        return;
    }
    finish(th, ph, PH_REGISTERED);
    if (o->keepalive_s) timer_arm_at(&th->wheel, &ph->t, keepalive_at(th, ph));
}

void phone_on_message(struct sl_thread *th, struct sl_phone *ph, const struct sl_peer *p,
                      const struct sip_msg *m)
{
    if (m->is_request) {
        uas_on_request(th, p, m, ph->contact[0] ? ph->contact : NULL, "sl-phone");
        return;
    }
    if (m->cseq_method != SIP_METHOD_REGISTER || ph->state != PH_REGISTERING) {
        th->st.stray++;
        return;
    }
    if (m->status < 200) return;
    if (m->status < 300) {
        registered(th, ph);
        return;
    }
    if (m->status < 700) th->st.codes[m->status]++;
    fail(th, ph);
}

void phone_on_pong(struct sl_thread *th, struct sl_phone *ph)
{
    (void)ph;
    th->st.pongs++;
}

void phone_on_closed(struct sl_thread *th, struct sl_phone *ph, enum sl_close why)
{
    ph->c = NULL;
    if (ph->state == PH_REGISTERED) {
        th->st.phones_lost++;
        timer_cancel(&ph->t);
        ph->state = PH_DONE;
        ph->failed = true;
        return;
    }
    if (ph->state != PH_CONNECTING && ph->state != PH_REGISTERING) return;
    if (why == CLOSE_TLS)
        th->st.reg_tls_failed++;
    else
        th->st.reg_conn_failed++;
    fail(th, ph);
}

static void phone_timer(struct worker *w, struct timer *t)
{
    struct sl_thread *th = sl_thread_of(w);
    struct sl_phone *ph = phone_of(t);
    if (ph->state == PH_REGISTERED && ph->c) {
        net_conn_write(th, ph->c, "\r\n\r\n", 4);
        th->st.keepalives++;
        timer_arm_at(&th->wheel, &ph->t, th->now_ms + th->o->keepalive_s * 1000ull);
        return;
    }
    if (ph->state == PH_CONNECTING || ph->state == PH_REGISTERING) {
        th->st.reg_timeout++;
        fail(th, ph);
    }
}
