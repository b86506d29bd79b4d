/* Worker runtime: pinned epoll loops owning UDP/TCP/TLS sockets, connections, rings and timers. */
#include "core/worker.h"

#include <assert.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/framer.h"
#include "core/log.h"
#include "core/ring.h"
#include "core/sipuri.h"
#include "dns/dns.h"
#include "tls/tls.h"

#define UDP_BATCH            32 /* datagrams per recvmmsg */
#define UDP_BATCHES_PER_EVT  4  /* then let other sockets have a turn */
#define UDP_MAX_DATAGRAM     65535
#define ACCEPTS_PER_EVT      64
#define READS_PER_EVT        1
#define TLS_RECORDS_PER_EVT  4 /* BoringSSL reads one record at a time */
#define EPOLL_BATCH          64
#define RING_BATCH           64
#define RING_BUDGET          4096       /* ring messages handled per loop turn */
#define STREAM_SLACK         4096       /* read room beyond --max-message-size */
#define CONN_WQ_MAX          (1u << 20) /* queued bytes per connection */
#define CONNECT_TIMEOUT_MS   3000
#define MSG_TIMEOUT_MS       30000 /* a stream message must complete within this */
#define ACCEPT_PAUSE_MS      100   /* after EMFILE and friends */
#define LOOP_MAX_WAIT_MS     1000
#define DRAIN_POLL_MS        50
#define TLS_RELOAD_WAIT_MS   2000 /* for every worker to take reloaded material */
#define SLOTS_INITIAL        1024u
#define SLOTS_OUTBOUND_EXTRA 4096u /* per worker, beyond --max-connections */

/* epoll data: the top two bits say what the rest is. A conn_ref never has
 * them set (worker index < 64). */
#define TAG_SHIFT       62
#define TAG_CONN        0ull
#define TAG_LISTENER    1ull
#define TAG_EVENTFD     2ull
#define TAG_DNS         3ull /* a c-ares socket of dns/; the rest is the fd */
#define TAG_MASK        ((1ull << TAG_SHIFT) - 1)
#define LISTENER_TAG(i) ((TAG_LISTENER << TAG_SHIFT) | (i))
#define PRIVATE_BIT     (1u << 16) /* in a listener tag: the worker's private UDP socket */

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

#ifdef SIPEDGE_DEBUG
#define ASSERT_OWNER(w) assert(worker_self() == (w))
#else
#define ASSERT_OWNER(w) ((void)(w))
#endif

/* TLS connections go CONNECTING (outbound) -> HANDSHAKE -> OPEN; no byte is
 * read as SIP nor written as plaintext before OPEN. */
enum conn_state { CONN_CONNECTING = 1, CONN_HANDSHAKE, CONN_OPEN, CONN_CLOSED };

/* A TCP or TLS connection. Owned by one worker; freed after the loop
 * turn in which it closed, so pointers held up the stack stay valid. */
struct conn {
    conn_ref ref;
    int fd;
    uint8_t proto; /* SIP_TRANSPORT_TCP or _TLS */
    uint8_t state; /* enum conn_state */
    bool inbound;  /* accepted: counts against --max-connections */
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
    /* send side: bytes the socket did not take yet */
    char *wq;
    size_t wq_off, wq_len, wq_cap;
    /* connect timeout while connecting, the handshake timeout while
     * handshaking, then the message timeout */
    struct timer timer;
    /* TLS: the connection's SSL (holds its own SSL_CTX reference, so a
     * reload never touches it); NULL for TCP, freed with the conn */
    SSL *tls;
    /* outbound TLS: the identity it was opened for and verified (owned
     * copy); NULL when opened without a name or accepted */
    char *tls_name;
};

struct conn_slot {
    struct conn *c; /* NULL when free */
    uint32_t gen;   /* of the current or next connection in this slot */
    uint32_t next_free;
};
#define SLOT_NONE UINT32_MAX

struct wlistener {
    int fd; /* -1 when not open (closed by the drain) */
    uint8_t proto;
    struct timer resume; /* ends an accept pause after running out of descriptors */
};

struct runtime;

/* Owner-only, except the atomics at the end. */
struct worker_rt {
    struct runtime *run;
    pthread_t thread;
    bool thread_started;
    int cpu; /* to pin to, -1: none */
    int epfd, evfd;
    int init_rc;
    bool proxy_ready;
    bool drained; /* stream listeners closed */
    struct wlistener lis[CONFIG_MAX_LISTEN];
    /* UDP listeners: this worker's private socket on the listener's address
     * (-1: none) and its port, written before the threads start. Requests
     * the worker forwards leave from it and name it in Via, so their
     * responses come back to this worker instead of crossing a ring. */
    int priv_fd[CONFIG_MAX_LISTEN];
    uint16_t priv_port[CONFIG_MAX_LISTEN];
    unsigned ring_next;  /* producer whose ring is drained first next turn */
    struct tls_ctx *tls; /* for new handshakes; NULL: no TLS */

    /* connections */
    struct conn_slot *slots;
    uint32_t nslots, slot_cap, slot_limit, free_head;
    struct conn **buckets;
    uint64_t bucket_bits, hash_seed;
    struct conn *zombies;
    unsigned nqueued; /* connections with bytes waiting to be written */

    /* receive buffers */
    struct sipmsg_limits lim;
    char *sbuf; /* stream reads */
    size_t sbuf_cap;
    char *ubuf; /* UDP_BATCH datagrams of ubuf_cap bytes */
    size_t ubuf_cap;
    struct mmsghdr mmsg[UDP_BATCH];
    struct iovec iov[UDP_BATCH];
    struct netaddr from[UDP_BATCH];

    /* written by other threads */
    _Alignas(64) _Atomic bool sleeping; /* the owner may be in epoll_wait */
    _Atomic bool busy;                  /* drain: work in flight as of the last turn */
    /* reload: contexts published by the control thread, swapped in by the
     * owner (who then owns them); whoever takes a pointer out frees it */
    _Atomic(struct tls_ctx *) tls_next;
};

/* What all workers share: read-only after start, plus the atomics. */
struct runtime {
    const struct config *cfg;
    unsigned n;
    struct worker *w[WORKER_MAX];
    struct ring **rings; /* rings[from * n + to], NULL on the diagonal */
    /* start-up handshake only: workers report in, then wait for `go` */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ready;
    bool go;
    _Atomic bool stop, drain;
    _Atomic unsigned nconns; /* accepted connections open, all workers */
};

/* Set by worker_runtime_start before the threads start, cleared by
 * worker_runtime_stop after they are joined. */
static struct runtime *runtime;
static _Thread_local struct worker *self;

struct worker *worker_self(void)
{
    return self;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *addr_s(const struct netaddr *a, char buf[NETADDR_STRLEN])
{
    if (netaddr_str(a, buf, NETADDR_STRLEN) == 0) memcpy(buf, "?", 2);
    return buf;
}

static const char *proto_s(uint8_t proto)
{
    switch (proto) {
    case SIP_TRANSPORT_UDP:
        return "udp";
    case SIP_TRANSPORT_TCP:
        return "tcp";
    case SIP_TRANSPORT_TLS:
        return "tls";
    default:
        return "?";
    }
}

static struct ring *ring_of(const struct runtime *run, unsigned from, unsigned to)
{
    return run->rings[from * run->n + to];
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    /* Fails only when the counter is saturated, which still wakes the reader. */
    if (write(fd, &one, sizeof(one)) < 0) return;
}

/* ---- connection table ------------------------------------------------ */

static struct conn *conn_get(struct worker *w, conn_ref ref)
{
    struct worker_rt *rt = w->rt;
    uint32_t slot = CONN_REF_SLOT(ref);

