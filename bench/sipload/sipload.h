/* sipload: a SIP load generator (UAC, UAS and registered TLS phones in one
 * process) for sipedge's capacity benchmarks; see bench/README.md. */
#ifndef SIPLOAD_H
#define SIPLOAD_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "core/buf.h"
#include "core/framer.h"
#include "core/netaddr.h"
#include "core/sipmsg.h"
#include "core/timer.h"

#define SL_MAX_THREADS 64
#define SL_DGRAM_MAX   4096 /* largest datagram read or built, and the build scratch */
#define SL_BATCH       64   /* datagrams per sendmmsg / recvmmsg */
#define SL_MAX_HDRS    96
#define SL_T1_MS       500 /* RFC 3261 timers for the UDP retransmissions */
#define SL_T2_MS       4000
#define SL_ROUTE_MAX   512        /* a call's Route set, as one header line */
#define SL_TARGET_MAX  256        /* a call's remote target (the 200's Contact URI) */
#define SL_TO_MAX      256        /* the 200's To line, tag included */
#define SL_WBUF_MAX    (4u << 20) /* queued output per stream connection */

/* ---- histogram (hist.c): latencies in nanoseconds, ~1.6 % buckets ---- */

#define HIST_SUB_BITS 5                     /* 32 buckets per power of two */
#define HIST_LINEAR   (2u << HIST_SUB_BITS) /* values below are exact */
#define HIST_OCTAVES  42                    /* up to 2^48 ns (78 hours) */
#define HIST_N        (HIST_LINEAR + HIST_OCTAVES * (1u << HIST_SUB_BITS))

struct hist {
    uint64_t count[HIST_N];
    uint64_t n, sum, min, max;
};

void hist_init(struct hist *h);
/* Records one value (values beyond the range land in the last bucket). */
void hist_add(struct hist *h, uint64_t v);
/* Adds src's counts into dst. */
void hist_merge(struct hist *dst, const struct hist *src);
/* The value at quantile q (0 < q <= 1): the first bucket whose cumulative
 * count reaches ceil(q * n), as its midpoint clamped to [min, max] (the
 * exact max for the last rank); 0 when empty. Pure. */
uint64_t hist_quantile(const struct hist *h, double q);
/* Bucket of v and the lowest value of a bucket (for the self-test). */
unsigned hist__index(uint64_t v);
uint64_t hist__lower(unsigned idx);

/* ---- token bucket (hist.c): open-loop pacing ---- */

struct tbucket {
    double rate;  /* tokens per second, 0 = unlimited */
    double burst; /* cap on saved tokens: beyond it the offered load is lost */
    double tokens;
    uint64_t last_ns;
    double lost; /* tokens dropped at the cap: the generator fell behind */
};

void tb_init(struct tbucket *tb, double rate, uint64_t now_ns);
/* Whole tokens due now, at most max; they are spent. */
unsigned tb_take(struct tbucket *tb, uint64_t now_ns, unsigned max);
/* Nanoseconds until the next whole token (0 when one is due). */
uint64_t tb_wait_ns(const struct tbucket *tb);

/* ---- options ---- */

enum sl_mode { SL_MODE_CALL, SL_MODE_REGISTER, SL_MODE_HOLD };
enum sl_proto { SL_UDP = 0, SL_TCP, SL_TLS };

