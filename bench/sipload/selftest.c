/* sipload --selftest: its pure parts (percentiles, the token bucket, the
 * message templates and builders, source addresses) checked without a network;
 * run by ctest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/sipload/report.h"
#include "bench/sipload/sipload.h"
#include "core/sipuri.h"

static int npass, nfail;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            npass++;                                                                               \
        } else {                                                                                   \
            nfail++;                                                                               \
            fprintf(stderr, "selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                                          \
    } while (0)

static bool near(uint64_t got, uint64_t want, double rel)
{
    double d = (double)got - (double)want;
    return (d < 0 ? -d : d) <= rel * (double)want;
}

static void test_hist(void)
{
    static struct hist h, h2;
    hist_init(&h);
    CHECK(hist_quantile(&h, 0.5) == 0);
    for (uint64_t v = 1; v <= 100000; v++)
        hist_add(&h, v * 1000); /* 1 us .. 100 ms in ns */
    CHECK(h.n == 100000 && h.min == 1000 && h.max == 100000000);
    CHECK(near(hist_quantile(&h, 0.5), 50000000, 0.02));
    CHECK(near(hist_quantile(&h, 0.99), 99000000, 0.02));
    CHECK(near(hist_quantile(&h, 0.999), 99900000, 0.02));
    CHECK(hist_quantile(&h, 1.0) == 100000000);
    /* one outlier among 1000 equal values: p99 ignores it, p99.9 does not */
    hist_init(&h2);
    for (int i = 0; i < 999; i++)
        hist_add(&h2, 200000);
    hist_add(&h2, 44000000);
    CHECK(near(hist_quantile(&h2, 0.99), 200000, 0.02));
    CHECK(near(hist_quantile(&h2, 0.999), 200000, 0.02));
    CHECK(hist_quantile(&h2, 1.0) == 44000000);
    hist_merge(&h2, &h);
    CHECK(h2.n == 101000 && h2.max == 100000000 && h2.min == 1000);
    /* every value lies in its bucket, buckets are ordered and narrow */
    bool inside = true, narrow = true;
    for (uint64_t v = 0; v < (1ull << 40); v = v * 3 / 2 + 1) {
        unsigned i = hist__index(v);
        uint64_t lo = hist__lower(i), hi = hist__lower(i + 1);
        inside &= lo <= v && v < hi && i + 1 < HIST_N;
        narrow &= hi - lo <= 1 + lo / 32;
    }
    CHECK(inside);
    CHECK(narrow);
    CHECK(hist__index(UINT64_MAX) == HIST_N - 1);
}

static void test_token_bucket(void)
{
    struct tbucket tb;
    tb_init(&tb, 1000, 0);
    CHECK(tb_take(&tb, 0, 100) == 0);
    CHECK(tb_wait_ns(&tb) > 0 && tb_wait_ns(&tb) <= 1000001);
    CHECK(tb_take(&tb, 10000000, 100) == 10); /* 10 ms at 1000/s */
    CHECK(tb_take(&tb, 10000000, 100) == 0);
    CHECK(tb_take(&tb, 20000000, 4) == 4 && tb_take(&tb, 20000000, 100) == 6);
    /* a second late: 200 ms of tokens (and one) kept, the rest counted as lost */
    CHECK(tb_take(&tb, 1020000000, 100000) == 201);
    CHECK(tb.lost > 798 && tb.lost < 800);
    tb_init(&tb, 0, 0);
    CHECK(tb_take(&tb, 5, 7) == 7);
}

static struct sl_opts test_opts(void)
{
    struct sl_opts o;
    memset(&o, 0, sizeof o);
    strcpy(o.domain, "127.0.0.1:5060");
    o.sdp = true;
    o.expires_s = 600;
    o.to_phones = true;
    return o;
}

static int parse(const char *buf, size_t len, struct sip_msg *m, struct sip_hdr *hdrs)
{
    struct sipmsg_limits lim = {65535, SL_MAX_HDRS};
    int r = sipmsg_parse(buf, len, m, hdrs, &lim, SIPMSG_DATAGRAM);
    if (r < 0 || sipmsg_validate(m) != SIP_ERR_NONE) return -1;
    return r;
}

