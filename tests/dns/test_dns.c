/* Tests for dns/dns.c: RFC 3263 resolution against a real dnsmasq on loopback, driven by a
 * minimal epoll loop standing in for the worker runtime. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "core/sipuri.h"
#include "core/timer.h"
#include "core/worker.h"
#include "dns/dns-int.h"
#include "dns/dns.h"

#define WAIT_LIMIT_MS 10000 /* any one resolution; the timeout case needs ~3 s */

static struct config cfg;
static struct worker *w;
static int epfd = -1;
static int blackhole = -1; /* a "server" that reads queries and never answers */
static pid_t dnsmasq = -1;
static uint64_t clock_skew;        /* added to the clock: lets cached answers expire */
static const struct netaddr *src;  /* who resolve_into() resolves for (NULL: sipedge) */
static unsigned blackhole_queries; /* datagrams the silent server received */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + clock_skew;
}

/* ---- the stand-in loop -------------------------------------------------- */

static int test_watch(struct worker *wk, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};

    (void)wk;
    if (events == 0)
        return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) < 0 && errno != ENOENT ? -errno : 0;
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
    if (errno != ENOENT) return -errno;
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void loop_turn(int max_ms)
{
    struct epoll_event ev[16];
    int n, timeout;

    w->now_ms = now_ms();
    timer_wheel_run(&w->timers, w->now_ms);
    timeout = timer_wheel_next(&w->timers, w->now_ms, max_ms);
    n = epoll_wait(epfd, ev, 16, timeout);
    w->now_ms = now_ms();
    for (int i = 0; i < n; i++) {
        if (ev[i].data.fd == blackhole) {
            char buf[512];
            while (recv(blackhole, buf, sizeof(buf), MSG_DONTWAIT) > 0)
                blackhole_queries++; /* dropped */
            continue;
        }
        dns_on_fd(w, ev[i].data.fd, ev[i].events);
    }
}

struct result {
    int calls;
    int status;
    unsigned n;
    struct dns_target t[DNS_MAX_TARGETS];
    /* optional: resolve this from inside the callback */
    const char *chain_host;
    struct result *chain;
    int chain_rc;
};

static int resolve_into(const char *host, int port, uint8_t transport, bool sips, struct result *r);

static void on_done(struct worker *wk, void *arg, int status, const struct dns_target *t,
                    unsigned n)
{
    struct result *r = arg;

    cr_assert_eq(wk, w);
    r->calls++;
    r->status = status;
    r->n = n;
    cr_assert(status == 0 ? (n > 0 && t != NULL) : (n == 0 && t == NULL));
    if (n) memcpy(r->t, t, n * sizeof(*t));
    if (r->chain_host) r->chain_rc = resolve_into(r->chain_host, 5000, 0, false, r->chain);
}

static int resolve_into(const char *host, int port, uint8_t transport, bool sips, struct result *r)
{
    unsigned n = 99;
    int rc = dns_resolve(w, src, slice_make(host, strlen(host)), port, transport, sips, on_done, r,
                         r->t, &n);
    if (rc == 1) {
        r->status = 0;
        r->n = n;
        cr_assert(n >= 1 && n <= DNS_MAX_TARGETS);
    } else {
        cr_assert_eq(n, 0);
    }
    return rc;
}

/* Runs the loop until nothing is in flight (so a second callback would
 * show), bounded. */
static void run_idle(void)
{
    uint64_t deadline = now_ms() + WAIT_LIMIT_MS;
    while (dns_busy(w) && now_ms() < deadline)
        loop_turn(100);
    cr_assert(!dns_busy(w), "resolution still in flight after %d ms", WAIT_LIMIT_MS);
}

/* Resolves; for an asynchronous answer runs the loop and checks that the
 * callback came exactly once. Returns dns_resolve()'s return value. */
static int resolve(const char *host, int port, uint8_t transport, bool sips, struct result *r)
{
    int rc;

    memset(r, 0, sizeof(*r));
    rc = resolve_into(host, port, transport, sips, r);
    if (rc == 0) {
        run_idle();
        cr_assert_eq(r->calls, 1, "%s: %d callbacks", host, r->calls);
    } else {
        run_idle();
        cr_assert_eq(r->calls, 0, "%s: callback after a synchronous result", host);
    }
    return rc;
}

