/* Incremental framing of SIP messages on a byte stream (TCP/TLS). */
#include "core/framer.h"

void framer_init(struct framer *f)
{
    f->scanned = 0;
    f->headers_len = 0;
    f->msg_len = 0;
    f->err = SIP_ERR_NONE;
}

static enum framer_result invalid(struct framer *f, enum sip_err e)
{
    f->err = e;
    return FRAMER_INVALID;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* Finds Content-Length ("Content-Length" or "l", any case, optional white
 * space before the colon) in the header block buf[0..hlen). */
static enum sip_err find_content_length(const char *buf, size_t hlen, uint64_t *cl)
{
    const char *p = memchr(buf, '\n', hlen), *end = buf + hlen;
    bool found = false;
    while (p && p + 1 < end) {
        const char *ls = p + 1;
        p = memchr(ls, '\n', (size_t)(end - ls));
        if (is_ws(*ls)) continue; /* continuation line */
        const char *n = ls;
        while (n < end && *n != ':' && !is_ws(*n) && *n != '\r' && *n != '\n')
            n++;
        size_t nl = (size_t)(n - ls);
        bool is_cl = (nl == 1 && (*ls == 'l' || *ls == 'L')) ||
                     (nl == 14 && slice_case_eq_lit(slice_make(ls, nl), "content-length"));
        if (!is_cl) continue;
        while (n < end && is_ws(*n))
            n++;
        if (n >= end || *n != ':')
            continue; /* not a header line we understand; the parser decides */
        if (found) return SIP_ERR_CL_DUPLICATE;
        found = true;
        /* value up to the end of the (possibly folded) header */
        const char *v = n + 1, *ve = v;
        for (;;) {
            const char *lf = memchr(ve, '\n', (size_t)(end - ve));
            if (!lf) {
                ve = end;
                break;
            }
            ve = lf + 1;
            if (ve >= end || !is_ws(*ve)) break;
        }
        while (v < ve && (is_ws(*v) || *v == '\r' || *v == '\n'))
            v++;
        while (ve > v && (is_ws(ve[-1]) || ve[-1] == '\r' || ve[-1] == '\n'))
            ve--;
        if (!slice_to_u64(slice_make(v, (size_t)(ve - v)), UINT32_MAX, cl))
            return SIP_ERR_CONTENT_LENGTH;
    }
    return found ? SIP_ERR_NONE : SIP_ERR_CL_MISSING;
}

enum framer_result framer_feed(struct framer *f, const char *buf, size_t len,
                               const struct sipmsg_limits *lim, size_t *msg_len)
{
    if (f->headers_len == 0) {
        if (len == 0) return FRAMER_INCOMPLETE;
        if (buf[0] == '\r' || buf[0] == '\n') {
            /* RFC 5626 §4.4.1 keep-alive: CRLFCRLF ping, CRLF pong */
            if (len >= 4 && memcmp(buf, "\r\n\r\n", 4) == 0) {
                *msg_len = 4;
                return FRAMER_KEEPALIVE;
            }
            /* CRLF then anything but CRLF: a pong (also when only the 4th
             * byte rules out a ping, else "\r\n\rX" would wait forever) */
            if (len >= 3 && memcmp(buf, "\r\n", 2) == 0 && (buf[2] != '\r' || len >= 4)) {
                *msg_len = 2;
                return FRAMER_PONG;
            }
            if (len >= 2 && buf[0] == '\n') {
                *msg_len = 1;
                return FRAMER_PONG;
            }
            if (len >= 2 && buf[0] == '\r' && buf[1] != '\n') return invalid(f, SIP_ERR_START_LINE);
            return FRAMER_INCOMPLETE;
        }
        size_t from = f->scanned;
        const char *hend = NULL;
        while (from < len) {
            const char *lf = memchr(buf + from, '\n', len - from);
            if (!lf) break;
            size_t rest = len - (size_t)(lf - buf) - 1;
            if (rest >= 2 && lf[1] == '\r' && lf[2] == '\n') {
                hend = lf + 3;
                break;
            }
            if (rest >= 1 && lf[1] == '\n') {
                hend = lf + 2;
                break;
            }
            if (rest < 2) {
                from = (size_t)(lf - buf); /* rescan this LF when more arrives */
                goto incomplete;
            }
            from = (size_t)(lf - buf) + 1;
        }
        if (!hend) {
            from = len;
        incomplete:
            f->scanned = from;
            if (len >= lim->max_msg_size) return invalid(f, SIP_ERR_TOO_LARGE);
            return FRAMER_INCOMPLETE;
        }
        size_t hlen = (size_t)(hend - buf);
        if (hlen > lim->max_msg_size) return invalid(f, SIP_ERR_TOO_LARGE);
        uint64_t cl = 0;
        enum sip_err e = find_content_length(buf, hlen, &cl);
        if (e) return invalid(f, e);
        if (cl > lim->max_msg_size || hlen + cl > lim->max_msg_size)
            return invalid(f, SIP_ERR_TOO_LARGE);
        f->headers_len = hlen;
        f->msg_len = hlen + (size_t)cl;
    }
    if (len < f->msg_len) return FRAMER_INCOMPLETE;
    *msg_len = f->msg_len;
    framer_init(f);
    return FRAMER_MESSAGE;
}