struct sl_opts {
    enum sl_mode mode;
    struct netaddr proxy;     /* --proxy: where the UAC sends its calls */
    uint8_t proto;            /* --transport, of the calls */
    struct netaddr reg_proxy; /* --reg-proxy: where phones connect (default --proxy) */
    uint8_t reg_proto;        /* --reg-transport (default tls) */
    char domain[96];          /* --domain: host of REGISTER R-URIs, AORs and call R-URIs */
    bool uas;                 /* --uas given: the UAS role listens */
    struct netaddr uas_addr;
    uint8_t uas_proto; /* --uas-transport */
    int cpus[SL_MAX_THREADS];
    unsigned ncpus;           /* 0: one thread, not pinned */
    double duration_s;        /* --duration */
    double rate;              /* --rate: calls/s, or registrations/s in register mode */
    uint32_t max_concurrent;  /* --max-concurrent: calls, or registrations in register mode */
    uint32_t timeout_ms;      /* --timeout: a call's setup, its BYE, a registration */
    uint32_t hold_ms;         /* --call-hold: ACK to BYE */
    uint32_t phones;          /* --phones */
    bool to_phones;           /* --callee phones */
    double reg_rate;          /* --reg-rate, setup registrations/s (0: closed loop) */
    uint32_t reg_concurrency; /* --reg-concurrency */
    uint32_t senders;         /* --senders: UAC UDP sockets or connections per thread */
    uint32_t src_addrs;       /* --src-addrs: source addresses 127.1.x.y (0: none) */
    bool nagle;               /* --nagle: client sockets without TCP_NODELAY */
    bool keep;                /* register mode: keep the connections */
    uint32_t keepalive_s;     /* --keepalive: CRLFCRLF period of registered phones */
    uint32_t expires_s;       /* --expires */
    bool sdp;                 /* a body in INVITE and 200 */
    uint32_t tick_us;         /* --tick: poll every tick instead of waking per event */
    const char *ca, *cert, *key, *tls_name;
    const char *json;
    bool quiet;
};

/* ---- per-thread state ---- */

enum sl_evtype { EV_UDP = 1, EV_CONN, EV_LISTEN };

struct sl_thread;

/* A UDP socket of the UAC (reads responses) or the UAS (answers). */
struct sl_udp {
    uint8_t type; /* EV_UDP: first, the epoll tag */
    bool dirty;
    int fd;
    struct netaddr local;
    unsigned nout;
    struct sl_udp *next_dirty;
    struct mmsghdr out[SL_BATCH];
    struct iovec iov[SL_BATCH];
    struct netaddr dst[SL_BATCH];
    char buf[SL_BATCH][SL_DGRAM_MAX];
};

enum sl_role { ROLE_UAC = 1, ROLE_UAS, ROLE_PHONE };
enum sl_cstate { CS_CONNECTING = 1, CS_HANDSHAKE, CS_OPEN, CS_CLOSED };

/* A TCP or TLS connection: the UAC's to the proxy, an accepted one at the
 * UAS, or a phone's. Buffers exist only while they hold bytes. */
struct sl_conn {
    uint8_t type; /* EV_CONN: first, the epoll tag */
    uint8_t role, state, proto;
    bool outbound, want_out, dirty, wr_wants_read;
    int fd;
    SSL *ssl;
    struct framer fr;
    char *rbuf, *wbuf;
    uint32_t rlen, rcap, wlen, wcap;
    struct sl_conn *next_dirty, *next_zombie;
    struct sl_conn *prev, *next; /* the thread's open connections */
    struct sl_phone *phone;      /* ROLE_PHONE */
    int sender;                  /* ROLE_UAC: index in the thread's senders */
    struct netaddr local;
};

struct sl_listener {
    uint8_t type; /* EV_LISTEN */
    uint8_t proto;
    int fd;
};

/* Where a message came from, and where its answer goes. */
struct sl_peer {
    struct sl_udp *u; /* UDP: the socket, answered to src */
    struct netaddr src;
    struct sl_conn *c; /* stream: the connection */
};

/* A message template with fields patched per message (msg.c). */
enum tfield { TF_ID = 0, TF_USER, TF__COUNT };
#define TMPL_MAX    2048
#define TMPL_FIELDS 8
#define TF_ID_W     16 /* lowercase hex */
#define TF_USER_W   8  /* decimal, zero-padded */

struct tmpl {
    char text[TMPL_MAX];
    uint16_t len;
    uint8_t nf;
    bool overflow;
    struct {
        uint16_t off;
        uint8_t kind, width;
    } f[TMPL_FIELDS];
};

/* One way the UAC sends: a UDP socket or a stream connection to the proxy. */
struct sl_sender {
    uint8_t proto;
    bool up; /* a stream connection is open */
    struct sl_udp *u;
    struct sl_conn *c;
    char via[96]; /* "SIP/2.0/UDP 127.1.0.3:40001" */
    char contact[128];
    struct tmpl invite;
};

