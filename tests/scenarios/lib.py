"""Helpers for sipedge's wire-level scenario tests and benchmarks (stdlib only).

Everything listens on loopback, every wait is bounded, every process started
here runs in its own process group and is killed by Harness on the way out.

Contents:
  paths ........ repo_root(), sipedge_bin(), testdata_dir(), SIPP_DIR
  time ......... TestTimeout, GlobalTimeout, time_bound(), Deadline, wait_until(),
                 raise_on_sigterm()
  ports ........ free_port(), port_bound()
  processes .... Proc, Harness (temp dir, start/stop, logs dumped on failure)
  SIP .......... build_request(), build_response(), parse_message(),
                 StreamFramer, sip_ping(), SipClient
  peers ........ Sink (a recording UDP+TCP "upstream"), start_dnsmasq()
  proxies ...... start_sipedge(), start_kamailio()
  sipp ......... Sipp (command builder + result parser), sipp_result(),
                 udp_rcvbuf_errors()
  cpu .......... proc_cpu_seconds(), group_cpu_seconds()
"""

import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# ---------------------------------------------------------------- paths

HERE = os.path.dirname(os.path.abspath(__file__))
SIPP_DIR = os.path.join(HERE, "sipp")


def repo_root():
    return os.path.dirname(os.path.dirname(HERE))


def sipedge_bin():
    """$SIPEDGE_BIN, or build/sipedge in the repository."""
    return os.environ.get("SIPEDGE_BIN") or os.path.join(repo_root(), "build", "sipedge")


def testdata_dir():
    """$SIPEDGE_TESTDATA, or ../shared/testdata next to the repository."""
    return os.environ.get("SIPEDGE_TESTDATA") or os.path.normpath(
        os.path.join(repo_root(), "..", "shared", "testdata"))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- time bounds

class TestTimeout(Exception):
    pass


class GlobalTimeout(Exception):
    """Not a TestTimeout: per-step handlers that catch TestTimeout and go on
    with the next step must not swallow the global bound."""


@contextlib.contextmanager
def time_bound(seconds, what="test"):
    """Raises GlobalTimeout in the main thread when the block runs longer
    than `seconds`. A global bound on top of the per-wait timeouts: a hung
    test is turned into a failure (and the Harness around it still cleans
    up)."""
    def on_alarm(signum, frame):
        raise GlobalTimeout(f"{what}: global time bound of {seconds}s exceeded")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Terminated(Exception):
    pass


