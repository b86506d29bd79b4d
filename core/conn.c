/* Stream connections of a worker: the slot table and address hash, each
 * connection's life (open, events, timeouts, close, reap) and outbound connect. */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sipuri.h"
#include "core/worker-int.h"

#define SLOTS_INITIAL        1024u
#define SLOTS_OUTBOUND_EXTRA 4096u /* per worker, beyond --max-connections */
/* A ringing call's connection stays at least this long after its INVITE or
 * latest provisional response: Timer C (RFC 3261 §16.6, 180 s) and the
 * CANCEL and 487 that follow it. */
#define RING_WINDOW_MS 190000

/* ---- the table ------------------------------------------------------- */

static uint64_t next_pow2_bits(uint64_t v)
{
    uint64_t bits = 0;
    while ((1ull << bits) < v)
        bits++;
    return bits;
}

int conn__table_init(struct worker_rt *rt, const struct config *cfg)
{
    rt->free_head = SLOT_NONE;
    rt->slot_limit = cfg->max_connections + SLOTS_OUTBOUND_EXTRA;
    if (rt->slot_limit > (1u << 24)) rt->slot_limit = 1u << 24;
    rt->bucket_bits = next_pow2_bits(cfg->max_connections < 65536 ? cfg->max_connections : 65536);
    if (rt->bucket_bits < 8) rt->bucket_bits = 8;
    rt->buckets = calloc(1ull << rt->bucket_bits, sizeof(*rt->buckets));
    return rt->buckets ? 0 : -ENOMEM;
}

void conn__table_free(struct worker_rt *rt)
{
    free(rt->slots);
    free(rt->buckets);
    rt->slots = NULL;
    rt->buckets = NULL;
}

struct conn *conn__get(struct worker *w, conn_ref ref)
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

/* Bucket of (proto, addr) under the process's hash key, so peers cannot aim
 * at one chain. Hashes exactly what netaddr_eq() compares. */
static struct conn **bucket_of(const struct worker_rt *rt, uint8_t proto, const struct netaddr *a)
{
    return &rt->buckets[netaddr_hash(proto, a) >> (64 - rt->bucket_bits)];
}

/* TLS identities: NULL and "" are the same (none); DNS names fold case. */
static bool tls_name_eq(const char *x, const char *y)
{
    bool nx = !x || !*x, ny = !y || !*y;
    if (nx || ny) return nx && ny;
    return strcasecmp(x, y) == 0;
}

