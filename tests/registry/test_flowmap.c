/* Tests for registry/flowmap.c (single-thread semantics and a 4-thread RCU
 * stress); flow tokens: test_flowtoken.c; the location service: test_locmap.c. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/netaddr.h"
#include "core/sipuri.h"
#include "registry/flowmap.h"
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

static struct netaddr v4(const char *ip, int port)
{
    struct netaddr a;
    cr_assert_eq(netaddr_from_ip(&a, slice_make(ip, strlen(ip)), port), 0);
    return a;
}

static struct flow_entry entry(uint64_t conn, uint8_t proto, struct netaddr peer)
{
    struct flow_entry e = {
        .conn = conn, .proto = proto, .peer = peer, .register_ms = conn ^ 0xa5a5a5a5u};
    return e;
}

/* ---- flowmap: one thread ----------------------------------------------- */

TestSuite(flowmap, .init = rcu_up, .fini = rcu_down);

Test(flowmap, set_then_lookup_copies_the_entry)
{
    struct flowmap *fm = flowmap_new();
    cr_assert_not_null(fm);
    struct netaddr a = v4("192.0.2.10", 40001);
    struct flow_entry e = entry(0x0100000200000003ull, SIP_TRANSPORT_TLS, a), out;
    cr_assert_not(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out), "empty map found something");
    cr_assert_eq(flowmap_set(fm, &e), 0);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out));
    cr_assert_eq(out.conn, e.conn);
    cr_assert_eq(out.proto, SIP_TRANSPORT_TLS);
    cr_assert(netaddr_eq(&out.peer, &a));
    cr_assert_eq(out.register_ms, e.register_ms);
    cr_assert_eq(flowmap_count(fm), 1);
    flowmap_free(fm);
    flowmap_free(NULL);
}

Test(flowmap, key_is_transport_address_and_port)
{
    struct flowmap *fm = flowmap_new();
    struct netaddr a = v4("192.0.2.10", 40001), b = v4("192.0.2.10", 40002);
    struct netaddr c = v4("192.0.2.11", 40001), d6;
    cr_assert_eq(netaddr_from_ip(&d6, SLICE_LIT("2001:db8::1"), 40001), 0);
    struct flow_entry out;
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 1,
                                                      .proto = SIP_TRANSPORT_TCP,
                                                      .peer = a,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 2,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 3,
                                                      .proto = SIP_TRANSPORT_TCP,
                                                      .peer = b,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 4,
                                                      .proto = SIP_TRANSPORT_TCP,
                                                      .peer = c,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 5,
                                                      .proto = SIP_TRANSPORT_TCP,
                                                      .peer = d6,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_count(fm), 5);
    const struct {
        uint8_t proto;
        struct netaddr *addr;
        uint64_t conn;
    } want[] = {{SIP_TRANSPORT_TCP, &a, 1},
                {SIP_TRANSPORT_TLS, &a, 2},
                {SIP_TRANSPORT_TCP, &b, 3},
                {SIP_TRANSPORT_TCP, &c, 4},
                {SIP_TRANSPORT_TCP, &d6, 5}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert(flowmap_lookup(fm, want[i].proto, want[i].addr, &out), "case %zu", i);
        cr_assert_eq(out.conn, want[i].conn, "case %zu", i);
    }
    cr_assert_not(flowmap_lookup(fm, SIP_TRANSPORT_UDP, &a, &out));
    flowmap_free(fm);
}

/* The keyed hash must cover what netaddr_eq() compares and nothing else:
 * an address that differs only in bytes the comparison ignores (sin_zero,
 * sin6_flowinfo) is the same flow, one that differs in scope is not. */
Test(flowmap, hash_covers_exactly_the_compared_fields)
{
    static const uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    struct flow_entry out;
    struct netaddr a4 = v4("198.51.100.7", 5070), a4x = a4, a6, a6x, a6s;

    hash_set_key(key);
    struct flowmap *fm = flowmap_new();
    memset(a4x.in4.sin_zero, 0xa5, sizeof a4x.in4.sin_zero);
    cr_assert_eq(netaddr_from_ip(&a6, SLICE_LIT("2001:db8::7"), 5070), 0);
    a6x = a6;
    a6x.in6.sin6_flowinfo = htonl(0x12345);
    a6s = a6;
    a6s.in6.sin6_scope_id = 3;
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 7,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a4,
                                                      .register_ms = 0}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 8,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a6,
                                                      .register_ms = 0}),
                 0);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a4x, &out));
    cr_assert_eq(out.conn, 7);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a6x, &out));
    cr_assert_eq(out.conn, 8);
    cr_assert_not(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a6s, &out));
    flowmap_free(fm);
}

