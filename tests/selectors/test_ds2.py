"""DS2: rating parse/retry, duplicate-free neighbours, HOC transition matrix, curation, scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.llm.openai_endpoint import EndpointError
from feddqc_flwr.scoring.ds2 import DS2Scorer
from feddqc_flwr.scoring.ds2.curation import curate, long_tail_scores
from feddqc_flwr.scoring.ds2.hoc import TransitionEstimate, estimate_transition
from feddqc_flwr.scoring.ds2.rating import EndpointRater, compress, parse_overall, rate
from feddqc_flwr.scoring.neighbours import nearest_neighbours
from feddqc_flwr.scoring.registry import get_scorer
from tests.helpers import make_config
from tests.scoring.common import ROWS, make_ctx

K = 6


def clustered(seed: int, n_clusters: int = 60, per: int = 40, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters on the unit sphere; every point of a cluster has its cluster's true score."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = np.repeat(centres, per, axis=0) + 0.05 * rng.normal(size=(n_clusters * per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(rng.integers(0, K, n_clusters), per)


def known_transition() -> np.ndarray:
    t = np.full((K, K), 0.05)
    np.fill_diagonal(t, 0.75)
    return t


def test_hoc_recovers_a_known_transition_matrix() -> None:
    """2,400 points, ratings drawn from T (75% kept, 5% to each other class): every entry of the
    estimate is within 0.1 of T (seen: max error 0.05-0.065 over seeds 0-2), and the clean prior
    within 0.05 of the true class shares."""
    x, true = clustered(seed=0)
    t = known_transition()
    rng = np.random.default_rng(10)
    rated = np.array([rng.choice(K, p=t[y]) for y in true])
    estimate = estimate_transition(x, rated, K, rounds=10, seed=0)
    assert np.abs(estimate.transition - t).max() < 0.1
    np.testing.assert_allclose(estimate.transition.sum(axis=1), 1.0, atol=1e-9)
    assert np.abs(estimate.p_clean - np.bincount(true, minlength=K) / len(true)).max() < 0.05
    np.testing.assert_allclose(estimate.p_rated, np.bincount(rated, minlength=K) / len(rated))


def test_curation_fixes_planted_misratings() -> None:
    """10% of the ratings moved to a wrong class: at least 85% of them are put back to the true
    score (seen: 92-95%), and no correctly rated sample is changed."""
    x, true = clustered(seed=1)
    rng = np.random.default_rng(11)
    rated = true.copy()
    planted = rng.choice(len(true), size=len(true) // 10, replace=False)
    rated[planted] = (true[planted] + rng.integers(1, K, size=len(planted))) % K
    estimate = estimate_transition(x, rated, K, rounds=10, seed=0)
    result = curate(x, rated, estimate, epochs=11, seed=0)
    assert (result.curated[planted] == true[planted]).mean() >= 0.85
    untouched = np.setdiff1d(np.arange(len(true)), planted)
    assert (result.curated[untouched] == rated[untouched]).all()
    assert result.misrated[planted].mean() >= 0.85 and result.misrated[untouched].mean() < 0.01


def test_neighbour_search_skips_self_and_exact_duplicates() -> None:
    base = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]]  # rows 0 and 1 are the same point
    base[2:] = (base[2:] + 0.1 * base[0]) / np.linalg.norm(base[2:] + 0.1 * base[0], axis=1, keepdims=True)
    idx, dist = nearest_neighbours(base, 3)
    for i in range(5):
        assert i not in idx[i]
    assert 1 not in idx[0] and 0 not in idx[1]
    assert (dist > 1e-6).all() and np.isfinite(dist).all()
    _, few = nearest_neighbours(base[:3], 3)  # rows 0, 1 have a single distinct other point
    assert np.isinf(few[0, 1:]).all() and np.isfinite(few[0, 0])


def test_long_tail_score_is_ds2s_sigmoid_of_mean_distance() -> None:
    x, _ = clustered(seed=2, n_clusters=3, per=5)
    _, dist = nearest_neighbours(x, 9)
    expected = 2 / (1 + np.exp(-dist.sum(axis=1) / 10)) - 1  # self (distance 0) counts in the mean of 10
    np.testing.assert_allclose(long_tail_scores(x), expected)


def test_parse_takes_the_last_json_rating_and_compress_gives_six_classes() -> None:
    assert parse_overall('x {"Overall rating": 3} then {"Rarity": 2, "Overall rating": 8}') == 8
    assert parse_overall('{"Overall rating": "7"}') == 7
    for bad in ("no json", '{"Overall": 5}', '{"Overall rating": 11}', '{"Overall rating": "high"}'):
        assert parse_overall(bad) is None
    np.testing.assert_array_equal(compress(np.array([0, 1, 4, 5, 7, 9, 10])), [0, 0, 0, 1, 3, 5, 5])


class ScriptedRater:
    """Answers from a per-row script (one answer per attempt), recording who was asked when."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.calls = script, []

    def __call__(self, prompts, attempt):
        out = []
        for messages in prompts:
            key = next(k for k in self.script if k in messages[1]["content"])
            self.calls.append((key, attempt))
            answers = self.script[key]
            out.append(answers[min(attempt, len(answers) - 1)])
        return out


