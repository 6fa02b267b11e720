"""Lambda from the clients' counts on fixed bins, sent in one query, is within one bin of the
exact global quantile of the pooled scores (computed here by sorting them)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feddqc_flwr.selection.hierarchy import passes_all
from feddqc_flwr.selection.histogram_metrics import histogram_summary
from feddqc_flwr.selection.score_sketch import ScoreSketch, bin_index, lower_edges
from feddqc_flwr.selection.threshold import criterion_retention, lambda_for_retention, snap_to_bin_edge

M = 1e-9  # the zero bin's half-width, as documented


def _clients(rng: np.random.Generator) -> list[np.ndarray]:
    """Scores on several scales and both signs, as IRA (around 0) or loss (negative) give them."""
    return [rng.normal(0, 1, 300), rng.normal(1, 2, 120), rng.standard_t(3, 500), -rng.gamma(2.0, 3.0, 200),
            rng.normal(0, 1e-3, 50)]


@pytest.mark.parametrize("retention", [0.1, 0.3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("bins", [10, 200])
def test_lambda_is_the_lower_edge_of_the_bin_holding_the_exact_quantile(retention: float, bins: int) -> None:
    rng = np.random.default_rng(1)
    clients = _clients(rng)
    wire = [ScoreSketch.of(c, np.zeros(len(c), bool), bins).to_record() for c in clients]  # what clients send
    total = ScoreSketch(bins, {}, {})
    for record in wire:
        total = total.merge(ScoreSketch.from_record(record, bins))
    edges, counts, _ = total.histogram()
    lam = lambda_for_retention(counts, edges, retention)

    pooled = np.sort(np.concatenate(clients))[::-1]
    target = max(1, math.ceil(retention * len(pooled)))
    exact = pooled[target - 1]  # the target-th largest score
    upper = edges[list(edges).index(lam) + 1]  # the next edge: lambda's bin is [lam, upper)
    assert lam <= exact < upper
    assert upper - lam <= 2 / bins * max(abs(lam), abs(upper)) + 2 * M  # one bin: 2/bins of |score| wide
    assert (pooled >= lam).sum() >= target and (pooled >= upper).sum() < target
    assert counts.sum() == len(pooled)


def test_bins_by_hand() -> None:
    """bins = 2: consecutive edges double. [1e-9, 2e-9) is bin 1, [2e-9, 4e-9) bin 2, [-1e-9, 1e-9) bin 0."""
    scores = np.array([3e-9, 1e-9, -1e-9, 0.0, 9.9e-10, -3e-9, -4e-9, 4e-9])
    assert bin_index(scores, 2).tolist() == [2, 1, 0, 0, 0, -2, -2, 3]
    assert lower_edges(np.array([-2, -1, 0, 1, 2, 3]), 2) == pytest.approx([-4e-9, -2e-9, -1e-9, 1e-9, 2e-9, 4e-9])


def test_every_score_lies_in_its_bin_and_bins_are_2_over_bins_wide() -> None:
    rng = np.random.default_rng(2)
    scores = np.concatenate([rng.normal(0, 10, 2000), rng.normal(0, 1e-6, 200), [1e-9, -1e-9, 0.0, 1.0, -1.0]])
    for bins in (3, 200, 1000):
        index = bin_index(scores, bins)
        lo, hi = lower_edges(index, bins), lower_edges(index + 1, bins)
        assert ((lo <= scores) & (scores < hi)).all()
        away = index > 0  # away from zero on the positive side: hi / lo = 1 + 2/bins
        assert hi[away] / lo[away] == pytest.approx(1 + 2 / bins)


def test_nan_scores_are_not_counted_and_corrupted_rows_are_counted_apart() -> None:
    sketch = ScoreSketch.of(np.array([np.nan, -5.0, 0.1, 0.1, np.inf]), np.array([True, True, False, True, False]), 200)
    assert sketch.total == 3 and sum(sketch.bad.values()) == 2
    edges, counts, bad = sketch.histogram()
    assert counts[0] == 1 and bad[0] == 1 and counts[-1] == 2 and bad[-1] == 1  # -5 first, the two 0.1 last
    assert edges[0] <= -5.0 < edges[1] and edges[-2] <= 0.1 < edges[-1]


def test_noise_covers_every_bin_between_the_lowest_and_highest_non_empty_one() -> None:
    sketch = ScoreSketch.of(np.array([-1.0, 1.0]), np.array([False, True]), 200)
    noisy = sketch.noisy(lambda counts: counts + 1)
    # 200 bins: edges grow by 1.01 from 1e-9, so 1.0 is in bin floor(ln(1e9) / ln(1.01)) + 1 = 2083
    # and -1.0 in bin -2083: 4167 bins from the lowest to the highest, each noised
    span = 2083 + 2083 + 1
    assert len(noisy.counts) == span and noisy.total == 2 + span
    assert noisy.bad == sketch.bad  # corrupted counts (synthetic flags) stay exact


def test_empty_runs_become_one_bin_so_the_histogram_stays_small() -> None:
    """Scores at -1, 1 and 1000 lie thousands of fixed bins apart: 3 bins hold them, 2 gaps between."""
    edges, counts, _ = ScoreSketch.of(np.array([-1.0, 1.0, 1.0, 1000.0]), np.zeros(4, bool), 200).histogram()
    assert counts.tolist() == [1, 0, 2, 0, 1] and len(edges) == 6 and (np.diff(edges) > 0).all()
    assert edges[0] <= -1.0 < edges[1] and edges[2] <= 1.0 < edges[3] and edges[4] <= 1000.0 < edges[5]


def test_lambda_with_signed_noisy_counts_takes_the_first_bin_reaching_the_target() -> None:
    """By hand, edges 0..3: counts [3, 2, -1] (total 4, target 2 at retention 0.5) count [-1, 1, 4]
    from the top, reaching 2 only at the lowest bin -> 0; counts [2, -1, 3] reach it at the top -> 2."""
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    assert lambda_for_retention(np.array([3, 2, -1]), edges, 0.5) == 0.0
    assert lambda_for_retention(np.array([2, -1, 3]), edges, 0.5) == 2.0
    assert lambda_for_retention(np.array([1, -2, 0]), edges, 0.5) == 0.0  # total <= 0: keep everything


def test_retention_of_100_rows_keeps_exactly_the_share_asked() -> None:
    """0.07 x 100 is 7.000000000000001 in floats: ceil must not make it 8 (one row per bin here)."""
    scores = np.arange(100, dtype=np.float64) + 1.0  # 1..100, far enough apart for one bin each at 200 bins
    edges, counts, _ = ScoreSketch.of(scores, np.zeros(100, bool), 200).histogram()
    lam = lambda_for_retention(counts, edges, 0.07)
    assert (scores >= lam).sum() == 7  # 94..100
    assert lower_edges(bin_index(np.array([94.0]), 200), 200)[0] == lam


def test_a_named_lambda_snaps_to_its_bins_lower_edge() -> None:
    """bins = 2: edges double from 1e-9, so 3e-9 lies in [2e-9, 4e-9) and snaps to 2e-9; an edge stays."""
    assert snap_to_bin_edge(3e-9, 2) == pytest.approx(2e-9)
    assert snap_to_bin_edge(-3e-9, 2) == pytest.approx(-4e-9)  # [-4e-9, -2e-9): rounded down, never up
    edge = float(lower_edges(np.array([17]), 200)[0])
    assert snap_to_bin_edge(edge, 200) == edge
    assert snap_to_bin_edge(-math.inf, 200) == -math.inf


def test_each_of_two_criteria_keeps_the_square_root_of_the_share() -> None:
    assert criterion_retention(0.49, 2) == pytest.approx(0.7)
    assert criterion_retention(0.5, 1) == 0.5
    assert criterion_retention(0.125, 3) == pytest.approx(0.5)


@pytest.mark.parametrize("retention", [0.1, 0.25, 0.5, 0.8])
def test_server_and_clients_agree_on_every_row_with_scores_exactly_on_bin_edges(retention: float) -> None:
    """Scores placed exactly on fixed bin edges (and duplicated): the server's count of rows at or above
    lambda, read off the summed histogram, equals the rows clients keep with "score >= lambda"."""
    bins = 200
    edges_at = lower_edges(np.arange(-40, 41, 3), bins)  # exact edges on both sides of 0
    clients = [np.concatenate([edges_at, edges_at[::4]]), edges_at[5:20]]
    total = ScoreSketch(bins, {}, {})
    for scores in clients:
        total = total.merge(ScoreSketch.of(scores, np.zeros(len(scores), bool), bins))
    edges, counts, bad = total.histogram()
    lam = lambda_for_retention(counts, edges, retention)
    server = histogram_summary(edges, counts, bad, lam)["share-above-lambda"] * counts.sum()
    kept_by_clients = sum(int(passes_all(s.reshape(-1, 1), [lam]).sum()) for s in clients)
    assert round(server) == kept_by_clients
    assert lam in set(np.concatenate(clients).tolist())  # lambda is itself one of the edge scores: kept
