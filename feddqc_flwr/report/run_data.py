"""Everything a run directory holds, read once for the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feddqc_flwr.training.dynamics import data_map


@dataclass(frozen=True)
class RunData:
    """config.json, metrics.jsonl (round 0 = before training), summary.json, the data map."""

    run_dir: Path
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    summary: dict[str, Any]
    data_map: list[dict[str, Any]]

    @property
    def run_config(self) -> dict[str, Any]:
        return self.config.get("run_config", {})

    @property
    def trained_rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.rounds if r.get("server_round", 0) > 0 and "hierarchy" in r]


def client_local_folder(run_dir: Path, config: dict[str, Any]) -> Path:
    """Where the clients of this run kept node-local files, if they shared the server's disk."""
    return run_dir.parent / "client-local" / f"run-{config.get('run_id', 0)}"


def load_run(run_dir: Path) -> RunData:
    """Read a run directory written by the ServerApp; a missing summary (killed run) is allowed."""
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    config = json.loads((run_dir / "config.json").read_text())
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    local = client_local_folder(run_dir, config)
    return RunData(run_dir, config, rounds, summary, data_map(local) if local.is_dir() else [])
