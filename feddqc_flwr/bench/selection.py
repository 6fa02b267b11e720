"""`feddqc bench selection`: how well each cheap scorer finds corrupted rows, on real QA data.

For every dataset × corruption type × seed, a pool of clean rows gets half its responses
corrupted (`corrupt_rows`, the app's own generator), every likelihood pass is run once per
distinct row text, and every scorer's keep-score is derived through its own `from_passes`
(the code the ClientApp runs). Per cell: AUROC (clean = positive) and the clean share of the
top half (kept-clean share at retention 0.5, the paper's Table 6 measure). Clean rows are the
same texts in every cell of a dataset, so their passes are computed once (a per-text cache):
that changes no score, only the time. Costs are timed separately, uncached, on the clean pool.

With `adapter_steps > 0`, the pool is also scored after a LoRA adapter was trained that many
steps on the corrupted pool itself (the paper's Fig. 3c: a global model trained on mixed data
scores again), to measure what re-scoring at later hierarchies buys.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from feddqc_flwr.data.corruption import BASE_TYPES, corrupt_rows
from feddqc_flwr.llm.model import ModelBundle, adapter_arrays, set_adapter_arrays
from feddqc_flwr.scoring.base import Row, ScoringContext
from feddqc_flwr.scoring.likelihood import PassScorer
from feddqc_flwr.scoring.passes import PASSES, LikelihoodPasses, ResponseNLL, likelihood_passes
from feddqc_flwr.scoring.random_scorer import RandomScorer
from feddqc_flwr.selection.quality_metrics import auroc, kept_mask
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter

CORRUPTIONS = (*BASE_TYPES, "mixture")
# The paper's Table 6: kept-clean share at 50 % swap, retention 0.5 (its own models and data).
PAPER_TABLE6 = {"ira": 0.9345, "ppl": 0.884, "ifd": 0.700, "nuggets": 0.670, "datainf": 0.500}

Progress = Callable[[str], None]
_print = functools.partial(print, flush=True)  # progress lines appear at once, also when redirected


def _key(row: Row) -> tuple[str, str, str]:
    return (str(row["instruction"]), str(row.get("input") or ""), str(row["response"]))


@dataclass
class PassCache:
    """Per-pass (sum, count) of every row text seen so far under one model state."""

    ctx: ScoringContext
    values: dict[tuple[str, str, str], dict[str, tuple[float, int]]] = field(default_factory=dict)

    def passes(self, rows: Sequence[Row]) -> LikelihoodPasses:
        missing = list({_key(r): r for r in rows if _key(r) not in self.values}.values())
        if missing:
            fresh = likelihood_passes(missing, self.ctx, PASSES)
            for i, row in enumerate(missing):
                self.values[_key(row)] = {p: (float(fresh[p].sums[i]), int(fresh[p].counts[i])) for p in PASSES}
        got = [self.values[_key(r)] for r in rows]
        return LikelihoodPasses(nll={p: ResponseNLL(np.array([g[p][0] for g in got]),
                                                    np.array([g[p][1] for g in got], dtype=np.int64))
                                     for p in PASSES})


def keep_scores(scorer: PassScorer | RandomScorer, rows: Sequence[Row], passes: LikelihoodPasses,
                seed: int, ctx: ScoringContext) -> np.ndarray:
    """A scorer's keep-scores from precomputed passes (random needs none: its own seeded draw)."""
    if isinstance(scorer, RandomScorer):
        return scorer.score(rows, dataclasses.replace(ctx, seed=seed))
    return scorer.from_passes(passes)


def cell_metrics(scores: np.ndarray, is_bad: np.ndarray, retention: float) -> dict[str, float]:
    """AUROC (clean = positive) and the clean share of the top `retention` of rows."""
    kept = kept_mask(scores, retention)
    return {"auroc": auroc(scores, ~is_bad), "kept_clean": float((~is_bad[kept]).mean()) if kept.any() else np.nan}


def _applied(rows: Sequence[Row], kind: str) -> dict[str, int]:
    types = [r["bad_type"] for r in rows if r["is_bad"]]
    return {t: types.count(t) for t in sorted(set(types))} if kind == "mixture" else \
        {"applied": types.count(kind), "fell_back_to_noisy": len(types) - types.count(kind)}


def _cells(ctx: ScoringContext, rows: Sequence[Row], passes: LikelihoodPasses,
           scorers: Sequence[PassScorer | RandomScorer], *, meta: dict[str, Any], seed: int,
           retention: float) -> list[dict[str, Any]]:
    is_bad = np.array([bool(r["is_bad"]) for r in rows])
    return [{**meta, "seed": seed, "scorer": scorer.name, "rows": len(rows), "bad": int(is_bad.sum()),
             **cell_metrics(keep_scores(scorer, rows, passes, seed, ctx), is_bad, retention)} for scorer in scorers]


