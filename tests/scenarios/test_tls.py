#!/usr/bin/python3
"""TLS on every leg, on the wire (ARCHITECTURE.md §3): sipedge against
Python's ssl module as phones, callers and upstream SIP Servers.

Certificates come from scripts/gen-devcerts.sh (a dev CA, a server
certificate for localhost/127.0.0.1/::1, a client certificate, a second CA
with a certificate signed by it, an expired and a wrong-name certificate);
the reload case signs one more server certificate with the dev CA here.

Instances (each -w 2, UDP and TCP on P, TLS on Q, --registrar):
  main    --tls-cert/--tls-key copies in the temp dir (rewritten by case d),
          --tls-handshake-timeout 500
  mutual  --tls-mutual
  up-good / up-bad   -u sip:127.0.0.1:U;transport=tls, U a Python TLS
          server presenting server.crt / wrongname.crt

Cases (one line each, then "N passed, M failed"):
  a   OPTIONS over TLS 1.2 and 1.3 gets 200; a second connection resumes
      the session (tickets shared by the workers)
  b   mutual TLS: no client certificate, a certificate from the other CA,
      an expired certificate are refused (the client sees the handshake
      fail or the connection end without an answer) and each is logged
      with its reason; a good client certificate gets 200
  c   outbound TLS: through a verified upstream a request gets 200 and one
      connection carries every request; an upstream whose certificate has
      the wrong name gets no SIP byte (its handshake fails), sipedge logs
      bad_name and the caller gets a 408/503-class final answer
  d   SIGHUP with 100 live TLS connections: a broken key keeps the old
      material (one error line); a good one is "TLS material reloaded", every
      connection still answers OPTIONS and new handshakes present the new
      certificate
  e   a connection that never sends a ClientHello is closed after
      --tls-handshake-timeout (bound 10 s) and counted as timeout; plaintext
      SIP to the TLS port gets no SIP answer and is counted as protocol
  f   a phone registers over TLS and never listens: an INVITE from a UDP
      caller reaches it on that very connection with Record-Route
      transport=tls;Q over transport=udp;P, and its 200 reaches the caller;
      the phone's own INVITE to a UDP callee (registered too) carries the
      mirror image
  z   every instance exits 0 on SIGTERM with no sanitizer report, and its
      workers' exit statistics count the failures above by reason

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge binary.
"""

import hashlib
import os
import re
import secrets
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

HOST = "127.0.0.1"
HS_TIMEOUT_MS = 500
LIVE_CONNS = 100


# ---------------------------------------------------------------- TLS peers

