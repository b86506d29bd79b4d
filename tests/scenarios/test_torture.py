#!/usr/bin/python3
"""RFC 4475 / RFC 5118 torture corpus against a running sipedge, on the wire.

Every message of $SIPEDGE_TESTDATA/torture (default ../shared/testdata next
to the repository) is sent to sipedge over UDP, over TCP in one write, and
over TCP one byte per write. The expected outcome of each (file, transport)
is the table EXPECTED below, transcribed from torture/EXPECTED.md. Outcomes:

  <code>    sipedge answers with this final status itself
  forward   it reaches the upstream (a recording Sink, which answers nothing)
            -- or, for an in-dialog request carrying a Route, that Route's
            target (an initial request from an endpoint loses its preloaded
            Route and goes to the upstream: sipedge's edge policy) --
            with sipedge's Via on top, the original Via below it, Max-Forwards
            decremented, every other header unchanged and the body intact
  drop      nothing comes back and nothing is forwarded
  close     (TCP) sipedge closes the connection
  pending   (TCP) sipedge waits for more bytes: no answer, no close yet

Where EXPECTED.md allows alternatives ("400 is acceptable. If liberal...",
"may instead be dropped"), the row lists them all, preferred first; a
liberal forward then gets the extra check EXPECTED.md asks for.

After every case: an OPTIONS ping to sipedge on a fresh socket/connection
must get 200, and over TCP so must a bystander connection opened before the
case (EXPECTED.md "Acceptance assertions" 2 and 4). When an instance is
stopped it must exit 0 on SIGTERM without a sanitizer report (assertion 1).

Setup: sipedge -w 2 -l udp:127.0.0.1:P -l tcp:127.0.0.1:P
               -u sip:127.0.0.1:SINK;transport=udp --dns-server 127.0.0.1:D
  No --registrar: with -u the registrar is off, so REGISTERs are endpoint
  requests like any other and are forwarded to the upstream (the registrar
  rows of EXPECTED.md, "200", describe the upstream's job, not a proxy's).
  dnsmasq on D answers every A query with ROUTE_HOST (a random 127/8
  address of this run), where a second Sink listens on port 5060: wsinv.dat's
  Route <sip:services.example.com;lr> is therefore routable and observable.
  That in-dialog Route names a host an endpoint may not reach by default
  (ARCHITECTURE §2 edge policy: a foreign Route in a dialog gets 403), so
  the instance configures it as a site it serves: --peer
  services.example.com=sip:services.example.com. mpart01.dat's strict
  Route <sip:127.0.0.1:5080> is preloaded on an initial request: removed,
  the MESSAGE goes to the upstream; a third Sink on 127.0.0.1:5080 catches
  it if it ever leaks there.
  A fresh sipedge is started for every pass, and again whenever a case
  reuses a transaction key (top Via branch + method) already seen by the
  running instance: many corpus files share branch=z9hG4bKkdjuw, and a
  transaction-stateful proxy rightly treats a repeat as a retransmission.
UDP replies: RFC 3261 §18.2.2 sends a response to the top Via's sent-by port
  (received= the source address) unless rport is present (RFC 3581). The
  client socket is therefore bound to CLIENT_HOST:<sent-by port, default
  5060>, which receives the reply under either rule; CLIENT_HOST is a random
  127/8 address of this run, so nothing else replies there. If the Via names TCP/TLS, a
  TCP listener on that port catches a reply sent over a new connection.
Synchronisation: after the case, an OPTIONS ping on the same UDP socket /
  TCP connection; its 200 proves the case was processed (same flow, same
  worker, in order); then a short grace period for the forwarded copy.
  Cases that may leave a TCP stream pending or closed wait up to 3 s for an
  event instead. Nothing asserts a duration.

Output: one line per case, then exactly "N passed, M failed". Exit 1 on any
failure, 77 (skip) when the binary or the corpus is missing.
"""

import argparse
import os
import random
import re
import signal
import sys
import time
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

HOST = "127.0.0.1"
# Loopback addresses of this run (all of 127/8 is local on Linux): the UDP
# client binds its reply port (often 5060) here, and dnsmasq sends every name
# here, so two runs on one host, or another test replying to 127.0.0.1:5060,
# never mix their datagrams.
_R = random.Random(os.getpid())
CLIENT_HOST = f"127.{_R.randint(100, 199)}.{_R.randint(1, 254)}.{_R.randint(1, 254)}"
ROUTE_HOST = f"127.{_R.randint(200, 250)}.{_R.randint(1, 254)}.{_R.randint(1, 254)}"
ROUTE_PORT = 5060          # default SIP port of a Route URI without port
STRICT_ROUTE = ("127.0.0.1", 5080)  # mpart01.dat's Route target

F, DROP, CLOSE, PEND = "forward", "drop", "close", "pending"
V = "variants/"
R = "rfc5118/"


