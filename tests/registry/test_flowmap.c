/* Tests for registry/flowmap.c (single-thread semantics and a 4-thread RCU
 * stress), registry/flowtoken.c, and a 4-thread stress of registry/locmap.c. */
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
#include "registry/flowtoken.h"
#include "registry/locmap.h"

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

static void fail(struct stress *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct stress *s, const char *fmt, ...)
{
    if (atomic_fetch_add(s->bad, 1) == 0 || !s->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->why, sizeof s->why, fmt, ap);
        va_end(ap);
    }
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

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

/* ---- locmap: four threads ---------------------------------------------- */

#define LOC_AORS     64
#define LOC_OPS      100000
#define LOC_CONTACTS 2 /* per thread per AOR: at most 4 x 2 = LOCMAP_MAX_BINDINGS */

static size_t aor_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "sip:user%u@example.com", i);
}

/* "sip:user<i>-t<t>-c<c>@127.0.0.1:<port>": the contact names its AOR. */
static struct locmap_binding binding(unsigned i, unsigned t, unsigned c, uint32_t seq, uint64_t exp)
{
    struct locmap_binding b;
    memset(&b, 0, sizeof b);
    b.contact_len =
        (uint16_t)sprintf(b.contact, "sip:user%u-t%u-c%u@127.0.0.1:%u", i, t, c, 20000 + t * 8 + c);
    b.proto = SIP_TRANSPORT_TLS;
    b.conn = (uint64_t)i << 40 | (uint64_t)t << 32 | seq;
    b.src = stress_addr(i);
    b.expires_ms = exp;
    b.q = (uint16_t)(500 + c * 100);
    return b;
}

static void check_binding(struct stress *s, unsigned i, const struct locmap_binding *b)
{
    char want[64];
    int n = sprintf(want, "sip:user%u-t", i);
    if (b->contact_len < (unsigned)n || b->contact_len >= LOCMAP_CONTACT_MAX ||
        memcmp(b->contact, want, (size_t)n) != 0 || (b->conn >> 40) != i || b->expires_ms == 0 ||
        b->proto != SIP_TRANSPORT_TLS)
        fail(s, "aor %u: foreign or torn binding %.*s conn=%#llx", i, (int)b->contact_len,
             b->contact, (unsigned long long)b->conn);
    unsigned t = (unsigned)(b->conn >> 32) & 0xff;
    unsigned ci = 0;
    const char *c = memchr(b->contact + n, 'c', b->contact_len - (size_t)n);
    if (c) ci = (unsigned)(c[1] - '0');
    struct locmap_binding w = binding(i, t, ci, 0, 0);
    if (t >= STRESS_THREADS || w.contact_len != b->contact_len ||
        memcmp(w.contact, b->contact, b->contact_len) != 0)
        fail(s, "aor %u: contact %.*s does not match its conn", i, (int)b->contact_len, b->contact);
}

static void *loc_stress_thread(void *arg)
{
    struct stress *s = arg;
    uint64_t rnd = 0x2545f4914f6cdd1dull * (s->t + 7);
    const uint64_t now = 1000000, far = now + 3600 * 1000;
    uint64_t last[LOC_AORS][LOC_CONTACTS] = {{0}}; /* conn of our last write */
    locmap_thread_register();
    for (uint32_t op = 1; op <= LOC_OPS; op++) {
        uint64_t r = xorshift(&rnd);
        unsigned i = (unsigned)(r >> 8) % LOC_AORS, c = (unsigned)(r >> 20) % LOC_CONTACTS;
        char aor[64];
        struct slice as = slice_make(aor, aor_of(i, aor));
        struct locmap_binding out[LOCMAP_MAX_BINDINGS], b;
        unsigned nout = 0;
        unsigned what = (unsigned)(r >> 40) % 10;
        if (what < 3) {
            b = binding(i, s->t, c, op, far);
            last[i][c] = b.conn;
            int rc = locmap_update(s->lm, as, false, &b, 1, now, out, &nout);
            if (rc != 0) fail(s, "update aor %u: %d", i, rc);
            if (nout > LOCMAP_MAX_BINDINGS) fail(s, "update aor %u: %u bindings", i, nout);
            for (unsigned j = 0; j < nout; j++)
                check_binding(s, i, &out[j]);
        } else if (what < 4) {
            b = binding(i, s->t, c, op, 0); /* expires 0: remove */
            if (locmap_update(s->lm, as, false, &b, 1, now, out, &nout) != 0)
                fail(s, "remove aor %u failed", i);
            for (unsigned j = 0; j < nout; j++)
                check_binding(s, i, &out[j]);
        } else if (what < 5) {
            /* a connection closes: drop whatever it registered */
            if (last[i][c]) locmap_drop_conn(s->lm, last[i][c]);
        } else {
            s->lookups++;
            if (locmap_lookup(s->lm, as, now, &b)) {
                s->hits++;
                check_binding(s, i, &b);
            }
        }
        if (op % QS_EVERY == 0) locmap_quiescent();
    }
    locmap_thread_unregister();
    return NULL;
}

