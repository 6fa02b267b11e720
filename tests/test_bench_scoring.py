"""The scoring benchmark compares like with like: its one-sample loop and its batched IRA give the
scores of a hand computation on the app's tokens, and its authors' loop follows the authors' code
(checked token by token here), not the app's encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from feddqc_flwr.bench.machine import peak_rss_mib
from feddqc_flwr.bench.reference_ira import authors_encoding, authors_ira
from feddqc_flwr.bench.scoring import (
    bench_scoring,
    one_sample_ira,
    protocol_ratios,
    score_agreement,
    timed_in_turn,
)
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.registry import SCORERS
from tests.scoring.common import ANCHORS, ROWS

PROTOCOL = {"samples_per_client": 10, "hierarchies": 3, "rounds": 6, "participation": 0.5, "local_steps": 2}
APP_PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              "request.\n\n### Instruction:\n{instruction}\n\n")
AUTHORS_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further "
                  "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                  "{instruction}\n\n### Response: ")


@pytest.fixture(scope="module")
def bundle(tiny_model_dir: Path):
    # float32 weights: the hand computations and the bench's float32 reference are exact to 1e-5
    bundle = load_model_bundle(ModelSpec(name=str(tiny_model_dir), dtype="float32", lora_r=4, lora_alpha=8))
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a non-zero adapter (the cached bundle may hold another test's): LoRA is checked too
        for name, p in bundle.model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    bundle.model.eval()
    return bundle


def _nll(model, ids: list[int], labelled: list[int]) -> float:
    """Mean NLL of the tokens at positions `labelled`, each given all before it: a plain forward."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    return float(np.mean([-logp[t - 1, ids[t]].item() for t in labelled]))


def test_one_sample_loop_and_batched_ira_equal_a_hand_computation(bundle) -> None:
    tok, rows = bundle.tokenizer, [r for r in ROWS if not r["input"]]
    looped = one_sample_ira(bundle, rows, "alpaca", 128)
    batched = ira_scores(bundle.model, bundle.tokenizer, rows, template="alpaca", max_length=128,
                         batch_size=4, device=bundle.device).ira
    for i, row in enumerate(rows):
        prompt = (tok(APP_PROMPT.format(instruction=row["instruction"]), add_special_tokens=False).input_ids
                  + tok("### Response:\n", add_special_tokens=False).input_ids)
        response = tok(row["response"], add_special_tokens=False).input_ids + [tok.eos_token_id]
        conditioned = [tok.bos_token_id, *prompt, *response]
        cond = _nll(bundle.model, conditioned, list(range(1 + len(prompt), len(conditioned))))
        uncond = _nll(bundle.model, [tok.bos_token_id, *response], list(range(1, 1 + len(response))))
        assert looped[i] == pytest.approx(uncond - cond, abs=1e-5)
        assert batched[i] == pytest.approx(uncond - cond, abs=1e-5)


def test_authors_encoding_is_their_joint_template_with_eos_only_under_the_cutoff(bundle) -> None:
    tok, eos = bundle.tokenizer, bundle.tokenizer.eos_token_id
    row = {"instruction": "What is the capital of France?", "input": "", "response": "Paris."}
    (ids, labels), (uncond_ids, uncond_labels) = authors_encoding(row, tok, 1024)
    text = ("Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n### Instruction:\n"
            "What is the capital of France?\n\n### Response: Paris.")
    assert ids == tok(text).input_ids + [eos]  # one string, tokenized whole; SmolLM2's tokenizer adds no BOS
    # The prompt alone ends in a lone space token; in the joint string the space merged into " Paris",
    # so masking len(prompt alone) positions hides " Paris" too: only "." and EOS are scored.
    assert [t for t in labels if t != -100] == tok(".").input_ids + [eos]
    assert labels[: len(ids) - 2] == [-100] * (len(ids) - 2)
    assert uncond_ids == uncond_labels == tok("Paris.").input_ids + [eos]  # raw response, every token labelled
    with_input = {"instruction": "Summarise.", "input": "The cat sat.", "response": "A cat sat."}
    (ids, _), _ = authors_encoding(with_input, tok, 1024)
    assert tok.decode(ids[:-1]) == AUTHORS_PROMPT.format(instruction="Summarise. The cat sat.") + "A cat sat."
    whole = len(tok(text).input_ids)
    assert authors_encoding(row, tok, whole)[0][0] == tok(text).input_ids  # no room: no EOS
    assert authors_encoding(row, tok, whole + 1)[0][0][-1] == eos
    assert authors_encoding(row, tok, whole - 3)[0][0] == tok(text).input_ids[: whole - 3]


