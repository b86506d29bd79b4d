/* Location service: AOR -> contact bindings in a liburcu lock-free hash table. */
#include "registry/locmap.h"

#include <errno.h>
#include <stdlib.h>
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include "core/hash.h"
#include "core/sipuri.h"

/* One AOR and all of its bindings. Immutable once published: writers build a
 * new node and swap it in; the old one is freed after a grace period. */
struct aor_node {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    uint64_t hash;
    unsigned nb;
    struct locmap_binding b[LOCMAP_MAX_BINDINGS];
    uint16_t aor_len;
    char aor[LOCMAP_AOR_MAX];
};

struct locmap {
    struct cds_lfht *ht;
};

struct locmap *locmap_new(void)
{
    struct locmap *lm = calloc(1, sizeof *lm);
    if (!lm) return NULL;
    lm->ht = cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
    if (!lm->ht) {
        free(lm);
        return NULL;
    }
    return lm;
}

static void free_node_rcu(struct rcu_head *h)
{
    free(caa_container_of(h, struct aor_node, rcu));
}

void locmap_free(struct locmap *lm)
{
    if (!lm) return;
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    rcu_read_lock();
    /* not cds_lfht_for_each_entry: at the end it takes container_of(NULL) */
    for (cds_lfht_first(lm->ht, &it); (node = cds_lfht_iter_get_node(&it));
         cds_lfht_next(lm->ht, &it))
        if (cds_lfht_del(lm->ht, node) == 0)
            call_rcu(&caa_container_of(node, struct aor_node, node)->rcu, free_node_rcu);
    rcu_read_unlock();
    /* waiting for grace periods (callbacks, a resize in flight) needs this
     * thread's quiescent state: wait offline */
    rcu_thread_offline();
    rcu_barrier();
    cds_lfht_destroy(lm->ht, NULL);
    rcu_thread_online();
    free(lm);
}

struct key {
    const char *p;
    size_t n;
};

static int match_aor(struct cds_lfht_node *node, const void *key)
{
    const struct aor_node *n = caa_container_of(node, struct aor_node, node);
    const struct key *k = key;
    return n->aor_len == k->n && memcmp(n->aor, k->p, k->n) == 0;
}

size_t locmap_aor_key(struct slice uri, char *buf, size_t cap)
{
    struct sip_uri u;
    if (sipuri_parse(uri, &u) < 0 || (u.scheme != SIP_SCHEME_SIP && u.scheme != SIP_SCHEME_SIPS))
        return 0;
    size_t need = 4 + u.user.len + 1 + u.host_raw.len;
    if (need > cap) return 0;
    size_t o = 0;
    memcpy(buf, "sip:", 4);
    o = 4;
    if (u.user.len) {
        memcpy(buf + o, u.user.ptr, u.user.len);
        o += u.user.len;
        buf[o++] = '@';
    }
    for (size_t i = 0; i < u.host_raw.len; i++)
        buf[o++] = slice_lower(u.host_raw.ptr[i]);
    return o;
}

static struct aor_node *find(struct locmap *lm, const char *aor, size_t n, uint64_t hash)
{
    struct cds_lfht_iter it;
    struct key k = {aor, n};
    cds_lfht_lookup(lm->ht, (unsigned long)hash, match_aor, &k, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    return node ? caa_container_of(node, struct aor_node, node) : NULL;
}

int locmap_update(struct locmap *lm, struct slice aor, bool remove_all,
                  const struct locmap_binding *add, unsigned nadd, uint64_t now_ms,
                  struct locmap_binding *out, unsigned *nout)
{
    if (aor.len == 0 || aor.len > LOCMAP_AOR_MAX) return -EINVAL;
    uint64_t hash = hash_slice(aor); /* keyed: AORs come from the network */
    struct aor_node *nn = calloc(1, sizeof *nn);
    if (!nn) return -ENOMEM;
    nn->hash = hash;
    nn->aor_len = (uint16_t)aor.len;
    memcpy(nn->aor, aor.ptr, aor.len);