enum call_state { CALL_FREE = 0, CALL_INVITING, CALL_PROCEEDING, CALL_ESTABLISHED, CALL_BYE };

struct sl_call {
    struct timer t; /* retransmission, hold, deadline: one at a time */
    uint32_t gen;
    uint8_t state;
    uint16_t sender;
    uint32_t callee;
    uint32_t rtx_ms;
    uint64_t t_invite_ns, deadline_ms;
    uint16_t route_len, target_len, to_len;
    char route[SL_ROUTE_MAX];
    char target[SL_TARGET_MAX];
    char to[SL_TO_MAX];
};

enum phone_state { PH_IDLE = 0, PH_CONNECTING, PH_REGISTERING, PH_REGISTERED, PH_DONE };

struct sl_phone {
    struct timer t; /* registration deadline, then keep-alive */
    uint32_t idx;   /* global: its AOR is p<idx, 8 digits>@domain */
    uint8_t state;
    bool failed;
    struct sl_conn *c;
    uint64_t t_start_ns, t_reg_ns;
    char contact[64]; /* as registered */
};

/* What a thread counts; summed by main at the end. */
struct sl_stats {
    uint64_t calls_started, calls_ok, calls_failed, not_started;
    uint64_t fail_timeout, fail_status, fail_conn;
    uint64_t rtx_sent, rtx_rcvd;
    uint64_t msgs_tx, msgs_rx, bad_msgs, stray, build_errors, udp_send_errors;
    uint64_t uas_requests, uas_rtx, uas_unacked; /* UDP 200s resent, never ACKed */
    uint64_t reg_started, reg_ok, reg_failed, reg_conn_failed, reg_tls_failed, reg_timeout;
    uint64_t phones_lost, keepalives, pongs;
    uint64_t codes[700]; /* final responses >= 300 to the UAC and the phones */
    struct hist h_setup; /* INVITE sent -> 200 received */
    struct hist h_reg;   /* connect -> 200 to REGISTER */
    struct hist h_first; /* REGISTER sent -> 200: the first request on a new connection */
};

enum sl_phase { PHASE_SETUP = 0, PHASE_RUN, PHASE_STOP };

/* The UDP UAS's 200s to INVITEs awaiting their ACK (RFC 3261 §13.3.1.4: the
 * UAS core resends a 2xx until the ACK comes; no proxy does it for it). The
 * ACK may reach any thread's socket, so the table is shared, under a lock;
 * each entry's timer belongs to the thread that sent the 200. uas.c. */
struct uas_2xx;
struct uas_table {
    pthread_mutex_t lock;
    struct uas_2xx **b; /* chains by keyed hash of the Call-ID */
    uint32_t mask;
};

struct sl_run;

struct sl_thread {
    int id, cpu;
    pthread_t tid;
    struct sl_run *run;
    const struct sl_opts *o;
    int ep;
    uint64_t now_ns, now_ms;
    struct timer_wheel wheel;
    char scratch[SL_DGRAM_MAX];

    /* UAC */
    struct sl_sender *senders;
    unsigned nsenders, rr;
    struct sl_call *calls; /* touched up to calls_hw only: memory grows with concurrency */
    uint32_t ncalls, calls_hw, *freelist, nfree;
    uint32_t next_callee;
    struct tbucket tb;
    bool generating;

    /* UAS */
    struct sl_udp *uas_udp;
    struct sl_listener uas_lis;
    struct uas_2xx *uas_owned; /* the 200s this thread resends, until released */

    /* phones: global index = id + k * nthreads */
    struct sl_phone *phones;
    uint32_t nphones, phone_next, reg_live, reg_done;
    uint32_t reg_conc; /* this thread's share of --reg-concurrency */
    bool reg_active;
    struct tbucket reg_tb;

    uint32_t src_next; /* source addresses handed out */
    struct sl_udp *dirty_udp;
    struct sl_conn *dirty_conn, *zombies, *conns;
    struct sipmsg_limits lim;

    /* phase bookkeeping */
    bool ready, drained, window_closed;
    uint64_t t_window_end_ns;
    struct rusage ru0, ru1;
    uint64_t ru_t0_ns, ru_t1_ns;

    struct sl_stats st;
};

