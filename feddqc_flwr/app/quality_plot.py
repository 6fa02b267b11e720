"""The PNG beside a data owner's quality report: where λ cut their own score distribution.

One panel per hierarchy (row) and criterion (column): the histogram of the scores the client gave
at that hierarchy start, clean and synthetically corrupted rows stacked when the rows carry
corruption tags, the criterion's λ as a line, and in the title the share under it.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CLEAN_COLOUR, CORRUPTED_COLOUR = "tab:green", "tab:red"
BINS = 30


def _scores(rows: list[dict[str, Any]], hierarchy: str, criterion: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores (NaN = unscorable) of the rows scored at `hierarchy`, and whether each is corrupted."""
    scored = [r for r in rows if hierarchy in r["hierarchies"]]
    values = [r["hierarchies"][hierarchy]["scores"][criterion] for r in scored]
    return (np.asarray([math.nan if v is None else v for v in values], dtype=np.float64),
            np.asarray([r.get("tag") not in (None, "clean") for r in scored], dtype=bool))


def _panel(ax: plt.Axes, scores: np.ndarray, corrupted: np.ndarray, threshold: float | None,
           synthetic: bool) -> float:
    """Draw one histogram with its λ line; return the share of the scored rows under λ (NaN counts as under).

    A null λ is -inf (every finite score passes), so it has no line."""
    finite = np.isfinite(scores)
    cut = -math.inf if threshold is None else threshold
    edges = np.histogram_bin_edges(np.append(scores[finite], [] if threshold is None else [threshold]), bins=BINS)
    if synthetic:
        ax.hist([scores[finite & ~corrupted], scores[finite & corrupted]], bins=edges, stacked=True,
                color=[CLEAN_COLOUR, CORRUPTED_COLOUR], label=["clean", "corrupted"])
        ax.legend(fontsize=7)
    else:
        ax.hist(scores[finite], bins=edges, color="tab:blue")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    under = ~finite | (scores < cut)
    return float(under.mean()) if len(scores) else 0.0


def render_summary(header: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    """PNG bytes: per hierarchy in the report and per criterion, scores vs λ and the share dropped."""
    hierarchies = sorted(header["lambda"], key=int)
    criteria = header["criteria"]
    fig, axes = plt.subplots(len(hierarchies), len(criteria), squeeze=False,
                             figsize=(4.2 * len(criteria), 2.8 * len(hierarchies)))
    for i, k in enumerate(hierarchies):
        entries = [r["hierarchies"][k] for r in rows if k in r["hierarchies"]]
        dropped = sum(not e["kept"] for e in entries) / max(1, len(entries))
        for c, criterion in enumerate(criteria):
            ax = axes[i][c]
            scores, corrupted = _scores(rows, k, criterion)
            under = _panel(ax, scores, corrupted, header["lambda"][k][c], bool(header["synthetic"]))
            ax.set_title(f"{criterion}, hierarchy {k}: {under:.0%} of {len(scores)} under λ", fontsize=9)
            ax.set_xlabel(f"{criterion} keep-score (higher = better)", fontsize=8)
        axes[i][0].set_ylabel(f"h{k}: rows ({dropped:.0%} dropped)", fontsize=8)
    fig.suptitle(f"partition {header['partition']} of {header['num-partitions']}: scores at each hierarchy start",
                 fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
