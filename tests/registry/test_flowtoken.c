/* Tests for registry/flowtoken.c: round trips of both kinds and families, the
 * dialog binding of Record-Route tokens, forged and malformed input, keys. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/netaddr.h"
#include "core/sipuri.h"
#include "registry/flowtoken.h"

#define CALL_ID SLICE_LIT("a84b4c76e66710@pc33.example.com")

static struct netaddr addr(const char *ip, int port)
{
    struct netaddr a;
    cr_assert_eq(netaddr_from_ip(&a, slice_make(ip, strlen(ip)), port), 0);
    return a;
}

static struct flowtoken_key fixed_key(uint8_t seed)
{
    struct flowtoken_key k;
    for (size_t i = 0; i < sizeof k.k; i++)
        k.k[i] = (uint8_t)(seed + i * 7);
    return k;
}

static struct flowtoken token(uint8_t kind, uint64_t conn, const char *ip, int port)
{
    return (struct flowtoken){
        .kind = kind, .proto = SIP_TRANSPORT_TLS, .conn = conn, .peer = addr(ip, port)};
}

/* Encodes t bound to CALL_ID into out (NUL-terminated); returns the length. */
static size_t enc(const struct flowtoken_key *k, const struct flowtoken *t, char *out, size_t cap)
{
    size_t n = flowtoken_encode(k, t, CALL_ID, out, cap);
    cr_assert_gt(n, 0);
    cr_assert_lt(n, cap);
    out[n] = 0;
    return n;
}

TestSuite(flowtoken);

Test(flowtoken, roundtrip_both_kinds_both_families)
{
    struct flowtoken_key k = fixed_key(1);
    const char *ips[] = {"203.0.113.7", "2001:db8::42"};
    /* IPv4 Path, IPv4 Record-Route, IPv6 Path, IPv6 Record-Route */
    const size_t want_len[] = {36, 44, 52, 60};
    for (int i = 0; i < 4; i++) {
        uint8_t kind = i % 2 ? FLOWTOKEN_RR : FLOWTOKEN_PATH;
        struct flowtoken t = token(kind, 0x01000abc12345678ull + (uint64_t)i, ips[i / 2], 51234);
        char tok[FLOWTOKEN_STR_LEN + 1];
        size_t n = enc(&k, &t, tok, sizeof tok);
        cr_assert_eq(n, want_len[i], "case %d: %zu chars", i, n);
        cr_assert_leq(n, FLOWTOKEN_STR_LEN);
        for (size_t j = 0; j < n; j++) /* fits a SIP URI user part unescaped */
            cr_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                             tok[j]) != NULL);
        struct flowtoken d;
        cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n), CALL_ID, &d), FLOWTOKEN_OK);
        cr_assert_eq(d.kind, kind);
        cr_assert_eq(d.conn, t.conn);
        cr_assert_eq(d.proto, SIP_TRANSPORT_TLS);
        cr_assert(netaddr_eq(&d.peer, &t.peer));
        cr_assert_eq(d.peer.len, t.peer.len);
    }
}

Test(flowtoken, record_route_token_is_bound_to_its_dialog)
{
    struct flowtoken_key k = fixed_key(1);
    struct flowtoken t = token(FLOWTOKEN_RR, 77, "127.0.0.1", 40000), d;
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = enc(&k, &t, tok, sizeof tok);
    struct slice s = slice_make(tok, n);
    cr_assert_eq(flowtoken_decode(&k, s, CALL_ID, &d), FLOWTOKEN_OK);
    /* another Call-ID, one differing in case or length: another dialog, but
     * genuine (so misuse, not forgery), and still decoded for the log */
    memset(&d, 0, sizeof d);
    cr_assert_eq(flowtoken_decode(&k, s, SLICE_LIT("other@pc33.example.com"), &d),
                 FLOWTOKEN_OTHER_DIALOG);
    cr_assert_eq(d.conn, 77);
    cr_assert_eq(flowtoken_decode(&k, s, SLICE_LIT("A84b4c76e66710@pc33.example.com"), &d),
                 FLOWTOKEN_OTHER_DIALOG);
    cr_assert_eq(flowtoken_decode(&k, s, SLICE_LIT("a84b4c76e66710@pc33.example.co"), &d),
                 FLOWTOKEN_OTHER_DIALOG);
    cr_assert_eq(flowtoken_decode(&k, s, SLICE_NULL, &d), FLOWTOKEN_OTHER_DIALOG);
    /* a Path token serves any request: the Call-ID is not looked at */
    t.kind = FLOWTOKEN_PATH;
    n = enc(&k, &t, tok, sizeof tok);
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n), SLICE_LIT("x@y"), &d), FLOWTOKEN_OK);
    cr_assert_eq(d.kind, FLOWTOKEN_PATH);
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

Test(flowtoken, kind_cannot_be_swapped)
{
    /* a Record-Route token cut to a Path token's length (its dialog tag
     * dropped) and its kind set to Path: the MAC covers the kind */
    struct flowtoken_key k = fixed_key(1);
    struct flowtoken t = token(FLOWTOKEN_RR, 77, "127.0.0.1", 40000), d;
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = enc(&k, &t, tok, sizeof tok);
    cr_assert_eq(n, 44);
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, 36), CALL_ID, &d), FLOWTOKEN_MALFORMED);
    /* the kind byte's low two bits are the top of the second character */
    int v = (int)(strchr(B64, tok[1]) - B64);
    cr_assert_eq((v >> 4) & 3, FLOWTOKEN_RR);
    tok[1] = B64[(v & 0x0f) | (FLOWTOKEN_PATH << 4)];
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, 36), CALL_ID, &d), FLOWTOKEN_FORGED);
}

