"""`feddqc bench selection`: its metrics against scikit-learn's AUROC and a hand-sorted kept half
on the scorers' own scores (on the copy model of conftest.py, whose swapped rows score worse than
their originals), its pass cache against each scorer's `score()`, and the command end to end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from feddqc_flwr.bench.selection import PassCache, keep_scores, score_cells, summarize
from feddqc_flwr.cli.bench import add_bench_commands, selection_scorers
from feddqc_flwr.data.corruption import corrupt_rows
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import make_ctx

WORDS = ["apple", "river", "candle", "mountain", "violin", "garden", "pencil", "window", "orange", "silver",
         "bottle", "rocket"]
POOL = [{"instruction": "Repeat the input.", "input": w, "response": w, "history": [], "is_bad": False,
         "bad_type": "clean", "sample_id": f"s{i}"} for i, w in enumerate(WORDS)]


def test_cells_match_independent_metrics_and_ira_beats_random(copy_model) -> None:
    ctx = make_ctx(copy_model, max_length=64)
    seeds = (0, 1, 2)
    cells = score_cells(ctx, POOL, selection_scorers(), dataset="words", corruptions=("swap",), seeds=seeds,
                        ratio=0.5, retention=0.5, progress=lambda _: None)
    by = {(c["scorer"], c["seed"]): c for c in cells}
    for seed in seeds:
        rows, _ = corrupt_rows(POOL, 0.5, "swap", seed)
        clean = np.array([not r["is_bad"] for r in rows])
        scores = get_scorer("ira").score(rows, ctx)
        assert by[("ira", seed)]["bad"] == 6
        assert by[("ira", seed)]["auroc"] == pytest.approx(roc_auc_score(clean, scores))
        top = np.argsort(-scores)[:6]  # retention 0.5 of 12 rows
        assert by[("ira", seed)]["kept_clean"] == pytest.approx(clean[top].mean())
    summary = summarize(cells)
    entry = next(e for e in summary["per_cell"] if e["scorer"] == "ira")
    aurocs = [by[("ira", s)]["auroc"] for s in seeds]
    assert entry["auroc_mean"] == pytest.approx(np.mean(aurocs))
    assert entry["auroc_std"] == pytest.approx(np.std(aurocs, ddof=1)) and entry["seeds"] == 3


def test_cached_passes_give_each_scorers_own_scores(bundle) -> None:
    """The bench derives every scorer from one set of cached passes; that must equal score()."""
    ctx = make_ctx(bundle, max_length=64)
    rows = [dict(r) for r in POOL[:5]]
    cache = PassCache(ctx)
    cache.passes(rows[:3])  # part of the rows cached first, in another order and batch
    passes = cache.passes(rows[::-1])
    for scorer in selection_scorers():
        if scorer.name == "random":
            continue
        direct = scorer.score(rows[::-1], ctx)
        np.testing.assert_allclose(keep_scores(scorer, rows[::-1], passes, 0, ctx), direct, rtol=1e-4, atol=1e-5,
                                   err_msg=scorer.name)
    assert get_scorer("ira").name in {s.name for s in selection_scorers()}


def test_bench_selection_command_writes_json_and_heatmap(tiny_model_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_commands(parser.add_subparsers(dest="command"))
    out, plot = tmp_path / "selection.json", tmp_path / "selection.png"
    args = parser.parse_args(["bench", "selection", "--model", str(tiny_model_dir), "--datasets", "demo",
                              "--corruptions", "swap,cut", "--seeds", "0,1", "--rows", "16", "--max-length", "96",
                              "--out", str(out), "--plot", str(plot)])
    args.command_line = "test"
    args.func(args)
    result = json.loads(out.read_text())
    names = {s.name for s in selection_scorers()}
    assert len(result["cells"]) == 2 * 2 * len(names)
    assert {c["scorer"] for c in result["cells"]} == names
    assert set(result["seconds_per_100_rows"]["demo"]) == names and result["seconds_per_100_rows"]["demo"]["ira"] > 0
    assert result["seconds_per_100_rows"]["demo"]["random"] == 0.0
    assert result["paper_table6_kept_clean_swap"]["ira"] == pytest.approx(0.9345)
    assert result["machine"]["cpu_count"] >= 1 and all(c["bad"] == 8 for c in result["cells"])
    assert plot.stat().st_size > 10_000
