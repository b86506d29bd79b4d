/* Worker runtime: each worker's loop and event dispatch, sending, the drain,
 * and starting, reloading and stopping the pinned worker threads. */
#include "core/worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sipuri.h"
#include "core/worker-int.h"

#define UDP_MAX_DATAGRAM   65535
#define EPOLL_BATCH        64
#define STREAM_SLACK       4096 /* read room beyond --max-message-size */
#define LOOP_MAX_WAIT_MS   1000
#define DRAIN_POLL_MS      50
#define TLS_RELOAD_WAIT_MS 2000 /* for every worker to take reloaded material */

/* Set by worker_runtime_start_tls before the threads start, cleared by
 * worker_runtime_stop after they are joined. Control thread writes it. */
static struct runtime *runtime;
static _Thread_local struct worker *self;

struct worker *worker_self(void)
{
    return self;
}

int worker__epoll_set(struct worker *w, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(w->rt->epfd, op, fd, &ev) < 0 ? -errno : 0;
}

/* ---- descriptors watched for others ---------------------------------- */

/* The entry of fd, or a free one (grown) when add; -1 when none. */
static int watch_slot(struct worker_rt *rt, int fd, bool add)
{
    int free_i = -1;

    for (unsigned i = 0; i < rt->nwatches; i++) {
        if (rt->watches[i].fd == fd) return (int)i;
        if (rt->watches[i].fd < 0 && free_i < 0) free_i = (int)i;
    }
    if (!add || free_i >= 0) return free_i;
    struct fd_watch *grown = realloc(rt->watches, (rt->nwatches + 1) * sizeof(*grown));
    if (!grown) return -1;
    rt->watches = grown;
    rt->watches[rt->nwatches].fd = -1;
    return (int)rt->nwatches++;
}

/* c-ares (through dns/) reports each socket's wanted events, and 0 just
 * before closing it; an event still in this turn's batch for a forgotten
 * or reused entry is dropped by the fd check in watch_event(). */
int worker_watch_fd(struct worker *w, int fd, uint32_t events, worker_fd_cb cb, void *arg)
{
    struct worker_rt *rt = w->rt;
    int i, err;

    ASSERT_OWNER(w);
    if (fd < 0) return -EBADF;
    i = watch_slot(rt, fd, events != 0);
    if (events == 0) {
        if (i < 0 || rt->watches[i].fd != fd) return 0;
        rt->watches[i].fd = -1;
        err = worker__epoll_set(w, EPOLL_CTL_DEL, fd, 0, 0);
        return err == -ENOENT ? 0 : err;
    }
    if (i < 0) return -ENOMEM;
    uint64_t data = (TAG_WATCH << TAG_SHIFT) | (uint64_t)i << 32 | (uint32_t)fd;
    bool known = rt->watches[i].fd == fd;
    err = known ? worker__epoll_set(w, EPOLL_CTL_MOD, fd, events, data) : -ENOENT;
    if (err == -ENOENT) err = worker__epoll_set(w, EPOLL_CTL_ADD, fd, events, data);
    if (err < 0) return err;
    rt->watches[i] = (struct fd_watch){.fd = fd, .cb = cb, .arg = arg};
    return 0;
}

static void watch_event(struct worker *w, uint64_t val, uint32_t events)
{
    struct worker_rt *rt = w->rt;
    uint64_t i = val >> 32;
    int fd = (int)(uint32_t)val;

    if (i >= rt->nwatches || rt->watches[i].fd != fd) return; /* forgotten meanwhile */
    rt->watches[i].cb(w, fd, events, rt->watches[i].arg);
}

/* ---- sending --------------------------------------------------------- */

/* On a stream connection named by conn, here or through its owner. */
static int send_on_conn(struct worker *w, conn_ref conn, const char *buf, size_t len)
{
    struct conn *c;
    int rc;

    if (CONN_REF_WORKER(conn) != w->id)
        /* The owner checks the generation; a stale ref is dropped there. */
        return wmsg__send_via_owner(w, conn, buf, len);
    c = conn__get(w, conn);
    rc = c ? stream__write(w, c, buf, len) : -ENOTCONN;
    if (rc == 0) STAT_INC(w, tx_msgs);
    return rc;
}

