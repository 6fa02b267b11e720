"""Trackers get the numbers metrics.jsonl has: TensorBoard read back from its event file, W&B and
MLflow through stand-ins (neither is a dependency), and MLflow for real where it is installed."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.app.progress import RunProgress
from feddqc_flwr.app.results import RunRecorder
from tests.helpers import make_config
from tests.run_records import records

SECTIONS = ("train", "scoring", "server_eval")


def _run(tmp_path: Path, tracking: str) -> tuple[Path, list[dict[str, Any]]]:
    """Feed the hand-made records through the server's recorder and progress; returns the run dir
    and metrics.jsonl as written."""
    cfg = make_config(tracking=tracking, num_server_rounds=2, hierarchies=2)
    recorder = RunRecorder(cfg, tmp_path)
    progress = RunProgress(cfg, recorder.run_dir)
    for record in records():
        recorder.write_round(record)
        progress.record(record)
    progress.finish(progress.verdict(250.0))
    lines = [json.loads(x) for x in recorder.metrics_path.read_text().splitlines()]
    return recorder.run_dir, lines


def _expected(lines: list[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """(tag, round) -> value for every number in metrics.jsonl, by the documented tag names."""
    out: dict[tuple[str, int], float] = {}
    for line in lines:
        step = line["server_round"]
        for section in SECTIONS:
            out.update({(f"{section}/{k}", step): v for k, v in (line.get(section) or {}).items() if v is not None})
        if "threshold" in line:
            out[("round/lambda", step)] = line["threshold"]
            out[("round/lr", step)] = line["lr"]
        for client in line.get("clients", []):
            out.update({(f"client-{int(client['node'])}/{k}", step): v for k, v in client.items() if k != "node"})
    return out


def test_tensorboard_event_file_holds_the_metrics_jsonl_values(tmp_path: Path) -> None:
    run_dir, lines = _run(tmp_path, "tensorboard")
    assert list(run_dir.glob("events.out.tfevents.*"))  # next to metrics.jsonl
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    logged = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    expected = _expected(lines)
    assert len(expected) > 40
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6), key  # event files store float32
    assert ("train/train-loss", 2) not in logged  # null in metrics.jsonl: nothing logged
    assert logged[("scoring/share-above-lambda", 1)] == pytest.approx(0.6)  # the kept share
    # the verdict's numbers (hand-computed in test_verdict) and its text
    assert logged[("verdict/h1/auroc", 0)] == pytest.approx(0.875)
    assert logged[("verdict/h2/trained_corrupted_share", 0)] == pytest.approx(1 / 3)
    assert logged[("verdict/test-loss/last", 0)] == pytest.approx(3.1)
    assert logged[("verdict/seconds/flower", 0)] == pytest.approx(131.0)
    (text,) = events.Tensors("verdict/text_summary")  # add_text
    assert b"Verdict: did quality control do something?" in text.tensor_proto.string_val[0]


def test_no_tracking_writes_no_event_file(tmp_path: Path) -> None:
    run_dir, _ = _run(tmp_path, "none")
    assert not list(run_dir.glob("events.out.tfevents.*"))


class _FakeWandbRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init_kwargs, self.logged, self.summary, self.finished, self.exit_code = kwargs, {}, {}, False, None
        self.finish_calls = 0

    def log(self, values: dict[str, float], step: int) -> None:
        self.logged.setdefault(step, {}).update(values)

    def finish(self, exit_code: int = 0) -> None:
        self.finished, self.exit_code = True, exit_code
        self.finish_calls += 1


def test_wandb_gets_every_round_and_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[_FakeWandbRun] = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: runs.append(_FakeWandbRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    run_dir, lines = _run(tmp_path, "wandb")
    (run,) = runs
    assert run.init_kwargs["name"] == run_dir.name and run.init_kwargs["config"]["tracking"] == "wandb"
    for (tag, step), value in _expected(lines).items():
        assert run.logged[step][tag] == value, (tag, step)
    assert run.summary["verdict/h1/kept"] == 6 and run.summary["verdict/seconds/scoring"] == 55.0
    assert run.finished and run.exit_code == 0
    assert not list(run_dir.glob("events.out.tfevents.*"))  # only what `tracking` names


def test_wandb_needs_a_key_or_offline_mode_and_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError, match="set WANDB_API_KEY"):
        RunProgress(make_config(tracking="wandb"), tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(ConfigError, match="'wandb', which is not installed on the server: pip install wandb"):
        RunProgress(make_config(tracking="wandb"), tmp_path)


def test_mlflow_gets_every_round_and_the_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, Any] = {"metrics": {}, "params": {}, "texts": {}}
    fake = types.ModuleType("mlflow")
    fake.start_run = lambda run_name: calls.update(run_name=run_name)
    fake.log_params = lambda params: calls["params"].update(params)
    fake.log_metrics = lambda metrics, step=None: calls["metrics"].setdefault(step, {}).update(metrics)
    fake.log_text = lambda text, name: calls["texts"].update({name: text})
    fake.end_run = lambda status: calls.update(ended=status)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    run_dir, lines = _run(tmp_path, "mlflow")
    assert calls["run_name"] == run_dir.name and calls["params"]["scorer"] == "ira-sum+loss"  # the default run config
    for (tag, step), value in _expected(lines).items():
        assert calls["metrics"][step][tag] == value, (tag, step)
    assert calls["metrics"][None]["verdict/h2/dropped"] == 3
    assert calls["texts"]["verdict.txt"].startswith("Verdict: did quality control do something?")
    assert calls["ended"] == "FINISHED"


def test_a_run_that_raises_ends_its_tracker_runs_as_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracker that cannot start closes the ones started before it; an exception inside the
    ServerApp's `with RunProgress(...)` ends W&B with exit code 1, once, however often it closes;
    a run that ends normally inside the block is not marked failed."""
    ended: list[str] = []
    fake = types.ModuleType("mlflow")
    fake.start_run = lambda run_name: None
    fake.log_params = lambda params: None
    fake.end_run = lambda status: ended.append(status)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(ConfigError, match="set WANDB_API_KEY"):
        RunProgress(make_config(tracking="mlflow,wandb"), tmp_path)
    assert ended == ["FAILED"]

    runs: list[_FakeWandbRun] = []
    wandb = types.ModuleType("wandb")
    wandb.init = lambda **kwargs: runs.append(_FakeWandbRun(**kwargs)) or runs[-1]
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setenv("WANDB_API_KEY", "test-key")
    with RunProgress(make_config(tracking="wandb"), tmp_path):
        pass
    assert not runs[0].finished
    progress = RunProgress(make_config(tracking="wandb"), tmp_path)
    with pytest.raises(RuntimeError, match="round 3 failed"), progress:
        raise RuntimeError("round 3 failed")
    progress.__exit__(RuntimeError, None, None)
    assert runs[1].finish_calls == 1 and runs[1].exit_code == 1
