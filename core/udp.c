/* UDP on a worker: batched datagram reads (recvmmsg) and sends from the
 * listener's shared socket or the worker's private port. */
#include <errno.h>
#include <string.h>
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

void udp__read(struct worker *w, unsigned li, int fd)
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
