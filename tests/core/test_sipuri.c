/* Tests for core/sipuri.c: URI, name-addr and Via parsing over slices. */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "core/sipuri.h"

TestSuite(sipuri);

/* Each input is copied into a heap block of exactly its size, so ASan
 * reports any read past the slice. */
static struct slice dup_slice(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n ? n : 1);
    cr_assert_not_null(p);
    memcpy(p, s, n);
    return slice_make(p, n);
}

static void free_slice(struct slice s)
{
    free((void *)s.ptr);
}

/* NULL in a table means "must be empty". */
static void expect_slice(const char *what, const char *input, struct slice got, const char *want)
{
    if (!want) want = "";
    cr_expect(got.len == strlen(want) && memcmp(got.ptr ? got.ptr : "", want, got.len) == 0,
              "%s: %s is \"%.*s\", want \"%s\"", input, what, (int)got.len, got.ptr ? got.ptr : "",
              want);
}

#define BAD(s)                                                                                     \
    {                                                                                              \
        .in = (s), .ret = -1                                                                       \
    }

/* ---- URIs -------------------------------------------------------------- */

struct uri_row {
    const char *in;
    int ret;
    uint8_t scheme, host_type, transport;
    const char *user, *password, *host, *host_raw;
    int port;
    const char *params, *headers;
    bool lr, ob;
    const char *maddr, *user_param, *opaque;
};

