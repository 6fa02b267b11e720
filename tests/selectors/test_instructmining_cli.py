"""`feddqc instructmining fit` on run directories and `feddqc score --scorer instructmining`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from feddqc_flwr.app.results import saved_run_config
from feddqc_flwr.app.run_defaults import default_run_config
from feddqc_flwr.cli.instructmining import add_instructmining_commands, mean_indicators
from feddqc_flwr.cli.score import add_score_command
from feddqc_flwr.scoring.instructmining.rule import Rule


def _run_dir(root: Path, name: str, model: Path, corrupt_type: str, loss: float) -> Path:
    run = root / name
    run.mkdir()
    config = {**default_run_config(), "model": str(model), "dataset": "demo", "max-samples": 24,
              "corrupt-type": corrupt_type, "max-length": 64}
    config.pop("eval-metrics", None)  # an older run: missing keys take today's defaults
    (run / "config.json").write_text(json.dumps({"run_config": config}))
    (run / "summary.json").write_text(json.dumps({"final_server_eval": {"valid-loss": loss}}))
    return run


def test_fit_refits_the_rule_from_run_directories(tiny_model_dir: Path, tmp_path: Path) -> None:
    runs = [_run_dir(tmp_path, f"run-{t}", tiny_model_dir, t, loss)
            for t, loss in (("none", 2.0), ("cut", 2.5), ("delete", 3.0), ("mixture", 2.8))]
    parser = argparse.ArgumentParser()
    add_instructmining_commands(parser.add_subparsers(dest="command"))
    out = tmp_path / "rule.json"
    args = parser.parse_args(["instructmining", "fit", *map(str, runs), "--out", str(out),
                              "--indicators", "output_len,mtld"])
    rule = args.func(args)
    assert Rule.load(out) == rule and set(rule.weights) == {"output_len", "mtld"}
    means = [mean_indicators(saved_run_config(r), 2, ["output_len", "mtld"]) for r in runs]
    x = np.array([[1.0, m["output_len"], m["mtld"]] for m in means])
    coef = np.linalg.lstsq(x, np.log([2.0, 2.5, 3.0, 2.8]), rcond=None)[0]
    np.testing.assert_allclose([rule.intercept, rule.weights["output_len"], rule.weights["mtld"]], coef)
    assert means[1]["output_len"] < means[0]["output_len"]  # cut responses are shorter
    assert 0.0 <= rule.r2 <= 1.0


def test_fit_needs_the_target_metric(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "run", tiny_model_dir, "none", 2.0)
    parser = argparse.ArgumentParser()
    add_instructmining_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["instructmining", "fit", str(run), "--target", "accuracy"])
    with pytest.raises(ValueError, match="no final_server_eval"):
        args.func(args)


def test_score_command_runs_instructmining(tiny_model_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_score_command(parser.add_subparsers(dest="command"))
    out = tmp_path / "scores.jsonl"
    args = parser.parse_args(["score", "--model", str(tiny_model_dir), "--scorer", "instructmining",
                              "--dataset", "demo", "--max-samples", "20", "--max-length", "64", "--out", str(out)])
    result = args.func(args)
    scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert len(scores) == result["overall"]["n"] and all(s is not None and np.isfinite(s) for s in scores)
    assert 0.0 <= result["overall"]["auroc"] <= 1.0
