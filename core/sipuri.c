/* SIP/SIPS/tel URI, name-addr and Via parsers over slices. */
#include "core/sipuri.h"

#include <errno.h>

#include "core/netaddr.h"

/* character classes, RFC 3261 §25.1 */
enum {
    C_USER = 0x01,  /* unreserved / user-unreserved */
    C_PASS = 0x02,  /* unreserved / & = + $ , */
    C_PARAM = 0x04, /* unreserved / param-unreserved */
    C_HDR = 0x08,   /* unreserved / hnv-unreserved */
    C_HOST = 0x10,  /* alphanum - . */
    C_TOKEN = 0x20, /* RFC 3261 token */
    C_HEX = 0x40,
    C_SCHEME = 0x80, /* alphanum + - . */
};

static uint8_t ctab[256];

__attribute__((constructor)) static void sipuri_init_tables(void)
{
    static const char unreserved_marks[] = "-_.!~*'()";
    for (int c = 0; c < 256; c++) {
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        uint8_t v = 0;
        if (alnum) v |= C_USER | C_PASS | C_PARAM | C_HDR | C_HOST | C_TOKEN | C_SCHEME;
        if (c && memchr(unreserved_marks, c, sizeof unreserved_marks - 1))
            v |= C_USER | C_PASS | C_PARAM | C_HDR;
        if (c && memchr("&=+$,;?/", c, 8)) v |= C_USER;
        if (c && memchr("&=+$,", c, 5)) v |= C_PASS;
        if (c && memchr("[]/:&+$", c, 7)) v |= C_PARAM;
        if (c && memchr("[]/?:+$", c, 7)) v |= C_HDR;
        if (c == '-' || c == '.') v |= C_HOST | C_SCHEME;
        if (c == '+') v |= C_SCHEME;
        if (c && memchr("-.!%*_+`'~", c, 10)) v |= C_TOKEN;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) v |= C_HEX;
        ctab[c] = v;
    }
}

/* Zeroes a small struct through libc's memset: inline "rep stos", which
 * GCC picks for these sizes, costs ~35 cycles to start on current x86. */
static inline void zero(void *p, size_t n)
{
    __asm__("" : "+r"(n)); /* hide the constant size from the compiler */
    memset(p, 0, n);
}

static inline bool is_c(char c, uint8_t cls)
{
    return ctab[(unsigned char)c] & cls;
}

/* Case-insensitive comparison with a lower-case literal made of letters
 * only. (c | 0x20) folds exactly there: the only bytes that fold onto a
 * lower-case letter are that letter and its upper-case form. */
static inline bool alpha_case_eq(struct slice s, const char *lower, size_t n)
{
    if (s.len != n) return false;
    for (size_t i = 0; i < n; i++)
        if ((s.ptr[i] | 0x20) != lower[i]) return false;
    return true;
}
#define ALPHA_EQ(s, lit) alpha_case_eq((s), (lit), sizeof(lit) - 1)
static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* Scans chars of class cls or %HH escapes. Returns the stop position, or NULL
 * on a broken escape. */
static const char *scan_class(const char *p, const char *e, uint8_t cls)
{
    for (;;) {
        while (p < e && is_c(*p, cls) && *p != '%')
            p++;
        if (p == e || *p != '%') return p;
        if (e - p < 3 || !is_c(p[1], C_HEX) || !is_c(p[2], C_HEX)) return NULL;
        p += 3;
    }
}

static inline const char *skip_lws(const char *p, const char *e)
{
    for (;;) {
        while (p < e && is_ws(*p))
            p++;
        if (e - p >= 3 && p[0] == '\r' && p[1] == '\n' && is_ws(p[2]))
            p += 3;
        else if (e - p >= 2 && p[0] == '\n' && is_ws(p[1]))
            p += 2;
        else
            return p;
    }
}

bool sipuri_is_ipv4(struct slice h)
{
    if (h.len < 7 || h.len > 15) /* "0.0.0.0" .. "255.255.255.255" */
        return false;
    const char *p = h.ptr, *e = h.ptr + h.len;
    for (int part = 0; part < 4; part++) {
        if (part && (p == e || *p++ != '.')) return false;
        const char *d = p;
        unsigned val = 0;
        while (p < e && p - d < 3 && *p >= '0' && *p <= '9')
            val = val * 10 + (unsigned)(*p++ - '0');
        if (p == d || val > 255) return false;
    }
    return p == e;
}