static const struct uri_row uris[] = {
    {.in = "sip:alice@atlanta.com",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "alice",
     NULL,
     "atlanta.com",
     "atlanta.com",
     0},
    {.in = "SIP:alice@Atlanta.COM",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "alice",
     NULL,
     "Atlanta.COM",
     "Atlanta.COM",
     0},
    {.in = "sips:alice@atlanta.com:5061;transport=tls",
     0,
     SIP_SCHEME_SIPS,
     SIP_HOST_NAME,
     SIP_TRANSPORT_TLS,
     "alice",
     NULL,
     "atlanta.com",
     "atlanta.com",
     5061,
     "transport=tls"},
    {.in = "sip:alice:secretword@atlanta.com;transport=tcp",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_TCP,
     "alice",
     "secretword",
     "atlanta.com",
     "atlanta.com",
     0,
     "transport=tcp"},
    {.in = "sip:+1-212-555-1212:1234@gateway.com;user=phone",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "+1-212-555-1212",
     "1234",
     "gateway.com",
     "gateway.com",
     0,
     "user=phone",
     .user_param = "phone"},
    {.in = "sip:alice@192.0.2.4",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV4,
     0,
     "alice",
     NULL,
     "192.0.2.4",
     "192.0.2.4",
     0},
    {.in = "sip:192.0.2.4:5080",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV4,
     0,
     NULL,
     NULL,
     "192.0.2.4",
     "192.0.2.4",
     5080},
    {.in = "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "atlanta.com",
     "atlanta.com",
     0,
     "method=REGISTER",
     "to=alice%40atlanta.com"},
    {.in = "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "alice",
     NULL,
     "atlanta.com",
     "atlanta.com",
     0,
     NULL,
     "subject=project%20x&priority=urgent"},
    /* RFC 4475 semiuri: ';' belongs to the user part, escapes kept */
    {.in = "sip:user;par=u%40example.net@example.com",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "user;par=u%40example.net",
     NULL,
     "example.com",
     "example.com",
     0},
    /* RFC 4475 esc01 */
    {.in = "sip:sips%3Auser%40example.com@example.net",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "sips%3Auser%40example.com",
     NULL,
     "example.net",
     "example.net",
     0},
    {.in = "sip:%61lice@atlanta.com;transport=%74cp",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_OTHER,
     "%61lice",
     NULL,
     "atlanta.com",
     "atlanta.com",
     0,
     "transport=%74cp"},
    {.in = "sip:null-%00-null@example.com",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "null-%00-null",
     NULL,
     "example.com",
     "example.com",
     0},
    /* IPv6 references (RFC 5118) */
    {.in = "sip:[2001:db8::10]",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     0,
     NULL,
     NULL,
     "2001:db8::10",
     "[2001:db8::10]",
     0},
    {.in = "sip:[2001:db8::10]:5070",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     0,
     NULL,
     NULL,
     "2001:db8::10",
     "[2001:db8::10]",
     5070},
    {.in = "sip:[2001:db8::10:5070]",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     0,
     NULL,
     NULL,
     "2001:db8::10:5070",
     "[2001:db8::10:5070]",
     0},
    {.in = "sip:user@[2001:db8::10]:5070;transport=udp",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     SIP_TRANSPORT_UDP,
     "user",
     NULL,
     "2001:db8::10",
     "[2001:db8::10]",
     5070,
     "transport=udp"},
    {.in = "sip:user@[::ffff:192.0.2.10]:5060",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     0,
     "user",
     NULL,
     "::ffff:192.0.2.10",
     "[::ffff:192.0.2.10]",
     5060},
    {.in = "sip:user@[2001:db8:::192.0.2.1]",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_IPV6,
     0,
     "user",
     NULL,
     "2001:db8:::192.0.2.1",
     "[2001:db8:::192.0.2.1]",
     0},
    /* ports */
    {.in = "sip:h.example.com:1",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "h.example.com",
     "h.example.com",
     1},
    {.in = "sip:h.example.com:65535",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "h.example.com",
     "h.example.com",
     65535},
    /* parameters */
    {.in = "sip:p1.example.com;lr",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "p1.example.com",
     "p1.example.com",
     0,
     "lr",
     .lr = true},
    {.in = "sip:p1.example.com;LR=on;ob",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "p1.example.com",
     "p1.example.com",
     0,
     "LR=on;ob",
     .lr = true,
     .ob = true},
    {.in = "sip:x@y.example.com;maddr=239.255.255.1;ttl=15;transport=UDP",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_UDP,
     "x",
     NULL,
     "y.example.com",
     "y.example.com",
     0,
     "maddr=239.255.255.1;ttl=15;transport=UDP",
     .maddr = "239.255.255.1"},
    {.in = "sip:x@y;transport=sctp",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_SCTP,
     "x",
     NULL,
     "y",
     "y",
     0,
     "transport=sctp"},
    {.in = "sip:x@y;transport=ws",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_WS,
     "x",
     NULL,
     "y",
     "y",
     0,
     "transport=ws"},
    {.in = "sip:x@y;transport=wss",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_WSS,
     "x",
     NULL,
     "y",
     "y",
     0,
     "transport=wss"},
    {.in = "sip:x@y;transport=quic",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     SIP_TRANSPORT_OTHER,
     "x",
     NULL,
     "y",
     "y",
     0,
     "transport=quic"},
    {.in = "sip:vivekg@chair-dnrc.example.com;unknownparam",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "vivekg",
     NULL,
     "chair-dnrc.example.com",
     "chair-dnrc.example.com",
     0,
     "unknownparam"},
    {.in = "sip:services.example.com;lr;unknownwith=value;unknown-no-value",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     NULL,
     NULL,
     "services.example.com",
     "services.example.com",
     0,
     "lr;unknownwith=value;unknown-no-value",
     .lr = true},
    {.in = "sip:user@host.example.com?Route=%3Csip:sip.example.com%3E",
     0,
     SIP_SCHEME_SIP,
     SIP_HOST_NAME,
     0,
     "user",
     NULL,
     "host.example.com",
     "host.example.com",
     0,
     NULL,
     "Route=%3Csip:sip.example.com%3E"},
    /* tel and other schemes */
    {.in = "tel:+358-555-1234567;postd=pp22",
     0,
     SIP_SCHEME_TEL,
     0,
     0,
     NULL,
     NULL,
     NULL,
     NULL,
     0,
     "postd=pp22",
     .opaque = "+358-555-1234567;postd=pp22"},
    {.in = "TEL:+1-201-555-0123", 0, SIP_SCHEME_TEL, 0, 0, .opaque = "+1-201-555-0123"},
    {.in = "mailto:alice@example.com", 0, SIP_SCHEME_OTHER, .opaque = "alice@example.com"},
    {.in = "isbn:2983792873", 0, SIP_SCHEME_OTHER, .opaque = "2983792873"},
    {.in = "http://www.example.com", 0, SIP_SCHEME_OTHER, .opaque = "//www.example.com"},
    {.in = "soap.beep://192.0.2.103:3002", 0, SIP_SCHEME_OTHER, .opaque = "//192.0.2.103:3002"},
    {.in = "urn:service:sos", 0, SIP_SCHEME_OTHER, .opaque = "service:sos"},
    /* invalid */
    BAD(""),
    BAD("sip"),
    BAD("sip:"),
    BAD(":alice@atlanta.com"),
    BAD("1sip:alice@atlanta.com"),
    BAD("si p:alice@atlanta.com"),
    BAD("<sip:alice@atlanta.com>"),
    BAD("sip:@atlanta.com"),
    BAD("sip:alice@"),
    BAD("sip:alice@atlanta.com;"),
    BAD("sip:alice@atlanta.com;=x"),
    BAD("sip:alice@atlanta.com;transport="),
    BAD("sip:alice@atlanta.com?"),
    BAD("sip:alice@atlanta.com;lr x"),
    BAD("sip:al ice@atlanta.com"),
    BAD("sip:alice@atl anta.com"),
    BAD("sip:alice@atlanta.com "),
    BAD("sip:%4@atlanta.com"),
    BAD("sip:%zz@atlanta.com"),
    BAD("sip:alice%@atlanta.com"),
    BAD("sip:alice@-atlanta.com"),
    BAD("sip:alice@.atlanta.com"),
    BAD("sip:alice@b@atlanta.com"),
    BAD("sip:alice:pa@ss@atlanta.com"),
    BAD("sip:alice@atlanta.com:"),
    BAD("sip:alice@atlanta.com:65536"),
    BAD("sip:alice@atlanta.com:123456"),
    BAD("sip:alice@atlanta.com:5060x"),
    BAD("sip:alice@atlanta.com:-1"),
    BAD("sip:alice@atlanta.com:99999999999999999999"),
    BAD("sip:2001:db8::10"),
    BAD("sip:[2001:db8::10"),
    BAD("sip:[2001:db8::10]:"),
    BAD("sip:[2001:db8::10]x"),
    BAD("sip:[2001:db8::10]:70000"),
    BAD("sip:[192.0.2.1]"),
    BAD("sip:[]"),
    BAD("sip:[example.com]"),
    BAD("tel:"),
    BAD("mailto:a b@example.com"),
    BAD("http://x/<y>"),
    BAD("urn:a\"b"),
};

