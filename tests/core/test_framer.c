/* Tests for core/framer.c: keep-alives, Content-Length framing, incremental feeding. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "core/framer.h"
#include "core/sipmsg.h"

TestSuite(framer);

static const struct sipmsg_limits lim = {65535, 128};

#define HDRS                                                                                       \
    "INVITE sip:bob@example.com SIP/2.0\r\n"                                                       \
    "Via: SIP/2.0/TCP pc33.example.com;branch=z9hG4bK776asdhds\r\n"                                \
    "To: <sip:bob@example.com>\r\nFrom: <sip:alice@example.com>;tag=1\r\n"                         \
    "Call-ID: c1@pc33\r\nCSeq: 1 INVITE\r\n"

/* One call on a heap copy of exactly len bytes, so ASan sees over-reads. */
static enum framer_result feed1(struct framer *f, const char *s, size_t len, size_t *ml,
                                const struct sipmsg_limits *l)
{
    char *b = malloc(len ? len : 1);
    cr_assert_not_null(b);
    memcpy(b, s, len);
    enum framer_result r = framer_feed(f, b, len, l, ml);
    free(b);
    return r;
}

static enum framer_result once(const char *s, size_t len, size_t *ml)
{
    struct framer f;
    framer_init(&f);
    *ml = 0;
    return feed1(&f, s, len, ml, &lim);
}

#define ONCE(lit, ml) once((lit), sizeof(lit) - 1, (ml))

/* Feeds growing prefixes of s (as the runtime does after each read) and
 * returns the first result that is not INCOMPLETE, with the length fed. */
static enum framer_result feed_growing(const char *s, size_t len, size_t step,
                                       const struct sipmsg_limits *l, size_t *fed, size_t *ml)
{
    struct framer f;
    framer_init(&f);
    for (size_t k = step < len ? step : len;; k = k + step < len ? k + step : len) {
        enum framer_result r = feed1(&f, s, k, ml, l);
        if (r != FRAMER_INCOMPLETE || k == len) {
            *fed = k;
            return r;
        }
    }
}

Test(framer, keepalive_ping_and_pong)
{
    size_t ml;
    cr_assert_eq(ONCE("\r\n\r\n", &ml), FRAMER_KEEPALIVE);
    cr_assert_eq(ml, 4);
    cr_assert_eq(ONCE("\r\n\r\nINVITE", &ml), FRAMER_KEEPALIVE);
    cr_assert_eq(ml, 4);
    cr_assert_eq(ONCE("\r\n\r\n\r\n\r\n", &ml), FRAMER_KEEPALIVE);
    cr_assert_eq(ml, 4);
    /* a lone CRLF followed by anything but CR is a pong */
    cr_assert_eq(ONCE("\r\nINVITE", &ml), FRAMER_PONG);
    cr_assert_eq(ml, 2);
    cr_assert_eq(ONCE("\nINVITE", &ml), FRAMER_PONG);
    cr_assert_eq(ml, 1);
    /* too early to tell a pong from a ping */
    cr_assert_eq(ONCE("\r", &ml), FRAMER_INCOMPLETE);
    cr_assert_eq(ONCE("\r\n", &ml), FRAMER_INCOMPLETE);
    cr_assert_eq(ONCE("\r\n\r", &ml), FRAMER_INCOMPLETE);
    cr_assert_eq(ONCE("", &ml), FRAMER_INCOMPLETE);
    /* CR not followed by LF is garbage */
    struct framer f;
    framer_init(&f);
    cr_assert_eq(feed1(&f, "\rX", 2, &ml, &lim), FRAMER_INVALID);
    cr_assert_eq(f.err, SIP_ERR_START_LINE);
}

/* CRLF then CR then something else: the pong is decidable and the stream
 * must not stall waiting for a ping that can no longer come. */
Test(framer, pong_then_garbage_does_not_stall)
{
    static const char s[] = "\r\n\rINVITE sip:x SIP/2.0\r\n";
    struct framer f;
    framer_init(&f);
    size_t ml = 0;
    enum framer_result r = feed1(&f, s, sizeof s - 1, &ml, &lim);
    cr_assert_eq(r, FRAMER_PONG, "got %d", r);
    cr_assert_eq(ml, 2);
    r = feed1(&f, s + 2, sizeof s - 3, &ml, &lim);
    cr_assert_eq(r, FRAMER_INVALID);
    cr_assert_eq(f.err, SIP_ERR_START_LINE);
}

