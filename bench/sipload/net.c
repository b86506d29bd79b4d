/* sipload's sockets: batched UDP (sendmmsg/recvmmsg), TCP and TLS
 * connections with Content-Length framing, source addresses over 127/8. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "bench/sipload/sipload.h"

#define RBUF_INIT       16384
#define RBUF_MAX        (256u << 10) /* above the proxy's largest message */
#define READS_PER_EVENT 16
#define ACCEPTS_PER_EVT 64
#define UDP_ROUNDS      8 /* recvmmsg batches per readiness event */
#define SOCKBUF         (4 << 20)

int net_epoll_add(struct sl_thread *th, int fd, void *obj, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = obj};
    return epoll_ctl(th->ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void set_want_out(struct sl_thread *th, struct sl_conn *c, bool on)
{
    if (c->want_out == on || c->state == CS_CLOSED) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    c->want_out = on;
    epoll_ctl(th->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* 127.A.B.C with C in 1..254: --src-addrs addresses from 127.1.0.1 on,
 * handed out round robin over the threads so each address carries its
 * share. Only towards an IPv4 loopback target: elsewhere the routing
 * table chooses. */
bool net_src_addr(struct sl_thread *th, const struct netaddr *dst, struct netaddr *src)
{
    uint32_t n = th->o->src_addrs;
    if (n == 0 || dst->sa.sa_family != AF_INET || (ntohl(dst->in4.sin_addr.s_addr) >> 24) != 127)
        return false;
    uint32_t j = (uint32_t)(((uint64_t)th->src_next++ * th->run->nthreads + (uint64_t)th->id) % n);
    uint32_t a = 1 + j / (254 * 256), b = (j / 254) % 256, c = 1 + j % 254;
    memset(src, 0, sizeof *src);
    src->in4.sin_family = AF_INET;
    src->in4.sin_addr.s_addr = htonl(127u << 24 | (a & 0xff) << 16 | b << 8 | c);
    src->len = sizeof src->in4;
    return true;
}

static void big_buffers(int fd)
{
    int sz = SOCKBUF;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

/* ---- UDP ---- */

struct sl_udp *net_udp_open(struct sl_thread *th, const struct netaddr *bind_to, bool reuseport)
{
    int one = 1;
    struct sl_udp *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->type = EV_UDP;
    u->fd = socket(bind_to->sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof u->local.in6;
    if (u->fd < 0 ||
        (reuseport && setsockopt(u->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        bind(u->fd, &bind_to->sa, bind_to->len) < 0 || getsockname(u->fd, &u->local.sa, &len) < 0 ||
        net_epoll_add(th, u->fd, u, EPOLLIN) < 0) {
        fprintf(stderr, "sipload: udp socket: %s\n", strerror(errno));
        if (u->fd >= 0) close(u->fd);
        free(u);
        return NULL;
    }
    u->local.len = len;
    big_buffers(u->fd);
    for (unsigned i = 0; i < SL_BATCH; i++) {
        u->out[i].msg_hdr.msg_iov = &u->iov[i];
        u->out[i].msg_hdr.msg_iovlen = 1;
        u->iov[i].iov_base = u->buf[i];
    }
    return u;
}

void net_udp_flush(struct sl_thread *th, struct sl_udp *u)
{
    unsigned sent = 0;
    while (sent < u->nout) {
        int r = sendmmsg(u->fd, u->out + sent, u->nout - sent, MSG_DONTWAIT);
        if (r > 0) {
            sent += (unsigned)r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            /* a full socket buffer or an unreachable peer: the datagram is
             * lost, as on a network; retransmissions or timeouts show it */
            th->st.udp_send_errors++;
            sent++;
        }
    }
    u->nout = 0;
}

struct rx_area {
    struct mmsghdr msg[SL_BATCH];
    struct iovec iov[SL_BATCH];
    struct netaddr src[SL_BATCH];
    char buf[SL_BATCH][SL_DGRAM_MAX];
};

static __thread struct rx_area *rx;

void net_udp_read(struct sl_thread *th, struct sl_udp *u)
{
    if (!rx && !(rx = calloc(1, sizeof *rx))) return;
    for (int round = 0; round < UDP_ROUNDS; round++) {
        for (unsigned i = 0; i < SL_BATCH; i++) {
            rx->iov[i] = (struct iovec){rx->buf[i], SL_DGRAM_MAX};
            rx->msg[i].msg_hdr = (struct msghdr){.msg_name = &rx->src[i].sa,
                                                 .msg_namelen = sizeof rx->src[i].in6,
                                                 .msg_iov = &rx->iov[i],
                                                 .msg_iovlen = 1};
        }
        int n = recvmmsg(u->fd, rx->msg, SL_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) return;
        for (int i = 0; i < n; i++) {
            struct sl_peer p = {.u = u, .src = rx->src[i]};
            p.src.len = rx->msg[i].msg_hdr.msg_namelen;
            if (rx->msg[i].msg_hdr.msg_flags & MSG_TRUNC) {
                th->st.bad_msgs++;
                continue;
            }
            sl_dispatch(th, &p, rx->buf[i], rx->msg[i].msg_len, true);
        }
        if (n < SL_BATCH) return;
    }
}

/* ---- output to a peer ---- */

struct buf out_open(struct sl_thread *th, const struct sl_peer *p)
{
    if (p->c) return buf_make(th->scratch, sizeof th->scratch);
    if (p->u->nout == SL_BATCH) net_udp_flush(th, p->u);
    return buf_make(p->u->buf[p->u->nout], SL_DGRAM_MAX);
}

void out_commit(struct sl_thread *th, const struct sl_peer *p, const struct buf *b)
{
    if (!buf_ok(b)) {
        th->st.build_errors++;
        return;
    }
    th->st.msgs_tx++;
    if (p->c) {
        net_conn_write(th, p->c, b->p, b->len);
        return;
    }
    struct sl_udp *u = p->u;
    unsigned i = u->nout++;
    u->dst[i] = p->src;
    u->iov[i].iov_len = b->len;
    u->out[i].msg_hdr.msg_name = &u->dst[i].sa;
    u->out[i].msg_hdr.msg_namelen = p->src.len;
    if (!u->dirty) {
        u->dirty = true;
        u->next_dirty = th->dirty_udp;
        th->dirty_udp = u;
    }
}

/* ---- stream connections ---- */

static struct sl_conn *conn_new(struct sl_thread *th, int fd, uint8_t proto, uint8_t role,
                                bool outbound, uint8_t state)
{
    struct sl_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return NULL;
    }
    c->type = EV_CONN;
    c->fd = fd;
    c->proto = proto;
    c->role = role;
    c->outbound = outbound;
    c->state = state;
    c->sender = -1;
    c->want_out = state == CS_CONNECTING;
    framer_init(&c->fr);
    if (net_epoll_add(th, fd, c, EPOLLIN | (c->want_out ? EPOLLOUT : 0)) < 0) {
        close(fd);
        free(c);
        return NULL;
    }
    c->next = th->conns;
    if (c->next) c->next->prev = c;
    th->conns = c;
    return c;
}

struct sl_conn *net_connect(struct sl_thread *th, const struct netaddr *dst, uint8_t proto,
                            uint8_t role)
{
    struct netaddr src;
    int one = 1;
    int fd = socket(dst->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        static atomic_bool said;
        if ((errno == EMFILE || errno == ENFILE) && !atomic_exchange(&said, true))
            fprintf(stderr, "sipload: out of file descriptors (ulimit -n)\n");
        return NULL;
    }
    if (net_src_addr(th, dst, &src)) {
        /* the port is chosen at connect, per 4-tuple: many connections per
         * source address */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, &src.sa, src.len) < 0) {
            close(fd);
            return NULL;
        }
    }
    if (!th->o->nagle) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, &dst->sa, dst->len) < 0 && errno != EINPROGRESS) {
        close(fd);
        return NULL;
    }
    return conn_new(th, fd, proto, role, true, CS_CONNECTING);
}

int net_listen(struct sl_thread *th, struct sl_listener *l, const struct netaddr *a, uint8_t proto)
{
    int one = 1;
    l->type = EV_LISTEN;
    l->proto = proto;
    l->fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(l->fd, &a->sa, a->len) < 0 || listen(l->fd, 4096) < 0 ||
        net_epoll_add(th, l->fd, l, EPOLLIN) < 0) {
        fprintf(stderr, "sipload: listen: %s\n", strerror(errno));
        return -1;
    }
    return 0;
}

static void opened(struct sl_thread *th, struct sl_conn *c);
static void conn_read(struct sl_thread *th, struct sl_conn *c);
static void conn_flush(struct sl_thread *th, struct sl_conn *c);

static void handshake(struct sl_thread *th, struct sl_conn *c)
{
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->state = CS_OPEN;
        opened(th, c);
        return;
    }
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        set_want_out(th, c, false);
        return;
    case SSL_ERROR_WANT_WRITE:
        set_want_out(th, c, true);
        return;
    default:
        ERR_clear_error();
        net_conn_close(th, c, CLOSE_TLS);
    }
}