struct conn *conn__find(struct worker *w, uint8_t proto, const struct netaddr *dst,
                        const char *tls_name)
{
    for (struct conn *c = *bucket_of(w->rt, proto, dst); c; c = c->hnext)
        if (c->proto == proto && netaddr_eq(&c->peer, dst) &&
            (proto != SIP_TRANSPORT_TLS || tls_name_eq(c->tls_name, tls_name)))
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

/* ---- life of a connection -------------------------------------------- */

void conn__set_want_out(struct worker *w, struct conn *c, bool on)
{
    if (c->want_out == on) return;
    if (worker__epoll_set(w, EPOLL_CTL_MOD, c->fd, EPOLLIN | (on ? EPOLLOUT : 0), c->ref) == 0)
        c->want_out = on;
}

static void conn_timeout(struct worker *w, struct timer *t);

struct conn *conn__new(struct worker *w, int fd, uint8_t proto, unsigned listener,
                       const struct netaddr *peer, bool inbound, enum conn_state state)
{
    struct worker_rt *rt = w->rt;
    struct conn *c;
    struct conn **b;
    uint32_t slot;
    int one = 1, err;

    err = slot_alloc(rt, &slot);
    if (err < 0) {
        LOG_RL(LOG_ERR, "no connection slot for %s: %s", sipuri_transport_name(proto),
               strerror(-err));
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
    c->ip_slot = -1;
    c->active_until = w->now_ms + (uint64_t)w->cfg->idle_timeout_s * 1000;
    framer_init(&c->framer);
    timer_init(&c->timer, conn_timeout);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    err = worker__epoll_set(w, EPOLL_CTL_ADD, fd, EPOLLIN | (c->want_out ? EPOLLOUT : 0), c->ref);
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

static void close_conn(struct worker *w, struct conn *c, const char *why, bool count_drop)
{
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CLOSED) return;
    LOG_D("%s %s: closed (%s)", sipuri_transport_name(c->proto), ADDR_STR(&c->peer, a), why);
    timer_cancel(&c->timer);
    /* close_notify, best effort; a failed session refuses it by itself */
    if (c->tls && c->state == CONN_OPEN) tls_conn_shutdown(c->tls);
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = CONN_CLOSED;
    hash_remove(rt, c);
    slot_free(rt, CONN_REF_SLOT(c->ref));
    if (c->wq_len) {
        stream__unqueue(w, c);
        if (count_drop) STAT_INC(w, dropped);
    }
    iplimit_release(rt->run->per_ip, c->ip_slot);
    c->ip_slot = -1;
    atomic_fetch_sub_explicit(&rt->run->nconns, 1, memory_order_relaxed);
    STAT_ADD(w, conns_open, (uint64_t)-1);
    STAT_INC(w, conns_closed);
    c->hnext = rt->zombies;
    rt->zombies = c;
}

void conn__close(struct worker *w, struct conn *c, const char *why)
{
    close_conn(w, c, why, true);
}

void conn__close_limit(struct worker *w, struct conn *c, enum stat_limit which, const char *why)
{
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CLOSED) return;
    if (which == LIMIT_QUEUE_CONNECTION || which == LIMIT_QUEUE_TOTAL) {
        /* A reset, not a FIN behind the unsent bytes: the kernel would
         * otherwise keep those for a peer that does not read. */
        struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof(abort_close));
    }
    STAT_LIMIT(w, which);
    LOG_RL(LOG_INFO, "%s connection %s %s: %s: closing", sipuri_transport_name(c->proto),
           c->inbound ? "from" : "to", ADDR_STR(&c->peer, a), why);
    close_conn(w, c, why, false);
}

void conn__reap(struct worker *w)
{
    const struct worker_handlers *h = w->rt->h;
    struct conn *c;

    while ((c = w->rt->zombies) != NULL) {
        w->rt->zombies = c->hnext;
        if (h->on_conn_closed) h->on_conn_closed(w, c->ref, &c->peer, c->proto);
        tls_conn_free(c->tls);
        free(c->tls_name);
        free(c->rbuf);
        free(c->wq);
        free(c);
    }
}

void conn__close_all(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    for (uint32_t s = 0; s < rt->nslots; s++)
        if (rt->slots[s].c) conn__close(w, rt->slots[s].c, "shutdown");
    conn__reap(w);
}

/* ---- events ---------------------------------------------------------- */

static void connect_done(struct worker *w, struct conn *c)
{
    char a[NETADDR_STRLEN];
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY) return;
    if (err) {
        LOG_RL(LOG_WARN, "%s connect to %s: %s", sipuri_transport_name(c->proto),
               ADDR_STR(&c->peer, a), strerror(err));
        conn__close(w, c, "connect failed");
        return;
    }
    timer_cancel(&c->timer);
    if (c->proto == SIP_TRANSPORT_TLS) {
        conn_tls__start_client(w, c);
        return;
    }
    c->state = CONN_OPEN;
    conn__touch(w, c, (uint64_t)w->cfg->idle_timeout_s * 1000);
    conn__arm(w, c);
    if (c->wq_len) {
        stream__flush(w, c);
    } else {
        conn__set_want_out(w, c, false);
    }
}

/* ---- deadlines ------------------------------------------------------- */

/* A held connection (a registration) idles only after its hold, and its
 * keep-alives count as traffic meanwhile (core/stream.c). */
static uint64_t idle_deadline(const struct conn *c)
{
    return c->active_until > c->hold_until_ms ? c->active_until : c->hold_until_ms;
}

