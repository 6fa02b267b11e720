"""The paired bootstrap over seeds x rows against hand computations, and in the experiment results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from feddqc_flwr.experiment.bootstrap import bootstrap_interval, bootstrap_replicates, row_differences
from feddqc_flwr.experiment.grid import run_grid
from feddqc_flwr.experiment.paired import paired_deltas
from feddqc_flwr.experiment.results_file import write_results
from feddqc_flwr.experiment.spec import Cell, load_spec
from feddqc_flwr.experiment.summary import best_per_arm
from feddqc_flwr.report.experiment_tables import write_results_md


def test_no_spread_within_or_between_seeds_gives_a_point() -> None:
    assert bootstrap_interval([np.full(4, 0.25), np.full(2, 0.25)]) == (0.25, 0.25, 0.25)


def test_two_rows_of_one_seed_enumerated() -> None:
    """Rows d = (0, 1): a replicate draws 2 rows, so its mean is 0, 0.5 or 1 with probability
    1/4, 1/2, 1/4; the 2.5 % and 97.5 % percentiles are then 0 and 1."""
    reps = bootstrap_replicates([np.array([0.0, 1.0])], draws=4000)
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}
    for value, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(reps == value) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 4000))
    assert bootstrap_interval([np.array([0.0, 1.0])]) == (0.5, 0.0, 1.0)


def test_seeds_without_spread_within_resample_the_seeds_alone() -> None:
    """Seed deltas 0 and 1 on every row: a replicate is the mean of 2 seeds drawn with replacement:
    0, 0.5 or 1 with probability 1/4, 1/2, 1/4, whatever the rows drawn."""
    reps = bootstrap_replicates([np.zeros(5), np.ones(3)], draws=4000)
    assert np.mean(reps == 0.5) == pytest.approx(0.5, abs=4 * math.sqrt(0.25 / 4000))
    assert set(np.unique(reps)) == {0.0, 0.5, 1.0}


def test_replicate_variance_has_both_stages() -> None:
    """Seed A rows (0, 2), seed B rows (4, 4). A drawn seed's row mean Y: for A 0, 1, 2 with
    1/4, 1/2, 1/4 (mean 1, variance 1/2), for B 4; drawn with probability 1/2 each:
    E[Y] = 2.5, E[Y^2] = (1/2)(1/2 + 1) + (1/2)16 = 8.75, Var Y = 2.5. A replicate averages two
    independent draws: mean 2.5, variance 1.25. (Seeds alone would give 1.125, rows alone 0.125.)"""
    reps = bootstrap_replicates([np.array([0.0, 2.0]), np.array([4.0, 4.0])], draws=20000)
    assert reps.mean() == pytest.approx(2.5, abs=0.03)
    assert reps.var() == pytest.approx(1.25, rel=0.05)


def test_seeded_and_deterministic() -> None:
    diffs = [np.array([0.1, -0.3, 0.2]), np.array([0.0, 0.5])]
    assert np.array_equal(bootstrap_replicates(diffs), bootstrap_replicates(diffs))
    assert not np.array_equal(bootstrap_replicates(diffs, seed=0), bootstrap_replicates(diffs, seed=1))
    with pytest.raises(ValueError, match="at least one paired row"):
        bootstrap_replicates([np.array([0.1]), np.array([])])


def test_row_differences_pair_the_same_rows_and_drop_unscored_ones() -> None:
    arm = {"sample_ids": ["a", "b", "c"], "values": {"test-align-acc": [1.0, None, 0.0]}}
    ref = {"sample_ids": ["a", "b", "c"], "values": {"test-align-acc": [0.0, 1.0, 0.0]}}
    assert row_differences(arm, ref, "test-align-acc").tolist() == [1.0, 0.0]  # row b: not scored by the arm
    assert row_differences(arm, {**ref, "sample_ids": ["a", "c", "b"]}, "test-align-acc") is None  # other rows
    assert row_differences(arm, ref, "test-loss") is None and row_differences(None, ref, "test-align-acc") is None


TOML = """
name = "boot"
seeds = [0, 1]
report-metrics = ["test-loss"]
[base]
dataset = "demo"
[arms.mixed]
method = "fedavg"
[arms.feddqc]
method = "feddqc"
"""
# Per test row losses: the mixed arm's vary by row; feddqc's are 0.1 (seed 0) and 0.05 (seed 1)
# lower on every row, so every row's paired difference is the seed's difference.
MIXED_ROWS = {0: [3.0, 2.0, 4.0], 1: [3.5, 3.0, 4.0]}
DELTA = {0: -0.1, 1: -0.05}


class RowsRunner:
    """Writes a run directory like the ServerApp's: summary.json and row-values.jsonl (2 rounds)."""

    def __call__(self, cell: Cell, cell_dir: Path) -> Path:
        run = cell_dir / "runs" / "run"
        run.mkdir(parents=True)
        shift = DELTA[cell.seed] if cell.arm == "feddqc" else 0.0
        losses = [v + shift for v in MIXED_ROWS[cell.seed]]
        mean = sum(losses) / 3
        (run / "summary.json").write_text(json.dumps({"final_server_eval": {"valid-loss": mean, "test-loss": mean}}))
        lines = [{"server_round": r, "sample_ids": {"test": ["t0", "t1", "t2"], "valid": ["v0"]},
                  "values": {"test-loss": [9.0] * 3 if r == 0 else losses, "valid-loss": [mean]}} for r in (0, 1)]
        (run / "row-values.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        return run


def test_experiment_results_carry_the_bootstrap_next_to_the_t_interval(tmp_path: Path) -> None:
    """Differences are constant within each seed, so the bootstrap resamples the two seed deltas:
    replicates -0.1, -0.075, -0.05, and the interval is [-0.1, -0.05] around -0.075."""
    spec_path = tmp_path / "exp.toml"
    spec_path.write_text(TOML)
    spec = load_spec(spec_path)
    out = tmp_path / "out"
    records = run_grid(spec, out, RowsRunner())
    assert records[0]["test_rows"] == {"sample_ids": ["t0", "t1", "t2"], "values": {"test-loss": [3.0, 2.0, 4.0]}}
    best = best_per_arm(spec, records)
    (delta,) = paired_deltas(best, "mixed", ["test-loss"])
    assert delta.deltas == pytest.approx([-0.1, -0.05]) and delta.rows == [3, 3]
    assert delta.boot_estimate == pytest.approx(-0.075)
    assert (delta.boot_low, delta.boot_high) == (pytest.approx(-0.1), pytest.approx(-0.05))
    payload = write_results(spec, records, best, out, "feddqc experiment exp.toml", tmp_path)
    assert "bootstrap" in payload["paired_bootstrap_method"]
    write_results_md(spec, records, best, payload, out)
    assert "| [-0.1, -0.05] | 3, 3 |" in (out / "results.md").read_text()
