/* Tests for core/branch.c: branch round trip and refusal, server keys, loop hash. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/branch.h"
#include "core/txn.h"
#include "parsed_msg.h"

TestSuite(branch);

/* Parses and validates a request given as a string. */
static void parse(struct parsed *p, const char *text)
{
    parsed_init(p, text, strlen(text), true);
}

static struct slice S(const char *s) {
    return slice_make(s, strlen(s));
}

/* ---- encode / decode -------------------------------------------------------- */

Test(branch, round_trip)
{
    static const struct branch_id ids[] = {
        {0, 0, 0, 0, 0},
        {1, 2, 3, 4, 5},
        {0xff, 0xffffff, 0xffffffff, 0xffffffff, UINT64_MAX},
        {63, 0x123456, 0x89abcdef, 0xdeadbeef, 0x0123456789abcdefull},
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char out[64];
        size_t n = branch_encode(&ids[i], out, sizeof out);
        cr_assert_eq(n, BRANCH_LEN);
        cr_assert(memcmp(out, BRANCH_PREFIX, BRANCH_PREFIX_LEN) == 0);
        struct branch_id got;
        cr_assert(branch_decode(slice_make(out, n), &got), "%.*s", (int)n, out);
        cr_assert_eq(got.worker, ids[i].worker);
        cr_assert_eq(got.slot, ids[i].slot);
        cr_assert_eq(got.gen, ids[i].gen);
        cr_assert_eq(got.loop, ids[i].loop);
        cr_assert_eq(got.rand, ids[i].rand);
    }
}

Test(branch, encode_keeps_the_low_bits_and_the_wire_form)
{
    struct branch_id id = {0x1ff, 0x1abcdef, 1, 2, 0xfedcba9876543210ull}, got;
    char out[BRANCH_LEN];
    cr_assert_eq(branch_encode(&id, out, sizeof out), BRANCH_LEN);
    cr_assert(memcmp(out, "z9hG4bKSeffabcdef0000000100000002fedcba9876543210", BRANCH_LEN) == 0,
              "%.*s", BRANCH_LEN, out);
    cr_assert(branch_decode(slice_make(out, BRANCH_LEN), &got));
    cr_assert_eq(got.worker, 0xff);
    cr_assert_eq(got.slot, 0xabcdef);
    cr_assert_eq(got.rand, 0xfedcba9876543210ull);
}

Test(branch, encode_refuses_a_short_buffer)
{
    struct branch_id id = {1, 2, 3, 4, 5};
    char out[BRANCH_LEN - 1];
    cr_assert_eq(branch_encode(&id, out, sizeof out), 0);
}

Test(branch, decode_refuses_foreign_and_malformed_branches)
{
    static const char *const bad[] = {
        "",
        "z9hG4bK776asdhds",                                   /* someone else's */
        "z9hG4bKSe0100000200000003000000ff",                  /* the old form: no random bits */
        "z9hG4bKSe0100000200000003000000ff0123456789abcdef0", /* one too many */
        "z9hG4bKSe0100000200000003000000ff0123456789abcde",   /* one too few */
        "z9hG4bKSa0100000200000003000000ff0123456789abcdef",  /* our stateless prefix */
        "z9hG4bKse0100000200000003000000ff0123456789abcdef",  /* prefix case differs */
        "x9hG4bKSe0100000200000003000000ff0123456789abcdef",  /* no magic cookie */
        "z9hG4bKSe0100000200000003000000fF0123456789abcdef",  /* uppercase digit */
        "z9hG4bKSe0100000200000003000000ff0123456789abcdeF",  /* uppercase random digit */
        "z9hG4bKSe0100000g00000003000000ff0123456789abcdef",  /* not hex */
        "z9hG4bKSe0100000200000003000000ff01234567 9abcdef",  /* space */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct branch_id id;
        cr_assert(!branch_decode(S(bad[i]), &id), "accepted \"%s\"", bad[i]);
    }
    struct branch_id id;
    cr_assert(branch_decode(S("z9hG4bKSe0100000200000003000000ff0123456789abcdef"), &id));
    cr_assert_eq(id.loop, 0xff);
    cr_assert_eq(id.rand, 0x0123456789abcdefull);
}

/* The branch of a transaction: its routing bits, and random bits that a
 * slot reused by a later transaction does not repeat (an off-path sender
 * who can guess slot and generation still cannot guess these). */
static size_t branch_of(const struct txn *x, char *out, size_t cap)
{
    struct branch_id id = {.worker = 3, .slot = x->slot, .gen = x->gen, .rand = x->nonce};
    return branch_encode(&id, out, cap);
}

