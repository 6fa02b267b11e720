"""The paper preset (feddqc_flwr/presets/paper.toml) end to end, as a user runs it: `flwr run` with
the preset as the run config, in Flower's simulation, on a CPU.

Only the model (a tiny Llama), the row counts and the rounds are shrunk; every other key is the
preset's: 5 clients with 2 sampled per round, K=3 hierarchies, 10 steps of 4 x 4 accumulated rows,
gradient checkpointing, LoRA r=64 alpha=128, bf16, IRA with re-scoring, swap corruption, and the
base model in 8-bit through bitsandbytes, whose CPU backend (>= 0.48) trains LoRA on a CPU. The
server, without CUDA, evaluates unquantized (`app.model_spec`).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import tomllib
from pathlib import Path

from safetensors.numpy import load_file

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "feddqc_flwr" / "presets" / "paper.toml"
HIDDEN = 32  # tiny_model_dir's hidden size
SUPERNODES = 5  # the README's command for the preset


def test_paper_preset_trains_end_to_end_in_8bit_on_a_cpu(tmp_path: Path, tiny_model_dir: Path, flwr_env) -> None:
    preset = tomllib.loads(PRESET.read_text())
    shrunk = {"model": str(tiny_model_dir), "num-server-rounds": 3, "max-samples": 60, "eval-samples": 4}
    assert set(shrunk) <= set(preset)  # each replaces a preset value, nothing else changes
    out = tmp_path / "outputs"
    lines = [line for line in PRESET.read_text().splitlines() if line.split("=", 1)[0].strip() not in shrunk]
    lines += [f"{key} = {json.dumps(value)}" for key, value in {**shrunk, "output-dir": str(out)}.items()]
    run_config = tmp_path / "paper-shrunk.toml"
    run_config.write_text("\n".join(lines) + "\n")
    cache = tmp_path / "cache"  # where the clients' 8-bit loads save the quantized copy
    proc = subprocess.run(
        [shutil.which("flwr", path=flwr_env["PATH"]), "run", str(REPO), "--stream", "--run-config", str(run_config),
         "--federation-config", f"num-supernodes={SUPERNODES} client-resources-num-cpus=1"],
        env={**flwr_env, "FEDDQC_CACHE": str(cache)}, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "FedDQC run finished." in log, log[-4000:]  # flwr exits 0 for a failed run
    (run,) = out.glob("*-feddqc-fedavg-seed0")

    config = json.loads((run / "config.json").read_text())["run_config"]
    assert {k: config[k] for k in preset} == {**preset, **shrunk}  # the preset as given, shrunk keys aside
    assert preset["quantization"] == "8bit" and preset["gradient-checkpointing"] is True

    # The clients quantized the base model with bitsandbytes (the copy an 8-bit load saves); the
    # server, without CUDA, said it evaluates unquantized.
    (copy,) = (cache / "quantized").glob(f"{tiny_model_dir.name}-8bit-*")
    assert json.loads((copy / "config.json").read_text())["quantization_config"]["load_in_8bit"] is True
    assert "quantization 8bit on a server without CUDA" in log

    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = records[1:]
    assert [r["server_round"] for r in records] == [0, 1, 2, 3]
    assert [r["hierarchy"] for r in rounds] == [1, 2, 3]  # K=3 over 3 rounds
    assert all(r["rescore"] for r in rounds)  # each round starts a hierarchy: clients re-score
    assert rounds[0]["scoring"]["clients"] == SUPERNODES  # the first lambda comes from every client's scores
    # fraction-train 0.4 of 5 clients: 2 trained each round, and every reply was aggregated
    for r in rounds:
        assert r["sent"] == 2 and len(r["clients"]) == 2 and r["aggregated"] and r["failures"] == 0
        assert len({c["node"] for c in r["clients"]}) == 2
    # cosine by round from lr-max to lr-min (the preset's 1e-4 -> 1e-6), R = 3
    lr_max, lr_min, total = preset["lr-max"], preset["lr-min"], shrunk["num-server-rounds"]
    for r in rounds:
        expected = lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * (r["server_round"] - 1) / total)) / 2
        assert math.isclose(r["lr"], expected, rel_tol=1e-9), (r["server_round"], r["lr"], expected)
    # every step accumulated grad-accum micro-batches of batch-size rows, however few rows the stage had
    micro_batches = preset["local-steps"] * preset["grad-accum"]  # 10 x 4
    for client in (c for r in rounds for c in r["clients"]):
        assert client["train-micro-batches"] == micro_batches
        assert client["train-rows"] == micro_batches * preset["batch-size"]  # 160 rows a round
        assert math.isfinite(client["train-loss"])
    assert min(c["stage-train"] for r in rounds for c in r["clients"]) < preset["batch-size"] * preset["grad-accum"]

    summary = json.loads((run / "summary.json").read_text())
    assert [h["hierarchy"] for h in summary["hierarchies"]] == [1, 2, 3]

    # The saved adapter has the preset's LoRA: rank 64 on q_proj and v_proj, and training moved it.
    adapter = run / "adapters" / "final"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["lora_dropout"]) == (64, 128, 0.05)
    assert set(saved["target_modules"]) == {"q_proj", "v_proj"}
    weights = load_file(adapter / "adapter_model.safetensors")
    lora_a = [v for k, v in weights.items() if "lora_A" in k]
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert len(lora_a) == len(lora_b) == 2 * 2  # 2 layers x (q, v)
    assert all(a.shape == (64, HIDDEN) for a in lora_a) and all(b.shape[1] == 64 for b in lora_b)
    assert any(b.any() for b in lora_b)  # B starts at zero

    # The console stays quiet with 8-bit and gradient checkpointing: no per-call library notices.
    for notice in ("MatMul8bitLt", "use_reentrant", "gradient_checkpointing_enable", "Traceback"):
        assert notice not in log, notice
