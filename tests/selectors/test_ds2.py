"""DS2: rating parse/retry, duplicate-free neighbours, HOC transition matrix, curation, scorer."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.llm.encoder import embed
from feddqc_flwr.llm.openai_endpoint import EndpointError
from feddqc_flwr.scoring.ds2 import DS2Scorer
from feddqc_flwr.scoring.ds2 import scorer as ds2_scorer
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
    """2/(1 + e^-m) - 1 = tanh(m/2), m = mean cosine distance to the 9 nearest others and the
    sample itself (distance 0), i.e. their sum / 10 when there are 9 others, else / (others + 1).
    Orthonormal points are all at distance 1 from each other: 12 of them give m = 9/10; 4 give
    m = 3/4. With e0, e1, e2 and a copy of e0: e0 (and its copy) see e1, e2 only, m = 2/3; e1 sees
    e0, its copy and e2, m = 3/4."""
    np.testing.assert_allclose(long_tail_scores(np.eye(12, dtype=np.float32)), np.tanh(0.45), rtol=1e-6)
    np.testing.assert_allclose(long_tail_scores(np.eye(4, dtype=np.float32)), np.tanh(3 / 8), rtol=1e-6)
    with_copy = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    np.testing.assert_allclose(long_tail_scores(with_copy), np.tanh([1 / 3, 3 / 8, 3 / 8, 1 / 3]), rtol=1e-6)


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


# Two clusters on the unit sphere with exact distances (dimension 48, e_j the unit vectors):
# member i of cluster A (B) is cos(EPS) e0 (e1) + sin(EPS) e_(2+i); the outlier P of cluster A is
# cos(DELTA) e0 + sin(DELTA) e42. Cosine distances: within a cluster sin^2 EPS (0.087), member to P
# 1 - cos EPS cos DELTA (0.212), across clusters 1. Each member's 9 nearest are members of its own
# cluster (19 others; a 90% subsample drops at most 4 of 41 points), and P's 9 nearest are A members.
EPS, DELTA, PER = 0.3, 0.6, 20


def two_clusters() -> tuple[list[dict[str, object]], dict[str, int], np.ndarray]:
    """Rows 0-19 cluster A rated 9 (class 5), row 20 = P rated 5 (class 1), rows 21-40 cluster B
    rated 7 (class 3): the rows, the rater's answers by tag, and the embeddings."""
    emb = np.zeros((2 * PER + 1, 48))
    for i in range(PER):
        emb[i, 0], emb[i, 2 + i] = np.cos(EPS), np.sin(EPS)
        emb[PER + 1 + i, 1], emb[PER + 1 + i, 2 + PER + i] = np.cos(EPS), np.sin(EPS)
    emb[PER, 0], emb[PER, 42] = np.cos(DELTA), np.sin(DELTA)
    rows = [{"instruction": f"Sample number {i:02d}.", "input": "", "response": "Some answer.", "history": []}
            for i in range(2 * PER + 1)]
    answers = {f"Sample number {i:02d}.": 9 if i < PER else 5 if i == PER else 7 for i in range(2 * PER + 1)}
    return rows, answers, emb


def test_ds2_scorer_fixes_a_planted_misrating_and_adds_the_long_tail_score(bundle, monkeypatch) -> None:
    """P sits with cluster A (class 5) but is rated 5 (class 1): all 9 of its neighbours vote 5, so
    it is flagged in every epoch it is sampled, is misrated, and is curated to 5 (confidence
    ~(s+1)/(s+5) x (s+1)/(s+2) for s ~ 46 samplings, far above 0.5). Every member's neighbourhood
    agrees with its rating: none is flagged. Keep = curated class + tanh(m/2), m = 9/10 of the
    distance to the 9 nearest: sin^2 EPS for members, 1 - cos EPS cos DELTA for P. The rows'
    texts reach the encoder as DS2 renders them (the tag is looked up in '### user: ...')."""
    rows, answers, emb = two_clusters()

    def fake_embed(texts):
        return emb[[int(re.fullmatch(r"### user: Sample number (\d+)\.\n### assistant: Some answer\.\n", t)
                        .group(1)) for t in texts]]

    monkeypatch.setattr(ds2_scorer, "embed", fake_embed)
    rater = ScriptedRater({k: [json.dumps({"Overall rating": v})] for k, v in answers.items()})
    scorer = DS2Scorer(rater=rater)
    keep = scorer.score(rows, make_ctx(bundle))
    member, outlier = np.tanh(0.45 * np.sin(EPS) ** 2), np.tanh(0.45 * (1 - np.cos(EPS) * np.cos(DELTA)))
    expected = np.array([5 + member] * PER + [5 + outlier] + [3 + member] * PER)
    np.testing.assert_allclose(keep, expected, rtol=1e-6)
    report = scorer.last_report
    assert report["rated-histogram"] == [0, 1, 0, PER, 0, PER] and report["parse-failures"] == 0
    assert report["curated-histogram"] == [0, 0, 0, PER, 0, PER + 1]
    assert report["misrated"] == 1 and report["curated"] == 1 and report["rated"] == 2 * PER + 1
    np.testing.assert_allclose(np.array(report["transition-matrix"]).sum(axis=1), 1.0, atol=1e-3)


def test_ds2_is_registered_and_rates_with_the_scoring_model(bundle) -> None:
    """The tiny random model cannot write JSON: every rating fails after the retries and falls back
    to class 0. One class everywhere: no neighbourhood disagrees, nothing is curated, and each
    keep-score is its long-tail score: tanh(m/2), m = the sum of the cosine distances to the 4
    other rows / 5, from MiniLM vectors of DS2's rendering ('### user: ...\n### assistant: ...\n')."""
    scorer = get_scorer("ds2")
    assert isinstance(scorer, DS2Scorer)
    local = DS2Scorer(retries=1, max_new_tokens=8)
    keep = local.score(ROWS, make_ctx(bundle))
    assert local.last_report["parse-failures"] == len(ROWS) and local.last_report["retried"] == len(ROWS)
    assert local.last_report["rated-histogram"] == [len(ROWS), 0, 0, 0, 0, 0] and local.last_report["curated"] == 0
    texts = ["### user: " + (r["instruction"] if not r["input"] else f"{r['instruction']}\n{r['input']}")
             + f"\n### assistant: {r['response']}\n" for r in ROWS]
    e = embed(texts).astype(np.float64)
    distance = 1 - e @ e.T
    m = (distance.sum(axis=1) - np.diag(distance)) / len(ROWS)
    np.testing.assert_allclose(keep, np.tanh(m / 2), rtol=1e-4)


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
