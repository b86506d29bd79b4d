/* Tests for core/rewrite.c: splicing Via/Route/Record-Route/Max-Forwards edits into received bytes.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "core/rewrite.h"
#include "core/sipmsg.h"

TestSuite(rewrite);

static const struct sipmsg_limits lim = {65535, 64};

struct parsed {
    struct sip_msg m;
    struct sip_hdr h[64];
    const char *src;
    size_t len;
    struct rewrite rw;
};

static void parse(struct parsed *p, const char *src, size_t len)
{
    p->src = src;
    p->len = len;
    int r = sipmsg_parse(src, len, &p->m, p->h, &lim, SIPMSG_DATAGRAM);
    cr_assert_eq(r, (int)len, "parse: %d %s", r, sipmsg_err_str(p->m.err));
    rewrite_init(&p->rw, src, len);
}
#define PARSE(p, lit) parse((p), (lit), sizeof(lit) - 1)

/* Builds into a buffer of exactly the announced size, checks the result
 * against want byte for byte, and that one byte less does not fit. */
static void expect_out(struct parsed *p, const char *want, size_t want_len)
{
    cr_assert_eq(p->rw.out_len, want_len, "out_len %zu, want %zu", p->rw.out_len, want_len);
    static char out[8192];
    cr_assert(want_len < sizeof out);
    ssize_t n = rewrite_build(&p->rw, out, want_len);
    cr_assert_eq(n, (ssize_t)want_len, "built %zd bytes, want %zu", n, want_len);
    cr_assert(memcmp(out, want, want_len) == 0, "got:\n%.*s\nwant:\n%.*s", (int)n, out,
              (int)want_len, want);
    if (want_len)
        cr_assert_eq(rewrite_build(&p->rw, out, want_len - 1), -1, "a short buffer must fail");
    /* and the result is still a message the parser accepts */
    struct sip_msg m;
    struct sip_hdr h[64];
    cr_assert_gt(sipmsg_parse(out, want_len, &m, h, &lim, SIPMSG_DATAGRAM), 0, "%s",
                 sipmsg_err_str(m.err));
}
#define EXPECT(p, lit) expect_out((p), (lit), sizeof(lit) - 1)

#define SL   "INVITE sip:bob@example.com SIP/2.0\r\n"
#define VIA1 "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\n"
#define MF   "Max-Forwards: 70\r\n"
#define RT   "Route: <sip:p1.example.com;lr>\r\n"
#define DLG                                                                                        \
    "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\nCall-ID: c1\r\n"          \
    "CSeq: 1 INVITE\r\n"
#define END "Content-Length: 4\r\n\r\nbody"

#define NEWVIA "Via: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKp\r\n"
#define NEWRR  "Record-Route: <sip:proxy.example.com;lr>\r\n"

Test(rewrite, no_edits_copies_exactly)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT DLG END);
    EXPECT(&p, SL VIA1 MF RT DLG END);
}

Test(rewrite, add_top_via)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT DLG END);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    EXPECT(&p, SL NEWVIA VIA1 MF RT DLG END);
}

Test(rewrite, add_top_when_no_headers)
{
    struct parsed p;
    PARSE(&p, "OPTIONS sip:x SIP/2.0\r\n\r\n");
    cr_assert_eq(p.m.nhdrs, 0);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    EXPECT(&p, "OPTIONS sip:x SIP/2.0\r\n" NEWVIA "\r\n");

    PARSE(&p, "OPTIONS sip:x SIP/2.0\n\n");
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    EXPECT(&p, "OPTIONS sip:x SIP/2.0\n" NEWVIA "\n");
}

Test(rewrite, record_route_when_none)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT DLG END);
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(NEWRR));
    EXPECT(&p, SL NEWRR VIA1 MF RT DLG END);
}

Test(rewrite, record_route_before_existing)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF DLG "Record-Route: <sip:a.example.com;lr>, <sip:b.example.com;lr>\r\n"
                             "Record-Route: <sip:c.example.com;lr>\r\n" END);
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(NEWRR));
    EXPECT(&p,
           SL VIA1 MF DLG NEWRR "Record-Route: <sip:a.example.com;lr>, <sip:b.example.com;lr>\r\n"
                                "Record-Route: <sip:c.example.com;lr>\r\n" END);
}

