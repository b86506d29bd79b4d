/* libFuzzer target: the proxy layer (core/proxy.c and all below it: routing, forwarding,
 * transactions, responses, registrar, upstream probes) driven message by message through a fake
 * runtime (fuzz/fake_runtime.c), two workers on one thread, no sockets.
 *
 * Input: one byte choosing the configuration, then operations until the input ends:
 *   op & 7 in 0..3  a message: byte h (worker h&1, transport (h>>1)%3, source (h>>3)%NSRC),
 *                   2 bytes of length (little endian, mod 4096), the bytes. "\x01b<d>" and
 *                   "\x01t<d>" in them become the d-th newest branch of a request sipedge sent
 *                   and the d-th newest flow token of its Record-Route/Path, so responses match
 *                   live transactions and requests carry real tokens. Stream bytes go through
 *                   the framer, as the runtime would hand them over.
 *   4  time passes: byte b, b*b*4 ms (up to ~260 s: Timers B, C, D, H, probes)
 *   5  a connection closes: byte i
 *   6  the oldest DNS lookup is answered: byte how (an error or 1-3 targets)
 *   7  knobs: byte k (k&1 toggles the SIGTERM drain, k&2 sends failing)
 * After each operation the messages the workers posted to each other are delivered. Each worker
 * runs on a thread of its own, one at a time, in input order. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/framer.h"
#include "core/log.h"
#include "core/proxy.h"
#include "core/sipuri.h"
#include "fuzz/fake_runtime.h"

#define MAX_MSG 4096

/* ---- configurations ---------------------------------------------------------- */

/* SIP Server pair (UDP primary, TCP backup) and a TCP peer site; a built-in
 * registrar without SIP Server; a SIP Server by name (DNS) with small
 * transaction limits. Every one gets a TLS listener too. */
static const char *const config_args[] = {
    "-w 2 -l udp:192.0.2.100:5060 -l tcp:192.0.2.100:5060 -u sip:192.0.2.1:5060"
    " -u sip:192.0.2.2:5060;transport=tcp --peer example.net=sip:198.51.100.7:5060;transport=tcp",
    "-w 2 -l udp:192.0.2.100:5060 -l tcp:192.0.2.100:5060 --registrar --registrar-open",
    "-w 2 -l udp:192.0.2.100:5060 -l tcp:192.0.2.100:5060 -u sip:sip.example.com;transport=tcp"
    " --max-transactions 16",
};
#define NCONFIGS (sizeof config_args / sizeof config_args[0])

static struct config cfgs[NCONFIGS];
static bool cfg_ok[NCONFIGS];

/* Where messages come from: two endpoints, the SIP Server pair, the peer
 * site, and the target config 3's name resolves to first. */
static const char *const sources[][2] = {
    {"203.0.113.5", "5062"}, {"203.0.113.6", "40000"}, {"192.0.2.1", "5060"},
    {"192.0.2.2", "5060"},   {"198.51.100.7", "5060"}, {"198.51.100.20", "5060"},
};
#define NSRC (sizeof sources / sizeof sources[0])
static struct netaddr source_addr[NSRC];

static void start_threads(void);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (unsigned i = 0; i < NCONFIGS; i++) {
        /* argv from the words of config_args[i], plus the quiet log level */
        static char words[NCONFIGS][512];
        char *args[64] = {"sipedge"};
        int n = 1;
        snprintf(words[i], sizeof words[i], "%s --log-level error", config_args[i]);
        for (char *save, *t = strtok_r(words[i], " ", &save); t && n < 63;
             t = strtok_r(NULL, " ", &save))
            args[n++] = t;
        cfg_ok[i] = config_from_args(&cfgs[i], n, args) == 0;
        struct config *c = &cfgs[i];
        if (!cfg_ok[i] || c->nlisten == CONFIG_MAX_LISTEN) continue;
        /* a TLS listener needs a certificate to parse; the proxy layer
         * only reads its address */
        struct listen_cfg *l = &c->listen[c->nlisten++];
        l->proto = SIP_TRANSPORT_TLS;
        netaddr_from_ip(&l->addr, SLICE_LIT("192.0.2.100"), 5061);
        snprintf(l->host, sizeof l->host, "192.0.2.100");
    }
    for (unsigned i = 0; i < NSRC; i++)
        netaddr_from_ip(&source_addr[i], slice_make(sources[i][0], strlen(sources[i][0])),
                        atoi(sources[i][1]));
    if (cfg_ok[0]) log_init(&cfgs[0]);
    start_threads();
    return 0;
}

/* ---- the fake world's life --------------------------------------------------- */

/* Each fake worker runs on a thread of its own, as in the runtime (a thread
 * is one RCU reader and has one timer wheel), but only ever while the
 * harness thread waits for it: run_on() hands it one call and waits, so
 * everything happens in input order. */
static struct {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(struct worker *w, void *arg);
    void *arg;
    bool busy;
} threads[FAKE_WORKERS];