def client_ctx(certs, version=None, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca.crt"))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class TlsClient(lib.SipClient):
    """lib.SipClient over TLS: one connection to sipedge's TLS listener.
    `raw` is a connected TCP socket (so a caller knows the local port even
    when the handshake fails, which raises ssl.SSLError/OSError here)."""

    def __init__(self, raw, port, ctx, server_hostname="localhost", session=None):
        self.host, self.port, self.transport = HOST, port, "tls"
        self.framer = lib.StreamFramer()
        self.pending = []
        self.closed = False
        self.local = raw.getsockname()[:2]
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:  # ssl.SSLError included
            self.closed = True

    def _fill(self, timeout):
        try:
            return super()._fill(timeout)
        except OSError:
            self.closed = True
            return False


def connect_raw(port, timeout=5.0):
    return socket.create_connection((HOST, port), timeout=timeout)


def tls_connect(port, ctx, **kw):
    raw = connect_raw(port)
    try:
        return TlsClient(raw, port, ctx, **kw)
    except BaseException:
        raw.close()
        raise


def tls_attempt(port, ctx):
    """A handshake and an OPTIONS ping. Returns (local port, status code or
    None, what happened)."""
    raw = connect_raw(port)
    lport = raw.getsockname()[1]
    try:
        c = TlsClient(raw, port, ctx)
    except OSError as e:
        raw.close()
        return lport, None, f"handshake refused ({type(e).__name__}: {e})"
    try:
        code = lib.ping_on(c, timeout=3.0)
        return lport, code, "answered" if code else "closed without an answer"
    finally:
        c.close()


def der_of(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()[:16]


class TlsUpstream:
    """A TLS SIP server on loopback standing in for the SIP Server: answers
    every request 200, records handshake outcomes, connections and every byte
    of application data it receives."""

    def __init__(self, certfile, keyfile):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certfile, keyfile)
        self.port = lib.free_port(HOST, kinds=("tcp",))
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, self.port))
        self.lsock.listen(16)
        self.lock = threading.Lock()
        self.handshakes_ok = 0
        self.handshake_errors = []
        self.app_bytes = 0
        self.msgs = []
        self.socks = []
        self.stopping = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def uri(self):
        return f"sip:{HOST}:{self.port};transport=tls"

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, raw):
        raw.settimeout(10)
        try:
            s = self.ctx.wrap_socket(raw, server_side=True)
        except OSError as e:
            with self.lock:
                self.handshake_errors.append(str(e))
            raw.close()
            return
        with self.lock:
            self.handshakes_ok += 1
            self.socks.append(s)
        fr = lib.StreamFramer()
        while not self.stopping:
            try:
                data = s.recv(65535)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.app_bytes += len(data)
            for raw_msg in fr.feed(data):
                m = lib.SipMsg(raw_msg)
                with self.lock:
                    self.msgs.append(m)
                if m.method and m.method != "ACK":
                    try:
                        s.sendall(lib.build_response(m, 200, "OK", to_tag=lib.new_tag()))
                    except OSError:
                        return

    def close(self):
        self.stopping = True
        for s in [self.lsock] + self.socks:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------- helpers

def gen_certs(d):
    script = os.path.join(lib.repo_root(), "scripts", "gen-devcerts.sh")
    subprocess.run([script, d], check=True, timeout=120)


def sign_server_cert(certs, out_cert, out_key, workdir,
                     san="DNS:localhost,IP:127.0.0.1,IP:::1"):
    """Another server certificate (by default localhost, 127.0.0.1, ::1) from
    the dev CA."""
    ext = os.path.join(workdir, "leaf.cnf")
    with open(ext, "w") as f:
        f.write("[leaf]\nbasicConstraints = critical,CA:FALSE\n"
                "keyUsage = critical,digitalSignature,keyAgreement\n"
                "extendedKeyUsage = serverAuth,clientAuth\n"
                f"subjectAltName = {san}\n")
    csr = os.path.join(workdir, "leaf.csr")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, timeout=60,  # noqa: E731
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out_key)
    run("req", "-new", "-key", out_key, "-subj", "/O=sipedge dev/CN=localhost", "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", os.path.join(certs, "ca.crt"),
        "-CAkey", os.path.join(certs, "ca.key"), "-set_serial", "0x" + secrets.token_hex(8),
        "-days", "30", "-sha256", "-extfile", ext, "-extensions", "leaf", "-out", out_cert)


def replace_file(src, dst):
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def log_text(proc):
    return proc.output()[1]


def wait_log(proc, pattern, timeout=5.0, start=0):
    """The first match of regex `pattern` in proc's stderr after offset
    `start`, waiting up to timeout (TestTimeout)."""
    rx = re.compile(pattern)

    def look():
        return rx.search(log_text(proc), start)
    return lib.wait_until(look, timeout, what=f"log line /{pattern}/")


def log_end(proc):
    return len(log_text(proc))


def start_instance(h, name, certs, extra):
    p_port = lib.free_port(HOST)
    q_port = lib.free_port(HOST, kinds=("tcp",))
    listens = [("udp", HOST, p_port), ("tcp", HOST, p_port), ("tls", HOST, q_port)]
    p = lib.start_sipedge(h, listens, registrar=True, workers=2, extra=extra, name=name)
    p.P, p.Q = p_port, q_port
    lib.wait_until(lambda: lib.port_bound(q_port, "tcp", HOST), 5, what=f"{name} tls listener")
    return p


