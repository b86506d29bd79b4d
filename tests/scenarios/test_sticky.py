#!/usr/bin/python3
"""Sticky flows end to end (ARCHITECTURE.md §1 identities, §2 routing):
Kamailio as the SIP Server/registrar behind a pool of two sipedge instances,
phones that register over TLS (or TCP) and never listen.

    caller (UDP) ──▶ Kamailio (registrar, tests/scenarios/kamailio/registrar.cfg)
                        │ Path: <sip:TOKEN@sipedge;lr> saved with each binding
                        ▼
         sipedge A (-w 2, 127.0.0.1)      sipedge B (-w 2, 127.0.0.2)
         same --flow-secret file, each its own --advertise
                        ▲  each phone's own connection, opened by the phone
                     phones 0..N-1 (Python ssl/socket, one event-loop thread)

Cases (one line each, then "N passed, M failed"):
  register   every phone REGISTERs sip:phoneK@DOMAIN through A with Contact
             <sip:phoneK@127.0.0.1:LOCALPORT;transport=tls>; Kamailio's 200
             comes back over the same connection with the Path A inserted
             (a flow token in its user part)
  spread     the connections landed on both of A's workers (which worker
             relayed each REGISTER is read from the Via branch Kamailio
             echoes); more phones are added if the kernel put all on one
  calls      for every phone: INVITE to Kamailio -> lookup -> Path -> A ->
             the phone's own connection; 180, 200, ACK and BYE all complete;
             some calls crossed workers (INVITE taken by one worker, phone's
             connection owned by the other) and some did not
  flow-gone  a phone closes its connection (and sees A close its side):
             the next INVITE to it gets a final 430 (or 480) back, in bounded
             time
  re-reg     the phone re-registers over a new connection (and removes its
             old Contact): calls to it work again, over the new connection
  gateway    a TLS endpoint that never registers calls a phone (through A,
             Kamailio, A); the phone hangs up and its BYE reaches the gateway
             over the gateway's own connection (Record-Route flow token)
  stale      a phone goes; another phone connects from its very address
             (ip:port, as behind one NAT binding) and registers: an INVITE for
             the first phone (whose binding and token Kamailio still holds)
             gets 430, and never reaches the second phone
  forged     a Route with a flow token whose MAC was altered gets 403 from A
  pool-430   B accepts a token minted by A (same secret) as genuine: 430
             Flow Failed because the flow is not on B, not 403 (sent from a
             socket B knows as a --peer site: a Path token serves only the
             SIP Server and peers, an endpoint using it gets 403)
  pool-move  a phone moves to B (re-registers there, closes its connection
             to A): calls follow through B
  exit       both instances exit 0 on SIGTERM without sanitizer reports;
             A's exit statistics show connections accepted on both workers
             and ring handovers

Usage: test_sticky.py [--transport tls|tcp] [--phones N]
Exit 0 when all pass, 1 otherwise, 77 (skip) without sipedge or Kamailio.
"""

import argparse
import os
import queue
import re
import secrets
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REGISTRAR_CFG = os.path.join(HERE, "kamailio", "registrar.cfg")
DOMAIN = "sip.example.test"
WAIT = 5.0           # bound of every single wait, seconds
GLOBAL_BOUND = 240   # bound of the whole test, seconds
BRANCH_RE = re.compile(r"branch=z9hG4bKSe([0-9a-f]{2})")


def worker_of_via(via):
    """The sipedge worker encoded in a Via's branch, or None."""
    m = BRANCH_RE.search(via or "")
    return int(m.group(1), 16) if m else None


# ---------------------------------------------------------------- phones