    if (ref == CONN_REF_NONE || CONN_REF_WORKER(ref) != w->id || slot >= rt->nslots) return NULL;
    if (!rt->slots[slot].c || rt->slots[slot].gen != CONN_REF_GEN(ref)) return NULL;
    return rt->slots[slot].c;
}

static int slot_alloc(struct worker_rt *rt, uint32_t *out)
{
    uint32_t s;

    if (rt->free_head == SLOT_NONE && rt->nslots == rt->slot_cap) {
        uint32_t cap = rt->slot_cap ? rt->slot_cap * 2 : SLOTS_INITIAL;
        struct conn_slot *grown;
        if (cap > rt->slot_limit) cap = rt->slot_limit;
        if (cap <= rt->slot_cap) return -EMFILE;
        grown = realloc(rt->slots, cap * sizeof(*grown));
        if (!grown) return -ENOMEM;
        rt->slots = grown;
        rt->slot_cap = cap;
    }
    if (rt->free_head != SLOT_NONE) {
        s = rt->free_head;
        rt->free_head = rt->slots[s].next_free;
    } else {
        s = rt->nslots++;
        rt->slots[s].gen = 1;
    }
    rt->slots[s].c = NULL;
    *out = s;
    return 0;
}

/* Frees the slot; the generation moves on so refs to it go stale at once. */
static void slot_free(struct worker_rt *rt, uint32_t s)
{
    rt->slots[s].c = NULL;
    if (++rt->slots[s].gen == 0) rt->slots[s].gen = 1; /* a ref is never 0 */
    rt->slots[s].next_free = rt->free_head;
    rt->free_head = s;
}

/* Bucket of (proto, addr), keyed per worker so peers cannot aim at one chain. */
static struct conn **bucket_of(const struct worker_rt *rt, uint8_t proto, const struct netaddr *a)
{
    uint64_t h = (netaddr_hash(a) ^ rt->hash_seed ^ proto) * 0x9e3779b97f4a7c15ull;
    return &rt->buckets[h >> (64 - rt->bucket_bits)];
}

static struct conn *conn_find(struct worker *w, uint8_t proto, const struct netaddr *a)
{
    for (struct conn *c = *bucket_of(w->rt, proto, a); c; c = c->hnext)
        if (c->proto == proto && netaddr_eq(&c->peer, a)) return c;
    return NULL;
}

/* TLS identities: NULL and "" are the same (none); DNS names fold case. */
static bool tls_name_eq(const char *x, const char *y)
{
    bool nx = !x || !*x, ny = !y || !*y;
    if (nx || ny) return nx && ny;
    return strcasecmp(x, y) == 0;
}

/* A TLS connection to a that proves (or will prove) identity `name`. */
static struct conn *conn_find_tls(struct worker *w, const struct netaddr *a, const char *name)
{
    for (struct conn *c = *bucket_of(w->rt, SIP_TRANSPORT_TLS, a); c; c = c->hnext)
        if (c->proto == SIP_TRANSPORT_TLS && netaddr_eq(&c->peer, a) &&
            tls_name_eq(c->tls_name, name))
            return c;
    return NULL;
}

static void hash_remove(struct worker_rt *rt, struct conn *c)
{
    for (struct conn **pp = bucket_of(rt, c->proto, &c->peer); *pp; pp = &(*pp)->hnext) {
        if (*pp == c) {
            *pp = c->hnext;
            c->hnext = NULL;
            return;
        }
    }
}

static int epoll_set(struct worker *w, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(w->rt->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

static void set_want_out(struct worker *w, struct conn *c, bool on)
{
    if (c->want_out == on) return;
    if (epoll_set(w, EPOLL_CTL_MOD, c->fd, EPOLLIN | (on ? EPOLLOUT : 0), c->ref) == 0)
        c->want_out = on;
}

static void conn_timeout(struct worker *w, struct timer *t);

/* Takes ownership of fd: registers it and returns the new connection, or
 * closes fd and returns NULL. */
static struct conn *conn_new(struct worker *w, int fd, uint8_t proto, unsigned listener,
                             const struct netaddr *peer, bool inbound, enum conn_state state)
{
    struct worker_rt *rt = w->rt;
    struct conn *c;
    struct conn **b;
    uint32_t slot;
    int one = 1, err;

    err = slot_alloc(rt, &slot);
    if (err < 0) {
        LOG_RL(LOG_ERR, "no connection slot for %s: %s", proto_s(proto), strerror(-err));
        close(fd);
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        slot_free(rt, slot);
        close(fd);
        return NULL;
    }
    c->ref = CONN_REF_MAKE(w->id, slot, rt->slots[slot].gen);
    c->fd = fd;
    c->proto = proto;
    c->state = (uint8_t)state;
    c->inbound = inbound;
    c->listener = (uint16_t)listener;
    c->peer = *peer;
    c->want_out = state == CONN_CONNECTING;
    framer_init(&c->framer);
    timer_init(&c->timer, conn_timeout);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    err = epoll_set(w, EPOLL_CTL_ADD, fd, EPOLLIN | (c->want_out ? EPOLLOUT : 0), c->ref);
    if (err < 0) {
        LOG_RL(LOG_ERR, "epoll_ctl: %s", strerror(-err));
        free(c);
        slot_free(rt, slot);
        close(fd);
        return NULL;
    }
    rt->slots[slot].c = c;
    b = bucket_of(rt, proto, peer);
    c->hnext = *b;
    *b = c;
    STAT_INC(w, conns_open);
    return c;
}

/* Closes the socket and makes every ref to c stale now; c itself lives on
 * the zombie list until reap_conns() tells the proxy and frees it. */
static void conn_close(struct worker *w, struct conn *c, const char *why)
{
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CLOSED) return;
    LOG_D("%s %s: closed (%s)", proto_s(c->proto), addr_s(&c->peer, a), why);
    timer_cancel(&c->timer);
    /* close_notify, best effort; a failed session refuses it by itself */
    if (c->tls && c->state == CONN_OPEN) tls_conn_shutdown(c->tls);
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = CONN_CLOSED;
    hash_remove(rt, c);
    slot_free(rt, CONN_REF_SLOT(c->ref));
    if (c->wq_len) {
        rt->nqueued--;
        STAT_INC(w, dropped);
    }
    if (c->inbound) atomic_fetch_sub_explicit(&rt->run->nconns, 1, memory_order_relaxed);
    STAT_ADD(w, conns_open, (uint64_t)-1);
    STAT_INC(w, conns_closed);
    c->hnext = rt->zombies;
    rt->zombies = c;
}

/* Tells the proxy about closed connections and frees them. Runs from the
 * loop only, never inside a proxy callback, so the proxy is not re-entered. */
static void reap_conns(struct worker *w)
{
    struct conn *c;

    while ((c = w->rt->zombies) != NULL) {
        w->rt->zombies = c->hnext;
        proxy_on_conn_closed(w, c->ref, &c->peer, c->proto);
        tls_conn_free(c->tls);
        free(c->tls_name);
        free(c->rbuf);
        free(c->wq);
        free(c);
    }
}

/* ---- stream output ---------------------------------------------------- */

static int wq_append(struct worker *w, struct conn *c, const char *buf, size_t len)
{
    size_t need = c->wq_len + len;

    if (c->wq_off + need > c->wq_cap) {
        if (c->wq_len) memmove(c->wq, c->wq + c->wq_off, c->wq_len);
        c->wq_off = 0;
        if (need > c->wq_cap) {
            size_t cap = c->wq_cap ? c->wq_cap * 2 : 4096;
            char *grown;
            while (cap < need)
                cap *= 2;
            if (cap > CONN_WQ_MAX) cap = CONN_WQ_MAX;
            grown = realloc(c->wq, cap);
            if (!grown) return -ENOMEM;
            c->wq = grown;
            c->wq_cap = cap;
        }
    }
    memcpy(c->wq + c->wq_off + c->wq_len, buf, len);
    if (c->wq_len == 0) w->rt->nqueued++;
    c->wq_len += len;
    return 0;
}

/* Hands bytes to the connection: send() for TCP, SSL_write() for TLS
 * (which needs the same bytes again after it could not take them). Returns
 * the bytes taken, 0 when the socket is full (or TLS waits to read), or
 * -errno when the connection is broken. */
static ssize_t conn_send_some(struct conn *c, const char *buf, size_t len)
{
    size_t n = 0;

    if (!c->tls) {
        for (;;) {
            ssize_t r = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (r >= 0) return r;
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -errno;
        }
    }
    c->tls_wr_wants_read = false;
    switch (tls_conn_write(c->tls, buf, len, &n)) {
    case TLS_OK:
        return (ssize_t)n;
    case TLS_WANT_WRITE:
        return 0;
    case TLS_WANT_READ:
        c->tls_wr_wants_read = true;
        return 0;
    case TLS_CLOSED:
        return -EPIPE;
    default:
        return -EPROTO;
    }
}

/* EPOLLOUT while bytes wait for a writable socket; not while TLS waits for
 * the peer's bytes instead (the socket is writable: it would spin). */
static void update_want_out(struct worker *w, struct conn *c)
{
    set_want_out(w, c,
                 c->tls_rd_wants_write || (c->wq_len && !c->tls_wr_wants_read) ||
                     c->state == CONN_CONNECTING);
}

/* Writes queued bytes until the socket is full. Returns 0 or -errno (closed). */
static int conn_flush(struct worker *w, struct conn *c)
{
    if (c->state != CONN_OPEN) return 0;
    while (c->wq_len) {
        ssize_t n = conn_send_some(c, c->wq + c->wq_off, c->wq_len);
        if (n < 0) {
            conn_close(w, c, strerror((int)-n));
            return (int)n;
        }
        if (n == 0) break;
        STAT_ADD(w, tx_bytes, (uint64_t)n);
        c->wq_off += (size_t)n;
        c->wq_len -= (size_t)n;
        if (c->wq_len == 0) w->rt->nqueued--;
    }
    if (c->wq_len == 0 && c->wq) {
        free(c->wq);
        c->wq = NULL;
        c->wq_off = c->wq_cap = 0;
    }
    update_want_out(w, c);
    return 0;
}

/* Sends or queues buf on c, keeping whole writes in order. Until a TLS
 * handshake completes everything queues. Returns 0 or -errno; on an error
 * the connection is closed. */
static int conn_write(struct worker *w, struct conn *c, const char *buf, size_t len)
{
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CLOSED) return -ENOTCONN;
    if (c->state == CONN_OPEN && c->wq_len == 0) {
        while (len) {
            ssize_t n = conn_send_some(c, buf, len);
            if (n < 0) {
                conn_close(w, c, strerror((int)-n));
                return (int)n;
            }
            if (n == 0) break;
            STAT_ADD(w, tx_bytes, (uint64_t)n);
            buf += n;
            len -= (size_t)n;
        }
        if (len == 0) return 0;
    }
    if (len > CONN_WQ_MAX - c->wq_len) {
        LOG_RL(LOG_WARN, "%s %s: peer not reading, %zu bytes queued: closing", proto_s(c->proto),
               addr_s(&c->peer, a), c->wq_len);
        conn_close(w, c, "send queue full");
        return -ENOBUFS;
    }
    if (wq_append(w, c, buf, len) < 0) {
        conn_close(w, c, "out of memory");
        return -ENOMEM;
    }
    if (c->state == CONN_OPEN) update_want_out(w, c);
    return 0;
}

/* ---- stream input ----------------------------------------------------- */

/* Frames and delivers the messages in buf[0..len). Returns the bytes used,
 * or -1 when the connection closed meanwhile. *delivered counts results. */
static ssize_t conn_frame(struct worker *w, struct conn *c, char *buf, size_t len,
                          unsigned *delivered)
{
    char a[NETADDR_STRLEN];
    size_t off = 0;

    while (off < len) {
        size_t mlen = 0;
        enum framer_result r = framer_feed(&c->framer, buf + off, len - off, &w->rt->lim, &mlen);

        if (r == FRAMER_INCOMPLETE) break;
        if (r != FRAMER_INVALID && (mlen == 0 || mlen > len - off))
            r = FRAMER_INVALID; /* a framer result we cannot act on */
        switch (r) {
        case FRAMER_MESSAGE: {
            struct rx_info rx = {
                .proto = c->proto, .listener = c->listener, .conn = c->ref, .src = c->peer};
            STAT_INC(w, rx_msgs);
            proxy_on_message(w, &rx, buf + off, mlen);
            break;
        }
        case FRAMER_KEEPALIVE:
            STAT_INC(w, keepalives);
            conn_write(w, c, "\r\n", 2);
            break;
        case FRAMER_PONG:
            break;
        default:
            STAT_INC(w, bad_msgs);
            LOG_RL(LOG_INFO, "%s %s: unframeable stream (%s): closing", proto_s(c->proto),
                   addr_s(&c->peer, a), sipmsg_err_str(c->framer.err));
            conn_close(w, c, "bad framing");
            return -1;
        }
        if (c->state == CONN_CLOSED) return -1;
        off += mlen;
        (*delivered)++;
    }
    return (ssize_t)off;
}

/* Makes room for at least one more byte in c->rbuf, up to the stream limit. */
static int rbuf_grow(struct worker *w, struct conn *c, size_t need)
{
    size_t limit = w->rt->sbuf_cap, cap = c->rcap ? c->rcap : 2048;
    char *grown;

    while (cap < need)
        cap *= 2;
    if (cap > limit) cap = limit;
    if (cap < need) return -EMSGSIZE;
    if (cap == c->rcap) return 0;
    grown = realloc(c->rbuf, cap);
    if (!grown) return -ENOMEM;
    c->rbuf = grown;
    c->rcap = cap;
    return 0;
}

/* Reads into buf: recv() for TCP, SSL_read() for TLS. Returns the bytes
 * read, 0 at the end of the stream, -EAGAIN when there is nothing now, or
 * another -errno when the connection is broken. */
static ssize_t conn_recv(struct worker *w, struct conn *c, char *buf, size_t room)
{
    size_t n = 0;

    if (!c->tls) {
        ssize_t r = recv(c->fd, buf, room, MSG_DONTWAIT);
        if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return r;
    }
    if (c->tls_rd_wants_write) {
        c->tls_rd_wants_write = false;
        update_want_out(w, c);
    }
    switch (tls_conn_read(c->tls, buf, room, &n)) {
    case TLS_OK:
        return (ssize_t)n;
    case TLS_WANT_READ:
        return -EAGAIN;
    case TLS_WANT_WRITE: /* e.g. answering a KeyUpdate into a full socket */
        c->tls_rd_wants_write = true;
        update_want_out(w, c);
        return -EAGAIN;
    case TLS_CLOSED:
        return 0;
    default:
        return -EPROTO;
    }
}

/* Reads what the connection has (bounded per event; epoll is
 * level-triggered, and BoringSSL reads no further than the record it
 * decrypts, so what it has not read stays signalled by the socket).
 * With nothing pending, reads go to the worker's buffer and only the tail of
 * an incomplete message is copied into the connection's own buffer, which
 * is freed as soon as it is empty again: an idle connection holds none. */
static void conn_read(struct worker *w, struct conn *c)
{
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];
    int budget = c->tls ? TLS_RECORDS_PER_EVT : READS_PER_EVT;