int worker_send(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                conn_ref conn, const char *tls_name, const char *buf, size_t len, conn_ref *used)
{
    char a[NETADDR_STRLEN];
    struct conn *c;
    int rc;

    ASSERT_OWNER(w);
    if (used) *used = CONN_REF_NONE;
    if (conn != CONN_REF_NONE) {
        rc = send_on_conn(w, conn, buf, len);
        if (rc == 0 && used) *used = conn;
        return rc;
    }
    if (!dst || netaddr_is_forbidden(dst)) return -EINVAL;
    switch (proto) {
    case SIP_TRANSPORT_UDP:
        return udp__send(w, listener, dst, buf, len);
    case SIP_TRANSPORT_TCP:
    case SIP_TRANSPORT_TLS:
        c = conn__find(w, proto, dst, tls_name);
        if (!c) {
            rc = conn__connect(w, proto, listener, dst, tls_name, &c);
            if (rc < 0) {
                LOG_RL(LOG_WARN, "%s connect to %s: %s", sipuri_transport_name(proto),
                       ADDR_STR(dst, a), strerror(-rc));
                return rc;
            }
        }
        rc = stream__write(w, c, buf, len);
        if (rc < 0) return rc;
        STAT_INC(w, tx_msgs);
        if (used) *used = c->ref;
        return 0;
    default:
        return -EPROTONOSUPPORT;
    }
}

/* ---- the loop -------------------------------------------------------- */

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
        listener__close_streams(w);
        rt->drained = true;
        LOG_I("draining: stream listeners closed");
    }
    atomic_store_explicit(
        &rt->busy, (rt->h->busy && rt->h->busy(w)) || rt->nqueued > 0 || !wmsg__rings_empty(w),
        memory_order_release);
}

static void dispatch(struct worker *w, const struct epoll_event *ev)
{
    uint64_t tag = ev->data.u64 >> TAG_SHIFT, val = ev->data.u64 & TAG_MASK;
    uint64_t count;

    switch (tag) {
    case TAG_CONN:
        conn__event(w, ev->data.u64, ev->events);
        break;
    case TAG_LISTENER:
        if (val & PRIVATE_BIT) {
            val &= ~(uint64_t)PRIVATE_BIT;
            udp__read(w, (unsigned)val, w->rt->priv_fd[val], ev->events);
            break;
        }
        if (w->rt->lis[val].fd < 0) break;
        if (w->rt->lis[val].proto == SIP_TRANSPORT_UDP)
            udp__read(w, (unsigned)val, w->rt->lis[val].fd, ev->events);
        else
            listener__accept(w, (unsigned)val);
        break;
    case TAG_EVENTFD:
        if (read(w->rt->evfd, &count, sizeof(count)) < 0)
            break; /* EAGAIN: someone else's wake-up was already consumed */
        break;
    case TAG_WATCH:
        watch_event(w, val, ev->events);
        break;
    }
}

