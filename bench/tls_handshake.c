/* TLS load for sipedge's TLS listener: full-handshake rate, and many idle connections held open. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Usage:
 *   tls_handshake rate -p PORT [-n COUNT] [-t SECONDS] [-c CONCURRENCY] [--ca FILE]
 *                      [--cert FILE --key FILE] [--tls12] [--pid SIPEDGE_PID]
 *     Full handshakes (never a resumption: every connection starts from a
 *     fresh SSL with no session) as fast as the server takes them, with
 *     CONCURRENCY in flight, until COUNT are done or SECONDS pass. Each
 *     connection sends close_notify and closes once established. With --pid,
 *     also reports the CPU time the server used meanwhile, so the rate one
 *     fully busy server core sustains can be told apart from the client's.
 *   tls_handshake hold -p PORT -n CONNECTIONS [-c CONCURRENCY] [--settle SECONDS]
 *                      [--hold SECONDS] [--pid SIPEDGE_PID] [...]
 *     Opens CONNECTIONS TLS connections, sends one CRLFCRLF keep-alive on each
 *     (RFC 5626; the server answers CRLF and then waits for no message), waits
 *     SETTLE seconds and reports the server's VmRSS growth per connection
 *     (from /proc/PID/status), then holds them HOLD more seconds.
 * Everything is bounded: -t limits the whole run (default 60 s). Exit 0, or
 * 1 when fewer than the asked connections could be made. Loopback only.
 */

enum mode { MODE_RATE, MODE_HOLD };

struct opts {
    enum mode mode;
    const char *host;
    int port;
    long count;
    double seconds;
    int conc;
    const char *ca, *cert, *key;
    bool tls12;
    int pid;
    double settle, hold;
};

enum cstate { C_CONNECTING, C_HANDSHAKE, C_KEEPALIVE, C_IDLE };

struct client {
    int fd;
    SSL *ssl;
    enum cstate state;
    uint32_t events;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "tls_handshake: %s\n", what);
    exit(2);
}

/* utime+stime of pid in seconds, or -1. */
static double proc_cpu(int pid)
{
    char path[64], buf[1024];
    unsigned long ut, st;
    FILE *f;
    size_t n;
    char *p;

    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    f = fopen(path, "r");
    if (!f) return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* VmRSS of pid in KiB, or -1. */
static long proc_rss_kib(int pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

static SSL_CTX *make_ctx(const struct opts *o)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, o->tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, o->tls12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (o->ca) {
        if (SSL_CTX_load_verify_locations(ctx, o->ca, NULL) != 1) die("cannot load --ca");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (o->cert && (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
                    SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1))
        die("cannot load --cert/--key");
    return ctx;
}

struct run {
    const struct opts *o;
    SSL_CTX *ctx;
    int ep;
    struct sockaddr_in dst;
    struct client *cl; /* indexed by slot */
    int *free_slots, nfree;
    long started, done, failed, inflight, idle;
};

static void set_events(struct run *r, int slot, uint32_t ev)
{
    struct client *c = &r->cl[slot];
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)slot};
    if (c->events == ev) return;
    epoll_ctl(r->ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
    c->events = ev;
}

static void finish(struct run *r, int slot, bool ok)
{
    struct client *c = &r->cl[slot];
    if (c->ssl) {
        if (ok) SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
    if (c->state == C_IDLE)
        r->idle--;
    else
        r->inflight--;
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    r->free_slots[r->nfree++] = slot;
    if (ok)
        r->done++;
    else
        r->failed++;
    ERR_clear_error();
}

static bool start_one(struct run *r)
{
    int slot, fd, one = 1;
    struct client *c;

    if (r->nfree == 0) return false;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&r->dst, sizeof(r->dst)) < 0 && errno != EINPROGRESS) {
        close(fd);
        r->failed++;
        return true;
    }
    slot = r->free_slots[--r->nfree];
    c = &r->cl[slot];
    c->fd = fd;
    c->state = C_CONNECTING;
    c->events = 0;
    set_events(r, slot, EPOLLOUT);
    r->started++;
    r->inflight++;
    return true;
}