Test(rewrite, path_before_existing_compact_via_message)
{
    struct parsed p;
    PARSE(&p, "REGISTER sip:example.com SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bK2\r\n"
              "Path: <sip:edge2.example.com;lr>\r\nl: 0\r\n\r\n");
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_PATH, SLICE_LIT("Path: <sip:f@me;lr;ob>\r\n"));
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    EXPECT(&p, "REGISTER sip:example.com SIP/2.0\r\n" NEWVIA "v: SIP/2.0/TCP h;branch=z9hG4bK2\r\n"
               "Path: <sip:f@me;lr;ob>\r\nPath: <sip:edge2.example.com;lr>\r\nl: 0\r\n\r\n");
}

Test(rewrite, remove_route_alone_on_line)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT "Route: <sip:p2.example.com;lr>\r\n" DLG END);
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    EXPECT(&p, SL VIA1 MF "Route: <sip:p2.example.com;lr>\r\n" DLG END);
}

Test(rewrite, remove_route_folded_line)
{
    struct parsed p;
    PARSE(&p, SL VIA1 "Route:\r\n <sip:p1.example.com;lr>\r\n" MF DLG END);
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    EXPECT(&p, SL VIA1 MF DLG END);
}

#define RLIST "Route: <sip:a.example.com;lr>, <sip:b.example.com;lr>,<sip:c.example.com;lr>\r\n"

Test(rewrite, remove_route_first_of_list)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RLIST DLG END);
    const struct sip_hdr *h = sipmsg_hdr_nth(&p.m, SIP_HDR_ROUTE, 0);
    cr_assert_eq(h->flags, 0);
    rewrite_remove_value(&p.rw, &p.m, h);
    EXPECT(&p, SL VIA1 MF "Route: <sip:b.example.com;lr>,<sip:c.example.com;lr>\r\n" DLG END);
}

Test(rewrite, remove_route_middle_of_list)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RLIST DLG END);
    const struct sip_hdr *h = sipmsg_hdr_nth(&p.m, SIP_HDR_ROUTE, 1);
    cr_assert_eq(h->flags, SIP_HF_SAME_LINE);
    rewrite_remove_value(&p.rw, &p.m, h);
    EXPECT(&p, SL VIA1 MF "Route: <sip:a.example.com;lr>,<sip:c.example.com;lr>\r\n" DLG END);
}

Test(rewrite, remove_route_last_of_list)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RLIST DLG END);
    const struct sip_hdr *h = sipmsg_hdr_nth(&p.m, SIP_HDR_ROUTE, 2);
    cr_assert_eq(h->flags, SIP_HF_SAME_LINE | SIP_HF_LAST_IN_LINE);
    rewrite_remove_value(&p.rw, &p.m, h);
    EXPECT(&p, SL VIA1 MF "Route: <sip:a.example.com;lr>, <sip:b.example.com;lr>\r\n" DLG END);
}

Test(rewrite, remove_first_of_folded_list)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF "Route: <sip:a.example.com;lr> ,\r\n <sip:b.example.com;lr>\r\n" DLG END);
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    EXPECT(&p, SL VIA1 MF "Route: <sip:b.example.com;lr>\r\n" DLG END);
}

Test(rewrite, max_forwards_decrement)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT DLG END);
    rewrite_dec_max_forwards(&p.rw, &p.m, 70);
    EXPECT(&p, SL VIA1 "Max-Forwards: 69\r\n" RT DLG END);

    PARSE(&p, SL VIA1 "Max-Forwards:   0068  \r\n" DLG END);
    rewrite_dec_max_forwards(&p.rw, &p.m, 70);
    EXPECT(&p, SL VIA1 "Max-Forwards:   67  \r\n" DLG END);

    PARSE(&p, SL VIA1 "Max-Forwards: 1\r\n" DLG END);
    rewrite_dec_max_forwards(&p.rw, &p.m, 70);
    EXPECT(&p, SL VIA1 "Max-Forwards: 0\r\n" DLG END);
}

