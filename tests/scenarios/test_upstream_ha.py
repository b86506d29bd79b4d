#!/usr/bin/python3
"""Primary/backup SIP Server failover (ARCHITECTURE §5): OPTIONS probes and
what requests show.

Two fake SIP Servers (lib.Sink, which answers the proxy's OPTIONS probes,
with a lib.SinkAnswerer answering MESSAGE 200) stand behind sipedge
-u PRIMARY -u BACKUP with --oos-check 1 --oos-force 1. A server "goes
silent" by answering neither probes nor requests (a server that answers
requests is in service whatever its probes do). Checks:
  a. the probes reach the primary, and endpoint requests go to the primary
     (answered there, not sent to the backup);
  b. the primary goes silent -> requests reach the backup (the request that
     found it silent itself goes on to the backup, --failover-timeout);
  c. both silent -> new endpoint requests get 503 with Retry-After;
  d. the primary answers again -> requests go to it again.
  e. a second sipedge (one SIP Server, --failover-timeout 300) forwards a
     MESSAGE its SIP Server leaves unanswered, then is stopped (SIGSTOP)
     while a flood of datagrams overflows its UDP receive queue: resumed,
     it does not blame the SIP Server for the missing response (the worker
     lost datagrams itself): the log says why, and not that it went down;
     the next request still reaches the SIP Server.
Waits are bounded polls on what the sinks record; nothing asserts a duration.
Prints one line per case and "N passed, M failed"."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HOST = "127.0.0.1"
results = []


def case(name, fn):
    lib.run_case(results, name, fn)


def send_message(port, n):
    """A MESSAGE from an endpoint; returns (final status or None, call-id)."""
    cid = f"ha-{n}-{lib.new_tag()}"
    return lib.udp_request(HOST, port, "MESSAGE", "sip:agent@example.com", cid), cid


def reached(sink, cid, timeout=3):
    return sink.wait_for(lambda m: m.get("call-id") == cid, timeout) is not None


def main():
    if not lib.have_sipedge():
        print("0 passed, 0 failed (sipedge binary missing)")
        return 77
    with lib.time_bound(120, "upstream HA"), lib.Harness("upstream-ha") as h:
        primary, backup = lib.Sink(HOST), lib.Sink(HOST)
        answer = {"MESSAGE": 200}
        answerers = {s: lib.SinkAnswerer(s, answer) for s in (primary, backup)}

        def silent(sink, yes):
            sink.answer_probes = not yes
            answerers[sink].codes = {} if yes else dict(answer)
        port = lib.free_port(HOST)
        se = lib.start_sipedge(h, [("udp", HOST, port)], workers=1,
                               extra=["-u", f"sip:{HOST}:{primary.port};transport=udp",
                                      "-u", f"sip:{HOST}:{backup.port};transport=udp",
                                      "--oos-check", "1", "--oos-force", "1"])
        n = [0]

        def next_msg():
            n[0] += 1
            return send_message(port, n[0])

        def a():
            lib.wait_until(lambda: primary.probes > 0, 5, "a probe at the primary", proc=se)
            r, cid = next_msg()
            if not reached(primary, cid):
                raise AssertionError("request did not reach the primary")
            if r is None or r.code != 200:
                raise AssertionError(f"request through the primary: {r!r}")
            if reached(backup, cid, 0.2):
                raise AssertionError("request also reached the backup")
            return f"{primary.probes} probe(s) answered, request at the primary, 200"

        def b():
            silent(primary, True)
            # bounded: requests and the next probes go unanswered, sipedge switches
            dl = lib.Deadline(20)
            while not dl.expired():
                _, cid = next_msg()
                if reached(backup, cid, 1.5):
                    return "primary silent: requests now reach the backup"
            raise AssertionError("requests never moved to the backup")

        def c():
            silent(backup, True)
            dl = lib.Deadline(25)
            while not dl.expired():
                r, _ = next_msg()
                if r is not None and r.code == 503:
                    if not r.get("retry-after"):
                        raise AssertionError("503 without Retry-After")
                    return f"both silent: 503 with Retry-After: {r.get('retry-after')}"
            raise AssertionError("no 503 while no SIP Server answers")

        def d():
            silent(primary, False)
            dl = lib.Deadline(20)
            while not dl.expired():
                _, cid = next_msg()
                if reached(primary, cid, 1.5):
                    return "primary answers again: requests reach it"
            raise AssertionError("requests never came back to the primary")

        def e():
            # answers probes, never a MESSAGE: its silence on requests is
            # what a worker's own overload must not be mistaken for
            sink = lib.Sink(HOST)
            p2 = lib.free_port(HOST)
            se2 = lib.start_sipedge(h, [("udp", HOST, p2)], workers=1, name="sipedge-own-overflow",
                                    extra=["-u", f"sip:{HOST}:{sink.port};transport=udp",
                                           "--failover-timeout", "300"])
            try:
                lib.wait_until(lambda: sink.probes > 0, 5, "a probe at the SIP Server", proc=se2)
                cid = f"own-{lib.new_tag()}"
                c = lib.SipClient(HOST, p2, "udp")
                c.send(lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                         via_port=c.local[1], call_id=cid,
                                         from_uri=f"sip:caller@{HOST}"))
                if not reached(sink, cid):
                    raise AssertionError("the first MESSAGE did not reach the SIP Server")
                os.kill(se2.pid, signal.SIGSTOP)
                try:
                    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    for _ in range(40000):  # CRLF keep-alives: > 4 MB of queue
                        try:
                            flood.sendto(b"\r\n\r\n", (HOST, p2))
                        except BlockingIOError:
                            pass
                    flood.close()
                    time.sleep(0.4)  # past --failover-timeout while stopped
                finally:
                    os.kill(se2.pid, signal.SIGCONT)
                lib.wait_until(lambda: "not marked down" in se2.output()[1], 5,
                               "the log line saying why", proc=se2)
                if "down: no response at all" in se2.output()[1]:
                    raise AssertionError("the SIP Server was marked down for the worker's own "
                                         "lost datagrams")
                # the next request, sent again (new Call-ID) should the
                # end of the flood still fill the queue when it comes
                for k in range(3):
                    cid2 = f"own-{k}-{lib.new_tag()}"
                    c.send(lib.build_request("MESSAGE", "sip:agent@example.com", via_host=HOST,
                                             via_port=c.local[1], call_id=cid2,
                                             from_uri=f"sip:caller@{HOST}"))
                    if reached(sink, cid2, 1.5):
                        break
                    r = c.recv_msg(0.1)
                    if r is not None and r.is_response and r.code == 503:
                        raise AssertionError("503 for the next request")
                else:
                    raise AssertionError("the next MESSAGE did not reach the SIP Server")
                c.close()
                return "own UDP queue overflowed: SIP Server not blamed, next request forwarded"
            finally:
                se2.stop()
                sink.close()

        case("a. probes and routing to the primary", a)
        case("b. failover to the backup", b)
        case("c. none in service -> 503", c)
        case("d. back to the primary", d)
        case("e. own overload is not the SIP Server's silence", e)
        for a in answerers.values():
            a.stop()
        primary.close()
        backup.close()
        rc = se.stop()
        case("z. clean exit", lambda: "exit 0" if rc == 0 else (_ for _ in ()).throw(
            AssertionError(f"exit {rc}")))
    ok = sum(results)
    print(f"{ok} passed, {len(results) - ok} failed")
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
