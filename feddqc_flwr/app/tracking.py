"""Experiment tracking: every metrics.jsonl record as scalars per round, and the verdict at the end.

TensorBoard event files go into the run directory, next to metrics.jsonl (`tensorboard --logdir
outputs`). Weights & Biases and MLflow are optional: imported only when `tracking` names them, so
neither is a dependency; W&B needs WANDB_API_KEY (or WANDB_MODE=offline), MLflow logs where
MLFLOW_TRACKING_URI points (its default: ./mlruns).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from feddqc_flwr.app.config import ConfigError, RunConfig

SECTIONS = ("train", "scoring", "evaluate", "server_eval")  # record sections of scalar metrics
TOP_LEVEL = {"lr": "round/lr", "threshold": "round/lambda", "hierarchy": "round/hierarchy",
             "failures": "round/failures", "missing": "round/missing", "excluded": "round/excluded"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def round_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """Tag -> value for one metrics.jsonl record: `<section>/<metric>`, `round/...`, and
    `client-<node>/<metric>` per client (node ids as Flower assigns them). Nulls and NaN are left out."""
    out = {tag: float(record[key]) for key, tag in TOP_LEVEL.items() if _finite(record.get(key))}
    for section in SECTIONS:
        out.update({f"{section}/{k}": float(v) for k, v in (record.get(section) or {}).items() if _finite(v)})
    for client in record.get("clients") or []:
        node = int(client["node"])
        out.update({f"client-{node}/{k}": float(v) for k, v in client.items() if k != "node" and _finite(v)})
    return out


def verdict_scalars(verdict: Mapping[str, Any]) -> dict[str, float]:
    """The verdict's numbers as flat tags (`verdict/h1/auroc`, `verdict/test-loss/last`, `verdict/seconds/...`)."""
    out: dict[str, float] = {}
    for h in verdict["hierarchies"]:
        out.update({f"verdict/h{h['hierarchy']}/{k}": float(v) for k, v in h.items()
                    if k != "hierarchy" and _finite(v)})
    for name, loss in verdict["losses"].items():
        out.update({f"verdict/{name}/{k}": float(v) for k, v in loss.items() if _finite(v)})
    out.update({f"verdict/seconds/{k}": float(v) for k, v in verdict["seconds"].items()})
    return out


class Tracker(Protocol):
    def log_round(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def log_verdict(self, scalars: Mapping[str, float], text: str) -> None: ...

    def close(self, failed: bool = False) -> None: ...


class TensorBoardTracker:
    """Event files in the run directory: one scalar series per tag, the verdict as text."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.writer = SummaryWriter(log_dir=str(run_dir))

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()  # a killed run keeps every round written so far

    def log_verdict(self, scalars: Mapping[str, float], text: str) -> None:
        self.writer.add_text("verdict", f"```\n{text}\n```")
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=0)

    def close(self, failed: bool = False) -> None:
        self.writer.close()


def _optional(module: str, key_hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(f"run config 'tracking' includes {module!r}, which is not installed on the server: "
                          f"pip install {module}{key_hint}, or remove it from 'tracking'") from err


class WandbTracker:
    """A W&B run named after the run directory, with the run config; the verdict goes to its summary."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        wandb = _optional("wandb", " and set WANDB_API_KEY (or WANDB_MODE=offline)")
        if not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
            raise ConfigError("run config 'tracking' includes 'wandb': set WANDB_API_KEY in the server's "
                              "environment, or WANDB_MODE=offline to log locally (`wandb sync` uploads later)")
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "feddqc"), name=run_dir.name,
                              dir=str(run_dir), config=cfg.as_dict())

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_verdict(self, scalars: Mapping[str, float], text: str) -> None:
        self.run.summary.update(dict(scalars))

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    """An MLflow run named after the run directory, with the run config as params."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.mlflow = _optional("mlflow", "")
        self.mlflow.start_run(run_name=run_dir.name)
        params = list(cfg.as_dict().items())
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.mlflow.log_params(dict(params[i:i + 100]))

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        self.mlflow.log_metrics(dict(scalars), step=step)

    def log_verdict(self, scalars: Mapping[str, float], text: str) -> None:
        self.mlflow.log_metrics(dict(scalars))
        self.mlflow.log_text(text, "verdict.txt")

    def close(self, failed: bool = False) -> None:
        self.mlflow.end_run(status="FAILED" if failed else "FINISHED")


class RunTracking:
    """All trackers `tracking` names, fed from the records the run writes to metrics.jsonl."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.trackers: list[Tracker] = []
        makers = {"tensorboard": lambda: TensorBoardTracker(run_dir), "wandb": lambda: WandbTracker(cfg, run_dir),
                  "mlflow": lambda: MlflowTracker(cfg, run_dir)}
        try:
            for name in cfg.trackers:
                self.trackers.append(makers[name]())
        except BaseException:
            self.close(failed=True)  # the ones already started must not stay open
            raise

    def log_record(self, record: Mapping[str, Any]) -> None:
        scalars = round_scalars(record)
        for tracker in self.trackers:
            tracker.log_round(int(record["server_round"]), scalars)

    def finish(self, verdict: Mapping[str, Any], text: str) -> None:
        scalars = verdict_scalars(verdict)
        for tracker in self.trackers:
            tracker.log_verdict(scalars, text)
        self.close()

    def close(self, failed: bool = False) -> None:
        """End every tracker's run once (W&B/MLflow marked failed when the run raised)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close(failed)
