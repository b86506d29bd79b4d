/* BoringSSL contexts and non-blocking connections: bytes in, bytes out. */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static uint8_t ticket_keys[TLS_TICKET_KEY_LEN];
static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;
static bool ticket_ok;
static void ticket_init(void)
{
    ticket_ok = RAND_bytes(ticket_keys, sizeof ticket_keys) == 1;
}

const uint8_t *tls_ticket_keys(void)
{
    pthread_once(&ticket_once, ticket_init);
    return ticket_ok ? ticket_keys : NULL;
}

const char *tls_fail_str(enum tls_fail f)
{
    switch (f) {
    case TLS_FAIL_NONE:
        return "none";
    case TLS_FAIL_NO_CERT:
        return "no_certificate";
    case TLS_FAIL_UNKNOWN_CA:
        return "unknown_ca";
    case TLS_FAIL_EXPIRED:
        return "expired";
    case TLS_FAIL_BAD_NAME:
        return "bad_name";
    case TLS_FAIL_BAD_CERT:
        return "bad_certificate";
    case TLS_FAIL_PEER_REJECTED:
        return "peer_rejected";
    case TLS_FAIL_TIMEOUT:
        return "timeout";
    case TLS_FAIL_CLOSED:
        return "closed";
    case TLS_FAIL_PROTOCOL:
        return "protocol";
    default:
        return "unknown";
    }
}

/* One certificate pool for the process: identical certificates (ours, the
 * CAs, and peers' chains) are stored once however many connections hold
 * them. The pool locks internally, so every worker may use it. */
static CRYPTO_BUFFER_POOL *cert_pool;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void)
{
    cert_pool = CRYPTO_BUFFER_POOL_new();
}

static void errline(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char reason[160] = "";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, errlen, "%s %s%s%s", what, file, e ? ": " : "", reason);
    ERR_clear_error();
}

/* RFC 5922 §7.1: when the certificate carries SIP URI subjectAltNames, they
 * are its identities and DNS names are not looked at. Returns 1 when one of
 * them names `name` exactly (no user part, no wildcard, host case-folded),
 * 0 when there are some but none matches, -1 when there are none. */
static int sip_uri_match(X509 *leaf, const char *name)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    size_t nlen = strlen(name);
    int r = -1;

    for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const char *p = (const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        size_t len = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier), skip;
        if (len > 4 && strncasecmp(p, "sip:", 4) == 0)
            skip = 4;
        else if (len > 5 && strncasecmp(p, "sips:", 5) == 0)
            skip = 5;
        else
            continue;
        if (r < 0) r = 0;
        if (len - skip == nlen && strncasecmp(p + skip, name, nlen) == 0) r = 1;
    }
    GENERAL_NAMES_free(gens);
    return r;
}

/* Client side: X509_VERIFY_PARAM checks DNS names (and IP literals); this
 * adds the SIP URI rule of RFC 5922 on top for DNS names (sent as SNI). */
