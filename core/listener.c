/* A worker's listening sockets: opening them (SO_REUSEPORT, private UDP
 * ports), accepting with the connection limit, the accept pause, and what
 * the layer above asks about them for Via. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sipuri.h"
#include "core/worker-int.h"

#define ACCEPTS_PER_EVT 64
#define ACCEPT_PAUSE_MS 100 /* after EMFILE and friends */
/* Receive buffer asked for every UDP socket (the kernel caps it at
 * net.core.rmem_max). The default (net.core.rmem_default, 208 KB) holds
 * about 300 datagrams: a worker descheduled for a few milliseconds at
 * thousands of calls per second (a CPU quota, a busy host) loses datagrams
 * and the calls pay 500 ms retransmissions. */
#define UDP_RCVBUF (4 << 20)

/* ---- opening --------------------------------------------------------- */

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

int listener__recverr(int fd, int family)
{
    int one = 1;
    return family == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one)
                              : setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
}

/* Asks for UDP_RCVBUF; a smaller grant (the sysctl's cap) is logged once. */
static void udp_rcvbuf(int fd)
{
    static atomic_bool told;
    int want = UDP_RCVBUF, got = 0;
    socklen_t len = sizeof got;

    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) == 0 && got / 2 < want &&
        !atomic_exchange(&told, true)) { /* the kernel reports twice its payload */
        LOG_I("udp receive buffers are %d KB (asked %d KB): raise net.core.rmem_max for "
              "bursts at high rates",
              got / 2048, want / 1024);
    }
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
        (type == SOCK_DGRAM && listener__recverr(fd, l->addr.sa.sa_family) < 0) ||
        (type == SOCK_STREAM && listen(fd, SOMAXCONN) < 0)) {
        err = -errno;
        close(fd);
        return err;
    }
    if (type == SOCK_DGRAM) udp_rcvbuf(fd);
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
        bind(fd, &a.sa, a.len) < 0 || getsockname(fd, &a.sa, &alen) < 0 ||
        listener__recverr(fd, a.sa.sa_family) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    udp_rcvbuf(fd);
    *port = (uint16_t)netaddr_port(&a);
    *out = fd;
    return 0;
}

static void listener_resume(struct worker *w, struct timer *t);

void listener__init(struct worker_rt *rt)
{
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++) {
        rt->lis[i].fd = -1;
        rt->priv_fd[i] = -1;
        timer_init(&rt->lis[i].resume, listener_resume);
    }
}

/* Private ports: the k-th UDP listener's socket of worker id gets
 * BASE + k * workers + id, or a port the kernel picks. */
static int open_privates(struct worker *w, unsigned nworkers)
{
    const struct config *cfg = w->cfg;
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];
    int err;

    for (unsigned i = 0, k = 0; i < cfg->nlisten && cfg->worker_ports >= 0; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        if (l->proto != SIP_TRANSPORT_UDP) continue;
        uint32_t port =
            cfg->worker_ports > 0 ? (uint32_t)cfg->worker_ports + k * nworkers + w->id : 0;
        k++;
        if (port > 65535) {
            LOG_E("--worker-ports %d: worker %u's port for udp:%s is above 65535",
                  cfg->worker_ports, w->id, ADDR_STR(&l->addr, a));
            return -ERANGE;
        }
        rt->priv_port[i] = (uint16_t)port;
        err = open_private(l, &rt->priv_port[i], &rt->priv_fd[i]);
        if (err < 0) {
            LOG_E("worker %u: cannot open its private port %u on udp:%s: %s", w->id, port,
                  ADDR_STR(&l->addr, a), strerror(-err));
            return err;
        }
        LOG_D("worker %u: private udp port %u on %s", w->id, rt->priv_port[i], l->host);
    }
    return 0;
}

int listener__open_all(struct worker *w, unsigned nworkers)
{
    const struct config *cfg = w->cfg;
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];
    int err;

    for (unsigned i = 0; i < cfg->nlisten; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        if (w->id == 0) {
            err = probe_free(l, l->proto == SIP_TRANSPORT_UDP ? SOCK_DGRAM : SOCK_STREAM);
            if (err == 0) err = open_listener(l, &rt->lis[i].fd);
        } else {
            err = open_listener(l, &rt->lis[i].fd);
        }
        if (err < 0) {
            LOG_E("cannot listen on %s:%s: %s", sipuri_transport_name(l->proto),
                  ADDR_STR(&l->addr, a), strerror(-err));
            return err;
        }
        rt->lis[i].proto = l->proto;
    }
    return open_privates(w, nworkers);
}

void listener__close_all(struct worker_rt *rt)
{
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
        if (rt->lis[i].fd >= 0) close(rt->lis[i].fd);
    for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
        if (rt->priv_fd[i] >= 0) close(rt->priv_fd[i]);
}

