"""Paired per-seed differences to the reference arm, against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from feddqc_flwr.experiment.paired import paired_deltas
from feddqc_flwr.experiment.results_file import write_results
from feddqc_flwr.experiment.spec import ExperimentError, load_spec
from feddqc_flwr.experiment.summary import best_per_arm
from feddqc_flwr.report.build import write_report
from feddqc_flwr.report.experiment_tables import write_results_md

TOML = """
name = "paired"
seeds = [0, 1, 2]
select-metric = "valid-loss"
report-metrics = ["test-loss"]
[base]
dataset = "demo"
[arms.mixed]
method = "fedavg"
[arms.feddqc]
method = "feddqc"
"""
# Test losses per seed: the seeds differ by a lot (3.0 vs 3.5 vs 4.0), the arms by a little.
MIXED = {0: 3.00, 1: 3.50, 2: 4.00}
FEDDQC = {0: 2.90, 1: 3.45, 2: 3.88}  # differences -0.10, -0.05, -0.12


def _records() -> list[dict]:
    return [{"cell": f"{arm}/default/seed{s}", "arm": arm, "params": {}, "seed": s, "status": "done",
             "run_dir": f"cells/{arm}/seed{s}", "metrics": {"valid-loss": v, "test-loss": v}}
            for arm, values in (("mixed", MIXED), ("feddqc", FEDDQC)) for s, v in values.items()]


def _spec(tmp_path: Path, text: str = TOML):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return load_spec(path)


def test_paired_delta_mean_sd_and_t_interval_match_a_hand_computation(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert spec.reference_arm == "mixed"
    (delta,) = paired_deltas(best_per_arm(spec, _records()), spec.reference_arm, spec.report_metrics)
    # By hand: d = (-0.10, -0.05, -0.12); mean -0.09; sd = sqrt(((.01)^2 + (.04)^2 + (.03)^2) / 2)
    # = sqrt(0.0013) = 0.036056; t(0.975, 2) = 4.302653; half width = 4.302653 * 0.036056 / sqrt(3) = 0.089567.
    assert delta.arm == "feddqc" and delta.reference == "mixed" and delta.seeds == [0, 1, 2]
    assert delta.deltas == pytest.approx([-0.10, -0.05, -0.12])
    assert delta.mean == pytest.approx(-0.09)
    assert delta.std == pytest.approx(0.0360555, abs=1e-6)
    assert (delta.ci_low, delta.ci_high) == (pytest.approx(-0.179567, abs=1e-5), pytest.approx(-0.000433, abs=1e-5))


def test_only_seeds_both_arms_finished_are_paired(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    records = [r for r in _records() if not (r["arm"] == "mixed" and r["seed"] == 2)]
    (delta,) = paired_deltas(best_per_arm(spec, records), "mixed", ["test-loss"])
    assert delta.seeds == [0, 1] and delta.mean == pytest.approx(-0.075)
    records = [r for r in records if not (r["arm"] == "mixed" and r["seed"] == 1)]
    (single,) = paired_deltas(best_per_arm(spec, records), "mixed", ["test-loss"])
    assert single.n == 1 and single.mean == pytest.approx(-0.10) and math.isnan(single.ci_low)


def test_unknown_reference_arm_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="reference-arm"):
        _spec(tmp_path, 'reference-arm = "oracle"\n' + TOML)


def test_results_files_and_report_carry_the_paired_table_and_plot(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    records, out = _records(), tmp_path / "out"
    out.mkdir()
    best = best_per_arm(spec, records)
    payload = write_results(spec, records, best, out, "feddqc experiment exp.toml", tmp_path)
    write_results_md(spec, records, best, payload, out)
    saved = json.loads((out / "results.json").read_text())
    assert saved["reference_arm"] == "mixed" and saved["paired"][0]["n"] == 3
    assert saved["paired"][0]["mean"] == pytest.approx(-0.09)
    assert "| feddqc | test-loss | -0.09 | [-0.1796, -0.0004331] | 0.036 | 3 |" in (out / "results.md").read_text()
    for arm, values in (("mixed", MIXED), ("feddqc", FEDDQC)):  # the report links each best cell's run
        for s in values:
            run = out / "cells" / arm / f"seed{s}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"run_config": {}}))
            (run / "summary.json").write_text("{}")
            (run / "metrics.jsonl").write_text("")
    write_report(out, out, "md")
    assert (out / "paired-test-loss.png").stat().st_size > 0
    assert "Paired differences to mixed" in (out / "report.md").read_text()
