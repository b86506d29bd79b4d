#!/usr/bin/env bash
# Calls through a proxy at a moderate rate with sipp (UDP or TCP):
# INVITE / 100 / 180 / 200 / ACK / pause / BYE / 200 (uac_call.xml).
#
# Usage: bench/sipp/calls.sh [options] PROXY[:PORT] [-- sipp options]
#   -r RATE    calls per second (default 100)
#   -m N       calls in all (default 10 s worth: 10 x RATE)
#   -d MS      call length, ACK to BYE (default 1000)
#   -l N       calls in progress at most (default 2 x RATE x call length + 100)
#   -t T       sipp transport: u1 (one UDP socket), un (one per call), t1, tn (default u1)
#   -k DEST    Request-URI and To domain: the SIP Server's domain, or the UAS
#              behind the proxy as HOST:PORT (default: PROXY)
#   -s USER    the called user (default service)
#   -i IP      local address (default: sipp's choice)
#   -o DIR     statistics and errors go there (default ./sipp-calls-<time>)
# Prints sipp's final screen; exit status is sipp's (0: every call succeeded).
# sipp's multi-socket mode (-t un) stalls above ~4,000 calls/s on a small VM,
# and one sipp process on one core saturates before a proxy does: for
# capacity figures use build/sipload (bench/README.md), sipp for functional
# load on real deployments.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rate=100 calls="" len=1000 limit="" tr=u1 dest="" user=service ip="" out=""
while getopts "r:m:d:l:t:k:s:i:o:h" o; do
  case $o in
    r) rate=$OPTARG ;; m) calls=$OPTARG ;; d) len=$OPTARG ;; l) limit=$OPTARG ;;
    t) tr=$OPTARG ;; k) dest=$OPTARG ;; s) user=$OPTARG ;; i) ip=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [options] PROXY[:PORT] [-- sipp options] (-h)" >&2; exit 2; }
proxy=$1; shift
[ "${1:-}" = -- ] && shift
command -v sipp >/dev/null || { echo "calls.sh: sipp not found (Debian: sip-tester)" >&2; exit 2; }
calls=${calls:-$((rate * 10))}
limit=${limit:-$((rate * 2 * (len + 1000) / 1000 + 100))}
dest=${dest:-$proxy}
out=${out:-sipp-calls-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
args=(-sf "$here/uac_call.xml" -t "$tr" -r "$rate" -m "$calls" -l "$limit" -d "$len"
      -key dest "$dest" -s "$user" -buff_size 2097152
      -trace_stat -stf "$out/stat.csv" -fd 5 -trace_err -error_file "$out/errors.log")
[ -n "$ip" ] && args+=(-i "$ip")
[ "$tr" = un ] && args+=(-max_socket 64)
echo "calls.sh: $calls calls at $rate/s to $user@$dest via $proxy ($tr); statistics in $out/" >&2
exec sipp "${args[@]}" "$@" "$proxy"
