/* Tests for core/cli.c: defaults, every documented flag, one-line errors with status 2. */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "core/sipuri.h"

TestSuite(cli);

static char out_text[16384], err_text[4096];
static char cert_path[64], empty_path[64];

/* Runs config_from_args on a NULL-terminated list, capturing stdout and stderr. */
static int run_args(struct config *cfg, const char *const *args)
{
    char *argv[64];
    int argc = 0, rc, saved_out, saved_err;
    FILE *o = tmpfile(), *e = tmpfile();

    argv[argc++] = (char *)"sipedge";
    for (; *args; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    saved_out = dup(STDOUT_FILENO);
    saved_err = dup(STDERR_FILENO);
    dup2(fileno(o), STDOUT_FILENO);
    dup2(fileno(e), STDERR_FILENO);
    rc = config_from_args(cfg, argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);

    rewind(o);
    out_text[fread(out_text, 1, sizeof(out_text) - 1, o)] = '\0';
    rewind(e);
    err_text[fread(err_text, 1, sizeof(err_text) - 1, e)] = '\0';
    fclose(o);
    fclose(e);
    return rc;
}

static void make_files(void)
{
    int fd;
    strcpy(cert_path, "/tmp/sipedge-test-cli-XXXXXX");
    fd = mkstemp(cert_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "pem\n", 4), 4);
    close(fd);
    strcpy(empty_path, "/tmp/sipedge-test-cli-XXXXXX");
    fd = mkstemp(empty_path);
    cr_assert_geq(fd, 0);
    close(fd);
}

static void remove_files(void)
{
    unlink(cert_path);
    unlink(empty_path);
}

TestSuite(cli_files, .init = make_files, .fini = remove_files);

Test(cli, defaults)
{
    static struct config cfg;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    const char *none[] = {NULL};

    cr_assert_eq(run_args(&cfg, none), 0);
    cr_assert_eq(cfg.workers, cpus > WORKER_MAX ? WORKER_MAX : (unsigned)cpus);
    cr_assert_eq(cfg.nlisten, 2);
    cr_assert_eq(cfg.listen[0].proto, SIP_TRANSPORT_UDP);
    cr_assert_eq(cfg.listen[1].proto, SIP_TRANSPORT_TCP);
    cr_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    cr_assert_eq(netaddr_port(&cfg.listen[1].addr), 5060);
    cr_assert(cfg.registrar, "registrar is on without --upstream");
    cr_assert_eq(cfg.tls_handshake_timeout_ms, 5000);
    cr_assert_eq(cfg.oos_check_s, 5);
    cr_assert_eq(cfg.oos_force_s, 5);
    cr_assert_eq(cfg.max_connections, 65536);
    cr_assert_eq(cfg.max_message_size, 65535);
    cr_assert_eq(cfg.overload_dialog_rate, 0);
    cr_assert_str_empty(cfg.stats_listen);
    cr_assert_eq(cfg.log_level, LOG_INFO);
    cr_assert_not(cfg.log_json);
    cr_assert_str_empty(err_text);
}

