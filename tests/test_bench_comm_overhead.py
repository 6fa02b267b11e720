"""Communication and overhead benchmarks compute what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feddqc_flwr.bench.communication import adapter_bytes, transport_accuracy
from feddqc_flwr.bench.overhead import round_overhead
from feddqc_flwr.llm.model import ModelSpec


def test_adapter_bytes_match_lora_shapes(tiny_model_dir: Path) -> None:
    out = adapter_bytes(ModelSpec(name=str(tiny_model_dir), lora_r=4, lora_alpha=8), clients_per_round=2)
    # 2 layers x (q: A 4x32 + B 32x4, v: A 4x32 + B 16x4) in the tiny Llama (hidden 32, kv 2 x 8)
    assert out["parameters"] == 2 * (4 * 32 + 32 * 4 + 4 * 32 + 16 * 4)
    assert out["raw_fp32_bytes"] == 4 * out["parameters"]
    assert out["payload_fp32_bytes"] >= out["raw_fp32_bytes"] > out["payload_fp16_bytes"]
    assert out["round_fp32_bytes"] == 4 * out["payload_fp32_bytes"]


def test_overhead_is_wall_minus_measured_compute_and_setup(tmp_path: Path) -> None:
    lines = [
        {"server_round": 0, "time": 100.0, "server_eval": {"seconds": 1.0}},
        {"server_round": 1, "time": 130.0, "server_eval": {"seconds": 2.0},
         "scoring": {"client-score-seconds": 10.0, "client-setup-seconds": 3.0},
         "clients": [{"train-seconds": 5.0, "score-seconds": 0.0, "setup-seconds": 0.5},
                     {"train-seconds": 6.0, "score-seconds": 1.0, "setup-seconds": 0.5}]},
        {"server_round": 2, "time": 150.0, "server_eval": {"seconds": 2.0}, "scoring": {},
         "clients": [{"train-seconds": 8.0, "score-seconds": 0.0}, {"train-seconds": 8.0, "score-seconds": 0.0}]},
    ]  # round 2 as written before clients reported set-up
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = round_overhead(tmp_path / "metrics.jsonl")
    assert [r["setup_seconds"] for r in out["rounds"]] == pytest.approx([4.0, 0.0])
    assert [r["overhead_seconds"] for r in out["rounds"]] == pytest.approx([30 - 24 - 4, 20 - 18])
    assert out["overhead_share"] == pytest.approx(4 / 50) and out["setup_share"] == pytest.approx(4 / 50)


def test_parallel_clients_last_as_long_as_the_slowest(tmp_path: Path) -> None:
    lines = [
        {"server_round": 0, "time": 100.0},
        {"server_round": 1, "time": 130.0, "server_eval": {"seconds": 2.0},
         "scoring": {"client-score-seconds": 10.0, "client-score-seconds-max": 6.0,
                     "client-setup-seconds": 3.0, "client-setup-seconds-max": 2.0},
         "clients": [{"train-seconds": 5.0, "score-seconds": 0.0, "setup-seconds": 0.5},
                     {"train-seconds": 6.0, "score-seconds": 1.0, "setup-seconds": 1.5}]},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = round_overhead(tmp_path / "metrics.jsonl", clients="parallel")
    assert out["rounds"][0]["compute_seconds"] == pytest.approx(7.0 + 6.0 + 2.0)
    assert out["rounds"][0]["setup_seconds"] == pytest.approx(1.5 + 2.0)
    assert out["overhead_seconds"] == pytest.approx(30 - 15 - 3.5)
    with pytest.raises(ValueError, match="allowed values are sequential, parallel"):
        round_overhead(tmp_path / "metrics.jsonl", clients="threads")


def test_train_round_trip_splits_into_client_handlers_and_messaging(tmp_path: Path) -> None:
    """Sent at 110, replies aggregated at 125: a 15 s round trip; the slowest handler took 9 s, so 6 s
    went to messaging (parallel clients); sequential clients' handlers add up (9 + 4 = 13 -> 2 s)."""
    lines = [
        {"server_round": 0, "time": 100.0},
        {"server_round": 1, "time": 130.0, "sent_at": 110.0, "replies_at": 125.0, "server_eval": {"seconds": 2.0},
         "clients": [{"train-seconds": 8.0, "handler-seconds": 9.0}, {"train-seconds": 3.0, "handler-seconds": 4.0}]},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    parallel = round_overhead(tmp_path / "metrics.jsonl", clients="parallel")
    assert parallel["rounds"][0]["train_round_trip_seconds"] == pytest.approx(15.0)
    assert parallel["rounds"][0]["client_handler_seconds"] == pytest.approx(9.0)
    assert parallel["messaging_seconds"] == pytest.approx(6.0) and parallel["messaging_share"] == pytest.approx(0.2)
    assert round_overhead(tmp_path / "metrics.jsonl")["messaging_seconds"] == pytest.approx(2.0)
    lines[1].pop("sent_at")  # runs written before the round trip was logged: no such columns
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert "messaging_seconds" not in round_overhead(tmp_path / "metrics.jsonl", clients="parallel")


def test_transport_accuracy_compares_test_loss_per_round(tmp_path: Path) -> None:
    for name, losses in (("fp32", [3.0, 2.5, 2.25]), ("fp16", [3.0, 2.5, 2.3])):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps({"server_round": i, "server_eval": {"test-loss": x}})
                                                   + "\n" for i, x in enumerate(losses)))
        (run / "summary.json").write_text(json.dumps({"final_server_eval": {"test-loss": losses[-1]}}))
    out = transport_accuracy(tmp_path / "fp32", tmp_path / "fp16")
    assert out["test_loss_per_round"]["float16"] == [3.0, 2.5, 2.3]
    assert out["max_abs_round_difference"] == pytest.approx(0.05)
    assert out["final_difference"] == pytest.approx(0.05)
