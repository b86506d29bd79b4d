"""bench/run's report: results.md (the table, the method, every step) and
the PNG plots (matplotlib, Agg backend) from the results dict of one run."""

import os

from capbench import WORKLOADS

TARGETS = {
    # workload: (per-core minimum or None, minimum ratio sipedge/Kamailio)
    "udp": (20000, 8.0),
}


def _fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:,.{digits}f}"


def _ratio(a, b, digits=2):
    if not a or not b:
        return "-"
    return f"{a / b:.{digits}f}"


def _by(rows, key="proxy"):
    return {r.get(key): r for r in rows}


def _mark(ok):
    return "met" if ok else "**missed**"


def _search_rows(res):
    rows = []
    quota = res["quota"]
    for wl in WORKLOADS:
        got = {r["proxy"]: r for r in res["searches"] if r["workload"] == wl}
        if not got:
            continue
        se, ka = got.get("sipedge"), got.get("kamailio")
        a = se["per_core"] if se else None
        b = ka["per_core"] if ka else None
        note = ""
        for r in (se, ka):
            if r and r["generator_limited"]:
                note += f" ({r['proxy']}: the generator was the limit, so at least this)"
        target = ""
        if wl == "udp" and a:
            target = (f"≥ 20,000/core: {_mark(a >= 20000)}; ≥ 8× Kamailio: "
                      f"{_mark(bool(b) and a / b >= 8)}")
        elif wl == "storm" and a:
            target = f"≥ 5,000/CPU-s: {_mark(a >= 5000)}; ≥ 5×: {_mark(bool(b) and a / b >= 5)}"
        unit = WORKLOADS[wl].unit
        rows.append((WORKLOADS[wl].title,
                     f"{unit} per quota-core, held {res['hold_s']:g} s, 0 failed "
                     f"(raw: {_fmt(se and se['rate'])} / {_fmt(ka and ka['rate'])} at "
                     f"{quota:g} core)",
                     _fmt(a), _fmt(b), _ratio(a, b), target,
                     "search under the same cgroup quota" + note))
    return rows


def _sides(rows, key):
    """sipedge's and Kamailio's result ({} when absent) and their `key`."""
    by = _by(rows)
    se, ka = by.get("sipedge", {}), by.get("kamailio", {})
    return se, ka, se.get(key), ka.get(key)


def _pair(workload, metric, a, b, digits, target, method):
    """A table row comparing value a (sipedge) with b (Kamailio)."""
    return (workload, metric, _fmt(a, digits), _fmt(b, digits), _ratio(a, b), target, method)


