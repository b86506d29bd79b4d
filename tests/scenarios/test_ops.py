#!/usr/bin/python3
"""Operating sipedge (issue 12): one owner of upstream health, passive health
next to probing, failover within a transaction, GET /flows and GET /health.

Every case starts its own sipedge (-w 2, default probing: --oos-check and
--oos-force 5 s, --failover-timeout 2 s, unless it says otherwise) on loopback:
  owner      probes come from one worker only (the owner of upstream health,
             worker 0), not from each; /stats and /metrics show each target's
             state, whether it is the one in use, since when and why
  sipp       a sipp UAS as SIP Server, which ignores OPTIONS, through --calls
             calls (default 2,000 at 100/s; the acceptance run is --calls 10000
             --rate 500 against the release build): 0 failed
  srv-closed SRV _sip._udp with the first target's port closed, the second
             alive: a REGISTER sent 1 s after start is answered within 3 s,
             through the second
  srv-silent the first SRV target answers probes but not the REGISTER: the
             request goes on to the second within its transaction (answered
             within 3 s, a new branch), and the next REGISTER goes straight to
             the second
  srv-503    the first SRV target answers the REGISTER 503 (no Retry-After):
             it goes on to the second within its transaction; the first stays
             in service (it refused one request, it is not unavailable)
  killed     primary and backup sipp UASes (answering OPTIONS, -aa), calls at
             50/s, the primary killed mid-load: failed calls at most 50/s x
             --failover-timeout, every call accounted for, the backup active
  back       the primary comes back: once it answers probes it is active
             again, and a batch of calls all goes to it
  flows      N phones register over TLS; GET /flows lists each one (AOR,
             address, transport) with the worker that owns its connection (the
             worker named in the Via branch of the REGISTER it relayed), pages
             with ?offset=&limit= cover all, a keep-alive shows
  health     GET /health: 200 while a SIP Server answers, 503 (JSON body) when
             none does, 200 again when one is back
Waits are bounded polls; the few durations the issue names (3 s) are bounds on
"answered at all", and measured values are printed.
Usage: test_ops.py [--calls N] [--rate R] [--phones N] [--only NAME[,NAME]]
Prints one line per case and "N passed, M failed"; 77 without sipedge."""

import argparse
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
from run_sipp_calls import check_uac  # noqa: E402

HOST = "127.0.0.1"
BRANCH_RE = re.compile(r"branch=z9hG4bKSe([0-9a-f]{2})")
FAILOVER_S = 2.0  # --failover-timeout's default


# ---------------------------------------------------------------- helpers

