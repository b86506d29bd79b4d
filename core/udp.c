/* UDP on a worker: batched datagram reads (recvmmsg) and sends from the
 * listener's shared socket or the worker's private port. */
#include <errno.h>
#include <time.h> /* before linux/errqueue.h, which needs struct timespec */

#include <linux/errqueue.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/sipuri.h"
#include "core/worker-int.h"

#define UDP_BATCHES_PER_EVT 4 /* then let other sockets have a turn */

static bool only_crlf(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != '\r' && p[i] != '\n') return false;
    return true;
}

/* Reads every ICMP error the kernel queued on fd (IP_RECVERR) and hands
 * each unreachable destination to the layer above. Bounded per call. */
static void drain_errors(struct worker *w, int fd)
{
    for (int k = 0; k < 64; k++) {
        struct netaddr dst;
        char ctl[512], b[1];
        struct iovec iov = {b, sizeof b};
        struct msghdr h = {.msg_name = &dst.sa,
                           .msg_namelen = sizeof dst.in6,
                           .msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = ctl,
                           .msg_controllen = sizeof ctl};
        memset(&dst, 0, sizeof dst);
        if (recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return;
        dst.len = h.msg_namelen;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
            if (!((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
                  (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)))
                continue;
            struct sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(c), sizeof ee);
            bool icmp = ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6;
            if (icmp && dst.len && w->rt->h->on_unreachable)
                w->rt->h->on_unreachable(w, &dst, (int)ee.ee_errno);
        }
    }
}

static void read_data(struct worker *w, unsigned li, int fd);

void udp__read(struct worker *w, unsigned li, int fd, uint32_t events)
{
    if (events & EPOLLERR) drain_errors(w, fd);
    read_data(w, li, fd);
}

/* The datagrams waiting on fd, in batches. */
static void read_data(struct worker *w, unsigned li, int fd)
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
            if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) return;
            /* a queued ICMP error is reported here first (IP_RECVERR):
             * hand it over and read on */
            if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH ||
                err == EHOSTDOWN || err == EPROTO) {
                drain_errors(w, fd);
                continue;
            }
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
                       ADDR_STR(&rt->from[i], a));
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
            rt->h->on_message(w, &rx, buf, len);
        }
        if (n < UDP_BATCH) return;
    }
}

/* The socket worker_send() sends from for listener (maybe or'ed with
 * WORKER_SEND_PRIVATE; -1: any UDP listener of dst's family), or -errno. */
static int send_fd(struct worker *w, int listener, const struct netaddr *dst)
{
    const struct config *cfg = w->cfg;
    struct wlistener *l = NULL;

    if (listener >= 0) {
        bool priv = listener & WORKER_SEND_PRIVATE;
        listener &= ~WORKER_SEND_PRIVATE;
        if ((unsigned)listener >= cfg->nlisten || cfg->listen[listener].proto != SIP_TRANSPORT_UDP)
            return -EINVAL;
        if (cfg->listen[listener].addr.sa.sa_family != dst->sa.sa_family) return -EAFNOSUPPORT;
        l = &w->rt->lis[listener];
        if (priv && w->rt->priv_fd[listener] >= 0) return w->rt->priv_fd[listener];
    } else {
        for (unsigned i = 0; i < cfg->nlisten && !l; i++)
            if (cfg->listen[i].proto == SIP_TRANSPORT_UDP &&
                cfg->listen[i].addr.sa.sa_family == dst->sa.sa_family)
                l = &w->rt->lis[i];
        if (!l) return -EAFNOSUPPORT;
    }
    return l->fd < 0 ? -ENOTCONN : l->fd;
}

int udp__send(struct worker *w, int listener, const struct netaddr *dst, const char *buf,
              size_t len)
{
    char a[NETADDR_STRLEN];
    int fd = send_fd(w, listener, dst);
    ssize_t n;

    if (fd < 0) return fd;
    n = sendto(fd, buf, len, MSG_DONTWAIT, &dst->sa, dst->len);
    if (n < 0) {
        int err = errno;
        STAT_INC(w, dropped);
        LOG_RL(LOG_WARN, "udp send to %s: %s", ADDR_STR(dst, a), strerror(err));
        return -err;
    }
    STAT_INC(w, tx_msgs);
    STAT_ADD(w, tx_bytes, (uint64_t)n);
    return 0;
}

/* Adds a socket's drop count to *drops, and whether over a quarter of its
 * buffer waits unread to *full (SO_MEMINFO); nothing when the kernel does
 * not say. */
static void meminfo(int fd, uint64_t *drops, bool *full)
{
    uint32_t mi[SK_MEMINFO_VARS];
    socklen_t len = sizeof mi;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mi, &len) < 0 ||
        len < sizeof(uint32_t) * (SK_MEMINFO_DROPS + 1))
        return;
    *drops += mi[SK_MEMINFO_DROPS];
    *full |= mi[SK_MEMINFO_RMEM_ALLOC] > mi[SK_MEMINFO_RCVBUF] / 4;
}

uint64_t worker_rx_overflow_ms(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    if (rt->rx_look_ms == w->now_ms) return rt->rx_overflow_ms;
    uint64_t drops = 0;
    bool full = false;
    for (unsigned i = 0; i < w->cfg->nlisten; i++) {
        if (w->cfg->listen[i].proto != SIP_TRANSPORT_UDP) continue;
        meminfo(rt->lis[i].fd, &drops, &full);
        meminfo(rt->priv_fd[i], &drops, &full);
    }
    /* a socket counts its drops from 0 when it is created, before start */
    if (full || drops > rt->rx_drops) rt->rx_overflow_ms = w->now_ms;
    rt->rx_drops = drops;
    rt->rx_look_ms = w->now_ms;
    return rt->rx_overflow_ms;
}
