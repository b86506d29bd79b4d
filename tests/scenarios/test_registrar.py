#!/usr/bin/python3
"""The built-in registrar authenticates and is bounded (issue 10 "registration
hijack", issue 11 "location service"), on the wire over UDP, TCP and TLS.

Instances (each -w 2, the built-in registrar, no SIP Server, --stats-listen):
  digest  UDP+TCP on P, TLS on Q; --auth-users FILE: alice (MD5 and SHA-256
          HA1), bob (MD5 only)
  limits  UDP+TCP on P, open (loopback); --min-expires 2 --max-expires 1800
          --max-bindings 2 --max-aors 3
  cert    UDP on P, TLS on Q; --tls-mutual --auth-by-certificate, no
          --auth-users; alice's certificate carries SAN URI
          sip:alice@cc.example.com

Cases (one PASS/FAIL line each, then "N passed, M failed"):
  challenge_T  (T = udp, tcp, tls) a REGISTER without credentials gets 401
               with SHA-256 then MD5 challenges for alice, MD5 only for bob,
               realm = the AOR's domain
  digest_T     SHA-256 and MD5 credentials register alice (200, the Contact
               listed), bob registers with MD5; a wrong password gets 401
  hijack_T     alice's valid credentials for bob's AOR get 403, and so does
               "Contact: *" for bob's AOR; an OPTIONS to bob's AOR still
               reaches bob's phone
  replay       alice's Authorization replayed from another address (with
               another Contact) gets 401: the nonce covers the sender's IP
  expires      Expires below --min-expires gets 423 with Min-Expires;
               Expires: 0 is always accepted; above --max-expires gets 200
               with the maximum granted in the Contact's expires
  bindings     a third contact for one AOR gets 503 (--max-bindings 2) while
               another AOR still registers
  aors         a fourth AOR gets 503 with Retry-After (--max-aors 3) while the
               registered ones refresh; one unregistered, a new one fits
  close_sweep  a TCP phone's bindings go when its connection closes, and an
               expired binding is swept by the timer (registrar gauges in
               /metrics fall back to 0 without the AOR being touched)
  certificate  over TLS alice's certificate registers alice without digest
               but not bob (403); a REGISTER over UDP has no certificate (403)
  sighup       a user added to the file registers after SIGHUP; a broken
               file on SIGHUP keeps the users in use
  open_refused a registrar on a non-loopback listener without authentication
               does not start: exit 2, one line naming --registrar-open
  metrics      /metrics counts the refusals (auth_failed, aor_not_owned) and
               the limits (min_expires, max_expires, max_bindings, max_aors)
  z            every instance exits 0 on SIGTERM, no sanitizer report

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge binary.
"""

import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_stats import http  # noqa: E402
from test_tls import (Failed, client_ctx, expect, final_on, gen_certs, request_on,  # noqa: E402
                      sign_server_cert, tls_connect, wait_log)

HOST = "127.0.0.1"
DOMAIN = "cc.example.com"
PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


# ---------------------------------------------------------------- digest

def H(alg, text):
    f = hashlib.sha256 if alg == "SHA-256" else hashlib.md5
    return f(text.encode()).hexdigest()


def users_line(user, sha256=True):
    """One htdigest line, with the SHA-256 HA1 as the fourth field."""
    a1 = f"{user}:{DOMAIN}:{PASSWORDS[user]}"
    line = f"{user}:{DOMAIN}:{H('MD5', a1)}"
    return line + (f":{H('SHA-256', a1)}" if sha256 else "") + "\n"