Test(flowtoken, small_buffer_unknown_kind_or_family_gives_zero)
{
    struct flowtoken_key k = fixed_key(1);
    struct flowtoken t = token(FLOWTOKEN_PATH, 1, "127.0.0.1", 5060);
    char tok[FLOWTOKEN_STR_LEN];
    cr_assert_eq(flowtoken_encode(&k, &t, CALL_ID, tok, 35), 0);
    cr_assert_eq(flowtoken_encode(&k, &t, CALL_ID, tok, 36), 36);
    t.kind = FLOWTOKEN_RR;
    cr_assert_eq(flowtoken_encode(&k, &t, CALL_ID, tok, 43), 0);
    t.kind = 9;
    cr_assert_eq(flowtoken_encode(&k, &t, CALL_ID, tok, sizeof tok), 0);
    t.kind = FLOWTOKEN_PATH;
    memset(&t.peer, 0, sizeof t.peer);
    cr_assert_eq(flowtoken_encode(&k, &t, CALL_ID, tok, sizeof tok), 0);
}

Test(flowtoken, forged_mac_or_payload_or_key_is_forged)
{
    struct flowtoken_key k = fixed_key(1), other = fixed_key(2);
    for (int kind = FLOWTOKEN_PATH; kind <= FLOWTOKEN_RR; kind++) {
        struct flowtoken t = token((uint8_t)kind, 77, "127.0.0.1", 40000), d;
        char tok[FLOWTOKEN_STR_LEN + 1];
        size_t n = enc(&k, &t, tok, sizeof tok);
        cr_assert_eq(flowtoken_decode(&other, slice_make(tok, n), CALL_ID, &d), FLOWTOKEN_FORGED);
        /* change one character anywhere: characters 0..3 hold the kind and
         * family bytes (a bad one is malformed rather than forged); a
         * change in the dialog tag (the last 8 characters of a
         * Record-Route token) reads as another dialog; any other change
         * must be forged */
        for (size_t i = 0; i < n; i++) {
            char x[FLOWTOKEN_STR_LEN + 1];
            memcpy(x, tok, n);
            x[i] = x[i] == 'A' ? 'B' : 'A';
            enum flowtoken_result r = flowtoken_decode(&k, slice_make(x, n), CALL_ID, &d);
            if (i < 4 && r == FLOWTOKEN_MALFORMED) continue;
            if (kind == FLOWTOKEN_RR && i >= n - 8) {
                cr_assert_eq(r, FLOWTOKEN_OTHER_DIALOG, "kind %d char %zu: result %d", kind, i, r);
                continue;
            }
            cr_assert_eq(r, FLOWTOKEN_FORGED, "kind %d char %zu changed: result %d", kind, i, r);
        }
    }
}

Test(flowtoken, truncated_long_or_garbage_is_malformed)
{
    struct flowtoken_key k = fixed_key(1);
    struct flowtoken t = token(FLOWTOKEN_RR, 77, "127.0.0.1", 40000), d;
    char tok[FLOWTOKEN_STR_LEN + 8];
    size_t n = enc(&k, &t, tok, sizeof tok);
    /* shorter prefixes: never OK; a prefix 36 chars long has a Path token's
     * length but the kind says Record-Route */
    for (size_t len = 0; len < n; len++)
        cr_assert_eq(flowtoken_decode(&k, slice_make(tok, len), CALL_ID, &d), FLOWTOKEN_MALFORMED,
                     "prefix of %zu chars", len);
    memcpy(tok + n, "AAAA", 4);
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n + 1), CALL_ID, &d), FLOWTOKEN_MALFORMED);
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n + 4), CALL_ID, &d), FLOWTOKEN_MALFORMED);
    const char *garbage[] = {"alice",
                             "+%20",
                             "phone1",
                             "================",
                             "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                             ""};
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++)
        cr_assert_eq(flowtoken_decode(&k, slice_make(garbage[i], strlen(garbage[i])), CALL_ID, &d),
                     FLOWTOKEN_MALFORMED, "%s", garbage[i]);
    /* right length, one character outside the alphabet */
    tok[5] = '+';
    cr_assert_eq(flowtoken_decode(&k, slice_make(tok, n), CALL_ID, &d), FLOWTOKEN_MALFORMED);
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
    struct flowtoken t = token(FLOWTOKEN_RR, 99, "127.0.0.1", 40000), out;
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = enc(&k1, &t, tok, sizeof tok);
    cr_assert_eq(flowtoken_decode(&k2, slice_make(tok, n), CALL_ID, &out), FLOWTOKEN_OK);
    cr_assert_eq(out.conn, 99);
    cr_assert_eq(flowtoken_decode(&k3, slice_make(tok, n), CALL_ID, &out), FLOWTOKEN_FORGED);
    cr_assert_eq(flowtoken_decode(&r1, slice_make(tok, n), CALL_ID, &out), FLOWTOKEN_FORGED);
    unlink(f1);
    unlink(f2);
    unlink(f3);
    snprintf(f4, sizeof f4, "%s/empty", d);
    unlink(f4);
    rmdir(d);
}
