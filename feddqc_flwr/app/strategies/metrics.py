"""How client scalar metrics combine: counts add up, everything else is a weighted mean."""

from __future__ import annotations

import math

from flwr.app import MetricRecord, RecordDict

COUNT_KEYS = ("pool", "pool-bad", "kept", "dropped", "stage-train", "stage-bad")


def aggregate_client_metrics(contents: list[RecordDict], weight_key: str) -> MetricRecord:
    """Sum count metrics; weight the rest by `weight_key`, ignoring non-finite values."""
    records = [next(iter(c.metric_records.values())) for c in contents]
    weights = [float(r[weight_key]) for r in records]
    out: dict[str, float] = {}
    for key in records[0]:
        if key == weight_key:
            continue
        values = [float(r[key]) for r in records]
        if key in COUNT_KEYS:
            out[key] = float(sum(values))
            continue
        pairs = [(v, w) for v, w in zip(values, weights, strict=True) if math.isfinite(v)]
        total = sum(w for _, w in pairs)
        out[key] = sum(v * w for v, w in pairs) / total if total > 0 else float("nan")
    return MetricRecord(out)
