#!/usr/bin/python3
"""Hostile input at the edge (issue 10): what a next hop, a caller or an
off-path sender can make sipedge do with a few bytes. sipedge -w 2 with UDP
and TCP on P, TLS on Q (scripts/gen-devcerts.sh material) and the
management port; the SIP Servers are scripted Python peers.

Cases (one line each, then "N passed, M failed"):
  a  a 486 without To from the next hop, to INVITEs from UDP, TCP and TLS
     callers: sipedge does not crash, still answers OPTIONS on every
     transport, and counts refused_malformed_response per response
  b  smuggling into the SIP Server: a UDP request without Content-Length
     whose body is a whole second request, relayed to a TCP SIP Server (a
     Python server that frames what it reads by Content-Length): it sees
     exactly one request, with a Content-Length equal to its body; a UDP
     request whose Content-Length runs past the datagram gets 400 and
     counts refused_body_length
  c  smuggling to a phone: a UDP 200 with a fake response after its
     Content-Length, relayed to a TCP and a TLS caller: each sees exactly
     one message for it (no "SIP/2.0 487 Smuggled")
  d  a bare CR, a bare LF and a NUL in a header value, over UDP, TCP and
     TLS: 400, nothing reaches the SIP Server, refused_control_bytes counted
  e  spoofed responses: a 200 for a live INVITE from another UDP port, and
     over a TCP SIP Server from another TCP connection, with the real
     branch: dropped (the caller never sees it), refused_response_mismatch
     counted; the real SIP Server's 486 then reaches the caller
  f  a dead SIP Server (probes and requests unanswered: taken out) is not brought
     back by spoofed 200s to its OPTIONS probes from another port; the real
     one answering does bring it back
  g  --max-transactions 16 (instance b, whose SIP Server answers nothing
     but probes): of 40 new requests at least 24 get 503 with Retry-After,
     each counted in limit_max_transactions, and OPTIONS to sipedge is
     still answered
  h  CANCEL after a 180, over UDP and TCP: the SIP Server answers the CANCEL
     200 (on the INVITE's branch, as RFC 3261 §9.1 has it) and the INVITE
     487: the caller gets sipedge's own 200 to its CANCEL and the 487
  z  every instance exits 0 on SIGTERM without a sanitizer report
Against the code before issue 10 a crashes (or the instance dies), b sees
two requests, c sees the smuggled response, d gets the requests forwarded,
e relays the spoofed 200, f switches to the spoofed upstream, g forwards
all 40 (its table held 2^20). h passes there too (the 200 to the CANCEL
was dropped for its single Via); it guards the response matching this
change rewrote (branch nonce, source, CSeq method).

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge binary."""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_stats import http  # noqa: E402
from test_tls import TlsClient, client_ctx, connect_raw, final_on, gen_certs  # noqa: E402

HOST = "127.0.0.1"
results = []
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" \
      b"m=audio 4000 RTP/AVP 0\r\n"


def case(name, fn):
    lib.run_case(results, name, fn)


# ---------------------------------------------------------------- a scripted SIP Server

class Server(lib.Sink):
    """A scripted SIP Server: lib.Sink (UDP and TCP on one port, a TCP
    stream framed by Content-Length as a naive server would) that keeps its
    probes apart in `probe_msgs` (answered 200 unless answer_probes is off)
    and hands every other request to on_request(m, reply); m.reply(bytes)
    answers the way m came, also later."""

    def __init__(self, on_request=None, answer_probes=True):
        self.on_request = on_request
        self.probe_msgs = []
        super().__init__(HOST, answer_probes=answer_probes)

    def _record(self, transport, peer, raw, reply):
        m = lib.SipMsg(raw)
        m.transport, m.peer, m.reply = transport, peer, reply
        probe = self._is_probe(m)
        with self.cond:
            (self.probe_msgs if probe else self.msgs).append(
                m if probe else (transport, peer, m))
            self.cond.notify_all()
        if probe and self.answer_probes:
            reply(lib.build_response(m, 200, "OK"))
        elif not probe and self.on_request:
            self.on_request(m, reply)

    def probe_after(self, n, timeout):
        """The probe after the first n, waiting up to timeout, or None."""
        dl = lib.Deadline(timeout)
        with self.cond:
            while len(self.probe_msgs) <= n:
                if dl.expired():
                    return None
                self.cond.wait(dl.remaining())
            return self.probe_msgs[n]


