/* sipload's command line and the run: threads started, the setup, the
 * measured window and the drain driven through the shared phase. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/sipload/report.h"
#include "bench/sipload/sipload.h"
#include "core/hash.h"

static const char USAGE[] =
    "Usage: sipload call|register|hold --proxy HOST:PORT [OPTION]...\n"
    "       sipload --selftest\n"
    "SIP load generator: UAC, UAS and registered TLS phones in one process.\n"
    "\n"
    "  call      calls INVITE/1xx/200/ACK/BYE/200 at --rate for --duration, to the\n"
    "            UAS behind the proxy (--uas) or to --phones registered phones\n"
    "  register  a registration storm: --phones new connections (connect, TLS\n"
    "            handshake, REGISTER, 200) at --rate, at most --max-concurrent at once\n"
    "            (--max-concurrent 1 --rate 0 and one CPU: one phone after another)\n"
    "  hold      registers --phones and holds them idle for --duration (keep-alives)\n"
    "\n"
    "  --proxy HOST:PORT        the proxy under test (calls go there)\n"
    "  -t, --transport P        of the calls: udp, tcp or tls (default udp)\n"
    "  --uas HOST:PORT          the UAS role listens here (point the proxy's upstream at it)\n"
    "  --uas-transport P        udp, tcp or tls (default udp)\n"
    "  --reg-proxy HOST:PORT    where phones connect (default --proxy)\n"
    "  --reg-transport P        of the phones: tcp or tls (default tls)\n"
    "  --domain HOST[:PORT]     Request-URI host of calls and REGISTERs, AOR domain\n"
    "                           (default: --proxy)\n"
    "  --callee uas|phones      whom the calls go to (default uas: sip:uas@DOMAIN; phones:\n"
    "                           sip:pNNNNNNNN@DOMAIN, registered first)\n"
    "  --cpus LIST              one pinned thread per CPU, e.g. 1 or 0,1 or 2-3\n"
    "                           (default: one thread, not pinned)\n"
    "  -d, --duration SEC       the measured window (default 10)\n"
    "  -r, --rate N             calls/s, or registrations/s in register mode; open loop,\n"
    "                           0 = as fast as --max-concurrent allows (default 100)\n"
    "  --max-concurrent N       calls (or registrations) in progress at most; a call due\n"
    "                           beyond it is counted as not started (default 100000, 1000)\n"
    "  --timeout MS             a call's setup, its BYE, a registration (default 5000)\n"
    "  --call-hold MS           from ACK to BYE (default 0)\n"
    "  --phones N               phones to register (register mode: default rate x duration)\n"
    "  --reg-rate N             setup registrations/s, 0 = no pacing (default 0)\n"
    "  --reg-concurrency N      setup registrations in progress at most (default 200)\n"
    "  --senders N              UAC UDP sockets or connections per thread (default 4)\n"
    "  --src-addrs N            client source addresses 127.1.x.y, towards a loopback proxy\n"
    "                           (default 1024; 0 = the kernel's choice)\n"
    "  --nagle                  client sockets without TCP_NODELAY (as many phones)\n"
    "  --keep                   register mode: keep the connections after the 200\n"
    "  --keepalive SEC          CRLFCRLF period of registered phones, 0 = none (default 30)\n"
    "  --expires SEC            REGISTER Expires (default 3600)\n"
    "  --no-sdp                 no body in INVITE and 200\n"
    "  --tick US                while measuring, wake every US microseconds and take\n"
    "                           what arrived, rather than per event: far less CPU per\n"
    "                           call at high rates, latencies only to within US\n"
    "                           (default 0: per event)\n"
    "  --ca FILE                verify the proxy's certificate (default: no verification)\n"
    "  --tls-name NAME          the name to verify (default: the proxy's IP address)\n"
    "  --cert FILE, --key FILE  the TLS UAS's certificate (and the phones' client one)\n"
    "  --json FILE              also write the JSON result line there\n"
    "  -q, --quiet              print only the JSON result line\n"
    "\n"
    "Output: a human summary, then one JSON line (the last line). Exit 0 when no call\n"
    "or registration failed (JSON \"ok\"), 1 otherwise, 2 on a usage or setup error;\n"
    "\"generator_behind\": the generator lost offered load or saturated a CPU.\n";

enum {
    O_PROXY = 256,
    O_UAS,
    O_UAS_T,
    O_REG_PROXY,
    O_REG_T,
    O_DOMAIN,
    O_CALLEE,
    O_CPUS,
    O_MAXC,
    O_TIMEOUT,
    O_HOLD,
    O_PHONES,
    O_REG_RATE,
    O_REG_CONC,
    O_SENDERS,
    O_SRC,
    O_NAGLE,
    O_KEEP,
    O_KA,
    O_EXPIRES,
    O_NOSDP,
    O_TICK,
    O_CA,
    O_TLSNAME,
    O_CERT,
    O_KEY,
    O_JSON,
    O_SELFTEST
};

static const struct option LONGOPTS[] = {
    {"proxy", 1, 0, O_PROXY},
    {"transport", 1, 0, 't'},
    {"uas", 1, 0, O_UAS},
    {"uas-transport", 1, 0, O_UAS_T},
    {"reg-proxy", 1, 0, O_REG_PROXY},
    {"reg-transport", 1, 0, O_REG_T},
    {"domain", 1, 0, O_DOMAIN},
    {"callee", 1, 0, O_CALLEE},
    {"cpus", 1, 0, O_CPUS},
    {"duration", 1, 0, 'd'},
    {"rate", 1, 0, 'r'},
    {"max-concurrent", 1, 0, O_MAXC},
    {"timeout", 1, 0, O_TIMEOUT},
    {"call-hold", 1, 0, O_HOLD},
    {"phones", 1, 0, O_PHONES},
    {"reg-rate", 1, 0, O_REG_RATE},
    {"reg-concurrency", 1, 0, O_REG_CONC},
    {"senders", 1, 0, O_SENDERS},
    {"src-addrs", 1, 0, O_SRC},
    {"nagle", 0, 0, O_NAGLE},
    {"keep", 0, 0, O_KEEP},
    {"keepalive", 1, 0, O_KA},
    {"expires", 1, 0, O_EXPIRES},
    {"no-sdp", 0, 0, O_NOSDP},
    {"ca", 1, 0, O_CA},
    {"tls-name", 1, 0, O_TLSNAME},
    {"cert", 1, 0, O_CERT},
    {"key", 1, 0, O_KEY},
    {"json", 1, 0, O_JSON},
    {"quiet", 0, 0, 'q'},
    {"tick", 1, 0, O_TICK},
    {"selftest", 0, 0, O_SELFTEST},
    {"help", 0, 0, 'h'},
    {0, 0, 0, 0},
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage_error(const char *flag, const char *why)
{
    fprintf(stderr, "sipload: %s: %s\n", flag, why);
    exit(2);
}

static double num(const char *flag, const char *v, double lo, double hi)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || d < lo || d > hi) usage_error(flag, "out of range");
    return d;
}

static uint8_t proto_arg(const char *flag, const char *v, bool udp_ok)
{
    if (udp_ok && strcmp(v, "udp") == 0) return SL_UDP;
    if (strcmp(v, "tcp") == 0) return SL_TCP;
    if (strcmp(v, "tls") == 0) return SL_TLS;
    usage_error(flag, udp_ok ? "udp, tcp or tls" : "tcp or tls");
    return 0;
}

static void addr_arg(const char *flag, const char *v, struct netaddr *a)
{
    if (netaddr_parse(a, slice_make(v, strlen(v))) < 0) usage_error(flag, "not an IP:PORT");
}

static void cpus_arg(struct sl_opts *o, const char *v)
{
    char *s = strdup(v), *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(tok, '-');
        int a = atoi(tok), b = dash ? atoi(dash + 1) : a;
        if (a < 0 || b < a || b >= 1024) usage_error("--cpus", "bad CPU list");
        for (int c = a; c <= b; c++) {
            if (o->ncpus == SL_MAX_THREADS) usage_error("--cpus", "too many CPUs");
            o->cpus[o->ncpus++] = c;
        }
    }
    free(s);
}

static void defaults(struct sl_opts *o)
{
    memset(o, 0, sizeof *o);
    o->reg_proto = SL_TLS;
    o->duration_s = 10;
    o->rate = 100;
    o->timeout_ms = 5000;
    o->reg_concurrency = 200;
    o->senders = 4;
    o->src_addrs = 1024;
    o->keepalive_s = 30;
    o->expires_s = 3600;
    o->sdp = true;
}

/* The options naming where traffic goes; false when c is not one of them. */
static bool parse_target_opt(struct sl_opts *o, int c, const char *arg, bool *have)
{
    switch (c) {
    case O_PROXY:
        addr_arg("--proxy", arg, &o->proxy);
        have[0] = true;
        break;
    case 't':
        o->proto = proto_arg("--transport", arg, true);
        break;
    case O_UAS:
        addr_arg("--uas", arg, &o->uas_addr);
        o->uas = true;
        break;
    case O_UAS_T:
        o->uas_proto = proto_arg("--uas-transport", arg, true);
        break;
    case O_REG_PROXY:
        addr_arg("--reg-proxy", arg, &o->reg_proxy);
        have[1] = true;
        break;
    case O_REG_T:
        o->reg_proto = proto_arg("--reg-transport", arg, false);
        break;
    case O_DOMAIN:
        if (strlen(arg) >= sizeof o->domain) usage_error("--domain", "too long");
        strcpy(o->domain, arg);
        break;
    case O_CALLEE:
        if (strcmp(arg, "phones") && strcmp(arg, "uas")) usage_error("--callee", "uas or phones");
        o->to_phones = strcmp(arg, "phones") == 0;
        break;
    case O_CPUS:
        cpus_arg(o, arg);
        break;
    default:
        return false;
    }
    return true;
}