class Row:
    """udp/tcp: tuple of acceptable outcomes (preferred first), or None when
    the file is not sent over that transport. check: name of an extra check
    applied to a forward (see FORWARD_CHECKS)."""

    def __init__(self, udp, tcp, check=None, also=None):
        self.udp, self.tcp, self.check, self.also = udp, tcp, check, also


def both(*o, **kw):
    return Row(o, o, **kw)


# The expected proxy outcome per file and transport, from torture/EXPECTED.md.
EXPECTED = {
    # ---- RFC 4475 §3.1.1, valid messages: "must parse and must be forwarded correctly"
    # wsinv: "Accept. Forward unknown headers unchanged ... Do not answer 400." It has a
    # loose Route to services.example.com, so it goes there (Route sink), not upstream.
    "wsinv.dat": both(F),
    # intmeth: "Unknown method: forward it if the URI is known, otherwise 404." sipedge
    # routes every endpoint request to its upstream (ARCHITECTURE §2 step 5): known.
    "intmeth.dat": both(F),
    # esc01: "Accept." (escaped user part and URI parameters, forwarded as they are)
    "esc01.dat": both(F),
    # escnull: "Accept." REGISTER; the registrar part ("2 distinct contacts") is the
    # upstream's job since this sipedge runs with -u and without --registrar.
    "escnull.dat": both(F),
    # esc02: "Unknown method: forward or reject by R-URI." The R-URI is routable: forward.
    "esc02.dat": both(F),
    # lwsdisp: "Accept (this was an RFC 3261 ABNF bug)."
    "lwsdisp.dat": both(F),
    # longreq: "Accept. Fixed-size buffers must not truncate or overflow."
    "longreq.dat": both(F),
    # dblreq: "UDP: handle the REGISTER and discard the trailing INVITE bytes, which must
    # not appear in the forwarded request. TCP: the trailing bytes are the next message."
    "dblreq.dat": Row((F,), (F,), check="dblreq",
                      also={"tcp": "dblreq.0ha0isnda977644900765@192.0.2.15"}),
    # semiuri: "Accept."
    "semiuri.dat": both(F),
    # transports: "Accept. An unknown transport token is legal."
    "transports.dat": both(F),
    # mpart01: "Accept. Frame by Content-Length only." Its strict Route (no ;lr) is a
    # preloaded Route on an endpoint's initial request: removed by the edge policy, the
    # MESSAGE goes to the upstream (a general proxy would send it to 127.0.0.1:5080,
    # RFC 3261 §16.6 step 6). Body checked byte for byte.
    "mpart01.dat": both(F),
    # unreason / noreason: responses. "Accept and relay it" applies to a response that
    # matches a transaction; these match none and their top Via is not sipedge's, so
    # RFC 3261 §18.1.2 discards them: drop.
    "unreason.dat": both(DROP),
    "noreason.dat": both(DROP),

    # ---- RFC 4475 §3.1.2, invalid messages: "must not crash; reject"
    # badinv01: "400. The only Via is malformed, so it may instead be dropped silently."
    "badinv01.dat": both(400, DROP),
    # clerr: "UDP: 400. TCP/TLS: wait for the missing bytes, then close on the read
    # timeout." The read timeout is not waited for; an immediate close (9999 may exceed
    # --max-message-size) is accepted too.
    "clerr.dat": Row((400,), (PEND, CLOSE)),
    # ncl: "UDP: an error (400) and discard the rest. TCP: close the connection."
    "ncl.dat": Row((400,), (CLOSE,)),
    # scalar02: "400 because of the CSeq."
    "scalar02.dat": both(400),
    # scalarlg: response: "Drop the response silently."
    "scalarlg.dat": both(DROP),
    # quotbal: "400. Inferring the missing quote is allowed but risky." (not accepted)
    "quotbal.dat": both(400),
    # ltgtruri: "400. If liberal, strip the brackets before forwarding."
    "ltgtruri.dat": both(400, F, check="ruri_no_brackets"),
    # lwsruri: "400."
    "lwsruri.dat": both(400),
    # lwsstart: "400 is acceptable. If liberal, never forward the extra SP."
    "lwsstart.dat": both(400, F, check="request_line_clean"),
    # trws: "400 is acceptable. If liberal, never forward the extra SP."
    "trws.dat": both(400, F, check="request_line_clean"),
    # escruri: "400 is acceptable. A proxy must never turn them into real headers and must
    # strip them from the forwarded R-URI."
    "escruri.dat": both(400, F, check="ruri_no_headers"),
    # baddate: "400 is acceptable, but better to ignore the Date header": forward first.
    "baddate.dat": both(F, 400),
    # regbadct: "400. If liberal, add the brackets." A proxy that is not the registrar
    # does not rewrite Contact, so a forward (Contact unchanged) is the liberal choice.
    "regbadct.dat": both(400, F),
    # badaspec: "400 is reasonable. Must not break." A forward also does not break.
    "badaspec.dat": both(400, F),
    # baddn: "400." The archive copy has no empty line after the headers: over UDP the
    # datagram ends there (400, or drop as unparseable); over TCP a stream parser would
    # wait forever, so TCP uses variants/baddn.terminated.dat (EXPECTED.md, quirks).
    "baddn.dat": Row((400, DROP), None),
    V + "baddn.terminated.dat": both(400),
    # badvers: "505 Version Not Supported."
    "badvers.dat": both(505),
    # mismatch01: "400."
    "mismatch01.dat": both(400),
    # mismatch02: "501 is preferred at a proxy; 400 is allowed."
    "mismatch02.dat": both(501, 400),
    # bigcode: response: "Drop the response silently."
    "bigcode.dat": both(DROP),

    # ---- RFC 4475 §3.2-3.4: transaction and application semantics
    # badbranch: "Either 400 (preferably stateless) or fall back to RFC 2543 matching."
    "badbranch.dat": both(F, 400),
    # insuf: "400."
    "insuf.dat": both(400),
    # unkscm: "416. Never route on the To header."
    "unkscm.dat": both(416),
    # novelsc: "416 if the scheme is never accepted, otherwise 404."
    "novelsc.dat": both(416, 404),
    # unksm2: "A proxy treats it like any other request" (400 is the registrar's answer).
    "unksm2.dat": both(F),
    # bext01: "The proxy answers 420 with an Unsupported header listing the
    # Proxy-Require values."
    "bext01.dat": both(420, check="unsupported_lists_proxy_require"),
    # invut: "A proxy forwards it normally."
    "invut.dat": both(F),
    # regaut01: "A proxy forwards it unchanged."
    "regaut01.dat": both(F),
    # multi01: "400."
    "multi01.dat": both(400),
    # mcl01: "Framing error. UDP: 400 and discard. TCP/TLS: close the connection."
    "mcl01.dat": Row((400,), (CLOSE,)),
    # bcast: "A proxy must drop it and never send to broadcast."
    "bcast.dat": both(DROP),
    # zeromf: "A proxy answers 483 and does not forward." (R-URI has a user part: not
    # addressed to sipedge itself, so not the OPTIONS-to-self case)
    "zeromf.dat": both(483),
    # cparam01 / cparam02 / regescrt: "200" is the registrar's answer; this proxy
    # forwards REGISTER to the upstream registrar.
    "cparam01.dat": both(F),
    "cparam02.dat": both(F),
    "regescrt.dat": both(F),
    # sdp01: "A proxy forwards it."
    "sdp01.dat": both(F),
    # inv2543: "Over UDP the body is the rest of the datagram, so accept for backward
    # compatibility. Over TCP there is no Content-Length, so this is a framing error."
    "inv2543.dat": Row((F,), (CLOSE,)),
    # test.dat: "Treat it as invalid (400, or drop)." Over TCP closing the connection is
    # accepted as the stream form of dropping an unparseable request line.
    "test.dat": Row((400, DROP), (400, DROP, CLOSE)),

    # ---- RFC 5118, IPv6
    R + "ipv6-good": both(F),                       # "Accept."
    R + "ipv6-bad": both(400),                      # "400. ... no brackets."
    R + "port-ambiguous": both(F),                  # "It parses, so accept it."
    R + "port-unambiguous": both(F),                # "Accept."
    R + "via-received-param-with-delim": both(F),   # "Accept ... with brackets."
    R + "via-received-param-no-delim": both(F),     # "Accept ... without brackets."
    R + "mult-ip-in-header": both(F),               # "Accept."
    R + "ipv6-correct-abnf-2-colons": both(F),      # "Accept."
    # 3 colons: "Tolerate ... a strict rejection is defensible but must be documented."
    R + "ipv6-bug-abnf-3-colons": both(F, 400),
    # Content-Length vs CRLF bodies (EXPECTED.md table): "Over UDP, a Content-Length
    # that is too large (ipv6-in-sdp) gets a 400, like clerr. One that is too small
    # means the extra bytes are discarded." Over TCP use variants/*.clfixed.
    R + "ipv6-in-sdp": Row((400,), None),
    R + "mult-ip-in-sdp": Row((F,), None),
    R + "ipv4-mapped-ipv6": Row((F,), None),
    V + "rfc5118-ipv6-in-sdp.clfixed": both(F),
    V + "rfc5118-mult-ip-in-sdp.clfixed": both(F),
    V + "rfc5118-ipv4-mapped-ipv6.clfixed": both(F),
}


