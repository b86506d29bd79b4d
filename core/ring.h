/* Bounded single-producer single-consumer ring of pointers between two threads. */
#ifndef SIPEDGE_RING_H
#define SIPEDGE_RING_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#define RING_CACHE_LINE 64

/* Exactly one producer thread and one consumer thread per ring. Each index is
 * written by one side only and sits on its own cache line, next to that
 * side's cached copy of the other index (so a side only reads the other's
 * line when its cached copy says the ring looks full or empty). */
struct ring {
    /* read-only after ring_new */
    size_t mask;
    /* consumer side */
    _Alignas(RING_CACHE_LINE) _Atomic size_t head;
    size_t tail_cache;
    /* producer side */
    _Alignas(RING_CACHE_LINE) _Atomic size_t tail;
    size_t head_cache;
    _Alignas(RING_CACHE_LINE) void *slots[];
};

/* Allocates an empty ring for cap pointers; cap must be a power of two >= 2.
 * Returns NULL on a bad cap or no memory. */
struct ring *ring_new(size_t cap);
/* Frees the ring, not the pointers still in it. NULL-safe. */
void ring_free(struct ring *r);

size_t ring_capacity(const struct ring *r);

/* Producer only: appends up to n items in order; returns how many fit. */
size_t ring_push_n(struct ring *r, void *const *items, size_t n);
static inline bool ring_push(struct ring *r, void *item)
{
    return ring_push_n(r, &item, 1) == 1;
}

/* Consumer only: removes up to max items in order into out; returns the count. */
size_t ring_pop_n(struct ring *r, void **out, size_t max);

/* Consumer only: true when nothing is waiting (acquire: a later pop sees it). */
bool ring_empty(const struct ring *r);

#endif
