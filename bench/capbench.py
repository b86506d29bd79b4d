"""Capacity benchmark machinery shared by bench/capacity and bench/run
(Python 3 standard library only).

  CpuQuota ........ a cgroup (v2 cpu.max or v1 cpu.cfs_quota_us) capping the
                    proxy at a share of one core; every process of the proxy
                    (Kamailio's forked children too) is started inside it
  WORKLOADS ....... udp, tcp, phones (calls to registered TLS phones), storm
                    (TLS registration storm), hold (idle registered TLS phones)
  start_proxy() ... sipedge or Kamailio (bench/kamailio/kamailio-edge.cfg)
                    configured for a workload, pinned with taskset
  run_step() ...... one sipload run against a fresh proxy: pass/fail, the
                    proxy's CPU time over the measured window, latencies
  search() ........ RFC 7502 §6 style: the highest rate held for --hold
                    seconds with no failed call (bracketed by short probes)
  fixed_rate(), storm_cpu(), memory_per_phone(), udp_floor(), tls_floor()

A step passes when sipload says ok (no failed call or registration, none not
started, no phone lost), the generator kept up (`generator_behind` false),
the achieved rate is within 3 % of the offered one, and the p99 setup (or
registration) latency is at most 500 ms (a queue that keeps growing is not
a held rate). A step where only
the generator fell behind is reported as a generator limit, not as the
proxy's capacity.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "scenarios"))
import lib  # noqa: E402

HOST = "127.0.0.1"
KAMAILIO_CFG = os.path.join(HERE, "kamailio", "kamailio-edge.cfg")
PROXIES = ("sipedge", "kamailio")


def build_dir():
    """$SIPEDGE_BUILD, or the directory of $SIPEDGE_BIN, or build/."""
    if os.environ.get("SIPEDGE_BUILD"):
        return os.environ["SIPEDGE_BUILD"]
    return os.path.dirname(lib.sipedge_bin())


def tool(name):
    return os.path.join(build_dir(), name)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cgroup quota

def _mounts():
    with open("/proc/mounts") as f:
        return [l.split() for l in f]


def _cgroup_v2_root():
    """The cgroup2 mount whose controllers include cpu, or None."""
    for m in _mounts():
        if m[2] == "cgroup2":
            try:
                with open(os.path.join(m[1], "cgroup.controllers")) as f:
                    if "cpu" in f.read().split():
                        return m[1]
            except OSError:
                continue
    return None


def _cgroup_v1_cpu():
    for m in _mounts():
        if m[2] == "cgroup" and "cpu" in m[3].split(","):
            return m[1]
    return None


class CpuQuota:
    """A child cgroup allowing `share` of one CPU (0.25 = a quarter of a
    core) every `period_us`. A short period (10 ms) keeps each throttled
    stall short, so that a proxy at its quota pauses for at most 7.5 ms at a
    time rather than 75 ms (which would overflow socket buffers and turn a
    CPU limit into a loss test). cgroup v2 (cpu.max) when the cpu controller
    is on the unified hierarchy, else v1 (cpu.cfs_quota_us)."""

    def __init__(self, share, period_us=10000, name=None):
        self.share, self.period_us = share, period_us
        self.quota_us = max(1000, int(share * period_us)) if share else None
        name = name or f"sipedge-bench-{os.getpid()}-{'q' if share else 'free'}"
        v2 = _cgroup_v2_root()
        if v2:
            self.version = 2
            try:
                with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
                    f.write("+cpu")
            except OSError:
                pass
            self.path = os.path.join(v2, name)
        else:
            v1 = _cgroup_v1_cpu()
            if not v1:
                raise OSError("no cgroup cpu controller (neither v2 cpu.max nor v1 cpu)")
            self.version = 1
            self.path = os.path.join(v1, name)
        os.makedirs(self.path, exist_ok=True)
        # The highest weight: when the proxy wants its quota it gets it ahead
        # of whatever else runs on the host (the quota is a ceiling, not a
        # guarantee); the generator runs at nice -19 for the same reason.
        if self.version == 2:
            self._write("cpu.max", f"{self.quota_us or 'max'} {self.period_us}")
            self._write("cpu.weight", "10000")
        else:
            self._write("cpu.cfs_period_us", str(self.period_us))
            self._write("cpu.cfs_quota_us", str(self.quota_us or -1))
            self._write("cpu.shares", "262144")

    def _write(self, fname, value):
        with open(os.path.join(self.path, fname), "w") as f:
            f.write(value)

    def describe(self):
        if not self.share:
            return f"cgroup v{self.version}, no quota, highest weight"
        knob = "cpu.max" if self.version == 2 else "cpu.cfs_quota_us/cpu.cfs_period_us"
        return (f"cgroup v{self.version} {knob} = {self.quota_us}/{self.period_us} us "
                f"({self.share:g} of one core), highest weight")

    def wrap(self, argv):
        """argv run inside this cgroup: the shell moves itself in, then execs
        (same PID), so every process the proxy forks is born inside."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path] + list(argv)

    def adopt_group(self, pgid):
        """Moves every process of the group into the cgroup (a no-op for
        those already inside: belt and braces for forked children)."""
        for pid in lib.group_members(pgid):
            try:
                self._write("cgroup.procs", str(pid))
            except OSError:
                pass

    def members(self):
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def throttled(self):
        """(periods, throttled periods) so far."""
        st = {}
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    k, v = line.split()
                    st[k] = int(v)
        except (OSError, ValueError):
            pass
        return st.get("nr_periods", 0), st.get("nr_throttled", 0)

    def close(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)  # the last processes are still exiting


