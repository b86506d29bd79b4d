/* Types the worker runtime and the layers above it share (types only; the
 * runtime's functions are in core/worker.h). */
#ifndef SIPEDGE_WORKER_T_H
#define SIPEDGE_WORKER_T_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/netaddr.h"
#include "core/timer.h"
#include "tls/tls.h"

/* conn_ref: worker index (8 bits) | slot (24 bits) | generation (32 bits).
 * 0 is never a valid ref. A stale ref (slot reused) fails the generation check. */
typedef uint64_t conn_ref;
#define CONN_REF_NONE      ((conn_ref)0)
#define CONN_REF_WORKER(r) ((unsigned)((r) >> 56))
#define CONN_REF_SLOT(r)   ((uint32_t)(((r) >> 32) & 0xffffff))
#define CONN_REF_GEN(r)    ((uint32_t)(r))
#define CONN_REF_MAKE(wk, slot, gen)                                                               \
    (((uint64_t)(wk) << 56) | ((uint64_t)((slot)&0xffffff) << 32) | (uint32_t)(gen))

/* What the runtime knows about a received message. Filled by the runtime,
 * borrowed by the handler for the call (or copied into a worker_msg). */
struct rx_info {
    uint8_t proto;      /* enum sip_transport: UDP, TCP or TLS */
    uint16_t listener;  /* index into cfg->listen of the socket it came on
                         * (for outbound TCP/TLS connections: the listener of
                         * the same protocol and family, used for Via) */
    conn_ref conn;      /* stream connection it came on; NONE for UDP */
    struct netaddr src; /* remote address */
};

/* Why sipedge refused or dropped what an outsider sent (the edge policy,
 * ARCHITECTURE.md §2). /metrics: sipedge_refused_total{reason="…"}, the
 * names in core/mgmt.c. Append only before REFUSE__COUNT. */
enum stat_refusal {
    REFUSE_RELAY = 0,          /* endpoint's request to a host that is not ours to serve (403) */
    REFUSE_DESTINATION,        /* internal destination without --allow-destination (403) */
    REFUSE_AUTH,               /* REGISTER without valid credentials (401/403) */
    REFUSE_AOR,                /* REGISTER for an AOR its sender does not own (403) */
    REFUSE_RESPONSE_MISMATCH,  /* response from where its request did not go (dropped) */
    REFUSE_TOKEN_MISUSE,       /* flow token used outside its dialog or by an endpoint (403) */
    REFUSE_TOKEN_FORGED,       /* flow token with a bad MAC (403) */
    REFUSE_FLOW_GONE,          /* flow token whose connection closed (430) */
    REFUSE_MALFORMED_RESPONSE, /* response missing To/From/Call-ID/CSeq/Via (dropped) */
    REFUSE_CONTROL_BYTES,      /* control bytes in a header value (400 or dropped) */
    REFUSE_BODY_LENGTH,        /* Content-Length past the datagram's end (400 or dropped) */
    REFUSE__COUNT
};

/* Which limit bit (ARCHITECTURE.md §6). /metrics:
 * sipedge_limit_hits_total{limit="…"}, the names in core/mgmt.c. Append
 * only before LIMIT__COUNT. */
enum stat_limit {
    LIMIT_CONNECTIONS = 0,    /* --max-connections: accept or connect refused */
    LIMIT_CONNECTIONS_PER_IP, /* --max-connections-per-ip: accept closed */
    LIMIT_IDLE_TIMEOUT,       /* --idle-timeout: connection closed */
    LIMIT_MESSAGE_TIMEOUT,    /* --message-timeout: partial message, connection closed */
    LIMIT_HANDSHAKE_TIMEOUT,  /* --tls-handshake-timeout: connection closed */
    LIMIT_CONNECT_TIMEOUT,    /* --connect-timeout: outbound connect gave up */
    LIMIT_MESSAGE_SIZE,       /* --max-message-size: message refused */
    LIMIT_TRANSACTIONS,       /* --max-transactions: 503 */
    LIMIT_TRANSACTION_MEMORY, /* --max-transaction-memory: 503 */
    LIMIT_QUEUE_CONNECTION,   /* --max-queued-bytes: connection closed */
    LIMIT_QUEUE_TOTAL,        /* --max-queued-total: slowest connection closed */
    LIMIT_MIN_EXPIRES,        /* --min-expires: 423 */
    LIMIT_MAX_EXPIRES,        /* --max-expires: Expires lowered */
    LIMIT_BINDINGS,           /* --max-bindings: 503 */
    LIMIT_AORS,               /* --max-aors: 503 */
    LIMIT_DNS_CACHE,          /* --dns-cache-size: an answer evicted early */
    LIMIT_DNS_PENDING,        /* --dns-max-pending: lookup refused, 503 */
    LIMIT_DIALOG_RATE,        /* --overload-dialog-rate: 503 */
    LIMIT_SOURCE_RATE,        /* --overload-source-rate: 503 */
    LIMIT_STATS_CLIENTS,      /* --stats-max-clients: management connection refused */
    LIMIT__COUNT
};

/* Per-worker counters: written by the owner only, read by anyone with
 * relaxed atomic loads. */
