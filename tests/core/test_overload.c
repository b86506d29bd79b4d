/* Tests for core/overload.c: the new-dialog rates, all together and per source. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "core/overload.h"

TestSuite(overload);

static struct netaddr addr(const char *hostport)
{
    struct netaddr a;
    cr_assert_eq(netaddr_parse(&a, slice_make(hostport, strlen(hostport))), 0, "%s", hostport);
    return a;
}

static unsigned admitted(struct overload *o, const struct netaddr *src, unsigned n, uint64_t now)
{
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        k += overload_source_admits(o, src, now);
    return k;
}

Test(overload, off_admits_everything)
{
    struct overload *o = overload_new(0, 0);
    struct netaddr a = addr("127.0.0.2:5060");
    cr_assert_not_null(o);
    cr_assert_eq(admitted(o, &a, 1000, 5000), 1000);
    for (int i = 0; i < 1000; i++)
        cr_assert(overload_dialog_admits(o, 5000));
    overload_free(o);
    overload_free(NULL);
}

Test(overload, dialog_rate_counts_per_second)
{
    struct overload *o = overload_new(10, 0);
    unsigned k = 0;
    for (int i = 0; i < 40; i++)
        k += overload_dialog_admits(o, 7000);
    cr_assert_eq(k, 10);
    cr_assert(overload_dialog_admits(o, 8000), "a new second starts again");
    overload_free(o);
}

Test(overload, source_rate_is_per_source_ip)
{
    struct overload *o = overload_new(0, 5);
    struct netaddr a = addr("127.0.0.2:5060"), a2 = addr("127.0.0.2:40000"),
                   b = addr("127.0.0.3:5060"), v6 = addr("[2001:db8:1:2::1]:5060"),
                   v6same = addr("[2001:db8:1:2::99]:5060");
    cr_assert_eq(admitted(o, &a, 3, 1000), 3);
    cr_assert_eq(admitted(o, &a2, 10, 1500), 2, "another port of the same IP shares the rate");
    cr_assert_eq(admitted(o, &b, 10, 1500), 5, "another IP has its own");
    cr_assert_eq(admitted(o, &v6, 4, 1500), 4);
    cr_assert_eq(admitted(o, &v6same, 4, 1500), 1, "an IPv6 source is its /64");
    cr_assert_eq(admitted(o, &a, 10, 2000), 5, "the next second starts again");
    overload_free(o);
}

/* A flood of new source addresses (spoofed UDP, say) neither grows the
 * table (it is fixed) nor frees a source that is over its rate. */
Test(overload, random_sources_do_not_evict_a_flooding_one)
{
    struct overload *o = overload_new(0, 5);
    struct netaddr a = addr("10.9.9.9:5060");
    char buf[64];
    cr_assert_eq(admitted(o, &a, 50, 1000), 5);
    for (unsigned i = 0; i < 20 * OVERLOAD_SETS * OVERLOAD_WAYS; i++) {
        snprintf(buf, sizeof buf, "10.%u.%u.%u:5060", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
        struct netaddr r = addr(buf);
        overload_source_admits(o, &r, 1000);
        if (i % 512 == 0)
            cr_assert_not(overload_source_admits(o, &a, 1000), "after %u new sources", i);
    }
    cr_assert_eq(admitted(o, &a, 10, 1000), 0);
    overload_free(o);
}

struct flood {
    struct overload *o;
    struct netaddr src;
    unsigned ok;
};

static void *flood_thread(void *arg)
{
    struct flood *f = arg;
    f->ok = admitted(f->o, &f->src, 20000, 42000);
    return NULL;
}

/* Workers share the table: the rate holds over all of them. */
Test(overload, the_rate_holds_across_threads)
{
    struct overload *o = overload_new(0, 100);
    struct flood f[4];
    pthread_t t[4];
    unsigned total = 0;
    for (int i = 0; i < 4; i++) {
        f[i] = (struct flood){.o = o, .src = addr(i % 2 ? "127.0.0.2:5060" : "127.0.0.2:5070")};
        cr_assert_eq(pthread_create(&t[i], NULL, flood_thread, &f[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += f[i].ok;
    }
    /* racing first sightings may split one source over two ways */
    cr_assert(total >= 100 && total <= 200, "admitted %u of 80000 at rate 100", total);
    overload_free(o);
}
