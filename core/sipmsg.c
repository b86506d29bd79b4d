/* Zero-copy SIP message parser: start line, indexed headers, body framing. */
#include "core/sipmsg.h"

/* RFC 3261 token characters: alphanum and -.!%*_+`'~ */
static const uint8_t token_tab[256] = {
    ['!'] = 1, ['%'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['_'] = 1,
    ['`'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1,  ['9'] = 1, ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1,
    ['E'] = 1, ['F'] = 1, ['G'] = 1,  ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1,  ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1,  ['X'] = 1, ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1,  ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1,  ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static inline bool is_token(char c)
{
    return token_tab[(unsigned char)c];
}
static inline bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- names ---------------------------------------------------------- */

struct name_ent {
    const char *name;
    uint8_t len;
    uint8_t kind;
};

#define N(s, k)                                                                                    \
    {                                                                                              \
        s, sizeof(s) - 1, k                                                                        \
    }
/* Full names, lower case; looked up through hdr_hash below. The ones most
 * messages carry come first so that they get their home slot in the hash. */
static const struct name_ent hdr_names[] = {
    N("via", SIP_HDR_VIA),
    N("from", SIP_HDR_FROM),
    N("to", SIP_HDR_TO),
    N("call-id", SIP_HDR_CALL_ID),
    N("cseq", SIP_HDR_CSEQ),
    N("contact", SIP_HDR_CONTACT),
    N("content-length", SIP_HDR_CONTENT_LENGTH),
    N("content-type", SIP_HDR_CONTENT_TYPE),
    N("max-forwards", SIP_HDR_MAX_FORWARDS),
    N("route", SIP_HDR_ROUTE),
    N("record-route", SIP_HDR_RECORD_ROUTE),
    N("allow", SIP_HDR_ALLOW),
    N("supported", SIP_HDR_SUPPORTED),
    N("user-agent", SIP_HDR_USER_AGENT),
    N("expires", SIP_HDR_EXPIRES),
    N("require", SIP_HDR_REQUIRE),
    N("proxy-require", SIP_HDR_PROXY_REQUIRE),
    N("path", SIP_HDR_PATH),
    N("server", SIP_HDR_SERVER),
    N("event", SIP_HDR_EVENT),
    N("session-expires", SIP_HDR_SESSION_EXPIRES),
    N("www-authenticate", SIP_HDR_WWW_AUTHENTICATE),
    N("proxy-authorization", SIP_HDR_PROXY_AUTHORIZATION),
    N("authorization", SIP_HDR_AUTHORIZATION),
    N("accept", SIP_HDR_ACCEPT),
    N("accept-encoding", SIP_HDR_ACCEPT_ENCODING),
    N("accept-language", SIP_HDR_ACCEPT_LANGUAGE),
    N("alert-info", SIP_HDR_ALERT_INFO),
    N("allow-events", SIP_HDR_ALLOW_EVENTS),
    N("authentication-info", SIP_HDR_AUTHENTICATION_INFO),
    N("call-info", SIP_HDR_CALL_INFO),
    N("content-disposition", SIP_HDR_CONTENT_DISPOSITION),
    N("content-encoding", SIP_HDR_CONTENT_ENCODING),
    N("content-language", SIP_HDR_CONTENT_LANGUAGE),
    N("date", SIP_HDR_DATE),
    N("error-info", SIP_HDR_ERROR_INFO),
    N("flow-timer", SIP_HDR_FLOW_TIMER),
    N("in-reply-to", SIP_HDR_IN_REPLY_TO),
    N("mime-version", SIP_HDR_MIME_VERSION),
    N("min-expires", SIP_HDR_MIN_EXPIRES),
    N("organization", SIP_HDR_ORGANIZATION),
    N("priority", SIP_HDR_PRIORITY),
    N("proxy-authenticate", SIP_HDR_PROXY_AUTHENTICATE),
    N("refer-to", SIP_HDR_REFER_TO),
    N("referred-by", SIP_HDR_REFERRED_BY),
    N("reply-to", SIP_HDR_REPLY_TO),
    N("retry-after", SIP_HDR_RETRY_AFTER),
    N("subject", SIP_HDR_SUBJECT),
    N("timestamp", SIP_HDR_TIMESTAMP),
    N("unsupported", SIP_HDR_UNSUPPORTED),
    N("warning", SIP_HDR_WARNING),
};

/* RFC 3261 §7.3.3 compact forms, plus the registered extension ones. */
static const uint8_t compact_kind[26] = {
    ['b' - 'a'] = SIP_HDR_REFERRED_BY,
    ['c' - 'a'] = SIP_HDR_CONTENT_TYPE,
    ['e' - 'a'] = SIP_HDR_CONTENT_ENCODING,
    ['f' - 'a'] = SIP_HDR_FROM,
    ['i' - 'a'] = SIP_HDR_CALL_ID,
    ['k' - 'a'] = SIP_HDR_SUPPORTED,
    ['l' - 'a'] = SIP_HDR_CONTENT_LENGTH,
    ['m' - 'a'] = SIP_HDR_CONTACT,
    ['o' - 'a'] = SIP_HDR_EVENT,
    ['r' - 'a'] = SIP_HDR_REFER_TO,
    ['s' - 'a'] = SIP_HDR_SUBJECT,
    ['t' - 'a'] = SIP_HDR_TO,
    ['u' - 'a'] = SIP_HDR_ALLOW_EVENTS,
    ['v' - 'a'] = SIP_HDR_VIA,
    ['x' - 'a'] = SIP_HDR_SESSION_EXPIRES,
};

/* Open-addressing hash over (length, first and last letter) into
 * hdr_names: one or two probes per header line instead of a scan. Built
 * once at load time; read-only afterwards, so any thread may look up. */
#define HDR_HASH_SIZE 128
static uint8_t hdr_hash[HDR_HASH_SIZE]; /* index + 1 into hdr_names; 0 = empty */

static inline unsigned hdr_hash_of(const char *p, size_t len)
{
    return ((unsigned)len * 7u + (unsigned)(p[0] | 0x20) * 3u + (unsigned)(p[len - 1] | 0x20)) &
           (HDR_HASH_SIZE - 1);
}

__attribute__((constructor)) static void sipmsg_init_names(void)
{
    for (unsigned i = 0; i < sizeof hdr_names / sizeof hdr_names[0]; i++) {
        unsigned h = hdr_hash_of(hdr_names[i].name, hdr_names[i].len);
        while (hdr_hash[h])
            h = (h + 1) & (HDR_HASH_SIZE - 1);
        hdr_hash[h] = (uint8_t)(i + 1);
    }
}

/* Compares a header name from the wire with a lower-case table name.
 * (c | 0x20) folds case exactly here: table names hold only a-z and '-',
 * and the only other byte that folds onto one of those is CR, which is not
 * a token character and so never part of a parsed name. */
static inline uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t load32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Word-wise, with overlapping loads for the tail: both strings hold n bytes. */
static inline bool name_case_eq(const char *wire, const char *lower, size_t n)
{
    const uint64_t f64 = 0x2020202020202020ull;
    const uint32_t f32 = 0x20202020u;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if ((load64(wire + i) | f64) != load64(lower + i)) return false;
        return (load64(wire + n - 8) | f64) == load64(lower + n - 8);
    }
    if (n >= 4)
        return (load32(wire) | f32) == load32(lower) &&
               (load32(wire + n - 4) | f32) == load32(lower + n - 4);
    for (size_t i = 0; i < n; i++)
        if ((wire[i] | 0x20) != lower[i]) return false;
    return true;
}

/* For names made of token characters only (the parser's). */
static enum sip_hdr_kind hdr_kind_token(struct slice name)
{
    if (name.len == 0) return SIP_HDR_OTHER;
    char c = slice_lower(name.ptr[0]);
    if (c < 'a' || c > 'z') return SIP_HDR_OTHER;
    if (name.len == 1) return (enum sip_hdr_kind)compact_kind[c - 'a'];
    for (unsigned h = hdr_hash_of(name.ptr, name.len); hdr_hash[h];
         h = (h + 1) & (HDR_HASH_SIZE - 1)) {
        const struct name_ent *e = &hdr_names[hdr_hash[h] - 1];
        if (e->len == name.len && name_case_eq(name.ptr, e->name, name.len))
            return (enum sip_hdr_kind)e->kind;
    }
    return SIP_HDR_OTHER;
}

enum sip_method sipmsg_method_id(struct slice n)
{
    /* Methods are case-sensitive (RFC 3261 §7.1). */
    switch (n.len) {
    case 3:
        if (slice_eq_lit(n, "ACK")) return SIP_METHOD_ACK;
        if (slice_eq_lit(n, "BYE")) return SIP_METHOD_BYE;
        break;
    case 4:
        if (slice_eq_lit(n, "INFO")) return SIP_METHOD_INFO;
        break;
    case 5:
        if (slice_eq_lit(n, "PRACK")) return SIP_METHOD_PRACK;
        if (slice_eq_lit(n, "REFER")) return SIP_METHOD_REFER;
        break;
    case 6:
        if (slice_eq_lit(n, "INVITE")) return SIP_METHOD_INVITE;
        if (slice_eq_lit(n, "CANCEL")) return SIP_METHOD_CANCEL;
        if (slice_eq_lit(n, "NOTIFY")) return SIP_METHOD_NOTIFY;
        if (slice_eq_lit(n, "UPDATE")) return SIP_METHOD_UPDATE;
        break;
    case 7:
        if (slice_eq_lit(n, "OPTIONS")) return SIP_METHOD_OPTIONS;
        if (slice_eq_lit(n, "PUBLISH")) return SIP_METHOD_PUBLISH;
        if (slice_eq_lit(n, "MESSAGE")) return SIP_METHOD_MESSAGE;
        break;
    case 8:
        if (slice_eq_lit(n, "REGISTER")) return SIP_METHOD_REGISTER;
        break;
    case 9:
        if (slice_eq_lit(n, "SUBSCRIBE")) return SIP_METHOD_SUBSCRIBE;
        break;
    }
    return SIP_METHOD_OTHER;
}

/* ---- start line ----------------------------------------------------- */

static int fail(struct sip_msg *m, enum sip_err e, const char *buf, const char *at)
{
    if (!m->err) { /* an error remembered earlier (start line) is the one to report */
        m->err = e;
        m->err_pos = (size_t)(at - buf);
    }
    return -1;
}

/* "SIP/2.0" case-insensitively; SIP/x.y of another version is VERSION. */
static enum sip_err check_version(struct slice v)
{
    if (v.len == 7 && (memcmp(v.ptr, "SIP/2.0", 7) == 0 || slice_case_eq_lit(v, "SIP/2.0")))
        return SIP_ERR_NONE;
    if (v.len < 7 || !slice_case_eq(slice_make(v.ptr, 4), SLICE_LIT("SIP/")))
        return SIP_ERR_START_LINE;
    size_t i = 4, digits = 0, dots = 0;
    for (; i < v.len; i++) {
        if (v.ptr[i] >= '0' && v.ptr[i] <= '9')
            digits++;
        else if (v.ptr[i] == '.' && digits && !dots)
            dots++, digits = 0;
        else
            return SIP_ERR_START_LINE;
    }
    return (dots == 1 && digits) ? SIP_ERR_VERSION : SIP_ERR_START_LINE;
}

static int parse_start_line(const char *buf, const char *p, const char *eol, struct sip_msg *m)
{
    m->start_line = slice_make(p, (size_t)(eol - p));
    if (eol - p >= 4 && memcmp(p, "SIP/", 4) == 0) {
        /* Status-Line = SIP-Version SP Status-Code SP Reason-Phrase */
        const char *sp = memchr(p, ' ', (size_t)(eol - p));
        if (!sp) return fail(m, SIP_ERR_START_LINE, buf, eol);
        enum sip_err ve = check_version(slice_make(p, (size_t)(sp - p)));
        if (ve) return fail(m, ve, buf, p);
        const char *c = sp + 1, *ce = c;
        while (ce < eol && *ce >= '0' && *ce <= '9')
            ce++;
        if (ce - c != 3 || (ce < eol && *ce != ' ')) return fail(m, SIP_ERR_STATUS_CODE, buf, c);
        int code = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
        if (code < 100 || code > 699) return fail(m, SIP_ERR_STATUS_CODE, buf, c);
        m->is_request = false;
        m->status = code;
        m->reason = ce < eol ? slice_make(ce + 1, (size_t)(eol - ce - 1)) : SLICE_NULL;
        return 0;
    }
    /* Request-Line = Method SP Request-URI SP SIP-Version: single spaces only */
    const char *q = p;
    while (q < eol && is_token(*q))
        q++;
    if (q == p || q == eol || *q != ' ') return fail(m, SIP_ERR_START_LINE, buf, q);
    m->method_name = slice_make(p, (size_t)(q - p));
    m->is_request = true;
    m->method = (uint8_t)sipmsg_method_id(m->method_name);
    /* From here on a bad Request-URI or version is remembered and the
     * headers are still indexed, so that the request can be answered with
     * 400 or 505 instead of being dropped. */
    const char *u = q + 1;
    const char *ue = memchr(u, ' ', (size_t)(eol - u));
    if (!ue || ue == u) {
        fail(m, SIP_ERR_START_LINE, buf, u);
        return 0;
    }
    m->ruri = slice_make(u, (size_t)(ue - u));
    struct slice ver = slice_make(ue + 1, (size_t)(eol - ue - 1));
    enum sip_err ve = check_version(ver);
    if (ve) fail(m, ve, buf, ue + 1);
    return 0;
}

/* ---- headers -------------------------------------------------------- */

static bool is_split_kind(unsigned k)
{
    switch (k) {
    case SIP_HDR_VIA:
    case SIP_HDR_ROUTE:
    case SIP_HDR_RECORD_ROUTE:
    case SIP_HDR_PATH:
    case SIP_HDR_CONTACT:
    case SIP_HDR_PROXY_REQUIRE:
    case SIP_HDR_REQUIRE:
    case SIP_HDR_SUPPORTED:
    case SIP_HDR_UNSUPPORTED:
    case SIP_HDR_ALLOW:
        return true;
    }
    return false;
}

/* Skips linear white space, folded line breaks included. */
static inline const char *skip_lws(const char *p, const char *end)
{
    for (;;) {
        while (p < end && is_ws(*p))
            p++;
        if (p + 2 < end && p[0] == '\r' && p[1] == '\n' && is_ws(p[2]))
            p += 3;
        else if (p + 1 < end && p[0] == '\n' && is_ws(p[1]))
            p += 2;
        else
            return p;
    }
}

static inline struct slice trim(const char *p, const char *e)
{
    p = skip_lws(p, e);
    while (e > p && (is_ws(e[-1]) || e[-1] == '\r' || e[-1] == '\n'))
        e--;
    return slice_make(p, (size_t)(e - p));
}

static bool decode_u32(struct slice s, uint32_t *out)
{
    uint64_t v;
    if (!slice_to_u64(s, UINT32_MAX, &v)) return false;
    *out = (uint32_t)v;
    return true;
}

/* CSeq = 1*DIGIT LWS Method */
static enum sip_err decode_cseq(struct slice v, struct sip_msg *m)
{
    const char *p = v.ptr, *e = v.ptr + v.len, *d = p;
    while (d < e && *d >= '0' && *d <= '9')
        d++;
    if (!decode_u32(slice_make(p, (size_t)(d - p)), &m->cseq)) return SIP_ERR_CSEQ;
    const char *mp = skip_lws(d, e);
    if (mp == d) return SIP_ERR_CSEQ;
    const char *me = mp;
    while (me < e && is_token(*me))
        me++;
    if (me == mp || me != e) return SIP_ERR_CSEQ;
    m->cseq_method_name = slice_make(mp, (size_t)(me - mp));
    m->cseq_method = (uint8_t)sipmsg_method_id(m->cseq_method_name);
    return SIP_ERR_NONE;
}

enum sip_hdr_kind sipmsg_hdr_kind(struct slice name)
{
    /* name_case_eq() folds exactly only over token characters (a CR
     * would fold onto '-'); no known name holds anything else */
    for (size_t i = 0; i < name.len; i++)
        if (!is_token(name.ptr[i])) return SIP_HDR_OTHER;
    return hdr_kind_token(name);
}

/* Per-kind decoding of the values every layer needs. */
static enum sip_err decode_header(struct sip_msg *m, unsigned kind, struct slice v)
{
    switch (kind) {
    case SIP_HDR_CONTENT_LENGTH: {
        if (m->content_length >= 0) return SIP_ERR_CL_DUPLICATE;
        uint64_t cl;
        if (!slice_to_u64(v, UINT32_MAX, &cl)) return SIP_ERR_CONTENT_LENGTH;
        m->content_length = (int64_t)cl;
        break;
    }
    case SIP_HDR_CSEQ:
        if (m->count[SIP_HDR_CSEQ] == 0) return decode_cseq(v, m);
        break;
    case SIP_HDR_MAX_FORWARDS:
        if (m->count[SIP_HDR_MAX_FORWARDS] == 0) {
            uint32_t mf;
            if (!decode_u32(v, &mf) || mf > 255) return SIP_ERR_MAX_FORWARDS;
            m->max_forwards = (int)mf;
        }
        break;
    case SIP_HDR_CALL_ID:
        if (m->count[SIP_HDR_CALL_ID] == 0) m->call_id = v;
        break;
    }
    return SIP_ERR_NONE;
}

static inline bool add_value(struct sip_msg *m, const struct sipmsg_limits *lim, struct slice name,
                             struct slice value, struct slice line, unsigned kind, uint8_t flags)
{
    if (m->nhdrs >= lim->max_headers) return false;
    struct sip_hdr *h = &m->hdrs[m->nhdrs];
    h->name = name;
    h->value = value;
    h->line = line;
    h->kind = (uint8_t)kind;
    h->flags = flags;
    if (m->first[kind] == SIPMSG_NO_HDR) m->first[kind] = m->nhdrs;
    m->count[kind]++;
    m->nhdrs++;
    return true;
}

/* Bytes add_split must look at; everything else is skipped in a tight loop. */
static const uint8_t split_tab[256] = {
    [','] = 1, ['"'] = 1, ['<'] = 1, ['>'] = 1, ['\\'] = 1,
};

/* Splits a comma list, honouring quoted strings and <...>; adds one value
 * each. vs..ve is already trimmed. */
static bool add_split(struct sip_msg *m, const struct sipmsg_limits *lim, struct slice name,
                      const char *vs, const char *ve, struct slice line, unsigned kind)
{
    /* most lines hold one value: no comma, nothing to split */
    if (vs == ve || !memchr(vs, ',', (size_t)(ve - vs)))
        return add_value(m, lim, name, slice_make(vs, (size_t)(ve - vs)), line, kind,
                         SIP_HF_LAST_IN_LINE);
    const char *start = vs;
    bool quoted = false, angle = false;
    unsigned n = 0;
    for (const char *p = vs; p <= ve; p++) {
        while (p < ve && !split_tab[(unsigned char)*p])
            p++;
        if (p < ve) {
            char c = *p;
            if (quoted) {
                if (c == '\\' && p + 1 < ve)
                    p++;
                else if (c == '"')
                    quoted = false;
                continue;
            }
            if (c == '"')
                quoted = true;
            else if (c == '<')
                angle = true;
            else if (c == '>')
                angle = false;
            if (c != ',' || angle) continue;
        }
        uint8_t flags = n ? SIP_HF_SAME_LINE : 0;
        if (p == ve) flags |= SIP_HF_LAST_IN_LINE;
        if (!add_value(m, lim, name, trim(start, p), line, kind, flags)) return false;
        n++;
        start = p + 1;
    }
    return true;
}

/* Finds the end of one (possibly folded) header line starting at p.
 * Returns a pointer just past its final LF, or NULL when the buffer ends
 * before we can tell (the next line might be a continuation). */
static const char *line_end(const char *p, const char *end)
{
    for (;;) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf || lf + 1 >= end) return NULL;
        if (!is_ws(lf[1])) return lf + 1;
        p = lf + 1;
    }
}

