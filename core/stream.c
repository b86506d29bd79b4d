/* Bytes in and out of an open stream connection: the write queue, send and
 * receive through TCP or TLS, and Content-Length framing of what arrives. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/sipuri.h"
#include "core/worker-int.h"

#define READS_PER_EVT       1
#define TLS_RECORDS_PER_EVT 4 /* BoringSSL reads one record at a time */

/* ---- the queued list ------------------------------------------------- */

static void queue_link(struct worker_rt *rt, struct conn *c)
{
    c->qnext = rt->queued;
    if (c->qnext) c->qnext->qpprev = &c->qnext;
    rt->queued = c;
    c->qpprev = &rt->queued;
    rt->nqueued++;
}

static void queue_unlink(struct worker_rt *rt, struct conn *c)
{
    *c->qpprev = c->qnext;
    if (c->qnext) c->qnext->qpprev = c->qpprev;
    c->qnext = NULL;
    c->qpprev = NULL;
    rt->nqueued--;
}

void stream__unqueue(struct worker *w, struct conn *c)
{
    if (!c->wq_len) return;
    w->rt->queued_bytes -= c->wq_len;
    c->wq_len = 0;
    queue_unlink(w->rt, c);
    STAT_SET(w, queued_bytes, w->rt->queued_bytes);
}

/* Over --max-queued-total: closes the connections holding the most unsent
 * bytes, the slowest readers, until the worker is 1/16 under the budget
 * (so that the next write does not start over). Each round closes those
 * holding at least half of the largest queue: slowest first within a
 * factor of two, one walk of the queued list per round, and the largest
 * queue halves from round to round. */
static void queue_budget(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    uint64_t budget = (uint64_t)w->cfg->max_queued_total_mb << 20;
    uint64_t target = budget - budget / 16;

    if (rt->queued_bytes <= budget) return;
    while (rt->queued_bytes > target && rt->queued) {
        size_t most = 0, floor;
        for (struct conn *c = rt->queued; c; c = c->qnext)
            if (c->wq_len > most) most = c->wq_len;
        floor = most / 2 ? most / 2 : 1;
        for (struct conn *c = rt->queued, *next; c && rt->queued_bytes > target; c = next) {
            next = c->qnext; /* closing c unlinks it, not its successor */
            if (c->wq_len >= floor)
                conn__close_limit(w, c, LIMIT_QUEUE_TOTAL,
                                  "among the slowest readers over --max-queued-total");
        }
    }
}

/* ---- output ---------------------------------------------------------- */

static int wq_append(struct worker *w, struct conn *c, const char *buf, size_t len)
{
    struct worker_rt *rt = w->rt;
    size_t need = c->wq_len + len;

    if (c->wq_off + need > c->wq_cap) {
        if (c->wq_len) memmove(c->wq, c->wq + c->wq_off, c->wq_len);
        c->wq_off = 0;
        if (need > c->wq_cap) {
            size_t cap = c->wq_cap ? c->wq_cap * 2 : 4096;
            char *grown;
            while (cap < need)
                cap *= 2;
            if (cap > w->cfg->max_queued_bytes) cap = w->cfg->max_queued_bytes;
            grown = realloc(c->wq, cap);
            if (!grown) return -ENOMEM;
            c->wq = grown;
            c->wq_cap = cap;
        }
    }
    memcpy(c->wq + c->wq_off + c->wq_len, buf, len);
    if (c->wq_len == 0) queue_link(rt, c);
    c->wq_len += len;
    rt->queued_bytes += len;
    STAT_SET(w, queued_bytes, rt->queued_bytes);
    return 0;
}

/* Hands bytes to the connection: send() for TCP, SSL_write() for TLS
 * (which needs the same bytes again after it could not take them). Returns
 * the bytes taken, 0 when the socket is full (or TLS waits to read), or
 * -errno when the connection is broken. */
static ssize_t send_some(struct conn *c, const char *buf, size_t len)
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
void stream__update_want_out(struct worker *w, struct conn *c)
{
    conn__set_want_out(w, c,
                       c->tls_rd_wants_write || (c->wq_len && !c->tls_wr_wants_read) ||
                           c->state == CONN_CONNECTING);
}

int stream__flush(struct worker *w, struct conn *c)
{
    if (c->state != CONN_OPEN) return 0;
    while (c->wq_len) {
        ssize_t n = send_some(c, c->wq + c->wq_off, c->wq_len);
        if (n < 0) {
            conn__close(w, c, strerror((int)-n));
            return (int)n;
        }
        if (n == 0) break;
        STAT_ADD(w, tx_bytes, (uint64_t)n);
        c->wq_off += (size_t)n;
        c->wq_len -= (size_t)n;
        w->rt->queued_bytes -= (size_t)n;
        if (c->wq_len == 0) queue_unlink(w->rt, c);
    }
    STAT_SET(w, queued_bytes, w->rt->queued_bytes);
    if (c->wq_len == 0 && c->wq) {
        free(c->wq);
        c->wq = NULL;
        c->wq_off = c->wq_cap = 0;
    }
    stream__update_want_out(w, c);
    return 0;
}