    rcu_read_lock();
    struct aor_node *old = find(lm, aor.ptr, aor.len, hash);
    if (old && !remove_all) {
        for (unsigned i = 0; i < old->nb; i++)
            if (old->b[i].expires_ms > now_ms) nn->b[nn->nb++] = old->b[i];
    }
    int rc = 0;
    for (unsigned i = 0; i < nadd; i++) {
        unsigned j = 0;
        while (j < nn->nb && !(nn->b[j].contact_len == add[i].contact_len &&
                               memcmp(nn->b[j].contact, add[i].contact, add[i].contact_len) == 0))
            j++;
        if (add[i].expires_ms == 0) {
            if (j < nn->nb) nn->b[j] = nn->b[--nn->nb];
            continue;
        }
        if (j == nn->nb) {
            if (nn->nb == LOCMAP_MAX_BINDINGS) {
                rc = -ENOSPC;
                continue;
            }
            nn->nb++;
        }
        nn->b[j] = add[i];
    }
    if (nn->nb == 0) {
        if (old && cds_lfht_del(lm->ht, &old->node) == 0) call_rcu(&old->rcu, free_node_rcu);
        rcu_read_unlock();
        free(nn);
    } else {
        struct cds_lfht_node *rep = cds_lfht_add_replace(
            lm->ht, (unsigned long)hash, match_aor, &(struct key){nn->aor, nn->aor_len}, &nn->node);
        rcu_read_unlock();
        if (rep) call_rcu(&caa_container_of(rep, struct aor_node, node)->rcu, free_node_rcu);
    }
    if (out && nout) {
        *nout = 0;
        rcu_read_lock();
        struct aor_node *cur = find(lm, aor.ptr, aor.len, hash);
        if (cur)
            for (unsigned i = 0; i < cur->nb; i++)
                out[(*nout)++] = cur->b[i];
        rcu_read_unlock();
    }
    return rc;
}

bool locmap_lookup(struct locmap *lm, struct slice aor, uint64_t now_ms, struct locmap_binding *b)
{
    uint64_t hash = hash_slice(aor);
    bool found = false;
    rcu_read_lock();
    struct aor_node *n = find(lm, aor.ptr, aor.len, hash);
    if (n) {
        const struct locmap_binding *best = NULL;
        for (unsigned i = 0; i < n->nb; i++) {
            const struct locmap_binding *c = &n->b[i];
            if (c->expires_ms <= now_ms) continue;
            if (!best || c->q > best->q || (c->q == best->q && c->expires_ms > best->expires_ms))
                best = c;
        }
        if (best) {
            *b = *best;
            found = true;
        }
    }
    rcu_read_unlock();
    return found;
}

void locmap_drop_conn(struct locmap *lm, uint64_t conn)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    rcu_read_lock();
    for (cds_lfht_first(lm->ht, &it); (node = cds_lfht_iter_get_node(&it));
         cds_lfht_next(lm->ht, &it)) {
        struct aor_node *n = caa_container_of(node, struct aor_node, node);
        bool hit = false;
        for (unsigned i = 0; i < n->nb; i++)
            hit |= n->b[i].conn == conn;
        if (!hit) continue;
        struct aor_node *nn = malloc(sizeof *nn);
        if (!nn) continue;
        memcpy(nn, n, sizeof *nn);
        nn->nb = 0;
        for (unsigned i = 0; i < n->nb; i++)
            if (n->b[i].conn != conn) nn->b[nn->nb++] = n->b[i];
        if (nn->nb == 0) {
            free(nn);
            if (cds_lfht_del(lm->ht, &n->node) == 0) call_rcu(&n->rcu, free_node_rcu);
        } else if (cds_lfht_replace(lm->ht, &it, (unsigned long)n->hash, match_aor,
                                    &(struct key){n->aor, n->aor_len}, &nn->node) == 0) {
            call_rcu(&n->rcu, free_node_rcu);
        } else {
            free(nn);
        }
    }
    rcu_read_unlock();
}

void locmap_thread_register(void)
{
    rcu_register_thread();
}
void locmap_thread_unregister(void)
{
    rcu_unregister_thread();
}
void locmap_thread_online(void)
{
    rcu_thread_online();
}
void locmap_thread_offline(void)
{
    rcu_thread_offline();
}
void locmap_quiescent(void)
{
    rcu_quiescent_state();
}
