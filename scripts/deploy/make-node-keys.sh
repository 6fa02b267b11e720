#!/usr/bin/env bash
# Create SuperNode authentication key pairs (ECDSA P-384, OpenSSH format, no passphrase).
#
#   bash scripts/deploy/make-node-keys.sh OUT_DIR NAME [NAME ...]
#
# OUT_DIR/NAME      private key: stays on the node (flower-supernode --auth-supernode-private-key)
# OUT_DIR/NAME.pub  public key: register it with `flwr supernode register OUT_DIR/NAME.pub <connection>`
# Needs ssh-keygen (apt-get install -y openssh-client).
set -euo pipefail
out=${1:?usage: make-node-keys.sh OUT_DIR NAME [NAME ...]}
shift
[ $# -ge 1 ] || { echo "give at least one key name" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "ssh-keygen not found: apt-get install -y openssh-client" >&2; exit 1; }
mkdir -p "$out"
for name in "$@"; do
  rm -f "$out/$name" "$out/$name.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "feddqc-$name" -f "$out/$name"
  echo "wrote $out/$name and $out/$name.pub"
done
