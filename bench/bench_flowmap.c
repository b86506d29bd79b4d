/* Microbenchmarks for the sticky-flow fast path: flow map lookups per second
 * per core (registry/flowmap.c, 100,000 entries), and the one-way latency of
 * a cross-worker handover through core/ring.h (busy consumer, and a sleeping
 * consumer woken by eventfd exactly as core/worker.c does it).
 *
 *   bench_flowmap [--entries N] [--seconds S] [--samples N] [--cpu A,B]
 *                 [--only lookup|ring|memlat]
 * Bounded: each lookup run lasts --seconds (default 2), each ring run takes
 * --samples handovers (default 200000 busy, a tenth of that sleeping). */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/netaddr.h"
#include "core/ring.h"
#include "core/sipuri.h"
#include "registry/flowmap.h"
#include "registry/locmap.h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- flow map lookups --------------------------------------------------- */

/* The i-th phone: 10.0.x.y, ports 1024..31023. */
static inline void key_of(struct netaddr *a, size_t i)
{
    memset(a, 0, sizeof *a);
    a->in4.sin_family = AF_INET;
    a->in4.sin_addr.s_addr = htonl(0x0a000000u + (uint32_t)(i / 30000));
    a->in4.sin_port = htons((uint16_t)(1024 + i % 30000));
    a->len = sizeof a->in4;
}

struct lookup_run {
    struct flowmap *fm;
    const struct netaddr *keys;
    size_t nkeys;
    int cpu;
    double seconds;
    bool miss; /* look up addresses that are not in the map */
    /* out */
    uint64_t lookups, hits;
    double elapsed;
    int pin_err;
};

static void *lookup_thread(void *arg)
{
    struct lookup_run *r = arg;
    uint64_t rnd = 0x9e3779b97f4a7c15ull + (uint64_t)r->cpu;
    r->pin_err = pin_to(r->cpu);
    locmap_thread_register();
    uint64_t start = now_ns(), end = start + (uint64_t)(r->seconds * 1e9), t = start;
    uint64_t n = 0, hits = 0;
    struct flow_entry e;
    while (t < end) {
        for (int i = 0; i < 4096; i++) {
            /* the key is built in registers, as a worker has the sender's
             * address at hand: only the map's own memory is measured */
            struct netaddr a;
            key_of(&a, xorshift(&rnd) % r->nkeys);
            if (r->miss) a.in4.sin_port ^= htons(0x8000); /* keys use ports below 32768 */
            hits += flowmap_lookup(r->fm, SIP_TRANSPORT_TLS, &a, &e);
        }
        n += 4096;
        locmap_quiescent(); /* as a worker does once per loop turn */
        t = now_ns();
    }
    locmap_thread_unregister();
    r->lookups = n;
    r->hits = hits;
    r->elapsed = (double)(t - start) / 1e9;
    return NULL;
}

static void bench_lookups(size_t entries, double seconds, const int *cpus)
{
    struct flowmap *fm = flowmap_new();
    struct netaddr *keys = calloc(entries, sizeof *keys);
    if (!fm || !keys) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < entries; i++) {
        struct netaddr *a = &keys[i];
        key_of(a, i);
        struct flow_entry e = {
            .conn = (uint64_t)i + 1, .proto = SIP_TRANSPORT_TLS, .peer = *a, .register_ms = 0};
        if (flowmap_set(fm, &e) < 0) {
            fprintf(stderr, "flowmap_set failed\n");
            exit(1);
        }
    }
    locmap_quiescent();
    printf("flowmap: %lu entries\n", flowmap_count(fm));

    /* one reader alone, then one reader per CPU at once; hits then misses */
    for (int miss = 0; miss < 2; miss++) {
        for (int nthreads = 1; nthreads <= 2; nthreads++) {
            struct lookup_run runs[2];
            pthread_t th[2];
            locmap_thread_offline();
            for (int i = 0; i < nthreads; i++) {
                runs[i] = (struct lookup_run){.fm = fm,
                                              .keys = keys,
                                              .nkeys = entries,
                                              .cpu = cpus[i],
                                              .seconds = seconds,
                                              .miss = miss != 0};
                pthread_create(&th[i], NULL, lookup_thread, &runs[i]);
            }
            for (int i = 0; i < nthreads; i++)
                pthread_join(th[i], NULL);
            locmap_thread_online();
            for (int i = 0; i < nthreads; i++) {
                struct lookup_run *r = &runs[i];
                printf("flowmap lookup (%s, %d reader%s): cpu %d%s: %.2f M lookups/s "
                       "(%.1f ns each), %.0f%% hits\n",
                       miss ? "misses" : "hits", nthreads, nthreads > 1 ? "s at once" : "", r->cpu,
                       r->pin_err ? " (not pinned)" : "", (double)r->lookups / r->elapsed / 1e6,
                       r->elapsed * 1e9 / (double)r->lookups,
                       100.0 * (double)r->hits / (double)r->lookups);
            }
        }
    }
    flowmap_free(fm);
    free(keys);
}

