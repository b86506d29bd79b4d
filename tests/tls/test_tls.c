/* Tests tls/tls.c: handshakes over socketpairs, failure reasons, RFC 5922 names, reload material.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tls/tls.h"

/* ---- a throwaway PKI, made in-process ----------------------------------- */

static char dir[64];
static long serial = 1;
static EVP_PKEY *ca_key, *ca2_key;
static X509 *ca, *ca2;

static EVP_PKEY *ec_key(void)
{
    EC_KEY *k = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *p = EVP_PKEY_new();
    cr_assert(k && p && EC_KEY_generate_key(k) && EVP_PKEY_assign_EC_KEY(p, k));
    return p;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(e, "extension %d=%s", nid, value);
    cr_assert(X509_add_ext(x, e, -1));
    X509_EXTENSION_free(e);
}

/* A certificate for key, signed by issuer (self-signed CA when NULL), valid
 * from `from` to `to` days from now; san may be NULL. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san, long from, long to)
{
    X509 *x = X509_new();
    cr_assert(x && X509_set_version(x, X509_VERSION_3));
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), from * 86400);
    X509_gmtime_adj(X509_getm_notAfter(x), to * 86400);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const uint8_t *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_set_pubkey(x, key);
    add_ext(x, issuer, NID_basic_constraints, issuer ? "critical,CA:FALSE" : "critical,CA:TRUE");
    if (san) add_ext(x, issuer, NID_subject_alt_name, san);
    cr_assert(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()));
    return x;
}

static const char *path(const char *name)
{
    static char p[8][128];
    static int i;
    i = (i + 1) % 8;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static void write_cert(const char *name, X509 *x)
{
    FILE *f = fopen(path(name), "w");
    cr_assert(f && PEM_write_X509(f, x));
    fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k)
{
    FILE *f = fopen(path(name), "w");
    cr_assert(f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
}

/* Writes NAME.crt and NAME.key: a leaf for san, from ca (or ca2). */
static void leaf(const char *name, const char *san, bool other_ca, long from, long to)
{
    char c[64], k[64];
    EVP_PKEY *key = ec_key();
    X509 *x = make_cert(key, name, other_ca ? ca2 : ca, other_ca ? ca2_key : ca_key, san, from, to);
    snprintf(c, sizeof c, "%s.crt", name);
    snprintf(k, sizeof k, "%s.key", name);
    write_cert(c, x);
    write_key(k, key);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/sipedge-test-tls-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    ca_key = ec_key();
    ca2_key = ec_key();
    ca = make_cert(ca_key, "test CA", NULL, NULL, NULL, -1, 30);
    ca2 = make_cert(ca2_key, "other CA", NULL, NULL, NULL, -1, 30);
    write_cert("ca.crt", ca);
    write_cert("ca2.crt", ca2);
    leaf("server", "DNS:localhost,IP:127.0.0.1,IP:::1", false, -1, 30);
    leaf("client", "DNS:client.example.com", false, -1, 30);
    leaf("other", "DNS:localhost,IP:127.0.0.1", true, -1, 30);
    leaf("expired", "DNS:localhost,IP:127.0.0.1", false, -60, -30);
    leaf("wild", "DNS:*.example.com", false, -1, 30);
    leaf("uri", "URI:sip:sip.example.com", false, -1, 30);
    leaf("both", "URI:sip:a.example.com,DNS:b.example.com", false, -1, 30);
    leaf("phone",
         "URI:sip:alice@cc.example.com,URI:https://cc.example.com/x,"
         "URI:sips:bob@cc.example.com,DNS:cc.example.com",
         false, -1, 30);
    leaf("carol@cc.example.com", "DNS:cc.example.com", false, -1, 30);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(ca2_key);
}