static int client_verify_cb(int ok, X509_STORE_CTX *store)
{
    int err = X509_STORE_CTX_get_error(store);
    bool mismatch = !ok && err == X509_V_ERR_HOSTNAME_MISMATCH;

    if (!mismatch && !(ok && X509_STORE_CTX_get_error_depth(store) == 0)) return ok;
    SSL *s = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const char *name = s ? SSL_get_servername(s, TLSEXT_NAMETYPE_host_name) : NULL;
    X509 *leaf = X509_STORE_CTX_get_current_cert(store);
    if (!name || !leaf) return ok;
    switch (sip_uri_match(leaf, name)) {
    case 1:
        if (mismatch) X509_STORE_CTX_set_error(store, X509_V_OK);
        return 1;
    case 0:
        X509_STORE_CTX_set_error(store, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
    default:
        return ok;
    }
}

/* The session ID context binds tickets to the trust configuration: after a
 * reload that changes the CAs (or --tls-mutual), old tickets no longer
 * resume, so no client skips verification against the new CAs. */
static bool sid_ctx_of(const struct config *cfg, uint8_t out[SHA256_DIGEST_LENGTH])
{
    SHA256_CTX h;
    uint8_t mutual = cfg->tls_mutual;

    SHA256_Init(&h);
    SHA256_Update(&h, "sipedge", 7);
    SHA256_Update(&h, &mutual, 1);
    if (cfg->tls_ca[0]) {
        FILE *f = fopen(cfg->tls_ca, "rb");
        char buf[4096];
        size_t n;
        if (!f) return false;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
            SHA256_Update(&h, buf, n);
        bool bad = ferror(f);
        fclose(f);
        if (bad) return false;
    }
    SHA256_Final(out, &h);
    return true;
}

static SSL_CTX *ctx_common(const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (!c) {
        snprintf(err, errlen, "--tls-cert: out of memory");
        return NULL;
    }
    SSL_CTX_set0_buffer_pool(c, cert_pool);
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
    /* The runtime's send queue moves and grows between retries, and hands
     * over as much as it holds: let SSL_write take it record by record. */
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Our certificate goes into both roles: a server that asks for a client
     * certificate gets it even without --tls-mutual. */
    if (cfg->tls_cert[0]) {
        if (SSL_CTX_use_certificate_chain_file(c, cfg->tls_cert) != 1) {
            errline(err, errlen, "--tls-cert: cannot load", cfg->tls_cert);
            goto fail;
        }
        const char *key = cfg->tls_key[0] ? cfg->tls_key : cfg->tls_cert;
        if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
                snprintf(err, errlen, "--tls-key: %s does not match the certificate in %s", key,
                         cfg->tls_cert);
                ERR_clear_error();
            } else {
                errline(err, errlen, "--tls-key: cannot load", key);
            }
            goto fail;
        }
        if (SSL_CTX_check_private_key(c) != 1) {
            errline(err, errlen, "--tls-key: does not match the certificate in", cfg->tls_cert);
            goto fail;
        }
    }
    if (cfg->tls_ca[0] && SSL_CTX_load_verify_locations(c, cfg->tls_ca, NULL) != 1) {
        errline(err, errlen, "--tls-ca: cannot load", cfg->tls_ca);
        goto fail;
    }
    return c;
fail:
    SSL_CTX_free(c);
    return NULL;
}

struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
    uint8_t sid_ctx[SHA256_DIGEST_LENGTH];

    pthread_once(&pool_once, pool_init);
    if (!cert_pool || !tls_ticket_keys()) {
        snprintf(err, errlen, "--tls-cert: cannot initialise BoringSSL");
        return NULL;
    }
    struct tls_ctx *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "--tls-cert: out of memory");
        return NULL;
    }
    t->mutual = cfg->tls_mutual;
    if (cfg->tls_cert[0]) {
        t->server = ctx_common(cfg, err, errlen);
        if (!t->server) goto fail;
        int mode = SSL_VERIFY_NONE;
        if (cfg->tls_mutual) mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(t->server, mode, NULL);
        if (!sid_ctx_of(cfg, sid_ctx)) {
            snprintf(err, errlen, "--tls-ca: cannot read %s: %s", cfg->tls_ca, strerror(errno));
            goto fail;
        }
        SSL_CTX_set_session_id_context(t->server, sid_ctx, SSL_MAX_SID_CTX_LENGTH);
        /* Tickets only: the keys are shared by every worker, whereas a
         * session-ID cache would be per worker (useless with SO_REUSEPORT
         * picking the worker) and would hold memory per session. */
        SSL_CTX_set_tlsext_ticket_keys(t->server, tls_ticket_keys(), TLS_TICKET_KEY_LEN);
        SSL_CTX_set_session_cache_mode(t->server, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_num_tickets(t->server, 1);
    }
    t->client = ctx_common(cfg, err, errlen);
    if (!t->client) goto fail;
    /* a server must always prove who it is: no CA means no outbound TLS */
    SSL_CTX_set_verify(t->client, SSL_VERIFY_PEER, client_verify_cb);
    return t;
fail:
    tls_ctx_free(t);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t) return;
    SSL_CTX_free(t->server);
    SSL_CTX_free(t->client);
    free(t);
}

