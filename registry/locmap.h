/* Location service: AOR -> contact bindings in a liburcu lock-free hash table,
 * bounded (AORs, bindings per AOR), with an index from connection to AORs. */
#ifndef SIPEDGE_LOCMAP_H
#define SIPEDGE_LOCMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/slice.h"

#define LOCMAP_CONTACT_MAX  256
#define LOCMAP_AOR_MAX      256
#define LOCMAP_BINDINGS_MAX 1024 /* the largest --max-bindings */
/* index entries of one connection locmap_conn_until() looks at */
#define LOCMAP_CONN_WALK_MAX 64

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

/* Creates the process-wide map holding at most max_aors AORs of at most
 * max_bindings bindings each (1..LOCMAP_BINDINGS_MAX). Call once, before
 * workers start; the caller owns it. NULL when out of memory or a bound is
 * 0. */
struct locmap *locmap_new(unsigned max_aors, unsigned max_bindings);
/* Frees every node and the map; NULL-safe. Only when no other thread uses
 * the map any more, from an RCU-registered thread (it waits for the grace
 * periods offline). */
void locmap_free(struct locmap *lm);

/* Applies one REGISTER's changes to an AOR, all or nothing: every binding in
 * add[] replaces the binding with the same contact or is added
 * (expires_ms == 0 removes it); remove_all drops every binding first
 * (Contact: *). Expired bindings go too. out[0..out_cap) receives the
 * bindings after the change and *nout how many were copied (at most
 * out_cap; out may be NULL with out_cap 0). Returns 0, or with nothing
 * changed: -ENOSPC when the AOR would hold more than max_bindings, -EDQUOT
 * when a new AOR would make more than max_aors, -ENOMEM, -EINVAL (empty or
 * too long aor), -EBUSY (other writers kept winning the race for this AOR).
 * Any registered RCU thread, outside a read-side section. Writers of one AOR
 * are serialised (each change replaces the node it read, or retries). A
 * binding with conn != 0 must be added by the thread owning that connection
 * (the index relies on it). */
int locmap_update(struct locmap *lm, struct slice aor, bool remove_all,
                  const struct locmap_binding *add, unsigned nadd, uint64_t now_ms,
                  struct locmap_binding *out, unsigned out_cap, unsigned *nout);

/* Copies the best live binding (highest q, then most recent) of aor into *b.
 * Returns true when one exists. Lock-free: takes rcu_read_lock itself; any
 * RCU-registered thread. */
bool locmap_lookup(struct locmap *lm, struct slice aor, uint64_t now_ms, struct locmap_binding *b);

/* Drops the bindings registered over connection conn, found through the
 * connection index (no scan of the map). Writer: the worker that owned
 * conn, as it closes; RCU-registered, outside a read-side section. */
void locmap_drop_conn(struct locmap *lm, uint64_t conn);

/* The latest expiry (expires_ms) of the live bindings registered over conn,
 * 0 when it has none, UINT64_MAX when it carries more than
 * LOCMAP_CONN_WALK_MAX AORs (not all looked at). Any RCU-registered thread. */
uint64_t locmap_conn_until(struct locmap *lm, uint64_t conn, uint64_t now_ms);

/* Removes the bindings expired at now_ms (an AOR left without any goes) and
 * the connection index entries that no longer name a binding. Returns the
 * number of bindings removed. Walks the whole map: a periodic job, from an
 * RCU-registered thread outside a read-side section. */
unsigned long locmap_sweep(struct locmap *lm, uint64_t now_ms);

/* AORs and bindings (expired ones not yet swept included) in the map now.
 * Any thread (relaxed atomic reads). */
void locmap_counts(const struct locmap *lm, unsigned long *aors, unsigned long *bindings);

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
/* Waits for a grace period: every reader that could hold a pointer
 * unpublished before the call has passed a quiescent state when it returns,
 * so the pointee may be freed. Blocks: the control thread only, registered
 * or not, never inside a read-side section. */
void locmap_synchronize(void);

#endif