TestSuite(tls, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------ */

static struct tls_ctx *ctx_of(const char *cert, const char *key, const char *cafile, bool mutual)
{
    static struct config cfg;
    char err[512] = "";
    memset(&cfg, 0, sizeof cfg);
    if (cert) snprintf(cfg.tls_cert, sizeof cfg.tls_cert, "%s", path(cert));
    if (key) snprintf(cfg.tls_key, sizeof cfg.tls_key, "%s", path(key));
    if (cafile) snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s", path(cafile));
    cfg.tls_mutual = mutual;
    struct tls_ctx *t = tls_ctx_new(&cfg, err, sizeof err);
    cr_assert_not_null(t, "tls_ctx_new: %s", err);
    return t;
}

struct pair {
    int fd[2];
    SSL *cl, *sv;
    enum tls_status cst, sst;
    enum tls_fail cwhy, swhy;
};

static void pair_open(struct pair *p)
{
    memset(p, 0, sizeof *p);
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
    p->cst = p->sst = TLS_WANT_READ;
}

static void pair_close(struct pair *p)
{
    tls_conn_free(p->cl);
    tls_conn_free(p->sv);
    if (p->fd[0] >= 0) close(p->fd[0]);
    if (p->fd[1] >= 0) close(p->fd[1]);
}

/* Runs both handshakes until neither can progress. */
static void drive(struct pair *p)
{
    for (int i = 0; i < 100; i++) {
        bool cdone = p->cst == TLS_OK || p->cst == TLS_FAILED;
        bool sdone = p->sst == TLS_OK || p->sst == TLS_FAILED;
        if (cdone && sdone) return;
        if (!cdone && p->cl) p->cst = tls_conn_handshake(p->cl, &p->cwhy);
        if (!sdone && p->sv) p->sst = tls_conn_handshake(p->sv, &p->swhy);
        /* once one side failed, the other only sees an alert or EOF */
        if (p->cst == TLS_FAILED && p->fd[0] >= 0) {
            close(p->fd[0]);
            p->fd[0] = -1;
        }
        if (p->sst == TLS_FAILED && p->fd[1] >= 0) {
            close(p->fd[1]);
            p->fd[1] = -1;
        }
    }
}

/* Client from ca.crt verifying `name` against a server from cert/key. */
static void client_to(const char *cert, const char *key, const char *name, struct pair *p)
{
    struct tls_ctx *sv = ctx_of(cert, key, NULL, false), *cl = ctx_of(NULL, NULL, "ca.crt", false);
    pair_open(p);
    p->cl = tls_conn_client(cl, p->fd[0], name);
    p->sv = tls_conn_server(sv, p->fd[1]);
    cr_assert(p->cl && p->sv);
    /* the SSLs keep their contexts alive */
    tls_ctx_free(sv);
    tls_ctx_free(cl);
    drive(p);
}

/* ---- handshakes and names ---------------------------------------------- */

Test(tls, good_ip_and_dns_names_and_data_both_ways)
{
    const char *names[] = {"127.0.0.1", "localhost", "LOCALHOST", "[::1]", "::1"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct pair p;
        client_to("server.crt", "server.key", names[i], &p);
        cr_assert_eq(p.cst, TLS_OK, "%s: client %s", names[i], tls_fail_str(p.cwhy));
        cr_assert_eq(p.sst, TLS_OK, "%s: server %s", names[i], tls_fail_str(p.swhy));
        size_t n;
        char buf[64];
        cr_assert_eq(tls_conn_write(p.cl, "OPTIONS", 7, &n), TLS_OK);
        cr_assert_eq(n, 7);
        cr_assert_eq(tls_conn_read(p.sv, buf, sizeof buf, &n), TLS_OK);
        cr_assert(n == 7 && memcmp(buf, "OPTIONS", 7) == 0);
        cr_assert_not(tls_conn_pending(p.sv));
        pair_close(&p);
    }
}

Test(tls, server_identity_failures_are_classified)
{
    static const struct {
        const char *cert, *key, *name;
        enum tls_fail why;
    } cases[] = {
        {"server.crt", "server.key", "other.example.com", TLS_FAIL_BAD_NAME},
        {"server.crt", "server.key", "127.0.0.2", TLS_FAIL_BAD_NAME},
        {"other.crt", "other.key", "127.0.0.1", TLS_FAIL_UNKNOWN_CA},
        {"expired.crt", "expired.key", "127.0.0.1", TLS_FAIL_EXPIRED},
        /* RFC 5922 §7.2: no wildcards */
        {"wild.crt", "wild.key", "a.example.com", TLS_FAIL_BAD_NAME},
        /* §7.1: SIP URI subjectAltNames, when present, are the identities */
        {"uri.crt", "uri.key", "sip.example.com", TLS_FAIL_NONE},
        {"uri.crt", "uri.key", "other.example.com", TLS_FAIL_BAD_NAME},
        {"both.crt", "both.key", "a.example.com", TLS_FAIL_NONE},
        {"both.crt", "both.key", "b.example.com", TLS_FAIL_BAD_NAME},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct pair p;
        client_to(cases[i].cert, cases[i].key, cases[i].name, &p);
        if (cases[i].why == TLS_FAIL_NONE) {
            cr_assert_eq(p.cst, TLS_OK, "case %zu: %s", i, tls_fail_str(p.cwhy));
        } else {
            cr_assert_eq(p.cst, TLS_FAILED, "case %zu: client handshake did not fail", i);
            cr_assert_eq(p.cwhy, cases[i].why, "case %zu: %s, want %s", i, tls_fail_str(p.cwhy),
                         tls_fail_str(cases[i].why));
            /* the server hears why from the client's alert */
            cr_assert_eq(p.sst, TLS_FAILED, "case %zu", i);
            cr_assert_eq(p.swhy, TLS_FAIL_PEER_REJECTED, "case %zu: server %s", i,
                         tls_fail_str(p.swhy));
        }
        pair_close(&p);
    }
}

Test(tls, mutual_client_failures_are_classified)
{
    static const struct {
        const char *cert, *key;
        enum tls_fail why;
    } cases[] = {
        {NULL, NULL, TLS_FAIL_NO_CERT},
        {"other.crt", "other.key", TLS_FAIL_UNKNOWN_CA},
        {"expired.crt", "expired.key", TLS_FAIL_EXPIRED},
        {"client.crt", "client.key", TLS_FAIL_NONE},
    };
    for (int v = 0; v < 2; v++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            struct tls_ctx *sv = ctx_of("server.crt", "server.key", "ca.crt", true);
            struct tls_ctx *cl = ctx_of(cases[i].cert, cases[i].key, "ca.crt", false);
            struct pair p;
            SSL_CTX_set_max_proto_version(cl->client, v ? TLS1_3_VERSION : TLS1_2_VERSION);
            pair_open(&p);
            p.cl = tls_conn_client(cl, p.fd[0], "localhost");
            p.sv = tls_conn_server(sv, p.fd[1]);
            drive(&p);
            if (cases[i].why == TLS_FAIL_NONE) {
                cr_assert_eq(p.sst, TLS_OK, "v%d case %zu: %s", v, i, tls_fail_str(p.swhy));
            } else {
                cr_assert_eq(p.sst, TLS_FAILED, "v%d case %zu: server accepted", v, i);
                cr_assert_eq(p.swhy, cases[i].why, "v%d case %zu: %s, want %s", v, i,
                             tls_fail_str(p.swhy), tls_fail_str(cases[i].why));
            }
            pair_close(&p);
            tls_ctx_free(sv);
            tls_ctx_free(cl);
        }
    }
}