/* Advances one connection; in hold mode established ones stay open. */
static void step(struct run *r, int slot, uint32_t ev)
{
    struct client *c = &r->cl[slot];
    char buf[256];
    int rc;

    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            finish(r, slot, false);
            return;
        }
        c->ssl = SSL_new(r->ctx);
        if (!c->ssl || !SSL_set_fd(c->ssl, c->fd)) {
            finish(r, slot, false);
            return;
        }
        SSL_set_connect_state(c->ssl);
        /* as sipedge's own client does for an address without a name */
        if (r->o->ca && !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), r->o->host)) {
            finish(r, slot, false);
            return;
        }
        c->state = C_HANDSHAKE;
    }
    if (c->state == C_HANDSHAKE) {
        rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ)
                set_events(r, slot, EPOLLIN);
            else if (e == SSL_ERROR_WANT_WRITE)
                set_events(r, slot, EPOLLOUT);
            else
                finish(r, slot, false);
            return;
        }
        if (r->o->mode == MODE_RATE) {
            finish(r, slot, true);
            return;
        }
        c->state = C_KEEPALIVE;
    }
    if (c->state == C_KEEPALIVE) {
        rc = SSL_write(c->ssl, "\r\n\r\n", 4);
        if (rc != 4) {
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                set_events(r, slot, e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN);
            else
                finish(r, slot, false);
            return;
        }
        c->state = C_IDLE;
        r->inflight--;
        r->idle++;
        set_events(r, slot, EPOLLIN);
        return;
    }
    /* idle: take the CRLF pong (and tickets); EOF means the server dropped us */
    (void)ev;
    for (;;) {
        rc = SSL_read(c->ssl, buf, sizeof(buf));
        if (rc > 0) continue;
        int e = SSL_get_error(c->ssl, rc);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
        finish(r, slot, false);
        fprintf(stderr, "tls_handshake: an idle connection was closed by the server\n");
        return;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: tls_handshake rate|hold -p PORT [-h HOST] [-n COUNT] [-t SECONDS]\n"
                    "       [-c CONCURRENCY] [--ca FILE] [--cert FILE --key FILE] [--tls12]\n"
                    "       [--pid SIPEDGE_PID] [--settle SECONDS] [--hold SECONDS]\n");
    exit(2);
}

