#!/usr/bin/python3
"""Peer sites (--peer DOMAIN=URI) and the new-INVITE rate limit
(--overload-dialog-rate), ARCHITECTURE §2 rule 5 and §7.

Fake SIP Server and fake peer-site proxy: lib.Sink, answering what they
receive (lib.SinkAnswerer) at the top Via. Checks:
  a. an endpoint's request for the peer's domain goes to the peer (with our
     Record-Route on an INVITE), one for any other domain to the SIP Server;
  b. a request from the peer site is routed by its Request-URI (to the
     endpoint it names), not to the SIP Server;
  c. with --overload-dialog-rate 10, a burst of 40 new INVITEs: each one is
     either forwarded or answered 503, at most 20 are forwarded (the burst may
     straddle two seconds), and a MESSAGE sent in the same second still goes
     through; without the flag the same burst is forwarded whole.
Prints one line per case and "N passed, M failed"."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HOST = "127.0.0.1"
PEER_DOMAIN = "site-b.example.com"


class Setup:
    """sipedge -w 2 with an upstream sink and a peer sink, both answering."""

    def __init__(self, extra=()):
        self.up, self.peer = lib.Sink(HOST), lib.Sink(HOST)
        self.answerers = [lib.SinkAnswerer(s, {"MESSAGE": 200, "INVITE": 486})
                          for s in (self.up, self.peer)]
        self.h = lib.Harness("peer-overload")
        self.h.__enter__()
        self.port = lib.free_port(HOST)
        self.proxy = lib.start_sipedge(
            self.h, [("udp", HOST, self.port)], upstream=f"{self.up.uri};transport=udp",
            extra=["--peer", f"{PEER_DOMAIN}={self.peer.uri};transport=udp", *extra])

    def close(self):
        for a in self.answerers:
            a.stop()
        self.h.__exit__(None, None, None)
        self.up.close()
        self.peer.close()


def request(client, method, ruri, cid):
    client.send(lib.build_request(method, ruri, via_host=HOST, via_port=client.local[1],
                                  call_id=cid, from_uri=f"sip:caller@{HOST}",
                                  headers=[("Contact", f"<sip:caller@{HOST}:{client.local[1]}>")]
                                  if method == "INVITE" else []))


def finals(client, cids, timeout=5):
    """Final response code per Call-ID in cids (None when none came)."""
    got = {}
    dl = lib.Deadline(timeout)
    while len(got) < len(cids) and not dl.expired():
        m = client.recv_msg(dl.remaining())
        if m is None:
            break
        if m.is_response and m.code >= 200 and m.call_id in cids:
            got.setdefault(m.call_id, m.code)
    return {c: got.get(c) for c in cids}


def case_peer_routing():
    s = Setup()
    try:
        c = lib.SipClient(HOST, s.port, "udp")
        tag = lib.new_tag()
        cids = {"peer-msg": f"pm-{tag}", "peer-inv": f"pi-{tag}", "up-msg": f"um-{tag}"}
        request(c, "MESSAGE", f"sip:agent@{PEER_DOMAIN}", cids["peer-msg"])
        request(c, "INVITE", f"sip:agent@{PEER_DOMAIN}", cids["peer-inv"])
        request(c, "MESSAGE", "sip:agent@site-a.example.com", cids["up-msg"])
        codes = finals(c, set(cids.values()))
        c.close()
        want = {cids["peer-msg"]: 200, cids["peer-inv"]: 486, cids["up-msg"]: 200}
        if codes != want:
            raise AssertionError(f"final responses {codes}, want {want}")
        at_peer = {m.call_id for m in s.peer.matching(lambda m: m.method in ("MESSAGE", "INVITE"))}
        at_up = {m.call_id for m in s.up.matching(lambda m: m.method in ("MESSAGE", "INVITE"))}
        if at_peer != {cids["peer-msg"], cids["peer-inv"]} or at_up != {cids["up-msg"]}:
            raise AssertionError(f"peer got {sorted(at_peer)}, SIP Server got {sorted(at_up)}")
        inv = s.peer.wait_for(lambda m: m.call_id == cids["peer-inv"], 1)
        rr = inv.values("record-route")
        if not rr or f"{HOST}:{s.port}" not in rr[0]:
            raise AssertionError(f"INVITE to the peer without our Record-Route: {rr}")
        return f"{PEER_DOMAIN} -> peer, other domain -> SIP Server, Record-Route {rr[0]}"
    finally:
        s.close()


def case_from_peer():
    s = Setup()
    try:
        phone = lib.SipClient(HOST, s.port, "udp")
        cid = f"fp-{lib.new_tag()}"
        req = lib.build_request("MESSAGE", f"sip:agent@{HOST}:{phone.local[1]}", via_host=HOST,
                                via_port=s.peer.port, call_id=cid,
                                from_uri=f"sip:someone@{PEER_DOMAIN}")
        s.peer.udp.sendto(req, (HOST, s.port))
        m = phone.recv_msg(3)
        phone.close()
        if m is None or m.is_response or m.call_id != cid:
            raise AssertionError(f"the endpoint named by the Request-URI got {m!r}")
        if s.up.matching(lambda x: x.call_id == cid):
            raise AssertionError("the peer's request went to the SIP Server")
        return "routed by Request-URI to the endpoint, not to the SIP Server"
    finally:
        s.close()


def burst(extra, n=40):
    """n new INVITEs and then one MESSAGE, back to back; returns (codes by
    Call-ID, INVITE Call-IDs that reached the SIP Server, MESSAGE code)."""
    s = Setup(extra)
    try:
        c = lib.SipClient(HOST, s.port, "udp")
        tag = lib.new_tag()
        cids = [f"ov-{i}-{tag}" for i in range(n)]
        for cid in cids:
            request(c, "INVITE", "sip:agent@site-a.example.com", cid)
        mcid = f"ovm-{tag}"
        request(c, "MESSAGE", "sip:agent@site-a.example.com", mcid)
        codes = finals(c, set(cids) | {mcid}, timeout=8)
        c.close()
        fwd = {m.call_id for m in s.up.matching(lambda m: m.method == "INVITE")}
        return {k: codes[k] for k in cids}, fwd, codes[mcid]
    finally:
        s.close()


def case_overload():
    codes, fwd, mcode = burst(["--overload-dialog-rate", "10"])
    n503 = sum(1 for v in codes.values() if v == 503)
    n486 = sum(1 for v in codes.values() if v == 486)
    if n503 + n486 != len(codes) or None in codes.values():
        raise AssertionError(f"responses {sorted(codes.values(), key=str)}")
    if len(fwd) != n486 or not 1 <= n486 <= 20:
        raise AssertionError(f"{len(fwd)} INVITEs reached the SIP Server, {n486} answered 486, "
                             f"{n503} got 503: want 1..20 through")
    if mcode != 200:
        raise AssertionError(f"the MESSAGE got {mcode}, want 200: only INVITEs are limited")
    return f"{n486} forwarded, {n503} got 503, the MESSAGE went through"


def case_no_limit():
    codes, fwd, _ = burst([])
    if len(fwd) != len(codes) or any(v != 486 for v in codes.values()):
        raise AssertionError(f"{len(fwd)} of {len(codes)} forwarded, "
                             f"responses {sorted(set(map(str, codes.values())))}")
    return f"all {len(fwd)} forwarded"


def main():
    return lib.run_cases("test_peer_overload", 150, [
        ("endpoint requests for a peer's domain go to the peer", case_peer_routing),
        ("requests from a peer site are routed by Request-URI", case_from_peer),
        ("--overload-dialog-rate 10 turns a burst of INVITEs away", case_overload),
        ("without --overload-dialog-rate the burst goes through", case_no_limit),
    ])


if __name__ == "__main__":
    sys.exit(main())
