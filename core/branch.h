/* Via branches of ours, server transaction keys and the loop hash: pure functions. */
#ifndef SIPEDGE_BRANCH_H
#define SIPEDGE_BRANCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/sipmsg.h"

#define BRANCH_MAGIC      "z9hG4bK" /* RFC 3261 §8.1.1.7 magic cookie */
#define BRANCH_PREFIX     "z9hG4bKSe"
#define BRANCH_PREFIX_LEN 9
/* prefix, then lowercase hex: worker (2), slot (6), generation (8), loop
 * hash (8), random (16) */
#define BRANCH_LEN (BRANCH_PREFIX_LEN + 2 + 6 + 8 + 8 + 16)
/* "z9hG4bKSa" and 16 hex digits */
#define BRANCH_STATELESS_LEN (9 + 16)

/* What a branch of ours carries (ARCHITECTURE §1), so a response that lands
 * on any worker reaches the owner of its transaction without a lookup, and
 * 64 random bits an off-path sender cannot guess: the routing bits name the
 * transaction, the random ones must then equal its nonce. */
struct branch_id {
    uint32_t worker; /* owning worker (8 bits kept) */
    uint32_t slot;   /* transaction slot on that worker (24 bits kept) */
    uint32_t gen;    /* the slot's generation when the transaction was made */
    uint32_t loop;   /* branch_loop_hash() of the forwarded request; 0 for our probes */
    uint64_t rand;   /* the transaction's nonce (from the CSPRNG, core/txn.c) */
};

/* Writes the branch naming id into out (BRANCH_LEN bytes, no NUL). Returns
 * BRANCH_LEN, or 0 when cap is smaller. Pure; any thread. */
size_t branch_encode(const struct branch_id *id, char *out, size_t cap);

/* Decodes a branch made by branch_encode(). False for any other branch
 * (foreign prefix, wrong length, a non-hex or uppercase digit), which then
 * names no transaction of ours. Pure; any thread. */
bool branch_decode(struct slice br, struct branch_id *id);

/* The branch of a request forwarded without a transaction (ACK): derived from
 * the sender's branch with the process's keyed hash, so a retransmitted ACK
 * leaves with the same branch. Writes BRANCH_STATELESS_LEN bytes (no NUL);
 * returns that, or 0 when cap is smaller. Any thread. */
size_t branch_stateless(struct slice in_branch, char *out, size_t cap);

/* The server transaction key of request m (RFC 3261 §17.2.3): with a
 * magic-cookie top Via branch, "branch|sent-by host:port|method"; otherwise
 * (RFC 2543) "Call-ID|CSeq number|From tag|Request-URI|top Via|method".
 * ACK and CANCEL use the method INVITE, so they find the INVITE's
 * transaction. (The To tag RFC 3261 also names for the RFC 2543 case is not
 * part of the key.) m must have passed sipmsg_validate(). Writes into
 * buf[0..cap) without a NUL and returns the length, or 0 when the key does
 * not fit or the top Via does not parse. Pure; any thread. */
size_t branch_server_key(const struct sip_msg *m, char *buf, size_t cap);

/* The loop-detection part of our branch (RFC 3261 §16.6 step 8): a keyed
 * hash of the Request-URI, Call-ID, CSeq number, From, To and top Route, so
 * a request that comes back unchanged carries a Via of ours with the same
 * value. Stable across the workers of one process (one hash key). */
uint32_t branch_loop_hash(const struct sip_msg *m);

#endif
