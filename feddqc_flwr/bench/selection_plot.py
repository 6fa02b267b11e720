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
