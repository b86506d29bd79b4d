/* The configuration: built from the command line once, read-only afterwards. */
#ifndef SIPEDGE_CONFIG_H
#define SIPEDGE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/netaddr.h"

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_PEERS  16
#define CONFIG_MAX_DNS    4
#define WORKER_MAX        64 /* --workers bound (conn_ref keeps 8 bits for it) */
#define CONFIG_MAX_ALLOW  32
#define CONFIG_MAX_DOMAIN 16

struct listen_cfg {
    uint8_t proto; /* enum sip_transport: UDP, TCP or TLS */
    struct netaddr addr;
    char host[64]; /* as given, for logs and Via/Record-Route */
};

struct peer_cfg {
    char domain[256];
    char uri[512];
};

enum log_level { LOG_ERR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Written once by config_from_args() on the main thread before any other
 * thread starts; read-only afterwards, by any thread. */
struct config {
    unsigned workers;
    struct listen_cfg listen[CONFIG_MAX_LISTEN];
    unsigned nlisten;
    char advertise[256];   /* empty: the listener's own address */
    int worker_ports;      /* private UDP ports: -1 off, 0 picked by the kernel, else base */
    char upstream[2][512]; /* primary, backup; empty when absent */
    unsigned nupstream;
    struct peer_cfg peers[CONFIG_MAX_PEERS];
    unsigned npeers;
    bool registrar;
    char flow_secret_file[512];
    char tls_cert[512], tls_key[512], tls_ca[512];
    bool tls_mutual;
    unsigned tls_handshake_timeout_ms;
    char dns_servers[CONFIG_MAX_DNS][128];
    unsigned ndns;
    unsigned oos_check_s, oos_force_s;
    unsigned max_connections;
    unsigned max_message_size;
    unsigned overload_dialog_rate; /* 0: off */
    unsigned overload_source_rate; /* new INVITEs/s per source IP; 0: off */
    char stats_listen[128];
    bool stats_tls;
    unsigned stats_max_clients; /* management connections served at once */

    /* edge policy (ARCHITECTURE.md §2) */
    struct netaddr_cidr
        allow_dest[CONFIG_MAX_ALLOW]; /* internal destinations endpoints may reach */
    unsigned nallow_dest;
    char domains[CONFIG_MAX_DOMAIN][256]; /* --domain: served as sipedge's own */
    unsigned ndomains;
    /* built-in registrar authentication */
    char auth_users_file[512]; /* htdigest user:realm:HA1[:HA1-SHA-256]; empty: none */
    bool auth_by_certificate;  /* under --tls-mutual: the certificate names the AOR */
    bool registrar_open;       /* no authentication on a non-loopback listener, knowingly */

    /* limits (ARCHITECTURE.md §6) */
    unsigned max_connections_per_ip;
    unsigned idle_timeout_s;      /* stream connections with no binding and no transaction */
    unsigned message_timeout_ms;  /* a stream message must complete within it */
    unsigned connect_timeout_ms;  /* outbound TCP/TLS connect */
    unsigned max_transactions;    /* per worker */
    unsigned max_transaction_mb;  /* per worker: bytes kept by live transactions */
    unsigned max_queued_bytes;    /* per connection */
    unsigned max_queued_total_mb; /* per worker, all connections together */
    unsigned max_expires_s, min_expires_s;
    unsigned max_bindings;        /* per AOR */
    unsigned max_aors;            /* in the location service */
    unsigned dns_cache_size;      /* entries per worker */
    unsigned dns_max_pending;     /* lookups in flight per worker */
    unsigned failover_timeout_ms; /* no response from a SIP Server target: next target */
    enum log_level log_level;
    bool log_json;
};

/* Parses argv into cfg with defaults applied (core/cli.c). On a bad flag or
 * value prints one line "sipedge: --flag: reason" to stderr and returns 2;
 * returns 1 after printing --help or --version (exit 0); returns 0 to run.
 * Checks that named files are readable now. Main thread, before workers;
 * uses getopt's globals, so not reentrant. */
int config_from_args(struct config *cfg, int argc, char **argv);

/* Index of the first listener of proto whose address family is fam
 * (AF_UNSPEC: any), or -1. Pure. */
static inline int config_pick_listener(const struct config *cfg, uint8_t proto, int fam)
{
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        if (l->proto == proto && (fam == AF_UNSPEC || l->addr.sa.sa_family == fam)) return (int)i;
    }
    return -1;
}

#endif
