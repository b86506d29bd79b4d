/* Driving BoringSSL handshakes on a worker's connections (tls/ turns bytes
 * into bytes; this decides when to call it and what a result means). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "core/log.h"
#include "core/worker-int.h"

int conn_tls__start_server(struct worker *w, struct conn *c)
{
    struct worker_rt *rt = w->rt;
    char a[NETADDR_STRLEN];

    /* The server handshake runs from the socket's events; nothing is
     * read as SIP before it completes, and it must within the limit. */
    c->tls = tls_conn_server(rt->tls, c->fd);
    if (!c->tls) {
        STAT_INC(w, dropped);
        LOG_RL(LOG_ERR, "tls connection from %s: %s", ADDR_STR(&c->peer, a),
               rt->tls ? "cannot create" : "no TLS context");
        conn__close(w, c, "tls setup failed");
        return -1;
    }
    /* Armed once, here: it bounds the whole handshake, whatever the
     * client sends or withholds meanwhile. */
    conn__arm_state(w, c, w->cfg->tls_handshake_timeout_ms);
    return 0;
}

void conn_tls__failed(struct worker *w, struct conn *c, enum tls_fail why)
{
    char a[NETADDR_STRLEN];

    STAT_INC(w, tls_fail[why]);
    if (c->inbound)
        LOG_RL(LOG_INFO, "tls handshake failed from %s: %s", ADDR_STR(&c->peer, a),
               tls_fail_str(why));
    else
        LOG_RL(LOG_WARN, "tls handshake failed with %s (%s%s): %s", ADDR_STR(&c->peer, a),
               c->tls_name ? "as " : "its IP address", c->tls_name ? c->tls_name : "",
               tls_fail_str(why));
    conn__close(w, c, "tls handshake failed");
}

static void established(struct worker *w, struct conn *c)
{
    char a[NETADDR_STRLEN];
    bool resumed = tls_conn_resumed(c->tls);

    c->state = CONN_OPEN;
    timer_cancel(&c->timer);
    STAT_INC(w, tls_handshakes);
    if (resumed) STAT_INC(w, tls_resumed);
    LOG_D("tls %s: %s established%s", ADDR_STR(&c->peer, a), tls_conn_version(c->tls),
          resumed ? " (resumed)" : "");
    if (c->inbound) {
        /* Acknowledge the client's Finished now. In TLS 1.3 BoringSSL sent
         * its session ticket with its own Finished (half-RTT), so nothing
         * answers the client's and the kernel would delay the ACK (40 ms);
         * a client whose socket keeps Nagle on (no TCP_NODELAY: many phones,
         * Python's ssl) holds its first request until that ACK arrives. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        /* An accepted connection must deliver its first message in time too. */
        c->msg_deadline = w->now_ms + w->cfg->message_timeout_ms;
    }
    conn__touch(w, c, (uint64_t)w->cfg->idle_timeout_s * 1000);
    conn__arm(w, c);
    if (c->wq_len)
        stream__flush(w, c);
    else
        stream__update_want_out(w, c);
}

void conn_tls__step(struct worker *w, struct conn *c)
{
    enum tls_fail why = TLS_FAIL_NONE;

    switch (tls_conn_handshake(c->tls, &why)) {
    case TLS_OK:
        established(w, c);
        break;
    case TLS_WANT_READ:
        conn__set_want_out(w, c, false);
        break;
    case TLS_WANT_WRITE:
        conn__set_want_out(w, c, true);
        break;
    default:
        conn_tls__failed(w, c, why == TLS_FAIL_NONE ? TLS_FAIL_PROTOCOL : why);
        break;
    }
}

/* Verifies the name the connection was opened for, or dst's IP address. */
void conn_tls__start_client(struct worker *w, struct conn *c)
{
    char ip[NETADDR_STRLEN], a[NETADDR_STRLEN];
    const char *name = c->tls_name;

    /* Never "": that would verify the chain only. */
    if (!name && netaddr_ip_str(&c->peer, ip, sizeof(ip)) > 0) name = ip;
    c->tls = name ? tls_conn_client(w->rt->tls, c->fd, name) : NULL;
    if (!c->tls) {
        STAT_INC(w, dropped);
        LOG_RL(LOG_ERR, "tls connection to %s: %s", ADDR_STR(&c->peer, a),
               w->rt->tls ? "cannot create" : "no TLS context");
        conn__close(w, c, "tls setup failed");
        return;
    }
    c->state = CONN_HANDSHAKE;
    conn__arm_state(w, c, w->cfg->tls_handshake_timeout_ms);
    conn_tls__step(w, c);
}

/* For the handshakes that start from now on. */
void conn_tls__swap(struct worker *w)
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
