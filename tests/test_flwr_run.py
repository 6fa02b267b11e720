"""End to end: `flwr run` in Flower's simulation engine with 2 SuperNodes and 2 hierarchies."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from feddqc_flwr.cli.main import main
from feddqc_flwr.data.builtin import DEMO_PATH
from feddqc_flwr.report.build import write_report
from feddqc_flwr.report.plots import RUN_PLOTS
from feddqc_flwr.report.run_data import load_run

REPO = Path(__file__).resolve().parents[1]


def _flwr_run(tmp_path: Path, flwr_env: dict, tiny_model_dir: Path, *extra: str) -> tuple[Path, str]:
    """One `flwr run` of the app on the demo rows with the tiny model; returns (run dir, log).

    `extra` lines ("key = value") add keys or replace the defaults below.
    """
    out = tmp_path / "outputs"
    overrides = tmp_path / "run.toml"
    defaults = [
        f'model = "{tiny_model_dir}"', 'dataset = "demo"', "num-server-rounds = 3", "hierarchies = 2",
        "local-steps = 1", "batch-size = 2", "max-length = 96", "max-samples = 0",
        "max-response-words = 0", "eval-samples = 4", "lora-r = 4", "lora-alpha = 8",
        "retention = 0.6", "lr-max = 0.05", "fraction-evaluate = 1.0", f'output-dir = "{out}"',
    ]
    replaced = {line.split("=", 1)[0].strip() for line in extra}
    overrides.write_text("\n".join([*(d for d in defaults if d.split("=", 1)[0].strip() not in replaced),
                                    *extra]) + "\n")
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


def _demo_response_tokens(tokenizer) -> list[int]:
    """Every token of a clean demo response, tokenized as training and scoring do, and EOS."""
    rows = [json.loads(line) for line in DEMO_PATH.read_text().splitlines() if line.strip()]
    ids = {t for row in rows for t in tokenizer(row["response"], add_special_tokens=False).input_ids}
    return sorted(ids | {tokenizer.eos_token_id})


@pytest.fixture(scope="module")
def known_vocab_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama rewired so that what it scores and learns is known by construction.

    Embeddings carry 10 in dimension 0 and 0 in dimension 1; v_proj and down_proj are zero,
    so the residual stream is the embedding and the normed final state is ~sqrt(32)·e0 for every
    input. The LM head reads dimension 0 with weight 4 for the K tokens of clean demo responses
    (and EOS), 0 for all others: each of those tokens has NLL log K (to 1e-6), any other token
    ~22 nats more, so a response with noisy corruption's junk scores far below every clean one.
    Dimension 1 feeds only EOS and "." (weight 3), and o_proj is the identity: the v_proj adapter
    can raise them (both end most demo responses), which lowers the clean loss: learnable.
    """
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.model.embed_tokens.weight[:, 1] = 0.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[_demo_response_tokens(tokenizer), 0] = 4.0
        model.lm_head.weight[[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(".")], 1] = 3.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.copy_(torch.eye(32))
            layer.self_attn.v_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    out = tmp_path_factory.mktemp("known-vocab-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_flwr_run_writes_loadable_adapter_and_metrics(tmp_path: Path, known_vocab_model_dir: Path,
                                                      flwr_env) -> None:
    model_dir = known_vocab_model_dir  # loss scorer + noisy rows: selection is right by construction
    run, log = _flwr_run(tmp_path, flwr_env, model_dir, "data-map = true", 'corrupt-type = "noisy"',
                         'dtype = "float32"', 'scorer = "loss"')  # the bounds below are worked out in float32

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["server_round"] for x in lines] == [0, 1, 2, 3]
    assert [x["hierarchy"] for x in lines[1:]] == [1, 1, 2]
    assert [x["rescore"] for x in lines[1:]] == [True, False, True]
    # The untrained model gives every clean response token NLL log K; training lowers it (learnable).
    known = len(_demo_response_tokens(AutoTokenizer.from_pretrained(model_dir)))
    assert lines[0]["server_eval"]["test-loss"] == pytest.approx(math.log(known), abs=1e-3)
    assert lines[0]["server_eval"]["valid-loss"] == pytest.approx(math.log(known), abs=1e-3)
    assert all(math.isfinite(x["server_eval"]["test-loss"]) for x in lines)
    assert lines[-1]["server_eval"]["test-loss"] < lines[0]["server_eval"]["test-loss"] - 0.1
    first = lines[1]
    assert first["threshold"] is not None and first["scoring"]["clients"] == 2
    assert first["train"]["pool"] >= first["train"]["kept"] >= first["train"]["stage-train"] > 0
    assert len(first["clients"]) == 2
    # clients' clean validation rows: below log K once the global adapter has trained
    assert all(x["evaluate"]["eval-loss"] < math.log(known) for x in lines[1:])
    assert lines[-1]["evaluate"]["eval-loss"] < math.log(known) - 0.1
    # Half the demo rows carry junk tokens the model gives ~22 nats more: the loss scorer must find them.
    assert first["train"]["auroc"] > 0.9 and first["scoring"]["auroc"] > 0.9
    assert all(c["kept-clean-fraction"] > 0.5 for c in first["clients"])
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
    # retention 0.6 keeps every clean row (half the pool) and a few corrupted ones; stage 1 trains
    # the top half of what each client kept: clean rows only
    assert hierarchies[0]["scored_corrupted_share"] > 0.3 and hierarchies[0]["trained_corrupted_share"] == 0.0
    assert hierarchies[1]["scored"] == lines[3]["train"]["pool"]
    # The verdict in summary.json and as the run's last lines, from the same records.
    verdict = summary["verdict"]
    first_scored = sum(first["histogram"]["counts"])
    first_kept = round(first["scoring"]["share-above-lambda"] * first_scored)
    assert verdict["hierarchies"][0]["scored"] == first_scored and verdict["hierarchies"][0]["kept"] == first_kept
    assert verdict["hierarchies"][0]["dropped"] == first_scored - first_kept
    assert verdict["hierarchies"][0]["auroc"] == first["scoring"]["auroc"] > 0.9
    assert verdict["hierarchies"][0]["trained_corrupted_share"] == 0.0 and verdict["quality_flags"] is True
    assert verdict["losses"]["test-loss"] == pytest.approx({
        "first": lines[0]["server_eval"]["test-loss"], "last": lines[-1]["server_eval"]["test-loss"],
        "change": lines[-1]["server_eval"]["test-loss"] - lines[0]["server_eval"]["test-loss"]})
    seconds = verdict["seconds"]
    assert seconds["training"] == pytest.approx(sum(max(c["train-seconds"] for c in x["clients"]) for x in lines[1:]))
    assert seconds["evaluation"] == pytest.approx(sum(x["server_eval"]["seconds"] for x in lines))
    assert seconds["total"] == pytest.approx(seconds["scoring"] + seconds["training"] + seconds["evaluation"]
                                             + seconds["flower"])
    assert f"hierarchy 1: scored {first_scored}, kept {first_kept}, dropped {first_scored - first_kept}" in log
    assert log.index("FedDQC run finished.") < log.index("Verdict: did quality control do something?")  # last
    # The progress console: one line per round and per scoring step; Flower's metric dicts and known notices gone.
    assert "round 1/3 h1/2 | lr " in log and "hierarchy 2/2 scoring: " in log
    assert "Aggregated MetricRecord" not in log and "is_gradient_checkpointing" not in log
    assert "Loading weights" not in log
    # TensorBoard event file next to metrics.jsonl
    assert list(run.glob("events.out.tfevents.*"))
    for name in ("hierarchy-1", "hierarchy-2", "final"):
        assert (run / "adapters" / name / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(model_dir)
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

    # Each round's per-row values: the test loss is their mean, the ids those of the test rows.
    row_lines = [json.loads(x) for x in (run / "row-values.jsonl").read_text().splitlines()]
    assert [x["server_round"] for x in row_lines] == [0, 1, 2, 3]
    for metrics_line, row_line in zip(lines, row_lines, strict=True):
        test_losses = row_line["values"]["test-loss"]
        assert len(test_losses) == len(row_line["sample_ids"]["test"]) > 0
        assert sum(test_losses) / len(test_losses) == pytest.approx(metrics_line["server_eval"]["test-loss"], rel=1e-6)

    # `feddqc eval` rebuilds the server's rows and reproduces the last round's validation loss, per row too.
    main(["eval", str(run), "--split", "valid"])
    evaluated = json.loads((run / "eval-valid.json").read_text())
    assert evaluated["metrics"]["valid-loss"] == pytest.approx(lines[-1]["server_eval"]["valid-loss"], rel=1e-4)
    assert evaluated["sample_ids"] == row_lines[-1]["sample_ids"]["valid"]
    assert evaluated["row_values"]["valid-loss"] == pytest.approx(row_lines[-1]["values"]["valid-loss"], rel=1e-4)


def test_flwr_run_with_the_ds2_selector_reports_its_curation(tmp_path: Path, tiny_model_dir: Path,
                                                              flwr_env) -> None:
    """DS2 plugs into the federated app: clients rate, curate and select; the report shows it.
    With eval-samples = 0 the server evaluates nothing and holds only the adapter (no base weights)."""
    run, log = _flwr_run(tmp_path, flwr_env, tiny_model_dir, 'scorer = "ds2"', "eval-samples = 0")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "it loads no base weights" in log and all(x["server_eval"] == {} for x in lines)
    saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "adapters" / "final")
    assert any(torch.count_nonzero(p) > 0 for n, p in saved.named_parameters() if "lora_B" in n)  # trained, stored
    first = lines[1]
    assert first["scoring"]["clients"] == 2  # a random tiny rater: no AUROC to expect, but every rating binned
    assert sum(first["histogram"]["counts"]) == first["scoring"]["scored"] > 0
    local = run.parent / "client-local"
    reports = sorted(local.rglob("ds2-partition-*-stage-1.json"))
    assert len(reports) == 2
    counts = json.loads(reports[0].read_text())
    assert counts["rated"] == sum(counts["rated-histogram"]) > 0
    assert "## DS2 score curation" in write_report(run, run, "md").read_text()