Test(sipuri, uri_table)
{
    for (size_t i = 0; i < sizeof uris / sizeof uris[0]; i++) {
        const struct uri_row *r = &uris[i];
        struct slice in = dup_slice(r->in);
        struct sip_uri u;
        int ret = sipuri_parse(in, &u);
        cr_expect_eq(ret, r->ret, "%s: returned %d, want %d", r->in, ret, r->ret);
        if (ret == 0 && r->ret == 0) {
            cr_expect_eq(u.scheme, r->scheme, "%s: scheme", r->in);
            if (r->scheme == SIP_SCHEME_SIP || r->scheme == SIP_SCHEME_SIPS) {
                cr_expect_eq(u.host_type, r->host_type, "%s: host type", r->in);
                cr_expect_eq(u.port, r->port, "%s: port %d, want %d", r->in, u.port, r->port);
                expect_slice("user", r->in, u.user, r->user);
                expect_slice("password", r->in, u.password, r->password);
                expect_slice("host", r->in, u.host, r->host);
                expect_slice("host_raw", r->in, u.host_raw, r->host_raw);
                expect_slice("headers", r->in, u.headers, r->headers);
                cr_expect_eq(u.transport, r->transport, "%s: transport", r->in);
                cr_expect_eq(u.lr, r->lr, "%s: lr", r->in);
                cr_expect_eq(u.ob, r->ob, "%s: ob", r->in);
                expect_slice("maddr", r->in, u.maddr, r->maddr);
                expect_slice("user_param", r->in, u.user_param, r->user_param);
                cr_expect_eq(u.opaque.len, 0, "%s: opaque", r->in);
            } else {
                expect_slice("opaque", r->in, u.opaque, r->opaque);
            }
            expect_slice("params", r->in, u.params, r->params);
        }
        free_slice(in);
    }
}