/* Liberal on purpose (RFC 5118 §4.10): hex digits, colons and an embedded
 * dotted quad; at least two colons. */
bool sipuri_is_ipv6(struct slice h)
{
    unsigned colons = 0;
    if (h.len < 2 || h.len > 45) return false;
    for (size_t i = 0; i < h.len; i++) {
        char c = h.ptr[i];
        if (c == ':')
            colons++;
        else if (!is_c(c, C_HEX) && c != '.')
            return false;
    }
    return colons >= 2;
}

enum sip_transport sipuri_transport_id(struct slice n)
{
    switch (n.len) {
    case 0:
        return SIP_TRANSPORT_NONE;
    case 2:
        if (ALPHA_EQ(n, "ws")) return SIP_TRANSPORT_WS;
        break;
    case 3:
        if (ALPHA_EQ(n, "udp")) return SIP_TRANSPORT_UDP;
        if (ALPHA_EQ(n, "tcp")) return SIP_TRANSPORT_TCP;
        if (ALPHA_EQ(n, "tls")) return SIP_TRANSPORT_TLS;
        if (ALPHA_EQ(n, "wss")) return SIP_TRANSPORT_WSS;
        break;
    case 4:
        if (ALPHA_EQ(n, "sctp")) return SIP_TRANSPORT_SCTP;
        break;
    }
    return SIP_TRANSPORT_OTHER;
}

/* The one table of transport names, upper case (Via) and lower case
 * (URI parameter, logs); anything without a name reads as UDP. */
static const char *const transport_names[][2] = {
    [SIP_TRANSPORT_UDP] = {"UDP", "udp"}, [SIP_TRANSPORT_TCP] = {"TCP", "tcp"},
    [SIP_TRANSPORT_TLS] = {"TLS", "tls"}, [SIP_TRANSPORT_SCTP] = {"SCTP", "sctp"},
    [SIP_TRANSPORT_WS] = {"WS", "ws"},    [SIP_TRANSPORT_WSS] = {"WSS", "wss"},
};

static const char *const *transport_name_pair(enum sip_transport t)
{
    if ((unsigned)t >= sizeof(transport_names) / sizeof(transport_names[0]) ||
        !transport_names[t][0])
        t = SIP_TRANSPORT_UDP;
    return transport_names[t];
}

const char *sipuri_transport_str(enum sip_transport t)
{
    return transport_name_pair(t)[0];
}

const char *sipuri_transport_name(enum sip_transport t)
{
    return transport_name_pair(t)[1];
}

/* host [":" port]; IPv6 references in brackets. Returns the end, or NULL. */
static const char *parse_hostport(const char *p, const char *e, struct slice *host,
                                  struct slice *raw, int *port, uint8_t *type, bool lws_ok)
{
    const char *hs = p;
    if (p < e && *p == '[') {
        const char *rb = memchr(p, ']', (size_t)(e - p));
        if (!rb) return NULL;
        *host = slice_make(p + 1, (size_t)(rb - p - 1));
        if (!sipuri_is_ipv6(*host)) return NULL;
        *type = SIP_HOST_IPV6;
        p = rb + 1;
    } else {
        while (p < e && is_c(*p, C_HOST))
            p++;
        if (p == hs) return NULL;
        *host = slice_make(hs, (size_t)(p - hs));
        /* only a name that starts with a digit can be a dotted quad */
        *type = (*hs >= '0' && *hs <= '9' && sipuri_is_ipv4(*host)) ? SIP_HOST_IPV4 : SIP_HOST_NAME;
        /* a hostname label starts with an alphanumeric */
        if (*type == SIP_HOST_NAME && (hs[0] == '-' || hs[0] == '.')) return NULL;
    }
    *raw = slice_make(hs, (size_t)(p - hs));
    *port = 0;
    const char *q = lws_ok ? skip_lws(p, e) : p;
    if (q < e && *q == ':') {
        q = lws_ok ? skip_lws(q + 1, e) : q + 1;
        unsigned v = 0, n = 0;
        while (q < e && *q >= '0' && *q <= '9' && n < 6)
            v = v * 10 + (unsigned)(*q++ - '0'), n++;
        if (n == 0 || n > 5 || v > 65535) return NULL;
        *port = (int)v;
        return q;
    }
    return p;
}

