#!/usr/bin/python3
"""Connection limits under abuse (ARCHITECTURE.md §6, issue 11): every
connection resource an outsider can grow is bounded, counted in /metrics
(sipedge_limit_hits_total{limit=...}) and the proxy keeps serving others.

Each case starts its own sipedge (-w 2, loopback, small limits by flag) with
--stats-listen, and after the abuse checks that the open descriptors of
sipedge (/proc/PID/fd) are back to the baseline taken before it (+-2: a
resolver socket may come or go) and its RSS within +64 MB of it (a coarse
bound: the allocator and ASan keep freed pages, and live transactions hold
copies of the requests for 32 s), and that it still answers an OPTIONS over
UDP within 2 s (the latency is printed, never asserted tighter).

Cases:
  slowloris    4 TCP clients each sending one byte per 100 ms of a message
               that never ends, --message-timeout 1000: each is closed at
               the deadline (bound 6 s; the base code's constant is 30 s),
               counted message_timeout; a client sending whole OPTIONS on
               its own connection meanwhile gets every answer
  tls          --tls-handshake-timeout 1000: clients that never send a
               ClientHello, send half of one, or send a whole one and never
               go on, are all closed (bound 6 s) and counted
               tls_handshake_timeout (the base code closed them but counted
               no limit); a good TLS client gets 200 meanwhile
  idle         --idle-timeout 2 --registrar: a TCP connection idle after one
               OPTIONS, one that never sent a byte and one sending only CRLF
               keep-alives every 0.5 s are closed (bound 8 s) and counted
               idle_timeout; a phone re-REGISTERing every second stays open
               and answers. A registered phone sending only keep-alives stays
               because the registrar holds its connection (worker_conn_hold)
  outbound_idle     --idle-timeout 2 -u tcp upstream probed every 5 s: the
               outbound connection idles out (the upstream sees EOF, bound
               8 s), counted idle_timeout
  outbound_counted  --max-connections K+2 while the K outbound probe
               connections (one per worker) are open: only 2 of 4 inbound
               connections are let in (outbound ones count too), counted
               max_connections
  per_ip       --max-connections-per-ip 20: of 30 connections from
               127.0.0.2 exactly 20 are served, the others closed at once
               (counted); 127.0.0.3 still connects and REGISTERs; once
               127.0.0.2's connections close it may connect again
  slow_reader  --max-queued-bytes 65536: a registered TCP phone that never
               reads (4 KB receive buffer) gets 8 KB MESSAGEs through the
               proxy until its queue passes the cap: its connection is
               closed (counted max_queued_bytes, well before the base
               code's fixed 1 MiB) while another phone gets every request
               sent to it; sipedge_queued_bytes is back to 0
  queue_total  --max-queued-total 1 (MB per worker): 4 registered phones
               that never read get 8 KB MESSAGEs in turn (each stays under
               its 1 MiB cap; two share a worker): the slowest are closed,
               counted max_queued_total, another phone keeps getting
               requests, and sipedge_queued_bytes is back to 0

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge binary.
"""

import os
import re
import select
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_stats import http  # noqa: E402
from test_tls import gen_certs  # noqa: E402

HOST = "127.0.0.1"
FD_TOL = 2
RSS_TOL_KB = 64 * 1024


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


# ---------------------------------------------------------------- sipedge

def start(h, extra, tls=None, registrar=True, upstream=None):
    """sipedge -w 2 on UDP+TCP port P (and TLS port Q with tls=(cert, key))
    with --stats-listen S. Returns the Proc with .P, .Q, .S."""
    p_port, s_port = lib.free_port(HOST), lib.free_port(HOST, kinds=("tcp",))
    listens = [("udp", HOST, p_port), ("tcp", HOST, p_port)]
    args = ["--stats-listen", f"{HOST}:{s_port}", *extra]
    q_port = None
    if tls:
        q_port = lib.free_port(HOST, kinds=("tcp",))
        listens.append(("tls", HOST, q_port))
        args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    p = lib.start_sipedge(h, listens, upstream=upstream, registrar=registrar, workers=2,
                          extra=args)
    p.P, p.Q, p.S = p_port, q_port, s_port
    lib.wait_until(lambda: lib.port_bound(s_port, "tcp", HOST), 5, what="stats port", proc=p)
    return p


