/* The built-in registrar (RFC 3261 §10.3) over the location map (registry/locmap.c). */
#include <errno.h>
#include <string.h>

#include "core/buf.h"
#include "core/proxy-int.h"
#include "core/reply.h"
#include "registry/locmap.h"

/* What was wrong with a REGISTER: its status code and Warning text. */
struct reg_err {
    int code;
    const char *warning;
};

/* "0.xxx" or "1[.000]" as thousandths (a q value the parser accepted). */
static uint16_t q_value(struct slice q)
{
    unsigned v = (unsigned)(q.ptr[0] - '0') * 1000, digits = 0;
    for (size_t k = 2; k < q.len && digits < 3; k++, digits++)
        v += (unsigned)(q.ptr[k] - '0') * (digits == 0 ? 100 : digits == 1 ? 10 : 1);
    return (uint16_t)(v > 1000 ? 1000 : v);
}

/* One Contact of the REGISTER as a binding: its URI, expiry (its own
 * expires parameter or dflt_exp seconds), q value and how it came. */
static bool contact_binding(struct worker *w, const struct rx_info *rx, const struct sip_addr *ca,
                            uint64_t dflt_exp, struct locmap_binding *b, struct reg_err *err)
{
    memset(b, 0, sizeof *b);
    memcpy(b->contact, ca->uri_text.ptr, ca->uri_text.len);
    b->contact_len = (uint16_t)ca->uri_text.len;
    uint64_t exp = dflt_exp;
    if (ca->expires.len && !slice_to_u64(ca->expires, UINT32_MAX, &exp)) {
        *err = (struct reg_err){400, "Bad Contact Expires"};
        return false;
    }
    b->expires_ms = exp ? w->now_ms + exp * 1000 : 0;
    b->q = ca->q.len ? q_value(ca->q) : 1000;
    b->proto = rx->proto;
    b->conn = rx->proto == SIP_TRANSPORT_UDP ? 0 : rx->conn;
    b->src = rx->src;
    return true;
}

/* The Contacts of m as bindings to add (or *star for "Contact: *", only
 * alone and with Expires: 0, RFC 3261 §10.3 step 6). has_exp: m had an
 * Expires header of dflt_exp seconds. */
static bool collect_bindings(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                             bool has_exp, uint64_t dflt_exp, struct locmap_binding *add,
                             unsigned *nadd, bool *star, struct reg_err *err)
{
    for (unsigned i = 0; i < m->count[SIP_HDR_CONTACT]; i++) {
        const struct sip_hdr *c = sipmsg_hdr_nth(m, SIP_HDR_CONTACT, i);
        struct sip_addr ca;
        if (sipuri_parse_addr(c->value, &ca) < 0) {
            *err = (struct reg_err){400, "Bad Contact"};
            return false;
        }
        if (ca.star) {
            if (m->count[SIP_HDR_CONTACT] != 1 || !has_exp || dflt_exp != 0) {
                *err = (struct reg_err){400, "Invalid Wildcard Contact"};
                return false;
            }
            *star = true;
            return true;
        }
        if (*nadd == LOCMAP_MAX_BINDINGS || ca.uri_text.len > LOCMAP_CONTACT_MAX) {
            *err = (struct reg_err){403, "Too Many Contacts"};
            return false;
        }
        if (!contact_binding(w, rx, &ca, dflt_exp, &add[(*nadd)++], err)) return false;
    }
    return true;
}

/* The AOR key of m's To (RFC 3261 §10.3: a sip or sips URI) into aor. */
static size_t aor_of(const struct sip_msg *m, char *aor, size_t cap, struct reg_err *err)
{
    struct sip_addr toa;
    if (sipuri_parse_addr(sipmsg_hdr(m, SIP_HDR_TO)->value, &toa) < 0) {
        *err = (struct reg_err){400, "Bad To"};
        return 0;
    }
    size_t n = locmap_aor_key(toa.uri_text, aor, cap);
    if (n == 0) *err = (struct reg_err){400, "AOR Must Be A SIP URI"};
    return n;
}

/* 200 OK listing the AOR's bindings after the change, each with the
 * seconds it has left. */
static void reply_bindings(struct worker *w, const struct rx_info *rx, const struct sip_msg *m,
                           const struct locmap_binding *cur, unsigned ncur)
{
    char extra[LOCMAP_MAX_BINDINGS * (LOCMAP_CONTACT_MAX + 32)];
    struct buf b = buf_make(extra, sizeof extra - 1);
    for (unsigned i = 0; i < ncur; i++) {
        uint64_t left = cur[i].expires_ms > w->now_ms ? (cur[i].expires_ms - w->now_ms) / 1000 : 0;
        buf_printf(&b, "Contact: <%.*s>;expires=%llu\r\n", (int)cur[i].contact_len, cur[i].contact,
                   (unsigned long long)left);
    }
    extra[b.len] = 0;
    reply__send(w, rx, m, 200, NULL, extra);
}

void registrar__register(struct worker *w, const struct rx_info *rx, const struct sip_msg *m)
{
    struct reg_err err = {0, NULL};
    char aor[LOCMAP_AOR_MAX];
    size_t aor_len = aor_of(m, aor, sizeof aor, &err);
    uint64_t dflt_exp = 3600;
    const struct sip_hdr *eh = sipmsg_hdr(m, SIP_HDR_EXPIRES);
    if (aor_len && eh && !slice_to_u64(eh->value, UINT32_MAX, &dflt_exp))
        err = (struct reg_err){400, "Bad Expires"};
    struct locmap_binding add[LOCMAP_MAX_BINDINGS];
    unsigned nadd = 0;
    bool star = false;
    if (err.code || !collect_bindings(w, rx, m, eh != NULL, dflt_exp, add, &nadd, &star, &err)) {
        reply__send(w, rx, m, err.code, err.warning, NULL);
        return;
    }
    struct locmap_binding cur[LOCMAP_MAX_BINDINGS];
    unsigned ncur = 0;
    int rc = locmap_update(proxy__of(w)->loc, slice_make(aor, aor_len), star, add, nadd, w->now_ms,
                           cur, &ncur);
    if (rc < 0) {
        reply__send(w, rx, m, rc == -ENOSPC ? 403 : 500, rc == -ENOSPC ? "Too Many Bindings" : NULL,
                    NULL);
        return;
    }
    reply_bindings(w, rx, m, cur, ncur);
}