Test(rewrite, max_forwards_inserted_when_absent)
{
    struct parsed p;
    PARSE(&p, SL VIA1 RT DLG END);
    rewrite_dec_max_forwards(&p.rw, &p.m, 70);
    EXPECT(&p, SL "Max-Forwards: 70\r\n" VIA1 RT DLG END);
}

static void via_received(const char *in_via, const char *addr, int port, const char *want_via)
{
    char in[1024], want[1024];
    int n = snprintf(in, sizeof in, SL "%s" MF DLG END, in_via);
    int wn = snprintf(want, sizeof want, SL "%s" MF DLG END, want_via);
    struct parsed p;
    parse(&p, in, (size_t)n);
    rewrite_via_received(&p.rw, sipmsg_hdr(&p.m, SIP_HDR_VIA), slice_make(addr, strlen(addr)),
                         port);
    expect_out(&p, want, (size_t)wn);
}

Test(rewrite, via_received_and_rport)
{
    /* bare rport gets the source port, received is appended */
    via_received(
        "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\n", "192.0.2.7", 40000,
        "Via: SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bK1;received=192.0.2.7\r\n");
    /* bare rport as the last parameter */
    via_received("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport\r\n", "192.0.2.7", 40000,
                 "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=40000;received=192.0.2.7\r\n");
    /* no rport: received only */
    via_received("Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n", "192.0.2.7", 40000,
                 "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;received=192.0.2.7\r\n");
    /* rport with a value is left alone */
    via_received("Via: SIP/2.0/UDP 10.0.0.1;rport=5060;branch=z9hG4bK1\r\n", "192.0.2.7", 40000,
                 "Via: SIP/2.0/UDP 10.0.0.1;rport=5060;branch=z9hG4bK1;received=192.0.2.7\r\n");
    /* an existing received is replaced */
    via_received("Via: SIP/2.0/UDP h;received=10.9.9.9;branch=z9hG4bK1\r\n", "192.0.2.7", 0,
                 "Via: SIP/2.0/UDP h;received=192.0.2.7;branch=z9hG4bK1\r\n");
    /* IPv6 source: received gets the bracketed form (RFC 5118 §4.5) */
    via_received("Via: SIP/2.0/UDP [2001:db8::9:1];rport;branch=z9hG4bK1\r\n", "[2001:db8::9:255]",
                 5062,
                 "Via: SIP/2.0/UDP [2001:db8::9:1];rport=5062;branch=z9hG4bK1;"
                 "received=[2001:db8::9:255]\r\n");
    /* only the top value of a comma list, the rest untouched */
    via_received("Via: SIP/2.0/UDP a;rport;branch=z9hG4bK1 , SIP/2.0/UDP b;branch=z9hG4bK0\r\n",
                 "192.0.2.7", 1234,
                 "Via: SIP/2.0/UDP a;rport=1234;branch=z9hG4bK1;received=192.0.2.7 , SIP/2.0/UDP "
                 "b;branch=z9hG4bK0\r\n");
    /* rport only, no address */
    via_received("Via: SIP/2.0/UDP a;rport\r\n", "", 1234, "Via: SIP/2.0/UDP a;rport=1234\r\n");
    /* folded Via */
    via_received("Via: SIP/2.0/UDP a\r\n ;rport ;branch=z9hG4bK1\r\n", "192.0.2.7", 9,
                 "Via: SIP/2.0/UDP a\r\n ;rport=9 ;branch=z9hG4bK1;received=192.0.2.7\r\n");
}

/* The usual proxy edits together, in the order a proxy makes them. */
Test(rewrite, proxy_edits_combined)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT "Route: <sip:p2.example.com;lr>\r\n" DLG END);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(NEWRR));
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    rewrite_dec_max_forwards(&p.rw, &p.m, 70);
    EXPECT(&p, SL NEWVIA NEWRR VIA1 "Max-Forwards: 69\r\n"
                                    "Route: <sip:p2.example.com;lr>\r\n" DLG END);
}

/* An insertion and the removal of the line at the same offset work in
 * either order (the Route is the first header here). */
