#!/usr/bin/python3
"""Runs sipp calls UAC -> proxy -> UAS on loopback and checks none failed.

The proxy is sipedge (default: $SIPEDGE_BIN or build/sipedge, started with
-w 2, a UDP and a TCP listener, and -u pointing at the sipp UAS), or Kamailio
with bench/kamailio/kamailio-proxy.cfg (--proxy kamailio, to prove the
harness), or nothing (--proxy none: UAC straight to UAS).

Legs (--legs, comma separated): udp-udp, tcp-tcp, tcp-udp, udp-tcp
  = UAC->proxy transport - proxy->UAS transport. The UAC uses sipp -t un
  (UDP, a pool of sockets, so the kernel's SO_REUSEPORT hash spreads the
  calls over both workers) or -t tn (TCP, a pool of connections).
Flows (--flow):
  call     uac_call.xml / uas_call.xml: INVITE 100 180 200 ACK pause BYE 200
  cancel   uac_cancel.xml / uas_cancel.xml: INVITE 180 CANCEL 200 487 ACK
  reg      reg_then_call: the UAS REGISTERs with the proxy (registrar, no -u)
           and the UAC calls its AOR (uas_register.xml + uas_call.xml)
  timeout  uac_timeout.xml against a silent upstream: the proxy answers 408
           after Timer B (32 s). Few calls.
Sizes: --small (200 calls at 100 cps, the test-suite run), --big (10,000
calls at 500 cps, the acceptance run), or --calls/--rate.

Checks per leg: UAC exit code 0; its -trace_stat shows every call created
and successful and 0 failed; its -trace_err log has no entry; the UAS (for
call/cancel) completed every call and failed none; the proxy is still alive
after the run, exits 0 on SIGTERM (sipedge) and left no sanitizer report.
Prints one line per leg and a final line "N passed, M failed"; exit 1 if any
leg failed, 77 if the proxy binary is missing (skip).
"""

import argparse
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

LEGS = ("udp-udp", "tcp-tcp", "tcp-udp", "udp-tcp")
HOST = "127.0.0.1"
# -t un: a pool of 50 UDP sockets (source ports), reused round robin.
SIPP_SOCKETS = 50
# -t tn: one connection per call, closed when it ends. The limit only has to
# stay above the calls in progress: once it is reached sipp shares sockets
# between calls and closes them under each other ("Broken pipe"); and it must
# stay below the open-files limit, which sipp checks at start.
SIPP_TCP_SOCKETS = 4096


def uac_transport(t):
    return "un" if t == "udp" else "tn"


def uas_transport(t):
    return "u1" if t == "udp" else "t1"


def start_proxy(h, args, port, upstream_uri, upstream_port, registrar, up_tcp):
    """The proxy under test, listening on UDP and TCP `port`."""
    if args.proxy == "sipedge":
        # No OPTIONS probes during a run but the one per target at start
        # (probing has its own test).
        return lib.start_sipedge(h, [("udp", HOST, port), ("tcp", HOST, port)],
                                 upstream=upstream_uri, registrar=registrar,
                                 workers=args.workers,
                                 extra=["--oos-check", "3600", "--oos-force", "3600"])
    if args.proxy == "kamailio":
        return lib.start_kamailio(h, port, upstream_uri or f"sip:{HOST}:{upstream_port}",
                                  children=args.workers, host=HOST, registrar=registrar,
                                  tcp=True)
    return None


def check_uac(res, calls, expect_created=True):
    """List of problems with a UAC result (empty = good)."""
    bad = []
    if res["rc"] != 0:
        bad.append(f"sipp exit {res['rc']}")
    if res["failed"] is None:
        bad.append("no -trace_stat row")
    else:
        if res["failed"]:
            bad.append(f"{res['failed']} failed calls")
        if res["successful"] != calls:
            bad.append(f"{res['successful']}/{calls} successful")
        if expect_created and res["created"] != calls:
            bad.append(f"{res['created']}/{calls} created")
    if res["unexpected"]:
        bad.append(f"{res['unexpected']} error-log entries, first: {res['errors'][:1]}")
    return bad


