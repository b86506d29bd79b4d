/* BoringSSL contexts and non-blocking connections: bytes in, bytes out. */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t ticket_keys[TLS_TICKET_KEY_LEN];
static pthread_once_t ticket_once = PTHREAD_ONCE_INIT;
static void ticket_init(void) { RAND_bytes(ticket_keys, sizeof ticket_keys); }

const uint8_t *tls_ticket_keys(void)
{
    pthread_once(&ticket_once, ticket_init);
    return ticket_keys;
}

const char *tls_fail_str(enum tls_fail f)
{
    switch (f) {
    case TLS_FAIL_NONE: return "none";
    case TLS_FAIL_NO_CERT: return "no_certificate";
    case TLS_FAIL_UNKNOWN_CA: return "unknown_ca";
    case TLS_FAIL_EXPIRED: return "expired";
    case TLS_FAIL_BAD_NAME: return "bad_name";
    case TLS_FAIL_TIMEOUT: return "timeout";
    case TLS_FAIL_PROTOCOL: return "protocol";
    default: return "unknown";
    }
}

/* One certificate pool for the process: identical certificates (ours, the
 * CAs, and peers' chains) are stored once however many connections hold them. */
static CRYPTO_BUFFER_POOL *cert_pool;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static void pool_init(void) { cert_pool = CRYPTO_BUFFER_POOL_new(); }

static void errline(char *err, size_t errlen, const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char reason[160] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    snprintf(err, errlen, "%s %s%s%s", what, file, e ? ": " : "", reason);
    ERR_clear_error();
}

static SSL_CTX *ctx_common(const struct config *cfg, bool server, char *err, size_t errlen)
{
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set0_buffer_pool(c, cert_pool);
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
    bool have_cert = cfg->tls_cert[0] != 0;
    if (have_cert && (server || cfg->tls_mutual)) {
        if (SSL_CTX_use_certificate_chain_file(c, cfg->tls_cert) != 1) {
            errline(err, errlen, "--tls-cert: cannot load", cfg->tls_cert);
            goto fail;
        }
        const char *key = cfg->tls_key[0] ? cfg->tls_key : cfg->tls_cert;
        if (SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) {
            errline(err, errlen, "--tls-key: cannot load", key);
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
    pthread_once(&pool_once, pool_init);
    struct tls_ctx *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->mutual = cfg->tls_mutual;
    if (cfg->tls_cert[0]) {
        t->server = ctx_common(cfg, true, err, errlen);
        if (!t->server)
            goto fail;
        int mode = SSL_VERIFY_NONE;
        if (cfg->tls_mutual)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(t->server, mode, NULL);
        SSL_CTX_set_tlsext_ticket_keys(t->server, tls_ticket_keys(), TLS_TICKET_KEY_LEN);
        SSL_CTX_set_session_cache_mode(t->server, SSL_SESS_CACHE_SERVER);
    }
    t->client = ctx_common(cfg, false, err, errlen);
    if (!t->client)
        goto fail;
    /* a server must always prove who it is: no CA means no outbound TLS */
    SSL_CTX_set_verify(t->client, SSL_VERIFY_PEER, NULL);
    return t;
fail:
    tls_ctx_free(t);
    return NULL;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
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
    if (!t->server)
        return NULL;
    SSL *s = SSL_new(t->server);
    if (!s)
        return NULL;
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
    SSL *s = SSL_new(t->client);
    if (!s)
        return NULL;
    if (!SSL_set_fd(s, fd))
        goto fail;
    if (name && name[0]) {
        unsigned char ip[16];
        X509_VERIFY_PARAM *param = SSL_get0_param(s);
        if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) {
            if (!X509_VERIFY_PARAM_set1_ip_asc(param, name))
                goto fail;
        } else {
            if (!X509_VERIFY_PARAM_set1_host(param, name, strlen(name)) ||
                !SSL_set_tlsext_host_name(s, name))
                goto fail;
        }
    }
    SSL_set_connect_state(s);
    conn_tune(s);
    return s;
fail:
    SSL_free(s);
    return NULL;
}

void tls_conn_free(SSL *s) { SSL_free(s); }

static enum tls_fail classify(SSL *s)
{
    long v = SSL_get_verify_result(s);
    unsigned long e = ERR_peek_error();
    int reason = ERR_GET_REASON(e);
    ERR_clear_error();
    switch (v) {
    case X509_V_OK:
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return TLS_FAIL_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_EMAIL_MISMATCH:
        return TLS_FAIL_BAD_NAME;
    default:
        return TLS_FAIL_UNKNOWN_CA;
    }
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return TLS_FAIL_NO_CERT;
    if (reason == SSL_R_TLSV1_ALERT_CERTIFICATE_REQUIRED ||
        reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE)
        return TLS_FAIL_NO_CERT;
    if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA)
        return TLS_FAIL_UNKNOWN_CA;
    if (reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED)
        return TLS_FAIL_EXPIRED;
    return TLS_FAIL_PROTOCOL;
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
        ERR_clear_error();
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
    if (rc == 1)
        return TLS_OK;
    enum tls_status st = status_of(s, rc);
    if (st == TLS_FAILED || st == TLS_CLOSED) {
        *why = classify(s);
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

bool tls_conn_pending(const SSL *s) { return SSL_pending(s) > 0; }
bool tls_conn_resumed(const SSL *s) { return SSL_session_reused(s); }

void tls_conn_shutdown(SSL *s)
{
    SSL_shutdown(s);
    ERR_clear_error();
}
