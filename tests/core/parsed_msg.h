/* Test helper for the proxy-layer suites: a SIP message parsed from text. */
#ifndef SIPEDGE_TESTS_PARSED_MSG_H
#define SIPEDGE_TESTS_PARSED_MSG_H

#include <criterion/criterion.h>
#include <string.h>

#include "core/netaddr.h"
#include "core/sipmsg.h"

#define PARSED_MAXH 32

/* A message with its own copy of the bytes and its header array. */
struct parsed {
    char buf[2048];
    struct sip_msg m;
    struct sip_hdr h[PARSED_MAXH];
};

/* Parses text as one datagram (the whole of it must be the message) and,
 * when validate is set, checks it passes sipmsg_validate(). */
static inline void parsed_init(struct parsed *p, const char *text, size_t n, bool validate)
{
    static const struct sipmsg_limits lim = {65535, PARSED_MAXH};
    cr_assert(n < sizeof p->buf, "test message too long");
    memcpy(p->buf, text, n);
    int r = sipmsg_parse(p->buf, n, &p->m, p->h, &lim, SIPMSG_DATAGRAM);
    cr_assert_eq(r, (int)n, "parse: %d %s", r, sipmsg_err_str(p->m.err));
    if (validate)
        cr_assert_eq(sipmsg_validate(&p->m), SIP_ERR_NONE, "validate: %s",
                     sipmsg_err_str(p->m.err));
}

/* An IP literal and port as an address. */
static inline struct netaddr parsed_addr(const char *ip, int port)
{
    struct netaddr a;
    cr_assert(netaddr_from_ip(&a, slice_make(ip, strlen(ip)), port) == 0, "%s", ip);
    return a;
}

#endif
