"""Where a run's results land: config, per-round metrics (JSON lines), adapters, summary.

Layout of one run directory:
    config.json           the full run config, package versions, git commit
    metrics.jsonl         one JSON object per round (round 0 = before training)
    adapters/hierarchy-K  PEFT adapter at the end of each hierarchy (FedDQC)
    adapters/final        PEFT adapter after the last round
    summary.json          final metrics, timings, paths
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from feddqc_flwr.config import RunConfig

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


def git_commit() -> str:
    """The commit of the code that ran, or 'unknown' (a FAB install has no .git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunRecorder:
    """Writes one run's files; every write is complete JSON so a killed run leaves valid files."""

    def __init__(self, cfg: RunConfig, output_root: Path) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = (output_root / f"{stamp}-{cfg.method}-{cfg.strategy}-seed{cfg.seed}").resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.started = time.time()
        self._write_json("config.json", {"run_config": cfg.as_dict(), "packages": package_versions(),
                                         "git_commit": git_commit()})

    def _write_json(self, name: str, payload: dict[str, Any]) -> Path:
        path = self.run_dir / name
        path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=True) + "\n")
        return path

    def write_round(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def adapter_dir(self, name: str) -> Path:
        return self.run_dir / "adapters" / name

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return self._write_json("summary.json", {"elapsed_seconds": time.time() - self.started,
                                                 "run_dir": str(self.run_dir), **summary})


def round_record(entry: Any, server_eval: dict[str, float]) -> dict[str, Any]:
    """One metrics line from the strategy's RoundLog plus the server-side evaluation."""
    return {**dataclasses.asdict(entry), "server_eval": server_eval, "time": time.time()}
