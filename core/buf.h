/* The one bounded output writer: appends into a caller's fixed buffer and
 * remembers an overflow instead of writing past the end. */
#ifndef SIPEDGE_BUF_H
#define SIPEDGE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/slice.h"

/* Borrowed storage: p[0..cap). After any overflow the contents are partial
 * and the caller must not send them (check buf_ok()). */
struct buf {
    char *p;
    size_t len, cap;
    bool overflow;
};

static inline struct buf buf_make(char *p, size_t cap)
{
    struct buf b = {p, 0, cap, false};
    return b;
}

static inline bool buf_ok(const struct buf *b)
{
    return !b->overflow;
}

static inline void buf_put(struct buf *b, const void *s, size_t n)
{
    if (n == 0) return; /* s may be NULL for an absent value */
    if (b->overflow || n > b->cap - b->len) {
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void buf_puts(struct buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static inline void buf_put_slice(struct buf *b, struct slice s)
{
    buf_put(b, s.ptr, s.len);
}

/* printf into the rest of the buffer (not for per-message paths). */
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Decimal, printf-free. */
void buf_put_u(struct buf *b, uint64_t v);
/* s as a quoted JSON string: '"' and '\\' escaped, control bytes and
 * every byte from 0x7f up as \u00XX (network bytes need not be UTF-8), so
 * the output is valid JSON whatever s holds. */
void buf_put_json_str(struct buf *b, struct slice s);
/* Exactly `digits` lowercase hex digits of v's low bits (digits <= 16). */
void buf_put_hex(struct buf *b, uint64_t v, int digits);

#endif
