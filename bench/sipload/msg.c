/* sipload's messages: the INVITE template patched per call, and the
 * printf-free builders of REGISTER, ACK, BYE and stateless responses. */
#include <stdio.h>
#include <string.h>

#include "bench/sipload/sipload.h"
#include "core/sipuri.h"

static const char SDP[] = "v=0\r\n"
                          "o=sipload 1 1 IN IP4 127.0.0.1\r\n"
                          "s=-\r\n"
                          "c=IN IP4 127.0.0.1\r\n"
                          "t=0 0\r\n"
                          "m=audio 40000 RTP/AVP 0 8 101\r\n"
                          "a=rtpmap:0 PCMU/8000\r\n"
                          "a=rtpmap:8 PCMA/8000\r\n"
                          "a=rtpmap:101 telephone-event/8000\r\n"
                          "a=sendrecv\r\n";

const char *sl_proto_name(uint8_t proto)
{
    return proto == SL_TLS ? "tls" : proto == SL_TCP ? "tcp" : "udp";
}

static const char *via_name(uint8_t proto)
{
    return proto == SL_TLS ? "TLS" : proto == SL_TCP ? "TCP" : "UDP";
}

/* ---- templates ---- */

void tmpl_init(struct tmpl *t)
{
    t->len = 0;
    t->nf = 0;
    t->overflow = false;
}

void tmpl_lit(struct tmpl *t, const char *s)
{
    size_t n = strlen(s);
    if (t->overflow || n > sizeof t->text - t->len) {
        t->overflow = true;
        return;
    }
    memcpy(t->text + t->len, s, n);
    t->len = (uint16_t)(t->len + n);
}

void tmpl_field(struct tmpl *t, enum tfield kind, unsigned width)
{
    if (t->overflow || t->nf == TMPL_FIELDS || width > sizeof t->text - t->len) {
        t->overflow = true;
        return;
    }
    t->f[t->nf].off = t->len;
    t->f[t->nf].kind = (uint8_t)kind;
    t->f[t->nf].width = (uint8_t)width;
    t->nf++;
    memset(t->text + t->len, '#', width);
    t->len = (uint16_t)(t->len + width);
}

static void put_hex_at(char *p, uint64_t v, unsigned width)
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = width; i-- > 0; v >>= 4)
        p[i] = hex[v & 15];
}

static void put_dec_at(char *p, uint64_t v, unsigned width)
{
    for (unsigned i = width; i-- > 0; v /= 10)
        p[i] = (char)('0' + v % 10);
}

size_t tmpl_render(const struct tmpl *t, char *out, size_t cap, const uint64_t vals[TF__COUNT])
{
    if (t->overflow || t->len > cap) return 0;
    memcpy(out, t->text, t->len);
    for (unsigned i = 0; i < t->nf; i++) {
        char *p = out + t->f[i].off;
        if (t->f[i].kind == TF_ID)
            put_hex_at(p, vals[TF_ID], t->f[i].width);
        else
            put_dec_at(p, vals[TF_USER], t->f[i].width);
    }
    return t->len;
}

bool sl_parse_id(struct slice s, uint64_t *id)
{
    uint64_t v = 0;
    if (s.len < TF_ID_W) return false;
    for (unsigned i = 0; i < TF_ID_W; i++) {
        char ch = s.ptr[i];
        unsigned d = ch >= '0' && ch <= '9'   ? (unsigned)(ch - '0')
                     : ch >= 'a' && ch <= 'f' ? (unsigned)(ch - 'a' + 10)
                                              : 16;
        if (d == 16) return false;
        v = v << 4 | d;
    }
    *id = v;
    return true;
}

/* ---- pieces ---- */

void msg_via(char *out, size_t cap, uint8_t proto, const struct netaddr *local)
{
    char a[NETADDR_STRLEN];
    netaddr_str(local, a, sizeof a);
    snprintf(out, cap, "SIP/2.0/%s %s", via_name(proto), a);
}

void msg_contact(char *out, size_t cap, const char *user, uint8_t proto,
                 const struct netaddr *local)
{
    char a[NETADDR_STRLEN];
    netaddr_str(local, a, sizeof a);
    snprintf(out, cap, "<sip:%s@%s%s%s>", user, a,
             proto == SL_UDP ? "" : ";transport=", proto == SL_UDP ? "" : sl_proto_name(proto));
}

void msg_phone_user(char out[16], uint32_t idx)
{
    out[0] = 'p';
    put_dec_at(out + 1, idx, TF_USER_W);
    out[1 + TF_USER_W] = 0;
}

static void put_user(struct buf *b, uint32_t idx)
{
    char u[1 + TF_USER_W];
    u[0] = 'p';
    put_dec_at(u + 1, idx, TF_USER_W);
    buf_put(b, u, sizeof u);
}

