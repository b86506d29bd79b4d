/* Location service: AOR -> contact bindings in a liburcu lock-free hash table,
 * with a second table indexing the AORs by the connection their bindings came on. */
#include "registry/locmap.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <urcu-qsbr.h>
#include <urcu/rculfhash.h>

#include "core/hash.h"
#include "core/sipuri.h"

/* a writer that keeps losing the race for one AOR gives up (-EBUSY) */
#define UPDATE_TRIES 64

/* One AOR and its bindings. Immutable once published: a writer builds a new
 * node from the one it read and swaps it in only if that one is still the
 * current one (else it reads again), so the changes to one AOR are
 * serialised; the old node is freed after a grace period. */
struct aor_node {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    uint64_t hash;
    char *aor; /* aor_len bytes, in the same allocation after b[] */
    uint16_t aor_len;
    uint16_t nb;
    struct locmap_binding b[];
};

/* "Connection conn carries a binding of this AOR". Invariant: whenever the
 * current node of an AOR has a binding with conn, this entry exists (the
 * owner of conn adds it after publishing the binding, and whoever removes
 * an entry checks the AOR again afterwards). An entry may outlive its
 * binding briefly (a race between writers); the sweep and the close of the
 * connection remove those. */
struct conn_node {
    struct cds_lfht_node node;
    struct rcu_head rcu;
    uint64_t conn;
    uint64_t aor_hash;
    uint16_t aor_len;
    char aor[];
};

/* Walks a table's nodes. Not cds_lfht_for_each_entry(): at the end it takes
 * container_of(NULL), which is undefined (the fuzzer's UBSan reports it). */
#define LOCMAP_FOR_EACH(ht, it, node)                                                              \
    for (cds_lfht_first((ht), (it)); ((node) = cds_lfht_iter_get_node(it)) != NULL;                \
         cds_lfht_next((ht), (it)))
/* Walks the nodes whose key matches (cds_lfht_for_each_duplicate). */
#define LOCMAP_FOR_EACH_DUP(ht, hash, match, key, it, node)                                        \
    for (cds_lfht_lookup((ht), (hash), (match), (key), (it));                                      \
         ((node) = cds_lfht_iter_get_node(it)) != NULL;                                            \
         cds_lfht_next_duplicate((ht), (match), (key), (it)))

struct locmap {
    struct cds_lfht *ht;     /* AOR -> struct aor_node */
    struct cds_lfht *byconn; /* conn -> struct conn_node, one per (conn, AOR) */
    unsigned max_aors, max_bindings;
    _Atomic long naors, nbindings; /* what the table holds */
};

/* One change to an AOR: the bindings of `add` (expires_ms 0: remove), after
 * dropping every binding (remove_all) or those of drop_conn; expired ones go
 * in any case. */
struct edit {
    bool remove_all;
    const struct locmap_binding *add;
    unsigned nadd;
    uint64_t drop_conn; /* 0: none */
    uint64_t now_ms;
    /* results */
    struct locmap_binding *out;
    unsigned out_cap, nout;
    long removed; /* bindings gone (old count - new count) */
};

static struct cds_lfht *table_new(void)
{
    return cds_lfht_new(1024, 1024, 0, CDS_LFHT_AUTO_RESIZE | CDS_LFHT_ACCOUNTING, NULL);
}

struct locmap *locmap_new(unsigned max_aors, unsigned max_bindings)
{
    if (max_aors == 0 || max_bindings == 0 || max_bindings > LOCMAP_BINDINGS_MAX) return NULL;
    struct locmap *lm = calloc(1, sizeof *lm);
    if (!lm) return NULL;
    lm->max_aors = max_aors;
    lm->max_bindings = max_bindings;
    lm->ht = table_new();
    lm->byconn = table_new();
    if (!lm->ht || !lm->byconn) {
        if (lm->ht) cds_lfht_destroy(lm->ht, NULL);
        if (lm->byconn) cds_lfht_destroy(lm->byconn, NULL);
        free(lm);
        return NULL;
    }
    return lm;
}