Test(branch, a_reused_slot_gets_new_random_bits)
{
    struct txn_table t;
    cr_assert_eq(txn_table_init(&t, 64, 1 << 20), 0);
    char a[BRANCH_LEN], b[BRANCH_LEN];
    struct txn *x = txn_new(&t, "k1", 2);
    cr_assert_not_null(x);
    uint32_t slot = x->slot, gen = x->gen;
    uint64_t nonce = x->nonce;
    cr_assert_eq(branch_of(x, a, sizeof a), BRANCH_LEN);
    txn_free(&t, x);
    struct txn *y = txn_new(&t, "k2", 2);
    cr_assert_not_null(y);
    cr_assert_eq(y->slot, slot, "the freed slot is reused");
    cr_assert_neq(y->gen, gen);
    cr_assert_neq(y->nonce, nonce, "the same random bits twice");
    cr_assert_eq(branch_of(y, b, sizeof b), BRANCH_LEN);
    /* same prefix, worker and slot; the random part differs */
    cr_assert(memcmp(a, b, BRANCH_PREFIX_LEN + 8) == 0);
    cr_assert(memcmp(a + BRANCH_LEN - 16, b + BRANCH_LEN - 16, 16) != 0);
    struct branch_id got;
    cr_assert(branch_decode(slice_make(b, sizeof b), &got));
    cr_assert_eq(got.rand, y->nonce);
    cr_assert_eq(got.slot, y->slot);
    cr_assert_eq(got.gen, y->gen);
    /* and over many transactions no two nonces repeat, and every bit varies */
    uint64_t seen_or = 0, seen_and = UINT64_MAX, prev[256];
    for (int i = 0; i < 256; i++) {
        struct txn *z = txn_new(&t, "k", 1);
        cr_assert_not_null(z);
        prev[i] = z->nonce;
        seen_or |= z->nonce;
        seen_and &= z->nonce;
        for (int j = 0; j < i; j++)
            cr_assert_neq(prev[j], prev[i]);
        txn_free(&t, z);
    }
    cr_assert_eq(seen_or, UINT64_MAX);
    cr_assert_eq(seen_and, 0);
    txn_free(&t, y);
    txn_table_cleanup(&t);
}

Test(branch, stateless_branch_is_stable_and_not_ours)
{
    char a[BRANCH_STATELESS_LEN], b[BRANCH_STATELESS_LEN], c[BRANCH_STATELESS_LEN];
    cr_assert_eq(branch_stateless(S("z9hG4bK776asdhds"), a, sizeof a), BRANCH_STATELESS_LEN);
    cr_assert_eq(branch_stateless(S("z9hG4bK776asdhds"), b, sizeof b), BRANCH_STATELESS_LEN);
    cr_assert_eq(branch_stateless(S("z9hG4bK776asdhdt"), c, sizeof c), BRANCH_STATELESS_LEN);
    cr_assert(memcmp(a, "z9hG4bKSa", 9) == 0);
    cr_assert(memcmp(a, b, sizeof a) == 0);
    cr_assert(memcmp(a, c, sizeof a) != 0);
    struct branch_id id;
    cr_assert(!branch_decode(slice_make(a, sizeof a), &id));
    cr_assert_eq(branch_stateless(S("x"), a, sizeof a - 1), 0);
}

/* ---- server transaction keys -------------------------------------------------- */

#define DLG                                                                                        \
    "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"                      \
    "Call-ID: c1@pc33\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n"

static void key_of(const char *text, char *key, size_t cap, size_t *n)
{
    struct parsed p;
    parse(&p, text);
    *n = branch_server_key(&p.m, key, cap);
    cr_assert(*n > 0 && *n < cap);
    key[*n] = 0;
}

Test(branch, key_rfc3261_is_branch_sent_by_and_method)
{
    char k[256], a[256], c[256];
    size_t n;
    key_of("INVITE sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bK776asdhds\r\n"
           "Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKother\r\n" DLG "CSeq: 7 INVITE\r\n\r\n",
           k, sizeof k, &n);
    cr_assert_str_eq(k, "z9hG4bK776asdhds|pc33.example.com:5070|INVITE");
    /* ACK and CANCEL find the INVITE's transaction */
    key_of("ACK sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bK776asdhds\r\n" DLG
           "CSeq: 7 ACK\r\n\r\n",
           a, sizeof a, &n);
    key_of("CANCEL sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bK776asdhds\r\n" DLG
           "CSeq: 7 CANCEL\r\n\r\n",
           c, sizeof c, &n);
    cr_assert_str_eq(a, k);
    cr_assert_str_eq(c, k);
    /* another method on the same branch is another transaction */
    key_of("BYE sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP pc33.example.com:5070;branch=z9hG4bK776asdhds\r\n" DLG
           "CSeq: 8 BYE\r\n\r\n",
           a, sizeof a, &n);
    cr_assert_str_eq(a, "z9hG4bK776asdhds|pc33.example.com:5070|BYE");
    /* no port in sent-by: 0; an IPv6 sent-by keeps its brackets */
    key_of("OPTIONS sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/TCP [2001:db8::1];branch=z9hG4bKv6\r\n" DLG "CSeq: 1 OPTIONS\r\n\r\n",
           a, sizeof a, &n);
    cr_assert_str_eq(a, "z9hG4bKv6|[2001:db8::1]:0|OPTIONS");
}

