#!/usr/bin/python3
"""README and the man page say what the binary does.

Checks:
  a. README's flag table and `sipedge --help` list the same flags, each with
     the same short form, argument name and default;
  b. the man page built beside the binary (sipedge.8, generated from --help)
     lists every flag and names the version --version prints, which carries
     the git commit;
  c. README's management examples: sipedge on scripts/run.sh's own flags
     (free ports) answers each `curl http://127.0.0.1:9090/PATH` with 200, a
     path README marks "(coming)" with 404 (and the mark must go once it is
     served); /stats and /metrics name the commit --version names;
  d. README's "Try a call": its try-phone.sh commands, run as written
     against that sipedge, give a call established on both phones over TLS,
     relayed by sipedge.
Prints one line per case and "N passed, M failed"."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

ROOT = lib.repo_root()
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import helpdoc  # noqa: E402

HOST = "127.0.0.1"
README = os.path.join(ROOT, "README.md")


def readme():
    with open(README) as f:
        return f.read()


def section(text, title):
    """The body of README's "## title" section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not m:
        raise AssertionError(f"README has no '## {title}' section")
    return m.group(1)


def help_options():
    out = subprocess.run([lib.sipedge_bin(), "--help"], capture_output=True, text=True,
                         timeout=10)
    if out.returncode != 0:
        raise AssertionError(f"--help: exit status {out.returncode}")
    return helpdoc.parse(out.stdout)[0]


def version():
    out = subprocess.run([lib.sipedge_bin(), "--version"], capture_output=True, text=True,
                         timeout=10)
    m = re.fullmatch(r"sipedge (\d+\.\d+\.\d+) \(commit ([0-9a-f]{7,40}|unknown)\)\n",
                     out.stdout)
    if out.returncode != 0 or not m:
        raise AssertionError(f"--version: status {out.returncode}, {out.stdout!r}")
    return m.group(0).strip(), m.group(1), m.group(2)


def norm(s):
    return " ".join(s.replace("`", "").replace("\\|", "|").split())


def readme_flags(text):
    """{long name: (flag cell, default cell)} of README's flag table."""
    rows = {}
    body = section(text, "Flags")
    lines = body.splitlines()
    try:
        start = lines.index("| flag | default | what it does |")
    except ValueError:
        raise AssertionError("README's Flags section has no '| flag | default | what it "
                             "does |' table")
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) != 3:
            raise AssertionError(f"README flag row with {len(cells)} cells: {line}")
        m = re.search(r"--([a-z0-9-]+)", cells[0])
        if not m:
            raise AssertionError(f"README flag row without a --flag: {line}")
        if m.group(1) in rows:
            raise AssertionError(f"README lists --{m.group(1)} twice")
        rows[m.group(1)] = (norm(cells[0]), norm(cells[1]))
    return rows


def case_flags():
    opts = help_options()
    rows = readme_flags(readme())
    fix = " (scripts/helpdoc.py table build/sipedge prints the table)"
    problems = []
    for o in opts:
        if o.long not in rows:
            problems.append(f"--{o.long} is in --help, not in README")
            continue
        flag, default = rows.pop(o.long)
        want = o.default or "—"
        if flag != norm(o.left):
            problems.append(f"--{o.long}: README '{flag}', --help '{o.left}'")
        if default != norm(want):
            problems.append(f"--{o.long} default: README '{default}', --help '{want}'")
    problems += [f"--{name} is in README, not in --help" for name in rows]
    if problems:
        raise AssertionError("; ".join(problems) + fix)
    return f"{len(opts)} flags, same forms and defaults in README and --help"


def case_man():
    opts = help_options()
    line, _, _ = version()
    page = os.path.join(os.path.dirname(lib.sipedge_bin()), "sipedge.8")
    try:
        with open(page) as f:
            text = f.read().replace("\\-", "-")
    except OSError as e:
        raise AssertionError(f"{page}: {e} (built by the sipedge-man target)")
    missing = [o.long for o in opts if f"--{o.long}" not in text]
    if missing:
        raise AssertionError(f"{page} lacks --{', --'.join(missing)}: stale or broken")
    if f'"{line}"' not in text:
        raise AssertionError(f"{page} does not name '{line}'")
    return f"{page}: all {len(opts)} flags, '{line}'"


def run_sh_argv(certs, sip_port, tls_port, stats_port):
    """scripts/run.sh's sipedge command line with its ports and certificate
    directory replaced."""
    with open(os.path.join(ROOT, "scripts", "run.sh")) as f:
        text = f.read().replace("\\\n", " ")
    m = re.search(r"^exec build/sipedge (.*)$", text, re.M)
    if not m:
        raise AssertionError("scripts/run.sh has no 'exec build/sipedge ...' line")
    args = shlex.split(m.group(1).replace('"$@"', "").replace("$certs", certs))
    subst = {f"{HOST}:5060": f"{HOST}:{sip_port}", f"{HOST}:5061": f"{HOST}:{tls_port}",
             f"{HOST}:9090": f"{HOST}:{stats_port}"}
    out = []
    for a in args:
        for k, v in subst.items():
            a = a.replace(k, v)
        out.append(a)
    if any(a.endswith((":5060", ":5061", ":9090")) for a in out):
        raise AssertionError(f"run.sh has a port this test does not map: {out}")
    return [lib.sipedge_bin(), "-w", "2"] + out