    while (budget > 0) {
        bool own = c->rlen > 0;
        unsigned delivered = 0;
        size_t room;
        ssize_t n, used;
        char *buf;

        if (own) {
            int err = c->rlen == c->rcap ? rbuf_grow(w, c, c->rlen + 1) : 0;
            if (err == -EMSGSIZE) { /* the framer should have said so first */
                STAT_INC(w, bad_msgs);
                LOG_RL(LOG_INFO, "%s %s: message above the size limit: closing", proto_s(c->proto),
                       addr_s(&c->peer, a));
                conn_close(w, c, "message too large");
                return;
            }
            if (err < 0) {
                STAT_INC(w, dropped);
                conn_close(w, c, "out of memory");
                return;
            }
            buf = c->rbuf;
            room = c->rcap - c->rlen;
            n = conn_recv(w, c, buf + c->rlen, room);
        } else {
            buf = rt->sbuf;
            room = rt->sbuf_cap;
            n = conn_recv(w, c, buf, room);
        }
        if (n == 0) {
            conn_close(w, c, "closed by peer");
            return;
        }
        if (n < 0) {
            if (n == -EAGAIN) return;
            if (n == -EINTR) continue;
            conn_close(w, c, strerror((int)-n));
            return;
        }
        STAT_ADD(w, rx_bytes, (uint64_t)n);

        if (own) {
            c->rlen += (size_t)n;
            used = conn_frame(w, c, c->rbuf, c->rlen, &delivered);
            if (used < 0) return;
            c->rlen -= (size_t)used;
            if (c->rlen == 0) {
                free(c->rbuf);
                c->rbuf = NULL;
                c->rcap = 0;
            } else if (used > 0) {
                memmove(c->rbuf, c->rbuf + used, c->rlen);
            }
        } else {
            used = conn_frame(w, c, buf, (size_t)n, &delivered);
            if (used < 0) return;
            if ((size_t)used < (size_t)n) {
                size_t rest = (size_t)n - (size_t)used;
                if (rbuf_grow(w, c, rest) < 0) {
                    conn_close(w, c, "out of memory");
                    return;
                }
                memcpy(c->rbuf, buf + used, rest);
                c->rlen = rest;
            }
        }

        /* The timer runs from the first byte of the message now pending. */
        if (c->rlen == 0 && delivered)
            timer_cancel(&c->timer);
        else if (c->rlen > 0 && (delivered || !timer_armed(&c->timer)))
            worker_timer_arm(w, &c->timer, MSG_TIMEOUT_MS);
        if (c->tls) {
            /* Decrypted bytes BoringSSL still holds are not signalled by
             * the socket: take them now (at most one record, no read). */
            if (!tls_conn_pending(c->tls)) budget--;
        } else {
            if ((size_t)n < room) return; /* the socket is most likely empty */
            budget--;
        }
    }
}

/* ---- TLS handshakes --------------------------------------------------- */

/* Counts, logs (rate-limited: the peer decides how often) and closes. */
static void tls_failed(struct worker *w, struct conn *c, enum tls_fail why)
{
    char a[NETADDR_STRLEN];

    STAT_INC(w, tls_fail[why]);
    if (c->inbound)
        LOG_RL(LOG_INFO, "tls handshake failed from %s: %s", addr_s(&c->peer, a),
               tls_fail_str(why));
    else
        LOG_RL(LOG_WARN, "tls handshake failed with %s (%s%s): %s", addr_s(&c->peer, a),
               c->tls_name ? "as " : "its IP address", c->tls_name ? c->tls_name : "",
               tls_fail_str(why));
    conn_close(w, c, "tls handshake failed");
}

