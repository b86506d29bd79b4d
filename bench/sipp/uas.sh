#!/usr/bin/env bash
# A sipp UAS answering every call (uas_call.xml: 180, 200 with SDP, then
# 200 to the BYE) and every out-of-call request such as a proxy's OPTIONS
# health probe (-aa): the upstream of a proxy under load in a lab.
#
# Usage: bench/sipp/uas.sh [options] [-- sipp options]
#   -p PORT    listen port (default 5070)
#   -t T       u1 (UDP) or t1 (TCP) (default u1)
#   -i IP      listen address (default 127.0.0.1)
#   -o DIR     statistics and errors go there (default ./sipp-uas-<time>)
# Point the proxy's upstream at it, e.g. sipedge -u 'sip:127.0.0.1:5070;transport=udp'.
# Stop with Ctrl-C (or q in sipp's screen).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
port=5070 tr=u1 ip=127.0.0.1 out=""
while getopts "p:t:i:o:h" o; do
  case $o in
    p) port=$OPTARG ;; t) tr=$OPTARG ;; i) ip=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = -- ] && shift
command -v sipp >/dev/null || { echo "uas.sh: sipp not found (Debian: sip-tester)" >&2; exit 2; }
out=${out:-sipp-uas-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
scen="$here/uas_call.xml"
if [ "${tr#t}" != "$tr" ]; then  # over TCP the UDP-only timewait only fails calls
  sed 's/<timewait[^>]*\/>//' "$scen" > "$out/uas_call.xml"
  scen="$out/uas_call.xml"
fi
echo "uas.sh: answering on $tr $ip:$port; statistics in $out/" >&2
exec sipp -sf "$scen" -t "$tr" -i "$ip" -p "$port" -aa -buff_size 2097152 \
  -trace_stat -stf "$out/stat.csv" -fd 5 -trace_err -error_file "$out/errors.log" "$@"
