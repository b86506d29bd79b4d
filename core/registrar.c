/* The built-in registrar (RFC 3261 §10.3) over the location map
 * (registry/locmap.c): who may register (digest against --auth-users, or the
 * client certificate), which AOR, for how long, and how many. */
#include "core/registrar.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/auth.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/proxy-int.h"
#include "core/reply.h"
#include "registry/locmap.h"

/* Written by registrar_global_init() before the workers start; `users` is
 * swapped by the control thread on SIGHUP (registrar_reload_users) and read
 * by the workers, which may use the table they loaded until their next
 * quiescent state (RCU QSBR: the old table is freed after a grace period). */
static struct {
    _Atomic(struct auth_users *) users; /* NULL: no --auth-users */
    struct auth_key key;                /* digest nonce MACs */
} reg;

/* ---- process-wide state ----------------------------------------------------- */

int registrar_global_init(const struct config *cfg, const uint8_t *secret, size_t len)
{
    char err[256];
    auth_key_from_secret(&reg.key, secret, len);
    if (!cfg->auth_users_file[0]) return 0;
    struct auth_users *u = auth_users_load(cfg->auth_users_file, err, sizeof err);
    if (!u) {
        fprintf(stderr, "sipedge: --auth-users: %s: %s\n", cfg->auth_users_file, err);
        return -EINVAL;
    }
    atomic_store_explicit(&reg.users, u, memory_order_release);
    return 0;
}

void registrar_global_cleanup(void)
{
    auth_users_free(atomic_exchange(&reg.users, NULL));
    memset(&reg.key, 0, sizeof reg.key);
}

int registrar_reload_users(const struct config *cfg)
{
    char err[256];
    if (!cfg->auth_users_file[0]) return 0;
    struct auth_users *u = auth_users_load(cfg->auth_users_file, err, sizeof err);
    if (!u) {
        LOG_E("--auth-users reload failed, keeping the users in use: %s: %s", cfg->auth_users_file,
              err);
        return -EINVAL;
    }
    size_t n = u->n;
    struct auth_users *old = atomic_exchange_explicit(&reg.users, u, memory_order_acq_rel);
    /* a worker may still be checking a REGISTER against the old table */
    locmap_synchronize();
    auth_users_free(old);
    LOG_I("--auth-users reloaded: %zu users", n);
    return 0;
}

unsigned long registrar_sweep(uint64_t now_ms)
{
    struct locmap *lm = proxy_locmap();
    if (!lm) return 0;
    locmap_thread_register();
    unsigned long n = locmap_sweep(lm, now_ms);
    locmap_thread_unregister();
    if (n) LOG_D("registrar: %lu expired bindings removed", n);
    return n;
}

/* ---- decisions ----------------------------------------------------------------- */

enum registrar_expiry registrar_grant(uint64_t asked, const struct config *cfg, uint64_t *granted)
{
    *granted = asked;
    if (asked == 0) return REGISTRAR_EXP_OK;
    if (asked < cfg->min_expires_s) return REGISTRAR_EXP_TOO_BRIEF;
    if (asked > cfg->max_expires_s) {
        *granted = cfg->max_expires_s;
        return REGISTRAR_EXP_LOWERED;
    }
    return REGISTRAR_EXP_OK;
}

bool registrar_names_aor(struct slice id, struct slice user, struct slice host)
{
    struct sip_uri u;
    if (user.len == 0) return false;
    if ((id.len > 4 && slice_case_eq_lit(slice_make(id.ptr, 4), "sip:")) ||
        (id.len > 5 && slice_case_eq_lit(slice_make(id.ptr, 5), "sips:")))
        return sipuri_parse(id, &u) == 0 && slice_eq(u.user, user) &&
               slice_case_eq(u.host_raw, host);
    const char *at = id.len ? memrchr(id.ptr, '@', id.len) : NULL;
    if (!at) return false;
    struct slice cn_user = slice_make(id.ptr, (size_t)(at - id.ptr));
    struct slice cn_host = slice_make(at + 1, id.len - cn_user.len - 1);
    return slice_eq(cn_user, user) && slice_case_eq(cn_host, host);
}

/* ---- one REGISTER ---------------------------------------------------------------- */

/* A REGISTER being handled, and its AOR (the To URI, RFC 3261 §10.3 step 5). */
struct reg {
    struct worker *w;
    const struct rx_info *rx;
    const struct sip_msg *m;
    char aor[LOCMAP_AOR_MAX]; /* canonical key "sip:user@host", host lower-cased */
    size_t aor_len;
    struct slice user, host;        /* into aor */
    const struct auth_users *users; /* loaded once for this REGISTER; NULL: none */
};