static void tls_established(struct worker *w, struct conn *c)
{
    char a[NETADDR_STRLEN];
    bool resumed = tls_conn_resumed(c->tls);

    c->state = CONN_OPEN;
    timer_cancel(&c->timer);
    STAT_INC(w, tls_handshakes);
    if (resumed) STAT_INC(w, tls_resumed);
    LOG_D("tls %s: %s established%s", addr_s(&c->peer, a), tls_conn_version(c->tls),
          resumed ? " (resumed)" : "");
    /* An accepted connection must deliver its first message in time too. */
    if (c->inbound) worker_timer_arm(w, &c->timer, MSG_TIMEOUT_MS);
    if (c->wq_len)
        conn_flush(w, c);
    else
        update_want_out(w, c);
}

/* Drives the handshake as far as the socket allows. */
static void tls_step(struct worker *w, struct conn *c)
{
    enum tls_fail why = TLS_FAIL_NONE;

    switch (tls_conn_handshake(c->tls, &why)) {
    case TLS_OK:
        tls_established(w, c);
        break;
    case TLS_WANT_READ:
        set_want_out(w, c, false);
        break;
    case TLS_WANT_WRITE:
        set_want_out(w, c, true);
        break;
    default:
        tls_failed(w, c, why == TLS_FAIL_NONE ? TLS_FAIL_PROTOCOL : why);
        break;
    }
}

/* Outbound: the TCP connection is up; start the client handshake, verifying
 * the name the connection was opened for, or dst's IP address. */
static void tls_start_client(struct worker *w, struct conn *c)
{
    char ip[NETADDR_STRLEN], a[NETADDR_STRLEN];
    const char *name = c->tls_name;

    /* Never "": that would verify the chain only. */
    if (!name && netaddr_ip_str(&c->peer, ip, sizeof(ip)) > 0) name = ip;
    c->tls = name ? tls_conn_client(w->rt->tls, c->fd, name) : NULL;
    if (!c->tls) {
        STAT_INC(w, dropped);
        LOG_RL(LOG_ERR, "tls connection to %s: %s", addr_s(&c->peer, a),
               w->rt->tls ? "cannot create" : "no TLS context");
        conn_close(w, c, "tls setup failed");
        return;
    }
    c->state = CONN_HANDSHAKE;
    worker_timer_arm(w, &c->timer, w->cfg->tls_handshake_timeout_ms);
    tls_step(w, c);
}

/* Takes the contexts the control thread published, if any, for the
 * handshakes that start from now on. */
static void tls_swap(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    struct tls_ctx *next;

    if (!atomic_load_explicit(&rt->tls_next, memory_order_relaxed)) return;
    next = atomic_exchange_explicit(&rt->tls_next, NULL, memory_order_acquire);
    if (!next) return;
    tls_ctx_free(rt->tls);
    rt->tls = next;
    LOG_D("tls material generation %llu in use", (unsigned long long)next->generation);
}

/* ---- connection events ------------------------------------------------ */

static void connect_done(struct worker *w, struct conn *c)
{
    char a[NETADDR_STRLEN];
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY) return;
    if (err) {
        LOG_RL(LOG_WARN, "%s connect to %s: %s", proto_s(c->proto), addr_s(&c->peer, a),
               strerror(err));
        conn_close(w, c, "connect failed");
        return;
    }
    timer_cancel(&c->timer);
    if (c->proto == SIP_TRANSPORT_TLS) {
        tls_start_client(w, c);
        return;
    }
    c->state = CONN_OPEN;
    if (c->wq_len) {
        conn_flush(w, c);
    } else {
        set_want_out(w, c, false);
    }
}

static void conn_timeout(struct worker *w, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CONNECTING) {
        LOG_RL(LOG_WARN, "%s connect to %s: timed out", proto_s(c->proto), addr_s(&c->peer, a));
        conn_close(w, c, "connect timeout");
    } else if (c->state == CONN_HANDSHAKE) {
        tls_failed(w, c, TLS_FAIL_TIMEOUT);
    } else {
        STAT_INC(w, dropped);
        LOG_RL(LOG_INFO, "%s %s: no complete message within %d s: closing", proto_s(c->proto),
               addr_s(&c->peer, a), MSG_TIMEOUT_MS / 1000);
        conn_close(w, c, "message timeout");
    }
}

static void conn_event(struct worker *w, conn_ref ref, uint32_t events)
{
    struct conn *c = conn_get(w, ref);

    if (!c) return; /* closed earlier in this batch */
    if (c->state == CONN_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        connect_done(w, c);
        if (c->state != CONN_OPEN) return;
    } else if (c->state == CONN_HANDSHAKE) {
        /* Once established, what the peer sent after its Finished is still
         * in the socket and signalled again (level-triggered). */
        tls_step(w, c);
        return;
    } else if ((events & EPOLLOUT) || (c->tls_wr_wants_read && (events & EPOLLIN))) {
        if (conn_flush(w, c) < 0) return;
    }
    if (c->state != CONN_OPEN) return;
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
        (c->tls_rd_wants_write && (events & EPOLLOUT)))
        conn_read(w, c);
}

/* ---- listeners -------------------------------------------------------- */

static void listener_resume(struct worker *w, struct timer *t)
{
    struct wlistener *l = container_of(t, struct wlistener, resume);
    unsigned i = (unsigned)(l - w->rt->lis);

    if (l->fd >= 0 && epoll_set(w, EPOLL_CTL_MOD, l->fd, EPOLLIN, LISTENER_TAG(i)) < 0)
        worker_timer_arm(w, t, ACCEPT_PAUSE_MS);
}

static void accept_conns(struct worker *w, unsigned li)
{
    struct worker_rt *rt = w->rt;
    struct wlistener *l = &rt->lis[li];
    const struct config *cfg = w->cfg;
    char a[NETADDR_STRLEN];

    for (int k = 0; k < ACCEPTS_PER_EVT && l->fd >= 0; k++) {
        struct netaddr peer;
        socklen_t len = sizeof(peer.in6);
        int fd = accept4(l->fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;
            if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
            if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
                /* Level-triggered: the queue would wake us forever. Pause. */
                LOG_RL(LOG_ERR, "accept on %s:%s: %s: pausing accepts",
                       proto_s(cfg->listen[li].proto), addr_s(&cfg->listen[li].addr, a),
                       strerror(err));
                epoll_set(w, EPOLL_CTL_MOD, l->fd, 0, LISTENER_TAG(li));
                worker_timer_arm(w, &l->resume, ACCEPT_PAUSE_MS);
                return;
            }
            LOG_RL(LOG_WARN, "accept: %s", strerror(err));
            return;
        }
        peer.len = len;
        if (atomic_fetch_add_explicit(&rt->run->nconns, 1, memory_order_relaxed) >=
            cfg->max_connections) {
            atomic_fetch_sub_explicit(&rt->run->nconns, 1, memory_order_relaxed);
            close(fd);
            STAT_INC(w, conns_refused);
            LOG_RL(LOG_WARN, "refused %s connection from %s: --max-connections %u reached",
                   proto_s(l->proto), addr_s(&peer, a), cfg->max_connections);
            continue;
        }
        bool tls = l->proto == SIP_TRANSPORT_TLS;
        struct conn *c =
            conn_new(w, fd, l->proto, li, &peer, true, tls ? CONN_HANDSHAKE : CONN_OPEN);
        if (!c) {
            atomic_fetch_sub_explicit(&rt->run->nconns, 1, memory_order_relaxed);
            STAT_INC(w, dropped);
            continue;
        }
        STAT_INC(w, conns_accepted);
        if (!tls) {
            /* An accepted connection must deliver its first message in time too. */
            worker_timer_arm(w, &c->timer, MSG_TIMEOUT_MS);
            continue;
        }
        /* The server handshake runs from the socket's events; nothing is
         * read as SIP before it completes, and it must within the limit. */
        c->tls = tls_conn_server(rt->tls, fd);
        if (!c->tls) {
            STAT_INC(w, dropped);
            LOG_RL(LOG_ERR, "tls connection from %s: %s", addr_s(&peer, a),
                   rt->tls ? "cannot create" : "no TLS context");
            conn_close(w, c, "tls setup failed");
            continue;
        }
        worker_timer_arm(w, &c->timer, cfg->tls_handshake_timeout_ms);
    }
}

static bool only_crlf(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != '\r' && p[i] != '\n') return false;
    return true;
}