def raise_on_sigterm():
    """Turns SIGTERM/SIGHUP into an exception, so that `timeout` or a CI
    runner stopping a test still runs every Harness cleanup (the processes
    started here live in their own sessions and would otherwise survive)."""
    def on_term(signum, frame):
        raise Terminated(f"terminated by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)


def run_case(results, name, fn):
    """Runs one test case fn() (its return value is the note), prints
    "PASS name: note" or "FAIL name: error", appends the outcome to results."""
    try:
        note = fn()
        results.append(True)
        print(f"PASS {name}: {note}", flush=True)
    except Exception as e:  # noqa: BLE001 - report and go on
        results.append(False)
        print(f"FAIL {name}: {e}", flush=True)


def run_cases(title, bound, cases):
    """The main() of a scenario test made of independent cases: runs each
    (name, fn) with run_case() under one global time bound, prints
    "N passed, M failed" and returns the exit status (77: no sipedge)."""
    if not have_sipedge():
        print("0 passed, 0 failed (sipedge binary missing)")
        return 77
    raise_on_sigterm()
    results = []
    try:
        with time_bound(bound, title):
            for name, fn in cases:
                run_case(results, name, fn)
    except (GlobalTimeout, Terminated) as e:
        results.append(False)
        print(f"FAIL {e}")
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
    return 0 if all(results) else 1


class Deadline:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def remaining(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def wait_until(pred, timeout, what="condition", proc=None, interval=0.01):
    """Polls pred() until it returns a true value (returned) or `timeout`
    seconds pass (TestTimeout). With proc, fails early if that process dies.
    The interval backs off from 10 ms to 100 ms: this is a readiness check,
    not a sleep."""
    dl = Deadline(timeout)
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and not proc.alive():
            raise ProcessDied(f"{proc.name} exited with {proc.returncode} while waiting for {what}")
        if dl.expired():
            raise TestTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(min(interval, dl.remaining()))
        interval = min(interval * 1.5, 0.1)


# ---------------------------------------------------------------- ports

_handed_out = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()
            return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def bindable(port, host, kinds):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for k in kinds:
            s = socket.socket(fam, socket.SOCK_DGRAM if k == "udp" else socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_port(host="127.0.0.1", kinds=("udp", "tcp")):
    """A port free for every protocol in `kinds` on `host`, chosen below the
    kernel's ephemeral range so that sipp's many client sockets (-t un) and
    outgoing connections can never take it between now and the bind by the
    process it is meant for. Never hands out the same port twice per run."""
    lo_eph, _ = _ephemeral_range()
    lo, hi = 20000, min(lo_eph - 1, 32000)
    if hi <= lo:
        lo, hi = 10000, 19999
    for _ in range(500):
        p = random.randint(lo, hi)
        if p in _handed_out:
            continue
        if bindable(p, host, kinds):
            _handed_out.add(p)
            return p
    raise RuntimeError("no free loopback port found")


def free_port_block(n, host="127.0.0.1", kinds=("udp",)):
    """The first of n consecutive ports, all free like free_port()'s (for
    sipedge --worker-ports BASE: one private port per worker)."""
    lo_eph, _ = _ephemeral_range()
    lo, hi = 20000, min(lo_eph - 1, 32000) - n
    if hi <= lo:
        lo, hi = 10000, 19999 - n
    for _ in range(500):
        p = random.randint(lo, hi)
        block = range(p, p + n)
        if any(q in _handed_out for q in block):
            continue
        if all(bindable(q, host, kinds) for q in block):
            _handed_out.update(block)
            return p
    raise RuntimeError("no block of free loopback ports found")


def port_bound(port, proto="udp", host="127.0.0.1"):
    """True when some process has `port` bound (UDP) or listening (TCP) on
    host or the wildcard address, read from /proc/net: a readiness check that
    sends nothing, usable for sipp (which must not see stray traffic)."""
    v6 = ":" in host
    path = f"/proc/net/{proto}{'6' if v6 else ''}"
    if v6:
        want = {"00000000000000000000000000000000", "00000000000000000000000001000000"}
    else:
        want = {"00000000", "".join(f"{int(x):02X}" for x in reversed(host.split(".")))}
    try:
        with open(path) as f:
            next(f)
            for line in f:
                parts = line.split()
                addr, hport = parts[1].split(":")
                if int(hport, 16) != port or addr not in want:
                    continue
                if proto == "udp" or parts[3] == "0A":  # 0A = TCP_LISTEN
                    return True
    except OSError:
        pass
    return False


# ---------------------------------------------------------------- processes

class ProcessDied(Exception):
    pass


class Proc:
    """A child process in its own process group, output to files in a
    directory. stop() signals the whole group, so helpers it forks die too."""

    def __init__(self, name, argv, workdir, env=None, cwd=None):
        self.name, self.argv, self.workdir = name, [str(a) for a in argv], workdir
        self.out_path = os.path.join(workdir, f"{name}.out")
        self.err_path = os.path.join(workdir, f"{name}.err")
        e = dict(os.environ)
        if env:
            e.update(env)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=err, start_new_session=True, env=e,
                                      cwd=cwd or workdir)
        self.pid = self.p.pid
        self.pgid = self.pid  # start_new_session: the child leads its group
        self.stopped = False

    @property
    def returncode(self):
        return self.p.returncode

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        """Exit status, or TestTimeout."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestTimeout(f"{self.name} did not exit within {timeout}s")

    def _killpg(self, sig):
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def send_signal(self, sig):
        if self.alive():
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals the group, waits up to `timeout`, then SIGKILLs the group.
        Returns the exit status (negative = killed by that signal)."""
        if not self.stopped:
            self.stopped = True
            if self.alive():
                self._killpg(sig)
                try:
                    self.p.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log(f"[harness] {self.name} ignored signal {sig}, killing")
                    self._killpg(signal.SIGKILL)
                    self.p.wait(timeout=5)
            # Children that outlived their leader (kamailio workers) go too.
            self._killpg(signal.SIGKILL)
        return self.p.returncode

    def output(self):
        out = []
        for p in (self.out_path, self.err_path):
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                out.append("")
        return out

    def tail(self, n=25):
        o, e = self.output()
        lines = [f"--- {self.name} (pid {self.pid}, exit {self.returncode}) {self.argv[0]}"]
        if o.strip() and os.path.basename(self.argv[0]) != "sipp":  # sipp's is its screen
            lines += ["  stdout:"] + ["    " + l for l in o.splitlines()[-n:]]
        if e.strip():
            lines += ["  stderr:"] + ["    " + l for l in e.splitlines()[-n:]]
        return "\n".join(lines)


SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|"
                          r"SUMMARY: (Address|Undefined|Leak)")


class Harness:
    """Context manager owning a temp dir and the processes of one test.

    with Harness("udp-udp") as h:
        uas = h.spawn("uas", [...], ready=lambda: port_bound(p))
        ...
    On exit every process is stopped (reverse start order). If the block
    raised, or h.failed was set, the tails of every process log are printed
    and the temp dir is kept; otherwise it is removed (unless
    SIPEDGE_KEEP_TMP=1)."""

    def __init__(self, name, keep=None):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"sipedge-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-")
        self.procs = []
        self.failed = False
        self.keep = keep if keep is not None else os.environ.get("SIPEDGE_KEEP_TMP") == "1"
        self.extra_logs = []  # more files to show on failure (sipp error logs)

    def __enter__(self):
        return self

    def spawn(self, name, argv, ready=None, ready_timeout=10.0, env=None, cwd=None):
        """Starts a process; with `ready` (a callable), polls it until true,
        failing early if the process dies."""
        p = Proc(name, argv, self.dir, env=env, cwd=cwd)
        self.procs.append(p)
        if ready is not None:
            wait_until(ready, ready_timeout, what=f"{name} readiness", proc=p)
        return p

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()

    def dump_logs(self):
        log(f"[harness] {self.name}: logs kept in {self.dir}")
        for p in self.procs:
            log(p.tail())
        for path in self.extra_logs:
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            if lines:
                log(f"--- {path}")
                for l in lines[-25:]:
                    log("    " + l)

    def sanitizer_reports(self):
        """(process name, first ASan/UBSan/LSan line) of every stopped
        sipedge that reported one."""
        return [(p.name, r) for p in self.procs
                if os.path.basename(p.argv[0]) == "sipedge" and (r := sanitizer_report(p))]

    def __exit__(self, et, ev, tb):
        reports = []
        try:
            self.stop_all()
            reports = self.sanitizer_reports()
        finally:
            if et is not None or self.failed or reports:
                if et is not None and et is not KeyboardInterrupt:
                    log(f"[harness] {self.name}: {et.__name__}: {ev}")
                for name, line in reports:
                    log(f"[harness] {self.name}: {name}: {line}")
                self.dump_logs()
            elif not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)
        if reports and et is None:
            # a test whose processes all behaved passes only if sipedge's
            # sanitizers said nothing either
            raise AssertionError(f"sanitizer report from {reports[0][0]}: {reports[0][1]}")
        return False


