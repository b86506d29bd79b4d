#!/usr/bin/python3
"""Added latency of a cross-worker delivery, measured from outside a real
sipedge -w 2 (nothing instrumented in core).

Phones register over TLS (or TCP) through sipedge; this script is also the
upstream SIP Server, so it reads from each relayed REGISTER's Via branch
which worker owns the phone's connection. It then plays the SIP Server
sending INVITEs routed by the phone's flow token (Route: <sip:TOKEN@sipedge;lr>)
from UDP sockets whose packets the kernel gives to worker 0 or to worker 1
(each socket of the pool is a --peer site of sipedge's, since a Path token
serves only the SIP Server and peers; which worker each lands on is found by
probing: the branch of sipedge's Via on the INVITE the phone gets
names the worker that took the UDP packet). An INVITE whose UDP worker owns
the phone's connection is written straight out; otherwise it crosses through
the ring (plus an eventfd wake-up when the owner sleeps).

One sample = send INVITE at t0, the phone's blocking recv returns it at t1;
the phone answers 486, the sender ACKs. Samples are paced (one at a time,
idle gaps), so workers are usually asleep: the crossing includes a wake-up.
Python timestamping overhead is in both classes alike; compare p50s.

Usage: bench/cross_worker_latency.py [--samples N] [--phones N] [--transport tls|tcp]
Needs SIPEDGE_BIN or build/sipedge; certificates from scripts/gen-devcerts.sh.
"""

import argparse
import os
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "scenarios"))
import lib  # noqa: E402

BRANCH_WORKER = "branch=z9hG4bKSe"


def via_worker(msg):
    v = msg.get("via") or ""
    i = v.find(BRANCH_WORKER)
    return int(v[i + len(BRANCH_WORKER):i + len(BRANCH_WORKER) + 2], 16) if i >= 0 else None


