/* Command line: getopt_long over one option table that also writes --help. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/sipuri.h"

#ifndef SIPEDGE_VERSION
#define SIPEDGE_VERSION "unknown"
#endif
#ifndef SIPEDGE_COMMIT
#define SIPEDGE_COMMIT "unknown"
#endif

enum {
    OPT_WORKERS = 'w',
    OPT_LISTEN = 'l',
    OPT_UPSTREAM = 'u',
    OPT_HELP = 'h',
    OPT_VERSION = 'V',
    OPT_ADVERTISE = 256,
    OPT_WORKER_PORTS,
    OPT_PEER,
    OPT_REGISTRAR,
    OPT_FLOW_SECRET,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_TLS_CA,
    OPT_TLS_MUTUAL,
    OPT_TLS_HS_TIMEOUT,
    OPT_DNS_SERVER,
    OPT_OOS_CHECK,
    OPT_OOS_FORCE,
    OPT_MAX_CONNECTIONS,
    OPT_MAX_MESSAGE_SIZE,
    OPT_OVERLOAD_DIALOG_RATE,
    OPT_STATS_LISTEN,
    OPT_STATS_TLS,
    OPT_LOG_LEVEL,
    OPT_LOG_FORMAT,
    OPT_OVERLOAD_SOURCE_RATE,
    OPT_STATS_MAX_CLIENTS,
    OPT_ALLOW_DESTINATION,
    OPT_DOMAIN,
    OPT_AUTH_USERS,
    OPT_AUTH_BY_CERTIFICATE,
    OPT_REGISTRAR_OPEN,
    OPT_MAX_CONNECTIONS_PER_IP,
    OPT_IDLE_TIMEOUT,
    OPT_MESSAGE_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_MAX_TRANSACTIONS,
    OPT_MAX_TRANSACTION_MB,
    OPT_MAX_QUEUED_BYTES,
    OPT_MAX_QUEUED_TOTAL_MB,
    OPT_MAX_EXPIRES,
    OPT_MIN_EXPIRES,
    OPT_MAX_BINDINGS,
    OPT_MAX_AORS,
    OPT_DNS_CACHE_SIZE,
    OPT_DNS_MAX_PENDING,
    OPT_FAILOVER_TIMEOUT,
};

/* Each accepted option, with what --help says about it. */
struct cli_opt {
    const char *name;
    int id;
    const char *arg; /* NULL: a switch */
    const char *help;
};