static void worker_loop(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    const struct worker_handlers *h = rt->h;
    struct epoll_event ev[EPOLL_BATCH];

    while (!atomic_load_explicit(&rt->run->stop, memory_order_acquire)) {
        bool more;
        int n, timeout;

        w->now_ms = clock_mono_ms();
        conn_tls__swap(w);
        timer_wheel_run(&w->timers, w->now_ms);
        more = wmsg__drain(w);
        drain_step(w);
        conn__reap(w);

        timeout = more ? 0
                       : timer_wheel_next(&w->timers, w->now_ms,
                                          rt->drained ? DRAIN_POLL_MS : LOOP_MAX_WAIT_MS);
        if (timeout != 0) {
            /* Announce the sleep, then look again: a producer that missed
             * the flag published before our fence, so we see its message.
             * Pairs with the fence in worker_post (core/wmsg.c). */
            atomic_store_explicit(&rt->sleeping, true, memory_order_relaxed);
            atomic_thread_fence(memory_order_seq_cst);
            if (!wmsg__rings_empty(w)) timeout = 0;
        }
        /* RCU (QSBR): this turn holds no shared-map reference any more;
         * a sleeping worker is offline so it never delays a grace period */
        if (h->quiescent) h->quiescent(w, timeout != 0);
        n = epoll_wait(rt->epfd, ev, EPOLL_BATCH, timeout);
        if (timeout != 0 && h->awake) h->awake(w);
        atomic_store_explicit(&rt->sleeping, false, memory_order_relaxed);
        if (n < 0) {
            if (errno != EINTR) LOG_RL(LOG_ERR, "epoll_wait: %s", strerror(errno));
            continue;
        }
        w->now_ms = clock_mono_ms();
        for (int i = 0; i < n; i++)
            dispatch(w, &ev[i]);
        conn__reap(w);
    }
}

/* ---- the thread ------------------------------------------------------ */

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
    int err = listener__register(w);
    if (err < 0) return err;
    return worker__epoll_set(w, EPOLL_CTL_ADD, w->rt->evfd, EPOLLIN, (TAG_EVENTFD << TAG_SHIFT));
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
    char tag[16];

    self = w;
    snprintf(tag, sizeof(tag), "w%u", w->id);
    log_set_thread_tag(tag);
    pin(w);
    w->now_ms = clock_mono_ms();
    timer_wheel_init(&w->timers, w->now_ms, w);
    rt->init_rc = register_fds(w);
    if (rt->init_rc == 0 && rt->h->init) rt->init_rc = rt->h->init(w);
    rt->h_ready = rt->init_rc == 0;
    pthread_mutex_lock(&rt->run->lock);
    rt->run->ready++;
    pthread_cond_broadcast(&rt->run->cond);
    while (!rt->run->go)
        pthread_cond_wait(&rt->run->cond, &rt->run->lock);
    pthread_mutex_unlock(&rt->run->lock);
    if (!atomic_load_explicit(&rt->run->stop, memory_order_acquire)) worker_loop(w);
    /* on_conn_closed runs for each while the layer above still exists */
    conn__close_all(w);
    if (rt->h_ready && rt->h->cleanup) rt->h->cleanup(w);
    log_stats(w);
    self = NULL;
    return NULL;
}

/* ---- creating and destroying ----------------------------------------- */

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

static void worker_destroy(struct worker *w)
{
    struct worker_rt *rt;

    if (!w) return;
    rt = w->rt;
    listener__close_all(rt);
    if (rt->epfd >= 0) close(rt->epfd);
    if (rt->evfd >= 0) close(rt->evfd);
    conn__table_free(rt);
    free(rt->watches);
    free(rt->sbuf);
    free(rt->ubuf);
    tls_ctx_free(rt->tls);
    tls_ctx_free(atomic_load(&rt->tls_next));
    free(rt);
    free(w);
}

/* Receive buffers: one for stream reads, a batch of datagrams when there
 * is a UDP listener. 0 or -ENOMEM. */
static int alloc_buffers(struct worker_rt *rt, const struct config *cfg)
{
    bool has_udp = false;

    for (unsigned i = 0; i < cfg->nlisten; i++)
        has_udp |= cfg->listen[i].proto == SIP_TRANSPORT_UDP;
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
    return !rt->sbuf || (has_udp && !rt->ubuf) ? -ENOMEM : 0;
}

/* Control thread: worker id with its sockets and buffers, before its
 * thread exists. *out is set even on failure (worker_destroy frees it). */
