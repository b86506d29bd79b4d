/* Replies sipedge builds itself, and sending them back the way the request came. */
#include "core/reply.h"

#include <errno.h>
#include <string.h>

#include "core/buf.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/proxy-int.h"
#include "core/sipuri.h"

/* A deterministic To-tag for our own replies, so retransmitted requests get
 * the same one. */
static uint32_t reply_tag(const struct sip_msg *m)
{
    struct hash_state h;
    hash_begin(&h);
    hash_update_slice(&h, m->call_id);
    const struct sip_hdr *f = sipmsg_hdr(m, SIP_HDR_FROM);
    if (f) hash_update_slice(&h, f->value);
    hash_update(&h, &m->cseq, sizeof m->cseq);
    uint64_t v = hash_final(&h);
    return (uint32_t)(v ^ (v >> 32));
}

const char *reply_reason(int code)
{
    switch (code) {
    case 100:
        return "Trying";
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 408:
        return "Request Timeout";
    case 416:
        return "Unsupported URI Scheme";
    case 420:
        return "Bad Extension";
    case 423:
        return "Interval Too Brief";
    case 430:
        return "Flow Failed";
    case 480:
        return "Temporarily Unavailable";
    case 481:
        return "Call/Transaction Does Not Exist";
    case 482:
        return "Loop Detected";
    case 483:
        return "Too Many Hops";
    case 500:
        return "Server Internal Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "Version Not Supported";
    case 513:
        return "Message Too Large";
    default:
        return "Unknown";
    }
}

/* The top Via as received, with received and the rport value for src
 * (RFC 3581 §4: a bare rport gets its value in place, not a second rport). */
static void put_top_via(struct buf *b, struct slice value, const struct netaddr *src)
{
    struct sip_via v;
    char ip[NETADDR_STRLEN];
    size_t iplen = netaddr_ip_str(src, ip, sizeof ip);
    if (sipuri_parse_via(value, &v) < 0) {
        buf_put_slice(b, value);
        return;
    }
    bool fill = v.has_rport && v.rport.len == 0;
    size_t cut = fill ? (size_t)(v.rport.ptr - value.ptr) : value.len; /* just after "rport" */
    buf_put(b, value.ptr, cut);
    if (fill) {
        buf_put(b, "=", 1);
        buf_put_u(b, (unsigned)netaddr_port(src));
    }
    buf_put(b, value.ptr + cut, value.len - cut);
    bool differs = !slice_eq(v.host, slice_make(ip, iplen));
    if (v.received.len == 0 && (differs || v.has_rport)) {
        buf_puts(b, ";received=");
        buf_put(b, ip, iplen);
    }
}

/* To as received, with our tag on a final or non-100 provisional answer
 * when the request had none. */
static void put_to(struct buf *b, const struct sip_msg *m, struct slice value, int code)
{
    struct sip_addr a;
    buf_puts(b, "To: ");
    buf_put_slice(b, value);
    if (code > 100 && sipuri_parse_addr(value, &a) == 0 && a.tag.ptr == NULL) {
        buf_puts(b, ";tag=se");
        buf_put_hex(b, reply_tag(m), 8);
    }
    buf_puts(b, "\r\n");
}

/* The header kinds reply_build() copies. */
static bool echoed(unsigned kind)
{
    return kind == SIP_HDR_VIA || kind == SIP_HDR_FROM || kind == SIP_HDR_TO ||
           kind == SIP_HDR_CALL_ID || kind == SIP_HDR_CSEQ;
}

ssize_t reply_build(const struct sip_msg *m, const struct netaddr *src, int code,
                    const char *warning, const char *extra, char *out, size_t cap)
{
    struct buf b = buf_make(out, cap);
    buf_puts(&b, "SIP/2.0 ");
    buf_put_u(&b, (unsigned)code);
    buf_put(&b, " ", 1);
    buf_puts(&b, reply_reason(code));
    buf_put(&b, "\r\n", 2);
    bool top = true;
    for (const struct sip_hdr *h = m->hdrs; h < m->hdrs + m->nhdrs; h++) {
        /* nothing goes back that a parser could take apart differently: a
         * request refused for such bytes there is not answered (a CSeq the
         * parser refused goes back as it came: RFC 4475 scalar02 wants 400) */
        if (echoed(h->kind) && !sipmsg_value_clean(h->value)) return -1;
        switch (h->kind) {
        case SIP_HDR_VIA:
            buf_puts(&b, "Via: ");
            if (top)
                put_top_via(&b, h->value, src);
            else
                buf_put_slice(&b, h->value);
            top = false;
            buf_puts(&b, "\r\n");
            break;
        case SIP_HDR_FROM:
        case SIP_HDR_CALL_ID:
        case SIP_HDR_CSEQ:
            buf_put_slice(&b, h->name);
            buf_puts(&b, ": ");
            buf_put_slice(&b, h->value);
            buf_puts(&b, "\r\n");
            break;
        case SIP_HDR_TO:
            put_to(&b, m, h->value, code);
            break;
        }
    }
    if (warning) buf_printf(&b, "Warning: 399 sipedge \"%s\"\r\n", warning);
    if (extra) buf_puts(&b, extra);
    buf_puts(&b, "Server: sipedge/" SIPEDGE_VERSION "\r\nContent-Length: 0\r\n\r\n");
    return buf_ok(&b) ? (ssize_t)b.len : -1;
}

void reply_dst(const struct sip_msg *m, const struct rx_info *rx, struct netaddr *dst)
{
    *dst = rx->src;
    const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_VIA);
    struct sip_via v;
    if (rx->proto != SIP_TRANSPORT_UDP || !h || sipuri_parse_via(h->value, &v) < 0 || v.has_rport)
        return;
    int port = v.port ? v.port : 5060;
    if (dst->sa.sa_family == AF_INET)
        dst->in4.sin_port = htons((uint16_t)port);
    else
        dst->in6.sin6_port = htons((uint16_t)port);
}

int reply__send_back(struct worker *w, const struct rx_info *rx, const struct netaddr *dst,
                     const char *buf, size_t len)
{
    int rc = worker_send(w, rx->proto, rx->proto == SIP_TRANSPORT_UDP ? rx->listener : -1, dst,
                         rx->conn, NULL, buf, len, NULL);
    if (rc < 0) LOG_RL(LOG_DEBUG, "reply not sent: %s", strerror(-rc));
    return rc;
}

void reply__send(struct worker *w, const struct rx_info *rx, const struct sip_msg *m, int code,
                 const char *warning, const char *extra)
{
    if (m->is_request && m->method == SIP_METHOD_ACK) return; /* never answer an ACK */
    ssize_t n = reply_build(m, &rx->src, code, warning, extra, proxy__of(w)->aux, OUT_CAP);
    if (n < 0) return;
    struct netaddr dst;
    reply_dst(m, rx, &dst);
    STAT_INC(w, own_replies);
    reply__send_back(w, rx, &dst, proxy__of(w)->aux, (size_t)n);
}

void reply__send_retry(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                       int code, const char *warning, unsigned retry_after_s)
{
    char ra[48];
    struct buf b = buf_make(ra, sizeof ra - 1);
    buf_puts(&b, "Retry-After: ");
    buf_put_u(&b, retry_after_s);
    buf_puts(&b, "\r\n");
    ra[b.len] = 0;
    reply__send(w, rx, m, code, warning, ra);
}
