/* sipload's threads: one epoll loop per CPU it is given, pinned, owning its
 * sockets, calls and phones; the phases main drives (setup, run, stop). */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "bench/sipload/sipload.h"

#define MAX_EVENTS   256
#define IDLE_WAIT_MS 10 /* how soon a waiting thread notices a phase change */

uint64_t sl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void clock_update(struct sl_thread *th)
{
    th->now_ns = sl_now_ns();
    th->now_ms = th->now_ns / 1000000;
}

void sl_dispatch(struct sl_thread *th, const struct sl_peer *p, const char *raw, size_t len,
                 bool dgram)
{
    struct sip_hdr hdrs[SL_MAX_HDRS];
    struct sip_msg m;

    th->st.msgs_rx++;
    if (sipmsg_parse(raw, len, &m, hdrs, &th->lim, dgram ? SIPMSG_DATAGRAM : 0) < 0 ||
        !sipmsg_hdr(&m, SIP_HDR_CSEQ) || !sipmsg_hdr(&m, SIP_HDR_CALL_ID)) {
        th->st.bad_msgs++;
        return;
    }
    if (p->c && p->c->role == ROLE_PHONE) {
        if (p->c->phone) phone_on_message(th, p->c->phone, p, &m);
        return;
    }
    if (m.is_request)
        uas_on_request(th, p, &m, NULL, NULL);
    else
        uac_on_response(th, &m);
}

/* The end of the measured window: the thread's CPU time stops counting. */
static void close_window(struct sl_thread *th)
{
    if (th->window_closed) return;
    th->window_closed = true;
    th->t_window_end_ns = th->now_ns;
    getrusage(RUSAGE_THREAD, &th->ru1);
    th->ru_t1_ns = th->now_ns;
}

static void signal_ready(struct sl_thread *th)
{
    if (th->ready) return;
    th->ready = true;
    sl_count_up(th->run, &th->run->nready);
}

static void signal_drained(struct sl_thread *th)
{
    if (th->drained) return;
    close_window(th);
    th->drained = true;
    sl_count_up(th->run, &th->run->ndrained);
}

static bool senders_settled(const struct sl_thread *th)
{
    for (unsigned i = 0; i < th->nsenders; i++)
        if (!th->senders[i].up && th->senders[i].c) return false; /* still connecting */
    return true;
}

static void setup_tick(struct sl_thread *th)
{
    phone_pump(th);
    if (senders_settled(th) && (th->o->mode == SL_MODE_REGISTER || phone_all_done(th)))
        signal_ready(th);
}

static void run_start(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    uint64_t t0 = atomic_load(&th->run->t0_ns);
    getrusage(RUSAGE_THREAD, &th->ru0);
    th->ru_t0_ns = th->now_ns;
    th->t_window_end_ns = t0 + (uint64_t)(o->duration_s * 1e9);
    if (o->mode == SL_MODE_CALL) {
        tb_init(&th->tb, o->rate / th->run->nthreads, t0);
        th->generating = true;
    } else if (o->mode == SL_MODE_REGISTER) {
        phone_begin(th);
    }
}

static void run_tick(struct sl_thread *th)
{
    const struct sl_opts *o = th->o;
    if (th->ru_t0_ns == 0) run_start(th);
    if (th->drained) return;
    switch (o->mode) {
    case SL_MODE_CALL:
        /* the calls due up to the window's end, not one more */
        uac_pump(th, th->now_ns < th->t_window_end_ns ? th->now_ns : th->t_window_end_ns);
        if (th->generating && th->now_ns >= th->t_window_end_ns) {
            th->generating = false;
            close_window(th);
        }
        if (!th->generating && uac_live(th) == 0) signal_drained(th);
        break;
    case SL_MODE_REGISTER:
        phone_pump(th);
        if (phone_all_done(th)) {
            close_window(th);
            signal_drained(th);
        }
        break;
    case SL_MODE_HOLD:
        if (th->now_ns >= th->t_window_end_ns) signal_drained(th);
        break;
    }
}

