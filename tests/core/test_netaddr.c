/* Tests for core/netaddr.c: literals, printing, comparison, hashing, forbidden targets. */
#include <criterion/criterion.h>
#include <string.h>

#include "core/netaddr.h"

TestSuite(netaddr);

static struct slice S(const char *s) {
    return slice_make(s, strlen(s));
}

Test(netaddr, parses_and_prints_hostports)
{
    static const struct {
        const char *in, *out;
        int family, port;
    } ok[] = {
        {"127.0.0.1:5060", "127.0.0.1:5060", AF_INET, 5060},
        {"0.0.0.0:0", "0.0.0.0:0", AF_INET, 0},
        {"[::1]:5061", "[::1]:5061", AF_INET6, 5061},
        {"[2001:db8::a:1]:65535", "[2001:db8::a:1]:65535", AF_INET6, 65535},
        {"[::ffff:10.0.0.1]:5", "[::ffff:10.0.0.1]:5", AF_INET6, 5},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct netaddr a;
        char buf[NETADDR_STRLEN];
        cr_assert_eq(netaddr_parse(&a, S(ok[i].in)), 0, "%s", ok[i].in);
        cr_assert_eq(a.sa.sa_family, ok[i].family);
        cr_assert_eq(netaddr_port(&a), ok[i].port);
        cr_assert_eq(netaddr_str(&a, buf, sizeof(buf)), strlen(ok[i].out));
        cr_assert_str_eq(buf, ok[i].out);
    }
}

Test(netaddr, rejects_bad_hostports)
{
    static const char *const bad[] = {
        "",
        ":",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:5x",
        "127.0.0.1: 5",
        "::1:5060",
        "[::1]",
        "[::1]5060",
        "[::1:5060",
        "[127.0.0.1]:5060",
        "256.0.0.1:5",
        "1.2.3:5",
        "host.example:5060",
        "[fe80::1%eth0]:5",
        "1.2.3.4:99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct netaddr a;
        cr_assert_lt(netaddr_parse(&a, S(bad[i])), 0, "accepted \"%s\"", bad[i]);
    }
}

Test(netaddr, from_ip_reads_only_the_slice)
{
    struct netaddr a;
    char buf[NETADDR_STRLEN];
    /* the bytes after the slice must not be read */
    cr_assert_eq(netaddr_from_ip(&a, slice_make("10.1.2.3999", 8), 7), 0);
    netaddr_ip_str(&a, buf, sizeof(buf));
    cr_assert_str_eq(buf, "10.1.2.3");
    cr_assert_lt(netaddr_from_ip(&a, slice_make("10.1\0.2", 7), 7), 0, "embedded NUL");
    cr_assert_lt(netaddr_from_ip(&a, S("10.1.2.3"), 65536), 0);
    cr_assert_lt(netaddr_from_ip(&a, S("[::1]"), 5), 0, "brackets are not part of an IP");
    cr_assert_eq(netaddr_from_ip(&a, S("::1"), 5), 0);
    cr_assert_eq(netaddr_ip_str(&a, buf, sizeof(buf)), 3);
    cr_assert_str_eq(buf, "::1");
}