def challenges(resp):
    """[(algorithm, params dict)] of a 401's WWW-Authenticate values, in order."""
    out = []
    for v in resp.all("www-authenticate"):
        params = dict((k.lower(), a or b) for k, a, b in
                      re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', v))
        out.append((params.get("algorithm", "MD5"), params))
    return out


def authorization(alg, user, password, params, ruri, realm=None):
    realm = realm or params["realm"]
    nonce, cnonce, nc = params["nonce"], secrets.token_hex(8), "00000001"
    ha1 = H(alg, f"{user}:{realm}:{password}")
    ha2 = H(alg, f"REGISTER:{ruri}")
    resp = H(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{ruri}", '
            f'response="{resp}", algorithm={alg}, qop=auth, nc={nc}, cnonce="{cnonce}"')


# ---------------------------------------------------------------- phones

class Phone:
    """One client of an instance over transport t ("udp", "tcp", "tls"),
    registering as (or for) AORs of DOMAIN."""

    def __init__(self, inst, t, user, ctx=None, bind=None):
        self.inst, self.t, self.user = inst, t, user
        self.port = inst.Q if t == "tls" else inst.P
        if t == "tls":
            self.c = tls_connect(self.port, ctx)
        else:
            self.c = lib.SipClient(HOST, self.port, t, bind=bind)
        self.lport = self.c.local[1]
        self.contact = f"sip:{user}@{HOST}:{self.lport};transport={t}"
        self.call_id = f"reg-{user}-{secrets.token_hex(6)}"
        self.cseq = 0
        self.ruri = f"sip:{HOST}:{self.port}"

    def send_register(self, aor_user=None, expires=600, contacts=None, authz=None):
        """One REGISTER for aor_user's AOR (default: the phone's user); its
        final response (or None within 5 s)."""
        self.cseq += 1
        aor = f"sip:{aor_user or self.user}@{DOMAIN}"
        hdrs = [("Contact", c) for c in (contacts or [f"<{self.contact}>"])]
        if expires is not None:
            hdrs.append(("Expires", str(expires)))
        if authz:
            hdrs.append(("Authorization", authz))
        self.c.send(lib.build_request(
            "REGISTER", self.ruri, via_host=HOST, via_port=self.lport, transport=self.t.upper(),
            call_id=self.call_id, cseq=self.cseq, from_uri=f"sip:{self.user}@{DOMAIN}",
            to_uri=aor, headers=hdrs))
        return final_on(self.c, self.call_id, 5)

    def register(self, alg="SHA-256", password=None, aor_user=None, **kw):
        """The challenge, then credentials of alg for the phone's user:
        (final response, the 401 it answered)."""
        ch = self.send_register(aor_user=aor_user, **kw)
        expect(ch is not None and ch.code == 401,
               f"{self.t}: first REGISTER got {ch.code if ch else None}, want 401")
        offered = dict(challenges(ch))
        expect(alg in offered, f"{self.t}: {alg} not offered: {list(offered)}")
        a = authorization(alg, self.user, password or PASSWORDS[self.user], offered[alg],
                          self.ruri)
        return self.send_register(aor_user=aor_user, authz=a, **kw), ch

    def close(self):
        self.c.close()


def want(r, code, what):
    """r (a final response) when its status is code, else Failed."""
    expect(r is not None and r.code == code, f"{what}: {r.code if r else None}, want {code}")
    return r


def contact_expires(resp, uri):
    """The expires a 200 lists for Contact uri, or None."""
    for v in resp.values("contact"):
        if v.startswith(f"<{uri}>"):
            m = re.search(r";expires=(\d+)", v)
            return int(m.group(1)) if m else None
    return None


def metric(port, name, label=None):
    """Sum of a /metrics line's values over the workers (label: k="v" filter)."""
    code, text = http(port, "GET", "/metrics")
    expect(code == 200, f"/metrics: HTTP {code}")
    total, seen = 0, False
    for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\d+)$", text, re.M):
        if label and label not in (m.group(1) or ""):
            continue
        total, seen = total + int(m.group(2)), True
    expect(seen, f"/metrics has no {name} {label or ''}")
    return total


def options_to(inst, aor_user, callee):
    """An OPTIONS from a fresh UDP caller to sip:aor_user@DOMAIN: True when it
    arrives on callee's client (who answers 200)."""
    caller = lib.SipClient(HOST, inst.P, "udp")
    cid = "opt-" + secrets.token_hex(6)
    try:
        caller.send(lib.build_request("OPTIONS", f"sip:{aor_user}@{DOMAIN}", via_host=HOST,
                                      via_port=caller.local[1], call_id=cid,
                                      from_uri=f"sip:caller@{HOST}"))
        req = request_on(callee.c, cid, 5)
        if req is None:
            return False
        callee.c.send(lib.build_response(req, 200, "OK", to_tag=lib.new_tag()))
        ok = final_on(caller, cid, 5)
        return ok is not None and ok.code == 200
    finally:
        caller.close()


# ---------------------------------------------------------------- cases

def case_challenge(env, t):
    inst = env.digest
    a, b = Phone(inst, t, "alice", env.ctx), Phone(inst, t, "bob", env.ctx)
    try:
        r = want(a.send_register(), 401, "alice")
        ch = challenges(r)
        expect([x for x, _ in ch] == ["SHA-256", "MD5"], f"alice offered {ch}")
        expect(all(p.get("realm") == DOMAIN and p.get("qop") == "auth" for _, p in ch),
               f"realm/qop: {ch}")
        expect(ch[0][1]["nonce"] == ch[1][1]["nonce"], "two nonces")
        r = b.send_register()
        ch = challenges(r) if r is not None and r.code == 401 else None
        expect(ch and [x for x, _ in ch] == ["MD5"], f"bob offered {ch}")
    finally:
        a.close()
        b.close()
    return "401: SHA-256 then MD5 for alice, MD5 only for bob, realm " + DOMAIN