def final_on(client, call_id, timeout):
    """The first final response for call_id on client (provisional skipped)."""
    dl = lib.Deadline(timeout)
    while not dl.expired():
        m = client.recv_msg(dl.remaining())
        if m is None:
            return None
        if m.call_id == call_id and m.code is not None and m.code >= 200:
            return m
    return None


def request_on(client, call_id, timeout):
    dl = lib.Deadline(timeout)
    while not dl.expired():
        m = client.recv_msg(dl.remaining())
        if m is None:
            return None
        if m.call_id == call_id and m.method:
            return m
    return None


def stats_totals(proc):
    """Sums of the workers' exit statistics: tls handshakes, resumed, and
    each failure reason."""
    tot = {}
    for line in log_text(proc).splitlines():
        m = re.search(r"tls handshakes (\d+) resumed (\d+) failed(.*)$", line)
        if not m:
            continue
        tot["handshakes"] = tot.get("handshakes", 0) + int(m.group(1))
        tot["resumed"] = tot.get("resumed", 0) + int(m.group(2))
        for k, v in re.findall(r"(\w+)=(\d+)", m.group(3)):
            tot[k] = tot.get(k, 0) + int(v)
    return tot


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


# ---------------------------------------------------------------- cases

def case_a(env):
    notes = []
    for label, ver in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        ctx = client_ctx(env.certs, ver)
        c = tls_connect(env.main.Q, ctx)
        try:
            expect(c.sock.version() == f"TLSv{label}", f"negotiated {c.sock.version()}")
            code = lib.ping_on(c, timeout=3.0)
            expect(code == 200, f"TLS {label}: OPTIONS got {code}")
            sess = c.sock.session
        finally:
            c.close()
        resumed = 0
        for _ in range(4):  # lands on either worker: tickets are shared
            c2 = tls_connect(env.main.Q, ctx, session=sess)
            try:
                code = lib.ping_on(c2, timeout=3.0)
                expect(code == 200, f"TLS {label} resumed: OPTIONS got {code}")
                resumed += c2.sock.session_reused
            finally:
                c2.close()
        expect(resumed == 4, f"TLS {label}: {resumed}/4 connections resumed the session")
        notes.append(f"TLS {label} 200, 4/4 resumed")
    env.expect_min["main"]["resumed"] = 8
    return ", ".join(notes)


def case_b(env):
    p = env.mutual
    c = env.certs
    bad = [("no client certificate", None, None, "no_certificate"),
           ("other CA", "other-ca.crt", "other-ca.key", "unknown_ca"),
           ("expired", "expired.crt", "expired.key", "expired")]
    notes = []
    for vlabel, ver in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        for label, cert, key, reason in bad:
            ctx = client_ctx(c, ver, cert and os.path.join(c, cert), key and os.path.join(c, key))
            start = log_end(p)
            lport, code, what = tls_attempt(p.Q, ctx)
            expect(code is None, f"TLS {vlabel} {label}: answered {code}")
            wait_log(p, rf"tls handshake failed from 127\.0\.0\.1:{lport}: {reason}\b",
                     start=start)
            notes.append(f"{vlabel}/{reason}")
            env.expect_min["mutual"][reason] = env.expect_min["mutual"].get(reason, 0) + 1
        ctx = client_ctx(c, ver, os.path.join(c, "client.crt"), os.path.join(c, "client.key"))
        _, code, what = tls_attempt(p.Q, ctx)
        expect(code == 200, f"TLS {vlabel} good client certificate: {what} {code}")
    return "refused and logged: " + " ".join(notes) + "; good client cert 200 on 1.2 and 1.3"


def udp_request(env, proxy, method, ruri, timeout, cl=None):
    own = cl is None
    if own:
        cl = lib.SipClient(HOST, proxy.P, "udp")
    try:
        cid = "tls-" + secrets.token_hex(6)
        cl.send(lib.build_request(method, ruri, via_host=HOST, via_port=cl.local[1],
                                  call_id=cid, from_uri=f"sip:caller@{HOST}",
                                  headers=[("Contact", f"<sip:caller@{HOST}:{cl.local[1]}>")]))
        return final_on(cl, cid, timeout)
    finally:
        if own:
            cl.close()