# ---------------------------------------------------------------- workloads

class Workload:
    def __init__(self, key, title, unit, start_per_core, max_per_core):
        self.key, self.title, self.unit = key, title, unit
        self.start_per_core = start_per_core  # first probe, per quota-core
        self.max_per_core = max_per_core


WORKLOADS = {
    "udp": Workload("udp", "UDP calls", "calls/s", 12000, 200000),
    "tcp": Workload("tcp", "TCP calls", "calls/s", 8000, 200000),
    "phones": Workload("phones", "calls to registered TLS phones", "calls/s", 8000, 200000),
    "storm": Workload("storm", "TLS registration storm", "registrations/s", 2000, 50000),
}
CALL_WORKLOADS = ("udp", "tcp", "phones")


class Certs:
    def __init__(self, d):
        self.dir = d
        self.chain = os.path.join(d, "server-chain.crt")
        self.key = os.path.join(d, "server.key")
        self.ca = os.path.join(d, "ca.crt")


def devcerts(path=None):
    """The development certificates (scripts/gen-devcerts.sh), made if missing."""
    path = path or os.path.join(build_dir(), "devcerts")
    subprocess.run([os.path.join(ROOT, "scripts", "gen-devcerts.sh"), path], check=True)
    return Certs(path)


class Ports:
    def __init__(self):
        self.sip = lib.free_port(HOST)                    # UDP or TCP calls in
        self.tls = lib.free_port(HOST, kinds=("tcp",))    # phones connect here
        self.uas = lib.free_port(HOST)                    # sipload's UAS (upstream)


# sipedge runs with its defaults but for the listeners, the SIP Server and
# the certificates: OPTIONS probes every 5 s (a stand-in answers the first,
# start_proxy), 1,048,576 transactions and 1 GB per worker (a UDP call holds
# two for 32 s after it ends, RFC 3261 Timers J and L: room for ~16,000
# calls/s per worker held).


