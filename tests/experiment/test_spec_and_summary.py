"""Experiment files, best-per-arm selection on validation, and spread over seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from feddqc_flwr.experiment.spec import ExperimentError, load_spec
from feddqc_flwr.experiment.summary import best_per_arm

TOML = """
name = "t"
seeds = [0, 1]
select-metric = "valid-loss"
report-metrics = ["test-loss"]
[base]
dataset = "demo"
[grid]
lr-max = [0.001, 0.01]
[arms.oracle]
method = "fedavg"
corrupt-ratio = 0.0
[arms.feddqc]
method = "feddqc"
"""


def _spec(tmp_path: Path, text: str = TOML, name: str = "exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return load_spec(path)


def test_cells_are_arms_times_grid_times_seeds(tmp_path: Path) -> None:
    cells = _spec(tmp_path).cells()
    assert len(cells) == 2 * 2 * 2
    first = dict(cells[0].run_config)
    assert first["method"] == "fedavg" and first["corrupt-ratio"] == 0.0 and first["dataset"] == "demo"
    assert first["seed"] == 0 and first["lr-max"] == 0.001
    assert cells[0].cell_id == "oracle/lr-max=0.001/seed0"
    assert len({c.cell_id for c in cells}) == 8


def test_yaml_file_gives_the_same_cells(tmp_path: Path) -> None:
    yaml_text = ("name: t\nseeds: [0, 1]\nselect-metric: valid-loss\nreport-metrics: [test-loss]\n"
                 "base: {dataset: demo}\ngrid: {lr-max: [0.001, 0.01]}\n"
                 "arms:\n  oracle: {method: fedavg, corrupt-ratio: 0.0}\n  feddqc: {method: feddqc}\n")
    assert _spec(tmp_path, yaml_text, "exp.yaml").cells() == _spec(tmp_path).cells()


@pytest.mark.parametrize(("text", "message"), [
    (TOML.replace('method = "feddqc"', 'method = "fedfoo"'), "'method' = 'fedfoo'"),
    (TOML.replace("[base]", "[base]\nlearning-rate = 1"), "learning-rate"),
    (TOML.replace('select-metric = "valid-loss"', 'select-metric = "test-loss"'), "validation"),
    ("seeds = []\n[arms.a]\nmethod = 'fedavg'\n", "seeds"),
    (TOML + "\nextra = 1\n", "extra"),
])
def test_bad_files_fail_before_running_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        _spec(tmp_path, text)


def _record(arm: str, lr: float, seed: int, valid: float, test: float) -> dict:
    return {"cell": f"{arm}/{lr}/{seed}", "arm": arm, "params": {"lr-max": lr}, "seed": seed, "status": "done",
            "metrics": {"valid-loss": valid, "test-loss": test}}


def test_best_per_arm_is_chosen_on_validation_never_on_test(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    records = [
        # lr 0.001: better validation (mean 1.5), worse test (mean 3.0)
        _record("feddqc", 0.001, 0, 1.0, 2.0), _record("feddqc", 0.001, 1, 2.0, 4.0),
        # lr 0.01: worse validation (mean 2.5), much better test (mean 0.5)
        _record("feddqc", 0.01, 0, 2.0, 0.4), _record("feddqc", 0.01, 1, 3.0, 0.6),
        _record("oracle", 0.01, 0, 1.0, 1.0),
        {**_record("oracle", 0.001, 0, 0.1, 0.1), "status": "failed"},  # failed cells never count
    ]
    best = {b.arm: b for b in best_per_arm(spec, records)}
    assert list(best) == ["oracle", "feddqc"]  # the file's arm order
    chosen = best["feddqc"]
    assert chosen.params == {"lr-max": 0.001} and chosen.candidates == 2
    assert chosen.select.mean == pytest.approx(1.5)
    test = chosen.report["test-loss"]
    assert (test.mean, test.min, test.max, test.n) == (pytest.approx(3.0), 2.0, 4.0, 2)
    assert test.std == pytest.approx(math.sqrt(2.0))  # sample std of (2, 4)
    assert best["oracle"].params == {"lr-max": 0.01} and best["oracle"].report["test-loss"].std == 0.0


def test_accuracy_metrics_are_maximised(tmp_path: Path) -> None:
    spec = _spec(tmp_path, TOML.replace('"valid-loss"', '"valid-choice-acc"'))
    records = [{**_record("feddqc", 0.001, 0, 0, 0), "metrics": {"valid-choice-acc": 0.4}},
               {**_record("feddqc", 0.01, 0, 0, 0), "metrics": {"valid-choice-acc": 0.7}}]
    assert best_per_arm(spec, records)[0].params == {"lr-max": 0.01}
