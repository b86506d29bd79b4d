#!/usr/bin/env bash
# Installs every Debian package sipedge needs to build, test and benchmark.
# Idempotent: checks with dpkg first and only calls apt-get for what is missing.
# --package: also what scripts/check-package.sh needs (debootstrap; cpack's
# dpkg-shlibdeps comes with build-essential).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  android-libboringssl-dev liburcu-dev libjemalloc-dev libc-ares-dev
  libcriterion-dev
  clang libclang-rt-14-dev clang-format
  sip-tester kamailio kamailio-tls-modules kamailio-extra-modules
  dnsmasq-base openssl python3 iproute2 procps python3-matplotlib
)
if [ "${SIPEDGE_WITH_BARESIP:-1}" = 1 ]; then PKGS+=(baresip-core); fi
if [ "${1:-}" = --package ]; then PKGS+=(debootstrap dpkg-dev); fi

missing=()
for p in "${PKGS[@]}"; do
  s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$s" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# kamailio's package enables a system service; tests start their own instances.
if command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now kamailio >/dev/null 2>&1 || true
fi
