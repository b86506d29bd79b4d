/* Worker runtime: one pinned epoll loop per core owning its sockets,
 * connections and timers, cross-worker rings between them. The layer above
 * plugs in through struct worker_handlers; this header names none of it. */
#ifndef SIPEDGE_WORKER_H
#define SIPEDGE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/worker-t.h"

/* What the runtime calls on each worker's own thread. main builds the table
 * (from the proxy layer's entry points); on_message and on_worker_msg are
 * required, the others may be NULL. */
struct worker_handlers {
    /* Before the loop starts, after the worker's sockets are registered;
     * 0 or -errno (the runtime then does not start). */
    int (*init)(struct worker *w);
    /* After the loop ended and every connection closed (their
     * on_conn_closed ran); only when init returned 0. */
    void (*cleanup)(struct worker *w);
    /* A complete SIP message (datagram or framed stream message); buf is
     * writable and only valid for the call. */
    void (*on_message)(struct worker *w, const struct rx_info *rx, char *buf, size_t len);
    /* A message another worker posted (WMSG_SIP), or bytes worker_send()
     * handed to another worker that could not write them (WMSG_SEND_FAILED,
     * m->conn the connection); the handler owns m and frees it with
     * worker_msg_free(). */
    void (*on_worker_msg)(struct worker *w, struct worker_msg *m);
    /* A connection owned by w closed (peer, error, timeout, shutdown): c is
     * already stale. Never called from inside another handler. */
    void (*on_conn_closed)(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto);
    /* Once per loop turn, when the worker holds no reference into shared
     * RCU maps; sleeping says it is about to block in epoll_wait. */
    void (*quiescent)(struct worker *w, bool sleeping);
    /* After a blocking epoll_wait returned (only when sleeping was true). */
    void (*awake)(struct worker *w);
    /* During the SIGTERM drain, each turn: true while work is in flight. */
    bool (*busy)(struct worker *w);
    /* A CRLF keep-alive came on connection c, owned by w (RFC 5626 §4.4.1;
     * the runtime answers it). */
    void (*on_keepalive)(struct worker *w, conn_ref c, const struct netaddr *peer, uint8_t proto);
    /* A datagram this worker sent to dst drew an ICMP port or host
     * unreachable (IP_RECVERR; err: ECONNREFUSED, EHOSTUNREACH, ...).
     * Optional. Anyone on the path can forge such an ICMP message: treat it
     * as a hint. */
    void (*on_unreachable)(struct worker *w, const struct netaddr *dst, int err);
};

/* Arms (or re-arms) t, one of w's timers, to fire ms milliseconds after the
 * current loop turn's clock. Owner thread. */
static inline void worker_timer_arm(struct worker *w, struct timer *t, uint64_t ms)
{
    timer_arm_at(&w->timers, t, w->now_ms + ms);
}

/* Readiness callback of worker_watch_fd(): events as epoll reported them
 * (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP). Runs on w's thread. */
typedef void (*worker_fd_cb)(struct worker *w, int fd, uint32_t events, void *arg);

/* Has w's epoll watch fd for events (EPOLLIN and/or EPOLLOUT; 0 forgets it)
 * and call cb(w, fd, events, arg) on readiness; calling it again for a
 * watched fd changes its events, cb and arg. The caller keeps owning fd and
 * forgets it before closing it. Meant for a handful of descriptors (a
 * resolver's sockets). Owner thread. 0 or -errno. */
int worker_watch_fd(struct worker *w, int fd, uint32_t events, worker_fd_cb cb, void *arg);

/* Returns the worker running on the calling thread, or NULL. */
struct worker *worker_self(void);

/* Sends buf on the transport to dst. Called by the owner w only.
 * - conn != NONE: that stream connection; if another worker owns it the bytes
 *   are copied and handed over through the ring (and come back to w as a
 *   WMSG_SEND_FAILED message when the owner finds the connection closed);
 *   a stale or closed ref of w's own gives -ENOTCONN (the caller answers
 *   430/477/503 as fits).
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
 * Never sends to a forbidden address (-EINVAL). Returns 0 or -errno; buf
 * stays the caller's. *used, when non-NULL, receives the connection used
 * (NONE for UDP). */
int worker_send(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                conn_ref conn, const char *tls_name, const char *buf, size_t len, conn_ref *used);