static bool tls_start(struct sl_thread *th, struct sl_conn *c, const struct netaddr *peer)
{
    const struct sl_opts *o = th->o;
    SSL_CTX *ctx = c->outbound ? th->run->cli_ctx : th->run->srv_ctx;
    if (!ctx || !(c->ssl = SSL_new(ctx)) || !SSL_set_fd(c->ssl, c->fd)) return false;
    if (c->outbound) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        char ip[NETADDR_STRLEN];
        if (o->tls_name) {
            if (!X509_VERIFY_PARAM_set1_host(vp, o->tls_name, strlen(o->tls_name)) ||
                !SSL_set_tlsext_host_name(c->ssl, o->tls_name))
                return false;
        } else if (netaddr_ip_str(peer, ip, sizeof ip) > 0) {
            if (!X509_VERIFY_PARAM_set1_ip_asc(vp, ip)) return false;
        }
        SSL_set_connect_state(c->ssl);
    } else {
        SSL_set_accept_state(c->ssl);
    }
    c->state = CS_HANDSHAKE;
    return true;
}

static void connect_done(struct sl_thread *th, struct sl_conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    struct netaddr peer;
    socklen_t plen = sizeof peer.in6;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == EINPROGRESS || err == EALREADY) return;
    if (err || getpeername(c->fd, &peer.sa, &plen) < 0) {
        net_conn_close(th, c, CLOSE_ERROR);
        return;
    }
    peer.len = plen;
    set_want_out(th, c, false);
    if (c->proto != SL_TLS) {
        c->state = CS_OPEN;
        opened(th, c);
        return;
    }
    if (!tls_start(th, c, &peer)) {
        ERR_clear_error();
        net_conn_close(th, c, CLOSE_TLS);
        return;
    }
    handshake(th, c);
}

