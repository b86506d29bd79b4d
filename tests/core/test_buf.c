/* The bounded writer: exact fills succeed, one byte more overflows and sticks. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/buf.h"

TestSuite(buf);

Test(buf, fills_exactly_then_overflows_and_stays_overflowed)
{
    char mem[8];
    struct buf b = buf_make(mem, sizeof mem);

    buf_puts(&b, "1234");
    buf_put_u(&b, 5678);
    cr_assert(buf_ok(&b));
    cr_assert_eq(b.len, 8);
    cr_assert(memcmp(mem, "12345678", 8) == 0);
    buf_put(&b, "x", 1);
    cr_assert(!buf_ok(&b));
    cr_assert_eq(b.len, 8);
    buf_put(&b, "", 0);
    cr_assert(!buf_ok(&b), "an overflow is never forgotten");
}

Test(buf, numbers_and_printf)
{
    char mem[64];
    struct buf b = buf_make(mem, sizeof mem);

    buf_put_u(&b, 0);
    buf_puts(&b, " ");
    buf_put_u(&b, 18446744073709551615ULL);
    buf_puts(&b, " ");
    buf_put_hex(&b, 0xabcULL, 6);
    buf_printf(&b, " %s=%d", "q", 7);
    cr_assert(buf_ok(&b));
    cr_assert_eq(b.len, strlen("0 18446744073709551615 000abc q=7"));
    cr_assert(memcmp(mem, "0 18446744073709551615 000abc q=7", b.len) == 0);
}

Test(buf, printf_that_does_not_fit_overflows)
{
    char mem[4];
    struct buf b = buf_make(mem, sizeof mem);

    buf_printf(&b, "%s", "toolong");
    cr_assert(!buf_ok(&b));
    cr_assert_eq(b.len, 0);
}

Test(buf, json_string_escapes_whatever_the_bytes)
{
    char mem[64];
    struct buf b = buf_make(mem, sizeof mem);
    static const char in[] = "a\"b\\c\r\n\x01\x7f\xc3\xa9";

    buf_put_json_str(&b, slice_make(in, sizeof in - 1));
    cr_assert(buf_ok(&b));
    static const char want[] = "\"a\\\"b\\\\c\\u000d\\u000a\\u0001\\u007f\\u00c3\\u00a9\"";
    cr_assert_eq(b.len, sizeof want - 1);
    cr_assert(memcmp(mem, want, b.len) == 0, "%.*s", (int)b.len, mem);
    b = buf_make(mem, 3);
    buf_put_json_str(&b, slice_make("abc", 3));
    cr_assert(!buf_ok(&b), "a string that does not fit overflows");
}
