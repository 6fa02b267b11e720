#!/usr/bin/env bash
# Start one SuperNode (foreground) with its own data partition; its ClientApp processes run here.
#
#   bash scripts/deploy/supernode.sh PARTITION_ID NUM_PARTITIONS [extra flower-supernode flags]
#   SUPERLINK=link.example.org:8000 CA=certs/ca.crt KEY=keys/node-0 bash scripts/deploy/supernode.sh 0 2
#
# SUPERLINK (127.0.0.1:8000), CA (root certificate; unset = insecure), KEY (private key for
# SuperNode authentication; register KEY.pub first), RUNTIME_PORT (this node's Runtime API,
# default 9094: give each node on one host its own), NODE_CONFIG (extra keys, e.g.
# "dataset-path='/data/mine.jsonl'"), THREADS (CPU threads of each ClientApp process; set it to
# cores / nodes when several nodes share a host). CUDA_VISIBLE_DEVICES picks the GPU of this node.
#
# RESIDENT=1: run the node's ClientApps in one long-lived process (`feddqc-executor`, under its
# restart loop) instead of a fresh process per message, so the model stays loaded between
# rounds; the SuperNode then runs with --isolation process, its Runtime API on 127.0.0.1 only,
# and a SuperExec auth secret (SUPEREXEC_SECRET, a file; default: a new random one), and as
# `feddqc-supernode`: flower-supernode with its 3 s idle poll capped at FEDDQC_SUPERNODE_POLL
# (default 0.25 s). Default (unset) is stock Flower. See docs/deployment.md §4.
set -euo pipefail
partition=${1:?usage: supernode.sh PARTITION_ID NUM_PARTITIONS}
partitions=${2:?usage: supernode.sh PARTITION_ID NUM_PARTITIONS}
shift 2
args=(--superlink "${SUPERLINK:-127.0.0.1:8000}" --port "${RUNTIME_PORT:-9094}"
      --node-config "partition-id=$partition num-partitions=$partitions ${NODE_CONFIG:-}")
if [ -n "${CA:-}" ]; then args+=(--root-certificates "$CA"); else args+=(--insecure); fi
# Every ClientApp process inherits this: nodes sharing one host must split its cores, or each
# torch process starts one thread per core and they slow each other down several times over.
[ -n "${THREADS:-}" ] && export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
[ -n "${KEY:-}" ] && args+=(--auth-supernode-private-key "$KEY")
[ "${RESIDENT:-0}" = 1 ] || exec flower-supernode "${args[@]}" "$@"

secret=${SUPEREXEC_SECRET:-}
if [ -z "$secret" ]; then
  secret=$(mktemp -t feddqc-superexec-XXXXXX)   # mode 600
  head -c 32 /dev/urandom > "$secret"
fi
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait || true
  [ -n "${SUPEREXEC_SECRET:-}" ] || rm -f "$secret"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"${PYTHON:-python}" -m feddqc_flwr.executor.fast_supernode "${args[@]}" --isolation process --host 127.0.0.1 \
  --superexec-auth-secret-file "$secret" "$@" &
pids+=($!)
"${PYTHON:-python}" -m feddqc_flwr.executor --restart --insecure --runtime-api-address "127.0.0.1:${RUNTIME_PORT:-9094}" \
  --superexec-auth-secret-file "$secret" &
pids+=($!)
wait -n   # the node or the executor's restart loop ended: stop the other one too