Test(sipuri, uri_slices_point_into_input)
{
    struct slice in = dup_slice("sips:bob:pw@[2001:db8::1]:5061;transport=tcp;lr?h=v");
    struct sip_uri u;
    cr_assert_eq(sipuri_parse(in, &u), 0);
    cr_assert(u.scheme_name.ptr == in.ptr && u.scheme_name.len == 4);
    cr_assert(u.user.ptr == in.ptr + 5);
    cr_assert(u.host_raw.ptr + u.host_raw.len <= in.ptr + in.len);
    cr_assert(u.headers.ptr + u.headers.len == in.ptr + in.len);
    expect_slice("transport_name", "sips", u.transport_name, "tcp");
    free_slice(in);
}

Test(sipuri, ip_literals)
{
    static const struct {
        const char *h;
        bool v4, v6;
    } t[] = {
        {"192.0.2.1", true, false},
        {"0.0.0.0", true, false},
        {"255.255.255.255", true, false},
        {"256.0.0.1", false, false},
        {"1.2.3", false, false},
        {"1.2.3.4.5", false, false},
        {"1..3.4", false, false},
        {"1.2.3.4.", false, false},
        {"1234.1.1.1", false, false},
        {"", false, false},
        {"a.b.c.d", false, false},
        {"::1", false, true},
        {"::", false, true},
        {"2001:db8::10", false, true},
        {"::ffff:192.0.2.10", false, true},
        {"1:2", false, false},
        {"2001:db8::g", false, false},
        {"[::1]", false, false},
        {"example.com", false, false},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct slice s = dup_slice(t[i].h);
        cr_expect_eq(sipuri_is_ipv4(s), t[i].v4, "ipv4 %s", t[i].h);
        cr_expect_eq(sipuri_is_ipv6(s), t[i].v6, "ipv6 %s", t[i].h);
        free_slice(s);
    }
}

Test(sipuri, transports)
{
    static const struct {
        const char *n;
        enum sip_transport t;
        const char *s;
    } t[] = {
        {"udp", SIP_TRANSPORT_UDP, "UDP"},      {"TCP", SIP_TRANSPORT_TCP, "TCP"},
        {"Tls", SIP_TRANSPORT_TLS, "TLS"},      {"SCTP", SIP_TRANSPORT_SCTP, "SCTP"},
        {"ws", SIP_TRANSPORT_WS, "WS"},         {"WSS", SIP_TRANSPORT_WSS, "WSS"},
        {"UNKNOWN", SIP_TRANSPORT_OTHER, NULL}, {"", SIP_TRANSPORT_NONE, NULL},
        {"udpx", SIP_TRANSPORT_OTHER, NULL},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        enum sip_transport id = sipuri_transport_id(slice_make(t[i].n, strlen(t[i].n)));
        cr_expect_eq(id, t[i].t, "%s", t[i].n);
        if (t[i].s) cr_expect_str_eq(sipuri_transport_str(id), t[i].s);
    }
}