static const struct cli_opt cli_opts[] = {
    {"workers", OPT_WORKERS, "N", "worker threads, 1..64 (default: online CPUs)"},
    {"listen", OPT_LISTEN, "PROTO:HOST:PORT",
     "PROTO udp, tcp or tls; IPv6 as [::1]; repeatable, up to 16\n"
     "(default: udp:127.0.0.1:5060 and tcp:127.0.0.1:5060,\n"
     "and tls:127.0.0.1:5061 with --tls-cert)"},
    {"advertise", OPT_ADVERTISE, "HOST",
     "host written into Via, Record-Route and Path\n(default: the listener's address)"},
    {"worker-ports", OPT_WORKER_PORTS, "auto|off|BASE",
     "each worker's private UDP port per udp listener, named in\n"
     "the Via of the requests it forwards so their responses come\n"
     "straight back to it: auto = picked by the kernel, BASE =\n"
     "BASE + k * workers + worker for the k-th udp listener\n"
     "(default: auto)"},
    {"upstream", OPT_UPSTREAM, "URI",
     "SIP Server: sip:HOST[:PORT][;transport=udp|tcp|tls]\n"
     "or sips:HOST; a name resolves per RFC 3263 (NAPTR,\n"
     "SRV, A/AAAA); twice = primary then backup\n"
     "(default: none, the built-in registrar answers)"},
    {"peer", OPT_PEER, "DOMAIN=URI",
     "requests whose Request-URI host is DOMAIN go to that\n"
     "peer site's proxy, URI = sip:HOST[:PORT][;transport=...]\n"
     "or sips:HOST; requests from it are routed by Request-URI;\n"
     "repeatable, up to 16 (default: none)"},
    {"registrar", OPT_REGISTRAR, NULL,
     "built-in registrar/location service\n(default: on when no --upstream)"},
    {"flow-secret", OPT_FLOW_SECRET, "FILE",
     "key for flow-token HMACs, shared by a pool\n(default: random per process)"},
    {"tls-cert", OPT_TLS_CERT, "FILE", "PEM certificate, chain allowed (default: no TLS)"},
    {"tls-key", OPT_TLS_KEY, "FILE", "PEM private key, required with --tls-cert"},
    {"tls-ca", OPT_TLS_CA, "FILE", "PEM CA certificates to verify peers (default: none)"},
    {"tls-mutual", OPT_TLS_MUTUAL, NULL,
     "require and verify peer certificates, needs --tls-ca\n(default: off)"},
    {"tls-handshake-timeout", OPT_TLS_HS_TIMEOUT, "MS",
     "TLS handshake time limit, 1..600000 (default: 5000)"},
    {"dns-server", OPT_DNS_SERVER, "HOST[:PORT]",
     "DNS server, IP literal; repeatable, up to 4\n(default: the system resolver)"},
    {"oos-check", OPT_OOS_CHECK, "SEC",
     "OPTIONS probe interval to the active upstream,\n1..3600 (default: 5)"},
    {"oos-force", OPT_OOS_FORCE, "SEC",
     "probe interval (and probe time limit) while the\nactive upstream does not answer, 1..3600 "
     "(default: 5)"},
    {"max-connections", OPT_MAX_CONNECTIONS, "N",
     "accepted TCP/TLS connections per process,\n1..4194304 (default: 65536)"},
    {"max-message-size", OPT_MAX_MESSAGE_SIZE, "BYTES",
     "largest SIP message, 512..1048576 (default: 65535)"},
    {"overload-dialog-rate", OPT_OVERLOAD_DIALOG_RATE, "N",
     "new INVITEs per second (all workers together) above\n"
     "which new INVITEs get 503, 0 = off (default: 0)"},
    {"stats-listen", OPT_STATS_LISTEN, "HOST:PORT",
     "management HTTP address: GET /stats (JSON),\n"
     "GET /metrics (Prometheus) (default: off)"},
    {"stats-tls", OPT_STATS_TLS, NULL,
     "serve management over TLS with --tls-cert (client\n"
     "certificates required with --tls-mutual) (default: off)"},
    {"stats-max-clients", OPT_STATS_MAX_CLIENTS, "N",
     "management connections served at once, 1..256\n(default: 8)"},
    {"domain", OPT_DOMAIN, "NAME",
     "SIP domain served as sipedge's own (built-in registrar\n"
     "AORs, OPTIONS to it), like Kamailio's alias; repeatable,\n"
     "up to 16 (default: none)"},
    {"allow-destination", OPT_ALLOW_DESTINATION, "CIDR",
     "loopback, private or link-local prefix endpoints' requests\n"
     "may reach (refused otherwise); repeatable, up to 32\n(default: none)"},
    {"auth-users", OPT_AUTH_USERS, "FILE",
     "built-in registrar: digest credentials, lines\n"
     "user:realm:HA1[:HA1-SHA-256] (htdigest); every REGISTER\n"
     "must authenticate; reloaded on SIGHUP (default: none)"},
    {"auth-by-certificate", OPT_AUTH_BY_CERTIFICATE, NULL,
     "with --tls-mutual: a TLS client certificate whose SAN\n"
     "sip: URI (or CN) is user@domain may register that AOR\n(default: off)"},
    {"registrar-open", OPT_REGISTRAR_OPEN, NULL,
     "let the built-in registrar run on a non-loopback listener\n"
     "without authentication (default: refuse to start)"},
    {"max-connections-per-ip", OPT_MAX_CONNECTIONS_PER_IP, "N",
     "TCP/TLS connections from one IP address (IPv6: one /64);\n"
     "more are closed at once, 1..4194304 (default: 4096)"},
    {"idle-timeout", OPT_IDLE_TIMEOUT, "SEC",
     "close a TCP/TLS connection idle this long that carries no\n"
     "registration and no transaction, 1..86400 (default: 120)"},
    {"message-timeout", OPT_MESSAGE_TIMEOUT, "MS",
     "a started TCP/TLS message must complete within it,\n100..600000 (default: 30000)"},
    {"connect-timeout", OPT_CONNECT_TIMEOUT, "MS",
     "outbound TCP/TLS connect time limit, 100..600000\n(default: 3000)"},
    {"max-transactions", OPT_MAX_TRANSACTIONS, "N",
     "live transactions per worker, 16..4194304; new requests\n"
     "over it get 503; a UDP call holds 2 for 32 s after it\n"
     "ends (RFC 3261 Timers J, L) (default: 1048576)"},
    {"max-transaction-memory", OPT_MAX_TRANSACTION_MB, "MB",
     "bytes kept by live transactions per worker, 1..65536\n(default: 1024)"},
    {"max-queued-bytes", OPT_MAX_QUEUED_BYTES, "BYTES",
     "unsent bytes per TCP/TLS connection before it is closed,\n"
     "65536..268435456 (default: 1048576)"},
    {"max-queued-total", OPT_MAX_QUEUED_TOTAL_MB, "MB",
     "unsent bytes of all connections of a worker; over it the\n"
     "slowest connections close, 1..65536 (default: 256)"},
    {"max-expires", OPT_MAX_EXPIRES, "SEC",
     "longest registration the built-in registrar grants,\n60..604800 (default: 3600)"},
    {"min-expires", OPT_MIN_EXPIRES, "SEC",
     "shorter REGISTER Expires get 423 Interval Too Brief,\n1..3600 (default: 60)"},
    {"max-bindings", OPT_MAX_BINDINGS, "N",
     "contacts per AOR in the built-in registrar, 1..1024\n(default: 16)"},
    {"max-aors", OPT_MAX_AORS, "N",
     "AORs in the built-in registrar, 1..16777216\n(default: 1000000)"},
    {"dns-cache-size", OPT_DNS_CACHE_SIZE, "N",
     "DNS answers cached per worker, 16..1048576 (default: 2048)"},
    {"dns-max-pending", OPT_DNS_MAX_PENDING, "N",
     "DNS lookups in flight per worker, 1..65536, for one\n"
     "source IP 1/8 of that; requests over get 503 (default: 4096)"},
    {"failover-timeout", OPT_FAILOVER_TIMEOUT, "MS",
     "no response at all from a SIP Server target within it:\n"
     "the request goes to the next target, 100..60000\n(default: 2000)"},
    {"overload-source-rate", OPT_OVERLOAD_SOURCE_RATE, "N",
     "new INVITEs per second from one source IP above which\n"
     "its new INVITEs get 503, 0 = off (default: 0)"},
    {"log-level", OPT_LOG_LEVEL, "LEVEL", "error, warn, info or debug (default: info)"},
    {"log-format", OPT_LOG_FORMAT, "FORMAT", "text or json (default: text)"},
    {"help", OPT_HELP, NULL, "print this help and exit"},
    {"version", OPT_VERSION, NULL, "print the version and the git commit, and exit"},
};

