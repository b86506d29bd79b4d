/* RFC 3261 §16.3 checks on a parsed message before a proxy routes it: sipmsg_validate(). */
#include "core/sipmsg.h"

#include "core/sipuri.h"

static enum sip_err set_err(struct sip_msg *m, enum sip_err e, struct slice at)
{
    m->err = e;
    m->err_pos = 0;
    (void)at;
    return e;
}

/* ---- control bytes ------------------------------------------------------- */

/* 1 for the bytes sipmsg_check_controls() looks at twice: C0 controls but
 * HTAB, and DEL. */
static const uint8_t ctl_tab[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1, [0x07] = 1,
    [0x08] = 1, [0x0a] = 1, [0x0b] = 1, [0x0c] = 1, [0x0d] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1,
    [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1, [0x18] = 1,
    [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1, [0x1f] = 1, [0x7f] = 1,
};

/* Whether one of the eight bytes at p is below 0x20 or is DEL (0x7f): the
 * exact zero-byte and less-than tests on a word (bytes of 0x80 and above
 * never count). */
static bool word_has_control(const char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t below = (x - ones * 0x20) & ~x & highs;
    uint64_t d = x ^ (ones * 0x7f);
    uint64_t del = (d - ones) & ~d & highs;
    return (below | del) != 0;
}

/* Is the control byte at p (not CR or LF) the second byte of a quoted-pair
 * (RFC 3261 §25.1) inside a quoted string of its header line? Walks the line
 * from its start: only on the rare message that has such a byte. */
static bool in_quoted_pair(const struct sip_msg *m, const char *p)
{
    const struct sip_hdr *h = m->hdrs, *end = m->hdrs + m->nhdrs;
    while (h < end && !(p >= h->line.ptr && p < h->line.ptr + h->line.len))
        h++;
    if (h == end) return false; /* the start line has no quoted strings */
    bool quoted = false;
    for (const char *q = h->line.ptr; q < p; q++) {
        if (quoted && *q == '\\') {
            if (++q == p) return true;
        } else if (*q == '"') {
            quoted = !quoted;
        }
    }
    return false;
}

enum sip_err sipmsg_check_controls(struct sip_msg *m)
{
    const char *start = m->start_line.ptr, *end = m->body.ptr;
    if (!start || !end || end < start) return SIP_ERR_NONE; /* not a parsed message */
    /* CRLF ends every line: the fast path skips eight bytes at a time while
     * none of them is a control byte, then looks at each, two hits a line */
    for (const char *p = start; p < end; p++) {
        while (end - p >= 8 && !word_has_control(p))
            p += 8;
        if (p == end) break;
        if (!ctl_tab[(unsigned char)*p]) continue;
        bool ok;
        if (*p == '\r')
            ok = p + 1 < end && p[1] == '\n';
        else if (*p == '\n')
            ok = (p > start && p[-1] == '\r') || (p + 1 < end && (p[1] == ' ' || p[1] == '\t'));
        else
            ok = in_quoted_pair(m, p);
        if (!ok) {
            m->err = SIP_ERR_CONTROL_BYTES;
            m->err_pos = (size_t)(p - (end - m->headers_len)); /* body.ptr = buf + headers_len */
            return SIP_ERR_CONTROL_BYTES;
        }
    }
    return SIP_ERR_NONE;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

bool sipmsg_value_clean(struct slice v)
{
    bool quoted = false;
    for (size_t i = 0; i < v.len; i++) {
        char c = v.ptr[i];
        if (quoted && c == '\\' && i + 1 < v.len && v.ptr[i + 1] != '\r' && v.ptr[i + 1] != '\n') {
            i++; /* a quoted-pair */
            continue;
        }
        if (c == '"') quoted = !quoted;
        if (!ctl_tab[(unsigned char)c]) continue;
        if (c == '\r' && i + 2 < v.len && v.ptr[i + 1] == '\n' && is_ws(v.ptr[i + 2]))
            i++; /* a fold */
        else if (!(c == '\n' && i + 1 < v.len && is_ws(v.ptr[i + 1])))
            return false;
    }
    return true;
}

/* ---- the checks ------------------------------------------------------------ */

static bool addr_ok(struct slice v, bool allow_star)
{
    struct sip_addr a;
    if (sipuri_parse_addr(v, &a) < 0) return false;
    return allow_star || !a.star;
}

enum sip_err sipmsg_validate(struct sip_msg *m)
{
    static const uint8_t required[] = {SIP_HDR_TO, SIP_HDR_FROM, SIP_HDR_CALL_ID, SIP_HDR_CSEQ,
                                       SIP_HDR_VIA};
    static const uint8_t single[] = {SIP_HDR_TO,   SIP_HDR_FROM,         SIP_HDR_CALL_ID,
                                     SIP_HDR_CSEQ, SIP_HDR_MAX_FORWARDS, SIP_HDR_CONTENT_TYPE};
    if (sipmsg_check_controls(m)) return SIP_ERR_CONTROL_BYTES;
    for (unsigned i = 0; i < sizeof required; i++)
        if (m->count[required[i]] == 0) return set_err(m, SIP_ERR_MISSING_HEADER, SLICE_NULL);
    for (unsigned i = 0; i < sizeof single; i++)
        if (m->count[single[i]] > 1) return set_err(m, SIP_ERR_DUP_HEADER, SLICE_NULL);

    /* the top Via is where a response goes: it must be sound */
    struct sip_via via;
    const struct sip_hdr *tv = sipmsg_hdr(m, SIP_HDR_VIA);
    if (sipuri_parse_via(tv->value, &via) < 0) return set_err(m, SIP_ERR_VIA, tv->value);

    const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_TO);
    if (!addr_ok(h->value, false)) return set_err(m, SIP_ERR_ADDRESS, h->value);
    h = sipmsg_hdr(m, SIP_HDR_FROM);
    if (!addr_ok(h->value, false)) return set_err(m, SIP_ERR_ADDRESS, h->value);

    if (!m->is_request) return SIP_ERR_NONE;

    if (!slice_eq(m->cseq_method_name, m->method_name))
        return set_err(m, SIP_ERR_CSEQ_METHOD, m->cseq_method_name);

    struct sip_uri u;
    if (sipuri_parse(m->ruri, &u) < 0 || u.headers.ptr != NULL)
        return set_err(m, SIP_ERR_REQUEST_URI, m->ruri);

    for (const struct sip_hdr *c = sipmsg_hdr(m, SIP_HDR_CONTACT); c; c = sipmsg_hdr_next(m, c))
        if (!addr_ok(c->value, true)) return set_err(m, SIP_ERR_ADDRESS, c->value);
    /* Loose routing reads the top Route (ours?) and the one after it (the
     * next hop): those must be well formed. Later values are forwarded
     * untouched and, like Record-Route, not judged here (RFC 3261 §16.3). */
    for (unsigned i = 0; i < 2; i++) {
        const struct sip_hdr *r = sipmsg_hdr_nth(m, SIP_HDR_ROUTE, i);
        if (r && !addr_ok(r->value, false)) return set_err(m, SIP_ERR_ADDRESS, r->value);
    }
    return SIP_ERR_NONE;
}