void net_accept(struct sl_thread *th, struct sl_listener *l)
{
    int one = 1;
    for (int k = 0; k < ACCEPTS_PER_EVT; k++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sl_conn *c = conn_new(th, fd, l->proto, ROLE_UAS, false, CS_OPEN);
        if (!c) continue;
        if (l->proto == SL_TLS) {
            if (!tls_start(th, c, NULL)) {
                ERR_clear_error();
                net_conn_close(th, c, CLOSE_TLS);
                continue;
            }
            handshake(th, c);
        } else {
            opened(th, c);
        }
    }
}

/* Established (TCP connected, or TLS handshake done). Bytes may already
 * wait in the TLS layer, which the socket no longer signals: read now. */
static void opened(struct sl_thread *th, struct sl_conn *c)
{
    socklen_t len = sizeof c->local.in6;
    if (getsockname(c->fd, &c->local.sa, &len) == 0) c->local.len = len;
    if (c->role == ROLE_PHONE && c->phone)
        phone_on_open(th, c->phone);
    else if (c->role == ROLE_UAC)
        uac_sender_up(th, c->sender, c);
    if (c->state == CS_OPEN && c->ssl) conn_read(th, c);
    /* what the role queued goes out with the loop turn's flush */
}

/* ---- reading ---- */