Test(framer, ping_fed_byte_by_byte)
{
    static const char s[] = "\r\n\r\n";
    size_t fed, ml;
    cr_assert_eq(feed_growing(s, 4, 1, &lim, &fed, &ml), FRAMER_KEEPALIVE);
    cr_assert_eq(fed, 4);
    cr_assert_eq(ml, 4);
}

Test(framer, two_messages_back_to_back)
{
    static const char s[] = HDRS "Content-Length: 5\r\n\r\nhello" HDRS "l: 0\r\n\r\n";
    const size_t first = sizeof(HDRS "Content-Length: 5\r\n\r\nhello") - 1;
    struct framer f;
    framer_init(&f);
    size_t ml = 0;
    cr_assert_eq(feed1(&f, s, sizeof s - 1, &ml, &lim), FRAMER_MESSAGE);
    cr_assert_eq(ml, first);
    /* the framer reset itself: the same state frames the next message */
    cr_assert_eq(feed1(&f, s + first, sizeof s - 1 - first, &ml, &lim), FRAMER_MESSAGE);
    cr_assert_eq(ml, sizeof s - 1 - first);
    /* a third message that has only begun */
    cr_assert_eq(feed1(&f, "OPT", 3, &ml, &lim), FRAMER_INCOMPLETE);
}

Test(framer, body_with_nuls_bare_lfs_and_crlfcrlf)
{
    static const char s[] = HDRS "Content-Type: application/octet-stream\r\n"
                                 "Content-Length: 29\r\n\r\n"
                                 "\0a\nb\n\n\r\n\r\nContent-Length: 9\0\0";
    cr_assert_eq(sizeof s - 1 -
                     (sizeof(HDRS "Content-Type: application/octet-stream\r\n"
                                  "Content-Length: 29\r\n\r\n") -
                      1),
                 29);
    size_t ml;
    cr_assert_eq(once(s, sizeof s - 1, &ml), FRAMER_MESSAGE);
    cr_assert_eq(ml, sizeof s - 1);
    for (size_t step = 1; step <= 7; step++) {
        size_t fed;
        cr_assert_eq(feed_growing(s, sizeof s - 1, step, &lim, &fed, &ml), FRAMER_MESSAGE);
        cr_assert_eq(ml, sizeof s - 1);
        cr_assert_eq(fed, sizeof s - 1);
    }
}

struct cl_row {
    const char *name;
    const char *msg;
    size_t len;
    enum framer_result res;
    enum sip_err err;
    size_t msg_len; /* 0: the whole input */
    size_t max;     /* 0: default */
};
#define M(s) .msg = (s), .len = sizeof(s) - 1