static void *worker_thread(void *p)
{
    unsigned i = (unsigned)(uintptr_t)p;
    pthread_mutex_lock(&threads[i].mu);
    for (;;) {
        while (!threads[i].busy)
            pthread_cond_wait(&threads[i].cv, &threads[i].mu);
        fake_self = &fake.w[i];
        threads[i].fn(&fake.w[i], threads[i].arg);
        threads[i].busy = false;
        pthread_cond_broadcast(&threads[i].cv);
    }
    return NULL;
}

static void run_on(unsigned wk, void (*fn)(struct worker *w, void *arg), void *arg)
{
    pthread_mutex_lock(&threads[wk].mu);
    threads[wk].fn = fn;
    threads[wk].arg = arg;
    threads[wk].busy = true;
    pthread_cond_broadcast(&threads[wk].cv);
    while (threads[wk].busy)
        pthread_cond_wait(&threads[wk].cv, &threads[wk].mu);
    pthread_mutex_unlock(&threads[wk].mu);
}

static void start_threads(void)
{
    for (unsigned i = 0; i < FAKE_WORKERS; i++) {
        pthread_mutex_init(&threads[i].mu, NULL);
        pthread_cond_init(&threads[i].cv, NULL);
        if (pthread_create(&threads[i].tid, NULL, worker_thread, (void *)(uintptr_t)i) != 0)
            abort();
    }
}

/* Every input runs on a clock of its own (world_start). */
#define RESET_EVERY 256
#define EPOCH_MS    (UINT64_C(1) << 43) /* > (2^32 - 1) s */
static uint64_t epoch_ms;
static unsigned inputs_since_reset;
static bool globals_up;

static void do_init(struct worker *w, void *arg)
{
    w->cfg = arg;
    w->nworkers = FAKE_WORKERS;
    w->now_ms = epoch_ms;
    timer_wheel_init(&w->timers, w->now_ms, w);
    if (proxy_worker_init(w) < 0) abort(); /* nothing here can fail but memory */
}

static void do_cleanup(struct worker *w, void *arg)
{
    proxy_worker_cleanup(w);
}

/* The shared maps (64 Ki buckets for the flows) cost more to make and free
 * than a whole input, so they live across inputs: each input starts on a
 * clock far past the last one's, where every binding it could have left
 * (Expires is at most 2^32-1 s) has expired, and its flows went with its
 * connections. Every RESET_EVERY inputs they are made anew, which bounds
 * the expired garbage. */

static bool world_start(const struct config *cfg)
{
    memset(&fake, 0, sizeof fake);
    if (globals_up && ++inputs_since_reset >= RESET_EVERY) {
        proxy_global_cleanup();
        globals_up = false;
    }
    if (!globals_up) {
        if (proxy_global_init(cfg) < 0) return false;
        globals_up = true;
        inputs_since_reset = 0;
        epoch_ms = 0;
    }
    epoch_ms += EPOCH_MS;
    for (unsigned i = 0; i < FAKE_WORKERS; i++) {
        fake.w[i].id = i;
        run_on(i, do_init, (void *)cfg);
    }
    return true;
}

static void do_conn_closed(struct worker *w, void *arg)
{
    struct fake_conn *c = arg;
    proxy_on_conn_closed(w, c->ref, &c->peer, c->proto);
}

/* A connection closes: its owner hears of it. */
static void conn_closed(struct fake_conn *c)
{
    if (!c->open) return;
    c->open = false;
    run_on(c->owner, do_conn_closed, c);
}

static void world_stop(void)
{
    /* the runtime closes every connection first */
    for (unsigned i = 0; i < fake.nconns; i++)
        conn_closed(&fake.conns[i]);
    for (unsigned i = 0; i < fake.nposts; i++)
        worker_msg_free(fake.posts[i].m);
    fake.nposts = 0;
    for (unsigned i = 0; i < FAKE_WORKERS; i++)
        run_on(i, do_cleanup, NULL);
}

static void do_worker_msg(struct worker *w, void *arg)
{
    proxy_on_worker_msg(w, arg);
}

static void do_quiescent(struct worker *w, void *arg)
{
    proxy_quiescent(w, false);
}

/* What the loop does between events: messages between workers, then a
 * quiescent state for RCU. */
static void turn(void)
{
    for (unsigned n = 0; fake.nposts && n < 256; n++) {
        unsigned to = fake.posts[0].to;
        struct worker_msg *m = fake.posts[0].m;
        memmove(&fake.posts[0], &fake.posts[1], (fake.nposts - 1) * sizeof fake.posts[0]);
        fake.nposts--;
        run_on(to, do_worker_msg, m);
    }
    for (unsigned i = 0; i < FAKE_WORKERS; i++)
        run_on(i, do_quiescent, NULL);
}

static void do_advance(struct worker *w, void *arg)
{
    w->now_ms += *(const uint64_t *)arg;
    timer_wheel_run(&w->timers, w->now_ms);
}