void conn__arm(struct worker *w, struct conn *c)
{
    uint64_t at = idle_deadline(c);

    if (c->msg_deadline && c->msg_deadline < at) at = c->msg_deadline;
    if (timer_armed(&c->timer) && c->timer_at <= at) return;
    c->timer_at = at;
    timer_arm_at(&w->timers, &c->timer, at);
}

/* Arms c's timer ms from now: the deadline of connecting or handshaking. */
void conn__arm_state(struct worker *w, struct conn *c, unsigned ms)
{
    c->timer_at = w->now_ms + ms;
    timer_arm_at(&w->timers, &c->timer, c->timer_at);
}

/* The runtime looks at two words of the message, no more: an INVITE
 * request, or a 1xx response (the version is case-insensitive). */
uint64_t conn__window(const struct worker *w, const char *buf, size_t len)
{
    uint64_t idle = (uint64_t)w->cfg->idle_timeout_s * 1000;
    bool ringing = (len > 7 && memcmp(buf, "INVITE ", 7) == 0) ||
                   (len > 9 && strncasecmp(buf, "SIP/2.0 1", 9) == 0);

    return ringing && idle < RING_WINDOW_MS ? RING_WINDOW_MS : idle;
}

static void conn_timeout(struct worker *w, struct timer *t)
{
    struct conn *c = container_of(t, struct conn, timer);
    char a[NETADDR_STRLEN];

    if (c->state == CONN_CONNECTING) {
        STAT_LIMIT(w, LIMIT_CONNECT_TIMEOUT);
        LOG_RL(LOG_WARN, "%s connect to %s: no answer within --connect-timeout %u ms",
               sipuri_transport_name(c->proto), ADDR_STR(&c->peer, a), w->cfg->connect_timeout_ms);
        conn__close(w, c, "connect timeout");
    } else if (c->state == CONN_HANDSHAKE) {
        STAT_LIMIT(w, LIMIT_HANDSHAKE_TIMEOUT);
        conn_tls__failed(w, c, TLS_FAIL_TIMEOUT);
    } else if (c->msg_deadline && w->now_ms >= c->msg_deadline) {
        STAT_INC(w, dropped); /* the partial message */
        conn__close_limit(w, c, LIMIT_MESSAGE_TIMEOUT,
                          "no complete message within --message-timeout");
    } else if (w->now_ms >= idle_deadline(c)) {
        conn__close_limit(w, c, LIMIT_IDLE_TIMEOUT, "idle for --idle-timeout");
    } else {
        conn__arm(w, c); /* traffic or a hold moved the deadline */
    }
}

void conn__event(struct worker *w, conn_ref ref, uint32_t events)
{
    struct conn *c = conn__get(w, ref);

    if (!c) return; /* closed earlier in this batch */
    if (c->state == CONN_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        connect_done(w, c);
        if (c->state != CONN_OPEN) return;
    } else if (c->state == CONN_HANDSHAKE) {
        /* Once established, what the peer sent after its Finished is still
         * in the socket and signalled again (level-triggered). */
        conn_tls__step(w, c);
        return;
    } else if ((events & EPOLLOUT) || (c->tls_wr_wants_read && (events & EPOLLIN))) {
        if (stream__flush(w, c) < 0) return;
    }
    if (c->state != CONN_OPEN) return;
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ||
        (c->tls_rd_wants_write && (events & EPOLLOUT)))
        stream__read(w, c);
}

/* ---- outbound -------------------------------------------------------- */

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

/* A non-blocking socket towards dst, leaving from listener lc's address
 * when it has one, so Via and the source agree. *connecting: the connect
 * is in progress. Returns the socket or -errno. */
