/* Each worker's c-ares channel and its glue to the loop: sockets, timer, completions. */
#include "dns/dns.h"

#include <ares.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "core/worker.h"
#include "dns/dns-int.h"

#define DNS_TIMEOUT_MS 1000 /* first try; c-ares doubles it per round */
#define DNS_TRIES      2
#define DNS_EDNS_SIZE  1232 /* avoids fragmentation (DNS flag day 2020) */

#ifdef SIPEDGE_DEBUG
/* A fake worker in tests has no thread; a real one must be the caller's. */
#define ASSERT_OWNER(w) assert(!worker_self() || worker_self() == (w))
#else
#define ASSERT_OWNER(w) ((void)(w))
#endif

/* ---- module-wide helpers ------------------------------------------------ */

int dns__ares_errno(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
        return -ENOENT;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return -ECONNREFUSED;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return -ECANCELED;
    case ARES_EBADNAME:
        return -EINVAL;
    default: /* SERVFAIL, REFUSED, NOTIMP, FORMERR, bad response... */
        return -EIO;
    }
}

uint64_t dns__now_ms(const struct dns_worker *dw)
{
    return dw->w->now_ms;
}

int dns__name_copy(const char *p, size_t len, char out[DNS_NAME_MAX + 1])
{
    size_t label = 0;

    if (len > 0 && p[len - 1] == '.') len--;
    if (len == 0 || len > DNS_NAME_MAX) return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = slice_lower(p[i]);
        if (c == '.') {
            if (label == 0) return -EINVAL;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63) return -EINVAL;
        } else {
            return -EINVAL;
        }
        out[i] = c;
    }
    out[len] = '\0';
    return (int)len;
}

/* ---- the loop ------------------------------------------------------------ */

/* Runs the callbacks of completed asynchronous requests, outside any
 * c-ares processing so that they may resolve again. */
static void deliver(struct dns_worker *dw)
{
    struct dns_req *r;

    while ((r = dw->done_head) != NULL) {
        dw->done_head = r->next;
        if (!dw->done_head) dw->done_tail = &dw->done_head;
        dns__req_release(dw, r); /* before the callback: it may resolve again */
        if (r->status == 0)
            r->cb(dw->w, r->arg, 0, r->out, r->nout);
        else
            r->cb(dw->w, r->arg, r->status, NULL, 0);
        free(r);
    }
}

void dns__timer_update(struct dns_worker *dw)
{
    struct timeval tv, *tvp;
    uint64_t ms;

    if (dw->done_head) {
        worker_timer_arm(dw->w, &dw->timer, 0);
        return;
    }
    tvp = ares_timeout(dw->ch, NULL, &tv);
    if (!tvp) {
        timer_cancel(&dw->timer);
        return;
    }
    ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    worker_timer_arm(dw->w, &dw->timer, ms);
}

static void on_timer(struct worker *w, struct timer *t)
{
    struct dns_worker *dw = w->dns;

    ares_process_fd(dw->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
    deliver(dw);
    if (w->dns) dns__timer_update(dw);
}

void dns_on_fd(struct worker *w, int fd, uint32_t events)
{
    struct dns_worker *dw = w->dns;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    ASSERT_OWNER(w);
    if (!dw) return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) rfd = fd;
    if (events & (EPOLLOUT | EPOLLERR)) wfd = fd;
    ares_process_fd(dw->ch, rfd, wfd);
    deliver(dw);
    if (w->dns) dns__timer_update(dw);
}

bool dns_busy(const struct worker *w)
{
    return w->dns && w->dns->nreqs > 0;
}

int dns_resolve(struct worker *w, const struct netaddr *src, struct slice host, int port,
                uint8_t transport, bool sips, dns_cb cb, void *arg, struct dns_target *out,
                unsigned *nout)
{
    struct dns_worker *dw = w->dns;

    ASSERT_OWNER(w);
    *nout = 0;
    if (!dw || dw->closing) return -ESHUTDOWN;
    return dns__rfc3263_resolve(dw, src, host, port, transport, sips, cb, arg, out, nout);
}

