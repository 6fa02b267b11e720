"""Answer options of an evaluation row, and accuracy by comparing the options' likelihoods.

Two kinds of closed-answer rows exist in the bundled sets: lettered options written into the
question (MedQA, MMLU, AQUA-RAT: "A. ..." lines, gold "C. text") and a small set of short
answers shared by the whole dataset (PubMedQA: yes / no / maybe). Every other row has no
options and is skipped (and counted), so free-text sets simply report no choice accuracy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.nll import mean_nll

# "A. text", "A) text", "(A) text", "A: text" at the start of a line; letters A-J.
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])(?:[.:]|\))\s+(\S.*?)\s*$")
_LEADING_LETTER = re.compile(r"^\s*\(?([A-J])(?:[.:)]|\s|$)")
MAX_CLOSED_ANSWERS = 5
MAX_CLOSED_WORDS = 3  # a closed answer is a word or a short phrase, not a sentence


@dataclass(frozen=True)
class Choice:
    """The options of one row: `labels` (letters or answer words), the response `texts` that are
    scored, and the index of the gold option."""

    labels: tuple[str, ...]
    texts: tuple[str, ...]
    gold: int


def normalise_answer(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation: 'Yes.' and 'yes' are one answer."""
    return " ".join(text.lower().split()).rstrip(".!?;:, ")


def lettered_options(text: str) -> dict[str, str]:
    """The last block of consecutive lettered option lines (A, B, ...) in `text`; {} if fewer than 2."""
    best: dict[str, str] = {}
    block: dict[str, str] = {}
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if not match:
            continue
        letter, option = match.groups()
        if letter == "A":
            block = {"A": option}
        elif block and ord(letter) == ord("A") + len(block):
            block[letter] = option
        else:
            continue
        if len(block) >= 2:
            best = block
    return dict(best)


def closed_answer_set(responses: Iterable[str], max_size: int = MAX_CLOSED_ANSWERS) -> tuple[str, ...]:
    """The sorted distinct normalised answers when a dataset has only a few short ones (yes/no/maybe), else ()."""
    seen: set[str] = set()
    count = 0
    for response in responses:
        answer = normalise_answer(response)
        seen.add(answer)
        count += 1
        if len(seen) > max_size or len(answer.split()) > MAX_CLOSED_WORDS:
            return ()
    if len(seen) < 2 or len(seen) >= count or "" in seen:
        return ()  # every answer distinct: free text, not a closed set
    return tuple(sorted(seen))


def row_choice(row: Mapping[str, Any], closed_set: Sequence[str] = ()) -> Choice | None:
    """The row's options with its gold index; None when it has none or its gold is not one of them."""
    options = lettered_options(f"{row.get('instruction') or ''}\n{row.get('input') or ''}")
    response = str(row.get("response") or "")
    if options:
        labels = tuple(options)
        texts = tuple(f"{letter}. {option}" for letter, option in options.items())
        match = _LEADING_LETTER.match(response)
        if match and match.group(1) in options:
            return Choice(labels, texts, labels.index(match.group(1)))
        wanted = normalise_answer(response)
        plain = [normalise_answer(o) for o in options.values()]
        return Choice(labels, texts, plain.index(wanted)) if wanted in plain else None
    gold = normalise_answer(response)
    if closed_set and gold in closed_set:
        return Choice(tuple(closed_set), tuple(closed_set), list(closed_set).index(gold))
    return None


def choice_accuracy(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, template: str, max_length: int,
                    batch_size: int, closed_set: Sequence[str] = ()) -> tuple[dict[str, float], list[float | None]]:
    """Share of rows whose most likely option is the gold one, how many rows were scored/skipped,
    and each row's 1/0 (None: the row has no options).

    An option's score is the mean NLL per response token (EOS included) of the option as the
    response, batched through the response-position NLL code. Mean, not sum: lettered options
    differ in length and a sum favours the shortest; for one-word answers the two agree.
    """
    choices = [row_choice(r, closed_set) for r in rows]
    scored = [(r, c) for r, c in zip(rows, choices, strict=True) if c is not None]
    result = {"choice-rows": float(len(scored)), "choice-skipped": float(len(rows) - len(scored))}
    if not scored:
        return {"choice-acc": float("nan"), **result}, [None] * len(rows)
    start = start_token_id(bundle.tokenizer)
    sequences = [encode_pair({**row, "response": text}, bundle.tokenizer, template, max_length).conditioned(start)
                 for row, choice in scored for text in choice.texts]
    nll = mean_nll(bundle.model, sequences, int(bundle.tokenizer.pad_token_id), batch_size, bundle.device)
    hits: list[float | None] = []
    offset = 0
    for choice in choices:
        if choice is None:
            hits.append(None)
            continue
        option_nll = np.nan_to_num(nll[offset: offset + len(choice.texts)], nan=np.inf)
        hits.append(float(np.argmin(option_nll) == choice.gold))
        offset += len(choice.texts)
    return {"choice-acc": sum(h for h in hits if h is not None) / len(scored), **result}, hits
