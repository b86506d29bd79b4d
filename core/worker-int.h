/* The worker runtime's private structures and the helpers its files share;
 * included by core/worker.c, conn.c, stream.c, conn_tls.c, listener.c,
 * udp.c and wmsg.c only. */
#ifndef SIPEDGE_WORKER_INT_H
#define SIPEDGE_WORKER_INT_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/framer.h"
#include "core/iplimit.h"
#include "core/ring.h"
#include "core/worker.h"
#include "tls/tls.h"

#define UDP_BATCH 32 /* datagrams per recvmmsg */

/* epoll data: the top two bits say what the rest is. A conn_ref never has
 * them set (worker index < 64). */
#define TAG_SHIFT       62
#define TAG_CONN        0ull
#define TAG_LISTENER    1ull
#define TAG_EVENTFD     2ull
#define TAG_WATCH       3ull /* worker_watch_fd(): watch index << 32 | fd */
#define TAG_MASK        ((1ull << TAG_SHIFT) - 1)
#define LISTENER_TAG(i) ((TAG_LISTENER << TAG_SHIFT) | (i))
#define PRIVATE_BIT     (1u << 16) /* in a listener tag: the worker's private UDP socket */

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

#ifdef SIPEDGE_DEBUG
#define ASSERT_OWNER(w) assert(worker_self() == (w))
#else
#define ASSERT_OWNER(w) ((void)(w))
#endif

/* netaddr_str() as an expression for log arguments, so a line that is not
 * written formats nothing. buf: a char[NETADDR_STRLEN]. */
#define ADDR_STR(a, buf) (netaddr_str((a), (buf), sizeof(buf)) ? (buf) : "?")

/* TLS connections go CONNECTING (outbound) -> HANDSHAKE -> OPEN; no byte is
 * read as SIP nor written as plaintext before OPEN. */
enum conn_state { CONN_CONNECTING = 1, CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSED };

/* A TCP or TLS connection. Owner-only (every field): one worker creates,
 * uses and frees it; freed after the loop turn in which it closed, so
 * pointers held up the stack stay valid. */
struct conn {
    conn_ref ref;
    int fd;
    uint8_t proto; /* SIP_TRANSPORT_TCP or _TLS */
    uint8_t state; /* enum conn_state */
    bool inbound;  /* accepted (outbound ones count against --max-connections too) */
    bool want_out; /* EPOLLOUT registered */
    /* TLS: SSL_read needs the socket writable (a post-handshake reply), or
     * SSL_write needs it readable; retried on that event */
    bool tls_rd_wants_write, tls_wr_wants_read;
    uint16_t listener;
    struct netaddr peer;
    struct conn *hnext; /* address-hash chain, then the zombie list */
    /* receive side: bytes of a message not yet complete */
    struct framer framer;
    char *rbuf;
    size_t rlen, rcap;
    /* send side: bytes the socket did not take yet; while there are some,
     * c is on the worker's queued list (its total has a budget) */
    char *wq;
    size_t wq_off, wq_len, wq_cap;
    struct conn *qnext, **qpprev;
    /* One timer for every deadline: --connect-timeout while connecting,
     * --tls-handshake-timeout for the whole handshake, then (open) the
     * earlier of the message deadline and the idle deadline. It fires at
     * timer_at; an idle deadline that moved later meanwhile re-arms it
     * there (conn__arm), so traffic never touches the wheel. */
    struct timer timer;
    uint64_t timer_at;
    /* open: the message in progress, or the first one of an accepted
     * connection, must complete by then (0: none pending) */
    uint64_t msg_deadline;
    /* open: idle from then on unless more traffic or a hold comes:
     * advanced by each SIP message in or out (conn__touch) */
    uint64_t active_until;
    /* accepted: its entry in the per-IP count (iplimit), < 0 none */
    int32_t ip_slot;
    /* TLS: the connection's SSL (holds its own SSL_CTX reference, so a
     * reload never touches it); NULL for TCP, freed with the conn */
    SSL *tls;
    /* outbound TLS: the identity it was opened for and verified (owned
     * copy); NULL when opened without a name or accepted */
    char *tls_name;
    /* the layer above holds the connection open until then (a phone's
     * registration): --idle-timeout does not close it before
     * (worker_conn_hold); 0 = not held */
    uint64_t hold_until_ms;
};

