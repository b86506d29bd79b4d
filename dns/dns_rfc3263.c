/* RFC 3263 server location: the NAPTR → SRV → A/AAAA stages and the targets they yield. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sipuri.h"
#include "dns/dns-int.h"

enum stage { ST_NAPTR = 1, ST_SRV, ST_ADDR, ST_DONE };

/* Errors that say the servers cannot be reached (or we cannot ask them):
 * asking them the next question would only take as long again. Not
 * -ECONNREFUSED: c-ares 1.18 also reports a REFUSED answer that way, and
 * resolvers that refuse NAPTR or SRV queries but answer A exist (dnsmasq
 * without upstreams); the next, cheap, question tells the two apart. */
static bool err_is_hard(int err)
{
    return err == -ETIMEDOUT || err == -ENOMEM || err == -EAGAIN || err == -ECANCELED;
}

static uint64_t rng_next(struct dns_worker *dw)
{
    /* xorshift64*: RFC 2782 weighting needs spread, not secrecy */
    dw->rng ^= dw->rng >> 12;
    dw->rng ^= dw->rng << 25;
    dw->rng ^= dw->rng >> 27;
    return dw->rng * 0x2545f4914f6cdd1dull;
}

/* prefix + "." + host, when it is a valid name. */
static bool name_join(char out[DNS_NAME_MAX + 1], const char *prefix, const char *host)
{
    char tmp[DNS_NAME_MAX + 64];
    int n = snprintf(tmp, sizeof(tmp), "%s.%s", prefix, host);
    return n > 0 && (size_t)n < sizeof(tmp) && dns__name_copy(tmp, (size_t)n, out) >= 0;
}

static void note_err(struct dns_req *r, int err)
{
    if (err == 0 || err == -ENOENT) return;
    if (err_is_hard(err)) {
        if (!r->err_hard) r->err_hard = err;
        r->stage_hard = true;
    } else {
        r->err_soft = err;
    }
}

/* ---- taking in answers ------------------------------------------------ */

static void naptr_answer(struct dns_req *r, const struct dns_rrset *rs)
{
    for (unsigned i = 0; i < rs->n && r->nsrvq < DNS_SRVQ_MAX; i++) {
        const struct dns_rr *x = &rs->rr[i];
        bool dup = false;
        /* a sips: URI is reached over TLS only (RFC 3263 §4.1) */
        if (r->sips && x->naptr.proto != SIP_TRANSPORT_TLS) continue;
        for (unsigned j = 0; j < r->nsrvq && !dup; j++)
            dup = r->srvq[j].proto == x->naptr.proto && !strcmp(r->srvq[j].name, x->naptr.repl);
        if (dup) continue;
        if (r->nsrvq == 0) r->fallback_proto = x->naptr.proto;
        memcpy(r->srvq[r->nsrvq].name, x->naptr.repl, strlen(x->naptr.repl) + 1);
        r->srvq[r->nsrvq++].proto = x->naptr.proto;
    }
}

static void srv_answer(struct dns_req *r, uint8_t slot, const struct dns_rrset *rs)
{
    for (unsigned i = 0; i < rs->n && r->ncand < DNS_SRV_COLLECT; i++) {
        const struct dns_rr *x = &rs->rr[i];
        uint8_t proto = r->srvq[slot].proto;
        bool dup = false;
        for (unsigned j = 0; j < r->ncand && !dup; j++)
            dup = r->cand[j].proto == proto && r->cand[j].port == x->srv.port &&
                  !strcmp(r->cand[j].name, x->srv.target);
        if (dup) continue;
        struct dns_cand *c = &r->cand[r->ncand++];
        memcpy(c->name, x->srv.target, strlen(x->srv.target) + 1);
        c->port = x->srv.port;
        c->prio = x->srv.prio;
        c->weight = x->srv.weight;
        c->proto = proto;
        c->group = slot;
    }
}

static void addr_answer(struct dns_req *r, uint8_t slot, const struct dns_rrset *rs)
{
    struct dns_cand_addrs *ad = &r->addrs[slot / 2];

    for (unsigned i = 0; i < rs->n; i++) {
        if (rs->type == DNS_QT_A && ad->na < DNS_MAX_TARGETS)
            ad->a[ad->na++] = rs->rr[i].a;
        else if (rs->type == DNS_QT_AAAA && ad->n6 < DNS_MAX_TARGETS)
            ad->a6[ad->n6++] = rs->rr[i].aaaa;
    }
}

