/* Tests for core/timer.c: expiry order and exact ticks, cancel, re-arm, long timers. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/timer.h"
#include "core/worker.h"

TestSuite(timer);

#define NREC 512

struct rec {
    struct timer t;
    uint64_t due;      /* absolute ms it must fire at */
    uint64_t fired_at; /* wheel tick it fired on, 0 = not yet */
    int fires;
    int rearm_left; /* periodic: re-arm this many more times */
    uint64_t period;
    struct timer *cancel_other; /* cancel this one when firing */
};

static struct worker w; /* only now_ms and timers are used */
static struct rec *fired_order[NREC * 4];
static unsigned nfired;

static void on_fire(struct worker *wk, struct timer *t)
{
    struct rec *r = (struct rec *)(void *)((char *)t - offsetof(struct rec, t));
    r->fired_at = wk->timers.now;
    r->fires++;
    if (nfired < sizeof(fired_order) / sizeof(fired_order[0])) fired_order[nfired++] = r;
    if (r->cancel_other) timer_cancel(r->cancel_other);
    if (r->rearm_left > 0) {
        r->rearm_left--;
        r->due = wk->timers.now + r->period;
        /* arm relative to the tick being run, as a loop would see it */
        uint64_t saved = wk->now_ms;
        wk->now_ms = wk->timers.now;
        worker_timer_arm(wk, t, r->period);
        wk->now_ms = saved;
    }
}

static void setup_at(uint64_t now)
{
    nfired = 0;
    w.now_ms = now;
    timer_wheel_init(&w.timers, now, &w);
}

static void advance(uint64_t to)
{
    w.now_ms = to;
    timer_wheel_run(&w.timers, to);
}

static void arm(struct rec *r, uint64_t ms)
{
    timer_init(&r->t, on_fire);
    r->due = w.now_ms + ms;
    worker_timer_arm(&w, &r->t, ms);
}

Test(timer, fires_each_at_its_tick_in_order)
{
    static struct rec r[NREC];
    srand(7);
    setup_at(1000);
    for (unsigned i = 0; i < NREC; i++)
        arm(&r[i], 1 + (uint64_t)(rand() % 9000)); /* beyond the 4096 ms span too */
    cr_assert_eq(w.timers.count, NREC);

    uint64_t now = 1000;
    while (now < 1000 + 9100) {
        now += 1 + (uint64_t)(rand() % 40);
        advance(now);
        for (unsigned i = 0; i < NREC; i++)
            cr_assert(r[i].fires == (r[i].due <= now), "timer %u due %llu at now %llu", i,
                      (unsigned long long)r[i].due, (unsigned long long)now);
    }
    cr_assert_eq(nfired, NREC);
    for (unsigned i = 0; i < NREC; i++)
        cr_assert_eq(r[i].fired_at, r[i].due, "timer %u fired on tick %llu, due %llu", i,
                     (unsigned long long)r[i].fired_at, (unsigned long long)r[i].due);
    for (unsigned i = 1; i < nfired; i++)
        cr_assert_leq(fired_order[i - 1]->due, fired_order[i]->due);
    cr_assert_eq(w.timers.count, 0);
}

Test(timer, cancel)
{
    struct rec a = {0}, b = {0}, c = {0};
    setup_at(0);
    arm(&a, 10);
    arm(&b, 10);
    arm(&c, 20);
    timer_cancel(&b.t);
    cr_assert_not(timer_armed(&b.t));
    timer_cancel(&b.t); /* twice is a no-op */
    cr_assert_eq(w.timers.count, 2);
    advance(100);
    cr_assert_eq(a.fires, 1);
    cr_assert_eq(b.fires, 0);
    cr_assert_eq(c.fires, 1);
    cr_assert_eq(w.timers.count, 0);
}

Test(timer, callback_cancels_a_timer_due_on_the_same_tick)
{
    struct rec a = {0}, b = {0};
    setup_at(0);
    arm(&a, 5);
    arm(&b, 5);
    /* whichever fires first cancels the other */
    a.cancel_other = &b.t;
    b.cancel_other = &a.t;
    advance(5);
    cr_assert_eq(a.fires + b.fires, 1);
    cr_assert_eq(w.timers.count, 0);
}

Test(timer, rearm_inside_callback)
{
    struct rec p = {0};
    setup_at(50);
    p.rearm_left = 9;
    p.period = 100;
    arm(&p, 100);
    for (uint64_t t = 51; t <= 50 + 1000 + 10; t += 7)
        advance(t);
    cr_assert_eq(p.fires, 10);
    cr_assert_eq(p.fired_at, 50 + 1000);
    cr_assert_not(timer_armed(&p.t));
}

Test(timer, rearm_zero_fires_on_the_next_tick_not_in_a_loop)
{
    struct rec p = {0};
    setup_at(0);
    p.rearm_left = 3;
    p.period = 0;
    arm(&p, 1);
    advance(1);
    cr_assert_eq(p.fires, 1, "a 0 ms re-arm must wait for the next tick");
    advance(2);
    cr_assert_eq(p.fires, 2);
    advance(10);
    cr_assert_eq(p.fires, 4);
}

Test(timer, long_timers_survive_laps_and_jumps)
{
    struct rec a = {0}, b = {0}, c = {0};
    setup_at(123);
    arm(&a, 10000);
    arm(&b, 60000);
    arm(&c, 3600000);
    for (uint64_t t = 123; t < 123 + 59999; t += 997)
        advance(t);
    cr_assert_eq(a.fires, 1);
    cr_assert_eq(a.fired_at, 123 + 10000);
    cr_assert_eq(b.fires, 0);
    advance(123 + 60000);
    cr_assert_eq(b.fires, 1);
    cr_assert_eq(c.fires, 0);
    advance(123 + 7200000); /* a stalled loop: one big jump */
    cr_assert_eq(c.fires, 1);
    cr_assert_eq(c.fired_at, 123 + 3600000);
}

Test(timer, next_reports_the_wait)
{
    struct rec a = {0};
    setup_at(1000);
    cr_assert_eq(timer_wheel_next(&w.timers, 1000, 500), 500);
    arm(&a, 37);
    cr_assert_eq(timer_wheel_next(&w.timers, 1000, 500), 37);
    cr_assert_eq(timer_wheel_next(&w.timers, 1000, 20), 20);
    cr_assert_eq(timer_wheel_next(&w.timers, 1040, 500), 0, "overdue: no wait");
    timer_cancel(&a.t);
    arm(&a, 100000);
    cr_assert_eq(timer_wheel_next(&w.timers, 1000, 1000), 1000);
}

Test(timer, next_never_waits_past_a_due_timer_among_many_long_ones)
{
    static struct rec many[2000];
    struct rec soon = {0};
    setup_at(0);
    for (unsigned i = 0; i < 2000; i++)
        arm(&many[i], 8 * TIMER_WHEEL_SLOTS + 1 + i % 399); /* laps away, in the slots just ahead */
    arm(&soon, 400);
    int wait = timer_wheel_next(&w.timers, 0, 1000);
    cr_assert_gt(wait, 0);
    cr_assert_leq(wait, 400);
}
