/* Connections per source address: a lock-free table of (tag, count) words
 * shared by every worker. */
#include "core/iplimit.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "core/hash.h"

#define COUNT_BITS   24
#define COUNT_MASK   ((UINT64_C(1) << COUNT_BITS) - 1)
#define MAX_ENTRIES  (1u << 23)
#define MIN_ENTRIES  1024u
#define CAS_ATTEMPTS 64 /* then admit uncounted rather than spin */

struct iplimit {
    uint32_t mask; /* entries - 1, entries a power of two */
    _Atomic uint64_t e[];
};

struct iplimit *iplimit_new(unsigned max_sources)
{
    uint64_t want = (uint64_t)max_sources * 4;
    uint32_t n = MIN_ENTRIES;
    struct iplimit *t;

    while (n < want && n < MAX_ENTRIES)
        n *= 2;
    t = calloc(1, sizeof(*t) + (size_t)n * sizeof(t->e[0]));
    if (t) t->mask = n - 1;
    return t;
}

void iplimit_free(struct iplimit *t)
{
    free(t);
}

/* Keyed hash of what identifies a source: the IPv4 address (an IPv4-mapped
 * IPv6 one too), or the /64 of an IPv6 one. */
static uint64_t source_hash(const struct netaddr *a)
{
    struct hash_state h;
    uint8_t fam = 0;

    hash_begin(&h);
    if (a->sa.sa_family == AF_INET) {
        fam = 4;
        hash_update(&h, &fam, 1);
        hash_update(&h, &a->in4.sin_addr, 4);
    } else if (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
        fam = 4;
        hash_update(&h, &fam, 1);
        hash_update(&h, a->in6.sin6_addr.s6_addr + 12, 4);
    } else if (a->sa.sa_family == AF_INET6) {
        fam = 6;
        hash_update(&h, &fam, 1);
        hash_update(&h, a->in6.sin6_addr.s6_addr, 8);
    } else {
        hash_update(&h, &fam, 1);
    }
    return hash_final(&h);
}

/* The tag (never 0, so a zero word is a never-used entry) from the high
 * bits, the home entry from the low ones. */
static uint64_t tag_of(uint64_t hv)
{
    uint64_t tag = hv >> COUNT_BITS;
    return tag ? tag : 1;
}

int32_t iplimit_acquire(struct iplimit *t, const struct netaddr *a, uint32_t limit)
{
    uint64_t hv = source_hash(a), tag = tag_of(hv);
    uint32_t home = (uint32_t)hv & t->mask;

    for (int attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        uint32_t free_i = UINT32_MAX;
        uint64_t free_v = 0;
        bool lost = false;

        for (uint32_t k = 0; k < IPLIMIT_WINDOW && !lost; k++) {
            uint32_t i = (home + k) & t->mask;
            uint64_t v = atomic_load_explicit(&t->e[i], memory_order_relaxed);
            if (v >> COUNT_BITS == tag) {
                if ((v & COUNT_MASK) >= limit) return IPLIMIT_FULL;
                if (atomic_compare_exchange_strong_explicit(
                        &t->e[i], &v, v + 1, memory_order_relaxed, memory_order_relaxed))
                    return (int32_t)i;
                lost = true; /* changed under us: look at the window again */
            } else if ((v & COUNT_MASK) == 0 && free_i == UINT32_MAX) {
                free_i = i;
                free_v = v;
            }
        }
        if (lost) continue;
        /* Not in the window: take its first unused entry. Every thread
         * adding this address picks the same one, so they meet on one CAS. */
        if (free_i == UINT32_MAX) return IPLIMIT_UNCOUNTED;
        if (limit == 0) return IPLIMIT_FULL;
        if (atomic_compare_exchange_strong_explicit(&t->e[free_i], &free_v, (tag << COUNT_BITS) | 1,
                                                    memory_order_relaxed, memory_order_relaxed))
            return (int32_t)free_i;
    }
    return IPLIMIT_UNCOUNTED;
}

void iplimit_release(struct iplimit *t, int32_t idx)
{
    if (idx < 0 || (uint32_t)idx > t->mask) return;
    /* Our connection keeps the count above 0, so the tag cannot change
     * until this subtraction: it only lowers the count. */
    atomic_fetch_sub_explicit(&t->e[idx], 1, memory_order_relaxed);
}

uint32_t iplimit_count(const struct iplimit *t, const struct netaddr *a)
{
    uint64_t hv = source_hash(a), tag = tag_of(hv);
    uint32_t home = (uint32_t)hv & t->mask, n = 0;

    for (uint32_t k = 0; k < IPLIMIT_WINDOW; k++) {
        uint64_t v = atomic_load_explicit(&t->e[(home + k) & t->mask], memory_order_relaxed);
        if (v >> COUNT_BITS == tag) n += (uint32_t)(v & COUNT_MASK);
    }
    return n;
}