class RunSh:
    """sipedge as scripts/run.sh starts it, on free loopback ports."""

    def __init__(self, h):
        self.certs = h.path("devcerts")
        subprocess.run([os.path.join(ROOT, "scripts", "gen-devcerts.sh"), self.certs],
                       check=True, timeout=60)
        self.sip = lib.free_port(HOST)
        self.tls = lib.free_port(HOST, ("tcp",))
        self.stats = lib.free_port(HOST, ("tcp",))
        argv = run_sh_argv(self.certs, self.sip, self.tls, self.stats)
        self.proc = h.spawn("sipedge", argv, ready=lambda: (
            lib.port_bound(self.sip, "udp", HOST) and lib.port_bound(self.tls, "tcp", HOST) and
            lib.port_bound(self.stats, "tcp", HOST)), ready_timeout=15)

    def get(self, path):
        """(status, body) of GET path on the management port."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.stats}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def case_endpoints():
    examples = re.findall(r"^curl [^\n]*http://127\.0\.0\.1:9090(/[\w/]*)([^\n]*)$",
                          section(readme(), "Management endpoints"), re.M)
    if len(examples) < 2:
        raise AssertionError(f"README's management examples: {examples}")
    _, _, commit = version()
    notes = []
    with lib.Harness("docs-endpoints") as h:
        se = RunSh(h)
        for path, rest in examples:
            code, body = se.get(path)
            coming = "(coming)" in rest
            if coming and code == 200:
                raise AssertionError(f"{path} is served now: drop README's '(coming)'")
            if code != (404 if coming else 200):
                raise AssertionError(f"GET {path}: {code}")
            notes.append(f"{path} {code}" + (" (coming)" if coming else ""))
        st = json.loads(se.get("/stats")[1])
        metrics = se.get("/metrics")[1]
        if st.get("commit") != commit or \
                f'sipedge_build_info{{version="{st["version"]}",commit="{commit}"}} 1' \
                not in metrics:
            raise AssertionError(f"/stats commit {st.get('commit')!r}, --version {commit!r}, "
                                 "or no sipedge_build_info")
    return ", ".join(notes) + f"; commit {commit} in /stats and /metrics"


def phone_commands():
    block = re.search(r"```sh\n(.*?)```", section(readme(), "Try a call"), re.S)
    cmds = []
    for line in (block.group(1) if block else "").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("scripts/try-phone.sh "):
            cmds.append(shlex.split(line))
    if len(cmds) != 2:
        raise AssertionError(f"README's Try a call: want two try-phone.sh commands, {cmds}")
    return cmds


def case_call():
    if not shutil.which("baresip"):
        if os.environ.get("SIPEDGE_WITH_BARESIP") == "0":
            return "skipped: SIPEDGE_WITH_BARESIP=0, no baresip"
        raise AssertionError("baresip not installed (scripts/install-deps.sh)")
    callee, caller = phone_commands()
    with lib.Harness("docs-call") as h:
        se = RunSh(h)
        env = {"SIPEDGE_TLS": f"{HOST}:{se.tls}", "SIPEDGE_CA": os.path.join(se.certs, "ca.crt"),
               "TMPDIR": h.dir}
        phones = []
        for argv in (callee, caller):
            name = argv[1]
            p = h.spawn(name, [os.path.join(ROOT, argv[0])] + argv[1:], env=env, cwd=ROOT)
            lib.wait_until(lambda: "[1 binding]" in p.output()[0], 10,
                           f"{name} registered over TLS", proc=p)
            phones.append((name, p))
        lib.wait_until(lambda: all("Call established" in p.output()[0] for _, p in phones),
                       15, "the call established on both phones", proc=phones[1][1])
        st = json.loads(se.get("/stats")[1])["total"]
        if st["forwarded"] < 1 or st["tls_handshakes"] < 2:
            raise AssertionError(f"sipedge forwarded {st['forwarded']}, TLS handshakes "
                                 f"{st['tls_handshakes']}: the call did not go through it")
        said = [re.search(r"Call established: (\S+)", p.output()[0]).group(1)
                for _, p in phones]
        return (f"{' / '.join(' '.join(a) for a in (callee, caller))}: established "
                f"({said[1]} <-> {said[0]}), {st['tls_handshakes']} TLS handshakes, "
                f"{st['forwarded']} forwarded")


def main():
    return lib.run_cases("docs", 120, [
        ("README flag table = --help", case_flags),
        ("man page", case_man),
        ("README management examples", case_endpoints),
        ("README Try a call", case_call),
    ])


if __name__ == "__main__":
    sys.exit(main())
