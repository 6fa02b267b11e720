"""Resume and SuperNode restart continue a run exactly: clients keep their hierarchy progress on
their own disk under a run key that resumed runs keep, the resume check covers every key that
changes data, selection or training, FedAvgM's momentum is checkpointed, and a checkpoint half
swapped in or a progress file that cannot be read does not stop a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from safetensors.numpy import load_file

from feddqc_flwr.app.client_app import _progress_file
from feddqc_flwr.app.client_progress import (
    ClientProgress,
    ProgressFile,
    RunLineage,
    load_progress,
    progress_path,
    save_progress,
)
from feddqc_flwr.app.config import ConfigError, RunConfig, parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.results import RunRecorder, changed_resume_keys, checkpoint_state, load_checkpoint
from feddqc_flwr.app.strategies.factory import build_base_strategy
from feddqc_flwr.app.strategies.feddqc import FedDQCStrategy
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle, set_adapter_arrays
from tests.helpers import default_run_config, deliver, make_config
from tests.test_strategies import OfflineGrid, _reply

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("client_task_identity")


# --- a client restarted (or resumed) with empty context.state, through the real handlers ---------


def _raw(tiny_model_dir: Path, out: Path) -> dict:
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 1, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "hierarchies": 2, "num-server-rounds": 4, "output-dir": str(out)})
    return raw


def _context(raw: dict, run_id: int) -> Context:
    """A fresh ClientApp context, as after a SuperNode restart or in a new Flower run."""
    return Context(run_id=run_id, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                   state=RecordDict(), run_config=raw)


def _send(context: Context, message_type: str, config: dict, arrays=None) -> dict:
    content = RecordDict({"config": ConfigRecord(config)})
    if arrays is not None:
        content["arrays"] = arrays
    reply = deliver(context, message_type, content)
    assert not reply.has_error(), reply.error
    return dict(reply.content["metrics"])


def _score(context: Context, arrays, lineage: RunLineage, rnd: int, stage: int) -> ClientProgress:
    _send(context, "query.score", {"server-round": rnd, "hierarchy": stage, **lineage.to_config()}, arrays)
    return ClientProgress.load(context.state, 0)


def _train(context: Context, arrays, lineage: RunLineage, rnd: int, stage: int, lam: list[float]) -> dict:
    config = {"server-round": rnd, "hierarchy": stage, "rescore": False, "lr": 1e-3, "lambda": lam,
              **lineage.to_config()}
    return _send(context, "train", config, arrays)


def test_restarted_and_resumed_clients_do_not_retrain_earlier_stages(tmp_path: Path, tiny_model_dir: Path) -> None:
    raw = _raw(tiny_model_dir, tmp_path / "outputs")
    cfg = parse_run_config(raw)
    arrays = adapter_arrays(load_model_bundle(spec_from_config(cfg)).model)
    n_rows = len(load_client_data(cfg.data_spec, 0, 2).train)
    lineage = RunLineage("run-a", str(tmp_path / "outputs"), ((1, 1),))

    first = _context(raw, run_id=1)
    lam = [float(v) for v in np.median(_score(first, arrays, lineage, 1, 1).score_matrix(), axis=0)]
    _train(first, arrays, lineage, 1, 1, lam)
    stage1 = ClientProgress.load(first.state, 0)
    assert stage1.stage_train and len(stage1.pool) == n_rows - len(stage1.stage_train)
    saved = list((tmp_path / "outputs" / "client-local" / "progress-run-a").glob("partition-0-of-2.json"))
    assert len(saved) == 1 and "instruction" not in saved[0].read_text()  # indices and scores only

    # SuperNode restart in round 2 (same stage): the stage's part is kept, nothing is re-scored.
    restarted = _context(raw, run_id=1)
    metrics = _train(restarted, arrays, lineage, 2, 1, lam)
    assert metrics["score-seconds"] == 0.0 and metrics["stage-train"] == len(stage1.stage_train)
    assert ClientProgress.load(restarted.state, 0).stage_train == stage1.stage_train

    # Round 3 starts stage 2, and the server dies before completing it (run 1 saved round 3 anyway).
    crashed = _context(raw, run_id=1)
    in_crashed_round = _score(crashed, arrays, lineage, 3, 2)
    _train(crashed, arrays, lineage, 3, 2, lam)
    assert sorted(in_crashed_round.scored_ids) == sorted(stage1.pool)  # stage 1's rows are not re-scored
    stage2 = ClientProgress.load(crashed.state, 0).stage_train

    # Run 2 resumes after round 2: the snapshot of the uncompleted round 3 does not count.
    resumed_lineage = lineage.resumed(2, 3)
    resumed = _context(raw, run_id=2)
    assert load_progress(resumed.state, n_rows, _progress_store(resumed, resumed_lineage, 3, cfg)).selected_stage == 1
    before = _score(resumed, arrays, resumed_lineage, 3, 2)
    assert sorted(before.scored_ids) == sorted(stage1.pool)
    _train(resumed, arrays, resumed_lineage, 3, 2, lam)
    after = ClientProgress.load(resumed.state, 0)
    assert after.stage_train == stage2 and not set(after.stage_train) & set(stage1.stage_train)
    assert sorted(after.trained) == sorted(stage1.stage_train + stage2)

    # A brand-new run (its own key) never picks up that progress.
    fresh = _context(raw, run_id=3)
    new_run = RunLineage("run-b", str(tmp_path / "outputs"), ((3, 1),))
    assert sorted(_score(fresh, arrays, new_run, 1, 1).scored_ids) == list(range(n_rows))


def _progress_store(context: Context, lineage: RunLineage, rnd: int, cfg: RunConfig) -> ProgressFile | None:
    return _progress_file(context, ConfigRecord({"server-round": rnd, **lineage.to_config()}),
                          load_client_data(cfg.data_spec, 0, 2).train)


def test_lineage_counts_each_runs_rounds_up_to_the_next_resume() -> None:
    lineage = RunLineage("k", "out", ((10, 1),)).resumed(20, 4).resumed(30, 6)
    assert lineage.runs == ((10, 1), (20, 4), (30, 6))
    assert lineage.covers(10, 3, 7) and not lineage.covers(10, 4, 7)  # run 10 crashed in round 4
    assert lineage.covers(20, 5, 7) and not lineage.covers(20, 6, 7)
    assert lineage.covers(30, 7, 7) and not lineage.covers(30, 8, 7)
    assert not lineage.covers(99, 2, 7)
    with pytest.raises(ValueError, match="folder name"):
        RunLineage.from_config({"progress": json.dumps({"key": "../x", "output-dir": "o", "runs": [[1, 1]]})})


# --- the resume check ------------------------------------------------------------------------------


def _fake_checkpoint(run_dir: Path, **overrides: object) -> None:
    """adapters/last/state.json as a run with `overrides` writes it (the check runs before the adapter loads)."""
    folder = run_dir / "adapters" / "last"
    folder.mkdir(parents=True)
    state = checkpoint_state(make_config(**overrides), 2, {"ira-sum": 0.5, "loss": -2.0})
    (folder / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(("key", "value"), [
    ("seed", 1), ("dataset", "demo"), ("max-samples", 40), ("corrupt-ratio", 0.2), ("partitioner", "dirichlet"),
    ("scorer", "ira"), ("retention", 0.3), ("histogram-bins", 50), ("filtered-rows", "drop"), ("lora-r", 4),
    ("prompt-template", "chat"), ("max-length", 128), ("num-server-rounds", 8), ("server-momentum", 0.5),
])
def test_resume_refuses_a_changed_data_selection_or_training_key(tmp_path: Path, key: str, value: object) -> None:
    _fake_checkpoint(tmp_path)
    changed = make_config(**{key.replace("-", "_"): value, "resume_from": str(tmp_path)})
    with pytest.raises(ConfigError, match=f"'resume-from'.*'{key}' = {value!r} \\(checkpoint: "):
        load_checkpoint(changed, [])  # refused before the adapter loads


def test_resume_allows_operational_keys_and_older_checkpoints() -> None:
    saved = make_config().as_dict()
    later = make_config(round_timeout=60, output_dir="elsewhere", eval_samples=4, score_batch_size=2, data_map=True,
                        eval_metrics="loss,alignment", eval_align_candidates=3, resume_from="x")
    assert changed_resume_keys(saved, later) == {}
    older = {"method": "feddqc", "num-server-rounds": 6, "strategy": "fedavg"}  # "schedule" of old checkpoints
    assert changed_resume_keys(older, make_config(strategy="fedadam")) == {"strategy": ("fedavg", "fedadam")}


# --- FedAvgM momentum through the checkpoint on disk ---------------------------------------------


def _resuming(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """`cfg` with resume-from = `run_dir`."""
    return make_config(**{**{k.replace("-", "_"): v for k, v in cfg.as_dict().items()}, "resume_from": str(run_dir)})


def _fedavgm_round(strategy: FedDQCStrategy, rnd: int, arrays: ArrayRecord, keys: list[str],
                   delta: float) -> ArrayRecord:
    """One round whose clients reply as real ones do, keyed in the model's order: node 11 (3 examples)
    sends x + delta*(i+1) for the i-th key, node 12 (1 example) x - delta*(i+1), so the weighted mean
    is x + delta*(i+1)/2."""
    list(strategy.configure_train(rnd, arrays, ConfigRecord(), OfflineGrid([11, 12])))
    replies = [_reply(node, {k: arrays[k].numpy() + sign * delta * (i + 1) for i, k in enumerate(keys)}, examples)
               for node, sign, examples in ((11, 1.0, 3), (12, -1.0, 1))]
    out, _ = strategy.aggregate_train(rnd, replies)
    return out


def test_fedavgm_resumes_from_the_checkpoint_on_disk_with_its_momentum(tmp_path: Path, tiny_model_dir: Path) -> None:
    """FedAvgM by hand (Flower's convention): g_t = x_(t-1) - mean_t = -u_t, m_1 = g_1,
    m_t = beta*m_(t-1) + g_t, x_t = x_(t-1) - eta*m_t. With u_t = delta_t*(i+1)/2 for the i-th key:
    x_2 = x_0 + eta*((1 + beta)*u_1 + u_2), m_2 = -(beta*u_1 + u_2),
    x_3 = x_2 + eta*(beta^2*u_1 + beta*u_2 + u_3).
    q_proj and o_proj sort as o before q, unlike the model's order, so a checkpoint read back in the
    file's order pairs one projection with the other and misses these values (eta = 0.5: at 1, the
    wrongly paired x_2 would cancel out of x_3)."""
    cfg = make_config(model=str(tiny_model_dir), method="fedavg", strategy="fedavgm", server_momentum=0.9,
                      server_learning_rate=0.5, num_server_rounds=3, hierarchies=1, lora_r=4, lora_alpha=8,
                      min_train_nodes=2, lora_target_modules="q_proj,o_proj")
    beta, eta, deltas = 0.9, cfg.server_learning_rate, (0.3, -0.1, 0.2)
    model = load_model_bundle(spec_from_config(cfg)).model
    start = adapter_arrays(model)
    keys = list(start)
    assert keys != sorted(keys)  # the bug needs an order a sorted file does not keep
    x0 = {k: start[k].numpy().astype(np.float64) for k in keys}
    u = [{k: delta * (i + 1) / 2 for i, k in enumerate(keys)} for delta in deltas]
    x2 = {k: x0[k] + eta * ((1 + beta) * u[0][k] + u[1][k]) for k in keys}
    x3 = {k: x2[k] + eta * (beta**2 * u[0][k] + beta * u[1][k] + u[2][k]) for k in keys}

    first = FedDQCStrategy(build_base_strategy(cfg), cfg)
    arrays = start
    for rnd, delta in enumerate(deltas[:2], 1):
        arrays = _fedavgm_round(first, rnd, arrays, keys, delta)
    set_adapter_arrays(model, arrays)  # as the ServerApp's round end does before it saves
    recorder = RunRecorder(cfg, tmp_path)
    recorder.save_checkpoint(model, checkpoint_state(cfg, 2, None), first.optimizer_state())

    checkpoint = load_checkpoint(_resuming(cfg, recorder.run_dir), keys)
    assert checkpoint.completed_round == 2 and list(checkpoint.arrays) == keys
    for k in keys:
        np.testing.assert_allclose(checkpoint.arrays[k].numpy(), x2[k], rtol=1e-6, atol=1e-7, err_msg=k)
    resumed = FedDQCStrategy(build_base_strategy(cfg), cfg)
    resumed.load_optimizer_state(checkpoint.optimizer)
    resumed.resume(checkpoint.completed_round, checkpoint.thresholds)
    for k, momentum in zip(keys, resumed.base.momentum_vector, strict=True):
        np.testing.assert_allclose(momentum, -(beta * u[0][k] + u[1][k]), rtol=1e-6, err_msg=k)
    out = _fedavgm_round(resumed, 1, checkpoint.arrays, keys, deltas[2])  # Flower's round 1 here = round 3
    for k in keys:
        np.testing.assert_allclose(out[k].numpy(), x3[k], rtol=1e-6, atol=1e-7, err_msg=k)


# --- faults while saving: a checkpoint half swapped in, a progress file that cannot be read ---------


class Killed(BaseException):
    """The process dying at that point (nothing after it runs, no `except Exception` catches it)."""


def test_server_killed_between_the_checkpoint_renames_resumes_from_last_old(
        tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(model=str(tiny_model_dir), method="fedavg", num_server_rounds=4, hierarchies=1, lora_r=4,
                      lora_alpha=8)
    model = load_model_bundle(spec_from_config(cfg)).model
    shapes = {k: a.numpy().shape for k, a in adapter_arrays(model).items()}
    recorder = RunRecorder(cfg, tmp_path)

    def save_round(done: int, value: float) -> None:
        set_adapter_arrays(model, ArrayRecord({k: Array(np.full(s, value, np.float32)) for k, s in shapes.items()}))
        recorder.save_checkpoint(model, checkpoint_state(cfg, done, None), {})

    save_round(1, 0.25)
    rename = Path.rename

    def killed_before_swapping_in(path: Path, target: Path) -> Path:
        if path.name == "last.new":
            raise Killed
        return rename(path, target)

    monkeypatch.setattr(Path, "rename", killed_before_swapping_in)
    with pytest.raises(Killed):
        save_round(2, 0.5)
    monkeypatch.undo()
    assert sorted(p.name for p in (recorder.run_dir / "adapters").iterdir()) == ["last.new", "last.old"]

    with caplog.at_level("WARNING", logger="flwr"):
        checkpoint = load_checkpoint(_resuming(cfg, recorder.run_dir), list(shapes))
    assert checkpoint.completed_round == 1 and "last.old" in caplog.text
    assert all(np.all(a.numpy() == 0.25) for a in checkpoint.arrays.values())


def _store(tmp_path: Path) -> ProgressFile:
    """Partition 0's progress file of a one-run lineage, for five rows built here."""
    rows = Dataset.from_dict({"sample_id": list(range(5)), "instruction": [f"q{i}" for i in range(5)],
                              "input": [""] * 5, "response": [f"a{i}" for i in range(5)]})
    lineage = RunLineage("run-a", str(tmp_path), ((1, 1),))
    return ProgressFile(progress_path(tmp_path, "run-a", 0, 2), lineage, run_id=1, server_round=1, rows=rows)


