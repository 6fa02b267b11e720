"""Bytes on the wire per round versus the size of the LoRA adapter itself.

Flower serializes each array with `np.save`; `ArrayRecord.count_bytes` is that payload. The
fp16 figure is what `transport-dtype = "float16"` sends (measured the same way);
`transport_accuracy` compares the held-out loss of two runs that differ only in that key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from feddqc_flwr.llm.model import ModelSpec, adapter_arrays, add_lora, load_base_model


def adapter_bytes(spec: ModelSpec, clients_per_round: int) -> dict[str, Any]:
    """Raw parameter bytes, fp32 and fp16 payload bytes, and per-round traffic (down + up)."""
    base, _ = load_base_model(spec)
    arrays = adapter_arrays(add_lora(base, spec))
    raw = sum(a.numpy().nbytes for a in arrays.values())
    half = ArrayRecord({k: Array(a.numpy().astype(np.float16)) for k, a in arrays.items()})
    payload, payload_half = arrays.count_bytes(), half.count_bytes()
    return {
        "lora_r": spec.lora_r, "target_modules": spec.target_modules, "tensors": len(arrays),
        "parameters": int(sum(a.numpy().size for a in arrays.values())),
        "raw_fp32_bytes": raw, "payload_fp32_bytes": payload, "payload_fp16_bytes": payload_half,
        "payload_over_raw": payload / raw, "clients_per_round": clients_per_round,
        "round_fp32_bytes": 2 * clients_per_round * payload, "round_fp16_bytes": 2 * clients_per_round * payload_half,
    }


def _test_losses(run_dir: Path) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [float(line["server_eval"]["test-loss"]) for line in lines]


def transport_accuracy(fp32_run: Path, fp16_run: Path) -> dict[str, Any]:
    """Server test loss per round of an fp32- and an fp16-transport run (same config and seed)."""
    fp32, fp16 = _test_losses(fp32_run), _test_losses(fp16_run)
    if len(fp32) != len(fp16):
        raise ValueError(f"the runs have {len(fp32)} and {len(fp16)} rounds: compare runs of the same config")
    final = {name: float(json.loads((run / "summary.json").read_text())["final_server_eval"]["test-loss"])
             for name, run in (("float32", fp32_run), ("float16", fp16_run))}
    return {"fp32_run": str(fp32_run), "fp16_run": str(fp16_run), "test_loss_per_round": {"float32": fp32,
            "float16": fp16}, "max_abs_round_difference": max(abs(a - b) for a, b in zip(fp32, fp16, strict=True)),
            "final_test_loss": final, "final_difference": final["float16"] - final["float32"]}
