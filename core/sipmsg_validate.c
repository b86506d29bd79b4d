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

    for (unsigned i = m->first[SIP_HDR_CONTACT]; m->count[SIP_HDR_CONTACT] && i < m->nhdrs; i++) {
        if (m->hdrs[i].kind == SIP_HDR_CONTACT && !addr_ok(m->hdrs[i].value, true))
            return set_err(m, SIP_ERR_ADDRESS, m->hdrs[i].value);
    }
    /* Loose routing reads the top Route (ours?) and the one after it (the
     * next hop): those must be well formed. Later values are forwarded
     * untouched and, like Record-Route, not judged here (RFC 3261 §16.3). */
    for (unsigned i = 0; i < 2; i++) {
        const struct sip_hdr *r = sipmsg_hdr_nth(m, SIP_HDR_ROUTE, i);
        if (r && !addr_ok(r->value, false)) return set_err(m, SIP_ERR_ADDRESS, r->value);
    }
    return SIP_ERR_NONE;
}
