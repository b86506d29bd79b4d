/* dns/ internals: what the c-ares glue, the answer cache and the RFC 3263 procedure share. */
#ifndef SIPEDGE_DNS_INT_H
#define SIPEDGE_DNS_INT_H

#include <ares.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/timer.h"
#include "dns/dns.h"

#define DNS_NAME_MAX    253
#define DNS_SRVQ_MAX    4               /* SRV names queried by one resolution */
#define DNS_SRV_COLLECT 16              /* SRV records gathered before ordering */
#define DNS_CAND_MAX    DNS_MAX_TARGETS /* hosts whose addresses are looked up */

enum dns_qtype {
    DNS_QT_A = 1,
    DNS_QT_SOA = 6,
    DNS_QT_AAAA = 28,
    DNS_QT_SRV = 33,
    DNS_QT_NAPTR = 35
};

/* One record of a cached answer. Strings live in the same block. */
struct dns_rr {
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

/* The records of one (name, type) answer. Owned by the cache entry that
 * holds it; lent to the procedure for the length of one call. */
struct dns_rrset {
    uint8_t type; /* enum dns_qtype */
    uint8_t n;
    struct dns_rr *rr; /* one allocation: records, then their strings */
};

struct dns_centry; /* a cache entry: private to dns_cache.c */

/* The answer cache of one worker. Written only by dns_cache.c. */
struct dns_cache {
    unsigned n, max;                        /* answers (the LRU list); --dns-cache-size */
    struct dns_centry *lru_head, *lru_tail; /* resolved only; head: most recent */
    struct dns_centry **buckets;            /* chains by keyed name hash */
    uint64_t mask;                          /* buckets - 1, a power of two minus one */
};

/* Resolutions alive for one source address (netaddr_source() of the
 * sender a dns_resolve() names). Exists while n > 0; written by dns.c. */
struct dns_src {
    struct dns_src *next; /* bucket chain */
    struct netaddr addr;
    unsigned n;
};

struct dns_srvq {
    char name[DNS_NAME_MAX + 1];
    uint8_t proto;
};

struct dns_cand {
    char name[DNS_NAME_MAX + 1];
    uint16_t port, prio, weight;
    uint8_t proto, group; /* group: the srvq it came from, ordering first */
};

struct dns_cand_addrs {
    uint8_t na, n6;
    struct in_addr a[DNS_MAX_TARGETS];
    struct in6_addr a6[DNS_MAX_TARGETS];
};

/* One dns_resolve() in progress, written by dns_rfc3263.c; dns.c only
 * delivers and frees a finished one. `pending` counts its lookups in
 * flight plus a guard while a stage issues them; the stage advances at 0. */
struct dns_req {
    struct dns_worker *dw;
    struct dns_req *next; /* completed list */
    struct dns_src *src;  /* the sender it is counted against, or NULL */
    dns_cb cb;
    void *arg;
    uint8_t stage;
    bool async;      /* dns_resolve() returned 0: completion goes through cb */
    bool cache_only; /* over the pending limits: a lookup the cache cannot answer fails */
    bool sips;
    uint8_t fallback_proto; /* for A/AAAA of the host when there is no SRV */
    unsigned pending;
    int err_hard;    /* first unreachable-class error: stops the resolution */
    bool stage_hard; /* err_hard seen during the current stage */
    int err_soft;    /* last server failure */
    int status;      /* finished: 0 or -errno */
    unsigned nsrvq, ncand, nout;
    struct dns_srvq srvq[DNS_SRVQ_MAX];
    struct dns_cand cand[DNS_SRV_COLLECT];
    struct dns_cand_addrs addrs[DNS_CAND_MAX];
    struct dns_target out[DNS_MAX_TARGETS];
    char host[DNS_NAME_MAX + 1];
};

/* w->dns. Owner-only: the worker's thread is the only one that touches any
 * of it. */
struct dns_worker {
    struct worker *w;
    ares_channel ch;
    dns_watch_fn watch;
    struct timer timer; /* c-ares timeouts; also "deliver completions soon" */
    bool closing;
    bool want_a, want_aaaa;
    uint64_t seed, rng;                   /* per worker: cache hash input, SRV weighting */
    unsigned nreqs;                       /* dns_req alive, finished but undelivered included */
    unsigned max_pending, max_per_source; /* --dns-max-pending, and its share per source */
    struct dns_src **srcs;                /* dns_src chains by keyed address hash */
    uint64_t srcs_mask;
    struct dns_req *done_head, **done_tail;
    struct dns_cache cache;
};

/* ---- dns.c: module-wide helpers and the loop ------------------------------ */

/* A c-ares status as -errno (0 for ARES_SUCCESS). Any thread. */
int dns__ares_errno(int status);

/* The owning worker's loop clock, in milliseconds. Owner thread. */
uint64_t dns__now_ms(const struct dns_worker *dw);

/* Copies a DNS name into out: lower case, without a trailing dot. Accepts
 * letters, digits, '-' and '_' (SRV labels), labels of 1..63 bytes, at most
 * DNS_NAME_MAX in all. Returns the length or -EINVAL. Any thread. */
int dns__name_copy(const char *p, size_t len, char out[DNS_NAME_MAX + 1]);

/* Re-arms dw's timer for c-ares's next timeout, or for the next loop turn
 * when finished resolutions wait for delivery. Owner thread. */
void dns__timer_update(struct dns_worker *dw);

/* Counts a new resolution r (r->host set) in dw->nreqs and, when src is
 * not NULL, for src's source address (r->src is set). Returns 0 within the
 * limits, 1 when --dns-max-pending or src's share of it was already
 * reached (r may then use the cache only: dns_req.cache_only), -ENOMEM
 * (nothing counted). src NULL (sipedge's own lookups) is never over.
 * Owner thread. */
int dns__req_admit(struct dns_worker *dw, struct dns_req *r, const struct netaddr *src);

/* Counts and logs (rate-limited) a resolution refused by the limits: r
 * was over them and the cache could not answer it. Owner thread. */
void dns__req_refused(struct dns_worker *dw, const struct dns_req *r);

/* Undoes dns__req_admit() for r (finished); r itself is not freed. Owner
 * thread. */
void dns__req_release(struct dns_worker *dw, struct dns_req *r);

/* ---- dns_cache.c: answers by (name, type) --------------------------------- */

/* Starts lookup `slot` of r's current stage: answered now from the cache,
 * joined to the same query in flight, or sent on dw->ch. Either way
 * dns__rfc3263_answer() then dns__rfc3263_release() are called for it
 * exactly once, now or from c-ares later; the caller has already counted it
 * in r->pending. name is canonical (dns__name_copy) and borrowed. Owner
 * thread. */
void dns__cache_lookup(struct dns_req *r, const char *name, uint8_t type, uint8_t slot);

/* Sets up dw->cache for at most max entries (0: DNS_CACHE_DEFAULT). 0 or
 * -ENOMEM. Owner thread. */
int dns__cache_init(struct dns_worker *dw, unsigned max);

/* Frees every entry and the buckets. Only after ares_destroy(): no entry is
 * pending any more. Owner thread. */
void dns__cache_clear(struct dns_worker *dw);

/* ---- dns_rfc3263.c: the procedure ----------------------------------------- */

/* dns_resolve() once the channel is known to be open: same arguments,
 * returns and callback contract as documented in dns.h. Owner thread. */
int dns__rfc3263_resolve(struct dns_worker *dw, const struct netaddr *src, struct slice host,
                         int port, uint8_t transport, bool sips, dns_cb cb, void *arg,
                         struct dns_target *out, unsigned *nout);

/* Takes in the answer (or failure) for lookup `slot` of r's current stage:
 * rs is NULL on failure (err < 0) and only borrowed, what r needs is
 * copied. Owner thread, from the cache. */
void dns__rfc3263_answer(struct dns_req *r, uint8_t slot, const struct dns_rrset *rs, int err);

/* Drops one count of r->pending; at 0 the stage is over and r advances
 * (issuing the next stage's lookups, or finishing). Owner thread. */
void dns__rfc3263_release(struct dns_req *r);

#endif
