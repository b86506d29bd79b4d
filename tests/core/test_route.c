/* Tests for core/route.c: the routing decision of ARCHITECTURE §2, one case per
 * rule, and the edge policy, one case per refusal. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/route.h"
#include "registry/flowmap.h"
#include "registry/flowtoken.h"
#include "registry/locmap.h"
#include "parsed_msg.h"

#define MAXH   32
#define OUR_IP "10.0.0.1" /* every listener's host */

static struct config cfg;
static struct upstream_set ups;
static struct flowtoken_key key;
static struct flowmap *flows;
static struct locmap *loc;
static struct route_view view;

/* The runtime's answer for our addresses: OUR_IP on 5060 (UDP, TCP) or
 * 5061 (TLS), or with no port. */
static bool fake_is_ours(const void *ctx, struct slice host, int port)
{
    return slice_eq_lit(host, OUR_IP) && (port == 0 || port == 5060 || port == 5061);
}

static void add_listener(uint8_t proto, int port)
{
    struct listen_cfg *l = &cfg.listen[cfg.nlisten++];
    l->proto = proto;
    l->addr = parsed_addr(OUR_IP, port);
    snprintf(l->host, sizeof l->host, OUR_IP);
}

/* One SIP Server (10.0.0.9:5060, UDP) and one peer site (site-b.example at
 * 10.0.1.1:5060 over TCP); no registrar. */
static void setup(void)
{
    locmap_thread_register();
    memset(&cfg, 0, sizeof cfg);
    add_listener(SIP_TRANSPORT_UDP, 5060);
    add_listener(SIP_TRANSPORT_TCP, 5060);
    add_listener(SIP_TRANSPORT_TLS, 5061);
    cfg.oos_force_s = 7;
    snprintf(cfg.upstream[0], sizeof cfg.upstream[0], "sip:10.0.0.9:5060");
    cfg.nupstream = 1;
    snprintf(cfg.peers[0].domain, sizeof cfg.peers[0].domain, "site-b.example");
    snprintf(cfg.peers[0].uri, sizeof cfg.peers[0].uri, "sip:10.0.1.1:5060;transport=tcp");
    cfg.npeers = 1;
    memset(&ups, 0, sizeof ups);
    cr_assert(upstream_parse(cfg.upstream[0], &ups.up[0]) == 0);
    ups.nup = 1;
    cr_assert(upstream_parse(cfg.peers[0].uri, &ups.peer[0]) == 0);
    ups.npeer = 1;
    cr_assert(flowtoken_key_init(&key, NULL) == 0);
    flows = flowmap_new();
    loc = locmap_new(1000, 16);
    cr_assert(flows && loc);
    view = (struct route_view){.cfg = &cfg,
                               .ups = &ups,
                               .key = &key,
                               .flows = flows,
                               .loc = loc,
                               .now_ms = 1000000,
                               .is_ours = fake_is_ours};
}

static void teardown(void)
{
    flowmap_free(flows);
    locmap_free(loc);
    locmap_thread_unregister();
}

TestSuite(route, .init = setup, .fini = teardown);

/* Parses and validates "METHOD ruri" with `hdrs` (whole lines) and a To
 * carrying to_tag when not NULL. */
static void req(struct parsed *r, const char *method, const char *ruri, const char *hdrs,
                const char *to_tag)
{
    int n = snprintf(r->buf, sizeof r->buf,
                     "%s %s SIP/2.0\r\n"
                     "Via: SIP/2.0/UDP 10.0.9.9:5060;branch=z9hG4bKt1\r\n"
                     "%s"
                     "To: <sip:bob@example.com>%s%s\r\n"
                     "From: <sip:alice@example.com>;tag=1\r\n"
                     "Call-ID: rt@test\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n",
                     method, ruri, hdrs ? hdrs : "", to_tag ? ";tag=" : "", to_tag ? to_tag : "",
                     method);
    cr_assert(n > 0 && (size_t)n < sizeof r->buf);
    char text[sizeof r->buf];
    memcpy(text, r->buf, (size_t)n);
    parsed_init(r, text, (size_t)n, true);
}

static struct rx_info rx_from(uint8_t proto, const char *ip, int port)
{
    struct rx_info rx = {.proto = proto, .listener = 0, .src = parsed_addr(ip, port)};
    if (proto != SIP_TRANSPORT_UDP) rx.conn = CONN_REF_MAKE(0, 3, 7);
    return rx;
}

/* An endpoint (a phone) and the SIP Server, as sources. */
#define FROM_PHONE    rx_from(SIP_TRANSPORT_UDP, "10.0.9.9", 5060)
#define FROM_UPSTREAM rx_from(SIP_TRANSPORT_UDP, "10.0.0.9", 5060)

