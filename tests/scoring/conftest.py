"""Fixtures for the scorer tests: the tiny Llama with a seeded, non-zero LoRA adapter (the copy model
is shared, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from feddqc_flwr.llm.model import ModelBundle, ModelSpec, load_model_bundle


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Matrices 32 wide gain nothing from threads, and on a busy 2-core machine the second
    OpenMP thread spins: one thread made these tests 30x faster there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path) -> ModelBundle:
    """Every LoRA matrix set from a fixed seed, so lora_A gradients are non-zero too."""
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bundle.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bundle.model.eval()
    return bundle