class StreamPhone:
    def __init__(self, idx, host, port, transport, ctx):
        raw = socket.create_connection((host, port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = ctx.wrap_socket(raw, server_hostname="localhost") if transport == "tls" else raw
        self.s.settimeout(5)
        self.transport = transport
        self.local = self.s.getsockname()[:2]
        self.user = f"phone{idx}"
        self.contact = f"sip:{self.user}@{self.local[0]}:{self.local[1]};transport={transport}"
        self.fr = lib.StreamFramer()
        self.pending = []
        self.worker = None
        self.token = None

    def recv(self, pred, timeout=5):
        """Next message matching pred and the time its bytes arrived."""
        end = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.pending):
                if pred(m[0]):
                    return self.pending.pop(i)
            if time.monotonic() > end:
                return None, None
            data = self.s.recv(65536)
            t = time.perf_counter_ns()
            if not data:
                raise RuntimeError(f"{self.user}: connection closed")
            self.pending += [(lib.parse_message(r), t) for r in self.fr.feed(data)]


def udp(bind=("127.0.0.1", 0)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(bind)
    s.settimeout(5)
    return s


def recv_udp(s, pred, timeout=5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s.settimeout(max(0.001, end - time.monotonic()))
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            return None, None
        m = lib.parse_message(data)
        if pred(m):
            return m, peer
    return None, None


def invite(sender, se_udp, phone):
    """One INVITE over the phone's flow; returns (t1 - t0 ns, sipedge worker
    that took the UDP packet)."""
    host, port = sender.getsockname()
    cid = "lat-" + secrets.token_hex(6)
    branch = lib.new_branch()
    route = f"<sip:{phone.token}@{se_udp[0]}:{se_udp[1]};transport=udp;lr>"
    req = lib.build_request("INVITE", phone.contact, via_host=host, via_port=port, branch=branch,
                            call_id=cid, headers=[("Route", route)])
    t0 = time.perf_counter_ns()
    sender.sendto(req, se_udp)
    m, t1 = phone.recv(lambda m: m.method == "INVITE" and m.call_id == cid)
    if m is None:
        raise RuntimeError(f"INVITE to {phone.user} not delivered")
    phone.s.sendall(lib.build_response(m, 486, "Busy Here", to_tag=lib.new_tag()))
    final, _ = recv_udp(sender, lambda r: r.is_response and r.call_id == cid and r.code >= 200)
    if final is None:
        raise RuntimeError("no final response")
    ack = lib.build_request("ACK", phone.contact, via_host=host, via_port=port, branch=branch,
                            call_id=cid, headers=[("Route", route)])
    ack = ack.replace(b"To: <" + phone.contact.encode() + b">",
                      b"To: " + final.get("to").encode())
    sender.sendto(ack, se_udp)
    # sipedge's own hop-by-hop ACK for the 486 reaches the phone: drain it
    phone.recv(lambda x: x.method == "ACK" and x.call_id == cid, timeout=2)
    return t1 - t0, via_worker(m)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000, help="per class")
    ap.add_argument("--phones", type=int, default=8)
    ap.add_argument("--transport", choices=("tls", "tcp"), default="tls")
    ap.add_argument("--gap-ms", type=float, default=1.0, help="idle time between samples")
    a = ap.parse_args()
    with lib.Harness("xworker") as h:
        certs = h.path("certs")
        subprocess.run([os.path.join(lib.repo_root(), "scripts", "gen-devcerts.sh"), certs],
                       check=True)
        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.crt"))
        up = udp()
        up_port = up.getsockname()[1]
        pu, ps = lib.free_port(), lib.free_port()
        extra = (["--tls-cert", f"{certs}/server.crt", "--tls-key", f"{certs}/server.key"]
                 if a.transport == "tls" else [])
        # candidate senders, trusted as peer sites (edge policy); 12 sockets
        # all landing on one worker is a 1 in 2048 chance
        pool = [udp() for _ in range(12)]
        for k, s in enumerate(pool):
            extra += ["--peer", f"s{k}.bench.test=sip:127.0.0.1:{s.getsockname()[1]};transport=udp"]
        lib.start_sipedge(h, [("udp", "127.0.0.1", pu), (a.transport, "127.0.0.1", ps)],
                          upstream=f"sip:127.0.0.1:{up_port};transport=udp", workers=2,
                          extra=extra)
        se_udp = ("127.0.0.1", pu)

        # phones register; this script answers as the SIP Server
        phones = []
        for i in range(a.phones):
            p = StreamPhone(i, "127.0.0.1", ps, a.transport, ctx)
            aor = f"sip:{p.user}@bench.test"
            p.s.sendall(lib.build_request(
                "REGISTER", "sip:bench.test", via_host=p.local[0], via_port=p.local[1],
                transport=a.transport.upper(), from_uri=aor, to_uri=aor,
                headers=[("Contact", f"<{p.contact}>"), ("Expires", "600")]))
            reg, peer = recv_udp(up, lambda m: m.method == "REGISTER")
            p.worker = via_worker(reg)
            path = reg.get("path")
            p.token = path.split("<sip:", 1)[1].split("@", 1)[0]
            up.sendto(lib.build_response(reg, 200, "OK"), peer)
            ok, _ = p.recv(lambda m: m.code == 200)
            if ok is None:
                raise SystemExit("REGISTER not answered")
            phones.append(p)
        owners = {w: [p for p in phones if p.worker == w] for w in (0, 1)}
        if not owners[0] or not owners[1]:
            print("note: all phones on one worker; crossing still measured via the senders")

        # senders: find one UDP source port that lands on each worker
        senders = {}
        for s in pool:
            _, w = invite(s, se_udp, phones[0])
            if w not in senders:
                senders[w] = s
            if len(senders) == 2:
                break
        if len(senders) < 2:
            raise SystemExit("could not find UDP source ports for both workers")

        lat = {"same": [], "cross": []}
        for _ in range(10):  # warm-up
            for w, s in senders.items():
                invite(s, se_udp, phones[0])
        i = 0
        while min(len(v) for v in lat.values()) < a.samples:
            p = phones[i % len(phones)]
            for w, s in senders.items():
                time.sleep(a.gap_ms / 1000)
                ns, took = invite(s, se_udp, p)
                kind = "same" if took == p.worker else "cross"
                if len(lat[kind]) < a.samples:
                    lat[kind].append(ns / 1000)
            i += 1
        for kind in ("same", "cross"):
            v = lat[kind]
            print(f"INVITE sender->phone, {'crossing workers' if kind == 'cross' else 'same worker    '}"
                  f" ({a.transport}, {len(v)} samples): p50 {pct(v, 50):.1f} us, "
                  f"p99 {pct(v, 99):.1f} us, mean {statistics.fmean(v):.1f} us")
        print(f"added by a crossing: p50 {pct(lat['cross'], 50) - pct(lat['same'], 50):+.1f} us, "
              f"p99 {pct(lat['cross'], 99) - pct(lat['same'], 99):+.1f} us")
        for p in phones:
            p.s.close()
        up.close()
        for s in pool:
            s.close()


if __name__ == "__main__":
    main()
