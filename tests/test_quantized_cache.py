"""Quantize once, reuse the saved weights (bitsandbytes >= 0.48 quantizes on CPU as well)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from feddqc_flwr.llm.quantized_cache import load_quantized, quantized_folder, source_identity

TOKENS = torch.tensor([[1, 5, 9, 42, 7]])
LAYER_TYPES = {"8bit": bnb.nn.Linear8bitLt, "4bit": bnb.nn.Linear4bit}


@pytest.fixture()
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny saved Llama, with the quantized copies going to a fresh cache."""
    monkeypatch.setenv("FEDDQC_CACHE", str(tmp_path / "cache"))
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


def _garble_keeping_stat(file: Path) -> None:
    """Overwrite a file with zeros of the same size and the same mtime: a reader of it gets garbage,
    while the source's identity (name, size, mtime) stays the same."""
    stat = file.stat()
    file.write_bytes(b"\0" * stat.st_size)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("quantization", ["8bit", "4bit"])
def test_second_load_reads_the_saved_quantized_weights(source: Path, quantization: str) -> None:
    first, reused = load_quantized(str(source), quantization, torch.float32)
    assert not reused and isinstance(first.model.layers[0].self_attn.q_proj, LAYER_TYPES[quantization])
    folder = quantized_folder(str(source), quantization, torch.float32)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["quantization_config"][f"load_in_{quantization}"] is True
    expected = _logits(first)

    # The source weights are now unreadable garbage with the same name, size and mtime: only a
    # load from the saved copy can still give the first load's outputs.
    _garble_keeping_stat(source / "model.safetensors")
    second, reused = load_quantized(str(source), quantization, torch.float32)
    assert reused and isinstance(second.model.layers[0].self_attn.q_proj, LAYER_TYPES[quantization])
    assert torch.equal(_logits(second), expected)


def test_the_copy_holds_fewer_bytes_than_the_source(source: Path) -> None:
    load_quantized(str(source), "8bit", torch.float32)
    folder = quantized_folder(str(source), "8bit", torch.float32)
    source_bytes = (source / "model.safetensors").stat().st_size
    copy_bytes = (folder / "model.safetensors").stat().st_size
    # fp32 -> int8 for the 14 linear layers' weights (embeddings and norms stay): well under the source
    assert copy_bytes < 0.6 * source_bytes


def test_changed_source_or_settings_get_their_own_copy(source: Path) -> None:
    eight = quantized_folder(str(source), "8bit", torch.float32)
    assert quantized_folder(str(source), "8bit", torch.float32) == eight  # stable
    assert quantized_folder(str(source), "4bit", torch.float32) != eight
    assert quantized_folder(str(source), "4bit", torch.bfloat16) != quantized_folder(str(source), "4bit", torch.float32)
    stat = (source / "model.safetensors").stat()
    os.utime(source / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert quantized_folder(str(source), "8bit", torch.float32) != eight  # the weights changed


def test_a_hub_model_not_downloaded_has_no_identity_yet(tmp_path: Path) -> None:
    assert source_identity("no-such-org/no-such-model-for-feddqc-tests") is None
    assert quantized_folder("no-such-org/no-such-model-for-feddqc-tests", "8bit", torch.float32) is None


def test_a_copy_that_cannot_be_saved_or_loaded_only_costs_time(source: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A read-only or full cache: the quantized model still loads; a damaged copy: quantized again."""
    from feddqc_flwr.llm import quantized_cache

    def full_disk(target: Path, write: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(quantized_cache, "write_folder_once", full_disk)
        model, reused = load_quantized(str(source), "8bit", torch.float32)
    assert not reused and isinstance(model.model.layers[0].self_attn.q_proj, LAYER_TYPES["8bit"])
    assert "Could not save the quantized copy" in caplog.text
    load_quantized(str(source), "8bit", torch.float32)  # saves it this time
    folder = quantized_folder(str(source), "8bit", torch.float32)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    model, reused = load_quantized(str(source), "8bit", torch.float32)
    assert not reused and "does not load" in caplog.text
    assert torch.isfinite(_logits(model)).all()
