/* Digest authentication: RFC 2617/7616 vectors, the users file, nonces. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/auth.h"

TestSuite(auth);

#define S(lit) SLICE_LIT(lit)

Test(auth, rfc2617_md5_vector)
{
    char ha1[AUTH_HA1_MAX + 1];
    struct auth_creds c;
    const char *hdr = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", "
                      "nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", "
                      "qop=auth, nc=00000001, cnonce=\"0a4f113b\", "
                      "response=\"6629fae49393a05397450978507c4ef1\", "
                      "opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    auth_ha1(AUTH_MD5, S("Mufasa"), S("testrealm@host.com"), S("Circle Of Life"), ha1);
    cr_assert_str_eq(ha1, "939e7578ed9e3c518a452acee763bce9");
    cr_assert(auth_parse_creds(slice_make(hdr, strlen(hdr)), &c));
    cr_assert_eq(c.alg, AUTH_MD5);
    cr_assert(slice_eq_lit(c.username, "Mufasa"));
    cr_assert(auth_check_response(&c, S("GET"), ha1));
    cr_assert(!auth_check_response(&c, S("POST"), ha1), "method is covered");
    ha1[0] = ha1[0] == 'a' ? 'b' : 'a';
    cr_assert(!auth_check_response(&c, S("GET"), ha1), "HA1 is covered");
}

Test(auth, rfc7616_sha256_and_md5_vectors)
{
    char ha1[AUTH_HA1_MAX + 1];
    struct auth_creds c;
    const char *sha =
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", "
        "uri=\"/dir/index.html\", algorithm=SHA-256, "
        "nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, "
        "cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, "
        "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\"";
    const char *md5 = "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", "
                      "uri=\"/dir/index.html\", algorithm=MD5, "
                      "nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", nc=00000001, "
                      "cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", qop=auth, "
                      "response=\"8ca523f5e9506fed4657c9700eebdbec\"";

    cr_assert(auth_parse_creds(slice_make(sha, strlen(sha)), &c));
    cr_assert_eq(c.alg, AUTH_SHA256);
    auth_ha1(AUTH_SHA256, S("Mufasa"), S("http-auth@example.org"), S("Circle of Life"), ha1);
    cr_assert(auth_check_response(&c, S("GET"), ha1));

    cr_assert(auth_parse_creds(slice_make(md5, strlen(md5)), &c));
    cr_assert_eq(c.alg, AUTH_MD5);
    auth_ha1(AUTH_MD5, S("Mufasa"), S("http-auth@example.org"), S("Circle of Life"), ha1);
    cr_assert(auth_check_response(&c, S("GET"), ha1));
}

Test(auth, malformed_credentials_are_refused)
{
    static const char *bad[] = {
        "",
        "Basic dXNlcjpwYXNz",
        "Digest",
        "Digest username=\"a\"",                                        /* fields missing */
        "Digest username=\"a, realm=\"r\", nonce=n, uri=u, response=r", /* open quote */
        "Digest username=a realm=r nonce=n uri=u response=r",           /* no commas */
        "Digest username=a, realm=r, nonce=n, uri=u, response=r, algorithm=SHA-512-256",
        "Digest username=\"a\\\"b\", realm=r, nonce=n, uri=u, response=r", /* escapes */
        "Digest =x, username=a, realm=r, nonce=n, uri=u, response=r",
    };
    struct auth_creds c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert(!auth_parse_creds(slice_make(bad[i], strlen(bad[i])), &c), "case %zu", i);
    /* every truncated prefix of a good one either parses or is refused, never over-reads */
    const char *good = "Digest username=\"bob\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", "
                       "response=\"00\", qop=auth, nc=00000001, cnonce=\"x\"";
    for (size_t n = 0; n <= strlen(good); n++) {
        char tmp[256];
        memcpy(tmp, good, n);
        (void)auth_parse_creds(slice_make(tmp, n), &c);
    }
    cr_assert(auth_parse_creds(slice_make(good, strlen(good)), &c));
}

