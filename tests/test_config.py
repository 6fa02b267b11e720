"""The run config is validated at start with messages that name the key and allowed values."""

from __future__ import annotations

import pytest

from feddqc_flwr.app.config import ConfigError, parse_run_config
from tests.helpers import default_run_config, make_config


def test_embedded_default_is_valid_and_small() -> None:
    cfg = make_config()
    assert cfg.method == "feddqc" and cfg.hierarchies == 3 and cfg.strategy == "fedavg"
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.data_spec.source == cfg.dataset


@pytest.mark.parametrize(("key", "value", "message"), [
    ("strategy", "scaffold", "'strategy' = 'scaffold': allowed values are fedavg, fedavgm, fedprox"),
    ("aggregation-weight", "rows", "'aggregation-weight' = 'rows': allowed values are dataset, stage"),
    ("quantization", "2bit", "allowed values are none, 8bit, 4bit"),
    ("transport-dtype", "bfloat16", "'transport-dtype' = 'bfloat16': allowed values are float32, float16"),
    ("threshold-mode", "top-k", "allowed values are lambda, retention"),
    ("score-dtype", "int8", "'score-dtype' = 'int8': allowed values are auto, float32, bfloat16, float16"),
    ("retention", 0.0, "'retention' = 0.0: must be in (0.0, 1.0]"),
    ("hierarchies", 9, "'hierarchies' = 9: must be between 1 and num-server-rounds (6)"),
    ("local-steps", "ten", "'local-steps' = 'ten': must be of type int"),
])
def test_bad_values_name_key_and_allowed_values(key: str, value: object, message: str) -> None:
    raw = default_run_config()
    raw[key] = value
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    assert message in str(err.value)


def test_unknown_and_missing_keys_are_errors() -> None:
    raw = default_run_config()
    raw["num-rounds"] = 3
    with pytest.raises(ConfigError, match="unknown run config key.*num-rounds"):
        parse_run_config(raw)
    raw = default_run_config()
    del raw["seed"]
    with pytest.raises(ConfigError, match="missing key.*seed"):
        parse_run_config(raw)


def test_integer_literals_are_accepted_for_float_keys() -> None:
    assert make_config(lr_max=1, lr_min=0).lr_max == 1.0


def test_config_scorers_are_the_registered_ones() -> None:
    from feddqc_flwr.app.config import SCORERS
    from feddqc_flwr.scoring.registry import SCORERS as REGISTERED

    assert set(SCORERS) == set(REGISTERED)


def test_absolute_lambda_is_only_for_ira() -> None:
    with pytest.raises(ConfigError, match="'scorer' = 'ppl' use threshold-mode = 'retention'"):
        make_config(scorer="ppl", threshold_mode="lambda")


def test_config_choices_match_the_modules_that_implement_them() -> None:
    from feddqc_flwr.app import config
    from feddqc_flwr.evaluation import suite
    from feddqc_flwr.llm import precision
    from feddqc_flwr.scoring.registry import SCORERS

    assert config.SCORE_DTYPES == precision.SCORE_DTYPES
    assert config.EVAL_METRICS == suite.EVAL_METRICS
    assert set(config.SCORERS) == set(SCORERS)


def test_eval_every_keeps_the_first_and_last_round() -> None:
    """7 rounds, every 3rd: the start (0), 3, 6 and the last (7); never 1, 2, 4, 5."""
    cfg = make_config(num_server_rounds=7, eval_every=3)
    assert [r for r in range(8) if cfg.evaluates_after(r)] == [0, 3, 6, 7]
    assert all(make_config(num_server_rounds=7).evaluates_after(r) for r in range(8))  # default 1: every round
    with pytest.raises(ValueError, match="'eval-every' = 0: must be >= 1"):
        make_config(eval_every=0)
