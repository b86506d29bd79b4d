/* New-dialog rates, all sources together and per source IP: atomics shared by the workers. */
#include "core/overload.h"

#include <stdatomic.h>
#include <stdlib.h>

/* A way of the per-source table, one 64-bit word so that one CAS moves it:
 * tag (20 bits of the source's keyed hash, 0 = empty) | second (12 low
 * bits of the monotonic second) | new dialogs counted in that second. */
#define WAY_TAG(v)   ((uint32_t)((v) >> 44))
#define WAY_SEC(v)   ((uint32_t)((v) >> 32) & 0xfffu)
#define WAY_COUNT(v) ((uint32_t)(v))
#define WAY_MAKE(tag, sec, n)                                                                      \
    ((uint64_t)(tag) << 44 | (uint64_t)((sec)&0xfffu) << 32 | (uint32_t)(n))
#define CAS_TRIES 16 /* each failure is another worker's success */

_Static_assert((OVERLOAD_SETS & (OVERLOAD_SETS - 1)) == 0, "sets: a power of two");

struct overload {
    unsigned dialog_rate, source_rate; /* read-only */
    _Alignas(64) _Atomic uint64_t second;
    _Atomic uint32_t count;
    _Atomic uint64_t *ways; /* OVERLOAD_SETS x OVERLOAD_WAYS; NULL without a source rate */
};

struct overload *overload_new(unsigned dialog_rate, unsigned source_rate)
{
    struct overload *o = calloc(1, sizeof(*o));
    if (!o) return NULL;
    o->dialog_rate = dialog_rate;
    o->source_rate = source_rate;
    if (source_rate) {
        o->ways = calloc((size_t)OVERLOAD_SETS * OVERLOAD_WAYS, sizeof(*o->ways));
        if (!o->ways) {
            free(o);
            return NULL;
        }
    }
    return o;
}

void overload_free(struct overload *o)
{
    if (!o) return;
    free(o->ways);
    free(o);
}

bool overload_dialog_admits(struct overload *o, uint64_t now_ms)
{
    if (o->dialog_rate == 0) return true;
    uint64_t sec = now_ms / 1000;
    uint64_t cur = atomic_load_explicit(&o->second, memory_order_relaxed);
    if (cur != sec && atomic_compare_exchange_strong(&o->second, &cur, sec))
        atomic_store_explicit(&o->count, 0, memory_order_relaxed);
    return atomic_fetch_add_explicit(&o->count, 1, memory_order_relaxed) < o->dialog_rate;
}

/* The way of set that holds tag, or the one to give it: a way last used in
 * another second (or empty), else the one with the fewest dialogs. *v gets
 * its current value. */
static _Atomic uint64_t *pick_way(_Atomic uint64_t *set, uint32_t tag, uint32_t sec, uint64_t *v)
{
    _Atomic uint64_t *victim = NULL;
    uint64_t vv = 0;

    for (unsigned i = 0; i < OVERLOAD_WAYS; i++) {
        uint64_t x = atomic_load_explicit(&set[i], memory_order_relaxed);
        if (WAY_TAG(x) == tag) {
            *v = x;
            return &set[i];
        }
        bool stale = WAY_TAG(x) == 0 || WAY_SEC(x) != sec;
        bool victim_stale = victim && (WAY_TAG(vv) == 0 || WAY_SEC(vv) != sec);
        if (!victim || (stale && !victim_stale) ||
            (stale == victim_stale && WAY_COUNT(x) < WAY_COUNT(vv))) {
            victim = &set[i];
            vv = x;
        }
    }
    *v = vv;
    return victim;
}

bool overload_source_admits(struct overload *o, const struct netaddr *src, uint64_t now_ms)
{
    struct netaddr key;

    if (o->source_rate == 0) return true;
    netaddr_source(&key, src);
    uint64_t h = netaddr_hash(0, &key); /* keyed: sources cannot aim at one set */
    uint32_t tag = (uint32_t)(h >> 44), sec = (uint32_t)(now_ms / 1000) & 0xfffu;
    _Atomic uint64_t *set = &o->ways[(h & (OVERLOAD_SETS - 1)) * OVERLOAD_WAYS];

    if (tag == 0) tag = 1;
    for (int i = 0; i < CAS_TRIES; i++) {
        uint64_t old, next;
        _Atomic uint64_t *way = pick_way(set, tag, sec, &old);
        uint32_t n = WAY_TAG(old) == tag && WAY_SEC(old) == sec ? WAY_COUNT(old) : 0;
        if (n == UINT32_MAX) return false; /* saturated: far over any rate */
        next = WAY_MAKE(tag, sec, n + 1);
        if (atomic_compare_exchange_weak_explicit(way, &old, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return n < o->source_rate;
    }
    return true; /* a way this contended: admit rather than spin */
}