/* Frames and delivers what rbuf holds. false when c closed meanwhile. */
static bool deliver(struct sl_thread *th, struct sl_conn *c)
{
    size_t off = 0;
    while (off < c->rlen) {
        size_t mlen = 0, left = c->rlen - off;
        const char *p = c->rbuf + off;
        /* A phone sends the pings: a CRLF is the proxy's pong, also alone
         * (the framer waits for a 3rd byte to tell a pong from a ping). */
        if (c->phone && left >= 2 && p[0] == '\r' && p[1] == '\n' &&
            (left < 4 || p[2] != '\r' || p[3] != '\n')) {
            phone_on_pong(th, c->phone);
            off += 2;
            continue;
        }
        enum framer_result r = framer_feed(&c->fr, p, left, &th->lim, &mlen);
        if (r == FRAMER_INCOMPLETE) break;
        if (r == FRAMER_INVALID || mlen == 0 || mlen > left) {
            th->st.bad_msgs++;
            net_conn_close(th, c, CLOSE_ERROR);
            return false;
        }
        if (r == FRAMER_MESSAGE) {
            struct sl_peer peer = {.c = c};
            sl_dispatch(th, &peer, p, mlen, false);
        } else if (r == FRAMER_KEEPALIVE) {
            net_conn_write(th, c, "\r\n", 2);
        } else if (r == FRAMER_PONG && c->phone) {
            phone_on_pong(th, c->phone);
        }
        if (c->state == CS_CLOSED) return false;
        off += mlen;
    }
    if (off) {
        c->rlen -= (uint32_t)off;
        memmove(c->rbuf, c->rbuf + off, c->rlen);
    }
    return true;
}

/* Bytes read into rbuf: > 0, 0 for nothing now, -1 when the connection ended. */
static int read_some(struct sl_conn *c)
{
    size_t room = c->rcap - c->rlen;
    if (!c->ssl) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, room, MSG_DONTWAIT);
        if (n > 0) return (int)n;
        return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    int n = SSL_read(c->ssl, c->rbuf + c->rlen, (int)room);
    if (n > 0) return n;
    int e = SSL_get_error(c->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        c->wr_wants_read = true; /* retried by the flush */
        return 0;
    }
    return -1;
}

static void conn_read(struct sl_thread *th, struct sl_conn *c)
{
    for (int k = 0; k < READS_PER_EVENT; k++) {
        if (c->rlen == c->rcap) {
            uint32_t cap = c->rcap ? c->rcap * 2 : RBUF_INIT;
            char *p = cap <= RBUF_MAX ? realloc(c->rbuf, cap) : NULL;
            if (!p) {
                th->st.bad_msgs++;
                net_conn_close(th, c, CLOSE_ERROR);
                return;
            }
            c->rbuf = p;
            c->rcap = cap;
        }
        size_t room = c->rcap - c->rlen;
        int n = read_some(c);
        if (n < 0) {
            net_conn_close(th, c, CLOSE_ERROR);
            return;
        }
        if (n == 0) break;
        c->rlen += (uint32_t)n;
        if (!deliver(th, c)) return;
        if (!c->ssl && (size_t)n < room) break; /* short read: the socket is most likely empty */
    }
    if (c->wr_wants_read && c->wlen) conn_flush(th, c);
    if (c->rlen == 0 && c->rbuf) { /* idle connections hold no buffer */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
}

/* ---- writing ---- */

void net_conn_write(struct sl_thread *th, struct sl_conn *c, const char *p, size_t n)
{
    if (c->state == CS_CLOSED) return;
    if (c->wlen + n > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 4096;
        while (cap < c->wlen + n)
            cap *= 2;
        char *grown = cap <= SL_WBUF_MAX ? realloc(c->wbuf, cap) : NULL;
        if (!grown) { /* the peer does not read: give up on it */
            net_conn_close(th, c, CLOSE_ERROR);
            return;
        }
        c->wbuf = grown;
        c->wcap = (uint32_t)cap;
    }
    memcpy(c->wbuf + c->wlen, p, n);
    c->wlen += (uint32_t)n;
    if (!c->dirty) {
        c->dirty = true;
        c->next_dirty = th->dirty_conn;
        th->dirty_conn = c;
    }
}

static void conn_flush(struct sl_thread *th, struct sl_conn *c)
{
    uint32_t off = 0;
    if (c->state != CS_OPEN) return; /* sent once connected */
    c->wr_wants_read = false;
    while (off < c->wlen) {
        int n;
        if (c->ssl) {
            n = SSL_write(c->ssl, c->wbuf + off, (int)(c->wlen - off));
            if (n <= 0) {
                int e = SSL_get_error(c->ssl, n);
                ERR_clear_error();
                if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
                    net_conn_close(th, c, CLOSE_ERROR);
                    return;
                }
                c->wr_wants_read = e == SSL_ERROR_WANT_READ; /* retried after a read */
                break;
            }
        } else {
            ssize_t r = send(c->fd, c->wbuf + off, c->wlen - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0 && errno != EAGAIN) {
                net_conn_close(th, c, CLOSE_ERROR);
                return;
            }
            if (r < 0) break;
            n = (int)r;
        }
        off += (uint32_t)n;
    }
    c->wlen -= off;
    if (c->wlen && off) memmove(c->wbuf, c->wbuf + off, c->wlen);
    if (c->wlen == 0 && c->role == ROLE_PHONE) { /* idle phones hold no buffer */
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    set_want_out(th, c, c->wlen > 0 && !c->wr_wants_read);
}

void net_conn_event(struct sl_thread *th, struct sl_conn *c, uint32_t events)
{
    switch (c->state) {
    case CS_CONNECTING:
        connect_done(th, c);
        return;
    case CS_HANDSHAKE:
        handshake(th, c);
        return;
    case CS_OPEN:
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) conn_read(th, c);
        if (c->state == CS_OPEN && (events & EPOLLOUT)) conn_flush(th, c);
        return;
    default:
        return;
    }
}