# ---------------------------------------------------------------- message helpers

def content_length(raw_head):
    m = lib.CL_RE.search(raw_head)
    if not m:
        return None
    v = m.group(1)
    return int(v) if v.isdigit() else None


def expected_body(data, transport):
    """The body a correct proxy forwards: Content-Length bytes, or over UDP
    without Content-Length the rest of the datagram (RFC 3261 §18.3)."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return b""
    head, body = data[:i + 2], data[i + 4:]
    n = content_length(head)
    if n is None:
        return body if transport == "udp" else b""
    return body[:n]


def top_via(msg):
    vs = msg.values("via")
    return lib.parse_via(vs[0]) if vs else None


def txn_key(msg):
    v = top_via(msg)
    br = v[3].get("branch", "") if v else ""
    if br.lower().startswith("z9hg4bk") and len(br) > 7:
        return ("b", br, msg.method)
    return ("c", msg.call_id, msg.method)


def via_port(msg):
    v = top_via(msg)
    return v[2] if v else None


def reply_port(msg):
    v = top_via(msg)
    return (v[2] or 5060) if v else 5060


def in_dialog(msg):
    return re.search(r";\s*tag\s*=", msg.get("to", ""), re.I) is not None


def route_target(msg):
    """(host, port) the request must go to when it carries a Route that
    sipedge follows (an in-dialog one: an endpoint's initial request loses
    its preloaded Routes): the first Route URI, with DNS names resolving
    (dnsmasq) to ROUTE_HOST."""
    routes = msg.values("route")
    if not routes or not in_dialog(msg):
        return None
    m = re.search(r"sips?:(?:[^@>;]*@)?(\[[^\]]+\]|[^:;>]+)(?::(\d+))?", routes[0])
    if not m:
        return None
    host, port = m.group(1), int(m.group(2) or 5060)
    if re.fullmatch(r"[\d.]+", host):
        return host, port
    return ROUTE_HOST, port


def ack_for(data, resp):
    """ACK for a non-2xx final response to the INVITE `data` (RFC 3261
    §17.1.1.3): same Request-URI, top Via, From, Call-ID and CSeq number as
    the INVITE, the To of the response. Header lines are copied raw."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    ruri = head[0].split(b" ")[1] if len(head[0].split(b" ")) > 1 else b"sip:invalid"
    out = [b"ACK " + ruri + b" SIP/2.0"]
    vias, froms, cids, cseq = [], [], [], b"1"
    i = 1
    while i < len(head):
        line = head[i]
        while i + 1 < len(head) and head[i + 1][:1] in (b" ", b"\t"):
            i += 1
            line += b"\r\n" + head[i]
        name = lib.canon(line.split(b":", 1)[0].decode("latin-1"))
        if name == "via" and not vias:
            vias.append(line)
        elif name == "from":
            froms.append(line)
        elif name == "call-id":
            cids.append(line)
        elif name == "cseq":
            m = re.search(rb":\s*(\d+)", line)
            cseq = m.group(1) if m else cseq
        i += 1
    to = resp.get("to", "")
    out += vias + froms + cids + [b"To: " + to.encode("utf-8", "replace"),
                                  b"CSeq: " + cseq + b" ACK", b"Max-Forwards: 70",
                                  b"Content-Length: 0"]
    return b"\r\n".join(out) + b"\r\n\r\n"


