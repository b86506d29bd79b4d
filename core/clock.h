/* The one monotonic clock helper: milliseconds since an arbitrary start. */
#ifndef SIPEDGE_CLOCK_H
#define SIPEDGE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in milliseconds: never jumps with the wall clock. Any
 * thread; a vDSO call, no syscall. */
static inline uint64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
