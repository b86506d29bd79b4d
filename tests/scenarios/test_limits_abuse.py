#!/usr/bin/python3
"""Bounded under abuse (ARCHITECTURE §6): the DNS, management-port and
per-source INVITE limits bite, are counted, and others are served meanwhile.

sipedge runs with -w 2 and small limits given by flags. Checks:
  a. a flood of requests from peer sites (four source IPs, 127.0.0.2-5)
     whose Request-URIs name distinct hosts, against a DNS server that never
     answers, with --dns-max-pending 16 (2 per source): the lookups in
     flight stay capped (DNS queries sent stay few), every request gets a
     503, those over the cap at once and with Retry-After, counted as
     limit="dns_max_pending"; an endpoint's OPTIONS and MESSAGE are served
     meanwhile. Then one dead name: after its lookup times out, 20 more
     requests for it are answered at once and send no query (remembered);
  b. management port: 8 clients trickling a request one byte at a time hold
     every --stats-max-clients slot (default 8); a 9th connection is closed
     at once without an answer (limit="stats_max_clients"), and a
     well-behaved client is served once the 5 s deadline frees a slot;
  c. the same with --stats-tls: 4 clients that never send a ClientHello and
     4 that trickle one: the deadline includes the handshake;
  d. --overload-source-rate 5: 127.0.0.2 sends 60 new INVITEs from four
     ports at once: at most the rate per second (twice it, for the split
     the shared table may make when two workers meet a new source at the
     same instant) reach the SIP Server, the rest get 503 with Retry-After
     (limit="overload_source_rate"); 127.0.0.3's INVITEs all go through.
After each: sipedge's open fds back to the baseline (+2: the resolver
sockets a worker may open), RSS within 16 MiB of it, and an OPTIONS is
answered within 2 s (latency printed).
Prints one line per case and "N passed, M failed"."""

import os
import re
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_stats import http  # noqa: E402
from test_tls import client_ctx, gen_certs  # noqa: E402

HOST = "127.0.0.1"
FD_SLACK = 2                # resolver sockets a worker may open
RSS_SLACK_KB = 16 * 1024    # allocator caches (and ASan's quarantine)
MGMT_DEADLINE_S = 5         # core/mgmt.c MGMT_CONN_LIMIT_MS


# ---------------------------------------------------------------- process health

def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Usage:
    """sipedge's open fds and RSS now (the baseline), and the check that
    they came back to it after the abuse."""

    def __init__(self, proc):
        self.proc = proc
        self.fds, self.rss = fds(proc.pid), rss_kb(proc.pid)

    def back_to_baseline(self, port, timeout=10):
        pid = self.proc.pid
        ok = lambda: fds(pid) <= self.fds + FD_SLACK and rss_kb(pid) <= self.rss + RSS_SLACK_KB  # noqa: E731
        lib.wait_until(ok, timeout, "fds and RSS back to the baseline", proc=self.proc,
                       interval=0.2)
        t = time.monotonic()
        code = lib.sip_ping(HOST, port, "udp", timeout=2)
        ms = (time.monotonic() - t) * 1000
        if code != 200:
            raise AssertionError(f"OPTIONS afterwards: {code}")
        return (f"fds {self.fds} -> {fds(pid)}, RSS {self.rss // 1024} -> "
                f"{rss_kb(pid) // 1024} MiB, OPTIONS 200 in {ms:.1f} ms")


def limit_hits(sport, limit, ctx=None):
    """sipedge_limit_hits_total{limit=...} summed over the workers."""
    code, text = http(sport, "GET", "/metrics", ctx=ctx)
    if code != 200:
        raise AssertionError(f"/metrics: {code}")
    return sum(int(v) for v in re.findall(
        rf'^sipedge_limit_hits_total{{worker="[^"]+",limit="{limit}"}} (\d+)$', text, re.M))


def counter(sport, name):
    _, text = http(sport, "GET", "/metrics")
    return sum(int(v) for v in re.findall(rf'^sipedge_{name}{{worker="\d+"}} (\d+)$', text, re.M))


def start(h, extra, upstream=None):
    port, sport = lib.free_port(HOST), lib.free_port(HOST)
    p = lib.start_sipedge(h, [("udp", HOST, port)], upstream=upstream,
                          extra=["--stats-listen", f"{HOST}:{sport}", *extra])
    lib.wait_until(lambda: lib.port_bound(sport, "tcp", HOST), 10, "the management port",
                   proc=p)
    return p, port, sport


# ---------------------------------------------------------------- a. DNS flood

