/* Socket addresses: parsing literals, printing, comparing and hashing. */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/hash.h"

/* Longest literal inet_pton accepts: a full IPv6 with embedded IPv4. */
#define IP_LITERAL_MAX 45

int netaddr_from_ip(struct netaddr *a, struct slice ip, int port)
{
    char buf[IP_LITERAL_MAX + 1];

    if (ip.len == 0 || ip.len > IP_LITERAL_MAX || port < 0 || port > 65535) return -EINVAL;
    memcpy(buf, ip.ptr, ip.len);
    buf[ip.len] = '\0';
    if (memchr(buf, '\0', ip.len)) return -EINVAL;

    memset(a, 0, sizeof(*a));
    if (memchr(ip.ptr, ':', ip.len)) {
        if (inet_pton(AF_INET6, buf, &a->in6.sin6_addr) != 1) return -EINVAL;
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons((uint16_t)port);
        a->len = sizeof(a->in6);
    } else {
        if (inet_pton(AF_INET, buf, &a->in4.sin_addr) != 1) return -EINVAL;
        a->in4.sin_family = AF_INET;
        a->in4.sin_port = htons((uint16_t)port);
        a->len = sizeof(a->in4);
    }
    return 0;
}

int netaddr_parse(struct netaddr *a, struct slice hostport)
{
    const char *p = hostport.ptr, *end = hostport.ptr + hostport.len;
    struct slice ip;
    const char *colon;
    uint64_t port;

    if (hostport.len == 0) return -EINVAL;
    if (*p == '[') {
        const char *close = memchr(p, ']', hostport.len);
        if (!close || close + 1 == end || close[1] != ':') return -EINVAL;
        ip = slice_make(p + 1, (size_t)(close - p - 1));
        colon = close + 1;
        if (!memchr(ip.ptr, ':', ip.len)) /* brackets are for IPv6 only */
            return -EINVAL;
    } else {
        colon = memchr(p, ':', hostport.len);
        if (!colon || memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return -EINVAL; /* no port, or an unbracketed IPv6 */
        ip = slice_make(p, (size_t)(colon - p));
    }
    if (!slice_to_u64(slice_make(colon + 1, (size_t)(end - colon - 1)), 65535, &port))
        return -EINVAL;
    return netaddr_from_ip(a, ip, (int)port);
}

bool netaddr_eq(const struct netaddr *a, const struct netaddr *b)
{
    if (a->sa.sa_family != b->sa.sa_family) return false;
    switch (a->sa.sa_family) {
    case AF_INET:
        return a->in4.sin_port == b->in4.sin_port &&
               a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
    case AF_INET6:
        return a->in6.sin6_port == b->in6.sin6_port &&
               a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
               memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
    default:
        return false;
    }
}

int netaddr_port(const struct netaddr *a)
{
    switch (a->sa.sa_family) {
    case AF_INET:
        return ntohs(a->in4.sin_port);
    case AF_INET6:
        return ntohs(a->in6.sin6_port);
    default:
        return 0;
    }
}

size_t netaddr_ip_str(const struct netaddr *a, char *buf, size_t cap)
{
    const void *src;

    if (cap == 0) return 0;
    buf[0] = '\0';
    if (a->sa.sa_family == AF_INET && cap >= INET_ADDRSTRLEN) {
        /* dotted quad without stdio: this runs for every forwarded request */
        const uint8_t *q = (const uint8_t *)&a->in4.sin_addr;
        size_t n = 0;
        for (int i = 0; i < 4; i++) {
            unsigned v = q[i];
            if (v >= 100) buf[n++] = (char)('0' + v / 100);
            if (v >= 10) buf[n++] = (char)('0' + v / 10 % 10);
            buf[n++] = (char)('0' + v % 10);
            buf[n++] = i < 3 ? '.' : '\0';
        }
        return n - 1;
    }
    if (a->sa.sa_family == AF_INET)
        src = &a->in4.sin_addr;
    else if (a->sa.sa_family == AF_INET6)
        src = &a->in6.sin6_addr;
    else
        return 0;
    if (!inet_ntop(a->sa.sa_family, src, buf, (socklen_t)(cap > 65535 ? 65535 : cap))) {
        buf[0] = '\0';
        return 0;
    }
    return strlen(buf);
}

size_t netaddr_str(const struct netaddr *a, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;

    if (cap == 0) return 0;
    if (netaddr_ip_str(a, ip, sizeof(ip)) == 0) {
        n = snprintf(buf, cap, "?");
    } else if (a->sa.sa_family == AF_INET6) {
        n = snprintf(buf, cap, "[%s]:%d", ip, netaddr_port(a));
    } else {
        n = snprintf(buf, cap, "%s:%d", ip, netaddr_port(a));
    }
    if (n < 0 || (size_t)n >= cap) { /* never report a truncated address */
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n;
}

uint64_t netaddr_hash(uint8_t proto, const struct netaddr *a)
{
    struct hash_state h;
    uint16_t fam = a->sa.sa_family;

    hash_begin(&h);
    hash_update(&h, &proto, sizeof(proto));
    hash_update(&h, &fam, sizeof(fam));
    if (fam == AF_INET) {
        hash_update(&h, &a->in4.sin_port, sizeof(a->in4.sin_port));
        hash_update(&h, &a->in4.sin_addr, sizeof(a->in4.sin_addr));
    } else if (fam == AF_INET6) {
        hash_update(&h, &a->in6.sin6_port, sizeof(a->in6.sin6_port));
        hash_update(&h, &a->in6.sin6_scope_id, sizeof(a->in6.sin6_scope_id));
        hash_update(&h, &a->in6.sin6_addr, sizeof(a->in6.sin6_addr));
    }
    return hash_final(&h);
}

void netaddr_source(struct netaddr *out, const struct netaddr *a)
{
    memset(out, 0, sizeof(*out));
    if (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
        out->in4.sin_family = AF_INET;
        memcpy(&out->in4.sin_addr, &a->in6.sin6_addr.s6_addr[12], 4);
        out->len = sizeof(out->in4);
    } else if (a->sa.sa_family == AF_INET6) {
        out->in6.sin6_family = AF_INET6;
        memcpy(&out->in6.sin6_addr, &a->in6.sin6_addr, 8); /* the /64 */
        out->len = sizeof(out->in6);
    } else if (a->sa.sa_family == AF_INET) {
        out->in4.sin_family = AF_INET;
        out->in4.sin_addr = a->in4.sin_addr;
        out->len = sizeof(out->in4);
    }
}

static bool ipv4_forbidden(uint32_t host_order)
{
    return host_order == INADDR_ANY || host_order == INADDR_BROADCAST ||
           (host_order & 0xf0000000u) == 0xe0000000u; /* 224.0.0.0/4 */
}

bool netaddr_is_forbidden(const struct netaddr *a)
{
    const struct in6_addr *v6;
    uint32_t v4;

    if (netaddr_port(a) == 0) /* nothing listens there; sendto would fail anyway */
        return true;
    switch (a->sa.sa_family) {
    case AF_INET:
        return ipv4_forbidden(ntohl(a->in4.sin_addr.s_addr));
    case AF_INET6:
        v6 = &a->in6.sin6_addr;
        if (IN6_IS_ADDR_UNSPECIFIED(v6) || IN6_IS_ADDR_MULTICAST(v6)) return true;
        if (IN6_IS_ADDR_V4MAPPED(v6)) {
            memcpy(&v4, &v6->s6_addr[12], sizeof(v4));
            return ipv4_forbidden(ntohl(v4));
        }
        return false;
    default:
        return true;
    }
}

/* The IPv4 address of a (IPv4-mapped IPv6 too), host order; false if none. */
static bool as_ipv4(const struct netaddr *a, uint32_t *out)
{
    uint32_t v4;

    if (a->sa.sa_family == AF_INET) {
        *out = ntohl(a->in4.sin_addr.s_addr);
        return true;
    }
    if (a->sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
        memcpy(&v4, &a->in6.sin6_addr.s6_addr[12], sizeof(v4));
        *out = ntohl(v4);
        return true;
    }
    return false;
}

bool netaddr_is_internal(const struct netaddr *a)
{
    static const struct {
        uint32_t net, mask;
    } v4nets[] = {
        {0x00000000u, 0xff000000u}, /* 0/8 */
        {0x0a000000u, 0xff000000u}, /* 10/8 */
        {0x64400000u, 0xffc00000u}, /* 100.64/10 */
        {0x7f000000u, 0xff000000u}, /* 127/8 */
        {0xa9fe0000u, 0xffff0000u}, /* 169.254/16 */
        {0xac100000u, 0xfff00000u}, /* 172.16/12 */
        {0xc0a80000u, 0xffff0000u}, /* 192.168/16 */
    };
    uint32_t v4;

    if (as_ipv4(a, &v4)) {
        for (size_t i = 0; i < sizeof(v4nets) / sizeof(v4nets[0]); i++)
            if ((v4 & v4nets[i].mask) == v4nets[i].net) return true;
        return false;
    }
    if (a->sa.sa_family != AF_INET6) return false;
    const struct in6_addr *v6 = &a->in6.sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(v6) || IN6_IS_ADDR_LINKLOCAL(v6) ||
           (v6->s6_addr[0] & 0xfe) == 0xfc; /* fc00::/7 */
}

int netaddr_cidr_parse(struct netaddr_cidr *c, struct slice text)
{
    const char *slash = memchr(text.ptr, '/', text.len);
    struct slice ip = slash ? slice_make(text.ptr, (size_t)(slash - text.ptr)) : text;
    struct netaddr a;
    uint64_t bits;

    if (netaddr_from_ip(&a, ip, 1) < 0) return -EINVAL;
    memset(c, 0, sizeof(*c));
    c->family = (uint8_t)a.sa.sa_family;
    if (c->family == AF_INET)
        memcpy(c->addr, &a.in4.sin_addr, 4);
    else
        memcpy(c->addr, &a.in6.sin6_addr, 16);
    c->bits = c->family == AF_INET ? 32 : 128;
    if (slash) {
        struct slice b = slice_make(slash + 1, text.len - (size_t)(slash + 1 - text.ptr));
        if (!slice_to_u64(b, c->bits, &bits)) return -EINVAL;
        c->bits = (uint8_t)bits;
    }
    return 0;
}

/* True when the first `bits` bits of x and y agree. */
static bool prefix_eq(const uint8_t *x, const uint8_t *y, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;

    if (memcmp(x, y, whole) != 0) return false;
    if (rest == 0) return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (x[whole] & mask) == (y[whole] & mask);
}

bool netaddr_cidr_match(const struct netaddr_cidr *c, const struct netaddr *a)
{
    uint32_t v4;

    if (c->family == AF_INET) {
        uint8_t b[4];
        if (!as_ipv4(a, &v4)) return false;
        v4 = htonl(v4);
        memcpy(b, &v4, 4);
        return prefix_eq(c->addr, b, c->bits);
    }
    if (a->sa.sa_family != AF_INET6) return false;
    return prefix_eq(c->addr, a->in6.sin6_addr.s6_addr, c->bits);
}