static void conn_tune(SSL *s)
{
    /* drop the handshake-only configuration once established (less memory
     * per idle connection); renegotiation is refused by default */
    SSL_set_shed_handshake_config(s, 1);
}

SSL *tls_conn_server(const struct tls_ctx *t, int fd)
{
    if (!t || !t->server) return NULL;
    SSL *s = SSL_new(t->server);
    if (!s) return NULL;
    if (!SSL_set_fd(s, fd)) {
        SSL_free(s);
        return NULL;
    }
    SSL_set_accept_state(s);
    conn_tune(s);
    return s;
}

SSL *tls_conn_client(const struct tls_ctx *t, int fd, const char *name)
{
    if (!t || !t->client) return NULL;
    SSL *s = SSL_new(t->client);
    if (!s) return NULL;
    if (!SSL_set_fd(s, fd)) goto fail;
    if (name && name[0]) {
        unsigned char ip[16];
        char v6[64];
        size_t len = strlen(name);
        X509_VERIFY_PARAM *param = SSL_get0_param(s);
        if (name[0] == '[' && len > 2 && len - 2 < sizeof v6 && name[len - 1] == ']') {
            /* an IPv6 reference as written in a SIP URI */
            memcpy(v6, name + 1, len - 2);
            v6[len - 2] = '\0';
            if (inet_pton(AF_INET6, v6, ip) != 1 || !X509_VERIFY_PARAM_set1_ip_asc(param, v6))
                goto fail;
        } else if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) {
            if (!X509_VERIFY_PARAM_set1_ip_asc(param, name)) goto fail;
        } else {
            /* RFC 5922 §7.2: no wildcard matching for SIP domain identities */
            X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_WILDCARDS);
            if (!X509_VERIFY_PARAM_set1_host(param, name, strlen(name)) ||
                !SSL_set_tlsext_host_name(s, name))
                goto fail;
        }
    }
    SSL_set_connect_state(s);
    conn_tune(s);
    return s;
fail:
    ERR_clear_error();
    SSL_free(s);
    return NULL;
}

void tls_conn_free(SSL *s)
{
    SSL_free(s);
}

/* Alerts the peer sent about our own certificate. */
static bool peer_refused_us(int reason)
{
    switch (reason) {
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return true;
    default:
        return false;
    }
}

/* Why the handshake failed, from our verification result first (it is only
 * meaningful when a chain was verified: X509_V_ERR_INVALID_CALL means none
 * was), then the SSL errors queued by the failing call. Clears the queue. */
static enum tls_fail classify(SSL *s)
{
    long v = SSL_get_verify_result(s);
    enum tls_fail why = TLS_FAIL_PROTOCOL;
    unsigned long e;

    switch (v) {
    case X509_V_OK:
    case X509_V_ERR_INVALID_CALL:
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        ERR_clear_error();
        return TLS_FAIL_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
        ERR_clear_error();
        return TLS_FAIL_BAD_NAME;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
        ERR_clear_error();
        return TLS_FAIL_UNKNOWN_CA;
    default:
        ERR_clear_error();
        return TLS_FAIL_BAD_CERT;
    }
    while ((e = ERR_get_error()) != 0) {
        if (ERR_GET_LIB(e) != ERR_LIB_SSL) continue;
        int reason = ERR_GET_REASON(e);
        if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
            reason == SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED)
            why = TLS_FAIL_NO_CERT;
        else if (peer_refused_us(reason) && why == TLS_FAIL_PROTOCOL)
            why = TLS_FAIL_PEER_REJECTED;
    }
    return why;
}

