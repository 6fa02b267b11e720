"""`dtype = "auto"` picks bf16 only where it runs natively: GPUs (T4 and V100 only emulate it) and CPUs
whose oneDNN reports bf16 (AVX512-BF16 / AMX)."""

from __future__ import annotations

import pytest
import torch

from feddqc_flwr.llm import precision
from feddqc_flwr.llm.model import _torch_dtype


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cuda_follows_native_bf16(monkeypatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # What torch reports on a T4: bf16 "supported" once emulation counts, not natively.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    assert _torch_dtype("auto", quantized=False) == expected


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_without_cuda_follows_the_cpu(monkeypatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    assert _torch_dtype("auto", quantized=False) == expected


@pytest.mark.parametrize(("flags", "native"), [
    ("flags\t\t: fpu sse avx512f avx512bw avx512_vnni", False),  # AVX512 without BF16: oneDNN emulates it
    ("flags\t\t: fpu avx512f avx512_bf16 avx512_vnni", True),   # e.g. AMD EPYC Genoa, Intel Cooper Lake
    ("flags\t\t: fpu avx512f amx_bf16 amx_tile", True),         # Intel Sapphire Rapids
    ("Features\t: fp asimd bf16 i8mm", True),                  # Arm v8.6+
])
def test_cpu_native_bf16_reads_the_cpu_flags(tmp_path, flags: str, native: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\n{flags}\n\nprocessor\t: 1\n{flags}\n")
    assert precision.cpu_native_bf16(path) is native
