"""`dtype = "auto"` picks bf16 only on GPUs that run it natively (T4 and V100 only emulate it)."""

from __future__ import annotations

import pytest
import torch

from feddqc_flwr.llm.model import _torch_dtype


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_on_cuda_follows_native_bf16(monkeypatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # What torch reports on a T4: bf16 "supported" once emulation counts, not natively.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    assert _torch_dtype("auto", quantized=False) == expected


def test_auto_dtype_without_cuda_is_float32(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _torch_dtype("auto", quantized=False) == torch.float32
