#!/usr/bin/env bash
# Development certificates for a local cluster (the Tiltfile runs this): a throw-away CA, the
# front door's serving certificate (devices reach it through port-forwards on localhost or the
# Service name) and the webhook's (the API server calls devplane-webhook.devplane-system.svc).
# Production sites get theirs from their issuer (docs/in-cluster.md). Existing files are kept,
# so devices and the webhook configuration keep trusting the same CA across Tilt runs.
#
#   manifests/deploy/dev/certificates.sh OUT_DIR
set -euo pipefail
out="${1:?usage: certificates.sh OUT_DIR}"
mkdir -p "$out"
cd "$out"

if [ ! -f ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
    -subj "/CN=devplane development CA" -keyout ca.key -out ca.crt 2>/dev/null
fi

# leaf NAME DNS_NAMES...: a certificate for the names, signed by the CA.
leaf() {
  local name="$1"
  shift
  [ -f "$name.crt" ] && return 0
  local sans=""
  for dns in "$@"; do sans="${sans:+$sans,}DNS:$dns"; done
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile <(printf 'subjectAltName=%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$sans") \
    -out "$name.crt" 2>/dev/null
  rm -f "$name.csr"
}

leaf frontdoor localhost devplane-frontdoor.devplane-system.svc
leaf webhook devplane-webhook.devplane-system.svc devplane-webhook.devplane-system
