/* Microbenchmark: parse (+ validate) + proxy rewrite of a typical INVITE, time per message. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rewrite.h"
#include "core/sipmsg.h"

/* What a contact-center phone sends through the edge: two Routes (the
 * edge itself, then the SIP Server), tags, outbound Contact, an SDP offer. */
#define HEADERS                                                                                    \
    "INVITE sip:+14155550123@sip.example.com SIP/2.0\r\n"                                          \
    "Via: SIP/2.0/TLS 198.51.100.23:50612;branch=z9hG4bK-7d1a6c5e4b3a;rport\r\n"                   \
    "Max-Forwards: 70\r\n"                                                                         \
    "Route: <sip:edge1.example.com:5061;transport=tls;lr>\r\n"                                     \
    "Route: <sip:sipserver.example.com;lr>\r\n"                                                    \
    "From: \"Agent 1042\" <sip:1042@cc.example.com>;tag=8f3a2b1c9d\r\n"                            \
    "To: <sip:+14155550123@sip.example.com>\r\n"                                                   \
    "Call-ID: 6a7c9e1f-3b5d-4c2a-9e8f-0d1c2b3a4f5e@198.51.100.23\r\n"                              \
    "CSeq: 21 INVITE\r\n"                                                                          \
    "Contact: <sip:1042@198.51.100.23:50612;transport=tls;ob>\r\n"                                 \
    "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, OPTIONS, UPDATE, PRACK\r\n"                   \
    "Supported: replaces, timer, 100rel, outbound\r\n"                                             \
    "User-Agent: PolycomVVX-VVX_450/6.4.3\r\n"                                                     \
    "Content-Type: application/sdp\r\n"

#define SDP                                                                                        \
    "v=0\r\n"                                                                                      \
    "o=1042 1690000000 1690000000 IN IP4 198.51.100.23\r\n"                                        \
    "s=-\r\n"                                                                                      \
    "c=IN IP4 198.51.100.23\r\n"                                                                   \
    "t=0 0\r\n"                                                                                    \
    "m=audio 16384 RTP/AVP 0 8 101\r\n"                                                            \
    "a=rtpmap:0 PCMU/8000\r\n"                                                                     \
    "a=rtpmap:8 PCMA/8000\r\n"                                                                     \
    "a=rtpmap:101 telephone-event/8000\r\n"                                                        \
    "a=fmtp:101 0-15\r\n"                                                                          \
    "a=ptime:20\r\n"                                                                               \
    "a=sendrecv\r\n"

static const char rr_line[] = "Record-Route: <sip:edge1.example.com:5061;transport=tls;lr>\r\n";
static const char via_prefix[] = "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-w0-";

static double clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Wall time is what the brief measures; the thread's CPU time is printed
 * beside it because on a shared machine the wall clock also counts the
 * time other processes held the core. */
static double now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}
static double cpu_ns(void)
{
    return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The per-message Via: a branch that encodes a transaction number. */
static size_t build_via(char *dst, unsigned long n)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = sizeof via_prefix - 1;
    memcpy(dst, via_prefix, o);
    for (int s = 60; s >= 0; s -= 4)
        dst[o++] = hex[(n >> s) & 15];
    memcpy(dst + o, ";rport\r\n", 8);
    return o + 8;
}

