/* sipload's pure arithmetic: the latency histogram and the token bucket. */
#include <math.h>
#include <string.h>

#include "bench/sipload/sipload.h"

/* Log-linear buckets (HdrHistogram's layout, base 2): values below
 * HIST_LINEAR have a bucket each; above, every power of two is split into
 * 2^HIST_SUB_BITS buckets, so a bucket is at most 1/32 of its value wide. */

unsigned hist__index(uint64_t v)
{
    if (v < HIST_LINEAR) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned first = HIST_SUB_BITS + 1; /* msb of HIST_LINEAR */
    if (msb >= first + HIST_OCTAVES) return HIST_N - 1;
    unsigned sub = (unsigned)(v >> (msb - HIST_SUB_BITS)) - (1u << HIST_SUB_BITS);
    return HIST_LINEAR + (msb - first) * (1u << HIST_SUB_BITS) + sub;
}

uint64_t hist__lower(unsigned idx)
{
    if (idx < HIST_LINEAR) return idx;
    unsigned k = idx - HIST_LINEAR;
    unsigned msb = HIST_SUB_BITS + 1 + (k >> HIST_SUB_BITS);
    uint64_t sub = k & ((1u << HIST_SUB_BITS) - 1);
    return ((1ull << HIST_SUB_BITS) + sub) << (msb - HIST_SUB_BITS);
}

static uint64_t bucket_mid(unsigned idx)
{
    uint64_t lo = hist__lower(idx);
    uint64_t hi = idx + 1 < HIST_N ? hist__lower(idx + 1) : lo * 2;
    return lo + (hi - lo - 1) / 2;
}

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
}

void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist__index(v)]++;
    if (h->n == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->n++;
    h->sum += v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    if (src->n == 0) return;
    for (unsigned i = 0; i < HIST_N; i++)
        dst->count[i] += src->count[i];
    if (dst->n == 0 || src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
    dst->n += src->n;
    dst->sum += src->sum;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->n == 0) return 0;
    if (q > 1) q = 1;
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    if (rank < 1) rank = 1;
    if (rank >= h->n) return h->max;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t v = bucket_mid(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- token bucket ---- */

/* Saved tokens are capped at 200 ms of the rate plus one (the slack a
 * wake-up a little late needs): a generator that falls behind for longer
 * (descheduled on a busy host) loses that offered load, counted in lost,
 * rather than firing it later as one burst. */
#define TB_BURST_S 0.2

void tb_init(struct tbucket *tb, double rate, uint64_t now_ns)
{
    memset(tb, 0, sizeof *tb);
    tb->rate = rate;
    tb->burst = rate * TB_BURST_S + 1;
    tb->last_ns = now_ns;
}

unsigned tb_take(struct tbucket *tb, uint64_t now_ns, unsigned max)
{
    if (tb->rate <= 0) return max;
    if (now_ns > tb->last_ns) {
        tb->tokens += (double)(now_ns - tb->last_ns) * tb->rate / 1e9;
        tb->last_ns = now_ns;
    }
    if (tb->tokens > tb->burst) {
        tb->lost += tb->tokens - tb->burst;
        tb->tokens = tb->burst;
    }
    double whole = floor(tb->tokens + 1e-6); /* rate x time summed in steps */
    unsigned n = whole > (double)max ? max : (unsigned)whole;
    tb->tokens -= n;
    return n;
}

uint64_t tb_wait_ns(const struct tbucket *tb)
{
    if (tb->rate <= 0) return UINT64_MAX;
    if (tb->tokens >= 1) return 0;
    return (uint64_t)((1 - tb->tokens) / tb->rate * 1e9) + 1;
}
