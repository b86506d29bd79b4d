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
    SSL_CTX *server; /* NULL without --tls-cert */
    SSL_CTX *client;
    bool mutual;
    uint64_t generation; /* set by the builder: 0 at start, +1 per reload */
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
    TLS_FAIL_NO_CERT,       /* mutual TLS: a certificate was required and not sent */
    TLS_FAIL_UNKNOWN_CA,    /* the peer's chain does not end at a trusted CA */
    TLS_FAIL_EXPIRED,       /* a peer certificate is expired or not yet valid */
    TLS_FAIL_BAD_NAME,      /* the server's certificate does not name the target */
    TLS_FAIL_BAD_CERT,      /* the peer's chain fails verification otherwise */
    TLS_FAIL_PEER_REJECTED, /* the peer refused our certificate (alert) */
    TLS_FAIL_TIMEOUT,       /* --tls-handshake-timeout passed */
    TLS_FAIL_CLOSED,        /* the peer closed the connection mid-handshake, no alert */
    TLS_FAIL_PROTOCOL,      /* anything else: not TLS, bad version, other alerts */
    TLS_FAIL__COUNT
};

/* Short stable name of f ("no_certificate", "bad_name"...), for logs. */
const char *tls_fail_str(enum tls_fail f);

/* Process-wide session ticket keys shared by every worker's server context,
 * so a session resumes on whichever core the kernel picks. Generated once. */
const uint8_t *tls_ticket_keys(void);

/* Builds a context pair from cfg->tls_cert/tls_key/tls_ca. Does file I/O:
 * call at startup or from the control thread, never from a worker.
 * Returns NULL and one line in err on failure, starting with the flag
 * ("--tls-key: ..."). */
struct tls_ctx *tls_ctx_new(const struct config *cfg, char *err, size_t errlen);
/* Drops this reference; contexts live on while connections use them.
 * NULL-safe; any thread. */
void tls_ctx_free(struct tls_ctx *t);

/* Non-blocking connections on a connected socket fd (not owned). NULL on
 * failure (no server context, out of memory). The owner thread only. */
SSL *tls_conn_server(const struct tls_ctx *t, int fd);
/* name: the identity the server must prove (DNS name, or an IP literal for
 * an IP SAN); it is also sent as SNI when it is a name. A DNS name matches
 * per RFC 5922 §7: SIP URI subjectAltNames when the certificate has any,
 * else DNS subjectAltNames, no wildcards. NULL or "": chain only. */
SSL *tls_conn_client(const struct tls_ctx *t, int fd, const char *name);
void tls_conn_free(SSL *s);

/* Drives the handshake. TLS_OK when done; TLS_FAILED with *why set (a
 * peer closing mid-handshake is TLS_FAILED too, never TLS_CLOSED). */
enum tls_status tls_conn_handshake(SSL *s, enum tls_fail *why);
/* Reads decrypted bytes; *n gets how many when TLS_OK. */
enum tls_status tls_conn_read(SSL *s, char *buf, size_t cap, size_t *n);
/* Writes plaintext; *n gets how many were accepted when TLS_OK (partial
 * writes: at least one record). After TLS_WANT_*, retry with the same bytes
 * first (the buffer may move, its contents must not). */
enum tls_status tls_conn_write(SSL *s, const char *buf, size_t len, size_t *n);
/* Bytes decrypted and buffered inside BoringSSL, readable without the socket. */
bool tls_conn_pending(const SSL *s);
bool tls_conn_resumed(const SSL *s);
/* "TLSv1.3" and the like, for logs. */
const char *tls_conn_version(const SSL *s);
/* Sends close_notify, best effort, never blocks. */
void tls_conn_shutdown(SSL *s);

#define TLS_PEER_IDS_MAX 8   /* identities kept from one certificate */
#define TLS_PEER_ID_LEN  256 /* longer ones are skipped */

/* The identities a peer's certificate names, as written in it (NUL-free,
 * not NUL-terminated): its subjectAltName URIs of scheme sip or sips
 * ("sip:alice@cc.example.com"), or, when it has none (RFC 5922 §7.1), its
 * subject CN ("alice@cc.example.com"). */
struct tls_peer_ids {
    unsigned n;
    uint16_t len[TLS_PEER_IDS_MAX];
    char v[TLS_PEER_IDS_MAX][TLS_PEER_ID_LEN];
};

/* Fills ids from the certificate the peer of the established connection s
 * presented, only when its chain was verified (X509_V_OK: under
 * --tls-mutual every accepted client's is). Returns how many (0: no
 * verified certificate, or none of the identities above). The owner thread
 * only. */
unsigned tls_conn_peer_ids(const SSL *s, struct tls_peer_ids *ids);

#endif