static void expect(const struct result *r, unsigned i, uint8_t proto, const char *ip, int port)
{
    char buf[NETADDR_STRLEN], want[NETADDR_STRLEN];

    cr_assert_lt(i, r->n, "target %u missing (have %u)", i, r->n);
    netaddr_str(&r->t[i].addr, buf, sizeof(buf));
    snprintf(want, sizeof(want), strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip, port);
    cr_expect_str_eq(buf, want, "target %u", i);
    cr_expect_eq(r->t[i].proto, proto, "target %u (%s): proto %u, want %u", i, buf, r->t[i].proto,
                 proto);
}

/* ---- dnsmasq ------------------------------------------------------------ */

static int free_udp_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_DGRAM, 0), port;

    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* A query for "ready.test" A; true once dnsmasq answers it. */
static bool dnsmasq_answers(int port)
{
    static const unsigned char q[] = {0x12, 0x34, 0x01, 0x00, 0,   1,   0,   0,   0, 0,
                                      0,    0,    5,    'r',  'e', 'a', 'd', 'y', 4, 't',
                                      'e',  's',  't',  0,    0,   1,   0,   1};
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned char buf[512];
    struct pollfd p;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    bool ok = false;

    if (fd < 0) return false;
    if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&a, sizeof(a)) == (ssize_t)sizeof(q)) {
        p = (struct pollfd){.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) == 1 && recv(fd, buf, sizeof(buf), 0) >= 12)
            ok = buf[0] == 0x12 && buf[1] == 0x34 && (buf[3] & 0x0f) == 0;
    }
    close(fd);
    return ok;
}

static const char *const records[] = {
    "--host-record=ready.test,127.0.0.1",
    "--host-record=a.test,127.0.0.2",
    "--host-record=dual.test,127.0.0.3,::3",
    "--host-record=short.test,127.0.0.30,1", /* TTL 1 s */
    "--host-record=srv.test,127.0.0.20",
    "--host-record=t1.test,127.0.0.11",
    "--host-record=t2.test,127.0.0.12",
    "--host-record=t3.test,127.0.0.13",
    "--host-record=wa.test,127.0.0.41",
    "--host-record=wb.test,127.0.0.42",
    /* no NAPTR: _sip._udp (3 priorities), _sip._tcp, _sips._tls */
    "--srv-host=_sip._udp.srv.test,t1.test,5070,10,50",
    "--srv-host=_sip._udp.srv.test,t2.test,5071,20,50",
    "--srv-host=_sip._udp.srv.test,t3.test,5072,5,50",
    "--srv-host=_sip._tcp.srv.test,t2.test,5090,1,0",
    "--srv-host=_sips._tls.srv.test,t1.test,5091,1,0",
    /* NAPTR: SIPS+D2T first, then SIP+D2T, then SIP+D2U; two to ignore */
    "--naptr-record=naptr.test,20,50,s,SIP+D2U,,_sip._udp.naptr.test",
    "--naptr-record=naptr.test,10,50,s,SIP+D2T,,_sip._tcp.naptr.test",
    "--naptr-record=naptr.test,5,10,s,SIPS+D2T,,_sips._tcp.naptr.test",
    "--naptr-record=naptr.test,1,10,u,E2U+sip,!^.*$!sip:x@y!,",
    "--naptr-record=naptr.test,2,10,s,SIP+D2S,,_sip._sctp.naptr.test",
    "--srv-host=_sip._tcp.naptr.test,t1.test,5080,1,0",
    "--srv-host=_sip._udp.naptr.test,t2.test,5081,1,0",
    "--srv-host=_sips._tcp.naptr.test,t3.test,5082,1,0",
    "--srv-host=_sip._sctp.naptr.test,t3.test,5083,1,0",
    /* NAPTR whose SRV name has no records: A/AAAA of the host, NAPTR's transport */
    "--naptr-record=nosrv.test,10,10,s,SIP+D2T,,_sip._tcp.nosrv.test",
    "--host-record=nosrv.test,127.0.0.50",
    /* SRV target with no address, then one with */
    "--srv-host=_sip._udp.half.test,gone.test,5100,1,0",
    "--srv-host=_sip._udp.half.test,t1.test,5101,2,0",
    /* equal priority: weight 100 against weight 0 */
    "--srv-host=_sip._udp.weight.test,wa.test,6000,1,100",
    "--srv-host=_sip._udp.weight.test,wb.test,6001,1,0",
};