# ---------------------------------------------------------------- forward checks

UNTOUCHED_EXCLUDE = {"via", "max-forwards", "content-length", "route", "record-route"}


def check_forward(inst, orig, fwd, transport, data, row):
    """Problems with a forwarded copy (empty list = good)."""
    bad = []
    vias = fwd.values("via")
    ovias = orig.values("via")
    pv = lib.parse_via(vias[0]) if vias else None
    ports = {p for _, _, p in inst.proxy.listens}
    if not pv or pv[1] != HOST or pv[2] not in ports | inst.ports:
        bad.append(f"top Via is not sipedge's: {vias[0] if vias else None!r}")
    elif not pv[3].get("branch", "").startswith("z9hG4bK"):
        bad.append(f"sipedge's Via branch lacks z9hG4bK: {vias[0]!r}")
    if len(vias) != len(ovias) + 1:
        bad.append(f"{len(vias)} Via values forwarded, expected {len(ovias)} + 1")
    elif ovias:
        o, s = lib.parse_via(ovias[0]), lib.parse_via(vias[1])
        if o and s:
            if o[3].get("branch") and o[3].get("branch") != s[3].get("branch"):
                bad.append(f"second Via branch {s[3].get('branch')!r} != original "
                           f"{o[3].get('branch')!r}")
            if o[1].lower() != s[1].lower():
                bad.append(f"second Via host {s[1]!r} != original {o[1]!r}")
    omf = orig.get("max-forwards")
    fmf = fwd.get("max-forwards")
    if omf is not None and omf.strip().isdigit():
        if fmf is None or not fmf.strip().isdigit() or int(fmf) != int(omf) - 1:
            bad.append(f"Max-Forwards {fmf!r}, expected {int(omf) - 1}")
    elif fmf is None:
        bad.append("no Max-Forwards added (RFC 3261 §16.6 step 3)")
    if fwd.method != orig.method:
        bad.append(f"method {fwd.method!r} != {orig.method!r}")
    if not orig.values("route") and row.check not in ("ruri_no_brackets", "ruri_no_headers",
                                                      "request_line_clean"):
        if fwd.ruri != orig.ruri:
            bad.append(f"Request-URI changed: {fwd.ruri!r} (was {orig.ruri!r})")
    want = expected_body(data, transport)
    if fwd.body != want:
        bad.append(f"body differs: {len(fwd.body)} bytes forwarded, expected {len(want)}")
    fcl = fwd.get("content-length")
    if fcl is None and getattr(fwd, "transport", "udp") == "udp":
        pass  # optional on UDP (RFC 3261 §20.14)
    elif fcl is None or not fcl.strip().isdigit() or int(fcl) != len(fwd.body):
        bad.append(f"forwarded Content-Length {fcl!r} != body length {len(fwd.body)}")
    # Every other header, unknown ones included, goes through unchanged.
    ohs = Counter((lib.canon(n), v) for n, v in orig.headers
                  if lib.canon(n) not in UNTOUCHED_EXCLUDE)
    fhs = Counter((lib.canon(n), v) for n, v in fwd.headers
                  if lib.canon(n) not in UNTOUCHED_EXCLUDE)
    missing = ohs - fhs
    if missing and row.check != "ruri_no_headers":
        n, v = next(iter(missing))
        bad.append(f"{sum(missing.values())} header(s) changed or lost, e.g. {n}: {v[:60]!r}")
    # Edge policy: an endpoint's initial request loses its preloaded Routes.
    if orig.values("route") and not in_dialog(orig) and fwd.values("route"):
        bad.append(f"preloaded Route forwarded: {fwd.values('route')[:1]}")
    # Record-Route on a dialog-creating request (INVITE without To tag).
    if orig.method == "INVITE" and not in_dialog(orig):
        rr = fwd.values("record-route")
        if not rr or not any(f"{HOST}:{p}" in rr[0] for p in ports):
            bad.append(f"no sipedge Record-Route on top: {rr[:1]}")
    extra = FORWARD_CHECKS.get(row.check)
    if extra:
        bad += extra(orig, fwd, transport)
    return bad


