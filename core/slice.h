/* Borrowed views of wire bytes: the only way received data is handled. */
#ifndef SIPEDGE_SLICE_H
#define SIPEDGE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A borrowed byte range. Never NUL-terminated; never passed to str*(). */
struct slice {
    const char *ptr;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){(s), sizeof(s) - 1})
#define SLICE_NULL   ((struct slice){NULL, 0})

static inline struct slice slice_make(const char *p, size_t n)
{
    return (struct slice){p, n};
}

static inline bool slice_eq(struct slice a, struct slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static inline char slice_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

/* ASCII case-insensitive comparison. */
static inline bool slice_case_eq(struct slice a, struct slice b)
{
    if (a.len != b.len) return false;
    for (size_t i = 0; i < a.len; i++)
        if (slice_lower(a.ptr[i]) != slice_lower(b.ptr[i])) return false;
    return true;
}

#define slice_case_eq_lit(a, lit) slice_case_eq((a), SLICE_LIT(lit))
#define slice_eq_lit(a, lit)      slice_eq((a), SLICE_LIT(lit))

static inline bool slice_starts_with(struct slice a, struct slice prefix)
{
    return a.len >= prefix.len && memcmp(a.ptr, prefix.ptr, prefix.len) == 0;
}

/* Parses a decimal unsigned integer that fills the whole slice.
 * Returns false on empty input, a non-digit, or a value above max. */
static inline bool slice_to_u64(struct slice s, uint64_t max, uint64_t *out)
{
    if (s.len == 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.ptr[i] - '0';
        if (d > 9) return false;
        if (v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

#endif
