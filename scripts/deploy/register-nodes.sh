#!/usr/bin/env bash
# Register SuperNode public keys with a SuperLink that runs with --enable-supernode-auth.
#
#   bash scripts/deploy/register-nodes.sh CONNECTION keys/node-0.pub keys/node-1.pub ...
#
# Only registered keys can activate a SuperNode; others exit with "Failed to activate SuperNode".
# `flwr supernode list CONNECTION` shows them; `flwr supernode unregister NODE_ID CONNECTION` removes one.
set -euo pipefail
connection=${1:?usage: register-nodes.sh CONNECTION PUBLIC_KEY...}
shift
for key in "$@"; do
  flwr supernode register "$key" "$connection"
done
