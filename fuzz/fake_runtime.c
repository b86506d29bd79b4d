/* A fake worker runtime and resolver for fuzz/fuzz_proxy.c: the API of core/worker.h and
 * dns/dns.h without sockets or threads. Sends are recorded (and checked), posts queue for the
 * harness, connections are a small table, DNS lookups wait until the harness answers them. */
#include "fuzz/fake_runtime.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sipmsg.h"
#include "core/sipuri.h"
#include "dns/dns.h"
#include "fuzz/fuzz.h"

struct fake fake;
_Thread_local struct worker *fake_self;

/* ---- connections ---------------------------------------------------------------- */

struct fake_conn *fake_conn_find(conn_ref ref)
{
    for (unsigned i = 0; i < fake.nconns; i++)
        if (fake.conns[i].ref == ref) return &fake.conns[i];
    return NULL;
}

conn_ref fake_conn_for(unsigned owner, uint8_t proto, const struct netaddr *peer)
{
    for (unsigned i = 0; i < fake.nconns; i++) {
        struct fake_conn *c = &fake.conns[i];
        if (c->open && c->owner == owner && c->proto == proto && netaddr_eq(&c->peer, peer))
            return c->ref;
    }
    if (fake.nconns == FAKE_MAX_CONNS) return CONN_REF_NONE;
    struct fake_conn *c = &fake.conns[fake.nconns];
    c->ref = CONN_REF_MAKE(owner, fake.nconns, ++fake.conn_gen);
    c->owner = owner;
    c->proto = proto;
    c->peer = *peer;
    c->open = true;
    fake.nconns++;
    return c->ref;
}

/* ---- what the proxy sends ----------------------------------------------------- */

/* Keeps the n-th most recent captures: ring[0] is the newest. */
static void capture(char ring[FAKE_CAPTURES][FAKE_CAPTURE_LEN], struct slice s)
{
    if (s.len == 0 || s.len >= FAKE_CAPTURE_LEN) return;
    memmove(ring[1], ring[0], (FAKE_CAPTURES - 1) * FAKE_CAPTURE_LEN);
    memcpy(ring[0], s.ptr, s.len);
    ring[0][s.len] = 0;
}

/* The user part of every sip: URI in our Record-Route and Path entries. */
static void capture_tokens(const struct sip_msg *m, enum sip_hdr_kind kind)
{
    for (const struct sip_hdr *h = sipmsg_hdr(m, kind); h; h = sipmsg_hdr_next(m, h)) {
        struct sip_addr a;
        if (sipuri_parse_addr(h->value, &a) == 0 && a.uri.user.len)
            capture(fake.tokens, a.uri.user);
    }
}

/* Every message sipedge writes must be one well-formed message, free of
 * control bytes, framed on a stream by a Content-Length equal to its body
 * (issue 10: nothing can be smuggled past it). The one exception: the 400
 * to a request whose CSeq the parser refused copies that CSeq (RFC 4475
 * scalar02), so it parses only up to there. Requests leave their branch
 * and flow tokens for the harness to splice into later input. */
static void inspect(uint8_t proto, const char *buf, size_t len)
{
    static const struct sipmsg_limits lim = {1 << 20, 256};
    struct sip_hdr hdrs[256];
    struct sip_msg m;
    CHECK(len > 0);
    int r = sipmsg_parse(buf, len, &m, hdrs, &lim, SIPMSG_DATAGRAM);
    if (r < 0 && !m.is_request && m.err == SIP_ERR_CSEQ) {
        CHECK(m.headers_len == len); /* the header block is all of it */
        for (const struct sip_hdr *h = m.hdrs; h < m.hdrs + m.nhdrs; h++)
            CHECK(sipmsg_value_clean(h->value));
        fake.sent++;
        return;
    }
    if (r != (int)len) fprintf(stderr, "sent (%s):\n%.*s\n", sipmsg_err_str(m.err), (int)len, buf);
    CHECK(r == (int)len);
    CHECK(sipmsg_check_controls(&m) == SIP_ERR_NONE);
    if (proto != SIP_TRANSPORT_UDP) {
        CHECK(m.content_length >= 0 && (size_t)m.content_length == m.body.len);
        CHECK(sipmsg_parse(buf, len, &m, hdrs, &lim, 0) == (int)len);
    }
    fake.sent++;
    if (!m.is_request) return;
    const struct sip_hdr *v = sipmsg_hdr(&m, SIP_HDR_VIA);
    struct sip_via via;
    CHECK(v != NULL);
    if (sipuri_parse_via(v->value, &via) == 0) capture(fake.branches, via.branch);
    capture_tokens(&m, SIP_HDR_RECORD_ROUTE);
    capture_tokens(&m, SIP_HDR_PATH);
}