def case_c(env):
    good, bad = env.up_good, env.up_bad
    # One client socket: the same UDP flow lands on the same worker, and each
    # worker owns its own connection to the upstream (ARCHITECTURE §1), so
    # reuse is only observable within one worker.
    cl = lib.SipClient(HOST, env.upg.P, "udp")
    try:
        rs = [udp_request(env, env.upg, "OPTIONS", "sip:bob@example.com", 10, cl)
              for _ in range(2)]
    finally:
        cl.close()
    for i, r in enumerate(rs):
        expect(r is not None and r.code == 200,
               f"via the verified upstream, request {i + 1}: {r.code if r else 'no answer'}")
    def probes_seen():
        with good.lock:
            return [m for m in good.msgs
                    if m.method == "OPTIONS" and "sipedge@" in m.get("from", "")]
    # --oos-check 1: a service-state probe comes within a few seconds (bounded wait)
    dl = lib.Deadline(10)
    while not probes_seen() and not dl.expired():
        time.sleep(0.05)
    probes = probes_seen()
    with good.lock:
        # each worker owns its connection to the upstream and keeps it for
        # its OPTIONS service-state probes too: at most one per worker
        expect(1 <= good.handshakes_ok <= 2, f"good upstream saw {good.handshakes_ok} handshakes "
                                              "(want connections reused, one per worker at most)")
        expect(probes, "no OPTIONS service-state probe reached the TLS upstream over TLS")
        vias = [m.get("via", "") for m in good.msgs if m.method == "OPTIONS"]
    expect(vias and all(v.startswith(f"SIP/2.0/TLS {HOST}:{env.upg.Q}") for v in vias),
           f"Via towards the TLS upstream: {vias[:1]}")

    start = log_end(env.upb)
    t0 = time.monotonic()
    r = udp_request(env, env.upb, "OPTIONS", "sip:bob@example.com", 45)
    took = time.monotonic() - t0
    wait_log(env.upb, rf"tls handshake failed with 127\.0\.0\.1:{bad.port} .*: bad_name",
             start=start)
    env.expect_min["upb"]["bad_name"] = 1
    with bad.lock:
        expect(bad.app_bytes == 0 and not bad.msgs,
               f"wrong-name upstream received {bad.app_bytes} bytes of application data")
        expect(bad.handshakes_ok == 0 and bad.handshake_errors,
               f"wrong-name upstream: {bad.handshakes_ok} handshakes completed")
        herr = bad.handshake_errors[0]
    expect(r is not None and r.code in (408, 480, 503, 504),
           f"caller's answer: {r.code if r else 'none'}")
    return (f"good upstream 200 x2 on 1 connection; wrong name: bad_name logged, upstream saw "
            f"no SIP byte ({herr[:50]}), caller got {r.code} after {took:.0f}s")