# ---------------------------------------------------------------- SIP messages

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
           "e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events"}


def canon(name):
    n = name.strip().lower()
    return COMPACT.get(n, n)


def new_branch():
    return "z9hG4bK-" + secrets.token_hex(8)


def new_tag():
    return secrets.token_hex(6)


def build_request(method, ruri, *, via_host, via_port, transport="UDP", branch=None,
                  from_uri="sip:harness@127.0.0.1", to_uri=None, call_id=None, cseq=1,
                  headers=(), body=b"", max_forwards=70, rport=True):
    """A well-formed request (bytes, CRLF, Content-Length always present).
    `headers` is a list of (name, value) added after the standard ones."""
    if isinstance(body, str):
        body = body.encode()
    via = f"SIP/2.0/{transport.upper()} {via_host}:{via_port};branch={branch or new_branch()}"
    if rport:
        via += ";rport"
    lines = [f"{method} {ruri} SIP/2.0",
             f"Via: {via}",
             f"Max-Forwards: {max_forwards}",
             f"From: <{from_uri}>;tag={new_tag()}",
             f"To: <{to_uri or ruri}>",
             f"Call-ID: {call_id or secrets.token_hex(10) + '@harness'}",
             f"CSeq: {cseq} {method}"]
    lines += [f"{n}: {v}" for n, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def build_response(req, code, reason="OK", to_tag=None, headers=(), body=b""):
    """A response to parsed request `req` (a SipMsg): copies Via (all),
    From, To (+tag), Call-ID, CSeq and Record-Route, per RFC 3261 §8.2.6."""
    lines = [f"SIP/2.0 {code} {reason}"]
    for n, v in req.headers:
        c = canon(n)
        if c == "to" and to_tag and ";tag=" not in v:
            v = f"{v};tag={to_tag}"
        if c in ("via", "from", "to", "call-id", "cseq", "record-route"):
            lines.append(f"{n}: {v}")
    lines += [f"{n}: {v}" for n, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class SipMsg:
    """A leniently parsed SIP message: start line, headers as (name, value)
    pairs with folding undone, body. For inspecting what a proxy sent."""

    def __init__(self, raw):
        self.raw = raw
        head, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            head, sep, body = raw.partition(b"\n\n")
        self.body = body
        text = head.decode("utf-8", "replace")
        lines = re.split(r"\r?\n", text)
        self.start = lines[0] if lines else ""
        self.headers = []
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + line.strip())
            elif ":" in line:
                n, v = line.split(":", 1)
                self.headers.append((n.strip(), v.strip()))
        parts = self.start.split(" ", 2)
        self.is_response = self.start.startswith("SIP/")
        self.code = None
        self.method = None
        self.ruri = None
        if self.is_response and len(parts) >= 2 and parts[1].isdigit():
            self.code = int(parts[1])
        elif not self.is_response and len(parts) >= 2:
            self.method, self.ruri = parts[0], parts[1]

    def all(self, name):
        c = canon(name)
        return [v for n, v in self.headers if canon(n) == c]

    def get(self, name, default=None):
        v = self.all(name)
        return v[0] if v else default

    def values(self, name):
        """All comma-separated values of a header (Via, Route, Record-Route),
        splitting outside quotes and <> / [] brackets."""
        out = []
        for v in self.all(name):
            cur, depth, quoted = "", 0, False
            for ch in v:
                if ch == '"':
                    quoted = not quoted
                elif not quoted and ch in "<[":
                    depth += 1
                elif not quoted and ch in ">]":
                    depth -= 1
                if ch == "," and not quoted and depth <= 0:
                    out.append(cur.strip())
                    cur = ""
                else:
                    cur += ch
            if cur.strip():
                out.append(cur.strip())
        return out

    @property
    def call_id(self):
        return self.get("call-id")

    @property
    def cseq_method(self):
        v = self.get("cseq", "")
        p = v.split()
        return p[1] if len(p) >= 2 else None

    def __repr__(self):
        return f"<SipMsg {self.start[:60]!r}>"


def parse_message(raw):
    return SipMsg(raw)


VIA_RE = re.compile(r"^\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+(\[[^\]]+\]|[^\s;:]+)(?::(\d+))?(.*)$", re.S)


def parse_via(value):
    """(transport, host, port or None, params dict) from one Via value, or None."""
    m = VIA_RE.match(value)
    if not m:
        return None
    params = {}
    for p in m.group(4).split(";")[1:]:
        k, _, v = p.strip().partition("=")
        params[k.lower()] = v
    return m.group(1).upper(), m.group(2), int(m.group(3)) if m.group(3) else None, params


CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\s]*)[ \t]*\r?$", re.I | re.M)