def test_authors_ira_is_their_mean_losses_of_those_tokens(bundle) -> None:
    tok, eos, rows = bundle.tokenizer, bundle.tokenizer.eos_token_id, ROWS[:3]
    scores = authors_ira(bundle.model, tok, rows, 1024, bundle.device)
    for i, row in enumerate(rows):
        instruction = row["instruction"] + (f" {row['input']}" if row["input"] else "")
        prompt = AUTHORS_PROMPT.format(instruction=instruction)
        ids = tok(prompt + row["response"]).input_ids + [eos]
        cond = _nll(bundle.model, ids, list(range(len(tok(prompt).input_ids), len(ids))))
        response = tok(row["response"]).input_ids + [eos]
        uncond = _nll(bundle.model, response, list(range(1, len(response))))  # no BOS: token 0 never predicted
        assert scores[i] == pytest.approx(uncond - cond, abs=1e-5)


def test_bench_reports_both_precisions_and_leaves_the_adapter_unchanged(bundle) -> None:
    before = {k: v.clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    result = bench_scoring(bundle, ROWS, ANCHORS, template="alpaca", max_length=128, batch_size=4, repeats=1,
                           train_batch=2, train_grad_accum=2, train_steps=1, protocol=PROTOCOL,
                           score_dtype=torch.bfloat16)
    full, half = result["precisions"]["float32"], result["precisions"]["bfloat16"]
    assert full["agreement_vs_float32_loop"]["max_abs_diff"] < 1e-5  # batching alone changes nothing
    assert full["agreement_vs_float32_loop"]["kept_overlap"] == 1.0
    assert 0 < half["agreement_vs_float32_loop"]["max_abs_diff"] < 0.1  # bf16 really ran, and stayed close
    # the authors' loop is another tokenization (template, masking, no start token), not the app's encoder
    assert full["agreement_vs_authors_loop"]["max_abs_diff"] > 0.01
    assert full["seconds"]["authors_loop_float32"] > 0
    assert set(result["scorers"]) == set(SCORERS)  # every registered scorer is timed
    assert result["score_dtype"] == "bfloat16" and result["train_dtype"] == "float32"
    assert set(result["matmul_gflops"]) == {"float32", "bfloat16"} and min(result["matmul_gflops"].values()) > 0
    assert 0 < result["peak_rss_mib_before_training"] <= peak_rss_mib()
    after = bundle.model.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)


def test_protocol_ratio_counts_rescoring_of_what_is_left_per_hierarchy() -> None:
    ratios = protocol_ratios(score_seconds_per_row=0.5, step_seconds=2.0, protocol=PROTOCOL)
    assert ratios["scored_rows_per_hierarchy"] == pytest.approx([10, 20 / 3, 10 / 3])
    assert ratios["train_steps_per_hierarchy"] == pytest.approx(2.0)  # 6 rounds / 3 x 0.5 x 2 steps
    assert ratios["scoring_over_training_per_hierarchy"][0] == pytest.approx(10 * 0.5 / (2 * 2.0))
    assert ratios["scoring_over_training"] == pytest.approx(20 * 0.5 / (6 * 2.0))


def test_score_agreement_measures_what_selection_sees() -> None:
    reference = np.array([4.0, 3.0, 2.0, 1.0])
    same_order = score_agreement(reference + 0.01, reference)
    assert same_order["max_abs_diff"] == pytest.approx(0.01)
    assert same_order["rank_correlation"] == pytest.approx(1.0) and same_order["kept_overlap"] == 1.0
    swapped = score_agreement(np.array([4.0, 2.0, 3.0, 1.0]), reference)  # ranks 2 and 3 trade places
    assert swapped["kept_overlap"] == 0.5 and swapped["rank_correlation"] == pytest.approx(0.8)


def test_timed_in_turn_runs_every_function_in_each_round() -> None:
    calls: list[str] = []
    seconds, results = timed_in_turn({"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2},
                                     repeats=2)
    assert calls == ["a", "b"] * 3  # a warm-up round, then two timed ones
    assert results == {"a": 1, "b": 2} and set(seconds) == {"a", "b"}
