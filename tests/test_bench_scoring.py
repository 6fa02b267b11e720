"""The scoring benchmark compares like with like: the one-sample loop gives the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feddqc_flwr.bench.machine import peak_rss_mib
from feddqc_flwr.bench.scoring import (
    bench_scoring,
    one_sample_ira,
    protocol_ratios,
    score_agreement,
    timed_in_turn,
)
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.registry import SCORERS
from tests.scoring.common import ANCHORS, ROWS

PROTOCOL = {"samples_per_client": 10, "hierarchies": 3, "rounds": 6, "participation": 0.5, "local_steps": 2}


def test_one_sample_reference_loop_matches_batched_ira(tiny_model_dir: Path) -> None:
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    looped = one_sample_ira(bundle, ROWS, "alpaca", 128)
    batched = ira_scores(bundle.model, bundle.tokenizer, ROWS, template="alpaca", max_length=128,
                         batch_size=4, device=bundle.device).ira
    np.testing.assert_allclose(batched, looped, atol=1e-5)


def test_bench_reports_both_precisions_and_leaves_the_adapter_unchanged(tiny_model_dir: Path) -> None:
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8))
    before = {k: v.clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    result = bench_scoring(bundle, ROWS, ANCHORS, template="alpaca", max_length=128, batch_size=4, repeats=1,
                           train_batch=2, train_grad_accum=2, train_steps=1, protocol=PROTOCOL,
                           score_dtype=torch.bfloat16)
    full, half = result["precisions"]["float32"], result["precisions"]["bfloat16"]
    assert full["agreement_vs_float32_loop"]["max_abs_diff"] < 1e-5  # batching alone changes nothing
    assert full["agreement_vs_float32_loop"]["kept_overlap"] == 1.0
    assert 0 < half["agreement_vs_float32_loop"]["max_abs_diff"] < 0.1  # bf16 really ran, and stayed close
    for costs in (full, half):
        seconds = costs["seconds"]
        assert costs["speedup_vs_one_sample_loop_same_precision"] == seconds["one_sample_loop"] / seconds["ira_batched"]
    assert half["speedup_vs_one_sample_loop_float32"] == (full["seconds"]["one_sample_loop"]
                                                         / half["seconds"]["ira_batched"])
    assert set(result["scorers"]) == set(SCORERS)  # every registered scorer is timed
    assert result["score_dtype"] == "bfloat16" and result["train_dtype"] == "float32"
    assert set(result["matmul_gflops"]) == {"float32", "bfloat16"} and min(result["matmul_gflops"].values()) > 0
    assert 0 < result["peak_rss_mib_before_training"] <= peak_rss_mib()
    after = bundle.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)


def test_protocol_ratio_counts_rescoring_of_what_is_left_per_hierarchy() -> None:
    ratios = protocol_ratios(score_seconds_per_row=0.5, step_seconds=2.0, protocol=PROTOCOL)
    assert ratios["scored_rows_per_hierarchy"] == pytest.approx([10, 20 / 3, 10 / 3])
    assert ratios["train_steps_per_hierarchy"] == pytest.approx(2.0)  # 6 rounds / 3 x 0.5 x 2 steps
    assert ratios["scoring_over_training_per_hierarchy"][0] == pytest.approx(10 * 0.5 / (2 * 2.0))
    assert ratios["scoring_over_training"] == pytest.approx(20 * 0.5 / (6 * 2.0))


def test_score_agreement_measures_what_selection_sees() -> None:
    reference = np.array([4.0, 3.0, 2.0, 1.0])
    same_order = score_agreement(reference + 0.01, reference)
    assert same_order["max_abs_diff"] == pytest.approx(0.01)
    assert same_order["rank_correlation"] == pytest.approx(1.0) and same_order["kept_overlap"] == 1.0
    swapped = score_agreement(np.array([4.0, 2.0, 3.0, 1.0]), reference)  # ranks 2 and 3 trade places
    assert swapped["kept_overlap"] == 0.5 and swapped["rank_correlation"] == pytest.approx(0.8)


def test_timed_in_turn_runs_every_function_in_each_round() -> None:
    calls: list[str] = []
    seconds, results = timed_in_turn({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2},
                                     repeats=2)
    assert calls == ["a", "b"] * 3  # a warm-up round, then two timed ones
    assert results == {"a": 1, "b": 2} and set(seconds) == {"a", "b"}