/* What was wrong with a REGISTER: its status code and Warning text. */
struct reg_err {
    int code;
    const char *warning;
};

/* The source address for a log line. */
static const char *src_str(const struct reg *r, char *buf, size_t cap)
{
    return netaddr_str(&r->rx->src, buf, cap) ? buf : "?";
}

/* The AOR of m's To (a sip or sips URI) into r. */
static bool aor_of(struct reg *r, struct reg_err *err)
{
    struct sip_addr toa;
    const struct sip_hdr *to = sipmsg_hdr(r->m, SIP_HDR_TO);
    if (!to || sipuri_parse_addr(to->value, &toa) < 0) {
        *err = (struct reg_err){400, "Bad To"};
        return false;
    }
    r->aor_len = locmap_aor_key(toa.uri_text, r->aor, sizeof r->aor);
    if (r->aor_len == 0) {
        *err = (struct reg_err){400, "AOR Must Be A SIP URI"};
        return false;
    }
    /* "sip:" user "@" host, split at the last '@' (a host has none) */
    struct slice rest = slice_make(r->aor + 4, r->aor_len - 4);
    const char *at = memrchr(rest.ptr, '@', rest.len);
    r->user = at ? slice_make(rest.ptr, (size_t)(at - rest.ptr)) : slice_make(rest.ptr, 0);
    r->host = at ? slice_make(at + 1, rest.len - r->user.len - 1) : rest;
    return true;
}

/* ---- authentication (RFC 3261 §22, RFC 8760; certificates) ------------------------ */

enum reg_auth {
    REG_AUTH_OK = 0,
    REG_AUTH_CHALLENGE, /* no credentials for this realm: 401 */
    REG_AUTH_STALE,     /* right credentials, old nonce: 401 stale=true */
    REG_AUTH_BAD,       /* wrong or unusable credentials: 401, counted */
    REG_AUTH_REFUSED,   /* no way to authenticate here (certificate only): 403, counted */
    REG_AUTH_NOT_OWNER, /* authenticated as someone else: 403, counted */
};

/* What a nonce's MAC covers besides its time: the realm and the sender's
 * IP address, so a nonce seen on the wire is no use from elsewhere (a pool
 * member shares the key, and the phone keeps its address). Into buf. */
static struct slice nonce_scope(const struct reg *r, struct slice realm, char *buf, size_t cap)
{
    char ip[NETADDR_STRLEN];
    struct buf b = buf_make(buf, cap);
    netaddr_ip_str(&r->rx->src, ip, sizeof ip);
    buf_put_slice(&b, realm);
    buf_puts(&b, " ");
    buf_puts(&b, ip);
    return slice_make(buf, buf_ok(&b) ? b.len : 0);
}

/* The credentials to check: the first Authorization value for the AOR's
 * realm that parses, else the first one that parses. False when none does;
 * *present says whether there was any Authorization at all. */
static bool pick_credentials(const struct reg *r, struct auth_creds *c, bool *present)
{
    unsigned n = sipmsg_hdr_count(r->m, SIP_HDR_AUTHORIZATION);
    bool got = false;
    *present = n > 0;
    for (unsigned i = 0; i < n; i++) {
        struct auth_creds t;
        if (!auth_parse_creds(sipmsg_hdr_nth(r->m, SIP_HDR_AUTHORIZATION, i)->value, &t)) continue;
        bool mine = slice_case_eq(t.realm, r->host);
        if (!got || mine) *c = t;
        got = true;
        if (mine) break;
    }
    return got;
}

