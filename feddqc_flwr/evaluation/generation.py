"""Greedy answers of the adapter for evaluation prompts, and parsing them back to an option.

Prompts are built by `encode_pair` (the training template, response marker included), so the
model answers in the format it was tuned on. Batches are left-padded: every row's last prompt
token then sits at the same position and the new tokens line up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.evaluation.choices import Choice, normalise_answer, row_choice
from feddqc_flwr.llm.completion import complete
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.prompts import encode_pair, start_token_id

# "C", "C.", "(C) ...", "[C]" at the start; not "A patient ..." (an article, not an option).
_LETTER_FIRST = re.compile(r"^\W*\(?([A-J])(?:[.:)\]]|$)")
_LETTER_STATED = re.compile(r"\b(?i:answer|option|choice)\s*(?i:is)?\s*:?\s*\(?([A-J])\b")


def prompt_ids(bundle: ModelBundle, row: Mapping[str, Any], *, template: str, max_length: int,
               max_new_tokens: int) -> list[int]:
    """Start token + prompt, cut so that prompt and answer fit in `max_length`."""
    budget = max(16, max_length - max_new_tokens)
    pair = encode_pair({**row, "response": ""}, bundle.tokenizer, template, budget)
    return [start_token_id(bundle.tokenizer), *pair.prompt_ids]


def generate_answers(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, template: str, max_length: int,
                     batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy completions (special tokens dropped, stripped), one per row, stopping at EOS."""
    prompts = [prompt_ids(bundle, r, template=template, max_length=max_length, max_new_tokens=max_new_tokens)
               for r in rows]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    answers = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        texts = complete(bundle.model, bundle.tokenizer, [prompts[i] for i in idx], max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=1, eos_token_id=int(bundle.tokenizer.eos_token_id))
        for i, text in zip(idx, texts, strict=True):
            answers[i] = text.strip()
    return answers


def parse_answer(text: str, choice: Choice) -> int | None:
    """The option index a generated answer names, or None.

    Lettered options: a leading letter ("C", "(C)", "C. ..."), then "answer is C", then the
    longest option text contained in the answer. Word answers (yes/no/maybe): the one that occurs
    first as a whole word or phrase.
    """
    lettered = choice.texts != choice.labels
    if lettered:
        for pattern in (_LETTER_FIRST, _LETTER_STATED):
            match = pattern.search(text)
            if match and match.group(1).upper() in choice.labels:
                return choice.labels.index(match.group(1).upper())
        said = normalise_answer(text)
        found = [(len(body), k) for k, body in enumerate(normalise_answer(t.split(". ", 1)[1]) for t in choice.texts)
                 if body and body in said]
        return max(found)[1] if found else None
    said = normalise_answer(text)
    hits = [(m.start(), -len(label), k) for k, label in enumerate(choice.labels)
            if (m := re.search(rf"\b{re.escape(label)}\b", said))]
    return min(hits)[2] if hits else None


def generation_accuracy(answers: Sequence[str], rows: Sequence[Mapping[str, Any]],
                        closed_set: Sequence[str] = ()) -> tuple[dict[str, float], list[float | None]]:
    """Share of option rows whose parsed answer is the gold option (unparsed answers count as wrong),
    with the rows and unparsed answers counted, and each row's 1/0 (None: the row has no options)."""
    hits: list[float | None] = []
    unparsed = 0
    for answer, row in zip(answers, rows, strict=True):
        choice = row_choice(row, closed_set)
        if choice is None:
            hits.append(None)
            continue
        parsed = parse_answer(answer, choice)
        unparsed += parsed is None
        hits.append(float(parsed == choice.gold))
    scored = [h for h in hits if h is not None]
    return {"gen-acc": sum(scored) / len(scored) if scored else float("nan"), "gen-rows": float(len(scored)),
            "gen-unparsed": float(unparsed)}, hits
