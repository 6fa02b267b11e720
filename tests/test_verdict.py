"""The end-of-run verdict from hand-made records, with every number worked out by hand."""

from __future__ import annotations

import pytest

from feddqc_flwr.app.verdict import compute_verdict, format_verdict
from tests.run_records import records


def test_verdict_numbers() -> None:
    verdict = compute_verdict(records(), elapsed=250.0)
    assert verdict["quality_flags"] is True
    h1, h2 = verdict["hierarchies"]
    # h1: 10 rows scored, 60% at or above lambda; 5 of 10 corrupted in the pool, 1 of the 2 + 2 trained
    assert h1 == {"hierarchy": 1, "lambda": -4.0, "criteria": {}, "scored": 10, "kept": 6, "dropped": 4, "trained": 4,
                  "pool_corrupted_share": 0.5, "trained_corrupted_share": 0.25, "auroc": 0.875}
    # h2: 6 scored, half kept; 3 of 6 corrupted in the pool, 1 of the 1 + 2 trained
    assert h2["scored"] == 6 and h2["kept"] == 3 and h2["dropped"] == 3 and h2["trained"] == 3
    assert h2["pool_corrupted_share"] == 0.5 and h2["trained_corrupted_share"] == pytest.approx(1 / 3)
    assert verdict["losses"] == {"valid-loss": {"first": 3.5, "last": 3.3, "change": pytest.approx(-0.2)},
                                 "test-loss": {"first": 3.25, "last": 3.1, "change": pytest.approx(-0.15)}}
    # scoring: 30 + 20 s of score/histogram trips + the 5 s one client scored inside round 2's training;
    # training: the slowest client per round, 25 + 12; evaluation: 10 + 8 + 9; the rest is Flower's
    assert verdict["seconds"] == {"total": 250.0, "scoring": 55.0, "training": 37.0, "evaluation": 27.0,
                                  "flower": 131.0}


def test_verdict_lines() -> None:
    assert format_verdict(compute_verdict(records(), elapsed=250.0)).splitlines() == [
        "Verdict: did quality control do something?",
        "  hierarchy 1: scored 10, kept 6, dropped 4 (λ -4.0000); corrupted share 50% of the pool -> 25% of the "
        "4 trained rows; global AUROC 0.875",
        "  hierarchy 2: scored 6, kept 3, dropped 3 (λ -4.0000); corrupted share 50% of the pool -> 33% of the "
        "3 trained rows; global AUROC 0.750",
        "  valid-loss 3.5000 -> 3.3000 (-0.2000)",
        "  test-loss 3.2500 -> 3.1000 (-0.1500)",
        "  time 250s: scoring 55s (22%), training 37s (15%), evaluation 27s (11%), Flower and other 131s (52%)",
    ]


def test_verdict_of_a_plain_fedavg_run_on_real_data() -> None:
    """No scoring step and no corruption flags: no hierarchy lines, shares n/a, losses still there."""
    plain = [records()[0], {**records()[1], "rescore": False, "scoring": {}, "histogram": {}, "threshold": None,
                            "train": {"train-loss": 2.5, "pool": 10.0, "pool-bad": 0.0, "stage-train": 10.0,
                                      "stage-bad": 0.0}}]
    verdict = compute_verdict(plain, elapsed=100.0)
    assert verdict["hierarchies"] == [] and verdict["quality_flags"] is False
    lines = format_verdict(verdict).splitlines()
    assert lines[1] == "  no scoring step ran (method fedavg or no client scored): every row was trained on"
    assert lines[-1] == ("  time 100s: scoring 0s (0%), training 25s (25%), evaluation 18s (18%), "
                         "Flower and other 57s (57%)")


def _two_criteria_records() -> list[dict]:
    """Round 1 of a run filtering by ira-sum and loss: 10 rows scored; ira-sum's lambda keeps 6 of its
    histogram, loss's 7; the two clients kept 3 of 5 and 2 of 5 rows passing both (5 of 10)."""
    first = records()[1]
    criteria = {
        "ira-sum": {"histogram": {"edges": [1.0, 2.0, 3.0], "counts": [4, 6], "bad": [4, 1]},
                    "summary": {"share-above-lambda": 0.6, "auroc": 0.9}},
        "loss": {"histogram": {"edges": [-6.0, -4.0, -2.0], "counts": [3, 7], "bad": [3, 2]},
                 "summary": {"share-above-lambda": 0.7, "auroc": 0.8}},
    }
    clients = [{**first["clients"][0], "pool": 5.0, "kept": 3.0}, {**first["clients"][1], "pool": 5.0, "kept": 2.0}]
    return [records()[0], {**first, "threshold": 2.0, "thresholds": {"ira-sum": 2.0, "loss": -4.0},
                           "criteria": criteria, "histogram": criteria["ira-sum"]["histogram"], "clients": clients}]


def test_verdict_with_two_criteria_reports_each_and_the_rows_passing_both() -> None:
    verdict = compute_verdict(_two_criteria_records(), elapsed=250.0)
    (h1,) = verdict["hierarchies"]
    assert h1["criteria"] == {"ira-sum": {"lambda": 2.0, "kept": pytest.approx(6.0), "auroc": 0.9},
                              "loss": {"lambda": -4.0, "kept": pytest.approx(7.0), "auroc": 0.8}}
    assert (h1["scored"], h1["kept"], h1["dropped"]) == (10, 5, 5)  # clients: (3 + 2) of (5 + 5) pass both
    assert format_verdict(verdict).splitlines()[1] == (
        "  hierarchy 1: scored 10; ira-sum λ 2.0000 keeps 6 (AUROC 0.900); loss λ -4.0000 keeps 7 (AUROC 0.800); "
        "all criteria keep 5, drop 5; corrupted share 50% of the pool -> 25% of the 4 trained rows")