static enum reg_auth check_digest(const struct reg *r)
{
    struct auth_creds c;
    bool present;
    char a[NETADDR_STRLEN], scope[LOCMAP_AOR_MAX + NETADDR_STRLEN + 2];
    bool parsed = pick_credentials(r, &c, &present);
    if (!present) return REG_AUTH_CHALLENGE;
    const char *why = NULL;
    enum auth_nonce_result nr = AUTH_NONCE_FORGED;
    const struct auth_user *u = NULL;
    if (!parsed) {
        why = "malformed Authorization";
    } else if ((nr = auth_nonce_check(&reg.key, nonce_scope(r, c.realm, scope, sizeof scope),
                                      c.nonce, (uint64_t)time(NULL), REGISTRAR_NONCE_MAX_S)) ==
               AUTH_NONCE_FORGED) {
        why = "a nonce that is not ours";
    } else if (!(u = auth_users_find(r->users, c.username, c.realm)) || !u->ha1[c.alg][0]) {
        why = "an unknown user (or no HA1 for its algorithm)";
    } else if (!auth_check_response(&c, r->m->method_name, u->ha1[c.alg])) {
        why = "a wrong response";
    }
    if (why) {
        LOG_RL(LOG_WARN, "REGISTER for %.*s from %s refused (401): %s", (int)r->aor_len, r->aor,
               src_str(r, a, sizeof a), why);
        return REG_AUTH_BAD;
    }
    if (nr == AUTH_NONCE_STALE) return REG_AUTH_STALE;
    if (!slice_eq(c.username, r->user) || !slice_case_eq(c.realm, r->host)) {
        LOG_RL(LOG_WARN, "REGISTER for %.*s from %s refused (403): authenticated as %.*s@%.*s",
               (int)r->aor_len, r->aor, src_str(r, a, sizeof a), (int)c.username.len,
               c.username.ptr, (int)c.realm.len, c.realm.ptr);
        return REG_AUTH_NOT_OWNER;
    }
    return REG_AUTH_OK;
}

/* --auth-by-certificate: 1 when the REGISTER came over TLS with a verified
 * certificate naming the AOR, -1 when it came with one naming others, 0
 * without one. */
static int check_certificate(const struct reg *r)
{
    struct tls_peer_ids ids;
    if (r->rx->proto != SIP_TRANSPORT_TLS || worker_conn_peer_ids(r->w, r->rx->conn, &ids) <= 0)
        return 0;
    for (unsigned i = 0; i < ids.n; i++)
        if (registrar_names_aor(slice_make(ids.v[i], ids.len[i]), r->user, r->host)) return 1;
    return -1;
}

static enum reg_auth authenticate(const struct reg *r)
{
    const struct config *cfg = r->w->cfg;
    int cert = cfg->auth_by_certificate ? check_certificate(r) : 0;
    if (cert > 0) return REG_AUTH_OK;
    if (r->users) return check_digest(r);
    if (!cfg->auth_by_certificate) return REG_AUTH_OK; /* an open registrar */
    char a[NETADDR_STRLEN];
    LOG_RL(LOG_WARN, "REGISTER for %.*s from %s refused (403): %s", (int)r->aor_len, r->aor,
           src_str(r, a, sizeof a),
           cert < 0 ? "its certificate names another AOR" : "no verified client certificate");
    return cert < 0 ? REG_AUTH_NOT_OWNER : REG_AUTH_REFUSED;
}

/* 401 with a fresh nonce for the AOR's realm (and the sender's address):
 * SHA-256 first, then MD5
 * (RFC 8760 §2.4), SHA-256 only when the user's entry has its HA1. */
static void challenge(const struct reg *r, bool stale)
{
    char extra[1024], nonce[AUTH_NONCE_LEN], scope[LOCMAP_AOR_MAX + NETADDR_STRLEN + 2];
    struct buf b = buf_make(extra, sizeof extra - 1);
    const struct auth_user *u = auth_users_find(r->users, r->user, r->host);
    auth_nonce_make(&reg.key, nonce_scope(r, r->host, scope, sizeof scope), (uint64_t)time(NULL),
                    nonce);
    if (u && u->ha1[AUTH_SHA256][0])
        auth_put_challenge(&b, "WWW-Authenticate", r->host, nonce, AUTH_SHA256, stale);
    auth_put_challenge(&b, "WWW-Authenticate", r->host, nonce, AUTH_MD5, stale);
    extra[buf_ok(&b) ? b.len : 0] = 0;
    reply__send(r->w, r->rx, r->m, 401, NULL, extra);
}

/* Answers r when it may not register; false then. */
static bool authorized(const struct reg *r)
{
    switch (authenticate(r)) {
    case REG_AUTH_OK:
        return true;
    case REG_AUTH_CHALLENGE:
        challenge(r, false);
        return false;
    case REG_AUTH_STALE:
        challenge(r, true);
        return false;
    case REG_AUTH_BAD:
        STAT_REFUSED(r->w, REFUSE_AUTH);
        challenge(r, false);
        return false;
    case REG_AUTH_REFUSED:
        STAT_REFUSED(r->w, REFUSE_AUTH);
        reply__send(r->w, r->rx, r->m, 403, "Authentication Required", NULL);
        return false;
    case REG_AUTH_NOT_OWNER:
    default:
        STAT_REFUSED(r->w, REFUSE_AOR);
        reply__send(r->w, r->rx, r->m, 403, "Not Your AOR", NULL);
        return false;
    }
}