@pytest.mark.parametrize("content", [b"", b'{"key": "run-a", "rows-dig', b"\xff\xfe{}"],
                         ids=["empty", "truncated", "not-utf8"])
def test_unreadable_progress_file_is_ignored_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                          content: bytes) -> None:
    store = _store(tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(content)
    state = RecordDict()
    with caplog.at_level("WARNING", logger="flwr"):
        assert load_progress(state, 5, store).pool == [0, 1, 2, 3, 4]  # a fresh pool, as for other rows
    assert "cannot be read" in caplog.text
    save_progress(ClientProgress(pool=[3, 4], stage_train=[0, 1, 2], trained=[0, 1, 2], selected_stage=1),
                  state, store)
    restored = _store(tmp_path).load()  # the next message, with empty context.state, reads it back
    assert restored is not None and restored.pool == [3, 4] and restored.trained == [0, 1, 2]


def test_progress_file_reaches_the_disk_before_it_is_renamed_into_place(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The real os calls run; the test records which file each fsync and rename touched, in order."""
    calls: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recorded_replace(src: str | Path, dst: str | Path) -> None:
        calls.append(("replace", str(src)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    store = _store(tmp_path)
    store.save(ClientProgress(pool=[3, 4], trained=[0, 1, 2]))
    monkeypatch.undo()
    assert [name for name, _ in calls] == ["fsync", "replace"] and calls[0][1] == calls[1][1] != str(store.path)
    assert json.loads(store.path.read_text())["snapshots"][0]["progress"]["pool"] == [3, 4]


# --- end to end: `flwr run` interrupted after hierarchy 1 and resumed = the uninterrupted run ------


def _overrides(tmp_path: Path, tiny_model_dir: Path, out: Path, *extra: str) -> Path:
    path = tmp_path / f"run-{time.monotonic_ns()}.toml"
    path.write_text("\n".join([
        f'model = "{tiny_model_dir}"', 'dataset = "demo"', "num-server-rounds = 4", "hierarchies = 2",
        "local-steps = 1", "batch-size = 2", "max-length = 96", "max-samples = 0", "max-response-words = 0",
        "eval-samples = 2", "lora-r = 4", "lora-alpha = 8", "retention = 0.6", "lr-max = 0.05",
        'strategy = "fedavgm"', f'output-dir = "{out}"', *extra,
    ]) + "\n")
    return path


def _start(flwr_env: dict, overrides: Path) -> subprocess.Popen:
    flwr = shutil.which("flwr", path=flwr_env["PATH"])
    return subprocess.Popen(
        [flwr, "run", str(REPO), "--stream", "--run-config", str(overrides),
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        env=flwr_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    log, _ = proc.communicate(timeout=900)
    return log


def _completed_round(out: Path) -> int:
    for state in out.glob("*/adapters/last/state.json"):
        try:
            return int(json.loads(state.read_text())["completed_round"])
        except (OSError, ValueError):
            return 0
    return 0


def _final_adapter(run: Path) -> dict[str, np.ndarray]:
    return load_file(run / "adapters" / "final" / "adapter_model.safetensors")


def _metrics(run: Path) -> dict[int, dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {x["server_round"]: x for x in lines}


def test_interrupted_and_resumed_run_ends_with_the_uninterrupted_adapter(tmp_path: Path, tiny_model_dir: Path,
                                                                         flwr_env) -> None:
    straight_out, chain_out = tmp_path / "straight", tmp_path / "chain"
    log = _finish(_start(flwr_env, _overrides(tmp_path, tiny_model_dir, straight_out)))
    (straight,) = straight_out.glob("*-feddqc-fedavgm-seed0")
    assert (straight / "summary.json").is_file(), log[-4000:]

    # The same run, crashed in round 3 (stage 2's first round) after its clients trained it: the
    # test turns metrics.jsonl into a folder once round 2's checkpoint exists, so round 3's
    # end-of-round write fails and the ServerApp dies with round 2 as its last checkpoint.
    proc = _start(flwr_env, _overrides(tmp_path, tiny_model_dir, chain_out))
    deadline = time.monotonic() + 900
    while _completed_round(chain_out) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the first run ended before round 2"
        time.sleep(0.05)
    (crashed,) = chain_out.glob("*-feddqc-fedavgm-seed0")
    done = (crashed / "metrics.jsonl").read_text()
    (crashed / "metrics.jsonl").unlink()
    (crashed / "metrics.jsonl").mkdir()
    log = _finish(proc)
    assert _completed_round(chain_out) == 2, log[-4000:]
    shutil.rmtree(crashed / "metrics.jsonl")
    (crashed / "metrics.jsonl").write_text(done)
    assert list((chain_out / "client-local").glob("progress-*/partition-*-of-2.json")), log[-4000:]

    log = _finish(_start(flwr_env, _overrides(tmp_path, tiny_model_dir, chain_out, f'resume-from = "{crashed}"')))
    (resumed,) = [r for r in chain_out.glob("*-feddqc-fedavgm-seed0") if r != crashed]
    assert (resumed / "summary.json").is_file(), log[-4000:]
    assert sorted(_metrics(resumed)) == [2, 3, 4]

    want, got = _metrics(straight), _metrics(resumed)
    for rnd in (3, 4):  # the same rows in each stage: stage 2 never re-takes stage 1's rows
        assert got[rnd]["train"]["pool"] == want[rnd]["train"]["pool"], rnd
        assert got[rnd]["train"]["stage-train"] == want[rnd]["train"]["stage-train"], rnd
    expected, actual = _final_adapter(straight), _final_adapter(resumed)
    assert set(expected) == set(actual)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
