/* Connections per source address, counted by every worker in one shared
 * table without a lock (--max-connections-per-ip). */
#ifndef SIPEDGE_IPLIMIT_H
#define SIPEDGE_IPLIMIT_H

#include <stdint.h>

#include "core/netaddr.h"

/* What iplimit_acquire() hands back besides an entry index (>= 0). */
#define IPLIMIT_FULL      (-1) /* the address already has `limit` connections */
#define IPLIMIT_UNCOUNTED (-2) /* no room for the address: admitted uncounted */

/* A fixed open-addressing table of 64-bit words, tag (40 bits of a keyed
 * hash of the address) | count (24 bits), each changed by one CAS. An
 * address lives within IPLIMIT_WINDOW entries of its home; an entry whose
 * count fell to 0 is taken over by the next address that needs one. IPv4
 * addresses count one by one, IPv6 ones by /64 (one host's share of a
 * network: an IPv6 peer picks its address within its /64 freely). */
struct iplimit;

#define IPLIMIT_WINDOW 32

/* A table for up to max_sources addresses with live connections (it holds
 * four entries per source, at most 2^23). NULL when out of memory. Control
 * thread, before the workers start. */
struct iplimit *iplimit_new(unsigned max_sources);
/* NULL-safe. After every worker stopped. */
void iplimit_free(struct iplimit *t);

/* Counts one more connection from a unless it already has `limit`
 * (IPLIMIT_FULL). Returns the entry index to give back to
 * iplimit_release() when the connection closes, or IPLIMIT_UNCOUNTED when
 * the address's window is full of other addresses (or the CAS kept losing):
 * the caller admits it without a count, which needs no release. Any thread.
 * Two threads counting the first connections of one address at the very
 * moment a third frees an entry ahead of it may split its count in two
 * entries: the cap then lets that address go over by at most the number
 * of racing threads. */
int32_t iplimit_acquire(struct iplimit *t, const struct netaddr *a, uint32_t limit);
/* Gives back one connection counted at entry idx (a value >= 0 from
 * iplimit_acquire; anything else is ignored). Any thread. */
void iplimit_release(struct iplimit *t, int32_t idx);
/* Connections counted for a now (tests, logs). Any thread. */
uint32_t iplimit_count(const struct iplimit *t, const struct netaddr *a);

#endif