static void advance(uint64_t ms)
{
    for (unsigned i = 0; i < FAKE_WORKERS; i++)
        run_on(i, do_advance, &ms);
}

static void do_dns_answer(struct worker *w, void *arg)
{
    fake_dns_answer(*(const uint8_t *)arg);
}

/* ---- input ------------------------------------------------------------------- */

struct input {
    const uint8_t *p, *end;
};

static unsigned byte(struct input *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

/* The message bytes with the markers replaced, into out (heap, exactly
 * sized for ASan). Returns the length. */
static size_t splice(const uint8_t *s, size_t n, char **out)
{
    char *o = malloc(n * FAKE_CAPTURE_LEN / 3 + n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0x01 && i + 2 < n && (s[i + 1] == 'b' || s[i + 1] == 't')) {
            const char *v =
                (s[i + 1] == 'b' ? fake.branches : fake.tokens)[s[i + 2] % FAKE_CAPTURES];
            size_t vl = strlen(v);
            memcpy(o + k, v, vl);
            k += vl;
            i += 2;
            continue;
        }
        o[k++] = (char)s[i];
    }
    *out = realloc(o, k ? k : 1);
    return k;
}

/* A message handed to the proxy on its worker's thread. */
struct delivery {
    struct rx_info rx;
    char *buf;
    size_t len;
};

static void do_message(struct worker *w, void *arg)
{
    struct delivery *d = arg;
    proxy_on_message(w, &d->rx, d->buf, d->len);
}

/* Hands len bytes at buf (copied to a block of exactly that size, for ASan)
 * to worker wk. */
static void hand(unsigned wk, const struct rx_info *rx, const char *buf, size_t len)
{
    struct delivery d = {*rx, malloc(len), len};
    memcpy(d.buf, buf, len);
    run_on(wk, do_message, &d);
    free(d.buf);
}

/* One message from source src to worker wk over proto: a datagram as it
 * is, stream bytes cut into messages by the framer (a framing error closes
 * the connection, as the runtime does). */
static void deliver(unsigned wk, uint8_t proto, unsigned src, const char *buf, size_t len)
{
    const struct config *cfg = fake.w[wk].cfg;
    int l = config_pick_listener(cfg, proto, AF_INET);
    if (l < 0 || len == 0) return;
    struct rx_info rx = {.proto = proto, .listener = (uint16_t)l, .src = source_addr[src]};
    if (proto == SIP_TRANSPORT_UDP) {
        hand(wk, &rx, buf, len);
        return;
    }
    rx.conn = fake_conn_for(wk, proto, &rx.src);
    if (rx.conn == CONN_REF_NONE) return;
    const struct sipmsg_limits lim = {cfg->max_message_size, 128};
    struct framer f;
    size_t off = 0;
    while (off < len) {
        size_t ml = 0;
        framer_init(&f);
        enum framer_result r = framer_feed(&f, buf + off, len - off, &lim, &ml);
        if (r == FRAMER_INCOMPLETE) return;
        if (r == FRAMER_INVALID || ml == 0 || ml > len - off) {
            conn_closed(fake_conn_find(rx.conn));
            return;
        }
        if (r == FRAMER_MESSAGE) hand(wk, &rx, buf + off, ml);
        off += ml;
    }
}

static void op_message(struct input *in)
{
    unsigned h = byte(in);
    size_t n = (byte(in) | byte(in) << 8) % MAX_MSG;
    if (n > (size_t)(in->end - in->p)) n = (size_t)(in->end - in->p);
    char *msg;
    size_t len = splice(in->p, n, &msg);
    in->p += n;
    static const uint8_t protos[] = {SIP_TRANSPORT_UDP, SIP_TRANSPORT_TCP, SIP_TRANSPORT_TLS};
    deliver(h & 1, protos[(h >> 1) % 3], (h >> 3) % NSRC, msg, len);
    free(msg);
}

static void op_close(struct input *in)
{
    unsigned i = byte(in);
    if (fake.nconns == 0) return;
    conn_closed(&fake.conns[i % fake.nconns]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned ci = data[0] % NCONFIGS;
    if (!cfg_ok[ci] || !world_start(&cfgs[ci])) return 0;
    fake.private_ports = data[0] & 0x80;
    struct input in = {data + 1, data + size};
    while (in.p < in.end) {
        unsigned op = byte(&in) & 7, b;
        switch (op) {
        case 4:
            b = byte(&in);
            advance((uint64_t)b * b * 4);
            break;
        case 5:
            op_close(&in);
            break;
        case 6:
            if (fake.nlookups) {
                uint8_t how = (uint8_t)byte(&in);
                run_on(fake.lookups[0].w->id, do_dns_answer, &how);
            }
            break;
        case 7:
            b = byte(&in);
            if (b & 1) fake.draining = !fake.draining;
            if (b & 2) fake.send_fails = !fake.send_fails;
            break;
        default:
            op_message(&in);
            break;
        }
        turn();
    }
    world_stop();
    return 0;
}