def test_parse_failures_are_retried_then_counted() -> None:
    ok = json.dumps({"Rarity": 5, "Complexity": 5, "Informativeness": 5, "Overall rating": 9})
    rater = ScriptedRater({"Paris.": [ok], "five.": ["sorry", ok], "mat.": ["no", "still no", "nope"],
                           "primary": [ok], "Hi!": ["{bad json", "{}", '{"Overall rating": 6}']})
    ratings = rate(ROWS, rater, retries=2, batch_size=2)
    np.testing.assert_array_equal(ratings.overall, [9, 9, 0, 9, 6])
    assert ratings.failures == 1 and ratings.retried == 3
    assert [a for k, a in rater.calls if k == "Paris."] == [0]
    assert [a for k, a in rater.calls if k == "mat."] == [0, 1, 2]
    np.testing.assert_array_equal(ratings.classes, [5, 5, 0, 5, 2])


def test_ds2_scorer_keep_score_is_curated_class_then_diversity(bundle) -> None:
    answers = {"Paris.": 9, "five.": 8, "mat.": 4, "primary": 7, "Hi!": 2}
    rater = ScriptedRater({k: [json.dumps({"Overall rating": v})] for k, v in answers.items()})
    scorer = DS2Scorer(rater=rater)
    keep = scorer.score(ROWS, make_ctx(bundle))
    report = scorer.last_report
    classes = np.floor(keep).astype(int)
    assert report["rated-histogram"] == [2, 0, 0, 1, 1, 1] and report["parse-failures"] == 0
    assert report["curated-histogram"] == np.bincount(classes, minlength=K).tolist()
    assert ((keep - classes) >= 0).all() and ((keep - classes) < 1).all()
    assert np.array(report["transition-matrix"]).shape == (K, K)


def test_ds2_is_registered_and_rates_with_the_scoring_model(bundle) -> None:
    """The tiny random model cannot write JSON: every rating fails after the retries, falls back
    to class 0, and each row still gets a finite keep-score (its diversity, in [0, 1))."""
    scorer = get_scorer("ds2")
    assert isinstance(scorer, DS2Scorer)
    local = DS2Scorer(retries=1, max_new_tokens=8)
    keep = local.score(ROWS, make_ctx(bundle))
    assert local.last_report["parse-failures"] == len(ROWS) and local.last_report["retried"] == len(ROWS)
    assert keep.shape == (len(ROWS),) and np.isfinite(keep).all() and ((keep >= 0) & (keep < 1)).all()


def test_ds2_remote_rater_needs_a_model_name() -> None:
    with pytest.raises(ConfigError, match="rater-model"):
        make_config(scorer="ds2", rater_url="http://localhost:8000/v1")
    assert make_config(scorer="ds2", rater_url="http://x/v1", rater_model="m").rater_model == "m"


def test_curation_leaves_consistently_rated_clusters_alone() -> None:
    """Every neighbourhood agrees with its rating: the vote gives no evidence, so even with a T
    that expects 20% noise nothing is flagged or changed (ties must not flag a whole class)."""
    x, true = clustered(seed=3, n_clusters=10, per=20, dim=16)
    t = np.full((K, K), 0.04)
    np.fill_diagonal(t, 0.8)
    estimate = TransitionEstimate(t, np.full(K, 1 / K), np.bincount(true, minlength=K) / len(true))
    result = curate(x, true, estimate, epochs=5)
    assert not result.misrated.any() and (result.curated == true).all()


class FlakyEndpoint:
    """Stands in for ChatEndpoint: fails, then answers JSON only when sampling (temperature > 0)."""

    def __init__(self) -> None:
        self.temperatures: list[float] = []

    def complete(self, messages, *, max_tokens: int, temperature: float) -> str:
        self.temperatures.append(temperature)
        if len(self.temperatures) == 1:
            raise EndpointError("connection refused")
        return '{"Overall rating": 7}' if temperature > 0 else "I think it is fine."


def test_endpoint_rater_retries_errors_and_chat_with_sampling() -> None:
    endpoint = FlakyEndpoint()
    ratings = rate(ROWS[:2], EndpointRater(endpoint), retries=1, batch_size=8)  # type: ignore[arg-type]
    np.testing.assert_array_equal(ratings.overall, [7, 7])
    assert ratings.failures == 0 and ratings.retried == 2
    assert endpoint.temperatures == [0.0, 0.0, 1.2, 1.2]
