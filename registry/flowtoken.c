/* Flow tokens (RFC 5626 §5.2 style): an HMAC-protected conn_ref + remote
 * address, marked for the one use it was handed out for. */
#include "registry/flowtoken.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <string.h>
#include <unistd.h>

int flowtoken_key_init(struct flowtoken_key *key, const char *path)
{
    if (!path || !path[0]) {
        RAND_bytes(key->k, sizeof key->k);
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    SHA256_CTX sha;
    SHA256_Init(&sha);
    char buf[4096];
    ssize_t n;
    size_t total = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        SHA256_Update(&sha, buf, (size_t)n);
        total += (size_t)n;
    }
    int err = n < 0 ? -errno : 0;
    close(fd);
    SHA256_Final(key->k, &sha);
    if (err) return err;
    return total ? 0 : -ENODATA;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        if (i + 1 < n) out[o++] = b64[(v >> 6) & 63];
        if (i + 2 < n) out[o++] = b64[v & 63];
    }
    return o;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* Decodes a whole number of 4-character groups (every token is a multiple
 * of 3 bytes, so it has no padding bits) into out[0..cap). Returns the
 * bytes written, 0 on a bad character or length. */
static size_t b64url_decode(struct slice s, uint8_t *out, size_t cap)
{
    if (s.len == 0 || s.len % 4 != 0 || s.len / 4 * 3 > cap) return 0;
    size_t o = 0;
    for (size_t i = 0; i < s.len; i += 4) {
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = b64val(s.ptr[i + j]);
            if (d < 0) return 0;
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    return o;
}

/* ---- layout ------------------------------------------------------------------
 * kind (1) proto (1) family 4|6 (1) conn_ref (8, big endian) ip (4|16) port (2)
 * | MAC (10): HMAC(key, 'M' body)
 * | dialog tag (6, Record-Route tokens only): HMAC(key, 'D' body Call-ID)
 * Every layout is a multiple of 3 bytes: the text has no padding bits. */

#define BODY_FIXED 11 /* kind, proto, family, conn_ref */

static size_t body_len(uint8_t family)
{
    return BODY_FIXED + (family == 6 ? 16 : 4) + 2;
}

static size_t raw_len(uint8_t kind, uint8_t family)
{
    return body_len(family) + FLOWTOKEN_MAC_LEN + (kind == FLOWTOKEN_RR ? FLOWTOKEN_DTAG_LEN : 0);
}

_Static_assert((BODY_FIXED + 4 + 2 + FLOWTOKEN_MAC_LEN) % 3 == 0 &&
                   (BODY_FIXED + 16 + 2 + FLOWTOKEN_MAC_LEN) % 3 == 0 &&
                   FLOWTOKEN_DTAG_LEN % 3 == 0,
               "token layouts must be whole base64 groups");

/* Truncated HMAC-SHA256(key, label body [extra]) into out[0..n). */
static void mac(const struct flowtoken_key *key, char label, const uint8_t *body, size_t blen,
                struct slice extra, uint8_t *out, size_t n)
{
    uint8_t full[32];
    unsigned len = sizeof full;
    HMAC_CTX h;
    HMAC_CTX_init(&h);
    if (!HMAC_Init_ex(&h, key->k, sizeof key->k, EVP_sha256(), NULL) ||
        !HMAC_Update(&h, (const uint8_t *)&label, 1) || !HMAC_Update(&h, body, blen) ||
        (extra.len && !HMAC_Update(&h, (const uint8_t *)extra.ptr, extra.len)) ||
        !HMAC_Final(&h, full, &len))
        memset(full, 0, sizeof full); /* out of memory: a MAC nothing matches by chance */
    HMAC_CTX_cleanup(&h);
    memcpy(out, full, n);
}

/* The body of t into raw; returns its length, 0 for an unknown family. */
static size_t pack(const struct flowtoken *t, uint8_t *raw)
{
    const struct netaddr *peer = &t->peer;
    uint8_t fam = peer->sa.sa_family == AF_INET6 ? 6 : peer->sa.sa_family == AF_INET ? 4 : 0;
    if (!fam) return 0;
    raw[0] = t->kind;
    raw[1] = t->proto;
    raw[2] = fam;
    for (int i = 0; i < 8; i++)
        raw[3 + i] = (uint8_t)(t->conn >> (56 - 8 * i));
    uint8_t *p = raw + BODY_FIXED;
    if (fam == 6) {
        memcpy(p, &peer->in6.sin6_addr, 16);
        memcpy(p + 16, &peer->in6.sin6_port, 2);
    } else {
        memcpy(p, &peer->in4.sin_addr, 4);
        memcpy(p + 4, &peer->in4.sin_port, 2);
    }
    return body_len(fam);
}

static void unpack(const uint8_t *raw, struct flowtoken *t)
{
    const uint8_t *p = raw + BODY_FIXED;
    t->kind = raw[0];
    t->proto = raw[1];
    t->conn = 0;
    for (int i = 0; i < 8; i++)
        t->conn = t->conn << 8 | raw[3 + i];
    memset(&t->peer, 0, sizeof t->peer);
    if (raw[2] == 6) {
        t->peer.in6.sin6_family = AF_INET6;
        memcpy(&t->peer.in6.sin6_addr, p, 16);
        memcpy(&t->peer.in6.sin6_port, p + 16, 2);
        t->peer.len = sizeof t->peer.in6;
    } else {
        t->peer.in4.sin_family = AF_INET;
        memcpy(&t->peer.in4.sin_addr, p, 4);
        memcpy(&t->peer.in4.sin_port, p + 4, 2);
        t->peer.len = sizeof t->peer.in4;
    }
}

size_t flowtoken_encode(const struct flowtoken_key *key, const struct flowtoken *t,
                        struct slice dialog, char *out, size_t cap)
{
    uint8_t raw[FLOWTOKEN_RAW_MAX];
    if (t->kind != FLOWTOKEN_PATH && t->kind != FLOWTOKEN_RR) return 0;
    size_t bl = pack(t, raw);
    if (!bl) return 0;
    size_t n = raw_len(t->kind, raw[2]);
    if (cap < n / 3 * 4) return 0;
    mac(key, 'M', raw, bl, SLICE_NULL, raw + bl, FLOWTOKEN_MAC_LEN);
    if (t->kind == FLOWTOKEN_RR)
        mac(key, 'D', raw, bl, dialog, raw + bl + FLOWTOKEN_MAC_LEN, FLOWTOKEN_DTAG_LEN);
    return b64url_encode(raw, n, out);
}

enum flowtoken_result flowtoken_decode(const struct flowtoken_key *key, struct slice token,
                                       struct slice dialog, struct flowtoken *t)
{
    uint8_t raw[FLOWTOKEN_RAW_MAX], want[FLOWTOKEN_MAC_LEN];
    size_t n = b64url_decode(token, raw, sizeof raw);
    if (n < BODY_FIXED || (raw[0] != FLOWTOKEN_PATH && raw[0] != FLOWTOKEN_RR) ||
        (raw[2] != 4 && raw[2] != 6) || n != raw_len(raw[0], raw[2]))
        return FLOWTOKEN_MALFORMED;
    size_t bl = body_len(raw[2]);
    mac(key, 'M', raw, bl, SLICE_NULL, want, sizeof want);
    if (CRYPTO_memcmp(want, raw + bl, FLOWTOKEN_MAC_LEN) != 0) return FLOWTOKEN_FORGED;
    unpack(raw, t);
    if (t->kind != FLOWTOKEN_RR) return FLOWTOKEN_OK;
    mac(key, 'D', raw, bl, dialog, want, FLOWTOKEN_DTAG_LEN);
    return CRYPTO_memcmp(want, raw + bl + FLOWTOKEN_MAC_LEN, FLOWTOKEN_DTAG_LEN) == 0
               ? FLOWTOKEN_OK
               : FLOWTOKEN_OTHER_DIALOG;
}
