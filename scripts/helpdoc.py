#!/usr/bin/python3
"""sipedge's --help as data: the one source of the man page's OPTIONS and
README's flag table, so neither can drift from the binary.

Usage:
  scripts/helpdoc.py table BIN             print README's flag table (Markdown)
  scripts/helpdoc.py man BIN TEMPLATE OUT  write the man page OUT and OUT.gz:
                                           TEMPLATE with @VERSION@, @OPTIONS@
                                           and @NOTES@ filled from BIN
                                           --version and --help

--help's layout (core/cli.c print_help): a usage paragraph, then one entry
per option whose first line is "  -X, --name ARG" or "      --name ARG" with
the help text two spaces or more to its right (or on the next line when the
left column is too wide), continuation lines indented by 33 columns, then a
blank line and a closing paragraph (exit status, signals)."""

import gzip
import re
import subprocess
import sys

OPT_RE = re.compile(r"^  (?:-(?P<short>\w), |    )--(?P<long>[a-z0-9][a-z0-9-]*)"
                    r"(?: (?P<arg>\S+))?(?:\s{2,}(?P<help>\S.*))?$")
DEFAULT_RE = re.compile(r"\s*\(default: ([^()]*)\)")


class Option:
    """One flag: short letter or None, long name, ARG or None, the help
    text as one line, and its "(default: ...)" text or None."""

    def __init__(self, short, long, arg):
        self.short, self.long, self.arg = short, long, arg
        self.lines = []

    @property
    def text(self):
        return " ".join(self.lines)

    @property
    def default(self):
        found = DEFAULT_RE.findall(self.text)
        return found[-1].strip() if found else None

    @property
    def doc(self):
        """The help text without its default (the table has a column for it)."""
        m = list(DEFAULT_RE.finditer(self.text))
        t = self.text
        if m:
            t = t[:m[-1].start()] + t[m[-1].end():]
        return t.strip()

    @property
    def left(self):
        """The flag as --help writes it: "-w, --workers N"."""
        s = f"-{self.short}, " if self.short else ""
        return s + f"--{self.long}" + (f" {self.arg}" if self.arg else "")


def parse(text):
    """(options, notes): the Option list in --help order and the closing
    paragraph as one string. Raises ValueError on a layout it does not know
    (so a change to print_help fails loudly here, not silently in a doc)."""
    opts, notes, state = [], [], "head"
    for line in text.splitlines():
        m = OPT_RE.match(line)
        if state in ("head", "opts") and m:
            state = "opts"
            o = Option(m["short"], m["long"], m["arg"])
            if m["help"]:
                o.lines.append(m["help"].strip())
            opts.append(o)
        elif state == "opts" and line.startswith(" " * 33) and line.strip():
            opts[-1].lines.append(line.strip())
        elif state == "opts" and not line.strip():
            state = "notes"
        elif state == "opts":
            raise ValueError(f"--help line not understood: {line!r}")
        elif state == "notes" and line.strip():
            notes.append(line.strip())
    if not opts:
        raise ValueError("no options found in --help")
    for o in opts:
        if not o.lines:
            raise ValueError(f"--{o.long} has no help text")
    return opts, " ".join(notes)


def run(binary, flag):
    out = subprocess.run([binary, flag], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise SystemExit(f"{binary} {flag}: exit status {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def md_cell(s):
    return s.replace("|", "\\|")


def table(opts):
    """README's flag table: flag, default, what it does."""
    rows = ["| flag | default | what it does |", "|---|---|---|"]
    for o in opts:
        d = md_cell(o.default) if o.default else "—"
        if o.default and " " not in o.default:
            d = f"`{d}`"  # a literal value
        rows.append(f"| `{md_cell(o.left)}` | {d} | {md_cell(o.doc)} |")
    return "\n".join(rows) + "\n"


def roff(s):
    """Escapes text for a roff body line."""
    s = s.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + s if s[:1] in (".", "'") else s


def man_options(opts):
    out = []
    for o in opts:
        flag = (f"\\fB\\-{o.short}\\fR, " if o.short else "") + f"\\fB{roff('--' + o.long)}\\fR"
        if o.arg:
            flag += f" \\fI{roff(o.arg)}\\fR"
        out += [".TP", flag, roff(o.text)]
    return "\n".join(out)


def man(binary, template, path):
    opts, notes = parse(run(binary, "--help"))
    version = run(binary, "--version").strip()
    with open(template) as f:
        page = f.read()
    for key, val in (("@VERSION@", roff(version)), ("@OPTIONS@", man_options(opts)),
                     ("@NOTES@", roff(notes))):
        if key not in page:
            raise SystemExit(f"{template}: no {key}")
        page = page.replace(key, val)
    with open(path, "w") as f:
        f.write(page)
    # what gets installed: compressed, and the same bytes for the same page
    with open(path + ".gz", "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as z:
        z.write(page.encode())


def main(argv):
    if len(argv) == 3 and argv[1] == "table":
        sys.stdout.write(table(parse(run(argv[2], "--help"))[0]))
    elif len(argv) == 5 and argv[1] == "man":
        man(argv[2], argv[3], argv[4])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