bool sipuri_param(struct slice params, struct slice name, struct slice *val)
{
    if (params.len == 0) return false; /* also SLICE_NULL (absent params): NULL + 0 is undefined */
    const char *p = params.ptr, *e = params.ptr + params.len;
    while (p < e) {
        const char *ps = skip_lws(p, e);
        const char *pe = ps;
        bool quoted = false;
        while (pe < e && (quoted || *pe != ';')) {
            if (*pe == '"')
                quoted = !quoted;
            else if (quoted && *pe == '\\' && pe + 1 < e)
                pe++;
            pe++;
        }
        const char *ne = ps;
        while (ne < pe && *ne != '=' && !is_ws(*ne) && *ne != '\r')
            ne++;
        if (slice_case_eq(slice_make(ps, (size_t)(ne - ps)), name)) {
            const char *v = skip_lws(ne, pe);
            if (v < pe && *v == '=') {
                v = skip_lws(v + 1, pe);
                const char *ve = pe;
                while (ve > v && (is_ws(ve[-1]) || ve[-1] == '\r' || ve[-1] == '\n'))
                    ve--;
                *val = slice_make(v, (size_t)(ve - v));
            } else {
                *val = slice_make(ne, 0);
            }
            return true;
        }
        p = pe < e ? pe + 1 : pe;
    }
    return false;
}

/* uri-parameters: *( ";" pname [ "=" pvalue ] ), stops at '?' or the end. */
static const char *parse_uri_params(const char *p, const char *e, struct sip_uri *u)
{
    const char *start = p;
    while (p < e && *p == ';') {
        const char *ns = p + 1;
        const char *ne = scan_class(ns, e, C_PARAM);
        if (!ne || ne == ns) return NULL;
        struct slice name = slice_make(ns, (size_t)(ne - ns)), val = SLICE_NULL;
        p = ne;
        if (p < e && *p == '=') {
            const char *vs = p + 1;
            const char *ve = scan_class(vs, e, C_PARAM);
            if (!ve || ve == vs) return NULL;
            val = slice_make(vs, (size_t)(ve - vs));
            p = ve;
        }
        if (ALPHA_EQ(name, "transport")) {
            u->transport_name = val;
            u->transport = (uint8_t)sipuri_transport_id(val);
        } else if (ALPHA_EQ(name, "lr")) {
            u->lr = true;
        } else if (ALPHA_EQ(name, "ob")) {
            u->ob = true;
        } else if (ALPHA_EQ(name, "maddr")) {
            u->maddr = val;
        } else if (ALPHA_EQ(name, "user")) {
            u->user_param = val;
        }
    }
    if (p > start) u->params = slice_make(start + 1, (size_t)(p - start - 1));
    return p;
}

static int parse_sip(const char *p, const char *e, struct sip_uri *u)
{
    /* One pass over the user characters settles the common cases: it stops
     * at the '@' of "user@host", or runs to the end of a URI with no '@'
     * ('@' is not a user character). Anything else takes the general path. */
    const char *q = scan_class(p, e, C_USER);
    if (q && q == e) {
        /* no userinfo */
    } else if (q && *q == '@') {
        if (q == p) return -1;
        u->user = slice_make(p, (size_t)(q - p));
        p = q + 1;
    } else if ((q = memchr(p, '@', (size_t)(e - p))) != NULL) {
        const char *at = q;
        const char *colon = memchr(p, ':', (size_t)(at - p));
        const char *ue = colon ? colon : at;
        if (scan_class(p, ue, C_USER) != ue || ue == p) return -1;
        u->user = slice_make(p, (size_t)(ue - p));
        if (colon) {
            if (scan_class(colon + 1, at, C_PASS) != at) return -1;
            u->password = slice_make(colon + 1, (size_t)(at - colon - 1));
        }
        p = at + 1;
    }
    p = parse_hostport(p, e, &u->host, &u->host_raw, &u->port, &u->host_type, false);
    if (!p) return -1;
    p = parse_uri_params(p, e, u);
    if (!p) return -1;
    if (p < e && *p == '?') {
        const char *hs = p + 1, *he = hs;
        while (he < e) {
            const char *n = scan_class(he, e, C_HDR);
            if (!n) return -1;
            if (n < e && (*n == '=' || *n == '&')) {
                he = n + 1;
                continue;
            }
            he = n;
            break;
        }
        if (he == hs) return -1;
        u->headers = slice_make(hs, (size_t)(he - hs));
        p = he;
    }
    return p == e ? 0 : -1;
}

