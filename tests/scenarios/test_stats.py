#!/usr/bin/python3
"""Management HTTP port (--stats-listen, --stats-tls), ARCHITECTURE §1/§7.

Checks:
  a. GET /stats is JSON whose totals count the requests just sent (and are
     the sum of the per-worker entries), GET /metrics carries the same
     numbers in the Prometheus text format, the SIP Server's probe state is
     reported; unknown paths get 404, POST gets 405;
  b. --stats-tls: served over TLS with the server certificate (verified
     against the dev CA); a plain HTTP request gets no HTTP answer;
  c. --stats-tls --tls-mutual: a client without a certificate is refused,
     one with a certificate from the CA gets the stats.
Prints one line per case and "N passed, M failed"."""

import json
import os
import re
import socket
import ssl
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_tls import client_ctx, gen_certs  # noqa: E402

HOST = "127.0.0.1"


def http(port, method, path, ctx=None, timeout=5):
    """(status, body) of one HTTP/1.1 request; raises OSError/ssl.SSLError."""
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                  .encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise OSError(f"not an HTTP response: {data[:60]!r}")
    return int(head.split()[1]), body.decode()


def metric_sum(text, name):
    return sum(int(v) for v in re.findall(rf"^{name}{{worker=\"\d+\"}} (\d+)$", text, re.M))


def case_plain():
    sink = lib.Sink(HOST)
    try:
        with lib.Harness("stats") as h:
            port, sport = lib.free_port(HOST), lib.free_port(HOST)
            p = lib.start_sipedge(h, [("udp", HOST, port)], upstream=f"{sink.uri};transport=udp",
                                  extra=["--stats-listen", f"{HOST}:{sport}", "--oos-check", "1"])
            wait_stats_port(sport, p)
            _, before = http(sport, "GET", "/stats")
            n0 = json.loads(before)["total"]["own_replies"]
            for _ in range(20):
                if lib.sip_ping(HOST, port, "udp") != 200:
                    raise AssertionError("OPTIONS not answered")
            lib.wait_until(lambda: sink.probes > 0, 5, "a probe at the SIP Server", proc=p)
            code, body = http(sport, "GET", "/stats")
            st = json.loads(body)
            tot, per = st["total"], st["per_worker"]
            if code != 200 or st["workers"] != 2 or len(per) != 2:
                raise AssertionError(f"status {code}, workers {st.get('workers')}")
            if tot["own_replies"] - n0 != 20:
                raise AssertionError(f"own_replies went {n0} -> {tot['own_replies']}, want +20")
            for k in ("rx_messages", "own_replies", "tx_bytes"):
                if tot[k] != sum(w[k] for w in per):
                    raise AssertionError(f"total {k} {tot[k]} is not the per-worker sum")
            up = st["upstreams"]
            if len(up) != 1 or not up[0]["answering"] or not up[0]["active"]:
                raise AssertionError(f"upstreams {up}")
            code, text = http(sport, "GET", "/metrics")
            own = metric_sum(text, "sipedge_own_replies_total")
            if code != 200 or own != tot["own_replies"] or \
                    "sipedge_upstream_up{role=\"primary\"} 1" not in text:
                raise AssertionError(f"/metrics: status {code}, own_replies {own} "
                                     f"against {tot['own_replies']}")
            c404, _ = http(sport, "GET", "/nothing")
            c405, _ = http(sport, "POST", "/stats")
            with socket.create_connection((HOST, sport), timeout=5) as s:
                s.sendall(b"GET\r\n\r\n")  # no path, no version
                c400 = s.recv(100).split(b"\r\n")[0]
            if (c404, c405) != (404, 405) or c400 != b"HTTP/1.1 400 Bad Request":
                raise AssertionError(f"/nothing -> {c404}, POST -> {c405}, garbage -> {c400}")
            return (f"own_replies +20 (= {tot['own_replies']} in /metrics too), "
                    f"primary answering and active, 404/405/400")
    finally:
        sink.close()


def wait_stats_port(sport, proc):
    """The management port opens after the SIP listeners answer."""
    lib.wait_until(lambda: lib.port_bound(sport, "tcp", HOST), 10, "the management port",
                   proc=proc)


def tls_instance(h, certs, extra):
    port, sport = lib.free_port(HOST), lib.free_port(HOST)
    p = lib.start_sipedge(h, [("udp", HOST, port)], extra=[
        "--tls-cert", os.path.join(certs, "server.crt"),
        "--tls-key", os.path.join(certs, "server.key"),
        "--tls-ca", os.path.join(certs, "ca.crt"),
        "--stats-listen", f"{HOST}:{sport}", "--stats-tls", *extra])
    wait_stats_port(sport, p)
    return sport


def case_tls():
    with lib.Harness("stats-tls") as h:
        certs = h.path("certs")
        gen_certs(certs)
        sport = tls_instance(h, certs, [])
        code, body = http(sport, "GET", "/stats", ctx=client_ctx(certs))
        if code != 200 or "rx_messages" not in json.loads(body)["total"]:
            raise AssertionError(f"over TLS: status {code}")
        try:
            http(sport, "GET", "/stats", timeout=4)
        except OSError:
            return "JSON over TLS (chain verified against the dev CA); plain HTTP gets no answer"
        raise AssertionError("a plain HTTP request was answered on the TLS port")


def case_mutual():
    with lib.Harness("stats-mtls") as h:
        certs = h.path("certs")
        gen_certs(certs)
        sport = tls_instance(h, certs, ["--tls-mutual"])
        try:
            http(sport, "GET", "/stats", ctx=client_ctx(certs))
            raise AssertionError("a client without a certificate got the stats")
        except (ssl.SSLError, OSError) as e:
            refused = type(e).__name__
        ctx = client_ctx(certs, cert=os.path.join(certs, "client.crt"),
                         key=os.path.join(certs, "client.key"))
        code, _ = http(sport, "GET", "/metrics", ctx=ctx)
        if code != 200:
            raise AssertionError(f"with a client certificate: status {code}")
        return f"no certificate: refused ({refused}); with one: 200"


def main():
    return lib.run_cases("test_stats", 150, [
        ("GET /stats and /metrics over HTTP", case_plain),
        ("--stats-tls", case_tls),
        ("--stats-tls with --tls-mutual", case_mutual),
    ])


if __name__ == "__main__":
    sys.exit(main())