/* ---- memory latency ------------------------------------------------------ */

/* What one dependent cache miss costs on this machine: a pointer chase
 * through a random cyclic permutation of 64-byte lines over 1, 4, 16 and 64
 * MiB (a cds_lfht lookup is 2-3 such dependent loads: bucket, node(s)). */
static void bench_memlat(const int *cpus)
{
    static const size_t mib[] = {1, 4, 16, 64};
    int pin_err = pin_to(cpus[0]);
    for (size_t k = 0; k < sizeof mib / sizeof mib[0]; k++) {
        size_t n = (mib[k] << 20) / 64;
        char *m = aligned_alloc(64, n * 64);
        size_t *perm = malloc(n * sizeof *perm);
        if (!m || !perm) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        uint64_t rnd = 0x2545f4914f6cdd1dull;
        for (size_t i = 0; i < n; i++)
            perm[i] = i;
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = xorshift(&rnd) % (i + 1), t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (size_t i = 0; i < n; i++)
            *(void **)(m + perm[i] * 64) = m + perm[(i + 1) % n] * 64;
        void *p = m + perm[0] * 64;
        size_t loads = 10 * 1000 * 1000;
        uint64_t t0 = now_ns();
        for (size_t i = 0; i < loads; i++)
            p = *(void **)p;
        uint64_t t1 = now_ns();
        printf("memory latency: %zu MiB working set: %.1f ns per dependent load%s%s\n", mib[k],
               (double)(t1 - t0) / (double)loads, pin_err ? " (not pinned)" : "",
               p == NULL ? " !" : "");
        free(perm);
        free(m);
    }
}

/* ---- cross-worker ring handover ---------------------------------------- */

struct msg {
    uint64_t sent_ns;
};

struct handover {
    struct ring *to_consumer, *to_producer; /* the message, and its ack */
    int evfd, epfd;
    _Alignas(64) _Atomic bool sleeping; /* the consumer may be in epoll_wait */
    _Alignas(64) _Atomic bool stop;
    bool sleep_mode; /* consumer sleeps between messages, else it spins */
    int cpu_producer, cpu_consumer;
    size_t samples;
    uint64_t *lat; /* one-way latency per sample, ns */
    unsigned long wakeups;
    int pin_err;
};

/* The consumer side of core/worker.c's loop, reduced to the ring: drain,
 * announce the sleep, fence, look again, block on the eventfd. */
static void *consumer_thread(void *arg)
{
    struct handover *h = arg;
    size_t got = 0;
    h->pin_err |= pin_to(h->cpu_consumer);
    while (got < h->samples) {
        void *m;
        while (ring_pop_n(h->to_consumer, &m, 1) == 1) {
            uint64_t t = now_ns();
            h->lat[got++] = t - ((struct msg *)m)->sent_ns;
            ring_push(h->to_producer, m); /* the ack: "send the next one" */
        }
        if (got >= h->samples || !h->sleep_mode) continue;
        atomic_store_explicit(&h->sleeping, true, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (!ring_empty(h->to_consumer)) {
            atomic_store_explicit(&h->sleeping, false, memory_order_relaxed);
            continue;
        }
        struct epoll_event ev;
        int n = epoll_wait(h->epfd, &ev, 1, 100);
        atomic_store_explicit(&h->sleeping, false, memory_order_relaxed);
        if (n == 1) {
            uint64_t cnt;
            if (read(h->evfd, &cnt, sizeof cnt) < 0 && errno != EAGAIN) perror("read eventfd");
        }
    }
    return NULL;
}

static void run_handover(struct handover *h)
{
    struct msg m;
    pthread_t th;
    h->pin_err = pin_to(h->cpu_producer);
    pthread_create(&th, NULL, consumer_thread, h);
    for (size_t i = 0; i < h->samples; i++) {
        if (h->sleep_mode) {
            /* wait until the consumer announced its sleep, then give it time
             * to really block in epoll_wait */
            while (!atomic_load_explicit(&h->sleeping, memory_order_relaxed))
                ;
            uint64_t t = now_ns() + 50000;
            while (now_ns() < t)
                ;
        }
        m.sent_ns = now_ns();
        while (!ring_push(h->to_consumer, &m))
            ;
        /* worker_post(): publish, fence, wake the consumer if it sleeps */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&h->sleeping, memory_order_relaxed) &&
            atomic_exchange_explicit(&h->sleeping, false, memory_order_relaxed)) {
            uint64_t one = 1;
            if (write(h->evfd, &one, sizeof one) < 0) perror("write eventfd");
            h->wakeups++;
        }
        void *ack;
        while (ring_pop_n(h->to_producer, &ack, 1) == 0)
            ;
    }
    pthread_join(th, NULL);
}

