#!/usr/bin/python3
"""bench/sipload against a real sipedge, on the wire: the load generator's
flows work end to end at small rates, and it reports failures when calls fail.

Three sipedge -w 2 (dev certificates from scripts/gen-devcerts.sh): one with
UDP on P and TLS on Q whose upstream is sipload's UAS on U over UDP, one with
the built-in registrar and no upstream (the phones' cases), and one whose
upstream is a dead port (--failover-timeout 300).
sipload is $SIPLOAD_BIN, else the sipload beside $SIPEDGE_BIN.

Cases (one line each, then "N passed, M failed"):
  a   UDP calls through the proxy to sipload's UAS: every call started is
      answered (INVITE/100/180/200/ACK/BYE/200), the UAS saw 3 requests per
      call, the JSON line has the setup latency of each
  b   the same over TLS (the UAC's connections verify the proxy's certificate)
  c   calls that the proxy cannot complete (its SIP Server is gone) are
      counted as failed with their final code, and sipload exits 1
  d   a sequential TLS registration storm (one phone after another, Nagle
      on like many phones) through the built-in registrar: every phone
      registers; the first-request latency is printed, not asserted
  e   calls to registered TLS phones arrive on the phones' own connections
      and are all answered
  f   idle registered TCP phones held with CRLFCRLF keep-alives get their
      pongs and none is lost
  g   sipload's UDP UAS resends its 200 to an INVITE until the ACK, then
      stops (RFC 3261 §13.3.1.4; a lost 200 does not fail a call)
  z   every sipedge instance exits 0 on SIGTERM with no sanitizer report

Exit 0 when all pass, 1 otherwise, 77 (skip) without a sipedge or sipload binary.
"""

import json
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HOST = "127.0.0.1"


def sipload_bin():
    return os.environ.get("SIPLOAD_BIN") or os.path.join(
        os.path.dirname(os.path.abspath(lib.sipedge_bin())), "sipload")


class Env:
    pass


def sipload(env, *args, expect_rc=0):
    """Runs sipload to completion; returns its JSON result (the last line)."""
    argv = [sipload_bin(), *map(str, args)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    lines = r.stdout.strip().splitlines()
    if not lines:
        raise AssertionError(f"no output (status {r.returncode}): {r.stderr[-400:]}")
    res = json.loads(lines[-1])
    if expect_rc is not None and r.returncode != expect_rc:
        raise AssertionError(f"status {r.returncode}, expected {expect_rc}: {lines[-1][:600]} "
                             f"{r.stderr[-300:]}")
    return res


def check_calls(res, want_min):
    c = res["calls"]
    assert c["started"] >= want_min, c
    assert c["ok"] == c["started"] and c["failed"] == 0 and c["not_started"] == 0, c
    assert res["latency_ms"]["call_setup"]["n"] == c["ok"], res["latency_ms"]
    assert res["ok"] is True, res
    return c


def case_udp_calls(env):
    # sipedge started before this UAS existed: its first probe drew an ICMP
    # port unreachable, so the SIP Server is out of service until a probe
    # (every --oos-force 1 s while so) finds it; a warm-up run lets it
    lib.wait_until(lambda: sipload(env, "call", "--proxy", f"{HOST}:{env.p}", "--uas",
                                   f"{HOST}:{env.u}", "--rate", 10, "--duration", 2,
                                   expect_rc=None)["ok"], 20, "the SIP Server in service")
    res = sipload(env, "call", "--proxy", f"{HOST}:{env.p}", "--uas", f"{HOST}:{env.u}",
                  "--rate", 50, "--duration", 1)
    c = check_calls(res, 45)
    # the UAS answered INVITE, ACK and BYE of every call (the proxy's OPTIONS
    # probes are off: --oos-check 3600 after the first)
    assert res["messages"]["uas_requests"] >= 3 * c["ok"], res["messages"]
    return f"{c['ok']} calls, setup p50 {res['latency_ms']['call_setup']['p50']} ms"


def case_tls_calls(env):
    res = sipload(env, "call", "--proxy", f"{HOST}:{env.q}", "-t", "tls", "--ca", env.ca,
                  "--uas", f"{HOST}:{env.u}", "--rate", 50, "--duration", 1, "--senders", 2)
    c = check_calls(res, 45)
    return f"{c['ok']} calls over 2 TLS connections"


def case_failures(env):
    res = sipload(env, "call", "--proxy", f"{HOST}:{env.p_dead}", "--rate", 20, "--duration", 1,
                  "--timeout", 4000, expect_rc=1)
    c = res["calls"]
    assert c["started"] >= 15 and c["ok"] == 0 and c["failed"] == c["started"], c
    assert c["non_2xx"] + c["timeouts"] == c["failed"], res
    assert res["ok"] is False
    return f"{c['failed']} failed ({c['timeouts']} timeouts, codes {res['fail_codes']})"


def case_storm(env):
    res = sipload(env, "register", "--proxy", f"{HOST}:{env.pr}", "--reg-proxy", f"{HOST}:{env.qr}",
                  "--ca", env.ca, "--phones", 20, "--rate", 0, "--max-concurrent", 1, "--nagle")
    r = res["registrations"]
    assert r["ok"] == 20 and r["failed"] == 0, r
    first = res["latency_ms"]["first_request"]
    assert first["n"] == 20, first
    return (f"20 phones in {r['duration_s']} s; first request p50 {first['p50']} ms, "
            f"p99 {first['p99']} ms (printed, not asserted)")


def case_phone_calls(env):
    res = sipload(env, "call", "--callee", "phones", "--phones", 20, "--proxy", f"{HOST}:{env.pr}",
                  "--reg-proxy", f"{HOST}:{env.qr}", "--ca", env.ca, "--rate", 20, "--duration", 1)
    c = check_calls(res, 18)
    assert res["registrations"]["ok"] == 20, res["registrations"]
    return f"{c['ok']} calls to 20 TLS phones"


def case_hold(env):
    res = sipload(env, "hold", "--proxy", f"{HOST}:{env.pr}", "--reg-transport", "tcp",
                  "--phones", 20, "--duration", 1.5, "--keepalive", 1)
    ph = res["phones"]
    assert res["registrations"]["ok"] == 20 and ph["held"] == 20 and ph["lost"] == 0, res
    assert ph["keepalives"] >= 20 and ph["pongs"] >= 20, ph
    return f"20 phones, {ph['keepalives']} keep-alives, {ph['pongs']} pongs"


def case_uas_resends(env):
    """sipload's UDP UAS alone (its UAC calls a dead port): an INVITE from
    here gets 180 and 200, the 200 again until our ACK, then no more."""
    uas = lib.free_port(HOST)
    argv = ["call", "--proxy", f"{HOST}:{lib.free_port(HOST)}", "--uas", f"{HOST}:{uas}",
            "--rate", 0.1, "--duration", 6, "--timeout", 100, "-q"]
    proc = subprocess.Popen([sipload_bin(), *map(str, argv)], stdout=subprocess.PIPE, text=True)
    try:
        lib.wait_until(lambda: lib.port_bound(uas, "udp", HOST), 5, "sipload's UAS")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        inv = lib.build_request("INVITE", f"sip:uas@{HOST}:{uas}", via_host=HOST,
                                via_port=s.getsockname()[1], call_id="resend-1@test")
        s.sendto(inv, (HOST, uas))
        got = []
        dl = lib.Deadline(3.0)
        while not dl.expired() and got.count(200) < 3:
            s.settimeout(max(0.05, dl.remaining()))
            try:
                got.append(lib.parse_message(s.recvfrom(65535)[0]).code)
            except socket.timeout:
                break
        assert got[:2] == [180, 200] and got.count(200) >= 2, got
        ack = inv.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b" INVITE\r\n", b" ACK\r\n")
        s.sendto(ack, (HOST, uas))
        s.settimeout(2.0)  # 4 T1: the next resend would come within it
        after = []
        try:
            after.append(s.recvfrom(65535)[0])
        except socket.timeout:
            pass
        assert not after, after
    finally:
        out = proc.communicate(timeout=30)[0]
    res = json.loads(out.strip().splitlines()[-1])
    assert res["retransmissions"]["uas_2xx_sent"] >= 1, res["retransmissions"]
    return f"responses {got}, none after the ACK; {res['retransmissions']}"