def _report(progress: Progress, label: str, cells: list[dict[str, Any]], seconds: float) -> None:
    best = max(cells, key=lambda c: np.nan_to_num(c["auroc"]))
    progress(f"{label}: {seconds:.1f} s; best AUROC {best['scorer']} {best['auroc']:.3f}")


def score_cells(ctx: ScoringContext, pool: Sequence[Row], scorers: Sequence[PassScorer | RandomScorer], *,
                dataset: str, corruptions: Sequence[str], seeds: Sequence[int], ratio: float, retention: float,
                progress: Progress = _print) -> list[dict[str, Any]]:
    """One result row per (corruption, seed, scorer) under the model as it is now (the base model)."""
    cache = PassCache(ctx)
    cells: list[dict[str, Any]] = []
    for seed in seeds:
        for kind in corruptions:
            rows, _ = corrupt_rows(list(pool), ratio, kind, seed)
            started = time.perf_counter()
            meta = {"dataset": dataset, "corruption": kind, "model_state": "base",
                    "corruption_applied": _applied(rows, kind)}
            new = _cells(ctx, rows, cache.passes(rows), scorers, meta=meta, seed=seed, retention=retention)
            _report(progress, f"{dataset} base {kind} seed {seed}", new, time.perf_counter() - started)
            cells += new
    return cells


def scorer_seconds(ctx: ScoringContext, pool: Sequence[Row],
                   scorers: Sequence[PassScorer | RandomScorer]) -> dict[str, float]:
    """Seconds per 100 rows of each scorer: its passes, timed uncached on the clean pool."""
    passes = likelihood_passes(pool, ctx, PASSES)
    per_100 = {p: s * 100 / len(pool) for p, s in passes.seconds.items()}
    return {s.name: float(sum(per_100[p] for p in getattr(s, "passes", ()))) for s in scorers}


def rescored_cells(bundle: ModelBundle, ctx: ScoringContext, pool: Sequence[Row],
                   scorers: Sequence[PassScorer | RandomScorer], *, dataset: str, corruptions: Sequence[str],
                   seeds: Sequence[int], ratio: float, retention: float, steps: int, learning_rate: float,
                   batch_size: int, progress: Progress = _print) -> list[dict[str, Any]]:
    """Cells scored after training the adapter `steps` steps on each corrupted pool (then reset)."""
    initial = adapter_arrays(bundle.model)
    cells: list[dict[str, Any]] = []
    for seed in seeds:
        for kind in corruptions:
            rows, _ = corrupt_rows(list(pool), ratio, kind, seed)
            torch.manual_seed(seed)
            started = time.perf_counter()
            loss = train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(
                steps=steps, batch_size=batch_size, grad_accum=1, learning_rate=learning_rate,
                max_length=ctx.max_length, template=ctx.template, proximal_mu=0.0, seed=seed)).loss
            meta = {"dataset": dataset, "corruption": kind, "model_state": f"adapter-{steps}-steps",
                    "corruption_applied": _applied(rows, kind), "train_loss": loss}
            new = _cells(ctx, rows, PassCache(ctx).passes(rows), scorers, meta=meta, seed=seed, retention=retention)
            _report(progress, f"{dataset} adapter {kind} seed {seed} (train loss {loss:.3f})", new,
                    time.perf_counter() - started)
            cells += new
            set_adapter_arrays(bundle.model, initial)
    return cells


def summarize(cells: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std over seeds per (model state, dataset, corruption, scorer), and the grid means."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["model_state"], c["dataset"], c["corruption"], c["scorer"]), []).append(c)
    per_cell = []
    for (state, dataset, kind, scorer), group in sorted(groups.items()):
        entry = {"model_state": state, "dataset": dataset, "corruption": kind, "scorer": scorer,
                 "seeds": len(group)}
        for metric in ("auroc", "kept_clean"):
            values = np.array([g[metric] for g in group], dtype=np.float64)
            entry[f"{metric}_mean"] = float(np.nanmean(values))
            entry[f"{metric}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
        per_cell.append(entry)
    overall: dict[str, dict[str, dict[str, float]]] = {}
    for state in sorted({e["model_state"] for e in per_cell}):
        for scorer in sorted({e["scorer"] for e in per_cell if e["model_state"] == state}):
            mine = [e for e in per_cell if e["model_state"] == state and e["scorer"] == scorer]
            swap = [e for e in mine if e["corruption"] == "swap"]
            overall.setdefault(state, {})[scorer] = {
                "auroc_mean": float(np.mean([e["auroc_mean"] for e in mine])),
                "kept_clean_mean": float(np.mean([e["kept_clean_mean"] for e in mine])),
                "swap_auroc_mean": float(np.mean([e["auroc_mean"] for e in swap])) if swap else float("nan"),
                "swap_kept_clean_mean": float(np.mean([e["kept_clean_mean"] for e in swap])) if swap else float("nan"),
                "cells": len(mine)}
    return {"per_cell": per_cell, "overall": overall}