def case_d(env):
    p, certs, tmp = env.main, env.certs, env.tmp
    ctx = client_ctx(certs)
    old_der = der_of(env.cert_path)
    conns = []
    try:
        for i in range(LIVE_CONNS):
            c = tls_connect(p.Q, ctx)
            conns.append(c)
            expect(lib.ping_on(c, timeout=3.0) == 200, f"connection {i}: no 200 before reload")
            expect(c.sock.getpeercert(binary_form=True) == old_der, "old certificate not served")

        new_cert, new_key = os.path.join(tmp, "new.crt"), os.path.join(tmp, "new.key")
        sign_server_cert(certs, new_cert, new_key, tmp)
        new_der = der_of(new_cert)
        expect(new_der != old_der, "the new certificate is the old one")

        # A new certificate with the old key: refused, the old material stays.
        replace_file(new_cert, env.cert_path)
        start = log_end(p)
        p.send_signal(signal.SIGHUP)
        wait_log(p, r"TLS reload failed, keeping the current material: --tls-key: .*does not "
                    r"match", start=start)
        time.sleep(0.2)  # a wrongly applied reload would have been swapped in by now
        errs = [ln for ln in log_text(p)[start:].splitlines() if " error " in ln]
        expect(len(errs) == 1, f"{len(errs)} error lines for one failed reload")
        c = tls_connect(p.Q, ctx)
        try:
            expect(c.sock.getpeercert(binary_form=True) == old_der,
                   "after a failed reload the certificate changed")
            expect(lib.ping_on(c, timeout=3.0) == 200, "no 200 after a failed reload")
        finally:
            c.close()

        replace_file(new_key, env.key_path)
        start = log_end(p)
        p.send_signal(signal.SIGHUP)
        wait_log(p, r"info TLS material reloaded", start=start)
        for i, c in enumerate(conns):
            expect(lib.ping_on(c, timeout=3.0) == 200, f"live connection {i} lost by the reload")
        seen = set()
        for _ in range(4):
            c = tls_connect(p.Q, ctx)
            try:
                seen.add(c.sock.getpeercert(binary_form=True) == new_der)
                expect(lib.ping_on(c, timeout=3.0) == 200, "no 200 on a new connection")
            finally:
                c.close()
        expect(seen == {True}, "a new handshake after the reload presented the old certificate")
    finally:
        for c in conns:
            c.close()
    return (f"bad key kept {fingerprint(old_der)}; reload: {LIVE_CONNS}/{LIVE_CONNS} live "
            f"connections answer, new handshakes present {fingerprint(new_der)}")


def case_e(env):
    p = env.main
    s = connect_raw(p.Q)
    lport = s.getsockname()[1]
    start = log_end(p)
    t0 = time.monotonic()
    s.settimeout(10)
    try:
        data = s.recv(4096)
    except socket.timeout:
        data = None
    except OSError:
        data = b""
    took = time.monotonic() - t0
    s.close()
    expect(data == b"", "silent connection not closed within 10 s"
           if data is None else f"silent connection got {data[:40]!r}")
    wait_log(p, rf"tls handshake failed from 127\.0\.0\.1:{lport}: timeout", start=start)

    s = connect_raw(p.Q)
    lport = s.getsockname()[1]
    s.sendall(lib.options_request(HOST, p.Q, "tls", s.getsockname()[:2]))
    got, closed = b"", False
    s.settimeout(5)
    try:
        while True:
            d = s.recv(4096)
            if not d:
                closed = True
                break
            got += d
    except socket.timeout:
        pass
    except OSError:
        closed = True
    s.close()
    expect(b"SIP/2.0" not in got, "plaintext SIP on the TLS port was answered in SIP")
    expect(closed, "plaintext SIP on the TLS port: connection left open")
    wait_log(p, rf"tls handshake failed from 127\.0\.0\.1:{lport}: protocol", start=start)
    env.expect_min["main"]["timeout"] = 1
    env.expect_min["main"]["protocol"] = 1
    return (f"silent connection closed after {took:.1f}s (timeout {HS_TIMEOUT_MS} ms), "
            f"plaintext SIP closed unanswered; both logged")


def rr_entry(value, transport, port):
    """Is value a Record-Route entry of ours for transport and port? The user
    part (a flow token, when the proxy adds one) is not looked at."""
    m = re.match(r"^<sip:(?:[^@>]*@)?([^:;>]+):(\d+)((?:;[^>]*)?)>$", value)
    if not m or m.group(1) != HOST or int(m.group(2)) != port:
        return False
    params = [x.lower() for x in m.group(3).split(";") if x]
    return f"transport={transport}" in params and "lr" in params


def rr_check(msg, first, second, who):
    rr = msg.values("record-route")
    expect(len(rr) >= 2 and rr_entry(rr[0], *first) and rr_entry(rr[1], *second),
           f"{who}: Record-Route {rr}, want {first[0]}:{first[1]} then {second[0]}:{second[1]}")