static const struct cl_row cl_rows[] = {
    {"cl-0", M(HDRS "Content-Length: 0\r\n\r\n"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"compact-l", M(HDRS "l: 3\r\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"upper-L-ws", M(HDRS "L  :   3  \r\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"case", M(HDRS "cOnTeNt-LeNgTh: 3\r\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"folded", M(HDRS "Content-Length:\r\n   3\r\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"leading-zeros", M(HDRS "Content-Length: 0003\r\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"bare-lf", M("OPTIONS sip:x SIP/2.0\nl: 3\n\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"mixed-eol", M("OPTIONS sip:x SIP/2.0\r\nl: 3\n\r\nabc"), FRAMER_MESSAGE, SIP_ERR_NONE},
    {"trailing", M(HDRS "l: 3\r\n\r\nabcOPTIONS"), FRAMER_MESSAGE, SIP_ERR_NONE,
     sizeof(HDRS "l: 3\r\n\r\nabc") - 1},
    {"lookalikes",
     M(HDRS "X-Content-Length: 9\r\nContent-Lengthy: 9\r\nll: 9\r\n"
            "Subject:\r\n Content-Length: 9\r\nl: 1\r\n\r\nZ"),
     FRAMER_MESSAGE, SIP_ERR_NONE},
    {"missing", M(HDRS "\r\nbody"), FRAMER_INVALID, SIP_ERR_CL_MISSING},
    {"dup", M(HDRS "Content-Length: 3\r\nl: 3\r\n\r\nabc"), FRAMER_INVALID, SIP_ERR_CL_DUPLICATE},
    {"dup-differ", M(HDRS "Content-Length: 13\r\nContent-Length: 5\r\n\r\n0123456789abc"),
     FRAMER_INVALID, SIP_ERR_CL_DUPLICATE},
    {"negative", M(HDRS "Content-Length: -999\r\n\r\nabc"), FRAMER_INVALID, SIP_ERR_CONTENT_LENGTH},
    {"words", M(HDRS "Content-Length: five\r\n\r\nabcde"), FRAMER_INVALID, SIP_ERR_CONTENT_LENGTH},
    {"empty", M(HDRS "Content-Length:\r\n\r\n"), FRAMER_INVALID, SIP_ERR_CONTENT_LENGTH},
    {"hex", M(HDRS "Content-Length: 0x10\r\n\r\n0123456789abcdef"), FRAMER_INVALID,
     SIP_ERR_CONTENT_LENGTH},
    {"two-numbers", M(HDRS "Content-Length: 1 2\r\n\r\nab"), FRAMER_INVALID,
     SIP_ERR_CONTENT_LENGTH},
    {"2^32+32", M(HDRS "Content-Length: 4294967328\r\n\r\n0123456789abcdef0123456789abcdef"),
     FRAMER_INVALID, SIP_ERR_CONTENT_LENGTH},
    {"2^64+1", M(HDRS "Content-Length: 18446744073709551617\r\n\r\nx"), FRAMER_INVALID,
     SIP_ERR_CONTENT_LENGTH},
    {"2^32-1", M(HDRS "Content-Length: 4294967295\r\n\r\n"), FRAMER_INVALID, SIP_ERR_TOO_LARGE},
    {"above-max", M(HDRS "Content-Length: 65536\r\n\r\n"), FRAMER_INVALID, SIP_ERR_TOO_LARGE},
    {"body-above-max", M(HDRS "Content-Length: 100\r\n\r\n"), FRAMER_INVALID, SIP_ERR_TOO_LARGE,
     .max = 250},
    {"exactly-max", M(HDRS "Content-Length: 10\r\n\r\n0123456789"), FRAMER_MESSAGE, SIP_ERR_NONE,
     .max = sizeof(HDRS "Content-Length: 10\r\n\r\n0123456789") - 1},
    {"headers-above-max",
     M(HDRS "X-Pad: 01234567890123456789012345678901234567890123456789\r\n"
            "l: 0\r\n\r\n"),
     FRAMER_INVALID, SIP_ERR_TOO_LARGE, .max = 200},
    {"unterminated-above-max", M(HDRS "X-Pad: 01234567890123456789012345678901234567890123456789"),
     FRAMER_INVALID, SIP_ERR_TOO_LARGE, .max = 200},
    {"slowloris", M(HDRS "Content-Length: 9999\r\n\r\nshort"), FRAMER_INCOMPLETE, SIP_ERR_NONE},
    {"unterminated", M(HDRS "Content-Length: 0\r\n"), FRAMER_INCOMPLETE, SIP_ERR_NONE},
};

static void check_cl_row(const struct cl_row *r, size_t step)
{
    struct sipmsg_limits l = lim;
    if (r->max) l.max_msg_size = r->max;
    struct framer f;
    framer_init(&f);
    size_t ml = 0, fed = 0;
    enum framer_result res;
    if (step == 0) {
        res = feed1(&f, r->msg, r->len, &ml, &l);
        fed = r->len;
    } else {
        res = feed_growing(r->msg, r->len, step, &l, &fed, &ml);
    }
    cr_expect_eq(res, r->res, "%s (step %zu): result %d, want %d", r->name, step, res, r->res);
    if (res == FRAMER_INVALID && r->res == FRAMER_INVALID && step == 0)
        cr_expect_eq(f.err, r->err, "%s: err %s, want %s", r->name, sipmsg_err_str(f.err),
                     sipmsg_err_str(r->err));
    if (res == FRAMER_MESSAGE && r->res == FRAMER_MESSAGE) {
        size_t want = r->msg_len ? r->msg_len : r->len;
        cr_expect_eq(ml, want, "%s (step %zu): msg_len %zu, want %zu", r->name, step, ml, want);
        /* incrementally the message is found as soon as its last byte arrives */
        if (step == 1) cr_expect_eq(fed, want, "%s: found after %zu bytes", r->name, fed);
        /* and the parser agrees with the framing */
        struct sip_msg m;
        struct sip_hdr h[128];
        cr_expect_eq(sipmsg_parse(r->msg, ml, &m, h, &l, 0), (int)ml, "%s: parser disagrees (%s)",
                     r->name, sipmsg_err_str(m.err));
    }
}

Test(framer, content_length_table)
{
    for (size_t i = 0; i < sizeof cl_rows / sizeof cl_rows[0]; i++)
        check_cl_row(&cl_rows[i], 0);
}

/* The same rows fed in growing prefixes: 1 byte at a time and other steps. */
Test(framer, content_length_table_incremental)
{
    static const size_t steps[] = {1, 2, 3, 5, 13, 64};
    for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++)
        for (size_t i = 0; i < sizeof cl_rows / sizeof cl_rows[0]; i++)
            check_cl_row(&cl_rows[i], steps[s]);
}

/* Error kinds seen incrementally match the one-shot ones. */
Test(framer, invalid_err_incremental)
{
    for (size_t i = 0; i < sizeof cl_rows / sizeof cl_rows[0]; i++) {
        const struct cl_row *r = &cl_rows[i];
        if (r->res != FRAMER_INVALID) continue;
        struct sipmsg_limits l = lim;
        if (r->max) l.max_msg_size = r->max;
        struct framer f;
        framer_init(&f);
        size_t ml;
        enum framer_result res = FRAMER_INCOMPLETE;
        for (size_t k = 1; k <= r->len && res == FRAMER_INCOMPLETE; k++)
            res = feed1(&f, r->msg, k, &ml, &l);
        cr_expect_eq(res, FRAMER_INVALID, "%s", r->name);
        cr_expect_eq(f.err, r->err, "%s: err %s, want %s", r->name, sipmsg_err_str(f.err),
                     sipmsg_err_str(r->err));
    }
}

/* Every prefix of several messages: incomplete until the last byte, then
 * exactly one message; the framer state carries across calls. */
Test(framer, every_prefix_incremental)
{
    static const char *const msgs[] = {
        HDRS "Content-Length: 0\r\n\r\n",
        HDRS "Content-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello\r\n\r\nbye",
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nl:0\r\n\r\n",
        "OPTIONS sip:x SIP/2.0\nl: 2\n\n\n\n",
        "OPTIONS sip:x SIP/2.0\r\nSubject: folded\r\n \r\n\tmore\r\nl: 1\r\n\r\n\n",
    };
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        size_t n = strlen(msgs[i]);
        struct framer f;
        framer_init(&f);
        for (size_t k = 1; k <= n; k++) {
            size_t ml = 0;
            enum framer_result r = feed1(&f, msgs[i], k, &ml, &lim);
            if (k < n) {
                cr_assert_eq(r, FRAMER_INCOMPLETE, "msg %zu: prefix %zu/%zu gave %d", i, k, n, r);
            } else {
                cr_assert_eq(r, FRAMER_MESSAGE, "msg %zu: whole gave %d", i, r);
                cr_assert_eq(ml, n);
            }
        }
        /* a fresh framer on each prefix says the same */
        for (size_t k = 1; k < n; k++) {
            size_t ml;
            cr_assert_eq(once(msgs[i], k, &ml), FRAMER_INCOMPLETE, "msg %zu: fresh prefix %zu", i,
                         k);
        }
    }
}

/* A stream that sends a big header block one byte at a time is cut off at
 * the limit, not buffered forever. */
Test(framer, header_block_limit_byte_by_byte)
{
    static char big[1200];
    memcpy(big, HDRS, sizeof HDRS - 1);
    memset(big + sizeof HDRS - 1, 'x', sizeof big - (sizeof HDRS - 1));
    memcpy(big + sizeof HDRS - 1, "X-Pad: ", 7);
    struct sipmsg_limits l = {1000, 128};
    struct framer f;
    framer_init(&f);
    size_t ml, k;
    enum framer_result r = FRAMER_INCOMPLETE;
    for (k = 1; k <= sizeof big && r == FRAMER_INCOMPLETE; k++)
        r = feed1(&f, big, k, &ml, &l);
    cr_assert_eq(r, FRAMER_INVALID);
    cr_assert_eq(f.err, SIP_ERR_TOO_LARGE);
    cr_assert_eq(k - 1, 1000, "gave up after %zu bytes", k - 1);
}
