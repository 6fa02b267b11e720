"""Where a run's results land: config, per-round metrics (JSON lines), adapters, summary.

Layout of one run directory:
    config.json           the full run config, package versions, git commit
    metrics.jsonl         one JSON object per round (round 0 = before training)
    row-values.jsonl      per round, each server row's own value of every metric (`test-loss`: the
                          row's NLL, `test-align-acc`: 1/0, null = not scored), with the rows'
                          sample ids: what an experiment's bootstrap resamples
    adapters/hierarchy-K  PEFT adapter at the end of each hierarchy (FedDQC)
    adapters/final        PEFT adapter after the last round
    adapters/last         PEFT adapter after the last completed round, with state.json (round, lambda,
                          run config, the clients' progress lineage) and optimizer.npz (FedOpt moments,
                          FedAvgM momentum): what `resume-from` continues from
    summary.json          final metrics, timings, paths, the verdict (app.verdict)
    events.out.tfevents.* TensorBoard scalars of every record (app.tracking, tracking = "tensorboard")

Clients write node-local files (the data map's per-sample probabilities) under
<output-dir>/client-local/run-<run id>/ on their own machine; config.json records the run id so
`feddqc report` can find them when server and clients share a disk (simulation). Their hierarchy
progress goes to <output-dir>/client-local/progress-<run key>/ (`app.client_progress`), keyed by a
run key that resumed runs keep, and beside it each partition's quality report for the data owner
(`app.quality_report`, read with `feddqc inspect`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord
from peft import PeftModel
from safetensors.torch import load_file

from feddqc_flwr.app.client_progress import RunLineage
from feddqc_flwr.app.config import ConfigError, RunConfig, parse_run_config
from feddqc_flwr.app.run_defaults import default_run_config
from feddqc_flwr.errors import MissingArtifactError

CHECKPOINT_STATE, CHECKPOINT_OPTIMIZER = "state.json", "optimizer.npz"
ADAPTER_FILE = "adapter_model.safetensors"  # what PEFT's save_pretrained writes
log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`
ROW_VALUES = "row-values.jsonl"
# The keys a resumed run may change: where results go, how long the server waits for whom, what it
# evaluates, and memory knobs that leave the numbers as they were. Every other key changes the
# data, the selection, the schedule or the training, so it must equal the checkpoint's (a key
# added to the app later is checked too).
RESUME_MAY_CHANGE = frozenset({
    "resume-from", "output-dir", "round-timeout", "reply-poll-interval", "min-train-replies", "min-train-nodes",
    "fraction-evaluate", "eval-samples", "eval-every", "eval-metrics", "eval-valid-metrics", "eval-max-new-tokens",
    "eval-align-candidates", "judge-url", "judge-model", "rater-url",
    "score-batch-size", "gradient-checkpointing", "data-map", "console", "tracking",
})
PACKAGES = ("flwr", "torch", "transformers", "peft", "datasets", "flwr-datasets", "numpy")


def _jsonable(value: Any) -> Any:
    """NaN/inf become null so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(folder: Path | None = None) -> str:
    """The commit of `folder` (default: this code), or 'unknown' (a FAB install has no .git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=folder or Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_output_dir(output_dir: str) -> Path:
    """A relative output-dir is taken from $FEDDQC_OUTPUT_ROOT, else the working directory."""
    path = Path(output_dir).expanduser()
    return path if path.is_absolute() else Path(os.environ.get("FEDDQC_OUTPUT_ROOT", ".")) / path


def output_root(cfg: RunConfig) -> Path:
    return resolve_output_dir(cfg.output_dir)


def client_local_dir(cfg: RunConfig, run_id: int) -> Path:
    """Where a client keeps its node-local files for one run (never sent to the server)."""
    return output_root(cfg) / "client-local" / f"run-{run_id}"


class RunRecorder:
    """Writes one run's files; every write is complete JSON so a killed run leaves valid files."""

    def __init__(self, cfg: RunConfig, output_root: Path, run_id: int = 0) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = (output_root / f"{stamp}-{cfg.method}-{cfg.strategy}-seed{cfg.seed}").resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.started = time.time()
        self._write_json("config.json", {"run_config": cfg.as_dict(), "packages": package_versions(),
                                         "git_commit": git_commit(), "run_id": run_id})

    def _write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.run_dir / name
        path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
        return path

    def write_round(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def write_row_values(self, server_round: int, sample_ids: dict[str, list[str]],
                         values: dict[str, list[float | None]]) -> None:
        """One line of row-values.jsonl: per split its rows' ids, per `<split>-<metric>` their values."""
        record = {"server_round": server_round, "sample_ids": sample_ids, "values": values}
        with (self.run_dir / ROW_VALUES).open("a") as fh:
            fh.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def adapter_dir(self, name: str) -> Path:
        return self.run_dir / "adapters" / name

    def save_checkpoint(self, model: PeftModel, state: dict[str, Any], optimizer: dict[str, np.ndarray]) -> None:
        """Replace adapters/last with this round's adapter, state and optimizer moments.

        Written to a staging folder and swapped in by renames, so a server killed while saving
        leaves the previous round's complete checkpoint.
        """
        last = self.adapter_dir("last")
        staging, old = last.with_name("last.new"), last.with_name("last.old")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        model.save_pretrained(staging)
        (staging / CHECKPOINT_STATE).write_text(json.dumps(_jsonable(state), indent=2, sort_keys=True) + "\n")
        if optimizer:
            np.savez(staging / CHECKPOINT_OPTIMIZER, **optimizer)
        if last.exists():
            last.rename(old)
        staging.rename(last)
        shutil.rmtree(old, ignore_errors=True)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return self._write_json("summary.json", {"elapsed_seconds": time.time() - self.started,
                                                 "run_dir": str(self.run_dir), **summary})


def last_row_values(run_dir: Path) -> dict[str, Any] | None:
    """The last line of a run's row-values.jsonl (its final evaluation), or None without one."""
    path = run_dir / ROW_VALUES
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else None


def saved_run_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """A finished run's config from its config.json over today's defaults, then `overrides`.

    Keys added to the app since the run get their defaults; keys it no longer has are dropped.
    """
    path = run_dir / "config.json"
    if not path.is_file():
        raise MissingArtifactError(f"{path} not found: give a run directory (or an adapter folder inside one)")
    raw = default_run_config()
    saved = json.loads(path.read_text())["run_config"]
    raw.update({k: v for k, v in saved.items() if k in raw})
    raw.update(overrides or {})
    return parse_run_config(raw)


def round_record(entry: Any, server_eval: dict[str, float]) -> dict[str, Any]:
    """One metrics line from the strategy's RoundLog plus the server-side evaluation."""
    return {**dataclasses.asdict(entry), "server_eval": server_eval, "time": time.time()}


@dataclasses.dataclass
class Checkpoint:
    """What a resumed run needs: the global adapter after `completed_round`, each criterion's lambda,
    optimizer state, and the lineage whose clients' progress it continues (None from a checkpoint
    older than that)."""

    completed_round: int
    thresholds: dict[str, float] | None
    arrays: ArrayRecord
    optimizer: dict[str, np.ndarray]
    lineage: RunLineage | None = None


def checkpoint_state(cfg: RunConfig, completed_round: int, thresholds: dict[str, float] | None,
                     lineage: RunLineage | None = None) -> dict[str, Any]:
    return {"completed_round": completed_round, "thresholds": thresholds, "config": cfg.as_dict(),
            "lineage": lineage.as_json() if lineage is not None else None, "time": time.time()}


def changed_resume_keys(saved: dict[str, Any], cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{key: (checkpoint's value, this run's value)} for every key that must not change on resume.

    Keys the checkpoint does not know (added to the app since) are not compared.
    """
    config = cfg.as_dict()
    return {key: (value, config[key]) for key, value in saved.items()
            if key in config and key not in RESUME_MAY_CHANGE and config[key] != value}


def checkpoint_folder(cfg: RunConfig) -> Path:
    """adapters/last under `resume-from`, or adapters/last.old when the server was killed between the
    two renames of `RunRecorder.save_checkpoint` (last.old is then the previous round's whole checkpoint)."""
    folder = Path(cfg.resume_from).expanduser() / "adapters" / "last"
    if (folder / CHECKPOINT_STATE).is_file():
        return folder
    old = folder.with_name("last.old")
    if (old / CHECKPOINT_STATE).is_file():
        log.warning("%s is missing (the server was killed while saving a checkpoint): resuming from %s, "
                    "the round before", folder, old)
        return old
    raise ConfigError(f"run config 'resume-from' = {cfg.resume_from!r}: no {folder / CHECKPOINT_STATE} "
                      "(give a run directory of a run that completed at least one round)")


def adapter_in_model_order(path: Path, adapter_keys: Sequence[str]) -> ArrayRecord:
    """The adapter saved at `path` as an ArrayRecord in `adapter_keys`' order.

    A safetensors file gives its keys sorted (layers.10 before layers.2), but Flower's strategies pair
    arrays by position with the clients' replies, which come in the model's order (`adapter_arrays`).
    The order is taken from the model rather than stored with the checkpoint, so checkpoints written
    before this fix resume right too, and an adapter of another layout is refused here.
    """
    tensors = load_file(path)
    if set(tensors) != set(adapter_keys):
        missing, extra = sorted(set(adapter_keys) - set(tensors)), sorted(set(tensors) - set(adapter_keys))
        raise ConfigError(f"{path} does not fit this run's model: missing {missing[:3]}, unexpected {extra[:3]}")
    return ArrayRecord({key: tensors[key] for key in adapter_keys})


def load_checkpoint(cfg: RunConfig, adapter_keys: Sequence[str]) -> Checkpoint:
    """The checkpoint under `resume-from`, checked against this run's config; its adapter in the order of
    `adapter_keys`, the keys of `adapter_arrays(model)` for this run's model."""
    folder = checkpoint_folder(cfg)
    state = json.loads((folder / CHECKPOINT_STATE).read_text())
    changed = changed_resume_keys(state.get("config") or state["schedule"], cfg)  # "schedule": older checkpoints
    if changed:
        listed = "; ".join(f"'{key}' = {new!r} (checkpoint: {old!r})" for key, (old, new) in sorted(changed.items()))
        raise ConfigError(f"run config 'resume-from' = {cfg.resume_from!r}: the checkpoint was made with other "
                          f"data, selection or training settings: {listed}. Use the checkpoint's values to resume")
    if state["completed_round"] >= cfg.num_server_rounds:
        raise ConfigError(f"run config 'resume-from' = {cfg.resume_from!r}: that run already completed all "
                          f"{cfg.num_server_rounds} rounds")
    optimizer_path = folder / CHECKPOINT_OPTIMIZER
    optimizer = dict(np.load(optimizer_path)) if optimizer_path.is_file() else {}
    lineage = RunLineage.from_json(state["lineage"]) if state.get("lineage") else None
    thresholds = state.get("thresholds")
    if thresholds is None and state.get("threshold") is not None:  # a one-criterion checkpoint from before criteria
        thresholds = {cfg.criteria[0]: float(state["threshold"])}
    return Checkpoint(completed_round=int(state["completed_round"]), thresholds=thresholds,
                      arrays=adapter_in_model_order(folder / ADAPTER_FILE, adapter_keys), optimizer=optimizer,
                      lineage=lineage)