class SilentDns:
    """A DNS server that reads queries, records their names and never answers."""

    def __init__(self):
        self.port = lib.free_port(HOST, kinds=("udp",))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, self.port))
        self.names, self.lock, self.stopping = [], threading.Lock(), False
        threading.Thread(target=self._loop, daemon=True).start()

    @staticmethod
    def qname(pkt):
        labels, i = [], 12
        while i < len(pkt) and pkt[i] and len(labels) < 64:
            labels.append(pkt[i + 1:i + 1 + pkt[i]].decode("ascii", "replace"))
            i += 1 + pkt[i]
        return ".".join(labels).lower()

    def _loop(self):
        while not self.stopping:
            try:
                pkt, _ = self.sock.recvfrom(4096)
            except OSError:
                return
            with self.lock:
                self.names.append(self.qname(pkt))

    def count(self, pred=lambda n: True):
        with self.lock:
            return sum(1 for n in self.names if pred(n))

    def close(self):
        self.stopping = True
        self.sock.close()


def peer_request(sink, port, ruri, cid):
    sink.udp.sendto(lib.build_request("MESSAGE", ruri, via_host=sink.host, via_port=sink.port,
                                      call_id=cid, from_uri=f"sip:server@{sink.host}"),
                    (HOST, port))


def finals_at(sinks, cids, timeout):
    """Final responses (SipMsg by Call-ID) the sinks received for cids."""
    want = set(cids)
    dl = lib.Deadline(timeout)
    got = {}
    while not dl.expired():
        for s in sinks:
            for m in s.matching(lambda m: m.is_response and m.call_id in want and m.code >= 200):
                got.setdefault(m.call_id, m)
        if len(got) == len(want):
            break
        time.sleep(0.05)
    return got


def case_dns_flood():
    dns, up = SilentDns(), lib.Sink(HOST)
    peers = [lib.Sink(f"127.0.0.{i}") for i in range(2, 6)]
    answerer = lib.SinkAnswerer(up, {"MESSAGE": 200})
    try:
        with lib.Harness("abuse-dns") as h:
            extra = ["--dns-server", f"{HOST}:{dns.port}", "--dns-max-pending", "16"]
            for i, s in enumerate(peers):
                extra += ["--peer", f"site-{i}.test=sip:{s.host}:{s.port};transport=udp"]
            p, port, sport = start(h, extra, upstream=f"{up.uri};transport=udp")
            tag = lib.new_tag()
            # warm-up: each source's worker opens its resolver socket
            warm = [f"warm-{i}-{tag}" for i in range(len(peers))]
            for s, cid in zip(peers, warm):
                peer_request(s, port, f"sip:u@warm-{cid}.flood.test", cid)
            finals_at(peers, warm, 8)
            use = Usage(p)
            q0 = dns.count()
            # the flood: 4 sources x 50 distinct names within half a second
            # (well inside the 3 s lookup timeout; paced only so that the
            # kernel's UDP buffers, not sipedge, never drop one)
            cids, n = [], 50
            rcvbuf0 = lib.udp_rcvbuf_errors()
            for k in range(n):
                for i, s in enumerate(peers):
                    cid = f"fl-{i}-{k}-{tag}"
                    cids.append(cid)
                    peer_request(s, port, f"sip:u@n{k}-{lib.new_tag()}.flood.test", cid)
                time.sleep(0.01)
            # others are served meanwhile
            t = time.monotonic()
            if lib.sip_ping(HOST, port, "udp", timeout=2) != 200:
                raise AssertionError("OPTIONS during the flood not answered")
            ping_ms = (time.monotonic() - t) * 1000
            r = lib.udp_request(HOST, port, "MESSAGE", "sip:agent@site-a.example.com",
                                f"ok-{tag}", timeout=3)
            if r is None or r.code != 200:
                raise AssertionError(f"an endpoint's MESSAGE during the flood: {r!r}")
            got = finals_at(peers, cids, 12)
            missing = len(cids) - len(got)
            codes = {m.code for m in got.values()}
            busy = sum(1 for m in got.values() if m.get("retry-after"))
            queries = dns.count() - q0
            hits = limit_hits(sport, "dns_max_pending")
            if missing or codes != {503}:
                drops = None if rcvbuf0 is None else lib.udp_rcvbuf_errors() - rcvbuf0
                raise AssertionError(f"{missing} of {len(cids)} unanswered, codes {codes} (UDP "
                                     f"receive buffer drops on the host: {drops})")
            # at most 2 per source in flight: 8 lookups, 2 tries each (slack x2)
            if queries > 32:
                raise AssertionError(f"{queries} DNS queries for {len(cids)} requests: "
                                     "lookups in flight not capped")
            if busy < len(cids) // 2 or hits != busy:
                raise AssertionError(f"{busy} 503s with Retry-After, {hits} counted "
                                     "dns_max_pending hits")
            dead = dead_name(dns, peers[0], port, tag)
            return (f"{len(cids)} requests -> {queries} DNS queries, {busy} 503 with Retry-After "
                    f"(= dns_max_pending hits), the rest 503 after the timeout; OPTIONS during "
                    f"it in {ping_ms:.1f} ms; {dead}; " + use.back_to_baseline(port))
    finally:
        answerer.stop()
        for s in [up, *peers]:
            s.close()
        dns.close()