def _sipedge_argv(wl, ports, certs, workers):
    a = [lib.sipedge_bin(), "-w", str(workers), "--log-level", "warn"]
    up = f"sip:{HOST}:{ports.uas};transport="
    if wl == "udp":
        a += ["-l", f"udp:{HOST}:{ports.sip}", "-u", up + "udp"]
    elif wl == "tcp":
        a += ["-l", f"tcp:{HOST}:{ports.sip}", "-u", up + "tcp"]
    else:
        a += ["-l", f"udp:{HOST}:{ports.sip}", "-l", f"tls:{HOST}:{ports.tls}",
              "--tls-cert", certs.chain, "--tls-key", certs.key, "--tls-ca", certs.ca]
        a += ["-u", up + "udp"] if wl == "storm" else ["--registrar"]
    return a


def _kamailio_argv(wl, ports, certs, workers, rundir, shm_mb):
    a = ["kamailio", "-f", KAMAILIO_CFG, "-DD", "-E", "-a", "no", "-m", str(shm_mb),
         "-M", "16", "-x", "tlsf", "-X", "tlsf", "-n", str(workers),
         "-Y", rundir, "-P", os.path.join(rundir, "kamailio.pid"), "-w", rundir,
         "-l", f"udp:{HOST}:{ports.sip}", "-A", f"TCP_CHILDREN={workers}"]
    up = f"sip:{HOST}:{ports.uas}"
    if wl == "tcp":
        a += ["-l", f"tcp:{HOST}:{ports.sip}", "-A", "WITH_TCP", "-A",
              f'UPSTREAM="{up};transport=tcp"']
    elif wl == "udp":
        a += ["-A", f'UPSTREAM="{up}"']
    else:
        a += ["-l", f"tls:{HOST}:{ports.tls}", "-A", "WITH_TLS",
              "-A", f'TLS_CERT="{certs.chain}"', "-A", f'TLS_KEY="{certs.key}"',
              "-A", f'TLS_CA="{certs.ca}"']
        a += ["-A", f'UPSTREAM="{up}"'] if wl == "storm" else ["-A", "WITH_REGISTRAR"]
    return a


def start_proxy(h, proxy, wl, ports, certs, cpus, workers=1, quota=None, shm_mb=512):
    """Starts `proxy` for workload `wl` under Harness h, pinned to `cpus`
    (taskset) and inside `quota` (a CpuQuota) when given. Ready when it
    answers an OPTIONS to itself."""
    if proxy == "sipedge":
        argv = _sipedge_argv(wl, ports, certs, workers)
    else:
        rundir = h.path("kamailio-run")
        os.makedirs(rundir, exist_ok=True)
        argv = _kamailio_argv(wl, ports, certs, workers, rundir, shm_mb)
    argv = ["taskset", "-c", cpus] + argv
    if quota:
        argv = quota.wrap(argv)
    ping = ("tcp" if proxy == "sipedge" and wl == "tcp" else "udp", ports.sip)
    # sipedge probes its SIP Server at once: a stand-in on the UAS port
    # answers that first probe (sipload's UAS starts only with sipload), and
    # the next comes 5 s later, when sipload's UAS answers
    stand_in = None
    if proxy == "sipedge" and wl in ("udp", "tcp", "storm"):
        stand_in = lib.Sink(HOST, port=ports.uas, udp=wl != "tcp")

    def ready():
        return (lib.port_bound(ping[1], ping[0], HOST) and
                lib.sip_ping(HOST, ping[1], ping[0], timeout=0.5) == 200 and
                (stand_in is None or stand_in.probes > 0))
    try:
        p = h.spawn(proxy, argv, ready=ready, ready_timeout=30.0)
    finally:
        if stand_in:
            stand_in.close()
    if quota:
        quota.adopt_group(p.pgid)
    return p


# ---------------------------------------------------------------- measurement

class CpuSampler:
    """Samples the CPU time of a process group (utime+stime of every member,
    /proc) every `interval` seconds, with monotonic timestamps, so the time
    spent inside sipload's measured window can be read off afterwards."""

    def __init__(self, pgid, interval=0.1):
        self.pgid, self.interval = pgid, interval
        self.samples = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                break
        self.sample()

    def sample(self):
        cpu, _ = lib.group_cpu_seconds(self.pgid)
        self.samples.append((time.monotonic(), cpu))

    def stop(self):
        self._stop.set()
        self._t.join()

    def at(self, t):
        """CPU seconds at time t, interpolated between samples."""
        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0)
        return s[-1][1]


