/* Location service: AOR -> contact bindings in a liburcu lock-free hash table. */
#ifndef SIPEDGE_LOCMAP_H
#define SIPEDGE_LOCMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/slice.h"

#define LOCMAP_MAX_BINDINGS 8
#define LOCMAP_CONTACT_MAX  256
#define LOCMAP_AOR_MAX      256

struct locmap_binding {
    char contact[LOCMAP_CONTACT_MAX]; /* the Contact URI, as registered */
    uint16_t contact_len;
    uint8_t proto;       /* enum sip_transport the REGISTER came over */
    uint64_t conn;       /* conn_ref it came on (streams), 0 for UDP */
    struct netaddr src;  /* where it came from */
    uint64_t expires_ms; /* absolute, CLOCK_MONOTONIC ms */
    uint16_t q;          /* q-value x 1000 */
};

struct locmap;

/* Creates the process-wide map. Call once, before workers start; the
 * caller owns it. NULL when out of memory. */
struct locmap *locmap_new(void);
/* Frees every node and the map; NULL-safe. Only when no other thread uses
 * the map any more, from an RCU-registered thread (it waits for the grace
 * periods offline). */
void locmap_free(struct locmap *lm);

/* Applies one REGISTER's changes to an AOR: every binding in add[] replaces
 * the binding with the same contact or is added (expires_ms == 0 removes it);
 * remove_all drops every binding first (Contact: *). Expired bindings are
 * purged. out[] receives the bindings after the change (up to
 * LOCMAP_MAX_BINDINGS), *nout their number. Returns 0, or -ENOSPC when the
 * AOR would have more than LOCMAP_MAX_BINDINGS.
 * Any registered RCU thread; call outside a read-side section. Concurrent
 * writers to one AOR: last writer wins (copy-on-write node replacement). */
int locmap_update(struct locmap *lm, struct slice aor, bool remove_all,
                  const struct locmap_binding *add, unsigned nadd, uint64_t now_ms,
                  struct locmap_binding *out, unsigned *nout);

/* Copies the best live binding (highest q, then most recent) of aor into *b.
 * Returns true when one exists. Lock-free: takes rcu_read_lock itself; any
 * RCU-registered thread. */
bool locmap_lookup(struct locmap *lm, struct slice aor, uint64_t now_ms, struct locmap_binding *b);

/* Drops the bindings that were registered over connection conn. Writer:
 * the worker that owned conn, as it closes; RCU-registered, outside a
 * read-side section. Visits every AOR: for connection close, not per
 * message. */
void locmap_drop_conn(struct locmap *lm, uint64_t conn);

/* Canonical AOR of a sip/sips URI: "sip:user@host" with the host lower-cased,
 * written to buf[0..cap) (no NUL). Returns its length, or 0 when the URI is
 * not a sip/sips URI or does not fit. Pure; any thread. */
size_t locmap_aor_key(struct slice uri, char *buf, size_t cap);

/* RCU QSBR thread hooks for the threads that use the registry maps (this
 * one and flowmap): register before the first use, report quiescent states
 * between loop turns, go offline while blocking. Calling thread only. */
void locmap_thread_online(void);
void locmap_thread_offline(void);
void locmap_thread_register(void);
void locmap_thread_unregister(void);
void locmap_quiescent(void);

#endif