/* stream__write() without counting as traffic (a keep-alive answer). */
static int write_bytes(struct worker *w, struct conn *c, const char *buf, size_t len)
{
    if (c->state == CONN_CLOSED) return -ENOTCONN;
    if (c->state == CONN_OPEN && c->wq_len == 0) {
        while (len) {
            ssize_t n = send_some(c, buf, len);
            if (n < 0) {
                conn__close(w, c, strerror((int)-n));
                return (int)n;
            }
            if (n == 0) break;
            STAT_ADD(w, tx_bytes, (uint64_t)n);
            buf += n;
            len -= (size_t)n;
        }
        if (len == 0) return 0;
    }
    if (len > w->cfg->max_queued_bytes - c->wq_len) {
        conn__close_limit(w, c, LIMIT_QUEUE_CONNECTION,
                          "peer not reading, --max-queued-bytes reached");
        return -ENOBUFS;
    }
    if (wq_append(w, c, buf, len) < 0) {
        conn__close(w, c, "out of memory");
        return -ENOMEM;
    }
    queue_budget(w);
    if (c->state == CONN_CLOSED) return -ENOBUFS; /* it was among the slowest */
    if (c->state == CONN_OPEN) stream__update_want_out(w, c);
    return 0;
}

int stream__write(struct worker *w, struct conn *c, const char *buf, size_t len)
{
    if (c->state != CONN_CLOSED) conn__touch(w, c, conn__window(w, buf, len));
    return write_bytes(w, c, buf, len);
}

/* ---- input ----------------------------------------------------------- */

/* A keep-alive (ping or pong) is traffic only on a held connection: a
 * registered phone's keeps it alive past its hold for --idle-timeout,
 * while an unregistered connection cannot live on pings alone. */
static void keepalive_seen(struct worker *w, struct conn *c)
{
    if (c->hold_until_ms > w->now_ms) conn__touch(w, c, (uint64_t)w->cfg->idle_timeout_s * 1000);
}

/* Frames and delivers the messages in buf[0..len). Returns the bytes used,
 * or -1 when the connection closed meanwhile. *delivered counts results. */
static ssize_t frame(struct worker *w, struct conn *c, char *buf, size_t len, unsigned *delivered)
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
            conn__touch(w, c, conn__window(w, buf + off, mlen));
            w->rt->h->on_message(w, &rx, buf + off, mlen);
            break;
        }
        case FRAMER_KEEPALIVE:
            STAT_INC(w, keepalives);
            keepalive_seen(w, c);
            write_bytes(w, c, "\r\n", 2);
            if (w->rt->h->on_keepalive && c->state != CONN_CLOSED)
                w->rt->h->on_keepalive(w, c->ref, &c->peer, c->proto);
            break;
        case FRAMER_PONG:
            keepalive_seen(w, c);
            break;
        default:
            STAT_INC(w, bad_msgs);
            LOG_RL(LOG_INFO, "%s %s: unframeable stream (%s): closing",
                   sipuri_transport_name(c->proto), ADDR_STR(&c->peer, a),
                   sipmsg_err_str(c->framer.err));
            conn__close(w, c, "bad framing");
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
static ssize_t recv_some(struct worker *w, struct conn *c, char *buf, size_t room)
{
    size_t n = 0;

    if (!c->tls) {
        ssize_t r = recv(c->fd, buf, room, MSG_DONTWAIT);
        if (r < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
        return r;
    }
    if (c->tls_rd_wants_write) {
        c->tls_rd_wants_write = false;
        stream__update_want_out(w, c);
    }
    switch (tls_conn_read(c->tls, buf, room, &n)) {
    case TLS_OK:
        return (ssize_t)n;
    case TLS_WANT_READ:
        return -EAGAIN;
    case TLS_WANT_WRITE: /* e.g. answering a KeyUpdate into a full socket */
        c->tls_rd_wants_write = true;
        stream__update_want_out(w, c);
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
void stream__read(struct worker *w, struct conn *c)
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
                LOG_RL(LOG_INFO, "%s %s: message above the size limit: closing",
                       sipuri_transport_name(c->proto), ADDR_STR(&c->peer, a));
                conn__close(w, c, "message too large");
                return;
            }
            if (err < 0) {
                STAT_INC(w, dropped);
                conn__close(w, c, "out of memory");
                return;
            }
            buf = c->rbuf;
            room = c->rcap - c->rlen;
            n = recv_some(w, c, buf + c->rlen, room);
        } else {
            buf = rt->sbuf;
            room = rt->sbuf_cap;
            n = recv_some(w, c, buf, room);
        }
        if (n == 0) {
            conn__close(w, c, "closed by peer");
            return;
        }
        if (n < 0) {
            if (n == -EAGAIN) return;
            if (n == -EINTR) continue;
            conn__close(w, c, strerror((int)-n));
            return;
        }
        STAT_ADD(w, rx_bytes, (uint64_t)n);

        if (own) {
            c->rlen += (size_t)n;
            used = frame(w, c, c->rbuf, c->rlen, &delivered);
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
            used = frame(w, c, buf, (size_t)n, &delivered);
            if (used < 0) return;
            if ((size_t)used < (size_t)n) {
                size_t rest = (size_t)n - (size_t)used;
                if (rbuf_grow(w, c, rest) < 0) {
                    conn__close(w, c, "out of memory");
                    return;
                }
                memcpy(c->rbuf, buf + used, rest);
                c->rlen = rest;
            }
        }

        /* The message deadline runs from the first byte of the message now
         * pending (an accepted connection's first one: from the accept). */
        if (c->rlen == 0 && delivered) {
            c->msg_deadline = 0;
        } else if (c->rlen > 0 && (delivered || !c->msg_deadline)) {
            c->msg_deadline = w->now_ms + w->cfg->message_timeout_ms;
            conn__arm(w, c);
        }
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