def pss_kib(pgid):
    """Proportional set size summed over the group (KiB): shared memory
    (Kamailio's shm, mapped by every child) is counted once in total."""
    total = 0
    for pid in lib.group_members(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


GEN_PREFIX = ["nice", "-n", "-19"]  # ahead of other work on the generator's CPU


def sipload_argv(wl, ports, certs, rate, duration, gen_cpus, phones=500):
    """sipload's command line for workload wl at `rate` for `duration` s."""
    a = GEN_PREFIX + [tool("sipload")]
    px = f"{HOST}:{ports.sip}"
    if wl in ("udp", "tcp"):
        a += ["call", "--proxy", px, "--uas", f"{HOST}:{ports.uas}"]
        if wl == "tcp":
            a += ["-t", "tcp", "--uas-transport", "tcp"]
    elif wl == "phones":
        a += ["call", "--callee", "phones", "--phones", str(phones), "--proxy", px,
              "--reg-proxy", f"{HOST}:{ports.tls}", "--ca", certs.ca]
    elif wl == "storm":
        a += ["register", "--proxy", px, "--reg-proxy", f"{HOST}:{ports.tls}",
              "--uas", f"{HOST}:{ports.uas}", "--ca", certs.ca]
    else:
        raise ValueError(wl)
    a += ["--rate", f"{rate:g}", "--duration", f"{duration:g}", "--cpus", gen_cpus, "-q"]
    return a


def run_sipload(h, argv, pgid, timeout, name="sipload"):
    """Runs sipload to completion while sampling the proxy's CPU. Returns
    (json dict or None, CPU seconds of the proxy within the window)."""
    sampler = CpuSampler(pgid)
    t_launch = time.monotonic()
    p = h.spawn(name, argv)
    try:
        p.wait(timeout)
    except lib.TestTimeout:
        p.stop(signal.SIGINT, timeout=10)
    sampler.stop()
    out, err = p.output()
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        log(f"[bench] sipload gave no result (exit {p.returncode}): {err.strip()[-300:]}")
        return None, 0.0
    j = json.loads(lines[-1])
    t0 = t_launch + j.get("setup_s", 0.0)
    t1 = t0 + j.get("window_s", 0.0)
    return j, max(0.0, sampler.at(t1) - sampler.at(t0))


MAX_P99_MS = 500.0


def judge(wl, j, rate):
    """'pass', 'fail' or 'generator' (the generator, not the proxy, limited).
    Passing needs no failure, the offered rate achieved (within 3 %), and a
    p99 setup (or registration) latency within MAX_P99_MS: over capacity a
    queue grows for the whole run, and a short probe would end before its
    calls time out."""
    if j is None:
        return "fail"
    if wl == "storm":
        achieved = j["registrations"]["ok"] / max(j["window_s"], 1e-9)
        p99 = j["latency_ms"]["register"]["p99"]
    else:
        achieved = j["calls"]["rate_achieved"]
        p99 = j["latency_ms"]["call_setup"]["p99"]
    good = j["ok"] and achieved >= 0.97 * rate and p99 <= MAX_P99_MS
    if j.get("generator_behind"):
        return "generator" if good or j["cpu"]["max_thread_share"] > 0.9 else "fail"
    return "pass" if good else "fail"


def summarize(wl, j, rate, cpu_s, verdict):
    """One step's result as a flat dict."""
    s = {"rate": rate, "verdict": verdict, "cpu_s": round(cpu_s, 4)}
    if j is None:
        return s
    if wl == "storm":
        done = j["registrations"]["ok"]
        lat = j["latency_ms"]["register"]
        s.update(ok=done, failed=j["registrations"]["failed"],
                 achieved=round(done / max(j["window_s"], 1e-9), 1),
                 first_p50=j["latency_ms"]["first_request"]["p50"],
                 first_p99=j["latency_ms"]["first_request"]["p99"])
    else:
        done = j["calls"]["ok"]
        lat = j["latency_ms"]["call_setup"]
        s.update(ok=done, failed=j["calls"]["failed"] + j["calls"]["not_started"],
                 achieved=j["calls"]["rate_achieved"],
                 rtx=j["retransmissions"]["sent"])
    s.update(p50=lat["p50"], p99=lat["p99"], p999=lat["p999"], window_s=j["window_s"],
             setup_s=j["setup_s"], gen_cpu=j["cpu"]["max_thread_share"],
             behind=j["generator_behind"],
             us_per=round(cpu_s / done * 1e6, 1) if done else None)
    return s


def run_step(opts, proxy, wl, rate, duration, quota=None, workers=1, proxy_cpus=None,
             gen_cpus=None):
    """One measurement: a fresh proxy, one sipload run. Returns summarize()."""
    proxy_cpus = proxy_cpus or opts.proxy_cpus
    gen_cpus = gen_cpus or opts.gen_cpus
    with lib.Harness(f"cap-{proxy}-{wl}") as h:
        ports = Ports()
        p = start_proxy(h, proxy, wl, ports, opts.certs, proxy_cpus, workers=workers,
                        quota=quota or getattr(opts, "free", None))
        thr0 = quota.throttled() if quota else (0, 0)
        argv = sipload_argv(wl, ports, opts.certs, rate, duration, gen_cpus,
                            phones=opts.phones)
        j, cpu_s = run_sipload(h, argv, p.pgid, timeout=duration + 90)
        verdict = judge(wl, j, rate)
        s = summarize(wl, j, rate, cpu_s, verdict)
        if quota:
            thr1 = quota.throttled()
            s["throttled"] = thr1[1] - thr0[1]
            s["in_cgroup"] = len(quota.members())
        s["alive"] = p.alive()
        if not p.alive():
            s["verdict"] = "fail"
        return s


def step_line(proxy, wl, s):
    us = s.get("us_per")
    return (f"  {proxy:8} {wl:6} {s['rate']:>9.0f}/s {s['verdict']:9} "
            f"achieved {s.get('achieved', 0):>9.1f} failed {s.get('failed', '-')!s:>6} "
            f"p50/p99 {s.get('p50', 0):.2f}/{s.get('p99', 0):.1f} ms "
            f"proxy {us if us is not None else '-'} us each, gen {s.get('gen_cpu', 0):.0%}"
            + (f", throttled {s['throttled']}" if "throttled" in s else ""))


# ---------------------------------------------------------------- the search

def search(opts, proxy, wl, quota, on_step=None):
    """The highest rate (a multiple of the resolution) held for opts.hold
    seconds with no failure. Probes of opts.probe seconds bracket it
    (doubling from a start guess, then bisection to opts.tol), then the
    bracket's low end is held for opts.hold seconds, lowered by tol, 2 tol,
    4 tol until held (at most 4 tries). Returns a dict with the rate, the steps,
    and whether the generator was the limit."""
    w = WORKLOADS[wl]
    share = quota.share if quota else 1.0
    start = max(10.0, round(w.start_per_core * share * opts.start_scale.get(proxy, 1.0), -1))
    cap = w.max_per_core * share
    steps, lo, hi, gen_limited = [], 0.0, None, False

    def step(rate, dur, phase):
        s = run_step(opts, proxy, wl, rate, dur, quota=quota)
        s["phase"] = phase
        steps.append(s)
        if on_step:
            on_step(proxy, wl, s)
        return s

    rate = start
    for _ in range(opts.max_probes):
        s = step(rate, opts.probe, "probe")
        if s["verdict"] == "pass":
            lo = rate
        elif s["verdict"] == "generator":
            gen_limited = True
            hi = rate
            break
        else:
            hi = rate
        if hi is None:
            if rate >= cap:
                break
            rate = min(cap, rate * 2)
        elif lo == 0:
            rate = round(rate / 2, -1) or 10.0
        elif hi / lo <= 1 + opts.tol:
            break
        else:
            rate = round((lo + hi) / 2, -1)
    held = None
    rate = lo
    for i in range(4):
        if rate <= 0:
            break
        if opts.hold <= opts.probe:  # the probes already held it long enough
            held = next((s for s in reversed(steps) if s["rate"] == rate and
                         s["verdict"] == "pass"), None)
            break
        s = step(rate, opts.hold, "hold")
        if s["verdict"] == "pass":
            held = s
            break
        gen_limited |= s["verdict"] == "generator"
        rate = round(rate * (1 - opts.tol * 2 ** i), -1)  # tol, then 2 tol, 4 tol
    return {"proxy": proxy, "workload": wl, "rate": held["rate"] if held else 0.0,
            "per_core": (held["rate"] / share) if held else 0.0, "held": held,
            "steps": steps, "generator_limited": gen_limited, "share": share,
            "hold_s": max(opts.hold, opts.probe)}


# ---------------------------------------------------------------- fixed points

def fixed_rate(opts, proxy, rate, duration, workers=2):
    """CPU per UDP call at a fixed rate, no quota, `workers` workers
    (Kamailio -n), the proxy unpinned over every CPU and the generator on
    opts.gen_cpus."""
    cpus = f"0-{os.cpu_count() - 1}"
    return run_step(opts, proxy, "udp", rate, duration, workers=workers, proxy_cpus=cpus)


def storm_cpu(opts, proxy, phones, concurrency=100):
    """A closed-loop storm of `phones` new TLS phones (connect, handshake,
    REGISTER relayed with Path to the upstream, 200), no quota, the proxy
    pinned to its CPUs: proxy CPU per phone and the latency percentiles."""
    with lib.Harness(f"storm-{proxy}") as h:
        ports = Ports()
        p = start_proxy(h, proxy, "storm", ports, opts.certs, opts.proxy_cpus,
                        quota=getattr(opts, "free", None))
        argv = sipload_argv("storm", ports, opts.certs, 0, 0, opts.gen_cpus)
        i = argv.index("--rate")
        argv[i:i + 4] = ["--rate", "0", "--phones", str(phones), "--max-concurrent",
                         str(concurrency), "--duration", "1"]
        j, cpu_s = run_sipload(h, argv, p.pgid, timeout=600)
        if j is None:
            return {"proxy": proxy, "error": "no result"}
        r = j["registrations"]
        return {"proxy": proxy, "phones": phones, "ok": r["ok"], "failed": r["failed"],
                "duration_s": r["duration_s"], "rate": r["rate"], "cpu_s": round(cpu_s, 3),
                "per_cpu_s": round(r["ok"] / cpu_s, 1) if cpu_s > 0 else None,
                "register": j["latency_ms"]["register"],
                "first_request": j["latency_ms"]["first_request"],
                "gen_cpu": j["cpu"]["max_thread_share"]}


def sweep(opts, proxy, rates, duration, on_step=None):
    """UDP calls at each rate in turn, one worker, no quota, the proxy
    pinned to its CPUs: CPU per call and latency against the rate (the
    plots). Stops after the first rate that fails."""
    out = []
    for r in rates:
        s = run_step(opts, proxy, "udp", r, duration)
        s["proxy"] = proxy
        out.append(s)
        if on_step:
            on_step(proxy, "udp", s)
        if s["verdict"] != "pass":
            break
    return out


def _established(port):
    """Established TCP connections on local port `port` (ss, netlink)."""
    try:
        out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True, timeout=20).stdout
        return sum(1 for l in out.splitlines() if l.strip())
    except (OSError, subprocess.TimeoutExpired):
        return 0