/* Tells the runtime that the layer above needs connection c open until
 * until_ms (w's clock; 0 releases it): --idle-timeout does not close a held
 * connection (a registered phone's, while its binding lasts). Owner of c
 * only; a stale ref or one of another worker is ignored (-ENOTCONN). */
int worker_conn_hold(struct worker *w, conn_ref c, uint64_t until_ms);

/* The identities of the verified certificate the peer of TLS connection c
 * presented (tls_conn_peer_ids): their number, 0 when c is not an
 * established TLS connection or its peer showed no verified certificate,
 * -ENOTCONN for a stale ref or one of another worker. Owner of c only. */
int worker_conn_peer_ids(struct worker *w, conn_ref c, struct tls_peer_ids *ids);

/* Allocates a zeroed message for worker_post(); data has room for len
 * bytes. NULL when out of memory or len is above UINT32_MAX. Any thread. */
struct worker_msg *worker_msg_new(size_t len);
/* Frees a message (NULL-safe). Any thread. */
void worker_msg_free(struct worker_msg *m);

/* Hands m to worker `to` (not w itself) through the (w, to) ring; takes
 * ownership of m on success. Returns -EAGAIN when the ring is full, -EINVAL
 * for a bad `to` (m still the caller's either way). Owner thread of w. */
int worker_post(struct worker *w, unsigned to, struct worker_msg *m);

/* Local address of a listener, for Via/Record-Route: the advertise host or the
 * bound address, and the port. The host is ready for a hostport (an IPv6
 * listener's in brackets). NULL / -EINVAL for a bad index. Any thread. */
const char *worker_listener_host(const struct worker *w, unsigned listener);
int worker_listener_port(const struct worker *w, unsigned listener);

/* The port this worker writes into the Via of requests it forwards on
 * listener: its private UDP port when it has one (--worker-ports), else the
 * listener's port. Send such requests with WORKER_SEND_PRIVATE so they leave
 * from that port too. -EINVAL for a bad index. Any thread. */
int worker_via_port(const struct worker *w, unsigned listener);
/* True when port is some worker's private port on listener (so a Via
 * carrying it is ours). Any worker thread. */
bool worker_is_private_port(const struct worker *w, unsigned listener, int port);
/* Or'ed into worker_send's UDP listener: send from this worker's private
 * port of that listener (the shared socket when it has none). */
#define WORKER_SEND_PRIVATE 0x10000

/* When this worker last saw its own UDP receive path overflow (a socket of
 * its dropped datagrams on a full queue since the previous look, or holds
 * over a quarter of its buffer unread), or 0: a response missing then may
 * be one the worker lost or has not read yet, not one its sender never
 * sent. Looks at most once a millisecond. Owner thread. */
uint64_t worker_rx_overflow_ms(struct worker *w);

/* True when stream connection c of this worker holds bytes from its peer
 * that the worker has not read or not framed yet (a response may be among
 * them); false for any other connection. Owner thread. */
bool worker_conn_unread(struct worker *w, conn_ref c);

/* True once the SIGTERM drain started: stream listeners are closed and the
 * layer above should turn new requests away. Owner thread. */
bool worker_draining(const struct worker *w);

/* Runtime control, called from the control (main) thread only. */

/* Opens every listener for every worker (SO_REUSEPORT), starts cfg->workers
 * pinned threads and runs handlers->init on each. tls[i] (from tls_ctx_new)
 * becomes worker i's context for accepted and outbound TLS connections;
 * takes ownership of tls[0..cfg->workers) whatever the outcome. tls NULL: no
 * TLS (tls: listeners close what they accept, outbound TLS fails). cfg and
 * handlers are borrowed and must outlive the runtime. Returns 0, or -errno
 * after logging the cause and undoing everything. */
int worker_runtime_start_tls(const struct config *cfg, struct tls_ctx **tls,
                             const struct worker_handlers *handlers);
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
/* After worker_runtime_drain(): true while any worker has work in flight
 * (handlers->busy), queued stream bytes or ring messages. */
bool worker_runtime_busy(void);
/* Stops and joins the workers (their connections close, on_conn_closed and
 * cleanup run on each), then frees everything. */
void worker_runtime_stop(void);

/* For the management thread: the running workers, whose `stats` may be read
 * with relaxed atomic loads (and id, nworkers, cfg read) until
 * worker_runtime_stop(). worker_get returns NULL when i is out of range. */
unsigned worker_count(void);
const struct worker *worker_get(unsigned i);

#endif
