"""InstructMining: MTLD, k-NN indicator, rule (published + refit), BlendSearch over n, scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feddqc_flwr.llm.encoder import embed
from feddqc_flwr.scoring.instructmining import InstructMiningScorer
from feddqc_flwr.scoring.instructmining.indicators import compute_indicators, knn_distance, mtld
from feddqc_flwr.scoring.instructmining.rule import PUBLISHED_RULE, Rule, fit_rule
from feddqc_flwr.scoring.instructmining.size_search import search_data_size
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import ROWS, make_ctx


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


def test_scorer_is_minus_the_rules_prediction(bundle, tmp_path) -> None:
    ctx = make_ctx(bundle)
    keep = get_scorer("instructmining").score(ROWS, ctx)
    tok = bundle.tokenizer
    lengths = np.array([len(tok(r["response"], add_special_tokens=False).input_ids) for r in ROWS])
    texts = [(r["instruction"] if not r["input"] else f"{r['instruction']}\n{r['input']}") + "\n" + r["response"]
             for r in ROWS]
    expected = -(1.0694 + 8.257e-5 * lengths - 0.9350 * knn_distance(embed(texts)))
    np.testing.assert_allclose(keep, expected)
    assert np.isfinite(keep).all() and isinstance(get_scorer("instructmining"), InstructMiningScorer)
    path = tmp_path / "rule.json"
    path.write_text(Rule(intercept=0.0, weights={"ppl": 1.0, "mtld": -0.5}, source="t").to_json())
    ctx.options = {"instructmining-rule": str(path)}
    both = compute_indicators(ROWS, ctx, ["ppl", "mtld"])
    assert np.isfinite(both["ppl"]).all() and (both["ppl"] > 1).all()
    np.testing.assert_allclose(InstructMiningScorer().score(ROWS, ctx), -(both["ppl"] - 0.5 * both["mtld"]))


def test_reward_indicator_needs_a_reward_model(bundle) -> None:
    with pytest.raises(ValueError, match="reward model"):
        compute_indicators(ROWS, make_ctx(bundle), ["reward"])
    got = compute_indicators(ROWS, make_ctx(bundle), ["reward"], reward_fn=lambda rows: np.arange(len(rows)))
    np.testing.assert_array_equal(got["reward"], np.arange(len(ROWS)))
