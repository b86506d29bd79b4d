/* Tests for registry/locmap.c: bindings, the limits (bindings per AOR, AORs),
 * the connection index (close, hold), the sweep, and a 4-thread stress. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/sipuri.h"
#include "registry/locmap.h"
#include "stress.h"

/* Every test runs in its own process (Criterion forks), so each registers
 * its own thread with QSBR RCU and unregisters on the way out. */
static void rcu_up(void)
{
    locmap_thread_register();
}
static void rcu_down(void)
{
    locmap_thread_unregister();
}

TestSuite(locmap, .init = rcu_up, .fini = rcu_down);

#define NOW 1000000ull
#define MIN 60000ull

static struct slice aor_n(unsigned i, char *buf)
{
    return slice_make(buf, (size_t)sprintf(buf, "sip:user%u@example.com", i));
}

/* A binding of contact "sip:c<tag>@127.0.0.1" over conn (0: UDP). */
static struct locmap_binding bnd(unsigned tag, uint64_t conn, uint64_t expires_ms)
{
    struct locmap_binding b;
    memset(&b, 0, sizeof b);
    b.contact_len = (uint16_t)sprintf(b.contact, "sip:c%u@127.0.0.1", tag);
    b.proto = conn ? SIP_TRANSPORT_TLS : SIP_TRANSPORT_UDP;
    b.conn = conn;
    b.expires_ms = expires_ms;
    b.q = 1000;
    return b;
}

static int put(struct locmap *lm, unsigned aor, struct locmap_binding b)
{
    char a[64];
    return locmap_update(lm, aor_n(aor, a), false, &b, 1, NOW, NULL, 0, NULL);
}

static bool has(struct locmap *lm, unsigned aor, uint64_t now, struct locmap_binding *out)
{
    char a[64];
    struct locmap_binding tmp;
    return locmap_lookup(lm, aor_n(aor, a), now, out ? out : &tmp);
}

static void counts_are(struct locmap *lm, unsigned long aors, unsigned long bindings)
{
    unsigned long a, b;
    locmap_counts(lm, &a, &b);
    cr_assert_eq(a, aors, "aors %lu, want %lu", a, aors);
    cr_assert_eq(b, bindings, "bindings %lu, want %lu", b, bindings);
}

Test(locmap, bounds_of_new)
{
    cr_assert_null(locmap_new(0, 16));
    cr_assert_null(locmap_new(10, 0));
    cr_assert_null(locmap_new(10, LOCMAP_BINDINGS_MAX + 1));
    struct locmap *lm = locmap_new(10, LOCMAP_BINDINGS_MAX);
    cr_assert_not_null(lm);
    locmap_free(lm);
}

Test(locmap, refresh_remove_and_remove_all)
{
    struct locmap *lm = locmap_new(100, 16);
    char a[64];
    struct locmap_binding add[3] = {bnd(1, 0, NOW + MIN), bnd(2, 0, NOW + MIN),
                                    bnd(3, 0, NOW + MIN)},
                          out[8];
    unsigned nout = 99;
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, add, 3, NOW, out, 8, &nout), 0);
    cr_assert_eq(nout, 3);
    counts_are(lm, 1, 3);
    /* the same contact again replaces it */
    add[0].expires_ms = NOW + 2 * MIN;
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, add, 1, NOW, out, 2, &nout), 0);
    cr_assert_eq(nout, 2, "out is cut at out_cap");
    counts_are(lm, 1, 3);
    /* expires 0 removes one */
    struct locmap_binding rm = bnd(2, 0, 0);
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, &rm, 1, NOW, out, 8, &nout), 0);
    cr_assert_eq(nout, 2);
    counts_are(lm, 1, 2);
    /* Contact: * */
    cr_assert_eq(locmap_update(lm, aor_n(1, a), true, NULL, 0, NOW, out, 8, &nout), 0);
    cr_assert_eq(nout, 0);
    cr_assert_not(has(lm, 1, NOW, NULL));
    counts_are(lm, 0, 0);
    locmap_free(lm);
}

