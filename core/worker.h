/* Worker threads: one pinned epoll loop per core owning its sockets,
 * connections, timers and transactions; cross-worker rings between them. */
#ifndef SIPEDGE_WORKER_H
#define SIPEDGE_WORKER_H

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

/* What the runtime knows about a received message. */
struct rx_info {
    uint8_t proto;      /* enum sip_transport: UDP, TCP or TLS */
    uint16_t listener;  /* index into cfg->listen of the socket it came on
                         * (for outbound TCP/TLS connections: the listener of
                         * the same protocol and family, used for Via) */
    conn_ref conn;      /* stream connection it came on; NONE for UDP */
    struct netaddr src; /* remote address */
};

/* Per-worker counters: written by the owner only, read by anyone with
 * relaxed atomic loads. */
struct worker_stats {
    _Atomic uint64_t rx_msgs, tx_msgs;
    _Atomic uint64_t rx_bytes, tx_bytes;
    _Atomic uint64_t bad_msgs;      /* parse/validation failures */
    _Atomic uint64_t dropped;       /* counted drops of any cause */
    _Atomic uint64_t ring_handover; /* messages this worker posted to another */
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
    /* proxy layer */
    _Atomic uint64_t forwarded;       /* requests relayed */
    _Atomic uint64_t absorbed;        /* retransmissions absorbed by a transaction */
    _Atomic uint64_t own_replies;     /* responses sipedge generated itself */
    _Atomic uint64_t timeouts;        /* client transactions that timed out (408) */
    _Atomic uint64_t overload;        /* new INVITEs answered 503 by --overload-dialog-rate */
    _Atomic uint64_t upstream_active; /* gauge: index of the SIP Server in service */
    _Atomic uint64_t upstream_down;   /* gauge: bit i set = upstream i not answering */
};

/* Counters have one writer (the owner), so a plain load and store will do. */
#define STAT_ADD(w, f, n)                                                                          \
    atomic_store_explicit(&(w)->stats.f,                                                           \
                          atomic_load_explicit(&(w)->stats.f, memory_order_relaxed) + (n),         \
                          memory_order_relaxed)
#define STAT_INC(w, f)    STAT_ADD(w, f, 1)
#define STAT_SET(w, f, v) atomic_store_explicit(&(w)->stats.f, (v), memory_order_relaxed)

/* A message handed between workers. The receiver owns it and frees it with
 * worker_msg_free(). `data` follows the struct. */
enum worker_msg_kind {
    WMSG_SEND = 1, /* send data on conn (which the receiver owns) */
    WMSG_SIP,      /* a received SIP message for the receiver to process */
    WMSG_USER,     /* proxy-defined */
};
struct worker_msg {
    uint8_t kind;
    uint8_t from;  /* sending worker */
    uint32_t user; /* free for the proxy layer */
    struct rx_info rx;
    conn_ref conn; /* WMSG_SEND: the connection to write on */
    uint32_t len;
    char data[];
};

struct proxy_worker; /* the proxy layer's per-worker state (core/proxy.c) */
struct dns_worker;   /* the worker's resolver and cache (dns/dns.c) */
struct worker_rt;    /* the runtime's private part (core/worker.c) */

struct worker {
    /* public, read-only after start */
    unsigned id;
    unsigned nworkers;
    const struct config *cfg;
    /* owner-only */
    uint64_t now_ms; /* monotonic milliseconds, refreshed each loop turn */
    struct timer_wheel timers;
    struct worker_stats stats;
    struct proxy_worker *proxy;
    struct dns_worker *dns; /* set by dns_worker_init(), NULL after cleanup */
    /* private */
    struct worker_rt *rt;
};

/* Arms (or re-arms) t, one of w's timers, to fire ms milliseconds after the
 * current loop turn's clock. Owner thread. */
static inline void worker_timer_arm(struct worker *w, struct timer *t, uint64_t ms)
{
    timer_arm_at(&w->timers, t, w->now_ms + ms);
}

/* dns/ hook: has w's epoll watch a c-ares socket for `events` (EPOLLIN
 * and/or EPOLLOUT; 0 forgets it) and hand its events to dns_on_fd().
 * Owner thread. 0 or -errno. */
int worker_dns_watch(struct worker *w, int fd, uint32_t events);

/* Returns the worker running on the calling thread, or NULL. */
struct worker *worker_self(void);

/* Sends buf on the transport to dst. Called by the owner w only.
 * - conn != NONE: that stream connection; if another worker owns it the bytes
 *   are copied and handed over through the ring; a stale or closed ref gives
 *   -ENOTCONN (the caller answers 430/477/503 as fits).
 * - UDP: sendto from this worker's UDP socket of listener `listener`
 *   (or any UDP listener of dst's family when listener is -1).
 * - TCP/TLS without conn: reuse this worker's open connection to dst, else
 *   open one (non-blocking; bytes queue until it connects, bounded). TLS
 *   additionally needs tls_name (expected peer identity, may be NULL).
 *   A TLS connection is reused only when it was opened with the same
 *   tls_name (NULL and "" match only each other, so NULL also reuses a
 *   connection the peer opened from dst); a new one verifies tls_name, or
 *   the IP address of dst when tls_name is NULL, and holds the bytes until
 *   its handshake completes.
 * Never sends to a forbidden address (-EINVAL). Returns 0 or -errno.
 * *used, when non-NULL, receives the connection used (NONE for UDP). */
