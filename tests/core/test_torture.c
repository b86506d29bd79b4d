/* RFC 4475 / RFC 5118 torture corpus: parser-level outcome of every file, per EXPECTED.md. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/framer.h"
#include "core/sipmsg.h"
#include "core/sipuri.h"

#ifndef SIPEDGE_TESTDATA
#error "SIPEDGE_TESTDATA must name the shared testdata directory"
#endif

TestSuite(torture);

#define MAXH 128
static const struct sipmsg_limits lim = {65535, MAXH};

/* What the parser (parse, then validate) makes of a file. */
enum { OK, ERR, INC };
struct outcome {
    uint8_t kind;
    uint8_t err; /* enum sip_err when kind == ERR */
};
#define P_OK                                                                                       \
    {                                                                                              \
        OK, SIP_ERR_NONE                                                                           \
    }
#define P_INC                                                                                      \
    {                                                                                              \
        INC, SIP_ERR_NONE                                                                          \
    }
#define E(e)                                                                                       \
    {                                                                                              \
        ERR, SIP_ERR_##e                                                                           \
    }

/* What the stream framer makes of the file fed in one go. */
struct framing {
    enum framer_result res;
    enum sip_err err; /* FRAMER_INVALID */
    size_t len;       /* FRAMER_MESSAGE: 0 = the whole file */
};
#define F_MSG                                                                                      \
    {                                                                                              \
        FRAMER_MESSAGE, SIP_ERR_NONE, 0                                                            \
    }
#define F_MSGN(n)                                                                                  \
    {                                                                                              \
        FRAMER_MESSAGE, SIP_ERR_NONE, (n)                                                          \
    }
#define F_INC                                                                                      \
    {                                                                                              \
        FRAMER_INCOMPLETE, SIP_ERR_NONE, 0                                                         \
    }
#define F_INV(e)                                                                                   \
    {                                                                                              \
        FRAMER_INVALID, SIP_ERR_##e, 0                                                             \
    }

struct row {
    const char *file; /* relative to SIPEDGE_TESTDATA/torture */
    struct outcome dgram;
    struct outcome stream;
    size_t stream_len; /* stream OK: msg_len, 0 = the whole file */
    int status;        /* UDP: response to send (sipmsg_err_status), 0 = none/not parser-level */
    struct framing framer;
};

/* Proxy-level outcomes (404, 416, 420, 483, dropping a broadcast Via,
 * registrar 400 for a non-SIP AOR) are decided after the parser: those
 * rows expect OK here. Responses with errors are dropped (status 0). */