static void decide(const struct parsed *r, struct rx_info rx, struct route_decision *d)
{
    route_decide(&view, &r->m, &rx, d);
}

static void expect_forward(const struct route_decision *d, enum route_rule rule, uint8_t proto,
                           const char *ip, int port)
{
    cr_assert_eq(d->action, ROUTE_FORWARD, "action %d (code %d %s), want forward", d->action,
                 d->code, d->warning ? d->warning : "");
    cr_assert_eq(d->rule, rule, "rule %d, want %d", d->rule, rule);
    cr_assert_eq(d->plan.proto, proto);
    struct netaddr want = parsed_addr(ip, port);
    char a[NETADDR_STRLEN];
    netaddr_str(&d->plan.dst, a, sizeof a);
    cr_assert(netaddr_eq(&d->plan.dst, &want), "to %s, want %s:%d", a, ip, port);
}

static void expect_reply(const struct route_decision *d, enum route_rule rule, int code,
                         const char *warning)
{
    cr_assert_eq(d->action, ROUTE_REPLY, "action %d, want reply %d", d->action, code);
    cr_assert_eq(d->rule, rule, "rule %d, want %d", d->rule, rule);
    cr_assert_eq(d->code, code);
    if (warning)
        cr_assert_str_eq(d->warning, warning);
    else
        cr_assert_null(d->warning);
}

#define PHONE_IP   "10.0.9.50"
#define PHONE_PORT 40000
#define PHONE_CONN CONN_REF_MAKE(1, 5, 9)
#define PHONE_RURI "sip:alice@" PHONE_IP ":40000;transport=tls"

#define CALL_ID "rt@test" /* every request's, see req() */

/* A Route header line (into out) with a flow token of `kind` (a Record-Route
 * token bound to call_id) for the phone's TLS connection PHONE_CONN,
 * recorded in the flow map as holding conn (CONN_REF_NONE: not recorded). */
static void phone_token(char *out, size_t cap, conn_ref conn, uint8_t kind, const char *call_id)
{
    struct flowtoken t = {.kind = kind,
                          .proto = SIP_TRANSPORT_TLS,
                          .conn = PHONE_CONN,
                          .peer = parsed_addr(PHONE_IP, PHONE_PORT)};
    char tok[FLOWTOKEN_STR_LEN + 1];
    size_t n = flowtoken_encode(&key, &t, slice_make(call_id, strlen(call_id)), tok, sizeof tok);
    cr_assert_gt(n, 0);
    tok[n] = 0;
    snprintf(out, cap, "Route: <sip:%s@" OUR_IP ":5061;transport=tls;lr>\r\n", tok);
    if (conn == CONN_REF_NONE) return;
    struct flow_entry fe = {.peer = t.peer, .proto = SIP_TRANSPORT_TLS, .conn = conn};
    cr_assert(flowmap_set(flows, &fe) == 0);
}

/* The phone's Path token (what the SIP Server routes its calls with). */
static void phone_flow(char *out, size_t cap, conn_ref conn)
{
    phone_token(out, cap, conn, FLOWTOKEN_PATH, CALL_ID);
}

static void expect_refused(const struct route_decision *d, enum route_rule rule, int code,
                           const char *warning, enum stat_refusal why)
{
    expect_reply(d, rule, code, warning);
    cr_assert_eq(d->refusal, (int)why, "refusal %d, want %d", d->refusal, why);
}

/* ---- rule 1: the top Route is ours ------------------------------------------ */

Test(route, rule1_own_routes_are_popped)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:bob@example.com", "Route: <sip:" OUR_IP ";lr>\r\n", NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert_eq(d.plan.npop, 1);
    cr_assert(d.plan.to_upstream);
    cr_assert(d.plan.from_endpoint);
    /* both entries of a double Record-Route */
    req(&r, "INVITE", "sip:bob@example.com",
        "Route: <sip:" OUR_IP ":5061;transport=tls;lr>, <sip:" OUR_IP ";lr>\r\n", NULL);
    decide(&r, FROM_PHONE, &d);
    cr_assert_eq(d.plan.npop, 2);
    /* a Route that is not ours stays (and is the SIP Server's to follow) */
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:10.0.2.2;lr>\r\n", "x");
    decide(&r, FROM_UPSTREAM, &d);
    cr_assert_eq(d.plan.npop, 0);
    /* and one we cannot read is refused */
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:" OUR_IP ";lr>, <sip:10.0.2.2;lr>\r\n", "x");
    r.h[r.m.first[SIP_HDR_ROUTE]].value = SLICE_LIT("<sip:");
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_OURS, 400, "Bad Route");
}