static void udp_read(struct worker *w, unsigned li, int fd)
{
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];

    for (int b = 0; b < UDP_BATCHES_PER_EVT; b++) {
        int n;
        for (unsigned i = 0; i < UDP_BATCH; i++) {
            rt->iov[i] = (struct iovec){rt->ubuf + i * rt->ubuf_cap, rt->ubuf_cap};
            rt->mmsg[i].msg_hdr = (struct msghdr){.msg_name = &rt->from[i].sa,
                                                  .msg_namelen = sizeof(rt->from[i].in6),
                                                  .msg_iov = &rt->iov[i],
                                                  .msg_iovlen = 1};
        }
        n = recvmmsg(fd, rt->mmsg, UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            int err = errno;
            if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)
                LOG_RL(LOG_WARN, "recvmmsg: %s", strerror(err));
            return;
        }
        for (int i = 0; i < n; i++) {
            struct msghdr *h = &rt->mmsg[i].msg_hdr;
            size_t len = rt->mmsg[i].msg_len;
            char *buf = h->msg_iov->iov_base;

            rt->from[i].len = h->msg_namelen;
            STAT_ADD(w, rx_bytes, len);
            if ((h->msg_flags & MSG_TRUNC) || len > w->cfg->max_message_size) {
                STAT_INC(w, dropped);
                LOG_RL(LOG_INFO, "udp %s: datagram above --max-message-size dropped",
                       addr_s(&rt->from[i], a));
                continue;
            }
            if (only_crlf(buf, len)) { /* keep-alive (or empty) datagram */
                STAT_INC(w, keepalives);
                continue;
            }
            struct rx_info rx = {.proto = SIP_TRANSPORT_UDP,
                                 .listener = (uint16_t)li,
                                 .conn = CONN_REF_NONE,
                                 .src = rt->from[i]};
            STAT_INC(w, rx_msgs);
            proxy_on_message(w, &rx, buf, len);
        }
        if (n < UDP_BATCH) return;
    }
}

/* ---- sending ---------------------------------------------------------- */

static int udp_send(struct worker *w, int listener, const struct netaddr *dst, const char *buf,
                    size_t len)
{
    const struct config *cfg = w->cfg;
    struct wlistener *l = NULL;
    char a[NETADDR_STRLEN];
    ssize_t n;
    int fd;

    if (listener >= 0) {
        bool priv = listener & WORKER_SEND_PRIVATE;
        listener &= ~WORKER_SEND_PRIVATE;
        if ((unsigned)listener >= cfg->nlisten || cfg->listen[listener].proto != SIP_TRANSPORT_UDP)
            return -EINVAL;
        if (cfg->listen[listener].addr.sa.sa_family != dst->sa.sa_family) return -EAFNOSUPPORT;
        l = &w->rt->lis[listener];
        if (priv && w->rt->priv_fd[listener] >= 0) {
            fd = w->rt->priv_fd[listener];
            goto send;
        }
    } else {
        for (unsigned i = 0; i < cfg->nlisten && !l; i++)
            if (cfg->listen[i].proto == SIP_TRANSPORT_UDP &&
                cfg->listen[i].addr.sa.sa_family == dst->sa.sa_family)
                l = &w->rt->lis[i];
        if (!l) return -EAFNOSUPPORT;
    }
    if (l->fd < 0) return -ENOTCONN;
    fd = l->fd;
send:
    n = sendto(fd, buf, len, MSG_DONTWAIT, &dst->sa, dst->len);
    if (n < 0) {
        int err = errno;
        STAT_INC(w, dropped);
        LOG_RL(LOG_WARN, "udp send to %s: %s", addr_s(dst, a), strerror(err));
        return -err;
    }
    STAT_INC(w, tx_msgs);
    STAT_ADD(w, tx_bytes, (uint64_t)n);
    return 0;
}

/* The listener whose address stands for an outbound connection in Via:
 * the one asked for if it fits, else the first of the same protocol and
 * family, else the first of the family. */
static int outbound_listener(const struct config *cfg, uint8_t proto, int want, int family)
{
    if (want >= 0 && (unsigned)want < cfg->nlisten && cfg->listen[want].proto == proto &&
        cfg->listen[want].addr.sa.sa_family == family)
        return want;
    for (unsigned i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].proto == proto && cfg->listen[i].addr.sa.sa_family == family)
            return (int)i;
    for (unsigned i = 0; i < cfg->nlisten; i++)
        if (cfg->listen[i].addr.sa.sa_family == family) return (int)i;
    return 0;
}

static bool addr_is_any(const struct netaddr *a)
{
    if (a->sa.sa_family == AF_INET) return a->in4.sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&a->in6.sin6_addr);
}

/* Opens a non-blocking connection to dst; bytes written before it completes
 * (and, for TLS, before its handshake to identity tls_name completes) wait
 * in its queue. */
static int conn_connect(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                        const char *tls_name, struct conn **out)
{
    const struct config *cfg = w->cfg;
    int li = outbound_listener(cfg, proto, listener, dst->sa.sa_family);
    const struct listen_cfg *lc = &cfg->listen[li];
    enum conn_state state = CONN_OPEN;
    struct conn *c;
    int fd, one = 1;

    if (proto == SIP_TRANSPORT_TLS && !w->rt->tls) return -EPROTONOSUPPORT;
    fd = socket(dst->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    /* Leave from the listener's address, so Via and the source agree. */
    if (lc->proto == proto && lc->addr.sa.sa_family == dst->sa.sa_family &&
        !addr_is_any(&lc->addr)) {
        struct netaddr src = lc->addr;
        if (src.sa.sa_family == AF_INET)
            src.in4.sin_port = 0;
        else
            src.in6.sin6_port = 0;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, &src.sa, src.len) < 0) {
            int err = errno;
            close(fd);
            return -err;
        }
    }
    if (connect(fd, &dst->sa, dst->len) < 0) {
        int err = errno;
        if (err != EINPROGRESS) {
            close(fd);
            return -err;
        }
        state = CONN_CONNECTING;
    }
    c = conn_new(w, fd, proto, (unsigned)li, dst, false, state);
    if (!c) return -ENOMEM;
    if (proto == SIP_TRANSPORT_TLS && tls_name && tls_name[0]) {
        c->tls_name = strdup(tls_name);
        if (!c->tls_name) {
            conn_close(w, c, "out of memory");
            return -ENOMEM;
        }
    }
    if (state == CONN_CONNECTING)
        worker_timer_arm(w, &c->timer, CONNECT_TIMEOUT_MS);
    else if (proto == SIP_TRANSPORT_TLS)
        tls_start_client(w, c);
    if (c->state == CONN_CLOSED) return -ECONNABORTED;
    *out = c;
    return 0;
}

/* Copies buf into a WMSG_SEND for the worker owning conn. */
static int send_via_owner(struct worker *w, conn_ref conn, const char *buf, size_t len)
{
    unsigned to = CONN_REF_WORKER(conn);
    struct worker_msg *m;
    int rc;

    if (to >= w->nworkers) return -ENOTCONN;
    if (len > UINT32_MAX) return -EMSGSIZE;
    m = worker_msg_new(len);
    if (!m) return -ENOMEM;
    m->kind = WMSG_SEND;
    m->conn = conn;
    memcpy(m->data, buf, len);
    rc = worker_post(w, to, m);
    if (rc < 0) {
        STAT_INC(w, dropped);
        worker_msg_free(m);
    }
    return rc;
}

int worker_send(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                conn_ref conn, const char *tls_name, const char *buf, size_t len, conn_ref *used)
{
    struct conn *c;
    int rc;

    ASSERT_OWNER(w);
    if (used) *used = CONN_REF_NONE;
    if (conn != CONN_REF_NONE) {
        if (CONN_REF_WORKER(conn) != w->id) {
            /* The owner checks the generation; a stale ref is dropped there. */
            rc = send_via_owner(w, conn, buf, len);
        } else {
            c = conn_get(w, conn);
            rc = c ? conn_write(w, c, buf, len) : -ENOTCONN;
            if (rc == 0) STAT_INC(w, tx_msgs);
        }
        if (rc == 0 && used) *used = conn;
        return rc;
    }
    if (!dst || netaddr_is_forbidden(dst)) return -EINVAL;
    switch (proto) {
    case SIP_TRANSPORT_UDP:
        return udp_send(w, listener, dst, buf, len);
    case SIP_TRANSPORT_TCP:
    case SIP_TRANSPORT_TLS:
        c = proto == SIP_TRANSPORT_TLS ? conn_find_tls(w, dst, tls_name) : conn_find(w, proto, dst);
        if (!c) {
            rc = conn_connect(w, proto, listener, dst, tls_name, &c);
            if (rc < 0) {
                char a[NETADDR_STRLEN];
                LOG_RL(LOG_WARN, "%s connect to %s: %s", proto_s(proto), addr_s(dst, a),
                       strerror(-rc));
                return rc;
            }
        }
        rc = conn_write(w, c, buf, len);
        if (rc < 0) return rc;
        STAT_INC(w, tx_msgs);
        if (used) *used = c->ref;
        return 0;
    default:
        return -EPROTONOSUPPORT;
    }
}