def without_header(raw, name):
    head, sep, body = raw.partition(b"\r\n\r\n")
    keep = [ln for ln in head.split(b"\r\n") if lib.canon(ln.split(b":")[0].decode()) != name]
    return b"\r\n".join(keep) + sep + body


# ---------------------------------------------------------------- instances and callers

class Env:
    pass


def start(h, env, name, upstream, extra=()):
    p_port = lib.free_port(HOST)
    q_port = lib.free_port(HOST, kinds=("tcp",))
    s_port = lib.free_port(HOST, kinds=("tcp",))
    listens = [("udp", HOST, p_port), ("tcp", HOST, p_port), ("tls", HOST, q_port)]
    p = lib.start_sipedge(h, listens, workers=2, name=name, extra=[
        "-u", upstream, "--tls-cert", os.path.join(env.certs, "server.crt"),
        "--tls-key", os.path.join(env.certs, "server.key"),
        "--stats-listen", f"{HOST}:{s_port}", *extra])
    p.P, p.Q, p.S = p_port, q_port, s_port
    lib.wait_until(lambda: lib.port_bound(q_port, "tcp", HOST) and
                   lib.port_bound(s_port, "tcp", HOST), 10, f"{name} tls and stats ports", proc=p)
    return p


def refused(p, reason):
    """sipedge_refused_total for reason, all workers (from /stats)."""
    _, body = http(p.S, "GET", "/stats")
    return json.loads(body)["total"][f"refused_{reason}"]


def target_state(p):
    """The SIP Server's (first) target as /stats publishes it: state, reason."""
    _, body = http(p.S, "GET", "/stats")
    ups = json.loads(body)["upstreams"]
    return ups[0]["targets"][0] if ups and ups[0].get("targets") else {}


def caller(env, p, transport):
    if transport == "tls":
        return TlsClient(connect_raw(p.Q), p.Q, client_ctx(env.certs))
    return lib.SipClient(HOST, p.P, transport)


def invite(c, transport, call_id, ruri="sip:agent@example.com"):
    lh, lp = c.local
    return lib.build_request("INVITE", ruri, via_host=lh, via_port=lp, transport=transport.upper(),
                             call_id=call_id, from_uri=f"sip:caller@{lh}",
                             headers=[("Contact", f"<sip:caller@{lh}:{lp};transport={transport}>"),
                                      ("Content-Type", "application/sdp")], body=SDP)


def responses(c, call_id, timeout):
    """Every response for call_id that c receives within timeout."""
    out, dl = [], lib.Deadline(timeout)
    while not dl.expired():
        m = c.recv_msg(dl.remaining())
        if m is None:
            break
        if m.call_id == call_id and m.code is not None:
            out.append(m)
    return out


def pings_ok(env, p):
    codes = []
    for t in ("udp", "tcp", "tls"):
        c = caller(env, p, t)
        try:
            codes.append(lib.ping_on(c, 2.0))
        finally:
            c.close()
    if codes != [200, 200, 200]:
        raise AssertionError(f"OPTIONS on udp/tcp/tls answered {codes}")
    return codes


# ---------------------------------------------------------------- cases