/* What one sipmsg_parse() call reads: the buffer, and where the size limit
 * cuts it. */
struct input {
    const char *buf, *end;
    const char *limit_end; /* buf + min(len, max_msg_size) */
    size_t len;
    const struct sipmsg_limits *lim;
    bool dgram;
};

/* Step 0: every field as "nothing parsed yet". */
static inline void msg_reset(struct sip_msg *m, struct sip_hdr *hdrs)
{
    /* through libc's memset: the inline "rep stos" GCC picks for these
     * sizes costs ~35 cycles to start on current x86 */
    size_t n0 = offsetof(struct sip_msg, first), n1 = sizeof m->first, n2 = sizeof m->count;
    __asm__("" : "+r"(n0), "+r"(n1), "+r"(n2)); /* hide the constant sizes */
    memset(m, 0, n0);
    memset(m->first, 0xff, n1);
    memset(m->count, 0, n2);
    m->hdrs = hdrs;
    m->cseq = 0;
    m->cseq_method = 0;
    m->cseq_method_name = SLICE_NULL;
    m->max_forwards = -1;
    m->content_length = -1;
    m->call_id = SLICE_NULL;
    m->headers_len = 0;
    m->body = SLICE_NULL;
    m->msg_len = 0;
    m->err = SIP_ERR_NONE;
    m->err_pos = 0;
}