#define NOPTS (sizeof(cli_opts) / sizeof(cli_opts[0]))

static const struct cli_opt *opt_by_id(int id)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (cli_opts[i].id == id) return &cli_opts[i];
    return NULL;
}

static void print_help(void)
{
    printf("Usage: sipedge [OPTION]...\nEdge SIP proxy for UDP, TCP and TLS.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct cli_opt *o = &cli_opts[i];
        char left[64];
        if (o->id < 256)
            snprintf(left, sizeof(left), "-%c, --%s%s%s", o->id, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(left, sizeof(left), "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        /* a left column too wide for its 30 columns gets a line of its own,
         * so the help text is always two spaces or more away from it */
        if (strlen(left) < 30)
            printf("  %-30s ", left);
        else
            printf("  %s\n%33s", left, "");
        for (const char *h = o->help, *nl; *h; h = nl + 1) { /* continuation lines indented */
            nl = strchr(h, '\n');
            if (!nl) {
                printf("%s\n", h);
                break;
            }
            printf("%.*s\n%33s", (int)(nl - h), h, "");
        }
    }
    printf("\nBad options and unusable certificate, key or CA files exit with\n"
           "status 2. SIGHUP reloads --tls-cert, --tls-key and --tls-ca from the same\n"
           "paths for new handshakes (open connections keep theirs; on any error the\n"
           "material in use stays). SIGTERM and SIGINT stop accepting, let in-flight\n"
           "transactions finish (up to 5 s; a second signal cuts it short) and exit 0.\n");
}

/* Prints the one error line and returns 2. */
static int bad(int id, const char *reason)
{
    const struct cli_opt *o = opt_by_id(id);
    fprintf(stderr, "sipedge: --%s: %s\n", o ? o->name : "?", reason);
    return 2;
}

static bool parse_uint(const char *s, uint64_t lo, uint64_t hi, unsigned *out)
{
    uint64_t v;
    if (!slice_to_u64(slice_make(s, strlen(s)), hi, &v) || v < lo) return false;
    *out = (unsigned)v;
    return true;
}

static bool copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n == 0 || n >= cap) return false;
    memcpy(dst, src, n + 1);
    return true;
}

static bool printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || (unsigned char)*s == 0x7f) return false;
    return true;
}

