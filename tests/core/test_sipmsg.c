/* Tests for core/sipmsg.c: tables of valid and invalid messages, every truncated prefix, guard
 * page. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/framer.h"
#include "core/sipmsg.h"

#ifndef SIPEDGE_TESTDATA
#error "SIPEDGE_TESTDATA must name the shared testdata directory"
#endif

TestSuite(sipmsg);

#define MAXH 128
static const struct sipmsg_limits lim = {65535, MAXH};

/* ---- helpers ---------------------------------------------------------- */

/* A buffer whose last usable byte sits right before a PROT_NONE page, so a
 * read one byte past the input faults (picohttpparser test.c). */
struct guard {
    char *base;
    size_t size; /* readable bytes before the guard page */
};

static void guard_init(struct guard *g, size_t need)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    g->size = (need + page - 1) / page * page;
    if (g->size == 0) g->size = page;
    g->base =
        mmap(NULL, g->size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(g->base != MAP_FAILED);
    cr_assert(mprotect(g->base + g->size, page, PROT_NONE) == 0);
}

static void guard_cleanup(struct guard *g)
{
    munmap(g->base, g->size + (size_t)sysconf(_SC_PAGESIZE));
}

/* Copies data so that it ends exactly at the guard page. */
static const char *guard_place(struct guard *g, const char *data, size_t len)
{
    cr_assert(len <= g->size);
    char *p = g->base + g->size - len;
    memcpy(p, data, len);
    return p;
}

enum { O_OK, O_PERR, O_VERR, O_INC };
struct outcome {
    uint8_t kind;
    uint8_t err;
};
#define OK                                                                                         \
    {                                                                                              \
        O_OK, SIP_ERR_NONE                                                                         \
    }
#define INC                                                                                        \
    {                                                                                              \
        O_INC, SIP_ERR_NONE                                                                        \
    }
#define PERR(e)                                                                                    \
    {                                                                                              \
        O_PERR, SIP_ERR_##e                                                                        \
    }
#define VERR(e)                                                                                    \
    {                                                                                              \
        O_VERR, SIP_ERR_##e                                                                        \
    }

static const char *outcome_str(struct outcome o, char *buf, size_t n)
{
    static const char *const k[] = {"OK", "parse error", "validate error", "incomplete"};
    snprintf(buf, n, "%s %s", k[o.kind], sipmsg_err_str((enum sip_err)o.err));
    return buf;
}

/* Parses (and validates when parsed) buf, returning the observed outcome. */
static struct outcome run(const char *buf, size_t len, const struct sipmsg_limits *l,
                          unsigned flags, struct sip_msg *m, struct sip_hdr *h, int *ret)
{
    int r = sipmsg_parse(buf, len, m, h, l, flags);
    *ret = r;
    if (r == -2) return (struct outcome)INC;
    if (r == -1) {
        cr_assert(m->err != SIP_ERR_NONE);
        cr_assert(m->err_pos <= len);
        return (struct outcome){O_PERR, (uint8_t)m->err};
    }
    cr_assert(r > 0 && (size_t)r <= len, "parse returned %d for %zu bytes", r, len);
    cr_assert(m->msg_len == (size_t)r);
    cr_assert(m->headers_len <= m->msg_len);
    cr_assert(m->body.len == 0 || m->body.ptr == buf + m->headers_len);
    enum sip_err e = sipmsg_validate(m);
    if (e) return (struct outcome){O_VERR, (uint8_t)e};
    return (struct outcome)OK;
}

static void expect(const char *name, const char *mode, struct outcome got, struct outcome want)
{
    char a[64], b[64];
    cr_expect(got.kind == want.kind && got.err == want.err, "%s (%s): got %s, want %s", name, mode,
              outcome_str(got, a, sizeof a), outcome_str(want, b, sizeof b));
}

/* ---- tables ------------------------------------------------------------ */

#define SDP                                                                                        \
    "v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 "                   \
    "192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
#define SDP_LEN "140"

#define VIA "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n"
#define DLG                                                                                        \
    "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1928301774\r\nCall-ID: "       \
    "c1@pc33\r\n"
#define OPTS "OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1 OPTIONS\r\n"

struct row {
    const char *name;
    const char *msg;
    size_t len;
    struct outcome dgram, stream;
    size_t stream_len; /* valid rows: expected stream msg_len, 0 = whole input */
    size_t max_size;   /* 0 = default */
    uint16_t max_hdrs; /* 0 = default */
};
#define M(s) .msg = (s), .len = sizeof(s) - 1