def _other_rows(res):
    rows = []
    best = {}
    for f in res.get("fixed", []):  # the lower of the rounds: the least disturbed
        if f.get("us_per") and f["us_per"] < best.get(f["proxy"], {}).get("us_per", 1e18):
            best[f["proxy"]] = f
    se, ka, a, b = _sides(list(best.values()), "us_per")
    if se or ka:
        rounds = {p: ", ".join(f"{f['us_per']}" for f in res["fixed"] if f["proxy"] == p)
                  for p in best}
        rows.append(_pair("UDP calls at 1,000 calls/s",
                          "µs of proxy CPU per call (lower is better)", a, b, 1,
                          f"≤ 0.25: {_mark(bool(a and b) and a / b <= 0.25)}" if a and b else "",
                          f"sipedge -w 2, Kamailio -n 2, no quota, {res['fixed_s']} s, "
                          f"sipload on CPU {res['gen_cpus']}; the lower of the runs "
                          f"(sipedge {rounds.get('sipedge', '-')}; Kamailio "
                          f"{rounds.get('kamailio', '-')} µs)"))
    se, ka, a, b = _sides(res.get("storm", []), "per_cpu_s")
    if se or ka:
        n = se.get("phones") or ka.get("phones")
        rows.append(_pair("TLS registration storm", "new phones per proxy CPU-second", a, b, 0,
                          f"≥ 5,000: {_mark(bool(a) and a >= 5000)}; ≥ 5×: "
                          f"{_mark(bool(a and b) and a / b >= 5)}" if a else "",
                          f"{n:,} phones one connection each, 100 at a time, no quota, "
                          f"proxy on CPU {res['proxy_cpus']}"))

        held = {r["proxy"]: r.get("held") or {} for r in res["searches"]
                if r["workload"] == "storm"}
        if held:
            hs, hk = held.get("sipedge", {}), held.get("kamailio", {})
            rows.append(("TLS registration storm", "REGISTER to 200 p50 / p99 (ms) at the "
                         "held storm rate",
                         f"{_fmt(hs.get('first_p50'), 2)} / {_fmt(hs.get('first_p99'), 1)}",
                         f"{_fmt(hk.get('first_p50'), 2)} / {_fmt(hk.get('first_p99'), 1)}",
                         _ratio(hs.get("first_p99"), hk.get("first_p99")), "",
                         "the first request on each new connection, open loop at the rate "
                         "found by the search (under the quota)"))

        def lat(r, k, q):
            return r.get(k, {}).get(q)
        for k, label in (("register", "connect to 200"), ("first_request", "REGISTER to 200")):
            rows.append(("TLS registration storm",
                         f"{label} p50 / p99 (ms)",
                         f"{_fmt(lat(se, k, 'p50'), 2)} / {_fmt(lat(se, k, 'p99'), 1)}",
                         f"{_fmt(lat(ka, k, 'p50'), 2)} / {_fmt(lat(ka, k, 'p99'), 1)}",
                         _ratio(lat(se, k, 'p99'), lat(ka, k, 'p99')), "",
                         f"the same {n:,}-phone storm"))
    se, ka, a, b = _sides(res.get("memory", []), "per_phone_kib")
    if se or ka:
        n = se.get("held") or ka.get("held")
        rows.append(_pair("idle registered TLS phones", "KiB per phone (PSS delta / phones)",
                          a, b, 2, f"≤ 4 KiB: {_mark(bool(a) and a <= 4)}" if a else "",
                          f"{n:,} phones held by sipload hold (fd hard limit 20,000 here), "
                          "PSS summed over the proxy's processes, minus before the phones"))
        a, b = se.get("slope_kib"), ka.get("slope_kib")
        rows.append(_pair("idle registered TLS phones", "KiB per additional phone (slope)",
                          a, b, 2,
                          f"≤ 4 KiB at 100,000: {_mark(bool(a) and a <= 4)}" if a else "",
                          "least-squares slope of PSS against connections from 20 % of the "
                          "phones on: the cost per phone once the fixed part is paid"))
    for fl in (res.get("floor", {}), res.get("floor_fixed", {})):
        if fl.get("epoll"):
            rows.append(("kernel floor (build/udp_floor)",
                         "µs CPU per relayed datagram; ×7 per call; calls/s per core",
                         f"{fl['epoll']} µs; {fl['us_per_call']} µs; {fl['calls_per_core']:,}",
                         "", "", "", f"a relay doing no SIP work (epoll + recvmmsg + sendto), "
                         f"{fl['rate']:,} datagrams/s, pinned, same sitting"))
    tf = res.get("tls_floor", {})
    if tf.get("us"):
        rows.append(("TLS floor (build/tls_floor)",
                     "µs CPU of public-key work per full handshake; handshakes per CPU-second",
                     f"{tf['us']} µs ({tf.get('x25519_us')} X25519 + {tf.get('sign_us')} "
                     f"ECDSA P-256 sign); {tf['per_cpu_s']:,}", "", "", "",
                     "the BoringSSL sipedge links (Debian's android-libboringssl), "
                     "no TLS stack, no kernel, same sitting"))
    return rows