static void start_dnsmasq(int port)
{
    char port_arg[32];
    const char *argv[64];
    unsigned n = 0;

    snprintf(port_arg, sizeof(port_arg), "--port=%d", port);
    argv[n++] = "dnsmasq";
    argv[n++] = "--no-daemon";
    argv[n++] = port_arg;
    argv[n++] = "--listen-address=127.0.0.1";
    argv[n++] = "--bind-interfaces";
    argv[n++] = "--no-resolv";
    argv[n++] = "--no-hosts";
    argv[n++] = "--conf-file=/dev/null";
    argv[n++] = "--pid-file";
    argv[n++] = "--local=/test/"; /* unknown names: NXDOMAIN, not REFUSED */
    argv[n++] = "--local-ttl=60"; /* SRV and NAPTR TTL (0 would not be cached) */
    for (unsigned i = 0; i < sizeof(records) / sizeof(records[0]); i++)
        argv[n++] = records[i];
    argv[n] = NULL;
    cr_assert_lt(n, sizeof(argv) / sizeof(argv[0]));

    dnsmasq = fork();
    cr_assert_geq(dnsmasq, 0);
    if (dnsmasq == 0) {
        int null = open("/dev/null", O_WRONLY);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a crashed test */
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp("dnsmasq", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* 100 x 100 ms at most */
        int st;
        cr_assert_eq(waitpid(dnsmasq, &st, WNOHANG), 0, "dnsmasq exited (%d)", st);
        if (dnsmasq_answers(port)) return;
    }
    cr_assert_fail("dnsmasq not answering on port %d", port);
}

static void stop_dnsmasq(void)
{
    if (dnsmasq <= 0) return;
    kill(dnsmasq, SIGTERM);
    waitpid(dnsmasq, NULL, 0);
    dnsmasq = -1;
}

/* ---- fixtures ------------------------------------------------------------- */

static unsigned small_limits; /* --dns-max-pending and --dns-cache-size for setup_worker() */

static void setup_worker(int server_port, bool v4_listener_only)
{
    memset(&cfg, 0, sizeof(cfg));
    cfg.dns_max_pending = cfg.dns_cache_size = small_limits;
    src = NULL;
    blackhole_queries = 0;
    snprintf(cfg.dns_servers[0], sizeof(cfg.dns_servers[0]), "127.0.0.1:%d", server_port);
    cfg.ndns = 1;
    if (v4_listener_only) {
        cfg.nlisten = 1;
        cfg.listen[0].proto = SIP_TRANSPORT_UDP;
        cr_assert_eq(netaddr_parse(&cfg.listen[0].addr, SLICE_LIT("127.0.0.1:5060")), 0);
    }
    w = calloc(1, sizeof(*w));
    cr_assert_not_null(w);
    w->cfg = &cfg;
    w->now_ms = now_ms();
    timer_wheel_init(&w->timers, w->now_ms, w);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    cr_assert_geq(epfd, 0);
    cr_assert_eq(dns_worker_init_watch(w, test_watch), 0);
}

static void setup_dnsmasq(void)
{
    int port = free_udp_port();
    start_dnsmasq(port);
    setup_worker(port, false);
}

static void setup_dnsmasq_v4(void)
{
    int port = free_udp_port();
    start_dnsmasq(port);
    setup_worker(port, true);
}

static void setup_dnsmasq_small(void)
{
    small_limits = 16; /* 2 per source */
    setup_dnsmasq();
}

static void setup_blackhole(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    struct epoll_event ev = {.events = EPOLLIN};

    blackhole = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(blackhole, 0);
    cr_assert_eq(bind(blackhole, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(blackhole, (struct sockaddr *)&a, &len), 0);
    setup_worker(ntohs(a.sin_port), false);
    ev.data.fd = blackhole;
    cr_assert_eq(epoll_ctl(epfd, EPOLL_CTL_ADD, blackhole, &ev), 0);
}

static void teardown(void)
{
    if (w) {
        dns_worker_cleanup(w);
        cr_assert_null(w->dns);
        free(w);
        w = NULL;
    }
    if (epfd >= 0) close(epfd);
    if (blackhole >= 0) close(blackhole);
    epfd = blackhole = -1;
    stop_dnsmasq();
}

TestSuite(dns, .init = setup_dnsmasq, .fini = teardown, .timeout = 30);
/* a worker with only an IPv4 listener */
TestSuite(dns_v4, .init = setup_dnsmasq_v4, .fini = teardown, .timeout = 30);
/* a server that never answers */
TestSuite(dns_silent, .init = setup_blackhole, .fini = teardown, .timeout = 30);
/* --dns-max-pending 16 --dns-cache-size 16 */
TestSuite(dns_small, .init = setup_dnsmasq_small, .fini = teardown, .timeout = 30);

static uint64_t stat_limit(enum stat_limit l)
{
    return atomic_load(&w->stats.limit_hits[l]);
}

static struct netaddr source(const char *hostport)
{
    struct netaddr a;
    cr_assert_eq(netaddr_parse(&a, slice_make(hostport, strlen(hostport))), 0);
    return a;
}

/* ---- cases -------------------------------------------------------------- */

Test(dns, ip_literals_are_immediate)
{
    struct result r;

    cr_assert_eq(resolve("127.0.0.1", 0, SIP_TRANSPORT_NONE, false, &r), 1);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.1", 5060);

    cr_assert_eq(resolve("[::1]", 0, SIP_TRANSPORT_NONE, true, &r), 1);
    expect(&r, 0, SIP_TRANSPORT_TLS, "::1", 5061);

    cr_assert_eq(resolve("::1", 5070, SIP_TRANSPORT_TCP, false, &r), 1);
    expect(&r, 0, SIP_TRANSPORT_TCP, "::1", 5070);

    cr_assert_eq(resolve("10.1.2.3", 0, SIP_TRANSPORT_TLS, false, &r), 1);
    expect(&r, 0, SIP_TRANSPORT_TLS, "10.1.2.3", 5061);

    cr_assert_eq(resolve("0.0.0.0", 5060, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve("[::1", 5060, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
}

Test(dns, bad_input_is_refused)
{
    struct result r;

    cr_assert_eq(resolve("", 0, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve("bad name.test", 0, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve("a..test", 0, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve(".", 0, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve("a.test", 70000, SIP_TRANSPORT_NONE, false, &r), -EINVAL);
    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_SCTP, false, &r), -EPROTONOSUPPORT);
    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_UDP, true, &r), -EPROTONOSUPPORT);
    cr_assert_eq(resolve("127.0.0.1", 0, SIP_TRANSPORT_WS, false, &r), -EPROTONOSUPPORT);
}

Test(dns, a_record_without_srv_gets_default_port)
{
    struct result r;

    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.2", 5060);

    /* sips: TLS on 5061; trailing dot and case do not matter */
    cr_assert_geq(resolve("A.Test.", 0, SIP_TRANSPORT_NONE, true, &r), 0);
    cr_assert_eq(r.status, 0);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.2", 5061);
}

Test(dns, port_given_means_address_records_only)
{
    struct result r;

    /* srv.test has SRV records; a port skips them (RFC 3263 §4.2) */
    cr_assert_eq(resolve("srv.test", 5099, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.20", 5099);

    cr_assert_geq(resolve("srv.test", 5098, SIP_TRANSPORT_TCP, true, &r), 0);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.20", 5098);

    /* A before AAAA */
    cr_assert_eq(resolve("dual.test", 5060, SIP_TRANSPORT_TCP, false, &r), 0);
    cr_assert_eq(r.n, 2);
    expect(&r, 0, SIP_TRANSPORT_TCP, "127.0.0.3", 5060);
    expect(&r, 1, SIP_TRANSPORT_TCP, "::3", 5060);
}

Test(dns, srv_without_naptr_in_priority_order)
{
    struct result r;

    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 5);
    /* _sip._udp by priority 5, 10, 20; then _sip._tcp; then _sips._tls */
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.13", 5072);
    expect(&r, 1, SIP_TRANSPORT_UDP, "127.0.0.11", 5070);
    expect(&r, 2, SIP_TRANSPORT_UDP, "127.0.0.12", 5071);
    expect(&r, 3, SIP_TRANSPORT_TCP, "127.0.0.12", 5090);
    expect(&r, 4, SIP_TRANSPORT_TLS, "127.0.0.11", 5091);
    cr_expect_eq(r.t[0].priority, 5);
    cr_expect_eq(r.t[1].priority, 10);
    cr_expect_eq(r.t[1].weight, 50);

    /* sips: only _sips._tcp / _sips._tls (answered from the cache by now) */
    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_NONE, true, &r), 1);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.11", 5091);
}

Test(dns, transport_given_queries_that_srv_only)
{
    struct result r;

    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_TCP, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TCP, "127.0.0.12", 5090);

    /* TLS: _sips._tcp (none here) and _sips._tls */
    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_TLS, false, &r), 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.11", 5091);

    /* no SRV for the transport: A with its default port */
    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_TCP, false, &r), 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TCP, "127.0.0.2", 5060);
    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_TLS, false, &r), 0);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.2", 5061);
}