static const struct row valid[] = {
    {"invite",
     M("INVITE sip:bob@example.com SIP/2.0\r\n" VIA "Max-Forwards: 70\r\n"
       "To: Bob <sip:bob@example.com>\r\nFrom: Alice <sip:alice@example.com>;tag=19283\r\n"
       "Call-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 314159 INVITE\r\n"
       "Contact: <sip:alice@pc33.example.com>\r\nContent-Type: application/sdp\r\n"
       "Content-Length: " SDP_LEN "\r\n\r\n" SDP),
     OK, OK},
    {"response",
     M("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP s.example.com;branch=z9hG4bK1\r\n" VIA
       "Record-Route: <sip:p1.example.com;lr>\r\n" DLG "CSeq: 314159 INVITE\r\n"
       "Contact: <sip:bob@192.0.2.4>\r\nContent-Type: application/sdp\r\n"
       "Content-Length: " SDP_LEN "\r\n\r\n" SDP),
     OK, OK},
    {"compact",
     M("OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
       "v: SIP/2.0/TCP a.example.com;branch=z9hG4bKa\r\nf: <sip:a@example.com>;tag=1\r\n"
       "t: <sip:carol@chicago.example.com>\r\ni: c1@a\r\nCSeq: 1 OPTIONS\r\n"
       "m: <sip:a@a.example.com;transport=tcp>\r\nk: path\r\ns: hi\r\n"
       "c: text/plain\r\ne: tar\r\no: presence\r\nu: dialog\r\nr: <sip:x@y>\r\n"
       "b: <sip:z@y>\r\nx: 1800\r\nl: 5\r\n\r\nhello"),
     OK, OK},
    {"folding",
     M("REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP\r\n 192.0.2.1:5060\r\n"
       "\t;branch=z9hG4bKf1\r\nTo:\r\n <sip:u@example.com>\r\nFrom: <sip:u@example.com>\r\n"
       "  ;tag=7\r\nCall-ID: f@x\r\nCSeq: 2\r\n REGISTER\r\nSubject: folded\r\n\t subject\r\n"
       "Content-Length:\r\n 0\r\n\r\n"),
     OK, OK},
    {"leading-crlf", M("\r\n\r\n\r\n" OPTS "Content-Length: 0\r\n\r\n"), OK, OK},
    /* control bytes a proxy may forward: HTAB, a CRLF fold, a bare-LF fold
     * (both splitters agree it continues the line), and the quoted-pairs of
     * RFC 3261 §25.1 (RFC 4475 intmeth: NUL, BEL and DEL escaped in a
     * quoted display name) */
    {"ctl-htab", M(OPTS "Subject:\tjust\ta tab\t\r\nl: 0\r\n\r\n"), OK, OK},
    {"ctl-lf-fold", M(OPTS "Subject: folded\n  on a bare LF\r\nl: 0\r\n\r\n"), OK, OK},
    {"ctl-quoted-pair",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA
       "To: \"BEL:\\\x07 NUL:\\\0 DEL:\\\x7f ESC:\\\x1b\" <sip:bob@example.com>\r\n"
       "From: <sip:alice@example.com>;tag=1\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     OK, OK},
    {"noreason-sp", M("SIP/2.0 100 \r\n" VIA DLG "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"), OK,
     OK},
    {"noreason-nosp", M("SIP/2.0 180\r\n" VIA DLG "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
     OK, OK},
    {"status-699",
     M("SIP/2.0 699 Whatever Reason Here\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"), OK, OK},
    {"multi-values",
     M("INVITE sip:bob@example.com SIP/2.0\r\n"
       "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP "
       "b.example.com:5070;branch=z9hG4bK2\r\n"
       "Via: SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK3\r\n"
       "Route: <sip:p1.example.com;lr>,<sip:p2.example.com;lr>, <sip:p3.example.com;lr>\r\n" DLG
       "CSeq: 1 INVITE\r\n"
       "Contact: \"Doe, John\" <sip:j@192.0.2.1>, \"a \\\"b, c\\\" d\" <sip:k@192.0.2.2>;q=0.5,"
       " <sip:l,m@192.0.2.3>\r\n"
       "Subject: one, two\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\nContent-Length: 0\r\n\r\n"),
     OK, OK},
    {"escapes",
     M("INVITE sip:%61lice;p=%41@example.com;transport=%74cp SIP/2.0\r\n" VIA
       "To: <sip:%41%42@example.com>\r\nFrom: \"%Z%45\" <sip:a@example.com>;tag=1\r\n"
       "Call-ID: e\r\nCSeq: 1 INVITE\r\nC%6Fntact: <sip:x@y>\r\nl: 0\r\n\r\n"),
     OK, OK},
    {"options", M(OPTS "Content-Length: 0\r\n\r\n"), OK, OK},
    {"unknown-method",
     M("FOO.BAR-baz!%~ sip:bob@example.com SIP/2.0\r\n" VIA DLG
       "CSeq: 7 FOO.BAR-baz!%~\r\nl: 0\r\n\r\n"),
     OK, OK},
    {"binary-body",
     M(OPTS "Content-Type: application/octet-stream\r\nContent-Length: 15\r\n\r\n"
            "bin\0ary\r\n\r\nx\ny\0"),
     OK, OK},
    {"odd-headers",
     M(OPTS "Subject:\r\nX-Empty:   \r\nVia  :SIP/2.0/UDP h2;branch=z9hG4bK2\r\n"
            "NewFangled-Header!%:  ;;,,;;,;\r\nMax-Forwards: 0068\r\n"
            "Content-Length  : 0\r\n\r\n"),
     OK, OK},
    {"ipv6",
     M("REGISTER sip:[2001:db8::10]:5070 SIP/2.0\r\n"
       "Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=[2001:db8::9:255]\r\n"
       "To: <sip:user@[2001:db8::10]>\r\nFrom: <sip:user@[2001:db8::10]>;tag=81x2\r\n"
       "Call-ID: v6\r\nCSeq: 1 REGISTER\r\nContact: \"Caller\" <sip:caller@[2001:db8::1]>\r\n"
       "Content-Length: 0\r\n\r\n"),
     OK, OK},
    /* datagram-only framing */
    {"no-cl-dgram", M(OPTS "\r\nbody rest of datagram"), OK, PERR(CL_MISSING)},
    {"cl-short-of-dgram", M(OPTS "Content-Length: 4\r\n\r\nbodyTRAILING"), OK, OK,
     .stream_len = sizeof(OPTS "Content-Length: 4\r\n\r\nbody") - 1},
};

/* 64 Via values for limit tests: 8 lines of 8 */
#define V8 "Via: SIP/2.0/UDP a;branch=z9hG4bK1,b,c,d,e,f,g,h\r\n"

static const struct row invalid[] = {
    /* start line */
    {"double-sp",
     M("INVITE  sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(START_LINE), PERR(START_LINE)},
    {"trailing-sp",
     M("INVITE sip:bob@example.com SIP/2.0 \r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(START_LINE), PERR(START_LINE)},
    {"lws-ruri",
     M("INVITE sip:bob@example.com; lr SIP/2.0\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(START_LINE), PERR(START_LINE)},
    {"no-version", M("INVITE sip:bob@example.com\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(START_LINE), PERR(START_LINE)},
    {"http", M("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), PERR(START_LINE), PERR(START_LINE)},
    {"no-method", M(" sip:bob@example.com SIP/2.0\r\n" VIA "l: 0\r\n\r\n"), PERR(START_LINE),
     PERR(START_LINE)},
    {"method-nontoken", M("INV(TE sip:bob@example.com SIP/2.0\r\n" VIA "l: 0\r\n\r\n"),
     PERR(START_LINE), PERR(START_LINE)},
    {"version-7",
     M("INVITE sip:bob@example.com SIP/7.0\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(VERSION), PERR(VERSION)},
    {"resp-version", M("SIP/2.1 200 OK\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(VERSION), PERR(VERSION)},
    /* the first error is the one reported, even when the headers after it
     * are indexed to build the response */
    {"version-then-bad-header",
     M("INVITE sip:bob@example.com SIP/7.0\r\n" VIA "Foobar roobar\r\n" DLG
       "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(VERSION), PERR(VERSION)},
    {"no-version-then-bad-header",
     M("INVITE sip:bob@example.com\r\n" VIA "Foobar roobar\r\nl: 0\r\n\r\n"), PERR(START_LINE),
     PERR(START_LINE)},
    {"status-099", M("SIP/2.0 099 Early\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    {"status-700", M("SIP/2.0 700 Big\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    {"status-1000", M("SIP/2.0 1000 Bigger\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    {"status-2digit", M("SIP/2.0 20 OK\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    {"status-overflow",
     M("SIP/2.0 4294967501 Wrapped\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    {"status-glued", M("SIP/2.0 200OK\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     PERR(STATUS_CODE), PERR(STATUS_CODE)},
    /* header lines */
    {"no-colon", M(OPTS "Foobar roobar\r\nl: 0\r\n\r\n"), PERR(HEADER_SYNTAX), PERR(HEADER_SYNTAX)},
    {"fold-first", M("OPTIONS sip:bob@example.com SIP/2.0\r\n " VIA DLG "l: 0\r\n\r\n"),
     PERR(HEADER_SYNTAX), PERR(HEADER_SYNTAX)},
    {"empty-name", M(OPTS ": value\r\nl: 0\r\n\r\n"), PERR(HEADER_SYNTAX), PERR(HEADER_SYNTAX)},
    {"bad-name", M(OPTS "X(y): value\r\nl: 0\r\n\r\n"), PERR(HEADER_SYNTAX), PERR(HEADER_SYNTAX)},
    {"bare-cr-line", M(OPTS "\rX: y\r\nl: 0\r\n\r\n"), PERR(HEADER_SYNTAX), PERR(HEADER_SYNTAX)},
    /* limits */
    {"too-many-headers", M(OPTS V8 V8 V8 V8 V8 V8 V8 V8 "l: 0\r\n\r\n"), PERR(TOO_MANY_HEADERS),
     PERR(TOO_MANY_HEADERS), .max_hdrs = 64},
    {"header-block-too-large",
     M(OPTS "X-Pad: "
            "0123456789012345678901234567890123456789\r\n"
            "l: 0\r\n\r\n"),
     PERR(TOO_LARGE), PERR(TOO_LARGE), .max_size = 230},
    {"body-too-large", M(OPTS "Content-Length: 300\r\n\r\n"), PERR(TOO_LARGE), PERR(TOO_LARGE),
     .max_size = 400},
    {"no-cl-dgram-too-large",
     M(OPTS "\r\n"
            "0123456789012345678901234567890123456789"
            "0123456789012345678901234567890123456789"),
     PERR(TOO_LARGE), PERR(CL_MISSING), .max_size = 230},
    /* framing */
    {"no-header-end", M(OPTS "Content-Length: 0\r\n"), PERR(NO_HEADER_END), INC},
    {"no-header-end-bare", M(OPTS "Content-Length: 0"), PERR(NO_HEADER_END), INC},
    {"cl-2^32+32",
     M(OPTS "Content-Length: 4294967328\r\n\r\n"
            "0123456789abcdef0123456789abcdef"),
     PERR(CONTENT_LENGTH), PERR(CONTENT_LENGTH)},
    {"cl-2^64+32",
     M(OPTS "Content-Length: 18446744073709551648\r\n\r\n0123456789abcdef0123456789abcdef"),
     PERR(CONTENT_LENGTH), PERR(CONTENT_LENGTH)},
    {"cl-negative", M(OPTS "Content-Length: -999\r\n\r\nabc"), PERR(CONTENT_LENGTH),
     PERR(CONTENT_LENGTH)},
    {"cl-plus", M(OPTS "Content-Length: +3\r\n\r\nabc"), PERR(CONTENT_LENGTH),
     PERR(CONTENT_LENGTH)},
    {"cl-words", M(OPTS "Content-Length: five\r\n\r\nabcde"), PERR(CONTENT_LENGTH),
     PERR(CONTENT_LENGTH)},
    {"cl-empty", M(OPTS "Content-Length:\r\n\r\n"), PERR(CONTENT_LENGTH), PERR(CONTENT_LENGTH)},
    {"cl-two-numbers", M(OPTS "Content-Length: 1 2\r\n\r\nab"), PERR(CONTENT_LENGTH),
     PERR(CONTENT_LENGTH)},
    {"cl-dup", M(OPTS "Content-Length: 3\r\nl: 3\r\n\r\nabc"), PERR(CL_DUPLICATE),
     PERR(CL_DUPLICATE)},
    {"cl-dup-differ", M(OPTS "Content-Length: 13\r\nContent-Length: 5\r\n\r\n0123456789abc"),
     PERR(CL_DUPLICATE), PERR(CL_DUPLICATE)},
    {"cl-missing", M(OPTS "\r\n"), OK, PERR(CL_MISSING)},
    {"body-short", M(OPTS "Content-Length: 9999\r\n\r\nshort body"), PERR(BODY_SHORT), INC},
    /* decoded values */
    {"cseq-2^32",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG
       "CSeq: 4294967296 OPTIONS\r\nl: 0\r\n\r\n"),
     PERR(CSEQ), PERR(CSEQ)},
    {"cseq-no-method",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1\r\nl: 0\r\n\r\n"), PERR(CSEQ),
     PERR(CSEQ)},
    {"cseq-no-number",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: OPTIONS\r\nl: 0\r\n\r\n"),
     PERR(CSEQ), PERR(CSEQ)},
    {"cseq-glued",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1OPTIONS\r\nl: 0\r\n\r\n"),
     PERR(CSEQ), PERR(CSEQ)},
    {"cseq-two-methods",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1 OPTIONS INVITE\r\nl: 0\r\n\r\n"),
     PERR(CSEQ), PERR(CSEQ)},
    {"mf-word", M(OPTS "Max-Forwards: seventy\r\nl: 0\r\n\r\n"), PERR(MAX_FORWARDS),
     PERR(MAX_FORWARDS)},
    {"mf-negative", M(OPTS "Max-Forwards: -1\r\nl: 0\r\n\r\n"), PERR(MAX_FORWARDS),
     PERR(MAX_FORWARDS)},
    {"mf-256", M(OPTS "Max-Forwards: 256\r\nl: 0\r\n\r\n"), PERR(MAX_FORWARDS), PERR(MAX_FORWARDS)},
    {"mf-huge", M(OPTS "Max-Forwards: 4294967366\r\nl: 0\r\n\r\n"), PERR(MAX_FORWARDS),
     PERR(MAX_FORWARDS)},
    /* validation */
    {"no-via", M("OPTIONS sip:bob@example.com SIP/2.0\r\n" DLG "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(MISSING_HEADER), VERR(MISSING_HEADER)},
    {"no-call-id",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA
       "To: <sip:b@x>\r\nFrom: <sip:a@x>;tag=1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(MISSING_HEADER), VERR(MISSING_HEADER)},
    {"no-cseq", M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "l: 0\r\n\r\n"),
     VERR(MISSING_HEADER), VERR(MISSING_HEADER)},
    {"resp-no-to",
     M("SIP/2.0 200 OK\r\n" VIA "From: <sip:a@x>;tag=1\r\nCall-ID: x\r\n"
       "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     VERR(MISSING_HEADER), VERR(MISSING_HEADER)},
    {"dup-from", M(OPTS "From: <sip:c@example.com>;tag=2\r\nl: 0\r\n\r\n"), VERR(DUP_HEADER),
     VERR(DUP_HEADER)},
    {"dup-cseq", M(OPTS "CSeq: 2 OPTIONS\r\nl: 0\r\n\r\n"), VERR(DUP_HEADER), VERR(DUP_HEADER)},
    {"dup-mf", M(OPTS "Max-Forwards: 70\r\nMax-Forwards: 69\r\nl: 0\r\n\r\n"), VERR(DUP_HEADER),
     VERR(DUP_HEADER)},
    {"cseq-mismatch",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     VERR(CSEQ_METHOD), VERR(CSEQ_METHOD)},
    {"cseq-case",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA DLG "CSeq: 1 options\r\nl: 0\r\n\r\n"),
     VERR(CSEQ_METHOD), VERR(CSEQ_METHOD)},
    {"ruri-brackets",
     M("OPTIONS <sip:bob@example.com> SIP/2.0\r\n" VIA DLG "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(REQUEST_URI), VERR(REQUEST_URI)},
    {"ruri-headers",
     M("OPTIONS sip:bob@example.com?Route=%3Csip:x%3E SIP/2.0\r\n" VIA DLG
       "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(REQUEST_URI), VERR(REQUEST_URI)},
    {"ruri-v6-nobrackets",
     M("OPTIONS sip:2001:db8::10 SIP/2.0\r\n" VIA DLG "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(REQUEST_URI), VERR(REQUEST_URI)},
    {"via-bad",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n" DLG
       "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(VIA), VERR(VIA)},
    {"via-no-host",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP\r\n" DLG
       "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(VIA), VERR(VIA)},
    {"to-unterminated",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA
       "To: \"Bob <sip:bob@example.com>\r\nFrom: <sip:a@x>;tag=1\r\n"
       "Call-ID: q\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(ADDRESS), VERR(ADDRESS)},
    {"from-star",
     M("OPTIONS sip:bob@example.com SIP/2.0\r\n" VIA "To: <sip:b@x>\r\nFrom: *\r\n"
       "Call-ID: q\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(ADDRESS), VERR(ADDRESS)},
    {"contact-unquoted-dn",
     M(OPTS "Contact: Bell, Alexander <sip:a.g.bell@bell-tel.com>\r\n"
            "l: 0\r\n\r\n"),
     VERR(ADDRESS), VERR(ADDRESS)},
    {"contact-addrspec-hdr",
     M(OPTS "Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\n"
            "l: 0\r\n\r\n"),
     VERR(ADDRESS), VERR(ADDRESS)},
    {"route-garbage", M(OPTS "Route: <sip:p1.example.com;lr>, garbage here\r\nl: 0\r\n\r\n"),
     VERR(ADDRESS), VERR(ADDRESS)},
    {"route-top-garbage", M(OPTS "Route: garbage\r\nl: 0\r\n\r\n"), VERR(ADDRESS), VERR(ADDRESS)},
    /* values loose routing does not read are forwarded untouched (RFC 3261
     * §16.3): a bad third Route or a bad Record-Route is not rejected */
    {"route-third-garbage",
     M(OPTS "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nRoute: garbage\r\n"
            "l: 0\r\n\r\n"),
     OK, OK},
    {"rr-unclosed", M(OPTS "Record-Route: <sip:p1.example.com;lr\r\nl: 0\r\n\r\n"), OK, OK},
    /* control bytes (issue 10): a bare CR or LF is a line break to a peer
     * that splits lines differently, so what follows it would be a header
     * of its own there; NUL ends C strings; the rest have no business in a
     * header */
    {"ctl-bare-cr", M(OPTS "Subject: hi\rInjected: yes\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES),
     VERR(CONTROL_BYTES)},
    {"ctl-bare-lf", M(OPTS "Subject: hi\nInjected: yes\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES),
     VERR(CONTROL_BYTES)},
    {"ctl-nul", M(OPTS "Subject: a\0b\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-bel", M(OPTS "Subject: a\x07\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-del", M(OPTS "Subject: a\x7f\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-esc-unquoted", M(OPTS "Subject: a\\\x1b\r\nl: 0\r\n\r\n"), VERR(CONTROL_BYTES),
     VERR(CONTROL_BYTES)},
    {"ctl-escaped-cr", M(OPTS "Subject: \"a\\\rInjected: yes\"\r\nl: 0\r\n\r\n"),
     VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-in-ruri",
     M("OPTIONS sip:bob@exa\x01mple.com SIP/2.0\r\n" VIA DLG "CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"),
     VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-in-reason", M("SIP/2.0 200 O\0K\r\n" VIA DLG "CSeq: 1 INVITE\r\nl: 0\r\n\r\n"),
     VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    {"ctl-in-response", M("SIP/2.0 486 Busy\r\n" VIA DLG "CSeq: 1 INVITE\r\nX: \r\r\nl: 0\r\n\r\n"),
     VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
    /* a message with bare LF line ends parses (robustness), but a proxy
     * does not forward it: our own lines end in CRLF, and a mix is what
     * the bare-LF cases above exploit */
    {"bare-lf",
     M("OPTIONS sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\n"
       "To: <sip:bob@example.com>\nFrom: <sip:a@example.com>;tag=1\nCall-ID: lf\n"
       "CSeq: 1 OPTIONS\nContent-Length: 3\n\nabc"),
     VERR(CONTROL_BYTES), VERR(CONTROL_BYTES)},
};

#define NVALID   (sizeof valid / sizeof valid[0])
#define NINVALID (sizeof invalid / sizeof invalid[0])

static struct sipmsg_limits row_limits(const struct row *r)
{
    struct sipmsg_limits l = lim;
    if (r->max_size) l.max_msg_size = r->max_size;
    if (r->max_hdrs) l.max_headers = r->max_hdrs;
    return l;
}

static void check_row(const struct row *r, const char *buf)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    struct sipmsg_limits l = row_limits(r);
    int ret;
    struct outcome got = run(buf, r->len, &l, SIPMSG_DATAGRAM, &m, h, &ret);
    expect(r->name, "datagram", got, r->dgram);
    if (got.kind == O_OK || got.kind == O_VERR)
        cr_expect_eq(ret, (int)r->len, "%s: a datagram is consumed whole", r->name);
    got = run(buf, r->len, &l, 0, &m, h, &ret);
    expect(r->name, "stream", got, r->stream);
    if (got.kind == O_OK || got.kind == O_VERR) {
        size_t want = r->stream_len ? r->stream_len : r->len;
        cr_expect_eq(ret, (int)want, "%s: stream msg_len %d, want %zu", r->name, ret, want);
    }
}

Test(sipmsg, valid_table)
{
    for (size_t i = 0; i < NVALID; i++)
        check_row(&valid[i], valid[i].msg);
}

Test(sipmsg, invalid_table)
{
    for (size_t i = 0; i < NINVALID; i++)
        check_row(&invalid[i], invalid[i].msg);
}

/* Both tables again, each input ending exactly at a PROT_NONE page. */
Test(sipmsg, tables_against_guard_page)
{
    struct guard g;
    guard_init(&g, 8192);
    for (size_t i = 0; i < NVALID; i++)
        check_row(&valid[i], guard_place(&g, valid[i].msg, valid[i].len));
    for (size_t i = 0; i < NINVALID; i++)
        check_row(&invalid[i], guard_place(&g, invalid[i].msg, invalid[i].len));
    guard_cleanup(&g);
}

/* Every truncated prefix of every stream-framed valid message is incomplete,
 * each placed against the guard page; the whole message parses. */
Test(sipmsg, every_prefix_is_incomplete)
{
    struct guard g;
    guard_init(&g, 8192);
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    for (size_t i = 0; i < NVALID; i++) {
        const struct row *r = &valid[i];
        if (r->stream.kind != O_OK) continue;
        size_t full = r->stream_len ? r->stream_len : r->len;
        for (size_t k = 0; k < full; k++) {
            const char *b = guard_place(&g, r->msg, k);
            int ret = sipmsg_parse(b, k, &m, h, &lim, 0);
            cr_assert_eq(ret, -2, "%s: prefix %zu/%zu gave %d (%s)", r->name, k, full, ret,
                         sipmsg_err_str(m.err));
        }
        const char *b = guard_place(&g, r->msg, full);
        cr_assert_eq(sipmsg_parse(b, full, &m, h, &lim, 0), (int)full, "%s", r->name);
        cr_assert_eq(sipmsg_validate(&m), SIP_ERR_NONE, "%s", r->name);
    }
    guard_cleanup(&g);
}

/* The runtime feeds the framer the same buffer start with a growing length;
 * once it answers, the parser must agree on the message length. */
Test(sipmsg, every_prefix_through_framer)
{
    struct guard g;
    guard_init(&g, 8192);
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    for (size_t i = 0; i < NVALID; i++) {
        const struct row *r = &valid[i];
        if (r->stream.kind != O_OK) continue;
        size_t full = r->stream_len ? r->stream_len : r->len;
        /* one buffer, as the runtime does */
        struct framer f;
        framer_init(&f);
        size_t start = 0, got = 0;
        for (size_t k = 1; k <= full; k++) {
            size_t ml = 0;
            enum framer_result fr = framer_feed(&f, r->msg + start, k - start, &lim, &ml);
            if (fr == FRAMER_PONG || fr == FRAMER_KEEPALIVE) {
                cr_assert(start + ml <= k);
                cr_assert(r->msg[start] == '\r' || r->msg[start] == '\n');
                start += ml; /* leading CRLFs are dropped like pongs */
                k = start;
                continue;
            }
            if (k < full) {
                cr_assert_eq(fr, FRAMER_INCOMPLETE, "%s: prefix %zu/%zu gave %d", r->name, k, full,
                             fr);
            } else {
                cr_assert_eq(fr, FRAMER_MESSAGE, "%s: whole message gave %d", r->name, fr);
                got = ml;
            }
        }
        cr_assert_eq(start + got, full, "%s", r->name);
        cr_assert_eq(sipmsg_parse(r->msg + start, got, &m, h, &lim, 0), (int)got, "%s", r->name);

        /* the same, every prefix copied against the guard page */
        framer_init(&f);
        for (size_t k = start + 1; k <= full; k++) {
            size_t ml = 0;
            const char *b = guard_place(&g, r->msg + start, k - start);
            enum framer_result fr = framer_feed(&f, b, k - start, &lim, &ml);
            cr_assert_eq(fr, k < full ? FRAMER_INCOMPLETE : FRAMER_MESSAGE, "%s: %zu/%zu", r->name,
                         k, full);
        }
    }
    guard_cleanup(&g);
}

/* ---- details ------------------------------------------------------------ */

static const struct row *find_row(const struct row *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0) return &t[i];
    cr_assert_fail("no row %s", name);
    return NULL;
}

static void parse_ok(const char *name, struct sip_msg *m, struct sip_hdr *h, unsigned flags)
{
    const struct row *r = find_row(valid, NVALID, name);
    int ret = sipmsg_parse(r->msg, r->len, m, h, &lim, flags);
    cr_assert_gt(ret, 0, "%s: %s", name, sipmsg_err_str(m->err));
    cr_assert_eq(sipmsg_validate(m), SIP_ERR_NONE, "%s", name);
}

static bool sl_eq(struct slice s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

#define assert_slice(s, lit)                                                                       \
    cr_assert(sl_eq((s), (lit)), "%s is \"%.*s\", want \"%s\"", #s, (int)(s).len,                  \
              (s).ptr ? (s).ptr : "", (lit))

Test(sipmsg, request_fields)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("invite", &m, h, SIPMSG_DATAGRAM);
    cr_assert(m.is_request);
    cr_assert_eq(m.method, SIP_METHOD_INVITE);
    assert_slice(m.method_name, "INVITE");
    assert_slice(m.ruri, "sip:bob@example.com");
    assert_slice(m.start_line, "INVITE sip:bob@example.com SIP/2.0");
    cr_assert_eq(m.cseq, 314159);
    cr_assert_eq(m.cseq_method, SIP_METHOD_INVITE);
    assert_slice(m.cseq_method_name, "INVITE");
    cr_assert_eq(m.max_forwards, 70);
    cr_assert_eq(m.content_length, 140);
    assert_slice(m.call_id, "a84b4c76e66710@pc33.example.com");
    cr_assert_eq(m.body.len, 140);
    cr_assert(memcmp(m.body.ptr, "v=0\r\n", 5) == 0);
    cr_assert_eq(m.nhdrs, 9);
    const struct sip_hdr *v = sipmsg_hdr(&m, SIP_HDR_VIA);
    cr_assert_not_null(v);
    assert_slice(v->name, "Via");
    assert_slice(v->value, "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds");
    assert_slice(v->line, VIA);
    cr_assert_eq(v->flags, SIP_HF_LAST_IN_LINE);
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_ROUTE));
    cr_assert_null(sipmsg_hdr_nth(&m, SIP_HDR_VIA, 1));
    cr_assert_eq(m.first[SIP_HDR_ROUTE], SIPMSG_NO_HDR);
    cr_assert_eq(m.count[SIP_HDR_ROUTE], 0);
}

/* sipmsg_hdr() and friends: the checked way to read headers that may be
 * absent, the index never read directly. */
Test(sipmsg, header_accessors_are_null_when_absent)
{
    static const char req[] = "OPTIONS sip:x@example.com SIP/2.0\r\n"
                              "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
                              "Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>\r\n"
                              "Route: <sip:r3.example.com;lr>\r\n"
                              "To: <sip:x@example.com>\r\n"
                              "\r\n";
    struct sip_msg m;
    struct sip_hdr h[MAXH];

    cr_assert_eq(sipmsg_parse(req, sizeof req - 1, &m, h, &lim, SIPMSG_DATAGRAM),
                 (int)sizeof req - 1);
    /* present: the first value, and each value in wire order */
    cr_assert_eq(sipmsg_hdr(&m, SIP_HDR_VIA), &h[0]);
    cr_assert_eq(sipmsg_hdr_count(&m, SIP_HDR_ROUTE), 3);
    assert_slice(sipmsg_hdr(&m, SIP_HDR_ROUTE)->value, "<sip:r1.example.com;lr>");
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_ROUTE, 1)->value, "<sip:r2.example.com;lr>");
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_ROUTE, 2)->value, "<sip:r3.example.com;lr>");
    cr_assert_null(sipmsg_hdr_nth(&m, SIP_HDR_ROUTE, 3));
    /* absent: NULL and 0, whatever first[] holds */
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_FROM));
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_CALL_ID));
    cr_assert_null(sipmsg_hdr_nth(&m, SIP_HDR_CSEQ, 0));
    cr_assert_eq(sipmsg_hdr_count(&m, SIP_HDR_FROM), 0);
    /* a kind that is no kind is absent too */
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR__COUNT));
    cr_assert_null(sipmsg_hdr(&m, (enum sip_hdr_kind)200));
    cr_assert_null(sipmsg_hdr_nth(&m, SIP_HDR__COUNT, 0));
    cr_assert_eq(sipmsg_hdr_count(&m, SIP_HDR__COUNT), 0);

    /* a stream message cut inside its header block: what was indexed is
     * there, the rest is absent */
    cr_assert_eq(sipmsg_parse(req, 90, &m, h, &lim, 0), -2);
    cr_assert_not_null(sipmsg_hdr(&m, SIP_HDR_VIA));
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_ROUTE));
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_TO));
    /* a bad start line: nothing indexed at all */
    cr_assert_eq(sipmsg_parse("BAD\r\n\r\n", 7, &m, h, &lim, SIPMSG_DATAGRAM), -1);
    cr_assert_null(sipmsg_hdr(&m, SIP_HDR_VIA));
    cr_assert_eq(sipmsg_hdr_count(&m, SIP_HDR_VIA), 0);
}

Test(sipmsg, response_fields)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("response", &m, h, 0);
    cr_assert_not(m.is_request);
    cr_assert_eq(m.status, 200);
    assert_slice(m.reason, "OK");
    cr_assert_eq(m.count[SIP_HDR_VIA], 2);
    cr_assert_eq(m.count[SIP_HDR_RECORD_ROUTE], 1);

    parse_ok("noreason-sp", &m, h, 0);
    cr_assert_eq(m.status, 100);
    cr_assert_eq(m.reason.len, 0);
    parse_ok("noreason-nosp", &m, h, 0);
    cr_assert_eq(m.status, 180);
    cr_assert_eq(m.reason.len, 0);
    parse_ok("status-699", &m, h, 0);
    cr_assert_eq(m.status, 699);
    assert_slice(m.reason, "Whatever Reason Here");
}

Test(sipmsg, compact_forms_map_to_kinds)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("compact", &m, h, 0);
    static const uint8_t want[] = {
        SIP_HDR_VIA,
        SIP_HDR_FROM,
        SIP_HDR_TO,
        SIP_HDR_CALL_ID,
        SIP_HDR_CSEQ,
        SIP_HDR_CONTACT,
        SIP_HDR_SUPPORTED,
        SIP_HDR_SUBJECT,
        SIP_HDR_CONTENT_TYPE,
        SIP_HDR_CONTENT_ENCODING,
        SIP_HDR_EVENT,
        SIP_HDR_ALLOW_EVENTS,
        SIP_HDR_REFER_TO,
        SIP_HDR_REFERRED_BY,
        SIP_HDR_SESSION_EXPIRES,
        SIP_HDR_CONTENT_LENGTH,
    };
    cr_assert_eq(m.nhdrs, sizeof want);
    for (unsigned i = 0; i < sizeof want; i++)
        cr_assert_eq(m.hdrs[i].kind, want[i], "header %u (%.*s)", i, (int)m.hdrs[i].name.len,
                     m.hdrs[i].name.ptr);
    assert_slice(m.hdrs[0].name, "v");
    assert_slice(m.call_id, "c1@a");
    cr_assert_eq(m.content_length, 5);
    assert_slice(m.body, "hello");
}

Test(sipmsg, header_kind_names)
{
    static const struct {
        const char *name;
        enum sip_hdr_kind kind;
    } t[] = {
        {"Accept", SIP_HDR_ACCEPT},
        {"Accept-Encoding", SIP_HDR_ACCEPT_ENCODING},
        {"Accept-Language", SIP_HDR_ACCEPT_LANGUAGE},
        {"Alert-Info", SIP_HDR_ALERT_INFO},
        {"Allow", SIP_HDR_ALLOW},
        {"Authentication-Info", SIP_HDR_AUTHENTICATION_INFO},
        {"Authorization", SIP_HDR_AUTHORIZATION},
        {"Call-ID", SIP_HDR_CALL_ID},
        {"Call-Info", SIP_HDR_CALL_INFO},
        {"Contact", SIP_HDR_CONTACT},
        {"Content-Disposition", SIP_HDR_CONTENT_DISPOSITION},
        {"Content-Encoding", SIP_HDR_CONTENT_ENCODING},
        {"Content-Language", SIP_HDR_CONTENT_LANGUAGE},
        {"Content-Length", SIP_HDR_CONTENT_LENGTH},
        {"Content-Type", SIP_HDR_CONTENT_TYPE},
        {"CSeq", SIP_HDR_CSEQ},
        {"Date", SIP_HDR_DATE},
        {"Error-Info", SIP_HDR_ERROR_INFO},
        {"Expires", SIP_HDR_EXPIRES},
        {"From", SIP_HDR_FROM},
        {"In-Reply-To", SIP_HDR_IN_REPLY_TO},
        {"Max-Forwards", SIP_HDR_MAX_FORWARDS},
        {"MIME-Version", SIP_HDR_MIME_VERSION},
        {"Min-Expires", SIP_HDR_MIN_EXPIRES},
        {"Organization", SIP_HDR_ORGANIZATION},
        {"Priority", SIP_HDR_PRIORITY},
        {"Proxy-Authenticate", SIP_HDR_PROXY_AUTHENTICATE},
        {"Proxy-Authorization", SIP_HDR_PROXY_AUTHORIZATION},
        {"Proxy-Require", SIP_HDR_PROXY_REQUIRE},
        {"Record-Route", SIP_HDR_RECORD_ROUTE},
        {"Reply-To", SIP_HDR_REPLY_TO},
        {"Require", SIP_HDR_REQUIRE},
        {"Retry-After", SIP_HDR_RETRY_AFTER},
        {"Route", SIP_HDR_ROUTE},
        {"Server", SIP_HDR_SERVER},
        {"Subject", SIP_HDR_SUBJECT},
        {"Supported", SIP_HDR_SUPPORTED},
        {"Timestamp", SIP_HDR_TIMESTAMP},
        {"To", SIP_HDR_TO},
        {"Unsupported", SIP_HDR_UNSUPPORTED},
        {"User-Agent", SIP_HDR_USER_AGENT},
        {"Via", SIP_HDR_VIA},
        {"Warning", SIP_HDR_WARNING},
        {"WWW-Authenticate", SIP_HDR_WWW_AUTHENTICATE},
        {"Path", SIP_HDR_PATH},
        {"Event", SIP_HDR_EVENT},
        {"Allow-Events", SIP_HDR_ALLOW_EVENTS},
        {"Refer-To", SIP_HDR_REFER_TO},
        {"Referred-By", SIP_HDR_REFERRED_BY},
        {"Session-Expires", SIP_HDR_SESSION_EXPIRES},
        {"Flow-Timer", SIP_HDR_FLOW_TIMER},
        /* compact forms, RFC 3261 §7.3.3 and registered extensions */
        {"c", SIP_HDR_CONTENT_TYPE},
        {"e", SIP_HDR_CONTENT_ENCODING},
        {"f", SIP_HDR_FROM},
        {"i", SIP_HDR_CALL_ID},
        {"k", SIP_HDR_SUPPORTED},
        {"l", SIP_HDR_CONTENT_LENGTH},
        {"m", SIP_HDR_CONTACT},
        {"s", SIP_HDR_SUBJECT},
        {"t", SIP_HDR_TO},
        {"v", SIP_HDR_VIA},
        {"o", SIP_HDR_EVENT},
        {"u", SIP_HDR_ALLOW_EVENTS},
        {"r", SIP_HDR_REFER_TO},
        {"b", SIP_HDR_REFERRED_BY},
        {"x", SIP_HDR_SESSION_EXPIRES},
        {"V", SIP_HDR_VIA},
        {"L", SIP_HDR_CONTENT_LENGTH},
        {"I", SIP_HDR_CALL_ID},
        /* case-insensitive */
        {"vIA", SIP_HDR_VIA},
        {"CALL-ID", SIP_HDR_CALL_ID},
        {"content-length", SIP_HDR_CONTENT_LENGTH},
        {"MaX-fOrWaRdS", SIP_HDR_MAX_FORWARDS},
        {"record-ROUTE", SIP_HDR_RECORD_ROUTE},
        /* not headers we know */
        {"", SIP_HDR_OTHER},
        {"a", SIP_HDR_OTHER},
        {"j", SIP_HDR_OTHER},
        {"z", SIP_HDR_OTHER},
        {"1", SIP_HDR_OTHER},
        {"Vias", SIP_HDR_OTHER},
        {"Vi", SIP_HDR_OTHER},
        {"Content-Lengt", SIP_HDR_OTHER},
        {"Content-Lengths", SIP_HDR_OTHER},
        {"C%6Fntact", SIP_HDR_OTHER},
        {"X-Via", SIP_HDR_OTHER},
        {"Routes", SIP_HDR_OTHER},
        {"Zebra", SIP_HDR_OTHER},
        {"Identity", SIP_HDR_OTHER},
        {"~", SIP_HDR_OTHER},
        /* CR folds onto '-' under (c | 0x20): it must not match */
        {"Call\rID", SIP_HDR_OTHER},
        {"Content\rLength", SIP_HDR_OTHER},
        {"Via ", SIP_HDR_OTHER},
        {"\x96ia", SIP_HDR_OTHER},
    };
    bool seen[SIP_HDR__COUNT] = {false};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        enum sip_hdr_kind k = sipmsg_hdr_kind(slice_make(t[i].name, strlen(t[i].name)));
        cr_expect_eq(k, t[i].kind, "%s -> %d, want %d", t[i].name, k, t[i].kind);
        seen[t[i].kind] = true;
    }
    for (unsigned k = 0; k < SIP_HDR__COUNT; k++)
        cr_expect(seen[k], "kind %u has no row", k);

    /* each name also resolves inside a parsed message */
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (t[i].name[0] == '\0' || strpbrk(t[i].name, "\r \x96"))
            continue; /* not a header line the parser would accept */
        char buf[512];
        int n = snprintf(buf, sizeof buf, "SIP/2.0 200 OK\r\n%s: %s\r\nl: 0\r\n\r\n", t[i].name,
                         t[i].kind == SIP_HDR_CSEQ ? "1 X" : "1");
        struct sip_msg m;
        struct sip_hdr h[MAXH];
        if (t[i].kind == SIP_HDR_CONTENT_LENGTH) {
            cr_expect_eq(sipmsg_parse(buf, (size_t)n, &m, h, &lim, 0), -1);
            cr_expect_eq(m.err, SIP_ERR_CL_DUPLICATE, "%s", t[i].name);
            continue;
        }
        cr_assert_eq(sipmsg_parse(buf, (size_t)n, &m, h, &lim, 0), n, "%s", t[i].name);
        cr_expect_eq(m.hdrs[0].kind, t[i].kind, "%s", t[i].name);
        cr_expect_eq(m.first[t[i].kind], 0, "%s", t[i].name);
    }
}

Test(sipmsg, method_ids)
{
    static const struct {
        const char *name;
        enum sip_method id;
    } t[] = {
        {"INVITE", SIP_METHOD_INVITE},   {"ACK", SIP_METHOD_ACK},
        {"BYE", SIP_METHOD_BYE},         {"CANCEL", SIP_METHOD_CANCEL},
        {"OPTIONS", SIP_METHOD_OPTIONS}, {"REGISTER", SIP_METHOD_REGISTER},
        {"PRACK", SIP_METHOD_PRACK},     {"SUBSCRIBE", SIP_METHOD_SUBSCRIBE},
        {"NOTIFY", SIP_METHOD_NOTIFY},   {"PUBLISH", SIP_METHOD_PUBLISH},
        {"INFO", SIP_METHOD_INFO},       {"REFER", SIP_METHOD_REFER},
        {"MESSAGE", SIP_METHOD_MESSAGE}, {"UPDATE", SIP_METHOD_UPDATE},
        {"invite", SIP_METHOD_OTHER},    {"RE%47IST%45R", SIP_METHOD_OTHER},
        {"INVITEX", SIP_METHOD_OTHER},   {"", SIP_METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        cr_expect_eq(sipmsg_method_id(slice_make(t[i].name, strlen(t[i].name))), t[i].id, "%s",
                     t[i].name);
}

/* Via/Route/Contact lists give one entry per value; flags mark the line. */
Test(sipmsg, multi_value_split)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("multi-values", &m, h, 0);

    cr_assert_eq(m.count[SIP_HDR_VIA], 3);
    const struct sip_hdr *v0 = sipmsg_hdr_nth(&m, SIP_HDR_VIA, 0);
    const struct sip_hdr *v1 = sipmsg_hdr_nth(&m, SIP_HDR_VIA, 1);
    const struct sip_hdr *v2 = sipmsg_hdr_nth(&m, SIP_HDR_VIA, 2);
    cr_assert(v0 && v1 && v2);
    cr_assert_null(sipmsg_hdr_nth(&m, SIP_HDR_VIA, 3));
    assert_slice(v0->value, "SIP/2.0/UDP a.example.com;branch=z9hG4bK1");
    assert_slice(v1->value, "SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2");
    assert_slice(v2->value, "SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK3");
    cr_assert_eq(v0->flags, 0);
    cr_assert_eq(v1->flags, SIP_HF_SAME_LINE | SIP_HF_LAST_IN_LINE);
    cr_assert_eq(v2->flags, SIP_HF_LAST_IN_LINE);
    cr_assert(v0->line.ptr == v1->line.ptr && v0->line.len == v1->line.len);
    cr_assert(v2->line.ptr != v0->line.ptr);

    cr_assert_eq(m.count[SIP_HDR_ROUTE], 3);
    static const char *const routes[] = {"<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>",
                                         "<sip:p3.example.com;lr>"};
    static const uint8_t rflags[] = {0, SIP_HF_SAME_LINE, SIP_HF_SAME_LINE | SIP_HF_LAST_IN_LINE};
    for (unsigned i = 0; i < 3; i++) {
        const struct sip_hdr *r = sipmsg_hdr_nth(&m, SIP_HDR_ROUTE, i);
        cr_assert_not_null(r);
        assert_slice(r->value, routes[i]);
        cr_assert_eq(r->flags, rflags[i], "route %u", i);
    }

    /* commas inside quoted display names (escaped quotes too) and inside <>
     * do not split */
    cr_assert_eq(m.count[SIP_HDR_CONTACT], 3);
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_CONTACT, 0)->value, "\"Doe, John\" <sip:j@192.0.2.1>");
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_CONTACT, 1)->value,
                 "\"a \\\"b, c\\\" d\" <sip:k@192.0.2.2>;q=0.5");
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_CONTACT, 2)->value, "<sip:l,m@192.0.2.3>");

    /* single-valued headers keep their commas */
    assert_slice(sipmsg_hdr(&m, SIP_HDR_SUBJECT)->value, "one, two");
    assert_slice(sipmsg_hdr(&m, SIP_HDR_DATE)->value, "Sat, 13 Nov 2010 23:29:00 GMT");
}

Test(sipmsg, folding_and_lws)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("folding", &m, h, 0);
    assert_slice(sipmsg_hdr(&m, SIP_HDR_VIA)->value,
                 "SIP/2.0/UDP\r\n 192.0.2.1:5060\r\n\t;branch=z9hG4bKf1");
    assert_slice(sipmsg_hdr(&m, SIP_HDR_TO)->value, "<sip:u@example.com>");
    cr_assert_eq(m.cseq, 2);
    assert_slice(m.cseq_method_name, "REGISTER");
    assert_slice(sipmsg_hdr(&m, SIP_HDR_SUBJECT)->value, "folded\r\n\t subject");
    cr_assert_eq(m.content_length, 0);

    parse_ok("odd-headers", &m, h, 0);
    assert_slice(sipmsg_hdr(&m, SIP_HDR_SUBJECT)->value, "");
    cr_assert_eq(m.count[SIP_HDR_VIA], 2);
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_VIA, 1)->name, "Via");
    assert_slice(sipmsg_hdr_nth(&m, SIP_HDR_VIA, 1)->value, "SIP/2.0/UDP h2;branch=z9hG4bK2");
    cr_assert_eq(m.max_forwards, 68);
    cr_assert_eq(m.count[SIP_HDR_OTHER], 2);

    parse_ok("leading-crlf", &m, h, 0);
    assert_slice(m.method_name, "OPTIONS");
    cr_assert(m.start_line.ptr == find_row(valid, NVALID, "leading-crlf")->msg + 6);

    const struct row *r = find_row(invalid, NINVALID, "bare-lf");
    cr_assert_gt(sipmsg_parse(r->msg, r->len, &m, h, &lim, 0), 0);
    assert_slice(sipmsg_hdr(&m, SIP_HDR_CALL_ID)->value, "lf");
    assert_slice(m.body, "abc");
    cr_assert_eq(sipmsg_validate(&m), SIP_ERR_CONTROL_BYTES);
}

Test(sipmsg, escapes_kept_as_is)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    parse_ok("escapes", &m, h, 0);
    assert_slice(m.ruri, "sip:%61lice;p=%41@example.com;transport=%74cp");
    assert_slice(sipmsg_hdr(&m, SIP_HDR_TO)->value, "<sip:%41%42@example.com>");
    cr_assert_eq(m.count[SIP_HDR_CONTACT], 0); /* C%6Fntact is not Contact */
    cr_assert_eq(m.count[SIP_HDR_OTHER], 1);

    parse_ok("unknown-method", &m, h, 0);
    cr_assert_eq(m.method, SIP_METHOD_OTHER);
    assert_slice(m.method_name, "FOO.BAR-baz!%~");
    cr_assert_eq(m.cseq_method, SIP_METHOD_OTHER);
}

static struct sip_msg parse_str(const char *s, size_t n, unsigned flags, int *ret)
{
    static struct sip_hdr h[MAXH];
    struct sip_msg m;
    *ret = sipmsg_parse(s, n, &m, h, &lim, flags);
    return m;
}

#define PARSE(s, flags, ret) parse_str((s), sizeof(s) - 1, (flags), (ret))

Test(sipmsg, integers)
{
    int r;
    struct sip_msg m = PARSE(
        "OPTIONS sip:b@x SIP/2.0\r\n" VIA DLG "CSeq: 4294967295 OPTIONS\r\nl: 0\r\n\r\n", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.cseq, 4294967295u);
    m = PARSE("OPTIONS sip:b@x SIP/2.0\r\n" VIA DLG "CSeq: 0009 OPTIONS\r\nl: 0\r\n\r\n", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.cseq, 9);
    m = PARSE("OPTIONS sip:b@x SIP/2.0\r\n" VIA DLG "CSeq: 4294967296 OPTIONS\r\nl: 0\r\n\r\n", 0,
              &r);
    cr_assert_eq(r, -1);
    cr_assert_eq(m.err, SIP_ERR_CSEQ);

    m = PARSE(OPTS "Max-Forwards: 255\r\nl: 0\r\n\r\n", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.max_forwards, 255);
    m = PARSE(OPTS "Max-Forwards: 0\r\nl: 0\r\n\r\n", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.max_forwards, 0);
    m = PARSE(OPTS "l: 0\r\n\r\n", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.max_forwards, -1);

    /* 2^32+32 must not wrap to 32, even with exactly 32 body bytes */
    static const char cl[] =
        OPTS "Content-Length: 4294967328\r\n\r\n0123456789abcdef0123456789abcdef";
    for (unsigned f = 0; f <= SIPMSG_DATAGRAM; f++) {
        m = parse_str(cl, sizeof cl - 1, f, &r);
        cr_assert_eq(r, -1);
        cr_assert_eq(m.err, SIP_ERR_CONTENT_LENGTH);
        cr_assert_eq(m.err_pos, sizeof(OPTS "Content-Length: ") - 1);
    }
    m = PARSE(OPTS "Content-Length: 4294967295\r\n\r\n", 0, &r);
    cr_assert_eq(r, -1);
    cr_assert_eq(m.err, SIP_ERR_TOO_LARGE);
    m = PARSE(OPTS "Content-Length: 00003\r\n\r\nabc", 0, &r);
    cr_assert_gt(r, 0);
    cr_assert_eq(m.content_length, 3);
}

Test(sipmsg, error_positions_and_strings)
{
    int r;
    struct sip_msg m = PARSE("INVITE  sip:b@x SIP/2.0\r\n\r\n", 0, &r);
    cr_assert_eq(r, -1);
    cr_assert_eq(m.err_pos, 7);
    m = PARSE("SIP/2.0 099 Early\r\n\r\n", 0, &r);
    cr_assert_eq(m.err_pos, 8);
    m = PARSE(OPTS "Foobar roobar\r\n\r\n", 0, &r);
    cr_assert_eq(m.err_pos, sizeof(OPTS "Foobar ") - 1);

    for (int e = 0; e < SIP_ERR__COUNT; e++) {
        cr_assert_not_null(sipmsg_err_str((enum sip_err)e));
        int st = sipmsg_err_status((enum sip_err)e);
        if (e == SIP_ERR_VERSION)
            cr_expect_eq(st, 505);
        else if (e == SIP_ERR_TOO_LARGE)
            cr_expect_eq(st, 513);
        else
            cr_expect_eq(st, 400, "%s", sipmsg_err_str((enum sip_err)e));
    }
    cr_assert_str_eq(sipmsg_err_str(SIP_ERR__COUNT), "unknown error");
}

/* Content-Length decides framing on streams; datagrams are whole. */
Test(sipmsg, datagram_vs_stream_framing)
{
    int r;
    /* no Content-Length: the rest of the datagram is the body; a stream error */
    static const char nocl[] = OPTS "\r\nbody rest";
    struct sip_msg m = parse_str(nocl, sizeof nocl - 1, SIPMSG_DATAGRAM, &r);
    cr_assert_eq(r, (int)sizeof nocl - 1);
    cr_assert_eq(m.content_length, -1);
    assert_slice(m.body, "body rest");
    m = parse_str(nocl, sizeof nocl - 1, 0, &r);
    cr_assert_eq(r, -1);
    cr_assert_eq(m.err, SIP_ERR_CL_MISSING);

    /* Content-Length shorter than the datagram: extra bytes are not body */
    static const char extra[] = OPTS "Content-Length: 4\r\n\r\nbodyJUNK";
    m = parse_str(extra, sizeof extra - 1, SIPMSG_DATAGRAM, &r);
    cr_assert_eq(r, (int)sizeof extra - 1);
    assert_slice(m.body, "body");
    /* on a stream they start the next message */
    m = parse_str(extra, sizeof extra - 1, 0, &r);
    cr_assert_eq(r, (int)sizeof extra - 5);
    assert_slice(m.body, "body");

    /* Content-Length longer: short datagram, incomplete stream */
    static const char shrt[] = OPTS "Content-Length: 10\r\n\r\nbody";
    m = parse_str(shrt, sizeof shrt - 1, SIPMSG_DATAGRAM, &r);
    cr_assert_eq(r, -1);
    cr_assert_eq(m.err, SIP_ERR_BODY_SHORT);
    m = parse_str(shrt, sizeof shrt - 1, 0, &r);
    cr_assert_eq(r, -2);

    /* two messages back to back on a stream, CRLF between them */
    static const char two[] = OPTS "l: 2\r\n\r\nab\r\n" OPTS "l: 1\r\n\r\nc";
    m = parse_str(two, sizeof two - 1, 0, &r);
    cr_assert_eq(r, (int)sizeof(OPTS "l: 2\r\n\r\nab") - 1);
    struct sip_msg m2;
    struct sip_hdr h2[MAXH];
    int r2 = sipmsg_parse(two + r, sizeof two - 1 - (size_t)r, &m2, h2, &lim, 0);
    cr_assert_eq(r2, (int)(sizeof two - 1 - (size_t)r));
    assert_slice(m2.body, "c");
}

Test(sipmsg, limits)
{
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    /* exactly max_headers values fit, one fewer does not */
    static const char msg[] = OPTS "Route: <sip:a>, <sip:b>\r\nl: 0\r\n\r\n"; /* 8 values */
    struct sipmsg_limits l = {65535, 8};
    cr_assert_eq(sipmsg_parse(msg, sizeof msg - 1, &m, h, &l, 0), (int)sizeof msg - 1);
    cr_assert_eq(m.nhdrs, 8);
    l.max_headers = 7;
    cr_assert_eq(sipmsg_parse(msg, sizeof msg - 1, &m, h, &l, 0), -1);
    cr_assert_eq(m.err, SIP_ERR_TOO_MANY_HEADERS);
    cr_assert_eq(sipmsg_parse(msg, sizeof msg - 1, &m, h, &l, SIPMSG_DATAGRAM), -1);
    cr_assert_eq(m.err, SIP_ERR_TOO_MANY_HEADERS);

    /* exactly max_msg_size bytes fit, in both modes; one byte less does not */
    static const char body[] = OPTS "Content-Length: 10\r\n\r\n0123456789";
    const size_t n = sizeof body - 1;
    for (unsigned f = 0; f <= SIPMSG_DATAGRAM; f++) {
        l = (struct sipmsg_limits){n, MAXH};
        cr_assert_eq(sipmsg_parse(body, n, &m, h, &l, f), (int)n);
        l.max_msg_size = n - 1;
        cr_assert_eq(sipmsg_parse(body, n, &m, h, &l, f), -1);
        cr_assert_eq(m.err, SIP_ERR_TOO_LARGE, "flags %u: %s", f, sipmsg_err_str(m.err));
        /* header block alone above the limit */
        l.max_msg_size = n - 20;
        cr_assert_eq(sipmsg_parse(body, n, &m, h, &l, f), -1);
        cr_assert_eq(m.err, SIP_ERR_TOO_LARGE);
    }
    /* a stream shorter than the limit may still grow: incomplete, not too large */
    l = (struct sipmsg_limits){n, MAXH};
    cr_assert_eq(sipmsg_parse(body, n - 30, &m, h, &l, 0), -2);
    /* the declared body alone exceeds the limit: known before it arrives */
    static const char big[] = OPTS "Content-Length: 60000\r\n\r\n";
    l = (struct sipmsg_limits){1000, MAXH};
    cr_assert_eq(sipmsg_parse(big, sizeof big - 1, &m, h, &l, 0), -1);
    cr_assert_eq(m.err, SIP_ERR_TOO_LARGE);

    /* a stream of nothing but CRLFs beyond the limit is too large, not a crash */
    static char crlf[4096];
    for (size_t i = 0; i < sizeof crlf; i += 2)
        memcpy(crlf + i, "\r\n", 2);
    l = (struct sipmsg_limits){1000, MAXH};
    for (unsigned f = 0; f <= SIPMSG_DATAGRAM; f++) {
        cr_assert_eq(sipmsg_parse(crlf, sizeof crlf, &m, h, &l, f), -1);
        cr_assert_eq(m.err, SIP_ERR_TOO_LARGE);
    }
    cr_assert_eq(sipmsg_parse(crlf, 500, &m, h, &l, 0), -2);
}

/* Every corpus file against the guard page, both modes, plus the framer. */
static void corpus_dir(struct guard *g, const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", SIPEDGE_TESTDATA, dir);
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    struct dirent *de;
    unsigned n = 0;
    while ((de = readdir(d))) {
        if (de->d_type == DT_DIR || de->d_name[0] == '.' || strstr(de->d_name, ".md") ||
            strstr(de->d_name, ".txt") || strcmp(de->d_name, "SHA256SUMS") == 0)
            continue;
        char fp[1024];
        snprintf(fp, sizeof fp, "%s/%s", path, de->d_name);
        FILE *f = fopen(fp, "rb");
        if (!f) continue; /* a subdirectory */
        static char data[65536];
        size_t len = fread(data, 1, sizeof data, f);
        fclose(f);
        if (len == 0) continue;
        n++;
        struct sip_msg m;
        struct sip_hdr h[MAXH];
        for (unsigned fl = 0; fl <= SIPMSG_DATAGRAM; fl++) {
            const char *b = guard_place(g, data, len);
            int r = sipmsg_parse(b, len, &m, h, &lim, fl);
            cr_assert(r == -1 || r == -2 || (r > 0 && (size_t)r <= len), "%s", fp);
            if (r > 0) sipmsg_validate(&m);
            /* every prefix in stream mode ends at the guard too */
            if (fl == 0)
                for (size_t k = 0; k < len; k++) {
                    b = guard_place(g, data, k);
                    r = sipmsg_parse(b, k, &m, h, &lim, 0);
                    cr_assert(r != 0 && (r < 0 || (size_t)r <= k), "%s", fp);
                    if (r > 0) sipmsg_validate(&m);
                }
        }
        struct framer fr;
        framer_init(&fr);
        for (size_t k = 1; k <= len; k++) {
            size_t ml = 0;
            const char *b = guard_place(g, data, k);
            enum framer_result res = framer_feed(&fr, b, k, &lim, &ml);
            if (res != FRAMER_INCOMPLETE) {
                cr_assert(res == FRAMER_INVALID || ml <= k, "%s", fp);
                break;
            }
        }
    }
    closedir(d);
    cr_assert_gt(n, 0, "no corpus files in %s", path);
}

Test(sipmsg, corpus_against_guard_page)
{
    struct guard g;
    guard_init(&g, 65536);
    corpus_dir(&g, "torture");
    corpus_dir(&g, "torture/rfc5118");
    corpus_dir(&g, "torture/variants");
    guard_cleanup(&g);
}

/* sipmsg_check_controls() names the offending byte, and only looks at the
 * start line and headers: a body may carry anything. */
Test(sipmsg, control_bytes_position_and_body)
{
    static const char cr[] = OPTS "Subject: hi\rX: y\r\nl: 0\r\n\r\n";
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    cr_assert_gt(sipmsg_parse(cr, sizeof cr - 1, &m, h, &lim, SIPMSG_DATAGRAM), 0);
    cr_assert_eq(sipmsg_check_controls(&m), SIP_ERR_CONTROL_BYTES);
    cr_assert_eq(m.err_pos, sizeof(OPTS "Subject: hi") - 1);
    /* the same bytes after a leading CRLF: the offset still counts from buf */
    static const char lead[] = "\r\n" OPTS "Subject: hi\x01\r\nl: 0\r\n\r\n";
    cr_assert_gt(sipmsg_parse(lead, sizeof lead - 1, &m, h, &lim, SIPMSG_DATAGRAM), 0);
    cr_assert_eq(sipmsg_check_controls(&m), SIP_ERR_CONTROL_BYTES);
    cr_assert_eq(m.err_pos, sizeof("\r\n" OPTS "Subject: hi") - 1);
    static const char body[] = OPTS "Content-Type: application/octet-stream\r\nl: 5\r\n\r\n"
                                    "\0\r\x7f\n\x01";
    cr_assert_gt(sipmsg_parse(body, sizeof body - 1, &m, h, &lim, SIPMSG_DATAGRAM), 0);
    cr_assert_eq(sipmsg_check_controls(&m), SIP_ERR_NONE);
    cr_assert_eq(sipmsg_validate(&m), SIP_ERR_NONE);
}