static void put_call_id(struct buf *b, uint64_t id, int thread)
{
    buf_puts(b, "Call-ID: ");
    buf_put_hex(b, id, TF_ID_W);
    buf_puts(b, "-");
    buf_put_hex(b, (uint64_t)thread, 2);
    buf_puts(b, "@sipload\r\n");
}

static void put_body(struct buf *b, bool sdp)
{
    if (sdp) {
        buf_puts(b, "Content-Type: application/sdp\r\nContent-Length: ");
        buf_put_u(b, sizeof SDP - 1);
        buf_puts(b, "\r\n\r\n");
        buf_put(b, SDP, sizeof SDP - 1);
    } else {
        buf_puts(b, "Content-Length: 0\r\n\r\n");
    }
}

/* ---- the UAC ---- */

void msg_invite_tmpl(struct tmpl *t, const struct sl_opts *o, const struct sl_sender *s, int thread,
                     bool callee_field)
{
    char th[8];
    snprintf(th, sizeof th, "-%02x", thread & 0xff);
    tmpl_init(t);
    for (int k = 0; k < 2; k++) { /* the Request-URI, then the To header */
        tmpl_lit(t, k == 0 ? "INVITE sip:" : "To: <sip:");
        if (callee_field) {
            tmpl_lit(t, "p");
            tmpl_field(t, TF_USER, TF_USER_W);
        } else {
            tmpl_lit(t, "uas");
        }
        tmpl_lit(t, "@");
        tmpl_lit(t, o->domain);
        tmpl_lit(t, k == 0 ? " SIP/2.0\r\nVia: " : ">\r\n");
        if (k == 0) {
            tmpl_lit(t, s->via);
            tmpl_lit(t, ";branch=z9hG4bK-sl");
            tmpl_field(t, TF_ID, TF_ID_W);
            tmpl_lit(t, "i;rport\r\nMax-Forwards: 70\r\nFrom: <sip:sipload@");
            tmpl_lit(t, o->domain);
            tmpl_lit(t, ">;tag=");
            tmpl_field(t, TF_ID, TF_ID_W);
            tmpl_lit(t, "\r\n");
        }
    }
    tmpl_lit(t, "Call-ID: ");
    tmpl_field(t, TF_ID, TF_ID_W);
    tmpl_lit(t, th);
    tmpl_lit(t, "@sipload\r\nCSeq: 1 INVITE\r\nContact: ");
    tmpl_lit(t, s->contact);
    tmpl_lit(t, "\r\nUser-Agent: sipload\r\n");
    char body[TMPL_MAX];
    struct buf b = buf_make(body, sizeof body - 1);
    put_body(&b, o->sdp);
    body[b.len] = 0;
    tmpl_lit(t, body);
}

/* Via (branch: the call id and kind, 'i' INVITE, 'a' ACK, 'b' BYE),
 * Max-Forwards and From of a UAC request. */
