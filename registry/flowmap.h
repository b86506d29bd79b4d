/* Which connection (and so which worker) holds each phone's flow:
 * remote address + transport -> conn_ref, in a liburcu lock-free hash table. */
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

struct flowmap *flowmap_new(void);
/* Only when no thread uses the map any more. */
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

unsigned long flowmap_count(struct flowmap *fm);

#endif