def chk_dblreq(orig, fwd, transport):
    if transport == "udp" and b"INVITE sip:joe" in fwd.raw:
        return ["the trailing INVITE bytes were forwarded inside the REGISTER"]
    return []


def chk_request_line_clean(orig, fwd, transport):
    line = fwd.raw.split(b"\r\n", 1)[0]
    if b"  " in line or line.endswith(b" "):
        return [f"extra SP forwarded in the request line {line!r}"]
    return []


def chk_ruri_no_brackets(orig, fwd, transport):
    return [f"brackets forwarded in the Request-URI {fwd.ruri!r}"] if "<" in (fwd.ruri or "") else []


def chk_ruri_no_headers(orig, fwd, transport):
    bad = []
    if "?" in (fwd.ruri or ""):
        bad.append(f"escaped headers left in the Request-URI {fwd.ruri!r}")
    if fwd.values("route") and not orig.values("route"):
        bad.append(f"R-URI headers turned into Route: {fwd.values('route')}")
    return bad


FORWARD_CHECKS = {"dblreq": chk_dblreq, "request_line_clean": chk_request_line_clean,
                  "ruri_no_brackets": chk_ruri_no_brackets, "ruri_no_headers": chk_ruri_no_headers}


def check_response(orig, resp, row):
    if row.check == "unsupported_lists_proxy_require":
        want = [t.strip().lower() for v in orig.all("proxy-require") for t in v.split(",")]
        have = [t.strip().lower() for v in resp.all("unsupported") for t in v.split(",")]
        missing = [t for t in want if t not in have]
        if missing:
            return [f"Unsupported {resp.all('unsupported')} lacks {missing}"]
    return []


# ---------------------------------------------------------------- instances

class Instance:
    """One sipedge under test, with its own Harness (logs kept on failure)."""

    def __init__(self, env, label):
        self.env = env
        self.h = lib.Harness(f"torture-{label}")
        self.h.__enter__()
        port = lib.free_port(HOST)
        # requests sipedge forwards over UDP name a worker's private port in
        # their Via: fixed ports here, so the sinks can tell instances apart
        base = lib.free_port_block(env.args.workers, HOST)
        self.ports = {port} | set(range(base, base + env.args.workers))
        self.keys = set()
        self.bystander = None
        try:
            if env.args.proxy == "kamailio":
                # Harness self-test only: Kamailio is not expected to match the table.
                self.proxy = lib.start_kamailio(self.h, port, env.sink.uri, tcp=True,
                                                children=env.args.workers)
            else:
                self.proxy = lib.start_sipedge(
                    self.h, [("udp", HOST, port), ("tcp", HOST, port)],
                    upstream=f"{env.sink.uri};transport=udp", workers=env.args.workers,
                    extra=["--dns-server", f"{HOST}:{env.dns_port}",
                           "--worker-ports", str(base),
                           # wsinv.dat's in-dialog Route: a site this proxy
                           # serves, so the edge policy lets endpoints reach it
                           "--peer", "services.example.com=sip:services.example.com"])
        except Exception:
            self.h.failed = True
            self.h.__exit__(None, None, None)
            raise
        self.port = port

    def open_bystander(self):
        self.bystander = lib.SipClient(HOST, self.port, "tcp")

    def begin_stop(self):
        """SIGTERM now; finish with stop(). sipedge drains (its TCP instances
        take seconds), so the next instance starts meanwhile."""
        if self.bystander:
            self.bystander.close()
            self.bystander = None
        self.died = not self.proxy.alive()
        self.proxy.send_signal(signal.SIGTERM)

    def stop(self):
        """Problems found on shutdown (empty = clean)."""
        t0 = time.monotonic()
        bad = []
        if not hasattr(self, "died"):
            self.begin_stop()
        if self.died:
            bad.append(f"sipedge died (exit {self.proxy.returncode})")
        else:
            try:
                st = self.proxy.wait(15)
            except lib.TestTimeout:
                st = self.proxy.stop(signal.SIGKILL)
                bad.append("did not exit within 15 s of SIGTERM")
            self.proxy.stop()
            if st != 0 and self.env.args.proxy == "sipedge":
                bad.append(f"exit status {st} after SIGTERM (want 0)")
        rep = lib.sanitizer_report(self.proxy)
        if rep:
            bad.append(f"sanitizer: {rep}")
        if bad:
            self.h.failed = True
        self.h.__exit__(None, None, None)
        self.stop_secs = time.monotonic() - t0
        return bad


