#!/usr/bin/env bash
# Where sipedge's CPU goes at a given load: perf samples of the proxy (one
# worker on CPU 0) while sipload (CPU 1) loads it, printed as the share of
# kernel, libraries and sipedge, then the hottest symbols.
#
#   bench/profile.sh udp RATE      UDP calls at RATE/s (30 s, sampled 8 s
#                                  from second 20: the transactions of the
#                                  first calls are lingering by then)
#   bench/profile.sh storm PHONES  a closed-loop storm of new TLS phones
#                                  (100 at a time), sampled throughout
# Needs perf (linux-perf) and build/ (Release). A benchmark, never a test.
set -euo pipefail
cd "$(dirname "$0")/.."
wl=${1:-udp}
n=${2:-}
b=build
out=$(mktemp -d /tmp/sipedge-profile.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
command -v perf >/dev/null || { echo "profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 2; }
scripts/gen-devcerts.sh "$b/devcerts" >/dev/null
c=$b/devcerts
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sip=$(port); tls=$(port); uas=$(port)
# a stand-in answers sipedge's first OPTIONS probe until sipload's UAS is up
python3 - "$uas" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.settimeout(10)
d, a = s.recvfrom(65535)
h = d.decode(errors="replace").split("\r\n")
keep = [l for l in h if l.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
s.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), a)
PY
standin=$!
sleep 0.2
taskset -c 0 "$b/sipedge" -w 1 --log-level warn -l "udp:127.0.0.1:$sip" -l "tls:127.0.0.1:$tls" \
    --tls-cert "$c/server-chain.crt" --tls-key "$c/server.key" --tls-ca "$c/ca.crt" \
    -u "sip:127.0.0.1:$uas" 2>"$out/sipedge.log" &
se=$!
wait "$standin" || { echo "profile.sh: sipedge did not probe its SIP Server" >&2; exit 1; }
case $wl in
udp)
    rate=${n:-12000}
    taskset -c 1 "$b/sipload" call --proxy "127.0.0.1:$sip" --uas "127.0.0.1:$uas" \
        --rate "$rate" --duration 30 --cpus 1 -q >"$out/load.json" &
    gen=$!
    sleep 20
    perf record -F 2000 -g -p "$se" -o "$out/perf.data" -- sleep 8 >/dev/null 2>&1
    wait "$gen" || true
    ;;
storm)
    phones=${n:-10000}
    perf record -F 2000 -g -p "$se" -o "$out/perf.data" >/dev/null 2>&1 &
    rec=$!
    taskset -c 1 "$b/sipload" register --proxy "127.0.0.1:$sip" --reg-proxy "127.0.0.1:$tls" \
        --uas "127.0.0.1:$uas" --ca "$c/ca.crt" --rate 0 --phones "$phones" \
        --max-concurrent 100 --duration 1 --cpus 1 -q >"$out/load.json" &
    wait $! || true
    kill -INT "$rec"
    wait "$rec" || true
    ;;
*) echo "profile.sh: workload udp or storm" >&2; exit 2 ;;
esac
echo "== load (sipload)"
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
c = d["calls"] if d["mode"] == "call" else d["registrations"]
print({k: c[k] for k in ("ok", "failed") if k in c}, "generator CPU", d["cpu"]["total_share"])' "$out/load.json"
echo "== share of sipedge's samples by object"
perf report -i "$out/perf.data" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
echo "== hottest symbols"
perf report -i "$out/perf.data" --no-children --sort dso,symbol -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
