/* Management HTTP port: one unpinned thread serving up to
 * --stats-max-clients connections at once (poll, non-blocking sockets),
 * each with one deadline for its TLS handshake, request and reply; it reads
 * the workers' counters, the SIP Servers' published state and the flow map
 * (as an RCU reader), and touches no worker's objects. GET /stats (JSON),
 * GET /metrics (Prometheus text format), GET /flows (JSON), GET /health. */
#include "core/mgmt.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mgmt-int.h"
#include "core/netaddr.h"
#include "core/proxy.h"
#include "core/slice.h"
#include "core/upstream.h"
#include "core/worker.h"
#include "registry/flowmap.h"
#include "registry/locmap.h"

#define MGMT_CONN_LIMIT_MS 5000 /* a whole connection, however it trickles in */
#define MGMT_POLL_MS       200  /* how soon a stop request is seen */
#define MGMT_ACCEPT_BURST  64   /* connections refused per turn, at most */
#define MGMT_REQ_MAX       8192

static struct {
    const struct config *cfg;
    int fd;
    pthread_t thread;
    bool running;
    _Atomic bool stop;
    struct tls_ctx *tls;                /* the thread's own; NULL: plain HTTP */
    _Atomic(struct tls_ctx *) tls_next; /* published by a reload */
    /* the thread's own: connections being served */
    struct client *clients; /* --stats-max-clients slots */
    unsigned nclients;
    struct pollfd *polls; /* the port, then one per client */
} mg = {.fd = -1};

/* ---- the connections --------------------------------------------------- */

enum client_state { CL_FREE = 0, CL_HANDSHAKE, CL_READ, CL_WRITE };

/* One management connection; a slot of mg.clients. The thread's own. */
struct client {
    int fd; /* -1 while the slot is free */
    SSL *tls;
    uint8_t state;  /* enum client_state */
    short events;   /* what the connection waits for: POLLIN or POLLOUT */
    uint64_t until; /* deadline (monotonic ms): handshake, request and reply */
    size_t len;
    char req[MGMT_REQ_MAX];
    char *out; /* the whole reply */
    size_t out_len, out_off;
};

static void client_close(struct client *c)
{
    if (c->tls) {
        tls_conn_shutdown(c->tls);
        tls_conn_free(c->tls);
    }
    close(c->fd);
    free(c->out);
    c->fd = -1;
    c->tls = NULL;
    c->out = NULL;
    c->state = CL_FREE;
}

/* Sets the reply: head and body in one buffer. body NULL: a HEAD answer,
 * headers only (Content-Length still blen). */
static void respond(struct client *c, int code, const char *reason, const char *type,
                    const char *extra, const char *body, size_t blen)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nServer: sipedge/" SIPEDGE_VERSION "\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n%sConnection: close\r\n\r\n",
                     code, reason, type, blen, extra ? extra : "");
    size_t hl = n > 0 && (size_t)n < sizeof head ? (size_t)n : 0;
    size_t total = hl + (body ? blen : 0);
    c->out = malloc(total ? total : 1);
    c->out_len = c->out ? total : 0;
    c->out_off = 0;
    if (!c->out) return;
    memcpy(c->out, head, hl);
    if (body) memcpy(c->out + hl, body, blen);
}

#define RESPOND_TEXT(c, code, reason, extra, msg)                                                  \
    respond(c, code, reason, "text/plain", extra, msg, sizeof msg - 1)

