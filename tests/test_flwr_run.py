"""End to end: `flwr run` in Flower's simulation engine with 2 SuperNodes and 2 hierarchies."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def flwr_env(tmp_path: Path):
    """An isolated FLWR_HOME and ports, so the managed local SuperLink is ours alone."""
    http_port, control_port = _free_port(), _free_port()
    env = {**os.environ,
           "FLWR_HOME": str(tmp_path / "flwr-home"),
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    yield env
    subprocess.run(["pkill", "-f", f"flower-superlink .*--port {http_port}"], check=False)


def test_flwr_run_writes_loadable_adapter_and_metrics(tmp_path: Path, tiny_model_dir: Path, flwr_env) -> None:
    out = tmp_path / "outputs"
    overrides = tmp_path / "run.toml"
    overrides.write_text("\n".join([
        f'model = "{tiny_model_dir}"', 'dataset = "demo"', "num-server-rounds = 3", "hierarchies = 2",
        "local-steps = 1", "batch-size = 2", "max-length = 96", "max-samples = 0",
        "max-response-words = 0", "eval-samples = 4", "lora-r = 4", "lora-alpha = 8",
        "retention = 0.6", "lr-max = 0.05", "fraction-evaluate = 1.0", f'output-dir = "{out}"',
    ]) + "\n")
    flwr = shutil.which("flwr", path=flwr_env["PATH"])
    proc = subprocess.run(
        [flwr, "run", str(REPO), "--stream", "--run-config", str(overrides),
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        env=flwr_env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    runs = list(out.glob("*-feddqc-fedavg-seed0"))
    assert len(runs) == 1, log[-4000:]
    run = runs[0]

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["server_round"] for x in lines] == [0, 1, 2, 3]
    assert [x["hierarchy"] for x in lines[1:]] == [1, 1, 2]
    assert [x["rescore"] for x in lines[1:]] == [True, False, True]
    assert all(x["server_eval"]["heldout-loss"] > 0 for x in lines)
    first = lines[1]
    assert first["threshold"] is not None and first["scoring"]["clients"] == 2
    assert first["train"]["pool"] >= first["train"]["kept"] >= first["train"]["stage-train"] > 0
    assert first["evaluate"]["eval-loss"] > 0 and len(first["clients"]) == 2
    # The demo rows are half corrupted: selection quality is measured per client and globally.
    assert 0.0 <= first["train"]["auroc"] <= 1.0 and 0.0 <= first["scoring"]["auroc"] <= 1.0
    assert all(0.0 <= c["kept-clean-fraction"] <= 1.0 for c in first["clients"])
    # Stage 2 re-scores only what stage 1 did not train on or drop.
    assert lines[3]["train"]["pool"] == first["train"]["kept"] - first["train"]["stage-train"]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_adapter"] == str(run / "adapters" / "final")
    for name in ("hierarchy-1", "hierarchy-2", "final"):
        assert (run / "adapters" / name / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, run / "adapters" / "final")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)  # training moved the adapter
    assert "adapter (PEFT):" in log