/* The header block ends before its empty line: too large when the limit cut
 * it, a truncated datagram, or -2 (more stream bytes needed). */
static int block_short(const struct input *in, struct sip_msg *m)
{
    if (in->len >= in->lim->max_msg_size) return fail(m, SIP_ERR_TOO_LARGE, in->buf, in->limit_end);
    return in->dgram ? fail(m, SIP_ERR_NO_HEADER_END, in->buf, in->end) : -2;
}

/* Step 1: the start line. 0 with *next just past its LF, -1 or -2. */
static int parse_first_line(const struct input *in, struct sip_msg *m, const char **next)
{
    const char *p = in->buf;
    /* RFC 3261 §7.5: ignore CRLFs before the start line (they count
     * towards the size limit, and must not run past it) */
    while (p < in->limit_end && (*p == '\r' || *p == '\n'))
        p++;
    const char *sl = p;
    const char *lf = memchr(p, '\n', (size_t)(in->limit_end - p));
    if (!lf) return block_short(in, m);
    const char *eol = (lf > sl && lf[-1] == '\r') ? lf - 1 : lf;
    if (parse_start_line(in->buf, sl, eol, m) < 0) return -1;
    *next = lf + 1;
    return 0;
}

/* Step 3: indexes one header line's values under their kind and decodes
 * the ones every layer needs. vs..ve is the raw value. False when the
 * header array is full. */
