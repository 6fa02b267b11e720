"""The scoring benchmark compares like with like: the one-sample loop gives the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feddqc_flwr.bench.machine import peak_rss_mib
from feddqc_flwr.bench.scoring import bench_scoring, one_sample_ira
from feddqc_flwr.model import ModelSpec, load_model_bundle
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.registry import SCORERS
from tests.scoring.common import ANCHORS, ROWS


def test_one_sample_reference_loop_matches_batched_ira(tiny_model_dir: Path) -> None:
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    looped = one_sample_ira(bundle, ROWS, "alpaca", 128)
    batched = ira_scores(bundle.model, bundle.tokenizer, ROWS, template="alpaca", max_length=128,
                         batch_size=4, device=bundle.device).ira
    np.testing.assert_allclose(batched, looped, atol=1e-5)


def test_bench_reports_every_ratio_and_leaves_the_adapter_unchanged(tiny_model_dir: Path) -> None:
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    before = {k: v.clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    protocol = {"samples_per_client": 10, "hierarchies": 3, "rounds": 4, "participation": 0.5, "local_steps": 2}
    result = bench_scoring(bundle, ROWS, ANCHORS, template="alpaca", max_length=128, batch_size=4, repeats=1,
                           train_batch=2, train_steps=1, protocol=protocol)
    assert result["max_abs_diff_vs_one_sample_loop"] < 1e-5
    assert set(result["scorers"]) == set(SCORERS)  # every registered scorer is timed
    assert result["scorers"]["ira"]["relative_to_ira"] > 0
    assert 0 < result["peak_rss_mib_before_training"] <= peak_rss_mib()
    seconds = result["seconds"]
    assert result["speedup_vs_one_sample_loop"] == seconds["one_sample_loop"] / seconds["ira_batched"]
    expected = 10 * 2 * seconds["ira_batched"] / len(ROWS) / (4 * 0.5 * 2 * seconds["train_step"])
    assert np.isclose(result["protocol"]["scoring_over_training"], expected)
    after = bundle.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)