/* The reply to the complete request in c->req. */
static void answer(struct client *c)
{
    const char *req = c->req;
    size_t len = c->len;
    /* the request line, "METHOD SP PATH SP VERSION", read as a slice */
    const char *eol = memmem(req, len, "\r\n", 2);
    size_t line = eol ? (size_t)(eol - req) : 0;
    const char *sp1 = memchr(req, ' ', line);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', line - (size_t)(sp1 + 1 - req)) : NULL;
    if (!sp1 || !sp2 || !memmem(req, len, "\r\n\r\n", 4)) {
        RESPOND_TEXT(c, 400, "Bad Request", NULL, "bad request\n");
        return;
    }
    struct slice method = slice_make(req, (size_t)(sp1 - req));
    struct slice path = slice_make(sp1 + 1, (size_t)(sp2 - sp1 - 1));
    const char *q = memchr(path.ptr, '?', path.len);
    struct mgmt_page pg = {.query = SLICE_NULL};
    if (q) {
        pg.query = slice_make(q + 1, path.len - (size_t)(q + 1 - path.ptr));
        path.len = (size_t)(q - path.ptr);
    }
    const struct mgmt_endpoint *ep = mgmt__endpoint(path);
    if (!ep) {
        RESPOND_TEXT(c, 404, "Not Found", NULL,
                     "not found: try /stats, /metrics, /flows or /health\n");
        return;
    }
    bool head = slice_eq(method, SLICE_LIT("HEAD"));
    if (!head && !slice_eq(method, SLICE_LIT("GET"))) {
        RESPOND_TEXT(c, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", "only GET and HEAD\n");
        return;
    }
    size_t blen = 0;
    char *body = mgmt__render(ep, &pg, &blen);
    if (!body) {
        RESPOND_TEXT(c, 500, "Internal Server Error", NULL, "out of memory\n");
        return;
    }
    respond(c, pg.status, pg.status == 200 ? "OK" : "Service Unavailable", ep->type, NULL,
            head ? NULL : body, blen);
    free(body);
}

/* What a TLS status asks the loop to wait for; 0 for neither. */
static short tls_wait(enum tls_status st)
{
    return st == TLS_WANT_READ ? POLLIN : st == TLS_WANT_WRITE ? POLLOUT : 0;
}

/* Moves up to len bytes between buf and c's socket (through TLS when it
 * has it): > 0 bytes moved, 0 when the socket must be waited for (c->events
 * says how), < 0 when the connection is closed or failed. */
static ssize_t client_io(struct client *c, bool out, char *buf, size_t len)
{
    size_t n = 0;
    if (c->tls) {
        enum tls_status st =
            out ? tls_conn_write(c->tls, buf, len, &n) : tls_conn_read(c->tls, buf, len, &n);
        if ((c->events = tls_wait(st)) != 0) return 0;
        return st == TLS_OK ? (ssize_t)n : -1;
    }
    ssize_t k = out ? send(c->fd, buf, len, MSG_NOSIGNAL) : recv(c->fd, buf, len, 0);
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        c->events = out ? POLLOUT : POLLIN;
        return 0;
    }
    return k > 0 ? k : -1;
}

/* Reads what has arrived; true while the connection should go on. Moves
 * to CL_WRITE once the request is complete (or the buffer full). */
static bool client_read(struct client *c)
{
    while (!memmem(c->req, c->len, "\r\n\r\n", 4) && c->len < MGMT_REQ_MAX) {
        ssize_t n = client_io(c, false, c->req + c->len, MGMT_REQ_MAX - c->len);
        if (n <= 0) return n == 0;
        c->len += (size_t)n;
    }
    answer(c);
    c->state = CL_WRITE;
    return c->out != NULL;
}

/* Writes what the socket takes; true while there is more to write. */
static bool client_write(struct client *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = client_io(c, true, c->out + c->out_off, c->out_len - c->out_off);
        if (n <= 0) return n == 0;
        c->out_off += (size_t)n;
    }
    return false; /* all sent: done */
}

/* Advances c as far as its socket allows; closes it when done or failed. */
static void client_step(struct client *c)
{
    bool go_on = true;
    if (c->state == CL_HANDSHAKE) {
        enum tls_fail why = TLS_FAIL_NONE;
        enum tls_status st = tls_conn_handshake(c->tls, &why);
        if ((c->events = tls_wait(st)) != 0) return;
        if (st != TLS_OK) {
            LOG_RL(LOG_INFO, "management: TLS handshake failed: %s", tls_fail_str(why));
            client_close(c);
            return;
        }
        c->state = CL_READ;
    }
    if (c->state == CL_READ) go_on = client_read(c);
    if (go_on && c->state == CL_WRITE) go_on = client_write(c);
    if (!go_on) client_close(c);
}

/* Takes the connections waiting on the port (a bounded number per turn,
 * so that a connect flood cannot starve those being served): into a free
 * slot, or closed at once (counted) when --stats-max-clients are being
 * served. */
static void accept_all(uint64_t now)
{
    for (unsigned k = 0; k < mg.nclients + MGMT_ACCEPT_BURST; k++) {
        int fd = accept4(mg.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) return; /* EAGAIN, or an error the next poll sees again */
        struct client *c = NULL;
        for (unsigned i = 0; i < mg.nclients && !c; i++)
            if (mg.clients[i].state == CL_FREE) c = &mg.clients[i];
        if (!c) {
            mgmt__view.refused++;
            LOG_RL(LOG_WARN,
                   "management: connection refused: %u being served (--stats-max-clients)",
                   mg.nclients);
            close(fd);
            continue;
        }
        *c = (struct client){.fd = fd, .state = CL_READ, .events = POLLIN};
        c->until = now + MGMT_CONN_LIMIT_MS;
        if (mg.tls) {
            c->tls = tls_conn_server(mg.tls, fd);
            c->state = CL_HANDSHAKE;
            if (!c->tls) client_close(c);
        }
    }
}