static inline bool index_header(const struct input *in, struct sip_msg *m, struct slice name,
                                const char *vs, const char *ve, struct slice line)
{
    unsigned kind = hdr_kind_token(name);
    struct slice v = trim(vs, ve);

    if (is_split_kind(kind)) return add_split(m, in->lim, name, v.ptr, v.ptr + v.len, line, kind);
    /* a bad value is remembered, and the header block is still indexed so
     * that an error response can be built from it */
    enum sip_err de = decode_header(m, kind, v);
    if (de && !m->err) {
        m->err = de;
        m->err_pos = (size_t)(v.ptr - in->buf);
    }
    return add_value(m, in->lim, name, v, line, kind, SIP_HF_LAST_IN_LINE);
}

/* One header line p..le (le just past its final LF): header-name HCOLON
 * value. 0 or -1. */
static inline int parse_header_line(const struct input *in, struct sip_msg *m, const char *p,
                                    const char *le)
{
    /* the line ends in LF, which is no token character: the scan stops
     * inside it without a bound check */
    const char *n = p;
    while (is_token(*n))
        n++;
    if (n == p) return fail(m, SIP_ERR_HEADER_SYNTAX, in->buf, p);
    const char *c = n;
    while (c < le && is_ws(*c))
        c++;
    if (c >= le || *c != ':') return fail(m, SIP_ERR_HEADER_SYNTAX, in->buf, c);
    if (!index_header(in, m, slice_make(p, (size_t)(n - p)), c + 1, le,
                      slice_make(p, (size_t)(le - p))))
        return fail(m, SIP_ERR_TOO_MANY_HEADERS, in->buf, p);
    return 0;
}