/* PROTO:HOST:PORT, HOST an IPv4 literal or a bracketed IPv6 literal. */
static int parse_listen(struct listen_cfg *l, const char *arg)
{
    const char *colon = strchr(arg, ':');
    struct slice proto;

    if (!colon) return -EINVAL;
    proto = slice_make(arg, (size_t)(colon - arg));
    if (slice_case_eq_lit(proto, "udp"))
        l->proto = SIP_TRANSPORT_UDP;
    else if (slice_case_eq_lit(proto, "tcp"))
        l->proto = SIP_TRANSPORT_TCP;
    else if (slice_case_eq_lit(proto, "tls"))
        l->proto = SIP_TRANSPORT_TLS;
    else
        return -EPROTONOSUPPORT;
    if (netaddr_parse(&l->addr, slice_make(colon + 1, strlen(colon + 1))) < 0 ||
        netaddr_port(&l->addr) == 0)
        return -EINVAL;
    /* The host as given (IPv6 keeps its brackets), ready for a hostport. */
    const char *host = colon + 1, *port = strrchr(host, ':');
    if ((size_t)(port - host) >= sizeof(l->host)) return -EINVAL;
    memcpy(l->host, host, (size_t)(port - host));
    l->host[port - host] = '\0';
    return 0;
}

/* sip: or sips: followed by something that looks like a host. */
static bool valid_sip_uri(const char *s)
{
    size_t skip;

    if (strncasecmp(s, "sip:", 4) == 0)
        skip = 4;
    else if (strncasecmp(s, "sips:", 5) == 0)
        skip = 5;
    else
        return false;
    s += skip;
    if (strchr(s, '@')) s = strchr(s, '@') + 1;
    return *s != '\0' && *s != ';' && *s != ':' && printable(s);
}

/* Checks FILE can be opened for reading now; the reason goes to *why. */
static bool readable_file(const char *path, bool need_content, const char **why)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        *why = strerror(errno);
        return false;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *why = "not a regular file";
        return false;
    }
    close(fd);
    if (need_content && st.st_size == 0) {
        *why = "file is empty";
        return false;
    }
    return true;
}

static int file_opt(int id, char *dst, size_t cap, const char *arg, bool need_content)
{
    char line[640];
    const char *why;

    if (!copy_str(dst, cap, arg)) return bad(id, "path empty or too long");
    if (!readable_file(arg, need_content, &why)) {
        snprintf(line, sizeof(line), "%s: %s", arg, why);
        return bad(id, line);
    }
    return 0;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > WORKER_MAX ? WORKER_MAX : (unsigned)n;
}

static void set_defaults(struct config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = online_cpus();
    cfg->tls_handshake_timeout_ms = 5000;
    cfg->oos_check_s = 5;
    cfg->oos_force_s = 5;
    cfg->max_connections = 65536;
    cfg->max_message_size = 65535;
    cfg->log_level = LOG_INFO;
    cfg->stats_max_clients = 8;
    cfg->max_connections_per_ip = 4096;
    cfg->idle_timeout_s = 120;
    cfg->message_timeout_ms = 30000;
    cfg->connect_timeout_ms = 3000;
    cfg->max_transactions = 1u << 20;
    cfg->max_transaction_mb = 1024;
    cfg->max_queued_bytes = 1u << 20;
    cfg->max_queued_total_mb = 256;
    cfg->max_expires_s = 3600;
    cfg->min_expires_s = 60;
    cfg->max_bindings = 16;
    cfg->max_aors = 1000000;
    cfg->dns_cache_size = 2048;
    cfg->dns_max_pending = 4096;
    cfg->failover_timeout_ms = 2000;
}

static void add_default_listener(struct config *cfg, uint8_t proto, int port)
{
    struct listen_cfg *l = &cfg->listen[cfg->nlisten++];
    l->proto = proto;
    netaddr_from_ip(&l->addr, SLICE_LIT("127.0.0.1"), port);
    snprintf(l->host, sizeof(l->host), "127.0.0.1");
}

/* True for a loopback address (127/8, ::1, IPv4-mapped 127/8). */
static bool is_loopback(const struct netaddr *a)
{
    struct netaddr_cidr c4, c6;
    netaddr_cidr_parse(&c4, SLICE_LIT("127.0.0.0/8"));
    netaddr_cidr_parse(&c6, SLICE_LIT("::1/128"));
    return netaddr_cidr_match(&c4, a) || netaddr_cidr_match(&c6, a);
}

/* ARCHITECTURE §2: a built-in registrar reachable from beyond this host
 * authenticates, unless --registrar-open says to run it open. */
