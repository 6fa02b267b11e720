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
exec flower-supernode "${args[@]}" "$@"
