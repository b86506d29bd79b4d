/* Connections per source address: the cap, sources apart, IPv6 by /64,
 * entries reused, a full window, and threads racing for one address. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "core/iplimit.h"

TestSuite(iplimit);

static struct netaddr v4(uint32_t host_order, int port)
{
    struct netaddr a;
    memset(&a, 0, sizeof(a));
    a.in4.sin_family = AF_INET;
    a.in4.sin_addr.s_addr = htonl(host_order);
    a.in4.sin_port = htons((uint16_t)port);
    a.len = sizeof(a.in4);
    return a;
}

static struct netaddr v6(const char *text)
{
    struct netaddr a;
    cr_assert_eq(netaddr_from_ip(&a, (struct slice){text, strlen(text)}, 5060), 0, "%s", text);
    return a;
}

Test(iplimit, caps_one_source_and_not_the_others)
{
    struct iplimit *t = iplimit_new(64);
    struct netaddr a = v4(0x7f000002, 1000), b = v4(0x7f000003, 1000);
    int32_t got[5];

    cr_assert_not_null(t);
    for (int i = 0; i < 5; i++) {
        struct netaddr ai = v4(0x7f000002, 1000 + i); /* ports do not matter */
        got[i] = iplimit_acquire(t, &ai, 5);
        cr_assert_geq(got[i], 0, "connection %d", i);
    }
    cr_assert_eq(iplimit_acquire(t, &a, 5), IPLIMIT_FULL);
    cr_assert_eq(iplimit_count(t, &a), 5);
    cr_assert_geq(iplimit_acquire(t, &b, 5), 0, "another source still gets in");
    cr_assert_eq(iplimit_count(t, &b), 1);

    iplimit_release(t, got[0]);
    cr_assert_eq(iplimit_count(t, &a), 4);
    cr_assert_geq(iplimit_acquire(t, &a, 5), 0, "a freed place is usable again");
    cr_assert_eq(iplimit_acquire(t, &a, 5), IPLIMIT_FULL);
    iplimit_release(t, -1); /* ignored */
    iplimit_release(t, IPLIMIT_UNCOUNTED);
    cr_assert_eq(iplimit_count(t, &a), 5);
    iplimit_free(t);
    iplimit_free(NULL);
}

Test(iplimit, ipv6_counts_by_64_and_mapped_v4_as_v4)
{
    struct iplimit *t = iplimit_new(64);
    struct netaddr x1 = v6("2001:db8:1:2::1"), x2 = v6("2001:db8:1:2:ffff::9"),
                   y = v6("2001:db8:1:3::1"), m = v6("::ffff:10.0.0.1"), a = v4(0x0a000001, 5060);

    cr_assert_geq(iplimit_acquire(t, &x1, 2), 0);
    cr_assert_geq(iplimit_acquire(t, &x2, 2), 0);
    cr_assert_eq(iplimit_acquire(t, &x1, 2), IPLIMIT_FULL, "the same /64 shares one count");
    cr_assert_geq(iplimit_acquire(t, &y, 2), 0, "the next /64 is another source");
    cr_assert_geq(iplimit_acquire(t, &m, 2), 0);
    cr_assert_geq(iplimit_acquire(t, &a, 2), 0);
    cr_assert_eq(iplimit_acquire(t, &a, 2), IPLIMIT_FULL, "mapped and plain IPv4 are one");
    iplimit_free(t);
}

Test(iplimit, churn_of_many_sources_reuses_entries)
{
    struct iplimit *t = iplimit_new(1); /* the smallest table: 1024 entries */

    for (uint32_t i = 0; i < 200000; i++) {
        struct netaddr a = v4(0x0a000000 + i, 5060);
        int32_t s = iplimit_acquire(t, &a, 1);
        cr_assert_geq(s, 0, "source %u found no entry though all others left", i);
        iplimit_release(t, s);
    }
    iplimit_free(t);
}

Test(iplimit, full_window_admits_uncounted_never_refuses_a_new_source)
{
    struct iplimit *t = iplimit_new(1);
    unsigned uncounted = 0, counted = 0;

    /* more sources holding one connection each than the table has entries */
    for (uint32_t i = 0; i < 4096; i++) {
        struct netaddr a = v4(0x0b000000 + i, 5060);
        int32_t s = iplimit_acquire(t, &a, 1);
        cr_assert_neq(s, IPLIMIT_FULL, "new source %u refused", i);
        if (s == IPLIMIT_UNCOUNTED)
            uncounted++;
        else
            counted++;
    }
    cr_assert_leq(counted, 1024);
    cr_assert_gt(counted, 900, "only %u of 1024 entries used", counted);
    cr_assert_gt(uncounted, 0);
    iplimit_free(t);
}

struct racer {
    struct iplimit *t;
    struct netaddr a;
    uint32_t limit;
    unsigned won;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < 5000; i++)
        if (iplimit_acquire(r->t, &r->a, r->limit) >= 0) r->won++;
    return NULL;
}

Test(iplimit, racing_threads_never_exceed_the_cap)
{
    struct iplimit *t = iplimit_new(64);
    struct racer r[4];
    pthread_t th[4];
    unsigned total = 0;

    for (int i = 0; i < 4; i++) {
        r[i] = (struct racer){.t = t, .a = v4(0x7f000009, 1), .limit = 3000};
        cr_assert_eq(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += r[i].won;
    }
    cr_assert_eq(total, 3000, "admitted %u for a cap of 3000", total);
    cr_assert_eq(iplimit_count(t, &r[0].a), 3000);
    iplimit_free(t);
}
