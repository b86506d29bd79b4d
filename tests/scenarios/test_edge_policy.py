#!/usr/bin/python3
"""The edge policy (ARCHITECTURE.md §2) on the wire: what sipedge refuses to
do for an endpoint (any sender that is not the SIP Server or a peer site),
over UDP, TCP and TLS, with default flags and traffic on both workers.

Instances (each -w 2, UDP and TCP on P, TLS on Q, --stats-listen M):
  edge       -u sip:127.0.0.1:S;transport=udp, S a fake SIP Server (a
             lib.Sink answering REGISTER, INVITE, MESSAGE and BYE with 200)
  registrar  no -u (the built-in registrar), --domain cc.example.com
A victim (a lib.Sink on another loopback port, answering nothing) must
receive nothing at all.

Cases (one line each, then "N passed, M failed"):
  preloaded-{udp,tcp,tls}  an endpoint's INVITE with a preloaded Route
        <sip:127.0.0.1:VICTIM;lr> reaches the SIP Server without that Route
  ruri-{udp,tcp,tls}  (registrar) INVITE sip:bob@127.0.0.1:VICTIM, not
        ours and no binding: 403/404
  dialog-route-{udp,tcp,tls}  an in-dialog BYE routed to the victim: 403
  path-token  a phone registers over TLS; other endpoints (UDP, TCP) put its
        Path, flow token and all, in a Route of a new INVITE: 403 and the
        phone gets nothing; the SIP Server's INVITE with it reaches the phone
  rr-token  a TCP gateway's INVITE gets our Record-Route with its flow
        token; a BYE of another dialog routed with it: 403 and the gateway
        gets nothing; the SIP Server's BYE of that dialog reaches it
  closed-flow  gateways (TCP and TLS) whose connections landed on both
        workers start dialogs and reset their connections; at once BYEs routed
        by their Record-Route tokens come from UDP sockets that land on both
        workers: each gets 430 within 2 s, counted on both workers
  domain  (registrar) REGISTER sip:cc.example.com over UDP, TCP and TLS:
        200 from the built-in registrar; OPTIONS to the domain: 200; an
        INVITE for sip:alice-tcp@cc.example.com reaches that connection
  metrics  /metrics counts the refusals by reason, and the victim got
        nothing in the whole run
Which worker handled a request is read from the Via port of what the SIP
Server receives (each worker forwards from its own private UDP port).

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge binary.
"""

import os
import re
import secrets
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_stats import http  # noqa: E402
from test_tls import client_ctx, final_on, gen_certs, request_on, tls_connect  # noqa: E402

HOST = "127.0.0.1"
DOMAIN = "cc.example.com"
WAIT = 3.0          # bound of a wait for something that must come
QUIET = 0.5         # how long "nothing arrives" is watched
FLOW_BOUND = 2.0    # a closed flow's 430 must come within it
TRANSPORTS = ("udp", "tcp", "tls")


class Failed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Failed(what)


def request(method, ruri, local, transport, *, call_id, to=None, to_tag=None, routes=(),
            headers=(), cseq=1):
    """A request from `local` (host, port) over transport (bytes)."""
    lh, lp = local[:2]
    to = to or ruri
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: SIP/2.0/{transport.upper()} {lh}:{lp};branch={lib.new_branch()};rport",
             "Max-Forwards: 70", f"From: <sip:ep@example.com>;tag={lib.new_tag()}",
             f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    lines += [f"Route: {r}" for r in routes] + [f"{n}: {v}" for n, v in headers]
    return ("\r\n".join(lines + ["Content-Length: 0"]) + "\r\n\r\n").encode()


def via_port(m):
    v = lib.parse_via(m.values("via")[0]) if m and m.values("via") else None
    return v[2] if v else None


