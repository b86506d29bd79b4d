/* Builds an outgoing message by splicing edits into the received bytes. */
#include "core/rewrite.h"

#include "core/sipuri.h"

void rewrite_init(struct rewrite *rw, const char *src, size_t src_len)
{
    rw->src = src;
    rw->src_len = src_len;
    rw->nedits = 0;
    rw->out_len = src_len;
    rw->overflow = false;
    rw->scratch_used = 0;
}

void rewrite_splice(struct rewrite *rw, size_t off, size_t del, struct slice ins)
{
    if (rw->nedits == RW_MAX_EDITS || off + del > rw->src_len) {
        rw->overflow = true;
        return;
    }
    /* keep edits sorted by offset, stable for equal offsets, except that a
     * pure insertion goes before a deletion starting at the same offset
     * (else the build sees them overlap) */
    unsigned i = rw->nedits;
    while (i > 0 && (rw->edits[i - 1].off > off ||
                     (rw->edits[i - 1].off == off && del == 0 && rw->edits[i - 1].del > 0))) {
        rw->edits[i] = rw->edits[i - 1];
        i--;
    }
    rw->edits[i] = (struct rw_edit){off, del, ins};
    rw->nedits++;
    rw->out_len = rw->out_len - del + ins.len;
}

/* Appends pre, then mid, then the decimal num when num >= 0, then post to the
 * rewrite's scratch space and returns the whole as one slice (no printf: this
 * runs for every forwarded message). Sets overflow when it does not fit. */
static struct slice scratch_put(struct rewrite *rw, const char *pre, struct slice mid, int num,
                                const char *post)
{
    char digits[12];
    size_t nd = 0;
    if (num >= 0) {
        unsigned v = (unsigned)num;
        do
            digits[sizeof digits - 1 - nd++] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
    }
    size_t npre = strlen(pre), npost = strlen(post);
    size_t n = npre + mid.len + nd + npost;
    if (n > sizeof rw->scratch - rw->scratch_used) {
        rw->overflow = true;
        return SLICE_NULL;
    }
    char *dst = rw->scratch + rw->scratch_used, *o = dst;
    memcpy(o, pre, npre);
    o += npre;
    if (mid.len) memcpy(o, mid.ptr, mid.len);
    o += mid.len;
    memcpy(o, digits + sizeof digits - nd, nd);
    o += nd;
    memcpy(o, post, npost);
    rw->scratch_used += n;
    return slice_make(dst, n);
}

/* Offset of the empty line that ends the header block. */
static size_t empty_line_off(const struct rewrite *rw, const struct sip_msg *m)
{
    size_t off = m->headers_len;
    if (off >= 2 && rw->src[off - 2] == '\r') return off - 2;
    return off ? off - 1 : 0;
}

static size_t first_header_off(const struct rewrite *rw, const struct sip_msg *m)
{
    if (m->nhdrs) return sipmsg_off(rw->src, m->hdrs->line);
    return empty_line_off(rw, m); /* no headers: before the empty line */
}

void rewrite_init_msg(struct rewrite *rw, const struct sip_msg *m, const char *src)
{
    rewrite_init(rw, src, sipmsg_off(src, m->body) + m->body.len);
    if (m->content_length >= 0) return; /* the parser framed the body by it */
    struct slice cl = scratch_put(rw, "Content-Length: ", SLICE_NULL, (int)m->body.len, "\r\n");
    rewrite_splice(rw, empty_line_off(rw, m), 0, cl);
}

void rewrite_add_top(struct rewrite *rw, const struct sip_msg *m, struct slice line)
{
    rewrite_splice(rw, first_header_off(rw, m), 0, line);
}

void rewrite_add_before(struct rewrite *rw, const struct sip_msg *m, enum sip_hdr_kind kind,
                        struct slice line)
{
    const struct sip_hdr *h = sipmsg_hdr(m, kind);
    size_t off = h ? sipmsg_off(rw->src, h->line) : first_header_off(rw, m);
    rewrite_splice(rw, off, 0, line);
}