int main(int argc, char **argv)
{
    unsigned long iters = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
    int cpu = argc > 2 ? atoi(argv[2]) : sched_getcpu();
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) perror("sched_setaffinity");

    static char msg[2048];
    int len = snprintf(msg, sizeof msg, HEADERS "Content-Length: %zu\r\n\r\n" SDP, sizeof SDP - 1);
    static const struct sipmsg_limits lim = {65535, 64};
    struct sip_hdr hdrs[64];
    struct sip_msg m;
    struct rewrite rw;
    static char out[4096];
    char via[128];
    unsigned long sink = 0;

    /* check once that the work is what we claim */
    if (sipmsg_parse(msg, (size_t)len, &m, hdrs, &lim, SIPMSG_DATAGRAM) != len ||
        sipmsg_validate(&m) != SIP_ERR_NONE || m.count[SIP_HDR_ROUTE] != 2) {
        fprintf(stderr, "bench_parse: the sample INVITE does not parse\n");
        return 1;
    }

    /* Each phase runs in chunks; the minimum over chunks is the cost on a
     * quiet core, the median shows how noisy the machine was. */
    enum { PARSE, VALIDATE, REWRITE, FULL, NPHASE };
    static const char *const names[NPHASE] = {"parse only", "parse + validate",
                                              "parse + rewrite + build",
                                              "parse + validate + rewrite + build"};
    const unsigned long chunk = iters < 10000 ? iters : 10000;
    const unsigned long nchunks = iters / chunk ? iters / chunk : 1;
    double *ns = calloc(NPHASE * nchunks, sizeof *ns);
    double *cns = calloc(NPHASE * nchunks, sizeof *cns);
    ssize_t outlen = 0;
    for (int warm = 1; warm >= 0; warm--) {
        for (unsigned long c = 0; c < (warm ? 1 : nchunks); c++) {
            for (int ph = 0; ph < NPHASE; ph++) {
                double t0 = now_ns(), c0 = cpu_ns();
                for (unsigned long i = 0; i < chunk; i++) {
                    int r = sipmsg_parse(msg, (size_t)len, &m, hdrs, &lim, SIPMSG_DATAGRAM);
                    if (ph == PARSE) {
                        sink += (unsigned long)r + m.nhdrs;
                        continue;
                    }
                    enum sip_err e = ph == REWRITE ? SIP_ERR_NONE : sipmsg_validate(&m);
                    if (ph == VALIDATE) {
                        sink += e;
                        continue;
                    }
                    if (r < 0 || e != SIP_ERR_NONE) abort();
                    rewrite_init(&rw, msg, m.headers_len + m.body.len);
                    rewrite_add_top(&rw, &m, slice_make(via, build_via(via, c * chunk + i)));
                    rewrite_add_before(&rw, &m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(rr_line));
                    rewrite_remove_value(&rw, &m, sipmsg_hdr(&m, SIP_HDR_ROUTE));
                    rewrite_dec_max_forwards(&rw, &m, 70);
                    outlen = rewrite_build(&rw, out, sizeof out);
                    if (outlen < 0) abort();
                    sink += (unsigned long)outlen + (unsigned char)out[i % (unsigned long)outlen];
                }
                if (!warm) {
                    ns[ph * nchunks + c] = (now_ns() - t0) / (double)chunk;
                    cns[ph * nchunks + c] = (cpu_ns() - c0) / (double)chunk;
                }
            }
        }
    }

    printf("message: %d bytes in, %zd bytes out, %u header values\n", len, outlen, m.nhdrs);
    printf("iterations: %lu per phase (%lu chunks) on cpu %d\n", nchunks * chunk, nchunks, cpu);
    printf("%-36s %26s   %s\n", "", "wall (CLOCK_MONOTONIC)", "thread CPU time");
    for (int ph = 0; ph < NPHASE; ph++) {
        double *v = ns + ph * nchunks, *cv = cns + ph * nchunks;
        qsort(v, nchunks, sizeof *v, cmp_double);
        qsort(cv, nchunks, sizeof *cv, cmp_double);
        printf("%-36s min %6.1f median %6.1f ns   min %6.1f median %6.1f ns/msg\n", names[ph], v[0],
               v[nchunks / 2], cv[0], cv[nchunks / 2]);
    }
    double *rwr = ns + REWRITE * nchunks, *full = ns + FULL * nchunks;
    printf("parse+rewrite: %.1f ns/msg, %.2f M msg/s (min wall)\n", rwr[0], 1e3 / rwr[0]);
    printf("parse+validate+rewrite: %.1f ns/msg, %.2f M msg/s (min wall)\n", full[0],
           1e3 / full[0]);
    free(ns);
    free(cns);
    return sink == 42 ? 2 : 0; /* keep the work observable */
}