void worker_conn_close(struct worker *w, conn_ref ref)
{
    struct conn *c;

    ASSERT_OWNER(w);
    c = conn_get(w, ref);
    if (c) conn_close(w, c, "closed by proxy");
}

/* ---- rings ------------------------------------------------------------ */

struct worker_msg *worker_msg_new(size_t len)
{
    struct worker_msg *m;

    if (len > UINT32_MAX) return NULL;
    m = malloc(sizeof(*m) + len);
    if (!m) return NULL;
    memset(m, 0, sizeof(*m));
    m->len = (uint32_t)len;
    return m;
}

void worker_msg_free(struct worker_msg *m)
{
    free(m);
}

int worker_post(struct worker *w, unsigned to, struct worker_msg *m)
{
    struct runtime *run = w->rt->run;
    struct worker_rt *dst;

    ASSERT_OWNER(w);
    if (to >= run->n || to == w->id) return -EINVAL;
    m->from = (uint8_t)w->id;
    if (!ring_push(ring_of(run, w->id, to), m)) {
        STAT_INC(w, ring_refused);
        return -EAGAIN;
    }
    STAT_INC(w, ring_handover);
    /* Pairs with the fence in worker_loop: either the consumer sees the
     * message before it sleeps, or we see it sleeping. Only the first
     * producer to see that pays for the eventfd write. */
    dst = run->w[to]->rt;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&dst->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&dst->sleeping, false, memory_order_relaxed)) {
        eventfd_signal(dst->evfd);
        STAT_INC(w, ring_wakeups);
    }
    return 0;
}

static void handle_msg(struct worker *w, struct worker_msg *m)
{
    if (m->kind != WMSG_SEND) {
        proxy_on_worker_msg(w, m);
        return;
    }
    struct conn *c = conn_get(w, m->conn);
    if (!c) {
        STAT_INC(w, dropped); /* closed while the message was in the ring */
    } else if (conn_write(w, c, m->data, m->len) == 0) {
        STAT_INC(w, tx_msgs);
    }
    worker_msg_free(m);
}

static bool rings_empty(const struct worker *w)
{
    const struct runtime *run = w->rt->run;
    for (unsigned from = 0; from < run->n; from++)
        if (from != w->id && !ring_empty(ring_of(run, from, w->id))) return false;
    return true;
}

/* Handles up to RING_BUDGET messages, starting with a different producer
 * each turn. Returns true when messages may be left. */
static bool drain_rings(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    struct runtime *run = rt->run;
    void *batch[RING_BATCH];
    unsigned budget = RING_BUDGET;

    for (unsigned k = 0; k < run->n && budget; k++) {
        unsigned from = (rt->ring_next + k) % run->n;
        size_t got;
        if (from == w->id) continue;
        do {
            got = ring_pop_n(ring_of(run, from, w->id), batch,
                             budget < RING_BATCH ? budget : RING_BATCH);
            budget -= (unsigned)got;
            for (size_t i = 0; i < got; i++)
                handle_msg(w, batch[i]);
        } while (got && budget);
    }
    rt->ring_next = (rt->ring_next + 1) % run->n;
    return budget == 0;
}

/* ---- the loop --------------------------------------------------------- */

bool worker_draining(const struct worker *w)
{
    return w->rt->drained;
}

/* Stops accepting once the control thread asked for a drain, then publishes
 * each turn whether work is still in flight. */
static void drain_step(struct worker *w)
{
    struct worker_rt *rt = w->rt;

    if (!rt->drained) {
        if (!atomic_load_explicit(&rt->run->drain, memory_order_acquire)) return;
        for (unsigned i = 0; i < w->cfg->nlisten; i++) {
            struct wlistener *l = &rt->lis[i];
            if (l->proto == SIP_TRANSPORT_UDP || l->fd < 0) continue;
            timer_cancel(&l->resume);
            close(l->fd);
            l->fd = -1;
        }
        rt->drained = true;
        LOG_I("draining: stream listeners closed");
    }
    atomic_store_explicit(&rt->busy, proxy_busy(w) || rt->nqueued > 0 || !rings_empty(w),
                          memory_order_release);
}

static void dispatch(struct worker *w, const struct epoll_event *ev)
{
    uint64_t tag = ev->data.u64 >> TAG_SHIFT, val = ev->data.u64 & TAG_MASK;
    uint64_t count;

    switch (tag) {
    case TAG_CONN:
        conn_event(w, ev->data.u64, ev->events);
        break;
    case TAG_LISTENER:
        if (val & PRIVATE_BIT) {
            val &= ~(uint64_t)PRIVATE_BIT;
            udp_read(w, (unsigned)val, w->rt->priv_fd[val]);
            break;
        }
        if (w->rt->lis[val].fd < 0) break;
        if (w->rt->lis[val].proto == SIP_TRANSPORT_UDP)
            udp_read(w, (unsigned)val, w->rt->lis[val].fd);
        else
            accept_conns(w, (unsigned)val);
        break;
    case TAG_EVENTFD:
        if (read(w->rt->evfd, &count, sizeof(count)) < 0)
            break; /* EAGAIN: someone else's wake-up was already consumed */
        break;
    case TAG_DNS:
        dns_on_fd(w, (int)val, ev->events);
        break;
    }
}

/* dns/ hook. c-ares reports each socket's wanted events through its socket
 * state callback, and (0, 0) just before closing it; no state is kept here. */
int worker_dns_watch(struct worker *w, int fd, uint32_t events)
{
    uint64_t data = (TAG_DNS << TAG_SHIFT) | (uint32_t)fd;
    int err;

    ASSERT_OWNER(w);
    if (fd < 0) return -EBADF;
    if (events == 0) {
        err = epoll_set(w, EPOLL_CTL_DEL, fd, 0, 0);
        return err == -ENOENT ? 0 : err;
    }
    err = epoll_set(w, EPOLL_CTL_MOD, fd, events, data);
    if (err == -ENOENT) err = epoll_set(w, EPOLL_CTL_ADD, fd, events, data);
    return err;
}

static void worker_loop(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    struct epoll_event ev[EPOLL_BATCH];

    while (!atomic_load_explicit(&rt->run->stop, memory_order_acquire)) {
        bool more;
        int n, timeout;

        w->now_ms = mono_ms();
        tls_swap(w);
        timer_wheel_run(&w->timers, w->now_ms);
        more = drain_rings(w);
        drain_step(w);
        reap_conns(w);

        timeout = more ? 0
                       : timer_wheel_next(&w->timers, w->now_ms,
                                          rt->drained ? DRAIN_POLL_MS : LOOP_MAX_WAIT_MS);
        if (timeout != 0) {
            /* Announce the sleep, then look again: a producer that missed
             * the flag published before our fence, so we see its message. */
            atomic_store_explicit(&rt->sleeping, true, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);
            if (!rings_empty(w)) timeout = 0;
        }
        /* RCU (QSBR): this turn holds no shared-map reference any more;
         * a sleeping worker is offline so it never delays a grace period */
        proxy_quiescent(w, timeout != 0);
        n = epoll_wait(rt->epfd, ev, EPOLL_BATCH, timeout);
        if (timeout != 0) proxy_awake(w);
        atomic_store_explicit(&rt->sleeping, false, memory_order_relaxed);
        if (n < 0) {
            if (errno != EINTR) LOG_RL(LOG_ERR, "epoll_wait: %s", strerror(errno));
            continue;
        }
        w->now_ms = mono_ms();
        for (int i = 0; i < n; i++)
            dispatch(w, &ev[i]);
        reap_conns(w);
    }
}

static void pin(struct worker *w)
{
    cpu_set_t set;
    int err;

    if (w->rt->cpu < 0) return;
    CPU_ZERO(&set);
    CPU_SET(w->rt->cpu, &set);
    err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (err) LOG_W("cannot pin to CPU %d: %s", w->rt->cpu, strerror(err));
}

static int register_fds(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    int err;

    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        err = epoll_set(w, EPOLL_CTL_ADD, rt->lis[i].fd, EPOLLIN, LISTENER_TAG(i));
        if (err < 0) return err;
        if (rt->priv_fd[i] < 0) continue;
        err = epoll_set(w, EPOLL_CTL_ADD, rt->priv_fd[i], EPOLLIN, LISTENER_TAG(i | PRIVATE_BIT));
        if (err < 0) return err;
    }
    return epoll_set(w, EPOLL_CTL_ADD, rt->evfd, EPOLLIN, (TAG_EVENTFD << TAG_SHIFT));
}

static void close_all_conns(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    for (uint32_t s = 0; s < rt->nslots; s++)
        if (rt->slots[s].c) conn_close(w, rt->slots[s].c, "shutdown");
    reap_conns(w);
}