class Loop:
    """One thread doing every phone's socket I/O (selectors); other threads
    hand it work with call(). State changes are announced on `cv`."""

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.jobs = queue.Queue()
        self.cv = threading.Condition()
        self.stopping = False
        self.error = None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def call(self, fn):
        self.jobs.put(fn)
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def wait(self, pred, timeout=WAIT):
        with self.cv:
            return self.cv.wait_for(pred, timeout)

    def notify(self):
        with self.cv:
            self.cv.notify_all()

    def _run(self):
        try:
            while not self.stopping:
                for key, _ in self.sel.select(0.2):
                    if key.data is None:
                        try:
                            self.wake_r.recv(4096)
                        except BlockingIOError:
                            pass
                        while not self.jobs.empty():
                            self.jobs.get()()
                    else:
                        key.data.on_readable()
        except Exception as e:  # surfaces in the main thread's checks
            self.error = f"phone loop crashed: {e!r}"
            self.notify()

    def stop(self):
        """Runs the jobs already queued, then ends the thread."""
        self.call(lambda: setattr(self, "stopping", True))
        self.t.join(2)


class Phone:
    """A SIP phone on one outbound TLS/TCP connection: registers, answers
    INVITE with 180+200, takes ACK and BYE. It never listens, so the only
    way to reach it is the connection it opened."""

    def __init__(self, loop, idx, transport, ctx):
        self.loop, self.idx, self.transport, self.ctx = loop, idx, transport, ctx
        self.user = f"phone{idx}"
        self.aor = f"sip:{self.user}@{DOMAIN}"
        self.reg_call_id = f"reg-{self.user}-{secrets.token_hex(4)}"
        self.cseq = 0
        self.sock = None
        self.contact = None      # current Contact URI
        self.responses = []      # SipMsg replies to our requests
        self.calls = {}          # call-id -> {"invite": SipMsg, "ack": bool, "bye": bool}
        self.byes = set()        # call-ids of every BYE received
        self.closed = True
        self.worker = None       # sipedge worker that relayed our last REGISTER
        self.path = None         # the Path Kamailio echoed
        self.server = None

    # -- connection, from the main thread
    def connect(self, host, port, local=None):
        """Opens the connection (TLS handshake included), from `local`
        (host, port) when given: an address another phone used before."""
        raw = open_stream((host, port), local)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = raw
        if self.transport == "tls":
            s = self.ctx.wrap_socket(raw, server_hostname="localhost")  # handshake here
        s.setblocking(False)
        lhost, lport = s.getsockname()[:2]
        self.sock, self.framer, self.closed = s, lib.StreamFramer(), False
        self.server = (host, port)
        self.local = (lhost, lport)
        self.contact = f"sip:{self.user}@{lhost}:{lport};transport={self.transport}"
        sock = s
        self.loop.call(lambda: self.loop.sel.register(sock, selectors.EVENT_READ, self))

    def close(self):
        """Half-closes (shutdown write, no close_notify) and waits until the
        proxy closes its side: then it has processed the close."""
        s = self.sock

        def job():
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                self._gone()
        self.loop.call(job)
        return self.loop.wait(lambda: self.closed)

    # -- in the loop thread
    def _gone(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.sel.unregister(self.sock)
        except (KeyError, ValueError, OSError):
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.loop.notify()

    def on_readable(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                return
            except (OSError, ssl.SSLError):
                self._gone()
                return
            if not data:
                self._gone()
                return
            for raw in self.framer.feed(data):
                self._on_message(lib.parse_message(raw))
            if self.transport != "tls" or not self.sock.pending():
                return

    def _send(self, data):
        if self.closed:
            return
        try:
            self.sock.sendall(data)
        except (ssl.SSLWantWriteError, BlockingIOError):
            # small messages on loopback: wait for room, bounded
            end = time.monotonic() + WAIT
            while data and time.monotonic() < end:
                try:
                    n = self.sock.send(data)
                    data = data[n:]
                except (ssl.SSLWantWriteError, BlockingIOError):
                    time.sleep(0.001)
        except OSError:
            self._gone()

    def _on_message(self, m):
        if m.is_response:
            self.responses.append(m)
            self.loop.notify()
            return
        if m.method == "INVITE":
            tag = lib.new_tag()
            self.calls[m.call_id] = {"invite": m, "ack": False, "bye": False, "tag": tag}
            contact = [("Contact", f"<{self.contact}>")]
            self._send(lib.build_response(m, 180, "Ringing", to_tag=tag, headers=contact))
            self._send(lib.build_response(m, 200, "OK", to_tag=tag, headers=contact))
        elif m.method == "ACK":
            c = self.calls.get(m.call_id)
            if c:
                c["ack"] = True
        elif m.method == "BYE":
            c = self.calls.get(m.call_id)
            if c:
                c["bye"] = True
            self.byes.add(m.call_id)
            self._send(lib.build_response(m, 200, "OK"))
        else:
            self._send(lib.build_response(m, 200, "OK"))
        self.loop.notify()

    # -- requests, from the main thread
    def _request(self, lines, call_id, cseq):
        """Sends a request (lines without Via/Content-Length) over the
        connection; returns its final response or None."""
        lhost, lport = self.local
        via = f"Via: SIP/2.0/{self.transport.upper()} {lhost}:{lport};branch={lib.new_branch()};rport"
        data = ("\r\n".join([lines[0], via] + lines[1:] + ["Content-Length: 0"])
                + "\r\n\r\n").encode()
        n0 = len(self.responses)
        self.loop.call(lambda: self._send(data))

        def final():
            return next((r for r in self.responses[n0:] if r.code >= 200 and
                         r.call_id == call_id and r.get("cseq") == cseq), None) or self.closed
        if not self.loop.wait(final) or self.closed:
            return None
        return final()

    def place_call(self, user):
        """INVITE sip:user@DOMAIN through the proxy; ACKs a 2xx. Returns
        (final response or None, call-id)."""
        call_id = f"out-{self.user}-{secrets.token_hex(6)}"
        ruri = f"sip:{user}@{DOMAIN}"
        tag = lib.new_tag()
        r = self._request([f"INVITE {ruri} SIP/2.0", "Max-Forwards: 70",
                           f"From: <{self.aor}>;tag={tag}", f"To: <{ruri}>",
                           f"Call-ID: {call_id}", "CSeq: 1 INVITE",
                           f"Contact: <{self.contact}>"], call_id, "1 INVITE")
        if r is not None and r.code == 200:
            target = r.get("contact", "")
            target = target[target.find("<") + 1:target.find(">")]
            routes = [f"Route: {v}" for v in reversed(r.values("record-route"))]
            lhost, lport = self.local
            ack = [f"ACK {target} SIP/2.0",
                   f"Via: SIP/2.0/{self.transport.upper()} {lhost}:{lport};branch={lib.new_branch()}",
                   "Max-Forwards: 70", f"From: <{self.aor}>;tag={tag}", f"To: {r.get('to')}",
                   f"Call-ID: {call_id}", "CSeq: 1 ACK"] + routes
            data = ("\r\n".join(ack + ["Content-Length: 0"]) + "\r\n\r\n").encode()
            self.loop.call(lambda: self._send(data))
        return r, call_id

    def hang_up(self, call_id):
        """BYE for a call this phone answered (RFC 3261 §12.1.1: the route
        set is the INVITE's Record-Route in order, the target its Contact).
        Returns the final response or None."""
        inv = self.calls[call_id]["invite"]
        target = inv.get("contact", "")
        target = target[target.find("<") + 1:target.find(">")]
        to = inv.get("to") + f";tag={self.calls[call_id]['tag']}"
        lines = [f"BYE {target} SIP/2.0", "Max-Forwards: 70", f"From: {to}",
                 f"To: {inv.get('from')}", f"Call-ID: {call_id}", "CSeq: 1 BYE"]
        lines += [f"Route: {v}" for v in inv.values("record-route")]
        return self._request(lines, call_id, "1 BYE")

    def register(self, remove=(), expires=600):
        """REGISTERs the current Contact (and expires=0 for each URI in
        `remove`); returns the final response or None."""
        self.cseq += 1
        lhost, lport = self.local
        contacts = [f"<{self.contact}>"] + [f"<{u}>;expires=0" for u in remove]
        req = lib.build_request(
            "REGISTER", f"sip:{DOMAIN}", via_host=lhost, via_port=lport,
            transport=self.transport.upper(), from_uri=self.aor, to_uri=self.aor,
            call_id=self.reg_call_id, cseq=self.cseq,
            headers=[("Contact", ", ".join(contacts)), ("Expires", str(expires)),
                     ("Supported", "path")])
        n0 = len(self.responses)
        cseq = f"{self.cseq} REGISTER"
        self.loop.call(lambda: self._send(req))

        def final():
            return next((r for r in self.responses[n0:]
                         if r.code >= 200 and r.get("cseq") == cseq), None) or self.closed
        if not self.loop.wait(final) or self.closed:
            return None
        r = final()
        self.worker = worker_of_via(r.get("x-sipedge-via"))
        self.path = r.get("path")
        return r


def open_stream(remote, local=None):
    """A TCP connection to remote, from `local` (host, port) when given: an
    address another phone used before. Phones set SO_REUSEADDR like phones
    with a fixed local port do, so the old phone's TIME_WAIT does not block
    the bind (and Linux lets a connect reuse a TIME_WAIT 4-tuple with
    timestamps on); still, retry until connect() succeeds, bounded."""
    def attempt():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(WAIT)
        try:
            if local:
                s.bind(local)
            s.connect(remote)
            return s
        except OSError:
            s.close()
            if not local:
                raise
            return None
    return lib.wait_until(attempt, WAIT, what=f"a connection from {local}")


# ---------------------------------------------------------------- caller

class Caller:
    """A UDP user agent that places calls through Kamailio, one at a time."""

    def __init__(self, kam, sock=None):
        self.kam = kam
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
        self.sock = sock
        self.local = self.sock.getsockname()

    def _send(self, data, dst=None):
        self.sock.sendto(data, dst or self.kam)

    def _recv(self, call_id, cseq_method, deadline):
        while not deadline.expired():
            self.sock.settimeout(max(0.001, min(deadline.remaining(), 0.5)))
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                return "timeout"
            m = lib.parse_message(data)
            if m.is_response and m.call_id == call_id and m.cseq_method == cseq_method:
                return m
        return None

    def request(self, method, ruri, *, call_id, cseq, from_tag, to_hdr=None, routes=(),
                dst=None, timeout=WAIT):
        """Sends a request (retransmitted on the UDP T1 schedule until a
        response) and returns (final SipMsg or None, [provisional codes])."""
        branch = lib.new_branch()
        lines = [f"{method} {ruri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={branch};rport",
                 "Max-Forwards: 70",
                 f"From: <sip:caller@{DOMAIN}>;tag={from_tag}",
                 f"To: {to_hdr or '<' + ruri + '>'}",
                 f"Call-ID: {call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:caller@{self.local[0]}:{self.local[1]}>"]
        lines += [f"Route: {r}" for r in routes]
        lines.append("Content-Length: 0")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._send(data, dst)
        dl = lib.Deadline(timeout)
        prov, t1, got_any = [], 0.5, False
        next_retx = time.monotonic() + t1
        while not dl.expired():
            sub = lib.Deadline(min(dl.remaining(), max(0.001, next_retx - time.monotonic())))
            m = self._recv(call_id, method, sub)
            if isinstance(m, lib.SipMsg):
                got_any = True
                if m.code < 200:
                    prov.append(m.code)
                    continue
                if method == "INVITE" and m.code >= 300:
                    # hop-by-hop ACK for a non-2xx final response
                    ack = [f"ACK {ruri} SIP/2.0", lines[1], "Max-Forwards: 70", lines[3],
                           f"To: {m.get('to')}", f"Call-ID: {call_id}", f"CSeq: {cseq} ACK"]
                    ack += [f"Route: {r}" for r in routes]
                    self._send(("\r\n".join(ack + ["Content-Length: 0"]) + "\r\n\r\n").encode(),
                               dst)
                return m, prov
            if not got_any and time.monotonic() >= next_retx:
                self._send(data, dst)
                t1 = min(t1 * 2, 4.0)
                next_retx = time.monotonic() + t1
        return None, prov

    def call(self, user):
        """INVITE sip:user@DOMAIN -> final; on 2xx ACK and BYE. Returns a
        dict: code, prov, bye (BYE final code), elapsed (s)."""
        t0 = time.monotonic()
        call_id = f"call-{user}-{secrets.token_hex(6)}"
        ftag = lib.new_tag()
        ruri = f"sip:{user}@{DOMAIN}"
        final, prov = self.request("INVITE", ruri, call_id=call_id, cseq=1, from_tag=ftag)
        out = {"code": final.code if final else None, "prov": prov, "bye": None,
               "call_id": call_id, "elapsed": time.monotonic() - t0}
        if not final or final.code >= 300:
            return out
        # the dialog: route set = Record-Route reversed, remote target = Contact
        routes = list(reversed(final.values("record-route")))
        target = final.get("contact", "").strip()
        target = target[target.find("<") + 1:target.find(">")] if "<" in target else target
        to_hdr = final.get("to")
        ack = [f"ACK {target} SIP/2.0",
               f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={lib.new_branch()};rport",
               "Max-Forwards: 70", f"From: <sip:caller@{DOMAIN}>;tag={ftag}", f"To: {to_hdr}",
               f"Call-ID: {call_id}", "CSeq: 1 ACK"] + [f"Route: {r}" for r in routes]
        self._send(("\r\n".join(ack + ["Content-Length: 0"]) + "\r\n\r\n").encode())
        bye, _ = self.request("BYE", target, call_id=call_id, cseq=2, from_tag=ftag,
                              to_hdr=to_hdr, routes=routes)
        out["bye"] = bye.code if bye else None
        out["elapsed"] = time.monotonic() - t0
        return out

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- processes

def start_kamailio(h, port, name="kamailio"):
    rundir = h.path(f"{name}-run")
    os.makedirs(rundir, exist_ok=True)
    argv = ["kamailio", "-f", REGISTRAR_CFG, "-DD", "-E", "-m", 64, "-M", 8, "-n", 2,
            "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"), "-w", rundir,
            "-a", "no", "-l", f"udp:127.0.0.1:{port}", "-A", "WITH_VIA_ECHO"]
    return h.spawn(name, argv, ready=lambda: lib.sip_ping("127.0.0.1", port, "udp",
                                                          timeout=0.5) == 200,
                   ready_timeout=20.0)


def tls_options_ok(host, port, transport, ctx):
    """OPTIONS to sipedge itself over a fresh TLS/TCP connection -> 200?"""
    try:
        raw = socket.create_connection((host, port), timeout=2)
        s = ctx.wrap_socket(raw, server_hostname="localhost") if transport == "tls" else raw
        s.settimeout(2)
        lh, lp = s.getsockname()[:2]
        s.sendall(lib.build_request("OPTIONS", f"sip:{host}:{port};transport={transport}",
                                    via_host=lh, via_port=lp, transport=transport.upper()))
        fr, end = lib.StreamFramer(), time.monotonic() + 2
        while time.monotonic() < end:
            data = s.recv(65536)
            if not data:
                return False
            for raw_msg in fr.feed(data):
                m = lib.parse_message(raw_msg)
                if m.is_response and m.code >= 200:
                    s.close()
                    return m.code == 200
    except (OSError, ssl.SSLError):
        return False
    return False


STATS_RE = re.compile(r"\b(w\d+) info rx .*?conns accepted (\d+) .*?ring handover (\d+)")


def exit_stats(proc):
    """{worker: (conns accepted, ring handovers)} from the exit statistics."""
    _, err = proc.output()
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in STATS_RE.finditer(err)}