static int check_open_registrar(const struct config *cfg)
{
    if (!cfg->registrar || cfg->auth_users_file[0] || cfg->auth_by_certificate ||
        cfg->registrar_open)
        return 0;
    for (unsigned i = 0; i < cfg->nlisten; i++) {
        const struct listen_cfg *l = &cfg->listen[i];
        char msg[320], a[NETADDR_STRLEN];
        if (is_loopback(&l->addr)) continue;
        netaddr_str(&l->addr, a, sizeof a);
        snprintf(msg, sizeof msg,
                 "the built-in registrar would let anyone register any AOR on %s:%s (not "
                 "loopback): give --auth-users or --auth-by-certificate, or --registrar-open to "
                 "run it so",
                 sipuri_transport_name(l->proto), a);
        return bad(OPT_REGISTRAR_OPEN, msg);
    }
    return 0;
}

/* Checks that need every flag seen, then fills in what depends on others. */
static int finish(struct config *cfg)
{
    bool tls_listener = false;

    if (cfg->tls_key[0] && !cfg->tls_cert[0]) return bad(OPT_TLS_CERT, "required with --tls-key");
    if (cfg->tls_cert[0] && !cfg->tls_key[0]) return bad(OPT_TLS_KEY, "required with --tls-cert");
    if (cfg->tls_mutual && !cfg->tls_ca[0]) return bad(OPT_TLS_MUTUAL, "needs --tls-ca");
    if (cfg->stats_tls && !cfg->tls_cert[0]) return bad(OPT_STATS_TLS, "needs --tls-cert");
    if (cfg->stats_tls && !cfg->stats_listen[0]) return bad(OPT_STATS_TLS, "needs --stats-listen");
    if (cfg->auth_by_certificate && !cfg->tls_mutual)
        return bad(OPT_AUTH_BY_CERTIFICATE, "needs --tls-mutual");
    if (cfg->min_expires_s > cfg->max_expires_s)
        return bad(OPT_MIN_EXPIRES, "must not exceed --max-expires");
    for (unsigned i = 0; i < cfg->nlisten; i++)
        tls_listener |= cfg->listen[i].proto == SIP_TRANSPORT_TLS;
    if (tls_listener && !cfg->tls_cert[0]) return bad(OPT_TLS_CERT, "required by a tls listener");

    if (cfg->nlisten == 0) {
        add_default_listener(cfg, SIP_TRANSPORT_UDP, 5060);
        add_default_listener(cfg, SIP_TRANSPORT_TCP, 5060);
        if (cfg->tls_cert[0]) add_default_listener(cfg, SIP_TRANSPORT_TLS, 5061);
    }
    if (cfg->nupstream == 0) cfg->registrar = true;
    if (check_open_registrar(cfg)) return 2;
    if (cfg->worker_ports > 0) {
        unsigned nudp = 0;
        for (unsigned i = 0; i < cfg->nlisten; i++)
            nudp += cfg->listen[i].proto == SIP_TRANSPORT_UDP;
        if ((unsigned)cfg->worker_ports + nudp * cfg->workers > 65536)
            return bad(OPT_WORKER_PORTS, "BASE + udp listeners x workers goes past port 65535");
    }
    return 0;
}

/* Flags that set one unsigned field of struct config to a number in a range. */
struct num_opt {
    int id;
    unsigned lo, hi;
    size_t field;    /* offset of the unsigned in struct config */
    const char *why; /* the complaint when the value is not in lo..hi */
};

/* offsetof(struct config, f), refusing to compile unless f is an unsigned. */
#define UNSIGNED_AT(f)                                                                             \
    (offsetof(struct config, f) + 0 * sizeof(_Generic(((struct config *)0)->f, unsigned : 1)))

