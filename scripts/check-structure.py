#!/usr/bin/env python3
"""Checks the source tree's shape: no include cycle between modules, includes
only downwards through the layers (leaf, runtime, proxy, main), no .c file
over 800 lines, no function over 120 lines, and no proxy_ name in the runtime's
headers (core/worker.h, core/worker-t.h).

Usage: scripts/check-structure.py [--root DIR] [--max-file-lines N] [--max-func-lines N]

Looks at the tracked C sources of core/ tls/ dns/ registry/ (not tests/,
bench/, fuzz/). A module is a directory-qualified basename: core/worker.c,
core/worker.h, core/worker-t.h and core/worker-int.h are all "core/worker".
An edge A -> B means a file of A includes a header of B ("dir/x.h" from the
tree root, or "x.h" beside the including file; <system> headers are ignored).
Prints one line per violation, then a one-line summary; exits 0 when clean,
1 on any violation, 2 on a usage error. Standard library only.
"""

import argparse
import os
import re
import subprocess
import sys

DIRS = ("core", "tls", "dns", "registry")
RUNTIME_HEADERS = ("core/worker.h", "core/worker-t.h")
DIRECTIVE_RE = re.compile(r"[ \t]*#")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
IDENT_RE = re.compile(r"[A-Za-z_]\w*")
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "defined", "__attribute__",
            "_Alignas", "_Static_assert", "_Generic", "__typeof__", "typeof"}


def tracked_sources(root):
    """Repository-relative paths of the .c and .h files to check."""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "--", *DIRS], check=True,
                             capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = []
        for d in DIRS:
            for dirpath, _, files in os.walk(os.path.join(root, d)):
                out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(p for p in out if p.endswith((".c", ".h"))
                  and os.path.isfile(os.path.join(root, p)))


TYPES_APART = False


def module_of(path):
    """core/worker-t.h -> core/worker (core/worker-t with --types-apart);
    dns/dns_cache.c -> dns/dns_cache. A layer's private header (foo-int.h,
    shared by the files of one layer) stays a node of its own, left out of
    the cycle search: LAYERS below says who may include it."""
    base, _ = os.path.splitext(path)
    if not TYPES_APART and base.endswith("-t"):
        return base[:-2]
    return base


# The layers, lowest first: a file may include headers of its own layer or
# lower ones only (ARCHITECTURE.md: leaves <- runtime (+ tls/, dns/,
# registry/) <- proxy layer <- main). A module in no layer is a violation,
# so a new file must be placed here.
LAYERS = [
    ("leaf", {"core/slice", "core/sipmsg", "core/sipmsg_validate", "core/sipuri", "core/framer",
              "core/rewrite", "core/netaddr", "core/ring", "core/timer", "core/log", "core/hash",
              "core/buf", "core/clock", "core/config", "core/auth", "core/iplimit"}),
    ("runtime", {"core/worker", "core/worker-int", "core/conn", "core/conn_tls", "core/stream",
                 "core/listener", "core/udp", "core/wmsg", "tls/tls", "dns/dns", "dns/dns-int",
                 "dns/dns_cache", "dns/dns_rfc3263", "registry/flowmap", "registry/flowtoken",
                 "registry/locmap"}),
    ("proxy", {"core/proxy", "core/proxy-int", "core/route", "core/forward", "core/response",
               "core/txn", "core/branch", "core/reply", "core/upstream", "core/registrar",
               "core/overload", "core/failover"}),
    ("main", {"core/main", "core/cli", "core/mgmt", "core/mgmt_pages", "core/mgmt-int"}),
]


def layer_of(module):
    for rank, (name, members) in enumerate(LAYERS):
        if module in members:
            return rank, name
    return None, None


def layer_problems(edges):
    """One line per include that goes up a layer, names a module in no
    layer, or reaches another layer's private header."""
    out = []
    for a in sorted(edges):
        ra, na = layer_of(a)
        if ra is None:
            out.append("module in no layer (add it to LAYERS): %s" % a)
            continue
        for b in sorted(edges[a]):
            rb, nb = layer_of(b)
            if rb is None:
                continue  # reported as its own line
            if rb > ra:
                out.append("layer violation: %s (%s) includes %s (%s) at %s"
                           % (a, na, b, nb, edges[a][b]))
            elif b.endswith("-int") and rb != ra:
                out.append("private header of another layer: %s includes %s at %s"
                           % (a, b, edges[a][b]))
    return out


def strip_c(text):
    """Blanks comments, string and character literals and preprocessor lines,
    keeping every newline so that line numbers stay right."""
    out = []
    i, n = 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and DIRECTIVE_RE.match(text, i):
            # a directive, with its backslash continuations
            while i < n and text[i] != "\n":
                if text[i] == "\\" and i + 1 < n and text[i + 1] == "\n":
                    out.append("\n")
                    i += 2
                    continue
                if text.startswith("/*", i):  # a comment inside the directive
                    end = text.find("*/", i + 2)
                    end = n if end < 0 else end + 2
                    out.append("\n" * text.count("\n", i, end))
                    i = end
                    continue
                i += 1
            continue
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(" " + "\n" * text.count("\n", i, end))
            i = end
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(c + c)
            i = j + 1
            continue
        out.append(c)
        if c == "\n":
            at_line_start = True
        elif c not in " \t":
            at_line_start = False
        i += 1
    return "".join(out)


def include_edges(root, files):
    """{module: {module: "file:line" of the first include making the edge}}."""
    edges = {}
    fileset = set(files)
    for path in files:
        src = module_of(path)
        edges.setdefault(src, {})
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        for m in INCLUDE_RE.finditer(text):
            inc = m.group(1)
            beside = os.path.normpath(os.path.join(os.path.dirname(path), inc))
            target = inc if inc in fileset else beside if beside in fileset else None
            if target is None:
                continue
            dst = module_of(target)
            if dst != src and dst not in edges[src]:
                line = text.count("\n", 0, m.start()) + 1
                edges[src][dst] = "%s:%d" % (path, line)
    return edges