/* The INVITE a template renders, as a proxy would see it. */
static void test_invite(struct sl_sender *s, const struct sl_opts *o)
{
    static char out[TMPL_MAX];
    struct sip_hdr hdrs[SL_MAX_HDRS];
    struct sip_msg m;
    uint64_t vals[TF__COUNT] = {sl_call_id(7, 3), 42}, id = 0;

    msg_invite_tmpl(&s->invite, o, s, 5, true);
    CHECK(!s->invite.overflow && s->invite.nf == 5);
    size_t n = tmpl_render(&s->invite, out, sizeof out, vals);
    CHECK(n == s->invite.len && n > 0);
    CHECK(parse(out, n, &m, hdrs) == (int)n);
    CHECK(m.method == SIP_METHOD_INVITE && m.cseq == 1);
    CHECK(slice_eq_lit(m.ruri, "sip:p00000042@127.0.0.1:5060"));
    CHECK(slice_eq_lit(m.call_id, "0000000300000007-05@sipload"));
    CHECK(sl_parse_id(m.call_id, &id) && id == sl_call_id(7, 3));
    CHECK(m.body.len > 100 && (int64_t)m.body.len == m.content_length);
    struct sip_via v;
    CHECK(sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &v) == 0 &&
          slice_eq_lit(v.branch, "z9hG4bK-sl0000000300000007i") && v.port == 40001);
    CHECK(tmpl_render(&s->invite, out, n - 1, vals) == 0);
    CHECK(!sl_parse_id(SLICE_LIT("00000003000000g7"), &id));
}

/* The INVITE as it arrives at the UAS through a proxy, the UAS's 200, the
 * UAC's dialog from it and its ACK and BYE. */
static void test_dialog(struct sl_sender *s, const struct sl_opts *o)
{
    static char in[4096], out[4096];
    struct sip_hdr hdrs[SL_MAX_HDRS], h2[SL_MAX_HDRS];
    struct sip_msg m, r;
    const char *req = "INVITE sip:p00000042@127.0.0.1:5070 SIP/2.0\r\n"
                      "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy\r\n"
                      "v: SIP/2.0/UDP 127.1.0.1:40001;branch=z9hG4bK-sl0000000300000007i;rport\r\n"
                      "Record-Route: <sip:127.0.0.1:5060;lr;r=1>, <sip:127.0.0.1:5061;lr;r=2>\r\n"
                      "From: <sip:sipload@127.0.0.1:5060>;tag=0000000300000007\r\n"
                      "To: <sip:p00000042@127.0.0.1:5060>\r\n"
                      "Call-ID: 0000000300000007-05@sipload\r\nCSeq: 1 INVITE\r\n"
                      "Max-Forwards: 69\r\nContent-Length: 0\r\n\r\n";
    size_t len = strlen(req);
    memcpy(in, req, len);
    CHECK(parse(in, len, &m, hdrs) > 0);
    struct buf b = buf_make(out, sizeof out);
    msg_response(&b, &m, 200, "OK", "<sip:uas@127.0.0.1:5070>", "sl-uas", true, false);
    CHECK(buf_ok(&b) && parse(out, b.len, &r, h2) > 0);
    CHECK(r.status == 200 && sipmsg_hdr_count(&r, SIP_HDR_VIA) == 2);
    CHECK(sipmsg_hdr_count(&r, SIP_HDR_RECORD_ROUTE) == 2);
    struct sip_addr to;
    CHECK(sipuri_parse_addr(sipmsg_hdr(&r, SIP_HDR_TO)->value, &to) == 0 &&
          slice_eq_lit(to.tag, "sl-uas"));

    static struct sl_call c;
    CHECK(uac__save_dialog(&c, &r));
    CHECK(c.target_len == strlen("sip:uas@127.0.0.1:5070"));
    CHECK(c.route_len > 0 &&
          memcmp(c.route, "Route: <sip:127.0.0.1:5061;lr;r=2>, <sip:127.0.0.1:5060;lr;r=1>\r\n",
                 c.route_len) == 0);
    for (int bye = 0; bye < 2; bye++) {
        static char ab[4096];
        struct sip_hdr h3[SL_MAX_HDRS];
        struct sip_msg a;
        b = buf_make(ab, sizeof ab);
        msg_ack_bye(&b, o, s, 5, &c, sl_call_id(7, 3), bye);
        CHECK(buf_ok(&b) && parse(ab, b.len, &a, h3) > 0);
        CHECK(a.method == (bye ? SIP_METHOD_BYE : SIP_METHOD_ACK));
        CHECK(sipmsg_hdr_count(&a, SIP_HDR_ROUTE) == 2 &&
              slice_eq_lit(a.ruri, "sip:uas@127.0.0.1:5070"));
        CHECK(slice_eq_lit(a.call_id, "0000000300000007-05@sipload"));
    }
    /* a 200 without Contact gives no dialog; a failed build sends nothing */
    b = buf_make(out, sizeof out);
    msg_response(&b, &m, 486, "Busy Here", NULL, "x", false, false);
    CHECK(buf_ok(&b) && parse(out, b.len, &r, h2) > 0 && !uac__save_dialog(&c, &r));
    b = buf_make(out, 100);
    msg_response(&b, &m, 200, "OK", NULL, "x", true, false);
    CHECK(!buf_ok(&b));
}

