/* Flow tokens (RFC 5626 §5.2 style): an HMAC-protected conn_ref + remote address. */
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

/* Decodes exactly `n` bytes; false on any bad character or length. */
static bool b64url_decode(struct slice s, uint8_t *out, size_t n)
{
    size_t need = (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
    if (s.len != need) return false;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < s.len; i++) {
        int v = b64val(s.ptr[i]);
        if (v < 0) return false;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < n) out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o == n;
}

static void pack(uint64_t conn, uint8_t proto, const struct netaddr *peer, uint8_t *raw)
{
    memset(raw, 0, FLOWTOKEN_RAW_LEN);
    for (int i = 0; i < 8; i++)
        raw[i] = (uint8_t)(conn >> (56 - 8 * i));
    raw[8] = proto;
    if (peer->sa.sa_family == AF_INET6) {
        raw[9] = 6;
        memcpy(raw + 10, &peer->in6.sin6_addr, 16);
        memcpy(raw + 26, &peer->in6.sin6_port, 2);
    } else {
        raw[9] = 4;
        memcpy(raw + 10, &peer->in4.sin_addr, 4);
        memcpy(raw + 26, &peer->in4.sin_port, 2);
    }
}

static void mac(const struct flowtoken_key *key, const uint8_t *raw, uint8_t *out)
{
    uint8_t full[32];
    unsigned len = sizeof full;
    HMAC(EVP_sha256(), key->k, sizeof key->k, raw, FLOWTOKEN_RAW_LEN - FLOWTOKEN_MAC_LEN, full,
         &len);
    memcpy(out, full, FLOWTOKEN_MAC_LEN);
}

size_t flowtoken_encode(const struct flowtoken_key *key, uint64_t conn, uint8_t proto,
                        const struct netaddr *peer, char *out, size_t cap)
{
    uint8_t raw[FLOWTOKEN_RAW_LEN];
    if (cap < FLOWTOKEN_STR_LEN) return 0;
    pack(conn, proto, peer, raw);
    mac(key, raw, raw + FLOWTOKEN_RAW_LEN - FLOWTOKEN_MAC_LEN);
    return b64url_encode(raw, sizeof raw, out);
}

enum flowtoken_result flowtoken_decode(const struct flowtoken_key *key, struct slice token,
                                       uint64_t *conn, uint8_t *proto, struct netaddr *peer)
{
    uint8_t raw[FLOWTOKEN_RAW_LEN], want[FLOWTOKEN_MAC_LEN];
    if (!b64url_decode(token, raw, sizeof raw) || (raw[9] != 4 && raw[9] != 6))
        return FLOWTOKEN_MALFORMED;
    mac(key, raw, want);
    if (CRYPTO_memcmp(want, raw + FLOWTOKEN_RAW_LEN - FLOWTOKEN_MAC_LEN, FLOWTOKEN_MAC_LEN) != 0)
        return FLOWTOKEN_FORGED;
    uint64_t c = 0;
    for (int i = 0; i < 8; i++)
        c = c << 8 | raw[i];
    *conn = c;
    *proto = raw[8];
    memset(peer, 0, sizeof *peer);
    if (raw[9] == 6) {
        peer->in6.sin6_family = AF_INET6;
        memcpy(&peer->in6.sin6_addr, raw + 10, 16);
        memcpy(&peer->in6.sin6_port, raw + 26, 2);
        peer->len = sizeof peer->in6;
    } else {
        peer->in4.sin_family = AF_INET;
        memcpy(&peer->in4.sin_addr, raw + 10, 4);
        memcpy(&peer->in4.sin_port, raw + 26, 2);
        peer->len = sizeof peer->in4;
    }
    return FLOWTOKEN_OK;
}
