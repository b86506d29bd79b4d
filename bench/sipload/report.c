/* sipload's result: counters summed over the threads, latency percentiles,
 * the generator's own CPU share, printed for people and as one JSON line. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sipload/report.h"

void report_sum(struct sl_stats *sum, const struct sl_stats *a)
{
    /* every field before the histograms is a uint64_t counter */
    const size_t n = offsetof(struct sl_stats, h_setup) / sizeof(uint64_t);
    uint64_t *d = (uint64_t *)(void *)sum;
    const uint64_t *s = (const uint64_t *)(const void *)a;
    for (size_t i = 0; i < n; i++)
        d[i] += s[i];
    hist_merge(&sum->h_setup, &a->h_setup);
    hist_merge(&sum->h_reg, &a->h_reg);
    hist_merge(&sum->h_first, &a->h_first);
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double cpu_s(const struct rusage *r)
{
    return (double)r->ru_utime.tv_sec + (double)r->ru_utime.tv_usec / 1e6 +
           (double)r->ru_stime.tv_sec + (double)r->ru_stime.tv_usec / 1e6;
}

/* A thread's CPU time over its measured window, as a share of that window. */
static double busy(const struct sl_thread *th)
{
    if (th->ru_t1_ns <= th->ru_t0_ns || th->ru_t0_ns == 0) return 0;
    return (cpu_s(&th->ru1) - cpu_s(&th->ru0)) / ((double)(th->ru_t1_ns - th->ru_t0_ns) / 1e9);
}

static void json_hist(FILE *f, const char *name, const struct hist *h, bool comma)
{
    fprintf(f,
            "\"%s\":{\"n\":%llu,\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,"
            "\"mean\":%.3f}%s",
            name, (unsigned long long)h->n, ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.99)),
            ms(hist_quantile(h, 0.999)), ms(h->max), h->n ? ms(h->sum / h->n) : 0.0,
            comma ? "," : "");
}

static void human_hist(const char *name, const struct hist *h)
{
    if (!h->n) return;
    printf("%-22s p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  mean %.3f ms (n=%llu)\n", name,
           ms(hist_quantile(h, 0.5)), ms(hist_quantile(h, 0.99)), ms(hist_quantile(h, 0.999)),
           ms(h->max), h->n ? ms(h->sum / h->n) : 0.0, (unsigned long long)h->n);
}

struct totals {
    struct sl_stats st;
    double window_s, reg_s, max_busy, sum_busy, lost;
};

static const char *MODES[] = {"call", "register", "hold"};

/* One JSON member: "name":value, counters with 0 decimals. */
struct jfield {
    const char *name;
    double v;
    int prec;
};

static void json_object(FILE *f, const char *name, const struct jfield *fs, size_t n)
{
    fprintf(f, "\"%s\":{", name);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\"%s\":%.*f", i ? "," : "", fs[i].name, fs[i].prec, fs[i].v);
    fputs("},", f);
}

#define JSON_OBJECT(f, name, ...)                                                                  \
    do {                                                                                           \
        const struct jfield fs_[] = {__VA_ARGS__};                                                 \
        json_object(f, name, fs_, sizeof fs_ / sizeof fs_[0]);                                     \
    } while (0)
#define N(name, v)                                                                                 \
    {                                                                                              \
        name, (double)(v), 0                                                                       \
    }

