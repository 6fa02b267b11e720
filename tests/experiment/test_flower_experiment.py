"""`feddqc experiment` runs its cells through the real Flower simulation, then `feddqc report` reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feddqc_flwr.cli.main import main


def test_experiment_runs_cells_with_flwr_and_reports(tmp_path: Path, tiny_model_dir: Path, flwr_env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in flwr_env.items():
        monkeypatch.setenv(key, value)
    spec = tmp_path / "exp.toml"
    spec.write_text(f"""
name = "tiny"
seeds = [0]
select-metric = "valid-loss"
report-metrics = ["test-loss"]
federation-config = "num-supernodes=2 client-resources-num-cpus=1"
[base]
model = "{tiny_model_dir}"
dataset = "demo"
num-server-rounds = 2
hierarchies = 1
local-steps = 1
batch-size = 2
max-length = 96
max-samples = 0
max-response-words = 0
eval-samples = 4
lora-r = 4
lora-alpha = 8
[grid]
lr-max = [0.05]
[arms.mixed]
method = "fedavg"
""")
    out = tmp_path / "exp"
    main(["experiment", str(spec), "--out", str(out)])
    results = json.loads((out / "results.json").read_text())
    (cell,) = results["cells"]
    assert cell["status"] == "done", cell
    run_dir = out / cell["run_dir"]
    assert json.loads((run_dir / "config.json").read_text())["run_config"]["lr-max"] == 0.05
    assert cell["metrics"]["valid-loss"] > 0 and cell["metrics"]["test-loss"] > 0
    best = results["best_per_arm"][0]
    assert best["arm"] == "mixed" and best["report"]["test-loss"]["mean"] == cell["metrics"]["test-loss"]

    main(["experiment", str(spec), "--out", str(out)])  # finished: nothing is rerun
    assert len(list((out / "cells").rglob("summary.json"))) == 1

    main(["report", str(out)])
    report = (out / "report.md").read_text()
    assert "## Arm comparison" in report and "(arms-test-loss.png)" in report
    assert (out / "arms-test-loss.png").stat().st_size > 5000
    assert (run_dir / "report.md").is_file() and (run_dir / "metrics-per-round.png").is_file()
