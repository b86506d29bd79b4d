#!/usr/bin/env python3
"""Writes the seed corpus of fuzz/fuzz_proxy.c into fuzz/corpus/fuzz_proxy/ (or the directory
given): call flows in the harness's input format (see the comment at the top of fuzz_proxy.c),
one file each. Standard library only; run it again after changing the format."""

import os
import struct
import sys

UDP, TCP, TLS = 0, 1, 2
EP_A, EP_B, UP1, UP2, PEER, NAMED = range(6)
CFG_PAIR, CFG_REGISTRAR, CFG_NAMED = 0, 1, 2
BR = b"\x01b0"  # the newest branch sipedge sent
TOK = b"\x01t0"  # the newest flow token in its Record-Route/Path


def msg(worker, proto, src, data):
    h = (worker & 1) | (proto << 1) | (src << 3)
    return bytes([0, h]) + struct.pack("<H", len(data)) + data


def wait(b):
    return bytes([4, b])  # b*b*4 ms


def close(i):
    return bytes([5, i])


def dns(how):
    return bytes([6, how])


def knob(k):
    return bytes([7, k])


def req(method, ruri, via, *, cseq=1, to_tag=None, route=None, extra=b"", body=b"", cl=True,
        call_id=b"seed-1@203.0.113.5", branch=b"z9hG4bKseed1"):
    to = b"<" + ruri + b">" + (b";tag=" + to_tag if to_tag else b"")
    lines = [method + b" " + ruri + b" SIP/2.0",
             b"Via: SIP/2.0/" + via + b";branch=" + branch + b";rport",
             b"Max-Forwards: 70",
             b"From: <sip:alice@example.com>;tag=a1",
             b"To: " + to,
             b"Call-ID: " + call_id,
             b"CSeq: %d " % cseq + method,
             b"Contact: <sip:alice@203.0.113.5:5062>"]
    if route:
        lines.append(b"Route: " + route)
    if extra:
        lines.append(extra)
    if cl:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


OUR_VIA = b"SIP/2.0/UDP 192.0.2.100:5060;branch=" + BR
CALLER_VIA = b"SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bKseed1;rport=5062;received=203.0.113.5"


def resp(code, reason, *, cseq=b"1 INVITE", to_tag=b"b1", vias=(OUR_VIA, CALLER_VIA), to=True,
         extra=b"", body=b""):
    lines = [b"SIP/2.0 %d " % code + reason]
    lines += [b"Via: " + v for v in vias]
    lines.append(b"From: <sip:alice@example.com>;tag=a1")
    if to:
        lines.append(b"To: <sip:bob@example.com>;tag=" + to_tag)
    lines += [b"Call-ID: seed-1@203.0.113.5", b"CSeq: " + cseq]
    if extra:
        lines.append(extra)
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


