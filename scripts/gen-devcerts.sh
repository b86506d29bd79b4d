#!/usr/bin/env bash
# Generates development TLS material for sipedge tests (never for production).
#
# Usage: scripts/gen-devcerts.sh OUTDIR
#
# Writes into OUTDIR (ECDSA P-256 keys, PEM):
#   ca.crt ca.key                 development CA "sipedge dev CA"
#   server.crt server.key         CN=localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1,
#                                 serverAuth+clientAuth, signed by ca
#   server-chain.crt              server.crt followed by ca.crt
#   client.crt client.key         CN=sipedge-client, clientAuth, signed by ca
#   ca2.crt ca2.key               a second, unrelated CA
#   other-ca.crt other-ca.key     CN=localhost with the right SANs, but signed by ca2
#                                 (must fail verification against ca.crt)
#   expired.crt expired.key       CN=localhost, right SANs, signed by ca, valid
#                                 2020-01-01 .. 2020-12-31 (expired)
#   wrongname.crt wrongname.key   signed by ca, CN and SAN wrong.example.com only
#
# Idempotent: when every file above already exists it does nothing. Otherwise
# it regenerates the whole set (so the pieces always match each other).
# Quiet: prints nothing on success; on failure prints openssl's output.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
out=$1

files=(ca.crt ca.key server.crt server.key server-chain.crt client.crt client.key
       ca2.crt ca2.key other-ca.crt other-ca.key expired.crt expired.key
       wrongname.crt wrongname.key)
all=1
for f in "${files[@]}"; do [ -s "$out/$f" ] || { all=0; break; }; done
[ "$all" = 1 ] && exit 0

command -v openssl >/dev/null || { echo "gen-devcerts: openssl not found" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/gen-devcerts.XXXXXX")
log="$work/openssl.log"
trap 'rm -rf "$work"' EXIT

ossl() {
  if ! openssl "$@" >>"$log" 2>&1; then
    echo "gen-devcerts: openssl $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}

key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

# CA: self-signed, 10 years.
mkca() { # name CN
  key "$work/$1.key"
  ossl req -new -x509 -sha256 -days 3650 -key "$work/$1.key" -out "$work/$1.crt" \
    -subj "/O=sipedge dev/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
}

# Leaf signed by a CA through `openssl ca`, which (unlike `x509 -req` in
# OpenSSL 3.0) accepts explicit -startdate/-enddate, needed for the expired cert.
# args: name ca CN SAN EKU [startdate enddate]
mkleaf() {
  local name=$1 ca=$2 cn=$3 san=$4 eku=$5 start=${6:-} end=${7:-}
  local d="$work/ca-$name"
  mkdir -p "$d/new"
  : >"$d/index.txt"
  cat >"$d/ca.cnf" <<EOF
[ca]
default_ca = dev
[dev]
dir = $d
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
certificate = $work/$ca.crt
private_key = $work/$ca.key
default_md = sha256
default_days = 825
policy = anything
unique_subject = no
preserve = yes
copy_extensions = none
x509_extensions = leaf
[anything]
commonName = supplied
organizationName = optional
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyAgreement
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl rand -hex 16 >"$d/serial"
  key "$work/$name.key"
  ossl req -new -key "$work/$name.key" -out "$d/$name.csr" -subj "/O=sipedge dev/CN=$cn"
  local dates=()
  if [ -n "$start" ]; then dates=(-startdate "$start" -enddate "$end"); fi
  ossl ca -batch -notext -config "$d/ca.cnf" "${dates[@]}" \
    -in "$d/$name.csr" -out "$work/$name.crt"
}

LOCAL_SAN="DNS:localhost,IP:127.0.0.1,IP:::1"
mkca ca "sipedge dev CA"
mkca ca2 "sipedge dev CA 2 (untrusted)"
mkleaf server ca localhost "$LOCAL_SAN" "serverAuth,clientAuth"
mkleaf client ca sipedge-client "DNS:sipedge-client" "clientAuth"
mkleaf other-ca ca2 localhost "$LOCAL_SAN" "serverAuth,clientAuth"
mkleaf expired ca localhost "$LOCAL_SAN" "serverAuth,clientAuth" 20200101000000Z 20201231235959Z
mkleaf wrongname ca wrong.example.com "DNS:wrong.example.com" "serverAuth,clientAuth"
cat "$work/server.crt" "$work/ca.crt" >"$work/server-chain.crt"

# Self-checks: the good ones verify, the bad ones fail for the intended reason.
ossl verify -CAfile "$work/ca.crt" -verify_hostname localhost "$work/server.crt"
ossl verify -CAfile "$work/ca.crt" "$work/client.crt"
ossl verify -CAfile "$work/ca2.crt" "$work/other-ca.crt"
if openssl verify -CAfile "$work/ca.crt" "$work/other-ca.crt" >/dev/null 2>&1; then
  echo "gen-devcerts: other-ca.crt unexpectedly verifies against ca.crt" >&2; exit 1; fi
if openssl verify -CAfile "$work/ca.crt" "$work/expired.crt" >/dev/null 2>&1; then
  echo "gen-devcerts: expired.crt unexpectedly verifies" >&2; exit 1; fi
if openssl verify -CAfile "$work/ca.crt" -verify_hostname localhost "$work/wrongname.crt" >/dev/null 2>&1; then
  echo "gen-devcerts: wrongname.crt unexpectedly verifies for localhost" >&2; exit 1; fi

umask 077
for f in "${files[@]}"; do cp "$work/$f" "$out/$f"; done
chmod 600 "$out"/*.key
chmod 644 "$out"/*.crt
