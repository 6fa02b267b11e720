"""Score histograms on fixed log-spaced bins: mergeable, so lambda needs one query, not two.

Shared bin edges used to come from the clients' min/max (one query) before the counts (a
second). These bins are fixed in advance instead, the same for every client and run: with
g = 1 + 2/bins and a zero bin of half-width m,

    bin i >= 1: [m·g^(i-1), m·g^i)      bin 0: [-m, m)      bin -j: [-m·g^j, -m·g^(j-1))

so a bin spans 2/bins of its |score| (1 % at the default 200), on any scorer's scale. A client
sends (bin index, count, corrupted count) for its non-empty bins only: counts, never a score.
The server adds them up and reads lambda off the sum as before (`threshold.lambda_for_retention`):
the lower edge of the bin holding the exact quantile. In the summed histogram each run of empty
bins becomes one empty bin, so it has at most 2n + 1 bins for n scores however far apart they lie
(a bin holding a score keeps its exact edges, so lambda does not change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ZERO_HALF_WIDTH = 1e-9  # m: |scores| below this share one bin


def growth(bins: int) -> float:
    """g, the ratio of consecutive bin edges away from zero."""
    return 1.0 + 2.0 / bins


def lower_edges(index: np.ndarray, bins: int) -> np.ndarray:
    """Lower edge of each bin index (see the module docstring)."""
    index = np.asarray(index, dtype=np.int64)
    g, m = growth(bins), ZERO_HALF_WIDTH
    magnitude = m * np.power(g, np.abs(index) - (index > 0)).astype(np.float64)
    return np.where(index > 0, magnitude, np.where(index == 0, -m, -magnitude))


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each finite score, checked against `lower_edges` so edge and bin always agree."""
    scores = np.asarray(scores, dtype=np.float64)
    g, m = growth(bins), ZERO_HALF_WIDTH
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log(np.abs(scores) / m) / np.log(g)
    index = np.where(scores >= m, np.floor(steps) + 1, np.where(scores < -m, -np.ceil(steps), 0)).astype(np.int64)
    index += scores >= lower_edges(index + 1, bins)  # float rounding in log/power: one bin at most
    index -= scores < lower_edges(index, bins)
    return index


@dataclass(frozen=True)
class ScoreSketch:
    """Counts per fixed bin; `bad` counts the synthetically corrupted rows among them."""

    bins: int
    counts: dict[int, int]
    bad: dict[int, int]

    @classmethod
    def of(cls, scores: np.ndarray, is_bad: np.ndarray, bins: int) -> ScoreSketch:
        """One client's sketch; NaN/inf scores (unscorable rows) are not counted."""
        scores, is_bad = np.asarray(scores, dtype=np.float64), np.asarray(is_bad, dtype=bool)
        finite = np.isfinite(scores)
        index = bin_index(scores[finite], bins)
        keys, counts = np.unique(index, return_counts=True)
        bad_keys, bad_counts = np.unique(index[is_bad[finite]], return_counts=True)
        return cls(bins, dict(zip(keys.tolist(), counts.tolist(), strict=True)),
                   dict(zip(bad_keys.tolist(), bad_counts.tolist(), strict=True)))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_record(self) -> dict[str, list[int]]:
        """What the client sends: its non-empty bins, their counts and corrupted counts."""
        keys = sorted(self.counts)
        return {"bins": keys, "counts": [self.counts[k] for k in keys],
                "bad-counts": [self.bad.get(k, 0) for k in keys]}

    @classmethod
    def from_record(cls, record: dict, bins: int) -> ScoreSketch:
        keys = [int(k) for k in record["bins"]]
        return cls(bins, dict(zip(keys, (int(c) for c in record["counts"]), strict=True)),
                   {k: int(c) for k, c in zip(keys, record["bad-counts"], strict=True) if int(c)})

    def noisy(self, noise: Callable[[np.ndarray], np.ndarray]) -> ScoreSketch:
        """Every bin from the lowest to the highest non-empty one, counts replaced by `noise(counts)`
        (signed): noise on the non-empty bins alone would still tell which they are."""
        keys = range(min(self.counts), max(self.counts) + 1) if self.counts else range(0)
        counts = np.array([self.counts.get(k, 0) for k in keys], dtype=np.int64)
        noisy = np.asarray(noise(counts), dtype=np.int64)
        return ScoreSketch(self.bins, dict(zip(keys, noisy.tolist(), strict=True)), dict(self.bad))

    def merge(self, other: ScoreSketch) -> ScoreSketch:
        if other.bins != self.bins:
            raise ValueError(f"cannot merge sketches of {self.bins} and {other.bins} bins")
        counts, bad = dict(self.counts), dict(self.bad)
        for key, value in other.counts.items():
            counts[key] = counts.get(key, 0) + value
        for key, value in other.bad.items():
            bad[key] = bad.get(key, 0) + value
        return ScoreSketch(self.bins, counts, bad)

    def histogram(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(edges, counts, bad counts): every non-empty bin, and one empty bin per gap between them."""
        keys = np.array(sorted(k for k, c in self.counts.items() if c), dtype=np.int64)
        if not keys.size:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        gap = np.append(keys[1:] > keys[:-1] + 1, False)  # an empty run follows this bin
        starts = np.sort(np.concatenate([keys, keys[gap] + 1]))  # first bin index of every histogram bin
        edges = lower_edges(np.append(starts, keys[-1] + 1), self.bins)
        counts = np.array([self.counts.get(int(k), 0) for k in starts], dtype=np.int64)
        bad = np.array([self.bad.get(int(k), 0) for k in starts], dtype=np.int64)
        return edges, counts, bad


def criteria_record(sketches: dict[str, ScoreSketch]) -> dict[str, list[int]]:
    """One reply's sketches, one per criterion, as flat lists keyed '<criterion>/<field>'."""
    return {f"{name}/{key}": values for name, sketch in sketches.items() for key, values in sketch.to_record().items()}


def criteria_from_record(record: dict, criteria: tuple[str, ...], bins: int) -> dict[str, ScoreSketch]:
    """The per-criterion sketches of `criteria_record`."""
    fields = ("bins", "counts", "bad-counts")
    return {name: ScoreSketch.from_record({key: record[f"{name}/{key}"] for key in fields}, bins)
            for name in criteria}