TestSuite(locmap, .init = rcu_up, .fini = rcu_down);

Test(locmap, stress_four_threads_update_drop_lookup, .timeout = 240)
{
    struct locmap *lm = locmap_new();
    cr_assert_not_null(lm);
    _Atomic unsigned bad = 0;
    struct stress st[STRESS_THREADS];
    pthread_t th[STRESS_THREADS];
    locmap_thread_offline();
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        st[t] = (struct stress){.lm = lm, .t = t, .bad = &bad};
        cr_assert_eq(pthread_create(&th[t], NULL, loc_stress_thread, &st[t]), 0);
    }
    unsigned long hits = 0;
    for (unsigned t = 0; t < STRESS_THREADS; t++) {
        pthread_join(th[t], NULL);
        hits += st[t].hits;
    }
    locmap_thread_online();
    for (unsigned t = 0; t < STRESS_THREADS; t++)
        cr_expect_str_empty(st[t].why, "thread %u: %s", t, st[t].why);
    cr_assert_eq(atomic_load(&bad), 0);
    cr_assert_gt(hits, 0);
    locmap_free(lm);
}

Test(locmap, drop_conn_keeps_other_connections_bindings)
{
    struct locmap *lm = locmap_new();
    char aor[64];
    struct slice as = slice_make(aor, aor_of(1, aor));
    struct locmap_binding add[2] = {binding(1, 0, 0, 1, 5000), binding(1, 1, 1, 2, 5000)}, b;
    struct locmap_binding out[LOCMAP_MAX_BINDINGS];
    unsigned nout;
    cr_assert_eq(locmap_update(lm, as, false, add, 2, 1000, out, &nout), 0);
    cr_assert_eq(nout, 2);
    locmap_drop_conn(lm, add[1].conn);
    cr_assert(locmap_lookup(lm, as, 1000, &b));
    cr_assert_eq(b.conn, add[0].conn);
    locmap_drop_conn(lm, add[0].conn);
    cr_assert_not(locmap_lookup(lm, as, 1000, &b));
    locmap_free(lm);
}

/* ---- flow tokens ------------------------------------------------------- */

TestSuite(flowtoken);

static struct flowtoken_key fixed_key(uint8_t seed)
{
    struct flowtoken_key k;
    for (size_t i = 0; i < sizeof k.k; i++)
        k.k[i] = (uint8_t)(seed + i * 7);
    return k;
}

Test(flowtoken, roundtrip_ipv4_and_ipv6)
{
    struct flowtoken_key k = fixed_key(1);
    struct netaddr peers[2];
    peers[0] = v4("203.0.113.7", 51234);
    cr_assert_eq(netaddr_from_ip(&peers[1], SLICE_LIT("2001:db8::42"), 5061), 0);
    for (int i = 0; i < 2; i++) {
        char tok[FLOWTOKEN_STR_LEN + 1];
        uint64_t conn = 0x01000abc12345678ull + (uint64_t)i;
        size_t n = flowtoken_encode(&k, conn, SIP_TRANSPORT_TLS, &peers[i], tok, sizeof tok);
        cr_assert_gt(n, 0);
        cr_assert_leq(n, FLOWTOKEN_STR_LEN);
        for (size_t j = 0; j < n; j++) /* fits a SIP URI user part unescaped */
            cr_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                             tok[j]) != NULL);
        uint64_t c;
        uint8_t proto;
        struct netaddr p;
        cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_OK);
        cr_assert_eq(c, conn);
        cr_assert_eq(proto, SIP_TRANSPORT_TLS);
        cr_assert(netaddr_eq(&p, &peers[i]));
        cr_assert_eq(p.len, peers[i].len);
    }
}

Test(flowtoken, small_buffer_gives_zero)
{
    struct flowtoken_key k = fixed_key(1);
    struct netaddr a = v4("127.0.0.1", 5060);
    char tok[FLOWTOKEN_STR_LEN];
    cr_assert_eq(flowtoken_encode(&k, 1, SIP_TRANSPORT_TCP, &a, tok, FLOWTOKEN_STR_LEN - 1), 0);
}