static void parse(struct opts *o, int argc, char **argv)
{
    static const struct option lo[] = {
        {"ca", required_argument, NULL, 'A'},   {"cert", required_argument, NULL, 'C'},
        {"key", required_argument, NULL, 'K'},  {"tls12", no_argument, NULL, '2'},
        {"pid", required_argument, NULL, 'P'},  {"settle", required_argument, NULL, 'S'},
        {"hold", required_argument, NULL, 'H'}, {NULL, 0, NULL, 0},
    };
    int ch;

    if (argc < 2) usage();
    if (strcmp(argv[1], "rate") == 0)
        o->mode = MODE_RATE;
    else if (strcmp(argv[1], "hold") == 0)
        o->mode = MODE_HOLD;
    else
        usage();
    *o = (struct opts){.mode = o->mode,
                       .host = "127.0.0.1",
                       .count = 20000,
                       .seconds = 60,
                       .conc = 64,
                       .settle = 15,
                       .hold = 0};
    optind = 2;
    while ((ch = getopt_long(argc, argv, "p:h:n:t:c:", lo, NULL)) != -1) {
        switch (ch) {
        case 'p':
            o->port = atoi(optarg);
            break;
        case 'h':
            o->host = optarg;
            break;
        case 'n':
            o->count = atol(optarg);
            break;
        case 't':
            o->seconds = atof(optarg);
            break;
        case 'c':
            o->conc = atoi(optarg);
            break;
        case 'A':
            o->ca = optarg;
            break;
        case 'C':
            o->cert = optarg;
            break;
        case 'K':
            o->key = optarg;
            break;
        case '2':
            o->tls12 = true;
            break;
        case 'P':
            o->pid = atoi(optarg);
            break;
        case 'S':
            o->settle = atof(optarg);
            break;
        case 'H':
            o->hold = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (o->port <= 0 || o->port > 65535 || o->count <= 0 || o->conc <= 0 || o->seconds <= 0 ||
        (o->cert && !o->key))
        usage();
}

/* Services events for up to `secs` (or until `stop` says so). */
static void pump(struct run *r, double until, bool (*stop)(struct run *))
{
    struct epoll_event ev[256];

    while (now_s() < until && !(stop && stop(r))) {
        int n = epoll_wait(r->ep, ev, 256, 50);
        for (int i = 0; i < n; i++)
            step(r, (int)ev[i].data.u32, ev[i].events);
        while (r->inflight < r->o->conc && r->started < r->o->count && start_one(r))
            ;
    }
}

static bool rate_done(struct run *r)
{
    return r->done + r->failed >= r->o->count;
}
static bool hold_ready(struct run *r)
{
    return r->idle + r->failed >= r->o->count;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct run r = {0};
    long slots;

    parse(&o, argc, argv);
    signal(SIGPIPE, SIG_IGN);
    r.o = &o;
    r.ctx = make_ctx(&o);
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    r.dst.sin_family = AF_INET;
    r.dst.sin_port = htons((uint16_t)o.port);
    if (inet_pton(AF_INET, o.host, &r.dst.sin_addr) != 1) die("-h: IPv4 literal expected");
    slots = o.mode == MODE_HOLD ? o.count : o.conc;
    r.cl = calloc((size_t)slots, sizeof(*r.cl));
    r.free_slots = calloc((size_t)slots, sizeof(int));
    if (!r.cl || !r.free_slots || r.ep < 0) die("out of memory");
    for (long i = slots - 1; i >= 0; i--) {
        r.cl[i].fd = -1;
        r.free_slots[r.nfree++] = (int)i;
    }

    double t0 = now_s(), end = t0 + o.seconds;
    if (o.mode == MODE_RATE) {
        double cpu0 = o.pid ? proc_cpu(o.pid) : -1;
        pump(&r, end, rate_done);
        double el = now_s() - t0, cpu1 = o.pid ? proc_cpu(o.pid) : -1;
        printf("rate: %ld full %s handshakes in %.2f s = %.0f/s (concurrency %d, %ld failed)\n",
               r.done, o.tls12 ? "TLS 1.2" : "TLS 1.3", el, (double)r.done / el, o.conc, r.failed);
        if (cpu0 >= 0 && cpu1 >= 0 && cpu1 > cpu0)
            printf("rate: server used %.2f CPU-s (%.0f%% of one core): %.0f handshakes per "
                   "server CPU-second\n",
                   cpu1 - cpu0, 100 * (cpu1 - cpu0) / el, (double)r.done / (cpu1 - cpu0));
        return r.done >= o.count ? 0 : 1;
    }

    long rss0 = o.pid ? proc_rss_kib(o.pid) : -1;
    pump(&r, end, hold_ready);
    double el = now_s() - t0;
    printf("hold: %ld TLS connections established in %.2f s (%ld failed)\n", r.idle, el, r.failed);
    pump(&r, now_s() + o.settle, NULL);
    long rss1 = o.pid ? proc_rss_kib(o.pid) : -1;
    if (rss0 >= 0 && rss1 >= 0 && r.idle > 0)
        printf("hold: server VmRSS %ld KiB -> %ld KiB after %.0f s idle: %.2f KiB per idle TLS "
               "connection (%ld open)\n",
               rss0, rss1, o.settle, (double)(rss1 - rss0) / (double)r.idle, r.idle);
    pump(&r, now_s() + o.hold, NULL);
    return r.idle >= o.count ? 0 : 1;
}