int listener__register(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    int err;

    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        err = worker__epoll_set(w, EPOLL_CTL_ADD, rt->lis[i].fd, EPOLLIN, LISTENER_TAG(i));
        if (err < 0) return err;
        if (rt->priv_fd[i] < 0) continue;
        err = worker__epoll_set(w, EPOLL_CTL_ADD, rt->priv_fd[i], EPOLLIN,
                                LISTENER_TAG(i | PRIVATE_BIT));
        if (err < 0) return err;
    }
    return 0;
}

void listener__close_streams(struct worker *w)
{
    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        struct wlistener *l = &w->rt->lis[i];
        if (l->proto == SIP_TRANSPORT_UDP || l->fd < 0) continue;
        timer_cancel(&l->resume);
        close(l->fd);
        l->fd = -1;
    }
}

/* ---- accepting ------------------------------------------------------- */

static void listener_resume(struct worker *w, struct timer *t)
{
    struct wlistener *l = container_of(t, struct wlistener, resume);
    unsigned i = (unsigned)(l - w->rt->lis);

    if (l->fd >= 0 && worker__epoll_set(w, EPOLL_CTL_MOD, l->fd, EPOLLIN, LISTENER_TAG(i)) < 0)
        worker_timer_arm(w, t, ACCEPT_PAUSE_MS);
}

/* accept4() failed with err: false to stop this event's accepts (and, out of
 * descriptors or memory, pause the listener: level-triggered, the queue
 * would wake us forever). */
static bool accept_error(struct worker *w, unsigned li, int err)
{
    const struct listen_cfg *lc = &w->cfg->listen[li];
    struct wlistener *l = &w->rt->lis[li];
    char a[NETADDR_STRLEN];

    if (err == EAGAIN || err == EWOULDBLOCK) return false;
    if (err == EINTR || err == ECONNABORTED || err == EPROTO) return true;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        LOG_RL(LOG_ERR, "accept on %s:%s: %s: pausing accepts", sipuri_transport_name(lc->proto),
               ADDR_STR(&lc->addr, a), strerror(err));
        worker__epoll_set(w, EPOLL_CTL_MOD, l->fd, 0, LISTENER_TAG(li));
        worker_timer_arm(w, &l->resume, ACCEPT_PAUSE_MS);
        return false;
    }
    LOG_RL(LOG_WARN, "accept: %s", strerror(err));
    return false;
}

/* Takes ownership of fd, accepted on listener li from peer. Over a limit
 * it is closed at once: before any TLS byte, before any allocation. */
static void accepted(struct worker *w, unsigned li, int fd, const struct netaddr *peer)
{
    struct worker_rt *rt = w->rt;
    const struct config *cfg = w->cfg;
    struct wlistener *l = &rt->lis[li];
    char a[NETADDR_STRLEN];
    bool tls = l->proto == SIP_TRANSPORT_TLS;
    struct conn *c;
    int32_t ip_slot;

    if (!conn__reserve(w)) {
        close(fd);
        STAT_INC(w, conns_refused);
        LOG_RL(LOG_WARN, "refused %s connection from %s: --max-connections %u reached",
               sipuri_transport_name(l->proto), ADDR_STR(peer, a), cfg->max_connections);
        return;
    }
    ip_slot = iplimit_acquire(rt->run->per_ip, peer, cfg->max_connections_per_ip);
    if (ip_slot == IPLIMIT_FULL) {
        conn__unreserve(w);
        close(fd);
        STAT_LIMIT(w, LIMIT_CONNECTIONS_PER_IP);
        LOG_RL(LOG_WARN, "refused %s connection from %s: --max-connections-per-ip %u reached",
               sipuri_transport_name(l->proto), ADDR_STR(peer, a), cfg->max_connections_per_ip);
        return;
    }
    c = conn__new(w, fd, l->proto, li, peer, true, tls ? CONN_HANDSHAKE : CONN_OPEN);
    if (!c) {
        iplimit_release(rt->run->per_ip, ip_slot);
        conn__unreserve(w);
        STAT_INC(w, dropped);
        return;
    }
    c->ip_slot = ip_slot;
    STAT_INC(w, conns_accepted);
    if (tls) {
        conn_tls__start_server(w, c);
    } else { /* An accepted connection must deliver its first message in time too. */
        c->msg_deadline = w->now_ms + cfg->message_timeout_ms;
        conn__arm(w, c);
    }
}

void listener__accept(struct worker *w, unsigned li)
{
    struct wlistener *l = &w->rt->lis[li];

    for (int k = 0; k < ACCEPTS_PER_EVT && l->fd >= 0; k++) {
        struct netaddr peer;
        socklen_t len = sizeof(peer.in6);
        int fd = accept4(l->fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (accept_error(w, li, errno)) continue;
            return;
        }
        peer.len = len;
        accepted(w, li, fd, &peer);
    }
}

/* ---- for Via --------------------------------------------------------- */

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
