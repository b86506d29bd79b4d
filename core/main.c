/* sipedge entry point: parse flags, run the workers, handle signals. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/mgmt.h"
#include "core/proxy.h"
#include "core/registrar.h"
#include "core/sipuri.h"
#include "core/worker.h"
#include "tls/tls.h"

#define DRAIN_LIMIT_MS 5000
#define DRAIN_POLL_MS  50

/* The runtime runs the proxy layer through these; the table outlives it. */
static const struct worker_handlers proxy_handlers = {
    .init = proxy_worker_init,
    .cleanup = proxy_worker_cleanup,
    .on_message = proxy_on_message,
    .on_worker_msg = proxy_on_worker_msg,
    .on_conn_closed = proxy_on_conn_closed,
    .quiescent = proxy_quiescent,
    .awake = proxy_awake,
    .busy = proxy_busy,
    .on_keepalive = proxy_on_keepalive,
    .on_unreachable = proxy_on_unreachable,
};

static void log_startup(const struct config *cfg)
{
    char list[CONFIG_MAX_LISTEN * (NETADDR_STRLEN + 8)];
    size_t n = 0;

    list[0] = '\0';
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        char a[NETADDR_STRLEN];
        netaddr_str(&cfg->listen[i].addr, a, sizeof(a));
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s:%s", i ? " " : "",
                              sipuri_transport_name(cfg->listen[i].proto), a);
    }
    LOG_I("sipedge %s: %u workers, listening on %s%s", SIPEDGE_VERSION, cfg->workers, list,
          cfg->registrar ? ", registrar on" : "");
    for (unsigned i = 0; i < cfg->npeers; i++)
        LOG_I("peer site %s: requests for it go to %s", cfg->peers[i].domain, cfg->peers[i].uri);
    if (cfg->overload_dialog_rate)
        LOG_I("new INVITEs above %u/s get 503", cfg->overload_dialog_rate);
    if (cfg->overload_source_rate)
        LOG_I("new INVITEs above %u/s from one source IP get 503", cfg->overload_source_rate);
}

/* Builds one TLS context per worker from the files cfg names (file I/O: this
 * thread only, never a worker). Returns 0, or -1 with every context freed
 * and one line in err naming the flag ("--tls-key: ..."). */
static int tls_build(const struct config *cfg, uint64_t generation, struct tls_ctx **out, char *err,
                     size_t errlen)
{
    for (unsigned i = 0; i < cfg->workers; i++) {
        out[i] = tls_ctx_new(cfg, err, errlen);
        if (!out[i]) {
            while (i > 0)
                tls_ctx_free(out[--i]);
            return -1;
        }
        out[i]->generation = generation;
    }
    return 0;
}

/* SIGHUP: new contexts from the same paths for new handshakes; on any error
 * the material in use stays, untouched. Connections are never dropped. */
static void tls_reload(const struct config *cfg, uint64_t *generation)
{
    struct tls_ctx *fresh[WORKER_MAX];
    char err[768];

    if (!cfg->tls_cert[0] && !cfg->tls_ca[0]) {
        LOG_I("reload: no TLS material configured, nothing to do");
        return;
    }
    if (tls_build(cfg, *generation + 1, fresh, err, sizeof(err)) < 0) {
        LOG_E("TLS reload failed, keeping the current material: %s", err);
        return;
    }
    ++*generation;
    if (cfg->stats_tls) {
        struct tls_ctx *m = tls_ctx_new(cfg, err, sizeof(err));
        if (m) {
            m->generation = *generation;
            mgmt_tls_reload(m);
        } else {
            LOG_E("management port keeps its TLS material: %s", err);
        }
    }
    if (worker_runtime_tls_reload(fresh))
        LOG_I("TLS material reloaded (generation %llu)", (unsigned long long)*generation);
    else
        LOG_W("TLS material reloaded (generation %llu); a busy worker takes it at its next turn",
              (unsigned long long)*generation);
}