void net_flush_all(struct sl_thread *th)
{
    struct sl_udp *u;
    struct sl_conn *c;
    while ((u = th->dirty_udp) != NULL) {
        th->dirty_udp = u->next_dirty;
        u->dirty = false;
        net_udp_flush(th, u);
    }
    while ((c = th->dirty_conn) != NULL) {
        th->dirty_conn = c->next_dirty;
        c->dirty = false;
        if (c->state == CS_OPEN && !c->want_out) conn_flush(th, c);
    }
}

void net_conn_close(struct sl_thread *th, struct sl_conn *c, enum sl_close why)
{
    if (c->state == CS_CLOSED) return;
    bool was_open = c->state == CS_OPEN;
    if (c->ssl && was_open && why == CLOSE_DONE) SSL_shutdown(c->ssl);
    ERR_clear_error();
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    c->state = CS_CLOSED;
    if (c->prev)
        c->prev->next = c->next;
    else
        th->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->role == ROLE_PHONE && c->phone) {
        struct sl_phone *ph = c->phone;
        c->phone = NULL;
        phone_on_closed(th, ph, why);
    } else if (c->role == ROLE_UAC && c->sender >= 0) {
        uac_sender_down(th, c->sender);
    }
    c->next_zombie = th->zombies;
    th->zombies = c;
}

/* Frees the connections closed during the loop turn: nothing refers to
 * them any more (the dirty list was emptied by the flush before). */
void net_reap(struct sl_thread *th)
{
    struct sl_conn *c;
    while ((c = th->zombies) != NULL) {
        th->zombies = c->next_zombie;
        SSL_free(c->ssl);
        free(c->rbuf);
        free(c->wbuf);
        free(c);
    }
}

/* ---- TLS contexts ---- */

static SSL_CTX *ctx_new(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* every phone a full handshake: a reconnect storm of phones that
     * lost their sessions, the proxy's worst case */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

SSL_CTX *net_tls_client_ctx(const struct sl_opts *o)
{
    SSL_CTX *ctx = ctx_new();
    if (!ctx) return NULL;
    if (o->ca) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) {
            fprintf(stderr, "sipload: --ca %s: cannot load\n", o->ca);
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (o->cert && o->key &&
        (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "sipload: --cert/--key: cannot load\n");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

SSL_CTX *net_tls_server_ctx(const struct sl_opts *o)
{
    SSL_CTX *ctx = ctx_new();
    if (!ctx) return NULL;
    if (!o->cert || !o->key || SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "sipload: the TLS UAS needs --cert and --key\n");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void udp_free(struct sl_udp *u)
{
    if (!u) return;
    close(u->fd);
    free(u);
}

void net_cleanup(struct sl_thread *th)
{
    while (th->conns) { /* the run is over: no role hears of it */
        th->conns->phone = NULL;
        th->conns->sender = -1;
        net_conn_close(th, th->conns, CLOSE_ERROR);
    }
    net_reap(th);
    for (unsigned i = 0; i < th->nsenders; i++)
        udp_free(th->senders[i].u);
    udp_free(th->uas_udp);
    if (th->uas_lis.type) close(th->uas_lis.fd);
    free(rx);
    rx = NULL;
}
