"""The heatmap of `feddqc bench selection`: scorers × (dataset, corruption), AUROC and kept-clean share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def selection_heatmap(per_cell: Sequence[dict[str, Any]], path: Path, model_state: str = "base") -> Path:
    """Two panels (AUROC, kept-clean share at retention 0.5), mean over seeds, one row per scorer."""
    cells = [c for c in per_cell if c["model_state"] == model_state]
    scorers = sorted({c["scorer"] for c in cells})
    columns = sorted({(c["dataset"], c["corruption"]) for c in cells})
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.45 * len(columns) + 2), 1.0 + 0.9 * len(scorers)))
    for ax, metric, title in zip(axes, ("auroc_mean", "kept_clean_mean"),
                                 ("AUROC (clean vs corrupted)", "clean share of the kept half"), strict=True):
        grid = np.full((len(scorers), len(columns)), np.nan)
        for c in cells:
            grid[scorers.index(c["scorer"]), columns.index((c["dataset"], c["corruption"]))] = c[metric]
        image = ax.imshow(grid, vmin=0.0 if metric == "auroc_mean" else 0.3, vmax=1.0, cmap="RdYlGn", aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6)
        ax.set_yticks(range(len(scorers)), scorers, fontsize=8)
        ax.set_xticks(range(len(columns)), [f"{d.split(':')[-1]}\n{k}" for d, k in columns], fontsize=6)
        ax.set_title(f"{title}, {model_state} model, mean over seeds", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.02)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def worst_type_plot(summary: dict[str, Any], path: Path, corruptions: Sequence[str]) -> Path:
    """Per model state, scorers × (each corruption type, mean, worst) on the main datasets: AUROC and
    kept-clean share, scorers in the order of the summary's ranking (best worst case on top)."""
    states = list(summary["overall"])
    ranking = [r["scorer"] for r in summary["ranking"]]
    fig, axes = plt.subplots(len(states), 2, squeeze=False,
                             figsize=(13.0, 1.2 + 0.28 * len(ranking or summary["overall"][states[0]]) * len(states)))
    for row, state in enumerate(states):
        scorers = summary["overall"][state]
        names = [n for n in ranking if n in scorers] + sorted(set(scorers) - set(ranking))
        main = next(v["main"] for v in scorers.values() if v["main"])
        types = [t for t in corruptions if t in main["by_type"]]
        for col, (metric, title) in enumerate((("auroc", "AUROC"), ("kept_clean", "kept-clean share"))):
            grid = np.array([[scorers[n]["main"]["by_type"][t][metric] for t in types]
                             + [scorers[n]["main"][f"mean_{metric}"], scorers[n]["main"][f"worst_{metric}"]]
                             for n in names])
            ax = axes[row][col]
            ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="RdYlGn", aspect="auto")
            for (i, j), value in np.ndenumerate(grid):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        fontweight="bold" if j == grid.shape[1] - 1 else "normal")
            ax.axvline(len(types) - 0.5, color="black", linewidth=1)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            ax.set_xticks(range(len(types) + 2), [*types, "mean", "worst"], fontsize=7)
            sets = "+".join(d.split(":")[-1] for d in main["datasets"])
            ax.set_title(f"{title}, {state} model, mean over {sets} and seeds", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
