/* Digest authentication for the built-in registrar (RFC 3261 §22, RFC 8760). */
#include "core/auth.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- users file (configuration, not network bytes) ------------------- */

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static void lower_copy(char *dst, const char *src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = slice_lower(src[i]);
    dst[n] = '\0';
}

/* Fills e from one "user:realm:md5[:sha256]" line; NULL or a reason. */
static const char *parse_user_line(char *line, struct auth_user *e)
{
    char *f[5];
    size_t nf = 0;
    char *p = line;

    memset(e, 0, sizeof(*e));
    while (nf < 5) {
        f[nf++] = p;
        p = strchr(p, ':');
        if (!p) break;
        *p++ = '\0';
    }
    if (nf < 3 || nf > 4 || p) return "want user:realm:HA1[:HA1-SHA-256]";
    if (f[0][0] == '\0' || strlen(f[0]) >= sizeof(e->user)) return "bad user name";
    if (strlen(f[1]) >= sizeof(e->realm)) return "realm too long";
    if (strlen(f[2]) != 32 || !is_hex(f[2], 32)) return "HA1 is not 32 hex digits (MD5)";
    if (nf == 4 && (strlen(f[3]) != 64 || !is_hex(f[3], 64)))
        return "fourth field is not 64 hex digits (SHA-256 HA1)";
    strcpy(e->user, f[0]);
    strcpy(e->realm, f[1]);
    lower_copy(e->ha1[AUTH_MD5], f[2], 32);
    if (nf == 4) lower_copy(e->ha1[AUTH_SHA256], f[3], 64);
    return NULL;
}

static bool append_user(struct auth_users *u, size_t *cap, const struct auth_user *e)
{
    if (u->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct auth_user *v = realloc(u->v, ncap * sizeof(*v));
        if (!v) return false;
        u->v = v;
        *cap = ncap;
    }
    u->v[u->n++] = *e;
    return true;
}

/* memcmp order of two byte strings, the shorter first on a tie. */
static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c == 0 && alen != blen) c = alen < blen ? -1 : 1;
    return c;
}

/* The table's order: by realm, then user, for a binary search. */
static int key_cmp(struct slice user, struct slice realm, const struct auth_user *e)
{
    int c = bytes_cmp(realm.ptr, realm.len, e->realm, strlen(e->realm));
    return c ? c : bytes_cmp(user.ptr, user.len, e->user, strlen(e->user));
}

static int user_cmp(const void *a, const void *b)
{
    const struct auth_user *x = a;
    return key_cmp(slice_make(x->user, strlen(x->user)), slice_make(x->realm, strlen(x->realm)), b);
}

struct auth_users *auth_users_load(const char *path, char *err, size_t errlen)
{
    struct auth_users *u = calloc(1, sizeof(*u));
    char line[1024];
    unsigned lineno = 0;
    size_t cap = 0;
    FILE *f;

    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        free(u);
        return NULL;
    }
    while (fgets(line, sizeof(line), f)) {
        struct auth_user e;
        const char *why;
        size_t n = strlen(line);

        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (n == 0 || line[0] == '#') continue;
        why = parse_user_line(line, &e);
        if (!why && !append_user(u, &cap, &e)) why = "out of memory";
        if (why) {
            snprintf(err, errlen, "line %u: %s", lineno, why);
            fclose(f);
            auth_users_free(u);
            return NULL;
        }
    }
    fclose(f);
    qsort(u->v, u->n, sizeof(u->v[0]), user_cmp);
    for (size_t i = 1; i < u->n; i++) {
        if (user_cmp(&u->v[i - 1], &u->v[i]) == 0) {
            snprintf(err, errlen, "user %s appears twice in realm %s", u->v[i].user, u->v[i].realm);
            auth_users_free(u);
            return NULL;
        }
    }
    return u;
}

void auth_users_free(struct auth_users *u)
{
    if (!u) return;
    free(u->v);
    free(u);
}