static int worker_create(struct runtime *run, unsigned id, int cpu, struct worker **out)
{
    struct worker *w;
    struct worker_rt *rt;
    int err;

    w = aligned_alloc(64, (sizeof(*w) + 63) & ~(size_t)63);
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
    w->cfg = run->cfg;
    w->rt = rt;
    rt->run = run;
    rt->h = run->h;
    rt->cpu = cpu;
    rt->epfd = rt->evfd = -1;
    listener__init(rt);
    *out = w;

    rt->epfd = epoll_create1(EPOLL_CLOEXEC);
    rt->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->epfd < 0 || rt->evfd < 0) return -errno;
    err = listener__open_all(w, run->n);
    if (err < 0) return err;
    if (alloc_buffers(rt, run->cfg) < 0 || conn__table_init(rt, run->cfg) < 0) return -ENOMEM;
    return 0;
}

static void runtime_free(struct runtime *run)
{
    wmsg__rings_free(run);
    for (unsigned i = 0; i < run->n; i++)
        worker_destroy(run->w[i]);
    iplimit_free(run->per_ip);
    pthread_mutex_destroy(&run->lock);
    pthread_cond_destroy(&run->cond);
    free(run);
}

static void wake_all(struct runtime *run)
{
    for (unsigned i = 0; i < run->n; i++)
        wmsg__signal(run->w[i]->rt->evfd);
}

static void tls_ctxs_free(struct tls_ctx **tls, unsigned n)
{
    for (unsigned i = 0; tls && i < n; i++) {
        tls_ctx_free(tls[i]);
        tls[i] = NULL;
    }
}

/* The runtime with its rings and workers, no thread yet; takes tls[i] into
 * worker i. Frees the tls contexts left on failure. 0 or -errno. */
static int runtime_new(const struct config *cfg, struct tls_ctx **tls,
                       const struct worker_handlers *h, struct runtime **out)
{
    struct runtime *run = calloc(1, sizeof(*run));
    int cpus[CPU_SETSIZE];
    unsigned ncpu;
    int err;

    if (!run) {
        tls_ctxs_free(tls, cfg->workers);
        return -ENOMEM;
    }
    run->cfg = cfg;
    run->h = h;
    run->n = cfg->workers;
    pthread_mutex_init(&run->lock, NULL);
    pthread_cond_init(&run->cond, NULL);
    ncpu = allowed_cpus(cpus, CPU_SETSIZE);
    /* at most one source per connection the limit lets in */
    run->per_ip = iplimit_new(cfg->max_connections);
    err = run->per_ip ? wmsg__rings_new(run) : -ENOMEM;
    for (unsigned i = 0; i < run->n && err == 0; i++) {
        err = worker_create(run, i, ncpu ? cpus[i % ncpu] : -1, &run->w[i]);
        if (err == -ENOMEM) LOG_E("worker %u: out of memory", i);
        /* Before the thread exists: it sees its context from the start. */
        if (err == 0 && tls) {
            run->w[i]->rt->tls = tls[i];
            tls[i] = NULL;
        }
    }
    if (err < 0) {
        tls_ctxs_free(tls, run->n);
        runtime_free(run);
        return err;
    }
    *out = run;
    return 0;
}

/* ---- control --------------------------------------------------------- */

int worker_runtime_start_tls(const struct config *cfg, struct tls_ctx **tls,
                             const struct worker_handlers *handlers)
{
    struct runtime *run;
    unsigned started = 0;
    int err;

    if (runtime || cfg->workers == 0 || cfg->workers > WORKER_MAX || cfg->nlisten == 0 ||
        !handlers || !handlers->on_message || !handlers->on_worker_msg) {
        tls_ctxs_free(tls, cfg->workers <= WORKER_MAX ? cfg->workers : 0);
        return runtime ? -EALREADY : -EINVAL;
    }
    err = runtime_new(cfg, tls, handlers, &run);
    if (err < 0) return err;

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
    uint64_t deadline = clock_mono_ms() + TLS_RELOAD_WAIT_MS;
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
        wmsg__signal(rt->evfd);
    }
    for (unsigned i = 0; i < run->n; i++) {
        while (atomic_load_explicit(&run->w[i]->rt->tls_next, memory_order_acquire)) {
            if (clock_mono_ms() >= deadline) return false;
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
