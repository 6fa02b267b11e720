#!/usr/bin/env bash
# Create a private CA and a SuperLink server certificate signed by it.
#
#   bash scripts/deploy/make-certs.sh OUT_DIR [SAN]
#
# OUT_DIR/ca.crt      give to every SuperNode (--root-certificates) and to the flwr CLI
#                     (root-certificates = "..." in $FLWR_HOME/config.toml)
# OUT_DIR/server.pem  SuperLink --ssl-certfile       OUT_DIR/server.key  SuperLink --ssl-keyfile
# OUT_DIR/ca.key      keep it offline: it signs server certificates
# SAN defaults to "IP:127.0.0.1,DNS:localhost"; add the SuperLink's public name/IP, e.g.
# "DNS:superlink,DNS:link.example.org,IP:10.0.0.5". Needs openssl (apt-get install openssl).
set -euo pipefail
out=${1:?usage: make-certs.sh OUT_DIR [SAN]}
san=${2:-IP:127.0.0.1,DNS:localhost}
command -v openssl >/dev/null || { echo "openssl not found: apt-get install -y openssl" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
openssl genrsa -out ca.key 4096 2>/dev/null
openssl req -new -x509 -key ca.key -sha256 -days 365 -subj "/CN=FedDQC test CA" -out ca.crt
openssl genrsa -out server.key 4096 2>/dev/null
openssl req -new -key server.key -subj "/CN=superlink" -out server.csr
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -sha256 \
  -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 600 ca.key server.key
echo "wrote $out/{ca.crt,ca.key,server.pem,server.key} (SAN $san)"