/* ---- contacts and expiry -------------------------------------------------------------- */

/* The bindings a REGISTER asks for. */
struct reg_contacts {
    struct locmap_binding add[REGISTRAR_CONTACTS_MAX];
    unsigned nadd;
    bool star;    /* Contact: * with Expires: 0 */
    bool lowered; /* some expiry was cut to --max-expires */
};

/* "0.xxx" or "1[.000]" as thousandths (a q value the parser accepted). */
static uint16_t q_value(struct slice q)
{
    unsigned v = (unsigned)(q.ptr[0] - '0') * 1000, digits = 0;
    for (size_t k = 2; k < q.len && digits < 3; k++, digits++)
        v += (unsigned)(q.ptr[k] - '0') * (digits == 0 ? 100 : digits == 1 ? 10 : 1);
    return (uint16_t)(v > 1000 ? 1000 : v);
}

/* One Contact as a binding: its URI, expiry (its own expires parameter or
 * dflt seconds, within --min/--max-expires), q value and how it came. */
static bool contact_binding(const struct reg *r, const struct sip_addr *ca, uint64_t dflt,
                            struct reg_contacts *rc, struct reg_err *err)
{
    struct locmap_binding *b = &rc->add[rc->nadd++];
    uint64_t asked = dflt, granted;
    memset(b, 0, sizeof *b);
    memcpy(b->contact, ca->uri_text.ptr, ca->uri_text.len);
    b->contact_len = (uint16_t)ca->uri_text.len;
    if (ca->expires.len && !slice_to_u64(ca->expires, UINT32_MAX, &asked)) {
        *err = (struct reg_err){400, "Bad Contact Expires"};
        return false;
    }
    switch (registrar_grant(asked, r->w->cfg, &granted)) {
    case REGISTRAR_EXP_TOO_BRIEF:
        *err = (struct reg_err){423, NULL};
        return false;
    case REGISTRAR_EXP_LOWERED:
        rc->lowered = true;
        break;
    default:
        break;
    }
    b->expires_ms = granted ? r->w->now_ms + granted * 1000 : 0;
    b->q = ca->q.len ? q_value(ca->q) : 1000;
    b->proto = r->rx->proto;
    b->conn = r->rx->proto == SIP_TRANSPORT_UDP ? 0 : r->rx->conn;
    b->src = r->rx->src;
    return true;
}

/* The Contacts of the REGISTER (or "Contact: *", only alone and with
 * Expires: 0, RFC 3261 §10.3 step 6). */
static bool collect_contacts(const struct reg *r, struct reg_contacts *rc, struct reg_err *err)
{
    const struct sip_msg *m = r->m;
    const struct sip_hdr *eh = sipmsg_hdr(m, SIP_HDR_EXPIRES);
    const struct config *cfg = r->w->cfg;
    uint64_t dflt =
        REGISTRAR_DEFAULT_EXP < cfg->max_expires_s ? REGISTRAR_DEFAULT_EXP : cfg->max_expires_s;
    if (eh && !slice_to_u64(eh->value, UINT32_MAX, &dflt)) {
        *err = (struct reg_err){400, "Bad Expires"};
        return false;
    }
    unsigned n = sipmsg_hdr_count(m, SIP_HDR_CONTACT);
    for (unsigned i = 0; i < n; i++) {
        struct sip_addr ca;
        if (sipuri_parse_addr(sipmsg_hdr_nth(m, SIP_HDR_CONTACT, i)->value, &ca) < 0) {
            *err = (struct reg_err){400, "Bad Contact"};
            return false;
        }
        if (ca.star) {
            if (n != 1 || !eh || dflt != 0) {
                *err = (struct reg_err){400, "Invalid Wildcard Contact"};
                return false;
            }
            rc->star = true;
            return true;
        }
        if (ca.uri_text.len > LOCMAP_CONTACT_MAX) {
            *err = (struct reg_err){400, "Contact Too Long"};
            return false;
        }
        if (rc->nadd == REGISTRAR_CONTACTS_MAX) {
            *err = (struct reg_err){503, "Too Many Contacts In One REGISTER"};
            return false;
        }
        if (!contact_binding(r, &ca, dflt, rc, err)) return false;
    }
    return true;
}

/* ---- the answer -------------------------------------------------------------------------- */

/* 200 OK listing the AOR's bindings after the change, each with the
 * seconds it has left (what was granted, for the ones just registered). */