class StreamFramer:
    """Splits a SIP byte stream into messages by Content-Length (RFC 3261
    §18.3). For reading what a proxy sends us over TCP, which is
    well-formed; a message without Content-Length is taken as bodiless."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            # Keep-alive CRLFs (RFC 5626) between messages.
            self.buf = self.buf.lstrip(b"\r\n")
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return out
            head = self.buf[:i + 2]
            m = CL_RE.search(head)
            n = int(m.group(1)) if m and m.group(1).isdigit() else 0
            end = i + 4 + n
            if len(self.buf) < end:
                return out
            out.append(self.buf[:end])
            self.buf = self.buf[end:]


class SipClient:
    """One client socket (UDP, or a TCP connection) to a SIP server, that
    collects every message it receives. recv_msg() returns parsed messages."""

    def __init__(self, host, port, transport="udp", bind=None, timeout=5.0):
        self.host, self.port, self.transport = host, port, transport.lower()
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.framer = StreamFramer()
        self.pending = []
        self.closed = False
        if self.transport == "udp":
            self.sock = socket.socket(fam, socket.SOCK_DGRAM)
            self.sock.bind(bind or (host if fam == socket.AF_INET else "::1", 0))
        else:
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if bind:
                self.sock.bind(bind)
            self.sock.settimeout(timeout)
            self.sock.connect((host, port))
        self.local = self.sock.getsockname()[:2]

    def send(self, data):
        if self.transport == "udp":
            self.sock.sendto(data, (self.host, self.port))
        else:
            self.sock.sendall(data)

    def send_bytewise(self, data):
        """TCP: one byte per send() (TCP_NODELAY is on). Returns False when
        the peer closed the connection part way."""
        for i in range(len(data)):
            try:
                self.sock.send(data[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                return False
        return True

    def _fill(self, timeout):
        """Reads once, waiting up to timeout. False on timeout/closed."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            if self.transport == "udp":
                data, _ = self.sock.recvfrom(65535)
                self.pending.append(data)
            else:
                data = self.sock.recv(65535)
                if not data:
                    self.closed = True
                    return False
                self.pending += self.framer.feed(data)
            return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ConnectionAbortedError):
            self.closed = True
            return False

    def recv_msg(self, timeout):
        """Next message received (SipMsg) or None within timeout."""
        dl = Deadline(timeout)
        while not self.pending:
            if not self._fill(dl.remaining()) and (self.closed or dl.expired()):
                return None
        return SipMsg(self.pending.pop(0))

    def wait_closed(self, timeout):
        """TCP: True when the peer closes (EOF or RST) within timeout.
        Messages arriving meanwhile are kept in self.pending."""
        dl = Deadline(timeout)
        while not self.closed and not dl.expired():
            self._fill(dl.remaining())
        return self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def options_request(host, port, transport, local, call_id=None, ruri=None):
    lhost, lport = local
    vh = f"[{lhost}]" if ":" in lhost else lhost
    th = f"[{host}]" if ":" in host else host
    return build_request("OPTIONS", ruri or f"sip:{th}:{port}", via_host=vh, via_port=lport,
                         transport=transport.upper(), call_id=call_id,
                         from_uri=f"sip:ping@{vh}", headers=[("Accept", "application/sdp")])