# ---------------------------------------------------------------- the test

class Results:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def run(args):
    res = Results()
    tr = args.transport
    with lib.Harness("sticky") as h:
        certs = h.path("certs")
        subprocess.run([os.path.join(lib.repo_root(), "scripts", "gen-devcerts.sh"), certs],
                       check=True, timeout=60)
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
        secret = h.path("flow-secret")
        with open(secret, "w") as f:
            f.write(secrets.token_hex(32) + "\n")

        kport = lib.free_port()
        kam = start_kamailio(h, kport)
        upstream = f"sip:127.0.0.1:{kport};transport=udp"
        tls_args = ["--tls-cert", os.path.join(certs, "server.crt"),
                    "--tls-key", os.path.join(certs, "server.key")] if tr == "tls" else []
        # a peer site of B's (pool-430 sends from it)
        peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer_sock.bind(("127.0.0.1", 0))
        peer_args = {"A": [], "B": ["--peer",
                                    f"site-p.test=sip:127.0.0.1:{peer_sock.getsockname()[1]}"]}
        inst = {}
        for name, host in (("A", "127.0.0.1"), ("B", "127.0.0.2")):
            pu, ps = lib.free_port(host), lib.free_port(host)
            p = lib.start_sipedge(h, [("udp", host, pu), (tr, host, ps)], upstream=upstream,
                                  workers=2, name=f"sipedge-{name}",
                                  extra=["--advertise", host, "--flow-secret", secret]
                                  + tls_args + peer_args[name])
            lib.wait_until(lambda: tls_options_ok(host, ps, tr, ctx), WAIT,
                           what=f"OPTIONS over {tr} to sipedge {name}", proc=p)
            inst[name] = {"proc": p, "host": host, "udp": pu, "stream": ps}
        A, B = inst["A"], inst["B"]

        loop = Loop()
        caller = Caller(("127.0.0.1", kport))
        phones = []
        try:
            # register
            def add_phone():
                ph = Phone(loop, len(phones), tr, ctx)
                ph.connect(A["host"], A["stream"])
                phones.append(ph)
                return ph.register()
            bad = []
            for _ in range(args.phones):
                r = add_phone()
                ph = phones[-1]
                if (not r or r.code != 200 or ph.contact not in (r.get("contact") or "")
                        or not ph.path or "@" not in ph.path):
                    bad.append(f"{ph.user}: {r.start if r else 'no answer'}")
            res.check(f"register {len(phones)} phones over {tr} via sipedge A -> Kamailio",
                      not bad, "; ".join(bad[:3]) or
                      f"200 OK with Path {phones[0].path.split('@')[0][:18]}...@... each")

            # spread over both workers
            while len({p.worker for p in phones}) < 2 and len(phones) < args.phones * 3:
                add_phone()
            per = {w: sum(1 for p in phones if p.worker == w) for w in (0, 1)}
            res.check("spread over A's two workers", per[0] > 0 and per[1] > 0,
                      f"worker 0: {per[0]} phones, worker 1: {per[1]}")

            # calls to every phone
            fails, crossed, straight, ringing = [], 0, 0, 0
            for ph in phones:
                r = caller.call(ph.user)
                c = ph.calls.get(r["call_id"])
                if c:  # Kamailio's children may relay the BYE ahead of the ACK
                    loop.wait(lambda: c["ack"] and c["bye"])
                ok = r["code"] == 200 and r["bye"] == 200 and c and c["ack"] and c["bye"]
                if not ok:
                    fails.append(f"{ph.user}: {r['code']}/{r['bye']} ack={c and c['ack']} "
                                 f"bye={c and c['bye']}")
                    continue
                # Kamailio's two UDP children may relay the 180 after the 200
                ringing += 180 in r["prov"]
                inv_worker = worker_of_via(c["invite"].get("via"))
                if inv_worker != ph.worker:
                    crossed += 1
                else:
                    straight += 1
            res.check(f"calls to {len(phones)} phones (INVITE/180/200/ACK/BYE)",
                      not fails and ringing > 0, "; ".join(fails[:3]) or
                      f"{crossed} crossed workers, {straight} stayed on one, "
                      f"180 seen before 200 in {ringing}")
            res.check("calls both crossed workers and stayed on one", crossed and straight,
                      f"crossed {crossed}, same worker {straight}")

            # flow gone: the phone closes its connection
            victim = phones[0]
            old_contact = victim.contact
            closed = victim.close()
            r = caller.call(victim.user)
            res.check("flow gone: INVITE after the phone closed gets 430/480",
                      closed and r["code"] in (430, 480),
                      f"final {r['code']} in {r['elapsed'] * 1000:.0f} ms"
                      + ("" if closed else " (proxy never closed its side)"))

            # re-register over a new connection
            victim.connect(A["host"], A["stream"])
            rr = victim.register(remove=[old_contact])
            contacts = (rr.get("contact") or "") if rr else ""
            r = caller.call(victim.user) if rr and rr.code == 200 else {"code": None,
                                                                        "bye": None}
            c = victim.calls.get(r.get("call_id"))
            if c:  # Kamailio's children may relay the BYE ahead of the ACK
                loop.wait(lambda: c["ack"] and c["bye"])
            res.check("re-register over a new connection, calls work again",
                      rr is not None and rr.code == 200 and old_contact not in contacts
                      and r["code"] == 200 and r["bye"] == 200 and c is not None and c["ack"],
                      f"register {rr.code if rr else None}, call {r['code']}/{r['bye']}")

            # a TLS endpoint that never registers (a gateway, an SBC) calls a
            # phone; the phone hangs up: the BYE must come back over the
            # gateway's own connection, routed by the token in the
            # Record-Route sipedge gave the gateway's INVITE
            gw = Phone(loop, len(phones), tr, ctx)
            gw.user, gw.aor = "gateway", f"sip:gateway@{DOMAIN}"
            gw.connect(A["host"], A["stream"])
            callee = phones[4]
            gr, gcid = gw.place_call(callee.user)
            gc = callee.calls.get(gcid)
            if gc:
                loop.wait(lambda: gc["ack"])
            bye = callee.hang_up(gcid) if gc and gr is not None and gr.code == 200 else None
            res.check("unregistered TLS gateway calls a phone, the phone's BYE reaches it",
                      gr is not None and gr.code == 200 and gc is not None and gc["ack"]
                      and bye is not None and bye.code == 200 and gcid in gw.byes,
                      f"INVITE {gr.code if gr else None}, ACK {bool(gc and gc['ack'])}, "
                      f"BYE {bye.code if bye else None}")
            phones.append(gw)

            # a stale token must not select a newer connection from the same
            # address (another device behind the same NAT binding, say)
            gone = phones[3]
            gone_local = gone.local
            gone.close()
            intruder = Phone(loop, len(phones), tr, ctx)
            intruder.user, intruder.aor = "intruder", f"sip:intruder@{DOMAIN}"
            try:
                intruder.connect(A["host"], A["stream"], local=gone_local)
                ir = intruder.register()
            except (lib.TestTimeout, OSError, ssl.SSLError) as e:
                ir = None
                print(f"note: could not reuse {gone_local}: {e}", flush=True)
            if ir is not None and ir.code == 200:
                phones.append(intruder)
                r = caller.call(gone.user)
                leaked = [cid for cid in intruder.calls if cid == r["call_id"]]
                res.check("stale token, same address reused by another phone: 430, not delivered",
                          r["code"] in (430, 480) and not leaked,
                          f"final {r['code']}" + (", INVITE reached the other phone"
                                                  if leaked else ""))
            else:
                res.check("stale token, same address reused by another phone: 430, not delivered",
                          False, "the other phone could not register from the old address")

            # forged token -> 403 from A
            probe = phones[1]
            token = probe.path.split("<", 1)[-1].split("@", 1)[0].split(":", 1)[-1]
            forged = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
            route = f"<sip:{forged}@{A['host']}:{A['udp']};transport=udp;lr>"
            fr, _ = caller.request("INVITE", probe.contact, call_id=f"forged-{secrets.token_hex(4)}",
                                   cseq=1, from_tag=lib.new_tag(), routes=[route],
                                   dst=(A["host"], A["udp"]))
            res.check("forged flow token gets 403", fr is not None and fr.code == 403,
                      f"final {fr.code if fr else None}")

            # pool: B takes A's token as genuine, but the flow is not on B
            # (from B's peer site: a Path token serves no endpoint)
            route = f"<sip:{token}@{B['host']}:{B['udp']};transport=udp;lr>"
            pr, _ = Caller(None, peer_sock).request(
                "INVITE", probe.contact, call_id=f"pool-{secrets.token_hex(4)}", cseq=1,
                from_tag=lib.new_tag(), routes=[route], dst=(B["host"], B["udp"]))
            res.check("pool: B accepts A's token (same secret) and answers 430",
                      pr is not None and pr.code == 430, f"final {pr.code if pr else None}")

            # pool: the phone moves to B, calls follow
            mover = phones[2]
            old_contact, old_path = mover.contact, mover.path
            mover.close()
            mover.connect(B["host"], B["stream"])
            mr = mover.register(remove=[old_contact])
            moved = mr is not None and mr.code == 200 and B["host"] in (mover.path or "")
            r = caller.call(mover.user) if moved else {"code": None, "bye": None}
            c = mover.calls.get(r.get("call_id"))
            if c:
                loop.wait(lambda: c["ack"] and c["bye"])
            via = c["invite"].get("via", "") if c else ""
            res.check("pool: phone moves to B, calls follow through B",
                      moved and r["code"] == 200 and r["bye"] == 200 and c is not None
                      and c["ack"] and f"{B['host']}:{B['stream']}" in via,
                      f"register {mr.code if mr else None} Path via "
                      f"{'B' if moved else old_path}, call {r['code']}/{r['bye']}, "
                      f"INVITE Via {via.split(';')[0]}")
            if loop.error:
                res.check("phone event loop", False, loop.error)
        finally:
            for ph in phones:
                if not ph.closed:
                    loop.call(ph._gone)
            loop.stop()
            caller.close()
            peer_sock.close()

        # exit: clean SIGTERM, statistics, sanitizers
        notes, ok = [], True
        for name in ("A", "B"):
            p = inst[name]["proc"]
            rc = p.stop(signal.SIGTERM, timeout=10)
            san = lib.sanitizer_report(p)
            if rc != 0 or san:
                ok = False
                notes.append(f"{name} exit {rc}{' ' + san if san else ''}")
        st = exit_stats(A["proc"])
        accepted = {w: v[0] for w, v in st.items()}
        handed = sum(v[1] for v in st.values())
        if len(accepted) < 2 or min(accepted.values()) == 0 or handed == 0:
            ok = False
        notes.append("A: " + ", ".join(f"{w} accepted {a}" for w, a in sorted(accepted.items()))
                     + f", ring handovers {handed}")
        res.check("exit 0, no sanitizer report, both workers used, ring used", ok,
                  "; ".join(notes))
        kam.stop()
        if res.failed:
            h.failed = True
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transport", choices=("tls", "tcp"), default="tls")
    ap.add_argument("--phones", type=int, default=24)
    args = ap.parse_args()
    if args.phones < 3:
        ap.error("--phones: at least 3")
    if not lib.have_sipedge() or not shutil.which("kamailio"):
        print("SKIP: needs build/sipedge (or $SIPEDGE_BIN) and kamailio")
        return 77
    lib.raise_on_sigterm()
    try:
        with lib.time_bound(GLOBAL_BOUND, "test_sticky"):
            res = run(args)
    except (lib.GlobalTimeout, lib.Terminated, lib.TestTimeout, lib.ProcessDied,
            subprocess.SubprocessError, OSError) as e:
        print(f"FAIL aborted: {type(e).__name__}: {e}", flush=True)
        print("0 passed, 1 failed")
        return 1
    print(f"{res.passed} passed, {res.failed} failed")
    return 0 if res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
