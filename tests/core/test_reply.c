/* Tests for core/reply.c: To-tag, Via copy with received/rport, Content-Length, destination. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/reply.h"
#include "core/sipuri.h"
#include "parsed_msg.h"

TestSuite(reply);

static void parse(struct parsed *p, const char *text)
{
    parsed_init(p, text, strlen(text), false);
}

/* Builds reply `code` to text from src into out (NUL-terminated). */
static void build(const char *text, const char *src_ip, int src_port, int code, const char *warning,
                  const char *extra, char *out, size_t cap)
{
    struct parsed p;
    parse(&p, text);
    struct netaddr src = parsed_addr(src_ip, src_port);
    ssize_t n = reply_build(&p.m, &src, code, warning, extra, out, cap - 1);
    cr_assert_gt(n, 0);
    out[n] = 0;
}

/* The value of the line starting with `name` (up to CRLF), NUL-terminated. */
static const char *line(const char *msg, const char *name, char *out, size_t cap)
{
    const char *p = strstr(msg, name);
    cr_assert(p, "no %s in:\n%s", name, msg);
    const char *e = strstr(p, "\r\n");
    size_t n = (size_t)(e - p);
    cr_assert(n < cap);
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

#define DLG_NOTAG                                                                                  \
    "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"                      \
    "Call-ID: c1@pc33\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
#define INVITE_NOTAG                                                                               \
    "INVITE sip:bob@example.com SIP/2.0\r\n"                                                       \
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n" DLG_NOTAG

Test(reply, to_tag_added_when_absent_and_stable)
{
    char a[2048], b[2048], l[256];
    build(INVITE_NOTAG, "192.0.2.10", 5060, 404, NULL, NULL, a, sizeof a);
    build(INVITE_NOTAG, "192.0.2.10", 5060, 404, NULL, NULL, b, sizeof b);
    cr_assert(strncmp(a, "SIP/2.0 404 Not Found\r\n", 23) == 0, "%s", a);
    line(a, "To: ", l, sizeof l);
    cr_assert(strncmp(l, "To: <sip:bob@example.com>;tag=se", 32) == 0, "%s", l);
    cr_assert_eq(strlen(l), 32 + 8, "%s", l);
    for (int i = 32; i < 40; i++)
        cr_assert(strchr("0123456789abcdef", l[i]), "%s", l);
    /* a retransmission gets the same tag */
    cr_assert_str_eq(a, b);
    /* another request another one */
    build("INVITE sip:bob@example.com SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n"
          "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"
          "Call-ID: c2@pc33\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
          "192.0.2.10", 5060, 404, NULL, NULL, b, sizeof b);
    char l2[256];
    cr_assert_str_neq(line(b, "To: ", l2, sizeof l2), l);
}

Test(reply, to_tag_kept_when_present)
{
    char out[2048], l[256];
    build("BYE sip:bob@example.com SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n"
          "To: <sip:bob@example.com>;tag=abc\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"
          "Call-ID: c1@pc33\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
          "192.0.2.10", 5060, 481, NULL, NULL, out, sizeof out);
    cr_assert_str_eq(line(out, "To: ", l, sizeof l), "To: <sip:bob@example.com>;tag=abc");
    cr_assert_null(strstr(out, "tag=se"));
}

Test(reply, no_to_tag_on_100_trying)
{
    char out[2048], l[256];
    build(INVITE_NOTAG, "192.0.2.10", 5060, 100, NULL, NULL, out, sizeof out);
    cr_assert(strncmp(out, "SIP/2.0 100 Trying\r\n", 20) == 0);
    cr_assert_str_eq(line(out, "To: ", l, sizeof l), "To: <sip:bob@example.com>");
}

Test(reply, via_stack_copied_with_received_and_rport_on_top)
{
    char out[2048];
    build("INVITE sip:bob@example.com SIP/2.0\r\n"
          "Via: SIP/2.0/UDP phone.example.com:5062;rport;branch=z9hG4bK1\r\n"
          "Via: SIP/2.0/TCP 10.1.1.1;branch=z9hG4bK2, SIP/2.0/UDP 10.2.2.2;branch=z9hG4bK3\r\n"
          "v: SIP/2.0/UDP 10.3.3.3;branch=z9hG4bK4\r\n" DLG_NOTAG,
          "192.0.2.10", 40000, 486, NULL, NULL, out, sizeof out);
    /* RFC 3581 §4: the bare rport gets the value (one rport, not two) */
    const char *want = "Via: SIP/2.0/UDP phone.example.com:5062;rport=40000;branch=z9hG4bK1"
                       ";received=192.0.2.10\r\n"
                       "Via: SIP/2.0/TCP 10.1.1.1;branch=z9hG4bK2\r\n"
                       "Via: SIP/2.0/UDP 10.2.2.2;branch=z9hG4bK3\r\n"
                       "Via: SIP/2.0/UDP 10.3.3.3;branch=z9hG4bK4\r\n";
    cr_assert(strstr(out, want), "got:\n%s", out);
}

Test(reply, top_via_left_alone_when_it_names_the_source)
{
    char out[2048];
    build(INVITE_NOTAG, "192.0.2.10", 5060, 486, NULL, NULL, out, sizeof out);
    cr_assert(strstr(out, "\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n"), "%s", out);
    cr_assert_null(strstr(out, "received="));
}

Test(reply, content_length_zero_and_headers)
{
    char out[2048];
    build(INVITE_NOTAG, "192.0.2.10", 5060, 503, "No SIP Server In Service", "Retry-After: 5\r\n",
          out, sizeof out);
    size_t n = strlen(out);
    const char *tail = "Content-Length: 0\r\n\r\n";
    cr_assert(n > strlen(tail) && strcmp(out + n - strlen(tail), tail) == 0, "%s", out);
    cr_assert(strstr(out, "\r\nWarning: 399 sipedge \"No SIP Server In Service\"\r\n"));
    cr_assert(strstr(out, "\r\nRetry-After: 5\r\n"));
    cr_assert(strstr(out, "\r\nFrom: <sip:alice@example.com>;tag=1928\r\n"));
    cr_assert(strstr(out, "\r\nCall-ID: c1@pc33\r\n"));
    cr_assert(strstr(out, "\r\nCSeq: 1 INVITE\r\n"));
    /* the request's own headers are not copied */
    cr_assert_null(strstr(out, "Max-Forwards"));
    /* one Content-Length: the request's is not copied */
    const char *cl = strstr(out, "Content-Length");
    cr_assert(cl && !strstr(cl + 1, "Content-Length"), "%s", out);
}

Test(reply, too_small_buffer_fails)
{
    struct parsed p;
    parse(&p, INVITE_NOTAG);
    struct netaddr src = parsed_addr("192.0.2.10", 5060);
    char out[2048];
    ssize_t n = reply_build(&p.m, &src, 404, NULL, NULL, out, sizeof out);
    cr_assert_gt(n, 0);
    cr_assert_eq(reply_build(&p.m, &src, 404, NULL, NULL, out, (size_t)n - 1), -1);
    cr_assert_eq(reply_build(&p.m, &src, 404, NULL, NULL, out, (size_t)n), n);
}

Test(reply, reason_phrases)
{
    cr_assert_str_eq(reply_reason(200), "OK");
    cr_assert_str_eq(reply_reason(430), "Flow Failed");
    cr_assert_str_eq(reply_reason(482), "Loop Detected");
    cr_assert_str_eq(reply_reason(299), "Unknown");
}

Test(reply, destination_follows_rfc3261_18_2_2_and_rfc3581)
{
    struct parsed p;
    struct netaddr dst;
    struct rx_info rx = {.proto = SIP_TRANSPORT_UDP, .src = parsed_addr("192.0.2.10", 40000)};
    /* UDP without rport: the Via's port at the source IP */
    parse(&p, "OPTIONS sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK1\r\n" DLG_NOTAG);
    reply_dst(&p.m, &rx, &dst);
    struct netaddr want = parsed_addr("192.0.2.10", 5070);
    cr_assert(netaddr_eq(&dst, &want));
    /* no port in the Via: 5060 */
    parse(&p, "OPTIONS sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n" DLG_NOTAG);
    reply_dst(&p.m, &rx, &dst);
    cr_assert_eq(netaddr_port(&dst), 5060);
    /* rport: the source port */
    parse(&p, "OPTIONS sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 192.0.2.10:5070;rport;branch=z9hG4bK1\r\n" DLG_NOTAG);
    reply_dst(&p.m, &rx, &dst);
    cr_assert(netaddr_eq(&dst, &rx.src));
    /* a stream: back where it came from */
    rx.proto = SIP_TRANSPORT_TCP;
    parse(&p, "OPTIONS sip:bob@example.com SIP/2.0\r\n"
              "Via: SIP/2.0/TCP 192.0.2.10:5070;branch=z9hG4bK1\r\n" DLG_NOTAG);
    reply_dst(&p.m, &rx, &dst);
    cr_assert(netaddr_eq(&dst, &rx.src));
}

/* A control byte in a header our reply copies would go back in the 400: no
 * reply is built then. One elsewhere is no obstacle, and a CSeq the parser
 * refused goes back as it came (RFC 4475 scalar02: 400). */
Test(reply, refuses_to_copy_control_bytes)
{
    static const char *const refused[] = {
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\rX\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\x01\r\nCSeq: 1 OPTIONS\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\x7f\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: \"a\\\rb\" <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 "
        "OPTIONS\r\n\r\n",
    };
    static const char *const answered[] = {
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n"
        "Subject: a\rInjected: b\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: \"BEL\\\x07\" <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\n"
        "CSeq: 1 OPTIONS\r\n\r\n",
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1\r\n OPTIONS\r\n\r\n",
    };
    struct parsed p;
    struct netaddr src = parsed_addr("192.0.2.9", 5060);
    char out[2048];
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        parse(&p, refused[i]);
        cr_assert_eq(reply_build(&p.m, &src, 400, NULL, NULL, out, sizeof out), -1, "%zu", i);
    }
    for (size_t i = 0; i < sizeof answered / sizeof answered[0]; i++) {
        parse(&p, answered[i]);
        cr_assert_gt(reply_build(&p.m, &src, 400, NULL, NULL, out, sizeof out), 0, "%zu", i);
    }
    /* a CSeq that stopped the parser */
    static const char bad_cseq[] =
        "OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\n"
        "CSeq: 4294967296 OPTIONS\r\n\r\n";
    static const struct sipmsg_limits lim = {65535, PARSED_MAXH};
    cr_assert_eq(sipmsg_parse(bad_cseq, sizeof bad_cseq - 1, &p.m, p.h, &lim, SIPMSG_DATAGRAM), -1);
    cr_assert_eq(p.m.err, SIP_ERR_CSEQ);
    ssize_t n = reply_build(&p.m, &src, 400, NULL, NULL, out, sizeof out - 1);
    cr_assert_gt(n, 0);
    out[n] = 0;
    cr_assert(strstr(out, "\r\nCSeq: 4294967296 OPTIONS\r\n"), "%s", out);
}

/* A bare rport gets its value in place (RFC 3581 §4), not a second rport. */
Test(reply, bare_rport_is_filled_in_place)
{
    char out[2048], l[256];
    build("OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h:5062;rport;branch=z9hG4bK1\r\n"
          "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
          "192.0.2.9", 40000, 200, NULL, NULL, out, sizeof out);
    cr_assert_str_eq(line(out, "Via:", l, sizeof l),
                     "Via: SIP/2.0/UDP h:5062;rport=40000;branch=z9hG4bK1;received=192.0.2.9");
    build("OPTIONS sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h:5062;branch=z9hG4bK1;rport\r\n"
          "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
          "192.0.2.9", 40000, 200, NULL, NULL, out, sizeof out);
    cr_assert_str_eq(line(out, "Via:", l, sizeof l),
                     "Via: SIP/2.0/UDP h:5062;branch=z9hG4bK1;rport=40000;received=192.0.2.9");
}