def metrics(p):
    code, body = http(p.S, "GET", "/metrics")
    expect(code == 200, f"GET /metrics: {code}")
    return body


def metric(p, name, label=None, text=None):
    """Sum over the workers of sipedge_<name>, or of the series with
    label (key, value)."""
    text = text if text is not None else metrics(p)
    if label:
        rx = rf'^sipedge_{name}{{worker="\d+",{label[0]}="{label[1]}"}} (\d+)$'
    else:
        rx = rf'^sipedge_{name}{{worker="\d+"}} (\d+)$'
    vals = re.findall(rx, text, re.M)
    if not vals:
        raise Failed(f"/metrics has no sipedge_{name} {label or ''}")
    return sum(int(v) for v in vals)


def limit_hits(p, limit):
    return metric(p, "limit_hits_total", ("limit", limit))


def fds(p):
    return len(os.listdir(f"/proc/{p.pid}/fd"))


def rss_kb(p):
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def options_latency(p):
    t0 = time.monotonic()
    code = lib.sip_ping(HOST, p.P, "udp", timeout=2.0)
    took = time.monotonic() - t0
    expect(code == 200, f"OPTIONS over UDP: {code} (no 200 within 2 s)")
    return took


class Baseline:
    """Descriptors and RSS of sipedge before the abuse, checked after it."""

    def __init__(self, p):
        lib.sip_ping(HOST, p.P, "tcp", timeout=2.0)  # the lazily created pieces
        self.p = p
        lib.wait_until(lambda: metric(p, "connections_open") == 0, 5,
                       what="no connection open before the baseline")
        self.fds, self.rss = fds(p), rss_kb(p)

    def check(self):
        """Once every connection closed (bounded wait), the descriptors and
        RSS are back; returns a note."""
        p = self.p
        lib.wait_until(lambda: metric(p, "connections_open") == 0, 10,
                       what="every connection closed")
        lib.wait_until(lambda: fds(p) <= self.fds + FD_TOL, 10,
                       what=f"descriptors back to {self.fds} (+{FD_TOL})")
        now_fds, now_rss = fds(p), rss_kb(p)
        expect(now_rss <= self.rss + RSS_TOL_KB,
               f"RSS {now_rss} kB, baseline {self.rss} kB (tolerance {RSS_TOL_KB} kB)")
        took = options_latency(p)
        return (f"fds {self.fds}->{now_fds}, RSS {self.rss // 1024}->{now_rss // 1024} MB, "
                f"OPTIONS answered in {took * 1000:.1f} ms")


def closed_now(sock):
    """True when the peer closed sock (EOF or reset); reads and drops what
    is pending. Never blocks."""
    try:
        while True:
            r, _, _ = select.select([sock], [], [], 0)
            if not r:
                return False
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError, OSError):
        return True


