/* Tests for core/ring.c: bounds, order, and a two-thread SPSC run. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>

#include "core/ring.h"

TestSuite(ring);

Test(ring, capacity_must_be_a_power_of_two)
{
    cr_assert_null(ring_new(0));
    cr_assert_null(ring_new(1));
    cr_assert_null(ring_new(100));
    struct ring *r = ring_new(64);
    cr_assert_not_null(r);
    cr_assert_eq(ring_capacity(r), 64);
    cr_assert(ring_empty(r));
    ring_free(r);
    ring_free(NULL);
}

Test(ring, full_ring_refuses)
{
    struct ring *r = ring_new(8);
    void *out[16];
    for (uintptr_t i = 1; i <= 8; i++)
        cr_assert(ring_push(r, (void *)i));
    cr_assert_not(ring_push(r, (void *)9), "a full ring must refuse");
    cr_assert_eq(ring_pop_n(r, out, 1), 1);
    cr_assert_eq((uintptr_t)out[0], 1);
    cr_assert(ring_push(r, (void *)9));
    cr_assert_not(ring_push(r, (void *)10));
    cr_assert_eq(ring_pop_n(r, out, 16), 8);
    for (uintptr_t i = 0; i < 8; i++)
        cr_assert_eq((uintptr_t)out[i], i + 2);
    cr_assert(ring_empty(r));
    cr_assert_eq(ring_pop_n(r, out, 16), 0);
    ring_free(r);
}

Test(ring, batch_push_takes_what_fits_in_order)
{
    struct ring *r = ring_new(4);
    void *in[6] = {(void *)1, (void *)2, (void *)3, (void *)4, (void *)5, (void *)6};
    void *out[6];
    cr_assert_eq(ring_push_n(r, in, 6), 4);
    cr_assert_eq(ring_pop_n(r, out, 3), 3);
    cr_assert_eq(ring_push_n(r, in + 4, 2), 2); /* wraps around */
    cr_assert_eq(ring_pop_n(r, out + 3, 6), 3);
    uintptr_t want[6] = {1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 6; i++)
        cr_assert_eq((uintptr_t)out[i], want[i]);
    ring_free(r);
}

#define ITEMS 1000000u

static void *producer(void *arg)
{
    struct ring *r = arg;
    void *batch[32];
    uintptr_t next = 1;
    while (next <= ITEMS) {
        size_t n = 1 + next % 32, pushed;
        if (n > ITEMS - next + 1) n = ITEMS - next + 1;
        for (size_t i = 0; i < n; i++)
            batch[i] = (void *)(next + i);
        pushed = ring_push_n(r, batch, n);
        next += pushed;
        if (pushed < n) sched_yield();
    }
    return NULL;
}

Test(ring, spsc_two_threads_keep_every_item_in_order, .timeout = 60)
{
    struct ring *r = ring_new(1024);
    pthread_t t;
    void *out[64];
    uintptr_t expect = 1;

    cr_assert_eq(pthread_create(&t, NULL, producer, r), 0);
    while (expect <= ITEMS) {
        size_t n = ring_pop_n(r, out, 1 + expect % 64);
        for (size_t i = 0; i < n; i++, expect++)
            cr_assert_eq((uintptr_t)out[i], expect, "item %lu arrived as %lu",
                         (unsigned long)expect, (unsigned long)(uintptr_t)out[i]);
        if (n == 0) sched_yield();
    }
    pthread_join(t, NULL);
    cr_assert(ring_empty(r));
    ring_free(r);
}