def test_flwr_run_with_server_side_dp_reports_its_privacy_parameters(tmp_path: Path, tiny_model_dir: Path,
                                                                      flwr_env) -> None:
    """A DP run end to end: server-side fixed clipping C = 1e-3, noise multiplier z = 2, n = 2 equal weights,
    noisy histograms. Round 3 changes the global adapter by the mean of two clipped updates (norm <= C)
    plus Gaussian noise of std z*C/n = 1e-3 on each of its P weights, whose norm is sqrt(P)*1e-3 with a
    spread of about 1e-3/sqrt(2); so the change's norm is within C + 5 spreads of sqrt(P)*1e-3."""
    from safetensors.numpy import load_file

    run, _ = _flwr_run(tmp_path, flwr_env, tiny_model_dir, 'dp-mode = "server-fixed"', "dp-clipping-norm = 0.001",
                         "dp-noise-multiplier = 2.0", "dp-num-sampled-clients = 2", 'aggregation-weight = "uniform"',
                         "dp-histogram-epsilon = 1.0", 'dtype = "float32"')
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds_not_aggregated"] == [] and summary["failures"] == 0
    privacy = summary["privacy"]
    assert (privacy["dp_mode"], privacy["clipping_norm"], privacy["noise_multiplier"],
            privacy["num_sampled_clients"], privacy["histogram_epsilon"]) == ("server-fixed", 0.001, 2.0, 2, 1.0)
    assert privacy["final_noise_stddev"] == pytest.approx(2.0 * 0.001 / 2)
    assert privacy["caveats"] == []  # fedavg, uniform weights: the noise is calibrated

    before = load_file(run / "adapters" / "hierarchy-1" / "adapter_model.safetensors")  # after round 2
    after = load_file(run / "adapters" / "final" / "adapter_model.safetensors")  # after round 3
    change = math.sqrt(sum(float(((after[k].astype("float64") - before[k]) ** 2).sum()) for k in after))
    size = sum(v.size for v in after.values())
    assert abs(change - math.sqrt(size) * 1e-3) <= 1e-3 + 5 * 1e-3 / math.sqrt(2), (change, size)

    first = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][1]
    counts, bad = first["histogram"]["counts"], first["histogram"]["bad"]
    assert all(isinstance(c, int) and c >= b for c, b in zip(counts, bad, strict=True))