static void bench_ring(size_t samples, const int *cpus)
{
    for (int sleep_mode = 0; sleep_mode < 2; sleep_mode++) {
        struct handover h;
        memset(&h, 0, sizeof h);
        h.to_consumer = ring_new(1024);
        h.to_producer = ring_new(1024);
        h.evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        h.epfd = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN};
        if (!h.to_consumer || !h.to_producer || h.evfd < 0 || h.epfd < 0 ||
            epoll_ctl(h.epfd, EPOLL_CTL_ADD, h.evfd, &ev) < 0) {
            perror("ring bench setup");
            exit(1);
        }
        h.sleep_mode = sleep_mode;
        h.samples = sleep_mode ? samples / 10 : samples;
        h.cpu_producer = cpus[0];
        h.cpu_consumer = cpus[1];
        h.lat = calloc(h.samples, sizeof *h.lat);
        run_handover(&h);
        qsort(h.lat, h.samples, sizeof *h.lat, cmp_u64);
        printf("ring handover (%s consumer), cpu %d -> cpu %d%s: %zu samples, "
               "one-way p50 %.2f us, p99 %.2f us, max %.2f us, eventfd wake-ups %lu\n",
               sleep_mode ? "sleeping, eventfd wake-up" : "busy", h.cpu_producer, h.cpu_consumer,
               h.pin_err ? " (not pinned)" : "", h.samples, (double)h.lat[h.samples / 2] / 1e3,
               (double)h.lat[h.samples * 99 / 100] / 1e3, (double)h.lat[h.samples - 1] / 1e3,
               h.wakeups);
        free(h.lat);
        ring_free(h.to_consumer);
        ring_free(h.to_producer);
        close(h.evfd);
        close(h.epfd);
    }
}

int main(int argc, char **argv)
{
    size_t entries = 100000, samples = 200000;
    double seconds = 2;
    int cpus[2] = {0, 1};
    const char *only = NULL;
    static const struct option opts[] = {{"entries", required_argument, NULL, 'n'},
                                         {"seconds", required_argument, NULL, 's'},
                                         {"samples", required_argument, NULL, 'k'},
                                         {"cpu", required_argument, NULL, 'c'},
                                         {"only", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            entries = strtoul(optarg, NULL, 10);
            break;
        case 's':
            seconds = strtod(optarg, NULL);
            break;
        case 'k':
            samples = strtoul(optarg, NULL, 10);
            break;
        case 'c':
            if (sscanf(optarg, "%d,%d", &cpus[0], &cpus[1]) != 2) {
                fprintf(stderr, "bench_flowmap: --cpu: want A,B\n");
                return 2;
            }
            break;
        case 'o':
            only = optarg;
            break;
        default:
            fprintf(stderr,
                    "usage: %s [--entries N] [--seconds S] [--samples N] [--cpu A,B] "
                    "[--only lookup|ring|memlat]\n",
                    argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (entries == 0 || samples < 100 || seconds <= 0 || seconds > 60) {
        fprintf(stderr, "bench_flowmap: bad --entries, --samples or --seconds\n");
        return 2;
    }
    locmap_thread_register();
    if (!only || strcmp(only, "lookup") == 0) bench_lookups(entries, seconds, cpus);
    if (!only || strcmp(only, "ring") == 0) bench_ring(samples, cpus);
    if (!only || strcmp(only, "memlat") == 0) bench_memlat(cpus);
    locmap_thread_unregister();
    return 0;
}