def case_exit(env):
    for p in (env.se, env.se_reg, env.se_dead):
        p.stop(signal.SIGTERM, timeout=20)
        assert p.returncode == 0, f"{p.name} exit status {p.returncode}"
        rep = lib.sanitizer_report(p)
        assert rep is None, rep
    return "exit 0, no sanitizer report"


def main():
    if not os.access(sipload_bin(), os.X_OK):
        print(f"0 passed, 0 failed (sipload binary missing: {sipload_bin()})")
        return 77
    with lib.Harness("sipload") as h:
        env = Env()
        certs = h.path("certs")
        subprocess.run([os.path.join(lib.repo_root(), "scripts", "gen-devcerts.sh"), certs],
                       check=True, timeout=120)
        env.ca = os.path.join(certs, "ca.crt")
        tls = ["--tls-cert", os.path.join(certs, "server-chain.crt"),
               "--tls-key", os.path.join(certs, "server.key"), "--tls-ca", env.ca]
        quiet = ["--oos-check", "3600", "--oos-force", "3600"]
        env.p, env.q, env.u = (lib.free_port(HOST) for _ in range(3))
        env.p_dead, dead = lib.free_port(HOST), lib.free_port(HOST)
        env.se = lib.start_sipedge(
            h, [("udp", HOST, env.p), ("tls", HOST, env.q)],
            upstream=f"sip:{HOST}:{env.u};transport=udp",
            extra=tls + ["--oos-check", "3600", "--oos-force", "1"])
        env.pr, env.qr = lib.free_port(HOST), lib.free_port(HOST)
        env.se_reg = lib.start_sipedge(
            h, [("udp", HOST, env.pr), ("tcp", HOST, env.pr), ("tls", HOST, env.qr)],
            registrar=True, name="sipedge-registrar", extra=tls)
        env.se_dead = lib.start_sipedge(
            h, [("udp", HOST, env.p_dead)], upstream=f"sip:{HOST}:{dead};transport=udp",
            name="sipedge-dead", extra=quiet + ["--failover-timeout", "300"])
        cases = [
            ("a udp calls through the proxy", lambda: case_udp_calls(env)),
            ("b tls calls through the proxy", lambda: case_tls_calls(env)),
            ("c failed calls are reported", lambda: case_failures(env)),
            ("d sequential tls registration storm", lambda: case_storm(env)),
            ("e calls to registered tls phones", lambda: case_phone_calls(env)),
            ("f idle phones with keep-alives", lambda: case_hold(env)),
            ("g the UDP UAS resends its 200 until the ACK", lambda: case_uas_resends(env)),
            ("z clean exit", lambda: case_exit(env)),
        ]
        rc = lib.run_cases("test_sipload", 240, cases)
        if rc:
            h.failed = True
        return rc


if __name__ == "__main__":
    sys.exit(main())