void dns__rfc3263_answer(struct dns_req *r, uint8_t slot, const struct dns_rrset *rs, int err)
{
    if (err != 0 || !rs) {
        note_err(r, err ? err : -EIO);
        return;
    }
    switch (r->stage) {
    case ST_NAPTR:
        naptr_answer(r, rs);
        break;
    case ST_SRV:
        srv_answer(r, slot, rs);
        break;
    case ST_ADDR:
        addr_answer(r, slot, rs);
        break;
    }
}

/* ---- stages ----------------------------------------------------------- */

/* The resolution is over: hand it to dns_resolve() (synchronous) or queue
 * its callback for the next delivery point (asynchronous). */
static void req_finish(struct dns_req *r, int status)
{
    struct dns_worker *dw = r->dw;

    r->stage = ST_DONE;
    r->status = dw->closing ? -ECANCELED : status;
    if (!r->async) return;
    r->next = NULL;
    *dw->done_tail = r;
    dw->done_tail = &r->next;
}

static void set_fallback(struct dns_req *r)
{
    struct dns_cand *c = &r->cand[0];

    memcpy(c->name, r->host, strlen(r->host) + 1);
    c->proto = r->fallback_proto;
    c->port = c->proto == SIP_TRANSPORT_TLS ? 5061 : 5060;
    c->prio = c->weight = 0;
    c->group = 0;
    r->ncand = 1;
}

/* The SRV queries of RFC 3263 §4.1 when NAPTR gave none. */
static void set_default_srvq(struct dns_req *r)
{
    static const struct {
        const char *prefix;
        uint8_t proto;
        bool sips_ok;
    } q[] = {
        {"_sip._udp", SIP_TRANSPORT_UDP, false},
        {"_sip._tcp", SIP_TRANSPORT_TCP, false},
        {"_sips._tcp", SIP_TRANSPORT_TLS, true},
        {"_sips._tls", SIP_TRANSPORT_TLS, true}, /* published by some SIP Servers */
    };

    r->nsrvq = 0;
    for (unsigned i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
        if (r->sips && !q[i].sips_ok) continue;
        if (!name_join(r->srvq[r->nsrvq].name, q[i].prefix, r->host)) continue;
        r->srvq[r->nsrvq++].proto = q[i].proto;
    }
}

static bool cand_before(const struct dns_cand *a, const struct dns_cand *b)
{
    return a->group < b->group || (a->group == b->group && a->prio < b->prio);
}

/* Orders the SRV targets: by query group, then priority, then within equal
 * priority the weighted random selection of RFC 2782. */
static void order_cands(struct dns_req *r)
{
    struct dns_cand *c = r->cand, t;
    unsigned n = r->ncand;

    for (unsigned i = 1; i < n; i++) /* stable insertion sort */
        for (unsigned j = i; j > 0 && cand_before(&c[j], &c[j - 1]); j--)
            t = c[j], c[j] = c[j - 1], c[j - 1] = t;
    for (unsigned lo = 0, hi; lo < n; lo = hi) {
        for (hi = lo + 1; hi < n && c[hi].group == c[lo].group && c[hi].prio == c[lo].prio; hi++)
            ;
        for (unsigned i = lo; i + 1 < hi; i++) {
            uint64_t sum = 0, pick, run = 0;
            unsigned k, z = i;
            /* weight 0 first, so it has a small chance (RFC 2782) */
            for (k = i; k < hi; k++)
                if (c[k].weight == 0) t = c[k], c[k] = c[z], c[z] = t, z++;
            for (k = i; k < hi; k++)
                sum += c[k].weight;
            pick = rng_next(r->dw) % (sum + 1);
            for (k = i; k < hi; k++) {
                run += c[k].weight;
                if (run >= pick) break;
            }
            if (k == hi) k = hi - 1;
            t = c[k], c[k] = c[i], c[i] = t;
        }
    }
}