class Env:
    """The instances, the fake SIP Server and the victim."""

    def __init__(self, h):
        certs = h.path("certs")
        gen_certs(certs)
        self.ctx = client_ctx(certs)
        tls = ["--tls-cert", os.path.join(certs, "server.crt"),
               "--tls-key", os.path.join(certs, "server.key")]
        self.sink = lib.Sink(HOST)
        self.answerer = lib.SinkAnswerer(self.sink, {"REGISTER": 200, "INVITE": 200,
                                                     "MESSAGE": 200, "BYE": 200})
        self.victim = lib.Sink(HOST, answer_probes=False)
        self.edge = self.start(h, "edge", tls, upstream=f"{self.sink.uri};transport=udp")
        self.reg = self.start(h, "registrar", ["--domain", DOMAIN] + tls)

    @staticmethod
    def start(h, name, extra, upstream=None):
        p_port, q_port, m_port = lib.free_port(HOST), lib.free_port(HOST), lib.free_port(HOST)
        p = lib.start_sipedge(h, [("udp", HOST, p_port), ("tcp", HOST, p_port),
                                  ("tls", HOST, q_port)], upstream=upstream, workers=2,
                              name=name, extra=extra + ["--stats-listen", f"{HOST}:{m_port}"])
        lib.wait_until(lambda: lib.port_bound(q_port, "tcp", HOST), 5, what=f"{name} tls")
        p.P, p.Q, p.M = p_port, q_port, m_port
        return p

    def connect(self, inst, transport):
        if transport == "tls":
            return tls_connect(inst.Q, self.ctx)
        return lib.SipClient(HOST, inst.P, transport)

    def upstream_send(self, inst, data):
        """data from the SIP Server's own address (what sipedge trusts)."""
        self.sink.udp.sendto(data, (HOST, inst.P))

    def forwarded(self, call_id, method):
        """What the SIP Server received of call_id/method, waiting for it."""
        return self.sink.wait_for(lambda m: m.call_id == call_id and m.method == method, WAIT)

    def victim_got(self, call_id):
        return self.victim.wait_for(lambda m: m.call_id == call_id, QUIET) is not None

    def close(self):
        self.answerer.stop()
        self.sink.close()
        self.victim.close()


def new_cid(what):
    return f"{what}-{secrets.token_hex(5)}"


def contact_of(c, user, transport):
    return f"sip:{user}@{HOST}:{c.local[1]};transport={transport}"


def start_dialog(env, c, transport, user):
    """An INVITE from client c through the edge instance to the SIP Server,
    answered 200. Returns (call_id, Record-Route list as forwarded, the
    forwarding worker's Via port)."""
    cid = new_cid(f"dlg-{user}")
    c.send(request("INVITE", "sip:bob@example.com", c.local, transport, call_id=cid,
                   headers=[("Contact", f"<{contact_of(c, user, transport)}>")]))
    fwd = env.forwarded(cid, "INVITE")
    expect(fwd is not None, f"{user}'s INVITE did not reach the SIP Server")
    r = final_on(c, cid, WAIT)
    expect(r is not None and r.code == 200, f"{user}'s INVITE: final {r.code if r else None}")
    return cid, fwd.values("record-route"), via_port(fwd)


def refused(c, call_id, codes=(403,)):
    """c's final response for call_id is one of codes (403 by default)."""
    r = final_on(c, call_id, WAIT)
    expect(r is not None and r.code in codes,
           f"final {r.code if r else None}, want {'/'.join(map(str, codes))}")
    return r.code


# ---------------------------------------------------------------- cases

def case_preloaded(env, tr):
    c = env.connect(env.edge, tr)
    try:
        cid = new_cid(f"pre-{tr}")
        c.send(request("INVITE", "sip:bob@example.com", c.local, tr, call_id=cid,
                       routes=[f"<sip:{HOST}:{env.victim.port};lr>"],
                       headers=[("Contact", f"<{contact_of(c, 'ep', tr)}>")]))
        fwd = env.forwarded(cid, "INVITE")
        expect(not env.victim_got(cid), "the victim received the INVITE (open relay)")
        expect(fwd is not None, "the INVITE did not reach the SIP Server")
        routes = fwd.values("route")
        expect(not routes, f"forwarded with Route {routes}")
        r = final_on(c, cid, WAIT)
        return f"at the SIP Server without Route, final {r.code if r else None}; victim: nothing"
    finally:
        c.close()


