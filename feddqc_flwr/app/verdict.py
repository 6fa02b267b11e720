"""The end-of-run verdict: did quality control do something? From the metrics.jsonl records alone
(so `feddqc report` or a test can recompute it): rows scored/kept/dropped and the global AUROC per
hierarchy, the corrupted share of the pool against the trained rows (when flags exist), the
evaluation losses first -> last, and where the time went."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.app.strategies.feddqc import RoundLog
from feddqc_flwr.app.strategies.hierarchy_report import hierarchy_report

LOSSES = ("valid-loss", "test-loss")
TIME_LABELS = {"scoring": "scoring", "training": "training", "evaluation": "evaluation",
               "flower": "Flower and other"}


def _round_logs(records: Sequence[Mapping[str, Any]]) -> dict[int, RoundLog]:
    """The strategy's RoundLogs back from their metrics.jsonl records (round 0 has none)."""
    names = {f.name for f in dataclasses.fields(RoundLog)}
    return {int(r["server_round"]): RoundLog(**{k: v for k, v in r.items() if k in names})
            for r in records if "hierarchy" in r}


def _hierarchies(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per scored hierarchy: scored, kept, dropped, corrupted shares, AUROC (None where not measured)."""
    out = []
    for h in hierarchy_report(_round_logs(records)):
        if h["scored"] is None:
            continue
        kept = round(h["kept"]) if h["kept"] is not None else 0
        out.append({"hierarchy": h["hierarchy"], "lambda": h["lambda"], "criteria": h.get("criteria") or {},
                    "scored": round(h["scored"]),
                    "kept": kept, "dropped": round(h["scored"]) - kept, "trained": round(h["trained"]),
                    "pool_corrupted_share": h["scored_corrupted_share"],
                    "trained_corrupted_share": h["trained_corrupted_share"], "auroc": h["auroc"]})
    return out


def _losses(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {first, last, change}} over the rounds that evaluated it."""
    out = {}
    for name in LOSSES:
        values = [r["server_eval"][name] for r in records if (r.get("server_eval") or {}).get(name) is not None]
        if values:
            out[name] = {"first": values[0], "last": values[-1], "change": values[-1] - values[0]}
    return out


def _slowest(record: Mapping[str, Any], key: str) -> float:
    return max((float(c.get(key) or 0.0) for c in record.get("clients") or []), default=0.0)


def time_split(records: Sequence[Mapping[str, Any]], elapsed: float) -> dict[str, float]:
    """Wall seconds by phase. Scoring: the score query round trip (server clock) plus scoring a
    client did inside a train round; training: the slowest client's training per round (the round
    waits for it); evaluation: the server's; flower: the rest (messages, model and data loading per
    message, aggregation, checkpoints, and clients queueing for a CPU in simulation)."""
    rounds = [r for r in records if "hierarchy" in r]
    scoring = sum(float((r.get("scoring") or {}).get("seconds", 0.0)) + _slowest(r, "score-seconds")
                  for r in rounds)
    training = sum(_slowest(r, "train-seconds") for r in rounds)
    evaluation = sum(float((r.get("server_eval") or {}).get("seconds", 0.0)) for r in records)
    flower = max(0.0, elapsed - scoring - training - evaluation)
    return {"total": elapsed, "scoring": scoring, "training": training, "evaluation": evaluation,
            "flower": flower}


def compute_verdict(records: Sequence[Mapping[str, Any]], elapsed: float) -> dict[str, Any]:
    """The verdict for summary.json; `elapsed` is the run's wall time in seconds."""
    rounds = [r for r in records if "hierarchy" in r]
    last_train = (rounds[-1].get("train") or {}) if rounds else {}
    flags = bool(last_train.get("pool-bad")) or any(
        sum((r.get("histogram") or {}).get("bad", [])) for r in rounds)
    return {"hierarchies": _hierarchies(records), "quality_flags": flags, "losses": _losses(records),
            "seconds": time_split(records, elapsed)}


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def format_verdict(verdict: Mapping[str, Any]) -> str:
    """The verdict as the last lines of the run."""
    lines = ["Verdict: did quality control do something?"]
    if not verdict["hierarchies"]:
        lines.append("  no scoring step ran (method fedavg or no client scored): every row was trained on")
    for h in verdict["hierarchies"]:
        criteria = h.get("criteria") or {}
        auroc = "" if criteria else f"; global AUROC {'n/a' if h['auroc'] is None else format(h['auroc'], '.3f')}"
        corrupted = (f"corrupted share {_share(h['pool_corrupted_share'])} of the pool -> "
                     f"{_share(h['trained_corrupted_share'])} of the {h['trained']} trained rows{auroc}"
                     if verdict["quality_flags"] else "no corruption flags (real data): shares and AUROC n/a")
        if criteria:  # several criteria: each one's lambda, kept rows and AUROC, then the rows passing all
            each = "; ".join(f"{name} λ {c['lambda']:.4f} keeps {round(c['kept'] or 0)}"
                             + (f" (AUROC {c['auroc']:.3f})" if verdict["quality_flags"] and c["auroc"] is not None
                                else "") for name, c in criteria.items())
            lines.append(f"  hierarchy {h['hierarchy']}: scored {h['scored']}; {each}; all criteria keep "
                         f"{h['kept']}, drop {h['dropped']}; {corrupted}")
            continue
        lam = "n/a" if h["lambda"] is None else f"{h['lambda']:.4f}"
        lines.append(f"  hierarchy {h['hierarchy']}: scored {h['scored']}, kept {h['kept']}, dropped {h['dropped']} "
                     f"(λ {lam}); {corrupted}")
    for name, loss in verdict["losses"].items():
        lines.append(f"  {name} {loss['first']:.4f} -> {loss['last']:.4f} ({loss['change']:+.4f})")
    t = verdict["seconds"]
    parts = ", ".join(f"{label} {t[k]:.0f}s ({t[k] / t['total']:.0%})" if t["total"] else f"{label} {t[k]:.0f}s"
                      for k, label in TIME_LABELS.items())
    lines.append(f"  time {t['total']:.0f}s: {parts}")
    return "\n".join(lines)