/* One turn: waits for the port and the connections (at most until the
 * nearest deadline), then serves what is ready and closes what is late. */
static void mgmt_turn(struct pollfd *p)
{
    uint64_t now = clock_mono_ms();
    int timeout = MGMT_POLL_MS;
    unsigned n = 1;
    p[0] = (struct pollfd){.fd = mg.fd, .events = POLLIN};
    for (unsigned i = 0; i < mg.nclients; i++) {
        struct client *c = &mg.clients[i];
        if (c->state == CL_FREE) continue;
        p[n++] = (struct pollfd){.fd = c->fd, .events = c->events};
        if (c->until <= now)
            timeout = 0;
        else if (c->until - now < (uint64_t)timeout)
            timeout = (int)(c->until - now);
    }
    if (poll(p, n, timeout) < 0) return;
    now = clock_mono_ms();
    for (unsigned i = 0, k = 1; i < mg.nclients; i++) {
        struct client *c = &mg.clients[i];
        if (c->state == CL_FREE) continue;
        short ready = p[k++].revents;
        if (c->until <= now) {
            LOG_RL(LOG_INFO, "management: connection closed at its %d s deadline",
                   MGMT_CONN_LIMIT_MS / 1000);
            client_close(c);
        } else if (ready) {
            client_step(c);
        }
    }
    if (p[0].revents & POLLIN) accept_all(now);
}

static void *mgmt_main(void *arg)
{
    struct pollfd *p = arg;
    while (!atomic_load_explicit(&mg.stop, memory_order_acquire)) {
        struct tls_ctx *fresh = atomic_exchange(&mg.tls_next, NULL);
        if (fresh) {
            tls_ctx_free(mg.tls);
            mg.tls = fresh;
        }
        mgmt_turn(p);
    }
    for (unsigned i = 0; i < mg.nclients; i++)
        if (mg.clients[i].state != CL_FREE) client_close(&mg.clients[i]);
    return NULL;
}

int mgmt_start(const struct config *cfg, struct tls_ctx *tls)
{
    struct netaddr a;
    int one = 1, err;
    char as[NETADDR_STRLEN];

    mg.cfg = cfg;
    mgmt__view.cfg = cfg;
    mg.tls = tls;
    mgmt__view.start_s = clock_mono_ms() / 1000;
    if (netaddr_parse(&a, slice_make(cfg->stats_listen, strlen(cfg->stats_listen))) < 0) {
        LOG_E("--stats-listen %s: not an address", cfg->stats_listen);
        return -EINVAL;
    }
    mg.nclients = cfg->stats_max_clients ? cfg->stats_max_clients : 1;
    mg.clients = calloc(mg.nclients, sizeof *mg.clients);
    mg.polls = calloc(mg.nclients + 1, sizeof *mg.polls);
    if (!mg.clients || !mg.polls) {
        mgmt_stop();
        return -ENOMEM;
    }
    mg.fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (mg.fd < 0 || setsockopt(mg.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(mg.fd, &a.sa, a.len) < 0 || listen(mg.fd, 64) < 0) {
        err = -errno;
        LOG_E("--stats-listen: cannot listen on %s: %s", netaddr_str(&a, as, sizeof as) ? as : "?",
              strerror(-err));
        mgmt_stop();
        return err;
    }
    err = pthread_create(&mg.thread, NULL, mgmt_main, mg.polls);
    if (err) {
        LOG_E("management thread: %s", strerror(err));
        mgmt_stop();
        return -err;
    }
    mg.running = true;
    LOG_I("management: %s://%s/stats, /metrics, /flows and /health, %u connections at once",
          tls ? "https" : "http", cfg->stats_listen, mg.nclients);
    return 0;
}

void mgmt_tls_reload(struct tls_ctx *tls)
{
    if (!mg.running || !mg.tls) {
        tls_ctx_free(tls);
        return;
    }
    tls_ctx_free(atomic_exchange(&mg.tls_next, tls));
}

void mgmt_stop(void)
{
    if (mg.running) {
        atomic_store_explicit(&mg.stop, true, memory_order_release);
        pthread_join(mg.thread, NULL);
        mg.running = false;
    }
    if (mg.fd >= 0) close(mg.fd);
    mg.fd = -1;
    tls_ctx_free(mg.tls);
    tls_ctx_free(atomic_exchange(&mg.tls_next, NULL));
    mg.tls = NULL;
    free(mg.clients);
    free(mg.polls);
    mg.clients = NULL;
    mg.polls = NULL;
    mg.nclients = 0;
}