def dead_name(dns, peer, port, tag):
    """One name whose lookup times out, then 20 more requests for it."""
    name = f"dead-{tag}.flood.test"
    first = f"dead-0-{tag}"
    peer_request(peer, port, f"sip:u@{name}", first)
    if first not in finals_at([peer], [first], 10):
        raise AssertionError("the dead name's first request unanswered")
    q1 = dns.count(lambda n: n.endswith(name))
    t = time.monotonic()
    more = [f"dead-{i}-{tag}" for i in range(1, 21)]
    for cid in more:
        peer_request(peer, port, f"sip:u@{name}", cid)
    got = finals_at([peer], more, 10)
    dt = time.monotonic() - t
    q2 = dns.count(lambda n: n.endswith(name))
    if len(got) != len(more) or q2 != q1 or dt > 2:
        raise AssertionError(f"dead name: {len(got)} of {len(more)} answered in {dt:.1f} s, "
                             f"queries {q1} -> {q2}: the failure was not remembered")
    return f"dead name: {q1} queries, 20 more requests answered in {dt * 1000:.0f} ms with none"


# ---------------------------------------------------------------- b, c. management port

class Trickler:
    """Connections to the management port that send their bytes slowly, one
    per `gap` seconds (or nothing), until the server closes them."""

    def __init__(self, port, payloads, gap=0.5):
        self.socks, self.closed_at, self.gap = [], {}, gap
        self.payloads = payloads
        self.t0 = time.monotonic()
        for _ in payloads:
            s = socket.create_connection((HOST, port), timeout=2)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            self.socks.append(s)
        self.stopping = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        i = 0
        while not self.stopping and len(self.closed_at) < len(self.socks):
            for k, s in enumerate(self.socks):
                if k in self.closed_at:
                    continue
                try:
                    if s.recv(4096) == b"":
                        self.closed_at[k] = time.monotonic() - self.t0
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_at[k] = time.monotonic() - self.t0
                    continue
                data = self.payloads[k]
                if i < len(data):
                    try:
                        s.send(data[i:i + 1])
                    except OSError:
                        self.closed_at[k] = time.monotonic() - self.t0
            i += 1
            time.sleep(self.gap)

    def close(self):
        self.stopping = True
        self.t.join(3)
        for s in self.socks:
            s.close()


def refused_at_once(sport):
    """A connection over the cap: closed without a byte within 2 s."""
    s = socket.create_connection((HOST, sport), timeout=2)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


def served_within(sport, t0, bound, ctx=None):
    """Seconds from t0 until a well-behaved GET /metrics gets 200."""
    while time.monotonic() - t0 < bound:
        try:
            code, _ = http(sport, "GET", "/metrics", ctx=ctx, timeout=2)
            if code == 200:
                return time.monotonic() - t0
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"no well-behaved client served within {bound} s")