/* ---- limits: resolutions in flight, in all and per source ---------------- */

static struct dns_src **src_bucket(struct dns_worker *dw, const struct netaddr *a)
{
    return &dw->srcs[netaddr_hash(0, a) & dw->srcs_mask]; /* keyed: sources pick addresses */
}

int dns__req_admit(struct dns_worker *dw, struct dns_req *r, const struct netaddr *src)
{
    struct netaddr key;
    struct dns_src **pp, *e;
    bool over;

    r->src = NULL;
    if (!src) { /* sipedge's own lookups are few and never refused */
        dw->nreqs++;
        return 0;
    }
    netaddr_source(&key, src);
    pp = src_bucket(dw, &key);
    for (e = *pp; e && !netaddr_eq(&e->addr, &key); e = e->next)
        ;
    if (!e) {
        e = calloc(1, sizeof(*e));
        if (!e) return -ENOMEM;
        e->addr = key;
        e->next = *pp;
        *pp = e;
    }
    over = dw->nreqs >= dw->max_pending || e->n >= dw->max_per_source;
    e->n++;
    r->src = e;
    dw->nreqs++;
    return over ? 1 : 0;
}

void dns__req_refused(struct dns_worker *dw, const struct dns_req *r)
{
    char as[NETADDR_STRLEN];

    STAT_LIMIT(dw->w, LIMIT_DNS_PENDING);
    LOG_RL(LOG_WARN,
           "dns: lookup of %s for %s refused: %u resolutions in flight on this worker, %u for "
           "this source (--dns-max-pending %u, per source %u)",
           r->host, r->src && netaddr_ip_str(&r->src->addr, as, sizeof(as)) ? as : "?",
           dw->nreqs - 1, r->src ? r->src->n - 1 : 0, dw->max_pending, dw->max_per_source);
}

void dns__req_release(struct dns_worker *dw, struct dns_req *r)
{
    struct dns_src *e = r->src;

    assert(dw->nreqs > 0);
    dw->nreqs--;
    r->src = NULL;
    if (!e || --e->n > 0) return;
    for (struct dns_src **pp = src_bucket(dw, &e->addr); *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    free(e);
}

/* ---- per-worker setup -------------------------------------------------- */

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct worker *w = data;
    uint32_t ev = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u);
    int err = w->dns->watch(w, fd, ev);

    if (err < 0) LOG_RL(LOG_ERR, "dns: cannot watch socket %d: %s", fd, strerror(-err));
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
    lib_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

/* cfg->dns_servers → c-ares server list (already validated by the CLI). */
static int set_servers(struct dns_worker *dw, const struct config *cfg)
{
    struct ares_addr_port_node nodes[CONFIG_MAX_DNS];
    unsigned n = 0;
    int st;

    for (unsigned i = 0; i < cfg->ndns && i < CONFIG_MAX_DNS; i++) {
        struct slice s = slice_make(cfg->dns_servers[i], strlen(cfg->dns_servers[i]));
        struct ares_addr_port_node *x = &nodes[n];
        struct netaddr a;
        if (netaddr_parse(&a, s) < 0 && netaddr_from_ip(&a, s, 53) < 0) {
            LOG_E("dns: bad server %s", cfg->dns_servers[i]);
            return -EINVAL;
        }
        memset(x, 0, sizeof(*x));
        x->family = a.sa.sa_family;
        if (x->family == AF_INET)
            x->addr.addr4 = a.in4.sin_addr;
        else
            memcpy(&x->addr.addr6, &a.in6.sin6_addr, sizeof(x->addr.addr6));
        x->udp_port = x->tcp_port = netaddr_port(&a);
        if (n > 0) nodes[n - 1].next = x;
        n++;
    }
    if (n == 0) return 0;
    st = ares_set_servers_ports(dw->ch, nodes);
    return st == ARES_SUCCESS ? 0 : dns__ares_errno(st);
}