/* --auth-by-certificate reads these: SAN sip/sips URIs, else the CN; only
 * from a verified certificate, so nothing without --tls-mutual. */
Test(tls, peer_ids_of_client_certificates)
{
    static const struct {
        const char *name;
        bool mutual;
        unsigned n;
        const char *ids[2];
    } cases[] = {
        {"phone", true, 2, {"sip:alice@cc.example.com", "sips:bob@cc.example.com"}},
        {"carol@cc.example.com", true, 1, {"carol@cc.example.com"}},
        {"phone", false, 0, {NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char crt[64], key[64];
        snprintf(crt, sizeof crt, "%s.crt", cases[i].name);
        snprintf(key, sizeof key, "%s.key", cases[i].name);
        struct tls_ctx *sv = ctx_of("server.crt", "server.key", "ca.crt", cases[i].mutual);
        struct tls_ctx *cl = ctx_of(crt, key, "ca.crt", false);
        struct pair p;
        struct tls_peer_ids ids;
        pair_open(&p);
        p.cl = tls_conn_client(cl, p.fd[0], "localhost");
        p.sv = tls_conn_server(sv, p.fd[1]);
        drive(&p);
        cr_assert_eq(p.sst, TLS_OK, "case %zu: %s", i, tls_fail_str(p.swhy));
        cr_assert_eq(tls_conn_peer_ids(p.sv, &ids), cases[i].n, "case %zu", i);
        cr_assert_eq(ids.n, cases[i].n);
        for (unsigned k = 0; k < ids.n; k++) {
            cr_assert_eq(ids.len[k], strlen(cases[i].ids[k]), "case %zu id %u", i, k);
            cr_assert(memcmp(ids.v[k], cases[i].ids[k], ids.len[k]) == 0, "case %zu id %u: %.*s", i,
                      k, (int)ids.len[k], ids.v[k]);
        }
        pair_close(&p);
        tls_ctx_free(sv);
        tls_ctx_free(cl);
    }
}

Test(tls, not_tls_and_eof_mid_handshake)
{
    struct tls_ctx *sv = ctx_of("server.crt", "server.key", NULL, false);
    struct pair p;
    enum tls_fail why;

    pair_open(&p);
    p.sv = tls_conn_server(sv, p.fd[1]);
    cr_assert_eq(write(p.fd[0], "OPTIONS sip:a SIP/2.0\r\n\r\n", 25), 25);
    cr_assert_eq(tls_conn_handshake(p.sv, &why), TLS_FAILED);
    cr_assert_eq(why, TLS_FAIL_PROTOCOL, "%s", tls_fail_str(why));
    pair_close(&p);

    pair_open(&p);
    p.sv = tls_conn_server(sv, p.fd[1]);
    cr_assert_eq(tls_conn_handshake(p.sv, &why), TLS_WANT_READ);
    close(p.fd[0]);
    p.fd[0] = -1;
    cr_assert_eq(tls_conn_handshake(p.sv, &why), TLS_FAILED);
    cr_assert_eq(why, TLS_FAIL_CLOSED, "%s", tls_fail_str(why));
    pair_close(&p);
    tls_ctx_free(sv);
}

/* The runtime retries SSL_write from a queue that moved and grew. */
Test(tls, write_retry_from_a_moved_and_longer_buffer)
{
    struct pair p;
    size_t total = 1 << 20, sent = 0, got = 0, n;
    char *a = malloc(total), *buf = malloc(65536);

    for (size_t i = 0; i < total; i++)
        a[i] = (char)(i * 7);
    client_to("server.crt", "server.key", "localhost", &p);
    cr_assert(p.cst == TLS_OK && p.sst == TLS_OK);
    while (got < total) {
        if (sent < total) {
            /* a fresh copy each time: same bytes, another address */
            size_t len = total - sent;
            char *q = malloc(len);
            memcpy(q, a + sent, len);
            enum tls_status st = tls_conn_write(p.sv, q, len, &n);
            free(q);
            cr_assert(st == TLS_OK || st == TLS_WANT_WRITE, "write: %d", st);
            if (st == TLS_OK) sent += n;
        }
        enum tls_status st = tls_conn_read(p.cl, buf, 65536, &n);
        cr_assert(st == TLS_OK || st == TLS_WANT_READ, "read: %d", st);
        if (st == TLS_OK) {
            cr_assert(memcmp(buf, a + got, n) == 0, "bytes differ at %zu", got);
            got += n;
        }
    }
    pair_close(&p);
    free(a);
    free(buf);
}

/* ---- material ------------------------------------------------------------ */

Test(tls, bad_material_names_the_flag)
{
    static struct config cfg;
    char err[512];
    static const struct {
        const char *cert, *key, *cafile, *flag;
    } cases[] = {
        {"server.crt", "missing.key", NULL, "--tls-key: "},
        {"server.crt", "client.key", NULL, "--tls-key: "},
        {"missing.crt", "server.key", NULL, "--tls-cert: "},
        {"server.crt", "server.key", "missing.crt", "--tls-ca: "},
        {"server.key", "server.key", NULL, "--tls-cert: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&cfg, 0, sizeof cfg);
        snprintf(cfg.tls_cert, sizeof cfg.tls_cert, "%s", path(cases[i].cert));
        snprintf(cfg.tls_key, sizeof cfg.tls_key, "%s", path(cases[i].key));
        if (cases[i].cafile) snprintf(cfg.tls_ca, sizeof cfg.tls_ca, "%s", path(cases[i].cafile));
        cr_assert_null(tls_ctx_new(&cfg, err, sizeof err), "case %zu", i);
        cr_assert(strncmp(err, cases[i].flag, strlen(cases[i].flag)) == 0, "case %zu: %s", i, err);
        cr_assert_null(strchr(err, '\n'), "case %zu: more than one line", i);
    }
}

static SSL_SESSION *ticket_session;

/* BoringSSL hands TLS 1.3 tickets to this callback only. */
static int keep_session(SSL *s, SSL_SESSION *sess)
{
    SSL_SESSION_free(ticket_session);
    ticket_session = sess;
    return 1; /* we keep the reference */
}

/* Tickets from one worker's context resume on another's built from the same
 * files; not once the trusted CAs changed. */
Test(tls, tickets_resume_across_contexts_of_the_same_material)
{
    for (int changed = 0; changed < 2; changed++) {
        struct tls_ctx *sv1 = ctx_of("server.crt", "server.key", "ca.crt", false);
        struct tls_ctx *sv2 =
            ctx_of("server.crt", "server.key", changed ? "ca2.crt" : "ca.crt", false);
        SSL_CTX *cctx = SSL_CTX_new(TLS_method());
        SSL_SESSION *sess = NULL;
        struct pair p;
        char buf[16];
        size_t n;
        int rc;

        SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT);
        SSL_CTX_sess_set_new_cb(cctx, keep_session);
        for (int round = 0; round < 2; round++) {
            pair_open(&p);
            p.cl = SSL_new(cctx);
            SSL_set_fd(p.cl, p.fd[0]);
            SSL_set_connect_state(p.cl);
            if (sess) SSL_set_session(p.cl, sess);
            p.sv = tls_conn_server(round ? sv2 : sv1, p.fd[1]);
            drive(&p);
            cr_assert(p.cst == TLS_OK && p.sst == TLS_OK);
            if (round == 1) {
                cr_assert_eq(tls_conn_resumed(p.sv), !changed, "changed=%d", changed);
            } else {
                /* the ticket comes after the handshake: read past it */
                cr_assert_eq(tls_conn_write(p.sv, "x", 1, &n), TLS_OK);
                rc = SSL_read(p.cl, buf, sizeof buf);
                cr_assert_eq(rc, 1);
                sess = ticket_session;
                ticket_session = NULL;
                cr_assert_not_null(sess, "no ticket");
            }
            pair_close(&p);
        }
        SSL_SESSION_free(sess);
        SSL_CTX_free(cctx);
        tls_ctx_free(sv1);
        tls_ctx_free(sv2);
    }
}