struct conn_slot {
    struct conn *c; /* NULL when free */
    uint32_t gen;   /* of the current or next connection in this slot */
    uint32_t next_free;
};
#define SLOT_NONE UINT32_MAX

/* One listener of one worker. Owner-only once the thread runs. */
struct wlistener {
    int fd; /* -1 when not open (closed by the drain) */
    uint8_t proto;
    struct timer resume; /* ends an accept pause after running out of descriptors */
};

/* A descriptor watched for someone else (worker_watch_fd). Owner-only. */
struct fd_watch {
    int fd; /* -1: free entry */
    worker_fd_cb cb;
    void *arg;
};

struct runtime;

/* The runtime's part of a worker, created by the control thread. */
struct worker_rt {
    /* read-only after start: written by the control thread before the
     * worker's thread exists */
    struct runtime *run;
    const struct worker_handlers *h; /* the runtime's, borrowed */
    pthread_t thread;                /* joined by the control thread */
    bool thread_started;
    int cpu; /* to pin to, -1: none */
    int epfd, evfd;
    /* UDP listeners: this worker's private socket on the listener's address
     * (-1: none) and its port. Requests the worker forwards leave from it
     * and name it in Via, so their responses come back to this worker
     * instead of crossing a ring. Other workers read them
     * (worker_is_private_port). */
    int priv_fd[CONFIG_MAX_LISTEN];
    uint16_t priv_port[CONFIG_MAX_LISTEN];
    /* start-up: written by the thread before it reports ready, then read
     * by the control thread */
    int init_rc;
    bool h_ready; /* handlers->init succeeded: cleanup is due */

    /* owner-only from here to the atomics */
    bool drained;                            /* stream listeners closed */
    unsigned ring_next;                      /* producer whose ring is drained first next turn */
    struct tls_ctx *tls;                     /* for new handshakes; NULL: no TLS */
    struct wlistener lis[CONFIG_MAX_LISTEN]; /* opened before start */

    /* descriptors watched for others (worker_watch_fd) */
    struct fd_watch *watches;
    unsigned nwatches;

    /* connections (core/conn.c) */
    struct conn_slot *slots;
    uint32_t nslots, slot_cap, slot_limit, free_head;
    struct conn **buckets;
    uint64_t bucket_bits;
    struct conn *zombies;
    unsigned nqueued;      /* connections with bytes waiting to be written */
    struct conn *queued;   /* those connections (their qnext list) */
    uint64_t queued_bytes; /* their bytes, against --max-queued-total */