def case_no_to(env):
    """a: the next hop answers 486 without To."""
    p, up = env.a, env.a_up
    before = refused(p, "malformed_response")
    for t in ("udp", "tcp", "tls"):
        c = caller(env, p, t)
        cid = f"noto-{t}-{lib.new_tag()}"
        try:
            c.send(invite(c, t, cid))
            if not up.wait_for(lambda m: m.call_id == cid, 3):
                raise AssertionError(f"{t}: the INVITE did not reach the SIP Server")
            got = [m.code for m in responses(c, cid, 1.0) if m.code >= 200]
            if got:
                raise AssertionError(f"{t}: the caller got {got}")
            lib.wait_until(lambda: refused(p, "malformed_response") > before, 3,
                           f"{t}: the 486 without To counted", proc=p)
            before = refused(p, "malformed_response")
        finally:
            c.close()
    pings_ok(env, p)
    return f"3 x 486 without To dropped, malformed_response = {before}, OPTIONS 200 on udp/tcp/tls"


def case_smuggle_request(env):
    """b: no Content-Length over UDP, onto the TCP SIP Server."""
    p, up = env.b, env.b_up
    inner = lib.build_request("INVITE", "sip:victim@example.com", via_host="6.6.6.6", via_port=5060,
                              call_id="smuggled-" + lib.new_tag())
    c = lib.SipClient(HOST, p.P, "udp")
    try:
        cid = "outer-" + lib.new_tag()
        outer = lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                  via_port=c.local[1], call_id=cid, body=inner)
        head, _, _ = outer.partition(b"\r\n\r\n")
        c.send(without_header(head + b"\r\n\r\n", "content-length") + inner)
        m = up.wait_for(lambda m: m.call_id == cid, 3)
        if not m:
            raise AssertionError("the MESSAGE did not reach the SIP Server")
        smuggled = up.wait_for(lambda m: m.call_id and m.call_id.startswith("smuggled-"), 1.0)
        if smuggled:
            raise AssertionError("the SIP Server parsed a second request: " + smuggled.start)
        cl = m.get("content-length")
        if cl is None or int(cl) != len(inner) or m.body != inner:
            raise AssertionError(f"Content-Length {cl}, body {len(m.body)} bytes, "
                                 f"want {len(inner)}")
        # Content-Length past the end of the datagram
        before = refused(p, "body_length")
        cid2 = "clerr-" + lib.new_tag()
        bad = lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                via_port=c.local[1], call_id=cid2, body=b"hello")
        c.send(bad.replace(b"Content-Length: 5", b"Content-Length: 9999"))
        codes = [r.code for r in responses(c, cid2, 2.0)]
        if 400 not in codes:
            raise AssertionError(f"Content-Length past the datagram answered {codes}, want 400")
        lib.wait_until(lambda: refused(p, "body_length") > before, 3, "body_length counted")
    finally:
        c.close()
    return (f"one request upstream, Content-Length {len(inner)}; "
            f"Content-Length 9999 over UDP: 400, body_length counted")


RINGING = {}  # call-id -> the INVITE A's SIP Server rings for (case h)


def answer_a(m, send):
    """A's SIP Server: 100 then a 486 without To (case a), a 200 with a fake response
    after its body (case c), 180 then 200 to the CANCEL and 487 (case h);
    nothing for the rest."""
    cid = m.call_id or ""
    if cid.startswith("cancel-"):
        if m.method == "INVITE":
            RINGING[cid] = m
            send(lib.build_response(m, 180, "Ringing", to_tag="ring"))
        elif m.method == "CANCEL" and cid in RINGING:
            send(lib.build_response(m, 200, "OK", to_tag="ring"))
            send(lib.build_response(RINGING[cid], 487, "Request Terminated", to_tag="ring"))
        return
    if m.method != "INVITE":
        return
    if cid.startswith("noto-"):
        # (the 100 keeps the unanswered INVITE from taking A's SIP Server
        # out of service at Timer B)
        send(lib.build_response(m, 100, "Trying"))
        send(without_header(lib.build_response(m, 486, "Busy Here", to_tag=lib.new_tag()), "to"))
        return
    if not cid.startswith("trail-"):
        return
    ok = lib.build_response(m, 200, "OK", to_tag=lib.new_tag(), body=SDP,
                            headers=[("Contact", f"<sip:agent@{HOST}>"),
                                     ("Content-Type", "application/sdp")])
    fake = lib.build_response(m, 487, "Smuggled", to_tag="evil")
    send(ok + fake)


