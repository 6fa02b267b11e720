"""Hand-made metrics.jsonl records of a 2-round, 2-hierarchy run, shared by the console, verdict and
tracking tests. Every number the tests expect is worked out by hand from these."""

from __future__ import annotations

from typing import Any


def _round(server_round: int, **fields: Any) -> dict[str, Any]:
    base = {"server_round": server_round, "hierarchy": server_round, "rescore": True, "evaluate": {},
            "update_similarity": [], "sent": 2, "failures": 0, "missing": 0, "excluded": 0, "aggregated": True}
    return {**base, **fields}


def records() -> list[dict[str, Any]]:
    """Round 0, then two hierarchy starts; edges [-6, -5, -4, -3], lambda -4 keeps the last bin."""
    edges = [-6.0, -5.0, -4.0, -3.0]
    return [
        {"server_round": 0, "server_eval": {"valid-loss": 3.5, "test-loss": 3.25, "seconds": 10.0}, "time": 1000.0},
        _round(1, lr=3e-4, threshold=-4.0, time=1100.0,
               scoring={"clients": 2.0, "scored": 10.0, "share-above-lambda": 0.6, "auroc": 0.875, "seconds": 30.0},
               histogram={"edges": edges, "counts": [3, 1, 6], "bad": [3, 1, 1]},
               train={"train-loss": 2.5, "pool": 10.0, "pool-bad": 5.0, "stage-train": 4.0, "stage-bad": 1.0},
               clients=[{"node": 11.0, "train-loss": 2.0, "train-seconds": 20.0, "score-seconds": 0.0,
                         "stage-train": 2.0, "stage-bad": 0.0},
                        {"node": 22.0, "train-loss": 3.0, "train-seconds": 25.0, "score-seconds": 0.0,
                         "stage-train": 2.0, "stage-bad": 1.0}],
               server_eval={"valid-loss": 3.4, "test-loss": 3.2, "seconds": 8.0}),
        _round(2, lr=1.5e-4, threshold=-4.0, time=1200.0,
               scoring={"clients": 2.0, "scored": 6.0, "share-above-lambda": 0.5, "auroc": 0.75, "seconds": 20.0},
               histogram={"edges": edges, "counts": [2, 1, 3], "bad": [1, 1, 1]},
               train={"train-loss": None, "pool": 6.0, "pool-bad": 3.0, "stage-train": 3.0, "stage-bad": 1.0},
               clients=[{"node": 11.0, "train-loss": 1.0, "train-seconds": 10.0, "score-seconds": 0.0,
                         "stage-train": 1.0, "stage-bad": 0.0},
                        {"node": 22.0, "train-loss": 4.0, "train-seconds": 12.0, "score-seconds": 5.0,
                         "stage-train": 2.0, "stage-bad": 1.0}],
               server_eval={"valid-loss": 3.3, "test-loss": 3.1, "seconds": 9.0}),
    ]