def _sweep_rows(res):
    """The highest UDP rate each proxy held on a whole core in the sweep."""
    best, over = {}, {}
    for s in res.get("sweep", []):
        if s["verdict"] == "pass" and s["rate"] > best.get(s["proxy"], {}).get("rate", 0):
            best[s["proxy"]] = s
        elif s["verdict"] != "pass":
            over[s["proxy"]] = s
    if not best:
        return []
    se, ka = best.get("sipedge", {}), best.get("kamailio", {})

    def cell(p):
        r, x = best.get(p), over.get(p)
        if not r:
            return "-"
        return (f"{r['rate']:,.0f} ({r['us_per']} µs/call, generator {r['gen_cpu']:.0%})" +
                (f"; {x['rate']:,.0f} not held" if x else "; every rate held"))
    return [("UDP calls, one whole core", "highest rate of the sweep held "
             f"{res.get('sweep_s')} s with 0 failed, no quota", cell("sipedge"),
             cell("kamailio"), _ratio(se.get("rate"), ka.get("rate")),
             f"≥ 20,000: {_mark(se.get('rate', 0) >= 20000)}" if se else "",
             "1 worker on CPU 0, sipload on CPU 1 (its CPU share shows it kept up); the "
             "sweep stops at the first rate not held")]


def _steps_table(res):
    out = ["| proxy | workload | phase | offered /s | verdict | achieved /s | failed | "
           "setup p50 / p99 / p99.9 ms | proxy µs each | generator CPU | throttled periods |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(r["proxy"], r["workload"], s) for r in res["searches"] for s in r["steps"]]
    rows += [(s["proxy"], "udp", dict(s, phase="sweep, no quota")) for s in res.get("sweep", [])]
    rows += [(s["proxy"], "udp", dict(s, phase=f"{res['fixed_rate']:g}/s, 2 workers"))
             for s in res.get("fixed", [])]
    for proxy, wl, s in rows:
        out.append(f"| {proxy} | {wl} | {s.get('phase', '')} | "
                   f"{s['rate']:,.0f} | {s['verdict']} | {_fmt(s.get('achieved'), 1)} | "
                   f"{_fmt(s.get('failed'))} | {_fmt(s.get('p50'), 2)} / "
                   f"{_fmt(s.get('p99'), 1)} / {_fmt(s.get('p999'), 1)} | "
                   f"{_fmt(s.get('us_per'), 1)} | {_fmt((s.get('gen_cpu') or 0) * 100)} % | "
                   f"{_fmt(s.get('throttled'))} |")
    return out


def markdown(res):
    m = res["machine"]
    L = [f"# Capacity: sipedge and Kamailio side by side ({res['started']})", "",
         f"Command: `{res['command']}` (git {m['commit']}, {m['kamailio']}).  ",
         f"Machine: {m['nproc']} CPUs ({m['model']}), Linux {m['kernel']}, load average "
         f"{m['loadavg_before']:.2f} before, {m.get('loadavg_after', 0):.2f} after; "
         f"{res.get('elapsed_s', 0) / 60:.1f} minutes.", "",
         f"Method: {res['method']}. A step passes with no failed call or registration, the "
         f"offered rate achieved within 3 %, p99 setup latency ≤ {res['p99_bound_ms']:g} ms, "
         "and the generator not behind; every step starts a fresh proxy. The calls-to-phones "
         f"workload calls {res['phones_workload']} registered TLS phones (the UAC over UDP). "
         "Proxy CPU is utime+stime of all its processes (/proc) inside sipload's measured "
         "window.", "",
         "| workload | metric | sipedge | Kamailio | ratio | target | method |",
         "|---|---|---|---|---|---|---|"]
    for row in _search_rows(res) + _sweep_rows(res) + _other_rows(res):
        L.append("| " + " | ".join(row) + " |")
    L += ["", "Plots: `cpu_per_call.png` (proxy CPU per UDP call against the rate, no "
          "quota), `latency.png` (setup latency percentiles against the offered rate: the "
          "sweep, then every search step), `memory.png` (proxy memory against open TLS "
          "connections).", "", "## Every step", ""] + _steps_table(res)
    return "\n".join(L) + "\n"


COLORS = {"sipedge": "tab:blue", "kamailio": "tab:red"}


def _panels(plt, n):
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.2 * rows), squeeze=False)
    return fig, [a for row in axes for a in row]


def _search_by_wl(res):
    by = {}
    for r in res["searches"]:
        by.setdefault(r["workload"], []).append(r)
    return by


def _sweep_by_proxy(res):
    by = {}
    for s in res.get("sweep", []):
        by.setdefault(s["proxy"], []).append(s)
    return by


