/* SPSC ring: release on publish, acquire on observe, no locks, no CAS. */
#include "core/ring.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct ring *ring_new(size_t cap)
{
    struct ring *r;
    size_t size;

    if (cap < 2 || (cap & (cap - 1)) != 0 || cap > SIZE_MAX / sizeof(void *) / 2) return NULL;
    size = sizeof(*r) + cap * sizeof(void *);
    size = (size + RING_CACHE_LINE - 1) & ~(size_t)(RING_CACHE_LINE - 1);
    r = aligned_alloc(RING_CACHE_LINE, size);
    if (!r) return NULL;
    memset(r, 0, sizeof(*r));
    r->mask = cap - 1;
    atomic_init(&r->head, 0);
    atomic_init(&r->tail, 0);
    return r;
}

void ring_free(struct ring *r)
{
    free(r);
}

size_t ring_capacity(const struct ring *r)
{
    return r->mask + 1;
}

size_t ring_push_n(struct ring *r, void *const *items, size_t n)
{
    size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    size_t room = r->mask + 1 - (tail - r->head_cache);

    if (room < n) {
        r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        room = r->mask + 1 - (tail - r->head_cache);
        if (n > room) n = room;
    }
    for (size_t i = 0; i < n; i++)
        r->slots[(tail + i) & r->mask] = items[i];
    atomic_store_explicit(&r->tail, tail + n, memory_order_release);
    return n;
}

size_t ring_pop_n(struct ring *r, void **out, size_t max)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t avail = r->tail_cache - head;

    if (avail < max) {
        r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        avail = r->tail_cache - head;
        if (max > avail) max = avail;
    }
    for (size_t i = 0; i < max; i++)
        out[i] = r->slots[(head + i) & r->mask];
    atomic_store_explicit(&r->head, head + max, memory_order_release);
    return max;
}

bool ring_empty(const struct ring *r)
{
    return atomic_load_explicit(&r->tail, memory_order_acquire) ==
           atomic_load_explicit(&r->head, memory_order_relaxed);
}
