#!/usr/bin/env bash
# A softphone (baresip) registered over TLS to the sipedge of scripts/run.sh,
# to try a call: see README "Try a call".
#
# Usage: scripts/try-phone.sh NAME [BARESIP-OPTION]...
#   NAME registers as sip:NAME@127.0.0.1:5061;transport=tls, answers calls
#   by itself and sends a 440 Hz tone; at its prompt "/dial OTHER" calls
#   the phone registered as OTHER, "/hangup" ends the call, "/quit" quits.
#   Options go to baresip, e.g. -e "/dial bob" (run at start), -t 20 (quit
#   after 20 s).
# Environment:
#   SIPEDGE_TLS   sipedge's TLS listener (default 127.0.0.1:5061)
#   SIPEDGE_CA    CA that signed its certificate (default build/devcerts/ca.crt)
#   TMPDIR        baresip's configuration goes to $TMPDIR/sipedge-phone-NAME
#                 (default /tmp/sipedge-phone-NAME), rewritten every start
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[A-Za-z0-9._-]+$ ]]; then
  echo "usage: $0 NAME [BARESIP-OPTION]..." >&2
  exit 2
fi
name=$1
shift
tls=${SIPEDGE_TLS:-127.0.0.1:5061}
ca=$(realpath "${SIPEDGE_CA:-build/devcerts/ca.crt}")
dir=${TMPDIR:-/tmp}/sipedge-phone-$name
command -v baresip >/dev/null || { echo "try-phone: baresip not found: apt-get install baresip-core" >&2; exit 1; }
[ -s "$ca" ] || { echo "try-phone: no CA at $ca: run scripts/run.sh first" >&2; exit 1; }

mkdir -p "$dir"
# Loopback only, signalling and media; opus because the tone source
# (ausine) only runs at 48 kHz; no sound card needed.
cat >"$dir/config" <<EOF
poll_method epoll
net_interface 127.0.0.1
sip_cafile $ca
module_path /usr/lib/baresip/modules
$([ -t 0 ] && echo "module stdio.so")
module opus.so
module ausine.so
module_app account.so
module_app menu.so
audio_source ausine,440
audio_player aufile,/dev/null
audio_alert none
EOF
echo "<sip:$name@$tls;transport=tls>;regint=600;answermode=auto;audio_codecs=opus/48000/2" >"$dir/accounts"
exec baresip -f "$dir" "$@"
