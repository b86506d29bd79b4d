/* BoringSSL contexts and non-blocking connections: bytes in, bytes out. */
#ifndef SIPEDGE_TLS_H
#define SIPEDGE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

#define TLS_TICKET_KEY_LEN 48

/* One worker's server and client contexts. Immutable once built; SSL
 * objects keep a reference to the context they were made from, so replacing
 * a worker's tls_ctx leaves its live connections untouched. */
struct tls_ctx {
    SSL_CTX *server;
    SSL_CTX *client;
    bool mutual;
    uint64_t generation;
};

enum tls_status {
    TLS_OK = 0,
    TLS_WANT_READ,
    TLS_WANT_WRITE,
    TLS_CLOSED, /* close_notify or EOF */
    TLS_FAILED,
};

/* Why a handshake failed; counted per worker. */
enum tls_fail {
    TLS_FAIL_NONE = 0,
    TLS_FAIL_NO_CERT,    /* mutual TLS: the peer sent no certificate */
    TLS_FAIL_UNKNOWN_CA, /* chain does not end at a trusted CA */
    TLS_FAIL_EXPIRED,    /* a certificate is expired or not yet valid */
    TLS_FAIL_BAD_NAME,   /* the server's certificate does not name the target */
    TLS_FAIL_TIMEOUT,    /* --tls-handshake-timeout passed */
    TLS_FAIL_PROTOCOL,   /* anything else: not TLS, bad version, alert... */
    TLS_FAIL__COUNT
};

const char *tls_fail_str(enum tls_fail f);

/* Process-wide session ticket keys shared by every worker's server context,
 * so a session resumes on whichever core the kernel picks. Generated once. */
const uint8_t *tls_ticket_keys(void);

/* Builds a context pair from cfg->tls_cert/tls_key/tls_ca. Does file I/O:
 * call at startup or from the control thread, never from a worker.
 * Returns NULL and one line in err on failure. */
struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
/* Drops this reference; contexts live on while connections use them. */
void tls_ctx_free(struct tls_ctx *t);

/* Non-blocking connections on a connected socket fd (not owned). */
SSL *tls_conn_server(const struct tls_ctx *t, int fd);
/* name: the identity the server must prove (DNS name, or an IP literal for
 * an IP SAN); it is also sent as SNI when it is a name. NULL: chain only. */
SSL *tls_conn_client(const struct tls_ctx *t, int fd, const char *name);
void tls_conn_free(SSL *s);

/* Drives the handshake. TLS_OK when done; *why says why on TLS_FAILED. */
enum tls_status tls_conn_handshake(SSL *s, enum tls_fail *why);
/* Reads decrypted bytes; *n gets how many when TLS_OK. */
enum tls_status tls_conn_read(SSL *s, char *buf, size_t cap, size_t *n);
/* Writes plaintext; *n gets how many were accepted when TLS_OK. */
enum tls_status tls_conn_write(SSL *s, const char *buf, size_t len, size_t *n);
/* Bytes decrypted and buffered inside BoringSSL, readable without the socket. */
bool tls_conn_pending(const SSL *s);
bool tls_conn_resumed(const SSL *s);
/* Sends close_notify, best effort. */
void tls_conn_shutdown(SSL *s);

#endif
