"""End to end: `flwr run` in Flower's simulation engine with 2 SuperNodes and 2 hierarchies."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from feddqc_flwr.cli.main import main
from feddqc_flwr.report.build import write_report
from feddqc_flwr.report.plots import RUN_PLOTS
from feddqc_flwr.report.run_data import load_run

REPO = Path(__file__).resolve().parents[1]


def _flwr_run(tmp_path: Path, flwr_env: dict, tiny_model_dir: Path, *extra: str) -> tuple[Path, str]:
    """One `flwr run` of the app on the demo rows with the tiny model; returns (run dir, log)."""
    out = tmp_path / "outputs"
    overrides = tmp_path / "run.toml"
    overrides.write_text("\n".join([
        f'model = "{tiny_model_dir}"', 'dataset = "demo"', "num-server-rounds = 3", "hierarchies = 2",
        "local-steps = 1", "batch-size = 2", "max-length = 96", "max-samples = 0",
        "max-response-words = 0", "eval-samples = 4", "lora-r = 4", "lora-alpha = 8",
        "retention = 0.6", "lr-max = 0.05", "fraction-evaluate = 1.0", f'output-dir = "{out}"', *extra,
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
    return runs[0], log


def test_flwr_run_writes_loadable_adapter_and_metrics(tmp_path: Path, tiny_model_dir: Path, flwr_env) -> None:
    run, log = _flwr_run(tmp_path, flwr_env, tiny_model_dir, "data-map = true")

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["server_round"] for x in lines] == [0, 1, 2, 3]
    assert [x["hierarchy"] for x in lines[1:]] == [1, 1, 2]
    assert [x["rescore"] for x in lines[1:]] == [True, False, True]
    assert all(x["server_eval"]["test-loss"] > 0 and x["server_eval"]["valid-loss"] > 0 for x in lines)
    first = lines[1]
    assert first["threshold"] is not None and first["scoring"]["clients"] == 2
    assert first["train"]["pool"] >= first["train"]["kept"] >= first["train"]["stage-train"] > 0
    assert first["evaluate"]["eval-loss"] > 0 and len(first["clients"]) == 2
    # The demo rows are half corrupted: selection quality is measured per client and globally.
    assert 0.0 <= first["train"]["auroc"] <= 1.0 and 0.0 <= first["scoring"]["auroc"] <= 1.0
    assert all(0.0 <= c["kept-clean-fraction"] <= 1.0 for c in first["clients"])
    # Algorithm 1: stage 2 re-scores everything stage 1 did not train on, rows under lambda included.
    assert lines[3]["train"]["pool"] == first["train"]["pool"] - first["train"]["stage-train"]
    assert lines[3]["train"]["pool"] > first["train"]["kept"] - first["train"]["stage-train"]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_adapter"] == str(run / "adapters" / "final")
    # The verdict per hierarchy, from the global histogram and the clients' stage parts.
    hierarchies = summary["hierarchies"]
    assert [h["hierarchy"] for h in hierarchies] == [1, 2] and [h["rounds"] for h in hierarchies] == [[1, 2], [3]]
    assert hierarchies[0]["scored"] == sum(first["histogram"]["counts"])
    assert hierarchies[0]["scored_corrupted_share"] == sum(first["histogram"]["bad"]) / hierarchies[0]["scored"]
    assert hierarchies[0]["trained"] == sum(c["stage-train"] for c in first["clients"])
    assert hierarchies[0]["trained_corrupted_share"] == pytest.approx(
        sum(c["stage-bad"] for c in first["clients"]) / hierarchies[0]["trained"])
    assert hierarchies[1]["scored"] == lines[3]["train"]["pool"]
    assert "corrupted in trained" in log
    for name in ("hierarchy-1", "hierarchy-2", "final"):
        assert (run / "adapters" / name / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, run / "adapters" / "final")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) > 0 for p in lora_b)  # training moved the adapter
    assert "adapter (PEFT):" in log

    # Report: every figure has data in this run (histograms, updates, node-local data map).
    assert len(first["histogram"]["counts"]) == len(first["histogram"]["edges"]) - 1
    assert sum(first["histogram"]["counts"]) == first["scoring"]["scored"]
    similarity = first["update_similarity"]
    assert len(similarity) == 2 and similarity[0][0] == 1.0 and -1.0 <= similarity[0][1] <= 1.0
    report = write_report(run, run, "md")
    text = report.read_text()
    for name in RUN_PLOTS:
        assert (run / f"{name}.png").stat().st_size > 5000, name
        assert f"({name}.png)" in text, name
    points = load_run(run).data_map
    assert {p["rounds"] for p in points} == {3}  # one probability per round before training
    assert len(points) == sum(c["pool"] for c in first["clients"])
    assert all(0.0 < p["confidence"] < 1.0 for p in points)

    # `feddqc eval` rebuilds the server's rows and reproduces the last round's validation loss.
    main(["eval", str(run), "--split", "valid"])
    evaluated = json.loads((run / "eval-valid.json").read_text())
    assert evaluated["metrics"]["valid-loss"] == pytest.approx(lines[-1]["server_eval"]["valid-loss"], rel=1e-4)


def test_flwr_run_with_the_ds2_selector_reports_its_curation(tmp_path: Path, tiny_model_dir: Path,
                                                              flwr_env) -> None:
    """DS2 plugs into the federated app: clients rate, curate and select; the report shows it."""
    run, _ = _flwr_run(tmp_path, flwr_env, tiny_model_dir, 'scorer = "ds2"')
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    first = lines[1]
    assert first["scoring"]["clients"] == 2 and 0.0 <= first["scoring"]["auroc"] <= 1.0
    local = run.parent / "client-local"
    reports = sorted(local.rglob("ds2-partition-*-stage-1.json"))
    assert len(reports) == 2
    counts = json.loads(reports[0].read_text())
    assert counts["rated"] == sum(counts["rated-histogram"]) > 0
    assert "## DS2 score curation" in write_report(run, run, "md").read_text()