Test(route, rule1_flow_token_delivers_on_that_connection)
{
    char route[256];
    struct parsed r;
    struct route_decision d;
    phone_flow(route, sizeof route, PHONE_CONN);
    req(&r, "BYE", PHONE_RURI, route, "x");
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_OURS, SIP_TRANSPORT_TLS, PHONE_IP, PHONE_PORT);
    cr_assert_eq(d.plan.conn, PHONE_CONN);
    cr_assert_eq(d.plan.npop, 1);
    cr_assert(!d.plan.from_endpoint);
    cr_assert(!d.plan.to_upstream);
}

Test(route, rule1_flow_gone_is_430)
{
    char route[256];
    struct parsed r;
    struct route_decision d;
    phone_flow(route, sizeof route, CONN_REF_NONE);
    req(&r, "BYE", PHONE_RURI, route, "x");
    decide(&r, FROM_UPSTREAM, &d);
    expect_refused(&d, ROUTE_RULE_OURS, 430, NULL, REFUSE_FLOW_GONE);
    /* the phone reconnected: a newer connection is another flow */
    phone_flow(route, sizeof route, PHONE_CONN + 1);
    decide(&r, FROM_UPSTREAM, &d);
    expect_refused(&d, ROUTE_RULE_OURS, 430, NULL, REFUSE_FLOW_GONE);
}

Test(route, rule1_forged_token_is_403)
{
    char route[256];
    struct parsed r;
    struct route_decision d;
    phone_flow(route, sizeof route, PHONE_CONN);
    char *mac = strchr(route, '@') - 1; /* the last character: the MAC */
    *mac = *mac == 'A' ? 'B' : 'A';
    req(&r, "BYE", PHONE_RURI, route, "x");
    decide(&r, FROM_UPSTREAM, &d);
    expect_refused(&d, ROUTE_RULE_OURS, 403, "Invalid Flow Token", REFUSE_TOKEN_FORGED);
}

Test(route, rule1_token_from_its_own_phone_is_just_our_record_route)
{
    char route[256];
    struct parsed r;
    struct route_decision d;
    phone_token(route, sizeof route, PHONE_CONN, FLOWTOKEN_RR, CALL_ID);
    req(&r, "BYE", "sip:carol@example.com", route, "x");
    decide(&r, rx_from(SIP_TRANSPORT_TLS, PHONE_IP, PHONE_PORT), &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert_eq(d.plan.npop, 1);
}

/* ---- rule 2: a remaining Route ------------------------------------------------ */

Test(route, rule2_remaining_route_is_the_next_hop)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "BYE", "sip:bob@example.com",
        "Route: <sip:" OUR_IP ";lr>, <sip:10.0.2.2:5070;transport=tcp;lr>\r\n", "x");
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_TCP, "10.0.2.2", 5070);
    cr_assert_eq(d.plan.npop, 1);
    cr_assert(!d.plan.to_upstream);
}

Test(route, rule2_route_by_name_asks_for_dns_then_uses_the_answer)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "BYE", "sip:bob@example.com", "Route: <sips:proxy.example;lr>\r\n", "x");
    decide(&r, FROM_UPSTREAM, &d);
    cr_assert_eq(d.action, ROUTE_RESOLVE);
    cr_assert_eq(d.rule, ROUTE_RULE_ROUTE);
    cr_assert(slice_eq_lit(d.resolve.host, "proxy.example"));
    cr_assert_eq(d.resolve.scheme, SIP_SCHEME_SIPS);

    struct route_dns ans = {.status = 0, .n = 1};
    ans.t[0].proto = SIP_TRANSPORT_TLS;
    ans.t[0].addr = parsed_addr("10.0.2.3", 5061);
    view.dns = &ans;
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_TLS, "10.0.2.3", 5061);
    cr_assert_str_eq(d.plan.tls_name, "proxy.example");
    /* refused by the resolver's limits: 503 with Retry-After */
    ans = (struct route_dns){.status = -EAGAIN};
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_ROUTE, 503, "DNS Busy");
    cr_assert_gt(d.retry_after, 0);
    view.dns = NULL;
}

Test(route, rule2_unreachable_route_goes_to_the_sip_server_or_503)
{
    struct parsed r;
    struct route_decision d;
    /* no IPv6 listener */
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:[2001:db8::1];lr>\r\n", "x");
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert(d.plan.to_upstream);
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_ROUTE, 503, "Unroutable Route");
}

/* ---- rule 3: the Request-URI is sipedge itself ---------------------------------- */