class Env:
    def __init__(self, args, h):
        self.args = args
        self.sink = lib.Sink(HOST)
        self.route_sink = lib.Sink(ROUTE_HOST, ROUTE_PORT, answer_probes=False)
        # 127.0.0.1:5080 is fixed by mpart01.dat's Route; another run of this
        # test on the host may hold it: wait for it (bounded), else skip the
        # cases that need it.
        self.strict_sink = None
        try:
            lib.wait_until(lambda: lib.bindable(STRICT_ROUTE[1], STRICT_ROUTE[0], ("udp", "tcp")),
                           args.port_wait, what=f"{STRICT_ROUTE[0]}:{STRICT_ROUTE[1]} to be free")
            self.strict_sink = lib.Sink(*STRICT_ROUTE, answer_probes=False)
        except (lib.TestTimeout, OSError) as e:
            lib.log(f"test_torture: {e}; cases routed there are skipped")
        self.sinks = [x for x in (self.sink, self.route_sink, self.strict_sink) if x]
        self.retired_ports = set()
        self.retiring = []
        self.dns_port = lib.free_port(HOST, kinds=("udp",))
        lib.start_dnsmasq(h, self.dns_port, answer=ROUTE_HOST)

    def clear(self):
        for s in self.sinks:
            s.clear()

    def retire(self, inst, report, label, keep=2):
        """Starts stopping inst; finishes the oldest retiring instances so
        that at most `keep` drain at once, reporting each."""
        inst.begin_stop()
        self.retired_ports.update(inst.ports)
        self.retiring.append((inst, label))
        while len(self.retiring) > keep:
            self.finish_one(report)

    def finish_one(self, report):
        inst, label = self.retiring.pop(0)
        bad = inst.stop()
        report(not bad, f"{label} clean shutdown [{inst.stop_secs:.2f}s]"
               + (" -- " + "; ".join(bad) if bad else ""))

    def finish_all(self, report):
        while self.retiring:
            self.finish_one(report)

    def sink_for(self, msg):
        t = route_target(msg)
        if t == (ROUTE_HOST, ROUTE_PORT):
            return self.route_sink
        if t == STRICT_ROUTE:
            return self.strict_sink  # None: not observable in this run
        return self.sink

    def close(self):
        for s in self.sinks:
            s.close()


# ---------------------------------------------------------------- one case

class Case:
    def __init__(self, name, row, transport, mode, path):
        self.name, self.row, self.transport, self.mode, self.path = name, row, transport, mode, path
        with open(path, "rb") as f:
            self.data = f.read()
        self.orig = lib.SipMsg(self.data)
        self.accepted = row.udp if transport == "udp" else row.tcp

    @property
    def label(self):
        t = "udp" if self.transport == "udp" else ("tcp-bytewise" if self.mode == "bytes" else "tcp")
        return f"{t} {self.name}"


def belongs(case, m, other_cids):
    cid = case.orig.call_id
    if m.call_id and m.call_id.startswith("ping-"):
        return False
    if cid:
        return m.call_id == cid
    return m.call_id is None or m.call_id not in other_cids


