/* RFC 3263 resolution (NAPTR → SRV → A/AAAA) on a per-worker c-ares channel and answer cache. */
#include "dns/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "core/sipuri.h"
#include "core/timer.h"
#include "core/worker.h"

#define DNS_TIMEOUT_MS 1000 /* first try; c-ares doubles it per round */
#define DNS_TRIES      2
#define DNS_EDNS_SIZE  1232 /* avoids fragmentation (DNS flag day 2020) */
#define DNS_NAME_MAX   253
#define DNS_TTL_MAX_S  3600            /* bounds how stale a changed record can be */
#define DNS_NEG_TTL_S  30              /* negative answers: at most this, and when no SOA */
#define DNS_RR_MAX     16              /* records kept from one answer */
#define DNS_MAX_REQS   4096            /* resolutions alive per worker */
#define SRVQ_MAX       4               /* SRV names queried by one resolution */
#define SRV_COLLECT    16              /* SRV records gathered before ordering */
#define CAND_MAX       DNS_MAX_TARGETS /* hosts whose addresses are looked up */
#define CACHE_BUCKETS  4096            /* power of two, >= 2 * DNS_CACHE_MAX */

_Static_assert((CACHE_BUCKETS & (CACHE_BUCKETS - 1)) == 0, "buckets: power of two");

enum qtype { QT_A = 1, QT_SOA = 6, QT_AAAA = 28, QT_SRV = 33, QT_NAPTR = 35 };
#define QCLASS_IN 1

#ifdef SIPEDGE_DEBUG
/* A fake worker in tests has no thread; a real one must be the caller's. */
#define ASSERT_OWNER(w) assert(!worker_self() || worker_self() == (w))
#else
#define ASSERT_OWNER(w) ((void)(w))
#endif

/* One record of a cached answer. Strings live in the same block. */
struct rr {
    union {
        struct in_addr a;
        struct in6_addr aaaa;
        struct {
            uint16_t prio, weight, port;
            const char *target;
        } srv;
        struct {
            uint16_t order, pref;
            uint8_t proto; /* enum sip_transport the service names */
            const char *repl;
        } naptr;
    };
};

struct dns_req;

/* A resolution waiting on a pending cache entry. */
struct waiter {
    struct waiter *next;
    struct dns_req *req;
    uint8_t slot; /* which of the request's lookups this is */
};

/* One (name, type) answer: pending while its query is in flight (then not
 * on the LRU list, never evicted), resolved afterwards. */
struct centry {
    struct centry *hnext;       /* bucket chain */
    struct centry *prev, *next; /* LRU list, resolved entries only */
    struct dns_worker *dw;
    struct waiter *waiters; /* pending only */
    uint64_t hash;
    uint64_t expires; /* resolved: w->now_ms at which it goes stale */
    int status;       /* resolved: 0 (nrr records) or -ENOENT */
    bool pending;
    bool in_lru;
    uint8_t type;
    uint8_t nrr;
    struct rr *rr; /* one allocation: records, then their strings */
    char name[];
};

enum stage { ST_NAPTR = 1, ST_SRV, ST_ADDR, ST_DONE };

struct srvq {
    char name[DNS_NAME_MAX + 1];
    uint8_t proto;
};

struct cand {
    char name[DNS_NAME_MAX + 1];
    uint16_t port, prio, weight;
    uint8_t proto, group; /* group: the srvq it came from, ordering first */
};

struct cand_addrs {
    uint8_t na, n6;
    struct in_addr a[DNS_MAX_TARGETS];
    struct in6_addr a6[DNS_MAX_TARGETS];
};

/* One dns_resolve() in progress. `pending` counts its lookups in flight
 * plus a guard while a stage issues them; the stage advances at 0. */
