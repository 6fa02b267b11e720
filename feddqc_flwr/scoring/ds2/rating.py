"""DS2 step 1: an LLM rates every sample 1-10 with DS2's JSON prompt; ratings -> 6 classes.

Prompt text, sample rendering ("### role: content"), "take the last {...} in the answer" and
the 1-10 -> {0..5} compression follow UCSC-REAL/DS2 (LLM_scoring/scoring.py, score_compress).
A sample whose answer holds no parseable rating is asked again up to `retries` times; if it
still fails it gets DS2's fallback rating 0 (lowest class) and is counted in `failures`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from feddqc_flwr.llm.completion import complete
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint, EndpointError

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "As a data quality estimator, your task is to assess the quality of data sample based on the criteria: "
    "Rarity, Complexity, Informativeness.\n"
    "Please rate the sample on a scale from 1 to 10 for each criterion, and return an overall rating on a scale "
    "from 1 to 10, where a higher score indicates higher level of quality.\n"
    "Ensure that the ratings are not overly concentrated around a specific score. If multiple samples have similar "
    "qualities, consider spreading the scores more evenly to reflect subtle differences.\n"
)
USER_PROMPT = (
    "Now, please carefully evaluate the following data sample and return the integral evaluation scores using "
    "the JSON format:\n"
    '{\n    "Rarity": <number, 1-10>,\n    "Complexity": <number, 1-10>,\n'
    '    "Informativeness": <number, 1-10>,\n    "Overall rating": <number, 1-10>\n}\n'
    "Remember: the output must strictly follow this format, without any deviations.\n"
    "\n## Data sample (conversation):\n{sample}"
)
NUM_CLASSES = 6
FAILED_RATING = 0  # DS2 stores [0, 0, 0, 0] for an unparseable answer
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")  # the rating object is flat, so no recursive pattern is needed

Messages = list[dict[str, str]]


def render_sample(row: Mapping[str, Any]) -> str:
    """The sample as DS2 shows it to the rater: one '### role: content' line per message."""
    user = row["instruction"] if not row.get("input") else f"{row['instruction']}\n{row['input']}"
    turns = [*(row.get("history") or []), {"role": "user", "content": user},
             {"role": "assistant", "content": row["response"]}]
    return "".join(f"### {t['role']}: {t['content']}\n" for t in turns)


def rating_messages(sample: str) -> Messages:
    """System + user messages asking for the JSON rating of one rendered sample."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT.replace("{sample}", sample)}]


def parse_overall(text: str) -> int | None:
    """The 'Overall rating' of the last JSON object in `text`, or None if there is none in 1..10."""
    for candidate in reversed(_JSON_OBJECT.findall(text)):
        try:
            value = int(json.loads(candidate)["Overall rating"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        return value if 1 <= value <= 10 else None
    return None


def compress(overall: np.ndarray) -> np.ndarray:
    """DS2's score_compress: clip 1..10 to [4, 9] and shift, giving classes 0..5."""
    return (np.clip(np.asarray(overall, dtype=np.int64), 4, 9) - 4).astype(np.int64)


class Rater(Protocol):
    """Answers a batch of chat prompts; `attempt` > 0 marks a retry (a rater may sample then)."""

    def __call__(self, prompts: Sequence[Messages], attempt: int) -> list[str]: ...


@dataclass(frozen=True)
class Ratings:
    """Overall ratings 1..10 (FAILED_RATING where every attempt failed) and the counts."""

    overall: np.ndarray
    failures: int
    retried: int

    @property
    def classes(self) -> np.ndarray:
        return compress(self.overall)


def rate(rows: Sequence[Mapping[str, Any]], rater: Rater, *, retries: int, batch_size: int) -> Ratings:
    """Rate all rows, re-asking only the rows whose answer did not parse."""
    prompts = [rating_messages(render_sample(r)) for r in rows]
    overall: list[int | None] = [None] * len(rows)
    retried: set[int] = set()
    progress = tqdm(total=len(rows), desc="DS2 rating", unit="sample", disable=None, leave=False)
    for attempt in range(retries + 1):
        todo = [i for i, v in enumerate(overall) if v is None]
        if not todo:
            break
        if attempt:
            retried.update(todo)
        for first in range(0, len(todo), batch_size):
            chunk = todo[first : first + batch_size]
            for i, text in zip(chunk, rater([prompts[i] for i in chunk], attempt), strict=True):
                overall[i] = parse_overall(text)
                if overall[i] is not None:
                    progress.update(1)
    progress.close()
    failures = sum(v is None for v in overall)
    if failures:
        log.warning("DS2: %d of %d ratings did not parse after %d retries (rated %d)",
                    failures, len(rows), retries, FAILED_RATING)
    values = np.array([FAILED_RATING if v is None else v for v in overall], dtype=np.int64)
    return Ratings(overall=values, failures=failures, retried=len(retried))


class EndpointRater:
    """Rates through an OpenAI-compatible endpoint: temperature 0, then DS2's 1.2 on retries.
    An endpoint error counts as an unparseable answer for that attempt."""

    def __init__(self, endpoint: ChatEndpoint, max_new_tokens: int = 128) -> None:
        self.endpoint, self.max_new_tokens = endpoint, max_new_tokens

    def __call__(self, prompts: Sequence[Messages], attempt: int) -> list[str]:
        out = []
        for messages in prompts:
            try:
                out.append(self.endpoint.complete(messages, max_tokens=self.max_new_tokens,
                                                  temperature=1.2 if attempt else 0.0))
            except EndpointError as err:
                log.warning("DS2 rater endpoint failed: %s", err)
                out.append("")
        return out


class LocalRater:
    """Rates with the scoring model itself: greedy first, DS2's sampling (T=1.2, top-k 50,
    top-p 0.9) on retries, since a greedy retry would repeat the same answer. The rendered
    sample is cut to `max_sample_tokens` so the instructions around it are never truncated."""

    def __init__(self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, *, max_sample_tokens: int,
                 max_new_tokens: int = 128, seed: int = 0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_sample_tokens, self.max_new_tokens, self.seed = max_sample_tokens, max_new_tokens, seed

    def _text(self, messages: Messages) -> str:
        sample = messages[1]["content"].rsplit("## Data sample (conversation):\n", 1)
        ids = self.tokenizer(sample[1], add_special_tokens=False).input_ids[: self.max_sample_tokens]
        messages = [messages[0], {"role": "user", "content": sample[0] + "## Data sample (conversation):\n"
                                  + self.tokenizer.decode(ids)}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def __call__(self, prompts: Sequence[Messages], attempt: int) -> list[str]:
        ids = [self.tokenizer(self._text(m), add_special_tokens=False).input_ids for m in prompts]
        sampling = {"do_sample": True, "temperature": 1.2, "top_k": 50, "top_p": 0.9} if attempt else \
            {"do_sample": False}
        torch.manual_seed(self.seed + attempt)
        return complete(self.model, self.tokenizer, ids, max_new_tokens=self.max_new_tokens, **sampling)