def relay_refused(env, inst, tr, what, ruri, *, to_tag=None, routes=(), codes=(403,)):
    """An endpoint's request (INVITE, or BYE in a dialog) over tr that must
    be refused with one of codes and reach neither the victim nor the SIP
    Server."""
    c = env.connect(inst, tr)
    try:
        cid = new_cid(f"{what}-{tr}")
        method = "BYE" if to_tag else "INVITE"
        c.send(request(method, ruri, c.local, tr, call_id=cid, to_tag=to_tag, routes=routes,
                       headers=[("Contact", f"<{contact_of(c, 'ep', tr)}>")]))
        code = refused(c, cid, codes)
        expect(not env.victim_got(cid), f"the victim received the {method} (open relay)")
        expect(not env.sink.matching(lambda m: m.call_id == cid and m.method),
               f"the {method} was forwarded to the SIP Server")
        return f"{method} {code}; victim: nothing"
    finally:
        c.close()


def case_ruri(env, tr):
    return relay_refused(env, env.reg, tr, "ruri", f"sip:bob@{HOST}:{env.victim.port}",
                         codes=(403, 404))


def case_dialog_route(env, tr):
    return relay_refused(env, env.edge, tr, "dr", "sip:bob@example.com", to_tag="x1",
                         routes=[f"<sip:{HOST}:{env.victim.port};lr>"])


def case_path_token(env):
    phone = env.connect(env.edge, "tls")
    others = []
    try:
        aor, contact = "sip:phone@example.com", contact_of(phone, "phone", "tls")
        cid = new_cid("reg")
        phone.send(request("REGISTER", "sip:example.com", phone.local, "tls", call_id=cid,
                           to=aor, headers=[("Contact", f"<{contact}>"),
                                            ("Supported", "path"), ("Expires", "300")]))
        reg = env.forwarded(cid, "REGISTER")
        r = final_on(phone, cid, WAIT)
        expect(reg is not None and r is not None and r.code == 200,
               f"REGISTER: at the SIP Server {reg is not None}, final {r.code if r else None}")
        path = reg.get("path", "")
        expect("@" in path, f"no flow token in Path {path!r}")
        codes = []
        for tr in ("udp", "tcp"):
            a = env.connect(env.edge, tr)
            others.append(a)
            icid = new_cid(f"steal-{tr}")
            a.send(request("INVITE", contact, a.local, tr, call_id=icid, routes=[path],
                           headers=[("Contact", f"<{contact_of(a, 'thief', tr)}>")]))
            codes.append(refused(a, icid))
            expect(request_on(phone, icid, QUIET) is None,
                   f"the phone received the {tr} endpoint's INVITE through its Path token")
        # what the token is for: the SIP Server's request
        icid = new_cid("server")
        env.upstream_send(env.edge, request("INVITE", contact, (HOST, env.sink.port), "udp",
                                            call_id=icid, routes=[path]))
        inv = request_on(phone, icid, WAIT)
        expect(inv is not None, "the SIP Server's INVITE with the Path did not reach the phone")
        phone.send(lib.build_response(inv, 486, "Busy Here", to_tag=lib.new_tag()))
        return (f"UDP and TCP endpoints: {codes}, phone got nothing; "
                f"the SIP Server's INVITE reached the phone")
    finally:
        phone.close()
        for a in others:
            a.close()


def case_rr_token(env):
    gw = env.connect(env.edge, "tcp")
    a = env.connect(env.edge, "udp")
    try:
        cid, rr, _ = start_dialog(env, gw, "tcp", "gw")
        expect(any("@" in x for x in rr), f"no flow token in Record-Route {rr}")
        target = contact_of(gw, "gw", "tcp")
        bcid = new_cid("other-dialog")
        a.send(request("BYE", target, a.local, "udp", call_id=bcid, to_tag="t1", routes=rr))
        code = refused(a, bcid)
        expect(request_on(gw, bcid, QUIET) is None,
               "the gateway received a BYE of another dialog through its token")
        env.upstream_send(env.edge, request("BYE", target, (HOST, env.sink.port), "udp",
                                            call_id=cid, to_tag="t2", routes=rr, cseq=2))
        bye = request_on(gw, cid, WAIT)
        expect(bye is not None and bye.method == "BYE",
               "the SIP Server's BYE of the dialog did not reach the gateway")
        gw.send(lib.build_response(bye, 200, "OK"))
        return f"other dialog {code}, gateway got nothing; its own dialog's BYE delivered"
    finally:
        gw.close()
        a.close()