/* How long epoll_wait may sleep: until the next timer, the next token, or
 * a bounded idle wait to notice what main decides. */
static int wait_ms(struct sl_thread *th, int phase)
{
    uint64_t tok = UINT64_MAX;
    int ms = timer_wheel_next(&th->wheel, th->now_ms, IDLE_WAIT_MS);
    if (phase == PHASE_RUN && th->generating) tok = tb_wait_ns(&th->tb);
    if (th->reg_active && th->phone_next < th->nphones && th->reg_live < th->reg_conc)
        tok = tok < tb_wait_ns(&th->reg_tb) ? tok : tb_wait_ns(&th->reg_tb);
    if (tok != UINT64_MAX) {
        uint64_t t = (tok + 999999) / 1000000;
        if ((int)t < ms) ms = (int)t;
    }
    return ms;
}

/* With --tick, a loaded thread sleeps a whole tick and then takes what
 * arrived meanwhile: one wake-up per tick instead of one per datagram (the
 * wake-up, not the datagram, is what costs most on a VM), for latencies
 * measured to within a tick. Returns the epoll timeout. */
static int tick(struct sl_thread *th, int phase)
{
    int ms = wait_ms(th, phase);
    if (!th->o->tick_us || phase != PHASE_RUN || ms == 0) return ms;
    struct timespec ts = {0, (long)th->o->tick_us * 1000};
    if ((uint64_t)ms * 1000 < th->o->tick_us) ts.tv_nsec = (long)ms * 1000000;
    nanosleep(&ts, NULL);
    return 0;
}

static void handle(struct sl_thread *th, struct epoll_event *ev)
{
    uint8_t type = *(uint8_t *)ev->data.ptr;
    if (type == EV_UDP)
        net_udp_read(th, ev->data.ptr);
    else if (type == EV_CONN)
        net_conn_event(th, ev->data.ptr, ev->events);
    else if (type == EV_LISTEN)
        net_accept(th, ev->data.ptr);
}

static int setup(struct sl_thread *th)
{
    if (th->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(th->cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
            fprintf(stderr, "sipload: cannot pin thread %d to CPU %d\n", th->id, th->cpu);
    }
    th->ep = epoll_create1(EPOLL_CLOEXEC);
    if (th->ep < 0) return -1;
    clock_update(th);
    timer_wheel_init(&th->wheel, th->now_ms, (struct worker *)(void *)th);
    th->lim = (struct sipmsg_limits){.max_msg_size = 65535, .max_headers = SL_MAX_HDRS};
    if (uas_setup(th) < 0 || uac_setup(th) < 0 || phone_setup(th) < 0) return -1;
    if (th->o->mode != SL_MODE_REGISTER) phone_begin(th);
    return 0;
}

void *sl_thread_main(void *arg)
{
    struct sl_thread *th = arg;
    struct epoll_event ev[MAX_EVENTS];

    if (setup(th) < 0) {
        atomic_store(&th->run->failed_setup, true);
        signal_ready(th);
        signal_drained(th);
    }
    for (;;) {
        int phase = atomic_load(&th->run->phase);
        if (phase == PHASE_STOP) break;
        clock_update(th);
        if (!atomic_load(&th->run->failed_setup)) {
            if (phase == PHASE_SETUP)
                setup_tick(th);
            else
                run_tick(th);
        }
        timer_wheel_run(&th->wheel, th->now_ms);
        net_flush_all(th);
        net_reap(th);
        int n = epoll_wait(th->ep, ev, MAX_EVENTS, tick(th, phase));
        clock_update(th);
        for (int i = 0; i < n; i++)
            handle(th, &ev[i]);
        net_flush_all(th);
        net_reap(th);
    }
    close_window(th);
    uas_cleanup(th);
    net_cleanup(th);
    if (th->ep >= 0) close(th->ep);
    return NULL;
}