def run_case(env, inst, case, other_cids):
    """Returns (observed outcome, list of problems, note)."""
    env.clear()
    orig, data = case.orig, case.data
    problems, notes = [], []
    catcher = None
    sink = env.sink_for(orig) if not orig.is_response else env.sink
    if case.transport == "udp":
        port = reply_port(orig)
        try:
            c = lib.SipClient(HOST, inst.port, "udp", bind=(CLIENT_HOST, port))
        except OSError:
            c = lib.SipClient(HOST, inst.port, "udp", bind=(CLIENT_HOST, 0))
            notes.append(f"reply port {port} busy, replies to it not observed")
        v = top_via(orig)
        if v and v[0] in ("TCP", "TLS"):
            try:
                catcher = lib.Sink(CLIENT_HOST, port, answer_probes=False, udp=False)
            except OSError:
                pass
    else:
        c = lib.SipClient(HOST, inst.port, "tcp")
    try:
        waited = False
        if case.transport == "udp":
            c.send(data)
        elif case.mode == "bytes":
            c.send_bytewise(data)
        else:
            try:
                c.send(data)
            except (BrokenPipeError, ConnectionResetError):
                c.closed = True
        received = []
        if case.transport == "tcp" and (CLOSE in case.accepted or PEND in case.accepted):
            # No same-connection barrier possible: wait (bounded) for an event.
            waited = True
            dl = lib.Deadline(3.0)
            while not dl.expired() and not c.closed:
                m = c.recv_msg(0.05)
                if m is not None:
                    received.append(m)
                    if m.code and m.code >= 200 and belongs(case, m, other_cids):
                        # a final answer: give a close a moment to follow
                        c.wait_closed(0.5)
                        break
                if sink.matching(lambda x: x.call_id == orig.call_id):
                    break
            if not c.closed and not any(m.code and m.code >= 200 and belongs(case, m, other_cids)
                                        for m in received):
                # Silence: dropped (the stream is in sync and answers a ping) or
                # pending (sipedge still waits for bytes and eats the ping).
                if lib.ping_on(c, timeout=1.0) == 200:
                    waited = False
                received += [lib.SipMsg(r) for r in c.pending]
                c.pending = []
        else:
            code = lib.ping_on(c, timeout=3.0) if not c.closed else None
            if code != 200 and not c.closed:
                notes.append(f"same-flow ping got {code}")
        # Grace for the forwarded copy (it is sent before the ping is read).
        if orig.call_id and not orig.is_response:
            sink.wait_for(lambda x: x.call_id == orig.call_id and x.method == orig.method
                          and via_port(x) in inst.ports, 0.3)
        while True:
            m = c.recv_msg(0.02)
            if m is None:
                break
            received.append(m)
        if catcher:
            received += catcher.matching(lambda x: True)
        mine = [m for m in received if belongs(case, m, other_cids)]
        finals = [m for m in mine if m.code is not None and m.code >= 200]
        stray_requests = [m for m in mine if not m.is_response]
        # Sink messages are attributed by the top Via's port: an instance still
        # draining in the background may retransmit an older case's request, and
        # some corpus files share a Call-ID.
        fwd = sink.matching(lambda x: x.call_id == orig.call_id and x.method == orig.method
                            and via_port(x) in inst.ports) if orig.call_id else []
        # Anything of this case that reached any sink (a response relayed, a request
        # sent to the wrong place).
        elsewhere = [x for s in env.sinks for x in s.matching(
            lambda x: orig.call_id is not None and x.call_id == orig.call_id
            and via_port(x) not in env.retired_ports) if x not in fwd]

        if finals and orig.method == "INVITE" and finals[0].code >= 300 and not c.closed:
            try:
                c.send(ack_for(data, finals[0]))  # ends sipedge's retransmissions
            except OSError:
                pass
        if c.closed and CLOSE in case.accepted:
            observed = CLOSE
            if finals:
                notes.append(f"{finals[0].code} sent before closing")
        elif finals:
            codes = sorted({m.code for m in finals})
            observed = finals[0].code
            if len(codes) > 1:
                problems.append(f"several final responses {codes}")
            if fwd:
                problems.append("answered AND forwarded")
            if observed in case.accepted:
                problems += check_response(orig, finals[0], case.row)
        elif fwd:
            observed = F
            if F in case.accepted:
                problems += check_forward(inst, orig, fwd[0], case.transport, data, case.row)
        elif any(x.method == orig.method for x in elsewhere):
            observed = "forward to the wrong destination"
            want = route_target(orig) or (HOST, env.sink.port)
            notes.append(f"expected at {want[0]}:{want[1]}")
        elif c.closed:
            observed = CLOSE
        elif waited:
            observed = PEND
        else:
            observed = DROP
        if elsewhere:
            problems.append(f"{len(elsewhere)} message(s) of this case reached a sink "
                            f"unexpectedly, first: {elsewhere[0].start[:60]!r}")
        if stray_requests:
            problems.append(f"request(s) sent back to the client: {stray_requests[0].start[:60]!r}")
        if (case.row.also and case.transport in case.row.also and observed == F):
            cid2 = case.row.also[case.transport]
            if not sink.wait_for(lambda x: x.call_id == cid2, 1.0):
                problems.append(f"the next message on the stream ({cid2}) was not forwarded")
        if observed not in case.accepted:
            problems.insert(0, f"got {observed}, expected {' or '.join(map(str, case.accepted))}")
    finally:
        c.close()
        if catcher:
            catcher.close()
    # Acceptance assertion 2 (and 4 over TCP): the proxy still answers.
    for t in (["udp"] if case.transport == "udp" else ["tcp", "udp"]):
        code = lib.sip_ping(HOST, inst.port, t, timeout=2.0)
        if code != 200:
            problems.append(f"fresh {t.upper()} ping after the case got {code}")
    if inst.bystander is not None:
        try:
            code = lib.ping_on(inst.bystander, timeout=2.0)
        except OSError:
            code = None
        if code != 200:
            problems.append(f"bystander TCP connection ping got {code}")
    return observed, problems, "; ".join(notes)