Test(dns, naptr_then_srv_then_a)
{
    struct result r;

    cr_assert_eq(resolve("naptr.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 3, "%u targets", r.n);
    /* order 5 SIPS+D2T, 10 SIP+D2T, 20 SIP+D2U; E2U and D2S ignored */
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.13", 5082);
    expect(&r, 1, SIP_TRANSPORT_TCP, "127.0.0.11", 5080);
    expect(&r, 2, SIP_TRANSPORT_UDP, "127.0.0.12", 5081);

    /* sips: SIPS+D2T only */
    cr_assert_eq(resolve("naptr.test", 0, SIP_TRANSPORT_NONE, true, &r), 1); /* all cached */
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TLS, "127.0.0.13", 5082);

    /* NAPTR pointing at an SRV name without records: host A, NAPTR's transport */
    cr_assert_eq(resolve("nosrv.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_TCP, "127.0.0.50", 5060);
}

Test(dns, srv_target_without_address_is_skipped)
{
    struct result r;

    cr_assert_eq(resolve("half.test", 0, SIP_TRANSPORT_UDP, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.11", 5101);
}

Test(dns, equal_priority_uses_weights)
{
    struct result r;
    unsigned heavy_first = 0;

    for (int i = 0; i < 40; i++) {
        cr_assert_geq(resolve("weight.test", 0, SIP_TRANSPORT_UDP, false, &r), 0);
        cr_assert_eq(r.n, 2);
        cr_assert_neq(r.t[0].addr.in4.sin_port, r.t[1].addr.in4.sin_port);
        heavy_first += ntohs(r.t[0].addr.in4.sin_port) == 6000;
    }
    /* weight 0 against 100 comes first with probability 1/101 per try */
    cr_assert_geq(heavy_first, 35, "weight 100 first only %u of 40 times", heavy_first);
}

Test(dns, missing_name_fails_and_is_cached_negatively)
{
    struct result r;

    cr_assert_eq(resolve("missing.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, -ENOENT);
    cr_assert_eq(r.n, 0);
    /* every step is now a cached negative answer */
    cr_assert_eq(resolve("missing.test", 0, SIP_TRANSPORT_NONE, false, &r), -ENOENT);
    cr_assert_eq(resolve("missing.test", 5060, SIP_TRANSPORT_NONE, false, &r), -ENOENT);
}

Test(dns, answers_come_from_the_cache_until_their_ttl)
{
    struct result r;

    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.n, 5);
    cr_assert_eq(resolve("short.test", 5060, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    cr_assert_eq(resolve("short.test", 5060, SIP_TRANSPORT_NONE, false, &r), 1);

    /* short.test has TTL 1 s, the rest 60 s */
    clock_skew += 1500;
    loop_turn(0); /* the loop picks up the new time */
    cr_assert_eq(resolve("short.test", 5060, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, 0);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.30", 5060);

    /* with the server gone, the cached chain still answers, synchronously */
    stop_dnsmasq();
    cr_assert_eq(resolve("srv.test", 0, SIP_TRANSPORT_NONE, false, &r), 1);
    cr_assert_eq(r.n, 5);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.13", 5072);
    expect(&r, 4, SIP_TRANSPORT_TLS, "127.0.0.11", 5091);
}

Test(dns, concurrent_identical_lookups_each_get_one_callback)
{
    struct result r[6];
    unsigned n;

    memset(r, 0, sizeof(r));
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(dns_resolve(w, NULL, SLICE_LIT("naptr.test"), 0, SIP_TRANSPORT_NONE, false,
                                 on_done, &r[i], r[i].t, &n),
                     0);
    }
    run_idle();
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(r[i].calls, 1, "request %d: %d callbacks", i, r[i].calls);
        cr_assert_eq(r[i].status, 0);
        cr_assert_eq(r[i].n, 3);
        expect(&r[i], 0, SIP_TRANSPORT_TLS, "127.0.0.13", 5082);
    }
}

Test(dns, callback_may_resolve_again)
{
    struct result first, second;

    memset(&first, 0, sizeof(first));
    memset(&second, 0, sizeof(second));
    first.chain_host = "t2.test";
    first.chain = &second;
    first.chain_rc = 99;
    cr_assert_eq(resolve_into("a.test", 0, SIP_TRANSPORT_NONE, false, &first), 0);
    run_idle();
    cr_assert_eq(first.calls, 1);
    cr_assert_eq(first.chain_rc, 0);
    cr_assert_eq(second.calls, 1);
    cr_assert_eq(second.status, 0);
    expect(&second, 0, SIP_TRANSPORT_UDP, "127.0.0.12", 5000);
}

Test(dns_v4, asks_no_aaaa)
{
    struct result r;

    cr_assert_eq(resolve("dual.test", 5060, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.n, 1);
    expect(&r, 0, SIP_TRANSPORT_UDP, "127.0.0.3", 5060);
}

Test(dns_silent, unanswered_query_times_out)
{
    struct result r;

    cr_assert_eq(resolve("a.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, -ETIMEDOUT, "status %d", r.status);
    cr_assert_eq(r.n, 0);
    /* timeouts are not cached: the next try asks again */
    memset(&r, 0, sizeof(r));
    cr_assert_eq(resolve_into("a.test", 5060, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert(dns_busy(w));
    teardown(); /* cleanup with the query in flight */
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.status, -ECANCELED);
}

Test(dns_silent, cleanup_cancels_pending_lookups_once)
{
    struct result r[3], late;
    unsigned n;

    memset(r, 0, sizeof(r));
    cr_assert_eq(resolve_into("a.test", 0, SIP_TRANSPORT_NONE, false, &r[0]), 0);
    cr_assert_eq(resolve_into("b.test", 0, SIP_TRANSPORT_UDP, false, &r[1]), 0);
    cr_assert_eq(resolve_into("a.test", 0, SIP_TRANSPORT_NONE, false, &r[2]), 0);
    r[0].chain_host = "c.test"; /* resolving from the cancel callback fails now */
    r[0].chain = &late;
    loop_turn(10);
    dns_worker_cleanup(w);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(r[i].calls, 1, "request %d: %d callbacks", i, r[i].calls);
        cr_assert_eq(r[i].status, -ECANCELED);
    }
    cr_assert_eq(r[0].chain_rc, -ESHUTDOWN);
    cr_assert_eq(dns_resolve(w, NULL, SLICE_LIT("a.test"), 0, 0, false, on_done, &late, late.t, &n),
                 -ESHUTDOWN);
    dns_worker_cleanup(w); /* NULL-safe */
}

Test(dns_silent, failures_are_remembered_for_a_few_seconds)
{
    struct result r;
    unsigned sent;

    cr_assert_eq(resolve("dead.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    cr_assert_eq(r.status, -ETIMEDOUT);
    sent = blackhole_queries;
    cr_assert_geq(sent, 1);
    cr_assert_geq(atomic_load(&w->stats.dns_failures), 1);
    /* a flood for the dead name costs no query while it is remembered */
    for (int i = 0; i < 20; i++)
        cr_assert_eq(resolve("dead.test", 0, SIP_TRANSPORT_NONE, false, &r), -ETIMEDOUT);
    loop_turn(50);
    cr_assert_eq(blackhole_queries, sent, "%u queries, want %u", blackhole_queries, sent);
    cr_assert_geq(atomic_load(&w->stats.dns_cache_hits), 20);
    /* and asks again once DNS_FAIL_TTL_S has passed */
    clock_skew += DNS_FAIL_TTL_S * 1000 + 500;
    loop_turn(0);
    memset(&r, 0, sizeof(r));
    cr_assert_eq(resolve_into("dead.test", 0, SIP_TRANSPORT_NONE, false, &r), 0);
    loop_turn(50);
    cr_assert_gt(blackhole_queries, sent);
    teardown(); /* r lives on this stack: cancel it here */
    cr_assert_eq(r.calls, 1);
    cr_assert_eq(r.status, -ECANCELED);
}

Test(dns_small, pending_lookups_are_capped_per_source_and_per_worker)
{
    struct result r, p[20];
    struct netaddr srcs[10];
    char name[32], addr[32];
    unsigned k = 0;

    /* a.test in the cache (A; AAAA is NODATA) */
    cr_assert_eq(resolve("a.test", 5060, SIP_TRANSPORT_NONE, false, &r), 0);
    for (int i = 0; i < 10; i++) {
        snprintf(addr, sizeof(addr), "127.0.0.%d:5060", i + 2);
        srcs[i] = source(addr);
    }
    /* one source holds 16 / 8 = 2 resolutions in flight (one SRV query each) */
    memset(p, 0, sizeof(p));
    src = &srcs[0];
    for (; k < 2; k++) {
        snprintf(name, sizeof(name), "p%u.test", k);
        cr_assert_eq(resolve_into(name, 0, SIP_TRANSPORT_UDP, false, &p[k]), 0);
    }
    struct netaddr other_port = source("127.0.0.2:7000"); /* the same source */
    src = &other_port;
    cr_assert_eq(resolve_into("q.test", 0, SIP_TRANSPORT_UDP, false, &r), -EAGAIN);
    cr_assert_eq(stat_limit(LIMIT_DNS_PENDING), 1);
    /* over its share, a source is still answered from the cache */
    cr_assert_eq(resolve_into("a.test", 5060, SIP_TRANSPORT_NONE, false, &r), 1);
    cr_assert_geq(atomic_load(&w->stats.dns_cache_hits), 1);
    /* others have their own share, up to 16 in all */
    for (int i = 1; i < 8; i++) {
        src = &srcs[i];
        for (int j = 0; j < 2; j++, k++) {
            snprintf(name, sizeof(name), "p%u.test", k);
            cr_assert_eq(resolve_into(name, 0, SIP_TRANSPORT_UDP, false, &p[k]), 0, "%s", name);
        }
    }
    src = &srcs[8];
    cr_assert_eq(resolve_into("q.test", 0, SIP_TRANSPORT_UDP, false, &r), -EAGAIN);
    cr_assert_eq(stat_limit(LIMIT_DNS_PENDING), 2);
    /* sipedge's own lookups are never refused by these limits */
    src = NULL;
    memset(&p[k], 0, sizeof(p[k]));
    cr_assert_eq(resolve_into("own.test", 0, SIP_TRANSPORT_UDP, false, &p[k++]), 0);
    cr_assert_eq(stat_limit(LIMIT_DNS_PENDING), 2);
    cr_assert_eq(atomic_load(&w->stats.dns_queries), 2 + 17, "queries %llu",
                 (unsigned long long)atomic_load(&w->stats.dns_queries));
    cr_assert_eq(stat_limit(LIMIT_DNS_CACHE), 0);
    run_idle();
    for (unsigned i = 0; i < k; i++)
        cr_assert_eq(p[i].calls, 1, "p%u: %d callbacks", i, p[i].calls);
    /* 17 names x (SRV, A, AAAA) answers (NXDOMAIN) for a 16-answer cache:
     * the oldest went before their TTL, counted */
    cr_assert_leq(w->dns->cache.n, 16);
    cr_assert_gt(stat_limit(LIMIT_DNS_CACHE), 0);
    /* all finished: the first source has its share back */
    src = &srcs[0];
    memset(&r, 0, sizeof(r));
    cr_assert_eq(resolve_into("q.test", 0, SIP_TRANSPORT_UDP, false, &r), 0);
    run_idle();
    cr_assert_eq(r.calls, 1, "%d calls", r.calls);
}