static const struct row rows[] = {
    /* RFC 4475 §3.1.1 valid */
    {"wsinv.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"intmeth.dat", P_OK, P_OK, 0, 0, F_MSG}, /* proxy: 404 if the URI is unknown */
    {"esc01.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"escnull.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"esc02.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"lwsdisp.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"longreq.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"dblreq.dat", P_OK, P_OK, 300, 0, F_MSGN(300)},
    {"semiuri.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"transports.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"mpart01.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"unreason.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"noreason.dat", P_OK, P_OK, 0, 0, F_MSG},
    /* RFC 4475 §3.1.2 invalid */
    {"badinv01.dat", E(VIA), E(VIA), 0, 400, F_MSG},
    {"clerr.dat", E(BODY_SHORT), P_INC, 0, 400, F_INC},
    {"ncl.dat", E(CONTENT_LENGTH), E(CONTENT_LENGTH), 0, 400, F_INV(CONTENT_LENGTH)},
    {"scalar02.dat", E(CSEQ), E(CSEQ), 0, 400, F_MSG},
    {"scalarlg.dat", E(CSEQ), E(CSEQ), 0, 0, F_MSG}, /* response: dropped */
    {"quotbal.dat", E(ADDRESS), E(ADDRESS), 0, 400, F_MSG},
    {"ltgtruri.dat", E(REQUEST_URI), E(REQUEST_URI), 0, 400, F_MSG},
    {"lwsruri.dat", E(START_LINE), E(START_LINE), 0, 400, F_MSG},
    {"lwsstart.dat", E(START_LINE), E(START_LINE), 0, 400, F_MSG},
    {"trws.dat", E(START_LINE), E(START_LINE), 0, 400, F_MSG},
    {"escruri.dat", E(REQUEST_URI), E(REQUEST_URI), 0, 400, F_MSG},
    {"baddate.dat", P_OK, P_OK, 0, 0, F_MSG}, /* Date is not used: ignored */
    {"regbadct.dat", E(ADDRESS), E(ADDRESS), 0, 400, F_MSG},
    {"badaspec.dat", E(ADDRESS), E(ADDRESS), 0, 400, F_MSG},
    {"baddn.dat", E(NO_HEADER_END), P_INC, 0, 400, F_INC}, /* archive copy has no empty line */
    {"badvers.dat", E(VERSION), E(VERSION), 0, 505, F_MSG},
    {"mismatch01.dat", E(CSEQ_METHOD), E(CSEQ_METHOD), 0, 400, F_MSG},
    {"mismatch02.dat", E(CSEQ_METHOD), E(CSEQ_METHOD), 0, 400, F_MSG}, /* 501 preferred, 400 ok */
    {"bigcode.dat", E(STATUS_CODE), E(STATUS_CODE), 0, 0, F_MSG},      /* response: dropped */
    /* RFC 4475 §3.2-3.4 */
    {"badbranch.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"insuf.dat", E(MISSING_HEADER), E(MISSING_HEADER), 0, 400, F_MSG},
    {"unkscm.dat", P_OK, P_OK, 0, 0, F_MSG},  /* proxy: 416 */
    {"novelsc.dat", P_OK, P_OK, 0, 0, F_MSG}, /* proxy: 416 */
    {"unksm2.dat", P_OK, P_OK, 0, 0, F_MSG},  /* registrar: 400 */
    {"bext01.dat", P_OK, P_OK, 0, 0, F_MSG},  /* proxy: 420 */
    {"invut.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"regaut01.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"multi01.dat", E(DUP_HEADER), E(DUP_HEADER), 0, 400, F_MSG},
    {"mcl01.dat", E(CL_DUPLICATE), E(CL_DUPLICATE), 0, 400, F_INV(CL_DUPLICATE)},
    {"bcast.dat", P_OK, P_OK, 0, 0, F_MSG},  /* proxy: drop */
    {"zeromf.dat", P_OK, P_OK, 0, 0, F_MSG}, /* proxy: 483 */
    {"cparam01.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"cparam02.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"regescrt.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"sdp01.dat", P_OK, P_OK, 0, 0, F_MSG},
    {"inv2543.dat", P_OK, E(CL_MISSING), 0, 0, F_INV(CL_MISSING)},
    {"test.dat", E(START_LINE), E(START_LINE), 0, 400, F_MSG},
    /* RFC 5118 */
    {"rfc5118/ipv6-good", P_OK, P_OK, 0, 0, F_MSG},
    {"rfc5118/ipv6-bad", E(REQUEST_URI), E(REQUEST_URI), 0, 400, F_MSG},
    {"rfc5118/port-ambiguous", P_OK, P_OK, 0, 0, F_MSG},
    {"rfc5118/port-unambiguous", P_OK, P_OK, 0, 0, F_MSG},
    {"rfc5118/via-received-param-with-delim", P_OK, P_OK, 0, 0, F_MSG},
    {"rfc5118/via-received-param-no-delim", P_OK, P_OK, 0, 0, F_MSG},
    /* Content-Length 268 > CRLF body 251: too large over UDP, waits on a stream */
    {"rfc5118/ipv6-in-sdp", E(BODY_SHORT), P_INC, 0, 400, F_INC},
    {"rfc5118/mult-ip-in-header", P_OK, P_OK, 0, 0, F_MSG},
    /* Content-Length smaller than the CRLF body: extra bytes dropped (UDP) */
    {"rfc5118/mult-ip-in-sdp", P_OK, P_OK, 530 - (189 - 181), 0, F_MSGN(530 - (189 - 181))},
    {"rfc5118/ipv4-mapped-ipv6", P_OK, P_OK, 657 - (245 - 236), 0, F_MSGN(657 - (245 - 236))},
    {"rfc5118/ipv6-bug-abnf-3-colons", P_OK, P_OK, 0, 0, F_MSG}, /* tolerated */
    {"rfc5118/ipv6-correct-abnf-2-colons", P_OK, P_OK, 0, 0, F_MSG},
    /* fixed variants */
    {"variants/baddn.terminated.dat", E(ADDRESS), E(ADDRESS), 0, 400, F_MSG},
    {"variants/rfc5118-ipv4-mapped-ipv6.clfixed", P_OK, P_OK, 0, 0, F_MSG},
    {"variants/rfc5118-ipv6-in-sdp.clfixed", P_OK, P_OK, 0, 0, F_MSG},
    {"variants/rfc5118-mult-ip-in-sdp.clfixed", P_OK, P_OK, 0, 0, F_MSG},
};
#define NROWS (sizeof rows / sizeof rows[0])

/* Reads a corpus file into a heap block of exactly its size (ASan sees any
 * read past it). */
static char *load(const char *rel, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/torture/%s", SIPEDGE_TESTDATA, rel);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_gt(n, 0, "%s is empty", path);
    rewind(f);
    char *buf = malloc((size_t)n);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static const struct row *find(const char *rel)
{
    for (size_t i = 0; i < NROWS; i++)
        if (strcmp(rows[i].file, rel) == 0) return &rows[i];
    return NULL;
}

static struct outcome run(const char *buf, size_t len, unsigned flags, struct sip_msg *m,
                          struct sip_hdr *h, int *ret)
{
    *ret = sipmsg_parse(buf, len, m, h, &lim, flags);
    if (*ret == -2) return (struct outcome)P_INC;
    if (*ret < 0) return (struct outcome){ERR, (uint8_t)m->err};
    cr_assert(*ret > 0 && (size_t)*ret <= len);
    enum sip_err e = sipmsg_validate(m);
    if (e) return (struct outcome){ERR, (uint8_t)e};
    return (struct outcome)P_OK;
}

static const char *show(struct outcome o)
{
    return o.kind == OK ? "OK" : o.kind == INC ? "INCOMPLETE" : sipmsg_err_str((enum sip_err)o.err);
}

static void check_row(const struct row *r)
{
    size_t len;
    char *buf = load(r->file, &len);
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    int ret;

    /* UDP */
    struct outcome got = run(buf, len, SIPMSG_DATAGRAM, &m, h, &ret);
    cr_expect(got.kind == r->dgram.kind && got.err == r->dgram.err, "%s datagram: %s, want %s",
              r->file, show(got), show(r->dgram));
    cr_expect_neq(got.kind, INC, "%s: a datagram is never incomplete", r->file);
    if (got.kind != INC && ret > 0)
        cr_expect_eq(ret, (int)len, "%s: a datagram is consumed whole", r->file);
    /* the response the proxy sends for a rejected request */
    bool is_response = len >= 4 && memcmp(buf, "SIP/", 4) == 0;
    int status = (got.kind == ERR && !is_response) ? sipmsg_err_status(got.err) : 0;
    cr_expect_eq(status, r->status, "%s: would answer %d, want %d", r->file, status, r->status);

    /* TCP/TLS */
    got = run(buf, len, 0, &m, h, &ret);
    cr_expect(got.kind == r->stream.kind && got.err == r->stream.err, "%s stream: %s, want %s",
              r->file, show(got), show(r->stream));
    if (got.kind != INC && ret > 0) {
        size_t want = r->stream_len ? r->stream_len : len;
        cr_expect_eq(ret, (int)want, "%s: stream msg_len %d, want %zu", r->file, ret, want);
    }

    /* framing, fed in one go */
    struct framer f;
    framer_init(&f);
    size_t ml = 0;
    enum framer_result fr = framer_feed(&f, buf, len, &lim, &ml);
    cr_expect_eq(fr, r->framer.res, "%s framer: %d, want %d", r->file, fr, r->framer.res);
    if (fr == FRAMER_INVALID && r->framer.res == FRAMER_INVALID)
        cr_expect_eq(f.err, r->framer.err, "%s framer: %s, want %s", r->file, sipmsg_err_str(f.err),
                     sipmsg_err_str(r->framer.err));
    if (fr == FRAMER_MESSAGE) {
        size_t want = r->framer.len ? r->framer.len : len;
        cr_expect_eq(ml, want, "%s framer: %zu bytes, want %zu", r->file, ml, want);
    }
    /* a stream framing error (close the connection) is a framer error too */
    if (r->stream.kind == ERR &&
        (r->stream.err == SIP_ERR_CL_MISSING || r->stream.err == SIP_ERR_CL_DUPLICATE ||
         r->stream.err == SIP_ERR_CONTENT_LENGTH))
        cr_expect_eq(r->framer.res, FRAMER_INVALID, "%s: table inconsistent", r->file);

    /* framing, fed one byte more at a time */
    framer_init(&f);
    enum framer_result fi = FRAMER_INCOMPLETE;
    size_t k;
    for (k = 1; k <= len && fi == FRAMER_INCOMPLETE; k++)
        fi = framer_feed(&f, buf, k, &lim, &ml);
    cr_expect_eq(fi, fr, "%s: incremental framer %d, one-shot %d", r->file, fi, fr);
    if (fi == FRAMER_MESSAGE)
        cr_expect_eq(k - 1, ml, "%s: message found after %zu bytes, is %zu", r->file, k - 1, ml);
    free(buf);
}

Test(torture, every_file_has_the_expected_outcome)
{
    for (size_t i = 0; i < NROWS; i++)
        check_row(&rows[i]);
}

/* A corpus file without a row fails, so a new file must be classified. */
Test(torture, table_covers_the_corpus)
{
    static const char *const dirs[] = {"", "rfc5118/", "variants/"};
    unsigned seen = 0;
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        char path[512];
        snprintf(path, sizeof path, "%s/torture/%s", SIPEDGE_TESTDATA, dirs[d]);
        DIR *dir = opendir(path);
        cr_assert_not_null(dir, "%s", path);
        struct dirent *de;
        while ((de = readdir(dir))) {
            if (de->d_type == DT_DIR || de->d_name[0] == '.') continue;
            if (d == 0 &&
                (strcmp(de->d_name, "EXPECTED.md") == 0 || strcmp(de->d_name, "FRAMING.txt") == 0 ||
                 strcmp(de->d_name, "SHA256SUMS") == 0))
                continue;
            char rel[512];
            snprintf(rel, sizeof rel, "%s%s", dirs[d], de->d_name);
            cr_expect_not_null(find(rel), "corpus file %s has no row in the table", rel);
            seen++;
        }
        closedir(dir);
    }
    cr_expect_eq(seen, NROWS, "%u corpus files, %zu rows", seen, NROWS);
    /* no row names a file that is gone, and no file has two rows */
    for (size_t i = 0; i < NROWS; i++) {
        cr_expect_eq(find(rows[i].file), &rows[i], "%s listed twice", rows[i].file);
        char path[512];
        snprintf(path, sizeof path, "%s/torture/%s", SIPEDGE_TESTDATA, rows[i].file);
        FILE *f = fopen(path, "rb");
        cr_expect_not_null(f, "row %s has no file", rows[i].file);
        if (f) fclose(f);
    }
}

/* dblreq: UDP handles the REGISTER and discards the INVITE bytes; on a
 * stream they are the next message. */
Test(torture, dblreq_framing)
{
    size_t len;
    char *buf = load("dblreq.dat", &len);
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    cr_assert_eq(sipmsg_parse(buf, len, &m, h, &lim, SIPMSG_DATAGRAM), (int)len);
    cr_assert_eq(sipmsg_validate(&m), SIP_ERR_NONE);
    cr_assert_eq(m.method, SIP_METHOD_REGISTER);
    cr_assert_eq(m.content_length, 0);
    cr_assert_eq(m.body.len, 0);
    cr_assert_eq(m.headers_len, 300);
    cr_assert_eq(m.count[SIP_HDR_CSEQ], 1);
    cr_assert_eq(m.count[SIP_HDR_VIA], 1);
    for (unsigned i = 0; i < m.nhdrs; i++)
        cr_assert(m.hdrs[i].line.ptr + m.hdrs[i].line.len <= buf + m.headers_len,
                  "header %u lies in the discarded bytes", i);
    /* the bytes a forwarder would use hold no INVITE */
    cr_assert_null(memmem(buf, m.headers_len + m.body.len, "INVITE", 6));

    int r = sipmsg_parse(buf, len, &m, h, &lim, 0);
    cr_assert_eq(r, 300);
    cr_assert_eq(m.msg_len, 300);
    cr_assert_eq(m.method, SIP_METHOD_REGISTER);
    struct sip_msg m2;
    struct sip_hdr h2[MAXH];
    int r2 = sipmsg_parse(buf + r, len - (size_t)r, &m2, h2, &lim, 0);
    /* the INVITE's own Content-Length (150) is 5 bytes short of its SDP:
     * on a stream those 5 bytes are garbage after it */
    cr_assert_eq(r2, (int)(len - 300 - 5));
    cr_assert(memcmp(buf + len - 5, "C\r\n\r\n", 5) == 0);
    cr_assert_eq(sipmsg_validate(&m2), SIP_ERR_NONE);
    cr_assert_eq(m2.method, SIP_METHOD_INVITE);
    cr_assert_eq(m2.body.len, 150);

    /* framer: the REGISTER, then a CRLF pong, then the INVITE */
    struct framer f;
    framer_init(&f);
    size_t ml;
    cr_assert_eq(framer_feed(&f, buf, len, &lim, &ml), FRAMER_MESSAGE);
    cr_assert_eq(ml, 300);
    cr_assert_eq(framer_feed(&f, buf + 300, len - 300, &lim, &ml), FRAMER_PONG);
    cr_assert_eq(ml, 2);
    cr_assert_eq(framer_feed(&f, buf + 302, len - 302, &lim, &ml), FRAMER_MESSAGE);
    cr_assert_eq(ml, len - 302 - 5);
    cr_assert_eq(framer_feed(&f, buf + len - 5, 5, &lim, &ml), FRAMER_INVALID);
    cr_assert_eq(f.err, SIP_ERR_CL_MISSING);
    free(buf);
}

static void parse_file(const char *rel, char **buf, struct sip_msg *m, struct sip_hdr *h)
{
    size_t len;
    *buf = load(rel, &len);
    cr_assert_gt(sipmsg_parse(*buf, len, m, h, &lim, SIPMSG_DATAGRAM), 0, "%s", rel);
    cr_assert_eq(sipmsg_validate(m), SIP_ERR_NONE, "%s", rel);
}

static bool sl_eq(struct slice s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* Details EXPECTED.md calls out for the valid files. */
Test(torture, valid_file_details)
{
    char *buf;
    struct sip_msg m;
    struct sip_hdr h[MAXH];

    parse_file("esc02.dat", &buf, &m, h);
    cr_expect_eq(m.count[SIP_HDR_CONTACT], 2, "C%%6Fntact is not Contact");
    cr_expect_eq(m.method, SIP_METHOD_OTHER, "RE%%47IST%%45R is not REGISTER");
    free(buf);

    parse_file("escnull.dat", &buf, &m, h);
    cr_expect_eq(m.count[SIP_HDR_CONTACT], 2);
    free(buf);

    parse_file("transports.dat", &buf, &m, h);
    static const uint8_t tr[] = {SIP_TRANSPORT_UDP, SIP_TRANSPORT_SCTP, SIP_TRANSPORT_TLS,
                                 SIP_TRANSPORT_OTHER, SIP_TRANSPORT_TCP};
    cr_expect_eq(m.count[SIP_HDR_VIA], 5);
    for (unsigned i = 0; i < 5; i++) {
        struct sip_via v;
        cr_assert_eq(sipuri_parse_via(sipmsg_hdr_nth(&m, SIP_HDR_VIA, i)->value, &v), 0);
        cr_expect_eq(v.transport, tr[i], "Via %u", i);
    }
    free(buf);

    parse_file("semiuri.dat", &buf, &m, h);
    struct sip_uri u;
    cr_assert_eq(sipuri_parse(m.ruri, &u), 0);
    cr_expect(sl_eq(u.user, "user;par=u%40example.net"));
    cr_expect(sl_eq(u.host, "example.com"));
    free(buf);

    parse_file("longreq.dat", &buf, &m, h);
    cr_expect_eq(m.count[SIP_HDR_VIA], 34);
    struct sip_via v;
    cr_assert_eq(sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &v), 0);
    cr_expect_eq(v.branch.len, 0, "the top Via has no branch");
    free(buf);

    parse_file("wsinv.dat", &buf, &m, h);
    cr_expect_eq(m.max_forwards, 68);
    cr_expect_eq(m.cseq, 9);
    cr_expect_eq(m.count[SIP_HDR_VIA], 3);
    cr_assert_eq(sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &v), 0);
    cr_expect(sl_eq(v.branch, "390skdjuw"));
    cr_expect(sl_eq(v.host, "192.0.2.2"));
    cr_expect_eq(m.count[SIP_HDR_SUBJECT], 1);
    cr_expect_eq(sipmsg_hdr(&m, SIP_HDR_SUBJECT)->value.len, 0, "empty Subject");
    free(buf);

    parse_file("mpart01.dat", &buf, &m, h);
    cr_expect_eq(m.body.len, 553);
    free(buf);

    parse_file("unreason.dat", &buf, &m, h);
    cr_expect_eq(m.status, 200);
    cr_expect_gt(m.reason.len, 0);
    free(buf);

    parse_file("noreason.dat", &buf, &m, h);
    cr_expect_eq(m.status, 100);
    cr_expect_eq(m.reason.len, 0);
    free(buf);

    parse_file("inv2543.dat", &buf, &m, h);
    cr_expect_eq(m.content_length, -1);
    cr_expect_eq(m.body.len, 105, "the body is the rest of the datagram");
    free(buf);

    parse_file("cparam01.dat", &buf, &m, h);
    struct sip_addr a;
    cr_assert_eq(sipuri_parse_addr(sipmsg_hdr(&m, SIP_HDR_CONTACT)->value, &a), 0);
    cr_expect(sl_eq(a.params, "unknownparam"), "a header param");
    cr_expect_eq(a.uri.params.len, 0);
    free(buf);

    parse_file("cparam02.dat", &buf, &m, h);
    cr_assert_eq(sipuri_parse_addr(sipmsg_hdr(&m, SIP_HDR_CONTACT)->value, &a), 0);
    cr_expect(sl_eq(a.uri.params, "unknownparam"), "a URI param");
    cr_expect_eq(a.params.len, 0);
    free(buf);
}

Test(torture, rfc5118_details)
{
    char *buf;
    struct sip_msg m;
    struct sip_hdr h[MAXH];
    struct sip_uri u;

    parse_file("rfc5118/port-ambiguous", &buf, &m, h);
    cr_assert_eq(sipuri_parse(m.ruri, &u), 0);
    cr_expect(sl_eq(u.host, "2001:db8::10:5070"));
    cr_expect_eq(u.port, 0, "never port 5070");
    free(buf);

    parse_file("rfc5118/port-unambiguous", &buf, &m, h);
    cr_assert_eq(sipuri_parse(m.ruri, &u), 0);
    cr_expect(sl_eq(u.host, "2001:db8::10"));
    cr_expect_eq(u.port, 5070);
    free(buf);

    struct sip_via v;
    parse_file("rfc5118/via-received-param-with-delim", &buf, &m, h);
    cr_assert_eq(sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &v), 0);
    cr_expect(v.received.len > 2 && v.received.ptr[0] == '[');
    free(buf);

    parse_file("rfc5118/via-received-param-no-delim", &buf, &m, h);
    cr_assert_eq(sipuri_parse_via(sipmsg_hdr(&m, SIP_HDR_VIA)->value, &v), 0);
    cr_expect(v.received.len > 0 && v.received.ptr[0] != '[');
    cr_expect(sipuri_is_ipv6(v.received));
    free(buf);

    parse_file("rfc5118/mult-ip-in-header", &buf, &m, h);
    cr_expect_eq(m.count[SIP_HDR_VIA], 3);
    cr_assert_eq(sipuri_parse_via(sipmsg_hdr_nth(&m, SIP_HDR_VIA, 2)->value, &v), 0);
    cr_expect(sl_eq(v.host, "2001:db8::9:255"));
    cr_expect(sl_eq(v.received, "192.0.2.200"));
    free(buf);
}