static bool parse_opt(struct sl_opts *o, int c, const char *arg, bool *have, bool *selftest)
{
    switch (c) {
    case 'd':
        o->duration_s = num("--duration", arg, 0.1, 86400);
        break;
    case 'r':
        o->rate = num("--rate", arg, 0, 1e7);
        break;
    case O_MAXC:
        o->max_concurrent = (uint32_t)num("--max-concurrent", arg, 1, 1e7);
        break;
    case O_TIMEOUT:
        o->timeout_ms = (uint32_t)num("--timeout", arg, 10, 600000);
        break;
    case O_HOLD:
        o->hold_ms = (uint32_t)num("--call-hold", arg, 0, 3600000);
        break;
    case O_PHONES:
        o->phones = (uint32_t)num("--phones", arg, 1, 1e7);
        have[2] = true;
        break;
    case O_REG_RATE:
        o->reg_rate = num("--reg-rate", arg, 0, 1e7);
        break;
    case O_REG_CONC:
        o->reg_concurrency = (uint32_t)num("--reg-concurrency", arg, 1, 1e7);
        break;
    case O_SENDERS:
        o->senders = (uint32_t)num("--senders", arg, 1, 4096);
        break;
    case O_SRC:
        o->src_addrs = (uint32_t)num("--src-addrs", arg, 0, 254 * 256 * 254);
        break;
    case O_NAGLE:
        o->nagle = true;
        break;
    case O_KEEP:
        o->keep = true;
        break;
    case O_KA:
        o->keepalive_s = (uint32_t)num("--keepalive", arg, 0, 86400);
        break;
    case O_EXPIRES:
        o->expires_s = (uint32_t)num("--expires", arg, 0, 604800);
        break;
    case O_NOSDP:
        o->sdp = false;
        break;
    case O_TICK:
        o->tick_us = (uint32_t)num("--tick", arg, 0, 100000);
        break;
    case O_CA:
        o->ca = arg;
        break;
    case O_TLSNAME:
        o->tls_name = arg;
        break;
    case O_CERT:
        o->cert = arg;
        break;
    case O_KEY:
        o->key = arg;
        break;
    case O_JSON:
        o->json = arg;
        break;
    case 'q':
        o->quiet = true;
        break;
    case O_SELFTEST:
        *selftest = true;
        break;
    case 'h':
        fputs(USAGE, stdout);
        exit(0);
    default:
        return parse_target_opt(o, c, arg, have);
    }
    return true;
}