int dns_worker_init_watch(struct worker *w, dns_watch_fn watch)
{
    const struct config *cfg = w->cfg;
    struct ares_options o;
    struct dns_worker *dw;
    int st, err;

    ASSERT_OWNER(w);
    pthread_once(&lib_once, lib_init);
    if (lib_rc != ARES_SUCCESS) return dns__ares_errno(lib_rc);
    dw = calloc(1, sizeof(*dw));
    if (!dw) return -ENOMEM;
    dw->w = w;
    dw->watch = watch;
    dw->done_tail = &dw->done_head;
    timer_init(&dw->timer, on_timer);
    if (getrandom(&dw->seed, sizeof(dw->seed), 0) != sizeof(dw->seed))
        dw->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)dw;
    dw->rng = dw->seed | 1;
    dw->max_pending = cfg && cfg->dns_max_pending ? cfg->dns_max_pending : DNS_PENDING_DEFAULT;
    dw->max_per_source = dw->max_pending / DNS_PENDING_PER_SOURCE_DIV;
    if (dw->max_per_source == 0) dw->max_per_source = 1;
    for (dw->srcs_mask = 1; dw->srcs_mask < dw->max_pending; dw->srcs_mask <<= 1)
        ;
    dw->srcs = calloc(dw->srcs_mask, sizeof(*dw->srcs));
    dw->srcs_mask--;
    if (!dw->srcs || dns__cache_init(dw, cfg ? cfg->dns_cache_size : 0) < 0) {
        dns__cache_clear(dw);
        free(dw->srcs);
        free(dw);
        return -ENOMEM;
    }
    /* Only ask for families the worker can send from (Via needs a listener
     * of the destination's family); both when there are no listeners. */
    for (unsigned i = 0; cfg && i < cfg->nlisten; i++) {
        if (cfg->listen[i].addr.sa.sa_family == AF_INET) dw->want_a = true;
        if (cfg->listen[i].addr.sa.sa_family == AF_INET6) dw->want_aaaa = true;
    }
    if (!dw->want_a && !dw->want_aaaa) dw->want_a = dw->want_aaaa = true;

    memset(&o, 0, sizeof(o));
    o.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    o.ednspsz = DNS_EDNS_SIZE;
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = w;
    o.lookups = (char *)"b"; /* DNS only: no /etc/hosts reads on the loop */
    st = ares_init_options(&dw->ch, &o,
                           ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ |
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS);
    if (st != ARES_SUCCESS) {
        LOG_E("dns: cannot create a resolver: %s", ares_strerror(st));
        dns__cache_clear(dw);
        free(dw->srcs);
        free(dw);
        return dns__ares_errno(st);
    }
    w->dns = dw;
    err = cfg ? set_servers(dw, cfg) : 0;
    if (err < 0) {
        dns_worker_cleanup(w);
        return err;
    }
    return 0;
}

static void on_fd(struct worker *w, int fd, uint32_t events, void *arg)
{
    dns_on_fd(w, fd, events);
}

/* The runtime's generic fd watch, handing the events to dns_on_fd(). */
static int runtime_watch(struct worker *w, int fd, uint32_t events)
{
    return worker_watch_fd(w, fd, events, on_fd, NULL);
}

int dns_worker_init(struct worker *w)
{
    return dns_worker_init_watch(w, runtime_watch);
}

void dns_worker_cleanup(struct worker *w)
{
    struct dns_worker *dw = w->dns;

    ASSERT_OWNER(w);
    if (!dw) return;
    dw->closing = true;
    /* Runs on_answer (ARES_EDESTRUCTION) for every query in flight: their
     * requests finish with -ECANCELED and land on the completed list. */
    ares_destroy(dw->ch);
    dw->ch = NULL;
    deliver(dw);
    assert(dw->nreqs == 0);
    timer_cancel(&dw->timer);
    dns__cache_clear(dw);
    free(dw->srcs); /* empty: every request was released */
    w->dns = NULL;
    free(dw);
}