Test(route, rule3_options_to_us_is_answered)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "OPTIONS", "sip:" OUR_IP, NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_LOCAL, 200, NULL);
    cr_assert(d.extra && strncmp(d.extra, "Allow: ", 7) == 0);
    cr_assert_eq(d.retry_after, -1);
}

Test(route, rule3_register_to_us_goes_to_the_registrar)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "REGISTER", "sip:" OUR_IP, "Contact: <sip:alice@10.0.9.9>\r\n", NULL);
    view.registrar = true;
    decide(&r, FROM_PHONE, &d);
    cr_assert_eq(d.action, ROUTE_REGISTRAR);
    cr_assert_eq(d.rule, ROUTE_RULE_LOCAL);
    /* without --registrar it is relayed to the SIP Server */
    view.registrar = false;
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    /* and with no SIP Server either, 404 */
    ups.nup = 0;
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_LOCAL, 404, NULL);
}

Test(route, rule3_location_service_rewrites_the_request_uri)
{
    view.registrar = true;
    struct locmap_binding b = {.proto = SIP_TRANSPORT_UDP,
                               .src = parsed_addr("10.0.9.9", 5090),
                               .expires_ms = view.now_ms + 60000,
                               .q = 1000};
    const char *contact = "sip:alice@10.0.9.9:5090";
    memcpy(b.contact, contact, strlen(contact));
    b.contact_len = (uint16_t)strlen(contact);
    cr_assert(locmap_update(loc, SLICE_LIT("sip:alice@" OUR_IP), false, &b, 1, view.now_ms, NULL, 0,
                            NULL) == 0);
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:alice@" OUR_IP, NULL, NULL);
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_UDP, "10.0.9.9", 5090);
    cr_assert_eq(d.plan.new_ruri_len, strlen(contact));
    cr_assert(memcmp(d.plan.new_ruri, contact, d.plan.new_ruri_len) == 0);
    /* an AOR without bindings, and no SIP Server to ask */
    ups.nup = 0;
    req(&r, "INVITE", "sip:nobody@" OUR_IP, NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_LOCATION, 404, "Not Registered");
}

/* ---- rule 4: from the SIP Server or a peer: to the Request-URI ------------------- */

Test(route, rule4_from_upstream_follows_the_request_uri)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:bob@10.0.3.3:5062;transport=tcp", NULL, NULL);
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_FROM_UPSTREAM, SIP_TRANSPORT_TCP, "10.0.3.3", 5062);
    cr_assert_eq(d.plan.conn, CONN_REF_NONE);
    cr_assert(!d.plan.from_endpoint);
    /* the phone's own connection, whichever worker holds it */
    struct flow_entry fe = {.peer = parsed_addr("10.0.3.3", 5062),
                            .proto = SIP_TRANSPORT_TCP,
                            .conn = CONN_REF_MAKE(2, 1, 1)};
    cr_assert(flowmap_set(flows, &fe) == 0);
    decide(&r, FROM_UPSTREAM, &d);
    cr_assert_eq(d.plan.conn, fe.conn);
    /* the same request from a phone goes to the SIP Server instead */
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
}

Test(route, rule4_request_uri_by_name_and_its_failures)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:bob@phones.example", NULL, NULL);
    decide(&r, FROM_UPSTREAM, &d);
    cr_assert_eq(d.action, ROUTE_RESOLVE);
    cr_assert_eq(d.rule, ROUTE_RULE_FROM_UPSTREAM);
    struct route_dns ans = {.status = -ENOENT};
    view.dns = &ans;
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_FROM_UPSTREAM, 404, "Unresolvable Request-URI");
    ans.status = -ETIMEDOUT;
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_FROM_UPSTREAM, 503, "DNS Failure");
    cr_assert_eq(d.retry_after, -1);
    /* the resolver's limits (--dns-max-pending): overload, 503 with Retry-After */
    ans.status = -EAGAIN;
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_FROM_UPSTREAM, 503, "DNS Busy");
    cr_assert_gt(d.retry_after, 0);
    ans = (struct route_dns){.status = 0, .n = 1};
    ans.t[0].proto = SIP_TRANSPORT_UDP;
    ans.t[0].addr = parsed_addr("10.0.3.4", 5060);
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_FROM_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.3.4", 5060);
    cr_assert_str_eq(d.plan.tls_name, "");
    /* a Request-URI naming us has nowhere to go */
    view.dns = NULL;
    req(&r, "INVITE", "sip:bob@" OUR_IP, NULL, NULL);
    decide(&r, FROM_UPSTREAM, &d);
    expect_reply(&d, ROUTE_RULE_FROM_UPSTREAM, 404, NULL);
}

/* ---- rule 5: from an endpoint: to the SIP Server, or a peer site ------------------- */