Test(rewrite, insert_and_remove_at_same_offset)
{
    struct parsed p;
    PARSE(&p, SL RT VIA1 MF DLG END);
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(NEWRR));
    EXPECT(&p, SL NEWVIA NEWRR VIA1 MF DLG END);

    PARSE(&p, SL RT VIA1 MF DLG END);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    rewrite_remove_value(&p.rw, &p.m, sipmsg_hdr(&p.m, SIP_HDR_ROUTE));
    rewrite_add_before(&p.rw, &p.m, SIP_HDR_RECORD_ROUTE, SLICE_LIT(NEWRR));
    EXPECT(&p, SL NEWVIA NEWRR VIA1 MF DLG END);
}

Test(rewrite, raw_splice_replaces_request_uri)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF DLG END);
    rewrite_splice(&p.rw, sipmsg_off(p.src, p.m.ruri), p.m.ruri.len,
                   SLICE_LIT("sip:bob@192.0.2.44:5070;transport=tcp"));
    EXPECT(&p, "INVITE sip:bob@192.0.2.44:5070;transport=tcp SIP/2.0\r\n" VIA1 MF DLG END);
}

Test(rewrite, buffer_too_small_and_overflow)
{
    struct parsed p;
    PARSE(&p, SL VIA1 MF RT DLG END);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    char out[1024];
    size_t need = p.rw.out_len;
    cr_assert_eq(need, p.len + sizeof NEWVIA - 1);
    cr_assert_eq(rewrite_build(&p.rw, out, 0), -1);
    cr_assert_eq(rewrite_build(&p.rw, out, need - 1), -1);
    cr_assert_eq(rewrite_build(&p.rw, out, need), (ssize_t)need);
    cr_assert_eq(rewrite_build(&p.rw, out, sizeof out), (ssize_t)need);

    /* more edits than the rewrite holds */
    PARSE(&p, SL VIA1 MF RT DLG END);
    for (int i = 0; i <= RW_MAX_EDITS; i++)
        rewrite_add_top(&p.rw, &p.m, SLICE_LIT("X-A: 1\r\n"));
    cr_assert(p.rw.overflow);
    cr_assert_eq(rewrite_build(&p.rw, out, sizeof out), -1);

    /* an edit past the end of the source */
    PARSE(&p, SL VIA1 MF RT DLG END);
    rewrite_splice(&p.rw, p.len, 1, SLICE_NULL);
    cr_assert_eq(rewrite_build(&p.rw, out, sizeof out), -1);

    /* a received address too long for the scratch space */
    PARSE(&p, SL VIA1 MF RT DLG END);
    char addr[300];
    memset(addr, '1', sizeof addr);
    rewrite_via_received(&p.rw, sipmsg_hdr(&p.m, SIP_HDR_VIA), slice_make(addr, sizeof addr), 5);
    cr_assert_eq(rewrite_build(&p.rw, out, sizeof out), -1);
}

/* rewrite_remove_top pops the leading values of a kind, a line at a time. */
Test(rewrite, remove_top_n_values)
{
    struct parsed p;
    /* two lines, both go */
    PARSE(&p, SL VIA1 MF RT "Route: <sip:p2.example.com;lr>\r\n" DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 2);
    EXPECT(&p, SL VIA1 MF DLG END);

    /* two values of one comma list */
    PARSE(&p, SL VIA1 MF RLIST DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 2);
    EXPECT(&p, SL VIA1 MF "Route: <sip:c.example.com;lr>\r\n" DLG END);

    /* a whole line, then the head of the next one */
    PARSE(&p, SL VIA1 MF RT DLG RLIST END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 2);
    EXPECT(&p, SL VIA1 MF DLG "Route: <sip:b.example.com;lr>,<sip:c.example.com;lr>\r\n" END);

    /* exactly the values of a line */
    PARSE(&p, SL VIA1 MF RLIST RT DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 3);
    EXPECT(&p, SL VIA1 MF RT DLG END);

    /* more than there are, and none */
    PARSE(&p, SL VIA1 MF RLIST RT DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 9);
    EXPECT(&p, SL VIA1 MF DLG END);
    PARSE(&p, SL VIA1 MF RLIST DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 0);
    EXPECT(&p, SL VIA1 MF RLIST DLG END);
    PARSE(&p, SL VIA1 MF DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 1);
    EXPECT(&p, SL VIA1 MF DLG END);

    /* the first header goes while a Via is inserted at the same offset */
    PARSE(&p, SL RT VIA1 MF DLG END);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 1);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT(NEWVIA));
    EXPECT(&p, SL NEWVIA VIA1 MF DLG END);
}

