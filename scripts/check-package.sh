#!/usr/bin/env bash
# Builds the Debian package and installs it the way an operator would, on a
# fresh Debian 12 made with debootstrap: `apt install ./sipedge_*.deb` must
# pull every runtime library, systemd-analyze must accept the unit, and the
# installed sipedge must run as its system user on /etc/default/sipedge.
#
# Usage: scripts/check-package.sh [--refresh-chroot] [--keep]
#   --refresh-chroot  debootstrap a new base even if a cached one exists
#   --keep            leave the chroot in place (its path is printed)
# Environment:
#   SIPEDGE_PKG_BUILD      build directory (default build-pkg)
#   SIPEDGE_CHROOT_CACHE   where the debootstrapped base is kept as a tar
#                          (default /var/cache/sipedge-check)
#   SIPEDGE_DEBIAN_MIRROR  Debian mirror (default: the one apt uses here)
#
# Needs root (debootstrap, chroot, mount). Not part of scripts/test.sh: the
# first run debootstraps (about 5 min on a 2-core machine); later runs
# unpack the cached base and take about a minute plus the build.
# Prints "N passed, M failed" at the end; exit status 0 when all passed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

refresh=0
keep=0
for a in "$@"; do
  case $a in
    --refresh-chroot) refresh=1 ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--refresh-chroot] [--keep]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "check-package: needs root (debootstrap, chroot)" >&2; exit 2; }

SUITE=bookworm
BUILD=${SIPEDGE_PKG_BUILD:-build-pkg}
CACHE=${SIPEDGE_CHROOT_CACHE:-/var/cache/sipedge-check}
START=$SECONDS
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }
die() { fail "$1"; echo "$passed passed, $failed failed ($((SECONDS - START)) s)"; exit 1; }

# The Debian mirror and security archive apt uses on this machine, for $SUITE.
apt_uris() {
  /usr/bin/python3 - "$SUITE" <<'EOF'
import glob, re, sys
suite = sys.argv[1]
found = {}
def add(types, uris, suites):
    if "deb" in types:
        for u in uris:
            for s in suites:
                found.setdefault(s, u.rstrip("/"))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for l in lines:
        l = re.sub(r"\[[^]]*\]", "", l.split("#")[0]).split()
        if len(l) >= 3:
            add([l[0]], [l[1]], [l[2]])
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        f = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if f.get("Enabled", "yes") != "no":
            add(f.get("Types", "").split(), f.get("URIs", "").split(), f.get("Suites", "").split())
print(found.get(suite, "http://deb.debian.org/debian"), found.get(suite + "-security", ""))
EOF
}

# ---- 1. the package
echo "== build and cpack ($BUILD)"
scripts/install-deps.sh --package || die "install-deps --package"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_TESTS=OFF >/dev/null || die "cmake configure"
if ! out=$(cmake --build "$BUILD" -j"$(nproc)" 2>&1); then
  echo "$out" | grep -E "error|warning:" | head -20
  die "build"
fi
rm -f "$BUILD"/sipedge_*.deb
(cd "$BUILD" && cpack -G DEB >cpack.log 2>&1) || { cat "$BUILD/cpack.log"; die "cpack -G DEB"; }
deb=$(ls "$BUILD"/sipedge_*.deb)
depends=$(dpkg-deb -f "$deb" Depends)
missing=""
for p in android-libboringssl liburcu8 libc-ares2 libjemalloc2 libc6; do
  [[ ", $depends," == *", $p "* || ", $depends," == *", $p,"* ]] || missing+=" $p"
done
if [ -z "$missing" ]; then pass "$(basename "$deb"): Depends: $depends"
else fail "$(basename "$deb"): Depends lacks$missing: $depends"; fi
if dpkg-deb -I "$deb" conffiles 2>/dev/null | grep -qx /etc/default/sipedge; then
  pass "/etc/default/sipedge is a conffile"
else
  fail "/etc/default/sipedge is not a conffile"
fi

# ---- 2. a fresh Debian 12: cached debootstrap base, unpacked anew each run
read -r MIRROR SECURITY < <(apt_uris)
MIRROR=${SIPEDGE_DEBIAN_MIRROR:-$MIRROR}
base="$CACHE/$SUITE-minbase-systemd.tar"
if [ "$refresh" = 1 ] || [ ! -s "$base" ]; then
  echo "== debootstrap $SUITE from $MIRROR (cached in $base)"
  t=$SECONDS
  mkdir -p "$CACHE"
  tmp=$(mktemp -d /var/tmp/sipedge-debootstrap.XXXXXX)
  # minbase plus what every Debian 12 server has: systemd (for
  # systemd-analyze in the target) and man-db (for man sipedge)
  if ! timeout 1800 debootstrap --variant=minbase --include=systemd,man-db "$SUITE" "$tmp" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log"
    rm -rf "$tmp"
    die "debootstrap (log: $CACHE/debootstrap.log)"
  fi
  chmod 755 "$tmp"
  tar -C "$tmp" -cf "$base.new" . && mv "$base.new" "$base"
  rm -rf "$tmp"
  echo "   debootstrap took $((SECONDS - t)) s"
fi