/* The lower-case names come from the same table; unnamed ids read as UDP. */
Test(sipuri, transport_names)
{
    static const struct {
        enum sip_transport t;
        const char *upper, *lower;
    } t[] = {
        {SIP_TRANSPORT_UDP, "UDP", "udp"},       {SIP_TRANSPORT_TCP, "TCP", "tcp"},
        {SIP_TRANSPORT_TLS, "TLS", "tls"},       {SIP_TRANSPORT_SCTP, "SCTP", "sctp"},
        {SIP_TRANSPORT_WS, "WS", "ws"},          {SIP_TRANSPORT_WSS, "WSS", "wss"},
        {SIP_TRANSPORT_NONE, "UDP", "udp"},      {SIP_TRANSPORT_OTHER, "UDP", "udp"},
        {(enum sip_transport)200, "UDP", "udp"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        cr_expect_str_eq(sipuri_transport_str(t[i].t), t[i].upper, "%d", (int)t[i].t);
        cr_expect_str_eq(sipuri_transport_name(t[i].t), t[i].lower, "%d", (int)t[i].t);
    }
}

/* ---- generic parameters -------------------------------------------------- */

Test(sipuri, param_lookup)
{
    struct slice p = dup_slice("transport=tcp;lr;maddr=192.0.2.1;X-Q=\"a;b=c\";q = 0.5 ; rport");
    struct slice v;
    cr_assert(sipuri_param(p, SLICE_LIT("transport"), &v));
    expect_slice("transport", "params", v, "tcp");
    cr_assert(sipuri_param(p, SLICE_LIT("LR"), &v));
    cr_assert_eq(v.len, 0);
    cr_assert(sipuri_param(p, SLICE_LIT("maddr"), &v));
    expect_slice("maddr", "params", v, "192.0.2.1");
    cr_assert(sipuri_param(p, SLICE_LIT("x-q"), &v));
    expect_slice("x-q", "params", v, "\"a;b=c\"");
    cr_assert(sipuri_param(p, SLICE_LIT("q"), &v));
    expect_slice("q", "params", v, "0.5");
    cr_assert(sipuri_param(p, SLICE_LIT("rport"), &v));
    cr_assert_eq(v.len, 0);
    cr_assert_not(sipuri_param(p, SLICE_LIT("b"), &v)); /* inside the quotes */
    cr_assert_not(sipuri_param(p, SLICE_LIT("ttl"), &v));
    cr_assert_not(sipuri_param(p, SLICE_LIT("l"), &v));
    cr_assert_not(sipuri_param(p, SLICE_LIT("transpor"), &v));
    cr_assert_not(sipuri_param(SLICE_NULL, SLICE_LIT("lr"), &v));
    free_slice(p);
}

/* ---- name-addr / addr-spec ----------------------------------------------- */

struct addr_row {
    const char *in;
    int ret;
    const char *display, *uri_text, *params, *tag, *expires, *q;
    bool star, bracketed;
    const char *uri_params; /* params of the URI itself */
};

static const struct addr_row addrs[] = {
    {.in = "\"Alice\" <sip:alice@atlanta.com>;tag=1928301774",
     0,
     "\"Alice\"",
     "sip:alice@atlanta.com",
     "tag=1928301774",
     "1928301774",
     .bracketed = true},
    {.in = "Bob <sip:bob@biloxi.com>", 0, "Bob", "sip:bob@biloxi.com", .bracketed = true},
    {.in = "Mr. Watson <sip:watson@bell-telephone.com> ;q=0.7; expires=3600",
     0,
     "Mr. Watson",
     "sip:watson@bell-telephone.com",
     "q=0.7; expires=3600",
     NULL,
     "3600",
     "0.7",
     .bracketed = true},
    {.in = "caller<sip:caller@example.com>;tag=323",
     0,
     "caller",
     "sip:caller@example.com",
     "tag=323",
     "323",
     .bracketed = true},
    {.in = "<sip:alice@atlanta.com>", 0, NULL, "sip:alice@atlanta.com", .bracketed = true},
    {.in = "  <sip:alice@atlanta.com>  ", 0, NULL, "sip:alice@atlanta.com", .bracketed = true},
    {.in = "\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
     0,
     "\"J Rosenberg \\\\\\\"\"",
     "sip:jdrosen@example.com",
     "\r\n  tag = 98asjd8",
     "98asjd8",
     .bracketed = true},
    {.in =
         "\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n"
         "  secondparam ; q = 0.33",
     0,
     "\"Quoted string \\\"\\\"\"",
     "sip:jdrosen@example.com",
     " newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33",
     NULL,
     NULL,
     "0.33",
     .bracketed = true},
    {.in = "\"a \\\"b\\\" <c>, d\" <sip:x@example.com>",
     0,
     "\"a \\\"b\\\" <c>, d\"",
     "sip:x@example.com",
     .bracketed = true},
    {.in = "\"\" <sip:x@example.com>", 0, "\"\"", "sip:x@example.com", .bracketed = true},
    {.in = "\"%Z%45\" <sip:resource@example.com>",
     0,
     "\"%Z%45\"",
     "sip:resource@example.com",
     .bracketed = true},
    /* addr-spec: params after the URI are header params (RFC 4475 cparam01) */
    {.in = "sip:user@example.com;tag=abc", 0, NULL, "sip:user@example.com", "tag=abc", "abc"},
    {.in = "sip:+19725552222@gw1.example.net;unknownparam",
     0,
     NULL,
     "sip:+19725552222@gw1.example.net",
     "unknownparam"},
    {.in = "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
     0,
     NULL,
     "sip:vivekg@chair-dnrc.example.com",
     "   tag    = 1918181833n",
     "1918181833n"},
    {.in = "sip:j.user@example.com", 0, NULL, "sip:j.user@example.com"},
    /* name-addr: params inside <> belong to the URI (cparam02) */
    {.in = "<sip:+19725552222@gw1.example.net;unknownparam>",
     0,
     NULL,
     "sip:+19725552222@gw1.example.net;unknownparam",
     .bracketed = true,
     .uri_params = "unknownparam"},
    {.in = "<sip:user@host.example.com?Route=%3csip:sip.example.com%3e>",
     0,
     NULL,
     "sip:user@host.example.com?Route=%3csip:sip.example.com%3e",
     .bracketed = true},
    {.in = "<sip:a@example.com>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";"
           "reg-id=1",
     0,
     NULL,
     "sip:a@example.com",
     "+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1",
     .bracketed = true},
    {.in = "<sip:[2001:db8::1]:5070>;received=[2001:db8::9]",
     0,
     NULL,
     "sip:[2001:db8::1]:5070",
     "received=[2001:db8::9]",
     .bracketed = true},
    {.in = "<isbn:2983792873>", 0, NULL, "isbn:2983792873", .bracketed = true},
    {.in = "http://www.example.com", 0, NULL, "http://www.example.com"},
    {.in = "*", 0, .star = true},
    {.in = "  *  ", 0, .star = true},
    /* invalid */
    BAD(""),
    BAD("\"Bob <sip:bob@example.com>;tag=1"),                    /* quotbal */
    BAD("Bell, Alexander <sip:a.g.bell@bell-tel.com>"),          /* baddn */
    BAD("< sip:user@example.com >"),                             /* badaspec */
    BAD("sip:user@example.com?Route=%3Csip:sip.example.com%3E"), /* regbadct */
    BAD("<sip:a@example.com"),
    BAD("<sip:a@example.com>;"),
    BAD("<sip:a@example.com>;tag="),
    BAD("<sip:a@example.com>;tag=\"x"),
    BAD("<sip:a@example.com> junk"),
    BAD("<sip:a@example.com>, <sip:b@example.com>"),
    BAD("\"a\" sip:a@example.com"),
    BAD("\"a\""),
    BAD("<>"),
    BAD("<not a uri>"),
    BAD("sip:a,b@example.com"),
    BAD("**"),
};

Test(sipuri, addr_table)
{
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        const struct addr_row *r = &addrs[i];
        struct slice in = dup_slice(r->in);
        struct sip_addr a;
        int ret = sipuri_parse_addr(in, &a);
        cr_expect_eq(ret, r->ret, "%s: returned %d, want %d", r->in, ret, r->ret);
        if (ret == 0 && r->ret == 0) {
            cr_expect_eq(a.star, r->star, "%s: star", r->in);
            if (!r->star) {
                expect_slice("display", r->in, a.display, r->display);
                expect_slice("uri_text", r->in, a.uri_text, r->uri_text);
                expect_slice("params", r->in, a.params, r->params);
                expect_slice("tag", r->in, a.tag, r->tag);
                expect_slice("expires", r->in, a.expires, r->expires);
                expect_slice("q", r->in, a.q, r->q);
                expect_slice("uri.params", r->in, a.uri.params, r->uri_params);
                cr_expect_eq(a.bracketed, r->bracketed, "%s: bracketed", r->in);
            }
        }
        free_slice(in);
    }
}