def case_smuggle_response(env):
    """c: bytes past a UDP response's Content-Length, relayed onto streams."""
    p = env.a
    notes = []
    for t in ("tcp", "tls"):
        c = caller(env, p, t)
        cid = f"trail-{t}-{lib.new_tag()}"
        try:
            c.send(invite(c, t, cid))
            got = [m for m in responses(c, cid, 2.0) if m.code >= 200]
            codes = [m.code for m in got]
            if codes != [200]:
                raise AssertionError(f"{t}: final responses {codes}, want exactly one 200")
            if "Smuggled" in got[0].raw.decode("latin-1"):
                raise AssertionError(f"{t}: the 200 carried the trailing bytes")
            notes.append(f"{t}: one 200")
        finally:
            c.close()
    return ", ".join(notes)


def case_control_bytes(env):
    """d: bare CR, bare LF, NUL in a header value."""
    p, up = env.a, env.a_up
    before = refused(p, "control_bytes")
    n = 0
    for t in ("udp", "tcp", "tls"):
        for label, value in (("CR", b"a\rInjected: yes"), ("LF", b"a\nInjected: yes"),
                             ("NUL", b"a\x00b")):
            c = caller(env, p, t)
            cid = f"ctl-{t}-{label}-{lib.new_tag()}"
            try:
                lh, lp = c.local
                req = lib.build_request("MESSAGE", "sip:agent@example.com", via_host=lh,
                                        via_port=lp, transport=t.upper(), call_id=cid,
                                        headers=[("Subject", "SUBJ")])
                c.send(req.replace(b"SUBJ", value))
                codes = [r.code for r in responses(c, cid, 1.5)]
                if codes != [400]:
                    raise AssertionError(f"{t} {label}: answered {codes}, want [400]")
                n += 1
            finally:
                c.close()
    leaked = up.matching(lambda m: (m.call_id or "").startswith("ctl-"))
    if leaked:
        raise AssertionError(f"{len(leaked)} reached the SIP Server")
    after = refused(p, "control_bytes")
    if after - before != n:
        raise AssertionError(f"control_bytes went from {before} to {after}, want +{n}")
    return f"{n} requests answered 400, none forwarded, control_bytes +{n}"


def case_spoofed_response(env):
    """e: a 200 with the live branch from somewhere else."""
    notes = []
    for p, up, spoof_kind in ((env.a, env.a_up, "udp"), (env.b, env.b_up, "tcp")):
        before = refused(p, "response_mismatch")
        c = lib.SipClient(HOST, p.P, "udp")
        cid = f"spoof-{spoof_kind}-{lib.new_tag()}"
        try:
            c.send(invite(c, "udp", cid))
            m = up.wait_for(lambda m: m.call_id == cid, 3)
            if not m:
                raise AssertionError("the INVITE did not reach the SIP Server")
            top = lib.parse_via(m.values("via")[0])
            fake = lib.build_response(m, 200, "OK", to_tag="spoof", body=SDP,
                                      headers=[("Content-Type", "application/sdp")])
            if spoof_kind == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((HOST, 0))
                s.sendto(fake, (top[1], top[2]))
            else:
                s = socket.create_connection((HOST, p.P), timeout=3)
                s.sendall(fake)
            try:
                got = [r.code for r in responses(c, cid, 1.0) if r.code >= 200]
                if got:
                    raise AssertionError(f"{spoof_kind}: the caller got {got} from the spoofer")
                lib.wait_until(lambda: refused(p, "response_mismatch") > before, 3,
                               "response_mismatch counted", proc=p)
            finally:
                s.close()
            # the real SIP Server answers: that one goes through
            real = lib.build_response(m, 486, "Busy Here", to_tag="real")
            m.reply(real)
            # (a UDP caller that sends no ACK gets the 486 again: Timer G)
            got = [r.code for r in responses(c, cid, 2.0) if r.code >= 200]
            if not got or set(got) != {486}:
                raise AssertionError(f"{spoof_kind}: after the spoof the caller got {got}, "
                                     "want the real 486")
            notes.append(f"{spoof_kind} spoof dropped, real 486 relayed")
        finally:
            c.close()
    return ", ".join(notes)


