/* SipHash-1-3 (Aumasson and Bernstein), streaming, with one process key. */
#include "core/hash.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

static uint64_t key0, key1; /* written once before threads start */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static inline void sipround(struct hash_state *h)
{
    h->v0 += h->v1;
    h->v1 = ROTL(h->v1, 13);
    h->v1 ^= h->v0;
    h->v0 = ROTL(h->v0, 32);
    h->v2 += h->v3;
    h->v3 = ROTL(h->v3, 16);
    h->v3 ^= h->v2;
    h->v0 += h->v3;
    h->v3 = ROTL(h->v3, 21);
    h->v3 ^= h->v0;
    h->v2 += h->v1;
    h->v1 = ROTL(h->v1, 17);
    h->v1 ^= h->v2;
    h->v2 = ROTL(h->v2, 32);
}

static inline uint64_t load64_le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void hash_set_key(const uint8_t key[16])
{
    key0 = load64_le(key);
    key1 = load64_le(key + 8);
}

int hash_init_key(void)
{
    uint8_t k[16];
    size_t got = 0;

    while (got < sizeof k) {
        ssize_t n = getrandom(k + got, sizeof k - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        got += (size_t)n;
    }
    hash_set_key(k);
    return 0;
}

void hash_begin(struct hash_state *h)
{
    h->v0 = 0x736f6d6570736575ULL ^ key0;
    h->v1 = 0x646f72616e646f6dULL ^ key1;
    h->v2 = 0x6c7967656e657261ULL ^ key0;
    h->v3 = 0x7465646279746573ULL ^ key1;
    h->tail = 0;
    h->len = 0;
}

static inline void compress(struct hash_state *h, uint64_t m)
{
    h->v3 ^= m;
    sipround(h);
    h->v0 ^= m;
}

void hash_update(struct hash_state *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    unsigned fill = (unsigned)(h->len & 7);

    h->len += n;
    /* finish a partial word first */
    while (fill != 0 && n > 0) {
        h->tail |= (uint64_t)*b++ << (8 * fill);
        n--;
        if (++fill == 8) {
            compress(h, h->tail);
            h->tail = 0;
            fill = 0;
        }
    }
    for (; n >= 8; n -= 8, b += 8)
        compress(h, load64_le(b));
    for (unsigned i = 0; i < n; i++)
        h->tail |= (uint64_t)b[i] << (8 * i);
}

uint64_t hash_final(const struct hash_state *in)
{
    struct hash_state h = *in;

    compress(&h, h.tail | (h.len << 56));
    h.v2 ^= 0xff;
    sipround(&h);
    sipround(&h);
    sipround(&h);
    return h.v0 ^ h.v1 ^ h.v2 ^ h.v3;
}

uint64_t hash_bytes(const void *p, size_t n)
{
    struct hash_state h;

    hash_begin(&h);
    hash_update(&h, p, n);
    return hash_final(&h);
}