static void log_stats(const struct worker *w)
{
#define S(f) (unsigned long long)atomic_load_explicit(&w->stats.f, memory_order_relaxed)
    char fails[TLS_FAIL__COUNT * 32];
    size_t n = 0;

    for (int f = TLS_FAIL_NONE + 1; f < TLS_FAIL__COUNT; f++)
        n += (size_t)snprintf(fails + n, sizeof(fails) - n, " %s=%llu", tls_fail_str(f),
                              S(tls_fail[f]));
    LOG_I("rx %llu msgs %llu bytes, tx %llu msgs %llu bytes, bad %llu, dropped %llu, "
          "keepalives %llu, conns accepted %llu refused %llu closed %llu, "
          "ring handover %llu refused %llu wakeups %llu, "
          "tls handshakes %llu resumed %llu failed%s",
          S(rx_msgs), S(rx_bytes), S(tx_msgs), S(tx_bytes), S(bad_msgs), S(dropped), S(keepalives),
          S(conns_accepted), S(conns_refused), S(conns_closed), S(ring_handover), S(ring_refused),
          S(ring_wakeups), S(tls_handshakes), S(tls_resumed), fails);
#undef S
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct worker_rt *rt = w->rt;

    self = w;
    {
        char tag[16];
        snprintf(tag, sizeof(tag), "w%u", w->id);
        log_set_thread_tag(tag);
    }
    pin(w);
    w->now_ms = mono_ms();
    timer_wheel_init(&w->timers, w->now_ms, w);
    rt->init_rc = register_fds(w);
    /* dns/ first: the proxy may resolve from its init */
    if (rt->init_rc == 0) rt->init_rc = dns_worker_init(w);
    if (rt->init_rc == 0) {
        rt->init_rc = proxy_worker_init(w);
        rt->proxy_ready = rt->init_rc == 0;
    }
    pthread_mutex_lock(&rt->run->lock);
    rt->run->ready++;
    pthread_cond_broadcast(&rt->run->cond);
    while (!rt->run->go)
        pthread_cond_wait(&rt->run->cond, &rt->run->lock);
    pthread_mutex_unlock(&rt->run->lock);
    if (!atomic_load_explicit(&rt->run->stop, memory_order_acquire)) worker_loop(w);
    /* dns/: pending lookups get their -ECANCELED callback while the proxy
     * and the connections still exist */
    dns_worker_cleanup(w);
    close_all_conns(w);
    if (rt->proxy_ready) {
        proxy_worker_cleanup(w);
    }
    log_stats(w);
    self = NULL;
    return NULL;
}

/* ---- start and stop --------------------------------------------------- */

/* SO_REUSEPORT would let us silently join another process's socket group on
 * the same port; a plain bind first turns that into EADDRINUSE. */
static int probe_free(const struct listen_cfg *l, int type)
{
    int fd = socket(l->addr.sa.sa_family, type | SOCK_CLOEXEC, 0), err = 0, one = 1;

    if (fd < 0) return -errno;
    if (l->addr.sa.sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, &l->addr.sa, l->addr.len) < 0) err = -errno;
    close(fd);
    return err;
}

static int open_listener(const struct listen_cfg *l, int *out)
{
    int type = l->proto == SIP_TRANSPORT_UDP ? SOCK_DGRAM : SOCK_STREAM;
    int fd, one = 1, err;

    fd = socket(l->addr.sa.sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        (type == SOCK_STREAM && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) ||
        (l->addr.sa.sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, &l->addr.sa, l->addr.len) < 0 ||
        (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)) {
        err = -errno;
        close(fd);
        return err;
    }
    *out = fd;
    return 0;
}

/* Worker id's private socket for UDP listener l: the listener's address,
 * port `port` (0: one the kernel picks). Sets *port to the bound port. */
static int open_private(const struct listen_cfg *l, uint16_t *port, int *out)
{
    struct netaddr a = l->addr;
    socklen_t alen = a.len;
    int fd, one = 1, err;

    if (a.sa.sa_family == AF_INET)
        a.in4.sin_port = htons(*port);
    else
        a.in6.sin6_port = htons(*port);
    fd = socket(a.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if ((a.sa.sa_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
        bind(fd, &a.sa, a.len) < 0 || getsockname(fd, &a.sa, &alen) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    *port = (uint16_t)netaddr_port(&a);
    *out = fd;
    return 0;
}

/* The CPUs this process may run on, in order; worker i gets cpus[i % n]. */
static unsigned allowed_cpus(int *cpus, unsigned max)
{
    cpu_set_t set;
    unsigned n = 0;

    if (sched_getaffinity(0, sizeof(set), &set) < 0) return 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set)) cpus[n++] = c;
    return n;
}

static uint64_t next_pow2_bits(uint64_t v)
{
    uint64_t bits = 0;
    while ((1ull << bits) < v)
        bits++;
    return bits;
}

static void worker_destroy(struct worker *w)
{
    struct worker_rt *rt;

    if (!w) return;
    rt = w->rt;
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
        if (rt->lis[i].fd >= 0) close(rt->lis[i].fd);
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
        if (rt->priv_fd[i] >= 0) close(rt->priv_fd[i]);
    if (rt->epfd >= 0) close(rt->epfd);
    if (rt->evfd >= 0) close(rt->evfd);
    free(rt->slots);
    free(rt->buckets);
    free(rt->sbuf);
    free(rt->ubuf);
    tls_ctx_free(rt->tls);
    tls_ctx_free(atomic_load(&rt->tls_next));
    free(rt);
    free(w);
}

static int worker_create(struct runtime *run, unsigned id, int cpu, struct worker **out)
{
    const struct config *cfg = run->cfg;
    struct worker *w;
    struct worker_rt *rt;
    bool has_udp = false;
    char a[NETADDR_STRLEN];
    size_t wsize = (sizeof(*w) + 63) & ~(size_t)63;
    int err;

    w = aligned_alloc(64, wsize);
    rt = aligned_alloc(64, (sizeof(*rt) + 63) & ~(size_t)63);
    if (!w || !rt) {
        free(w);
        free(rt);
        return -ENOMEM;
    }
    memset(w, 0, sizeof(*w));
    memset(rt, 0, sizeof(*rt));
    w->id = id;
    w->nworkers = run->n;
    w->cfg = cfg;
    w->rt = rt;
    rt->run = run;
    rt->cpu = cpu;
    rt->epfd = rt->evfd = -1;
    rt->free_head = SLOT_NONE;
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++) {
        rt->lis[i].fd = -1;
        rt->priv_fd[i] = -1;
        timer_init(&rt->lis[i].resume, listener_resume);
    }
    *out = w;

    rt->epfd = epoll_create1(EPOLL_CLOEXEC);
    rt->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->epfd < 0 || rt->evfd < 0) return -errno;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        if (id == 0) {
            err = probe_free(l, l->proto == SIP_TRANSPORT_UDP ? SOCK_DGRAM : SOCK_STREAM);
            if (err == 0) err = open_listener(l, &rt->lis[i].fd);
        } else {
            err = open_listener(l, &rt->lis[i].fd);
        }
        if (err < 0) {
            LOG_E("cannot listen on %s:%s: %s", proto_s(l->proto), addr_s(&l->addr, a),
                  strerror(-err));
            return err;
        }
        rt->lis[i].proto = l->proto;
        has_udp |= l->proto == SIP_TRANSPORT_UDP;
    }
    /* private ports: the k-th UDP listener's socket of worker id gets
     * BASE + k * workers + id, or a port the kernel picks */
    for (unsigned i = 0, k = 0; i < cfg->nlisten && cfg->worker_ports >= 0; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        if (l->proto != SIP_TRANSPORT_UDP) continue;
        uint32_t port = cfg->worker_ports > 0 ? (uint32_t)cfg->worker_ports + k * run->n + id : 0;
        k++;
        if (port > 65535) {
            LOG_E("--worker-ports %d: worker %u's port for udp:%s is above 65535",
                  cfg->worker_ports, id, addr_s(&l->addr, a));
            return -ERANGE;
        }
        rt->priv_port[i] = (uint16_t)port;
        err = open_private(l, &rt->priv_port[i], &rt->priv_fd[i]);
        if (err < 0) {
            LOG_E("worker %u: cannot open its private port %u on udp:%s: %s", id, port,
                  addr_s(&l->addr, a), strerror(-err));
            return err;
        }
        LOG_D("worker %u: private udp port %u on %s", id, rt->priv_port[i], l->host);
    }

    rt->lim.max_msg_size = cfg->max_message_size;
    rt->lim.max_headers = 256;
    rt->sbuf_cap = cfg->max_message_size + STREAM_SLACK;
    rt->sbuf = malloc(rt->sbuf_cap);
    if (has_udp) {
        rt->ubuf_cap =
            (cfg->max_message_size < UDP_MAX_DATAGRAM ? cfg->max_message_size : UDP_MAX_DATAGRAM) +
            1;
        rt->ubuf = malloc(UDP_BATCH * rt->ubuf_cap);
    }
    rt->slot_limit = cfg->max_connections + SLOTS_OUTBOUND_EXTRA;
    if (rt->slot_limit > (1u << 24)) rt->slot_limit = 1u << 24;
    rt->bucket_bits = next_pow2_bits(cfg->max_connections < 65536 ? cfg->max_connections : 65536);
    if (rt->bucket_bits < 8) rt->bucket_bits = 8;
    rt->buckets = calloc(1ull << rt->bucket_bits, sizeof(*rt->buckets));
    if (!rt->sbuf || (has_udp && !rt->ubuf) || !rt->buckets) return -ENOMEM;
    if (getrandom(&rt->hash_seed, sizeof(rt->hash_seed), 0) != sizeof(rt->hash_seed))
        rt->hash_seed = mono_ms() * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)rt;
    return 0;
}