/* Step 2: header lines from *pos up to the empty line. 0 with *pos just
 * past the empty line, -1 or -2. */
static int parse_header_block(const struct input *in, struct sip_msg *m, const char **pos)
{
    const char *p = *pos;

    for (;;) {
        if (p >= in->limit_end) return block_short(in, m);
        /* empty line: end of headers */
        if (*p == '\n') {
            *pos = p + 1;
            return 0;
        }
        if (*p == '\r') {
            if (p + 1 >= in->limit_end) return block_short(in, m);
            if (p[1] == '\n') {
                *pos = p + 2;
                return 0;
            }
            return fail(m, SIP_ERR_HEADER_SYNTAX, in->buf, p);
        }
        if (is_ws(*p))
            return fail(m, SIP_ERR_HEADER_SYNTAX, in->buf, p); /* fold without a header */
        /* NULL: the buffer ends before we can tell (the next line might be
         * a continuation), e.g. a datagram that ends right after a header */
        const char *le = line_end(p, in->limit_end);
        if (!le) return block_short(in, m);
        if (parse_header_line(in, m, p, le) < 0) return -1;
        p = le;
    }
}

/* Step 4: the body, p being just past the empty line. Content-Length frames
 * it; a datagram without one has the rest as its body. Returns the bytes
 * the message occupies, -1 or -2. */