/* The mode's own meaning of the shared knobs, and the checks. */
static void finish_opts(struct sl_opts *o, const char *mode, const bool *have)
{
    if (strcmp(mode, "call") == 0)
        o->mode = SL_MODE_CALL;
    else if (strcmp(mode, "register") == 0)
        o->mode = SL_MODE_REGISTER;
    else if (strcmp(mode, "hold") == 0)
        o->mode = SL_MODE_HOLD;
    else
        usage_error(mode, "mode is call, register or hold");
    if (!have[0]) usage_error("--proxy", "required");
    if (!have[1]) o->reg_proxy = o->proxy;
    if (!o->domain[0]) netaddr_str(&o->proxy, o->domain, sizeof o->domain);
    if (o->mode == SL_MODE_REGISTER) {
        /* the storm is what is measured: --rate and --max-concurrent drive it */
        o->reg_rate = o->rate;
        o->reg_concurrency = o->max_concurrent ? o->max_concurrent : 1000;
        if (!have[2]) {
            if (o->rate <= 0) usage_error("--phones", "required with --rate 0");
            o->phones = (uint32_t)(o->rate * o->duration_s);
        }
    }
    if (!o->max_concurrent) o->max_concurrent = 100000;
    if ((o->mode == SL_MODE_HOLD || o->to_phones) && !o->phones)
        usage_error("--phones", "required");
    if (o->mode == SL_MODE_CALL && !o->to_phones && !o->uas)
        fprintf(stderr, "sipload: no --uas: the calls go to a UAS of someone else's\n");
}

static void parse_args(int argc, char **argv, struct sl_opts *o, bool *selftest)
{
    bool have[3] = {false, false, false};
    int c;
    defaults(o);
    *selftest = false;
    while ((c = getopt_long(argc, argv, "t:d:r:qh", LONGOPTS, NULL)) != -1)
        if (!parse_opt(o, c, optarg, have, selftest)) {
            fputs(USAGE, stderr);
            exit(2);
        }
    if (*selftest) return;
    if (optind != argc - 1) usage_error("mode", "one of call, register, hold");
    finish_opts(o, argv[optind], have);
}

