#!/usr/bin/env bash
# Installs what is missing, builds a release sipedge, and runs it on its
# embedded default: loopback UDP/TCP 5060 and TLS 5061 with generated
# development certificates (CA in build/devcerts/ca.crt), the built-in
# registrar, the management port on http://127.0.0.1:9090/stats. Extra
# arguments are passed to sipedge.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
scripts/gen-devcerts.sh build/devcerts

certs=build/devcerts
exec build/sipedge \
  --listen udp:127.0.0.1:5060 --listen tcp:127.0.0.1:5060 --listen tls:127.0.0.1:5061 \
  --tls-cert "$certs/server-chain.crt" --tls-key "$certs/server.key" --tls-ca "$certs/ca.crt" \
  --stats-listen 127.0.0.1:9090 --registrar "$@"
