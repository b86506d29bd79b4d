/* libFuzzer target: SIP parser (datagram and stream), validation, URI parsers and the rewriter. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rewrite.h"
#include "core/sipmsg.h"
#include "core/sipuri.h"
#include "fuzz/fuzz.h"

#define MAXH 64

static void check_in(const char *buf, size_t len, struct slice s)
{
    if (s.len == 0) return;
    CHECK(s.ptr >= buf && s.ptr + s.len <= buf + len);
}

/* Runs every slice parser over the values a proxy would look at. */
static void parse_values(const struct sip_msg *m)
{
    struct sip_uri u;
    struct sip_addr a;
    struct sip_via v;
    struct slice val;
    if (m->is_request && sipuri_parse(m->ruri, &u) == 0)
        sipuri_param(u.params, SLICE_LIT("transport"), &val);
    for (unsigned i = 0; i < m->nhdrs; i++) {
        const struct sip_hdr *h = &m->hdrs[i];
        switch (h->kind) {
        case SIP_HDR_VIA:
            if (sipuri_parse_via(h->value, &v) == 0) {
                CHECK(v.host.len > 0);
                CHECK(v.port >= 0 && v.port <= 65535);
                sipuri_param(v.params, SLICE_LIT("branch"), &val);
            }
            break;
        case SIP_HDR_TO:
        case SIP_HDR_FROM:
        case SIP_HDR_CONTACT:
        case SIP_HDR_ROUTE:
        case SIP_HDR_RECORD_ROUTE:
        case SIP_HDR_PATH:
            if (sipuri_parse_addr(h->value, &a) == 0 && !a.star)
                sipuri_param(a.params, SLICE_LIT("tag"), &val);
            break;
        }
    }
}

/* The edits a proxy makes on a request it forwards; the result must be a
 * message the parser accepts again. */
static void rewrite_and_reparse(const char *buf, const struct sip_msg *m, bool pop_two)
{
    struct rewrite rw;
    rewrite_init(&rw, buf, m->headers_len + m->body.len);
    rewrite_add_top(&rw, m, SLICE_LIT("Via: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKfz\r\n"));
    if (m->is_request) {
        rewrite_add_before(&rw, m, SIP_HDR_RECORD_ROUTE,
                           SLICE_LIT("Record-Route: <sip:proxy.example.com;lr>\r\n"));
        const struct sip_hdr *r = sipmsg_hdr(m, SIP_HDR_ROUTE);
        if (pop_two) /* double Record-Route: two own entries */
            rewrite_remove_top(&rw, m, SIP_HDR_ROUTE, 2);
        else if (r)
            rewrite_remove_value(&rw, m, r);
        rewrite_dec_max_forwards(&rw, m, 70);
    }
    rewrite_via_received(&rw, sipmsg_hdr(m, SIP_HDR_VIA), SLICE_LIT("192.0.2.1"), 5060);
    static char out[70000];
    ssize_t n = rewrite_build(&rw, out, sizeof out);
    CHECK(n == (ssize_t)rw.out_len);
    char *copy = malloc((size_t)n ? (size_t)n : 1);
    memcpy(copy, out, (size_t)n);
    static const struct sipmsg_limits big = {1 << 20, MAXH + 8};
    struct sip_hdr hdrs[MAXH + 8];
    struct sip_msg m2;
    int r2 = sipmsg_parse(copy, (size_t)n, &m2, hdrs, &big, SIPMSG_DATAGRAM);
    CHECK(r2 == (int)n);
    /* popping the top Route brings the third one into the checked pair */
    enum sip_err e2 = sipmsg_validate(&m2);
    CHECK(e2 == SIP_ERR_NONE || (e2 == SIP_ERR_ADDRESS && m->count[SIP_HDR_ROUTE] > 2));
    CHECK(m2.count[SIP_HDR_VIA] == m->count[SIP_HDR_VIA] + 1);
    CHECK(m2.body.len == m->body.len);
    if (m->is_request && m->max_forwards > 0) CHECK(m2.max_forwards == m->max_forwards - 1);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the input size picks the limits, so the same input always gets the
     * same ones and small inputs still reach the limit checks */
    static const struct sipmsg_limits limits[] = {{65535, MAXH}, {1024, MAXH}, {256, 16}, {64, 4}};
    const struct sipmsg_limits lim = limits[size % 4];
    const char *buf = (const char *)data;
    struct sip_hdr hdrs[MAXH];
    struct sip_msg m;
    int stream_ret = 0;
    for (unsigned flags = 0; flags <= SIPMSG_DATAGRAM; flags++) {
        int r = sipmsg_parse(buf, size, &m, hdrs, &lim, flags);
        if (flags == 0) stream_ret = r;
        if (r == -2) {
            CHECK(flags == 0); /* a datagram is never incomplete */
            continue;
        }
        if (r == -1) {
            CHECK(m.err != SIP_ERR_NONE && m.err < SIP_ERR__COUNT);
            CHECK(m.err_pos <= size);
            continue;
        }
        CHECK(r > 0 && (size_t)r <= size && m.msg_len == (size_t)r);
        CHECK(m.headers_len <= m.msg_len && m.body.len <= m.msg_len - m.headers_len);
        CHECK(flags == 0 || (size_t)r == size);
        CHECK(m.nhdrs <= lim.max_headers);
        check_in(buf, size, m.start_line);
        check_in(buf, size, m.body);
        unsigned count = 0;
        for (unsigned k = 0; k < SIP_HDR__COUNT; k++) {
            count += m.count[k];
            CHECK((m.count[k] == 0) == (m.first[k] == SIPMSG_NO_HDR));
            if (m.count[k]) CHECK(m.hdrs[m.first[k]].kind == k);
        }
        CHECK(count == m.nhdrs);
        for (unsigned i = 0; i < m.nhdrs; i++) {
            check_in(buf, size, m.hdrs[i].value);
            check_in(buf, size, m.hdrs[i].line);
            CHECK(m.hdrs[i].line.ptr + m.hdrs[i].line.len <= buf + m.headers_len);
        }
        if (m.is_request)
            CHECK(m.method_name.len > 0 && m.ruri.len > 0);
        else
            CHECK(m.status >= 100 && m.status <= 699);
        if (m.content_length >= 0) CHECK((size_t)m.content_length == m.body.len);
        if (flags == 0) {
            /* the message alone parses to itself */
            char *copy = malloc((size_t)r);
            memcpy(copy, buf, (size_t)r);
            struct sip_hdr h2[MAXH];
            struct sip_msg m2;
            CHECK(sipmsg_parse(copy, (size_t)r, &m2, h2, &lim, 0) == r);
            free(copy);
        }
        enum sip_err e = sipmsg_validate(&m);
        CHECK(e < SIP_ERR__COUNT);
        int st = sipmsg_err_status(e);
        CHECK(st == 400 || st == 505 || st == 513);
        parse_values(&m);
        if (e == SIP_ERR_NONE && flags == SIPMSG_DATAGRAM)
            rewrite_and_reparse(buf, &m, (size >> 2) & 1);
    }
    /* a stream parse of any prefix never yields more than the whole */
    if (stream_ret > 0 && size > 1) {
        size_t k = (size_t)data[0] % size;
        char *copy = malloc(k ? k : 1);
        memcpy(copy, buf, k);
        int r = sipmsg_parse(copy, k, &m, hdrs, &lim, 0);
        CHECK(r == -2 || r == -1 || (r > 0 && (size_t)r <= k));
        if ((size_t)stream_ret > k)
            CHECK(r < 0); /* a shorter prefix of a message is not a message */
        free(copy);
    }
    return 0;
}