def case_digest(env, t):
    inst = env.digest
    a, b = Phone(inst, t, "alice", env.ctx), Phone(inst, t, "bob", env.ctx)
    try:
        for alg in ("SHA-256", "MD5"):
            r = want(a.register(alg)[0], 200, f"alice {alg}")
            expect(contact_expires(r, a.contact) == 600, f"alice {alg}: {r.values('contact')}")
        want(b.register("MD5")[0], 200, "bob MD5")
        want(a.register("SHA-256", password="not-the-password")[0], 401, "wrong password")
        # unregister, authenticated
        r, _ = a.register("MD5", expires=0)
        expect(r is not None and r.code == 200 and contact_expires(r, a.contact) is None,
               f"unregister: {r.code if r else None}")
        b.register("MD5", expires=0)
    finally:
        a.close()
        b.close()
    return "200 with SHA-256 and MD5, 401 for a wrong password"


def case_hijack(env, t):
    inst = env.digest
    mallory = Phone(inst, t, "alice", env.ctx)  # alice's own credentials...
    bob = Phone(inst, t, "bob", env.ctx)
    try:
        want(bob.register("MD5")[0], 200, "bob")
        # ...used for bob's AOR (challenged for bob: MD5), with a high
        # q-value and a long expiry
        r, _ = mallory.register("MD5", aor_user="bob",
                                contacts=[f"<{mallory.contact}>;q=1.0"], expires=3600)
        want(r, 403, "alice for bob's AOR")
        r, _ = mallory.register("MD5", aor_user="bob", contacts=["*"], expires=0)
        want(r, 403, "Contact: * for bob")
        expect(options_to(inst, "bob", bob), "an OPTIONS to bob's AOR did not reach bob")
        want(bob.register("MD5", contacts=["*"], expires=0)[0], 200, "bob's own Contact: *")
    finally:
        mallory.close()
        bob.close()
    return "403 for another's AOR and for its Contact: *, the owner's binding survives"


def case_replay(env):
    """alice's Authorization, seen on the wire, replayed from another address
    with the eavesdropper's Contact."""
    inst = env.digest
    a = Phone(inst, "udp", "alice")
    eve = Phone(inst, "udp", "alice", bind=("127.0.0.2", 0))
    try:
        ch = want(a.send_register(), 401, "challenge")
        authz = authorization("MD5", "alice", PASSWORDS["alice"], dict(challenges(ch))["MD5"],
                              a.ruri)
        want(eve.send_register(authz=authz), 401, "the replay from 127.0.0.2")
        want(a.send_register(authz=authz), 200, "the same credentials from alice's address")
        a.send_register(authz=authz, expires=0)
    finally:
        a.close()
        eve.close()
    return "a nonce is bound to the address it was issued to: the replay gets 401"


def case_expires(env):
    inst = env.limits
    p = Phone(inst, "udp", "erin")
    try:
        r = want(p.send_register(expires=1), 423, "Expires 1")
        expect(r.get("min-expires") == "2", f"Min-Expires: {r.get('min-expires')}")
        r = want(p.send_register(expires=7200), 200, "Expires 7200")
        got = contact_expires(r, p.contact)
        expect(got == 1800, f"granted {got}, want 1800 (--max-expires)")
        r = p.send_register(contacts=[f"<{p.contact}>;expires=1"], expires=None)
        want(r, 423, "contact expires=1")
        r = p.send_register(expires=0)
        expect(r is not None and r.code == 200 and not r.values("contact"),
               f"Expires 0: {r.code if r else None} {r.values('contact') if r else ''}")
    finally:
        p.close()
    return "423 with Min-Expires: 2, 1800 granted for 7200, Expires: 0 accepted"


def case_bindings(env):
    inst = env.limits
    p, q = Phone(inst, "udp", "fred"), Phone(inst, "udp", "gina")
    try:
        two = [f"<sip:fred@{HOST}:{port}>" for port in (40001, 40002)]
        want(p.send_register(contacts=two), 200, "two contacts")
        want(p.send_register(contacts=[f"<sip:fred@{HOST}:40003>"]), 503, "third contact")
        want(q.send_register(), 200, "another AOR")
        for ph in (p, q):
            want(ph.send_register(contacts=["*"], expires=0), 200, "cleanup")
    finally:
        p.close()
        q.close()
    return "503 for the third contact of an AOR, other AORs still register"


