"""Did quality control do something? Per hierarchy: the corrupted share of the scored pool (from
the global histograms, counts only) against that of the rows the clients trained on, and the
global AUROC. Built on the server from what the strategy already received; flags exist only
for synthetic corruption (on real data the shares are None).

With several criteria each one has its own lambda, kept count and AUROC (its own histogram); the
rows kept by all of them cannot be read off the separate histograms, so the joint kept count is
the clients' own: the share of their scored pool that passed every criterion, scaled to all rows
scored (exact when every scored client trained in the hierarchy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feddqc_flwr.app.strategies.feddqc import RoundLog


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def hierarchy_report(rounds: Mapping[int, RoundLog]) -> list[dict[str, Any]]:
    """One entry per hierarchy that had a scoring step, in order."""
    out: list[dict[str, Any]] = []
    for stage in sorted({r.hierarchy for r in rounds.values()}):
        mine = [rounds[k] for k in sorted(rounds) if rounds[k].hierarchy == stage]
        start = next((r for r in mine if r.histogram), None)
        latest: dict[float, dict[str, float]] = {}  # a client's stage part is fixed: its last reply counts once
        for entry in mine:
            for client in entry.clients:
                latest[client["node"]] = client
        trained = sum(c.get("stage-train", 0.0) for c in latest.values())
        trained_bad = sum(c.get("stage-bad", 0.0) for c in latest.values())
        scored = float(sum(start.histogram["counts"])) if start else None
        scored_bad = float(sum(start.histogram["bad"])) if start else None
        criteria = {name: {"lambda": start.thresholds.get(name),
                           "kept": c["summary"].get("share-above-lambda", 0.0) * scored if scored else None,
                           "auroc": c["summary"].get("auroc")}
                    for name, c in start.criteria.items()} if start else {}
        if len(criteria) > 1:
            pool = sum(c.get("pool", 0.0) for c in latest.values())
            share = _share(sum(c.get("kept", 0.0) for c in latest.values()), pool)
            kept = share * scored if share is not None and scored else None
        else:
            kept = start.scoring.get("share-above-lambda", 0.0) * scored if start and scored else None
        out.append({
            "hierarchy": stage,
            "rounds": [r.server_round for r in mine],
            "lambda": start.threshold if start else None,
            "scored": scored,
            "scored_corrupted_share": _share(scored_bad, scored) if start and scored_bad else None,
            "kept": kept,
            "auroc": start.scoring.get("auroc") if start else None,
            "criteria": criteria if len(criteria) > 1 else {},
            "clients_trained": len(latest),
            "trained": trained,
            "trained_corrupted_share": _share(trained_bad, trained) if start and scored_bad else None,
        })
    return out