static int frame_body(const struct input *in, struct sip_msg *m, const char *p)
{
    size_t avail = in->len - m->headers_len;

    if (m->content_length < 0) {
        if (!in->dgram) return fail(m, SIP_ERR_CL_MISSING, in->buf, p);
        if (in->len > in->lim->max_msg_size) /* the body is the rest: it counts too */
            return fail(m, SIP_ERR_TOO_LARGE, in->buf, in->limit_end);
        m->body = slice_make(p, avail); /* RFC 2543 style: the rest of the datagram */
        m->msg_len = in->len;
    } else {
        size_t cl = (size_t)m->content_length;
        if (cl > in->lim->max_msg_size || m->headers_len + cl > in->lim->max_msg_size)
            return fail(m, SIP_ERR_TOO_LARGE, in->buf, p);
        if (cl > avail) {
            if (in->dgram) return fail(m, SIP_ERR_BODY_SHORT, in->buf, in->end);
            return -2;
        }
        m->body = slice_make(p, cl);
        m->msg_len = in->dgram ? in->len : m->headers_len + cl;
    }
    return (int)m->msg_len;
}

int sipmsg_parse(const char *buf, size_t len, struct sip_msg *m, struct sip_hdr *hdrs,
                 const struct sipmsg_limits *lim, unsigned flags)
{
    const struct input in = {
        .buf = buf,
        .end = buf + len,
        .limit_end = buf + (len < lim->max_msg_size ? len : lim->max_msg_size),
        .len = len,
        .lim = lim,
        .dgram = flags & SIPMSG_DATAGRAM,
    };
    const char *p;
    int rc;

    msg_reset(m, hdrs);
    rc = parse_first_line(&in, m, &p);
    if (rc < 0) return rc;
    rc = parse_header_block(&in, m, &p);
    if (rc < 0) return rc;
    m->headers_len = (size_t)(p - buf);
    /* a bad start line or header value, remembered while indexing */
    if (m->err) return -1;
    rc = frame_body(&in, m, p);
    if (rc < 0) return rc;
    if (m->cseq_method_name.len == 0 && m->count[SIP_HDR_CSEQ] == 0) m->cseq = 0;
    return rc;
}

