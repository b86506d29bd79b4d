/* Registrar authentication: RFC 3261 §22 digest (RFC 8760 SHA-256 and MD5)
 * against an htdigest-style users file, with stateless HMAC nonces. */
#ifndef SIPEDGE_AUTH_H
#define SIPEDGE_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/slice.h"

enum auth_alg {
    AUTH_MD5 = 0,
    AUTH_SHA256,
    AUTH_ALG__COUNT,
};

#define AUTH_HA1_MAX 64 /* hex digits of a SHA-256 HA1 */

/* One line of the users file: user:realm:HA1-MD5[:HA1-SHA-256], the first
 * three fields exactly as Apache's htdigest writes them. */
struct auth_user {
    char user[64];
    char realm[128];
    char ha1[AUTH_ALG__COUNT][AUTH_HA1_MAX + 1]; /* lowercase hex; "" = not offered */
};

/* An immutable users table: built once by auth_users_load(), then read by
 * any thread (the registrar publishes it by pointer and swaps it on SIGHUP). */
struct auth_users {
    struct auth_user *v;
    size_t n;
};

/* Reads path (file I/O: start and SIGHUP only, never on a worker). On a bad
 * line returns NULL with "line N: reason" (or the errno text) in err. */
struct auth_users *auth_users_load(const char *path, char *err, size_t errlen);
void auth_users_free(struct auth_users *u); /* NULL-safe */

/* The entry for user in realm (both compared bytewise), or NULL. A binary
 * search: the loader sorts the table and refuses a user given twice in one
 * realm. Pure; any thread. */
const struct auth_user *auth_users_find(const struct auth_users *u, struct slice user,
                                        struct slice realm);

/* Parsed Authorization / Proxy-Authorization: Digest credentials; every
 * slice borrows the message buffer, unquoted. Absent fields are empty. */
struct auth_creds {
    struct slice username, realm, nonce, uri, response, cnonce, nc, qop, opaque;
    enum auth_alg alg;
};

/* Parses a header value "Digest k=v, k="v", …". False when it is not a
 * Digest value, a parameter is malformed, the algorithm is unknown, or a
 * required field (username, realm, nonce, uri, response) is missing. Pure. */
bool auth_parse_creds(struct slice value, struct auth_creds *out);

/* Key for nonce MACs: random per process unless set (a pool sharing
 * --flow-secret derives one key from it so any member accepts a nonce). */
struct auth_key {
    uint8_t k[32];
};

/* The nonce key derived from secret (HMAC-SHA-256 under a fixed label), so
 * one secret can key several things: the registrar derives it from the
 * flow-token key. Pure. */
void auth_key_from_secret(struct auth_key *key, const uint8_t *secret, size_t len);

#define AUTH_NONCE_LEN 40 /* 16 hex digits of time + 24 of MAC */

/* Writes a fresh nonce for realm at now_s into out (AUTH_NONCE_LEN bytes,
 * no NUL). Pure; any thread. */
void auth_nonce_make(const struct auth_key *key, struct slice realm, uint64_t now_s,
                     char out[AUTH_NONCE_LEN]);

enum auth_nonce_result {
    AUTH_NONCE_OK = 0,
    AUTH_NONCE_STALE,  /* ours, but older than max_age_s (RFC 2617 stale=true) */
    AUTH_NONCE_FORGED, /* not one of ours, or for another realm */
};
enum auth_nonce_result auth_nonce_check(const struct auth_key *key, struct slice realm,
                                        struct slice nonce, uint64_t now_s, uint64_t max_age_s);

/* True when creds.response is the digest of method over creds with ha1
 * (RFC 3261 §22.4 / RFC 2617 §3.2.2, qop=auth or none; auth-int is
 * refused). Constant-time comparison. Pure. */
bool auth_check_response(const struct auth_creds *c, struct slice method, const char *ha1);

/* Appends "WWW-Authenticate: Digest realm=…, nonce=…, algorithm=…,
 * qop=\"auth\"[, stale=true]\r\n" for alg. */
void auth_put_challenge(struct buf *b, const char *header, struct slice realm,
                        const char nonce[AUTH_NONCE_LEN], enum auth_alg alg, bool stale);

/* Lowercase hex HA1 = H(user:realm:password): for tests and tools. */
void auth_ha1(enum auth_alg alg, struct slice user, struct slice realm, struct slice password,
              char out[AUTH_HA1_MAX + 1]);

#endif