def case_spoofed_probe(env):
    """f: spoofed 200s to the probes of a dead SIP Server."""
    p, up = env.c, env.c_up
    c = lib.SipClient(HOST, p.P, "udp")

    def status(n):
        cid = f"probe-{n}-{lib.new_tag()}"
        c.send(lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                 via_port=c.local[1], call_id=cid))
        got = [r.code for r in responses(c, cid, 1.0) if r.code >= 200]
        return got[0] if got else None

    try:
        lib.wait_until(lambda: status(0) == 503, 15, "the silent SIP Server taken out", proc=p)
        before = refused(p, "response_mismatch")
        spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        spoofer.bind((HOST, 0))
        seen = len(up.probe_msgs)
        spoofed = 0
        dl = lib.Deadline(6)
        while not dl.expired() and spoofed < 3:
            m = up.probe_after(seen, dl.remaining())
            if not m:
                break
            seen += 1
            top = lib.parse_via(m.values("via")[0])
            spoofer.sendto(lib.build_response(m, 200, "OK"), (top[1], top[2]))
            spoofed += 1
        spoofer.close()
        if spoofed < 2:
            raise AssertionError(f"only {spoofed} probes seen to spoof")
        # the owner of SIP Server health still does not count it as up (a
        # request may still be tried on it: with no other server, a target
        # that never answered a probe is judged by requests)
        st = target_state(p)
        if st.get("state") == "up" or st.get("reason") == "probe_answered":
            raise AssertionError(f"after {spoofed} spoofed 200s the SIP Server is {st}")
        mism = refused(p, "response_mismatch") - before
        if mism < spoofed:
            raise AssertionError(f"response_mismatch +{mism}, want +{spoofed}")
        # the real SIP Server answers its probes again: back in service
        up.answer_probes = True
        lib.wait_until(lambda: target_state(p).get("state") == "up", 15, "the real answer taken",
                       proc=p)
    finally:
        c.close()
    return (f"{spoofed} spoofed probe answers dropped (target still {st.get('state')}, "
            f"{st.get('reason')}), the real one brings it back")


def case_cancel(env):
    """h: the SIP Server's 200 to our CANCEL shares the INVITE's branch."""
    p = env.a
    notes = []
    for t in ("udp", "tcp"):
        c = caller(env, p, t)
        cid = f"cancel-{t}-{lib.new_tag()}"
        try:
            inv = invite(c, t, cid)
            c.send(inv)
            got = responses(c, cid, 1.0)
            if 180 not in [r.code for r in got]:
                raise AssertionError(f"{t}: no 180 ({[r.code for r in got]})")
            # the INVITE's branch and sent-by name its transaction (RFC 3261 §9.1)
            sent = lib.SipMsg(inv)
            lh, lp = c.local
            c.send(lib.build_request("CANCEL", sent.ruri, via_host=lh, via_port=lp,
                                     transport=t.upper(), call_id=cid,
                                     branch=lib.parse_via(sent.values("via")[0])[3]["branch"]))
            got = responses(c, cid, 2.0)
            finals = sorted({(r.cseq_method, r.code) for r in got if r.code >= 200})
            if ("INVITE", 487) not in finals or ("CANCEL", 200) not in finals:
                raise AssertionError(f"{t}: finals {finals}, want CANCEL 200 and INVITE 487")
            notes.append(f"{t}: {finals}")
        finally:
            c.close()
    return "; ".join(notes)


def limit(p, name):
    _, body = http(p.S, "GET", "/stats")
    return json.loads(body)["total"][f"limit_{name}"]


