"""Prompt templates and token encoding shared by scoring and training.

Scoring and training must see the same tokens, so both go through `encode_pair`: the prompt
and the response are tokenized separately and concatenated. The response tokens are then the
same in the conditioned and unconditioned pass, and the IRA compares like with like.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n"
)
ALPACA_RESPONSE_MARKER = "### Response:\n"

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedPair:
    """One sample as token ids: `prompt_ids` then `response_ids`.

    `response_ids` end with EOS only when the whole response fit (`complete`): a response cut
    by `max-length` must not teach the model to stop mid-answer, nor be scored on an EOS that
    the text never had.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    complete: bool = True

    def conditioned(self, start_id: int) -> tuple[list[int], list[int]]:
        """input ids and labels for L(response | instruction): prompt tokens are masked."""
        ids = [start_id, *self.prompt_ids, *self.response_ids]
        labels = [IGNORE_INDEX] * (1 + len(self.prompt_ids)) + list(self.response_ids)
        return ids, labels

    def unconditioned(self, start_id: int) -> tuple[list[int], list[int]]:
        """input ids and labels for L(response): the response alone after the start token."""
        ids = [start_id, *self.response_ids]
        return ids, [IGNORE_INDEX, *self.response_ids]


def start_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """BOS where the tokenizer has one (so the first response token is predicted too)."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    return int(tokenizer.eos_token_id)


def _alpaca_head(row: Mapping[str, Any]) -> str:
    if row.get("input"):
        return ALPACA_WITH_INPUT.format(instruction=row["instruction"], input=row["input"])
    return ALPACA_NO_INPUT.format(instruction=row["instruction"])


def _chat_head(row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """(conversation so far, assistant header): the header is the marker truncation never cuts."""
    user = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
    messages = [*(row.get("history") or []), {"role": "user", "content": user}]
    with_header = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if with_header.startswith(without) and len(with_header) > len(without):
        return without, with_header[len(without):]
    return with_header, ""


def encode_pair(
    row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, template: str, max_length: int
) -> EncodedPair:
    """Tokenize one row so that [start] + prompt + response (+ EOS) fits in `max_length`.

    Multi-turn rows (non-empty `history`) always use the tokenizer's chat template so earlier
    turns are kept as turns. A template text that already begins with the start token loses it
    here, as every pass puts the start token in front itself. Over-long samples keep at least a
    quarter of the budget for the response and cut the prompt body (never the response marker,
    i.e. Alpaca's "### Response:" or the chat template's assistant header); a response that
    still does not fit is cut and gets no EOS, so both IRA passes score the same tokens.
    """
    if template == "chat" or row.get("history"):
        head, marker = _chat_head(row, tokenizer)
    else:
        head, marker = _alpaca_head(row), ALPACA_RESPONSE_MARKER
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    if head_ids and head_ids[0] == start_token_id(tokenizer):
        head_ids = head_ids[1:]
    marker_ids = tokenizer(marker, add_special_tokens=False).input_ids if marker else []
    response_ids = tokenizer(row["response"], add_special_tokens=False).input_ids
    budget = max_length - 1  # after the start token
    room = max(budget // 4, budget - len(head_ids) - len(marker_ids))
    complete = len(response_ids) + 1 <= room
    response_ids = [*response_ids, int(tokenizer.eos_token_id)] if complete else response_ids[:room]
    head_ids = head_ids[: max(0, budget - len(marker_ids) - len(response_ids))]
    return EncodedPair(prompt_ids=head_ids + marker_ids, response_ids=response_ids, complete=complete)