static const struct num_opt num_opts[] = {
    {OPT_WORKERS, 1, WORKER_MAX, UNSIGNED_AT(workers), "must be a number in 1..64"},
    {OPT_TLS_HS_TIMEOUT, 1, 600000, UNSIGNED_AT(tls_handshake_timeout_ms),
     "must be a number of milliseconds in 1..600000"},
    {OPT_OOS_CHECK, 1, 3600, UNSIGNED_AT(oos_check_s), "must be a number of seconds in 1..3600"},
    {OPT_OOS_FORCE, 1, 3600, UNSIGNED_AT(oos_force_s), "must be a number of seconds in 1..3600"},
    {OPT_MAX_CONNECTIONS, 1, 1u << 22, UNSIGNED_AT(max_connections),
     "must be a number in 1..4194304"},
    {OPT_MAX_MESSAGE_SIZE, 512, 1u << 20, UNSIGNED_AT(max_message_size),
     "must be a number of bytes in 512..1048576"},
    {OPT_OVERLOAD_DIALOG_RATE, 0, 1000000, UNSIGNED_AT(overload_dialog_rate),
     "must be a number in 0..1000000"},
    {OPT_OVERLOAD_SOURCE_RATE, 0, 1000000, UNSIGNED_AT(overload_source_rate),
     "must be a number in 0..1000000"},
    {OPT_STATS_MAX_CLIENTS, 1, 256, UNSIGNED_AT(stats_max_clients), "must be a number in 1..256"},
    {OPT_MAX_CONNECTIONS_PER_IP, 1, 1u << 22, UNSIGNED_AT(max_connections_per_ip),
     "must be a number in 1..4194304"},
    {OPT_IDLE_TIMEOUT, 1, 86400, UNSIGNED_AT(idle_timeout_s),
     "must be a number of seconds in 1..86400"},
    {OPT_MESSAGE_TIMEOUT, 100, 600000, UNSIGNED_AT(message_timeout_ms),
     "must be a number of milliseconds in 100..600000"},
    {OPT_CONNECT_TIMEOUT, 100, 600000, UNSIGNED_AT(connect_timeout_ms),
     "must be a number of milliseconds in 100..600000"},
    {OPT_MAX_TRANSACTIONS, 16, 1u << 22, UNSIGNED_AT(max_transactions),
     "must be a number in 16..4194304"},
    {OPT_MAX_TRANSACTION_MB, 1, 65536, UNSIGNED_AT(max_transaction_mb),
     "must be a number of MB in 1..65536"},
    {OPT_MAX_QUEUED_BYTES, 65536, 1u << 28, UNSIGNED_AT(max_queued_bytes),
     "must be a number of bytes in 65536..268435456"},
    {OPT_MAX_QUEUED_TOTAL_MB, 1, 65536, UNSIGNED_AT(max_queued_total_mb),
     "must be a number of MB in 1..65536"},
    {OPT_MAX_EXPIRES, 60, 604800, UNSIGNED_AT(max_expires_s),
     "must be a number of seconds in 60..604800"},
    {OPT_MIN_EXPIRES, 1, 3600, UNSIGNED_AT(min_expires_s),
     "must be a number of seconds in 1..3600"},
    {OPT_MAX_BINDINGS, 1, 1024, UNSIGNED_AT(max_bindings), "must be a number in 1..1024"},
    {OPT_MAX_AORS, 1, 1u << 24, UNSIGNED_AT(max_aors), "must be a number in 1..16777216"},
    {OPT_DNS_CACHE_SIZE, 16, 1u << 20, UNSIGNED_AT(dns_cache_size),
     "must be a number in 16..1048576"},
    {OPT_DNS_MAX_PENDING, 1, 65536, UNSIGNED_AT(dns_max_pending), "must be a number in 1..65536"},
    {OPT_FAILOVER_TIMEOUT, 100, 60000, UNSIGNED_AT(failover_timeout_ms),
     "must be a number of milliseconds in 100..60000"},
};

static int apply_number(struct config *cfg, const struct num_opt *o, const char *arg)
{
    if (!parse_uint(arg, o->lo, o->hi, (unsigned *)((char *)cfg + o->field)))
        return bad(o->id, o->why);
    return 0;
}

static int apply_listen(struct config *cfg, const char *arg)
{
    if (cfg->nlisten == CONFIG_MAX_LISTEN) return bad(OPT_LISTEN, "more than 16 listeners");
    switch (parse_listen(&cfg->listen[cfg->nlisten], arg)) {
    case 0:
        cfg->nlisten++;
        return 0;
    case -EPROTONOSUPPORT:
        return bad(OPT_LISTEN, "PROTO must be udp, tcp or tls");
    default:
        return bad(OPT_LISTEN,
                   "expected PROTO:HOST:PORT with an IP literal HOST and PORT 1..65535");
    }
}

static int apply_advertise(struct config *cfg, const char *arg)
{
    if (!printable(arg) || !copy_str(cfg->advertise, sizeof(cfg->advertise), arg))
        return bad(OPT_ADVERTISE, "HOST must be 1..255 printable characters");
    return 0;
}

static int apply_upstream(struct config *cfg, const char *arg)
{
    if (cfg->nupstream == 2) return bad(OPT_UPSTREAM, "given more than twice");
    if (!valid_sip_uri(arg) ||
        !copy_str(cfg->upstream[cfg->nupstream], sizeof(cfg->upstream[0]), arg))
        return bad(OPT_UPSTREAM, "expected a sip: or sips: URI");
    cfg->nupstream++;
    return 0;
}