def case_aors(env):
    inst = env.limits
    phones = [Phone(inst, "udp", f"user{i}") for i in range(5)]
    try:
        for ph in phones[:3]:
            r = ph.send_register()
            want(r, 200, f"{ph.user}")
        r = want(phones[3].send_register(), 503, "fourth AOR")
        expect(r.get("retry-after"), "the 503 for the fourth AOR has no Retry-After")
        want(phones[0].send_register(expires=900), 200, "refresh at the limit")
        want(phones[1].send_register(expires=0), 200, "unregister")
        want(phones[4].send_register(), 200, "new AOR after one left")
        for ph in (phones[0], phones[2], phones[4]):
            ph.send_register(expires=0)
    finally:
        for ph in phones:
            ph.close()
    return "503 + Retry-After for the fourth AOR, refreshes pass, room again after one left"


def case_close_sweep(env):
    inst = env.limits
    sp = inst.stats_port
    expect(metric(sp, "sipedge_registrar_bindings") == 0, "bindings left by earlier cases")
    tcp = Phone(inst, "tcp", "hank")
    want(tcp.send_register(expires=1800), 200, "tcp")
    expect(metric(sp, "sipedge_registrar_aors") == 1, "one AOR after the TCP REGISTER")
    tcp.close()
    lib.wait_until(lambda: metric(sp, "sipedge_registrar_bindings") == 0, 5,
                   what="the closed connection's binding to go")
    udp = Phone(inst, "udp", "ivy")
    try:
        want(udp.send_register(expires=2), 200, "udp")
        expect(metric(sp, "sipedge_registrar_bindings") == 1, "one binding after the REGISTER")
        dl = lib.Deadline(20)
        lib.wait_until(lambda: metric(sp, "sipedge_registrar_aors") == 0, 20,
                       what="the expired binding to be swept")
        took = 20 - dl.remaining()
    finally:
        udp.close()
    return f"closed connection's binding gone at once, expired one swept after {took:.1f}s"


def case_certificate(env):
    inst = env.cert
    ctx = client_ctx(env.certs, cert=env.alice_crt, key=env.alice_key)
    a = Phone(inst, "tls", "alice", ctx)
    u = Phone(inst, "udp", "alice")
    try:
        want(a.send_register(), 200, "alice by certificate")
        want(a.send_register(aor_user="bob"), 403, "bob with alice's cert")
        want(u.send_register(), 403, "over UDP")
        expect(options_to(inst, "alice", a), "an OPTIONS to alice did not reach her TLS phone")
    finally:
        a.close()
        u.close()
    return "alice's SAN URI registers alice without digest, not bob; no certificate: 403"


def case_sighup(env):
    inst = env.digest
    c = Phone(inst, "udp", "carol")
    a = Phone(inst, "udp", "alice")
    try:
        r = want(c.register("MD5")[0], 401, "carol before")
        start = len(inst.output()[1])
        with open(env.users, "w") as f:
            f.write("this is not an htdigest line\n")
        inst.send_signal(signal.SIGHUP)
        wait_log(inst, r"--auth-users reload failed", start=start)
        r = want(a.register("SHA-256")[0], 200, "alice after a bad reload")
        start = len(inst.output()[1])
        with open(env.users, "w") as f:
            f.write(users_line("alice") + users_line("bob", sha256=False) + users_line("carol"))
        inst.send_signal(signal.SIGHUP)
        wait_log(inst, r"--auth-users reloaded: 3 users", start=start)
        want(c.register("SHA-256")[0], 200, "carol after SIGHUP")
        c.register("MD5", expires=0)
        a.register("MD5", expires=0)
    finally:
        c.close()
        a.close()
    return "a broken file keeps the users, a good one adds carol"


def case_open_refused(env):
    port = lib.free_port(HOST)
    p = subprocess.run([lib.sipedge_bin(), "-w", "2", "-l", f"udp:0.0.0.0:{port}"],
                       capture_output=True, text=True, timeout=10)
    lines = p.stderr.strip().splitlines()
    expect(p.returncode == 2, f"exit {p.returncode}, want 2: {p.stderr.strip()}")
    expect(len(lines) == 1 and lines[0].startswith("sipedge: --registrar-open: "),
           f"stderr {p.stderr!r}")
    return lines[0][:90] + "..."