int sipuri_parse(struct slice s, struct sip_uri *u)
{
    zero(u, sizeof *u);
    const char *p = s.ptr, *e = s.ptr + s.len;
    if (s.len == 0 || !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) return -1;
    const char *c = p;
    while (c < e && is_c(*c, C_SCHEME))
        c++;
    if (c == e || *c != ':') return -1;
    u->scheme_name = slice_make(p, (size_t)(c - p));
    const char *rest = c + 1;
    if (ALPHA_EQ(u->scheme_name, "sip")) {
        u->scheme = SIP_SCHEME_SIP;
        return parse_sip(rest, e, u);
    }
    if (ALPHA_EQ(u->scheme_name, "sips")) {
        u->scheme = SIP_SCHEME_SIPS;
        return parse_sip(rest, e, u);
    }
    u->scheme = ALPHA_EQ(u->scheme_name, "tel") ? SIP_SCHEME_TEL : SIP_SCHEME_OTHER;
    if (rest == e) return -1;
    for (const char *q = rest; q < e; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch <= ' ' || ch == 0x7f || ch == '<' || ch == '>' || ch == '"') return -1;
    }
    u->opaque = slice_make(rest, (size_t)(e - rest));
    if (u->scheme == SIP_SCHEME_TEL) {
        const char *sc = memchr(rest, ';', (size_t)(e - rest));
        if (sc) u->params = slice_make(sc + 1, (size_t)(e - sc - 1));
    }
    return 0;
}

/* quoted-string starting at p ('"'); returns the position after the closing
 * quote, or NULL when unterminated. */