/* Waits for up to ms for one of the blocked signals; 0 on timeout. */
static int wait_signal(const sigset_t *set, long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    int sig;

    do
        sig = ms < 0 ? sigwaitinfo(set, NULL) : sigtimedwait(set, NULL, &ts);
    while (sig < 0 && errno == EINTR);
    return sig < 0 ? 0 : sig;
}

/* SIGTERM/SIGINT: stop accepting, let in-flight transactions finish for up
 * to DRAIN_LIMIT_MS; a second signal cuts the wait short. */
static void drain(const sigset_t *set)
{
    uint64_t deadline = clock_mono_ms() + DRAIN_LIMIT_MS;

    LOG_I("shutting down: draining for up to %d s", DRAIN_LIMIT_MS / 1000);
    worker_runtime_drain();
    while (clock_mono_ms() < deadline) {
        int sig = wait_signal(set, DRAIN_POLL_MS);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_I("second signal: stopping now");
            return;
        }
        if (sig == 0 && !worker_runtime_busy()) return;
    }
    LOG_W("drain time limit reached with work in flight");
}

int main(int argc, char **argv)
{
    static struct config cfg;
    struct tls_ctx *tls[WORKER_MAX];
    uint64_t tls_generation = 0;
    char err[768];
    sigset_t set;
    int rc, sig;

    rc = config_from_args(&cfg, argc, argv);
    if (rc) return rc == 1 ? 0 : 2;
    log_init(&cfg);
    /* the key of every table fed by network data, before any thread hashes */
    rc = hash_init_key();
    if (rc < 0) {
        LOG_E("cannot start: no random hash key: %s", strerror(-rc));
        return 1;
    }

    /* Blocked before any thread starts, so every worker inherits the mask
     * and only this thread receives them. Writes use MSG_NOSIGNAL; SIGPIPE
     * is ignored as a second line. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    /* Bad certificate, key or CA files are bad flags: exit 2, one line. */
    if (tls_build(&cfg, tls_generation, tls, err, sizeof(err)) < 0) {
        fprintf(stderr, "sipedge: %s\n", err);
        return 2;
    }
    /* the maps every worker shares, and the flow-token key (a bad
     * --flow-secret file is a bad flag: it logged one line naming it) */
    rc = proxy_global_init(&cfg);
    if (rc < 0) return rc == -ENOMEM ? 1 : 2;
    rc = worker_runtime_start_tls(&cfg, tls, &proxy_handlers);
    if (rc < 0) {
        LOG_E("cannot start: %s", strerror(-rc));
        proxy_global_cleanup();
        return 1;
    }
    log_startup(&cfg);
    if (cfg.stats_listen[0]) {
        struct tls_ctx *mtls = NULL;
        if (cfg.stats_tls && !(mtls = tls_ctx_new(&cfg, err, sizeof(err)))) {
            LOG_E("cannot start the management port: %s", err);
            worker_runtime_stop();
            return 1;
        }
        if (mgmt_start(&cfg, mtls) < 0) {
            worker_runtime_stop();
            return 1;
        }
    }

    /* this thread waits for signals and, with the built-in registrar,
     * sweeps its expired bindings every REGISTRAR_SWEEP_MS meanwhile */
    uint64_t next_sweep = clock_mono_ms() + REGISTRAR_SWEEP_MS;
    for (;;) {
        uint64_t now = clock_mono_ms();
        if (cfg.registrar && now >= next_sweep) {
            registrar_sweep(now);
            next_sweep = now + REGISTRAR_SWEEP_MS;
        }
        sig = wait_signal(&set, cfg.registrar ? (long)(next_sweep - now) : -1);
        if (sig == SIGHUP) {
            tls_reload(&cfg, &tls_generation);
            registrar_reload_users(&cfg);
            continue;
        }
        if (sig == SIGTERM || sig == SIGINT) break;
    }
    drain(&set);
    mgmt_stop();
    worker_runtime_stop();
    proxy_global_cleanup();
    LOG_I("stopped");
    return 0;
}