/* ---- Via ----------------------------------------------------------------- */

struct via_row {
    const char *in;
    int ret;
    uint8_t transport;
    const char *transport_name, *host, *host_raw;
    int port;
    const char *branch, *received;
    bool has_rport;
    const char *rport, *maddr, *ttl, *params;
};

static const struct via_row vias[] = {
    {.in = "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "pc33.atlanta.com",
     "pc33.atlanta.com",
     0,
     "z9hG4bK776asdhds",
     .params = "branch=z9hG4bK776asdhds"},
    {.in = "SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101",
     0,
     SIP_TRANSPORT_TCP,
     "TCP",
     "client.atlanta.example.com",
     "client.atlanta.example.com",
     5060,
     "z9hG4bK74bf9",
     "192.0.2.101",
     .params = "branch=z9hG4bK74bf9;received=192.0.2.101"},
    {.in = "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1",
     0,
     SIP_TRANSPORT_TLS,
     "TLS",
     "192.0.2.1",
     "192.0.2.1",
     5061,
     "z9hG4bK1",
     .params = "branch=z9hG4bK1"},
    {.in = "SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf",
     0,
     SIP_TRANSPORT_SCTP,
     "SCTP",
     "t2.example.com",
     "t2.example.com",
     0,
     "z9hG4bKklasjdhf",
     .params = "branch=z9hG4bKklasjdhf"},
    {.in = "SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks",
     0,
     SIP_TRANSPORT_WSS,
     "WSS",
     "df7jal23ls0d.invalid",
     "df7jal23ls0d.invalid",
     0,
     "z9hG4bK56sdasks",
     .params = "branch=z9hG4bK56sdasks"},
    {.in = "SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en",
     0,
     SIP_TRANSPORT_OTHER,
     "UNKNOWN",
     "t4.example.com",
     "t4.example.com",
     0,
     "z9hG4bKasd0f3en",
     .params = "branch=z9hG4bKasd0f3en"},
    {.in = "sip/2.0/udp h", 0, SIP_TRANSPORT_UDP, "udp", "h", "h", 0},
    /* IPv6 sent-by and received (RFC 5118 §4.5) */
    {.in = "SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "2001:db8::9:1",
     "[2001:db8::9:1]",
     5070,
     "z9hG4bKas3-111",
     .params = "branch=z9hG4bKas3-111"},
    {.in = "SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "2001:db8::9:1",
     "[2001:db8::9:1]",
     0,
     "z9hG4bKas3-111",
     "[2001:db8::9:255]",
     .params = "branch=z9hG4bKas3-111;received=[2001:db8::9:255]"},
    {.in = "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "2001:db8::9:1",
     "[2001:db8::9:1]",
     0,
     "z9hG4bKas3",
     "2001:db8::9:255",
     .params = "received=2001:db8::9:255;branch=z9hG4bKas3"},
    {.in = "SIP/2.0/UDP [::ffff:192.0.2.10]:19823;branch=z9hG4bKbh19",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "::ffff:192.0.2.10",
     "[::ffff:192.0.2.10]",
     19823,
     "z9hG4bKbh19",
     .params = "branch=z9hG4bKbh19"},
    /* rport bare and valued (RFC 3581) */
    {.in = "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKx",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "10.0.0.1",
     "10.0.0.1",
     5060,
     "z9hG4bKx",
     .has_rport = true,
     .rport = "",
     .params = "rport;branch=z9hG4bKx"},
    {.in = "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;rport",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "10.0.0.1",
     "10.0.0.1",
     0,
     "z9hG4bKx",
     .has_rport = true,
     .rport = "",
     .params = "branch=z9hG4bKx;rport"},
    {.in = "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx;received=192.0.2.1;rport=61234",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "10.0.0.1",
     "10.0.0.1",
     0,
     "z9hG4bKx",
     "192.0.2.1",
     true,
     "61234",
     .params = "branch=z9hG4bKx;received=192.0.2.1;rport=61234"},
    {.in = "SIP/2.0/UDP h;branch=z9hG4bKx;maddr=239.1.1.1;ttl=16",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "h",
     "h",
     0,
     "z9hG4bKx",
     .maddr = "239.1.1.1",
     .ttl = "16",
     .params = "branch=z9hG4bKx;maddr=239.1.1.1;ttl=16"},
    {.in = "SIP/2.0/UDP h;branch",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "h",
     "h",
     0,
     "",
     .params = "branch"},
    /* LWS and folding everywhere (RFC 4475 wsinv) */
    {.in = "SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "192.0.2.2",
     "192.0.2.2",
     0,
     "390skdjuw",
     .params = "branch=390skdjuw"},
    {.in = "SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
     0,
     SIP_TRANSPORT_TCP,
     "TCP",
     "spindle.example.com",
     "spindle.example.com",
     0,
     "z9hG4bK9ikj8",
     .params = "\r\n  branch  =   z9hG4bK9ikj8"},
    {.in = "SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "192.168.255.111",
     "192.168.255.111",
     0,
     "z9hG4bK30239",
     .params = " branch=\r\n z9hG4bK30239"},
    {.in = "SIP/2.0/UDP host.example.com : 5070 ;branch=z9hG4bK1",
     0,
     SIP_TRANSPORT_UDP,
     "UDP",
     "host.example.com",
     "host.example.com",
     5070,
     "z9hG4bK1",
     .params = "branch=z9hG4bK1"},
    {.in = "SIP/2.0/UDP\t h ", 0, SIP_TRANSPORT_UDP, "UDP", "h", "h", 0},
    /* invalid */
    BAD(""),
    BAD("SIP/2.0"),
    BAD("SIP/2.0/UDP"),
    BAD("SIP/2.0/UDP "),
    BAD("SIP/2.0/UDPhost"),
    BAD("SIP/2.0UDP host"),
    BAD("SIP/3.0/UDP host"),
    BAD("SIP/2.0/ host"),
    BAD("HTTP/2.0/UDP host"),
    BAD("SIP/2.0/UDP 192.0.2.15;;,;,,"), /* badinv01 */
    BAD("SIP/2.0/UDP host;"),
    BAD("SIP/2.0/UDP host;branch="),
    BAD("SIP/2.0/UDP host;branch=a b"),
    BAD("SIP/2.0/UDP host;rport="),
    BAD("SIP/2.0/UDP host:"),
    BAD("SIP/2.0/UDP host:65536"),
    BAD("SIP/2.0/UDP host:5060x"),
    BAD("SIP/2.0/UDP host junk"),
    BAD("SIP/2.0/UDP host, SIP/2.0/UDP other"),
    BAD("SIP/2.0/UDP 2001:db8::9:1;branch=z9hG4bK1"),
    BAD("SIP/2.0/UDP [2001:db8::9:1;branch=z9hG4bK1"),
    BAD("SIP/2.0/UDP h;received=host.example.com"),
    BAD("SIP/2.0/UDP h;received=[]"),
    BAD("SIP/2.0/UDP h;received=[192.0.2.1"),
    BAD("SIP/2.0/UDP h;received=256.1.1.1"),
};