SDP = (b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
VIA_A = b"UDP 203.0.113.5:5062"
VIA_A_TCP = b"TCP 203.0.113.5:5062"
BOB = b"sip:bob@example.com"


def seeds():
    s = {}
    inv = req(b"INVITE", BOB, VIA_A, body=SDP, extra=b"Content-Type: application/sdp")
    # INVITE, 180, then a 486 without To (issue 10), the ACK, timers run out
    s["invite-486-no-to"] = bytes([CFG_PAIR]) + msg(0, UDP, EP_A, inv) + wait(3) + \
        msg(0, UDP, UP1, resp(180, b"Ringing")) + msg(0, UDP, UP1, resp(486, b"Busy", to=False)) + \
        msg(0, UDP, UP1, resp(486, b"Busy")) + \
        msg(0, UDP, EP_A, req(b"ACK", BOB, VIA_A, to_tag=b"b1")) + wait(120)
    # the response lands on the other worker (hand-over), and a spoofed one from elsewhere
    s["invite-200-handover-spoof"] = bytes([CFG_PAIR]) + msg(0, UDP, EP_A, inv) + \
        msg(1, UDP, EP_B, resp(200, b"OK")) + msg(1, UDP, UP1, resp(200, b"OK", body=SDP)) + \
        msg(0, UDP, UP1, resp(200, b"OK", body=SDP)) + wait(200)
    # over TCP: 200, the ACK and BYE from the SIP Server through our Record-Route token
    inv_tcp = req(b"INVITE", BOB, VIA_A_TCP, body=SDP, extra=b"Content-Type: application/sdp")
    rr = b"<sip:" + TOK + b"@192.0.2.100:5060;transport=tcp;lr>"
    bye = req(b"BYE", b"sip:alice@203.0.113.5:5062;transport=tcp", b"UDP 192.0.2.1:5060",
              to_tag=b"a1", route=rr, cseq=2, branch=b"z9hG4bKbye1")
    s["invite-tcp-token-bye"] = bytes([CFG_PAIR]) + msg(1, TCP, EP_A, inv_tcp) + \
        msg(1, UDP, UP1, resp(200, b"OK", body=SDP, vias=(
            OUR_VIA,
            b"SIP/2.0/TCP 203.0.113.5:5062;branch=z9hG4bKseed1;rport=5062"))) + \
        msg(0, UDP, UP1, bye) + msg(0, UDP, EP_B, bye) + close(0) + msg(1, UDP, UP1, bye) + wait(40)
    # CANCEL before and after the provisional; the 200 to our CANCEL, the 487
    s["invite-cancel"] = bytes([CFG_PAIR]) + msg(0, UDP, EP_A, inv) + \
        msg(0, UDP, EP_A, req(b"CANCEL", BOB, VIA_A)) + msg(0, UDP, UP1, resp(100, b"Trying")) + \
        msg(0, UDP, UP1, resp(200, b"OK", cseq=b"1 CANCEL")) + \
        msg(0, UDP, UP1, resp(487, b"Request Terminated")) + wait(30) + wait(200)
    # smuggling: no Content-Length, the body is a second request, upstream over TCP (backup)
    smug = req(b"OPTIONS", BOB, VIA_A, cl=False,
               body=req(b"INVITE", b"sip:victim@example.com", b"UDP 6.6.6.6",
                        branch=b"z9hG4bKevil"))
    s["udp-no-cl-to-tcp"] = bytes([CFG_PAIR]) + wait(60) + wait(60) + msg(0, UDP, EP_A, smug) + \
        msg(0, UDP, EP_A, smug + b"trailing junk")
    # control bytes
    s["control-bytes"] = bytes([CFG_PAIR]) + \
        msg(0, UDP, EP_A, req(b"OPTIONS", BOB, VIA_A, extra=b"Subject: a\rInjected: b")) + \
        msg(0, TCP, EP_B, req(b"OPTIONS", BOB, VIA_A_TCP, extra=b"Subject: a\x00b")) + \
        msg(0, UDP, EP_A, req(b"OPTIONS", BOB, VIA_A, call_id=b"x\x07y"))
    # probes: time for an OPTIONS to the SIP Server, a spoofed and the real answer
    probe_ok = resp(200, b"OK", cseq=b"1 OPTIONS", vias=(OUR_VIA,))
    s["probe-spoof"] = bytes([CFG_PAIR]) + wait(40) + msg(0, UDP, EP_A, probe_ok) + \
        msg(0, UDP, UP1, probe_ok) + wait(60) + wait(60) + msg(1, UDP, UP2, probe_ok) + wait(100)
    # registrar: REGISTER over TLS, then a call to the AOR from another endpoint
    reg = req(b"REGISTER", b"sip:192.0.2.100", b"TLS 203.0.113.5:5062",
              extra=b"Expires: 600\r\nSupported: outbound", call_id=b"reg-1")
    reg = reg.replace(b"To: <sip:192.0.2.100>", b"To: <sip:alice@example.com>")
    s["registrar-call"] = bytes([CFG_REGISTRAR]) + msg(0, TLS, EP_A, reg) + \
        msg(1, UDP, EP_B, req(b"INVITE", b"sip:alice@example.com", b"UDP 203.0.113.6:40000",
                              body=SDP, call_id=b"call-2")) + \
        msg(0, TLS, EP_A, resp(180, b"Ringing", vias=(
            b"SIP/2.0/TLS 192.0.2.100:5061;branch=" + BR,
            b"SIP/2.0/UDP 203.0.113.6:40000;branch=z9hG4bKseed1"))) + close(0) + wait(200)
    # a SIP Server by name: the lookup parks the request, the answer replays it
    s["named-upstream-dns"] = bytes([CFG_NAMED]) + msg(0, UDP, EP_A, inv) + dns(1) + dns(0x21) + \
        msg(0, UDP, EP_A, inv) + dns(2) + msg(0, TCP, NAMED, resp(100, b"Trying")) + wait(100)
    # draining and failing sends
    s["drain-send-fail"] = bytes([CFG_PAIR]) + knob(2) + msg(0, UDP, EP_A, inv) + knob(3) + \
        msg(1, UDP, EP_B, req(b"MESSAGE", BOB, b"UDP 203.0.113.6:40000")) + knob(1) + wait(200)
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus",
                                                                "fuzz_proxy")
    os.makedirs(out, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(seeds())} seeds in {out}")


if __name__ == "__main__":
    main()