const struct auth_user *auth_users_find(const struct auth_users *u, struct slice user,
                                        struct slice realm)
{
    size_t lo = 0, hi = u ? u->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = key_cmp(user, realm, &u->v[mid]);
        if (c == 0) return &u->v[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

void auth_key_from_secret(struct auth_key *key, const uint8_t *secret, size_t len)
{
    static const char label[] = "sipedge registrar nonce key";
    unsigned n = 0;
    HMAC(EVP_sha256(), secret, len, (const uint8_t *)label, sizeof label - 1, key->k, &n);
}

/* ---- Authorization header (network bytes: slices only) --------------- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void skip_ws(const char **p, const char *end)
{
    while (*p < end && is_ws(**p))
        (*p)++;
}

/* Reads one name=value (value a token or a quoted string without escapes
 * worth keeping: a backslash-escaped quote ends the field as malformed). */
static bool next_param(const char **pp, const char *end, struct slice *name, struct slice *val)
{
    const char *p = *pp, *s;

    skip_ws(&p, end);
    s = p;
    while (p < end && *p != '=' && *p != ',' && !is_ws(*p))
        p++;
    if (p == s) return false;
    *name = slice_make(s, (size_t)(p - s));
    skip_ws(&p, end);
    if (p >= end || *p != '=') return false;
    p++;
    skip_ws(&p, end);
    if (p < end && *p == '"') {
        s = ++p;
        while (p < end && *p != '"') {
            if (*p == '\\') return false;
            p++;
        }
        if (p >= end) return false;
        *val = slice_make(s, (size_t)(p - s));
        p++;
    } else {
        s = p;
        while (p < end && *p != ',' && !is_ws(*p))
            p++;
        *val = slice_make(s, (size_t)(p - s));
    }
    skip_ws(&p, end);
    if (p < end) {
        if (*p != ',') return false;
        p++;
    }
    *pp = p;
    return true;
}

static bool set_field(struct auth_creds *c, struct slice name, struct slice val)
{
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
        {"username", offsetof(struct auth_creds, username)},
        {"realm", offsetof(struct auth_creds, realm)},
        {"nonce", offsetof(struct auth_creds, nonce)},
        {"uri", offsetof(struct auth_creds, uri)},
        {"response", offsetof(struct auth_creds, response)},
        {"cnonce", offsetof(struct auth_creds, cnonce)},
        {"nc", offsetof(struct auth_creds, nc)},
        {"qop", offsetof(struct auth_creds, qop)},
        {"opaque", offsetof(struct auth_creds, opaque)},
    };

    if (slice_case_eq_lit(name, "algorithm")) {
        if (slice_case_eq_lit(val, "MD5"))
            c->alg = AUTH_MD5;
        else if (slice_case_eq_lit(val, "SHA-256"))
            c->alg = AUTH_SHA256;
        else
            return false;
        return true;
    }
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (slice_case_eq(name, slice_make(fields[i].name, strlen(fields[i].name)))) {
            *(struct slice *)((char *)c + fields[i].off) = val;
            return true;
        }
    }
    return true; /* unknown parameters are ignored (RFC 3261 §25 auth-param) */
}

bool auth_parse_creds(struct slice value, struct auth_creds *out)
{
    const char *p = value.ptr, *end = value.ptr + value.len;
    struct slice name, val;

    memset(out, 0, sizeof(*out));
    out->alg = AUTH_MD5;
    skip_ws(&p, end);
    if ((size_t)(end - p) < 7 || !slice_case_eq_lit(slice_make(p, 6), "Digest") || !is_ws(p[6]))
        return false;
    p += 7;
    while (p < end) {
        if (!next_param(&p, end, &name, &val)) return false;
        if (!set_field(out, name, val)) return false;
        skip_ws(&p, end);
    }
    return out->username.len && out->realm.len && out->nonce.len && out->uri.len &&
           out->response.len;
}

/* ---- hashing --------------------------------------------------------- */

static const char hexd[] = "0123456789abcdef";