static void free_aor_rcu(struct rcu_head *h)
{
    free(caa_container_of(h, struct aor_node, rcu));
}

static void free_conn_rcu(struct rcu_head *h)
{
    free(caa_container_of(h, struct conn_node, rcu));
}

void locmap_free(struct locmap *lm)
{
    if (!lm) return;
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    rcu_read_lock();
    LOCMAP_FOR_EACH(lm->ht, &it, node)
    {
        if (cds_lfht_del(lm->ht, node) == 0)
            call_rcu(&caa_container_of(node, struct aor_node, node)->rcu, free_aor_rcu);
    }
    LOCMAP_FOR_EACH(lm->byconn, &it, node)
    {
        if (cds_lfht_del(lm->byconn, node) == 0)
            call_rcu(&caa_container_of(node, struct conn_node, node)->rcu, free_conn_rcu);
    }
    rcu_read_unlock();
    /* waiting for grace periods (callbacks, a resize in flight) needs this
     * thread's quiescent state: wait offline */
    rcu_thread_offline();
    rcu_barrier();
    cds_lfht_destroy(lm->ht, NULL);
    cds_lfht_destroy(lm->byconn, NULL);
    rcu_thread_online();
    free(lm);
}

/* ---- keys ---------------------------------------------------------------- */

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

/* An index key: a connection and one AOR, or every AOR when p is NULL. */
struct ckey {
    uint64_t conn;
    const char *p;
    size_t n;
};

static int match_conn(struct cds_lfht_node *node, const void *key)
{
    const struct conn_node *x = caa_container_of(node, struct conn_node, node);
    const struct ckey *k = key;
    return x->conn == k->conn && (!k->p || (x->aor_len == k->n && memcmp(x->aor, k->p, k->n) == 0));
}

