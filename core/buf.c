/* Formatting helpers of the bounded output writer. */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->overflow) return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->overflow = true;
    else
        b->len += (size_t)n;
}

void buf_put_u(struct buf *b, uint64_t v)
{
    char t[20];
    size_t n = 0;

    do {
        t[sizeof t - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(b, t + sizeof t - n, n);
}

void buf_put_hex(struct buf *b, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    char t[16];

    if (digits > 16) digits = 16;
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        t[i] = hex[v & 15];
    buf_put(b, t, (size_t)digits);
}

void buf_put_json_str(struct buf *b, struct slice s)
{
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') {
            buf_put(b, "\\", 1);
            buf_put(b, &s.ptr[i], 1);
        } else if (c < 0x20 || c >= 0x7f) {
            buf_put(b, "\\u00", 4);
            buf_put_hex(b, c, 2);
        } else {
            buf_put(b, &s.ptr[i], 1);
        }
    }
    buf_put(b, "\"", 1);
}