int worker_send(struct worker *w, uint8_t proto, int listener, const struct netaddr *dst,
                conn_ref conn, const char *tls_name, const char *buf, size_t len, conn_ref *used)
{
    if (used) *used = CONN_REF_NONE;
    CHECK(w == &fake.w[w->id] && w == fake_self);
    if (conn != CONN_REF_NONE) {
        struct fake_conn *c = fake_conn_find(conn);
        if (!c || !c->open) return -ENOTCONN;
        inspect(c->proto, buf, len);
        if (used) *used = conn;
        return fake.send_fails ? -EPIPE : 0;
    }
    if (!dst || netaddr_is_forbidden(dst)) return -EINVAL;
    inspect(proto, buf, len);
    if (fake.send_fails) return -EHOSTUNREACH;
    if (proto == SIP_TRANSPORT_UDP) return 0;
    conn_ref r = fake_conn_for(w->id, proto, dst);
    if (r == CONN_REF_NONE) return -EMFILE;
    if (used) *used = r;
    return 0;
}

/* ---- the rest of core/worker.h ------------------------------------------------- */

int worker_conn_hold(struct worker *w, conn_ref c, uint64_t until_ms)
{
    struct fake_conn *fc = fake_conn_find(c);
    return fc && fc->open && fc->owner == w->id ? 0 : -ENOTCONN;
}

int worker_conn_peer_ids(struct worker *w, conn_ref c, struct tls_peer_ids *ids)
{
    struct fake_conn *fc = fake_conn_find(c);
    (void)ids;
    /* the fake connections present no certificate */
    return fc && fc->open && fc->owner == w->id ? 0 : -ENOTCONN;
}

struct worker_msg *worker_msg_new(size_t len)
{
    if (len > UINT32_MAX) return NULL;
    return calloc(1, sizeof(struct worker_msg) + len);
}

void worker_msg_free(struct worker_msg *m)
{
    free(m);
}

int worker_post(struct worker *w, unsigned to, struct worker_msg *m)
{
    if (to >= FAKE_WORKERS || to == w->id) return -EINVAL;
    if (fake.nposts == FAKE_MAX_POSTS) return -EAGAIN; /* the ring is full */
    m->from = (uint8_t)w->id;
    fake.posts[fake.nposts].to = to;
    fake.posts[fake.nposts].m = m;
    fake.nposts++;
    return 0;
}

const char *worker_listener_host(const struct worker *w, unsigned listener)
{
    return listener < w->cfg->nlisten ? w->cfg->listen[listener].host : NULL;
}

int worker_listener_port(const struct worker *w, unsigned listener)
{
    return listener < w->cfg->nlisten ? netaddr_port(&w->cfg->listen[listener].addr) : -EINVAL;
}

/* --worker-ports 0 style: each worker its own port above the listener's */
int worker_via_port(const struct worker *w, unsigned listener)
{
    int p = worker_listener_port(w, listener);
    if (p < 0 || !fake.private_ports || w->cfg->listen[listener].proto != SIP_TRANSPORT_UDP)
        return p;
    return p + 1 + (int)w->id;
}

bool worker_is_private_port(const struct worker *w, unsigned listener, int port)
{
    int p = worker_listener_port(w, listener);
    return fake.private_ports && p > 0 && w->cfg->listen[listener].proto == SIP_TRANSPORT_UDP &&
           port > p && port <= p + FAKE_WORKERS;
}

bool worker_draining(const struct worker *w)
{
    return fake.draining;
}