Test(sipuri, via_table)
{
    for (size_t i = 0; i < sizeof vias / sizeof vias[0]; i++) {
        const struct via_row *r = &vias[i];
        struct slice in = dup_slice(r->in);
        struct sip_via v;
        int ret = sipuri_parse_via(in, &v);
        cr_expect_eq(ret, r->ret, "%s: returned %d, want %d", r->in, ret, r->ret);
        if (ret == 0 && r->ret == 0) {
            cr_expect_eq(v.transport, r->transport, "%s: transport", r->in);
            expect_slice("transport_name", r->in, v.transport_name, r->transport_name);
            expect_slice("host", r->in, v.host, r->host);
            expect_slice("host_raw", r->in, v.host_raw, r->host_raw);
            cr_expect_eq(v.port, r->port, "%s: port %d, want %d", r->in, v.port, r->port);
            expect_slice("branch", r->in, v.branch, r->branch);
            expect_slice("received", r->in, v.received, r->received);
            cr_expect_eq(v.has_rport, r->has_rport, "%s: has_rport", r->in);
            expect_slice("rport", r->in, v.rport, r->rport);
            expect_slice("maddr", r->in, v.maddr, r->maddr);
            expect_slice("ttl", r->in, v.ttl, r->ttl);
            expect_slice("params", r->in, v.params, r->params);
        }
        free_slice(in);
    }
}

/* A bare rport points just past its name, where a rewriter inserts "=port". */
Test(sipuri, bare_rport_position)
{
    struct slice in = dup_slice("SIP/2.0/UDP 10.0.0.1;rport;branch=z9hG4bKx");
    struct sip_via v;
    cr_assert_eq(sipuri_parse_via(in, &v), 0);
    cr_assert(v.has_rport);
    cr_assert(v.rport.ptr == in.ptr + sizeof("SIP/2.0/UDP 10.0.0.1;rport") - 1);
    free_slice(in);
}
