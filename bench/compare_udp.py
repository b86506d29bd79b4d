#!/usr/bin/python3
"""Side-by-side CPU cost of sipedge and Kamailio proxying the same UDP calls.

For each proxy, in the same run and one after the other:
  sipp UAS (tests/scenarios/sipp/uas_call.xml, UDP, -aa for health probes)
  the proxy, UDP only, stateful, its upstream = the UAS:
    sipedge  -w W -l udp:127.0.0.1:P -u sip:127.0.0.1:UAS;transport=udp
    kamailio -f bench/kamailio/kamailio-proxy.cfg -n W -l udp:127.0.0.1:P -m 256
             -x tlsf -X tlsf (record_route + t_relay to the UAS, see that file;
             the allocator choice is explained at --kamailio-mem)
  sipp UAC (uac_call.xml, -t un: 50 UDP sockets, so the calls spread over the
  proxy's workers) placing N calls at R calls/s:
    INVITE / 100 / 180 / 200 / ACK / pause (-d, default 100 ms) / BYE / 200
The proxy's CPU time is read from /proc before the first call and after the
last one (the UAS has finished too): utime+stime summed over every process
of the proxy's process group (all of Kamailio's forked children; sipedge's
threads are inside its one process), plus what the group leader reaped.
Startup and shutdown are outside the window; idle timer work inside it is
part of the cost of running.

Prints per proxy: calls, failed calls, CPU seconds, microseconds of CPU per call, CPU seconds per 1,000 calls and, for
sipedge, the share of received messages that crossed to another worker
through a ring (from the counters each worker logs on exit); then the ratio
sipedge/kamailio.
The machine is shared with the load generators (2 sipp processes): run it
on an otherwise idle host and compare runs at the same rate. A benchmark,
not a test: it asserts nothing about speed. Exit 1 if a run had failed calls
(its number is then not comparable), 2 on a setup error.

  bench/compare_udp.py [--calls 10000] [--rate 500] [--workers 2]
                       [--proxies sipedge,kamailio] [--pause-ms 100] [--json FILE]
                       [--kamailio-mem tlsf|fm|qm] [--kamailio-shm-mb 256]
"""

import argparse
import json
import os
import re
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "scenarios"))
import lib  # noqa: E402

HOST = "127.0.0.1"