static void reply_bindings(const struct reg *r, const struct locmap_binding *cur, unsigned ncur)
{
    char extra[REGISTRAR_CONTACTS_MAX * (LOCMAP_CONTACT_MAX + 32)];
    struct buf b = buf_make(extra, sizeof extra - 1);
    uint64_t now = r->w->now_ms;
    for (unsigned i = 0; i < ncur; i++) {
        uint64_t left = cur[i].expires_ms > now ? (cur[i].expires_ms - now + 999) / 1000 : 0;
        buf_printf(&b, "Contact: <%.*s>;expires=%llu\r\n", (int)cur[i].contact_len, cur[i].contact,
                   (unsigned long long)left);
    }
    extra[buf_ok(&b) ? b.len : 0] = 0;
    reply__send(r->w, r->rx, r->m, 200, NULL, extra);
}

/* The answer for an update that failed with rc (locmap_update). */
static void reply_update_error(const struct reg *r, int rc)
{
    char a[NETADDR_STRLEN];
    if (rc == -ENOSPC) {
        STAT_LIMIT(r->w, LIMIT_BINDINGS);
        LOG_RL(LOG_WARN, "REGISTER for %.*s from %s: over --max-bindings %u (503)", (int)r->aor_len,
               r->aor, src_str(r, a, sizeof a), r->w->cfg->max_bindings);
        reply__send(r->w, r->rx, r->m, 503, "Too Many Registered Contacts", NULL);
    } else if (rc == -EDQUOT) {
        STAT_LIMIT(r->w, LIMIT_AORS);
        LOG_RL(LOG_WARN,
               "REGISTER for %.*s from %s: the location service holds --max-aors %u (503)",
               (int)r->aor_len, r->aor, src_str(r, a, sizeof a), r->w->cfg->max_aors);
        reply__send_retry(r->w, r->rx, r->m, 503, "Too Many Registered AORs", PROXY_RETRY_AFTER_S);
    } else {
        LOG_RL(LOG_WARN, "REGISTER for %.*s: location service update failed: %s", (int)r->aor_len,
               r->aor, strerror(-rc));
        reply__send_retry(r->w, r->rx, r->m, 500, NULL, PROXY_RETRY_AFTER_S);
    }
}

/* A registered phone's stream connection stays open while any of its
 * bindings lasts (--idle-timeout spares it); unregistered, it is released. */
static void hold_connection(const struct reg *r)
{
    if (r->rx->proto == SIP_TRANSPORT_UDP) return;
    struct locmap *lm = proxy__of(r->w)->loc;
    uint64_t until = locmap_conn_until(lm, r->rx->conn, r->w->now_ms);
    if (until == UINT64_MAX) until = r->w->now_ms + (uint64_t)r->w->cfg->max_expires_s * 1000;
    worker_conn_hold(r->w, r->rx->conn, until);
}

void registrar__register(struct worker *w, const struct rx_info *rx, const struct sip_msg *m)
{
    struct reg r = {.w = w, .rx = rx, .m = m};
    struct reg_err err = {0, NULL};
    if (!aor_of(&r, &err)) {
        reply__send(w, rx, m, err.code, err.warning, NULL);
        return;
    }
    /* valid until this worker's next quiescent state (a SIGHUP may swap it) */
    r.users = atomic_load_explicit(&reg.users, memory_order_acquire);
    if (!authorized(&r)) return;
    struct reg_contacts rc = {.nadd = 0};
    if (!collect_contacts(&r, &rc, &err)) {
        char extra[64];
        snprintf(extra, sizeof extra, "Min-Expires: %u\r\n", w->cfg->min_expires_s);
        if (err.code == 423) STAT_LIMIT(w, LIMIT_MIN_EXPIRES);
        if (err.code == 503) STAT_LIMIT(w, LIMIT_BINDINGS);
        reply__send(w, rx, m, err.code, err.warning, err.code == 423 ? extra : NULL);
        return;
    }
    if (rc.lowered) STAT_LIMIT(w, LIMIT_MAX_EXPIRES);
    struct locmap_binding cur[REGISTRAR_CONTACTS_MAX];
    unsigned ncur = 0;
    int rv = locmap_update(proxy__of(w)->loc, slice_make(r.aor, r.aor_len), rc.star, rc.add,
                           rc.nadd, w->now_ms, cur, REGISTRAR_CONTACTS_MAX, &ncur);
    if (rv < 0) {
        reply_update_error(&r, rv);
        return;
    }
    hold_connection(&r);
    reply_bindings(&r, cur, ncur);
}
