/* Which connection (so which worker) holds each phone's flow: address + transport -> conn_ref. */
#include "registry/flowmap.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

struct flow_node {
    struct cds_lfht_node node;
    struct flow_entry e;           /* immutable once published */
    _Atomic uint64_t keepalive_ms; /* the owner of e.conn writes, anyone reads */
    struct rcu_head rcu;           /* only touched when freed */
} __attribute__((aligned(64)));

/* The entry of node n with its keep-alive time. */
static void entry_of(struct flow_node *n, struct flow_entry *out)
{
    *out = n->e;
    out->keepalive_ms = atomic_load_explicit(&n->keepalive_ms, memory_order_relaxed);
}

/* The node of peer/proto, or NULL. Call under rcu_read_lock. */
static struct flow_node *find(struct flowmap *fm, uint8_t proto, const struct netaddr *peer);

struct flowmap {
    struct cds_lfht *ht;
};

struct flow_key {
    uint8_t proto;
    const struct netaddr *peer;
};

/* Keyed (core/hash.h): a peer picks its own address and port, so with an
 * unkeyed hash it could line its flows up on one chain. Covers exactly what
 * netaddr_eq() compares, plus the transport. */
static unsigned long key_hash(uint8_t proto, const struct netaddr *peer)
{
    return (unsigned long)netaddr_hash(proto, peer);
}

static int match(struct cds_lfht_node *node, const void *key)
{
    const struct flow_node *n = caa_container_of(node, struct flow_node, node);
    const struct flow_key *k = key;
    return n->e.proto == k->proto && netaddr_eq(&n->e.peer, k->peer);
}

static void free_rcu(struct rcu_head *h)
{
    free(caa_container_of(h, struct flow_node, rcu));
}

struct flowmap *flowmap_new(void)
{
    struct flowmap *fm = calloc(1, sizeof *fm);
    if (!fm) return NULL;
    fm->ht = cds_lfht_new(1u << 16, 1u << 16, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    if (!fm->ht) {
        free(fm);
        return NULL;
    }
    return fm;
}

void flowmap_free(struct flowmap *fm)
{
    if (!fm) return;
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    rcu_read_lock();
    /* not cds_lfht_for_each_entry: at the end it takes container_of(NULL) */
    for (cds_lfht_first(fm->ht, &it); (node = cds_lfht_iter_get_node(&it));
         cds_lfht_next(fm->ht, &it))
        if (cds_lfht_del(fm->ht, node) == 0)
            call_rcu(&caa_container_of(node, struct flow_node, node)->rcu, free_rcu);
    rcu_read_unlock();
    /* waiting for grace periods (callbacks, a resize in flight) needs this
     * thread's quiescent state: wait offline */
    rcu_thread_offline();
    rcu_barrier();
    cds_lfht_destroy(fm->ht, NULL);
    rcu_thread_online();
    free(fm);
}

int flowmap_set(struct flowmap *fm, const struct flow_entry *e)
{
    struct flow_node *n = aligned_alloc(64, sizeof *n);
    if (!n) return -ENOMEM;
    cds_lfht_node_init(&n->node);
    n->e = *e;
    n->e.keepalive_ms = 0;
    atomic_init(&n->keepalive_ms, 0);
    struct flow_key k = {e->proto, &n->e.peer};
    rcu_read_lock();
    struct flow_node *prev = find(fm, e->proto, &e->peer);
    if (prev && prev->e.conn == e->conn) { /* the same flow, recorded again */
        n->e.since_ms = prev->e.since_ms;
        atomic_store_explicit(&n->keepalive_ms,
                              atomic_load_explicit(&prev->keepalive_ms, memory_order_relaxed),
                              memory_order_relaxed);
        if (!e->aor_len) {
            n->e.aor_len = prev->e.aor_len;
            memcpy(n->e.aor, prev->e.aor, prev->e.aor_len);
        }
    }
    struct cds_lfht_node *old =
        cds_lfht_add_replace(fm->ht, key_hash(e->proto, &e->peer), match, &k, &n->node);
    rcu_read_unlock();
    if (old) call_rcu(&caa_container_of(old, struct flow_node, node)->rcu, free_rcu);
    return 0;
}

void flowmap_remove(struct flowmap *fm, uint8_t proto, const struct netaddr *peer, uint64_t conn)
{
    rcu_read_lock();
    struct flow_node *n = find(fm, proto, peer);
    if (n && n->e.conn == conn && cds_lfht_del(fm->ht, &n->node) == 0) call_rcu(&n->rcu, free_rcu);
    rcu_read_unlock();
}

static struct flow_node *find(struct flowmap *fm, uint8_t proto, const struct netaddr *peer)
{
    struct flow_key k = {proto, peer};
    struct cds_lfht_iter it;
    cds_lfht_lookup(fm->ht, key_hash(proto, peer), match, &k, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    return node ? caa_container_of(node, struct flow_node, node) : NULL;
}

bool flowmap_lookup(struct flowmap *fm, uint8_t proto, const struct netaddr *peer,
                    struct flow_entry *out)
{
    rcu_read_lock();
    struct flow_node *n = find(fm, proto, peer);
    if (n) entry_of(n, out);
    rcu_read_unlock();
    return n != NULL;
}

void flowmap_touch(struct flowmap *fm, uint8_t proto, const struct netaddr *peer, uint64_t conn,
                   uint64_t now_ms)
{
    rcu_read_lock();
    struct flow_node *n = find(fm, proto, peer);
    if (n && n->e.conn == conn)
        atomic_store_explicit(&n->keepalive_ms, now_ms, memory_order_relaxed);
    rcu_read_unlock();
}

unsigned flowmap_page(struct flowmap *fm, unsigned long offset, struct flow_entry *out,
                      unsigned max, unsigned long *total)
{
    struct cds_lfht_iter it;
    struct flow_node *n;
    unsigned long seen = 0;
    unsigned got = 0;
    rcu_read_lock();
    cds_lfht_for_each_entry(fm->ht, &it, n, node)
    {
        if (seen++ >= offset && got < max) entry_of(n, &out[got++]);
    }
    rcu_read_unlock();
    *total = seen;
    return got;
}

unsigned long flowmap_count(struct flowmap *fm)
{
    long before, after;
    unsigned long count;
    rcu_read_lock();
    cds_lfht_count_nodes(fm->ht, &before, &count, &after);
    rcu_read_unlock();
    return count;
}