Test(cli_files, every_documented_flag_is_accepted)
{
    static struct config cfg;
    const char *args[] = {"-w",
                          "2",
                          "-l",
                          "udp:127.0.0.1:5070",
                          "--listen",
                          "tcp:[::1]:5070",
                          "--listen=tls:0.0.0.0:5071",
                          "--advertise",
                          "edge.example.com",
                          "-u",
                          "sip:10.0.0.1:5060;transport=tcp",
                          "--upstream",
                          "sips:10.0.0.2",
                          "--peer",
                          "b.example.com=sips:10.0.1.1",
                          "--worker-ports",
                          "15060",
                          "--registrar",
                          "--registrar-open",
                          "--flow-secret",
                          cert_path,
                          "--tls-cert",
                          cert_path,
                          "--tls-key",
                          cert_path,
                          "--tls-ca",
                          cert_path,
                          "--tls-mutual",
                          "--tls-handshake-timeout",
                          "2500",
                          "--dns-server",
                          "127.0.0.1:5353",
                          "--dns-server",
                          "::1",
                          "--oos-check",
                          "7",
                          "--oos-force",
                          "3",
                          "--max-connections",
                          "1000",
                          "--max-message-size",
                          "8192",
                          "--overload-dialog-rate",
                          "50",
                          "--stats-listen",
                          "127.0.0.1:9090",
                          "--stats-tls",
                          "--log-level",
                          "debug",
                          "--log-format",
                          "json",
                          NULL};

    cr_assert_eq(run_args(&cfg, args), 0, "stderr: %s", err_text);
    cr_assert_eq(cfg.workers, 2);
    cr_assert_eq(cfg.nlisten, 3);
    cr_assert_eq(cfg.listen[1].addr.sa.sa_family, AF_INET6);
    cr_assert_str_eq(cfg.listen[1].host, "[::1]");
    cr_assert_eq(cfg.listen[2].proto, SIP_TRANSPORT_TLS);
    cr_assert_str_eq(cfg.advertise, "edge.example.com");
    cr_assert_eq(cfg.nupstream, 2);
    cr_assert_str_eq(cfg.upstream[1], "sips:10.0.0.2");
    cr_assert_eq(cfg.npeers, 1);
    cr_assert_str_eq(cfg.peers[0].domain, "b.example.com");
    cr_assert_str_eq(cfg.peers[0].uri, "sips:10.0.1.1");
    cr_assert_eq(cfg.worker_ports, 15060);
    cr_assert(cfg.registrar);
    cr_assert_str_eq(cfg.tls_ca, cert_path);
    cr_assert(cfg.tls_mutual);
    cr_assert_eq(cfg.tls_handshake_timeout_ms, 2500);
    cr_assert_eq(cfg.ndns, 2);
    cr_assert_eq(cfg.oos_check_s, 7);
    cr_assert_eq(cfg.oos_force_s, 3);
    cr_assert_eq(cfg.max_connections, 1000);
    cr_assert_eq(cfg.max_message_size, 8192);
    cr_assert_eq(cfg.overload_dialog_rate, 50);
    cr_assert_str_eq(cfg.stats_listen, "127.0.0.1:9090");
    cr_assert(cfg.stats_tls);
    cr_assert_eq(cfg.log_level, LOG_DEBUG);
    cr_assert(cfg.log_json);
}

Test(cli_files, tls_cert_adds_the_default_tls_listener)
{
    static struct config cfg;
    const char *args[] = {"--tls-cert", cert_path,      "--tls-key", cert_path,
                          "-u",         "sip:10.0.0.1", NULL};
    cr_assert_eq(run_args(&cfg, args), 0, "stderr: %s", err_text);
    cr_assert_eq(cfg.nlisten, 3);
    cr_assert_eq(cfg.listen[2].proto, SIP_TRANSPORT_TLS);
    cr_assert_eq(netaddr_port(&cfg.listen[2].addr), 5061);
    cr_assert_not(cfg.registrar, "an upstream turns the embedded registrar off");
}

/* Each case: the arguments, the flag the one error line must name, and
 * what its reason must say (a part of it). */
struct bad_case {
    const char *args[8];
    const char *flag;
    const char *reason;
};