Test(flowtoken, forged_mac_or_payload_or_key_is_forged)
{
    struct flowtoken_key k = fixed_key(1), other = fixed_key(2);
    struct netaddr a = v4("127.0.0.1", 40000), p;
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = flowtoken_encode(&k, 77, SIP_TRANSPORT_TLS, &a, tok, sizeof tok);
    uint64_t c;
    uint8_t proto;
    cr_assert_eq(flowtoken_decode(&other, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_FORGED);
    /* every whole-byte position except the family byte: change one character
     * (the last one also carries padding bits, skip it) */
    for (size_t i = 0; i + 1 < n; i++) {
        char t[FLOWTOKEN_STR_LEN + 1];
        memcpy(t, tok, n);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        enum flowtoken_result r = flowtoken_decode(&k, slice_make(t, n), &c, &proto, &p);
        /* characters 12..13 hold the family byte (raw[9]): a bad family is
         * malformed rather than forged; any other change must be forged */
        if (r == FLOWTOKEN_MALFORMED && (i == 12 || i == 13)) continue;
        cr_assert_eq(r, FLOWTOKEN_FORGED, "char %zu changed: result %d", i, r);
    }
}

Test(flowtoken, truncated_long_or_garbage_is_malformed)
{
    struct flowtoken_key k = fixed_key(1);
    struct netaddr a = v4("127.0.0.1", 40000), p;
    char tok[FLOWTOKEN_STR_LEN + 8];
    size_t n = flowtoken_encode(&k, 77, SIP_TRANSPORT_TLS, &a, tok, sizeof tok);
    uint64_t c;
    uint8_t proto;
    for (size_t len = 0; len < n; len++)
        cr_assert_eq(flowtoken_decode(&k, slice_make(tok, len), &c, &proto, &p),
                     FLOWTOKEN_MALFORMED, "prefix of %zu chars", len);
    tok[n] = 'A';
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n + 1), &c, &proto, &p), FLOWTOKEN_MALFORMED);
    const char *garbage[] = {"alice", "+%20", "phone1", "================",
                             "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        cr_assert_eq(
            flowtoken_decode(&k, slice_make(garbage[i], strlen(garbage[i])), &c, &proto, &p),
            FLOWTOKEN_MALFORMED, "%s", garbage[i]);
    /* right length, one character outside the alphabet */
    memcpy(tok + 5, "+", 1);
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_MALFORMED);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

Test(flowtoken, same_secret_file_same_key)
{
    char d[] = "/tmp/flowtoken-XXXXXX";
    cr_assert_not_null(mkdtemp(d));
    char f1[64], f2[64], f3[64], f4[64];
    snprintf(f1, sizeof f1, "%s/a", d);
    snprintf(f2, sizeof f2, "%s/b", d);
    snprintf(f3, sizeof f3, "%s/c", d);
    snprintf(f4, sizeof f4, "%s/empty", d);
    write_file(f1, "pool secret\n");
    write_file(f2, "pool secret\n");
    write_file(f3, "another secret\n");
    write_file(f4, "");
    struct flowtoken_key k1, k2, k3, r1, r2, dummy;
    cr_assert_eq(flowtoken_key_init(&k1, f1), 0);
    cr_assert_eq(flowtoken_key_init(&k2, f2), 0);
    cr_assert_eq(flowtoken_key_init(&k3, f3), 0);
    cr_assert_eq(memcmp(k1.k, k2.k, sizeof k1.k), 0, "same secret, different keys");
    cr_assert_neq(memcmp(k1.k, k3.k, sizeof k1.k), 0);
    cr_assert_eq(flowtoken_key_init(&dummy, f4), -ENODATA);
    snprintf(f4, sizeof f4, "%s/missing", d);
    cr_assert_eq(flowtoken_key_init(&dummy, f4), -ENOENT);
    cr_assert_eq(flowtoken_key_init(&r1, NULL), 0);
    cr_assert_eq(flowtoken_key_init(&r2, ""), 0);
    cr_assert_neq(memcmp(r1.k, r2.k, sizeof r1.k), 0, "random keys repeat");

    /* a pool member accepts the other's token; a stranger does not */
    struct netaddr a = v4("127.0.0.1", 40000), p;
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = flowtoken_encode(&k1, 99, SIP_TRANSPORT_TLS, &a, tok, sizeof tok);
    uint64_t c;
    uint8_t proto;
    cr_assert_eq(flowtoken_decode(&k2, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_OK);
    cr_assert_eq(c, 99);
    cr_assert_eq(flowtoken_decode(&k3, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_FORGED);
    cr_assert_eq(flowtoken_decode(&r1, slice_make(tok, n), &c, &proto, &p), FLOWTOKEN_FORGED);
    unlink(f1);
    unlink(f2);
    unlink(f3);
    snprintf(f4, sizeof f4, "%s/empty", d);
    unlink(f4);
    rmdir(d);
}