int worker_send(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                conn_ref conn, const char *tls_name, const char *buf, size_t len, conn_ref *used);

/* Allocates a message for worker_post(); data has room for len bytes. */
struct worker_msg *worker_msg_new(size_t len);
void worker_msg_free(struct worker_msg *m);

/* Hands m to worker `to` (not w itself) through the (w, to) ring; takes
 * ownership of m on success. Returns -EAGAIN when the ring is full, -EINVAL
 * for a bad `to` (m still the caller's either way). */
int worker_post(struct worker *w, unsigned to, struct worker_msg *m);

/* Closes a connection this worker owns (no-op for a stale ref). */
void worker_conn_close(struct worker *w, conn_ref c);

/* Local address of a listener, for Via/Record-Route: the advertise host or the
 * bound address, and the port. The host is ready for a hostport (an IPv6
 * listener's in brackets). NULL / -EINVAL for a bad index. */
const char *worker_listener_host(const struct worker *w, unsigned listener);
int worker_listener_port(const struct worker *w, unsigned listener);

/* The port this worker writes into the Via of requests it forwards on
 * listener: its private UDP port when it has one (--worker-ports), else the
 * listener's port. Send such requests with WORKER_SEND_PRIVATE so they leave
 * from that port too. -EINVAL for a bad index. */
int worker_via_port(const struct worker *w, unsigned listener);
/* True when port is some worker's private port on listener (so a Via
 * carrying it is ours). Any worker thread. */
bool worker_is_private_port(const struct worker *w, unsigned listener, int port);
/* Or'ed into worker_send's UDP listener: send from this worker's private
 * port of that listener (the shared socket when it has none). */
#define WORKER_SEND_PRIVATE 0x10000

/* True once the SIGTERM drain started: stream listeners are closed and the
 * proxy should turn new requests away. Owner thread. */
bool worker_draining(const struct worker *w);

/* Runtime control, called from the control (main) thread only. */

/* Opens every listener for every worker (SO_REUSEPORT), starts cfg->workers
 * pinned threads and runs proxy_worker_init() on each. Returns 0, or -errno
 * after logging the cause and undoing everything. cfg must outlive the
 * runtime. */
int worker_runtime_start(const struct config *cfg);
/* worker_runtime_start() with TLS: tls[i] (from tls_ctx_new) becomes worker
 * i's context for accepted and outbound TLS connections. Takes ownership of
 * tls[0..cfg->workers) whatever the outcome. tls NULL: no TLS (tls:
 * listeners close what they accept, outbound TLS fails). */
int worker_runtime_start_tls(const struct config *cfg, struct tls_ctx **tls);
/* Publishes fresh contexts for new handshakes, tls[i] for worker i (taking
 * ownership of all of them); each worker swaps its own in at its next loop
 * turn and frees the old one. Live connections keep the context they were
 * made with. Waits (bounded) until every worker took its context: true
 * when all did, so handshakes accepted from now on use the new material.
 * Only while the runtime runs; otherwise returns false and the caller
 * keeps tls. */
bool worker_runtime_tls_reload(struct tls_ctx **tls);
/* Starts the drain: every worker closes its TCP/TLS listeners and from then
 * on reports whether it still has work in flight. */
void worker_runtime_drain(void);
/* After worker_runtime_drain(): true while any worker has transactions
 * (proxy_busy()), queued stream bytes or ring messages. */
bool worker_runtime_busy(void);
/* Stops and joins the workers (their connections close, proxy_on_conn_closed
 * and proxy_worker_cleanup run on each), then frees everything. */
void worker_runtime_stop(void);

/* For the management thread: the running workers, whose `stats` may be read
 * with relaxed atomic loads (and id, nworkers, cfg read) until
 * worker_runtime_stop(). worker_get returns NULL when i is out of range. */
unsigned worker_count(void);
const struct worker *worker_get(unsigned i);

/* Entry points the runtime calls, implemented by the proxy layer (core/proxy.c).
 * All run on the worker's own thread. */
int proxy_worker_init(struct worker *w);
void proxy_worker_cleanup(struct worker *w);
/* A complete SIP message (datagram or framed stream message); buf is
 * writable and only valid for the call. */
void proxy_on_message(struct worker *w, const struct rx_info *rx, char *buf, size_t len);
/* A message from another worker's ring (WMSG_SIP or WMSG_USER); the proxy
 * owns it and frees it. */
void proxy_on_worker_msg(struct worker *w, struct worker_msg *m);
/* A connection owned by w closed (peer, error, timeout). */
void proxy_on_conn_closed(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto);
/* Called once per loop turn when the worker holds no reference into the
 * shared RCU maps; sleeping says it is about to block in epoll_wait. */
void proxy_quiescent(struct worker *w, bool sleeping);
/* Called after a blocking epoll_wait returned (only when sleeping was true). */
void proxy_awake(struct worker *w);
/* True while transactions are still in flight (used by the SIGTERM drain). */
bool proxy_busy(struct worker *w);

#endif
