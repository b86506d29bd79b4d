/* Per-worker DNS answer cache: records by (name, type), kept by TTL, LRU, one query in flight. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/log.h"
#include "core/sipuri.h"
#include "dns/dns-int.h"

#include "core/worker.h"

#define DNS_TTL_MAX_S 3600 /* bounds how stale a changed record can be */
#define DNS_NEG_TTL_S 30   /* negative answers: at most this, and when no SOA */
#define DNS_RR_MAX    16   /* records kept from one answer */
#define QCLASS_IN     1

/* A resolution waiting on a pending cache entry. */
struct waiter {
    struct waiter *next;
    struct dns_req *req;
    uint8_t slot; /* which of the request's lookups this is */
};

/* One (name, type) answer: pending while its query is in flight (then not
 * on the LRU list, never evicted), resolved afterwards. */
struct dns_centry {
    struct dns_centry *hnext;       /* bucket chain */
    struct dns_centry *prev, *next; /* LRU list, resolved entries only */
    struct dns_worker *dw;
    struct waiter *waiters; /* pending only */
    uint64_t hash;
    uint64_t expires; /* resolved: loop time at which it goes stale */
    int status;       /* resolved: 0 (rs.n records), -ENOENT, or a remembered failure */
    bool pending;
    bool in_lru;
    struct dns_rrset rs; /* rs.type is part of the key */
    char name[];
};

/* Keyed per process (core/hash.h) and per worker (dw->seed), so names a
 * peer chooses cannot be made to share a chain. */
static uint64_t name_hash(const struct dns_worker *dw, const char *name, uint8_t type)
{
    struct hash_state h;

    hash_begin(&h);
    hash_update(&h, &dw->seed, sizeof(dw->seed));
    hash_update(&h, name, strlen(name));
    hash_update(&h, &type, sizeof(type));
    return hash_final(&h);
}

/* ---- parsing answers into records ------------------------------------ */

static uint16_t rd16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int skip_name(const unsigned char *p, int len, int off)
{
    while (off < len) {
        unsigned l = p[off];
        if (l == 0) return off + 1;
        if ((l & 0xc0) == 0xc0) return off + 2 <= len ? off + 2 : -1;
        if (l & 0xc0) return -1;
        off += 1 + (int)l;
    }
    return -1;
}

/* Seconds an answer may be cached: a positive answer's smallest answer-RR
 * TTL; a negative one's min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), or
 * DNS_NEG_TTL_S without an SOA. Capped either way; 0 means do not cache. */
static uint32_t answer_ttl(const unsigned char *p, int len, bool negative)
{
    uint32_t ttl = UINT32_MAX;
    unsigned qd, an, ns;
    int off = 12;

    if (p && len >= 12) {
        qd = rd16(p + 4);
        an = rd16(p + 6);
        ns = rd16(p + 8);
        for (unsigned i = 0; i < qd && off >= 0; i++) {
            off = skip_name(p, len, off);
            off = off >= 0 && off + 4 <= len ? off + 4 : -1;
        }
        for (unsigned i = 0; i < an + ns && off >= 0; i++) {
            uint32_t t;
            uint16_t type, rdlen;
            off = skip_name(p, len, off);
            if (off < 0 || off + 10 > len) break;
            type = rd16(p + off);
            t = rd32(p + off + 4);
            rdlen = rd16(p + off + 8);
            off += 10;
            if (off + rdlen > len) break;
            if (t > INT32_MAX) t = 0; /* RFC 2181 §8 */
            if (i < an && !negative) {
                if (t < ttl) ttl = t;
            } else if (i >= an && negative && type == DNS_QT_SOA && rdlen >= 22) {
                uint32_t min = rd32(p + off + rdlen - 4);
                if (min < t) t = min;
                if (t < ttl) ttl = t;
            }
            off += rdlen;
        }
    }
    if (negative) return ttl < DNS_NEG_TTL_S ? ttl : DNS_NEG_TTL_S;
    if (ttl == UINT32_MAX) return 0;
    return ttl < DNS_TTL_MAX_S ? ttl : DNS_TTL_MAX_S;
}

static uint8_t naptr_proto(const unsigned char *service)
{
    struct slice s = slice_make((const char *)service, strlen((const char *)service));
    if (slice_case_eq_lit(s, "SIP+D2U")) return SIP_TRANSPORT_UDP;
    if (slice_case_eq_lit(s, "SIP+D2T")) return SIP_TRANSPORT_TCP;
    if (slice_case_eq_lit(s, "SIPS+D2T")) return SIP_TRANSPORT_TLS;
    return SIP_TRANSPORT_NONE;
}