def ping_on(client, timeout=2.0, ruri=None):
    """Sends OPTIONS (addressed to the server itself, no user part) on an
    existing SipClient and returns the final status code, or None.
    Messages not belonging to this ping stay in client.pending."""
    cid = "ping-" + secrets.token_hex(8)
    client.send(options_request(client.host, client.port, client.transport, client.local,
                                call_id=cid, ruri=ruri))
    dl = Deadline(timeout)
    keep = []
    try:
        while not dl.expired():
            m = client.recv_msg(dl.remaining())
            if m is None:
                return None
            if m.call_id != cid:
                keep.append(m.raw)
                continue
            if m.code is not None and m.code >= 200:
                return m.code
        return None
    finally:
        client.pending = keep + client.pending


def udp_request(host, port, method, ruri, call_id, timeout=3.0):
    """Sends one request from a fresh UDP endpoint socket; returns its final
    response (SipMsg) or None when none came within timeout."""
    c = SipClient(host, port, "udp")
    hh = f"[{host}]" if ":" in host else host
    try:
        c.send(build_request(method, ruri, via_host=hh, via_port=c.local[1], call_id=call_id,
                             from_uri=f"sip:caller@{hh}"))
        dl = Deadline(timeout)
        while not dl.expired():
            m = c.recv_msg(dl.remaining())
            if m is None:
                break
            if m.is_response and m.code >= 200:
                return m
        return None
    finally:
        c.close()


def sip_ping(host, port, transport="udp", timeout=2.0, ruri=None):
    """OPTIONS ping over a fresh UDP socket or TCP connection: the final
    status code (int) or None (no answer, refused, closed)."""
    try:
        c = SipClient(host, port, transport, timeout=timeout)
    except OSError:
        return None
    try:
        return ping_on(c, timeout, ruri)
    except OSError:
        return None
    finally:
        c.close()


# ---------------------------------------------------------------- recording upstream