static void to_hex(const uint8_t *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexd[d[i] >> 4];
        out[2 * i + 1] = hexd[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* H(p1 ":" p2 ":" … ) in lowercase hex, over up to 6 pieces. */
static void h_join(enum auth_alg alg, const struct slice *parts, size_t n, char *out)
{
    uint8_t d[SHA256_DIGEST_LENGTH];

    if (alg == AUTH_SHA256) {
        SHA256_CTX c;
        SHA256_Init(&c);
        for (size_t i = 0; i < n; i++) {
            if (i) SHA256_Update(&c, ":", 1);
            SHA256_Update(&c, parts[i].ptr, parts[i].len);
        }
        SHA256_Final(d, &c);
        to_hex(d, SHA256_DIGEST_LENGTH, out);
    } else {
        MD5_CTX c;
        MD5_Init(&c);
        for (size_t i = 0; i < n; i++) {
            if (i) MD5_Update(&c, ":", 1);
            MD5_Update(&c, parts[i].ptr, parts[i].len);
        }
        MD5_Final(d, &c);
        to_hex(d, MD5_DIGEST_LENGTH, out);
    }
}

void auth_ha1(enum auth_alg alg, struct slice user, struct slice realm, struct slice password,
              char out[AUTH_HA1_MAX + 1])
{
    struct slice parts[3] = {user, realm, password};
    h_join(alg, parts, 3, out);
}

bool auth_check_response(const struct auth_creds *c, struct slice method, const char *ha1)
{
    char ha2[AUTH_HA1_MAX + 1], want[AUTH_HA1_MAX + 1];
    size_t hlen = c->alg == AUTH_SHA256 ? 64 : 32;
    struct slice a2[2] = {method, c->uri};

    if (!ha1 || strlen(ha1) != hlen) return false;
    h_join(c->alg, a2, 2, ha2);
    if (c->qop.len) {
        if (!slice_case_eq_lit(c->qop, "auth") || !c->cnonce.len || !c->nc.len) return false;
        struct slice parts[6] = {
            slice_make(ha1, hlen), c->nonce, c->nc, c->cnonce, SLICE_LIT("auth"),
            slice_make(ha2, hlen)};
        h_join(c->alg, parts, 6, want);
    } else {
        struct slice parts[3] = {slice_make(ha1, hlen), c->nonce, slice_make(ha2, hlen)};
        h_join(c->alg, parts, 3, want);
    }
    if (c->response.len != hlen) return false;
    char got[AUTH_HA1_MAX];
    for (size_t i = 0; i < hlen; i++)
        got[i] = slice_lower(c->response.ptr[i]);
    return CRYPTO_memcmp(got, want, hlen) == 0;
}

/* ---- nonces: 16 hex digits of issue time, 24 of HMAC(time, realm) ---- */

static void nonce_mac(const struct auth_key *key, struct slice realm, uint64_t t, char out[24])
{
    uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    HMAC_CTX h;

    for (int i = 0; i < 8; i++)
        msg[i] = (uint8_t)(t >> (56 - 8 * i));
    HMAC_CTX_init(&h);
    HMAC_Init_ex(&h, key->k, sizeof(key->k), EVP_sha256(), NULL);
    HMAC_Update(&h, msg, sizeof msg);
    HMAC_Update(&h, (const uint8_t *)realm.ptr, realm.len);
    HMAC_Final(&h, mac, &maclen);
    HMAC_CTX_cleanup(&h);
    for (int i = 0; i < 12; i++) {
        out[2 * i] = hexd[mac[i] >> 4];
        out[2 * i + 1] = hexd[mac[i] & 15];
    }
}

void auth_nonce_make(const struct auth_key *key, struct slice realm, uint64_t now_s,
                     char out[AUTH_NONCE_LEN])
{
    for (int i = 0; i < 16; i++)
        out[i] = hexd[(now_s >> (60 - 4 * i)) & 15];
    nonce_mac(key, realm, now_s, out + 16);
}

enum auth_nonce_result auth_nonce_check(const struct auth_key *key, struct slice realm,
                                        struct slice nonce, uint64_t now_s, uint64_t max_age_s)
{
    char mac[24];
    uint64_t t = 0;

    if (nonce.len != AUTH_NONCE_LEN) return AUTH_NONCE_FORGED;
    for (int i = 0; i < 16; i++) {
        char c = nonce.ptr[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else
            return AUTH_NONCE_FORGED;
        t = (t << 4) | d;
    }
    nonce_mac(key, realm, t, mac);
    if (CRYPTO_memcmp(mac, nonce.ptr + 16, sizeof mac) != 0) return AUTH_NONCE_FORGED;
    if (t > now_s + 5 || now_s - t > max_age_s) return AUTH_NONCE_STALE;
    return AUTH_NONCE_OK;
}

void auth_put_challenge(struct buf *b, const char *header, struct slice realm,
                        const char nonce[AUTH_NONCE_LEN], enum auth_alg alg, bool stale)
{
    buf_puts(b, header);
    buf_puts(b, ": Digest realm=\"");
    buf_put_slice(b, realm);
    buf_puts(b, "\", nonce=\"");
    buf_put(b, nonce, AUTH_NONCE_LEN);
    buf_puts(b, alg == AUTH_SHA256 ? "\", algorithm=SHA-256" : "\", algorithm=MD5");
    buf_puts(b, ", qop=\"auth\"");
    if (stale) buf_puts(b, ", stale=true");
    buf_puts(b, "\r\n");
}
