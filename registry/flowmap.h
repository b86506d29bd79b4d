/* Which connection (so which worker) holds each phone's flow: address + transport -> conn_ref. */
#ifndef SIPEDGE_FLOWMAP_H
#define SIPEDGE_FLOWMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"

struct flowmap;

/* Laid out so that a node's list link, key and conn_ref share one cache line. */
struct flow_entry {
    struct netaddr peer;  /* the phone's address as seen by us */
    uint8_t proto;        /* enum sip_transport */
    uint64_t conn;        /* conn_ref of the connection */
    uint64_t register_ms; /* time of its last REGISTER (CLOCK_MONOTONIC) */
};

/* Creates the process-wide map (a liburcu lock-free hash table, keyed with
 * core/hash.h). Call once, before workers start; the caller owns it. NULL
 * when out of memory. */
struct flowmap *flowmap_new(void);
/* Frees every entry and the map; NULL-safe. Only when no other thread uses
 * the map any more, from an RCU-registered thread. */
void flowmap_free(struct flowmap *fm);

/* Records that peer over proto is reached through conn, replacing any older
 * owner (the phone re-registered over a new connection). Writer: the worker
 * that owns conn. RCU-registered thread, outside a read-side section. */
int flowmap_set(struct flowmap *fm, const struct flow_entry *e);

/* Removes the entry of peer/proto if it still names conn (a newer
 * connection's entry is left alone). Writer: the worker that owned conn. */
void flowmap_remove(struct flowmap *fm, uint8_t proto, const struct netaddr *peer, uint64_t conn);

/* Copies the entry for peer/proto into *out. Lock-free: takes the RCU read
 * lock itself; any RCU-registered thread. */
bool flowmap_lookup(struct flowmap *fm, uint8_t proto, const struct netaddr *peer,
                    struct flow_entry *out);

/* Entries in the map, approximate while writers run (for statistics). Any
 * RCU-registered thread. */
unsigned long flowmap_count(struct flowmap *fm);

#endif