Test(auth, wrong_length_response_and_auth_int_fail)
{
    char ha1[AUTH_HA1_MAX + 1];
    struct auth_creds c;
    const char *h = "Digest username=u, realm=r, nonce=n, uri=sip:x, response=abc";
    const char *hi = "Digest username=u, realm=r, nonce=n, uri=sip:x, qop=auth-int, nc=1, "
                     "cnonce=c, response=00000000000000000000000000000000";

    auth_ha1(AUTH_MD5, S("u"), S("r"), S("p"), ha1);
    cr_assert(auth_parse_creds(slice_make(h, strlen(h)), &c));
    cr_assert(!auth_check_response(&c, S("REGISTER"), ha1));
    cr_assert(auth_parse_creds(slice_make(hi, strlen(hi)), &c));
    cr_assert(!auth_check_response(&c, S("REGISTER"), ha1));
}

Test(auth, nonce_round_trip_stale_and_forged)
{
    struct auth_key k = {{1, 2, 3}}, k2 = {{9}};
    char n[AUTH_NONCE_LEN];

    auth_nonce_make(&k, S("cc.example.com"), 1000, n);
    struct slice ns = slice_make(n, sizeof n);
    cr_assert_eq(auth_nonce_check(&k, S("cc.example.com"), ns, 1000, 300), AUTH_NONCE_OK);
    cr_assert_eq(auth_nonce_check(&k, S("cc.example.com"), ns, 1300, 300), AUTH_NONCE_OK);
    cr_assert_eq(auth_nonce_check(&k, S("cc.example.com"), ns, 1301, 300), AUTH_NONCE_STALE);
    cr_assert_eq(auth_nonce_check(&k, S("other.example.com"), ns, 1000, 300), AUTH_NONCE_FORGED);
    cr_assert_eq(auth_nonce_check(&k2, S("cc.example.com"), ns, 1000, 300), AUTH_NONCE_FORGED);
    n[0] = n[0] == '0' ? '1' : '0'; /* another issue time under the same MAC */
    cr_assert_eq(auth_nonce_check(&k, S("cc.example.com"), ns, 1000, 300), AUTH_NONCE_FORGED);
    cr_assert_eq(auth_nonce_check(&k, S("cc.example.com"), S("short"), 1000, 300),
                 AUTH_NONCE_FORGED);
}

Test(auth, users_file_htdigest_lines_and_errors)
{
    char path[] = "/tmp/sipedge-auth-XXXXXX", err[128];
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    struct auth_users *u;
    const struct auth_user *e;

    fprintf(f, "# comment\n\nalice:cc.example.com:939E7578ED9E3C518A452ACEE763BCE9\n"
               "bob:cc.example.com:939e7578ed9e3c518a452acee763bce9:"
               "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\n");
    fclose(f);
    u = auth_users_load(path, err, sizeof err);
    cr_assert_not_null(u, "%s", err);
    cr_assert_eq(u->n, 2);
    e = auth_users_find(u, S("alice"), S("cc.example.com"));
    cr_assert_not_null(e);
    cr_assert_str_eq(e->ha1[AUTH_MD5], "939e7578ed9e3c518a452acee763bce9");
    cr_assert_str_eq(e->ha1[AUTH_SHA256], "");
    e = auth_users_find(u, S("bob"), S("cc.example.com"));
    cr_assert_str_neq(e->ha1[AUTH_SHA256], "");
    cr_assert_null(auth_users_find(u, S("alice"), S("other")));
    cr_assert_null(auth_users_find(u, S("alic"), S("cc.example.com")));
    auth_users_free(u);

    f = fopen(path, "w");
    fprintf(f, "alice:cc.example.com:notahash\n");
    fclose(f);
    cr_assert_null(auth_users_load(path, err, sizeof err));
    cr_assert(strstr(err, "line 1") != NULL, "%s", err);
    unlink(path);
    cr_assert_null(auth_users_load(path, err, sizeof err));
}