void rewrite_remove_value(struct rewrite *rw, const struct sip_msg *m, const struct sip_hdr *h)
{
    (void)m;
    bool first = !(h->flags & SIP_HF_SAME_LINE), last = h->flags & SIP_HF_LAST_IN_LINE;
    size_t vs = sipmsg_off(rw->src, h->value), ve = vs + h->value.len;
    if (first && last) {
        size_t ls = sipmsg_off(rw->src, h->line);
        rewrite_splice(rw, ls, h->line.len, SLICE_NULL);
    } else if (first) {
        /* "a, b" -> "b": up to the start of the next value */
        size_t next = sipmsg_off(rw->src, h[1].value);
        rewrite_splice(rw, vs, next - vs, SLICE_NULL);
    } else {
        /* "a, b" -> "a": from the end of the previous value */
        size_t prev_end = sipmsg_off(rw->src, h[-1].value) + h[-1].value.len;
        rewrite_splice(rw, prev_end, ve - prev_end, SLICE_NULL);
    }
}

void rewrite_dec_max_forwards(struct rewrite *rw, const struct sip_msg *m, int dflt)
{
    const struct sip_hdr *h = sipmsg_hdr(m, SIP_HDR_MAX_FORWARDS);
    if (h) {
        int v = m->max_forwards > 0 ? m->max_forwards - 1 : 0;
        struct slice s = scratch_put(rw, "", SLICE_NULL, v, "");
        rewrite_splice(rw, sipmsg_off(rw->src, h->value), h->value.len, s);
    } else {
        struct slice s = scratch_put(rw, "Max-Forwards: ", SLICE_NULL, dflt, "\r\n");
        rewrite_add_top(rw, m, s);
    }
}

void rewrite_via_received(struct rewrite *rw, const struct sip_hdr *h, struct slice addr, int rport)
{
    struct sip_via v;
    if (sipuri_parse_via(h->value, &v) < 0) {
        rw->overflow = true;
        return;
    }
    if (rport > 0 && v.has_rport && v.rport.len == 0) {
        struct slice s = scratch_put(rw, "=", SLICE_NULL, rport, "");
        rewrite_splice(rw, sipmsg_off(rw->src, v.rport), 0, s);
    }
    if (addr.len) {
        size_t end = sipmsg_off(rw->src, h->value) + h->value.len;
        if (v.received.len) {
            /* replace an existing received value */
            struct slice s = scratch_put(rw, "", addr, -1, "");
            rewrite_splice(rw, sipmsg_off(rw->src, v.received), v.received.len, s);
        } else {
            struct slice s = scratch_put(rw, ";received=", addr, -1, "");
            rewrite_splice(rw, end, 0, s);
        }
    }
}

void rewrite_remove_top(struct rewrite *rw, const struct sip_msg *m, enum sip_hdr_kind kind,
                        unsigned n)
{
    const struct sip_hdr *h = sipmsg_hdr(m, kind);
    if (n == 0 || !h) return;
    /* the first n values of a kind are the leading values of their lines:
     * each line loses either everything or a prefix up to a kept value */
    const struct sip_hdr *end = m->hdrs + m->nhdrs;
    while (n > 0 && h < end) {
        if (h->kind != kind) {
            h++;
            continue;
        }
        const struct sip_hdr *start = h;
        while (n > 0 && !(h->flags & SIP_HF_LAST_IN_LINE)) {
            h++;
            n--;
        }
        if (n > 0) {
            /* every value of this line goes: drop the line */
            rewrite_splice(rw, sipmsg_off(rw->src, start->line), start->line.len, SLICE_NULL);
            n--;
        } else {
            /* h is the first value kept: cut up to its start */
            size_t vs = sipmsg_off(rw->src, start->value);
            rewrite_splice(rw, vs, sipmsg_off(rw->src, h->value) - vs, SLICE_NULL);
        }
        h++;
    }
}

ssize_t rewrite_build(struct rewrite *rw, char *out, size_t cap)
{
    if (rw->overflow || rw->out_len > cap) return -1;
    size_t pos = 0, o = 0;
    for (unsigned i = 0; i < rw->nedits; i++) {
        const struct rw_edit *e = &rw->edits[i];
        if (e->off < pos) return -1; /* overlapping edits */
        memcpy(out + o, rw->src + pos, e->off - pos);
        o += e->off - pos;
        if (e->ins.len) memcpy(out + o, e->ins.ptr, e->ins.len);
        o += e->ins.len;
        pos = e->off + e->del;
    }
    memcpy(out + o, rw->src + pos, rw->src_len - pos);
    o += rw->src_len - pos;
    return (ssize_t)o;
}