static void put_via_from(struct buf *b, const struct sl_opts *o, const struct sl_sender *s,
                         uint64_t id, char kind)
{
    char k[2] = {kind, 0};
    buf_puts(b, "Via: ");
    buf_puts(b, s->via);
    buf_puts(b, ";branch=z9hG4bK-sl");
    buf_put_hex(b, id, TF_ID_W);
    buf_puts(b, k);
    buf_puts(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <sip:sipload@");
    buf_puts(b, o->domain);
    buf_puts(b, ">;tag=");
    buf_put_hex(b, id, TF_ID_W);
    buf_puts(b, "\r\n");
}

void msg_ack_bye(struct buf *b, const struct sl_opts *o, const struct sl_sender *s, int thread,
                 const struct sl_call *c, uint64_t id, bool bye)
{
    buf_puts(b, bye ? "BYE " : "ACK ");
    buf_put(b, c->target, c->target_len);
    buf_puts(b, " SIP/2.0\r\n");
    put_via_from(b, o, s, id, bye ? 'b' : 'a');
    buf_put(b, c->route, c->route_len);
    buf_put(b, c->to, c->to_len);
    put_call_id(b, id, thread);
    buf_puts(b, bye ? "CSeq: 2 BYE\r\n" : "CSeq: 1 ACK\r\n");
    buf_puts(b, "Content-Length: 0\r\n\r\n");
}

void msg_ack_non2xx(struct buf *b, const struct sl_opts *o, const struct sl_sender *s, int thread,
                    uint64_t id, uint32_t callee, const struct sip_msg *resp)
{
    const struct sip_hdr *to = sipmsg_hdr(resp, SIP_HDR_TO);
    buf_puts(b, "ACK sip:");
    if (o->to_phones)
        put_user(b, callee);
    else
        buf_puts(b, "uas");
    buf_puts(b, "@");
    buf_puts(b, o->domain);
    buf_puts(b, " SIP/2.0\r\n");
    put_via_from(b, o, s, id, 'i'); /* the INVITE's transaction */
    if (to)
        buf_put_slice(b, to->line);
    else
        b->overflow = true;
    put_call_id(b, id, thread);
    buf_puts(b, "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
}

/* ---- phones ---- */

/* "sip:p<idx>@host" */
static void put_aor(struct buf *b, uint32_t idx, const char *host)
{
    buf_puts(b, "sip:");
    put_user(b, idx);
    buf_puts(b, "@");
    buf_puts(b, host);
}

void msg_register(struct buf *b, const struct sl_opts *o, uint32_t idx, uint8_t proto,
                  const struct netaddr *local, uint32_t seq)
{
    char a[NETADDR_STRLEN];
    netaddr_str(local, a, sizeof a);
    buf_puts(b, "REGISTER sip:");
    buf_puts(b, o->domain);
    buf_puts(b, " SIP/2.0\r\nVia: SIP/2.0/");
    buf_puts(b, via_name(proto));
    buf_puts(b, " ");
    buf_puts(b, a);
    buf_puts(b, ";branch=z9hG4bK-slr");
    buf_put_hex(b, idx, 8);
    buf_put_hex(b, seq, 8);
    buf_puts(b, ";rport\r\nMax-Forwards: 70\r\nFrom: <");
    put_aor(b, idx, o->domain);
    buf_puts(b, ">;tag=r");
    buf_put_hex(b, idx, 8);
    buf_puts(b, "\r\nTo: <");
    put_aor(b, idx, o->domain);
    buf_puts(b, ">\r\nCall-ID: r");
    buf_put_hex(b, idx, 8);
    buf_puts(b, "@sipload\r\nCSeq: ");
    buf_put_u(b, seq);
    buf_puts(b, " REGISTER\r\nContact: <");
    put_aor(b, idx, a);
    buf_puts(b, ";transport=");
    buf_puts(b, sl_proto_name(proto));
    buf_puts(b, ">\r\nExpires: ");
    buf_put_u(b, o->expires_s);
    buf_puts(b, "\r\nUser-Agent: sipload\r\nContent-Length: 0\r\n\r\n");
}

/* ---- stateless responses ---- */

/* Every line of kind k, in wire order, as received. */
static void copy_lines(struct buf *b, const struct sip_msg *m, enum sip_hdr_kind k)
{
    for (unsigned i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].kind == k && !(m->hdrs[i].flags & SIP_HF_SAME_LINE))
            buf_put_slice(b, m->hdrs[i].line);
}

/* The To line, with our tag added when it has none. */
static void put_to(struct buf *b, const struct sip_hdr *to, const char *tag)
{
    struct sip_addr a;
    if (!tag || sipuri_parse_addr(to->value, &a) < 0 || a.tag.ptr) {
        buf_put_slice(b, to->line);
        return;
    }
    buf_put(b, to->line.ptr, to->line.len - 2); /* the line ends with CRLF */
    buf_puts(b, ";tag=");
    buf_puts(b, tag);
    buf_puts(b, "\r\n");
}

void msg_response(struct buf *b, const struct sip_msg *m, int code, const char *reason,
                  const char *contact, const char *tag, bool sdp, bool expires)
{
    const struct sip_hdr *from = sipmsg_hdr(m, SIP_HDR_FROM), *to = sipmsg_hdr(m, SIP_HDR_TO),
                         *cid = sipmsg_hdr(m, SIP_HDR_CALL_ID), *cseq = sipmsg_hdr(m, SIP_HDR_CSEQ);
    if (!from || !to || !cid || !cseq || !sipmsg_hdr(m, SIP_HDR_VIA)) {
        b->overflow = true; /* nothing sensible to answer */
        return;
    }
    buf_puts(b, "SIP/2.0 ");
    buf_put_u(b, (uint64_t)code);
    buf_puts(b, " ");
    buf_puts(b, reason);
    buf_puts(b, "\r\n");
    copy_lines(b, m, SIP_HDR_VIA);
    if (m->method == SIP_METHOD_INVITE && code > 100 && code < 300)
        copy_lines(b, m, SIP_HDR_RECORD_ROUTE);
    buf_put_slice(b, from->line);
    put_to(b, to, code > 100 ? tag : NULL);
    buf_put_slice(b, cid->line);
    buf_put_slice(b, cseq->line);
    if (contact) {
        buf_puts(b, "Contact: ");
        buf_puts(b, contact);
        buf_puts(b, "\r\n");
    }
    if (expires) {
        copy_lines(b, m, SIP_HDR_CONTACT);
        copy_lines(b, m, SIP_HDR_EXPIRES);
    }
    put_body(b, sdp);
}