struct dns_req {
    struct dns_worker *dw;
    struct dns_req *next; /* completed list */
    dns_cb cb;
    void *arg;
    uint8_t stage;
    bool async; /* dns_resolve() returned 0: completion goes through cb */
    bool sips;
    uint8_t fallback_proto; /* for A/AAAA of the host when there is no SRV */
    unsigned pending;
    int err_hard;    /* first unreachable-class error: stops the resolution */
    bool stage_hard; /* err_hard seen during the current stage */
    int err_soft;    /* last server failure */
    int status;      /* ST_DONE: 0 or -errno */
    unsigned nsrvq, ncand, nout;
    struct srvq srvq[SRVQ_MAX];
    struct cand cand[SRV_COLLECT];
    struct cand_addrs addrs[CAND_MAX];
    struct dns_target out[DNS_MAX_TARGETS];
    char host[DNS_NAME_MAX + 1];
};

/* Owner-only: the worker's thread is the only one that touches any of it. */
struct dns_worker {
    struct worker *w;
    ares_channel ch;
    dns_watch_fn watch;
    struct timer timer; /* c-ares timeouts; also "deliver completions soon" */
    bool closing;
    bool want_a, want_aaaa;
    uint64_t seed, rng;
    unsigned ncache, nreqs;
    struct centry *lru_head, *lru_tail; /* head: most recently used */
    struct dns_req *done_head, **done_tail;
    struct centry *buckets[CACHE_BUCKETS];
};

static void req_release(struct dns_req *r);

/* ---- small helpers --------------------------------------------------- */

static int ares_to_errno(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENODATA:
    case ARES_ENOTFOUND:
        return -ENOENT;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
        return -ECONNREFUSED;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return -ECANCELED;
    case ARES_EBADNAME:
        return -EINVAL;
    default: /* SERVFAIL, REFUSED, NOTIMP, FORMERR, bad response... */
        return -EIO;
    }
}

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

/* Copies a DNS name into out: lower case, without a trailing dot. Accepts
 * letters, digits, '-' and '_' (SRV labels), labels of 1..63 bytes, at most
 * DNS_NAME_MAX in all. Returns the length or -EINVAL. */
static int name_copy(const char *p, size_t len, char out[DNS_NAME_MAX + 1])
{
    size_t label = 0;

    if (len > 0 && p[len - 1] == '.') len--;
    if (len == 0 || len > DNS_NAME_MAX) return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        char c = slice_lower(p[i]);
        if (c == '.') {
            if (label == 0) return -EINVAL;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63) return -EINVAL;
        } else {
            return -EINVAL;
        }
        out[i] = c;
    }
    out[len] = '\0';
    return (int)len;
}

/* prefix + "." + host, when it is a valid name. */
static bool name_join(char out[DNS_NAME_MAX + 1], const char *prefix, const char *host)
{
    char tmp[DNS_NAME_MAX + 64];
    int n = snprintf(tmp, sizeof(tmp), "%s.%s", prefix, host);
    return n > 0 && (size_t)n < sizeof(tmp) && name_copy(tmp, (size_t)n, out) >= 0;
}

