/* The fake runtime fuzz/fuzz_proxy.c drives the proxy layer with (fuzz/fake_runtime.c). */
#ifndef SIPEDGE_FUZZ_FAKE_RUNTIME_H
#define SIPEDGE_FUZZ_FAKE_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

#include "core/worker.h"
#include "dns/dns.h"

#define FAKE_WORKERS     2
#define FAKE_MAX_CONNS   16
#define FAKE_MAX_POSTS   64
#define FAKE_MAX_LOOKUPS 16
#define FAKE_CAPTURES    4
#define FAKE_CAPTURE_LEN 256

/* A stream connection: opened by a message from a peer, or by worker_send. */
struct fake_conn {
    conn_ref ref;
    unsigned owner;
    uint8_t proto;
    struct netaddr peer;
    bool open;
};

struct fake_lookup {
    struct worker *w;
    dns_cb cb;
    void *arg;
    uint8_t proto; /* of the targets the answer gives */
    int port;
};

/* The whole fake world, reset by the harness for every input. */
struct fake {
    struct worker w[FAKE_WORKERS];
    struct fake_conn conns[FAKE_MAX_CONNS];
    unsigned nconns;
    uint32_t conn_gen;
    struct {
        unsigned to;
        struct worker_msg *m;
    } posts[FAKE_MAX_POSTS];
    unsigned nposts;
    struct fake_lookup lookups[FAKE_MAX_LOOKUPS];
    unsigned nlookups;
    int dns_tag;
    /* knobs the input turns */
    bool draining, send_fails, private_ports;
    /* what the proxy sent: counted, and the branches of its requests and the
     * flow tokens of its Record-Route/Path entries, newest first */
    unsigned long sent;
    char branches[FAKE_CAPTURES][FAKE_CAPTURE_LEN];
    char tokens[FAKE_CAPTURES][FAKE_CAPTURE_LEN];
};

extern struct fake fake;
/* The worker the calling thread runs (worker_self()). */
extern _Thread_local struct worker *fake_self;

/* The connection named ref, or NULL. */
struct fake_conn *fake_conn_find(conn_ref ref);
/* The open connection of owner to peer over proto, made when there is none
 * (CONN_REF_NONE when the table is full). */
conn_ref fake_conn_for(unsigned owner, uint8_t proto, const struct netaddr *peer);
/* Answers the oldest pending lookup (on its worker's thread): how picks an
 * error or 1-3 targets. */
void fake_dns_answer(uint8_t how);

#endif
