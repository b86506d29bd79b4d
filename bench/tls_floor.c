/* The public-key work a TLS 1.3 server does for one full handshake, with the
 * BoringSSL sipedge links, on this machine now: an X25519 key share (key
 * pair and shared secret) and an ECDSA P-256 signature (CertificateVerify,
 * the development certificate's key type). No TLS stack, no kernel: the
 * part of a new TLS phone's cost no proxy built on this library can avoid.
 *
 *   tls_floor [--count N]
 * Bounded: N of each (default 2000). Prints one line per primitive and
 * their sum, in µs of this thread's CPU. */

#include <getopt.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long n = 2000;
    static const struct option opts[] = {{"count", required_argument, NULL, 'n'}, {0}};
    for (int c; (c = getopt_long(argc, argv, "n:", opts, NULL)) != -1;) {
        char *end;
        if (c != 'n' || (n = strtol(optarg, &end, 10)) < 1 || n > 1000000 || *end) {
            fprintf(stderr, "usage: tls_floor [--count 1..1000000]\n");
            return 2;
        }
    }
    uint8_t peer_pub[32], peer_priv[32], pub[32], priv[32], secret[32];
    X25519_keypair(peer_pub, peer_priv);
    double t0 = cpu_s();
    for (long i = 0; i < n; i++) {
        X25519_keypair(pub, priv);
        if (!X25519(secret, priv, peer_pub)) return 1;
    }
    double x25519 = (cpu_s() - t0) / (double)n * 1e6;

    EC_KEY *key = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (!key || !EC_KEY_generate_key(key)) return 1;
    uint8_t digest[32] = {1}, sig[80] /* a DER P-256 signature is at most 72 bytes */;
    t0 = cpu_s();
    for (long i = 0; i < n; i++) {
        unsigned len = sizeof sig;
        digest[0] = (uint8_t)i;
        if (!ECDSA_sign(0, digest, sizeof digest, sig, &len, key)) return 1;
    }
    double sign = (cpu_s() - t0) / (double)n * 1e6;
    EC_KEY_free(key);

    printf("x25519 key share: %.1f us\n", x25519);
    printf("ecdsa p-256 sign: %.1f us\n", sign);
    printf("handshake public-key work: %.1f us = %.0f handshakes per CPU-second\n", x25519 + sign,
           1e6 / (x25519 + sign));
    return 0;
}
