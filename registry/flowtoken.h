/* Flow tokens (RFC 5626 §5.2 style): an HMAC-protected conn_ref + remote address. */
#ifndef SIPEDGE_FLOWTOKEN_H
#define SIPEDGE_FLOWTOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/slice.h"

#define FLOWTOKEN_KEY_LEN 32
#define FLOWTOKEN_MAC_LEN 10 /* truncated HMAC-SHA256 */
/* 8 (conn_ref) + 1 (proto) + 1 (family) + 16 (ip) + 2 (port) + mac, base64url */
#define FLOWTOKEN_RAW_LEN (8 + 1 + 1 + 16 + 2 + FLOWTOKEN_MAC_LEN)
#define FLOWTOKEN_STR_LEN (((FLOWTOKEN_RAW_LEN + 2) / 3) * 4)

struct flowtoken_key {
    uint8_t k[FLOWTOKEN_KEY_LEN];
};

/* Key from --flow-secret FILE (SHA-256 of its contents), so pool members
 * sharing the file accept each other's tokens; random when path is NULL or
 * empty. Returns 0 or -errno. File I/O: startup only. */
int flowtoken_key_init(struct flowtoken_key *key, const char *path);

/* Writes the token (base64url, no padding, FLOWTOKEN_STR_LEN chars at most)
 * into out[0..cap) and returns its length, 0 when cap is too small. Pure;
 * any thread. */
size_t flowtoken_encode(const struct flowtoken_key *key, uint64_t conn, uint8_t proto,
                        const struct netaddr *peer, char *out, size_t cap);

enum flowtoken_result {
    FLOWTOKEN_OK = 0,
    FLOWTOKEN_MALFORMED, /* not one of ours at all */
    FLOWTOKEN_FORGED,    /* right shape, wrong MAC */
};

/* Checks the MAC (constant time) and decodes. Pure; any thread. */
enum flowtoken_result flowtoken_decode(const struct flowtoken_key *key, struct slice token,
                                       uint64_t *conn, uint8_t *proto, struct netaddr *peer);

#endif
