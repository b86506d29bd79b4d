/* Hashed timer wheel: one slot per millisecond, long timers wait a lap. */
#include "core/timer.h"

#include <stddef.h>

#define SLOT_MASK (TIMER_WHEEL_SLOTS - 1)

_Static_assert((TIMER_WHEEL_SLOTS & SLOT_MASK) == 0, "slot count must be a power of two");

/* timer_cancel() gets no wheel, so the wheel a thread initialised last is
 * the one whose count it keeps: timers are owned by one worker, and a worker
 * has one wheel. */
static _Thread_local struct timer_wheel *thread_wheel;

void timer_wheel_init(struct timer_wheel *tw, uint64_t now_ms, struct worker *owner)
{
    tw->owner = owner;
    for (unsigned i = 0; i < TIMER_WHEEL_SLOTS; i++)
        tw->slots[i] = NULL;
    tw->now = now_ms;
    tw->count = 0;
    thread_wheel = tw;
}

void timer_init(struct timer *t, timer_cb cb)
{
    t->next = NULL;
    t->pprev = NULL;
    t->expires = 0;
    t->cb = cb;
}

static void link_slot(struct timer **head, struct timer *t)
{
    t->next = *head;
    if (t->next) t->next->pprev = &t->next;
    *head = t;
    t->pprev = head;
}

static void unlink_timer(struct timer *t)
{
    *t->pprev = t->next;
    if (t->next) t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
}

/* A timer already due goes to the next tick's slot, so it fires on the next
 * tick processed rather than a whole lap later. */
static unsigned slot_of(const struct timer_wheel *tw, uint64_t expires)
{
    return (unsigned)((expires > tw->now ? expires : tw->now + 1) & SLOT_MASK);
}

void timer_arm_at(struct timer_wheel *tw, struct timer *t, uint64_t expires_ms)
{
    if (timer_armed(t))
        unlink_timer(t);
    else
        tw->count++;
    t->expires = expires_ms;
    link_slot(&tw->slots[slot_of(tw, t->expires)], t);
}

void timer_cancel(struct timer *t)
{
    if (!timer_armed(t)) return;
    unlink_timer(t);
    if (thread_wheel && thread_wheel->count > 0) thread_wheel->count--;
}

/* Fires the due timers of one tick's slot. The slot is first moved to a local
 * list so callbacks may cancel or re-arm any timer (those still on the local
 * list unlink from it as usual); timers of later laps go back to the slot. */
static void run_slot(struct timer_wheel *tw, uint64_t tick)
{
    struct timer **slot = &tw->slots[tick & SLOT_MASK];
    struct timer *pending = *slot, *t;

    if (!pending) return;
    *slot = NULL;
    pending->pprev = &pending;
    while ((t = pending) != NULL) {
        unlink_timer(t);
        if (t->expires > tick) {
            link_slot(slot, t);
            continue;
        }
        tw->count--;
        t->cb(tw->owner, t);
    }
}

void timer_wheel_run(struct timer_wheel *tw, uint64_t now_ms)
{

    while (tw->now < now_ms) {
        if (tw->count == 0) {
            tw->now = now_ms;
            break;
        }
        tw->now++;
        run_slot(tw, tw->now);
    }
}

/* Bounds the list walking below: many long timers (a lap or more away) can
 * share the slots ahead, and the loop asks this every turn. */
#define NEXT_MAX_VISITS 128

int timer_wheel_next(const struct timer_wheel *tw, uint64_t now_ms, int max_ms)
{
    uint64_t tick, limit;
    unsigned visits = 0;

    if (max_ms <= 0) return 0;
    if (tw->count == 0) return max_ms;
    /* Look at most one lap ahead: a slot found non-empty holds either a timer
     * due at that tick or only timers of later laps. When the walk gets long,
     * answer early rather than exactly: waking too soon is harmless. */
    limit = now_ms + (uint64_t)max_ms;
    if (limit > tw->now + TIMER_WHEEL_SLOTS) limit = tw->now + TIMER_WHEEL_SLOTS;
    for (tick = tw->now + 1; tick <= limit; tick++) {
        for (const struct timer *t = tw->slots[tick & SLOT_MASK]; t; t = t->next) {
            if (t->expires <= tick || ++visits > NEXT_MAX_VISITS)
                return tick > now_ms ? (int)(tick - now_ms) : 0;
        }
    }
    return limit > now_ms ? (int)(limit - now_ms) : 0;
}