chroot_dir=$(mktemp -d /var/tmp/sipedge-chroot.XXXXXX)
sipedge_pid=""
cleanup() {
  [ -n "$sipedge_pid" ] && kill "$sipedge_pid" 2>/dev/null
  umount "$chroot_dir/proc" 2>/dev/null
  if [ "$keep" = 1 ]; then
    echo "chroot kept: $chroot_dir"
  elif ! mountpoint -q "$chroot_dir/proc"; then
    rm -rf --one-file-system "$chroot_dir"
  fi
}
trap cleanup EXIT
in_root() { chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

echo "== fresh $SUITE chroot in $chroot_dir"
tar -C "$chroot_dir" -xf "$base" || die "unpack $base"
chmod 755 "$chroot_dir" # "/" of the chroot: users sipedge and man must reach /usr
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$chroot_dir/etc/apt/sources.list"
mount -t proc proc "$chroot_dir/proc" || die "mount /proc in the chroot"
if in_root getent passwd sipedge >/dev/null || [ -e "$chroot_dir/usr/sbin/sipedge" ]; then
  die "the base already has sipedge"
fi
in_root timeout 600 apt-get update -qq >"$chroot_dir/tmp/apt-update.log" 2>&1 ||
  { cat "$chroot_dir/tmp/apt-update.log"; die "apt-get update in the chroot"; }

# ---- 3. install as an operator would
cp "$deb" "$chroot_dir/root/"
t=$SECONDS
if in_root timeout 600 sh -c "cd /root && apt install -y ./$(basename "$deb")" >"$chroot_dir/tmp/apt-install.log" 2>&1; then
  pulled=$(grep -oE '^Setting up [^ ]+' "$chroot_dir/tmp/apt-install.log" | cut -d' ' -f3 | tr '\n' ' ')
  pass "apt install ./$(basename "$deb") ($((SECONDS - t)) s): set up $pulled"
else
  tail -20 "$chroot_dir/tmp/apt-install.log"
  die "apt install ./$(basename "$deb")"
fi

if v=$(in_root sipedge --version) && [[ "$v" == "sipedge "*" (commit "*")" ]]; then
  pass "sipedge --version: $v"
else
  fail "sipedge --version: '$v'"
fi
if h=$(in_root sipedge --help) && n=$(grep -cE '^  (-., |    )--' <<<"$h") && [ "$n" -ge 40 ]; then
  pass "sipedge --help: $n options"
else
  fail "sipedge --help: ${n:-0} options"
fi
if in_root getent passwd sipedge >/dev/null && in_root man -w sipedge >/dev/null &&
    [ "$(in_root stat -c %G /etc/sipedge)" = sipedge ]; then
  pass "user sipedge, /etc/sipedge (group sipedge), man -w sipedge: $(in_root man -w sipedge)"
else
  fail "user sipedge, /etc/sipedge or the man page missing"
fi

# ---- 4. the unit, checked by the target's own systemd
if out=$(in_root systemd-analyze verify sipedge.service 2>&1) && [ -z "$out" ]; then
  pass "systemd-analyze verify sipedge.service: no complaint"
else
  fail "systemd-analyze verify sipedge.service: $out"
fi
exposure=$(in_root systemd-analyze security --offline=yes sipedge.service 2>/dev/null |
  grep -o 'Overall exposure level.*' || true)
echo "   systemd-analyze security: ${exposure:-n/a}"

# ---- 5. run it as the unit would: its user, /etc/default/sipedge's flags
# (on free loopback ports instead of 5060/9090, which may be in use here)
ports=$(/usr/bin/python3 -c "import sys; sys.path.insert(0, '$ROOT/tests/scenarios'); import lib
print(lib.free_port('127.0.0.1'), lib.free_port('127.0.0.1', ('tcp',)))")
read -r sip_port stats_port <<<"$ports"
# shellcheck disable=SC2016 # expanded by the chroot's shell
opts=$(in_root sh -c '. /etc/default/sipedge && echo "$SIPEDGE_OPTS"')
opts=${opts//:5060/:$sip_port}
opts=${opts//:9090/:$stats_port}
# shellcheck disable=SC2016 # expanded by the chroot's shell
ids=$(in_root sh -c 'echo "$(id -u sipedge):$(id -g sipedge)"')
# shellcheck disable=SC2086 # SIPEDGE_OPTS is split into words, as systemd does
chroot --userspec="$ids" "$chroot_dir" /usr/sbin/sipedge $opts \
  >"$chroot_dir/tmp/sipedge.log" 2>&1 &
sipedge_pid=$!
stats=$(/usr/bin/python3 - "$stats_port" <<'EOF'
import json, sys, time, urllib.request
end = time.time() + 10
while time.time() < end:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/stats", timeout=2) as r:
            s = json.load(r)
            print(s["version"], s.get("commit", "?"), s["workers"])
            break
    except OSError:
        time.sleep(0.2)
EOF
)
kill -TERM "$sipedge_pid" 2>/dev/null
wait "$sipedge_pid"
rc=$?
sipedge_pid=""
if [ -n "$stats" ] && [ "$rc" = 0 ]; then
  pass "sipedge as user sipedge with /etc/default/sipedge: /stats says version, commit, workers: $stats; SIGTERM -> exit 0"
else
  tail -5 "$chroot_dir/tmp/sipedge.log"
  fail "sipedge as user sipedge: /stats '${stats}', exit status $rc"
fi

# ---- 6. purge leaves nothing of the package behind
if in_root timeout 300 apt-get purge -y -qq sipedge >"$chroot_dir/tmp/apt-purge.log" 2>&1 &&
    [ ! -e "$chroot_dir/usr/sbin/sipedge" ] && [ ! -e "$chroot_dir/etc/default/sipedge" ] &&
    [ ! -e "$chroot_dir/usr/lib/systemd/system/sipedge.service" ]; then
  pass "apt-get purge sipedge: binary, unit and /etc/default/sipedge gone"
else
  tail -5 "$chroot_dir/tmp/apt-purge.log"
  fail "apt-get purge sipedge"
fi

echo "== check-package: $((SECONDS - START)) s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
