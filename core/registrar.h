/* The built-in registrar (RFC 3261 §10.3): its process-wide state (digest
 * users, nonce key), its housekeeping, and the pure decisions it makes. */
#ifndef SIPEDGE_REGISTRAR_H
#define SIPEDGE_REGISTRAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/slice.h"

#define REGISTRAR_SWEEP_MS     5000 /* expired bindings are swept this often */
#define REGISTRAR_NONCE_MAX_S  300  /* a nonce older than this is stale (401, stale=true) */
#define REGISTRAR_DEFAULT_EXP  3600 /* a REGISTER without any expires asks for this */
#define REGISTRAR_CONTACTS_MAX 32   /* Contacts in one REGISTER, and listed in its 200 */

/* Loads --auth-users when cfg names it, and derives the digest nonce key
 * from secret[0..len) (the flow-token key, so a pool sharing --flow-secret
 * accepts each other's nonces). Main thread, before the workers start.
 * 0, or -EINVAL after one line on stderr naming --auth-users and the
 * reason. */
int registrar_global_init(const struct config *cfg, const uint8_t *secret, size_t len);
/* Frees the users table. Main thread, after the workers stopped. */
void registrar_global_cleanup(void);

/* SIGHUP: reads --auth-users again; a good file replaces the table for the
 * next REGISTER (the old one is freed after an RCU grace period), a bad one
 * leaves the table in use as it is (logged). No-op without --auth-users.
 * Control thread only; blocks for the grace period. 0 or -errno. */
int registrar_reload_users(const struct config *cfg);

/* Removes expired bindings from the location map (locmap_sweep). Control
 * thread, every REGISTRAR_SWEEP_MS; registers itself with RCU for the call.
 * Returns the number removed. */
unsigned long registrar_sweep(uint64_t now_ms);

/* ---- decisions (pure; any thread) ---------------------------------------- */

enum registrar_expiry {
    REGISTRAR_EXP_OK = 0,    /* granted as asked (0: remove) */
    REGISTRAR_EXP_LOWERED,   /* above --max-expires: the maximum granted */
    REGISTRAR_EXP_TOO_BRIEF, /* below --min-expires: 423 Interval Too Brief */
};
/* What a contact asking for `asked` seconds gets (*granted). */
enum registrar_expiry registrar_grant(uint64_t asked, const struct config *cfg, uint64_t *granted);

/* True when identity id names the AOR user@host: a sip:/sips: URI whose
 * user part is user (bytewise) and whose host is host (case-insensitive),
 * or "user@host" written without a scheme (a certificate CN). */
bool registrar_names_aor(struct slice id, struct slice user, struct slice host);

#endif