Test(route, rule5_endpoint_request_goes_to_the_sip_server)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:bob@example.com", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert(d.plan.to_upstream);
    cr_assert_eq(d.plan.upstream_idx, 0);
    cr_assert(d.plan.from_endpoint);
    cr_assert_eq(d.plan.npop, 0);
    cr_assert_eq(d.plan.new_ruri_len, 0);
}

Test(route, rule5_no_sip_server_in_service_is_503_with_retry_after)
{
    struct parsed r;
    struct route_decision d;
    ups.up[0].down = true;
    req(&r, "INVITE", "sip:bob@example.com", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_TO_UPSTREAM, 503, "No SIP Server In Service");
    cr_assert_eq(d.retry_after, 7);
}

Test(route, rule5_peer_domain_goes_to_the_peer_site)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:bob@Site-B.example", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_PEER, SIP_TRANSPORT_TCP, "10.0.1.1", 5060);
    cr_assert(!d.plan.to_upstream);
    /* the peer's own request for its domain is ours to deliver (rule 4) */
    decide(&r, rx_from(SIP_TRANSPORT_TCP, "10.0.1.1", 33000), &d);
    cr_assert_eq(d.action, ROUTE_RESOLVE);
    cr_assert_eq(d.rule, ROUTE_RULE_FROM_UPSTREAM);
    /* a peer given by name that has not resolved yet */
    ups.peer[0].resolved = false;
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_PEER, 503, "Peer Site Not Resolved");
    cr_assert_eq(d.retry_after, 5);
}

/* ---- the edge policy: what an endpoint's request may not do --------------------- */

/* The phone's request METHOD ruri (with hdrs, in a dialog when to_tag) is
 * refused as relaying by rule `rule`. */
static void expect_relay_refused(const char *method, const char *ruri, const char *hdrs,
                                 const char *to_tag, enum route_rule rule)
{
    struct parsed r;
    struct route_decision d;
    req(&r, method, ruri, hdrs, to_tag);
    decide(&r, FROM_PHONE, &d);
    expect_refused(&d, rule, 403, "Relaying Forbidden", REFUSE_RELAY);
}

Test(route, policy_preloaded_route_on_initial_request_is_removed)
{
    struct parsed r;
    struct route_decision d;
    /* a preloaded Route to some other host: removed, to the SIP Server */
    req(&r, "INVITE", "sip:bob@example.com", "Route: <sip:10.0.2.2:5070;lr>\r\n", NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert_eq(d.plan.npop, 1);
    /* below our own top Route too */
    req(&r, "MESSAGE", "sip:bob@example.com",
        "Route: <sip:" OUR_IP ";lr>\r\nRoute: <sip:10.0.2.2;lr>, <sip:evil.example;lr>\r\n", NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_TO_UPSTREAM, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    cr_assert_eq(d.plan.npop, 3);
    cr_assert_eq(d.refusal, -1);
}

Test(route, policy_foreign_route_inside_a_dialog_is_403)
{
    struct parsed r;
    struct route_decision d;
    const char *foreign[] = {
        "Route: <sip:" OUR_IP ";lr>, <sip:10.0.2.2:5070;transport=tcp;lr>\r\n",
        "Route: <sip:198.51.100.20;lr>\r\n",
        "Route: <sip:10.0.0.9:5099;lr>\r\n",           /* the SIP Server's host, another port */
        "Route: <sip:elsewhere.example;lr>\r\n",       /* a name: not even resolved */
        "Route: <sip:10.0.0.9;maddr=10.0.2.2;lr>\r\n", /* maddr is where it would go */
    };
    for (size_t i = 0; i < sizeof foreign / sizeof foreign[0]; i++) {
        expect_relay_refused("BYE", "sip:bob@example.com", foreign[i], "x", ROUTE_RULE_ROUTE);
        /* the same from the SIP Server is routed */
        req(&r, "BYE", "sip:bob@example.com", foreign[i], "x");
        decide(&r, FROM_UPSTREAM, &d);
        cr_assert(d.action == ROUTE_FORWARD || d.action == ROUTE_RESOLVE, "case %zu", i);
    }
    /* the SIP Server's and the peer's own Record-Route are fine */
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:" OUR_IP ";lr>, <sip:10.0.0.9;lr>\r\n", "x");
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_UDP, "10.0.0.9", 5060);
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:10.0.1.1:5060;transport=tcp;lr>\r\n", "x");
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_TCP, "10.0.1.1", 5060);
    /* and so is a connection sipedge holds, found whichever worker owns it */
    struct flow_entry fe = {.peer = parsed_addr("10.0.3.3", 5062),
                            .proto = SIP_TRANSPORT_TCP,
                            .conn = CONN_REF_MAKE(1, 2, 3)};
    cr_assert(flowmap_set(flows, &fe) == 0);
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:10.0.3.3:5062;transport=tcp;lr>\r\n", "x");
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_TCP, "10.0.3.3", 5062);
    cr_assert_eq(d.plan.conn, fe.conn);
}