def case_transaction_limit(env):
    """g: --max-transactions 16 on b, whose SIP Server never answers."""
    p = env.b
    before = limit(p, "max_transactions")
    c = lib.SipClient(HOST, p.P, "udp")
    codes, retry = {}, set()
    try:
        cids = [f"flood-{i}-{lib.new_tag()}" for i in range(40)]
        for cid in cids:
            c.send(lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                     via_port=c.local[1], call_id=cid))
        dl = lib.Deadline(3)
        while not dl.expired() and len(codes) < 24:
            m = c.recv_msg(dl.remaining())
            if m is None:
                break
            if m.code and m.call_id in cids:
                codes[m.call_id] = m.code
                if m.get("retry-after"):
                    retry.add(m.get("retry-after"))
        n503 = sum(1 for v in codes.values() if v == 503)
        if n503 < 24 or not retry:
            raise AssertionError(f"{n503} of 40 got 503 (Retry-After {retry}), want >= 24")
        hits = limit(p, "max_transactions") - before
        if hits < n503:
            raise AssertionError(f"limit_max_transactions +{hits}, want +{n503}")
        if lib.ping_on(c, 2.0) != 200:
            raise AssertionError("OPTIONS to sipedge not answered at the limit")
    finally:
        c.close()
    return f"{n503} of 40 answered 503 Retry-After {sorted(retry)}, counted; OPTIONS still 200"


def main():
    if not lib.have_sipedge():
        print("0 passed, 0 failed (sipedge binary missing)")
        return 77
    lib.raise_on_sigterm()
    servers = []
    try:
        with lib.time_bound(240, "edge input"), lib.Harness("edge-input") as h:
            env = Env()
            env.certs = h.path("certs")
            gen_certs(env.certs)

            env.a_up = Server(on_request=answer_a)
            env.b_up = Server()
            env.c_up = Server(answer_probes=False)
            servers += [env.a_up, env.b_up, env.c_up]
            env.a = start(h, env, "a", f"sip:{HOST}:{env.a_up.port}")
            env.b = start(h, env, "b", f"sip:{HOST}:{env.b_up.port};transport=tcp",
                          extra=["--max-transactions", "16"])
            env.c = start(h, env, "c", f"sip:{HOST}:{env.c_up.port}",
                          extra=["--oos-check", "1", "--oos-force", "1"])
            case("a. 486 without To from the next hop (udp, tcp, tls)", lambda: case_no_to(env))
            case("b. UDP request without Content-Length onto a TCP SIP Server",
                 lambda: case_smuggle_request(env))
            case("c. UDP response with bytes past Content-Length onto TCP/TLS callers",
                 lambda: case_smuggle_response(env))
            case("d. bare CR / LF / NUL in a header -> 400 (udp, tcp, tls)",
                 lambda: case_control_bytes(env))
            case("e. spoofed 200 for a live INVITE (udp, tcp)", lambda: case_spoofed_response(env))
            case("f. spoofed 200 to a probe keeps a dead SIP Server out",
                 lambda: case_spoofed_probe(env))
            case("h. CANCEL: the SIP Server's 200 to it leaves the INVITE's 487 to relay",
                 lambda: case_cancel(env))
            case("g. --max-transactions: 503 with Retry-After, counted",
                 lambda: case_transaction_limit(env))

            def clean_exit():
                notes = []
                for p in (env.a, env.b, env.c):
                    rc = p.stop()
                    rep = lib.sanitizer_report(p)
                    if rc != 0 or rep:
                        raise AssertionError(f"{p.name}: exit {rc}, {rep}")
                    notes.append(f"{p.name} 0")
                return ", ".join(notes)
            case("z. clean exit, no sanitizer report", clean_exit)
    except (lib.GlobalTimeout, lib.Terminated) as e:
        results.append(False)
        print(f"FAIL {e}")
    finally:
        for s in servers:
            s.close()
    ok = sum(results)
    print(f"{ok} passed, {len(results) - ok} failed")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
