#!/usr/bin/env bash
# TLS benchmarks for sipedge (loopback, bounded in time):
#   1. full TLS 1.3 handshakes per second one worker sustains (-w 1): the
#      client (bench/tls_handshake.c, no session resumption) is pinned to the
#      last CPU, and the worker's CPU time is read from /proc, so the figure
#      per worker CPU-second holds even when the client is the bottleneck;
#   2. sipedge RSS per idle TLS connection with 10,000 connections open
#      (-w 2; each connection sends one CRLFCRLF keep-alive, then idles),
#      without and with --tls-mutual (the server then keeps a client chain).
#
# Usage: bench/tls_bench.sh [BUILD_DIR]      (default: build, a Release build)
#   cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j
#   bench/tls_bench.sh build
# Environment: TLS_BENCH_SECONDS (rate run, default 15), TLS_BENCH_CONNS
# (default 10000), TLS_BENCH_SETTLE (seconds idle before RSS, default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${TLS_BENCH_SECONDS:-15}
conns=${TLS_BENCH_CONNS:-10000}
settle=${TLS_BENCH_SETTLE:-15}
for b in sipedge tls_handshake; do
  [ -x "$build/$b" ] || { echo "tls_bench: $build/$b missing (build with CMake first)" >&2; exit 1; }
done
# One descriptor per connection on each side, plus slack.
ulimit -n $((conns + 1024)) 2>/dev/null || {
  echo "tls_bench: cannot raise the descriptor limit to $((conns + 1024))" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/tls_bench.XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
scripts/gen-devcerts.sh "$work/certs"
c=$work/certs
last_cpu=$(( $(nproc) - 1 ))

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start WORKERS EXTRA...: runs sipedge in the background, sets $pid and $tls.
start() {
  local workers=$1; shift
  local p; p=$(port); tls=$(port)
  "$build/sipedge" -w "$workers" -l "udp:127.0.0.1:$p" -l "tcp:127.0.0.1:$p" \
    -l "tls:127.0.0.1:$tls" --tls-cert "$c/server.crt" --tls-key "$c/server.key" \
    --tls-ca "$c/ca.crt" --registrar --max-connections $((conns + 1000)) "$@" \
    2>"$work/sipedge.log" &
  pid=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tls") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "tls_bench: sipedge did not start:" >&2; cat "$work/sipedge.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=; }

echo "== full TLS 1.3 handshakes, sipedge -w 1, ${secs} s"
start 1
taskset -c "$last_cpu" "$build/tls_handshake" rate -p "$tls" -n 10000000 -t "$secs" -c 32 \
  --ca "$c/ca.crt" --pid "$pid" || true
stop

echo "== ${conns} idle TLS connections, sipedge -w 2"
start 2
"$build/tls_handshake" hold -p "$tls" -n "$conns" -c 64 -t 120 --settle "$settle" \
  --ca "$c/ca.crt" --pid "$pid"
stop

echo "== ${conns} idle TLS connections, sipedge -w 2 --tls-mutual"
start 2 --tls-mutual
"$build/tls_handshake" hold -p "$tls" -n "$conns" -c 64 -t 120 --settle "$settle" \
  --ca "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key" --pid "$pid"
stop