/* Allocates rs->rr for n records plus `strings` bytes of names. */
static char *rr_alloc(struct dns_rrset *rs, unsigned n, size_t strings)
{
    rs->rr = malloc(n * sizeof(struct dns_rr) + strings + 1);
    rs->n = 0;
    return rs->rr ? (char *)(rs->rr + n) : NULL;
}

static int parse_addrs(struct dns_rrset *rs, const unsigned char *abuf, int alen)
{
    int n = DNS_RR_MAX, st;

    if (rs->type == DNS_QT_A) {
        struct ares_addrttl at[DNS_RR_MAX];
        st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
        if (st != ARES_SUCCESS) return dns__ares_errno(st);
        if (n <= 0) return -ENOENT;
        if (!rr_alloc(rs, (unsigned)n, 0)) return -ENOMEM;
        for (int i = 0; i < n; i++)
            rs->rr[i].a = at[i].ipaddr;
    } else {
        struct ares_addr6ttl at[DNS_RR_MAX];
        st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
        if (st != ARES_SUCCESS) return dns__ares_errno(st);
        if (n <= 0) return -ENOENT;
        if (!rr_alloc(rs, (unsigned)n, 0)) return -ENOMEM;
        for (int i = 0; i < n; i++)
            memcpy(&rs->rr[i].aaaa, &at[i].ip6addr, sizeof(rs->rr[i].aaaa));
    }
    rs->n = (uint8_t)n;
    return 0;
}

static int parse_srv(struct dns_rrset *rs, const unsigned char *abuf, int alen)
{
    struct ares_srv_reply *head = NULL;
    char names[DNS_RR_MAX][DNS_NAME_MAX + 1];
    const struct ares_srv_reply *s;
    unsigned n = 0;
    size_t strings = 0;
    char *sp;
    int st = ares_parse_srv_reply(abuf, alen, &head);

    if (st != ARES_SUCCESS) return dns__ares_errno(st);
    /* "." (no service here, RFC 2782) and invalid names are dropped */
    for (s = head; s && n < DNS_RR_MAX; s = s->next) {
        int len = dns__name_copy(s->host, strlen(s->host), names[n]);
        if (len < 0) continue;
        strings += (size_t)len + 1;
        n++;
    }
    if (n == 0) {
        ares_free_data(head);
        return -ENOENT;
    }
    sp = rr_alloc(rs, n, strings);
    if (!sp) {
        ares_free_data(head);
        return -ENOMEM;
    }
    n = 0;
    for (s = head; s && n < DNS_RR_MAX; s = s->next) {
        char tmp[DNS_NAME_MAX + 1];
        int len = dns__name_copy(s->host, strlen(s->host), tmp);
        if (len < 0) continue;
        memcpy(sp, tmp, (size_t)len + 1);
        rs->rr[n].srv.prio = s->priority;
        rs->rr[n].srv.weight = s->weight;
        rs->rr[n].srv.port = s->port;
        rs->rr[n].srv.target = sp;
        sp += len + 1;
        n++;
    }
    rs->n = (uint8_t)n;
    ares_free_data(head);
    return 0;
}

struct naptr_keep {
    uint16_t order, pref;
    uint8_t proto;
    int len;
    char name[DNS_NAME_MAX + 1];
};

/* Keeps the NAPTR records RFC 3263 §4.1 can use ("s" flag, a SIP service
 * we speak, a replacement), sorted by order then preference. */
static int parse_naptr(struct dns_rrset *rs, const unsigned char *abuf, int alen)
{
    struct ares_naptr_reply *head = NULL;
    struct naptr_keep keep[DNS_RR_MAX];
    unsigned n = 0;
    size_t strings = 0;
    char *sp;
    int st = ares_parse_naptr_reply(abuf, alen, &head);

    if (st != ARES_SUCCESS) return dns__ares_errno(st);
    for (const struct ares_naptr_reply *r = head; r && n < DNS_RR_MAX; r = r->next) {
        uint8_t proto = naptr_proto(r->service);
        const char *flags = (const char *)r->flags;
        if (proto == SIP_TRANSPORT_NONE || !flags || (strcmp(flags, "s") && strcmp(flags, "S")))
            continue;
        keep[n].len = dns__name_copy(r->replacement, strlen(r->replacement), keep[n].name);
        if (keep[n].len < 0) continue;
        keep[n].order = r->order;
        keep[n].pref = r->preference;
        keep[n].proto = proto;
        strings += (size_t)keep[n].len + 1;
        /* insertion sort, stable */
        for (unsigned i = n; i > 0; i--) {
            if (keep[i - 1].order < keep[i].order ||
                (keep[i - 1].order == keep[i].order && keep[i - 1].pref <= keep[i].pref))
                break;
            struct naptr_keep t = keep[i];
            keep[i] = keep[i - 1];
            keep[i - 1] = t;
        }
        n++;
    }
    ares_free_data(head);
    if (n == 0) return -ENOENT;
    sp = rr_alloc(rs, n, strings);
    if (!sp) return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        memcpy(sp, keep[i].name, (size_t)keep[i].len + 1);
        rs->rr[i].naptr.order = keep[i].order;
        rs->rr[i].naptr.pref = keep[i].pref;
        rs->rr[i].naptr.proto = keep[i].proto;
        rs->rr[i].naptr.repl = sp;
        sp += keep[i].len + 1;
    }
    rs->n = (uint8_t)n;
    return 0;
}