struct worker_stats {
    _Atomic uint64_t rx_msgs, tx_msgs;
    _Atomic uint64_t rx_bytes, tx_bytes;
    _Atomic uint64_t bad_msgs;      /* parse/validation failures */
    _Atomic uint64_t dropped;       /* counted drops of any cause */
    _Atomic uint64_t ring_handover; /* SIP messages this worker posted to another */
    _Atomic uint64_t ring_wakeups;  /* eventfd wake-ups this worker sent */
    _Atomic uint64_t ring_refused;  /* posts refused because a ring was full */
    _Atomic uint64_t conns_open;    /* gauge: stream connections open now */
    _Atomic uint64_t conns_accepted, conns_closed;
    _Atomic uint64_t conns_refused; /* accepts refused by --max-connections */
    _Atomic uint64_t keepalives;
    /* TLS handshakes completed (full or resumed), of which resumed, and
     * failed ones by reason (enum tls_fail; [TLS_FAIL_NONE] stays 0) */
    _Atomic uint64_t tls_handshakes, tls_resumed;
    _Atomic uint64_t tls_fail[TLS_FAIL__COUNT];
    /* the layer above (the handlers) */
    _Atomic uint64_t forwarded;       /* requests relayed */
    _Atomic uint64_t absorbed;        /* retransmissions absorbed by a transaction */
    _Atomic uint64_t own_replies;     /* responses sipedge generated itself */
    _Atomic uint64_t timeouts;        /* client transactions that timed out (408) */
    _Atomic uint64_t overload;        /* new INVITEs answered 503 by --overload-dialog-rate */
    _Atomic uint64_t upstream_active; /* gauge: index of the SIP Server in service */
    _Atomic uint64_t upstream_down;   /* gauge: bit i set = upstream i not answering */
    _Atomic uint64_t refused[REFUSE__COUNT];   /* by enum stat_refusal */
    _Atomic uint64_t limit_hits[LIMIT__COUNT]; /* by enum stat_limit */
    _Atomic uint64_t queued_bytes;             /* gauge: unsent bytes of the worker's connections */
    /* dns/ */
    _Atomic uint64_t dns_queries;    /* queries sent to the DNS servers */
    _Atomic uint64_t dns_failures;   /* queries timed out, refused or failed (not NXDOMAIN) */
    _Atomic uint64_t dns_cache_hits; /* lookups answered by the cache or a query in flight */
    /* transactions and SIP Server failover (the layer above) */
    _Atomic uint64_t txns_live;           /* gauge: live transactions, as of the last loop turn */
    _Atomic uint64_t txns_created;        /* transactions made (probes included) */
    _Atomic uint64_t txn_timeouts_invite; /* Timer B or C: INVITE client transactions timed out */
    _Atomic uint64_t txn_timeouts_other;  /* Timer F: non-INVITE ones */
    _Atomic uint64_t failovers;           /* requests sent on to the next SIP Server target */
    _Atomic uint64_t failover_excused;    /* target's silence excused: worker behind on its input */
};

/* Counters have one writer (the owner), so a plain load and store will do. */
#define STAT_ADD(w, f, n)                                                                          \
    atomic_store_explicit(&(w)->stats.f,                                                           \
                          atomic_load_explicit(&(w)->stats.f, memory_order_relaxed) + (n),         \
                          memory_order_relaxed)
#define STAT_INC(w, f)       STAT_ADD(w, f, 1)
#define STAT_SET(w, f, v)    atomic_store_explicit(&(w)->stats.f, (v), memory_order_relaxed)
#define STAT_REFUSED(w, why) STAT_INC(w, refused[why])
#define STAT_LIMIT(w, which) STAT_INC(w, limit_hits[which])

/* A message handed between workers. Written by the sender until
 * worker_post() takes it; from then on the receiver owns it and frees it
 * with worker_msg_free(). `data` follows the struct. */
enum worker_msg_kind {
    WMSG_SEND = 1,    /* send data on conn (which the receiver owns); the runtime's */
    WMSG_SIP,         /* a received SIP message for the receiver's on_worker_msg */
    WMSG_SEND_FAILED, /* a WMSG_SEND its receiver could not write (conn closed), back to
                       * its sender's on_worker_msg: data as it was to be sent */
    WMSG_LAYER,       /* the layer above's own message to its peer on another worker:
                       * data is its business (on_worker_msg) */
};
struct worker_msg {
    uint8_t kind; /* enum worker_msg_kind */
    uint8_t from; /* sending worker, set by worker_post() */
    struct rx_info rx;
    conn_ref conn; /* WMSG_SEND: the connection to write on */
    uint32_t len;
    char data[];
};

struct dns_worker; /* the worker's resolver and cache (dns/dns.c) */
struct worker_rt;  /* the runtime's private part (core/worker-int.h) */

/* One per worker thread, created and freed by the runtime. */
struct worker {
    /* public, read-only after start */
    unsigned id;
    unsigned nworkers;
    const struct config *cfg;
    /* owner-only */
    uint64_t now_ms; /* monotonic milliseconds, refreshed each loop turn */
    struct timer_wheel timers;
    struct worker_stats stats; /* owner writes, anyone reads (relaxed) */
    void *layer;               /* the handlers' per-worker state: set by their init
                                * handler, opaque to the runtime */
    struct dns_worker *dns;    /* set by dns_worker_init(), NULL after cleanup */
    /* private */
    struct worker_rt *rt;
};

#endif