Test(locmap, max_bindings_refuses_the_whole_register)
{
    struct locmap *lm = locmap_new(100, 2);
    char a[64];
    struct locmap_binding two[2] = {bnd(1, 0, NOW + MIN), bnd(2, 0, NOW + MIN)};
    struct locmap_binding third = bnd(3, 0, NOW + MIN), out[4];
    unsigned nout;
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, two, 2, NOW, NULL, 0, NULL), 0);
    cr_assert_eq(put(lm, 1, third), -ENOSPC);
    /* a refresh of the two and a new one together: nothing changes */
    struct locmap_binding three[3] = {bnd(1, 0, NOW + 5 * MIN), bnd(2, 0, NOW + 5 * MIN), third};
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, three, 3, NOW, out, 4, &nout), -ENOSPC);
    struct locmap_binding b;
    cr_assert(has(lm, 1, NOW + 2 * MIN, &b) == false, "the refresh was applied despite -ENOSPC");
    counts_are(lm, 1, 2);
    /* replacing one by another within the bound is fine */
    struct locmap_binding swap[2] = {bnd(2, 0, 0), third};
    cr_assert_eq(locmap_update(lm, aor_n(1, a), false, swap, 2, NOW, out, 4, &nout), 0);
    cr_assert_eq(nout, 2);
    /* an expired binding does not count against the bound */
    cr_assert_eq(put(lm, 2, bnd(9, 0, NOW + 1)), 0);
    cr_assert_eq(put(lm, 2, bnd(8, 0, NOW + MIN)), 0);
    char a2[64];
    struct locmap_binding late = bnd(7, 0, NOW + 10 + MIN);
    cr_assert_eq(locmap_update(lm, aor_n(2, a2), false, &late, 1, NOW + 10, NULL, 0, NULL), 0);
    locmap_free(lm);
}

