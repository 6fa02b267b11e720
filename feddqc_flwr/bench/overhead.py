"""Flower's share of a round: wall time minus the compute and set-up the app itself measured.

From a run's `metrics.jsonl`: a round's wall time is the gap between its line and the previous
one. The app's compute is local training and scoring (as the clients timed them), the stage
score queries, and the server's held-out evaluation. Its set-up is what each client message
spent on config, data, the model (loaded once per process in simulation, per message in a
deployment) and the received adapter. What remains is messaging, (de)serialization, scheduling,
process start and imports, and Trainer set-up: an upper bound on what Flower itself costs.

Clients that share one machine (the CPU simulation default) run one after another, so their
times add up (`clients = "sequential"`); clients on their own hosts run side by side, so each
phase (score query, training) lasts as long as its slowest client (`clients = "parallel"`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CLIENT_MODES = ("sequential", "parallel")


def _round_times(line: dict[str, Any], clients: str) -> tuple[float, float]:
    """(compute, set-up) seconds the app measured in one round."""
    combine: Callable[[Iterable[float]], float] = sum if clients == "sequential" else (
        lambda values: max(values, default=0.0))
    suffix = "" if clients == "sequential" else "-max"
    replies = line.get("clients", [])
    scoring = line.get("scoring") or {}
    train = combine([(c.get("train-seconds") or 0) + (c.get("score-seconds") or 0) for c in replies])
    queries = scoring.get(f"client-score-seconds{suffix}") or 0
    evaluation = (line.get("server_eval") or {}).get("seconds") or 0
    setup = (combine([c.get("setup-seconds") or 0 for c in replies])
             + (scoring.get(f"client-setup-seconds{suffix}") or 0))
    return train + queries + evaluation, setup


def _train_round_trip(line: dict[str, Any], clients: str) -> dict[str, float]:
    """Where the train messages' time went (runs that log `sent_at`/`replies_at`, server clock, and
    `handler-seconds`, client clock): the round trip from handing the messages to the Grid to
    aggregating the replies, the ClientApp handlers inside it, and the rest of it, which is
    messaging (Grid, SuperLink, SuperNode, executor or process start)."""
    handlers = [c.get("handler-seconds") for c in line.get("clients", [])]
    if line.get("sent_at") is None or line.get("replies_at") is None or not handlers or None in handlers:
        return {}
    combine = sum if clients == "sequential" else max
    trip, handler = line["replies_at"] - line["sent_at"], combine(handlers)
    return {"train_round_trip_seconds": trip, "client_handler_seconds": handler,
            "messaging_seconds": trip - handler}


def round_overhead(metrics_path: Path, clients: str = "sequential") -> dict[str, Any]:
    """Per-round wall, compute, set-up and Flower seconds, and the overall shares."""
    if clients not in CLIENT_MODES:
        raise ValueError(f"clients = {clients!r}: allowed values are {', '.join(CLIENT_MODES)}")
    lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    rounds = []
    for previous, line in zip(lines, lines[1:], strict=False):
        if "time" not in previous or "time" not in line:
            continue
        wall = line["time"] - previous["time"]
        compute, setup = _round_times(line, clients)
        overhead = wall - compute - setup
        rounds.append({"round": line["server_round"], "wall_seconds": wall, "compute_seconds": compute,
                       "setup_seconds": setup, "overhead_seconds": overhead, "overhead_share": overhead / wall,
                       **_train_round_trip(line, clients)})
    wall = sum(r["wall_seconds"] for r in rounds)
    overhead = sum(r["overhead_seconds"] for r in rounds)
    setup = sum(r["setup_seconds"] for r in rounds)
    out = {"clients": clients, "rounds": rounds, "wall_seconds": wall, "overhead_seconds": overhead,
           "setup_seconds": setup, "overhead_share": overhead / wall if wall else float("nan"),
           "setup_share": setup / wall if wall else float("nan")}
    if rounds and all("messaging_seconds" in r for r in rounds):
        out["messaging_seconds"] = sum(r["messaging_seconds"] for r in rounds)
        out["messaging_share"] = out["messaging_seconds"] / wall
    return out