def reset(c):
    """Closes c's connection with a TCP RST (no FIN, no close_notify)."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


def metric(inst, reason):
    """{worker: sipedge_refused_total for reason}."""
    code, text = http(inst.M, "GET", "/metrics")
    expect(code == 200, f"/metrics: {code}")
    return {int(w): int(v) for w, v in re.findall(
        rf'^sipedge_refused_total{{worker="(\d+)",reason="{reason}"}} (\d+)$', text, re.M)}


def gateways_on_both_workers(env, gws):
    """Gateways (TCP and TLS by turns) until their connections are owned by
    both workers (bounded): (client, call_id, Record-Route, worker port)."""
    for i in range(16):
        tr = ("tcp", "tls")[i % 2]
        g = env.connect(env.edge, tr)
        gws.append((g,) + start_dialog(env, g, tr, f"gw{i}"))
        if len(gws) >= 4 and len({x[3] for x in gws}) == 2:
            return
    raise Failed(f"gateways all on one worker: {sorted({x[3] for x in gws})}")


def senders_on_both_workers(env, senders):
    """One UDP socket per worker: sockets whose requests land on it (the
    kernel's SO_REUSEPORT hash), told by what the SIP Server receives."""
    seen = {}
    for _ in range(32):
        s = lib.SipClient(HOST, env.edge.P, "udp")
        cid = new_cid("probe")
        s.send(request("MESSAGE", "sip:probe@example.com", s.local, "udp", call_id=cid))
        fwd = env.forwarded(cid, "MESSAGE")
        final_on(s, cid, WAIT)
        port = via_port(fwd)
        if port is None or port in seen:
            s.close()
            continue
        seen[port] = s
        senders.append(s)
        if len(seen) == 2:
            return
    raise Failed(f"UDP sockets all landed on one worker ({sorted(seen)})")


def case_closed_flow(env):
    gws, senders = [], []
    try:
        gateways_on_both_workers(env, gws)
        senders_on_both_workers(env, senders)
        before = metric(env.edge, "flow_gone")
        results = []
        for g, cid, rr, _ in gws:
            target = contact_of(g, "gw", "tcp")
            reset(g)
            t0 = time.monotonic()
            for s in senders:  # at once: the close may not be processed yet
                s.send(request("BYE", target, s.local, "udp", call_id=cid, to_tag="t",
                               routes=rr, cseq=2))
            for s in senders:
                r = final_on(s, cid, FLOW_BOUND)
                results.append((r.code if r else None, time.monotonic() - t0))
        after = metric(env.edge, "flow_gone")
        bad = [c for c, _ in results if c != 430]
        slow = max(t for _, t in results)
        per = {w: after.get(w, 0) - before.get(w, 0) for w in (0, 1)}
        note = (f"{len(gws)} gateways on workers {sorted({x[3] for x in gws})}, "
                f"{len(results)} BYEs: codes {sorted({c for c, _ in results}, key=str)}, "
                f"slowest {slow * 1000:.0f} ms; flow_gone counted per worker {per}")
        expect(not bad, note)
        expect(per[0] > 0 and per[1] > 0, "430s not counted on both workers: " + note)
        return note
    finally:
        for x in gws:
            x[0].close()
        for s in senders:
            s.close()


def case_domain(env):
    clients = {}
    try:
        for tr in TRANSPORTS:
            c = clients[tr] = env.connect(env.reg, tr)
            contact = contact_of(c, f"alice-{tr}", tr)
            cid = new_cid(f"dreg-{tr}")
            aor = f"sip:alice-{tr}@{DOMAIN}"
            c.send(request("REGISTER", f"sip:{DOMAIN}", c.local, tr, call_id=cid, to=aor,
                           headers=[("Contact", f"<{contact}>"), ("Expires", "300")]))
            r = final_on(c, cid, WAIT)
            expect(r is not None and r.code == 200 and contact in (r.get("contact") or ""),
                   f"REGISTER sip:{DOMAIN} over {tr}: {r.start if r else None}, "
                   f"Contact {r.get('contact') if r else None}")
        code = lib.sip_ping(HOST, env.reg.P, "udp", ruri=f"sip:{DOMAIN}")
        expect(code == 200, f"OPTIONS sip:{DOMAIN}: {code}")
        caller = env.connect(env.reg, "udp")
        clients["caller"] = caller
        cid = new_cid("call-domain")
        caller.send(request("INVITE", f"sip:alice-tcp@{DOMAIN}", caller.local, "udp",
                            call_id=cid,
                            headers=[("Contact", f"<{contact_of(caller, 'c', 'udp')}>")]))
        inv = request_on(clients["tcp"], cid, WAIT)
        expect(inv is not None, f"INVITE sip:alice-tcp@{DOMAIN} did not reach its connection")
        clients["tcp"].send(lib.build_response(inv, 486, "Busy Here", to_tag=lib.new_tag()))
        return f"REGISTER 200 over {'/'.join(TRANSPORTS)}, OPTIONS 200, INVITE delivered"
    finally:
        for c in clients.values():
            c.close()


def case_metrics(env):
    edge_relay = sum(metric(env.edge, "relay").values())
    misuse = sum(metric(env.edge, "token_misuse").values())
    reg_relay = sum(metric(env.reg, "relay").values())
    note = (f"edge: relay {edge_relay}, token_misuse {misuse}; registrar: relay {reg_relay}; "
            f"victim received {len(env.victim.matching(lambda m: True))} messages")
    # dialog-route x3 (edge), path-token x2 + rr-token x1, ruri x3 (registrar, 403 or 404)
    expect(edge_relay >= 3 and misuse >= 3 and reg_relay >= 3, note)
    expect(not env.victim.matching(lambda m: True), note)
    return note


def main():
    if not lib.have_sipedge():
        print(f"SKIP: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)")
        print("0 passed, 0 failed")
        return 77
    lib.raise_on_sigterm()
    results = []
    with lib.Harness("edge-policy") as h:
        env = None
        try:
            with lib.time_bound(240, "test_edge_policy"):
                env = Env(h)
                cases = [(f"preloaded-{t}", lambda t=t: case_preloaded(env, t)) for t in TRANSPORTS]
                cases += [(f"ruri-{t}", lambda t=t: case_ruri(env, t)) for t in TRANSPORTS]
                cases += [(f"dialog-route-{t}", lambda t=t: case_dialog_route(env, t))
                          for t in TRANSPORTS]
                cases += [("path-token", lambda: case_path_token(env)),
                          ("rr-token", lambda: case_rr_token(env)),
                          ("closed-flow", lambda: case_closed_flow(env)),
                          ("domain", lambda: case_domain(env)),
                          ("metrics", lambda: case_metrics(env))]
                for name, fn in cases:
                    lib.run_case(results, name, fn)
                for p in (env.edge, env.reg):
                    st = p.stop(timeout=15)
                    rep = lib.sanitizer_report(p)
                    ok = st == 0 and not rep
                    results.append(ok)
                    print(f"{'PASS' if ok else 'FAIL'} {p.name} exit: status {st}"
                          + (f", {rep}" if rep else ""), flush=True)
        except (lib.GlobalTimeout, lib.Terminated, lib.TestTimeout, lib.ProcessDied,
                OSError) as e:
            results.append(False)
            print(f"FAIL aborted: {type(e).__name__}: {e}", flush=True)
        finally:
            if env:
                env.close()
        if not all(results):
            h.failed = True
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