#define OLD_INVITE(ruri, via, from_tag, callid, cseq)                                              \
    "INVITE " ruri " SIP/2.0\r\nVia: " via "\r\nTo: <sip:bob@example.com>\r\n"                     \
    "From: <sip:alice@example.com>;tag=" from_tag "\r\nCall-ID: " callid "\r\n"                    \
    "CSeq: " cseq " INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"

Test(branch, key_rfc2543_fallback_uses_the_dialog_fields)
{
    char k[512], o[512];
    size_t n;
    key_of(OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7:5060;branch=1234", "ft",
                      "old@host", "9"),
           k, sizeof k, &n);
    cr_assert_str_eq(k, "old@host|9|ft|sip:bob@example.com|SIP/2.0/UDP "
                        "192.0.2.7:5060;branch=1234|INVITE");
    /* a Via without any branch */
    key_of(OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7", "ft", "old@host", "9"), o,
           sizeof o, &n);
    cr_assert_str_eq(o, "old@host|9|ft|sip:bob@example.com|SIP/2.0/UDP 192.0.2.7|INVITE");

    /* each of Request-URI, From tag, Call-ID, CSeq and top Via tells
     * transactions apart */
    static const char *const other[] = {
        OLD_INVITE("sip:carol@example.com", "SIP/2.0/UDP 192.0.2.7:5060;branch=1234", "ft",
                   "old@host", "9"),
        OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7:5060;branch=1234", "fu",
                   "old@host", "9"),
        OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7:5060;branch=1234", "ft",
                   "new@host", "9"),
        OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7:5060;branch=1234", "ft",
                   "old@host", "10"),
        OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.8:5060;branch=1234", "ft",
                   "old@host", "9"),
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        key_of(other[i], o, sizeof o, &n);
        cr_assert_str_neq(o, k, "case %zu", i);
    }
}

Test(branch, key_rfc2543_ack_with_to_tag_matches_the_invite)
{
    char k[512], a[512];
    size_t n;
    key_of(OLD_INVITE("sip:bob@example.com", "SIP/2.0/UDP 192.0.2.7:5060", "ft", "old@host", "9"),
           k, sizeof k, &n);
    key_of("ACK sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5060\r\n"
           "To: <sip:bob@example.com>;tag=resp1\r\n"
           "From: <sip:alice@example.com>;tag=ft\r\nCall-ID: old@host\r\n"
           "CSeq: 9 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
           a, sizeof a, &n);
    cr_assert_str_eq(a, k);
}

Test(branch, key_that_does_not_fit_is_refused)
{
    struct parsed p;
    parse(&p, "INVITE sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n" DLG
              "CSeq: 1 INVITE\r\n\r\n");
    char key[64];
    size_t full = branch_server_key(&p.m, key, sizeof key);
    cr_assert_gt(full, 0);
    cr_assert_eq(branch_server_key(&p.m, key, full - 1), 0);
    cr_assert_eq(branch_server_key(&p.m, key, full), full);
}

/* ---- loop hash ------------------------------------------------------------------ */

Test(branch, loop_hash_follows_the_request_not_the_hops)
{
    struct parsed a, b, c, d;
    parse(&a, "INVITE sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1\r\n" DLG "CSeq: 1 INVITE\r\n\r\n");
    /* the same request one hop later: another Via on top, Max-Forwards less */
    parse(&b, "INVITE sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKSe0100000200000003000000ff\r\n"
              "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1\r\n"
              "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"
              "Call-ID: c1@pc33\r\nMax-Forwards: 69\r\nContent-Length: 0\r\n"
              "CSeq: 1 INVITE\r\n\r\n");
    /* rerouted: another Request-URI */
    parse(&c, "INVITE sip:carol@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1\r\n" DLG "CSeq: 1 INVITE\r\n\r\n");
    /* another CSeq */
    parse(&d, "INVITE sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1\r\n" DLG "CSeq: 2 INVITE\r\n\r\n");
    cr_assert_eq(branch_loop_hash(&a.m), branch_loop_hash(&a.m));
    cr_assert_eq(branch_loop_hash(&a.m), branch_loop_hash(&b.m));
    cr_assert_neq(branch_loop_hash(&a.m), branch_loop_hash(&c.m));
    cr_assert_neq(branch_loop_hash(&a.m), branch_loop_hash(&d.m));
}