static void json_counts(FILE *f, const struct sl_run *run, const struct totals *t)
{
    const struct sl_stats *s = &t->st;
    double w = t->window_s > 0 ? t->window_s : 1;
    bool calls = run->o.mode == SL_MODE_CALL;
    bool kept = run->o.mode != SL_MODE_REGISTER || run->o.keep;
    JSON_OBJECT(f, "calls", N("started", s->calls_started), N("ok", s->calls_ok),
                N("failed", s->calls_failed), N("timeouts", s->fail_timeout),
                N("non_2xx", s->fail_status), N("conn_lost", s->fail_conn),
                N("not_started", s->not_started), N("offered_lost", floor(t->lost)),
                {"rate_achieved", calls ? (double)s->calls_ok / w : 0.0, 1},
                {"attempt_rate", calls ? (double)s->calls_started / w : 0.0, 1});
    JSON_OBJECT(f, "retransmissions", N("sent", s->rtx_sent), N("received", s->rtx_rcvd),
                N("uas_2xx_sent", s->uas_rtx), N("uas_2xx_unacked", s->uas_unacked));
    JSON_OBJECT(f, "registrations", N("started", s->reg_started), N("ok", s->reg_ok),
                N("failed", s->reg_failed), N("conn_failed", s->reg_conn_failed),
                N("tls_failed", s->reg_tls_failed), N("timeouts", s->reg_timeout),
                {"duration_s", t->reg_s, 3},
                {"rate", t->reg_s > 0 ? (double)s->reg_ok / t->reg_s : 0.0, 1});
    JSON_OBJECT(f, "phones", N("held", kept ? s->reg_ok - s->phones_lost : 0),
                N("lost", s->phones_lost), N("keepalives", s->keepalives), N("pongs", s->pongs));
    JSON_OBJECT(f, "messages", N("sent", s->msgs_tx), N("received", s->msgs_rx),
                N("bad", s->bad_msgs), N("stray", s->stray), N("build_errors", s->build_errors),
                N("udp_send_errors", s->udp_send_errors), N("uas_requests", s->uas_requests));
}

static void json_tail(FILE *f, const struct sl_run *run, const struct totals *t)
{
    const struct sl_stats *s = &t->st;
    bool first = true;
    fputs("\"fail_codes\":{", f);
    for (int c = 300; c < 700; c++) {
        if (!s->codes[c]) continue;
        fprintf(f, "%s\"%d\":%llu", first ? "" : ",", c, (unsigned long long)s->codes[c]);
        first = false;
    }
    fputs("},\"cpu\":{\"threads\":[", f);
    for (unsigned i = 0; i < run->nthreads; i++)
        fprintf(f, "%s{\"cpu\":%d,\"busy\":%.4f}", i ? "," : "", run->th[i].cpu, busy(&run->th[i]));
    fprintf(f, "],\"total_share\":%.4f,\"max_thread_share\":%.4f}", t->sum_busy / run->nthreads,
            t->max_busy);
}

/* Something the proxy under test did not carry: a failed call or
 * registration, a call the concurrency cap kept from starting, a phone lost.
 * (Offered load the generator itself could not send is reported apart.) */
static bool failed(const struct totals *t)
{
    const struct sl_stats *s = &t->st;
    return s->calls_failed || s->not_started || s->reg_failed || s->phones_lost;
}

/* The generator lost offered load or ran its busiest thread near a full
 * core: the run says more about the generator than about the proxy. */
static bool behind(const struct totals *t)
{
    return t->lost >= 1 || t->max_busy > 0.9;
}

static void print_json(FILE *f, const struct sl_run *run, const struct report_times *tm,
                       const struct totals *t)
{
    const struct sl_opts *o = &run->o;
    fprintf(f,
            "{\"tool\":\"sipload\",\"mode\":\"%s\",\"transport\":\"%s\",\"reg_transport\":\"%s\","
            "\"callee\":\"%s\",\"threads\":%u,\"rate_target\":%.1f,\"duration_s\":%.3f,"
            "\"window_s\":%.3f,\"setup_s\":%.3f,\"tick_us\":%u,\"interrupted\":%s,\"ok\":%s,"
            "\"generator_behind\":%s,",
            MODES[o->mode], sl_proto_name(o->proto), sl_proto_name(o->reg_proto),
            o->to_phones ? "phones" : "uas", run->nthreads, o->rate, o->duration_s, t->window_s,
            tm->setup_s, o->tick_us, tm->interrupted ? "true" : "false",
            failed(t) ? "false" : "true", behind(t) ? "true" : "false");
    json_counts(f, run, t);
    fputs("\"latency_ms\":{", f);
    json_hist(f, "call_setup", &t->st.h_setup, true);
    json_hist(f, "register", &t->st.h_reg, true);
    json_hist(f, "first_request", &t->st.h_first, false);
    fputs("},", f);
    json_tail(f, run, t);
    fputs("}\n", f);
}