Test(auth, challenge_text)
{
    char mem[256], n[AUTH_NONCE_LEN];
    struct auth_key k = {{7}};
    struct buf b = buf_make(mem, sizeof mem);

    auth_nonce_make(&k, S("r"), 5, n);
    auth_put_challenge(&b, "WWW-Authenticate", S("r"), n, AUTH_SHA256, true);
    cr_assert(buf_ok(&b));
    mem[b.len] = '\0';
    cr_assert(strstr(mem, "WWW-Authenticate: Digest realm=\"r\", nonce=\"") == mem);
    cr_assert(strstr(mem, "algorithm=SHA-256, qop=\"auth\", stale=true\r\n") != NULL);
}

Test(auth, users_table_is_searched_by_realm_and_user_and_refuses_duplicates)
{
    char path[] = "/tmp/sipedge-auth-XXXXXX", err[128];
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    const char *h = "939e7578ed9e3c518a452acee763bce9";
    /* out of order on purpose, and one name in two realms */
    fprintf(f,
            "zed:b.example:%s\nbob:b.example:%s\nbob:a.example:%s\namy:b.example:%s\n"
            "b:a.example:%s\nbo:a.example:%s\n",
            h, h, h, h, h, h);
    fclose(f);
    struct auth_users *u = auth_users_load(path, err, sizeof err);
    cr_assert_not_null(u, "%s", err);
    cr_assert_eq(u->n, 6);
    static const char *const present[][2] = {{"zed", "b.example"}, {"bob", "b.example"},
                                             {"bob", "a.example"}, {"amy", "b.example"},
                                             {"b", "a.example"},   {"bo", "a.example"}};
    for (size_t i = 0; i < 6; i++) {
        const struct auth_user *e =
            auth_users_find(u, slice_make(present[i][0], strlen(present[i][0])),
                            slice_make(present[i][1], strlen(present[i][1])));
        cr_assert_not_null(e, "%s@%s", present[i][0], present[i][1]);
        cr_assert_str_eq(e->user, present[i][0]);
        cr_assert_str_eq(e->realm, present[i][1]);
    }
    cr_assert_null(auth_users_find(u, S("amy"), S("a.example")));
    cr_assert_null(auth_users_find(u, S("bobby"), S("b.example")));
    cr_assert_null(auth_users_find(u, S(""), S("")));
    cr_assert_null(auth_users_find(NULL, S("bob"), S("b.example")));
    auth_users_free(u);

    f = fopen(path, "w");
    fprintf(f, "bob:a.example:%s\namy:a.example:%s\nbob:a.example:%s\n", h, h, h);
    fclose(f);
    cr_assert_null(auth_users_load(path, err, sizeof err));
    cr_assert(strstr(err, "bob") && strstr(err, "twice"), "%s", err);
    unlink(path);
}

Test(auth, key_from_secret_is_deterministic_and_keyed)
{
    struct auth_key a, b, c;
    char n1[AUTH_NONCE_LEN];
    auth_key_from_secret(&a, (const uint8_t *)"pool secret", 11);
    auth_key_from_secret(&b, (const uint8_t *)"pool secret", 11);
    auth_key_from_secret(&c, (const uint8_t *)"pool secreT", 11);
    cr_assert(memcmp(a.k, b.k, sizeof a.k) == 0, "two members of a pool derive one key");
    cr_assert(memcmp(a.k, c.k, sizeof a.k) != 0);
    auth_nonce_make(&a, S("r"), 100, n1);
    cr_assert_eq(auth_nonce_check(&b, S("r"), slice_make(n1, sizeof n1), 100, 300), AUTH_NONCE_OK);
    cr_assert_eq(auth_nonce_check(&c, S("r"), slice_make(n1, sizeof n1), 100, 300),
                 AUTH_NONCE_FORGED);
}