def memory_per_phone(opts, proxy, phones, reg_rate=None, hold_s=10):
    """Idle registered TLS phones held by `sipload hold`: the proxy's PSS
    before and with every phone registered, sampled as they come (about 10 s
    of registrations, for the memory-against-connections plot). No quota."""
    reg_rate = reg_rate or max(200, min(2000, phones // 10))
    with lib.Harness(f"hold-{proxy}") as h:
        ports = Ports()
        p = start_proxy(h, proxy, "hold", ports, opts.certs, opts.proxy_cpus,
                        quota=getattr(opts, "free", None), shm_mb=max(512, phones // 6))
        time.sleep(0.5)
        base = pss_kib(p.pgid)
        argv = GEN_PREFIX + [tool("sipload"), "hold", "--proxy", f"{HOST}:{ports.sip}",
                "--reg-proxy", f"{HOST}:{ports.tls}", "--ca", opts.certs.ca,
                "--phones", str(phones), "--reg-rate", str(reg_rate),
                "--duration", str(hold_s), "--keepalive", "30", "--cpus", opts.gen_cpus, "-q"]
        gen = h.spawn("sipload-hold", argv)
        curve = [(0, base)]
        dl = lib.Deadline(phones / reg_rate * 4 + hold_s + 120)
        full = []
        while gen.alive() and not dl.expired():
            time.sleep(0.5)
            n, kib = _established(ports.tls), pss_kib(p.pgid)
            if n < curve[-1][0] * 0.9:
                break  # the window is over: sipload is closing its phones
            curve.append((n, kib))
            if n >= phones:
                full.append(kib)
        try:
            gen.wait(30)
        except lib.TestTimeout:
            gen.stop()
        out, _ = gen.output()
        lines = [l for l in out.splitlines() if l.startswith("{")]
        j = json.loads(lines[-1]) if lines else None
        held = j["phones"]["held"] if j else 0
        top = sorted(full)[len(full) // 2] if full else (curve[-1][1] if curve else base)
        return {"proxy": proxy, "phones": phones, "held": held, "base_kib": base,
                "full_kib": top,
                "per_phone_kib": round((top - base) / held, 2) if held else None,
                "slope_kib": _slope([c for c in curve if c[0] >= phones * 0.2]),
                "curve": curve, "ok": bool(j and j["ok"])}


def _slope(pts):
    """Least-squares KiB per connection over (connections, KiB) points: the
    marginal cost of one more phone, without the fixed part that traffic
    first allocates (what 100,000 phones would cost each)."""
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx <= 0:
        return None
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 2)


def udp_floor(rate=35000, count=100000):
    """build/udp_floor on this machine now: µs of CPU per relayed datagram
    (epoll + recvmmsg relay), ×7 per call, and the calls/s per core that
    implies."""
    try:
        out = subprocess.run([tool("udp_floor"), "--rate", str(rate), "--count", str(count)],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    r = {}
    for kind in ("blocking", "epoll"):
        m = re.search(kind + r"\s+relay: .*?([\d.]+) us CPU per datagram", out)
        if m:
            r[kind] = float(m.group(1))
    if "epoll" in r:
        r["us_per_call"] = round(r["epoll"] * 7, 1)
        r["calls_per_core"] = round(1e6 / (r["epoll"] * 7))
    r["rate"], r["count"] = rate, count
    return r


def tls_floor(count=2000):
    """build/tls_floor on this machine now: µs of CPU of a TLS 1.3 server's
    public-key work per full handshake (X25519 share + ECDSA P-256 sign)
    with the BoringSSL sipedge links, and the handshakes per CPU-second
    that alone allows."""
    try:
        out = subprocess.run(["taskset", "-c", "0", tool("tls_floor"), "--count", str(count)],
                             capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": str(e)}
    r = {}
    for key, pat in (("x25519_us", r"x25519 key share: ([\d.]+) us"),
                     ("sign_us", r"ecdsa p-256 sign: ([\d.]+) us"),
                     ("us", r"public-key work: ([\d.]+) us")):
        m = re.search(pat, out)
        if m:
            r[key] = float(m.group(1))
    if r.get("us"):
        r["per_cpu_s"] = round(1e6 / r["us"])
    return r