/* Fills rs from a c-ares answer; returns its status (0: records, -ENOENT:
 * none, other -errno) and the seconds it may be cached. */
static int parse_answer(struct dns_rrset *rs, int status, const unsigned char *abuf, int alen,
                        uint32_t *ttl)
{
    int err = dns__ares_errno(status);

    *ttl = 0;
    if (err == 0) {
        switch (rs->type) {
        case DNS_QT_A:
        case DNS_QT_AAAA:
            err = parse_addrs(rs, abuf, alen);
            break;
        case DNS_QT_SRV:
            err = parse_srv(rs, abuf, alen);
            break;
        case DNS_QT_NAPTR:
            err = parse_naptr(rs, abuf, alen);
            break;
        default:
            err = -EIO;
        }
        /* records of another type only (e.g. a CNAME chain cut short):
         * as good as NODATA, with the positive answer's TTL */
        if (err == 0 || err == -ENOENT) *ttl = answer_ttl(abuf, alen, false);
    } else if (err == -ENOENT) {
        *ttl = answer_ttl(abuf, alen, true);
    }
    return err;
}

/* ---- the table ---------------------------------------------------------- */

static struct dns_centry **bucket(struct dns_cache *c, uint64_t hash)
{
    return &c->buckets[hash & c->mask];
}

int dns__cache_init(struct dns_worker *dw, unsigned max)
{
    struct dns_cache *c = &dw->cache;
    uint64_t nb = 1;

    memset(c, 0, sizeof(*c));
    c->max = max ? max : DNS_CACHE_DEFAULT;
    while (nb < c->max) /* at most one entry per chain on average */
        nb <<= 1;
    c->buckets = calloc(nb, sizeof(*c->buckets));
    if (!c->buckets) return -ENOMEM;
    c->mask = nb - 1;
    return 0;
}

static void lru_unlink(struct dns_cache *c, struct dns_centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
    e->in_lru = false;
    c->n--;
}

static void lru_push(struct dns_cache *c, struct dns_centry *e)
{
    e->prev = NULL;
    e->next = c->lru_head;
    if (c->lru_head)
        c->lru_head->prev = e;
    else
        c->lru_tail = e;
    c->lru_head = e;
    e->in_lru = true;
    c->n++;
}

/* Unlinks e from its bucket and the LRU list and frees it. Not for a
 * pending entry (its query still points at it). */