    /* receive buffers */
    struct sipmsg_limits lim;
    char *sbuf; /* stream reads */
    size_t sbuf_cap;
    char *ubuf; /* UDP_BATCH datagrams of ubuf_cap bytes */
    size_t ubuf_cap;
    struct mmsghdr mmsg[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct netaddr from[UDP_BATCH];
    /* own receive overflow (worker_rx_overflow_ms): drops summed over this
     * worker's UDP sockets at the last look, when it was, when it last saw
     * an overflow */
    uint64_t rx_drops, rx_look_ms, rx_overflow_ms;

    /* written by other threads */
    _Alignas(64) _Atomic bool sleeping; /* the owner may be in epoll_wait */
    _Atomic bool busy;                  /* drain: work in flight as of the last turn */
    /* reload: contexts published by the control thread, swapped in by the
     * owner (who then owns them); whoever takes a pointer out frees it */
    _Atomic(struct tls_ctx *) tls_next;
};

/* What all workers share: read-only after start, plus the atomics. Created
 * and freed by the control thread (core/worker.c). */
struct runtime {
    const struct config *cfg;
    const struct worker_handlers *h;
    unsigned n;
    struct worker *w[WORKER_MAX];
    struct ring **rings; /* rings[from * n + to], NULL on the diagonal */
    /* start-up handshake only: workers report in, then wait for `go` */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ready;
    bool go;
    _Atomic bool stop, drain;
    _Atomic unsigned nconns; /* stream connections open (both ways), all workers */
    struct iplimit *per_ip;  /* accepted connections per source address */
};

/* Every function below runs on the owning worker's thread unless it says
 * otherwise; w is that worker. */

/* core/worker.c */
/* epoll_ctl on w's set; 0 or -errno. */
int worker__epoll_set(struct worker *w, int op, int fd, uint32_t events, uint64_t data);

/* core/conn.c: the connection table and each connection's life */
/* Sizes the table for cfg (before the thread starts). 0 or -ENOMEM. */
int conn__table_init(struct worker_rt *rt, const struct config *cfg);
/* Frees the table's arrays (after every connection was reaped). */
void conn__table_free(struct worker_rt *rt);
/* The live connection ref names, or NULL (stale, closed, another worker's). */
struct conn *conn__get(struct worker *w, conn_ref ref);
/* The connection to reuse towards dst: for TLS one opened for identity
 * tls_name (NULL and "" alike), for TCP any. NULL when there is none. */
struct conn *conn__find(struct worker *w, uint8_t proto, const struct netaddr *dst,
                        const char *tls_name);
/* Takes ownership of fd: registers it and returns the new connection, or
 * closes fd and returns NULL. */
struct conn *conn__new(struct worker *w, int fd, uint8_t proto, unsigned listener,
                       const struct netaddr *peer, bool inbound, enum conn_state state);
/* Closes the socket and makes every ref to c stale now; c itself lives on
 * the zombie list until conn__reap(). No-op when already closed. Bytes
 * still queued count as a drop. */
void conn__close(struct worker *w, struct conn *c, const char *why);
/* conn__close() because limit `which` bit: counted as that limit (not as
 * a drop) and logged (rate-limited) with why. */
void conn__close_limit(struct worker *w, struct conn *c, enum stat_limit which, const char *why);
/* Open connection: SIP traffic (in or out) keeps it from idling out for
 * window_ms from now. Never moves the deadline earlier; touches no timer. */
static inline void conn__touch(struct worker *w, struct conn *c, uint64_t window_ms)
{
    if (w->now_ms + window_ms > c->active_until) c->active_until = w->now_ms + window_ms;
}
/* How long the message buf[0..len) keeps its connection from idling:
 * --idle-timeout, or while a call may be ringing (an INVITE or a
 * provisional response) at least Timer C and its CANCEL's round. */
uint64_t conn__window(const struct worker *w, const char *buf, size_t len);
/* Open connection: arms its timer for the earlier of its message and idle
 * deadlines, unless it is armed earlier already. */
void conn__arm(struct worker *w, struct conn *c);
/* Arms c's timer ms from now for the deadline of its state (connecting,
 * handshaking). */
void conn__arm_state(struct worker *w, struct conn *c, unsigned ms);
/* Takes one of the --max-connections slots shared by all workers (for an
 * accept or a connect): false, counted as LIMIT_CONNECTIONS, when none is
 * left. conn__close() gives it back; conn__unreserve() when no connection
 * came of it. */
bool conn__reserve(struct worker *w);
void conn__unreserve(struct worker *w);
/* Runs on_conn_closed for the closed connections and frees them. From the
 * loop only, never inside a handler, so the handler is not re-entered. */
void conn__reap(struct worker *w);
/* Closes and reaps every connection (shutdown). */
void conn__close_all(struct worker *w);
/* Registers or drops EPOLLOUT for c. */
void conn__set_want_out(struct worker *w, struct conn *c, bool on);
/* epoll reported events on connection ref. */
void conn__event(struct worker *w, conn_ref ref, uint32_t events);
/* Opens a non-blocking connection to dst; bytes written before it completes
 * (and, for TLS, before its handshake to identity tls_name completes) wait
 * in its queue. 0 with *out set, or -errno. */
int conn__connect(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                  const char *tls_name, struct conn **out);

/* core/stream.c: bytes in and out of an open connection */
/* Sends or queues buf on c, keeping whole writes in order; until a TLS
 * handshake completes everything queues. 0 or -errno (c then closed). */
int stream__write(struct worker *w, struct conn *c, const char *buf, size_t len);
/* Writes queued bytes until the socket is full. 0 or -errno (c then closed). */
int stream__flush(struct worker *w, struct conn *c);
/* Reads, frames and delivers what c has (bounded per event). */
void stream__read(struct worker *w, struct conn *c);
/* Sets EPOLLOUT from what c waits for (queued bytes, connect, TLS). */
void stream__update_want_out(struct worker *w, struct conn *c);
/* Forgets c's queued bytes (c is closing): off the queued list and out of
 * the worker's total. */
void stream__unqueue(struct worker *w, struct conn *c);

/* core/conn_tls.c: BoringSSL handshakes on connections */
/* Accepted TLS connection: creates its server session from the worker's
 * context and arms the handshake timeout. 0, or -1 with c closed. */
int conn_tls__start_server(struct worker *w, struct conn *c);
/* Outbound: TCP is up; starts the client handshake (c may close). */
void conn_tls__start_client(struct worker *w, struct conn *c);
/* Drives the handshake as far as the socket allows (c may close). */
void conn_tls__step(struct worker *w, struct conn *c);
/* Counts, logs (rate-limited) and closes c. */
void conn_tls__failed(struct worker *w, struct conn *c, enum tls_fail why);
/* Takes the contexts the control thread published, if any. */
void conn_tls__swap(struct worker *w);

/* core/listener.c: listening sockets and accept */
/* Marks every listener and private socket not open (before anything). */
void listener__init(struct worker_rt *rt);
/* Opens w's listeners and private UDP ports (control thread, before the
 * worker's thread starts; worker 0 first checks each port is free).
 * Logs the cause; 0 or -errno. */
int listener__open_all(struct worker *w, unsigned nworkers);
/* Closes every socket listener__open_all() opened. */
void listener__close_all(struct worker_rt *rt);
/* Adds the listeners and private ports to w's epoll set. 0 or -errno. */
int listener__register(struct worker *w);
/* Accepts what listener li has queued (bounded per event). */
void listener__accept(struct worker *w, unsigned li);
/* Drain: closes the TCP and TLS listeners. */
void listener__close_streams(struct worker *w);

/* core/listener.c: asks the kernel to queue ICMP errors for datagrams
 * sent on UDP socket fd (IP_RECVERR / IPV6_RECVERR), so an unreachable
 * SIP Server shows at once. 0 or -1 (errno set). */
int listener__recverr(int fd, int family);

/* core/udp.c */
/* Reads datagrams of UDP listener li from fd (its shared or private socket)
 * and hands them to on_message; with EPOLLERR in events, first the queued
 * ICMP errors, to on_unreachable. */
void udp__read(struct worker *w, unsigned li, int fd, uint32_t events);
/* worker_send() for UDP. 0 or -errno. */
int udp__send(struct worker *w, int listener, const struct netaddr *dst, const char *buf,
              size_t len);

/* core/wmsg.c: rings between workers */
/* Wakes the owner of eventfd fd. Any thread. */
void wmsg__signal(int fd);
/* Copies buf into a WMSG_SEND for the worker owning conn. 0 or -errno. */
int wmsg__send_via_owner(struct worker *w, conn_ref conn, const char *buf, size_t len);
/* Handles up to a budget of ring messages; true when some may be left. */
bool wmsg__drain(struct worker *w);
/* True when no ring towards w holds a message. */
bool wmsg__rings_empty(const struct worker *w);
/* Creates the n * (n - 1) rings (control thread). 0 or -ENOMEM. */
int wmsg__rings_new(struct runtime *run);
/* Frees the rings and the messages left in them (control thread, after
 * the workers stopped). */
void wmsg__rings_free(struct runtime *run);

#endif