class Sink:
    """A fake upstream SIP server on one loopback port, UDP and TCP both
    (a proxy may switch a large request to TCP, RFC 3261 §18.1.1). It records
    every message that arrives and answers nothing, except OPTIONS whose
    Request-URI is the sink itself: those are the proxy's upstream health
    probes (ARCHITECTURE §5), and leaving them unanswered would take the
    upstream out of service and turn every forward into a 503.
    Set answer_probes=False for a completely silent peer."""

    def __init__(self, host="127.0.0.1", port=None, answer_probes=True, udp=True):
        self.host = host
        self.port = port or free_port(host)
        self.answer_probes = answer_probes
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.msgs = []  # (transport, peer, SipMsg)
        self.probes = 0
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.udp = None
        if udp:
            self.udp = socket.socket(fam, socket.SOCK_DGRAM)
            self.udp.bind((host, self.port))
        self.tcp = socket.socket(fam, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(64)
        self.stopping = False
        self.conns = []
        self.threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        if self.udp:
            self.threads.append(threading.Thread(target=self._udp_loop, daemon=True))
        for t in self.threads:
            t.start()

    @property
    def uri(self):
        return f"sip:{self.host}:{self.port}"

    def _is_probe(self, m):
        if m.method != "OPTIONS" or not m.ruri:
            return False
        r = m.ruri.split(";")[0]
        h = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 in brackets
        return r in (f"sip:{h}:{self.port}", f"sip:{h}")

    def _record(self, transport, peer, raw, reply):
        m = SipMsg(raw)
        m.transport, m.peer = transport, peer
        if self.answer_probes and self._is_probe(m):
            self.probes += 1
            try:
                reply(build_response(m, 200, "OK"))
            except OSError:
                pass
            return
        with self.cond:
            self.msgs.append((transport, peer, m))
            self.cond.notify_all()

    def _udp_loop(self):
        while not self.stopping:
            try:
                data, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            self._record("udp", peer, data, lambda b, p=peer: self.udp.sendto(b, p))

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, peer = self.tcp.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._conn_loop, args=(c, peer), daemon=True).start()

    def _conn_loop(self, c, peer):
        fr = StreamFramer()
        while not self.stopping:
            try:
                data = c.recv(65535)
            except OSError:
                return
            if not data:
                return
            for raw in fr.feed(data):
                self._record("tcp", peer, raw, c.sendall)

    def clear(self):
        with self.cond:
            self.msgs.clear()

    def wait_for(self, pred, timeout):
        """First recorded SipMsg satisfying pred, waiting up to timeout."""
        dl = Deadline(timeout)
        with self.cond:
            while True:
                for _, _, m in self.msgs:
                    if pred(m):
                        return m
                if dl.expired():
                    return None
                self.cond.wait(dl.remaining())

    def matching(self, pred):
        with self.cond:
            return [m for _, _, m in self.msgs if pred(m)]

    def close(self):
        self.stopping = True
        for s in [x for x in (self.udp, self.tcp) if x] + self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class SinkAnswerer:
    """Answers the requests a Sink records, like a SIP Server would: each
    one whose method is in `codes` (method -> status) gets that response,
    sent from the sink's UDP socket to the top Via's sent-by (RFC 3261
    §18.2.2). Stop with stop()."""

    def __init__(self, sink, codes):
        self.sink, self.codes, self.done, self.stopping = sink, dict(codes), set(), False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        def todo(m):
            return m.method in self.codes and id(m) not in self.done
        while not self.stopping:
            self.sink.wait_for(todo, 0.2)
            for m in self.sink.matching(todo):
                self.done.add(id(m))
                v = parse_via(m.values("via")[0])
                code = self.codes[m.method]
                try:
                    self.sink.udp.sendto(build_response(m, code, "OK" if code == 200 else "Busy",
                                                        to_tag=new_tag()),
                                         (v[1].strip("[]"), v[2]))
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        self.t.join(2)


# ---------------------------------------------------------------- proxies

def have_sipedge():
    b = sipedge_bin()
    return os.path.isfile(b) and os.access(b, os.X_OK)


def start_sipedge(h, listens, upstream=None, registrar=False, workers=2, extra=(),
                  name="sipedge", ready_timeout=15.0):
    """Starts sipedge under Harness h. `listens`: list of (proto, host, port).
    Ready when an OPTIONS to itself is answered 200 on every UDP/TCP listener.
    Returns the Proc with .listens and .bin set."""
    argv = [sipedge_bin(), "-w", str(workers)]
    for proto, host, port in listens:
        hh = f"[{host}]" if ":" in host else host
        argv += ["-l", f"{proto}:{hh}:{port}"]
    if upstream:
        argv += ["-u", upstream]
    if registrar:
        argv.append("--registrar")
    argv += list(extra)
    if os.environ.get("SIPEDGE_LOG_LEVEL"):
        argv += ["--log-level", os.environ["SIPEDGE_LOG_LEVEL"]]

    def ready():
        # Bound/listening first (cheap, sends nothing), then answering.
        socks = [(proto, host, port) for proto, host, port in listens if proto in ("udp", "tcp")]
        return (all(port_bound(port, proto, host) for proto, host, port in socks) and
                all(sip_ping(host, port, proto, timeout=0.5) == 200
                    for proto, host, port in socks))
    p = h.spawn(name, argv, ready=ready, ready_timeout=ready_timeout)
    p.listens = list(listens)
    return p


def sanitizer_report(proc):
    """The first ASan/UBSan/LSan line in the process's stderr, or None."""
    _, err = proc.output()
    for line in err.splitlines():
        if SANITIZER_RE.search(line):
            return line.strip()
    return None


KAMAILIO_CFG = os.path.join(repo_root(), "bench", "kamailio", "kamailio-proxy.cfg")


