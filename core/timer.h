/* Per-worker hashed timer wheel with millisecond resolution. */
#ifndef SIPEDGE_TIMER_H
#define SIPEDGE_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct worker;
struct timer;
typedef void (*timer_cb)(struct worker *w, struct timer *t);

/* Embed in the object it times; owned by one worker. */
struct timer {
    struct timer *next, **pprev; /* private: wheel slot list */
    uint64_t expires;            /* private: absolute ms */
    timer_cb cb;                 /* set by timer_init */
};

#define TIMER_WHEEL_SLOTS 4096 /* 4.096 s at 1 ms; longer timers cascade by rescan */

struct timer_wheel {
    struct timer *slots[TIMER_WHEEL_SLOTS];
    uint64_t now;         /* last processed ms */
    unsigned count;       /* armed timers */
    struct worker *owner; /* handed to every callback; never dereferenced here */
};

/* The wheel knows its owner only as the pointer it hands to callbacks, so
 * this leaf depends on nothing of the runtime. */
void timer_wheel_init(struct timer_wheel *tw, uint64_t now_ms, struct worker *owner);
void timer_init(struct timer *t, timer_cb cb);
/* Arms (or re-arms) t to fire at the absolute time expires_ms (the owner's
 * monotonic milliseconds; worker_timer_arm() arms relative to its clock). */
void timer_arm_at(struct timer_wheel *tw, struct timer *t, uint64_t expires_ms);
void timer_cancel(struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
    return t->pprev != 0;
}
/* Fires every timer due at or before now_ms. Called by the loop. A callback
 * may arm or cancel any timer, including its own. */
void timer_wheel_run(struct timer_wheel *tw, uint64_t now_ms);
/* Milliseconds until the next timer (capped at max_ms), for epoll_wait. */
int timer_wheel_next(const struct timer_wheel *tw, uint64_t now_ms, int max_ms);

#endif
