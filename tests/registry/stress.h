/* What the registry's multi-thread stress tests share: a first-failure
 * note per thread and a cheap deterministic random stream. */
#ifndef SIPEDGE_TESTS_REGISTRY_STRESS_H
#define SIPEDGE_TESTS_REGISTRY_STRESS_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

/* Counts a failure in *bad and keeps the first reason in why[0..cap). */
static void stress_note(_Atomic unsigned *bad, char *why, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void stress_note(_Atomic unsigned *bad, char *why, size_t cap, const char *fmt, ...)
{
    if (atomic_fetch_add(bad, 1) == 0 || !why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
}

/* fail(s, fmt, ...) for a thread state s with `bad` and `why[]` fields. */
#define fail(s, ...) stress_note((s)->bad, (s)->why, sizeof((s)->why), __VA_ARGS__)

static inline uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

#endif