def case_f(env):
    p = env.main
    ctx = client_ctx(env.certs)
    phone = tls_connect(p.Q, ctx)
    caller = lib.SipClient(HOST, p.P, "udp")
    callee = lib.SipClient(HOST, p.P, "udp")
    try:
        pport = phone.local[1]
        cid = "reg-" + secrets.token_hex(6)
        phone.send(lib.build_request(
            "REGISTER", f"sip:{HOST}:{p.Q}", via_host=HOST, via_port=pport, transport="TLS",
            call_id=cid, from_uri=f"sip:alice@{HOST}", to_uri=f"sip:alice@{HOST}",
            headers=[("Contact", f"<sip:alice@{HOST}:{pport};transport=tls>"),
                     ("Expires", "300")]))
        r = final_on(phone, cid, 5)
        expect(r is not None and r.code == 200, f"REGISTER over TLS: {r.code if r else None}")

        # UDP caller -> the phone's own TLS connection
        cid = "call-" + secrets.token_hex(6)
        caller.send(lib.build_request(
            "INVITE", f"sip:alice@{HOST}:{p.P}", via_host=HOST, via_port=caller.local[1],
            call_id=cid, from_uri=f"sip:caller@{HOST}",
            headers=[("Contact", f"<sip:caller@{HOST}:{caller.local[1]}>"),
                     ("Content-Type", "application/sdp")], body="v=0\r\n"))
        inv = request_on(phone, cid, 5)
        expect(inv is not None and inv.method == "INVITE",
               "the INVITE did not arrive on the phone's TLS connection")
        expect(inv.ruri.startswith(f"sip:alice@{HOST}:{pport}"), f"R-URI {inv.ruri}")
        rr_check(inv, ("tls", p.Q), ("udp", p.P), "INVITE to the phone")
        phone.send(lib.build_response(inv, 200, "OK", to_tag=lib.new_tag(),
                                      headers=[("Contact", f"<sip:alice@{HOST}:{pport};"
                                                           "transport=tls>")]))
        ok = final_on(caller, cid, 5)
        expect(ok is not None and ok.code == 200,
               f"caller got {ok.code if ok else 'nothing'} for the phone's 200")
        rr_check(ok, ("tls", p.Q), ("udp", p.P), "200 at the caller")

        # the phone -> a UDP callee, registered here too (the edge policy
        # lets an endpoint reach only bindings and flows sipedge holds, not
        # any host its Request-URI names)
        cid = "reg-" + secrets.token_hex(6)
        cport = callee.local[1]
        callee.send(lib.build_request(
            "REGISTER", f"sip:{HOST}:{p.P}", via_host=HOST, via_port=cport, call_id=cid,
            from_uri=f"sip:carol@{HOST}", to_uri=f"sip:carol@{HOST}",
            headers=[("Contact", f"<sip:carol@{HOST}:{cport}>"), ("Expires", "300")]))
        r = final_on(callee, cid, 5)
        expect(r is not None and r.code == 200, f"REGISTER over UDP: {r.code if r else None}")
        cid = "call-" + secrets.token_hex(6)
        phone.send(lib.build_request(
            "INVITE", f"sip:carol@{HOST}:{p.P}", via_host=HOST, via_port=pport,
            transport="TLS", call_id=cid, from_uri=f"sip:alice@{HOST}",
            headers=[("Contact", f"<sip:alice@{HOST}:{pport};transport=tls>")]))
        inv = request_on(callee, cid, 5)
        expect(inv is not None, "the phone's INVITE did not reach the UDP callee")
        rr_check(inv, ("udp", p.P), ("tls", p.Q), "INVITE to the UDP callee")
        callee.sock.sendto(lib.build_response(inv, 200, "OK", to_tag=lib.new_tag()),
                           (HOST, p.P))
        ok = final_on(phone, cid, 5)
        expect(ok is not None and ok.code == 200,
               f"phone got {ok.code if ok else 'nothing'} over TLS for the callee's 200")
    finally:
        phone.close()
        caller.close()
        callee.close()
    return "UDP->TLS on the registered connection and TLS->UDP, Record-Route both ways"


