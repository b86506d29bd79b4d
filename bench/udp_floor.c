/* The kernel's share of a UDP proxy's cost on this machine: a relay that
 * does nothing but receive a datagram and send it on, paced like the SIP
 * traffic of bench/compare_udp.py, with its CPU time (user + system, this
 * thread only) divided by the datagrams it relayed.
 *
 * A pacer sends --count datagrams of --size bytes at --rate per second to
 * the relay, which forwards each to a sink; pacer and sink run pinned to
 * one CPU, the relay to the other (like sipp and the proxy). Two relays:
 *   blocking  recvfrom + sendto per datagram (Kamailio's UDP receivers)
 *   epoll     epoll_wait + recvmmsg + sendto (sipedge's worker loop)
 * A SIP call through a stateful proxy is 7 datagrams in and 7 out
 * (INVITE/100/180/200/ACK/BYE/200 plus the proxy's own 100 Trying), so
 * 7 x the relay's cost per datagram is what any proxy pays per call
 * before doing any SIP work.
 *
 *   udp_floor [--count N] [--rate R] [--size BYTES] [--cpu A,B]
 * Bounded: N datagrams (default 20000) at R/s (default 3500). */

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static int udp_socket(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof *addr;
    int big = 4 << 20;
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 ||
        getsockname(fd, (struct sockaddr *)addr, &len) < 0) {
        perror("udp_floor: socket");
        exit(2);
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    return fd;
}

struct relay {
    bool use_epoll;
    int fd, cpu;
    struct sockaddr_in sink;
    size_t count;
    _Atomic bool ready;
    /* out */
    size_t relayed;
    uint64_t cpu_ns;
};

static void *relay_thread(void *arg)
{
    struct relay *r = arg;
    char buf[8][2048];
    struct mmsghdr mm[8];
    struct iovec iov[8];
    struct sockaddr_in from[8];
    int ep = -1;

    pin_to(r->cpu);
    if (r->use_epoll) {
        struct epoll_event ev = {.events = EPOLLIN};
        ep = epoll_create1(EPOLL_CLOEXEC);
        epoll_ctl(ep, EPOLL_CTL_ADD, r->fd, &ev);
    }
    atomic_store(&r->ready, true);
    uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    while (r->relayed < r->count) {
        if (!r->use_epoll) {
            struct timeval tv = {.tv_sec = 2};
            setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            ssize_t n = recvfrom(r->fd, buf[0], sizeof buf[0], 0, NULL, NULL);
            if (n < 0) break; /* timeout: the pacer is done, datagrams were lost */
            sendto(r->fd, buf[0], (size_t)n, 0, (struct sockaddr *)&r->sink, sizeof r->sink);
            r->relayed++;
            continue;
        }
        struct epoll_event ev;
        int k = epoll_wait(ep, &ev, 1, 2000);
        if (k <= 0) break;
        for (int i = 0; i < 8; i++) {
            iov[i] = (struct iovec){buf[i], sizeof buf[i]};
            mm[i].msg_hdr = (struct msghdr){.msg_name = &from[i],
                                            .msg_namelen = sizeof from[i],
                                            .msg_iov = &iov[i],
                                            .msg_iovlen = 1};
        }
        int n = recvmmsg(r->fd, mm, 8, MSG_DONTWAIT, NULL);
        for (int i = 0; i < n; i++) {
            sendto(r->fd, buf[i], mm[i].msg_len, MSG_DONTWAIT, (struct sockaddr *)&r->sink,
                   sizeof r->sink);
            r->relayed++;
        }
    }
    r->cpu_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
    if (ep >= 0) close(ep);
    return NULL;
}

struct sink {
    int fd, cpu;
    _Atomic bool stop;
    size_t got;
};

static void *sink_thread(void *arg)
{
    struct sink *s = arg;
    char buf[2048];
    struct timeval tv = {.tv_usec = 200000};
    pin_to(s->cpu);
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (!atomic_load(&s->stop))
        if (recv(s->fd, buf, sizeof buf, 0) > 0) s->got++;
    return NULL;
}

static void run(bool use_epoll, size_t count, double rate, size_t size, const int *cpus)
{
    struct sockaddr_in ra, sa, pa;
    struct relay r = {.use_epoll = use_epoll, .count = count, .cpu = cpus[0]};
    struct sink s = {.cpu = cpus[1]};
    int pfd = udp_socket(&pa);
    pthread_t rt, st;
    char *msg = malloc(size);

    r.fd = udp_socket(&ra);
    s.fd = udp_socket(&sa);
    r.sink = sa;
    memset(msg, 'x', size);
    pthread_create(&st, NULL, sink_thread, &s);
    pthread_create(&rt, NULL, relay_thread, &r);
    while (!atomic_load(&r.ready))
        usleep(1000);
    pin_to(cpus[1]);
    uint64_t t0 = now_ns(CLOCK_MONOTONIC), gap = (uint64_t)(1e9 / rate);
    for (size_t i = 0; i < count; i++) {
        uint64_t due = t0 + i * gap;
        for (uint64_t t = now_ns(CLOCK_MONOTONIC); t < due; t = now_ns(CLOCK_MONOTONIC))
            if (due - t > 60000) usleep((useconds_t)((due - t) / 2000));
        sendto(pfd, msg, size, 0, (struct sockaddr *)&ra, sizeof ra);
    }
    pthread_join(rt, NULL);
    atomic_store(&s.stop, true);
    pthread_join(st, NULL);
    printf("%-8s relay: %zu of %zu datagrams relayed (%zu reached the sink), %.2f us CPU per "
           "datagram, x7 = %.1f us per call\n",
           use_epoll ? "epoll" : "blocking", r.relayed, count, s.got,
           r.relayed ? (double)r.cpu_ns / 1e3 / (double)r.relayed : 0.0,
           r.relayed ? 7 * (double)r.cpu_ns / 1e3 / (double)r.relayed : 0.0);
    close(pfd);
    close(r.fd);
    close(s.fd);
    free(msg);
}

int main(int argc, char **argv)
{
    size_t count = 20000, size = 700;
    double rate = 3500;
    int cpus[2] = {0, 1};
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'}, {"rate", required_argument, NULL, 'r'},
        {"size", required_argument, NULL, 's'},  {"cpu", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            count = strtoul(optarg, NULL, 10);
            break;
        case 'r':
            rate = strtod(optarg, NULL);
            break;
        case 's':
            size = strtoul(optarg, NULL, 10);
            break;
        case 'c':
            if (sscanf(optarg, "%d,%d", &cpus[0], &cpus[1]) != 2) {
                fprintf(stderr, "udp_floor: --cpu: want A,B\n");
                return 2;
            }
            break;
        default:
            fprintf(stderr, "usage: %s [--count N] [--rate R] [--size BYTES] [--cpu A,B]\n",
                    argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (count == 0 || count > 10000000 || rate <= 0 || rate > 1e6 || size == 0 || size > 2048) {
        fprintf(stderr, "udp_floor: bad --count, --rate or --size\n");
        return 2;
    }
    printf("# %zu datagrams of %zu bytes at %.0f/s, relay on CPU %d, pacer and sink on CPU %d\n",
           count, size, rate, cpus[0], cpus[1]);
    run(false, count, rate, size, cpus);
    run(true, count, rate, size, cpus);
    return 0;
}
