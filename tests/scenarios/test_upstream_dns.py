#!/usr/bin/python3
"""SIP Server and peer site given by name (RFC 3263), ARCHITECTURE §2/§7:
`-u sip:sipserver.test;transport=udp` (SRV _sip._udp -> the fake server's
port) and `--peer site-b.example.com=sip:peer.test:PORT;transport=udp` (A),
answered by a loopback dnsmasq. Checks:
  a. the names resolve: the SIP Server gets the OPTIONS probes and the
     endpoints' requests, the peer gets the requests for its domain;
  b. a SIP Server whose name does not resolve (the DNS server is silent) is
     not in service: endpoints get 503 with Retry-After, nothing is sent;
  c. two SRV targets, the preferred one silent: after its probe times out
     sipedge moves to the next target and requests reach it;
  d. sips:sipserver.test: the TLS SIP Server must prove that name (RFC
     5922): one whose certificate names it gets the probes and requests, one
     whose certificate names only localhost gets no SIP byte (bad_name).
Prints one line per case and "N passed, M failed"."""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from test_tls import TlsUpstream, gen_certs, sign_server_cert  # noqa: E402

HOST = "127.0.0.1"
PEER_DOMAIN = "site-b.example.com"


def message(port, ruri):
    """A MESSAGE from an endpoint: (final response or None, Call-ID)."""
    cid = f"dns-{lib.new_tag()}"
    return lib.udp_request(HOST, port, "MESSAGE", ruri, cid), cid


def case_resolves():
    up, peer = lib.Sink(HOST), lib.Sink(HOST)
    answerers = [lib.SinkAnswerer(s, {"MESSAGE": 200}) for s in (up, peer)]
    try:
        with lib.Harness("upstream-dns") as h:
            dns = lib.free_port(HOST, kinds=("udp",))
            lib.start_dnsmasq(h, dns, answer=HOST, extra=[
                f"--srv-host=_sip._udp.sipserver.test,server.test,{up.port},0,0"])
            port = lib.free_port(HOST)
            p = lib.start_sipedge(h, [("udp", HOST, port)],
                                  upstream="sip:sipserver.test;transport=udp",
                                  extra=["--dns-server", f"{HOST}:{dns}", "--oos-check", "1",
                                         "--peer", f"{PEER_DOMAIN}=sip:peer.test:{peer.port}"
                                         ";transport=udp"])
            lib.wait_until(lambda: up.probes > 0, 10, "a probe at the SIP Server", proc=p)
            r, cid = message(port, "sip:agent@site-a.example.com")
            if r is None or r.code != 200 or not up.matching(lambda m: m.call_id == cid):
                raise AssertionError(f"request for the SIP Server: {r!r}")
            r, cid = message(port, f"sip:agent@{PEER_DOMAIN}")
            if r is None or r.code != 200 or not peer.matching(lambda m: m.call_id == cid):
                raise AssertionError(f"request for the peer site: {r!r}")
            log = p.output()[1]
            if "resolves to" not in log:
                raise AssertionError("no 'resolves to' line in the log")
            return (f"SRV -> SIP Server {HOST}:{up.port} ({up.probes} probes answered), "
                    f"A -> peer {HOST}:{peer.port}")
    finally:
        for a in answerers:
            a.stop()
        up.close()
        peer.close()


def case_unresolved():
    with lib.Harness("upstream-dns-silent") as h:
        silent = lib.free_port(HOST, kinds=("udp",))  # nothing listens there
        port = lib.free_port(HOST)
        lib.start_sipedge(h, [("udp", HOST, port)], upstream="sip:sipserver.test;transport=udp",
                          extra=["--dns-server", f"{HOST}:{silent}"])
        r, _ = message(port, "sip:agent@site-a.example.com")
        if r is None or r.code != 503 or not r.get("retry-after"):
            raise AssertionError(f"want 503 with Retry-After, got {r!r}")
        return f"503 with Retry-After: {r.get('retry-after')}"