/* ---- rewrite_init_msg: what a received message is forwarded as ------------------ */

/* Parses lit as a datagram (or a stream message) and starts rewrite_init_msg. */
static void parse_msg(struct parsed *p, const char *src, size_t len, unsigned flags)
{
    p->src = src;
    p->len = len;
    int r = sipmsg_parse(src, len, &p->m, p->h, &lim, flags);
    cr_assert_gt(r, 0, "parse: %d %s", r, sipmsg_err_str(p->m.err));
    rewrite_init_msg(&p->rw, &p->m, src);
}

#define SECOND "INVITE sip:victim@example.com SIP/2.0\r\nVia: SIP/2.0/TCP evil\r\n\r\n"

Test(rewrite, init_msg_adds_the_content_length_a_datagram_lacked)
{
    /* no Content-Length: the rest of the datagram is the body (a whole
     * second request here); forwarded onto a stream without a length, the
     * next hop would parse the body as a request of its own */
    static const char in[] = SL VIA1 DLG "\r\n" SECOND;
    struct parsed p;
    parse_msg(&p, in, sizeof in - 1, SIPMSG_DATAGRAM);
    rewrite_add_top(&p.rw, &p.m, SLICE_LIT("Via: SIP/2.0/TCP proxy;branch=z9hG4bKx\r\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", sizeof SECOND - 1);
    char want[1024];
    int n = snprintf(want, sizeof want, "%s%s%s%s\r\n%s", SL,
                     "Via: SIP/2.0/TCP proxy;branch=z9hG4bKx\r\n", VIA1 DLG, cl, SECOND);
    expect_out(&p, want, (size_t)n);
    /* the stream framer of the next hop sees exactly one message */
    static char out[1024];
    cr_assert_eq(rewrite_build(&p.rw, out, sizeof out), n);
    struct sip_msg m;
    struct sip_hdr h[64];
    cr_assert_eq(sipmsg_parse(out, (size_t)n, &m, h, &lim, 0), n);
    cr_assert_eq(m.body.len, sizeof SECOND - 1);
}

Test(rewrite, init_msg_drops_datagram_bytes_past_content_length)
{
    static const char in[] = SL VIA1 DLG "Content-Length: 4\r\n\r\nbody" SECOND;
    struct parsed p;
    parse_msg(&p, in, sizeof in - 1, SIPMSG_DATAGRAM);
    EXPECT(&p, SL VIA1 DLG "Content-Length: 4\r\n\r\nbody");
}

Test(rewrite, init_msg_keeps_an_exact_message_as_it_is)
{
    static const char in[] = SL VIA1 MF DLG END;
    struct parsed p;
    parse_msg(&p, in, sizeof in - 1, SIPMSG_DATAGRAM);
    EXPECT(&p, SL VIA1 MF DLG END);
    /* a stream message is framed by its Content-Length already */
    static const char two[] = SL VIA1 MF DLG END SL VIA1 MF DLG END;
    parse_msg(&p, two, sizeof two - 1, 0);
    EXPECT(&p, SL VIA1 MF DLG END);
}

Test(rewrite, init_msg_empty_body_and_last_line_removed)
{
    /* no body, no Content-Length: "Content-Length: 0" goes before the empty
     * line, also when the header line just above it is removed */
    static const char in[] = SL VIA1 DLG "Route: <sip:p1;lr>\r\n\r\n";
    struct parsed p;
    parse_msg(&p, in, sizeof in - 1, SIPMSG_DATAGRAM);
    rewrite_remove_top(&p.rw, &p.m, SIP_HDR_ROUTE, 1);
    EXPECT(&p, SL VIA1 DLG "Content-Length: 0\r\n\r\n");
}