Test(flowmap, set_replaces_the_older_connection)
{
    struct flowmap *fm = flowmap_new();
    struct netaddr a = v4("127.0.0.1", 5555);
    struct flow_entry out;
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 10,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 1}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 11,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 2}),
                 0);
    cr_assert_eq(flowmap_count(fm), 1, "a replace must not add a second node");
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out));
    cr_assert_eq(out.conn, 11);
    cr_assert_eq(out.register_ms, 2);
    flowmap_free(fm);
}

Test(flowmap, remove_only_when_the_connection_matches)
{
    struct flowmap *fm = flowmap_new();
    struct netaddr a = v4("127.0.0.1", 5555), other = v4("127.0.0.1", 5556);
    struct flow_entry out;
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 10,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 1}),
                 0);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 11,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 2}),
                 0);
    /* the old connection closes after the phone re-registered: no effect */
    flowmap_remove(fm, SIP_TRANSPORT_TLS, &a, 10);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out), "stale close removed the entry");
    cr_assert_eq(out.conn, 11);
    /* right conn, wrong transport or address: no effect */
    flowmap_remove(fm, SIP_TRANSPORT_TCP, &a, 11);
    flowmap_remove(fm, SIP_TRANSPORT_TLS, &other, 11);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out));
    /* the current connection closes: gone */
    flowmap_remove(fm, SIP_TRANSPORT_TLS, &a, 11);
    cr_assert_not(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out));
    cr_assert_eq(flowmap_count(fm), 0);
    /* removing what is not there is harmless */
    flowmap_remove(fm, SIP_TRANSPORT_TLS, &a, 11);
    cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = 12,
                                                      .proto = SIP_TRANSPORT_TLS,
                                                      .peer = a,
                                                      .register_ms = 3}),
                 0);
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out));
    cr_assert_eq(out.conn, 12);
    flowmap_free(fm);
}

Test(flowmap, many_entries_survive_resizes)
{
    struct flowmap *fm = flowmap_new();
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        struct netaddr a = v4("10.0.0.1", 1 + i % 60000);
        a.in4.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)(i / 60000));
        cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = (uint64_t)i + 1,
                                                          .proto = SIP_TRANSPORT_TLS,
                                                          .peer = a,
                                                          .register_ms = 0}),
                     0);
    }
    cr_assert_eq(flowmap_count(fm), N);
    for (int i = 0; i < N; i += 7) {
        struct netaddr a = v4("10.0.0.1", 1 + i % 60000);
        a.in4.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)(i / 60000));
        struct flow_entry out;
        cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &out), "entry %d lost", i);
        cr_assert_eq(out.conn, (uint64_t)i + 1);
        locmap_quiescent();
    }
    flowmap_free(fm);
}

/* The entry of a over TLS has these since/keep-alive times and AOR. */
static void expect_flow(struct flowmap *fm, const struct netaddr *a, uint64_t since,
                        uint64_t keepalive, const char *aor)
{
    struct flow_entry out;
    cr_assert(flowmap_lookup(fm, SIP_TRANSPORT_TLS, a, &out));
    cr_assert_eq(out.since_ms, since);
    cr_assert_eq(out.keepalive_ms, keepalive);
    cr_assert_eq(out.aor_len, strlen(aor));
    cr_assert(memcmp(out.aor, aor, out.aor_len) == 0);
}

/* Records conn for a over TLS at since_ms (with an AOR, or none). */
static void set_flow(struct flowmap *fm, const struct netaddr *a, uint64_t conn, uint64_t since,
                     const char *aor)
{
    struct flow_entry e = entry(conn, SIP_TRANSPORT_TLS, *a);
    e.since_ms = since;
    e.aor_len = (uint16_t)snprintf(e.aor, sizeof e.aor, "%s", aor);
    cr_assert_eq(flowmap_set(fm, &e), 0);
}