def http(port, path, timeout=5):
    """(status, body text) of GET path on the management port."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def start_sipedge(h, listens, sport, **kw):
    """lib.start_sipedge() with --stats-listen on sport, ready when the
    management port listens too (main opens it after the workers run)."""
    kw["extra"] = [*kw.get("extra", ()), "--stats-listen", f"{HOST}:{sport}"]
    p = lib.start_sipedge(h, listens, **kw)
    lib.wait_until(lambda: lib.port_bound(sport, "tcp", HOST), 10, "the management port", proc=p)
    return p


def stats(port):
    code, body = http(port, "/stats")
    if code != 200:
        raise AssertionError(f"/stats answered {code}")
    return json.loads(body)


def stop_all(*things):
    """Stops SinkAnswerers and closes Sinks (the end of a case)."""
    for t in things:
        (t.stop if isinstance(t, lib.SinkAnswerer) else t.close)()


def worker_of(via):
    m = BRANCH_RE.search(via or "")
    return int(m.group(1), 16) if m else None


def top_via(m):
    vias = m.values("via")
    return vias[0] if vias else ""


def register(client, aor, cid, cseq=1):
    """A REGISTER for aor from a UDP SipClient; (final response or None, seconds)."""
    lh, lp = client.local
    client.send(lib.build_request("REGISTER", "sip:sipserver.test", via_host=lh, via_port=lp,
                                  call_id=cid, cseq=cseq, from_uri=aor, to_uri=aor,
                                  headers=[("Contact", f"<sip:u@{lh}:{lp}>"),
                                           ("Expires", "600")]))
    t0 = time.monotonic()
    dl = lib.Deadline(3.0)
    while not dl.expired():
        m = client.recv_msg(dl.remaining())
        if m is None:
            break
        if m.is_response and m.code >= 200 and m.call_id == cid:
            return m, time.monotonic() - t0
    return None, time.monotonic() - t0


def srv_sipedge(h, dns_records, sport=None):
    """dnsmasq with the SRV records and sipedge -u sip:sipserver.test;transport=udp
    (with a management port on sport, if given)."""
    dns = lib.free_port(HOST, kinds=("udp",))
    lib.start_dnsmasq(h, dns, answer=HOST,
                      extra=[f"--srv-host=_sip._udp.sipserver.test,{name},{port},{prio},0"
                             for name, port, prio in dns_records])
    port = lib.free_port(HOST)
    kw = dict(upstream="sip:sipserver.test;transport=udp",
              extra=["--dns-server", f"{HOST}:{dns}"])
    if sport:
        return start_sipedge(h, [("udp", HOST, port)], sport, **kw), port
    return lib.start_sipedge(h, [("udp", HOST, port)], **kw), port


# ---------------------------------------------------------------- cases

def case_owner():
    sink = lib.Sink(HOST, answer_probes=False)  # records the probes
    try:
        with lib.Harness("ops-owner") as h:
            port, sport = lib.free_port(HOST), lib.free_port(HOST)
            start_sipedge(h, [("udp", HOST, port)], sport, upstream=f"{sink.uri};transport=udp",
                          extra=["--oos-check", "1", "--oos-force", "1"])

            def branches():
                return {lib.parse_via(top_via(m))[3].get("branch"): worker_of(top_via(m))
                        for m in sink.matching(lambda m: m.method == "OPTIONS")}
            lib.wait_until(lambda: len(branches()) >= 3, 15, "three probes")
            got = branches()
            if set(got.values()) != {0}:
                raise AssertionError(f"probes from workers {sorted(set(got.values()), key=str)}, "
                                     "want worker 0 only")
            up = stats(sport)["upstreams"]
            t = up[0].get("targets") or [{}]
            if len(up) != 1 or not {"state", "current", "since_s", "reason"} <= set(t[0]):
                raise AssertionError(f"/stats upstreams: {up}")
            if (t[0]["state"], t[0]["reason"]) != ("unknown", "probe_unanswered"):
                raise AssertionError(f"a target that never answered a probe: {t[0]}, want "
                                     "unknown (judged by requests), probe_unanswered")
            _, text = http(sport, "/metrics")
            if "sipedge_upstream_target_state{role=\"primary\"" not in text:
                raise AssertionError("no per-target state in /metrics")
            return (f"{len(got)} probes, all from worker 0; /stats target: state "
                    f"{t[0]['state']}, reason {t[0]['reason']}")
    finally:
        sink.close()


def case_sipp(args):
    with lib.Harness("ops-sipp") as h:
        uas_port, proxy_port = lib.free_port(HOST), lib.free_port(HOST)
        # no -aa and no -m: sipp ignores the OPTIONS probes (it aborts each as
        # an unexpected "call") and serves calls until stopped
        uas = lib.Sipp(h, "uas", "uas_call.xml", local_port=uas_port, transport="u1", host=HOST)
        uas.start_uas()
        proxy = lib.start_sipedge(h, [("udp", HOST, proxy_port)],
                                  upstream=f"sip:{HOST}:{uas_port};transport=udp")
        uac = lib.Sipp(h, "uac", "uac_call.xml", transport="un", host=HOST, calls=args.calls,
                       rate=args.rate, remote=f"{HOST}:{proxy_port}",
                       keys={"dest": f"{HOST}:{uas_port}"},
                       extra=["-d", 100, "-max_socket", 50])
        t0 = time.monotonic()
        res = uac.run(timeout=args.calls / args.rate + 120)
        secs = time.monotonic() - t0
        bad = check_uac(res, args.calls)
        if not proxy.alive():
            bad.append("sipedge died")
        if bad:
            raise AssertionError("; ".join(bad))
        return (f"{res['successful']}/{args.calls} calls at {args.rate:g}/s in {secs:.1f}s, "
                f"{res['failed']} failed, probes ignored by the UAS")


def case_srv_closed():
    good = lib.Sink(HOST)
    answerer = lib.SinkAnswerer(good, {"REGISTER": 200})
    closed = lib.free_port(HOST)  # nothing listens there
    try:
        with lib.Harness("ops-srv-closed") as h:
            t0 = time.monotonic()
            _, port = srv_sipedge(h, [("first.test", closed, 10), ("second.test", good.port, 20)])
            time.sleep(max(0.0, t0 + 1.0 - time.monotonic()))  # the "1 s after start"
            c = lib.SipClient(HOST, port, "udp")
            cid = f"srv-{lib.new_tag()}"
            r, secs = register(c, "sip:agent@cc.example.com", cid)
            c.close()
            if r is None or r.code != 200:
                raise AssertionError(f"REGISTER {time.monotonic() - t0:.1f}s after start: "
                                     f"{r!r} within 3 s")
            if not good.matching(lambda m: m.call_id == cid):
                raise AssertionError("answered, but not through the second target")
            return f"200 through the priority 20 target after {secs:.2f}s"
    finally:
        stop_all(answerer, good)


def case_srv_silent():
    first, second = lib.Sink(HOST), lib.Sink(HOST)  # both answer probes
    answerer = lib.SinkAnswerer(second, {"REGISTER": 200})
    try:
        with lib.Harness("ops-srv-silent") as h:
            p, port = srv_sipedge(h, [("first.test", first.port, 10),
                                      ("second.test", second.port, 20)])
            lib.wait_until(lambda: first.probes and second.probes, 10, "both targets probed",
                           proc=p)
            c = lib.SipClient(HOST, port, "udp")
            cid = f"srv-{lib.new_tag()}"
            r, secs = register(c, "sip:agent@cc.example.com", cid)
            if r is None or r.code != 200:
                raise AssertionError(f"REGISTER to a silent first target: {r!r} within 3 s")
            at1 = first.matching(lambda m: m.call_id == cid)
            at2 = second.matching(lambda m: m.call_id == cid)
            b1 = {lib.parse_via(top_via(m))[3].get("branch") for m in at1}
            b2 = {lib.parse_via(top_via(m))[3].get("branch") for m in at2}
            if not at1 or not at2 or b1 & b2:
                raise AssertionError(f"first target got {len(at1)}, second {len(at2)} "
                                     f"(branches {b1} / {b2}): want both, new branch")
            cid2 = f"srv-{lib.new_tag()}"
            r2, secs2 = register(c, "sip:agent@cc.example.com", cid2, cseq=2)
            c.close()
            if r2 is None or r2.code != 200 or first.matching(lambda m: m.call_id == cid2):
                raise AssertionError(f"next REGISTER: {r2!r}, reached the failed target: "
                                     f"{bool(first.matching(lambda m: m.call_id == cid2))}")
            return (f"first REGISTER failed over within its transaction ({secs:.2f}s, new "
                    f"branch), the next went straight to the second ({secs2:.2f}s)")
    finally:
        stop_all(answerer, first, second)


def case_srv_503():
    first, second = lib.Sink(HOST), lib.Sink(HOST)
    answerers = [lib.SinkAnswerer(first, {"REGISTER": 503}),
                 lib.SinkAnswerer(second, {"REGISTER": 200})]
    try:
        with lib.Harness("ops-srv-503") as h:
            sport = lib.free_port(HOST)
            p, port = srv_sipedge(h, [("first.test", first.port, 10),
                                      ("second.test", second.port, 20)], sport)
            lib.wait_until(lambda: first.probes and second.probes, 10, "both targets probed",
                           proc=p)
            c = lib.SipClient(HOST, port, "udp")
            cid = f"srv-{lib.new_tag()}"
            r, secs = register(c, "sip:agent@cc.example.com", cid)
            c.close()
            if r is None or r.code != 200 or not first.matching(lambda m: m.call_id == cid):
                raise AssertionError(f"REGISTER answered 503 by the first target: {r!r}")
            states = [t["state"] for t in stats(sport)["upstreams"][0]["targets"]]
            if states[0] != "up":
                raise AssertionError(f"a 503 without Retry-After took the target down: {states}")
            return (f"503 from the first target, 200 through the second ({secs:.2f}s); the "
                    f"first stays in service (no Retry-After)")
    finally:
        stop_all(*answerers, first, second)


class Pair:
    """sipedge in front of two sipp UASes (primary, backup) that answer
    OPTIONS (-aa); the cases `killed` and `back` share it."""

    def __init__(self):
        self.h = lib.Harness("ops-pair")
        self.h.__enter__()
        self.ports = [lib.free_port(HOST), lib.free_port(HOST)]
        self.uas = [self.start_uas(i) for i in (0, 1)]
        self.proxy_port, self.sport = lib.free_port(HOST), lib.free_port(HOST)
        self.proxy = start_sipedge(
            self.h, [("udp", HOST, self.proxy_port)], self.sport,
            extra=["-u", f"sip:{HOST}:{self.ports[0]};transport=udp",
                   "-u", f"sip:{HOST}:{self.ports[1]};transport=udp"])
        self.killed = False  # the primary was killed (case `killed`)

    def start_uas(self, i, name=None):
        # no -m: sipp counts each probe it answers (-aa) as a call of that budget
        u = lib.Sipp(self.h, name or f"uas{i}", "uas_call.xml", local_port=self.ports[i],
                     transport="u1", host=HOST, extra=["-aa"])
        u.start_uas()
        return u

    def uac(self, name, calls, rate):
        return lib.Sipp(self.h, name, "uac_call.xml", transport="un", host=HOST, calls=calls,
                        rate=rate, remote=f"{HOST}:{self.proxy_port}",
                        keys={"dest": f"{HOST}:{self.ports[0]}"},
                        extra=["-d", 100, "-max_socket", 50, "-recv_timeout", 12000])

    def active(self):
        up = stats(self.sport)["upstreams"]
        return next((u["role"] for u in up if u["active"] and u["answering"]), None)

    def close(self):
        self.h.__exit__(None, None, None)


def case_killed(pair):
    calls, rate = 600, 50
    lib.wait_until(lambda: pair.active() == "primary", 10, "the primary in service",
                   proc=pair.proxy)
    uac = pair.uac("uac-load", calls, rate)
    uac.proc = pair.h.spawn("uac-load", uac.argv)
    lib.wait_until(lambda: not uac.proc.alive() or time.sleep(0.1) or
                   (pair.uas[0].result()["successful"] or 0) >= 100, 20,
                   "calls through the primary")
    pair.uas[0].proc.stop(signal.SIGKILL)
    pair.killed = True
    t_kill = time.monotonic()
    uac.proc.wait(calls / rate + 60)
    res = uac.result()
    bound = int(rate * FAILOVER_S)
    if res["created"] != calls or (res["successful"] or 0) + (res["failed"] or 0) != calls:
        raise AssertionError(f"calls unaccounted for: {res}")
    if res["failed"] > bound:
        raise AssertionError(f"{res['failed']} calls failed, want at most {bound} "
                             f"({rate}/s x --failover-timeout)")
    active = pair.active()
    backup = pair.uas[1].result()["successful"] or 0
    if active != "backup" or not backup:
        raise AssertionError(f"after the kill: active {active}, backup completed {backup}")
    moved = stats(pair.sport)["total"]["failovers"]
    if not moved:
        raise AssertionError("no request went on to the backup within its transaction")
    return (f"primary killed {time.monotonic() - t_kill:.0f}s before the end: "
            f"{res['successful']}/{calls} ok, {res['failed']} failed (bound {bound}), "
            f"{moved} requests failed over in their transaction, backup active, "
            f"{backup} calls completed there")


def case_back(pair):
    if not pair.killed:
        raise AssertionError("needs the primary killed by the `killed` case")
    calls = 50
    again = pair.start_uas(0, name="uas0-again")
    lib.wait_until(lambda: pair.active() == "primary", 20,
                   "the primary active again once it answers probes", proc=pair.proxy)
    res = pair.uac("uac-back", calls, 25).run(timeout=60)
    bad = check_uac(res, calls)
    try:  # its statistics row is written every second
        lib.wait_until(lambda: (again.result()["successful"] or 0) >= calls, 15,
                       "every call completed at the primary", proc=again.proc)
    except lib.TestTimeout:
        pass
    ures = again.result()
    if ures["successful"] != calls:
        bad.append(f"the primary completed {ures['successful']}/{calls}")
    if bad:
        raise AssertionError("; ".join(bad))
    return f"primary active again; {calls}/{calls} calls, all through the primary"


def case_flows(args):
    from test_sticky import Loop, Phone  # the phones of the sticky-flow test
    up = lib.Sink(HOST)
    answerer = lib.SinkAnswerer(up, {"REGISTER": 200})
    loop = Loop()
    phones = []
    try:
        with lib.Harness("ops-flows") as h:
            certs = h.path("certs")
            subprocess.run([os.path.join(lib.repo_root(), "scripts", "gen-devcerts.sh"), certs],
                           check=True, timeout=60, capture_output=True)
            ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
            pu, pt, sport = lib.free_port(HOST), lib.free_port(HOST), lib.free_port(HOST)
            start_sipedge(h, [("udp", HOST, pu), ("tls", HOST, pt)], sport,
                          upstream=f"{up.uri};transport=udp",
                          extra=["--tls-cert", os.path.join(certs, "server.crt"),
                                 "--tls-key", os.path.join(certs, "server.key")])
            owner = {}  # phone -> worker that relayed its REGISTER

            def add():
                ph = Phone(loop, len(phones), "tls", ctx)
                ph.connect(HOST, pt)
                phones.append(ph)
                r = ph.register()
                if r is None or r.code != 200:
                    raise AssertionError(f"{ph.user}: REGISTER got {r!r}")
                reg = up.matching(lambda m: m.call_id == ph.reg_call_id)
                owner[ph] = worker_of(top_via(reg[-1])) if reg else None
            for _ in range(args.phones):
                add()
            while len(set(owner.values())) < 2 and len(phones) < 3 * args.phones:
                add()  # the kernel may put the first ones on one worker
            ka = phones[0]
            ka.loop.call(lambda: ka._send(b"\r\n\r\n"))

            def listing():
                _, body = http(sport, "/flows?limit=1000")
                return {f["remote"]: f for f in json.loads(body)["flows"]}
            lib.wait_until(lambda: listing().get(f"{HOST}:{ka.local[1]}", {}).get("keepalive_s")
                           is not None, 5, "the keep-alive on /flows")
            flows = listing()
            bad = []
            for ph in phones:
                f = flows.get(f"{HOST}:{ph.local[1]}")
                want = (ph.aor, "tls", owner[ph])
                got = f and (f["aor"], f["transport"], f["worker"])
                if got != want:
                    bad.append(f"{ph.user}: {got} want {want}")
            pages, off = [], 0
            while off <= len(phones):
                _, body = http(sport, f"/flows?offset={off}&limit=3")
                page = json.loads(body)
                pages += [f["remote"] for f in page["flows"]]
                off += 3
            if sorted(pages) != sorted(flows) or page["total"] != len(flows):
                bad.append(f"pages of 3 list {len(pages)} flows, want {len(flows)}")
            if bad:
                raise AssertionError("; ".join(bad[:4]))
            per = {w: sum(1 for v in owner.values() if v == w) for w in (0, 1)}
            return (f"{len(phones)} TLS phones listed with AOR and owning worker "
                    f"(worker 0: {per[0]}, worker 1: {per[1]}), pages of 3 cover all, "
                    f"keep-alive shown")
    finally:
        for ph in phones:
            if not ph.closed:
                ph.loop.call(ph._gone)
        loop.stop()
        stop_all(answerer, up)


def case_health():
    primary, backup = lib.Sink(HOST), lib.Sink(HOST)
    try:
        with lib.Harness("ops-health") as h:
            port, sport = lib.free_port(HOST), lib.free_port(HOST)
            p = start_sipedge(h, [("udp", HOST, port)], sport,
                              extra=["-u", f"{primary.uri};transport=udp",
                                     "-u", f"{backup.uri};transport=udp"])

            def health():
                code, body = http(sport, "/health")
                return code, json.loads(body)
            lib.wait_until(lambda: health()[0] == 200, 10, "/health 200", proc=p)
            # both heard from (a target that never answered a probe is judged
            # by requests only: its silence to probes says nothing)
            lib.wait_until(lambda: all(t["state"] == "up" for u in stats(sport)["upstreams"]
                                       for t in u["targets"]), 10, "both targets up", proc=p)
            primary.answer_probes = backup.answer_probes = False
            t0 = time.monotonic()
            lib.wait_until(lambda: health()[0] == 503, 25, "/health 503 with both silent",
                           proc=p, interval=0.2)
            down_s = time.monotonic() - t0
            code, body = health()
            reasons = {t["reason"] for u in stats(sport)["upstreams"] for t in u["targets"]}
            if body.get("status") != "unavailable" or reasons != {"probe_unanswered"}:
                raise AssertionError(f"503 body {body}, target reasons {reasons}")
            primary.answer_probes = True
            t0 = time.monotonic()
            lib.wait_until(lambda: health()[0] == 200, 20, "/health 200 with the primary back",
                           proc=p, interval=0.2)
            return (f"200 -> 503 after {down_s:.1f}s of silence ({body}) -> 200 "
                    f"{time.monotonic() - t0:.1f}s after the primary answered again")
    finally:
        stop_all(primary, backup)


def case_icmp():
    """The primary's UDP port is closed: the kernel's ICMP port unreachable
    (IP_RECVERR) takes it out of service at once, long before any probe or
    --failover-timeout could, and requests go to the backup."""
    backup = lib.Sink(HOST)
    try:
        with lib.Harness("ops-icmp") as h:
            port, sport, dead = (lib.free_port(HOST), lib.free_port(HOST),
                                 lib.free_port(HOST, kinds=("udp",)))
            p = start_sipedge(h, [("udp", HOST, port)], sport,
                              extra=["-u", f"sip:{HOST}:{dead};transport=udp",
                                     "-u", f"{backup.uri};transport=udp",
                                     "--failover-timeout", "30000", "--oos-check", "3600",
                                     "--oos-force", "3600"])

            def primary_target():
                ups = stats(sport)["upstreams"]
                return ups[0]["targets"][0] if ups and ups[0]["targets"] else {}
            lib.wait_until(lambda: primary_target().get("reason") == "icmp_unreachable", 10,
                           "the primary out of service by ICMP", proc=p)
            t = primary_target()
            if t.get("state") != "down":
                raise AssertionError(f"primary target {t}")
            t0 = time.monotonic()
            c = lib.SipClient(HOST, port, "udp")
            try:
                c.send(lib.build_request("MESSAGE", f"sip:agent@{HOST}", via_host=HOST,
                                         via_port=c.local[1], call_id=lib.new_tag(),
                                         from_uri=f"sip:caller@{HOST}"))
                got = backup.wait_for(lambda m: m.method == "MESSAGE", 5)
            finally:
                c.close()
            if not got:
                raise AssertionError("the MESSAGE did not reach the backup within 5 s")
            return (f"primary {t['state']} ({t['reason']}) with probes every 3600 s and "
                    f"--failover-timeout 30 s; a MESSAGE reached the backup "
                    f"{(time.monotonic() - t0) * 1000:.0f} ms after it was sent")
    finally:
        backup.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls of the sipp case")
    ap.add_argument("--rate", type=float, default=100, help="calls per second of the sipp case")
    ap.add_argument("--phones", type=int, default=6)
    ap.add_argument("--only", default="", help="comma-separated case names")
    args = ap.parse_args()
    pair = []

    def with_pair(fn):
        def run():
            if not pair:
                pair.append(Pair())
            return fn(pair[0])
        return run
    cases = [("owner", "probes from one worker, per-target state in /stats", case_owner),
             ("sipp", "sipp UAS ignoring OPTIONS: no failed call", lambda: case_sipp(args)),
             ("srv-closed", "SRV first target closed: REGISTER via the second",
              case_srv_closed),
             ("srv-silent", "SRV first target silent: failover within the transaction",
              case_srv_silent),
             ("srv-503", "SRV first target answers 503: the next one within the "
              "transaction", case_srv_503),
             ("killed", "primary killed mid-load: failed calls bounded", with_pair(case_killed)),
             ("back", "primary back: traffic returns", with_pair(case_back)),
             ("flows", "GET /flows: TLS phones and their workers", lambda: case_flows(args)),
             ("health", "GET /health flips with the SIP Servers", case_health),
             ("icmp", "ICMP port unreachable takes a SIP Server out at once", case_icmp)]
    only = {n for n in args.only.split(",") if n}
    try:
        return lib.run_cases("test_ops", 900, [(f"{k}: {name}", fn) for k, name, fn in cases
                                               if not only or k in only])
    finally:
        if pair:
            pair[0].close()


if __name__ == "__main__":
    sys.exit(main())
