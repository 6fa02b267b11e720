"""The evaluation keys of the run config are validated with messages naming the key."""

from __future__ import annotations

import pytest

from feddqc_flwr.app.config import ConfigError
from tests.helpers import make_config


def test_defaults_evaluate_loss_only() -> None:
    cfg = make_config()
    assert cfg.eval_metric_names == ("loss",) and cfg.eval_max_new_tokens == 32
    assert make_config(eval_metrics=" loss, choice ,generation").eval_metric_names == ("loss", "choice", "generation")


@pytest.mark.parametrize(("overrides", "message"), [
    ({"eval_metrics": "loss,bleu"}, "'eval-metrics' = 'bleu': allowed values are loss, choice, generation"),
    ({"eval_metrics": " , "}, "'eval-metrics' is empty"),
    ({"eval_max_new_tokens": 0}, "'eval-max-new-tokens' = 0: must be >= 1"),
    ({"eval_metrics": "loss,align"}, "'eval-metrics' = 'align': allowed values are loss, choice, generation, "
                                     "similarity, judge, alignment, exact-match"),
    ({"eval_align_candidates": 1}, "'eval-align-candidates' = 1: must be >= 2"),
    ({"eval_metrics": "judge"}, "set 'judge-url'"),
    ({"eval_metrics": "loss,judge", "judge_url": "http://localhost:8000/v1"}, "and 'judge-model'"),
])
def test_bad_evaluation_values_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(**overrides)
    assert message in str(err.value)


def test_judge_with_url_and_model_is_valid() -> None:
    cfg = make_config(eval_metrics="judge", judge_url="http://localhost:8000/v1", judge_model="qwen")
    assert cfg.eval_metric_names == ("judge",)


def test_alignment_and_exact_match_are_metric_names() -> None:
    cfg = make_config(eval_metrics="alignment, exact-match", eval_align_candidates=2)
    assert cfg.eval_metric_names == ("alignment", "exact-match") and cfg.eval_align_candidates == 2
    assert make_config().eval_align_candidates == 10
