/* Socket addresses: one type for IPv4 and IPv6, with printing and comparison. */
#ifndef SIPEDGE_NETADDR_H
#define SIPEDGE_NETADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/slice.h"

struct netaddr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    };
    socklen_t len;
};

#define NETADDR_STRLEN 64 /* "[v6]:port" with NUL */

/* Parses a literal IPv4 or IPv6 address (no brackets) and a port. */
int netaddr_from_ip(struct netaddr *a, struct slice ip, int port);
/* "HOST:PORT" or "[V6]:PORT" literal. */
int netaddr_parse(struct netaddr *a, struct slice hostport);
bool netaddr_eq(const struct netaddr *a, const struct netaddr *b);
int netaddr_port(const struct netaddr *a);
/* Writes the bare IP (IPv6 without brackets) into buf; returns its length. */
size_t netaddr_ip_str(const struct netaddr *a, char *buf, size_t cap);
/* Writes "ip:port" ("[ip]:port" for IPv6); returns its length. */
size_t netaddr_str(const struct netaddr *a, char *buf, size_t cap);
/* Keyed hash (core/hash.h, the process key) of proto and exactly what
 * netaddr_eq() compares, for tables keyed by peers' addresses: a peer picks
 * its own address and port, so it must not be able to aim at one chain. */
uint64_t netaddr_hash(uint8_t proto, const struct netaddr *a);
/* The source a per-source limit counts a's traffic against, written to out
 * (compare with netaddr_eq, hash with netaddr_hash): a's IP with port 0;
 * an IPv4-mapped IPv6 address as IPv4; another IPv6 address as its /64,
 * since one host can send from any address of the /64 it holds. Pure. */
void netaddr_source(struct netaddr *out, const struct netaddr *a);
/* True for addresses a proxy must never send to: unspecified, broadcast,
 * multicast (IPv4-mapped too), port 0, or an unset address. */
bool netaddr_is_forbidden(const struct netaddr *a);

/* True for loopback (127/8, ::1), private (RFC 1918, RFC 6598 100.64/10,
 * IPv6 ULA fc00::/7), link-local (169.254/16, fe80::/10) and "this network"
 * (0/8) addresses, IPv4-mapped ones included: what an endpoint may not reach
 * through the proxy unless --allow-destination opens it. Pure. */
bool netaddr_is_internal(const struct netaddr *a);

/* An address prefix (--allow-destination CIDR). IPv4-mapped IPv6 addresses
 * match IPv4 prefixes. */
struct netaddr_cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;   /* prefix length */
    uint8_t addr[16];
};
/* "IP/BITS" or a bare IP (a host prefix). 0 or -EINVAL. Pure. */
int netaddr_cidr_parse(struct netaddr_cidr *c, struct slice text);
bool netaddr_cidr_match(const struct netaddr_cidr *c, const struct netaddr *a);

#endif
