#!/usr/bin/env bash
# Runs sipedge's wire-level scenario tests one after another, under one global
# time bound, and prints a final "N passed, M failed" line (the sum of every
# step's own final line; a step that ends without one counts as 1 failed).
#
# Usage: tests/scenarios/run_all.sh [--proxy sipedge|kamailio] [--quick]
#   --proxy kamailio  harness self-test: the sipp flows through Kamailio
#                     (bench/kamailio/kamailio-proxy.cfg); the torture table is
#                     sipedge's contract and is not run
#   --quick           leave out the 32 s Timer B flow
# Environment:
#   SIPEDGE_BIN                  binary under test (default build/sipedge)
#   SIPEDGE_TESTDATA             corpus root (default ../shared/testdata)
#   SIPEDGE_SCENARIO_TIMEOUT     global bound in seconds (default 1500)
#   SIPEDGE_KEEP_TMP=1           keep every temp dir (logs), not only failing ones
# Exit status: 0 all passed, 1 something failed, 77 nothing ran (no binary).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
proxy=sipedge
quick=0
while [ $# -gt 0 ]; do
  case $1 in
    --proxy) proxy=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: $0 [--proxy sipedge|kamailio] [--quick]" >&2; exit 2 ;;
  esac
done

budget=${SIPEDGE_SCENARIO_TIMEOUT:-1500}
start=$(date +%s)
total_pass=0
total_fail=0
skipped=0
ran=0

# step NAME BOUND_SECONDS CMD...: runs CMD with at most min(BOUND, time left).
step() {
  local name=$1 bound=$2; shift 2
  local left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -le 5 ]; then
    echo "FAIL $name: not started, global time bound of ${budget}s used up"
    total_fail=$((total_fail + 1))
    return
  fi
  [ "$bound" -gt "$left" ] && bound=$left
  echo "== $name"
  local out rc
  out=$(mktemp)
  # SIGTERM first: the Python steps turn it into an exception and stop every
  # process they started; SIGKILL 15 s later only if that hangs.
  timeout --kill-after=15 "$bound" "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  local last
  last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
  rm -f "$out"
  if [ "$rc" = 77 ]; then
    skipped=$((skipped + 1))
    return
  fi
  ran=$((ran + 1))
  if [ -n "$last" ]; then
    total_pass=$((total_pass + $(echo "$last" | cut -d' ' -f1)))
    total_fail=$((total_fail + $(echo "$last" | cut -d' ' -f3)))
    if [ "$rc" != 0 ] && [ "$(echo "$last" | cut -d' ' -f3)" = 0 ]; then
      echo "FAIL $name: exit status $rc"
      total_fail=$((total_fail + 1))
    fi
  else
    [ "$rc" = 124 ] && echo "FAIL $name: timed out after ${bound}s" \
                    || echo "FAIL $name: ended (status $rc) without a result line"
    total_fail=$((total_fail + 1))
  fi
}

calls="$py $here/run_sipp_calls.py --proxy $proxy"
[ "$proxy" = sipedge ] && step "tls: every leg, mutual TLS, reload, handshake timeout" 300 $py "$here/test_tls.py"
[ "$proxy" = sipedge ] && step "sticky flows: Kamailio registrar, 2-instance pool, TLS phones" 300 $py "$here/test_sticky.py"
[ "$proxy" = sipedge ] && step "edge policy: relay, tokens, closed flows, --domain" 240 $py "$here/test_edge_policy.py"
[ "$proxy" = sipedge ] && step "upstream failover by OPTIONS probes" 150 $py "$here/test_upstream_ha.py"
[ "$proxy" = sipedge ] && step "per-worker private UDP ports" 150 $py "$here/test_worker_ports.py"
[ "$proxy" = sipedge ] && step "peer sites and the new-INVITE rate limit" 200 $py "$here/test_peer_overload.py"
[ "$proxy" = sipedge ] && step "management port: /stats, /metrics, over TLS" 200 $py "$here/test_stats.py"
[ "$proxy" = sipedge ] && step "connection limits: slowloris, TLS handshakes, idle, per-IP, slow readers" 240 $py "$here/test_limits_conn.py"
[ "$proxy" = sipedge ] && step "SIP Server and peer site by name (SRV, A)" 150 $py "$here/test_upstream_dns.py"
[ "$proxy" = sipedge ] && step "built-in registrar: digest, certificates, ownership, limits" 240 $py "$here/test_registrar.py"
[ "$proxy" = sipedge ] && step "limits under abuse: DNS names, management port, per-source INVITEs" 200 \
  $py "$here/test_limits_abuse.py"
[ "$proxy" = sipedge ] && step "docs: README flag table and Try a call, man page" 120 $py "$here/test_docs.py"
[ "$proxy" = sipedge ] && step "bench/sipload end to end: calls, storms, phones" 150 $py "$here/test_sipload.py"
[ "$proxy" = sipedge ] && step "hostile input: no-To 486, smuggling, control bytes, spoofed responses" 240 $py "$here/test_edge_input.py"
[ "$proxy" = sipedge ] && step "operations: upstream owner, failover, /flows, /health" 400 $py "$here/test_ops.py"
if [ "$proxy" = sipedge ]; then
  step "torture corpus (udp, tcp, tcp byte by byte)" 900 $py "$here/test_torture.py"
fi
step "calls udp-udp, tcp-tcp, tcp-udp (200 calls each)" 240 \
  $calls --small --legs udp-udp,tcp-tcp,tcp-udp
step "cancelled calls" 180 $calls --flow cancel --calls 50 --rate 50 --legs udp-udp,tcp-tcp,tcp-udp
step "register then call" 180 $calls --flow reg --calls 50 --rate 50 --legs udp-udp,tcp-tcp,tcp-udp
if [ "$quick" = 0 ]; then
  step "unanswered INVITE -> 408 (Timer B, ~32 s per leg)" 200 \
    $calls --flow timeout --legs udp-udp,tcp-tcp
fi

echo "== scenario tests: $ran run, $skipped skipped, $(( $(date +%s) - start ))s"
echo "$total_pass passed, $total_fail failed"
if [ "$total_fail" -gt 0 ]; then exit 1; fi
if [ "$ran" = 0 ]; then exit 77; fi
exit 0