# ---------------------------------------------------------------- driver

def corpus_cases(tdir, transport, mode, only):
    out = []
    for name, row in EXPECTED.items():
        exp = row.udp if transport == "udp" else row.tcp
        if exp is None:
            continue
        if only and not any(o in name for o in only):
            continue
        out.append(Case(name, row, transport, mode, os.path.join(tdir, name)))
    return out


def check_table_covers_corpus(tdir):
    """Every corpus file must have a row, every row a file: a new file or a
    renamed one must not silently go untested."""
    files = {f for f in os.listdir(tdir) if f.endswith(".dat")}
    files |= {R + f for f in os.listdir(os.path.join(tdir, "rfc5118"))}
    files |= {V + f for f in os.listdir(os.path.join(tdir, "variants"))}
    rows = set(EXPECTED)
    return sorted(files - rows), sorted(rows - files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passes", default="udp,tcp,tcp-bytewise")
    ap.add_argument("--only", action="append", help="substring of file names to run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port-wait", type=float, default=180,
                    help="seconds to wait for 127.0.0.1:5080 (mpart01's Route) to be free")
    ap.add_argument("--timeout", type=float, default=900, help="global bound, seconds")
    ap.add_argument("--proxy", choices=("sipedge", "kamailio"), default="sipedge",
                    help="kamailio: exercise the harness itself against Kamailio "
                         "(bench/kamailio/kamailio-proxy.cfg); many rows will differ")
    args = ap.parse_args()
    lib.raise_on_sigterm()

    tdir = os.path.join(lib.testdata_dir(), "torture")
    if not os.path.isdir(tdir):
        print(f"SKIP: corpus not found at {tdir} (set SIPEDGE_TESTDATA)")
        print("0 passed, 0 failed")
        return 77
    unlisted, missing = check_table_covers_corpus(tdir)
    if args.proxy == "sipedge" and not lib.have_sipedge():
        print(f"SKIP: sipedge binary not found at {lib.sipedge_bin()} (set SIPEDGE_BIN)")
        print("0 passed, 0 failed")
        return 77

    passed = failed = 0

    def report(ok, text):
        nonlocal passed, failed
        print(("PASS " if ok else "FAIL ") + text, flush=True)
        passed += ok
        failed += not ok

    report(not unlisted and not missing,
           f"table covers the corpus (unlisted: {unlisted}, rows without file: {missing})")
    all_cids = set()
    for name in EXPECTED:
        p = os.path.join(tdir, name)
        if os.path.exists(p):
            with open(p, "rb") as f:
                cid = lib.SipMsg(f.read()).call_id
            if cid:
                all_cids.add(cid)

    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    with lib.Harness("torture-env") as henv:
        env = Env(args, henv)
        inst = None
        try:
            with lib.time_bound(args.timeout, "test_torture"):
                for pname in passes:
                    transport = "udp" if pname == "udp" else "tcp"
                    mode = "bytes" if pname.endswith("bytewise") else "whole"
                    n_inst = 0
                    for case in corpus_cases(tdir, transport, mode, args.only):
                        key = txn_key(case.orig)
                        if inst is None or key in inst.keys:
                            if inst is not None:
                                env.retire(inst, report, f"{pname} instance {n_inst}")
                            n_inst += 1
                            t0 = time.monotonic()
                            inst = Instance(env, f"{pname}-{n_inst}")
                            inst.start_secs = time.monotonic() - t0
                            if transport == "tcp":
                                inst.open_bystander()
                        if not case.orig.is_response and env.sink_for(case.orig) is None:
                            print(f"SKIP {case.label}: its Route target "
                                  f"{STRICT_ROUTE[0]}:{STRICT_ROUTE[1]} is busy", flush=True)
                            continue
                        inst.keys.add(key)
                        others = all_cids - {case.orig.call_id}
                        t0 = time.monotonic()
                        try:
                            observed, problems, note = run_case(env, inst, case, others)
                        except (OSError, lib.TestTimeout) as e:
                            observed, problems, note = "error", [f"{type(e).__name__}: {e}"], ""
                        ok = not problems
                        if not ok:
                            inst.h.failed = True
                        text = f"{case.label}: {observed} [{time.monotonic() - t0:.2f}s]"
                        if note:
                            text += f" ({note})"
                        if problems:
                            text += " -- " + "; ".join(problems)
                        report(ok, text)
                    if inst is not None:
                        env.retire(inst, report, f"{pname} instance {n_inst}")
                        inst = None
                    env.finish_all(report)
        except (lib.GlobalTimeout, lib.Terminated) as e:
            report(False, str(e))
        finally:
            if inst is not None:
                inst.h.failed = True
                inst.stop()
            for i, _ in env.retiring:
                i.stop()
            env.close()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
