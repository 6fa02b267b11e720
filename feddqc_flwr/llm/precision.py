"""Compute precision of inference passes (scoring): autocast to bf16/fp16 where it pays.

Scoring needs only rankings, and on hardware with native bf16 matrix units (CUDA GPUs, CPUs
with AVX512-BF16 or AMX) bf16 products run several times faster than fp32. Autocast keeps
the weights, norms and the residual stream in the model's own dtype and the NLL in float32,
so no second copy of the model is needed; training and server evaluation do not use this.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger("flwr").getChild(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SCORE_DTYPES = ("auto", *TORCH_DTYPES)  # = app.config.SCORE_DTYPES (a test checks)


CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})  # x86 AVX512-BF16, AMX; Arm's `bf16` feature


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products run in hardware (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_native_bf16()
    return False


@functools.lru_cache(maxsize=1)
def cpu_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """The CPU's own flags, where the OS lists them; else oneDNN's check.

    oneDNN's `_is_mkldnn_bf16_supported` also says yes on AVX512 CPUs without AVX512-BF16, where
    it emulates bf16: measured on such a Xeon, a bf16 matrix product ran at 52 GFLOP/s against
    197 in fp32, and a training step was 2.6x slower than in fp32.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        return bool(torch.backends.mkldnn.is_available() and check is not None and check())
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & CPU_BF16_FLAGS)


def resolve_score_dtype(name: str, device: torch.device) -> torch.dtype:
    """A `score-dtype` value as a torch dtype; `auto` = bf16 where native, else float32."""
    if name not in SCORE_DTYPES:
        raise ValueError(f"score dtype {name!r}: allowed values are {', '.join(SCORE_DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    if name != "float32" and device.type == "cpu" and not (name == "bfloat16" and native_bf16(device)):
        log.warning("score-dtype %s on a CPU without native support is emulated and slower than float32", name)
    return TORCH_DTYPES[name]


def compute_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`; nothing for float32 (the model runs in its own dtype)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