static int apply_peer(struct config *cfg, const char *arg)
{
    struct peer_cfg *p;
    const char *eq;

    if (cfg->npeers == CONFIG_MAX_PEERS) return bad(OPT_PEER, "more than 16 peers");
    p = &cfg->peers[cfg->npeers];
    eq = strchr(arg, '=');
    if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(p->domain))
        return bad(OPT_PEER, "expected DOMAIN=URI");
    memcpy(p->domain, arg, (size_t)(eq - arg));
    p->domain[eq - arg] = '\0';
    if (!printable(p->domain) || !valid_sip_uri(eq + 1) ||
        !copy_str(p->uri, sizeof(p->uri), eq + 1))
        return bad(OPT_PEER, "expected DOMAIN=URI with a sip: or sips: URI");
    cfg->npeers++;
    return 0;
}

static int apply_dns_server(struct config *cfg, const char *arg)
{
    struct netaddr a;

    if (cfg->ndns == CONFIG_MAX_DNS) return bad(OPT_DNS_SERVER, "more than 4 servers");
    if (netaddr_parse(&a, slice_make(arg, strlen(arg))) < 0 &&
        netaddr_from_ip(&a, slice_make(arg, strlen(arg)), 53) < 0)
        return bad(OPT_DNS_SERVER, "expected an IP literal, IP:PORT or [IPv6]:PORT");
    if (!copy_str(cfg->dns_servers[cfg->ndns], sizeof(cfg->dns_servers[0]), arg))
        return bad(OPT_DNS_SERVER, "too long");
    cfg->ndns++;
    return 0;
}

static int apply_worker_ports(struct config *cfg, const char *arg)
{
    unsigned base;

    if (strcmp(arg, "auto") == 0)
        cfg->worker_ports = 0;
    else if (strcmp(arg, "off") == 0)
        cfg->worker_ports = -1;
    else if (parse_uint(arg, 1024, 65535, &base))
        cfg->worker_ports = (int)base;
    else
        return bad(OPT_WORKER_PORTS, "expected auto, off or a port number in 1024..65535");
    return 0;
}

static int apply_stats_listen(struct config *cfg, const char *arg)
{
    struct netaddr a;

    if (netaddr_parse(&a, slice_make(arg, strlen(arg))) < 0 || netaddr_port(&a) == 0 ||
        !copy_str(cfg->stats_listen, sizeof(cfg->stats_listen), arg))
        return bad(OPT_STATS_LISTEN, "expected HOST:PORT with an IP literal HOST");
    return 0;
}

static int apply_allow_destination(struct config *cfg, const char *arg)
{
    if (cfg->nallow_dest == CONFIG_MAX_ALLOW) return bad(OPT_ALLOW_DESTINATION, "more than 32");
    if (netaddr_cidr_parse(&cfg->allow_dest[cfg->nallow_dest], slice_make(arg, strlen(arg))) < 0)
        return bad(OPT_ALLOW_DESTINATION, "expected IP/BITS or an IP literal");
    cfg->nallow_dest++;
    return 0;
}

static int apply_domain(struct config *cfg, const char *arg)
{
    if (cfg->ndomains == CONFIG_MAX_DOMAIN) return bad(OPT_DOMAIN, "more than 16 domains");
    if (!printable(arg) || strchr(arg, ':') || strchr(arg, '@') || strchr(arg, ';') ||
        !copy_str(cfg->domains[cfg->ndomains], sizeof(cfg->domains[0]), arg))
        return bad(OPT_DOMAIN, "expected a host name (no scheme, user, port or parameters)");
    cfg->ndomains++;
    return 0;
}

static int apply_log_level(struct config *cfg, const char *arg)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (unsigned i = 0; i < 4; i++) {
        if (strcmp(arg, names[i]) == 0) {
            cfg->log_level = (enum log_level)i;
            return 0;
        }
    }
    return bad(OPT_LOG_LEVEL, "must be error, warn, info or debug");
}

static int apply_log_format(struct config *cfg, const char *arg)
{
    if (strcmp(arg, "text") == 0)
        cfg->log_json = false;
    else if (strcmp(arg, "json") == 0)
        cfg->log_json = true;
    else
        return bad(OPT_LOG_FORMAT, "must be text or json");
    return 0;
}

/* Sets what flag `id` (never --help or --version) says; 0, or 2 after
 * printing the one error line. */