Test(route, policy_named_sip_server_route_is_resolved)
{
    /* a SIP Server given by name: its own name in a Route is resolved */
    snprintf(cfg.upstream[0], sizeof cfg.upstream[0], "sip:sip.cc.example;transport=tcp");
    memset(&ups.up[0], 0, sizeof ups.up[0]);
    cr_assert(upstream_parse(cfg.upstream[0], &ups.up[0]) == 0);
    struct parsed r;
    struct route_decision d;
    req(&r, "BYE", "sip:bob@example.com", "Route: <sip:SIP.cc.example;transport=tcp;lr>\r\n", "x");
    decide(&r, FROM_PHONE, &d);
    cr_assert_eq(d.action, ROUTE_RESOLVE);
    struct route_dns ans = {.status = 0, .n = 1};
    ans.t[0].proto = SIP_TRANSPORT_TCP;
    ans.t[0].addr = parsed_addr("10.0.0.19", 5060);
    view.dns = &ans;
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_TCP, "10.0.0.19", 5060);
    /* another port of that name is not the SIP Server */
    view.dns = NULL;
    expect_relay_refused("BYE", "sip:bob@example.com", "Route: <sip:sip.cc.example:6000;lr>\r\n",
                         "x", ROUTE_RULE_ROUTE);
}

/* A UDP binding of AOR sip:alice@OUR_IP: Contact `contact`, registered from src. */
static void udp_binding(const char *contact, const char *src_ip, int src_port)
{
    view.registrar = true;
    struct locmap_binding b = {.proto = SIP_TRANSPORT_UDP,
                               .src = parsed_addr(src_ip, src_port),
                               .expires_ms = view.now_ms + 60000,
                               .q = 1000};
    memcpy(b.contact, contact, strlen(contact));
    b.contact_len = (uint16_t)strlen(contact);
    struct locmap_binding out[4];
    unsigned nout = 0;
    cr_assert(locmap_update(loc, SLICE_LIT("sip:alice@" OUR_IP), true, &b, 1, view.now_ms, out, 4,
                            &nout) == 0);
}

Test(route, policy_internal_destination_needs_allow_destination)
{
    struct parsed r;
    struct route_decision d;
    req(&r, "INVITE", "sip:alice@" OUR_IP, NULL, NULL);
    /* a binding reaches the phone where it registered from, loopback or not */
    udp_binding("sip:alice@127.0.0.1:5090", "127.0.0.1", 5090);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_UDP, "127.0.0.1", 5090);
    /* a Contact pointing at some other, internal address does not */
    udp_binding("sip:alice@10.0.7.7:5090", "198.51.100.7", 5060);
    decide(&r, FROM_PHONE, &d);
    expect_refused(&d, ROUTE_RULE_LOCATION, 403, "Forbidden Destination", REFUSE_DESTINATION);
    /* unless --allow-destination opens its prefix */
    cr_assert(netaddr_cidr_parse(&cfg.allow_dest[0], SLICE_LIT("10.0.0.0/16")) == 0);
    cfg.nallow_dest = 1;
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_UDP, "10.0.7.7", 5090);
    /* a public one is fine */
    udp_binding("sip:alice@203.0.113.5:5090", "198.51.100.7", 5060);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_UDP, "203.0.113.5", 5090);
    /* the management port never, whatever is allowed */
    snprintf(cfg.stats_listen, sizeof cfg.stats_listen, "10.0.7.7:8080");
    udp_binding("sip:alice@10.0.7.7:8080;transport=tcp", "198.51.100.7", 5060);
    decide(&r, FROM_PHONE, &d);
    expect_refused(&d, ROUTE_RULE_LOCATION, 403, "Forbidden Destination", REFUSE_DESTINATION);
    snprintf(cfg.stats_listen, sizeof cfg.stats_listen, "0.0.0.0:8080");
    decide(&r, FROM_PHONE, &d);
    expect_refused(&d, ROUTE_RULE_LOCATION, 403, "Forbidden Destination", REFUSE_DESTINATION);
    /* the SIP Server's own request is the operator's business */
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_TCP, "10.0.7.7", 8080);
}