static const char *scan_quoted(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\') {
            if (++p >= e) return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* *( SEMI generic-param ) with LWS anywhere between the parts. Stops at end
 * or at a ',' (callers reject trailing bytes). */
static const char *parse_gen_params(const char *p, const char *e, struct slice *params,
                                    struct slice *names[], struct slice *vals[], unsigned nnames,
                                    const struct slice want[])
{
    p = skip_lws(p, e);
    const char *start = p;
    while (p < e && *p == ';') {
        const char *ns = skip_lws(p + 1, e);
        const char *ne = ns;
        while (ne < e && is_c(*ne, C_TOKEN))
            ne++;
        if (ne == ns) return NULL;
        struct slice name = slice_make(ns, (size_t)(ne - ns)), val = slice_make(ne, 0);
        p = skip_lws(ne, e);
        if (p < e && *p == '=') {
            const char *vs = skip_lws(p + 1, e), *ve = vs;
            if (vs < e && *vs == '"') {
                ve = scan_quoted(vs, e);
                if (!ve) return NULL;
            } else {
                while (ve < e && (is_c(*ve, C_TOKEN) || *ve == ':' || *ve == '[' || *ve == ']'))
                    ve++;
            }
            if (ve == vs) return NULL;
            val = slice_make(vs, (size_t)(ve - vs));
            p = skip_lws(ve, e);
        }
        for (unsigned i = 0; i < nnames; i++) {
            if (alpha_case_eq(name, want[i].ptr, want[i].len)) { /* letters only */
                if (names[i]) *names[i] = name;
                *vals[i] = val;
            }
        }
    }
    if (p > start) *params = slice_make(start + 1, (size_t)(p - start - 1));
    return p;
}

int sipuri_parse_addr(struct slice s, struct sip_addr *a)
{
    zero(a, sizeof *a);
    const char *p = skip_lws(s.ptr, s.ptr + s.len), *e = s.ptr + s.len;
    while (e > p && is_ws(e[-1]))
        e--;
    if (e - p == 1 && *p == '*') {
        a->star = true;
        return 0;
    }
    const char *lt = NULL;
    if (p < e && *p == '"') {
        const char *q = scan_quoted(p, e);
        if (!q) return -1;
        a->display = slice_make(p, (size_t)(q - p));
        q = skip_lws(q, e);
        if (q >= e || *q != '<') return -1;
        lt = q;
    } else {
        const char *q = p;
        while (q < e && (is_c(*q, C_TOKEN) || is_ws(*q) || *q == '\r' || *q == '\n'))
            q++;
        if (q < e && *q == '<') {
            lt = q;
            const char *de = q;
            while (de > p && (is_ws(de[-1]) || de[-1] == '\r' || de[-1] == '\n'))
                de--;
            a->display = slice_make(p, (size_t)(de - p));
        }
    }
    const char *after;
    if (lt) {
        const char *gt = memchr(lt, '>', (size_t)(e - lt));
        if (!gt) return -1;
        a->uri_text = slice_make(lt + 1, (size_t)(gt - lt - 1));
        a->bracketed = true;
        after = gt + 1;
    } else {
        /* addr-spec: the URI ends at the first ';' or white space and may
         * carry no '?' headers (RFC 3261 §20.10) */
        const char *ue = p;
        while (ue < e && *ue != ';' && !is_ws(*ue) && *ue != '\r' && *ue != '\n')
            ue++;
        a->uri_text = slice_make(p, (size_t)(ue - p));
        if (memchr(p, '?', (size_t)(ue - p)) || memchr(p, ',', (size_t)(ue - p))) return -1;
        after = ue;
    }
    if (sipuri_parse(a->uri_text, &a->uri) < 0) return -1;
    static const struct slice want[] = {SLICE_LIT("tag"), SLICE_LIT("expires"), SLICE_LIT("q")};
    struct slice *names[] = {NULL, NULL, NULL};
    struct slice *vals[] = {&a->tag, &a->expires, &a->q};
    const char *pe = parse_gen_params(after, e, &a->params, names, vals, 3, want);
    if (!pe || pe != e) return -1;
    return 0;
}

int sipuri_parse_via(struct slice s, struct sip_via *v)
{
    zero(v, sizeof *v);
    const char *p = skip_lws(s.ptr, s.ptr + s.len), *e = s.ptr + s.len;
    /* sent-protocol = protocol-name SLASH protocol-version SLASH transport */
    const char *t = p;
    while (t < e && is_c(*t, C_TOKEN))
        t++;
    if (!ALPHA_EQ(slice_make(p, (size_t)(t - p)), "sip")) return -1;
    p = skip_lws(t, e);
    if (p >= e || *p != '/') return -1;
    p = skip_lws(p + 1, e);
    t = p;
    while (t < e && is_c(*t, C_TOKEN))
        t++;
    if (!slice_eq_lit(slice_make(p, (size_t)(t - p)), "2.0")) return -1;
    p = skip_lws(t, e);
    if (p >= e || *p != '/') return -1;
    p = skip_lws(p + 1, e);
    t = p;
    while (t < e && is_c(*t, C_TOKEN))
        t++;
    if (t == p) return -1;
    v->transport_name = slice_make(p, (size_t)(t - p));
    v->transport = (uint8_t)sipuri_transport_id(v->transport_name);
    const char *hs = skip_lws(t, e);
    if (hs == t) return -1; /* LWS is required before sent-by */
    uint8_t type;
    p = parse_hostport(hs, e, &v->host, &v->host_raw, &v->port, &type, true);
    if (!p) return -1;
    static const struct slice want[] = {SLICE_LIT("branch"), SLICE_LIT("received"),
                                        SLICE_LIT("maddr"), SLICE_LIT("ttl"), SLICE_LIT("rport")};
    struct slice rport_name = SLICE_NULL;
    struct slice *names[] = {NULL, NULL, NULL, NULL, &rport_name};
    struct slice *vals[] = {&v->branch, &v->received, &v->maddr, &v->ttl, &v->rport};
    const char *pe = parse_gen_params(p, e, &v->params, names, vals, 5, want);
    if (!pe || skip_lws(pe, e) != e) return -1;
    v->has_rport = rport_name.ptr != NULL;
    if (v->received.len) {
        struct slice r = v->received;
        if (r.ptr[0] == '[' && r.len > 2 && r.ptr[r.len - 1] == ']')
            r = slice_make(r.ptr + 1, r.len - 2);
        if (!sipuri_is_ipv4(r) && !sipuri_is_ipv6(r)) return -1;
    }
    return 0;
}

int sipuri_target(const struct sip_uri *u, uint8_t *proto, struct netaddr *dst)
{
    uint8_t p = u->transport;
    if (u->scheme == SIP_SCHEME_SIPS) p = SIP_TRANSPORT_TLS;
    if (p == SIP_TRANSPORT_NONE) p = SIP_TRANSPORT_UDP;
    if (p != SIP_TRANSPORT_UDP && p != SIP_TRANSPORT_TCP && p != SIP_TRANSPORT_TLS)
        return -EPROTONOSUPPORT;
    struct slice host = u->maddr.len ? u->maddr : u->host;
    if (slice_case_eq_lit(host, "localhost")) host = SLICE_LIT("127.0.0.1");
    if (netaddr_from_ip(dst, host, u->port ? u->port : (p == SIP_TRANSPORT_TLS ? 5061 : 5060)) < 0)
        return -EHOSTUNREACH;
    *proto = p;
    return 0;
}
