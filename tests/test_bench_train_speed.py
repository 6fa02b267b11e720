"""`feddqc bench train-speed`: the precisions take turns round by round, in an order that flips every
round, and each round's speed-up and their spread are reported. The order is observed on the models
themselves (a forward hook per precision), not read back from the bench's own record."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from feddqc_flwr.bench.train_speed import bench_train_speed
from feddqc_flwr.cli.main import main
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle

ROWS = [{"instruction": f"Say the number {i}.", "input": "", "response": f"The number is {i}."} for i in range(4)]
ROUNDS = 4


def test_precisions_take_turns_in_flipped_order_and_each_round_gives_a_speedup(tiny_model_dir: Path) -> None:
    bundles = {dtype: load_model_bundle(ModelSpec(name=str(tiny_model_dir), dtype=dtype, lora_r=4, lora_alpha=8))
               for dtype in ("float32", "bfloat16")}
    ran: list[str] = []  # the precision of every training forward pass, in the order they happened
    hooks = [bundle.model.get_input_embeddings().register_forward_pre_hook(
        lambda module, _args, n=name: ran.append(n) if module.training else None) for name, bundle in bundles.items()]
    try:
        result = bench_train_speed(bundles, ROWS, rounds=ROUNDS, steps_per_round=2, batch_size=2, max_length=64,
                                   learning_rate=1e-3)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(ran) == ROUNDS * 2 * 2  # each turn: 2 steps of one batch each
    turns = ran[::2]
    assert ran[1::2] == turns  # a turn's two passes are of one precision
    expected = ["float32", "bfloat16", "bfloat16", "float32", "float32", "bfloat16", "bfloat16", "float32"]
    assert turns == expected  # never all rounds of one precision, then all of the other
    assert result["run_order"] == [expected[i:i + 2] for i in range(0, len(expected), 2)]

    fp32, bf16 = result["precisions"]["float32"], result["precisions"]["bfloat16"]
    assert len(fp32["round_step_seconds"]) == len(bf16["round_step_seconds"]) == ROUNDS
    ratios = [a / b for a, b in zip(fp32["round_step_seconds"], bf16["round_step_seconds"], strict=True)]
    assert bf16["round_speedups_vs_float32"] == pytest.approx(ratios)
    assert bf16["round_speedup_spread_vs_float32"] == pytest.approx(
        {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)})
    assert fp32["round_speedups_vs_float32"] == [1.0] * ROUNDS
    assert bf16["speedup_vs_float32"] == pytest.approx(
        statistics.median(fp32["round_step_seconds"]) / statistics.median(bf16["round_step_seconds"]))
    assert len(bf16["step_losses"]) == ROUNDS * 2


def test_the_command_writes_and_prints_the_turns_and_the_spread(tiny_model_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train-speed.json"
    main(["bench", "train-speed", "--model", str(tiny_model_dir), "--dataset", "demo", "--rows", "4",
          "--rounds", "3", "--steps-per-round", "1", "--batch-size", "2", "--max-length", "64", "--lora-r", "4",
          "--out", str(out)])
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["run_order"] == [["float32", "bfloat16"], ["bfloat16", "float32"], ["float32", "bfloat16"]]
    spread = result["precisions"]["bfloat16"]["round_speedup_spread_vs_float32"]
    ratios = result["precisions"]["bfloat16"]["round_speedups_vs_float32"]
    assert len(ratios) == 3 and spread == pytest.approx(
        {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)})
    assert "float32, bfloat16 | bfloat16, float32 | float32, bfloat16" in " ".join(printed.split())
    for value in spread.values():
        assert f"{value:.2f}x" in printed
    assert out.with_suffix(".png").stat().st_size > 0