/* Room for every connection: the phones, the senders, and a margin. */
static void raise_nofile(const struct sl_opts *o, unsigned nthreads)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)o->phones + (rlim_t)o->senders * nthreads + 4096;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need) return;
    rl.rlim_cur = need;
    if (rl.rlim_max < need) rl.rlim_max = need; /* root may raise the ceiling */
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0) return;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    fprintf(stderr, "sipload: %llu file descriptors for about %llu connections\n",
            (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

void sl_count_up(struct sl_run *run, atomic_uint *n)
{
    pthread_mutex_lock(&run->lock);
    atomic_fetch_add(n, 1);
    pthread_cond_broadcast(&run->cond);
    pthread_mutex_unlock(&run->lock);
}

/* Sleeps until *n reaches want (false when a signal asked to stop): woken
 * by the threads, and every 100 ms to notice a signal. */
static bool wait_count(struct sl_run *run, atomic_uint *n, unsigned want)
{
    bool ok = true;
    pthread_mutex_lock(&run->lock);
    while (atomic_load(n) < want) {
        struct timespec ts;
        if (stop_requested) {
            ok = false;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&run->cond, &run->lock, &ts);
    }
    pthread_mutex_unlock(&run->lock);
    return ok;
}

static int start_threads(struct sl_run *run)
{
    const struct sl_opts *o = &run->o;
    run->nthreads = o->ncpus ? o->ncpus : 1;
    run->th = calloc(run->nthreads, sizeof *run->th);
    if (!run->th) return -1;
    for (unsigned i = 0; i < run->nthreads; i++) {
        struct sl_thread *th = &run->th[i];
        th->id = (int)i;
        th->cpu = o->ncpus ? o->cpus[i] : -1;
        th->run = run;
        th->o = &run->o;
        th->ep = -1;
        hist_init(&th->st.h_setup);
        hist_init(&th->st.h_reg);
        hist_init(&th->st.h_first);
        if (pthread_create(&th->tid, NULL, sl_thread_main, th) != 0) return -1;
    }
    return 0;
}

static int tls_contexts(struct sl_run *run)
{
    const struct sl_opts *o = &run->o;
    bool phones = o->mode != SL_MODE_CALL || o->to_phones;
    if ((o->mode == SL_MODE_CALL && o->proto == SL_TLS) || (phones && o->reg_proto == SL_TLS)) {
        if (!(run->cli_ctx = net_tls_client_ctx(o))) return -1;
    }
    if (o->uas && o->uas_proto == SL_TLS && !(run->srv_ctx = net_tls_server_ctx(o))) return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static struct sl_run run;
    struct sigaction sa = {.sa_handler = on_signal};
    bool selftest;

    parse_args(argc, argv, &run.o, &selftest);
    pthread_mutex_init(&run.lock, NULL);
    pthread_cond_init(&run.cond, NULL);
    if (selftest) return sl_selftest() == 0 ? 0 : 1;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile(&run.o, run.o.ncpus ? run.o.ncpus : 1);
    if (tls_contexts(&run) < 0) return 2;
    if (run.o.uas && run.o.uas_proto == SL_UDP && uas_table_init(&run.uas) < 0) return 2;
    hash_init_key();

    uint64_t t_setup = sl_now_ns();
    atomic_store(&run.phase, PHASE_SETUP);
    if (start_threads(&run) < 0) {
        fprintf(stderr, "sipload: cannot start threads\n");
        return 2;
    }
    bool ok = wait_count(&run, &run.nready, run.nthreads) && !atomic_load(&run.failed_setup);
    uint64_t t0 = sl_now_ns();
    if (ok) {
        atomic_store(&run.t0_ns, t0);
        atomic_store(&run.phase, PHASE_RUN);
        wait_count(&run, &run.ndrained, run.nthreads);
    }
    atomic_store(&run.phase, PHASE_STOP);
    for (unsigned i = 0; i < run.nthreads; i++)
        pthread_join(run.th[i].tid, NULL);
    if (atomic_load(&run.failed_setup)) {
        fprintf(stderr, "sipload: setup failed (see above)\n");
        return 2;
    }
    struct report_times times = {
        .setup_s = (double)(t0 - t_setup) / 1e9, .t0_ns = t0, .interrupted = stop_requested != 0};
    int rc = report_print(&run, &times);
    for (unsigned i = 0; i < run.nthreads; i++) {
        free(run.th[i].calls);
        free(run.th[i].freelist);
        free(run.th[i].phones);
        free(run.th[i].senders);
    }
    free(run.th);
    uas_table_free(&run.uas);
    SSL_CTX_free(run.cli_ctx);
    SSL_CTX_free(run.srv_ctx);
    return rc;
}
