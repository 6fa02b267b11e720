"""InstructMining: MTLD, k-NN indicator, rule (published + refit), BlendSearch over n, scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.scoring.instructmining import InstructMiningScorer, indicators
from feddqc_flwr.scoring.instructmining.indicators import compute_indicators, knn_distance, mtld
from feddqc_flwr.scoring.instructmining.rule import PUBLISHED_RULE, Rule, fit_rule
from feddqc_flwr.scoring.instructmining.size_search import search_data_size
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ROWS, make_ctx, unigram_model


def test_mtld_matches_hand_computation() -> None:
    """Tokens: a b a c d (case and punctuation dropped), TTR threshold 0.72.
    Forward:  a 1/1, b 2/2, a 2/3 = 0.667 <= 0.72 -> factor 1, reset; c 1/1, d 2/2 -> partial
              (1 - 1)/(1 - 0.72) = 0 -> 5 tokens / 1 factor = 5.
    Backward: d 1/1, c 2/2, a 3/3, b 4/4, a 4/5 = 0.8 -> no full factor; partial
              (1 - 0.8)/0.28 = 0.7143 -> 5 / 0.7143 = 7.
    MTLD = (5 + 7) / 2 = 6."""
    assert mtld("A b, a c d.") == pytest.approx(6.0)
    assert mtld("one two three") == 3.0  # no repeated word: no factor, the length
    assert mtld("") == 0.0


def test_knn_indicator_is_distance_to_sixth_distinct_neighbour() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = np.vstack([x, x[:1]])  # row 9 duplicates row 0: not a neighbour of it
    expected = []
    for i in range(10):
        others = [j for j in range(10) if j != i and not np.allclose(x[j], x[i])]
        expected.append(np.sort(np.linalg.norm(x[others] - x[i], axis=1))[5])
    np.testing.assert_allclose(knn_distance(x), expected, rtol=1e-5)


def test_published_rule_drops_the_reward_term_and_refit_recovers_coefficients() -> None:
    assert PUBLISHED_RULE.weights == {"output_len": 8.257e-5, "knn6": -0.9350}
    assert PUBLISHED_RULE.intercept == 1.0694 and PUBLISHED_RULE.dropped == ("reward",)
    rng = np.random.default_rng(0)
    x = {"output_len": rng.uniform(10, 300, 12), "mtld": rng.uniform(20, 80, 12)}
    y = 0.5 + 0.002 * x["output_len"] - 0.01 * x["mtld"]
    rule = fit_rule(x, y, source="test")
    assert rule.intercept == pytest.approx(0.5) and rule.r2 == pytest.approx(1.0)
    assert rule.weights["output_len"] == pytest.approx(0.002) and rule.weights["mtld"] == pytest.approx(-0.01)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_rule({k: v[:2] for k, v in x.items()}, y[:2], source="test")


def test_rule_json_round_trip(tmp_path) -> None:
    path = tmp_path / "rule.json"
    path.write_text(PUBLISHED_RULE.to_json())
    assert Rule.load(path) == PUBLISHED_RULE


def test_blendsearch_finds_the_minimum_of_a_known_function_of_data_size() -> None:
    """f(n) = (ln n - ln 300)^2 on 10..5000: 30 trials land within 10% of n = 300 (seen: 300)."""
    result = search_data_size(lambda n: (math.log(n) - math.log(300)) ** 2, 10, 5000, budget=30, seed=0)
    assert abs(result.best_n - 300) <= 30
    assert len(result.trials) == 30 and all(10 <= n <= 5000 for n, _ in result.trials)
    assert result.trials[0][0] == 10  # BlendSearch starts at the low-cost end
    assert result.best_loss == min(loss for _, loss in result.trials)


# Eight rows whose indicators are known by hand. Responses: words that are one token each with the
# SmolLM2 tokenizer (the first bare, the rest with a leading space), so output_len = word count;
# MTLD of a text without a repeated word is its length, and 'red blue red green gold' is the
# docstring case of test_mtld_matches_hand_computation ('a b a c d': 6).
SIZED = [("red blue red green gold", 5, 6.0), ("one two three four", 4, 4.0), ("yes", 1, 1.0),
         ("red blue", 2, 2.0), ("one two three", 3, 3.0), ("green gold", 2, 2.0), ("blue", 1, 1.0),
         ("one", 1, 1.0)]
SIZED_ROWS = [{"instruction": "List some words.", "input": "", "response": text, "history": []}
              for text, _, _ in SIZED]
# Row k is embedded at angle 10k degrees on a circle (see `circle_embed`). Distances between unit
# vectors: 2 sin(delta/2). Row 0 (or 7): the others lie 10..70 degrees away, the 6th nearest at 60:
# 2 sin 30 = 1. Row 1 (or 6): 10, 10, 20, 30, 40, 50 -> 50. Row 2 (or 5): 10, 10, 20, 20, 30, 40 ->
# 40. Rows 3, 4: 10, 10, 20, 20, 30, 30 -> 30.
KNN6 = 2 * np.sin(np.radians([30, 25, 20, 15, 15, 20, 25, 30]))


def circle_embed(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The MiniLM encoder replaced by known vectors: the text 'instruction\nresponse' of row k
    gets (cos 10k deg, sin 10k deg, 0, ...); any other text is an error. Returns the calls."""
    angle = {f"List some words.\n{text}": np.radians(10 * k) for k, (text, _, _) in enumerate(SIZED)}
    calls: list[list[str]] = []

    def fake(texts):
        calls.append(list(texts))
        out = np.zeros((len(texts), 8), dtype=np.float32)
        out[:, 0], out[:, 1] = np.cos([angle[t] for t in texts]), np.sin([angle[t] for t in texts])
        return out

    monkeypatch.setattr(indicators, "embed", fake)
    return calls