def start_kamailio(h, port, upstream, children=2, host="127.0.0.1", registrar=False,
                   tcp=False, name="kamailio", shm_mb=64, pkg_mb=8, mem_manager=None):
    """Starts Kamailio with bench/kamailio/kamailio-proxy.cfg in the
    foreground (-DD -E: the creator stays attached, logs to stderr), in its
    own process group so stop() takes every child. `upstream` is a SIP URI
    (sip:host:port[;transport=tcp]). Ready when it answers an OPTIONS to
    itself with 200."""
    rundir = h.path(f"{name}-run")
    os.makedirs(rundir, exist_ok=True)
    argv = ["kamailio", "-f", KAMAILIO_CFG, "-DD", "-E", "-m", shm_mb, "-M", pkg_mb,
            "-n", children, "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"),
            "-w", rundir, "-a", "no",
            "-l", f"udp:{host}:{port}",
            "-A", f'UPSTREAM="{upstream}"']
    if mem_manager:  # fm, qm or tlsf, for shm (-x) and pkg (-X)
        argv += ["-x", mem_manager, "-X", mem_manager]
    if tcp:
        argv += ["-l", f"tcp:{host}:{port}", "-A", "WITH_TCP"]
    if registrar:
        argv += ["-A", "WITH_REGISTRAR"]

    def ready():
        return port_bound(port, "udp", host) and sip_ping(host, port, "udp", timeout=0.5) == 200
    p = h.spawn(name, argv, ready=ready, ready_timeout=20.0)
    p.listens = [("udp", host, port)] + ([("tcp", host, port)] if tcp else [])
    return p


def start_dnsmasq(h, port, answer="127.0.0.2", host="127.0.0.1", name="dnsmasq", extra=()):
    """A loopback DNS server for RFC 3263 lookups: every A query is answered
    with `answer`, every other type (NAPTR, SRV, AAAA) with NODATA unless
    `extra` dnsmasq options add records (--srv-host=...), nothing is
    forwarded anywhere (--no-resolv, --local=/#/). Foreground, no pid file,
    no config file. Ready when its UDP port is bound."""
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--port={port}", f"--listen-address={host}", "--bind-interfaces",
            f"--address=/#/{answer}", "--local=/#/", "--pid-file=", "--log-facility=-",
            *extra]
    return h.spawn(name, argv, ready=lambda: port_bound(port, "udp", host))


# ---------------------------------------------------------------- sipp

SIPP_BUFF_SIZE = 2 * 1024 * 1024  # capped by net.core.rmem_max/wmem_max


