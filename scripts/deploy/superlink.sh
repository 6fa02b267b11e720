#!/usr/bin/env bash
# Start the SuperLink (foreground). One HTTP(S) port serves the Fleet, Control and Runtime APIs.
#
#   bash scripts/deploy/superlink.sh                  # insecure, 127.0.0.1:8000 (localhost trial)
#   HOST=0.0.0.0 CERTS=certs AUTH=1 bash scripts/deploy/superlink.sh   # TLS + SuperNode auth
#
# HOST, PORT (8000), CERTS (folder from make-certs.sh: ca.crt, server.pem, server.key), AUTH=1
# (--enable-supernode-auth, needs CERTS), STATE (SQLite file; default: state kept in memory).
# Runtime dependency installation (`uv sync` per run) is off: the app's environment is this one.
set -euo pipefail
args=(--host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" --disable-runtime-dependency-installation)
[ -n "${STATE:-}" ] && args+=(--database "$STATE")
if [ -n "${CERTS:-}" ]; then
  args+=(--ssl-ca-certfile "$CERTS/ca.crt" --ssl-certfile "$CERTS/server.pem" --ssl-keyfile "$CERTS/server.key")
  [ "${AUTH:-0}" = 1 ] && args+=(--enable-supernode-auth)
else
  [ "${AUTH:-0}" = 1 ] && { echo "AUTH=1 needs CERTS (SuperNode authentication requires TLS)" >&2; exit 1; }
  args+=(--insecure)
fi
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
exec flower-superlink "${args[@]}" "$@"
