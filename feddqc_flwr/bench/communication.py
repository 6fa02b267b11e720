"""Bytes on the wire per round versus the size of the LoRA adapter itself.

Flower serializes each array with `np.save`; `ArrayRecord.count_bytes` is that payload. The
fp16 figure is what a half-precision transport would send (measured the same way).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord

from feddqc_flwr.model import ModelSpec, adapter_arrays, add_lora, load_base_model


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