static void print_human(const struct sl_run *run, const struct totals *t)
{
    const struct sl_opts *o = &run->o;
    const struct sl_stats *s = &t->st;
    printf("sipload %s: %u thread(s), window %.2f s\n", MODES[o->mode], run->nthreads, t->window_s);
    if (o->mode == SL_MODE_CALL)
        printf("calls (%s): started %llu, ok %llu, failed %llu (timeouts %llu, non-2xx %llu, "
               "connection lost %llu), not started %llu, offered but lost %.0f; %.1f calls/s "
               "(target %.1f)\n",
               sl_proto_name(o->proto), (unsigned long long)s->calls_started,
               (unsigned long long)s->calls_ok, (unsigned long long)s->calls_failed,
               (unsigned long long)s->fail_timeout, (unsigned long long)s->fail_status,
               (unsigned long long)s->fail_conn, (unsigned long long)s->not_started, t->lost,
               t->window_s > 0 ? (double)s->calls_ok / t->window_s : 0.0, o->rate);
    if (o->mode == SL_MODE_CALL)
        printf("retransmissions: UAC sent %llu, 200s received again %llu; UAS 200s resent %llu, "
               "never ACKed %llu\n",
               (unsigned long long)s->rtx_sent, (unsigned long long)s->rtx_rcvd,
               (unsigned long long)s->uas_rtx, (unsigned long long)s->uas_unacked);
    human_hist("call setup", &s->h_setup);
    if (s->reg_started)
        printf("registrations (%s): started %llu, ok %llu, failed %llu (connect %llu, tls %llu, "
               "timeout %llu) in %.3f s: %.1f/s\n",
               sl_proto_name(o->reg_proto), (unsigned long long)s->reg_started,
               (unsigned long long)s->reg_ok, (unsigned long long)s->reg_failed,
               (unsigned long long)s->reg_conn_failed, (unsigned long long)s->reg_tls_failed,
               (unsigned long long)s->reg_timeout, t->reg_s,
               t->reg_s > 0 ? (double)s->reg_ok / t->reg_s : 0.0);
    human_hist("registration", &s->h_reg);
    human_hist("first request", &s->h_first);
    if (s->keepalives || s->phones_lost)
        printf("phones: lost %llu, keep-alives %llu, pongs %llu\n",
               (unsigned long long)s->phones_lost, (unsigned long long)s->keepalives,
               (unsigned long long)s->pongs);
    if (s->bad_msgs || s->stray || s->build_errors || s->udp_send_errors)
        printf("messages: bad %llu, stray %llu, build errors %llu, udp send errors %llu\n",
               (unsigned long long)s->bad_msgs, (unsigned long long)s->stray,
               (unsigned long long)s->build_errors, (unsigned long long)s->udp_send_errors);
    printf("generator CPU:");
    for (unsigned i = 0; i < run->nthreads; i++)
        printf(" thread %u (cpu %d) %.1f %%", i, run->th[i].cpu, 100 * busy(&run->th[i]));
    printf("; busiest %.1f %%%s\n", 100 * t->max_busy,
           behind(t) ? " (the generator fell behind or saturated: it may be the limit)" : "");
}

int report_print(const struct sl_run *run, const struct report_times *tm)
{
    struct totals *t = calloc(1, sizeof *t);
    if (!t) return 2;
    uint64_t end = tm->t0_ns;
    for (unsigned i = 0; i < run->nthreads; i++) {
        const struct sl_thread *th = &run->th[i];
        double b = busy(th);
        report_sum(&t->st, &th->st);
        t->lost += th->tb.lost;
        t->sum_busy += b;
        if (b > t->max_busy) t->max_busy = b;
        if (th->t_window_end_ns > end) end = th->t_window_end_ns;
    }
    t->window_s = (double)(end - tm->t0_ns) / 1e9;
    t->reg_s = run->o.mode == SL_MODE_REGISTER ? t->window_s : tm->setup_s;
    if (!run->o.quiet) print_human(run, t);
    print_json(stdout, run, tm, t);
    if (run->o.json) {
        FILE *f = fopen(run->o.json, "w");
        if (f) {
            print_json(f, run, tm, t);
            fclose(f);
        } else {
            perror(run->o.json);
        }
    }
    int rc = failed(t) || tm->interrupted ? 1 : 0;
    fflush(stdout);
    free(t);
    return rc;
}