/* Per-pair capacity: 4096 for a few workers, less for many (n * n rings). */
static size_t ring_cap(unsigned n)
{
    size_t cap = 4096;
    while (cap > 256 && cap * n > 16384)
        cap /= 2;
    return cap;
}

static void runtime_free(struct runtime *run)
{
    void *m;

    if (run->rings) {
        for (unsigned i = 0; i < run->n * run->n; i++) {
            if (!run->rings[i]) continue;
            while (ring_pop_n(run->rings[i], &m, 1) == 1)
                worker_msg_free(m);
            ring_free(run->rings[i]);
        }
        free(run->rings);
    }
    for (unsigned i = 0; i < run->n; i++)
        worker_destroy(run->w[i]);
    pthread_mutex_destroy(&run->lock);
    pthread_cond_destroy(&run->cond);
    free(run);
}

static void wake_all(struct runtime *run)
{
    for (unsigned i = 0; i < run->n; i++)
        eventfd_signal(run->w[i]->rt->evfd);
}

static void tls_ctxs_free(struct tls_ctx **tls, unsigned n)
{
    for (unsigned i = 0; tls && i < n; i++) {
        tls_ctx_free(tls[i]);
        tls[i] = NULL;
    }
}

int worker_runtime_start(const struct config *cfg)
{
    return worker_runtime_start_tls(cfg, NULL);
}

int worker_runtime_start_tls(const struct config *cfg, struct tls_ctx **tls)
{
    struct runtime *run;
    int cpus[CPU_SETSIZE];
    unsigned ncpu, started = 0;
    int err = 0;

    if (runtime || cfg->workers == 0 || cfg->workers > WORKER_MAX || cfg->nlisten == 0) {
        tls_ctxs_free(tls, cfg->workers <= WORKER_MAX ? cfg->workers : 0);
        return runtime ? -EALREADY : -EINVAL;
    }
    run = calloc(1, sizeof(*run));
    if (!run) {
        tls_ctxs_free(tls, cfg->workers);
        return -ENOMEM;
    }
    run->cfg = cfg;
    run->n = cfg->workers;
    pthread_mutex_init(&run->lock, NULL);
    pthread_cond_init(&run->cond, NULL);
    ncpu = allowed_cpus(cpus, CPU_SETSIZE);

    run->rings = calloc((size_t)run->n * run->n, sizeof(*run->rings));
    if (!run->rings) {
        tls_ctxs_free(tls, run->n);
        runtime_free(run);
        return -ENOMEM;
    }
    for (unsigned from = 0; from < run->n; from++) {
        for (unsigned to = 0; to < run->n; to++) {
            if (from == to) continue;
            run->rings[from * run->n + to] = ring_new(ring_cap(run->n));
            if (!run->rings[from * run->n + to]) {
                tls_ctxs_free(tls, run->n);
                runtime_free(run);
                return -ENOMEM;
            }
        }
    }
    for (unsigned i = 0; i < run->n; i++) {
        err = worker_create(run, i, ncpu ? cpus[i % ncpu] : -1, &run->w[i]);
        if (err < 0) {
            if (err == -ENOMEM) LOG_E("worker %u: out of memory", i);
            tls_ctxs_free(tls, run->n);
            runtime_free(run);
            return err;
        }
        /* Before the thread exists: it sees its context from the start. */
        if (tls) {
            run->w[i]->rt->tls = tls[i];
            tls[i] = NULL;
        }
    }

    runtime = run;
    for (; started < run->n; started++) {
        struct worker_rt *rt = run->w[started]->rt;
        err = -pthread_create(&rt->thread, NULL, worker_main, run->w[started]);
        if (err < 0) {
            LOG_E("cannot start worker %u: %s", started, strerror(-err));
            break;
        }
        rt->thread_started = true;
    }
    pthread_mutex_lock(&run->lock);
    while (run->ready < started)
        pthread_cond_wait(&run->cond, &run->lock);
    for (unsigned i = 0; i < started && err == 0; i++) {
        err = run->w[i]->rt->init_rc;
        if (err < 0) LOG_E("worker %u: initialisation failed: %s", i, strerror(-err));
    }
    /* The workers look at `stop` once they see `go`. */
    if (err < 0) atomic_store(&run->stop, true);
    run->go = true;
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->lock);
    if (err < 0) {
        worker_runtime_stop();
        return err;
    }
    return 0;
}

bool worker_runtime_tls_reload(struct tls_ctx **tls)
{
    struct runtime *run = runtime;
    uint64_t deadline = mono_ms() + TLS_RELOAD_WAIT_MS;
    const struct timespec pause = {0, 1000000};

    if (!run) return false;
    for (unsigned i = 0; i < run->n; i++) {
        struct worker_rt *rt = run->w[i]->rt;
        /* A context published earlier and not yet taken was never used:
         * it is still ours to free. */
        struct tls_ctx *stale =
            atomic_exchange_explicit(&rt->tls_next, tls[i], memory_order_acq_rel);
        tls[i] = NULL;
        tls_ctx_free(stale);
        eventfd_signal(rt->evfd);
    }
    for (unsigned i = 0; i < run->n; i++) {
        while (atomic_load_explicit(&run->w[i]->rt->tls_next, memory_order_acquire)) {
            if (mono_ms() >= deadline) return false;
            nanosleep(&pause, NULL);
        }
    }
    return true;
}

void worker_runtime_drain(void)
{
    struct runtime *run = runtime;

    if (!run) return;
    for (unsigned i = 0; i < run->n; i++)
        atomic_store_explicit(&run->w[i]->rt->busy, true, memory_order_relaxed);
    atomic_store_explicit(&run->drain, true, memory_order_release);
    wake_all(run);
}

bool worker_runtime_busy(void)
{
    struct runtime *run = runtime;

    if (!run) return false;
    for (unsigned i = 0; i < run->n; i++)
        if (atomic_load_explicit(&run->w[i]->rt->busy, memory_order_acquire)) return true;
    return false;
}

void worker_runtime_stop(void)
{
    struct runtime *run = runtime;

    if (!run) return;
    atomic_store_explicit(&run->stop, true, memory_order_release);
    wake_all(run);
    for (unsigned i = 0; i < run->n; i++)
        if (run->w[i]->rt->thread_started) pthread_join(run->w[i]->rt->thread, NULL);
    runtime = NULL;
    runtime_free(run);
}

unsigned worker_count(void)
{
    return runtime ? runtime->n : 0;
}

const struct worker *worker_get(unsigned i)
{
    return runtime && i < runtime->n ? runtime->w[i] : NULL;
}

const char *worker_listener_host(const struct worker *w, unsigned listener)
{
    if (listener >= w->cfg->nlisten) return NULL;
    return w->cfg->advertise[0] ? w->cfg->advertise : w->cfg->listen[listener].host;
}

int worker_listener_port(const struct worker *w, unsigned listener)
{
    if (listener >= w->cfg->nlisten) return -EINVAL;
    return netaddr_port(&w->cfg->listen[listener].addr);
}

int worker_via_port(const struct worker *w, unsigned listener)
{
    if (listener >= w->cfg->nlisten) return -EINVAL;
    if (w->rt->priv_fd[listener] >= 0) return w->rt->priv_port[listener];
    return netaddr_port(&w->cfg->listen[listener].addr);
}

bool worker_is_private_port(const struct worker *w, unsigned listener, int port)
{
    const struct runtime *run = w->rt->run;
    if (listener >= w->cfg->nlisten || port <= 0) return false;
    for (unsigned i = 0; i < run->n; i++)
        if (run->w[i] && run->w[i]->rt->priv_fd[listener] >= 0 &&
            run->w[i]->rt->priv_port[listener] == port)
            return true;
    return false;
}