def case_next_target():
    silent, good = lib.Sink(HOST, answer_probes=False), lib.Sink(HOST)
    answerer = lib.SinkAnswerer(good, {"MESSAGE": 200})
    try:
        with lib.Harness("upstream-dns-srv2") as h:
            dns = lib.free_port(HOST, kinds=("udp",))
            lib.start_dnsmasq(h, dns, answer=HOST, extra=[
                f"--srv-host=_sip._udp.sipserver.test,first.test,{silent.port},10,0",
                f"--srv-host=_sip._udp.sipserver.test,second.test,{good.port},20,0"])
            port = lib.free_port(HOST)
            p = lib.start_sipedge(h, [("udp", HOST, port)],
                                  upstream="sip:sipserver.test;transport=udp",
                                  extra=["--dns-server", f"{HOST}:{dns}", "--oos-check", "1",
                                         "--oos-force", "1"])
            lib.wait_until(lambda: good.probes > 0, 15, "a probe at the second target", proc=p)
            if not silent.matching(lambda m: m.method == "OPTIONS"):
                raise AssertionError("the preferred (priority 10) target was never probed")
            r, cid = message(port, "sip:agent@site-a.example.com")
            if r is None or r.code != 200 or not good.matching(lambda m: m.call_id == cid):
                raise AssertionError(f"request after the failover: {r!r}")
            return (f"priority 10 target silent ({len(silent.matching(lambda m: True))} probes), "
                    f"moved to the priority 20 target: probes answered, request 200")
    finally:
        answerer.stop()
        silent.close()
        good.close()


def case_tls_name():
    ups = []
    try:
        with lib.Harness("upstream-dns-tls") as h:
            certs = h.path("certs")
            gen_certs(certs)
            named_crt, named_key = h.path("named.crt"), h.path("named.key")
            sign_server_cert(certs, named_crt, named_key, h.dir, san="DNS:sipserver.test")
            good = TlsUpstream(named_crt, named_key)
            bad = TlsUpstream(os.path.join(certs, "server.crt"), os.path.join(certs, "server.key"))
            ups += [good, bad]
            dns = lib.free_port(HOST, kinds=("udp",))
            lib.start_dnsmasq(h, dns, answer=HOST)
            tls = ["--tls-cert", os.path.join(certs, "server.crt"),
                   "--tls-key", os.path.join(certs, "server.key"),
                   "--tls-ca", os.path.join(certs, "ca.crt"),
                   "--dns-server", f"{HOST}:{dns}", "--oos-check", "1", "--oos-force", "1"]
            # a TLS listener too: it stands for sipedge in Via towards the SIP Server
            pg, pb = lib.free_port(HOST), lib.free_port(HOST)
            tg, tb = lib.free_port(HOST, kinds=("tcp",)), lib.free_port(HOST, kinds=("tcp",))
            lib.start_sipedge(h, [("udp", HOST, pg), ("tls", HOST, tg)], name="good",
                              upstream=f"sips:sipserver.test:{good.port}", extra=tls)
            sb = lib.start_sipedge(h, [("udp", HOST, pb), ("tls", HOST, tb)], name="bad",
                                   upstream=f"sips:sipserver.test:{bad.port}", extra=tls)
            lib.wait_until(lambda: good.handshakes_ok > 0, 10, "a TLS probe at the SIP Server")
            r, cid = message(pg, "sip:agent@site-a.example.com")
            if r is None or r.code != 200 or not any(m.call_id == cid for m in good.msgs):
                raise AssertionError(f"request over TLS to sipserver.test: {r!r}")
            lib.wait_until(lambda: bad.handshake_errors, 10, "a refused handshake at the "
                           "wrongly named server")
            r, _ = message(pb, "sip:agent@site-a.example.com")
            sb.stop()
            log = sb.output()[1]
            # one worker probes (the owner of upstream health): the refusals
            # are counted where the connections were, summed over workers
            if bad.app_bytes or not sum(int(n) for n in re.findall(r"bad_name=([0-9]+)", log)):
                raise AssertionError(f"wrong name: {bad.app_bytes} SIP bytes reached it; "
                                     f"exit counters: {re.findall(r'bad_name=[0-9]+', log)}")
            return (f"named certificate: probes and request over TLS ({good.handshakes_ok} "
                    f"handshakes); localhost-only certificate: refused "
                    f"({re.findall(r'bad_name=[0-9]+', log)}), no SIP byte, endpoint got "
                    f"{r.code if r else None}")
    finally:
        for u in ups:
            u.close()


def main():
    return lib.run_cases("test_upstream_dns", 120, [
        ("SIP Server by SRV, peer by A record", case_resolves),
        ("SIP Server name that does not resolve", case_unresolved),
        ("next SRV target when the first does not answer", case_next_target),
        ("sips: name checked against the SIP Server's certificate", case_tls_name),
    ])


if __name__ == "__main__":
    sys.exit(main())
