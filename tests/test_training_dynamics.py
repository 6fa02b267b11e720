"""Data-map statistics from the clients' node-local probability files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from feddqc_flwr.training.dynamics import append_round, data_map


def test_confidence_and_variability_are_mean_and_std_over_rounds(tmp_path: Path) -> None:
    rows = Dataset.from_dict({"sample_id": ["a", "b"], "is_bad": [False, True], "bad_type": ["clean", "swap"]})
    path = tmp_path / "partition-0.jsonl"
    append_round(path, 1, 0, rows, np.array([0.2, 0.1]))
    append_round(path, 2, 0, rows, np.array([0.6, np.nan]))  # a NaN probability is left out, not zero
    append_round(path, 3, 0, rows, np.array([0.4, 0.3]))
    append_round(tmp_path / "partition-1.jsonl", 1, 1, rows.select([0]), np.array([0.9]))
    points = {(p["partition"], p["sample_id"]): p for p in data_map(tmp_path)}
    assert set(points) == {(0, "a"), (0, "b"), (1, "a")}
    a = points[(0, "a")]
    assert a["confidence"] == pytest.approx(0.4) and a["rounds"] == 3
    assert a["variability"] == pytest.approx(np.std([0.2, 0.6, 0.4]))
    b = points[(0, "b")]
    assert (b["confidence"], b["rounds"], b["is_bad"], b["bad_type"]) == (pytest.approx(0.2), 2, True, "swap")
    assert points[(1, "a")]["variability"] == 0.0
