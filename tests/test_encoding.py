"""What is scored and trained, read back as text: the expected strings are written out here by
hand (or rendered by the tokenizer's own chat template), never taken from the module under test."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from feddqc_flwr.llm.prompts import IGNORE_INDEX, encode_pair
from feddqc_flwr.training.local_sft import encode_for_training

ROW = {"instruction": "What is the capital of France?", "input": "", "response": "Paris is the capital.",
       "history": []}
LONG = {**ROW, "response": " ".join(f"word{i}" for i in range(200))}
ALPACA_TEXT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
               "the request.\n\n### Instruction:\nWhat is the capital of France?\n\n### Response:\n")


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _labelled(ids: list[int], labels: list[int]) -> list[int]:
    return [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]


def test_alpaca_row_that_fits_is_prompt_response_and_eos(tok) -> None:
    pair = encode_pair(ROW, tok, "alpaca", 256)
    ids, labels = pair.conditioned(tok.bos_token_id)
    assert tok.decode(ids) == tok.bos_token + ALPACA_TEXT + "Paris is the capital." + tok.eos_token
    assert tok.decode(_labelled(ids, labels)) == "Paris is the capital." + tok.eos_token
    uncond_ids, uncond_labels = pair.unconditioned(tok.bos_token_id)
    assert tok.decode(uncond_ids) == tok.bos_token + "Paris is the capital." + tok.eos_token
    assert _labelled(uncond_ids, uncond_labels) == _labelled(ids, labels)
    assert pair.complete


def test_cut_response_gets_no_eos_and_keeps_the_response_marker(tok) -> None:
    pair = encode_pair(LONG, tok, "alpaca", 64)
    ids, labels = pair.conditioned(tok.bos_token_id)
    assert len(ids) == 64 and not pair.complete
    scored = tok.decode(_labelled(ids, labels))
    assert tok.eos_token not in scored and scored.startswith("word0 word1")
    assert LONG["response"].startswith(scored)
    assert tok.decode(pair.prompt_ids).endswith("### Response:\n")
    # training learns exactly these tokens: the cut answer, no stop after it
    trained = encode_for_training([LONG], tok, "alpaca", 64)[0]
    assert tok.decode(_labelled(trained["input_ids"], trained["labels"])) == scored
    # the unconditioned pass scores the same cut tokens
    assert _labelled(*pair.unconditioned(tok.bos_token_id)) == _labelled(ids, labels)


def test_response_that_exactly_fits_keeps_its_eos(tok) -> None:
    row = {**ROW, "response": " ".join(f"word{i}" for i in range(30))}  # longer than a quarter of the budget
    n_resp = len(tok(row["response"], add_special_tokens=False).input_ids)
    head, marker = ALPACA_TEXT.split("### Response:\n")[0], "### Response:\n"  # tokenized as two pieces
    n_prompt = len(tok(head, add_special_tokens=False).input_ids) + len(tok(marker, add_special_tokens=False).input_ids)
    exact = encode_pair(row, tok, "alpaca", 1 + n_prompt + n_resp + 1)
    assert exact.complete and exact.response_ids[-1] == tok.eos_token_id and len(exact.prompt_ids) == n_prompt
    short = encode_pair(row, tok, "alpaca", 1 + n_prompt + n_resp)
    assert not short.complete and tok.eos_token_id not in short.response_ids
    assert len(short.prompt_ids) == n_prompt and len(short.response_ids) == n_resp  # the prompt stays whole


def test_chat_row_matches_the_tokenizers_own_rendering_with_one_start_token(tok) -> None:
    messages = [{"role": "user", "content": ROW["instruction"]}]
    rendered = tok.apply_chat_template([*messages, {"role": "assistant", "content": ROW["response"]}],
                                       tokenize=False)
    assert rendered.startswith(tok.bos_token)  # SmolLM2's template opens with its BOS, <|im_start|>
    pair = encode_pair(ROW, tok, "chat", 256)
    ids, labels = pair.conditioned(tok.bos_token_id)
    assert tok.decode(ids) == rendered.rstrip("\n")  # the turn ends with <|im_end|> = EOS
    assert tok.decode(_labelled(ids, labels)) == ROW["response"] + tok.eos_token
    assert tok.decode(ids).count(tok.bos_token) == rendered.count(tok.bos_token)


def test_chat_truncation_keeps_the_assistant_header(tok) -> None:
    row = {**ROW, "instruction": "Explain this. " + "very " * 300}
    pair = encode_pair(row, tok, "chat", 96)
    ids, _ = pair.conditioned(tok.bos_token_id)
    assert len(ids) <= 96
    assert tok.decode(pair.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(pair.response_ids) == ROW["response"] + tok.eos_token
