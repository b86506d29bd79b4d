/* Messages between workers: the per-pair rings, posting with the eventfd
 * wake-up, draining on the owner, and sending on a connection another
 * worker owns. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/worker-int.h"

#define RING_BATCH  64
#define RING_BUDGET 4096 /* ring messages handled per loop turn */

static struct ring *ring_of(const struct runtime *run, unsigned from, unsigned to)
{
    return run->rings[from * run->n + to];
}

void wmsg__signal(int fd)
{
    uint64_t one = 1;
    /* Fails only when the counter is saturated, which still wakes the reader. */
    if (write(fd, &one, sizeof(one)) < 0) return;
}

struct worker_msg *worker_msg_new(size_t len)
{
    struct worker_msg *m;

    if (len > UINT32_MAX) return NULL;
    m = malloc(sizeof(*m) + len);
    if (!m) return NULL;
    memset(m, 0, sizeof(*m));
    m->len = (uint32_t)len;
    return m;
}

void worker_msg_free(struct worker_msg *m)
{
    free(m);
}

int worker_post(struct worker *w, unsigned to, struct worker_msg *m)
{
    struct runtime *run = w->rt->run;
    struct worker_rt *dst;

    ASSERT_OWNER(w);
    if (to >= run->n || to == w->id) return -EINVAL;
    m->from = (uint8_t)w->id;
    if (!ring_push(ring_of(run, w->id, to), m)) {
        STAT_INC(w, ring_refused);
        return -EAGAIN;
    }
    /* SIP traffic that crossed workers; the layer's own messages (health
     * reports to the owner of SIP Server health) are not SIP traffic */
    if (m->kind != WMSG_LAYER) STAT_INC(w, ring_handover);
    /* Pairs with the fence in worker_loop (core/worker.c): either the
     * consumer sees the message before it sleeps, or we see it sleeping.
     * Only the first producer to see that pays for the eventfd write. */
    dst = run->w[to]->rt;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&dst->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&dst->sleeping, false, memory_order_relaxed)) {
        wmsg__signal(dst->evfd);
        STAT_INC(w, ring_wakeups);
    }
    return 0;
}

int wmsg__send_via_owner(struct worker *w, conn_ref conn, const char *buf, size_t len)
{
    unsigned to = CONN_REF_WORKER(conn);
    struct worker_msg *m;
    int rc;

    if (to >= w->nworkers) return -ENOTCONN;
    if (len > UINT32_MAX) return -EMSGSIZE;
    m = worker_msg_new(len);
    if (!m) return -ENOMEM;
    m->kind = WMSG_SEND;
    m->conn = conn;
    memcpy(m->data, buf, len);
    rc = worker_post(w, to, m);
    if (rc < 0) {
        STAT_INC(w, dropped);
        worker_msg_free(m);
    }
    return rc;
}

/* WMSG_SEND is the runtime's own; anything else goes to on_worker_msg. What
 * cannot be written (the connection closed while the message was in the
 * ring, or the write failed) goes back to its sender as WMSG_SEND_FAILED,
 * so the layer above there answers at once instead of waiting on a timer. */
static void handle_msg(struct worker *w, struct worker_msg *m)
{
    if (m->kind != WMSG_SEND) {
        w->rt->h->on_worker_msg(w, m);
        return;
    }
    struct conn *c = conn__get(w, m->conn);
    if (c && stream__write(w, c, m->data, m->len) == 0) {
        STAT_INC(w, tx_msgs);
        worker_msg_free(m);
        return;
    }
    STAT_INC(w, dropped);
    m->kind = WMSG_SEND_FAILED;
    if (m->from == w->id || worker_post(w, m->from, m) < 0) worker_msg_free(m);
}

bool wmsg__rings_empty(const struct worker *w)
{
    const struct runtime *run = w->rt->run;
    for (unsigned from = 0; from < run->n; from++)
        if (from != w->id && !ring_empty(ring_of(run, from, w->id))) return false;
    return true;
}

/* Starts with a different producer each turn, so none starves the others. */
bool wmsg__drain(struct worker *w)
{
    struct worker_rt *rt = w->rt;
    struct runtime *run = rt->run;
    void *batch[RING_BATCH];
    unsigned budget = RING_BUDGET;

    for (unsigned k = 0; k < run->n && budget; k++) {
        unsigned from = (rt->ring_next + k) % run->n;
        size_t got;
        if (from == w->id) continue;
        do {
            got = ring_pop_n(ring_of(run, from, w->id), batch,
                             budget < RING_BATCH ? budget : RING_BATCH);
            budget -= (unsigned)got;
            for (size_t i = 0; i < got; i++)
                handle_msg(w, batch[i]);
        } while (got && budget);
    }
    rt->ring_next = (rt->ring_next + 1) % run->n;
    return budget == 0;
}

/* Per-pair capacity: 4096 for a few workers, less for many (n * n rings). */
static size_t ring_cap(unsigned n)
{
    size_t cap = 4096;
    while (cap > 256 && cap * n > 16384)
        cap /= 2;
    return cap;
}

int wmsg__rings_new(struct runtime *run)
{
    run->rings = calloc((size_t)run->n * run->n, sizeof(*run->rings));
    if (!run->rings) return -ENOMEM;
    for (unsigned from = 0; from < run->n; from++) {
        for (unsigned to = 0; to < run->n; to++) {
            if (from == to) continue;
            run->rings[from * run->n + to] = ring_new(ring_cap(run->n));
            if (!run->rings[from * run->n + to]) return -ENOMEM;
        }
    }
    return 0;
}

void wmsg__rings_free(struct runtime *run)
{
    void *m;

    if (!run->rings) return;
    for (unsigned i = 0; i < run->n * run->n; i++) {
        if (!run->rings[i]) continue;
        while (ring_pop_n(run->rings[i], &m, 1) == 1)
            worker_msg_free(m);
        ring_free(run->rings[i]);
    }
    free(run->rings);
    run->rings = NULL;
}