def tcp_from(src, port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # a small window, and segments of an Ethernet path rather than
        # loopback's 64 KB: the kernel sizes sipedge's send buffer from
        # them, as it would for a phone across a network
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1200)
    s.bind((src, 0))
    s.settimeout(5)
    s.connect((HOST, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def client_on(sock, port):
    """A lib.SipClient over an already connected TCP socket."""
    c = lib.SipClient.__new__(lib.SipClient)
    c.host, c.port, c.transport, c.sock = HOST, port, "tcp", sock
    c.framer, c.pending, c.closed = lib.StreamFramer(), [], False
    c.local = sock.getsockname()[:2]
    return c


def register_req(aor_user, client, port, expires=60, call_id=None, cseq=1):
    lh, lp = client.local
    return lib.build_request(
        "REGISTER", f"sip:{HOST}:{port}", via_host=lh, via_port=lp, transport="TCP",
        from_uri=f"sip:{aor_user}@{HOST}", to_uri=f"sip:{aor_user}@{HOST}",
        call_id=call_id, cseq=cseq,
        headers=[("Contact", f"<sip:{aor_user}@{lh}:{lp};transport=tcp>"),
                 ("Expires", str(expires))])


def register(client, user, port, **kw):
    cid = kw.pop("call_id", None) or f"reg-{user}-{time.monotonic_ns()}"
    client.send(register_req(user, client, port, call_id=cid, **kw))
    dl = lib.Deadline(3)
    while not dl.expired():
        m = client.recv_msg(dl.remaining())
        if m is None:
            break
        if m.call_id == cid and m.code and m.code >= 200:
            return m.code
    return None


class Phone(threading.Thread):
    """A registered TCP phone that answers every request with 200 and counts
    them by Call-ID prefix."""

    def __init__(self, user, port):
        super().__init__(daemon=True)
        self.c = lib.SipClient(HOST, port, "tcp")
        code = register(self.c, user, port)
        expect(code == 200, f"REGISTER {user}: {code}")
        self.got = []
        self.stopping = False
        self.start()

    def run(self):
        while not self.stopping:
            try:
                m = self.c.recv_msg(0.2)
            except OSError:
                return
            if m is None:
                if self.c.closed:
                    return
                continue
            if m.method:
                self.got.append(m.call_id)
                if m.method != "ACK":
                    try:
                        self.c.send(lib.build_response(m, 200, "OK", to_tag=lib.new_tag()))
                    except OSError:
                        return

    def stop(self):
        self.stopping = True
        self.join(2)
        self.c.close()


def message_to(user, port, call_id, body_len, caller):
    lh, lp = caller.getsockname()[:2]
    return lib.build_request("MESSAGE", f"sip:{user}@{HOST}:{port}", via_host=lh, via_port=lp,
                             call_id=call_id, from_uri=f"sip:caller@{HOST}",
                             headers=[("Content-Type", "text/plain")], body=b"x" * body_len)


def udp_caller():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    return s


# ---------------------------------------------------------------- cases

def case_slowloris():
    with lib.Harness("limits-slowloris") as h:
        p = start(h, ["--message-timeout", "1000"], registrar=False)
        base = Baseline(p)
        good = lib.SipClient(HOST, p.P, "tcp")
        head = (f"OPTIONS sip:{HOST}:{p.P} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {HOST}:9;branch=z9hG4bKslow\r\nX-Slow: ").encode()
        slow = []
        for _ in range(4):
            s = tcp_from(HOST, p.P)
            slow.append({"s": s, "t0": time.monotonic(), "i": 0, "closed": None})
        answered = asked = 0
        dl = lib.Deadline(6)
        next_ping = 0.0
        while not dl.expired() and any(c["closed"] is None for c in slow):
            for c in slow:
                if c["closed"] is not None:
                    continue
                byte = head[c["i"]:c["i"] + 1] or b"a"
                c["i"] += 1
                try:
                    c["s"].send(byte)
                except OSError:
                    c["closed"] = time.monotonic() - c["t0"]
                    continue
                if closed_now(c["s"]):
                    c["closed"] = time.monotonic() - c["t0"]
            if time.monotonic() >= next_ping:
                asked += 1
                answered += lib.ping_on(good, timeout=2.0) == 200
                next_ping = time.monotonic() + 0.3
            time.sleep(0.1)
        for c in slow:
            c["s"].close()
        good.close()
        times = [c["closed"] for c in slow]
        expect(all(t is not None for t in times),
               f"slow senders still open after 6 s: closed at {times}")
        expect(answered == asked, f"the whole-message client got {answered} of {asked} answers")
        hits = limit_hits(p, "message_timeout")
        expect(hits >= 4, f"limit message_timeout counted {hits}, want >= 4")
        note = base.check()
        return (f"closed after {', '.join(f'{t:.2f}' for t in times)} s (deadline 1 s), "
                f"{answered}/{asked} OPTIONS answered meanwhile, message_timeout {hits}; {note}")


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def case_tls():
    with lib.Harness("limits-tls") as h:
        certs = h.path("certs")
        os.makedirs(certs)
        gen_certs(certs)
        p = start(h, ["--tls-handshake-timeout", "1000"],
                  tls=(os.path.join(certs, "server.crt"), os.path.join(certs, "server.key")),
                  registrar=False)
        base = Baseline(p)
        hello = client_hello()
        expect(len(hello) > 100, f"ClientHello of {len(hello)} bytes")
        kinds = [("silent", b""), ("silent", b""), ("half hello", hello[:len(hello) // 2]),
                 ("half hello", hello[:len(hello) // 2]), ("whole hello", hello),
                 ("whole hello", hello)]
        bad = []
        for kind, data in kinds:
            s = tcp_from(HOST, p.Q)
            if data:
                s.sendall(data)
            bad.append({"kind": kind, "s": s, "t0": time.monotonic(), "closed": None})
        # a good client meanwhile
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(os.path.join(certs, "ca.crt"))
        raw = socket.create_connection((HOST, p.Q), timeout=5)
        local = raw.getsockname()[:2]
        good = ctx.wrap_socket(raw, server_hostname="localhost")
        good.sendall(lib.options_request(HOST, p.Q, "tls", local))
        fr, got = lib.StreamFramer(), []
        good.settimeout(3)
        while not got:
            d = good.recv(65536)
            expect(d, "the good TLS client's connection closed without an answer")
            got = fr.feed(d)
        code = lib.SipMsg(got[0]).code
        good.close()
        dl = lib.Deadline(6)
        while not dl.expired() and any(c["closed"] is None for c in bad):
            for c in bad:
                if c["closed"] is None and closed_now(c["s"]):
                    c["closed"] = time.monotonic() - c["t0"]
            time.sleep(0.05)
        for c in bad:
            c["s"].close()
        open_left = [c["kind"] for c in bad if c["closed"] is None]
        expect(not open_left, f"still open after 6 s: {open_left}")
        expect(code == 200, f"good TLS client got {code}")
        hits = limit_hits(p, "tls_handshake_timeout")
        fails = metric(p, "tls_failures_total", ("reason", "timeout"))
        expect(hits >= 6, f"limit tls_handshake_timeout counted {hits}, want >= 6")
        expect(fails >= 6, f"tls failures by timeout {fails}, want >= 6")
        note = base.check()
        return (", ".join(f"{c['kind']} closed after {c['closed']:.2f} s" for c in bad) +
                f" (timeout 1 s); good client 200; tls_handshake_timeout {hits}; {note}")


def case_idle():
    with lib.Harness("limits-idle") as h:
        p = start(h, ["--idle-timeout", "2"])
        base = Baseline(p)
        conns = {}
        idle = lib.SipClient(HOST, p.P, "tcp")
        expect(lib.ping_on(idle) == 200, "idle client's OPTIONS")
        conns["idle after OPTIONS"] = idle
        conns["never sent a byte"] = lib.SipClient(HOST, p.P, "tcp")
        ka = lib.SipClient(HOST, p.P, "tcp")
        expect(lib.ping_on(ka) == 200, "keep-alive client's OPTIONS")
        conns["keep-alives only"] = ka
        refresher = lib.SipClient(HOST, p.P, "tcp")
        expect(register(refresher, "refresher", p.P) == 200, "REGISTER refresher")
        held = lib.SipClient(HOST, p.P, "tcp")
        expect(register(held, "held", p.P) == 200, "REGISTER held")
        t0 = time.monotonic()
        closed = {}
        refresh_codes = []
        last_ka = last_reg = 0.0
        dl = lib.Deadline(8)
        while not dl.expired() and len(closed) < len(conns):
            now = time.monotonic()
            if now - last_ka >= 0.5:
                for c in (ka, held):
                    try:
                        c.sock.sendall(b"\r\n\r\n")
                    except OSError:
                        pass
                last_ka = now
            if now - last_reg >= 1.0:
                refresh_codes.append(register(refresher, "refresher", p.P))
                last_reg = time.monotonic()
            for name, c in conns.items():
                if name not in closed and closed_now(c.sock):
                    closed[name] = time.monotonic() - t0
            time.sleep(0.05)
        held_open = not closed_now(held.sock)
        ref_open = not closed_now(refresher.sock)
        ref_ping = lib.ping_on(refresher) if ref_open else None
        for c in list(conns.values()) + [refresher, held]:
            c.close()
        still = [n for n in conns if n not in closed]
        expect(not still, f"not closed within 8 s at --idle-timeout 2: {still}")
        expect(ref_open and ref_ping == 200 and set(refresh_codes) == {200},
               f"re-registering phone: open {ref_open}, OPTIONS {ref_ping}, "
               f"REGISTERs {refresh_codes}")
        hits = limit_hits(p, "idle_timeout")
        expect(hits >= 3, f"limit idle_timeout counted {hits}, want >= 3")
        if not held_open:
            raise Failed("a registered phone sending keep-alives was idled out")
        hold_note = "registered keep-alive phone kept open (held)"
        note = base.check()
        return (", ".join(f"{n} closed after {t:.1f} s" for n, t in closed.items()) +
                f"; re-registering phone open and answering; {hold_note}; "
                f"idle_timeout {hits}; {note}")


class Upstream:
    """A TCP SIP Server stand-in: answers every OPTIONS with 200, records
    each connection's accept, last message and close times."""

    def __init__(self):
        self.port = lib.free_port(HOST, kinds=("tcp",))
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((HOST, self.port))
        self.ls.listen(64)
        self.conns = []  # dicts: opened, last, closed
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            rec = {"opened": time.monotonic(), "last": time.monotonic(), "closed": None}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(c, rec), daemon=True).start()

    def _serve(self, c, rec):
        fr = lib.StreamFramer()
        while not self.stopping:
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            if not d:
                rec["closed"] = time.monotonic()
                c.close()
                return
            for raw in fr.feed(d):
                rec["last"] = time.monotonic()
                m = lib.SipMsg(raw)
                if m.method and m.method != "ACK":
                    try:
                        c.sendall(lib.build_response(m, 200, "OK"))
                    except OSError:
                        pass

    def open_count(self):
        with self.lock:
            return sum(1 for r in self.conns if r["closed"] is None)

    def close(self):
        self.stopping = True
        self.ls.close()


def case_outbound_idle():
    up = Upstream()
    try:
        with lib.Harness("limits-outbound-idle") as h:
            p = start(h, ["--idle-timeout", "2", "--oos-check", "5"], registrar=False,
                      upstream=f"sip:{HOST}:{up.port};transport=tcp")
            lib.wait_until(lambda: up.conns, 10, what="a probe connection to the upstream")
            first = up.conns[0]
            lib.wait_until(lambda: first["closed"], 8, what="the outbound connection to idle out")
            idle_for = first["closed"] - first["last"]
            hits = limit_hits(p, "idle_timeout")
            expect(hits >= 1, f"limit idle_timeout counted {hits}")
            took = options_latency(p)
        return (f"outbound connection closed {idle_for:.1f} s after its last message "
                f"(--idle-timeout 2), idle_timeout {hits}, OPTIONS answered in "
                f"{took * 1000:.1f} ms")
    finally:
        up.close()


def case_outbound_counted():
    up = Upstream()
    limit = 4
    try:
        with lib.Harness("limits-outbound-count") as h:
            # the probes (every second) keep the outbound connections busy
            # and open: one per worker, each worker probing on its own
            p = start(h, ["--oos-check", "1", "--max-connections", str(limit)],
                      registrar=False, upstream=f"sip:{HOST}:{up.port};transport=tcp")
            try:
                lib.wait_until(lambda: up.open_count() >= 2, 5, what="a probe per worker")
            except lib.TestTimeout:
                pass  # one worker probes for all: fewer outbound, more inbound
            lib.wait_until(lambda: up.open_count() >= 1 and
                           metric(p, "connections_open") == up.open_count(), 10,
                           what="only the probe connections open")
            k = up.open_count()
            expect(1 <= k <= 2, f"{k} outbound connections")
            clients = [lib.SipClient(HOST, p.P, "tcp") for _ in range(4)]
            codes = [lib.ping_on(c, timeout=2.0) for c in clients]
            for c in clients:
                c.close()
            let_in = sum(1 for c in codes if c == 200)
            want = limit - k
            expect(let_in == want, f"{let_in} of 4 inbound connections served with {k} outbound "
                   f"under --max-connections {limit} (want {want}): {codes}")
            hits = limit_hits(p, "max_connections")
            expect(hits >= 4 - want, f"limit max_connections counted {hits}")
            took = options_latency(p)
        return (f"{k} outbound + {let_in} inbound let in under --max-connections {limit}, "
                f"{4 - let_in} refused (max_connections {hits}), OPTIONS answered in "
                f"{took * 1000:.1f} ms")
    finally:
        up.close()


def case_per_ip():
    with lib.Harness("limits-per-ip") as h:
        p = start(h, ["--max-connections-per-ip", "20"])
        base = Baseline(p)
        flood = [tcp_from("127.0.0.2", p.P) for _ in range(30)]
        other = lib.SipClient(HOST, p.P, "tcp", bind=("127.0.0.3", 0))
        reg = register(other, "other", p.P)
        served = 0
        for s in flood:
            served += lib.ping_on(client_on(s, p.P), timeout=2.0) == 200
        other_ping = lib.ping_on(other)
        hits = limit_hits(p, "max_connections_per_ip")
        for s in flood:
            s.close()
        expect(served == 20, f"{served} of 30 connections from 127.0.0.2 served, want 20")
        expect(reg == 200 and other_ping == 200,
               f"127.0.0.3 meanwhile: REGISTER {reg}, OPTIONS {other_ping}")
        expect(hits == 10, f"limit max_connections_per_ip counted {hits}, want 10")
        # the count comes back down as the connections close
        lib.wait_until(lambda: metric(p, "connections_open") == 1, 5,
                       what="127.0.0.2's connections closed")
        again = lib.SipClient(HOST, p.P, "tcp", bind=("127.0.0.2", 0))
        again_code = lib.ping_on(again)
        again.close()
        other.close()
        expect(again_code == 200, f"127.0.0.2 after its connections closed: {again_code}")
        note = base.check()
        return (f"20 of 30 served from 127.0.0.2, 10 refused (counted {hits}); 127.0.0.3 "
                f"registered; 127.0.0.2 served again later; {note}")


def slow_phone(user, port):
    """A registered TCP phone that will never read again (4 KB buffer)."""
    c = client_on(tcp_from(HOST, port, rcvbuf=4096), port)
    code = register(c, user, port)
    expect(code == 200, f"REGISTER {user}: {code}")
    return c


def feed_slow(p, phones, fast, limit, max_each):
    """Sends 8 KB MESSAGEs to the slow phones in turn (and a small one to
    the fast phone every 4th) until limit bites or max_each each were sent.
    Returns (sent per slow phone, fast call ids sent)."""
    caller = udp_caller()
    sent = [0] * len(phones)
    fast_ids = []
    try:
        for r in range(max_each):
            for i, ph in enumerate(phones):
                if ph is None:
                    continue
                caller.sendto(message_to(ph, p.P, f"slow-{i}-{r}", 8000, caller), (HOST, p.P))
                sent[i] += 1
                time.sleep(0.002)
            if r % 4 == 0:
                cid = f"fast-{r}"
                caller.sendto(message_to(fast, p.P, cid, 100, caller), (HOST, p.P))
                fast_ids.append(cid)
            if r % 8 == 7 and limit_hits(p, limit) >= 1:
                break
    finally:
        caller.close()
    return sent, fast_ids


def case_slow_reader():
    with lib.Harness("limits-slow-reader") as h:
        p = start(h, ["--max-queued-bytes", "65536"])
        base = Baseline(p)
        fast = Phone("fast", p.P)
        slow = slow_phone("slow", p.P)
        sent, fast_ids = feed_slow(p, ["slow"], "fast", "max_queued_bytes", 80)
        hits = limit_hits(p, "max_queued_bytes")
        closed = lib.wait_until(lambda: closed_now(slow.sock), 5,
                                what="the slow reader's connection to close")
        slow.close()
        lib.wait_until(lambda: set(fast_ids) <= set(fast.got), 5,
                       what="every request to the fast phone")
        caller = udp_caller()
        caller.sendto(message_to("fast", p.P, "fast-after", 100, caller), (HOST, p.P))
        caller.close()
        lib.wait_until(lambda: "fast-after" in fast.got, 5, what="a request after the close")
        queued = metric(p, "queued_bytes")
        fast.stop()
        expect(closed and hits >= 1, f"limit max_queued_bytes counted {hits}")
        expect(queued == 0, f"sipedge_queued_bytes {queued} after the slow reader closed")
        note = base.check()
        return (f"slow reader closed after {sent[0]} x 8 KB (cap 64 KB, counted {hits}); "
                f"fast phone got all {len(fast_ids) + 1} requests; queued_bytes 0; {note}")


def case_queue_total():
    with lib.Harness("limits-queue-total") as h:
        p = start(h, ["--max-queued-total", "1"])
        base = Baseline(p)
        fast = Phone("fast", p.P)
        users = [f"slow{i}" for i in range(4)]
        slows = [slow_phone(u, p.P) for u in users]
        sent, fast_ids = feed_slow(p, users, "fast", "max_queued_total", 300)
        hits = limit_hits(p, "max_queued_total")
        per_conn = limit_hits(p, "max_queued_bytes")
        closed = [closed_now(s.sock) for s in slows]
        for s in slows:
            s.close()
        lib.wait_until(lambda: set(fast_ids) <= set(fast.got), 5,
                       what="every request to the fast phone")
        lib.wait_until(lambda: metric(p, "queued_bytes") == 0, 5,
                       what="sipedge_queued_bytes back to 0")
        fast.stop()
        expect(hits >= 1, f"limit max_queued_total counted {hits} after {sent} x 8 KB")
        expect(any(closed), "no slow reader's connection was closed")
        note = base.check()
        return (f"{sum(closed)} of 4 slow readers closed by the 1 MB worker budget after "
                f"{sent} x 8 KB (counted {hits}, per-connection cap {per_conn}); fast phone got all {len(fast_ids)} requests; "
                f"queued_bytes 0; {note}")


def main():
    return lib.run_cases("connection limits", 300, [
        ("slowloris closed at --message-timeout", case_slowloris),
        ("TLS handshakes bounded by --tls-handshake-timeout", case_tls),
        ("idle connections closed at --idle-timeout", case_idle),
        ("outbound connections idle out", case_outbound_idle),
        ("outbound connections count against --max-connections", case_outbound_counted),
        ("--max-connections-per-ip", case_per_ip),
        ("a reader that never reads, closed at --max-queued-bytes", case_slow_reader),
        ("--max-queued-total closes the slowest readers", case_queue_total),
    ])


if __name__ == "__main__":
    sys.exit(main())