struct sl_run {
    struct sl_opts o;
    SSL_CTX *cli_ctx, *srv_ctx;
    unsigned nthreads;
    struct sl_thread *th;
    atomic_int phase;
    _Atomic uint64_t t0_ns;
    atomic_uint nready, ndrained;
    atomic_bool failed_setup;
    struct uas_table uas;
    pthread_mutex_t lock; /* with cond: main sleeps until a count moves */
    pthread_cond_t cond;
};

/* Adds one to *n and wakes main. Any thread, once per thread and count. */
void sl_count_up(struct sl_run *run, atomic_uint *n);

/* ---- msg.c: building messages (pure) ---- */

void tmpl_init(struct tmpl *t);
void tmpl_lit(struct tmpl *t, const char *s);
/* Appends a field of `width` placeholder characters patched at render. */
void tmpl_field(struct tmpl *t, enum tfield kind, unsigned width);
/* Renders t into out (cap bytes) with vals[kind] in each field: TF_ID as
 * TF_ID_W lowercase hex digits, TF_USER as TF_USER_W decimal digits.
 * Returns the length, or 0 when it does not fit. Pure. */
size_t tmpl_render(const struct tmpl *t, char *out, size_t cap, const uint64_t vals[TF__COUNT]);
/* The call id of slot idx, generation gen, and back: the 16 hex digits
 * that start every Call-ID, branch and From tag the UAC writes. */
static inline uint64_t sl_call_id(uint32_t idx, uint32_t gen)
{
    return (uint64_t)gen << 32 | idx;
}
/* Parses 16 lowercase hex digits at the start of s. Pure. */
bool sl_parse_id(struct slice s, uint64_t *id);
/* The INVITE template of a sender (R-URI and To: user@domain, user a
 * TF_USER field when callee_field, else "uas"). */
void msg_invite_tmpl(struct tmpl *t, const struct sl_opts *o, const struct sl_sender *s, int thread,
                     bool callee_field);
/* A phone's REGISTER (expires_s 0 = unregister). */
void msg_register(struct buf *b, const struct sl_opts *o, uint32_t idx, uint8_t proto,
                  const struct netaddr *local, uint32_t seq);
/* The UAC's ACK (for a 2xx, or hop-by-hop for a non-2xx final) or BYE. */
void msg_ack_bye(struct buf *b, const struct sl_opts *o, const struct sl_sender *s, int thread,
                 const struct sl_call *c, uint64_t id, bool bye);
void msg_ack_non2xx(struct buf *b, const struct sl_opts *o, const struct sl_sender *s, int thread,
                    uint64_t id, uint32_t callee, const struct sip_msg *resp);
/* A stateless response to m (the UAS, a phone). contact may be NULL. */
void msg_response(struct buf *b, const struct sip_msg *m, int code, const char *reason,
                  const char *contact, const char *tag, bool sdp, bool expires);
/* "SIP/2.0/UDP host:port" and "<sip:user@host:port;transport=x>". */
void msg_via(char *out, size_t cap, uint8_t proto, const struct netaddr *local);
void msg_contact(char *out, size_t cap, const char *user, uint8_t proto,
                 const struct netaddr *local);
const char *sl_proto_name(uint8_t proto); /* "udp", "tcp", "tls" */
/* A phone's user part, "p" and TF_USER_W digits, NUL-terminated. */
void msg_phone_user(char out[16], uint32_t idx);

/* ---- net.c: sockets, connections, TLS ---- */

int net_epoll_add(struct sl_thread *th, int fd, void *obj, uint32_t events);
/* The next client source address (127.1.x.y, spread per --src-addrs) for
 * target dst, or false to let the kernel choose. */
bool net_src_addr(struct sl_thread *th, const struct netaddr *dst, struct netaddr *src);
struct sl_udp *net_udp_open(struct sl_thread *th, const struct netaddr *bind_to, bool reuseport);
void net_udp_flush(struct sl_thread *th, struct sl_udp *u);
/* Reads what the socket has and hands each message to sl_dispatch. */
void net_udp_read(struct sl_thread *th, struct sl_udp *u);
/* Opens a non-blocking connection of role to dst; NULL on failure. */
struct sl_conn *net_connect(struct sl_thread *th, const struct netaddr *dst, uint8_t proto,
                            uint8_t role);