static void entry_free(struct dns_cache *c, struct dns_centry *e)
{
    for (struct dns_centry **pp = bucket(c, e->hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    if (e->in_lru) lru_unlink(c, e);
    free(e->rs.rr);
    free(e);
}

static struct dns_centry *entry_find(struct dns_cache *c, const char *name, uint8_t type,
                                     uint64_t hash)
{
    for (struct dns_centry *e = *bucket(c, hash); e; e = e->hnext)
        if (e->hash == hash && e->rs.type == type && strcmp(e->name, name) == 0) return e;
    return NULL;
}

/* Makes room for one more answer: evicts the least recently used ones,
 * counted when the TTL of one had not ended. */
static void make_room(struct dns_worker *dw)
{
    struct dns_cache *c = &dw->cache;

    while (c->n >= c->max && c->lru_tail) {
        if (c->lru_tail->expires > dns__now_ms(dw)) {
            STAT_LIMIT(dw->w, LIMIT_DNS_CACHE);
            LOG_RL(LOG_INFO,
                   "dns: cache full, an answer evicted before its TTL (--dns-cache-size %u)",
                   c->max);
        }
        entry_free(c, c->lru_tail);
    }
}

/* A new pending entry. NULL when out of memory. Pending entries are not
 * answers and are not counted in c->n: dns__req_admit() bounds them. */
static struct dns_centry *entry_new(struct dns_worker *dw, const char *name, uint8_t type,
                                    uint64_t hash)
{
    struct dns_cache *c = &dw->cache;
    size_t len = strlen(name);
    struct dns_centry *e = calloc(1, sizeof(*e) + len + 1);

    if (!e) return NULL;
    memcpy(e->name, name, len + 1);
    e->dw = dw;
    e->hash = hash;
    e->rs.type = type;
    e->pending = true;
    e->hnext = *bucket(c, hash);
    *bucket(c, hash) = e;
    return e;
}

/* ---- lookups -------------------------------------------------------------- */

/* Answers every waiter of a now-resolved entry. Two passes: all requests
 * copy the answer first, and only then may they advance, because
 * advancing can evict entries from the cache, e among them. */
static void entry_notify(struct dns_centry *e, struct waiter *ws, int err, bool keep)
{
    for (struct waiter *x = ws; x; x = x->next)
        dns__rfc3263_answer(x->req, x->slot, err == 0 ? &e->rs : NULL, err);
    if (!keep) entry_free(&e->dw->cache, e);
    while (ws) {
        struct waiter *x = ws;
        struct dns_req *r = x->req;
        ws = x->next;
        free(x);
        dns__rfc3263_release(r);
    }
}

/* Failures remembered for DNS_FAIL_TTL_S: the servers did not answer, or
 * answered with an error. Not -ENOMEM or -ECANCELED: ours, not theirs. */
static bool is_server_failure(int err)
{
    return err == -ETIMEDOUT || err == -ECONNREFUSED || err == -EIO;
}

/* c-ares query callback: arg is the pending entry. */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct dns_centry *e = arg;
    struct dns_worker *dw = e->dw;
    struct waiter *ws = e->waiters;
    uint32_t ttl;
    int err = parse_answer(&e->rs, status, abuf, alen, &ttl);
    bool failed = is_server_failure(err);
    bool keep;

    if (failed) {
        STAT_INC(dw->w, dns_failures);
        ttl = DNS_FAIL_TTL_S;
    }
    keep = (err == 0 || err == -ENOENT || failed) && ttl > 0 && !dw->closing;
    /* unreachable servers matter to operators; a lame answer less so */
    if (err == -ETIMEDOUT || err == -ECONNREFUSED)
        LOG_RL(LOG_WARN, "dns: %s type %u: %s", e->name, e->rs.type, ares_strerror(status));
    else if (err != 0 && err != -ENOENT && err != -ECANCELED)
        LOG_D("dns: %s type %u: %s", e->name, e->rs.type, ares_strerror(status));
    e->waiters = NULL;
    e->pending = false;
    e->status = err;
    if (keep) {
        e->expires = dns__now_ms(dw) + (uint64_t)ttl * 1000;
        make_room(dw);
        lru_push(&dw->cache, e);
    }
    entry_notify(e, ws, err, keep);
}

void dns__cache_lookup(struct dns_req *r, const char *name, uint8_t type, uint8_t slot)
{
    struct dns_worker *dw = r->dw;
    struct dns_cache *c = &dw->cache;
    uint64_t hash = name_hash(dw, name, type);
    struct dns_centry *e;
    struct waiter *x;
    int err = -ECANCELED;

    if (dw->closing) goto fail;
    e = entry_find(c, name, type, hash);
    if (e && !e->pending && e->expires <= dns__now_ms(dw)) {
        entry_free(c, e); /* stale: ask again */
        e = NULL;
    }
    if (e && !e->pending) {
        STAT_INC(dw->w, dns_cache_hits);
        lru_unlink(c, e);
        lru_push(c, e);
        dns__rfc3263_answer(r, slot, e->status == 0 ? &e->rs : NULL, e->status);
        dns__rfc3263_release(r);
        return;
    }
    err = -EAGAIN;
    if (r->cache_only) goto fail; /* over the pending limits: no query, no waiting */
    x = malloc(sizeof(*x));
    err = -ENOMEM;
    if (!x) goto fail;
    x->req = r;
    x->slot = slot;
    if (!e) {
        e = entry_new(dw, name, type, hash);
        if (!e) {
            free(x);
            goto fail;
        }
        x->next = NULL;
        e->waiters = x;
        STAT_INC(dw->w, dns_queries);
        /* may call on_answer before returning (e.g. out of sockets):
         * the waiter is in place and e is not touched after */
        ares_query(dw->ch, name, QCLASS_IN, type, on_answer, e);
        return;
    }
    STAT_INC(dw->w, dns_cache_hits); /* joins the same query in flight */
    x->next = e->waiters;
    e->waiters = x;
    return;
fail:
    dns__rfc3263_answer(r, slot, NULL, err);
    dns__rfc3263_release(r);
}

void dns__cache_clear(struct dns_worker *dw)
{
    struct dns_cache *c = &dw->cache;

    for (uint64_t i = 0; c->buckets && i <= c->mask; i++) {
        while (c->buckets[i]) {
            struct dns_centry *e = c->buckets[i];
            c->buckets[i] = e->hnext;
            free(e->rs.rr);
            free(e);
        }
    }
    free(c->buckets);
    memset(c, 0, sizeof(*c));
}
