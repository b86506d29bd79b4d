#!/usr/bin/env bash
# A REGISTER flood with sipp (uac_register.xml): each scenario call is one
# phone registering (answering a 401/407 digest challenge when the
# registrar sends one), at a moderate rate.
#
# Usage: bench/sipp/register.sh [options] PROXY[:PORT] [-- sipp options]
#   -k DOMAIN  the registrar's domain, Request-URI and AORs (required)
#   -r RATE    REGISTERs (phones) per second (default 50)
#   -n N       phones (default 10 s worth: 10 x RATE)
#   -u FILE    users, one per line: user;password (default: u000001 .. uN,
#              password "secret", written to the output directory)
#   -e SEC     Expires (default 3600; 0 unregisters the same users)
#   -t T       u1 (all on one UDP socket), tn (a TCP connection per phone),
#              t1 (default u1)
#   -i IP      local address (default: sipp's choice)
#   -o DIR     statistics and errors go there (default ./sipp-register-<time>)
# Debian's sipp has no TLS: for TLS phones and storms of new TLS connections
# use build/sipload register (bench/README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rate=50 n="" users="" expires=3600 tr=u1 ip="" out="" domain=""
while getopts "k:r:n:u:e:t:i:o:h" o; do
  case $o in
    k) domain=$OPTARG ;; r) rate=$OPTARG ;; n) n=$OPTARG ;; u) users=$OPTARG ;;
    e) expires=$OPTARG ;; t) tr=$OPTARG ;; i) ip=$OPTARG ;; o) out=$OPTARG ;;
    *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] && [ -n "$domain" ] || {
  echo "usage: $0 -k DOMAIN [options] PROXY[:PORT] [-- sipp options] (-h)" >&2; exit 2; }
proxy=$1; shift
[ "${1:-}" = -- ] && shift
command -v sipp >/dev/null || { echo "register.sh: sipp not found (Debian: sip-tester)" >&2; exit 2; }
n=${n:-$((rate * 10))}
out=${out:-sipp-register-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
inf="$out/phones.csv"  # sipp's injection file: USER;[authentication ...]
if [ -z "$users" ]; then
  users="$out/users.csv"
  for i in $(seq 1 "$n"); do printf 'u%06d;secret\n' "$i"; done > "$users"
fi
{ echo SEQUENTIAL
  awk -F';' 'NF >= 2 && $1 != "" && $1 !~ /^(SEQUENTIAL|RANDOM|USER)$/ {
    printf "%s;[authentication username=%s password=%s]\n", $1, $1, $2 }' "$users"; } > "$inf"
args=(-sf "$here/uac_register.xml" -inf "$inf" -t "$tr" -r "$rate" -m "$n"
      -key dest "$domain" -set expires "$expires" -buff_size 2097152
      -trace_stat -stf "$out/stat.csv" -fd 5 -trace_err -error_file "$out/errors.log")
[ -n "$ip" ] && args+=(-i "$ip")
[ "$tr" = tn ] && args+=(-max_socket 10000)
echo "register.sh: $n phones at $rate/s to $domain via $proxy ($tr); statistics in $out/" >&2
exec sipp "${args[@]}" "$@" "$proxy"