/* the fake worker reads no socket: nothing waits unread on a connection */
bool worker_conn_unread(struct worker *w, conn_ref c)
{
    (void)w;
    (void)c;
    return false;
}

/* the fake worker reads no socket: its receive queue never overflows */
uint64_t worker_rx_overflow_ms(struct worker *w)
{
    (void)w;
    return 0;
}

struct worker *worker_self(void)
{
    return fake_self;
}

int worker_watch_fd(struct worker *w, int fd, uint32_t events, worker_fd_cb cb, void *arg)
{
    return -ENOSYS; /* the fake resolver has no sockets */
}

/* ---- dns/dns.h: lookups the harness answers ----------------------------------- */

int dns_worker_init(struct worker *w)
{
    w->dns = (struct dns_worker *)&fake.dns_tag; /* only ever compared with NULL */
    return 0;
}

void dns_worker_cleanup(struct worker *w)
{
    if (!w->dns) return;
    /* every lookup of w ends with -ECANCELED, in order */
    for (unsigned i = 0; i < fake.nlookups;) {
        struct fake_lookup lk = fake.lookups[i];
        if (lk.w != w) {
            i++;
            continue;
        }
        memmove(&fake.lookups[i], &fake.lookups[i + 1], (fake.nlookups - i - 1) * sizeof lk);
        fake.nlookups--;
        lk.cb(w, lk.arg, -ECANCELED, NULL, 0);
    }
    w->dns = NULL;
}

bool dns_busy(const struct worker *w)
{
    for (unsigned i = 0; i < fake.nlookups; i++)
        if (fake.lookups[i].w == w) return true;
    return false;
}

int dns_resolve(struct worker *w, const struct netaddr *src, struct slice host, int port,
                uint8_t transport, bool sips, dns_cb cb, void *arg, struct dns_target *out,
                unsigned *nout)
{
    if (!w->dns) return -ESHUTDOWN;
    if (sips && transport == SIP_TRANSPORT_UDP) return -EPROTONOSUPPORT;
    uint8_t proto = sips                              ? SIP_TRANSPORT_TLS
                    : transport == SIP_TRANSPORT_NONE ? SIP_TRANSPORT_UDP
                                                      : transport;
    if (proto != SIP_TRANSPORT_UDP && proto != SIP_TRANSPORT_TCP && proto != SIP_TRANSPORT_TLS)
        return -EPROTONOSUPPORT;
    if (host.len > 2 && host.ptr[0] == '[') host = slice_make(host.ptr + 1, host.len - 2);
    int p = port ? port : proto == SIP_TRANSPORT_TLS ? 5061 : 5060;
    if (netaddr_from_ip(&out[0].addr, host, p) == 0) {
        out[0].proto = proto;
        out[0].priority = out[0].weight = 0;
        *nout = 1;
        return 1;
    }
    if (fake.nlookups == FAKE_MAX_LOOKUPS) return -EAGAIN;
    fake.lookups[fake.nlookups++] = (struct fake_lookup){w, cb, arg, proto, p};
    return 0;
}

void fake_dns_answer(uint8_t how)
{
    if (fake.nlookups == 0) return;
    struct fake_lookup lk = fake.lookups[0];
    memmove(&fake.lookups[0], &fake.lookups[1], (fake.nlookups - 1) * sizeof lk);
    fake.nlookups--;
    CHECK(lk.w == fake_self);
    if (how % 4 == 0) {
        static const int errs[] = {-ENOENT, -ETIMEDOUT, -EIO, -ECONNREFUSED};
        lk.cb(lk.w, lk.arg, errs[(how / 4) % 4], NULL, 0);
        return;
    }
    /* one to three targets in TEST-NET-2, of the asked transport */
    struct dns_target t[3];
    unsigned n = how % 4;
    for (unsigned i = 0; i < n; i++) {
        char ip[32];
        int len = snprintf(ip, sizeof ip, "198.51.100.%u", 20 + i + (how >> 4));
        netaddr_from_ip(&t[i].addr, slice_make(ip, (size_t)len), lk.port);
        t[i].proto = lk.proto;
        t[i].priority = (uint16_t)i;
        t[i].weight = 0;
    }
    lk.cb(lk.w, lk.arg, 0, t, n);
}