Test(netaddr, short_buffers_give_nothing_rather_than_a_cut_address)
{
    struct netaddr a;
    char buf[8];
    netaddr_parse(&a, S("192.168.100.200:5060"));
    cr_assert_eq(netaddr_str(&a, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(netaddr_ip_str(&a, buf, sizeof(buf)), 0);
}

Test(netaddr, equality_and_hash)
{
    struct netaddr a, b, c, d;
    netaddr_parse(&a, S("10.0.0.1:5060"));
    netaddr_from_ip(&b, S("10.0.0.1"), 5060);
    netaddr_parse(&c, S("10.0.0.1:5061"));
    netaddr_parse(&d, S("[::ffff:10.0.0.1]:5060"));
    cr_assert(netaddr_eq(&a, &b));
    cr_assert_eq(netaddr_hash(0, &a), netaddr_hash(0, &b));
    cr_assert_not(netaddr_eq(&a, &c));
    cr_assert_neq(netaddr_hash(0, &a), netaddr_hash(0, &c));
    cr_assert_not(netaddr_eq(&a, &d), "different families are different addresses");

    struct netaddr e, f;
    netaddr_parse(&e, S("[2001:db8::1]:5060"));
    netaddr_parse(&f, S("[2001:db8::2]:5060"));
    cr_assert_not(netaddr_eq(&e, &f));
    cr_assert_neq(netaddr_hash(0, &e), netaddr_hash(0, &f));
}

Test(netaddr, forbidden_targets)
{
    static const struct {
        const char *in;
        bool forbidden;
    } cases[] = {
        {"0.0.0.0:5060", true},
        {"255.255.255.255:5060", true},
        {"224.0.0.1:5060", true},
        {"239.255.255.250:1900", true},
        {"10.0.0.1:0", true},
        {"[::]:5060", true},
        {"[ff02::1]:5060", true},
        {"[::ffff:224.0.0.9]:5060", true},
        {"127.0.0.1:5060", false},
        {"192.0.2.1:5061", false},
        {"[::1]:5060", false},
        {"[2001:db8::1]:5060", false},
        {"223.255.255.255:5060", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct netaddr a;
        cr_assert_eq(netaddr_parse(&a, S(cases[i].in)), 0, "%s", cases[i].in);
        cr_assert_eq(netaddr_is_forbidden(&a), cases[i].forbidden, "%s", cases[i].in);
    }
    struct netaddr none = {0};
    cr_assert(netaddr_is_forbidden(&none), "an unset address is never a target");
}

Test(netaddr, internal_destinations)
{
    static const struct {
        const char *hp;
        bool internal;
    } cases[] = {
        {"127.0.0.1:5060", true},         {"127.9.9.9:5060", true},
        {"10.1.2.3:5060", true},          {"172.16.0.1:5060", true},
        {"172.31.255.255:5060", true},    {"172.32.0.1:5060", false},
        {"192.168.1.1:5060", true},       {"169.254.1.1:5060", true},
        {"100.64.0.1:5060", true},        {"0.1.2.3:5060", true},
        {"8.8.8.8:5060", false},          {"[::1]:5060", true},
        {"[fe80::1]:5060", true},         {"[fd00::1]:5060", true},
        {"[2001:db8::1]:5060", false},    {"[::ffff:10.0.0.1]:5060", true},
        {"[::ffff:8.8.8.8]:5060", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct netaddr a;
        cr_assert_eq(netaddr_parse(&a, slice_make(cases[i].hp, strlen(cases[i].hp))), 0, "%s",
                     cases[i].hp);
        cr_assert_eq(netaddr_is_internal(&a), cases[i].internal, "%s", cases[i].hp);
    }
}

Test(netaddr, cidr_parse_and_match)
{
    struct netaddr_cidr c;
    struct netaddr a;

    cr_assert_eq(netaddr_cidr_parse(&c, S("10.20.0.0/16")), 0);
    netaddr_parse(&a, S("10.20.3.4:5060"));
    cr_assert(netaddr_cidr_match(&c, &a));
    netaddr_parse(&a, S("[::ffff:10.20.3.4]:5060"));
    cr_assert(netaddr_cidr_match(&c, &a), "v4-mapped matches an IPv4 prefix");
    netaddr_parse(&a, S("10.21.0.1:5060"));
    cr_assert(!netaddr_cidr_match(&c, &a));
    cr_assert_eq(netaddr_cidr_parse(&c, S("10.20.0.0/13")), 0);
    cr_assert(netaddr_cidr_match(&c, &a), "a prefix that is not byte aligned");
    cr_assert_eq(netaddr_cidr_parse(&c, S("127.0.0.1")), 0);
    cr_assert_eq(c.bits, 32);
    cr_assert_eq(netaddr_cidr_parse(&c, S("fd00::/8")), 0);
    netaddr_parse(&a, S("[fd12::1]:5060"));
    cr_assert(netaddr_cidr_match(&c, &a));
    netaddr_parse(&a, S("10.0.0.1:5060"));
    cr_assert(!netaddr_cidr_match(&c, &a), "families differ");
    cr_assert_eq(netaddr_cidr_parse(&c, S("0.0.0.0/0")), 0);
    cr_assert(netaddr_cidr_match(&c, &a));
    cr_assert_neq(netaddr_cidr_parse(&c, S("10.0.0.0/33")), 0);
    cr_assert_neq(netaddr_cidr_parse(&c, S("10.0.0.0/")), 0);
    cr_assert_neq(netaddr_cidr_parse(&c, S("host.example/8")), 0);
    cr_assert_neq(netaddr_cidr_parse(&c, S("::/129")), 0);
}

Test(netaddr, source_is_the_ip_or_the_ipv6_slash_64)
{
    static const struct {
        const char *a, *b;
        bool same;
    } cases[] = {
        {"127.0.0.2:5060", "127.0.0.2:40000", true},
        {"127.0.0.2:5060", "127.0.0.3:5060", false},
        {"[::ffff:10.0.0.1]:5", "10.0.0.1:6", true},
        {"[2001:db8:1:2::a]:5060", "[2001:db8:1:2:ffff::1]:7", true},
        {"[2001:db8:1:2::a]:5060", "[2001:db8:1:3::a]:5060", false},
        {"10.0.0.1:5060", "[2001:db8::1]:5060", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct netaddr a, b, sa, sb;
        cr_assert_eq(netaddr_parse(&a, S(cases[i].a)), 0);
        cr_assert_eq(netaddr_parse(&b, S(cases[i].b)), 0);
        netaddr_source(&sa, &a);
        netaddr_source(&sb, &b);
        cr_expect_eq(netaddr_eq(&sa, &sb), cases[i].same, "%s vs %s", cases[i].a, cases[i].b);
        if (cases[i].same) cr_expect_eq(netaddr_hash(0, &sa), netaddr_hash(0, &sb));
        cr_expect_eq(netaddr_port(&sa), 0);
    }
}
