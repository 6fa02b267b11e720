"""What `flwr run --stream` shows: a header, one line per round, one line per scoring step and a
final table, built from the same records as metrics.jsonl so the console never says something the
files do not. Flower's own metric dicts are silenced by `app.quiet` (console = "progress")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.selection.threshold import criterion_retention


def _num(value: Any, spec: str) -> str:
    """`value` formatted, or '-' where there is none (null in metrics.jsonl, NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _pct(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def lambda_mode(cfg: RunConfig) -> str:
    """How λ is set, in the header's words."""
    if cfg.method != "feddqc":
        return "no λ (method fedavg trains on every row)"
    if cfg.threshold_mode == "lambda":
        return "λ fixed at " + ", ".join(f"{v:g}" if len(cfg.criteria) == 1 else f"{k} {v:g}"
                                         for k, v in cfg.named_lambdas.items())
    if len(cfg.criteria) > 1:
        share = criterion_retention(cfg.retention, len(cfg.criteria))
        return (f"a row must pass all {len(cfg.criteria)} criteria, each λ keeping {share:.0%} of its criterion's "
                f"first-hierarchy global histogram (retention {cfg.retention:g} if they were independent)")
    return f"λ from retention {cfg.retention:g} on the first hierarchy's global histogram"


def header(cfg: RunConfig, run_name: str, pool_rows: int, valid_rows: int, test_rows: int) -> str:
    """The run's setup in four lines: what is trained, on what, by whom, with which selection."""
    corruption = "no synthetic corruption" if cfg.corrupt_type == "none" or cfg.corrupt_ratio == 0 else \
        f"{cfg.corrupt_ratio:.0%} of client rows corrupted ({cfg.corrupt_type})"
    method = f"method {cfg.method}"
    if cfg.method == "feddqc":
        method += f", K={cfg.stages} hierarchies ({cfg.order}), scorer {cfg.scorer}, {lambda_mode(cfg)}"
    else:
        method += f", {lambda_mode(cfg)}"
    return "\n".join([
        f"FedDQC run {run_name}",
        f"  model   {cfg.model} + LoRA r={cfg.lora_r} | {cfg.num_server_rounds} rounds x {cfg.local_steps} local "
        f"steps, batch {cfg.batch_size}, lr {cfg.lr_max:g} -> {cfg.lr_min:g}",
        f"  data    {cfg.dataset}: {pool_rows} pool rows split over the clients, {corruption}; "
        f"server evaluates {valid_rows} valid + {test_rows} test rows",
        f"  clients at least {cfg.min_train_nodes}, fraction-train {cfg.fraction_train:g}, strategy {cfg.strategy}",
        f"  {method}",
    ])


def trained_corruption(train: Mapping[str, Any]) -> str:
    """Corrupted share of the rows trained this round, e.g. '12% of 17'; '-' when no row has a flag."""
    if not train.get("pool-bad") or not train.get("stage-train"):
        return "-"
    return f"{_pct(train['stage-bad'], train['stage-train'])} of {train['stage-train']:.0f}"


def round_line(record: Mapping[str, Any], num_rounds: int, stages: int, seconds: float) -> str:
    """One metrics.jsonl record as one line: where the run is and whether it is learning."""
    server = record.get("server_eval") or {}
    losses = f"valid {_num(server.get('valid-loss'), '.4f')} test {_num(server.get('test-loss'), '.4f')}"
    if "hierarchy" not in record:  # round 0: the starting adapter
        return f"round 0/{num_rounds} (before training) | {losses} | {seconds:.0f}s"
    train = record.get("train") or {}
    return (f"round {record['server_round']}/{num_rounds} h{record['hierarchy']}/{stages} | "
            f"lr {record['lr']:.2e} | λ {_num(record.get('threshold'), '.4f')} | "
            f"train loss {_num(train.get('train-loss'), '.4f')} | {losses} | "
            f"corrupted in trained {trained_corruption(train)} | {seconds:.0f}s")


def _criterion_part(name: str, criterion: Mapping[str, Any], threshold: float | None, flags: bool) -> str:
    """One criterion of a multi-criterion filter: its lambda, the rows it keeps, its AUROC."""
    counts = float(sum(criterion["histogram"]["counts"]))
    kept = round(criterion["summary"].get("share-above-lambda", 0.0) * counts)
    auroc = f" AUROC {_num(criterion['summary'].get('auroc'), '.3f')}" if flags else ""
    return f"{name} λ {_num(threshold, '.4f')} keeps {kept:.0f} ({_pct(kept, counts)}){auroc}"


def scoring_line(record: Mapping[str, Any], stages: int) -> str:
    """A hierarchy's score/histogram step (a record with `rescore`) in one line: how many rows λ
    keeps and how well the scores rank corrupted rows last (per criterion when there are several)."""
    scoring, histogram, threshold = record.get("scoring") or {}, record.get("histogram"), record.get("threshold")
    start = f"hierarchy {record['hierarchy']}/{stages} scoring: {scoring.get('scored', 0):.0f} rows from " \
            f"{scoring.get('clients', 0):.0f} clients"
    if not histogram or threshold is None:
        return f"{start} | no histogram: λ {_num(threshold, '.4f')} unchanged"
    scored = float(sum(histogram["counts"]))
    bad = float(sum(histogram["bad"]))
    seconds = f"{scoring['seconds']:.0f}s" if scoring.get("seconds") is not None \
        else "scored inside the round's train messages"
    criteria = record.get("criteria") or {}
    if len(criteria) > 1:
        thresholds = record.get("thresholds") or {}
        each = " | ".join(_criterion_part(name, c, thresholds.get(name), bool(bad)) for name, c in criteria.items())
        pool = f"corrupted in pool {_pct(bad, scored)}" if bad else "no corruption flags"
        return f"{start} | {each} | {pool} | {seconds}"
    kept = round(scoring.get("share-above-lambda", 0.0) * scored)
    quality = f"corrupted in pool {_pct(bad, scored)} | global AUROC {_num(scoring.get('auroc'), '.3f')}" if bad \
        else "no corruption flags"
    return (f"{start} | λ {threshold:.4f} keeps {kept:.0f} ({_pct(kept, scored)}), drops {scored - kept:.0f} | "
            f"{quality} | {seconds}")


def round_seconds(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """Wall seconds of each record's round: time since the previous record; round 0 its evaluation."""
    out = []
    for i, record in enumerate(records):
        if i == 0:
            out.append(float((record.get("server_eval") or {}).get("seconds", 0.0)))
        else:
            out.append(float(record["time"]) - float(records[i - 1]["time"]))
    return out


def final_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Every round in columns, to compare rounds at a glance at the end of the run."""
    lines = ["round | h |       lr |       λ | train loss | valid loss | test loss | corrupted in trained |    s"]
    for record, seconds in zip(records, round_seconds(records), strict=True):
        train, server = record.get("train") or {}, record.get("server_eval") or {}
        lines.append(
            f"{record['server_round']:>5} | {record.get('hierarchy', '-'):>1} | {_num(record.get('lr'), '.2e'):>8} | "
            f"{_num(record.get('threshold'), '.4f'):>7} | {_num(train.get('train-loss'), '.4f'):>10} | "
            f"{_num(server.get('valid-loss'), '.4f'):>10} | {_num(server.get('test-loss'), '.4f'):>9} | "
            f"{trained_corruption(train):>20} | {seconds:>4.0f}")
    return "\n".join(lines)
