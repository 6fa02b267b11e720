"""The console's lines from hand-made records, against lines written out by hand."""

from __future__ import annotations

import logging

import pytest

from feddqc_flwr.app.config import ConfigError
from feddqc_flwr.app.console import final_table, header, round_line, scoring_line
from feddqc_flwr.app.quiet import FlowerStrategyChatter
from tests.helpers import make_config
from tests.run_records import records


def test_round_lines_say_where_the_run_is_and_whether_it_learns() -> None:
    r0, r1, r2 = records()
    assert round_line(r0, 2, 2, 10.0) == "round 0/2 (before training) | valid 3.5000 test 3.2500 | 10s"
    assert round_line(r1, 2, 2, 100.0) == (
        "round 1/2 h1/2 | lr 3.00e-04 | λ -4.0000 | train loss 2.5000 | valid 3.4000 test 3.2000 | "
        "corrupted in trained 25% of 4 | 100s")
    # a null train loss (NaN in the run) shows as '-'; 1 of 3 trained rows corrupted
    assert round_line(r2, 2, 2, 100.4) == (
        "round 2/2 h2/2 | lr 1.50e-04 | λ -4.0000 | train loss - | valid 3.3000 test 3.1000 | "
        "corrupted in trained 33% of 3 | 100s")


def test_round_line_without_flags_or_evaluation() -> None:
    r1 = {**records()[1], "train": {"train-loss": 2.5, "pool": 10.0, "pool-bad": 0.0, "stage-train": 4.0,
                                    "stage-bad": 0.0}, "server_eval": {}}
    assert round_line(r1, 2, 2, 5.0) == (
        "round 1/2 h1/2 | lr 3.00e-04 | λ -4.0000 | train loss 2.5000 | valid - test - | "
        "corrupted in trained - | 5s")


def test_scoring_line_counts_kept_and_dropped_rows() -> None:
    # 10 rows on the histogram, 6 in the bin at or above lambda; 5 corrupted
    assert scoring_line(records()[1], 2) == (
        "hierarchy 1/2 scoring: 10 rows from 2 clients | λ -4.0000 keeps 6 (60%), drops 4 | "
        "corrupted in pool 50% | global AUROC 0.875 | 30s")
    failed = {**records()[1], "histogram": {}, "threshold": None,
              "scoring": {"clients": 2.0, "scored": 10.0}}
    assert scoring_line(failed, 2) == "hierarchy 1/2 scoring: 10 rows from 2 clients | no histogram: λ - unchanged"
    # with λ known the clients score inside train: no separate scoring seconds
    in_train = {**records()[1], "scoring": {k: v for k, v in records()[1]["scoring"].items() if k != "seconds"}}
    assert scoring_line(in_train, 2).endswith("global AUROC 0.875 | scored inside the round's train messages")


def test_final_table_has_a_row_per_round_with_its_seconds() -> None:
    assert final_table(records()).splitlines() == [
        "round | h |       lr |       λ | train loss | valid loss | test loss | corrupted in trained |    s",
        "    0 | - |        - |       - |          - |     3.5000 |    3.2500 |                    - |   10",
        "    1 | 1 | 3.00e-04 | -4.0000 |     2.5000 |     3.4000 |    3.2000 |             25% of 4 |  100",
        "    2 | 2 | 1.50e-04 | -4.0000 |          - |     3.3000 |    3.1000 |             33% of 3 |  100",
    ]


def test_header_names_model_data_clients_method_scorer_and_lambda_mode() -> None:
    cfg = make_config(model="some/model", dataset="demo", corrupt_type="swap", corrupt_ratio=0.25,
                      scorer="ira", threshold_mode="lambda", ira_lambda=0.5, hierarchies=2, num_server_rounds=4)
    assert header(cfg, "run-x", 120, 8, 8).splitlines() == [
        "FedDQC run run-x",
        f"  model   some/model + LoRA r={cfg.lora_r} | 4 rounds x {cfg.local_steps} local steps, "
        f"batch {cfg.batch_size}, lr {cfg.lr_max:g} -> {cfg.lr_min:g}",
        "  data    demo: 120 pool rows split over the clients, 25% of client rows corrupted (swap); "
        "server evaluates 8 valid + 8 test rows",
        f"  clients at least {cfg.min_train_nodes}, fraction-train 1, strategy fedavg",
        "  method feddqc, K=2 hierarchies (descending), scorer ira, λ fixed at 0.5",
    ]
    baseline = make_config(method="fedavg", corrupt_type="none")
    lines = header(baseline, "run-y", 10, 1, 1).splitlines()
    assert "no synthetic corruption" in lines[2]
    assert lines[-1] == "  method fedavg, no λ (method fedavg trains on every row)"


def test_console_and_tracking_keys_are_validated() -> None:
    assert make_config().console == "progress" and make_config().trackers == ("tensorboard",)
    assert make_config(tracking="none").trackers == ()
    assert make_config(tracking="tensorboard, wandb").trackers == ("tensorboard", "wandb")
    with pytest.raises(ConfigError, match="'console' = 'loud': allowed values are progress, verbose"):
        make_config(console="loud")
    with pytest.raises(ConfigError, match="'tracking' = 'comet': allowed values are tensorboard, wandb, mlflow"):
        make_config(tracking="tensorboard,comet")
    with pytest.raises(ConfigError, match="'tracking' = ''"):
        make_config(tracking="")


def test_flower_strategy_chatter_is_dropped_but_its_warnings_are_kept() -> None:
    def record(level: int, path: str) -> logging.LogRecord:
        return logging.LogRecord("flwr", level, path, 1, "msg", None, None)

    chatter = FlowerStrategyChatter()
    strategy_file = "/venv/site-packages/flwr/serverapp/strategy/strategy.py"
    assert not chatter.filter(record(logging.INFO, strategy_file))
    assert chatter.filter(record(logging.WARNING, strategy_file))
    assert chatter.filter(record(logging.INFO, "/venv/site-packages/flwr/simulation/app.py"))
