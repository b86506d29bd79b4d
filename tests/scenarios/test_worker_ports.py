#!/usr/bin/python3
"""Per-worker private UDP ports (--worker-ports, ARCHITECTURE §1).

sipedge -w 2 forwards MESSAGEs from 40 endpoint sockets (so both workers
receive some) to a fake SIP Server, which answers each one 200 at the
address in the top Via, as RFC 3261 §18.2.2 says. Checks:
  a. default (auto): each forwarded request leaves from, and names in Via,
     its worker's own port (two distinct ports, neither the listener's);
     every 200 comes back to the caller and no response crossed workers
     (the ring handover counters the workers log on exit stay 0);
  b. --worker-ports BASE: the ports are exactly BASE and BASE+1;
  c. --worker-ports off: Via names the listener's port, responses still
     reach the caller, through the ring when they land on the other worker;
  d. a bad value exits 2 with one line naming the flag.
Prints one line per case and "N passed, M failed"."""

import os
import re
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HOST = "127.0.0.1"
CLIENTS = 40


def run(extra, host=HOST):
    """Sends CLIENTS MESSAGEs through a fresh sipedge -w 2 with `extra`, all
    on `host` (127.0.0.1 or ::1). Returns (forwarded copies, answered count,
    listener port, handovers)."""
    hh = f"[{host}]" if ":" in host else host
    sink = lib.Sink(host)
    ans = lib.SinkAnswerer(sink, {"MESSAGE": 200})
    try:
        with lib.Harness("worker-ports") as h:
            port = lib.free_port(host)
            p = lib.start_sipedge(h, [("udp", host, port)],
                                  upstream=f"sip:{hh}:{sink.port};transport=udp",
                                  workers=2, extra=["--log-level", "info"] + extra)
            clients = [lib.SipClient(host, port, "udp") for _ in range(CLIENTS)]
            cids = []
            for i, c in enumerate(clients):
                cid = f"wp-{i}-{lib.new_tag()}"
                cids.append(cid)
                c.send(lib.build_request("MESSAGE", "sip:agent@example.com", via_host=hh,
                                         via_port=c.local[1], call_id=cid,
                                         from_uri=f"sip:caller{i}@{hh}"))
            answered = 0
            for c in clients:
                dl = lib.Deadline(5)
                while not dl.expired():
                    m = c.recv_msg(dl.remaining())
                    if m is None:
                        break
                    if m.is_response and m.code >= 200:
                        answered += m.code == 200
                        break
                c.close()
            fwd = sink.matching(lambda m: m.method == "MESSAGE" and m.get("call-id") in cids)
            p.stop(signal.SIGTERM, timeout=20)
            handover = sum(int(x) for x in re.findall(r"ring handover (\d+)", p.output()[1]))
            if p.returncode != 0:
                raise AssertionError(f"sipedge exited {p.returncode}")
            return fwd, answered, port, handover
    finally:
        ans.stop()
        sink.close()


def via_ports(fwd):
    ports = set()
    for m in fwd:
        v = lib.parse_via(m.values("via")[0])
        if m.peer[1] != v[2]:
            raise AssertionError(f"request left from port {m.peer[1]}, its Via names {v[2]}")
        ports.add(v[2])
    return ports


def case_auto():
    fwd, answered, port, handover = run([])
    ports = via_ports(fwd)
    if len(fwd) != CLIENTS or answered != CLIENTS:
        raise AssertionError(f"{len(fwd)} forwarded, {answered} answered of {CLIENTS}")
    if len(ports) != 2 or port in ports:
        raise AssertionError(f"Via ports {sorted(ports)}, listener {port}: want 2 private ports")
    if handover != 0:
        raise AssertionError(f"{handover} messages crossed workers")
    return f"Via ports {sorted(ports)} (listener {port}), {answered}/{CLIENTS} answered, 0 crossed"


def case_ipv6():
    fwd, answered, port, handover = run([], host="::1")
    ports = via_ports(fwd)
    if len(fwd) != CLIENTS or answered != CLIENTS or len(ports) != 2 or port in ports:
        raise AssertionError(f"{len(fwd)} forwarded, {answered} answered, Via ports "
                             f"{sorted(ports)} (listener {port})")
    if handover != 0:
        raise AssertionError(f"{handover} messages crossed workers")
    return f"[::1]: Via ports {sorted(ports)}, {answered}/{CLIENTS} answered, 0 crossed"


def case_base():
    base = lib.free_port_block(2, HOST)
    fwd, answered, _, handover = run(["--worker-ports", str(base)])
    ports = via_ports(fwd)
    if ports != {base, base + 1} or answered != CLIENTS:
        raise AssertionError(f"Via ports {sorted(ports)}, want {[base, base + 1]}; "
                             f"{answered}/{CLIENTS} answered")
    return f"Via ports {sorted(ports)}, {answered}/{CLIENTS} answered, {handover} crossed"


def case_off():
    fwd, answered, port, handover = run(["--worker-ports", "off"])
    ports = via_ports(fwd)
    if ports != {port} or answered != CLIENTS:
        raise AssertionError(f"Via ports {sorted(ports)}, want [{port}]; "
                             f"{answered}/{CLIENTS} answered")
    # the sink answers from one socket: the kernel hands all its datagrams
    # to one worker, so the other worker's transactions get theirs by ring
    if handover == 0:
        raise AssertionError("no response crossed workers, yet both forwarded requests")
    return f"Via port {port}, {answered}/{CLIENTS} answered, {handover} crossed by ring"


def case_bad_flag():
    r = subprocess.run([lib.sipedge_bin(), "--worker-ports", "80"], capture_output=True,
                       text=True, timeout=10)
    lines = r.stderr.strip().splitlines()
    if r.returncode != 2 or len(lines) != 1 or "--worker-ports" not in lines[0]:
        raise AssertionError(f"exit {r.returncode}, stderr {r.stderr!r}")
    return lines[0]


def main():
    return lib.run_cases("test_worker_ports", 120, [
        ("private ports by default, no crossing", case_auto),
        ("private ports on an IPv6 listener", case_ipv6),
        ("--worker-ports BASE", case_base),
        ("--worker-ports off falls back to the ring", case_off),
        ("--worker-ports bad value", case_bad_flag),
    ])


if __name__ == "__main__":
    sys.exit(main())