static int apply(struct config *cfg, int id, const char *arg)
{
    for (size_t i = 0; i < sizeof(num_opts) / sizeof(num_opts[0]); i++)
        if (num_opts[i].id == id) return apply_number(cfg, &num_opts[i], arg);
    switch (id) {
    case OPT_LISTEN:
        return apply_listen(cfg, arg);
    case OPT_ADVERTISE:
        return apply_advertise(cfg, arg);
    case OPT_UPSTREAM:
        return apply_upstream(cfg, arg);
    case OPT_PEER:
        return apply_peer(cfg, arg);
    case OPT_DNS_SERVER:
        return apply_dns_server(cfg, arg);
    case OPT_WORKER_PORTS:
        return apply_worker_ports(cfg, arg);
    case OPT_STATS_LISTEN:
        return apply_stats_listen(cfg, arg);
    case OPT_LOG_LEVEL:
        return apply_log_level(cfg, arg);
    case OPT_LOG_FORMAT:
        return apply_log_format(cfg, arg);
    case OPT_ALLOW_DESTINATION:
        return apply_allow_destination(cfg, arg);
    case OPT_DOMAIN:
        return apply_domain(cfg, arg);
    case OPT_AUTH_USERS:
        return file_opt(id, cfg->auth_users_file, sizeof(cfg->auth_users_file), arg, false);
    case OPT_AUTH_BY_CERTIFICATE:
        cfg->auth_by_certificate = true;
        return 0;
    case OPT_REGISTRAR_OPEN:
        cfg->registrar_open = true;
        return 0;
    case OPT_FLOW_SECRET:
        return file_opt(id, cfg->flow_secret_file, sizeof(cfg->flow_secret_file), arg, true);
    case OPT_TLS_CERT:
        return file_opt(id, cfg->tls_cert, sizeof(cfg->tls_cert), arg, true);
    case OPT_TLS_KEY:
        return file_opt(id, cfg->tls_key, sizeof(cfg->tls_key), arg, true);
    case OPT_TLS_CA:
        return file_opt(id, cfg->tls_ca, sizeof(cfg->tls_ca), arg, true);
    case OPT_REGISTRAR:
        cfg->registrar = true;
        return 0;
    case OPT_TLS_MUTUAL:
        cfg->tls_mutual = true;
        return 0;
    case OPT_STATS_TLS:
        cfg->stats_tls = true;
        return 0;
    default:
        return bad(id, "not handled");
    }
}

/* Names the option argv[optind - 1] spelled, for getopt's own errors. */
static void bad_spelling(const char *arg, const char *reason)
{
    const char *eq = strchr(arg, '=');
    int n = eq ? (int)(eq - arg) : (int)strlen(arg);
    fprintf(stderr, "sipedge: %.*s: %s\n", n, arg, reason);
}

int config_from_args(struct config *cfg, int argc, char **argv)
{
    struct option longopts[NOPTS + 1];
    char shortopts[3 * NOPTS + 3];
    size_t ns = 0;
    int c, rc;

    set_defaults(cfg);
    /* '+': stop at the first non-option; ':' report a missing argument as ':'. */
    shortopts[ns++] = '+';
    shortopts[ns++] = ':';
    for (size_t i = 0; i < NOPTS; i++) {
        longopts[i] =
            (struct option){cli_opts[i].name, cli_opts[i].arg ? required_argument : no_argument,
                            NULL, cli_opts[i].id};
        if (cli_opts[i].id < 256) {
            shortopts[ns++] = (char)cli_opts[i].id;
            if (cli_opts[i].arg) shortopts[ns++] = ':';
        }
    }
    longopts[NOPTS] = (struct option){0};
    shortopts[ns] = '\0';

    optind = 0; /* full re-initialisation, so the parser can run more than once */
    opterr = 0;
    while ((c = getopt_long(argc, argv, shortopts, longopts, NULL)) != -1) {
        switch (c) {
        case OPT_HELP:
            print_help();
            return 1;
        case OPT_VERSION:
            printf("sipedge %s (commit %s)\n", SIPEDGE_VERSION, SIPEDGE_COMMIT);
            return 1;
        case ':':
            if (optopt && opt_by_id(optopt)) return bad(optopt, "requires an argument");
            bad_spelling(argv[optind - 1], "requires an argument");
            return 2;
        case '?':
            if (optopt && opt_by_id(optopt)) return bad(optopt, "takes no argument");
            if (optopt)
                fprintf(stderr, "sipedge: -%c: unknown option\n", optopt);
            else
                bad_spelling(argv[optind - 1], "unknown or ambiguous option");
            return 2;
        default:
            rc = apply(cfg, c, optarg);
            if (rc) return rc;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sipedge: %s: unexpected argument\n", argv[optind]);
        return 2;
    }
    return finish(cfg);
}
