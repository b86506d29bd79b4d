/* Per-worker transaction table: a stateful proxy's server+client transaction pairs. */
#include "core/txn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t key_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ULL;
    return h ^ (h >> 31);
}

int txn_table_init(struct txn_table *t, uint32_t max)
{
    memset(t, 0, sizeof *t);
    t->max = max;
    t->nbuckets = 1u << 16;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    return t->buckets ? 0 : -ENOMEM;
}

void txn_table_cleanup(struct txn_table *t)
{
    for (uint32_t i = 0; i < t->nslots; i++)
        if (t->slots[i]) txn_free(t, t->slots[i]);
    free(t->slots);
    free(t->gens);
    free(t->free_list);
    free(t->buckets);
    memset(t, 0, sizeof *t);
}

static int grow(struct txn_table *t)
{
    uint32_t ncap = t->cap ? t->cap * 2 : 1024;
    if (ncap > t->max) ncap = t->max;
    if (ncap <= t->cap) return -ENOSPC;
    struct txn **s = realloc(t->slots, ncap * sizeof *s);
    if (!s) return -ENOMEM;
    t->slots = s;
    uint32_t *g = realloc(t->gens, ncap * sizeof *g);
    if (!g) return -ENOMEM;
    t->gens = g;
    uint32_t *f = realloc(t->free_list, ncap * sizeof *f);
    if (!f) return -ENOMEM;
    t->free_list = f;
    for (uint32_t i = t->cap; i < ncap; i++) {
        t->slots[i] = NULL;
        t->gens[i] = 1;
    }
    t->cap = ncap;
    return 0;
}

struct txn *txn_new(struct txn_table *t, const char *key, size_t key_len)
{
    uint32_t slot;
    if (t->nfree) {
        slot = t->free_list[--t->nfree];
    } else {
        if (t->nslots == t->cap && grow(t) < 0) return NULL;
        slot = t->nslots++;
    }
    struct txn *x = calloc(1, sizeof *x);
    char *k = malloc(key_len ? key_len : 1);
    if (!x || !k) {
        free(x);
        free(k);
        t->free_list[t->nfree++] = slot;
        return NULL;
    }
    memcpy(k, key, key_len);
    x->slot = slot;
    x->gen = t->gens[slot]++;
    if (t->gens[slot] == 0) t->gens[slot] = 1;
    x->key = k;
    x->key_len = (uint16_t)key_len;
    x->key_hash = key_hash(key, key_len);
    uint32_t b = (uint32_t)x->key_hash & (t->nbuckets - 1);
    x->hnext = t->buckets[b];
    t->buckets[b] = slot + 1;
    t->slots[slot] = x;
    t->live++;
    return x;
}

void txn_free(struct txn_table *t, struct txn *x)
{
    uint32_t *pp = &t->buckets[(uint32_t)x->key_hash & (t->nbuckets - 1)];
    while (*pp && *pp != x->slot + 1)
        pp = &t->slots[*pp - 1]->hnext;
    if (*pp) *pp = x->hnext;
    timer_cancel(&x->t_retx);
    timer_cancel(&x->t_timeout);
    t->slots[x->slot] = NULL;
    t->free_list[t->nfree++] = x->slot;
    t->live--;
    free(x->key);
    free(x->req);
    free(x->resp);
    free(x->tls_name);
    free(x);
}

struct txn *txn_find_key(struct txn_table *t, const char *key, size_t key_len)
{
    uint64_t h = key_hash(key, key_len);
    for (uint32_t s = t->buckets[(uint32_t)h & (t->nbuckets - 1)]; s; s = t->slots[s - 1]->hnext) {
        struct txn *x = t->slots[s - 1];
        if (x->key_hash == h && x->key_len == key_len && memcmp(x->key, key, key_len) == 0)
            return x;
    }
    return NULL;
}

struct txn *txn_find_slot(struct txn_table *t, uint32_t slot, uint32_t gen)
{
    if (slot >= t->nslots || !t->slots[slot] || t->slots[slot]->gen != gen) return NULL;
    return t->slots[slot];
}