static bool out_add(struct dns_req *r, const struct dns_cand *c, const struct netaddr *a)
{
    struct dns_target *t;

    if (netaddr_is_forbidden(a)) return true;
    for (unsigned i = 0; i < r->nout; i++)
        if (r->out[i].proto == c->proto && netaddr_eq(&r->out[i].addr, a)) return true;
    if (r->nout == DNS_MAX_TARGETS) return false;
    t = &r->out[r->nout++];
    t->proto = c->proto;
    t->addr = *a;
    t->priority = c->prio;
    t->weight = c->weight;
    return true;
}

static void build_targets(struct dns_req *r)
{
    struct netaddr a;

    for (unsigned i = 0; i < r->ncand; i++) {
        const struct dns_cand *c = &r->cand[i];
        const struct dns_cand_addrs *ad = &r->addrs[i];
        for (unsigned j = 0; j < ad->na; j++) {
            memset(&a, 0, sizeof(a));
            a.in4.sin_family = AF_INET;
            a.in4.sin_port = htons(c->port);
            a.in4.sin_addr = ad->a[j];
            a.len = sizeof(a.in4);
            if (!out_add(r, c, &a)) return;
        }
        for (unsigned j = 0; j < ad->n6; j++) {
            memset(&a, 0, sizeof(a));
            a.in6.sin6_family = AF_INET6;
            a.in6.sin6_port = htons(c->port);
            a.in6.sin6_addr = ad->a6[j];
            a.len = sizeof(a.in6);
            if (!out_add(r, c, &a)) return;
        }
    }
}

/* One lookup of the current stage, counted in r->pending until the cache
 * releases it. */
static void lookup(struct dns_req *r, const char *name, uint8_t type, uint8_t slot)
{
    r->pending++;
    dns__cache_lookup(r, name, type, slot);
}

/* Issues the lookups of r's current stage. The guard reference keeps
 * answers that come synchronously (cache hits, immediate failures) from
 * advancing r before the whole stage is issued. */
static void req_issue(struct dns_req *r)
{
    struct dns_worker *dw = r->dw;

    r->pending++;
    r->stage_hard = false;
    switch (r->stage) {
    case ST_NAPTR:
        lookup(r, r->host, DNS_QT_NAPTR, 0);
        break;
    case ST_SRV:
        for (unsigned i = 0; i < r->nsrvq; i++)
            lookup(r, r->srvq[i].name, DNS_QT_SRV, (uint8_t)i);
        break;
    case ST_ADDR:
        for (unsigned i = 0; i < r->ncand; i++) {
            if (dw->want_a) lookup(r, r->cand[i].name, DNS_QT_A, (uint8_t)(2 * i));
            if (dw->want_aaaa) lookup(r, r->cand[i].name, DNS_QT_AAAA, (uint8_t)(2 * i + 1));
        }
        break;
    }
    dns__rfc3263_release(r);
}

/* Every lookup of the stage answered: choose the next one. Recursion is
 * bounded: stages only move forward. */
static void req_advance(struct dns_req *r)
{
    switch (r->stage) {
    case ST_NAPTR:
        if (r->stage_hard) {
            req_finish(r, r->err_hard);
            return;
        }
        if (r->nsrvq == 0) {
            r->fallback_proto = r->sips ? SIP_TRANSPORT_TLS : SIP_TRANSPORT_UDP;
            set_default_srvq(r);
        }
        r->stage = ST_SRV;
        break;
    case ST_SRV:
        if (r->ncand == 0) {
            /* unreachable servers may hide SRV records: no A/AAAA guess */
            if (r->stage_hard) {
                req_finish(r, r->err_hard);
                return;
            }
            set_fallback(r);
        } else {
            order_cands(r);
            if (r->ncand > DNS_CAND_MAX) r->ncand = DNS_CAND_MAX;
        }
        r->stage = ST_ADDR;
        break;
    case ST_ADDR:
        build_targets(r);
        if (r->nout > 0)
            req_finish(r, 0);
        else
            req_finish(r, r->err_hard ? r->err_hard : r->err_soft ? r->err_soft : -ENOENT);
        return;
    default:
        return;
    }
    req_issue(r);
}

void dns__rfc3263_release(struct dns_req *r)
{
    assert(r->pending > 0);
    if (--r->pending == 0) req_advance(r);
}

/* ---- starting a resolution ------------------------------------------------ */

/* The transport targets will use, from the URI's ;transport= and scheme;
 * SIP_TRANSPORT_NONE when the combination is not supported. */