Test(route, policy_from_upstream_keeps_full_routing)
{
    struct parsed r;
    struct route_decision d;
    /* loopback, private, any host: the SIP Server's and the peer's requests
     * go; its initial request follows its preloaded Route (RFC 3261) */
    req(&r, "INVITE", "sip:bob@127.0.0.1:5070", "Route: <sip:10.0.2.2:5070;lr>\r\n", NULL);
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_ROUTE, SIP_TRANSPORT_UDP, "10.0.2.2", 5070);
    cr_assert_eq(d.plan.npop, 0);
    req(&r, "INVITE", "sip:bob@127.0.0.1:5070", NULL, NULL);
    decide(&r, FROM_UPSTREAM, &d);
    expect_forward(&d, ROUTE_RULE_FROM_UPSTREAM, SIP_TRANSPORT_UDP, "127.0.0.1", 5070);
    decide(&r, rx_from(SIP_TRANSPORT_TCP, "10.0.1.1", 33000), &d);
    expect_forward(&d, ROUTE_RULE_FROM_UPSTREAM, SIP_TRANSPORT_UDP, "127.0.0.1", 5070);
    cr_assert_eq(d.refusal, -1);
}

Test(route, policy_without_sip_server_only_bindings_and_flows)
{
    ups.nup = 0;
    view.registrar = true;
    struct parsed r;
    struct route_decision d;
    /* not ours, no binding: not followed, by address or by name; in a
     * dialog, past our own Route, the same */
    expect_relay_refused("INVITE", "sip:bob@10.0.3.3:5062;transport=tcp", NULL, NULL,
                         ROUTE_RULE_FROM_UPSTREAM);
    expect_relay_refused("INVITE", "sip:bob@phones.example", NULL, NULL, ROUTE_RULE_FROM_UPSTREAM);
    expect_relay_refused("BYE", "sip:bob@198.51.100.3", "Route: <sip:" OUR_IP ";lr>\r\n", "x",
                         ROUTE_RULE_FROM_UPSTREAM);
    /* a connection sipedge holds is reachable */
    struct flow_entry fe = {.peer = parsed_addr("10.0.3.3", 5062),
                            .proto = SIP_TRANSPORT_TCP,
                            .conn = CONN_REF_MAKE(1, 2, 3)};
    cr_assert(flowmap_set(flows, &fe) == 0);
    req(&r, "INVITE", "sip:bob@10.0.3.3:5062;transport=tcp", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_FROM_UPSTREAM, SIP_TRANSPORT_TCP, "10.0.3.3", 5062);
    cr_assert_eq(d.plan.conn, fe.conn);
    cr_assert(d.plan.to_endpoint);
    /* and so is a binding */
    udp_binding("sip:alice@127.0.0.1:5090", "127.0.0.1", 5090);
    req(&r, "INVITE", "sip:alice@" OUR_IP, NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_LOCATION, SIP_TRANSPORT_UDP, "127.0.0.1", 5090);
    cr_assert(d.plan.to_endpoint);
}

Test(route, policy_domain_is_our_own)
{
    snprintf(cfg.domains[0], sizeof cfg.domains[0], "cc.example.com");
    cfg.ndomains = 1;
    struct parsed r;
    struct route_decision d;
    req(&r, "OPTIONS", "sip:CC.example.com", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_LOCAL, 200, NULL);
    view.registrar = true;
    req(&r, "REGISTER", "sip:cc.example.com", "Contact: <sip:alice@10.0.9.9>\r\n", NULL);
    decide(&r, FROM_PHONE, &d);
    cr_assert_eq(d.action, ROUTE_REGISTRAR);
    /* its users without a binding, and no SIP Server to ask: 404 */
    ups.nup = 0;
    req(&r, "INVITE", "sip:alice@cc.example.com", NULL, NULL);
    decide(&r, FROM_PHONE, &d);
    expect_reply(&d, ROUTE_RULE_LOCATION, 404, "Not Registered");
    /* another domain is not ours */
    expect_relay_refused("OPTIONS", "sip:cc.example.org", NULL, NULL, ROUTE_RULE_FROM_UPSTREAM);
}

/* One use of a token in a Route: who sends which request, and whether it
 * is refused (with that Warning) or delivered to the phone. */
struct token_use {
    const char *method;
    const char *to_tag; /* NULL: an initial request */
    struct rx_info rx;
    const char *refused; /* Warning of the 403, or NULL: delivered on the phone's flow */
};

static void token_uses(const char *route, const struct token_use *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct parsed r;
        struct route_decision d;
        req(&r, u[i].method, PHONE_RURI, route, u[i].to_tag);
        decide(&r, u[i].rx, &d);
        if (u[i].refused) {
            expect_refused(&d, ROUTE_RULE_OURS, 403, u[i].refused, REFUSE_TOKEN_MISUSE);
            continue;
        }
        expect_forward(&d, ROUTE_RULE_OURS, SIP_TRANSPORT_TLS, PHONE_IP, PHONE_PORT);
        cr_assert_eq(d.plan.conn, PHONE_CONN);
    }
}