/* keyed: a connection's AORs must not pile onto one chain either */
static uint64_t conn_hash(uint64_t conn)
{
    return hash_bytes(&conn, sizeof conn);
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

/* Call under rcu_read_lock; *it positioned at the node found. */
static struct aor_node *find(struct locmap *lm, struct slice aor, uint64_t hash,
                             struct cds_lfht_iter *it)
{
    struct key k = {aor.ptr, aor.len};
    cds_lfht_lookup(lm->ht, (unsigned long)hash, match_aor, &k, it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(it);
    return node ? caa_container_of(node, struct aor_node, node) : NULL;
}

static bool has_conn(const struct aor_node *n, unsigned nb, uint64_t conn)
{
    for (unsigned i = 0; n && i < nb; i++)
        if (n->b[i].conn == conn) return true;
    return false;
}

/* ---- the connection index ---------------------------------------------- */

/* Adds the entry (conn, aor) unless it exists. Under rcu_read_lock. */
static void index_add(struct locmap *lm, uint64_t conn, struct slice aor, uint64_t aor_hash)
{
    struct conn_node *x = malloc(sizeof *x + aor.len);
    if (!x) return; /* the binding then stays until it expires */
    x->conn = conn;
    x->aor_hash = aor_hash;
    x->aor_len = (uint16_t)aor.len;
    memcpy(x->aor, aor.ptr, aor.len);
    struct ckey k = {conn, x->aor, aor.len};
    if (cds_lfht_add_unique(lm->byconn, (unsigned long)conn_hash(conn), match_conn, &k, &x->node) !=
        &x->node)
        free(x);
}

/* Removes the entry (conn, aor), then puts it back if the AOR's current
 * node has a binding with conn after all (its owner added one meanwhile and
 * our removal may have come after its own index_add). Under rcu_read_lock. */
static void index_del_checked(struct locmap *lm, uint64_t conn, struct slice aor, uint64_t aor_hash)
{
    struct ckey k = {conn, aor.ptr, aor.len};
    struct cds_lfht_iter it;
    cds_lfht_lookup(lm->byconn, (unsigned long)conn_hash(conn), match_conn, &k, &it);
    struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
    if (!node || cds_lfht_del(lm->byconn, node) != 0) return;
    call_rcu(&caa_container_of(node, struct conn_node, node)->rcu, free_conn_rcu);
    struct aor_node *cur = find(lm, aor, aor_hash, &it);
    if (cur && has_conn(cur, cur->nb, conn)) index_add(lm, conn, aor, aor_hash);
}

/* The index entries a successful swap old -> nn calls for (nn->nb may be
 * 0). Under rcu_read_lock. */
static void index_diff(struct locmap *lm, const struct aor_node *old, const struct aor_node *nn,
                       struct slice aor, uint64_t hash)
{
    for (unsigned i = 0; i < nn->nb; i++) {
        uint64_t c = nn->b[i].conn;
        if (c && !has_conn(nn, i, c) && !has_conn(old, old ? old->nb : 0, c))
            index_add(lm, c, aor, hash);
    }
    for (unsigned i = 0; old && i < old->nb; i++) {
        uint64_t c = old->b[i].conn;
        if (c && !has_conn(old, i, c) && !has_conn(nn, nn->nb, c))
            index_del_checked(lm, c, aor, hash);
    }
}

/* ---- changing one AOR ---------------------------------------------------- */

static struct aor_node *node_alloc(struct slice aor, uint64_t hash, unsigned cap)
{
    struct aor_node *n = malloc(sizeof *n + cap * sizeof n->b[0] + aor.len);
    if (!n) return NULL;
    n->hash = hash;
    n->nb = 0;
    n->aor = (char *)(n->b + cap);
    n->aor_len = (uint16_t)aor.len;
    memcpy(n->aor, aor.ptr, aor.len);
    return n;
}

/* Fills nn (room for old's bindings plus e->nadd) with old's bindings as e
 * changes them. -ENOSPC when they are more than max_bindings. */
static int apply(const struct locmap *lm, const struct aor_node *old, const struct edit *e,
                 struct aor_node *nn)
{
    unsigned n = 0;
    for (unsigned i = 0; old && !e->remove_all && i < old->nb; i++) {
        const struct locmap_binding *b = &old->b[i];
        if (b->expires_ms > e->now_ms && (!e->drop_conn || b->conn != e->drop_conn))
            nn->b[n++] = *b;
    }
    for (unsigned i = 0; i < e->nadd; i++) {
        const struct locmap_binding *a = &e->add[i];
        unsigned j = 0;
        while (j < n && !(nn->b[j].contact_len == a->contact_len &&
                          memcmp(nn->b[j].contact, a->contact, a->contact_len) == 0))
            j++;
        if (a->expires_ms == 0) {
            if (j < n) nn->b[j] = nn->b[--n];
            continue;
        }
        if (j == n) n++;
        nn->b[j] = *a;
    }
    nn->nb = (uint16_t)n;
    return n > lm->max_bindings ? -ENOSPC : 0;
}

/* Swaps nn for old (read at *it), or inserts or deletes. 0, -EAGAIN when
 * old is no longer the current node (read again), -EDQUOT. Under
 * rcu_read_lock; on 0 the table owns nn unless it is empty. */
static int publish(struct locmap *lm, struct aor_node *old, struct cds_lfht_iter *it,
                   struct aor_node *nn)
{
    struct key k = {nn->aor, nn->aor_len};
    if (nn->nb == 0) {
        if (cds_lfht_del(lm->ht, &old->node) != 0) return -EAGAIN;
        atomic_fetch_sub_explicit(&lm->naors, 1, memory_order_relaxed);
    } else if (!old) {
        if (atomic_fetch_add_explicit(&lm->naors, 1, memory_order_relaxed) >= (long)lm->max_aors) {
            atomic_fetch_sub_explicit(&lm->naors, 1, memory_order_relaxed);
            return -EDQUOT;
        }
        if (cds_lfht_add_unique(lm->ht, (unsigned long)nn->hash, match_aor, &k, &nn->node) !=
            &nn->node) {
            atomic_fetch_sub_explicit(&lm->naors, 1, memory_order_relaxed);
            return -EAGAIN;
        }
    } else if (cds_lfht_replace(lm->ht, it, (unsigned long)nn->hash, match_aor, &k, &nn->node) !=
               0) {
        return -EAGAIN;
    }
    atomic_fetch_add_explicit(&lm->nbindings, (long)nn->nb - (old ? (long)old->nb : 0),
                              memory_order_relaxed);
    if (old) call_rcu(&old->rcu, free_aor_rcu);
    return 0;
}

/* One attempt of modify(): 1 done, 0 nothing to change, or -errno
 * (-EAGAIN: try again). Under rcu_read_lock. */
static int modify_once(struct locmap *lm, struct slice aor, uint64_t hash, struct edit *e)
{
    struct cds_lfht_iter it;
    struct aor_node *old = find(lm, aor, hash, &it);
    struct aor_node *nn = node_alloc(aor, hash, (old ? old->nb : 0) + e->nadd);
    if (!nn) return -ENOMEM;
    int rc = apply(lm, old, e, nn);
    bool changed = e->nadd || e->remove_all || (old ? old->nb : 0) != nn->nb;
    if (rc == 0 && changed && (old || nn->nb)) rc = publish(lm, old, &it, nn);
    if (rc < 0) {
        free(nn);
        return rc;
    }
    e->removed = (old ? (long)old->nb : 0) - nn->nb;
    e->nout = 0;
    for (unsigned i = 0; i < nn->nb && e->nout < e->out_cap; i++)
        e->out[e->nout++] = nn->b[i];
    if (!changed || !(old || nn->nb)) {
        free(nn);
        return 0;
    }
    index_diff(lm, old, nn, aor, hash);
    if (nn->nb == 0) free(nn);
    return 1;
}

/* modify_once() again while other writers change the AOR first (bounded):
 * 1 changed, 0 nothing to change, or -errno (-EBUSY: kept losing). Under
 * rcu_read_lock. */
static int modify(struct locmap *lm, struct slice aor, uint64_t hash, struct edit *e)
{
    for (unsigned t = 0; t < UPDATE_TRIES; t++) {
        int rc = modify_once(lm, aor, hash, e);
        if (rc != -EAGAIN) return rc;
    }
    return -EBUSY;
}

int locmap_update(struct locmap *lm, struct slice aor, bool remove_all,
                  const struct locmap_binding *add, unsigned nadd, uint64_t now_ms,
                  struct locmap_binding *out, unsigned out_cap, unsigned *nout)
{
    if (nout) *nout = 0;
    if (aor.len == 0 || aor.len > LOCMAP_AOR_MAX || nadd > LOCMAP_BINDINGS_MAX) return -EINVAL;
    struct edit e = {.remove_all = remove_all,
                     .add = add,
                     .nadd = nadd,
                     .now_ms = now_ms,
                     .out = out,
                     .out_cap = out ? out_cap : 0};
    rcu_read_lock();
    int rc = modify(lm, aor, hash_slice(aor) /* keyed: AORs come from the network */, &e);
    rcu_read_unlock();
    if (rc < 0) return rc;
    if (nout) *nout = e.nout;
    return 0;
}

bool locmap_lookup(struct locmap *lm, struct slice aor, uint64_t now_ms, struct locmap_binding *b)
{
    struct cds_lfht_iter it;
    bool found = false;
    rcu_read_lock();
    struct aor_node *n = find(lm, aor, hash_slice(aor), &it);
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

/* ---- by connection --------------------------------------------------------- */

void locmap_drop_conn(struct locmap *lm, uint64_t conn)
{
    struct cds_lfht_iter it;
    struct cds_lfht_node *node;
    struct ckey any = {conn, NULL, 0};
    rcu_read_lock();
    LOCMAP_FOR_EACH_DUP(lm->byconn, (unsigned long)conn_hash(conn), match_conn, &any, &it, node)
    {
        struct conn_node *x = caa_container_of(node, struct conn_node, node);
        struct edit e = {.drop_conn = conn};
        struct slice aor = slice_make(x->aor, x->aor_len);
        (void)modify(lm, aor, x->aor_hash, &e);
        /* what modify_once left (nothing to drop, or out of memory): the
         * connection is gone, so no binding of it can come back */
        if (cds_lfht_del(lm->byconn, &x->node) == 0) call_rcu(&x->rcu, free_conn_rcu);
    }
    rcu_read_unlock();
}

uint64_t locmap_conn_until(struct locmap *lm, uint64_t conn, uint64_t now_ms)
{
    struct cds_lfht_iter it, ait;
    struct cds_lfht_node *node;
    struct ckey any = {conn, NULL, 0};
    uint64_t until = 0;
    unsigned seen = 0;
    rcu_read_lock();
    LOCMAP_FOR_EACH_DUP(lm->byconn, (unsigned long)conn_hash(conn), match_conn, &any, &it, node)
    {
        struct conn_node *x = caa_container_of(node, struct conn_node, node);
        if (++seen > LOCMAP_CONN_WALK_MAX) {
            until = UINT64_MAX;
            break;
        }
        struct aor_node *n = find(lm, slice_make(x->aor, x->aor_len), x->aor_hash, &ait);
        for (unsigned i = 0; n && i < n->nb; i++)
            if (n->b[i].conn == conn && n->b[i].expires_ms > now_ms && n->b[i].expires_ms > until)
                until = n->b[i].expires_ms;
    }
    rcu_read_unlock();
    return until;
}

/* ---- housekeeping ---------------------------------------------------------- */

unsigned long locmap_sweep(struct locmap *lm, uint64_t now_ms)
{
    struct cds_lfht_iter it, ait;
    struct cds_lfht_node *node;
    unsigned long removed = 0;
    rcu_read_lock();
    LOCMAP_FOR_EACH(lm->ht, &it, node)
    {
        struct aor_node *n = caa_container_of(node, struct aor_node, node);
        bool expired = false;
        for (unsigned i = 0; i < n->nb && !expired; i++)
            expired = n->b[i].expires_ms <= now_ms;
        if (!expired) continue;
        struct edit e = {.now_ms = now_ms};
        struct slice aor = slice_make(n->aor, n->aor_len);
        if (modify(lm, aor, n->hash, &e) > 0 && e.removed > 0) removed += (unsigned long)e.removed;
    }
    /* index entries a race left without their binding */
    LOCMAP_FOR_EACH(lm->byconn, &it, node)
    {
        struct conn_node *x = caa_container_of(node, struct conn_node, node);
        struct slice aor = slice_make(x->aor, x->aor_len);
        struct aor_node *cur = find(lm, aor, x->aor_hash, &ait);
        if (!cur || !has_conn(cur, cur->nb, x->conn))
            index_del_checked(lm, x->conn, aor, x->aor_hash);
    }
    rcu_read_unlock();
    return removed;
}

void locmap_counts(const struct locmap *lm, unsigned long *aors, unsigned long *bindings)
{
    long a = atomic_load_explicit(&lm->naors, memory_order_relaxed);
    long b = atomic_load_explicit(&lm->nbindings, memory_order_relaxed);
    *aors = a > 0 ? (unsigned long)a : 0;
    *bindings = b > 0 ? (unsigned long)b : 0;
}

/* ---- RCU hooks --------------------------------------------------------------- */

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
void locmap_synchronize(void)
{
    synchronize_rcu();
}