static void test_register(const struct sl_opts *o)
{
    static char out[2048];
    struct sip_hdr hdrs[SL_MAX_HDRS];
    struct sip_msg m;
    struct netaddr local;
    CHECK(netaddr_parse(&local, SLICE_LIT("127.1.3.7:50123")) == 0);
    struct buf b = buf_make(out, sizeof out);
    msg_register(&b, o, 99, SL_TLS, &local, 1);
    CHECK(buf_ok(&b) && parse(out, b.len, &m, hdrs) > 0);
    CHECK(m.method == SIP_METHOD_REGISTER && slice_eq_lit(m.ruri, "sip:127.0.0.1:5060"));
    struct sip_addr ct;
    CHECK(sipuri_parse_addr(sipmsg_hdr(&m, SIP_HDR_CONTACT)->value, &ct) == 0 &&
          slice_eq_lit(ct.uri_text, "sip:p00000099@127.1.3.7:50123;transport=tls"));
    char user[16];
    msg_phone_user(user, 1234);
    CHECK(strcmp(user, "p00001234") == 0);
}

static void test_src_addrs(void)
{
    static struct sl_run run;
    static struct sl_thread th;
    struct netaddr dst, a;
    run.nthreads = 2;
    run.o.src_addrs = 300;
    th.run = &run;
    th.o = &run.o;
    th.id = 1;
    CHECK(netaddr_parse(&dst, SLICE_LIT("127.0.0.1:5060")) == 0);
    bool ok = true;
    uint32_t seen[300] = {0};
    for (int i = 0; i < 300; i++) {
        ok &= net_src_addr(&th, &dst, &a);
        uint32_t ip = ntohl(a.in4.sin_addr.s_addr);
        ok &= (ip >> 24) == 127 && (ip & 0xff) != 0 && (ip & 0xff) != 255 && (ip >> 16) != 0x7f00;
        seen[i] = ip;
    }
    CHECK(ok);
    CHECK(seen[0] == (127u << 24 | 1u << 16 | 0u << 8 | 2u)); /* thread 1 starts at the 2nd */
    CHECK(seen[150] == seen[0]);                              /* 300 addresses, every 2nd */
    CHECK(netaddr_parse(&dst, SLICE_LIT("10.0.0.1:5060")) == 0 && !net_src_addr(&th, &dst, &a));
}

int sl_selftest(void)
{
    struct sl_opts o = test_opts();
    static struct sl_sender s;
    struct netaddr local;
    netaddr_parse(&local, SLICE_LIT("127.1.0.1:40001"));
    s.proto = SL_UDP;
    msg_via(s.via, sizeof s.via, SL_UDP, &local);
    msg_contact(s.contact, sizeof s.contact, "sipload", SL_UDP, &local);

    test_hist();
    test_token_bucket();
    test_invite(&s, &o);
    test_dialog(&s, &o);
    test_register(&o);
    test_src_addrs();
    printf("sipload selftest: %d passed, %d failed\n", npass, nfail);
    return nfail ? -1 : 0;
}