#define NOT_FOR_ENDPOINTS "Flow Token Not For Endpoints"
#define OTHER_DIALOG      "Flow Token Of Another Dialog"

Test(route, policy_path_token_from_an_endpoint_is_misuse)
{
    char route[256];
    phone_flow(route, sizeof route, PHONE_CONN);
    const struct token_use uses[] = {
        /* another endpoint's new INVITE, and an in-dialog request */
        {"INVITE", NULL, FROM_PHONE, NOT_FOR_ENDPOINTS},
        {"BYE", "x", rx_from(SIP_TRANSPORT_TCP, "10.0.9.9", 40001), NOT_FOR_ENDPOINTS},
        /* what it is for: the SIP Server's requests, and a peer site's */
        {"INVITE", NULL, FROM_UPSTREAM, NULL},
        {"INVITE", NULL, rx_from(SIP_TRANSPORT_TCP, "10.0.1.1", 33000), NULL},
    };
    token_uses(route, uses, sizeof uses / sizeof uses[0]);
}

Test(route, policy_record_route_token_only_inside_its_dialog)
{
    char route[256];
    /* minted for another Call-ID: misuse, from anyone */
    phone_token(route, sizeof route, PHONE_CONN, FLOWTOKEN_RR, "other@test");
    const struct token_use other[] = {{"BYE", "x", FROM_PHONE, OTHER_DIALOG},
                                      {"BYE", "x", FROM_UPSTREAM, OTHER_DIALOG}};
    token_uses(route, other, sizeof other / sizeof other[0]);
    phone_token(route, sizeof route, PHONE_CONN, FLOWTOKEN_RR, CALL_ID);
    const struct token_use own[] = {
        /* its own dialog: the other end's in-dialog request is delivered */
        {"BYE", "x", FROM_PHONE, NULL},
        {"BYE", "x", FROM_UPSTREAM, NULL},
        /* but an endpoint's initial request (no To tag) is not inside it */
        {"INVITE", NULL, FROM_PHONE, NOT_FOR_ENDPOINTS},
    };
    token_uses(route, own, sizeof own / sizeof own[0]);
}

Test(route, policy_dialog_between_endpoints_delivers_on_the_far_token)
{
    /* double Record-Route of a call between two endpoints: each entry has
     * the token of the end it faces; a request pops both and is delivered
     * on the token of the entry popped last (the far end) */
    struct flowtoken caller = {.kind = FLOWTOKEN_RR,
                               .proto = SIP_TRANSPORT_UDP,
                               .peer = parsed_addr("10.0.9.9", 5060)},
                     callee = {.kind = FLOWTOKEN_RR,
                               .proto = SIP_TRANSPORT_UDP,
                               .peer = parsed_addr("127.0.0.1", 5090)};
    char a[FLOWTOKEN_STR_LEN + 1], b[FLOWTOKEN_STR_LEN + 1], hdr[512];
    a[flowtoken_encode(&key, &caller, SLICE_LIT(CALL_ID), a, sizeof a - 1)] = 0;
    b[flowtoken_encode(&key, &callee, SLICE_LIT(CALL_ID), b, sizeof b - 1)] = 0;
    struct parsed r;
    struct route_decision d;
    /* the caller's ACK: its route set is the Record-Route reversed */
    snprintf(hdr, sizeof hdr, "Route: <sip:%s@" OUR_IP ";lr>, <sip:%s@" OUR_IP ";lr>\r\n", a, b);
    req(&r, "ACK", "sip:alice@127.0.0.1:5090", hdr, "x");
    decide(&r, FROM_PHONE, &d);
    expect_forward(&d, ROUTE_RULE_OURS, SIP_TRANSPORT_UDP, "127.0.0.1", 5090);
    cr_assert_eq(d.plan.npop, 2);
    /* the callee's BYE: the Record-Route in order */
    snprintf(hdr, sizeof hdr, "Route: <sip:%s@" OUR_IP ";lr>, <sip:%s@" OUR_IP ";lr>\r\n", b, a);
    req(&r, "BYE", "sip:caller@10.0.9.9", hdr, "x");
    decide(&r, rx_from(SIP_TRANSPORT_UDP, "127.0.0.1", 5090), &d);
    expect_forward(&d, ROUTE_RULE_OURS, SIP_TRANSPORT_UDP, "10.0.9.9", 5060);
}