Test(flowmap, same_connection_keeps_since_keepalive_and_aor)
{
    struct flowmap *fm = flowmap_new();
    struct netaddr a = v4("192.0.2.20", 40001);
    set_flow(fm, &a, 7, 1000, "sip:alice@example.com");
    flowmap_touch(fm, SIP_TRANSPORT_TLS, &a, 8, 1500); /* another connection's: ignored */
    expect_flow(fm, &a, 1000, 0, "sip:alice@example.com");
    flowmap_touch(fm, SIP_TRANSPORT_TLS, &a, 7, 2000);
    /* recorded again on the same connection (a dialog, no AOR): kept */
    set_flow(fm, &a, 7, 3000, "");
    expect_flow(fm, &a, 1000, 2000, "sip:alice@example.com");
    /* a new connection from the same address starts afresh */
    set_flow(fm, &a, 9, 4000, "");
    expect_flow(fm, &a, 4000, 0, "");
    flowmap_free(fm);
}

Test(flowmap, pages_cover_every_entry_once)
{
    struct flowmap *fm = flowmap_new();
    enum { N = 25 };
    for (unsigned i = 0; i < N; i++)
        cr_assert_eq(flowmap_set(fm, &(struct flow_entry){.conn = i + 1,
                                                          .proto = SIP_TRANSPORT_TCP,
                                                          .peer = v4("192.0.2.30", 1000 + (int)i)}),
                     0);
    bool seen[N + 1] = {false};
    struct flow_entry page[7];
    unsigned long total = 0, off = 0;
    unsigned got;
    while ((got = flowmap_page(fm, off, page, 7, &total)) > 0) {
        cr_assert_eq(total, N);
        for (unsigned k = 0; k < got; k++) {
            cr_assert(page[k].conn >= 1 && page[k].conn <= N && !seen[page[k].conn]);
            seen[page[k].conn] = true;
        }
        off += got;
    }
    cr_assert_eq(off, N);
    cr_assert_eq(flowmap_page(fm, 0, NULL, 0, &total), 0);
    cr_assert_eq(total, N, "a page of 0 still counts");
    flowmap_free(fm);
}

/* ---- flowmap: four threads --------------------------------------------- */

#define STRESS_THREADS 4
#define STRESS_OPS     200000
#define SHARED_KEYS    8192 /* everyone writes these; enough to make the table grow */
#define OWN_KEYS       64   /* one writer each: exact expectations */
#define QS_EVERY       64

/* A value names the key it was written for, so a lookup can tell a torn or
 * misplaced entry: conn = key << 40 | thread << 32 | seq (never 0), and
 * register_ms = ~conn. */
static uint64_t stress_conn(unsigned key, unsigned t, uint32_t seq)
{
    return (uint64_t)key << 40 | (uint64_t)t << 32 | (seq | 1u);
}

static struct netaddr stress_addr(unsigned key)
{
    struct netaddr a;
    memset(&a, 0, sizeof a);
    a.in4.sin_family = AF_INET;
    a.in4.sin_addr.s_addr = htonl(0x7f000001u + (key >> 14));
    a.in4.sin_port = htons((uint16_t)(1024 + (key & 0x3fff)));
    a.len = sizeof a.in4;
    return a;
}

struct stress {
    struct flowmap *fm;
    struct locmap *lm;
    unsigned t;
    _Atomic unsigned *bad;
    char why[160]; /* first failure seen by this thread */
    unsigned long lookups, hits;
};

static void check_flow(struct stress *s, unsigned key, const struct flow_entry *e)
{
    struct netaddr want = stress_addr(key);
    if ((e->conn >> 40) != key || ((e->conn >> 32) & 0xff) >= STRESS_THREADS ||
        e->register_ms != ~e->conn || e->proto != SIP_TRANSPORT_TLS || !netaddr_eq(&e->peer, &want))
        fail(s, "key %u: foreign or torn entry conn=%#llx reg=%#llx", key,
             (unsigned long long)e->conn, (unsigned long long)e->register_ms);
}