def cycles(edges):
    """One cycle (a list of modules, first repeated last) per strongly
    connected component of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def strongconnect(v):
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    sccs.append(set(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    found = []
    for comp in sccs:
        # the shortest way from the component's first module back to itself
        start = min(comp)
        prev, queue, last = {start: None}, [start], None
        for v in queue:  # grows while it is walked: breadth first
            if start in edges.get(v, {}):
                last = v
                break
            for w in sorted(edges.get(v, {})):
                if w in comp and w not in prev:
                    prev[w] = v
                    queue.append(w)
        path, u = [], last
        while u is not None:
            path.append(u)
            u = prev[u]
        path.reverse()
        path.append(start)
        found.append((path, sorted(comp)))
    return found


def functions(stripped):
    """(name, first line, length in lines) of each top-level function body."""
    out = []
    depth = 0
    paren = 0
    head_start = 0  # where the current top-level declaration began
    body = None     # (name, line) while inside a function body
    line = 1
    for i, c in enumerate(stripped):
        if c == "\n":
            line += 1
        elif c == "(":
            paren += 1
        elif c == ")":
            paren -= 1
        elif c == "{":
            if depth == 0:
                body = function_head(stripped, head_start, i)
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                if body is not None:
                    name, first = body
                    out.append((name, first, line - first + 1))
                body = None
                head_start = i + 1
        elif c == ";" and depth == 0 and paren == 0:
            head_start = i + 1
    return out


def function_head(text, start, brace):
    """(name, line of the name) when text[start:brace] is a function
    definition's head, else None (initialiser, struct/enum/union body)."""
    head = text[start:brace].rstrip()
    # trailing __attribute__((...)) after the parameter list
    while True:
        m = re.search(r"__attribute__\s*\(\(.*\)\)\s*$", head, re.S)
        if not m:
            break
        head = head[: m.start()].rstrip()
    if not head.endswith(")") or "=" in re.sub(r"\([^()]*\)", "", head):
        return None
    # match the parameter list's '(' backwards
    level, j = 0, len(head) - 1
    while j >= 0:
        if head[j] == ")":
            level += 1
        elif head[j] == "(":
            level -= 1
            if level == 0:
                break
        j -= 1
    names = IDENT_RE.findall(head[:j])
    if not names or names[-1] in KEYWORDS:
        return None
    name = names[-1]
    pos = start + head.rfind(name, 0, j)
    return name, text.count("\n", 0, pos) + 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--max-file-lines", type=int, default=800)
    ap.add_argument("--max-func-lines", type=int, default=120)
    ap.add_argument("--types-apart", action="store_true",
                    help="make each foo-t.h (types only) a module of its own instead of "
                         "part of foo")
    ap.add_argument("--graph", action="store_true", help="also print every module edge")
    ap.add_argument("--list", action="store_true",
                    help="also print every function as file:line:name:length")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    global TYPES_APART
    TYPES_APART = args.types_apart

    files = tracked_sources(root)
    if not files:
        print("check-structure: no sources under %s" % root, file=sys.stderr)
        return 2
    problems = {"cycle": 0, "layer": 0, "file": 0, "function": 0, "proxy": 0}

    edges = include_edges(root, files)
    if args.graph:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print("edge: %s -> %s (%s)" % (a, b, edges[a][b]))
    for line in layer_problems(edges):
        problems["layer"] += 1
        print(line)
    public = {a: {b: v for b, v in bs.items() if not b.endswith("-int")}
              for a, bs in edges.items() if not a.endswith("-int")}
    for path, comp in cycles(public):
        problems["cycle"] += 1
        steps = " -> ".join("%s (%s)" % (b, edges[a][b]) for a, b in zip(path, path[1:]))
        print("include cycle: %s -> %s" % (path[0], steps))
        if len(comp) > len(path) - 1:
            print("  modules in the same circle: %s" % ", ".join(comp))

    nfuncs = 0
    for path in files:
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        nlines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
        if path.endswith(".c") and nlines > args.max_file_lines:
            problems["file"] += 1
            print("file too long: %s: %d lines (limit %d)" % (path, nlines, args.max_file_lines))
        stripped = strip_c(text)
        for name, first, length in functions(stripped):
            nfuncs += 1
            if args.list:
                print("function: %s:%d:%s:%d" % (path, first, name, length))
            if length > args.max_func_lines:
                problems["function"] += 1
                print("function too long: %s:%d:%s:%d lines (limit %d)"
                      % (path, first, name, length, args.max_func_lines))
        if path in RUNTIME_HEADERS:
            for lineno, src in enumerate(stripped.split("\n"), 1):
                for ident in sorted(set(re.findall(r"\bproxy_\w*", src))):
                    problems["proxy"] += 1
                    print("runtime names the proxy: %s:%d: %s" % (path, lineno, ident))

    total = sum(problems.values())
    counts = "%d include cycle(s), %d layer problem(s), %d file(s) over %d lines, %d function(s) over %d lines, " \
             "%d proxy_ name(s) in %s" % (problems["cycle"], problems["layer"], problems["file"], args.max_file_lines,
                                          problems["function"], args.max_func_lines,
                                          problems["proxy"], " / ".join(RUNTIME_HEADERS))
    print("check-structure: %s: %d files, %d modules, %d functions; %s"
          % ("FAIL" if total else "ok", len(files), len(edges), nfuncs, counts))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
