/* The SIP Servers' pure parts: parsing, which target and SIP Server are in
 * use (upstream_pick) and where a failed request goes next (upstream_next). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "core/upstream.h"

TestSuite(upstream);

static struct upstream_set set;

/* SIP Server i with n targets 10.0.i.(1..n):5060/udp in state st[k]. */
static void server(unsigned i, unsigned n, const uint8_t *st)
{
    struct upstream *u = &set.up[i];
    memset(u, 0, sizeof *u);
    snprintf(u->host, sizeof u->host, "server%u.test", i);
    u->named = u->resolved = true;
    u->ntargets = (uint8_t)n;
    for (unsigned k = 0; k < n; k++) {
        char ip[32];
        snprintf(ip, sizeof ip, "10.0.%u.%u", i, k + 1);
        cr_assert(netaddr_from_ip(&u->tg[k].t.addr, slice_make(ip, strlen(ip)), 5060) == 0);
        u->tg[k].t.proto = SIP_TRANSPORT_UDP;
        u->tg[k].state = st[k];
    }
    if (set.nup <= i) set.nup = i + 1;
}

static void expect_addr(const struct netaddr *a, const char *ip)
{
    char s[NETADDR_STRLEN];
    cr_assert(netaddr_ip_str(a, s, sizeof s) > 0);
    cr_assert_str_eq(s, ip);
}

Test(upstream, parse_ip_literal_is_one_target_in_service_name_is_not)
{
    struct upstream u;
    memset(&u, 0, sizeof u);
    cr_assert(upstream_parse("sip:192.0.2.7:5080;transport=tcp", &u) == 0);
    cr_assert(u.resolved && !u.named && !u.down);
    cr_assert_eq(u.ntargets, 1);
    cr_assert_eq(u.tg[0].state, UPSTREAM_UNKNOWN);
    cr_assert_eq(u.tg[0].t.proto, SIP_TRANSPORT_TCP);
    cr_assert_eq(netaddr_port(&u.tg[0].t.addr), 5080);
    memset(&u, 0, sizeof u);
    cr_assert(upstream_parse("sips:sip.example.com", &u) == 0);
    cr_assert(u.named && u.down && !u.resolved);
    cr_assert_eq(u.ntargets, 0);
    cr_assert_str_eq(u.tls_name, "sip.example.com");
    memset(&u, 0, sizeof u);
    cr_assert(upstream_parse("tel:+123", &u) < 0);
}

Test(upstream, pick_prefers_the_first_target_up_and_goes_back_to_it)
{
    memset(&set, 0, sizeof set);
    server(0, 3, (uint8_t[]){UPSTREAM_DOWN, UPSTREAM_UNKNOWN, UPSTREAM_UP});
    upstream_pick(&set);
    cr_assert(!set.up[0].down);
    cr_assert_eq(set.up[0].cur, 2, "an up target before an unknown one");
    expect_addr(&set.up[0].addr, "10.0.0.3");
    set.up[0].tg[2].state = UPSTREAM_DOWN;
    upstream_pick(&set);
    cr_assert_eq(set.up[0].cur, 1, "unknown when none is up");
    set.up[0].tg[0].state = UPSTREAM_UP;
    upstream_pick(&set);
    cr_assert_eq(set.up[0].cur, 0, "the preferred target answers again: back to it");
    expect_addr(&set.up[0].addr, "10.0.0.1");
    for (unsigned t = 0; t < 3; t++)
        set.up[0].tg[t].state = UPSTREAM_DOWN;
    upstream_pick(&set);
    cr_assert(set.up[0].down);
    cr_assert(!upstream_in_service(&set));
}

Test(upstream, pick_switches_the_pair_and_back)
{
    memset(&set, 0, sizeof set);
    server(0, 1, (uint8_t[]){UPSTREAM_UP});
    server(1, 1, (uint8_t[]){UPSTREAM_UP});
    cr_assert(!upstream_pick(&set));
    cr_assert_eq(set.active, 0);
    set.up[0].tg[0].state = UPSTREAM_DOWN;
    cr_assert(upstream_pick(&set), "primary down: the backup");
    cr_assert_eq(set.active, 1);
    set.up[0].tg[0].state = UPSTREAM_UNKNOWN;
    upstream_pick(&set);
    cr_assert_eq(set.active, 1, "a backup known up stays before a primary not heard from");
    set.up[0].tg[0].state = UPSTREAM_UP;
    cr_assert(upstream_pick(&set), "the primary answers again: it takes the traffic again");
    cr_assert_eq(set.active, 0);
    set.up[0].tg[0].state = UPSTREAM_DOWN;
    set.up[1].tg[0].state = UPSTREAM_DOWN;
    upstream_pick(&set);
    cr_assert(!upstream_in_service(&set));
    set.up[1].tg[0].state = UPSTREAM_UNKNOWN;
    upstream_pick(&set);
    cr_assert(upstream_in_service(&set), "unknown is in service when nothing is up");
    cr_assert_eq(set.active, 1);
    /* a name not resolved is not in service, whatever its targets say */
    set.up[1].resolved = false;
    upstream_pick(&set);
    cr_assert(!upstream_in_service(&set));
}

Test(upstream, next_target_after_a_failure_follows_rfc3263_order)
{
    memset(&set, 0, sizeof set);
    server(0, 3, (uint8_t[]){UPSTREAM_UP, UPSTREAM_UNKNOWN, UPSTREAM_UP});
    server(1, 2, (uint8_t[]){UPSTREAM_DOWN, UPSTREAM_UP});
    unsigned i, t;
    uint16_t tried = 1u << 0; /* primary target 0 failed */
    cr_assert(upstream_next(&set, 0, tried, &i, &t));
    cr_assert(i == 0 && t == 2, "the same name's next target up: %u/%u", i, t);
    tried |= 1u << 2;
    cr_assert(upstream_next(&set, 0, tried, &i, &t));
    cr_assert(i == 1 && t == 1, "then the backup's target up, never a down one: %u/%u", i, t);
    tried |= 1u << (DNS_MAX_TARGETS + 1);
    cr_assert(upstream_next(&set, 0, tried, &i, &t));
    cr_assert(i == 0 && t == 1, "unknown ones last: %u/%u", i, t);
    tried |= 1u << 1;
    cr_assert(!upstream_next(&set, 0, tried, &i, &t), "nothing left");
    /* from the backup, the backup's own targets come first */
    cr_assert(upstream_next(&set, 1, 1u << DNS_MAX_TARGETS, &i, &t));
    cr_assert(i == 1 && t == 1);
}

Test(upstream, target_of_and_source_cover_every_target)
{
    memset(&set, 0, sizeof set);
    server(0, 2, (uint8_t[]){UPSTREAM_UP, UPSTREAM_UP});
    upstream_pick(&set);
    struct netaddr a;
    cr_assert(netaddr_from_ip(&a, SLICE_LIT("10.0.0.2"), 5060) == 0);
    cr_assert_eq(upstream_target_of(&set.up[0], SIP_TRANSPORT_UDP, &a), 1);
    cr_assert_eq(upstream_target_of(&set.up[0], SIP_TRANSPORT_TCP, &a), -1);
    struct rx_info rx = {.proto = SIP_TRANSPORT_UDP, .src = a};
    cr_assert(upstream_is_source(&set.up[0], &rx), "a request from a target not in use");
    cr_assert(netaddr_from_ip(&rx.src, SLICE_LIT("10.0.0.9"), 5060) == 0);
    cr_assert(!upstream_is_source(&set.up[0], &rx));
}