def run_one(args, proxy_name):
    """One proxy's run. Returns a result dict."""
    with lib.Harness(f"bench-{proxy_name}") as h:
        uas_port = lib.free_port(HOST)
        proxy_port = lib.free_port(HOST)
        uas = lib.Sipp(h, "uas", "uas_call.xml", local_port=uas_port, transport="u1",
                       host=HOST, calls=args.calls, extra=["-aa"])
        uas.start_uas()
        upstream = f"sip:{HOST}:{uas_port};transport=udp"
        if proxy_name == "sipedge":
            proxy = lib.start_sipedge(h, [("udp", HOST, proxy_port)], upstream=upstream,
                                      workers=args.workers,
                                      extra=["--log-level", "info"])
        else:
            proxy = lib.start_kamailio(h, proxy_port, upstream, children=args.workers,
                                       host=HOST, shm_mb=args.kamailio_shm_mb,
                                       mem_manager=args.kamailio_mem)
        uac = lib.Sipp(h, "uac", "uac_call.xml", transport="un", host=HOST,
                       calls=args.calls, rate=args.rate, remote=f"{HOST}:{proxy_port}",
                       keys={"dest": f"{HOST}:{uas_port}"},
                       extra=["-max_socket", 50, "-d", args.pause_ms])
        cpu0, nproc = lib.group_cpu_seconds(proxy.pgid)
        t0 = time.monotonic()
        res = uac.run(timeout=args.calls / args.rate + args.pause_ms / 1000 + 120)
        try:
            uas.proc.wait(20)  # every BYE answered: the proxy's work is done
        except lib.TestTimeout:
            pass
        wall = time.monotonic() - t0
        cpu1, nproc1 = lib.group_cpu_seconds(proxy.pgid)
        alive = proxy.alive()
        cpu = cpu1 - cpu0
        crossed = None
        if proxy_name == "sipedge" and alive:
            # each worker logs its counters on exit: the share of received
            # messages another worker had to act on (handed over by ring)
            proxy.stop(signal.SIGTERM, timeout=20)
            rx = ho = 0
            for line in proxy.output()[1].splitlines():
                mm = re.search(r"rx (\d+) msgs .* ring handover (\d+)", line)
                if mm:
                    rx += int(mm.group(1))
                    ho += int(mm.group(2))
            crossed = round(100.0 * ho / rx, 2) if rx else None
        ok_calls = res["successful"] or 0
        failed = (res["failed"] or 0) + max(0, args.calls - ok_calls - (res["failed"] or 0))
        out = {
            "proxy": proxy_name, "calls": args.calls, "successful": ok_calls,
            "failed": failed, "rate": args.rate, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 3), "processes": max(nproc, nproc1), "crossed_pct": crossed,
            "us_per_call": round(cpu / args.calls * 1e6, 1) if args.calls else None,
            "cpu_s_per_1000": round(cpu / args.calls * 1000, 4) if args.calls else None,
            "sipp_rc": res["rc"], "retransmissions": res["retransmissions"],
            "alive_after": alive,
        }
        if failed or not alive or res["rc"] != 0:
            h.failed = True
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--workers", type=int, default=2,
                    help="sipedge -w and Kamailio -n (UDP children); 2 on a 2-core host")
    ap.add_argument("--pause-ms", type=int, default=100, help="call length, ACK to BYE")
    ap.add_argument("--proxies", default="sipedge,kamailio")
    ap.add_argument("--kamailio-shm-mb", type=int, default=256,
                    help="Kamailio -m: shared memory holds every transaction for its "
                         "lifetime plus wait timer; 64 MB ran out (tm: out of mem) at "
                         "10,000 calls / 500 cps")
    ap.add_argument("--kamailio-mem", choices=("fm", "qm", "tlsf"), default="tlsf",
                    help="Kamailio memory manager (-x/-X), default tlsf. Debian's build "
                         "defaults to qm with memory debugging (DBG_SR_MEMORY), which "
                         "measured ~2.7x the CPU per call of tlsf or fm here: comparing "
                         "against it would flatter sipedge")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=1800, help="global bound, seconds")
    args = ap.parse_args()
    lib.raise_on_sigterm()

    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    for p in proxies:
        if p not in ("sipedge", "kamailio"):
            ap.error(f"unknown proxy {p}")
    if "sipedge" in proxies and not lib.have_sipedge():
        print(f"compare_udp: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)",
              file=sys.stderr)
        return 2

    print(f"# {args.calls} calls at {args.rate:g} cps, UDP, call length {args.pause_ms} ms, "
          f"{args.workers} workers, {os.cpu_count()} CPUs, load avg before "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    results = []
    try:
        with lib.time_bound(args.timeout, "compare_udp"):
            for p in proxies:
                try:
                    r = run_one(args, p)
                except (lib.TestTimeout, lib.ProcessDied, OSError) as e:
                    r = {"proxy": p, "error": str(e)}
                results.append(r)
    except (lib.GlobalTimeout, lib.Terminated) as e:
        print(f"compare_udp: {e}", file=sys.stderr)
        return 1

    hdr = f"{'proxy':<9} {'calls':>7} {'failed':>7} {'CPU s':>8} " \
          f"{'us/call':>9} {'CPU s/1000':>11} {'procs':>6} {'wall s':>7} {'crossed':>8}"
    print(hdr)
    bad = False
    for r in results:
        if "error" in r:
            print(f"{r['proxy']:<9} ERROR: {r['error']}")
            bad = True
            continue
        crossed = "-" if r["crossed_pct"] is None else f"{r['crossed_pct']:.2f}%"
        print(f"{r['proxy']:<9} {r['calls']:>7} {r['failed']:>7} {r['cpu_s']:>8.2f} "
              f"{r['us_per_call']:>9.1f} {r['cpu_s_per_1000']:>11.3f} {r['processes']:>6} "
              f"{r['wall_s']:>7.1f} {crossed:>8}" + ("" if r["alive_after"] else "  (proxy died)"))
        bad |= bool(r["failed"]) or not r["alive_after"] or r["sipp_rc"] != 0
    by = {r["proxy"]: r for r in results if "error" not in r}
    if "sipedge" in by and "kamailio" in by and by["kamailio"]["cpu_s"] > 0:
        ratio = by["sipedge"]["cpu_s"] / by["kamailio"]["cpu_s"]
        print(f"ratio sipedge/kamailio (CPU per call): {ratio:.3f}")
    if bad:
        print("WARNING: a run had failed calls or errors; its CPU figure is not comparable")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"calls": args.calls, "rate": args.rate, "workers": args.workers,
                       "pause_ms": args.pause_ms, "results": results}, f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