int net_listen(struct sl_thread *th, struct sl_listener *l, const struct netaddr *a, uint8_t proto);
void net_accept(struct sl_thread *th, struct sl_listener *l);
void net_conn_event(struct sl_thread *th, struct sl_conn *c, uint32_t events);
/* Queues bytes on c (sent at the next flush). */
void net_conn_write(struct sl_thread *th, struct sl_conn *c, const char *p, size_t n);
enum sl_close { CLOSE_DONE = 0, CLOSE_ERROR, CLOSE_TLS };
/* Closes c (close_notify first when CLOSE_DONE), tells its role, and frees
 * it after the loop turn (net_reap). */
void net_conn_close(struct sl_thread *th, struct sl_conn *c, enum sl_close why);
void net_flush_all(struct sl_thread *th);
void net_reap(struct sl_thread *th);
/* Closes and frees every socket and buffer of the thread (at its end). */
void net_cleanup(struct sl_thread *th);
SSL_CTX *net_tls_client_ctx(const struct sl_opts *o);
SSL_CTX *net_tls_server_ctx(const struct sl_opts *o);

/* A buffer for one outgoing message to p; then out_commit(). */
struct buf out_open(struct sl_thread *th, const struct sl_peer *p);
void out_commit(struct sl_thread *th, const struct sl_peer *p, const struct buf *b);

/* ---- dispatch (loop.c) ---- */

/* One received message (raw[0..len), parsed into m) from p. */
void sl_dispatch(struct sl_thread *th, const struct sl_peer *p, const char *raw, size_t len,
                 bool dgram);
static inline struct sl_thread *sl_thread_of(struct worker *w)
{
    return (struct sl_thread *)(void *)w; /* the wheel's opaque owner */
}
uint64_t sl_now_ns(void);

/* ---- uac.c ---- */

int uac_setup(struct sl_thread *th);
/* Starts the calls due by until_ns (the token bucket's clock). */
void uac_pump(struct sl_thread *th, uint64_t until_ns);
void uac_on_response(struct sl_thread *th, const struct sip_msg *m);
void uac_sender_down(struct sl_thread *th, int sender);
void uac_sender_up(struct sl_thread *th, int sender, struct sl_conn *c);
uint32_t uac_live(const struct sl_thread *th);
/* Keeps the 200's To line, Contact URI and reversed Record-Route in c;
 * false when one is missing or too long. Pure (for the self-test). */
bool uac__save_dialog(struct sl_call *c, const struct sip_msg *m);

/* ---- uas.c ---- */

int uas_table_init(struct uas_table *t);
/* After the threads ended: the table's memory (its entries were released
 * by their owners' uas_cleanup). */
void uas_table_free(struct uas_table *t);
int uas_setup(struct sl_thread *th);
/* Releases the 200s the thread still resends (at its end). */
void uas_cleanup(struct sl_thread *th);
/* Answers a request statelessly; contact/tag are the phone's or the UAS's. */
void uas_on_request(struct sl_thread *th, const struct sl_peer *p, const struct sip_msg *m,
                    const char *contact, const char *tag);

/* ---- phone.c ---- */

int phone_setup(struct sl_thread *th);
/* Starts registering this thread's phones (--reg-rate, --reg-concurrency). */
void phone_begin(struct sl_thread *th);
/* Starts registrations within the rate and concurrency limits. */
void phone_pump(struct sl_thread *th);
/* Every phone of the thread registered or failed. */
static inline bool phone_all_done(const struct sl_thread *th)
{
    return th->reg_done == th->nphones;
}
void phone_on_open(struct sl_thread *th, struct sl_phone *ph);
void phone_on_message(struct sl_thread *th, struct sl_phone *ph, const struct sl_peer *p,
                      const struct sip_msg *m);
void phone_on_pong(struct sl_thread *th, struct sl_phone *ph);
void phone_on_closed(struct sl_thread *th, struct sl_phone *ph, enum sl_close why);

/* ---- loop.c, main.c, selftest.c ---- */

void *sl_thread_main(void *arg);
int sl_selftest(void);

#endif