def case_metrics(env):
    d, lim = env.digest.stats_port, env.limits.stats_port
    want = [(d, "sipedge_refused_total", 'reason="auth_failed"'),
            (d, "sipedge_refused_total", 'reason="aor_not_owned"'),
            (lim, "sipedge_limit_hits_total", 'limit="min_expires"'),
            (lim, "sipedge_limit_hits_total", 'limit="max_expires"'),
            (lim, "sipedge_limit_hits_total", 'limit="max_bindings"'),
            (lim, "sipedge_limit_hits_total", 'limit="max_aors"')]
    got = {label: metric(port, name, label) for port, name, label in want}
    expect(all(v > 0 for v in got.values()), f"counters {got}")
    return ", ".join(f"{k.split('=')[1]}={v}" for k, v in got.items())


def case_z(env):
    problems = []
    for p in (env.digest, env.limits, env.cert):
        st = p.stop(timeout=15)
        if st != 0:
            problems.append(f"{p.name} exit {st}")
        rep = lib.sanitizer_report(p)
        if rep:
            problems.append(f"{p.name}: {rep}")
    expect(not problems, "; ".join(problems))
    return "clean exits"


# ---------------------------------------------------------------- main

class Env:
    pass


def start(h, name, tls, extra):
    p_port = lib.free_port(HOST)
    q_port = lib.free_port(HOST, kinds=("tcp",))
    s_port = lib.free_port(HOST, kinds=("tcp",))
    listens = [("udp", HOST, p_port), ("tcp", HOST, p_port)]
    if tls:
        listens.append(("tls", HOST, q_port))
    p = lib.start_sipedge(h, listens, registrar=True, workers=2, name=name,
                          extra=extra + ["--stats-listen", f"{HOST}:{s_port}"])
    p.P, p.Q, p.stats_port = p_port, q_port, s_port
    if tls:
        lib.wait_until(lambda: lib.port_bound(q_port, "tcp", HOST), 5, what=f"{name} tls")
    return p


def setup(h, env):
    """Certificates (alice's with SAN URI sip:alice@DOMAIN), the users file
    and the three instances."""
    env.certs = h.path("certs")
    gen_certs(env.certs)
    env.alice_crt, env.alice_key = h.path("alice.crt"), h.path("alice.key")
    sign_server_cert(env.certs, env.alice_crt, env.alice_key, h.dir, san=f"URI:sip:alice@{DOMAIN}")
    env.ctx = client_ctx(env.certs)
    env.users = h.path("users")
    with open(env.users, "w") as f:
        f.write(users_line("alice") + users_line("bob", sha256=False))
    c = env.certs
    srv = ["--tls-cert", os.path.join(c, "server.crt"), "--tls-key",
           os.path.join(c, "server.key"), "--tls-ca", os.path.join(c, "ca.crt")]
    env.digest = start(h, "digest", True, srv + ["--auth-users", env.users])
    env.limits = start(h, "limits", False, ["--min-expires", "2", "--max-expires", "1800",
                                            "--max-bindings", "2", "--max-aors", "3"])
    env.cert = start(h, "cert", True, srv + ["--tls-mutual", "--auth-by-certificate"])
    return "instances digest, limits, cert up"


def main():
    if not lib.have_sipedge():
        print(f"SKIP: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)")
        print("0 passed, 0 failed")
        return 77
    lib.raise_on_sigterm()
    cases = []
    for t in ("udp", "tcp", "tls"):
        cases += [(f"challenge_{t}", lambda e, t=t: case_challenge(e, t)),
                  (f"digest_{t}", lambda e, t=t: case_digest(e, t)),
                  (f"hijack_{t}", lambda e, t=t: case_hijack(e, t))]
    cases += [("replay", case_replay), ("expires", case_expires), ("bindings", case_bindings),
              ("aors", case_aors), ("close_sweep", case_close_sweep),
              ("certificate", case_certificate),
              ("sighup", case_sighup), ("open_refused", case_open_refused),
              ("metrics", case_metrics), ("z", case_z)]
    results, env = [], Env()
    with lib.Harness("registrar") as h:
        try:
            with lib.time_bound(180, "test_registrar"):
                lib.run_case(results, "setup", lambda: setup(h, env))
                for name, fn in cases if results[0] else []:
                    lib.run_case(results, name, lambda fn=fn: fn(env))
        except (lib.GlobalTimeout, lib.Terminated) as e:
            results.append(False)
            print(f"FAIL {e}", flush=True)
        h.failed = not all(results)
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
