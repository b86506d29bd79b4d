/* Which connection (so which worker) holds each phone's flow: address + transport -> conn_ref. */
#ifndef SIPEDGE_FLOWMAP_H
#define SIPEDGE_FLOWMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"

struct flowmap;

#define FLOWMAP_AOR_MAX 128

/* Laid out so that a node's list link, key and conn_ref share one cache line. */
struct flow_entry {
    struct netaddr peer;  /* the phone's address as seen by us */
    uint8_t proto;        /* enum sip_transport */
    uint64_t conn;        /* conn_ref of the connection */
    uint64_t register_ms; /* time of its last REGISTER (CLOCK_MONOTONIC) */
    /* for the management port (GET /flows) */
    uint64_t since_ms;     /* first recorded on this connection (flowmap_set keeps it) */
    uint64_t keepalive_ms; /* its last CRLF keep-alive (flowmap_touch), 0: none; set by
                            * lookups, ignored by flowmap_set */
    uint16_t aor_len;      /* the AOR of its REGISTER (canonical, locmap_aor_key), where
                            * known; flowmap_set keeps the old one when given none */
    char aor[FLOWMAP_AOR_MAX];
};

/* Creates the process-wide map (a liburcu lock-free hash table, keyed with
 * core/hash.h). Call once, before workers start; the caller owns it. NULL
 * when out of memory. */
struct flowmap *flowmap_new(void);
/* Frees every entry and the map; NULL-safe. Only when no other thread uses
 * the map any more, from an RCU-registered thread. */
void flowmap_free(struct flowmap *fm);

/* Records that peer over proto is reached through conn, replacing any older
 * owner (the phone re-registered over a new connection). An entry that
 * replaces one of the same connection keeps its since_ms, keep-alive time
 * and (when e has none) AOR. Writer: the worker that owns conn.
 * RCU-registered thread, outside a read-side section. */
int flowmap_set(struct flowmap *fm, const struct flow_entry *e);

/* Notes a keep-alive at now_ms on the entry of peer/proto if it still
 * names conn. Writer: the worker that owns conn. RCU-registered thread. */
void flowmap_touch(struct flowmap *fm, uint8_t proto, const struct netaddr *peer, uint64_t conn,
                   uint64_t now_ms);

/* One page of the map for listing: skips `offset` entries, copies up to max
 * into out[] (in the table's order, stable while the map does not change)
 * and returns how many; *total gets the entries seen. Takes the RCU read
 * lock itself; any RCU-registered thread. Visits every entry: for the
 * management port, not per message. */
unsigned flowmap_page(struct flowmap *fm, unsigned long offset, struct flow_entry *out,
                      unsigned max, unsigned long *total);

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