Test(cli_files, bad_flags_exit_2_with_one_line_naming_the_flag)
{
    static struct config cfg;
    const struct bad_case cases[] = {
        {{"--workers", "0"}, "--workers", "must be a number in 1..64"},
        {{"-w", "65"}, "--workers", "must be a number in 1..64"},
        {{"-w", "2x"}, "--workers", "must be a number in 1..64"},
        {{"-w", "-1"}, "--workers", "must be a number in 1..64"},
        {{"-w"}, "--workers", "requires an argument"},
        {{"--listen", "sctp:127.0.0.1:5060"}, "--listen", "PROTO must be udp, tcp or tls"},
        {{"-l", "udp:localhost:5060"}, "--listen", "expected PROTO:HOST:PORT"},
        {{"-l", "udp:127.0.0.1"}, "--listen", "expected PROTO:HOST:PORT"},
        {{"-l", "udp:127.0.0.1:0"}, "--listen", "expected PROTO:HOST:PORT"},
        {{"-l", "tcp:::1:5060"}, "--listen", "expected PROTO:HOST:PORT"},
        {{"-l", "tls:127.0.0.1:5061"}, "--tls-cert", "required by a tls listener"},
        {{"--advertise", ""}, "--advertise", "HOST must be 1..255 printable characters"},
        {{"--advertise", "a b"}, "--advertise", "HOST must be 1..255 printable characters"},
        {{"-u", "http://x"}, "--upstream", "expected a sip: or sips: URI"},
        {{"-u", "sip:"}, "--upstream", "expected a sip: or sips: URI"},
        {{"-u", "sip:a", "-u", "sip:b", "-u", "sip:c"}, "--upstream", "given more than twice"},
        {{"--peer", "example.com"}, "--peer", "expected DOMAIN=URI\n"},
        {{"--peer", "=sip:x"}, "--peer", "expected DOMAIN=URI\n"},
        {{"--peer", "example.com=mailto:x"},
         "--peer",
         "expected DOMAIN=URI with a sip: or sips: URI"},
        {{"--worker-ports", "80"},
         "--worker-ports",
         "expected auto, off or a port number in 1024..65535"},
        {{"--worker-ports", "sometimes"},
         "--worker-ports",
         "expected auto, off or a port number in 1024..65535"},
        {{"-w", "4", "--worker-ports", "65534"}, "--worker-ports", "goes past port 65535"},
        {{"--registrar=yes"}, "--registrar", "takes no argument"},
        {{"--flow-secret", "/nonexistent/key"},
         "--flow-secret",
         "/nonexistent/key: No such file or directory"},
        {{"--flow-secret", empty_path}, "--flow-secret", "file is empty"},
        {{"--flow-secret", "/tmp"}, "--flow-secret", "/tmp: not a regular file"},
        {{"--tls-cert", "/nonexistent/cert.pem"}, "--tls-cert", "No such file or directory"},
        {{"--tls-key", "/nonexistent/key.pem"}, "--tls-key", "No such file or directory"},
        {{"--tls-ca", "/nonexistent/ca.pem"}, "--tls-ca", "No such file or directory"},
        {{"--tls-cert", cert_path}, "--tls-key", "required with --tls-cert"},
        {{"--tls-key", cert_path}, "--tls-cert", "required with --tls-key"},
        {{"--tls-mutual"}, "--tls-mutual", "needs --tls-ca"},
        {{"--tls-handshake-timeout", "0"},
         "--tls-handshake-timeout",
         "must be a number of milliseconds in 1..600000"},
        {{"--tls-handshake-timeout", "5s"},
         "--tls-handshake-timeout",
         "must be a number of milliseconds in 1..600000"},
        {{"--dns-server", "dns.example.com"},
         "--dns-server",
         "expected an IP literal, IP:PORT or [IPv6]:PORT"},
        {{"--oos-check", "0"}, "--oos-check", "must be a number of seconds in 1..3600"},
        {{"--oos-force", "x"}, "--oos-force", "must be a number of seconds in 1..3600"},
        {{"--max-connections", "0"}, "--max-connections", "must be a number in 1..4194304"},
        {{"--max-message-size", "100"},
         "--max-message-size",
         "must be a number of bytes in 512..1048576"},
        {{"--max-message-size", "99999999999999999999999"},
         "--max-message-size",
         "must be a number of bytes in 512..1048576"},
        {{"--overload-dialog-rate", "-5"},
         "--overload-dialog-rate",
         "must be a number in 0..1000000"},
        {{"--stats-listen", "9090"},
         "--stats-listen",
         "expected HOST:PORT with an IP literal HOST"},
        {{"--stats-tls"}, "--stats-tls", "needs --tls-cert"},
        {{"--log-level", "verbose"}, "--log-level", "must be error, warn, info or debug"},
        {{"--log-format", "xml"}, "--log-format", "must be text or json"},
        {{"-l", "udp:0.0.0.0:5060"}, "--registrar-open", "on udp:0.0.0.0:5060 (not loopback)"},
        {{"-l", "udp:127.0.0.1:5060", "-l", "tcp:[::]:5060"},
         "--registrar-open",
         "give --auth-users or --auth-by-certificate, or --registrar-open"},
        {{"-l", "udp:192.0.2.1:5060", "-u", "sip:10.0.0.1", "--registrar"},
         "--registrar-open",
         "not loopback"},
        {{"--no-such-flag"}, "--no-such-flag", "unknown or ambiguous option"},
        {{"-x"}, "-x", "unknown option"},
        {{"stray"}, "stray", "unexpected argument"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char want[64];
        const char *nl;
        int rc = run_args(&cfg, cases[i].args);
        cr_assert_eq(rc, 2, "case %zu (%s): returned %d", i, cases[i].args[0], rc);
        snprintf(want, sizeof(want), "sipedge: %s: ", cases[i].flag);
        cr_assert(strncmp(err_text, want, strlen(want)) == 0,
                  "case %zu: got \"%s\", want \"%s...\"", i, err_text, want);
        cr_assert_not_null(strstr(err_text + strlen(want), cases[i].reason),
                           "case %zu: got \"%s\", want the reason \"%s\"", i, err_text,
                           cases[i].reason);
        nl = strchr(err_text, '\n');
        cr_assert(nl && nl[1] == '\0', "case %zu: not exactly one line: \"%s\"", i, err_text);
        cr_assert_str_empty(out_text);
    }
}

/* Every numeric flag takes both ends of its range and refuses one past each. */
Test(cli, numeric_flags_take_their_bounds_and_nothing_past_them)
{
    static struct config cfg;
    static const struct {
        const char *flag, *lo, *hi, *below, *above;
        size_t field;
    } cases[] = {
        {"--workers", "1", "64", "0", "65", offsetof(struct config, workers)},
        {"--tls-handshake-timeout", "1", "600000", "0", "600001",
         offsetof(struct config, tls_handshake_timeout_ms)},
        {"--oos-check", "1", "3600", "0", "3601", offsetof(struct config, oos_check_s)},
        {"--oos-force", "1", "3600", "0", "3601", offsetof(struct config, oos_force_s)},
        {"--max-connections", "1", "4194304", "0", "4194305",
         offsetof(struct config, max_connections)},
        {"--max-message-size", "512", "1048576", "511", "1048577",
         offsetof(struct config, max_message_size)},
        {"--overload-dialog-rate", "0", "1000000", NULL, "1000001",
         offsetof(struct config, overload_dialog_rate)},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *const ok[2] = {cases[i].lo, cases[i].hi};
        const char *const no[2] = {cases[i].below, cases[i].above};
        for (int k = 0; k < 2; k++) {
            const char *args[] = {cases[i].flag, ok[k], NULL};
            unsigned got;
            cr_assert_eq(run_args(&cfg, args), 0, "%s %s: %s", cases[i].flag, ok[k], err_text);
            memcpy(&got, (const char *)&cfg + cases[i].field, sizeof(got));
            cr_assert_eq(got, (unsigned)strtoul(ok[k], NULL, 10), "%s %s", cases[i].flag, ok[k]);
        }
        for (int k = 0; k < 2; k++) {
            const char *args[] = {cases[i].flag, no[k], NULL};
            if (!no[k]) continue;
            cr_assert_eq(run_args(&cfg, args), 2, "%s %s accepted", cases[i].flag, no[k]);
        }
    }
}

Test(cli, help_lists_every_documented_flag)
{
    static struct config cfg;
    /* ARCHITECTURE.md section 7 */
    static const char *const flags[] = {
        "-w, --workers",
        "-l, --listen",
        "--advertise",
        "--worker-ports",
        "-u, --upstream",
        "--peer",
        "--registrar",
        "--flow-secret",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--tls-mutual",
        "--tls-handshake-timeout",
        "--dns-server",
        "--oos-check",
        "--oos-force",
        "--max-connections",
        "--max-message-size",
        "--overload-dialog-rate",
        "--stats-listen",
        "--stats-tls",
        "--log-level",
        "--log-format",
        "-h, --help",
        "-V, --version",
    };
    const char *args[] = {"--help", NULL};

    cr_assert_eq(run_args(&cfg, args), 1);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        cr_assert_not_null(strstr(out_text, flags[i]), "--help does not mention %s", flags[i]);
}

/* The other direction: every --flag the help shows is one the parser knows. */
Test(cli, every_flag_in_help_is_accepted)
{
    static struct config cfg;
    static char help[sizeof(out_text)];
    const char *args[] = {"--help", NULL};
    unsigned seen = 0;

    cr_assert_eq(run_args(&cfg, args), 1);
    memcpy(help, out_text, sizeof(help));
    for (char *line = strtok(help, "\n"); line; line = strtok(NULL, "\n")) {
        char flag[64], *dash = strstr(line, "--");
        const char *try[2] = {flag, NULL};
        size_t n;
        if (!dash || dash > line + 10) continue; /* a continuation or prose line */
        n = strcspn(dash, " \t");
        cr_assert_lt(n, sizeof(flag));
        memcpy(flag, dash, n);
        flag[n] = '\0';
        run_args(&cfg, try);
        cr_assert_null(strstr(err_text, "unknown"), "%s: %s", flag, err_text);
        seen++;
    }
    cr_assert_geq(seen, 24);
}

Test(cli, version)
{
    static struct config cfg;
    const char *args[] = {"-V", NULL};
    cr_assert_eq(run_args(&cfg, args), 1);
    cr_assert(strncmp(out_text, "sipedge ", 8) == 0);
    cr_assert_not_null(strstr(out_text, " (commit "), "no commit in: %s", out_text);
}

/* ARCHITECTURE §2: an unauthenticated built-in registrar only on loopback,
 * unless --registrar-open; any authentication, or no registrar, lifts it. */
Test(cli_files, open_registrar_beyond_loopback_needs_registrar_open)
{
    static struct config cfg;
    const char *loopback[] = {"-l", "udp:127.0.0.5:5060", "-l", "tcp:[::1]:5060", NULL};
    const char *open[] = {"-l", "udp:0.0.0.0:5060", "--registrar-open", NULL};
    const char *digest[] = {"-l", "udp:0.0.0.0:5060", "--auth-users", cert_path, NULL};
    const char *cert[] = {
        "-l",      "tls:0.0.0.0:5061", "--tls-cert", cert_path,      "--tls-key",
        cert_path, "--tls-ca",         cert_path,    "--tls-mutual", "--auth-by-certificate",
        NULL};
    const char *no_registrar[] = {"-l", "udp:0.0.0.0:5060", "-u", "sip:10.0.0.1", NULL};

    cr_assert_eq(run_args(&cfg, loopback), 0, "%s", err_text);
    cr_assert_eq(run_args(&cfg, open), 0, "%s", err_text);
    cr_assert(cfg.registrar_open);
    cr_assert_eq(run_args(&cfg, digest), 0, "%s", err_text);
    cr_assert_str_eq(cfg.auth_users_file, cert_path);
    cr_assert_eq(run_args(&cfg, cert), 0, "%s", err_text);
    cr_assert_eq(run_args(&cfg, no_registrar), 0, "%s", err_text);
    cr_assert_not(cfg.registrar);
}
