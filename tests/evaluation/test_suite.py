"""evaluate_rows: the metric keys asked for, the loss equal to heldout_loss, bad requests refused."""

from __future__ import annotations

import math

import pytest

from feddqc_flwr.evaluation import evaluate_rows, heldout_loss
from feddqc_flwr.llm.model import ModelBundle
from tests.evaluation.conftest import FREE_ROW, MEDQA_ROW, PUBMEDQA_ROWS

KW = {"template": "alpaca", "max_length": 256, "batch_size": 4, "max_new_tokens": 4}


def test_all_local_metrics_on_the_tiny_model(tiny_bundle: ModelBundle) -> None:
    rows = [MEDQA_ROW, *PUBMEDQA_ROWS, FREE_ROW]
    out = evaluate_rows(tiny_bundle, rows, ("loss", "choice", "generation", "similarity"), **KW,
                        closed_set=("maybe", "no", "yes"))
    assert set(out) == {"loss", "choice-acc", "choice-rows", "choice-skipped", "gen-acc", "gen-rows",
                        "gen-unparsed", "similarity"}
    assert out["loss"] == pytest.approx(heldout_loss(tiny_bundle, rows, template="alpaca", max_length=256,
                                                     batch_size=4))
    assert out["choice-rows"] == 5 and out["choice-skipped"] == 1 and out["gen-rows"] == 5
    assert 0 <= out["choice-acc"] <= 1 and 0 <= out["gen-acc"] <= 1 and math.isfinite(out["similarity"])


def test_answer_set_derived_from_the_rows(tiny_bundle: ModelBundle) -> None:
    """PubMedQA rows alone give yes/no/maybe; a long free-text answer among them rules a closed set out."""
    assert evaluate_rows(tiny_bundle, PUBMEDQA_ROWS, ("choice",), **KW)["choice-rows"] == 4
    assert evaluate_rows(tiny_bundle, [*PUBMEDQA_ROWS, FREE_ROW], ("choice",), **KW)["choice-rows"] == 0


def test_loss_only_and_no_rows(tiny_bundle: ModelBundle) -> None:
    assert set(evaluate_rows(tiny_bundle, [FREE_ROW], ("loss",), **KW)) == {"loss"}
    assert evaluate_rows(tiny_bundle, [], ("loss", "choice"), **KW) == {}


def test_unknown_metric_and_judge_without_endpoint_are_refused(tiny_bundle: ModelBundle) -> None:
    with pytest.raises(ValueError, match="unknown evaluation metric"):
        evaluate_rows(tiny_bundle, [FREE_ROW], ("bleu",), **KW)
    with pytest.raises(ValueError, match="judge-url"):
        evaluate_rows(tiny_bundle, [FREE_ROW], ("judge",), **KW)
