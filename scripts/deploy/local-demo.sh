#!/usr/bin/env bash
# One SuperLink and N SuperNodes on this machine, one FedDQC run through them, then stop all.
#
#   bash scripts/deploy/local-demo.sh [insecure|tls] [NUM_NODES] [-- extra `flwr run` args]
#   bash scripts/deploy/local-demo.sh tls 2 -- --run-config "num-server-rounds=2 hierarchies=1"
#
# Works in a scratch folder (WORK, default a new temp dir) with its own FLWR_HOME, so your
# ~/.flwr is untouched. "tls" also creates a CA, a server certificate and node keys, starts the
# SuperLink with --enable-supernode-auth and registers the nodes. Logs: $WORK/logs/.
# RESIDENT=1 runs each node's ClientApps in a resident executor (see supernode.sh).
set -euo pipefail
mode=${1:-insecure}
nodes=${2:-2}
shift $(( $# >= 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/scripts/deploy"
work=${WORK:-$(mktemp -d -t feddqc-deploy-XXXX)}
port=${PORT:-9300}
threads=${THREADS:-$(( $(nproc) / nodes > 0 ? $(nproc) / nodes : 1 ))}  # cores per node: they share this host
export FLWR_HOME="$work/flwr-home" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
mkdir -p "$work/logs"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM   # runs the EXIT trap too

wait_port() {
  for _ in $(seq 1 120); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

if [ "$mode" = tls ]; then
  bash "$here/make-certs.sh" "$work/certs" >/dev/null
  bash "$here/make-node-keys.sh" "$work/keys" $(seq -f "node-%g" 0 $((nodes - 1))) >/dev/null
  bash "$here/add-connection.sh" demo "127.0.0.1:$port" "$work/certs/ca.crt"
  setsid env PORT="$port" CERTS="$work/certs" AUTH=1 bash "$here/superlink.sh" >"$work/logs/superlink.log" 2>&1 &
else
  bash "$here/add-connection.sh" demo "127.0.0.1:$port"
  setsid env PORT="$port" bash "$here/superlink.sh" >"$work/logs/superlink.log" 2>&1 &
fi
pids+=($!)
wait_port "$port"
for i in $(seq 0 $((nodes - 1))); do
  node_env=(SUPERLINK="127.0.0.1:$port" RUNTIME_PORT=$((port + 100 + i)) THREADS="$threads" RESIDENT="${RESIDENT:-0}")
  if [ "$mode" = tls ]; then
    bash "$here/register-nodes.sh" demo "$work/keys/node-$i.pub"
    node_env+=(CA="$work/certs/ca.crt" KEY="$work/keys/node-$i")
  fi
  setsid env "${node_env[@]}" bash "$here/supernode.sh" "$i" "$nodes" >"$work/logs/supernode-$i.log" 2>&1 &
  pids+=($!)
done
cd "$repo"
flwr run . demo --stream "$@"
echo "logs: $work/logs"