def test_knn6_of_points_on_a_circle_is_known_by_hand() -> None:
    angles = np.radians(10 * np.arange(8))
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    np.testing.assert_allclose(knn_distance(x), KNN6, rtol=1e-4)


def test_published_rule_score_on_rows_with_known_indicators(bundle, monkeypatch) -> None:
    """keep = -(1.0694 + 8.257e-5 len - 0.9350 knn6), with len and knn6 from the tables above."""
    calls = circle_embed(monkeypatch)
    keep = get_scorer("instructmining").score(SIZED_ROWS, make_ctx(bundle))
    lengths = np.array([n for _, n, _ in SIZED], dtype=float)
    np.testing.assert_allclose(keep, -(1.0694 + 8.257e-5 * lengths - 0.9350 * KNN6), rtol=1e-6)
    assert len(calls) == 1 and isinstance(get_scorer("instructmining"), InstructMiningScorer)


def test_a_fitted_rule_file_is_used_with_ppl_from_a_uniform_model(bundle, monkeypatch, tmp_path) -> None:
    """A model with every logit 0 gives each token probability 1/V: the perplexity of any response
    is V = 49,152 (the tokenizer's size). The rule read from the file:
    keep = -(0.25 + 1e-4 ppl - 0.5 mtld + 2 knn6 + 0.01 len)."""
    circle_embed(monkeypatch)
    path = tmp_path / "rule.json"
    path.write_text(Rule(intercept=0.25, weights={"ppl": 1e-4, "mtld": -0.5, "knn6": 2.0, "output_len": 0.01},
                         source="t").to_json())
    uniform = ModelBundle(model=unigram_model(bundle.tokenizer, {}), tokenizer=bundle.tokenizer,
                          device=torch.device("cpu"))
    ctx = make_ctx(uniform)
    ctx.options = {"instructmining-rule": str(path)}
    assert len(bundle.tokenizer) == 49152
    lengths = np.array([n for _, n, _ in SIZED], dtype=float)
    mtlds = np.array([m for _, _, m in SIZED])
    expected = -(0.25 + 1e-4 * 49152 - 0.5 * mtlds + 2.0 * KNN6 + 0.01 * lengths)
    np.testing.assert_allclose(InstructMiningScorer().score(SIZED_ROWS, ctx), expected, rtol=1e-5)
    both = compute_indicators(SIZED_ROWS, ctx, ["ppl", "mtld"])
    np.testing.assert_allclose(both["ppl"], 49152, rtol=1e-4)
    np.testing.assert_allclose(both["mtld"], mtlds)


def test_reward_indicator_needs_a_reward_model(bundle) -> None:
    with pytest.raises(ValueError, match="reward model"):
        compute_indicators(ROWS, make_ctx(bundle), ["reward"])
    got = compute_indicators(ROWS, make_ctx(bundle), ["reward"], reward_fn=lambda rows: np.arange(len(rows)))
    np.testing.assert_array_equal(got["reward"], np.arange(len(ROWS)))
