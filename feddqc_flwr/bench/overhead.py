"""Flower's share of a round: wall time minus the compute the app itself measured.

From a run's `metrics.jsonl`: a round's wall time is the gap between its line and the previous
one. The app's compute is local training and scoring (as the clients timed them), the stage
score queries, and the server's held-out evaluation. Clients that share one machine (the CPU
simulation default) run one after another, so their times add up. What remains is messaging,
(de)serialization, scheduling, model/data (re)loading and Trainer set-up: an upper bound on
what Flower itself costs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def round_overhead(metrics_path: Path) -> dict[str, Any]:
    """Per-round wall, compute and overhead seconds, and the overall overhead share."""
    lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    rounds = []
    for previous, line in zip(lines, lines[1:], strict=False):
        if "time" not in previous or "time" not in line:
            continue
        wall = line["time"] - previous["time"]
        clients = sum((c.get("train-seconds") or 0) + (c.get("score-seconds") or 0) for c in line.get("clients", []))
        queries = (line.get("scoring") or {}).get("client-score-seconds") or 0
        evaluation = (line.get("server_eval") or {}).get("seconds") or 0
        compute = clients + queries + evaluation
        rounds.append({"round": line["server_round"], "wall_seconds": wall, "compute_seconds": compute,
                       "overhead_seconds": wall - compute, "overhead_share": (wall - compute) / wall})
    wall = sum(r["wall_seconds"] for r in rounds)
    overhead = sum(r["overhead_seconds"] for r in rounds)
    return {"rounds": rounds, "wall_seconds": wall, "overhead_seconds": overhead,
            "overhead_share": overhead / wall if wall else float("nan")}