static uint8_t target_proto(uint8_t transport, bool sips)
{
    switch (transport) {
    case SIP_TRANSPORT_NONE:
        return sips ? SIP_TRANSPORT_TLS : SIP_TRANSPORT_UDP;
    case SIP_TRANSPORT_UDP:
        return sips ? SIP_TRANSPORT_NONE : transport; /* SIPS needs a reliable transport */
    case SIP_TRANSPORT_TCP:
    case SIP_TRANSPORT_TLS:
        return sips ? SIP_TRANSPORT_TLS : transport;
    default:
        return SIP_TRANSPORT_NONE;
    }
}

/* RFC 3263 §4.2: an IP literal is the one target. 1 or -errno. */
static int ip_literal(struct slice host, int port, uint8_t proto, struct dns_target *out,
                      unsigned *nout)
{
    int err = netaddr_from_ip(&out[0].addr, host,
                              port                         ? port
                              : proto == SIP_TRANSPORT_TLS ? 5061
                                                           : 5060);
    if (err < 0) return err;
    if (netaddr_is_forbidden(&out[0].addr)) return -EINVAL;
    out[0].proto = proto;
    out[0].priority = out[0].weight = 0;
    *nout = 1;
    return 1;
}

/* The first stage for what the URI gives (RFC 3263 §4.1, §4.2). */
static void req_first_stage(struct dns_req *r, int port, uint8_t transport, uint8_t proto)
{
    if (port) {
        /* RFC 3263 §4.2: a port means A/AAAA only */
        set_fallback(r);
        r->cand[0].port = (uint16_t)port;
        r->stage = ST_ADDR;
    } else if (transport != SIP_TRANSPORT_NONE) {
        if (proto == SIP_TRANSPORT_TLS) {
            if (name_join(r->srvq[r->nsrvq].name, "_sips._tcp", r->host))
                r->srvq[r->nsrvq++].proto = proto;
            if (name_join(r->srvq[r->nsrvq].name, "_sips._tls", r->host))
                r->srvq[r->nsrvq++].proto = proto;
        } else if (name_join(r->srvq[0].name,
                             proto == SIP_TRANSPORT_UDP ? "_sip._udp" : "_sip._tcp", r->host)) {
            r->srvq[r->nsrvq++].proto = proto;
        }
        r->stage = ST_SRV;
    } else {
        r->stage = ST_NAPTR;
    }
}

int dns__rfc3263_resolve(struct dns_worker *dw, const struct netaddr *src, struct slice host,
                         int port, uint8_t transport, bool sips, dns_cb cb, void *arg,
                         struct dns_target *out, unsigned *nout)
{
    struct dns_req *r;
    uint8_t proto;
    int err;

    if (port < 0 || port > 65535 || !cb || host.len == 0) return -EINVAL;
    proto = target_proto(transport, sips);
    if (proto == SIP_TRANSPORT_NONE) return -EPROTONOSUPPORT;
    if (host.len >= 2 && host.ptr[0] == '[' && host.ptr[host.len - 1] == ']')
        host = slice_make(host.ptr + 1, host.len - 2);
    if (memchr(host.ptr, ':', host.len) || sipuri_is_ipv4(host))
        return ip_literal(host, port, proto, out, nout);
    r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    err = dns__name_copy(host.ptr, host.len, r->host) < 0 ? -EINVAL : dns__req_admit(dw, r, src);
    if (err < 0) {
        free(r);
        return err;
    }
    r->cache_only = err == 1; /* cached answers still serve it, nothing is sent */
    r->dw = dw;
    r->cb = cb;
    r->arg = arg;
    r->sips = sips;
    r->fallback_proto = proto;
    req_first_stage(r, port, transport, proto);
    req_issue(r);
    if (r->stage == ST_DONE) { /* every step answered from the cache */
        err = r->status;
        if (err == -EAGAIN && r->cache_only) dns__req_refused(dw, r);
        if (err == 0) {
            memcpy(out, r->out, r->nout * sizeof(*out));
            *nout = r->nout;
            err = 1;
        }
        dns__req_release(dw, r);
        free(r);
    } else {
        assert(!r->cache_only); /* it sends nothing, so nothing is left to wait for */
        r->async = true;
        err = 0;
    }
    dns__timer_update(dw);
    return err;
}