static enum tls_status status_of(SSL *s, int rc)
{
    switch (SSL_get_error(s, rc)) {
    case SSL_ERROR_WANT_READ:
        return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CLOSED;
    case SSL_ERROR_SYSCALL:
        return (rc == 0 || errno == 0 || errno == ECONNRESET || errno == EPIPE) ? TLS_CLOSED
                                                                                : TLS_FAILED;
    default:
        return TLS_FAILED;
    }
}

enum tls_status tls_conn_handshake(SSL *s, enum tls_fail *why)
{
    *why = TLS_FAIL_NONE;
    int rc = SSL_do_handshake(s);
    if (rc == 1) return TLS_OK;
    enum tls_status st = status_of(s, rc);
    if (st == TLS_FAILED || st == TLS_CLOSED) {
        *why = classify(s);
        if (st == TLS_CLOSED && *why == TLS_FAIL_PROTOCOL)
            *why = TLS_FAIL_CLOSED; /* EOF or reset: a scanner, a client giving up */
        return TLS_FAILED;
    }
    return st;
}

enum tls_status tls_conn_read(SSL *s, char *buf, size_t cap, size_t *n)
{
    int rc = SSL_read(s, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (rc > 0) {
        *n = (size_t)rc;
        return TLS_OK;
    }
    *n = 0;
    enum tls_status st = status_of(s, rc);
    ERR_clear_error();
    return st;
}

enum tls_status tls_conn_write(SSL *s, const char *buf, size_t len, size_t *n)
{
    int rc = SSL_write(s, buf, len > INT32_MAX ? INT32_MAX : (int)len);
    if (rc > 0) {
        *n = (size_t)rc;
        return TLS_OK;
    }
    *n = 0;
    enum tls_status st = status_of(s, rc);
    ERR_clear_error();
    return st;
}

bool tls_conn_pending(const SSL *s)
{
    return SSL_pending(s) > 0;
}
bool tls_conn_resumed(const SSL *s)
{
    return SSL_session_reused(s);
}
const char *tls_conn_version(const SSL *s)
{
    return SSL_get_version(s);
}

void tls_conn_shutdown(SSL *s)
{
    SSL_shutdown(s);
    ERR_clear_error();
}

/* Appends one identity (skipped when empty, too long or holding a NUL). */
static void put_id(struct tls_peer_ids *ids, const ASN1_STRING *s)
{
    const unsigned char *p = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);
    if (ids->n == TLS_PEER_IDS_MAX || len <= 0 || len > TLS_PEER_ID_LEN ||
        memchr(p, '\0', (size_t)len))
        return;
    memcpy(ids->v[ids->n], p, (size_t)len);
    ids->len[ids->n++] = (uint16_t)len;
}

/* The sip:/sips: subjectAltName URIs of leaf. */
static void san_sip_uris(X509 *leaf, struct tls_peer_ids *ids)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_URI) continue;
        const ASN1_STRING *u = g->d.uniformResourceIdentifier;
        const char *p = (const char *)ASN1_STRING_get0_data(u);
        size_t len = (size_t)ASN1_STRING_length(u);
        if ((len > 4 && strncasecmp(p, "sip:", 4) == 0) ||
            (len > 5 && strncasecmp(p, "sips:", 5) == 0))
            put_id(ids, u);
    }
    GENERAL_NAMES_free(gens);
}

unsigned tls_conn_peer_ids(const SSL *s, struct tls_peer_ids *ids)
{
    ids->n = 0;
    if (SSL_get_verify_result(s) != X509_V_OK) return 0;
    X509 *leaf = SSL_get_peer_certificate(s);
    if (!leaf) return 0;
    san_sip_uris(leaf, ids);
    if (ids->n == 0) {
        const X509_NAME *subj = X509_get_subject_name(leaf);
        int i = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
        if (i >= 0) put_id(ids, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)));
    }
    X509_free(leaf);
    ERR_clear_error();
    return ids->n;
}