static int connect_socket(const struct listen_cfg *lc, uint8_t proto, const struct netaddr *dst,
                          bool *connecting)
{
    int fd, one = 1, err;

    fd = socket(dst->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (lc->proto == proto && lc->addr.sa.sa_family == dst->sa.sa_family &&
        !addr_is_any(&lc->addr)) {
        struct netaddr src = lc->addr;
        if (src.sa.sa_family == AF_INET)
            src.in4.sin_port = 0;
        else
            src.in6.sin6_port = 0;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        if (bind(fd, &src.sa, src.len) < 0) {
            err = errno;
            close(fd);
            return -err;
        }
    }
    *connecting = false;
    if (connect(fd, &dst->sa, dst->len) < 0) {
        err = errno;
        if (err != EINPROGRESS) {
            close(fd);
            return -err;
        }
        *connecting = true;
    }
    return fd;
}

bool conn__reserve(struct worker *w)
{
    struct runtime *run = w->rt->run;

    if (atomic_fetch_add_explicit(&run->nconns, 1, memory_order_relaxed) < w->cfg->max_connections)
        return true;
    atomic_fetch_sub_explicit(&run->nconns, 1, memory_order_relaxed);
    STAT_LIMIT(w, LIMIT_CONNECTIONS);
    return false;
}

void conn__unreserve(struct worker *w)
{
    atomic_fetch_sub_explicit(&w->rt->run->nconns, 1, memory_order_relaxed);
}

int conn__connect(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                  const char *tls_name, struct conn **out)
{
    int li = outbound_listener(w->cfg, proto, listener, dst->sa.sa_family);
    bool connecting = false;
    struct conn *c;
    int fd;

    if (proto == SIP_TRANSPORT_TLS && !w->rt->tls) return -EPROTONOSUPPORT;
    if (!conn__reserve(w)) {
        char a[NETADDR_STRLEN];
        LOG_RL(LOG_WARN, "no %s connection to %s: --max-connections %u reached",
               sipuri_transport_name(proto), ADDR_STR(dst, a), w->cfg->max_connections);
        return -EMFILE;
    }
    fd = connect_socket(&w->cfg->listen[li], proto, dst, &connecting);
    if (fd < 0) {
        conn__unreserve(w);
        return fd;
    }
    c = conn__new(w, fd, proto, (unsigned)li, dst, false, connecting ? CONN_CONNECTING : CONN_OPEN);
    if (!c) {
        conn__unreserve(w);
        return -ENOMEM;
    }
    if (proto == SIP_TRANSPORT_TLS && tls_name && tls_name[0]) {
        c->tls_name = strdup(tls_name);
        if (!c->tls_name) {
            conn__close(w, c, "out of memory");
            return -ENOMEM;
        }
    }
    if (connecting)
        conn__arm_state(w, c, w->cfg->connect_timeout_ms);
    else if (proto == SIP_TRANSPORT_TLS)
        conn_tls__start_client(w, c);
    else
        conn__arm(w, c);
    if (c->state == CONN_CLOSED) return -ECONNABORTED;
    *out = c;
    return 0;
}

int worker_conn_hold(struct worker *w, conn_ref ref, uint64_t until_ms)
{
    struct conn *c = CONN_REF_WORKER(ref) == w->id ? conn__get(w, ref) : NULL;

    if (!c) return -ENOTCONN;
    c->hold_until_ms = until_ms;
    if (c->state == CONN_OPEN) conn__arm(w, c); /* a shorter hold may end sooner */
    return 0;
}

bool worker_conn_unread(struct worker *w, conn_ref ref)
{
    struct conn *c = CONN_REF_WORKER(ref) == w->id ? conn__get(w, ref) : NULL;
    int n = 0;
    if (!c || c->state != CONN_OPEN) return false;
    return c->rlen > 0 || (ioctl(c->fd, FIONREAD, &n) == 0 && n > 0);
}

int worker_conn_peer_ids(struct worker *w, conn_ref ref, struct tls_peer_ids *ids)
{
    struct conn *c = CONN_REF_WORKER(ref) == w->id ? conn__get(w, ref) : NULL;

    ids->n = 0;
    if (!c) return -ENOTCONN;
    if (!c->tls || c->state != CONN_OPEN) return 0;
    return (int)tls_conn_peer_ids(c->tls, ids);
}
