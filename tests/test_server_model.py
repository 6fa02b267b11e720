"""A ServerApp without a GPU: the 8-bit preset starts, the server falls back to an unquantized
model (or none with eval-samples = 0), and the initial adapter is the one every node builds."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import bitsandbytes as bnb
import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.serverapp.strategy import Result
from flwr.supercore.task_identity import TaskIdentity
from peft import PeftModel
from transformers import AutoModelForCausalLM

from feddqc_flwr.app import model_spec
from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.app.model_spec import load_server_bundle, server_spec_from_config, spec_from_config
from feddqc_flwr.app.run_defaults import paper_preset
from feddqc_flwr.app.server_app import final_adapter
from feddqc_flwr.llm.model import (
    ModelSpec,
    adapter_arrays,
    add_lora,
    load_adapter_bundle,
    load_model_bundle,
    set_adapter_arrays,
)
from tests.helpers import deliver, make_config

HIDDEN = 32  # tiny_model_dir's hidden size: every q/v LoRA A is r x 32


def _adapter(tiny_model_dir: Path, spec: ModelSpec, dtype: torch.dtype, int8_targets: bool = False) -> dict:
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    if int8_targets:  # as bitsandbytes 8-bit: integer target weights, which peft does not cast LoRA to
        for layer in base.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.v_proj):
                proj.weight = torch.nn.Parameter(proj.weight.to(torch.int8), requires_grad=False)
    return {k: v.numpy() for k, v in adapter_arrays(add_lora(base, spec)).items()}


def test_initial_adapter_is_the_same_for_every_base_dtype(tiny_model_dir: Path) -> None:
    spec = ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8, seed=3)
    fp32 = _adapter(tiny_model_dir, spec, torch.float32)
    bf16 = _adapter(tiny_model_dir, spec, torch.bfloat16)  # also what 4-bit's bf16 compute dtype did
    int8 = _adapter(tiny_model_dir, spec, torch.float32, int8_targets=True)
    weightless = {k: v.numpy() for k, v in adapter_arrays(load_adapter_bundle(spec).model).items()}
    assert len(fp32) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    for other in (bf16, int8, weightless):
        assert set(other) == set(fp32)
        assert all(np.array_equal(fp32[k], other[k]) for k in fp32)  # bit for bit
    a = [v for k, v in fp32.items() if "lora_A" in k]
    assert all(not v.any() for k, v in fp32.items() if "lora_B" in k)
    # kaiming-uniform(a=sqrt(5)) on fan-in 32 is U(-1/sqrt(32), 1/sqrt(32)), std 1/sqrt(96)
    assert all(v.shape == (4, HIDDEN) and np.abs(v).max() <= 1 / math.sqrt(HIDDEN) for v in a)
    assert np.std(np.concatenate([v.ravel() for v in a])) == pytest.approx(1 / math.sqrt(3 * HIDDEN), rel=0.1)
    assert not np.array_equal(a[0], a[1])  # one draw per module, not one repeated
    reseeded = _adapter(tiny_model_dir, ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8, seed=4),
                        torch.float32)
    assert not any(np.array_equal(fp32[k], reseeded[k]) for k in fp32 if "lora_A" in k)


def test_paper_preset_parses_and_the_server_falls_back_without_cuda(monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    preset = paper_preset()
    assert preset["quantization"] == "8bit" and preset["dtype"] == "bfloat16"
    cfg = make_config(quantization="8bit", dtype="bfloat16")  # parsing no longer asks for CUDA
    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(model_spec, "native_bf16", lambda device, n=native: n)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="flwr"):
            spec = server_spec_from_config(cfg)
        assert (spec.quantization, spec.dtype) == ("none", dtype)
        assert spec.lora_r == cfg.lora_r and spec.seed == cfg.seed  # same adapter layout as the clients'
        assert any("quantization 8bit on a server without CUDA" in r.getMessage()
                   and f"unquantized in {dtype}" in r.getMessage()
                   for r in caplog.records)


def test_server_without_cuda_evaluates_an_unquantized_model_or_loads_no_weights(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(model_spec, "native_bf16", lambda device: False)
    load_model_bundle.cache_clear()  # a fresh server process: no other test's adapter in the cached bundle
    cfg = make_config(model=str(tiny_model_dir), quantization="4bit", lora_r=4, lora_alpha=8)
    evaluating = load_server_bundle(cfg, evaluates=True)
    assert {p.dtype for p in evaluating.model.parameters()} == {torch.float32}
    logits = evaluating.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape[:2] == (1, 3) and torch.isfinite(logits).all()
    full = {k: v.numpy() for k, v in adapter_arrays(evaluating.model).items()}
    adapter_only = load_server_bundle(cfg, evaluates=False)
    base = [p for n, p in adapter_only.model.named_parameters() if "lora_" not in n]
    assert base and all(p.device.type == "meta" for p in base)  # no base weights in memory
    only = {k: v.numpy() for k, v in adapter_arrays(adapter_only.model).items()}
    assert set(only) == set(full) and all(np.array_equal(full[k], only[k]) for k in full)
    # what the server does each round without a base model: load the aggregate, save it as PEFT
    gen = np.random.default_rng(0)
    aggregate = ArrayRecord({k: Array(gen.standard_normal(v.shape).astype(np.float32)) for k, v in full.items()})
    set_adapter_arrays(adapter_only.model, aggregate)
    adapter_only.model.save_pretrained(tmp_path / "final")
    saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "final")
    reloaded = adapter_arrays(saved)
    assert all(np.array_equal(reloaded[k].numpy(), aggregate[k].numpy()) for k in full)


def test_a_client_without_cuda_quantizes_on_the_cpu_or_refuses_naming_the_key(tiny_model_dir: Path,
                                                                              monkeypatch) -> None:
    """bitsandbytes >= 0.48 runs 8-bit on a CPU (the paper preset's test trains with it); a node
    whose bitsandbytes cannot run here, or that has none, stops before loading anything."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_config(model=str(tiny_model_dir), quantization="8bit", dataset="demo", max_samples=0)
    assert "cpu" in bnb.supported_torch_devices  # the installed bitsandbytes (scripts/constraints.txt)
    assert spec_from_config(cfg).quantization == "8bit"
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"})  # as bitsandbytes before its CPU backend
    with pytest.raises(ConfigError, match=f"'quantization' = '8bit'.*bitsandbytes {bnb.__version__} has no CPU"):
        spec_from_config(cfg)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed: `import bitsandbytes` fails
    with pytest.raises(ConfigError, match="'quantization' = '8bit'.*bitsandbytes, which is not installed"):
        spec_from_config(cfg)
    raw = {k.replace("_", "-"): v for k, v in cfg.as_dict().items()}
    context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                      state=RecordDict(), run_config=raw)
    config = ConfigRecord({"server-round": 1, "hierarchy": 1, "rescore": False, "lr": 1e-3, "lambda": [-1e9, -1e9]})
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 7, 1
    try:
        reply = deliver(context, "train", RecordDict({"arrays": ArrayRecord(), "config": config}))
        assert reply.has_error() and "Install it on every SuperNode (ClientApp)" in reply.error.reason
    finally:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = None, None, None


def test_a_run_where_no_round_aggregated_saves_the_adapter_it_started_from() -> None:
    """Flower's `Result` holds an empty record, not None, when no round aggregated."""
    initial = ArrayRecord({"lora_A": Array(np.ones((2, 3), dtype=np.float32))})
    assert len(Result().arrays) == 0 and Result().arrays is not None
    assert final_adapter(Result().arrays, initial) is initial
    trained = ArrayRecord({"lora_A": Array(np.zeros((2, 3), dtype=np.float32))})
    assert final_adapter(trained, initial) is trained