def plot_cpu(plt, res, path):
    """Proxy CPU per UDP call against the rate: the sweep (one worker, no
    quota) and the fixed-rate points (two workers)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for proxy, ss in _sweep_by_proxy(res).items():
        pts = sorted((s["rate"], s["us_per"], s["verdict"] == "pass")
                     for s in ss if s.get("us_per"))
        c = COLORS.get(proxy)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=c, alpha=0.5)
        ax.scatter([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], color=c,
                   label=f"{proxy}, 1 worker (held)")
        ax.scatter([p[0] for p in pts if not p[2]], [p[1] for p in pts if not p[2]],
                   facecolors="none", edgecolors=c, label=f"{proxy}, 1 worker (not held)")
    seen = set()
    for f in res.get("fixed", []):
        if f.get("us_per"):
            ax.scatter([f["rate"]], [f["us_per"]], marker="*", s=160,
                       color=COLORS.get(f["proxy"]),
                       label=None if f["proxy"] in seen else f"{f['proxy']}, 2 workers")
            seen.add(f["proxy"])
    fl = res.get("floor", {})
    if fl.get("us_per_call"):
        ax.axhline(fl["us_per_call"], color="grey", ls="-.", lw=0.9,
                   label=f"udp_floor x7 at {fl['rate']:,}/s datagrams")
    ax.set_title(f"UDP calls: proxy CPU per call, no quota ({res.get('sweep_s', '?')} s per rate)")
    ax.set_xlabel("calls/s")
    ax.set_ylabel("proxy CPU µs per call")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _latency_panel(ax, series, title, unit, bound=None):
    styles = {"p50": "o-", "p99": "s--", "p999": "^:"}
    for proxy, steps in series:
        pts = sorted(((s["rate"], s) for s in steps if s.get("p50") is not None),
                     key=lambda p: p[0])
        for q, st in styles.items():
            ax.plot([p[0] for p in pts], [max(p[1][q], 0.01) for p in pts], st,
                    color=COLORS.get(proxy), label=f"{proxy} {q}", markersize=4, alpha=0.85)
    if bound:
        ax.axhline(bound, color="grey", lw=0.8, ls="-.")
    ax.set_title(title)
    ax.set_xlabel(f"offered {unit}")
    ax.set_ylabel("latency, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot_latency(plt, res, path):
    """Setup latency percentiles against the rate: the UDP sweep (no quota),
    then every search's steps (under the quota)."""
    panels = []
    sw = _sweep_by_proxy(res)
    if sw:
        panels.append((list(sw.items()), "UDP calls, call setup, no quota", "calls/s", None))
    for wl, rs in _search_by_wl(res).items():
        what = "registration" if wl == "storm" else "call setup"
        panels.append(([(r["proxy"], r["steps"]) for r in rs],
                       f"{WORKLOADS[wl].title}, {what}, {res['quota']:g}-core quota",
                       WORKLOADS[wl].unit, res["p99_bound_ms"]))
    fig, axes = _panels(plt, max(1, len(panels)))
    for ax, (series, title, unit, bound) in zip(axes, panels):
        _latency_panel(ax, series, title, unit, bound)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_memory(plt, res, path):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in res.get("memory", []):
        pts = m.get("curve", [])
        ax.plot([p[0] for p in pts], [p[1] / 1024 for p in pts], "o-", markersize=3,
                color=COLORS.get(m["proxy"]),
                label=f"{m['proxy']}: {m.get('per_phone_kib')} KiB per phone "
                      f"(slope {m.get('slope_kib')})")
    ax.set_xlabel("established TLS connections (registered idle phones)")
    ax.set_ylabel("proxy memory, PSS MiB")
    ax.set_title("Memory against connections")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(out, res):
    """Writes out/results.md and, with matplotlib, out/*.png. Returns the
    path of results.md."""
    md = os.path.join(out, "results.md")
    with open(md, "w") as f:
        f.write(markdown(res))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("benchreport: no matplotlib (Debian: python3-matplotlib): no plots",
              flush=True)
        return md
    plot_cpu(plt, res, os.path.join(out, "cpu_per_call.png"))
    plot_latency(plt, res, os.path.join(out, "latency.png"))
    plot_memory(plt, res, os.path.join(out, "memory.png"))
    return md