def udp_rcvbuf_errors():
    """Host-wide count of UDP datagrams dropped because a receive buffer was
    full (/proc/net/snmp Udp RcvbufErrors): a reason for failed calls that
    is the load generator's, not the proxy's."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


class Sipp:
    """Builds a sipp command line whose statistics and error logs land in the
    harness dir, runs it in the foreground (-nostdin), and reads the result."""

    def __init__(self, h, name, scenario, local_port=None, transport="u1", host="127.0.0.1",
                 remote=None, rsa=None, calls=None, rate=None, keys=None, extra=()):
        self.h, self.name = h, name
        self.stat = h.path(f"{name}_stat.csv")
        self.err = h.path(f"{name}_errors.log")
        self.screen = h.path(f"{name}_screen.log")
        self.local_port = local_port
        scen = scenario if os.path.isabs(scenario) else os.path.join(SIPP_DIR, scenario)
        if transport.startswith("t"):
            scen = self._without_timewait(scen)
        # -buff_size: sipp's default socket buffers are 64 KB; a sipp that the
        # scheduler stalls for a moment (a loaded 2-core host) then loses
        # datagrams in the kernel and fails calls for no fault of the proxy.
        a = ["sipp", "-sf", scen, "-i", host, "-t", transport, "-nostdin",
             "-buff_size", str(SIPP_BUFF_SIZE),
             "-trace_stat", "-stf", self.stat, "-fd", "1",
             "-trace_err", "-error_file", self.err,
             "-trace_screen", "-screen_file", self.screen]
        if os.environ.get("SIPEDGE_SIPP_TRACE") == "1":  # debugging: every message
            a += ["-trace_msg", "-message_file", h.path(f"{name}_messages.log")]
        # Always an explicit port: sipp's default is 5060 when free, where
        # stray replies of other tests (RFC 3261 §18.2.2: a Via without port
        # means 5060) would land and count as unexpected messages.
        self.local_port = local_port = local_port or free_port(host)
        a += ["-p", str(local_port)]
        if calls is not None:
            a += ["-m", str(calls)]
        if rate is not None:
            a += ["-r", str(rate)]
        if rsa:
            a += ["-rsa", rsa]
        for k, v in (keys or {}).items():
            a += ["-key", k, str(v)]
        a += [str(x) for x in extra]
        if remote:
            a.append(remote)
        self.argv = a
        h.extra_logs += [self.err, self.screen]
        self.proc = None

    def _without_timewait(self, scen):
        """Over TCP, drop the scenario's <timewait>: it only exists to answer
        UDP retransmissions, and sipp counts a call whose TCP connection the
        peer closes during timewait as failed (FailedTcpClosed)."""
        with open(scen) as f:
            text = f.read()
        stripped = re.sub(r"<timewait[^>]*/>", "", text)
        if stripped == text:
            return scen
        out = self.h.path(f"{self.name}_{os.path.basename(scen)}")
        with open(out, "w") as f:
            f.write(stripped)
        return out

    def start_uas(self, ready_timeout=10.0):
        """Starts sipp as a server; ready when its port is bound/listening."""
        proto = "tcp" if self.argv[self.argv.index("-t") + 1].startswith("t") else "udp"
        host = self.argv[self.argv.index("-i") + 1]
        self.proc = self.h.spawn(self.name, self.argv,
                                 ready=lambda: port_bound(self.local_port, proto, host),
                                 ready_timeout=ready_timeout)
        return self.proc

    def run(self, timeout):
        """Runs to completion (bounded by timeout); returns sipp_result()."""
        self.proc = self.h.spawn(self.name, self.argv)
        try:
            self.proc.wait(timeout)
        except TestTimeout:
            self.proc.stop(signal.SIGUSR1, timeout=5)  # sipp: dump stats and quit
            raise
        return self.result()

    def result(self):
        return sipp_result(self.proc.returncode if self.proc else None, self.stat, self.err)


def sipp_result(rc, stat_path, err_path):
    """Parses sipp's final -trace_stat row and -trace_err log into a dict:
    rc, created, successful, failed, retransmissions, unexpected (entries of
    the error log that are not mere warnings), warnings, errors (first
    lines of the unexpected ones)."""
    r = {"rc": rc, "created": None, "successful": None, "failed": None,
         "retransmissions": None, "outof_call": None, "unexpected": 0, "warnings": 0,
         "errors": []}
    try:
        with open(stat_path, encoding="utf-8", errors="replace") as f:
            rows = [l.rstrip("\n").split(";") for l in f if l.strip()]
        if len(rows) >= 2:
            head, last = rows[0], rows[-1]
            col = {n: i for i, n in enumerate(head)}

            def v(n):
                i = col.get(n)
                try:
                    return int(last[i]) if i is not None else None
                except ValueError:
                    return None
            r["created"] = v("TotalCallCreated")
            r["successful"] = v("SuccessfulCall(C)")
            r["failed"] = v("FailedCall(C)")
            r["retransmissions"] = v("Retransmissions(C)")
            r["outof_call"] = v("OutOfCallMsgs(C)")
    except OSError:
        pass
    try:
        with open(err_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        # sipp's error log: "<date>\t<time>\t<epoch>: <text>" per event, the
        # text possibly spanning lines (the offending message), entries not
        # always newline-separated. Count the entries.
        parts = re.split(r"\d{4}-\d\d-\d\d\s+[\d:.]+\s+\d+\.\d+:\s*", text)
        entries = [p.strip().splitlines()[0] if p.strip() else "" for p in parts[1:]]
        # Benign: sipp's own scheduling watchdog (a loaded machine), and a
        # retransmission reaching a call that already completed successfully.
        # -aa answering an out-of-call OPTIONS (sipedge's upstream health probe).
        benign = re.compile(r"^Overload warning|^Dead call .*\(successful\)|"
                            r"^Automatic response mode for an unexpected")
        bad = [e for e in entries if not benign.search(e)]
        r["unexpected"] = len(bad)
        r["warnings"] = len(entries) - len(bad)
        r["errors"] = [e[:200] for e in bad[:5]]
    except OSError:
        pass
    return r


# ---------------------------------------------------------------- cpu accounting

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    # comm may contain spaces and parens: split after the last ')'.
    return s[s.rfind(")") + 2:].split()


def proc_cpu_seconds(pid):
    """utime+stime of one process, all its threads included (seconds)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK


def group_members(pgid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if int(_stat_fields(d)[2]) == pgid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            continue
    return out


def group_cpu_seconds(pgid):
    """utime+stime summed over every live process of a process group (all of
    Kamailio's forked children), plus cutime+cstime of the leader for
    children it already reaped. Returns (seconds, number of processes)."""
    total, n = 0.0, 0
    for pid in group_members(pgid):
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / CLK_TCK
        if pid == pgid:
            total += (int(f[13]) + int(f[14])) / CLK_TCK
        n += 1
    return total, n
