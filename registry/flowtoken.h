/* Flow tokens (RFC 5626 §5.2 style): an HMAC-protected conn_ref + remote
 * address, marked for the one use it was handed out for. */
#ifndef SIPEDGE_FLOWTOKEN_H
#define SIPEDGE_FLOWTOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/slice.h"

#define FLOWTOKEN_KEY_LEN 32
#define FLOWTOKEN_MAC_LEN 10 /* truncated HMAC-SHA256 over the token */
#define FLOWTOKEN_DTAG_LEN                                                                         \
    6 /* truncated HMAC-SHA256 binding a Record-Route token to its dialog                          \
       */
/* kind, proto, family (3) + conn_ref (8) + ip (4 or 16) + port (2) + MAC,
 * + the dialog tag for a Record-Route token; base64url without padding */
#define FLOWTOKEN_RAW_MAX (3 + 8 + 16 + 2 + FLOWTOKEN_MAC_LEN + FLOWTOKEN_DTAG_LEN)
#define FLOWTOKEN_STR_LEN ((FLOWTOKEN_RAW_MAX * 4 + 2) / 3) /* the longest: IPv6, Record-Route */

struct flowtoken_key {
    uint8_t k[FLOWTOKEN_KEY_LEN];
};

/* What a token was handed out for: ARCHITECTURE §2 edge policy. */
enum flowtoken_kind {
    FLOWTOKEN_PATH = 1, /* Path of a REGISTER: for requests from the SIP Server or a peer */
    FLOWTOKEN_RR = 2,   /* Record-Route of a dialog: only inside that dialog (its Call-ID) */
};

/* A decoded token: the flow it names and its kind. */
struct flowtoken {
    uint8_t kind;  /* enum flowtoken_kind */
    uint8_t proto; /* enum sip_transport of the flow */
    uint64_t conn; /* conn_ref of a stream flow, 0 for UDP */
    struct netaddr peer;
};

/* Key from --flow-secret FILE (SHA-256 of its contents), so pool members
 * sharing the file accept each other's tokens; random when path is NULL or
 * empty. Returns 0 or -errno. File I/O: startup only. */
int flowtoken_key_init(struct flowtoken_key *key, const char *path);

/* Writes token t (base64url, no padding, FLOWTOKEN_STR_LEN chars at most)
 * into out[0..cap) and returns its length, 0 when cap is too small or the
 * kind or address family is unknown. A FLOWTOKEN_RR token is bound to
 * `dialog` (the Call-ID); a Path token ignores it. Pure; any thread. */
size_t flowtoken_encode(const struct flowtoken_key *key, const struct flowtoken *t,
                        struct slice dialog, char *out, size_t cap);

enum flowtoken_result {
    FLOWTOKEN_OK = 0,
    FLOWTOKEN_MALFORMED,    /* not one of ours at all */
    FLOWTOKEN_FORGED,       /* right shape, wrong MAC */
    FLOWTOKEN_OTHER_DIALOG, /* a genuine Record-Route token, used outside its dialog */
};

/* Checks the MAC (constant time) and decodes into *t; for a Record-Route
 * token also checks that it belongs to `dialog` (the request's Call-ID).
 * *t is filled for FLOWTOKEN_OK and FLOWTOKEN_OTHER_DIALOG. Pure; any
 * thread. */
enum flowtoken_result flowtoken_decode(const struct flowtoken_key *key, struct slice token,
                                       struct slice dialog, struct flowtoken *t);

#endif