def run_leg(args, leg):
    """One UAC->proxy->UAS run. Returns (ok, summary line)."""
    a_t, b_t = leg.split("-")
    calls, rate = args.calls, args.rate
    flow = args.flow
    name = f"{flow}-{leg}-{args.proxy}"
    with lib.Harness(name) as h:
        t0 = time.monotonic()
        uas_port = lib.free_port(HOST)
        proxy_port = lib.free_port(HOST)
        proxy = None
        sink = None
        uas = None
        extra = ["-d", args.pause_ms, "-max_socket",
                 SIPP_SOCKETS if a_t == "udp" else SIPP_TCP_SOCKETS]
        up_uri = f"sip:{HOST}:{uas_port};transport={b_t}"
        if flow in ("call", "cancel"):
            scen_uac, scen_uas = {"call": ("uac_call.xml", "uas_call.xml"),
                                  "cancel": ("uac_cancel.xml", "uas_cancel.xml")}[flow]
            # -aa: answer sipedge's OPTIONS health probes (ARCHITECTURE §5) with
            # 200. No -m: sipp counts each probe it answers as a call of that
            # budget (sipedge probes every target once at start); the UAS
            # serves until every call of the UAC completed there (below).
            uas = lib.Sipp(h, "uas", scen_uas, local_port=uas_port,
                           transport=uas_transport(b_t), host=HOST, extra=["-aa"])
            uas.start_uas()
            proxy = start_proxy(h, args, proxy_port, up_uri, uas_port, False, b_t == "tcp")
            dest = f"{HOST}:{uas_port}"
        elif flow == "reg":
            # The proxy is the registrar (sipedge without -u has it on by
            # default; --registrar says so explicitly) and the AOR's domain.
            # Kamailio needs a fallback upstream: give it a port where nothing
            # listens, so a call only succeeds through the location lookup.
            proxy = start_proxy(h, args, proxy_port, None, lib.free_port(HOST), True,
                                b_t == "tcp")
            target = proxy_port if proxy else uas_port
            dest = f"{HOST}:{target}"
            logf = h.path("uas_logs.log")
            uas = lib.Sipp(h, "uas", "uas_register.xml", local_port=uas_port,
                           transport=("u1" if b_t == "udp" else "t1"), host=HOST, calls=1,
                           remote=f"{HOST}:{target}", keys={"dest": dest},
                           extra=["-oocsf", os.path.join(lib.SIPP_DIR, "uas_call.xml"),
                                  "-d", int(args.timeout * 1000), "-s", "callee",
                                  "-trace_logs", "-log_file", logf])
            uas.proc = h.spawn("uas", uas.argv)
            lib.wait_until(lambda: os.path.exists(logf) and "registered" in open(logf).read(),
                           15, what="REGISTER answered 200", proc=uas.proc)
            extra += ["-s", "callee"]
        elif flow == "timeout":
            sink = lib.Sink(HOST)  # answers the proxy's OPTIONS probes, nothing else
            uas_port = sink.port
            up_uri = f"sip:{HOST}:{uas_port};transport={b_t}"
            proxy = start_proxy(h, args, proxy_port, up_uri, uas_port, False, b_t == "tcp")
            dest = f"{HOST}:{uas_port}"
            scen_uac = "uac_timeout.xml"
            extra += ["-max_invite_retrans", 10]
        else:
            raise SystemExit(f"unknown flow {flow}")
        if flow == "reg":
            scen_uac = "uac_call.xml"
        remote = f"{HOST}:{proxy_port if proxy else uas_port}"
        uac = lib.Sipp(h, "uac", scen_uac, transport=uac_transport(a_t), host=HOST,
                       calls=calls, rate=rate, remote=remote, keys={"dest": dest}, extra=extra)
        if args.trace:
            h.keep = True
        drops0 = lib.udp_rcvbuf_errors()
        budget = calls / max(rate, 0.1) + args.pause_ms / 1000.0 + 60
        if flow == "timeout":
            budget += 45
        try:
            res = uac.run(timeout=min(budget, args.timeout))
        finally:
            if sink:
                sink.close()
        problems = check_uac(res, calls)
        if flow in ("call", "cancel"):
            # its statistics row is written every second (-fd 1)
            try:
                lib.wait_until(lambda: (uas.result()["successful"] or 0) >= calls, 15,
                               what="every call completed at the UAS", proc=uas.proc)
            except (lib.TestTimeout, lib.ProcessDied):
                pass
            ures = uas.result()
            if ures["successful"] != calls or ures["failed"]:
                problems.append(f"UAS: {ures['successful']}/{calls} completed, "
                                f"{ures['failed']} failed")
        if flow == "timeout" and sink is not None:
            pass
        if proxy is not None:
            if not proxy.alive():
                problems.append(f"{args.proxy} died (exit {proxy.returncode})")
            else:
                st = proxy.stop(signal.SIGTERM, timeout=10)
                if args.proxy == "sipedge" and st != 0:
                    problems.append(f"sipedge exit status {st} after SIGTERM (want 0)")
            rep = lib.sanitizer_report(proxy)
            if rep:
                problems.append(f"sanitizer: {rep}")
        secs = time.monotonic() - t0
        drops1 = lib.udp_rcvbuf_errors()
        drops = (drops1 - drops0) if drops0 is not None and drops1 is not None else 0
        line = (f"{'PASS' if not problems else 'FAIL'} {flow} {leg} via {args.proxy}: "
                f"{res['successful']}/{calls} calls ok, {res['failed']} failed, "
                f"{res['retransmissions']} retrans, {secs:.1f}s")
        if drops > 0:
            # Not a verdict, a diagnosis: host-wide UDP receive-buffer drops
            # mean some process (often a stalled sipp) could not keep up.
            line += f" [kernel dropped {drops} UDP datagrams on full receive buffers]"
        if problems:
            h.failed = True
            line += " -- " + "; ".join(problems)
        if args.trace:
            line += f" [logs: {h.dir}]"
        return not problems, line


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxy", choices=("sipedge", "kamailio", "none"), default="sipedge")
    ap.add_argument("--legs", default="udp-udp,tcp-tcp,tcp-udp")
    ap.add_argument("--flow", choices=("call", "cancel", "reg", "timeout"), default="call")
    ap.add_argument("--calls", type=int)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--small", action="store_true", help="200 calls at 100 cps")
    ap.add_argument("--big", action="store_true", help="10,000 calls at 500 cps")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pause-ms", type=int, default=100,
                    help="call length, ACK to BYE (sipp -d, default 100 ms: with 0, the "
                         "back-to-back ACK and BYE can be reordered by a multi-process "
                         "proxy and the UAS sees BYE before ACK)")
    ap.add_argument("--timeout", type=float, default=900, help="global bound, seconds")
    ap.add_argument("--trace", action="store_true",
                    help="keep the temp dir and every sipp's message log (debugging)")
    args = ap.parse_args()
    lib.raise_on_sigterm()
    if args.trace:
        os.environ["SIPEDGE_SIPP_TRACE"] = "1"

    if args.big:
        calls, rate = 10000, 500
    elif args.small:
        calls, rate = 200, 100
    else:
        calls, rate = 200, 100
    if args.flow == "timeout":
        calls, rate = 4, 2
    args.calls = args.calls if args.calls is not None else calls
    args.rate = args.rate if args.rate is not None else rate

    legs = [l.strip() for l in args.legs.split(",") if l.strip()]
    for l in legs:
        if l not in LEGS:
            ap.error(f"unknown leg {l}; choose from {', '.join(LEGS)}")
    if args.proxy == "none" and args.flow in ("reg", "timeout"):
        ap.error("--flow reg/timeout need a proxy")
    if args.proxy == "none":
        # Without a proxy nothing converts transports: keep same-transport legs.
        legs = [l for l in legs if l.split("-")[0] == l.split("-")[1]]
    if args.proxy == "sipedge" and not lib.have_sipedge():
        print(f"SKIP: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)")
        print("0 passed, 0 failed")
        return 77

    passed = failed = 0
    try:
        with lib.time_bound(args.timeout, "run_sipp_calls"):
            for leg in legs:
                try:
                    ok, line = run_leg(args, leg)
                except (lib.TestTimeout, lib.ProcessDied, OSError) as e:
                    ok, line = False, f"FAIL {args.flow} {leg} via {args.proxy}: {e}"
                print(line, flush=True)
                passed += ok
                failed += not ok
    except (lib.GlobalTimeout, lib.Terminated) as e:
        print(f"FAIL: {e}", flush=True)
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