def client_hello():
    """The first bytes of a TLS handshake (a ClientHello), to trickle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def mgmt_case(h, extra, payloads, ctx=None):
    p, port, sport = start(h, extra)
    http(sport, "GET", "/metrics", ctx=ctx)  # warm: the first render
    use = Usage(p)
    tr = Trickler(sport, payloads)
    try:
        time.sleep(0.5)  # the server has accepted them
        if not refused_at_once(sport):
            raise AssertionError("a 9th connection was not closed at once")
        dt = served_within(sport, tr.t0, MGMT_DEADLINE_S + 4, ctx=ctx)
        hits = limit_hits(sport, "stats_max_clients", ctx=ctx)
        lib.wait_until(lambda: len(tr.closed_at) == len(payloads), MGMT_DEADLINE_S + 3,
                       "every trickling connection closed", proc=p)
        late = max(tr.closed_at.values())
        if hits < 1 or late > MGMT_DEADLINE_S + 2:
            raise AssertionError(f"stats_max_clients hits {hits}, last trickler closed at "
                                 f"{late:.1f} s")
        return (f"9th closed at once ({hits} counted), tricklers closed by {late:.1f} s, "
                f"well-behaved client served at {dt:.1f} s; " + use.back_to_baseline(port))
    finally:
        tr.close()


def case_mgmt_plain():
    with lib.Harness("abuse-mgmt") as h:
        req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        return mgmt_case(h, [], [req] * 8)


def case_mgmt_tls():
    with lib.Harness("abuse-mgmt-tls") as h:
        certs = h.path("certs")
        gen_certs(certs)
        extra = ["--tls-cert", os.path.join(certs, "server.crt"),
                 "--tls-key", os.path.join(certs, "server.key"),
                 "--tls-ca", os.path.join(certs, "ca.crt"), "--stats-tls"]
        hello = client_hello()
        return mgmt_case(h, extra, [b""] * 4 + [hello] * 4, ctx=client_ctx(certs))


# ---------------------------------------------------------------- d. per-source rate

def invite(sock, port, cid):
    lhost, lport = sock.getsockname()[:2]
    sock.sendto(lib.build_request("INVITE", "sip:agent@site-a.example.com", via_host=lhost,
                                  via_port=lport, call_id=cid, from_uri=f"sip:caller@{lhost}",
                                  headers=[("Contact", f"<sip:caller@{lhost}:{lport}>")]),
                (HOST, port))


def collect(socks, cids, timeout):
    """Final responses (SipMsg by Call-ID) arriving on socks."""
    want, got = set(cids), {}
    dl = lib.Deadline(timeout)
    while len(got) < len(want) and not dl.expired():
        for s in socks:
            s.settimeout(0.05)
            try:
                while True:
                    m = lib.SipMsg(s.recv(65535))
                    if m.is_response and m.code >= 200 and m.call_id in want:
                        got.setdefault(m.call_id, m)
            except (socket.timeout, BlockingIOError):
                pass
    return got


def case_source_rate():
    up = lib.Sink(HOST)
    answerer = lib.SinkAnswerer(up, {"INVITE": 486})
    socks = []
    try:
        with lib.Harness("abuse-source-rate") as h:
            rate = 5
            p, port, sport = start(h, ["--overload-source-rate", str(rate)],
                                   upstream=f"{up.uri};transport=udp")
            use = Usage(p)
            for host in ["127.0.0.2"] * 4 + ["127.0.0.3"]:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((host, 0))
                socks.append(s)
            tag = lib.new_tag()
            flood, other = [], []
            t0 = time.monotonic()
            for k in range(60):
                cid = f"sr-{k}-{tag}"
                flood.append(cid)
                invite(socks[k % 4], port, cid)
                time.sleep(0.005)  # a burst, paced only for the kernel's UDP buffers
                if k % 20 == 10:
                    cid = f"ok-{k}-{tag}"
                    other.append(cid)
                    invite(socks[4], port, cid)
            t1 = time.monotonic()
            got = collect(socks, flood + other, 8)
            seconds = int(t1) - int(t0) + 1
            fwd = [c for c in flood if c in got and got[c].code == 486]
            busy = [c for c in flood if c in got and got[c].code == 503
                    and got[c].get("retry-after")]
            ok = [c for c in other if c in got and got[c].code == 486]
            hits = limit_hits(sport, "overload_source_rate")
            if len(fwd) + len(busy) != len(flood):
                raise AssertionError(f"{len(fwd)} forwarded, {len(busy)} 503 with Retry-After, "
                                     f"of {len(flood)} (codes {sorted({m.code for m in got.values()})})")
            if not 1 <= len(fwd) <= 2 * rate * seconds or hits != len(busy):
                raise AssertionError(f"{len(fwd)} of 127.0.0.2's INVITEs forwarded in {seconds} "
                                     f"s at rate {rate}; {hits} counted for {len(busy)} 503s")
            if len(ok) != len(other):
                raise AssertionError(f"127.0.0.3: {len(ok)} of {len(other)} forwarded")
            return (f"127.0.0.2: {len(fwd)} forwarded, {len(busy)} 503 with Retry-After "
                    f"{got[busy[0]].get('retry-after')} (counted); 127.0.0.3: all "
                    f"{len(other)} forwarded; " + use.back_to_baseline(port))
    finally:
        for s in socks:
            s.close()
        answerer.stop()
        up.close()


def main():
    return lib.run_cases("test_limits_abuse", 200, [
        ("a flood of DNS names is capped and answered 503", case_dns_flood),
        ("management port: trickling clients do not hold it", case_mgmt_plain),
        ("management port over TLS: the deadline includes the handshake", case_mgmt_tls),
        ("--overload-source-rate turns one source's INVITE flood away", case_source_rate),
    ])


if __name__ == "__main__":
    sys.exit(main())
