"""`feddqc bench train-memory` measures the same training the app runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from feddqc_flwr.bench.train_memory import train_step_peak
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter
from tests.scoring.common import ROWS


def test_train_step_peak_reports_the_app_training_loss(tiny_model_dir: Path) -> None:
    spec = ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8)
    bundle = load_model_bundle(spec)
    state = {k: v.clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    out = train_step_peak(bundle, ROWS, batch_size=4, steps=2, max_length=96)
    bundle.model.load_state_dict(state, strict=False)  # same start for the direct run
    direct = train_adapter(bundle.model, bundle.tokenizer, list(ROWS), LocalTrainConfig(
        steps=2, batch_size=4, grad_accum=1, learning_rate=1e-4, max_length=96, template="alpaca",
        proximal_mu=0.0, seed=0))
    assert out["train_loss"] == pytest.approx(direct.loss, rel=1e-6)
    assert out["peak_rss_mib_after_training"] >= out["peak_rss_mib_before_training"] > 0
    assert out["step_seconds"] > 0
