/* Per-worker transactions (RFC 3261 §17): server+client pairs, their table and timers. */
#ifndef SIPEDGE_TXN_H
#define SIPEDGE_TXN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/timer.h"
#include "core/worker.h"

enum txn_state {
    TXN_TRYING = 0, /* request forwarded, nothing back yet */
    TXN_PROCEEDING, /* a provisional response came back */
    TXN_COMPLETED,  /* final response forwarded; absorbing retransmissions */
};

/* One proxied request: the server side (towards the sender) and the single
 * client side (towards the next hop). Owned by the worker that created it;
 * only that worker reads or writes it. Filled by whoever starts it
 * (core/forward.c for a forwarded request, core/upstream.c for a probe);
 * state, timers and the kept response are then written by core/txn.c,
 * core/response.c (responses) and core/proxy.c (ACK, CANCEL). */
struct txn {
    uint32_t slot, gen;
    uint64_t nonce; /* random bits of our branch (txn_new), checked on responses */
    char *key;      /* private: server transaction key */
    uint16_t key_len;

    uint8_t method; /* enum sip_method of the request */
    uint8_t state;  /* enum txn_state */
    bool invite;
    bool provisional_seen;
    bool cancel_pending; /* CANCEL arrived before any provisional */
    bool cancelled;
    bool ack_seen;
    bool to_upstream; /* the next hop is the configured upstream */
    bool probe;       /* our own OPTIONS to an upstream: no server side */
    uint8_t upstream_idx;

    /* server side: where responses go */
    struct rx_info rx;       /* how the request arrived */
    struct netaddr resp_dst; /* UDP response destination (RFC 3261 §18.2.2 / RFC 3581) */
    char *resp;              /* last response sent back, for retransmissions (txn_keep_response) */
    uint32_t resp_len;
    int resp_status;

    /* client side */
    char *req; /* the forwarded request, for retransmission and CANCEL (txn_set_request) */
    uint32_t req_len;
    uint8_t out_proto;
    int out_listener;
    struct netaddr out_dst;
    conn_ref out_conn;
    char *tls_name; /* expected TLS identity of the next hop, or NULL (txn_set_tls_name) */
    char branch[64];
    uint8_t branch_len;

    uint32_t retx_ms;       /* current retransmission interval */
    struct timer t_retx;    /* A / E on the client side, G on the server side */
    struct timer t_timeout; /* B / F */
    /* failover to the next SIP Server target (core/failover.c): the request
     * as received (kept only when there is another target, freed at the
     * first response beyond 100 Trying), what its plan popped and whence it
     * came, the targets tried (bit: SIP Server * 8 + target) */
    char *orig;
    uint32_t orig_len;
    uint8_t orig_npop;
    bool orig_from_endpoint;
    uint16_t tried;
    struct timer t_failover; /* --failover-timeout: no response at all yet */
    bool lingering;          /* completed: on the worker's linger list */
    uint64_t linger_until;   /* then freed by the sweep */
    struct txn *lnext;
};

/* A worker's transactions. Owner worker only; core/txn.c writes every field. */
struct txn_table {
    struct txn **slots; /* slot -> txn or NULL */
    uint32_t *gens;     /* next generation per slot */
    uint32_t nslots, cap;
    uint32_t *free_list;
    uint32_t nfree;
    uint32_t *buckets; /* hash of server key -> slot + 1 */
    uint32_t nbuckets; /* power of two, at least the live transactions */
    /* by slot: the next slot + 1 on its bucket's chain (0 ends it), and its
     * key's hash, so a lookup walks these two compact arrays and reads a
     * transaction only when the hash matches, and doubling the buckets
     * reads no transaction at all (a stall of the worker otherwise) */
    uint32_t *chain;
    uint64_t *hash;
    uint32_t live;
    uint32_t max;       /* --max-transactions */
    uint64_t bytes;     /* kept by the live transactions: struct, key, request, response */
    uint64_t max_bytes; /* --max-transaction-memory */
    /* the owner's counters (txns_live, txns_created), or NULL (tests) */
    struct worker_stats *stats;
    /* random bits for branches, refilled from the CSPRNG (RAND_bytes) */
    uint64_t rnd[32];
    uint32_t rnd_left;
    /* completed transactions absorbing retransmissions, in expiry order:
     * [0] received over UDP, [1] over a stream; freed by the sweep timer */
    struct txn *linger_head[2], *linger_tail[2];
    struct timer sweep;
};

/* Sets up an empty table for at most max transactions keeping at most
 * max_bytes together (struct, key, request and response copies). 0 or
 * -ENOMEM. Owner worker (the timers it arms later are that worker's). */
int txn_table_init(struct txn_table *t, uint32_t max, uint64_t max_bytes);
/* Frees every transaction (cancelling their timers) and the table. */
void txn_table_cleanup(struct txn_table *t);

/* Why a new transaction would not fit (txn_table_admit). */
enum txn_admit {
    TXN_ADMIT_OK = 0,
    TXN_ADMIT_COUNT, /* max transactions live */
    TXN_ADMIT_BYTES, /* the byte budget would be exceeded */
};
/* Whether one more transaction keeping about `bytes` (its request copy and
 * key) fits under the table's limits. Owner worker only. */
enum txn_admit txn_table_admit(const struct txn_table *t, size_t bytes);

/* Allocates a zeroed transaction with a copy of the server key, 64 fresh
 * random bits in nonce (a per-table buffer refilled from BoringSSL's
 * RAND_bytes), and its retransmission and timeout timers set up (core/txn.c
 * handles them). NULL when max transactions are live or memory ran out (the
 * byte budget is txn_table_admit()'s: a probe is not refused by it). Owner
 * worker only. */
struct txn *txn_new(struct txn_table *t, const char *key, size_t key_len);
/* Unlinks and frees a transaction, cancelling its timers. Owner worker. */
void txn_free(struct txn_table *t, struct txn *x);
/* Server transaction by key, or NULL. Owner worker. */
struct txn *txn_find_key(struct txn_table *t, const char *key, size_t key_len);
/* Gives x a new generation, so a new branch (a request sent again to
 * another target, RFC 3261 §16.6): responses to the old branch no longer
 * find it. Owner worker. */
void txn_rebranch(struct txn_table *t, struct txn *x);
/* Client transaction by slot and generation (from our branch); NULL if stale.
 * Owner worker. */
struct txn *txn_find_slot(struct txn_table *t, uint32_t slot, uint32_t gen);
/* True while some transaction has not sent its final response (the drain
 * waits for them). Owner worker. */
bool txn_table_in_flight(const struct txn_table *t);
/* Keeps a copy of the response last sent towards the sender, to answer
 * retransmitted requests with it (on allocation failure the old copy
 * stays), counted in t->bytes. Owner worker. */
void txn_keep_response(struct txn_table *t, struct txn *x, const char *buf, size_t len, int status);
/* Sets x's request copy (the forwarded request) to buf[0..len), counted in
 * t->bytes. 0, or -ENOMEM (x unchanged). Owner worker. */
int txn_set_request(struct txn_table *t, struct txn *x, const char *buf, size_t len);
/* Sets the TLS identity x's next hop must prove (a copy; NULL or "" for
 * none), counted in t->bytes. 0 or -ENOMEM. Owner worker. */
int txn_set_tls_name(struct txn_table *t, struct txn *x, const char *name);

#endif