def case_z(env):
    problems = []
    for key, p in (("main", env.main), ("mutual", env.mutual), ("upg", env.upg),
                   ("upb", env.upb)):
        st = p.stop(timeout=15)  # the SIGTERM drain may take up to 5 s
        if st != 0:
            problems.append(f"{p.name} exit {st}")
        rep = lib.sanitizer_report(p)
        if rep:
            problems.append(f"{p.name}: {rep}")
        tot = stats_totals(p)
        if not tot:
            problems.append(f"{p.name}: no exit statistics")
            continue
        for k, want in env.expect_min[key].items():
            if tot.get(k, 0) < want:
                problems.append(f"{p.name}: {k}={tot.get(k, 0)}, want >= {want}")
    expect(not problems, "; ".join(problems))
    return "clean exits, failures counted by reason in the exit statistics"


# ---------------------------------------------------------------- main

class Env:
    pass


def main():
    lib.raise_on_sigterm()
    if not lib.have_sipedge():
        print(f"SKIP: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)")
        print("0 passed, 0 failed")
        return 77
    passed = failed = 0

    def report(ok, text):
        nonlocal passed, failed
        print(("PASS " if ok else "FAIL ") + text, flush=True)
        passed += ok
        failed += not ok

    env = Env()
    env.up_good = env.up_bad = None
    with lib.Harness("tls") as h:
        try:
            with lib.time_bound(240, "test_tls"):
                env.tmp = h.dir
                env.certs = h.path("certs")
                gen_certs(env.certs)
                env.cert_path, env.key_path = h.path("cert.pem"), h.path("key.pem")
                shutil.copyfile(os.path.join(env.certs, "server.crt"), env.cert_path)
                shutil.copyfile(os.path.join(env.certs, "server.key"), env.key_path)
                ca = os.path.join(env.certs, "ca.crt")
                env.up_good = TlsUpstream(os.path.join(env.certs, "server.crt"),
                                          os.path.join(env.certs, "server.key"))
                env.up_bad = TlsUpstream(os.path.join(env.certs, "wrongname.crt"),
                                         os.path.join(env.certs, "wrongname.key"))
                common = ["--tls-ca", ca, "--tls-handshake-timeout", str(HS_TIMEOUT_MS)]
                srv = ["--tls-cert", os.path.join(env.certs, "server.crt"),
                       "--tls-key", os.path.join(env.certs, "server.key")]
                env.main = start_instance(h, "main", env.certs,
                                          ["--tls-cert", env.cert_path, "--tls-key",
                                           env.key_path] + common)
                env.mutual = start_instance(h, "mutual", env.certs,
                                            srv + common + ["--tls-mutual"])
                env.upg = start_instance(h, "upg", env.certs,
                                         srv + common + ["-u", env.up_good.uri,
                                                         "--oos-check", "1"])
                env.upb = start_instance(h, "upb", env.certs,
                                         srv + common + ["-u", env.up_bad.uri])
                env.expect_min = {"main": {}, "mutual": {}, "upg": {"handshakes": 1},
                                  "upb": {}}
                for name, fn in (("a", case_a), ("b", case_b), ("c", case_c), ("d", case_d),
                                 ("e", case_e), ("f", case_f), ("z", case_z)):
                    try:
                        note = fn(env)
                        report(True, f"{name}: {note}")
                    except (Failed, OSError, lib.TestTimeout, lib.ProcessDied,
                            subprocess.SubprocessError) as e:
                        h.failed = True
                        report(False, f"{name}: {type(e).__name__}: {e}")
        except (lib.GlobalTimeout, lib.Terminated) as e:
            h.failed = True
            report(False, str(e))
        finally:
            for u in (env.up_good, env.up_bad):
                if u:
                    u.close()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