Test(locmap, max_aors_refuses_new_aors_only)
{
    struct locmap *lm = locmap_new(3, 4);
    for (unsigned i = 0; i < 3; i++)
        cr_assert_eq(put(lm, i, bnd(i, 0, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 3, bnd(3, 0, NOW + MIN)), -EDQUOT);
    cr_assert_not(has(lm, 3, NOW, NULL));
    counts_are(lm, 3, 3);
    /* existing AORs still take refreshes and new contacts */
    cr_assert_eq(put(lm, 0, bnd(10, 0, NOW + MIN)), 0);
    counts_are(lm, 3, 4);
    /* one leaves: a new one fits */
    cr_assert_eq(put(lm, 1, bnd(1, 0, 0)), 0);
    counts_are(lm, 2, 3);
    cr_assert_eq(put(lm, 3, bnd(3, 0, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 4, bnd(4, 0, NOW + MIN)), -EDQUOT);
    locmap_free(lm);
}

Test(locmap, drop_conn_finds_every_aor_of_the_connection)
{
    struct locmap *lm = locmap_new(100, 8);
    const uint64_t c1 = 0x0100000100000001ull, c2 = 0x0100000200000001ull;
    /* c1 carries AORs 1, 2, 3; AOR 2 also has a c2 and a UDP binding */
    cr_assert_eq(put(lm, 1, bnd(1, c1, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(2, c1, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(3, c1, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(4, c2, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(5, 0, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 3, bnd(6, c1, NOW + MIN)), 0);
    counts_are(lm, 3, 6);
    locmap_drop_conn(lm, c1);
    counts_are(lm, 1, 2);
    cr_assert_not(has(lm, 1, NOW, NULL));
    cr_assert_not(has(lm, 3, NOW, NULL));
    struct locmap_binding b;
    char a[64];
    struct locmap_binding out[8];
    unsigned nout;
    cr_assert_eq(locmap_update(lm, aor_n(2, a), false, NULL, 0, NOW, out, 8, &nout), 0);
    cr_assert_eq(nout, 2);
    cr_assert(out[0].conn != c1 && out[1].conn != c1);
    locmap_drop_conn(lm, c2);
    cr_assert(has(lm, 2, NOW, &b));
    cr_assert_eq(b.conn, 0, "the UDP binding stays");
    counts_are(lm, 1, 1);
    locmap_free(lm);
}

Test(locmap, index_follows_remove_and_register_again)
{
    struct locmap *lm = locmap_new(100, 8);
    const uint64_t c = 0x0200000100000007ull;
    char a[64];
    cr_assert_eq(put(lm, 1, bnd(1, c, NOW + MIN)), 0);
    /* removed from elsewhere (Contact: * over UDP), then registered again
     * over the same connection: the index must still find it */
    cr_assert_eq(locmap_update(lm, aor_n(1, a), true, NULL, 0, NOW, NULL, 0, NULL), 0);
    cr_assert_eq(locmap_conn_until(lm, c, NOW), 0);
    cr_assert_eq(put(lm, 1, bnd(1, c, NOW + MIN)), 0);
    cr_assert_eq(locmap_conn_until(lm, c, NOW), NOW + MIN);
    locmap_drop_conn(lm, c);
    cr_assert_not(has(lm, 1, NOW, NULL));
    counts_are(lm, 0, 0);
    locmap_free(lm);
}

Test(locmap, conn_until_is_the_latest_live_binding)
{
    struct locmap *lm = locmap_new(1000, 8);
    const uint64_t c = 0x0300000100000001ull;
    cr_assert_eq(locmap_conn_until(lm, c, NOW), 0);
    cr_assert_eq(put(lm, 1, bnd(1, c, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(2, c, NOW + 3 * MIN)), 0);
    cr_assert_eq(put(lm, 3, bnd(3, 0, NOW + 9 * MIN)), 0); /* UDP: not this connection */
    cr_assert_eq(locmap_conn_until(lm, c, NOW), NOW + 3 * MIN);
    cr_assert_eq(put(lm, 2, bnd(2, c, 0)), 0);
    cr_assert_eq(locmap_conn_until(lm, c, NOW), NOW + MIN);
    cr_assert_eq(locmap_conn_until(lm, c, NOW + MIN), 0, "expired: not held");
    /* past LOCMAP_CONN_WALK_MAX AORs it answers "held" without looking at all */
    for (unsigned i = 10; i < 10 + LOCMAP_CONN_WALK_MAX + 1; i++)
        cr_assert_eq(put(lm, i, bnd(i, c, NOW + MIN)), 0);
    cr_assert_eq(locmap_conn_until(lm, c, NOW), UINT64_MAX);
    locmap_free(lm);
}

Test(locmap, sweep_removes_expired_bindings_and_empty_aors)
{
    struct locmap *lm = locmap_new(100, 8);
    const uint64_t c = 0x0400000100000001ull;
    cr_assert_eq(put(lm, 1, bnd(1, c, NOW + 1000)), 0);
    cr_assert_eq(put(lm, 1, bnd(2, 0, NOW + MIN)), 0);
    cr_assert_eq(put(lm, 2, bnd(3, 0, NOW + 1000)), 0);
    cr_assert_eq(put(lm, 3, bnd(4, c, NOW + 2000)), 0);
    counts_are(lm, 3, 4);
    cr_assert_eq(locmap_sweep(lm, NOW), 0);
    counts_are(lm, 3, 4);
    cr_assert_eq(locmap_sweep(lm, NOW + 1000), 2);
    counts_are(lm, 2, 2);
    cr_assert(has(lm, 1, NOW + 1000, NULL));
    cr_assert_not(has(lm, 2, NOW, NULL), "AOR 2 had only an expired binding");
    cr_assert_eq(locmap_conn_until(lm, c, NOW), NOW + 2000, "AOR 3 still on c");
    cr_assert_eq(locmap_sweep(lm, NOW + 2000), 1);
    cr_assert_eq(locmap_conn_until(lm, c, NOW), 0);
    counts_are(lm, 1, 1);
    /* the AORs that left make room again (--max-aors counts live ones) */
    for (unsigned i = 10; i < 20; i++)
        cr_assert_eq(put(lm, i, bnd(i, 0, NOW + MIN)), 0);
    locmap_free(lm);
}

Test(locmap, aor_key_is_canonical)
{
    char k[LOCMAP_AOR_MAX];
    size_t n =
        locmap_aor_key(SLICE_LIT("sips:Alice@CC.Example.COM:5061;transport=tls"), k, sizeof k);
    cr_assert_eq(n, strlen("sip:Alice@cc.example.com"));
    cr_assert(memcmp(k, "sip:Alice@cc.example.com", n) == 0);
    cr_assert_eq(locmap_aor_key(SLICE_LIT("tel:+15551234"), k, sizeof k), 0);
    cr_assert_eq(locmap_aor_key(SLICE_LIT("sip:a@b.example.com"), k, 8), 0);
}

/* ---- four threads --------------------------------------------------------- */

#define THREADS  4
#define AORS     32
#define OPS      60000
#define CONNS    3 /* per thread: conn = (thread + 1) << 32 | k */
#define QS_EVERY 64

struct stress {
    struct locmap *lm;
    unsigned t;
    _Atomic unsigned *bad;
    char why[160];
    unsigned long hits;
};

static uint64_t conn_of(unsigned t, unsigned k)
{
    return (uint64_t)(t + 1) << 32 | (k + 1);
}

/* Each thread adds bindings only over its own connections (the owner rule),
 * but removes anyone's (Contact: *), and closes its own connections. */
static void *stress_thread(void *arg)
{
    struct stress *s = arg;
    uint64_t rnd = 0x2545f4914f6cdd1dull * (s->t + 7);
    locmap_thread_register();
    for (uint32_t op = 1; op <= OPS; op++) {
        uint64_t r = xorshift(&rnd);
        unsigned i = (unsigned)(r >> 8) % AORS, k = (unsigned)(r >> 20) % CONNS;
        unsigned what = (unsigned)(r >> 40) % 16;
        char a[64];
        struct slice as = aor_n(i, a);
        struct locmap_binding b = bnd(s->t * 16 + k, conn_of(s->t, k), NOW + MIN), out[16];
        unsigned nout = 0;
        int rc = 0;
        if (what < 6)
            rc = locmap_update(s->lm, as, false, &b, 1, NOW, out, 16, &nout);
        else if (what < 8) {
            b.expires_ms = 0;
            rc = locmap_update(s->lm, as, false, &b, 1, NOW, out, 16, &nout);
        } else if (what < 9)
            rc = locmap_update(s->lm, as, true, NULL, 0, NOW, out, 16, &nout);
        else if (what < 10)
            locmap_drop_conn(s->lm, conn_of(s->t, k));
        else if (locmap_lookup(s->lm, as, NOW, &b)) {
            s->hits++;
            if ((b.conn >> 32) == 0 || (b.conn >> 32) > THREADS || b.expires_ms != NOW + MIN)
                fail(s, "aor %u: torn binding conn=%#llx", i, (unsigned long long)b.conn);
        }
        if (rc != 0) fail(s, "aor %u: update %d", i, rc);
        if (nout > THREADS * CONNS) fail(s, "aor %u: %u bindings", i, nout);
        if (op % QS_EVERY == 0) locmap_quiescent();
    }
    locmap_thread_unregister();
    return NULL;
}

Test(locmap, stress_four_threads_then_closing_every_connection_empties_it, .timeout = 240)
{
    struct locmap *lm = locmap_new(AORS, THREADS * CONNS);
    _Atomic unsigned bad = 0;
    struct stress st[THREADS];
    pthread_t th[THREADS];
    locmap_thread_offline();
    for (unsigned t = 0; t < THREADS; t++) {
        st[t] = (struct stress){.lm = lm, .t = t, .bad = &bad};
        cr_assert_eq(pthread_create(&th[t], NULL, stress_thread, &st[t]), 0);
    }
    unsigned long hits = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        hits += st[t].hits;
    }
    locmap_thread_online();
    for (unsigned t = 0; t < THREADS; t++)
        cr_expect_str_empty(st[t].why, "thread %u: %s", t, st[t].why);
    cr_assert_eq(atomic_load(&bad), 0);
    cr_assert_gt(hits, 0);
    /* the counters agree with what the map holds */
    unsigned long aors = 0, bindings = 0;
    for (unsigned i = 0; i < AORS; i++) {
        char a[64];
        struct locmap_binding out[THREADS * CONNS];
        unsigned nout = 0;
        cr_assert_eq(
            locmap_update(lm, aor_n(i, a), false, NULL, 0, NOW, out, THREADS * CONNS, &nout), 0);
        aors += nout > 0;
        bindings += nout;
    }
    counts_are(lm, aors, bindings);
    cr_assert_gt(bindings, 0);
    /* every binding is over some connection: closing them all through the
     * index must leave nothing (an index entry lost in a race would) */
    for (unsigned t = 0; t < THREADS; t++)
        for (unsigned k = 0; k < CONNS; k++)
            locmap_drop_conn(lm, conn_of(t, k));
    for (unsigned i = 0; i < AORS; i++)
        cr_assert_not(has(lm, i, NOW, NULL), "aor %u keeps a binding of a closed connection", i);
    counts_are(lm, 0, 0);
    cr_assert_eq(locmap_sweep(lm, NOW), 0);
    locmap_free(lm);
}
