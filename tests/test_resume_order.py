"""A resumed run hands Flower the checkpoint's adapter in the order every client reply has.

Flower's strategies pair arrays by position, not by key. A checkpoint read back in the file's
(sorted) order puts `layers.10` before `layers.2` and `o_proj` before `q_proj`: FedAvgM then
subtracts one layer from another, and Flower's client clipping mod refuses every reply (its keys
are in another order). The model here has 11 layers and targets q_proj and o_proj, so both sort
differently from the module order; every LoRA matrix has the same shape, so a wrong pairing
computes wrong numbers instead of raising. The server learning rate is 0.5: at 1, FedAvgM's new
adapter is mean - momentum * m, and the wrongly paired previous adapter cancels out of that round.

Each run is the real ServerApp `main`, in process, with the real ClientApp behind a loopback grid:
crashed after round 1, resumed from its checkpoint on disk, it must end with the adapter of the run
that was never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from safetensors.numpy import load_file
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from feddqc_flwr.app.server_app import main
from feddqc_flwr.llm.model import load_adapter_bundle
from tests.helpers import default_run_config
from tests.test_protocol_loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("server_task_identity")

ROUNDS, CRASH_AFTER = 2, 1


@pytest.fixture(scope="module")
def deep_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with 11 layers and as many key/value heads as query heads (all projections 32x32)."""
    out = tmp_path_factory.mktemp("deep-llama")
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_hidden_layers, config.num_key_value_heads = 11, config.num_attention_heads
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


class CrashingGrid(LoopbackGrid):
    """A loopback grid whose server dies when it sends the train messages of round `crash_round`."""

    def __init__(self, run_config: dict, crash_round: int) -> None:
        super().__init__(run_config)
        self.crash_round = crash_round

    def push_messages(self, messages) -> list[str]:
        messages = list(messages)
        trains = sum(m.metadata.message_type == "train" for m in messages)
        if trains and self.sent["train"] // len(self.contexts) + 1 == self.crash_round:
            raise RuntimeError("server killed")
        return super().push_messages(messages)


def _raw(model: Path, out: Path, **extra: object) -> dict:
    raw = default_run_config()
    raw.update({
        "model": str(model), "dataset": "demo", "method": "fedavg", "strategy": "fedavgm", "server-momentum": 0.9,
        "server-learning-rate": 0.5, "lr-max": 0.05, "local-steps": 1, "batch-size": 2, "max-length": 96,
        "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
        "lora-target-modules": "q_proj,o_proj", "num-server-rounds": ROUNDS, "hierarchies": 1,
        "min-train-nodes": 2, "fraction-evaluate": 0.0, "eval-samples": 0, "tracking": "none",
        "round-timeout": 60, "output-dir": str(out), **extra,
    })
    return raw


def _serve(raw: dict, grid: LoopbackGrid, run_id: int) -> Path:
    """Run the ServerApp as a fresh process would: its cached adapter-only model, which the last run
    left holding its final adapter, is dropped first. Returns the run directory (the only one under
    output-dir)."""
    load_adapter_bundle.cache_clear()
    main(grid, Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=raw))
    (run_dir,) = Path(raw["output-dir"]).glob("*-fedavg-fedavgm-seed0")
    return run_dir


def _final_adapter(run_dir: Path) -> dict[str, np.ndarray]:
    return load_file(run_dir / "adapters" / "final" / "adapter_model.safetensors")


@pytest.mark.parametrize("extra", [
    pytest.param({}, id="fedavgm"),
    pytest.param({"dp-mode": "client-fixed", "dp-clipping-norm": 0.01, "dp-noise-multiplier": 0.0,
                  "dp-num-sampled-clients": 2}, id="fedavgm-client-dp"),
])
def test_resumed_deep_adapter_ends_as_the_uninterrupted_run(tmp_path: Path, deep_model_dir: Path,
                                                            extra: dict) -> None:
    raw = _raw(deep_model_dir, tmp_path / "straight", **extra)
    straight = _serve(raw, LoopbackGrid(raw), run_id=1)

    raw = _raw(deep_model_dir, tmp_path / "crashed", **extra)
    with pytest.raises(RuntimeError, match="server killed"):
        _serve(raw, CrashingGrid(raw, CRASH_AFTER + 1), run_id=2)
    (crashed,) = (tmp_path / "crashed").glob("*-fedavg-fedavgm-seed0")

    raw = _raw(deep_model_dir, tmp_path / "resumed", **extra, **{"resume-from": str(crashed)})
    resumed = _serve(raw, LoopbackGrid(raw), run_id=3)

    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["rounds_not_aggregated"] == []
    expected, actual = _final_adapter(straight), _final_adapter(resumed)
    assert set(actual) == set(expected) and len(expected) == 11 * 2 * 2  # layers x (q, o) x (A, B)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