static void *flow_stress_thread(void *arg)
{
    struct stress *s = arg;
    uint64_t rnd = 0x9e3779b97f4a7c15ull * (s->t + 1);
    /* what this thread last wrote to each shared key (0: nothing live) */
    uint64_t mine[SHARED_KEYS] = {0};
    /* exact state of this thread's own keys */
    uint64_t own[OWN_KEYS] = {0};
    unsigned own_base = SHARED_KEYS + s->t * OWN_KEYS;

    locmap_thread_register();
    for (uint32_t op = 1; op <= STRESS_OPS; op++) {
        uint64_t r = xorshift(&rnd);
        bool on_own = (r & 7) == 0;
        unsigned k = on_own ? (unsigned)(r >> 8) % OWN_KEYS : (unsigned)(r >> 8) % SHARED_KEYS;
        unsigned key = on_own ? own_base + k : k;
        struct netaddr a = stress_addr(key);
        struct flow_entry e;
        unsigned what = (unsigned)(r >> 40) % 10;
        if (what < 3) { /* insert or replace */
            uint64_t c = stress_conn(key, s->t, op);
            e = (struct flow_entry){
                .conn = c, .proto = SIP_TRANSPORT_TLS, .peer = a, .register_ms = ~c};
            if (flowmap_set(s->fm, &e) != 0) fail(s, "set failed");
            if (on_own)
                own[k] = c;
            else
                mine[k] = c;
        } else if (what < 4) { /* delete, only if it is still ours */
            uint64_t c = on_own ? own[k] : mine[k];
            if (c) flowmap_remove(s->fm, SIP_TRANSPORT_TLS, &a, c);
            if (on_own)
                own[k] = 0;
            else
                mine[k] = 0;
        } else if (what < 5) { /* delete with a conn nobody ever used */
            flowmap_remove(s->fm, SIP_TRANSPORT_TLS, &a, (uint64_t)key << 40 | 0xffull << 32);
            if (on_own && own[k]) {
                if (!flowmap_lookup(s->fm, SIP_TRANSPORT_TLS, &a, &e) || e.conn != own[k])
                    fail(s, "own key %u: removed by a non-matching conn", key);
            }
        } else { /* lookup */
            s->lookups++;
            bool found = flowmap_lookup(s->fm, SIP_TRANSPORT_TLS, &a, &e);
            if (found) {
                s->hits++;
                check_flow(s, key, &e);
            }
            if (on_own) {
                if (found != (own[k] != 0) || (found && e.conn != own[k]))
                    fail(s, "own key %u: found=%d conn=%#llx, wrote %#llx", key, found,
                         found ? (unsigned long long)e.conn : 0ull, (unsigned long long)own[k]);
            }
        }
        if (op % QS_EVERY == 0) locmap_quiescent();
    }
    /* own keys: the map holds exactly what this thread left there */
    for (unsigned k = 0; k < OWN_KEYS; k++) {
        struct netaddr a = stress_addr(own_base + k);
        struct flow_entry e;
        bool found = flowmap_lookup(s->fm, SIP_TRANSPORT_TLS, &a, &e);
        if (found != (own[k] != 0) || (found && e.conn != own[k]))
            fail(s, "own key %u at the end: found=%d", own_base + k, found);
    }
    locmap_thread_unregister();
    return NULL;
}

Test(flowmap, stress_four_threads_insert_replace_delete_lookup, .timeout = 240)
{
    struct flowmap *fm = flowmap_new();
    _Atomic unsigned bad = 0;
    struct stress st[STRESS_THREADS];
    pthread_t th[STRESS_THREADS];
    /* the test thread only waits: offline, so grace periods need not wait for it */
    locmap_thread_offline();
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        st[t] = (struct stress){.fm = fm, .t = t, .bad = &bad};
        cr_assert_eq(pthread_create(&th[t], NULL, flow_stress_thread, &st[t]), 0);
    }
    unsigned long lookups = 0, hits = 0;
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        pthread_join(th[t], NULL);
        lookups += st[t].lookups;
        hits += st[t].hits;
    }
    locmap_thread_online();
    for (unsigned t = 0; t < STRESS_THREADS; t++)
        cr_expect_str_empty(st[t].why, "thread %u: %s", t, st[t].why);
    cr_assert_eq(atomic_load(&bad), 0, "%u invariant violations", atomic_load(&bad));
    cr_assert_gt(hits, 0);
    cr_assert_lt(hits, lookups, "every lookup hit: deletes had no effect");

    /* quiescent map: every entry is one a writer wrote, and count agrees */
    unsigned long found = 0;
    struct stress chk = {.bad = &bad};
    for (unsigned key = 0; key < SHARED_KEYS + STRESS_THREADS * OWN_KEYS; key++) {
        struct netaddr a = stress_addr(key);
        struct flow_entry e;
        if (flowmap_lookup(fm, SIP_TRANSPORT_TLS, &a, &e)) {
            found++;
            check_flow(&chk, key, &e);
        }
    }
    cr_assert_eq(atomic_load(&bad), 0, "%s", chk.why);
    cr_assert_eq(flowmap_count(fm), found);
    flowmap_free(fm);
}