const struct sip_hdr *sipmsg_hdr_nth(const struct sip_msg *m, enum sip_hdr_kind kind, unsigned i)
{
    if (i >= sipmsg_hdr_count(m, kind)) return NULL;
    for (unsigned k = m->first[kind]; k < m->nhdrs; k++) {
        if (m->hdrs[k].kind == kind && i-- == 0) return &m->hdrs[k];
    }
    return NULL;
}

static const char *const err_str[SIP_ERR__COUNT] = {
    [SIP_ERR_NONE] = "no error",
    [SIP_ERR_START_LINE] = "Malformed Start Line",
    [SIP_ERR_VERSION] = "Version Not Supported",
    [SIP_ERR_STATUS_CODE] = "Bad Status Code",
    [SIP_ERR_HEADER_SYNTAX] = "Malformed Header Line",
    [SIP_ERR_TOO_MANY_HEADERS] = "Too Many Headers",
    [SIP_ERR_TOO_LARGE] = "Message Too Large",
    [SIP_ERR_NO_HEADER_END] = "Truncated Header Block",
    [SIP_ERR_CONTENT_LENGTH] = "Bad Content-Length",
    [SIP_ERR_CL_DUPLICATE] = "Duplicate Content-Length",
    [SIP_ERR_CL_MISSING] = "Missing Content-Length",
    [SIP_ERR_BODY_SHORT] = "Body Shorter Than Content-Length",
    [SIP_ERR_CSEQ] = "Bad CSeq",
    [SIP_ERR_CSEQ_METHOD] = "CSeq Method Mismatch",
    [SIP_ERR_MAX_FORWARDS] = "Bad Max-Forwards",
    [SIP_ERR_MISSING_HEADER] = "Missing Mandatory Header",
    [SIP_ERR_DUP_HEADER] = "Duplicate Header",
    [SIP_ERR_REQUEST_URI] = "Bad Request-URI",
    [SIP_ERR_VIA] = "Bad Via",
    [SIP_ERR_ADDRESS] = "Bad Address Header",
    [SIP_ERR_CONTROL_BYTES] = "Control Character In Header",
};

const char *sipmsg_err_str(enum sip_err e)
{
    return (unsigned)e < SIP_ERR__COUNT ? err_str[e] : "unknown error";
}

int sipmsg_err_status(enum sip_err e)
{
    switch (e) {
    case SIP_ERR_VERSION:
        return 505;
    case SIP_ERR_TOO_LARGE:
        return 513;
    default:
        return 400;
    }
}
