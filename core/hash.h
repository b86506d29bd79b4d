/* One keyed hash for every table fed by network data: SipHash-1-3 with a
 * per-process random key, so crafted keys cannot pile onto one chain. */
#ifndef SIPEDGE_HASH_H
#define SIPEDGE_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"

/* Streaming state: feed any number of pieces, then hash_final(). */
struct hash_state {
    uint64_t v0, v1, v2, v3;
    uint64_t tail; /* bytes not yet in a full 8-byte word, little-endian */
    uint64_t len;  /* bytes fed so far */
};

/* Sets the process key from 16 random bytes (getrandom). Call once from main
 * before any thread hashes; until then the key is zero (tests may rely on
 * that for repeatable values, or set their own with hash_set_key). */
int hash_init_key(void);
/* Sets the key explicitly (tests, benchmarks). Same thread rule as above. */
void hash_set_key(const uint8_t key[16]);

void hash_begin(struct hash_state *h);
void hash_update(struct hash_state *h, const void *p, size_t n);
uint64_t hash_final(const struct hash_state *h);

/* Folds in one piece with its length first, so ("ab","c") and ("a","bc")
 * hash differently. */
static inline void hash_update_slice(struct hash_state *h, struct slice s)
{
    uint32_t n = (uint32_t)s.len;
    hash_update(h, &n, sizeof n);
    hash_update(h, s.ptr, s.len);
}

/* One-shot hash of n bytes. Any thread. */
uint64_t hash_bytes(const void *p, size_t n);

static inline uint64_t hash_slice(struct slice s)
{
    return hash_bytes(s.ptr, s.len);
}

#endif