static uint64_t name_hash(const struct dns_worker *dw, const char *name, uint8_t type)
{
    uint64_t h = 0xcbf29ce484222325ull ^ dw->seed; /* FNV-1a, keyed per worker */
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    h = (h ^ type) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

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
            } else if (i >= an && negative && type == QT_SOA && rdlen >= 22) {
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

/* ---- parsing answers into records ------------------------------------ */

static uint8_t naptr_proto(const unsigned char *service)
{
    struct slice s = slice_make((const char *)service, strlen((const char *)service));
    if (slice_case_eq_lit(s, "SIP+D2U")) return SIP_TRANSPORT_UDP;
    if (slice_case_eq_lit(s, "SIP+D2T")) return SIP_TRANSPORT_TCP;
    if (slice_case_eq_lit(s, "SIPS+D2T")) return SIP_TRANSPORT_TLS;
    return SIP_TRANSPORT_NONE;
}

/* Allocates e->rr for n records plus `strings` bytes of names. */
static char *rr_alloc(struct centry *e, unsigned n, size_t strings)
{
    e->rr = malloc(n * sizeof(struct rr) + strings + 1);
    e->nrr = 0;
    return e->rr ? (char *)(e->rr + n) : NULL;
}

static int parse_addrs(struct centry *e, const unsigned char *abuf, int alen)
{
    int n = DNS_RR_MAX, st;

    if (e->type == QT_A) {
        struct ares_addrttl at[DNS_RR_MAX];
        st = ares_parse_a_reply(abuf, alen, NULL, at, &n);
        if (st != ARES_SUCCESS) return ares_to_errno(st);
        if (n <= 0) return -ENOENT;
        if (!rr_alloc(e, (unsigned)n, 0)) return -ENOMEM;
        for (int i = 0; i < n; i++)
            e->rr[i].a = at[i].ipaddr;
    } else {
        struct ares_addr6ttl at[DNS_RR_MAX];
        st = ares_parse_aaaa_reply(abuf, alen, NULL, at, &n);
        if (st != ARES_SUCCESS) return ares_to_errno(st);
        if (n <= 0) return -ENOENT;
        if (!rr_alloc(e, (unsigned)n, 0)) return -ENOMEM;
        for (int i = 0; i < n; i++)
            memcpy(&e->rr[i].aaaa, &at[i].ip6addr, sizeof(e->rr[i].aaaa));
    }
    e->nrr = (uint8_t)n;
    return 0;
}

static int parse_srv(struct centry *e, const unsigned char *abuf, int alen)
{
    struct ares_srv_reply *head = NULL;
    char names[DNS_RR_MAX][DNS_NAME_MAX + 1];
    const struct ares_srv_reply *s;
    unsigned n = 0;
    size_t strings = 0;
    char *sp;
    int st = ares_parse_srv_reply(abuf, alen, &head);

    if (st != ARES_SUCCESS) return ares_to_errno(st);
    /* "." (no service here, RFC 2782) and invalid names are dropped */
    for (s = head; s && n < DNS_RR_MAX; s = s->next) {
        int len = name_copy(s->host, strlen(s->host), names[n]);
        if (len < 0) continue;
        strings += (size_t)len + 1;
        n++;
    }
    if (n == 0) {
        ares_free_data(head);
        return -ENOENT;
    }
    sp = rr_alloc(e, n, strings);
    if (!sp) {
        ares_free_data(head);
        return -ENOMEM;
    }
    n = 0;
    for (s = head; s && n < DNS_RR_MAX; s = s->next) {
        char tmp[DNS_NAME_MAX + 1];
        int len = name_copy(s->host, strlen(s->host), tmp);
        if (len < 0) continue;
        memcpy(sp, tmp, (size_t)len + 1);
        e->rr[n].srv.prio = s->priority;
        e->rr[n].srv.weight = s->weight;
        e->rr[n].srv.port = s->port;
        e->rr[n].srv.target = sp;
        sp += len + 1;
        n++;
    }
    e->nrr = (uint8_t)n;
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
static int parse_naptr(struct centry *e, const unsigned char *abuf, int alen)
{
    struct ares_naptr_reply *head = NULL;
    struct naptr_keep keep[DNS_RR_MAX];
    unsigned n = 0;
    size_t strings = 0;
    char *sp;
    int st = ares_parse_naptr_reply(abuf, alen, &head);

    if (st != ARES_SUCCESS) return ares_to_errno(st);
    for (const struct ares_naptr_reply *r = head; r && n < DNS_RR_MAX; r = r->next) {
        uint8_t proto = naptr_proto(r->service);
        const char *flags = (const char *)r->flags;
        if (proto == SIP_TRANSPORT_NONE || !flags || (strcmp(flags, "s") && strcmp(flags, "S")))
            continue;
        keep[n].len = name_copy(r->replacement, strlen(r->replacement), keep[n].name);
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
    sp = rr_alloc(e, n, strings);
    if (!sp) return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        memcpy(sp, keep[i].name, (size_t)keep[i].len + 1);
        e->rr[i].naptr.order = keep[i].order;
        e->rr[i].naptr.pref = keep[i].pref;
        e->rr[i].naptr.proto = keep[i].proto;
        e->rr[i].naptr.repl = sp;
        sp += keep[i].len + 1;
    }
    e->nrr = (uint8_t)n;
    return 0;
}

/* Fills e from a c-ares answer; returns its status (0: records, -ENOENT:
 * none, other -errno) and the seconds it may be cached. */
static int parse_answer(struct centry *e, int status, const unsigned char *abuf, int alen,
                        uint32_t *ttl)
{
    int err = ares_to_errno(status);

    *ttl = 0;
    if (err == 0) {
        switch (e->type) {
        case QT_A:
        case QT_AAAA:
            err = parse_addrs(e, abuf, alen);
            break;
        case QT_SRV:
            err = parse_srv(e, abuf, alen);
            break;
        case QT_NAPTR:
            err = parse_naptr(e, abuf, alen);
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

/* ---- the cache -------------------------------------------------------- */

static struct centry **bucket(struct dns_worker *dw, uint64_t hash)
{
    return &dw->buckets[hash & (CACHE_BUCKETS - 1)];
}

static void lru_unlink(struct dns_worker *dw, struct centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        dw->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        dw->lru_tail = e->prev;
    e->prev = e->next = NULL;
    e->in_lru = false;
}

static void lru_push(struct dns_worker *dw, struct centry *e)
{
    e->prev = NULL;
    e->next = dw->lru_head;
    if (dw->lru_head)
        dw->lru_head->prev = e;
    else
        dw->lru_tail = e;
    dw->lru_head = e;
    e->in_lru = true;
}

/* Unlinks e from its bucket and the LRU list and frees it. Not for a
 * pending entry (its query still points at it). */
static void cache_free(struct dns_worker *dw, struct centry *e)
{
    for (struct centry **pp = bucket(dw, e->hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == e) {
            *pp = e->hnext;
            break;
        }
    }
    if (e->in_lru) lru_unlink(dw, e);
    dw->ncache--;
    free(e->rr);
    free(e);
}

static struct centry *cache_find(struct dns_worker *dw, const char *name, uint8_t type,
                                 uint64_t hash)
{
    for (struct centry *e = *bucket(dw, hash); e; e = e->hnext)
        if (e->hash == hash && e->type == type && strcmp(e->name, name) == 0) return e;
    return NULL;
}

/* A new pending entry, evicting the least recently used resolved one when
 * full. NULL when every entry is pending (-EAGAIN) or out of memory. */
static struct centry *cache_new(struct dns_worker *dw, const char *name, uint8_t type,
                                uint64_t hash, int *err)
{
    size_t len = strlen(name);
    struct centry *e;

    if (dw->ncache >= DNS_CACHE_MAX) {
        if (!dw->lru_tail) {
            *err = -EAGAIN;
            return NULL;
        }
        cache_free(dw, dw->lru_tail);
    }
    e = calloc(1, sizeof(*e) + len + 1);
    if (!e) {
        *err = -ENOMEM;
        return NULL;
    }
    memcpy(e->name, name, len + 1);
    e->dw = dw;
    e->hash = hash;
    e->type = type;
    e->pending = true;
    e->hnext = *bucket(dw, hash);
    *bucket(dw, hash) = e;
    dw->ncache++;
    return e;
}

/* ---- requests --------------------------------------------------------- */

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

/* Takes in the answer (or failure) for lookup `slot` of r's current stage.
 * e is NULL on failure; only borrowed: what r needs is copied. */
static void req_answer(struct dns_req *r, uint8_t slot, const struct centry *e, int err)
{
    if (err != 0 || !e) {
        note_err(r, err ? err : -EIO);
        return;
    }
    switch (r->stage) {
    case ST_NAPTR:
        for (unsigned i = 0; i < e->nrr && r->nsrvq < SRVQ_MAX; i++) {
            const struct rr *x = &e->rr[i];
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
        break;
    case ST_SRV:
        for (unsigned i = 0; i < e->nrr && r->ncand < SRV_COLLECT; i++) {
            const struct rr *x = &e->rr[i];
            uint8_t proto = r->srvq[slot].proto;
            bool dup = false;
            for (unsigned j = 0; j < r->ncand && !dup; j++)
                dup = r->cand[j].proto == proto && r->cand[j].port == x->srv.port &&
                      !strcmp(r->cand[j].name, x->srv.target);
            if (dup) continue;
            struct cand *c = &r->cand[r->ncand++];
            memcpy(c->name, x->srv.target, strlen(x->srv.target) + 1);
            c->port = x->srv.port;
            c->prio = x->srv.prio;
            c->weight = x->srv.weight;
            c->proto = proto;
            c->group = slot;
        }
        break;
    case ST_ADDR: {
        struct cand_addrs *ad = &r->addrs[slot / 2];
        for (unsigned i = 0; i < e->nrr; i++) {
            if (e->type == QT_A && ad->na < DNS_MAX_TARGETS)
                ad->a[ad->na++] = e->rr[i].a;
            else if (e->type == QT_AAAA && ad->n6 < DNS_MAX_TARGETS)
                ad->a6[ad->n6++] = e->rr[i].aaaa;
        }
        break;
    }
    }
}

/* Answers every waiter of a now-resolved entry. Two passes: all requests
 * copy the answer first, and only then may they advance, because
 * advancing can evict entries from the cache, e among them. */
static void entry_notify(struct centry *e, struct waiter *ws, int err, bool keep)
{
    for (struct waiter *x = ws; x; x = x->next)
        req_answer(x->req, x->slot, err == 0 ? e : NULL, err);
    if (!keep) cache_free(e->dw, e);
    while (ws) {
        struct waiter *x = ws;
        struct dns_req *r = x->req;
        ws = x->next;
        free(x);
        req_release(r);
    }
}

/* c-ares query callback: arg is the pending entry. */
static void on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct centry *e = arg;
    struct dns_worker *dw = e->dw;
    struct waiter *ws = e->waiters;
    uint32_t ttl;
    int err = parse_answer(e, status, abuf, alen, &ttl);
    bool keep = (err == 0 || err == -ENOENT) && ttl > 0 && !dw->closing;

    /* unreachable servers matter to operators; a lame answer less so */
    if (err == -ETIMEDOUT || err == -ECONNREFUSED)
        LOG_RL(LOG_WARN, "dns: %s type %u: %s", e->name, e->type, ares_strerror(status));
    else if (err != 0 && err != -ENOENT && err != -ECANCELED)
        LOG_D("dns: %s type %u: %s", e->name, e->type, ares_strerror(status));
    e->waiters = NULL;
    e->pending = false;
    e->status = err;
    if (keep) {
        e->expires = dw->w->now_ms + (uint64_t)ttl * 1000;
        lru_push(dw, e);
    }
    entry_notify(e, ws, err, keep);
}

/* Starts lookup `slot` of r's stage: answered now from the cache, joined to
 * the same query in flight, or sent. Always counts in r->pending; the
 * answer's req_release() takes it off, now or later. */
static void lookup(struct dns_req *r, const char *name, uint8_t type, uint8_t slot)
{
    struct dns_worker *dw = r->dw;
    uint64_t hash = name_hash(dw, name, type);
    struct centry *e;
    struct waiter *x;
    int err = -ECANCELED;

    r->pending++;
    if (dw->closing) goto fail;
    e = cache_find(dw, name, type, hash);
    if (e && !e->pending && e->expires <= dw->w->now_ms) {
        cache_free(dw, e); /* stale: ask again */
        e = NULL;
    }
    if (e && !e->pending) {
        lru_unlink(dw, e);
        lru_push(dw, e);
        req_answer(r, slot, e->status == 0 ? e : NULL, e->status);
        req_release(r);
        return;
    }
    x = malloc(sizeof(*x));
    err = -ENOMEM;
    if (!x) goto fail;
    x->req = r;
    x->slot = slot;
    if (!e) {
        e = cache_new(dw, name, type, hash, &err);
        if (!e) {
            free(x);
            goto fail;
        }
        x->next = NULL;
        e->waiters = x;
        /* may call on_answer before returning (e.g. out of sockets):
         * the waiter is in place and e is not touched after */
        ares_query(dw->ch, name, QCLASS_IN, type, on_answer, e);
        return;
    }
    x->next = e->waiters;
    e->waiters = x;
    return;
fail:
    note_err(r, err);
    req_release(r);
}

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
    struct cand *c = &r->cand[0];

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

static bool cand_before(const struct cand *a, const struct cand *b)
{
    return a->group < b->group || (a->group == b->group && a->prio < b->prio);
}

/* Orders the SRV targets: by query group, then priority, then within equal
 * priority the weighted random selection of RFC 2782. */
static void order_cands(struct dns_req *r)
{
    struct cand *c = r->cand, t;
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

static bool out_add(struct dns_req *r, const struct cand *c, const struct netaddr *a)
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
        const struct cand *c = &r->cand[i];
        const struct cand_addrs *ad = &r->addrs[i];
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
        lookup(r, r->host, QT_NAPTR, 0);
        break;
    case ST_SRV:
        for (unsigned i = 0; i < r->nsrvq; i++)
            lookup(r, r->srvq[i].name, QT_SRV, (uint8_t)i);
        break;
    case ST_ADDR:
        for (unsigned i = 0; i < r->ncand; i++) {
            if (dw->want_a) lookup(r, r->cand[i].name, QT_A, (uint8_t)(2 * i));
            if (dw->want_aaaa) lookup(r, r->cand[i].name, QT_AAAA, (uint8_t)(2 * i + 1));
        }
        break;
    }
    req_release(r);
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
            if (r->ncand > CAND_MAX) r->ncand = CAND_MAX;
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

static void req_release(struct dns_req *r)
{
    assert(r->pending > 0);
    if (--r->pending == 0) req_advance(r);
}

/* Runs the callbacks of completed asynchronous requests, outside any
 * c-ares processing so that they may resolve again. */
static void deliver(struct dns_worker *dw)
{
    struct dns_req *r;

    while ((r = dw->done_head) != NULL) {
        dw->done_head = r->next;
        if (!dw->done_head) dw->done_tail = &dw->done_head;
        dw->nreqs--;
        if (r->status == 0)
            r->cb(dw->w, r->arg, 0, r->out, r->nout);
        else
            r->cb(dw->w, r->arg, r->status, NULL, 0);
        free(r);
    }
}

/* Re-arms the worker timer for c-ares's next timeout, or to deliver
 * completions at the next loop turn. */
static void update_timer(struct dns_worker *dw)
{
    struct timeval tv, *tvp;
    uint64_t ms;

    if (dw->done_head) {
        worker_timer_arm(dw->w, &dw->timer, 0);
        return;
    }
    tvp = ares_timeout(dw->ch, NULL, &tv);
    if (!tvp) {
        timer_cancel(&dw->timer);
        return;
    }
    ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    worker_timer_arm(dw->w, &dw->timer, ms);
}

static void on_timer(struct worker *w, struct timer *t)
{
    struct dns_worker *dw = w->dns;

    ares_process_fd(dw->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
    deliver(dw);
    if (w->dns) update_timer(dw);
}

void dns_on_fd(struct worker *w, int fd, uint32_t events)
{
    struct dns_worker *dw = w->dns;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

    ASSERT_OWNER(w);
    if (!dw) return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) rfd = fd;
    if (events & (EPOLLOUT | EPOLLERR)) wfd = fd;
    ares_process_fd(dw->ch, rfd, wfd);
    deliver(dw);
    if (w->dns) update_timer(dw);
}

bool dns_busy(const struct worker *w)
{
    return w->dns && w->dns->nreqs > 0;
}

int dns_resolve(struct worker *w, struct slice host, int port, uint8_t transport, bool sips,
                dns_cb cb, void *arg, struct dns_target *out, unsigned *nout)
{
    struct dns_worker *dw = w->dns;
    struct dns_req *r;
    uint8_t proto;
    int err;

    ASSERT_OWNER(w);
    *nout = 0;
    if (!dw || dw->closing) return -ESHUTDOWN;
    if (port < 0 || port > 65535 || !cb || host.len == 0) return -EINVAL;
    switch (transport) {
    case SIP_TRANSPORT_NONE:
        proto = sips ? SIP_TRANSPORT_TLS : SIP_TRANSPORT_UDP;
        break;
    case SIP_TRANSPORT_UDP:
        if (sips) return -EPROTONOSUPPORT; /* SIPS needs a reliable transport */
        proto = transport;
        break;
    case SIP_TRANSPORT_TCP:
    case SIP_TRANSPORT_TLS:
        proto = sips ? SIP_TRANSPORT_TLS : transport;
        break;
    default:
        return -EPROTONOSUPPORT;
    }
    if (host.len >= 2 && host.ptr[0] == '[' && host.ptr[host.len - 1] == ']')
        host = slice_make(host.ptr + 1, host.len - 2);
    if (memchr(host.ptr, ':', host.len) || sipuri_is_ipv4(host)) {
        err = netaddr_from_ip(&out[0].addr, host,
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
    if (dw->nreqs >= DNS_MAX_REQS) return -EAGAIN;
    r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    if (name_copy(host.ptr, host.len, r->host) < 0) {
        free(r);
        return -EINVAL;
    }
    r->dw = dw;
    r->cb = cb;
    r->arg = arg;
    r->sips = sips;
    r->fallback_proto = proto;
    dw->nreqs++;
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
    req_issue(r);
    if (r->stage == ST_DONE) { /* every step answered from the cache */
        err = r->status;
        if (err == 0) {
            memcpy(out, r->out, r->nout * sizeof(*out));
            *nout = r->nout;
            err = 1;
        }
        dw->nreqs--;
        free(r);
    } else {
        r->async = true;
        err = 0;
    }
    update_timer(dw);
    return err;
}

/* ---- per-worker setup -------------------------------------------------- */

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct worker *w = data;
    uint32_t ev = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u);
    int err = w->dns->watch(w, fd, ev);

    if (err < 0) LOG_RL(LOG_ERR, "dns: cannot watch socket %d: %s", fd, strerror(-err));
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_rc;

static void lib_init(void)
{
    lib_rc = ares_library_init(ARES_LIB_INIT_ALL);
}

/* cfg->dns_servers → c-ares server list (already validated by the CLI). */
static int set_servers(struct dns_worker *dw, const struct config *cfg)
{
    struct ares_addr_port_node nodes[CONFIG_MAX_DNS];
    unsigned n = 0;
    int st;

    for (unsigned i = 0; i < cfg->ndns && i < CONFIG_MAX_DNS; i++) {
        struct slice s = slice_make(cfg->dns_servers[i], strlen(cfg->dns_servers[i]));
        struct ares_addr_port_node *x = &nodes[n];
        struct netaddr a;
        if (netaddr_parse(&a, s) < 0 && netaddr_from_ip(&a, s, 53) < 0) {
            LOG_E("dns: bad server %s", cfg->dns_servers[i]);
            return -EINVAL;
        }
        memset(x, 0, sizeof(*x));
        x->family = a.sa.sa_family;
        if (x->family == AF_INET)
            x->addr.addr4 = a.in4.sin_addr;
        else
            memcpy(&x->addr.addr6, &a.in6.sin6_addr, sizeof(x->addr.addr6));
        x->udp_port = x->tcp_port = netaddr_port(&a);
        if (n > 0) nodes[n - 1].next = x;
        n++;
    }
    if (n == 0) return 0;
    st = ares_set_servers_ports(dw->ch, nodes);
    return st == ARES_SUCCESS ? 0 : ares_to_errno(st);
}

int dns_worker_init_watch(struct worker *w, dns_watch_fn watch)
{
    const struct config *cfg = w->cfg;
    struct ares_options o;
    struct dns_worker *dw;
    int st, err;

    ASSERT_OWNER(w);
    pthread_once(&lib_once, lib_init);
    if (lib_rc != ARES_SUCCESS) return ares_to_errno(lib_rc);
    dw = calloc(1, sizeof(*dw));
    if (!dw) return -ENOMEM;
    dw->w = w;
    dw->watch = watch;
    dw->done_tail = &dw->done_head;
    timer_init(&dw->timer, on_timer);
    if (getrandom(&dw->seed, sizeof(dw->seed), 0) != sizeof(dw->seed))
        dw->seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)dw;
    dw->rng = dw->seed | 1;
    /* Only ask for families the worker can send from (Via needs a listener
     * of the destination's family); both when there are no listeners. */
    for (unsigned i = 0; cfg && i < cfg->nlisten; i++) {
        if (cfg->listen[i].addr.sa.sa_family == AF_INET) dw->want_a = true;
        if (cfg->listen[i].addr.sa.sa_family == AF_INET6) dw->want_aaaa = true;
    }
    if (!dw->want_a && !dw->want_aaaa) dw->want_a = dw->want_aaaa = true;

    memset(&o, 0, sizeof(o));
    o.flags = ARES_FLAG_EDNS | ARES_FLAG_NOSEARCH;
    o.timeout = DNS_TIMEOUT_MS;
    o.tries = DNS_TRIES;
    o.ednspsz = DNS_EDNS_SIZE;
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = w;
    o.lookups = (char *)"b"; /* DNS only: no /etc/hosts reads on the loop */
    st = ares_init_options(&dw->ch, &o,
                           ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_EDNSPSZ |
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_LOOKUPS);
    if (st != ARES_SUCCESS) {
        LOG_E("dns: cannot create a resolver: %s", ares_strerror(st));
        free(dw);
        return ares_to_errno(st);
    }
    w->dns = dw;
    err = cfg ? set_servers(dw, cfg) : 0;
    if (err < 0) {
        dns_worker_cleanup(w);
        return err;
    }
    return 0;
}

static void on_fd(struct worker *w, int fd, uint32_t events, void *arg)
{
    dns_on_fd(w, fd, events);
}

/* The runtime's generic fd watch, handing the events to dns_on_fd(). */
static int runtime_watch(struct worker *w, int fd, uint32_t events)
{
    return worker_watch_fd(w, fd, events, on_fd, NULL);
}

int dns_worker_init(struct worker *w)
{
    return dns_worker_init_watch(w, runtime_watch);
}

void dns_worker_cleanup(struct worker *w)
{
    struct dns_worker *dw = w->dns;

    ASSERT_OWNER(w);
    if (!dw) return;
    dw->closing = true;
    /* Runs on_answer (ARES_EDESTRUCTION) for every query in flight: their
     * requests finish with -ECANCELED and land on the completed list. */
    ares_destroy(dw->ch);
    dw->ch = NULL;
    deliver(dw);
    assert(dw->nreqs == 0);
    timer_cancel(&dw->timer);
    for (unsigned i = 0; i < CACHE_BUCKETS; i++) {
        while (dw->buckets[i]) {
            struct centry *e = dw->buckets[i];
            dw->buckets[i] = e->hnext;
            free(e->rr);
            free(e);
        }
    }
    w->dns = NULL;
    free(dw);
}
