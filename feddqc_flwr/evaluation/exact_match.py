"""Exact match of greedy answers on short-answer rows, after normalising both sides.

Which rows: those whose reference answer has at most MAX_ANSWER_WORDS words (ASDiv's "9 apples",
NQ-open's "Meghan Trainor", PubMedQA's "yes"); longer references are skipped and counted, as
free text has no exact answer.

How they are compared:
- numeric: a reference that starts with a number ("9 apples", "$1,000", "3:30 p.m.",
  "12 years old; 5 years old") matches when the prediction's first k numbers equal the
  reference's k numbers by value, anywhere in the answer. Units and words around them are
  ignored ("9" = "9 apples" = "There are 9 apples."); "1,000" = "1000", "3.0" = "3", "1/2" =
  "0.5"; times and ratios ("3:30", "2:3") are one number compared part by part. Number words
  ("nine") are not read.
- text: otherwise the first non-empty line of the prediction, normalised as SQuAD's evaluation
  script does (lower case, punctuation and symbols deleted, so "A-ha" is "aha", the articles
  a/an/the dropped, single spaces), must equal the normalised reference.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

MAX_ANSWER_WORDS = 8  # ASDiv's longest common form: "12 years old; 5 years old"
# A minus sign only where it is not a hyphen (after a letter or digit); then a time/ratio, a number
# with thousands commas or plain digits (either with decimals and/or a fraction over a non-zero
# denominator), or ".5".
_NUMBER = re.compile(r"(?:(?<![\w])-)?(?:\d+(?::\d+)+|(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/[1-9]\d*)?|\.\d+)")
_STARTS_WITH_NUMBER = re.compile(r"^[^\w-]*-?\.?\d")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")

Number = Fraction | tuple[int, ...]


def number_value(token: str) -> Number:
    """A matched number as a comparable value: times/ratios as a tuple of parts, others exactly."""
    if ":" in token:
        return tuple(int(part) for part in token.split(":"))
    plain = token.replace(",", "")
    if "/" in plain:
        numerator, denominator = plain.split("/")
        return Fraction(numerator) / int(denominator)
    return Fraction(plain)


def numbers(text: str) -> list[Number]:
    """The values of the numbers in `text`, in order."""
    return [number_value(m.group()) for m in _NUMBER.finditer(text)]


def normalise_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and symbols deleted, no articles, single spaces."""
    kept = "".join(ch for ch in text.lower() if unicodedata.category(ch)[0] not in "PS")
    return " ".join(_ARTICLES.sub(" ", kept).split())


def first_line(text: str) -> str:
    """The first non-empty line (a model may run on past its answer)."""
    return next((line for line in text.splitlines() if line.strip()), "")


def answers_match(prediction: str, reference: str) -> bool:
    """Whether `prediction` gives the short `reference` answer (the module docstring's rules)."""
    if _STARTS_WITH_NUMBER.match(reference):
        wanted = numbers(reference)
        return numbers(prediction)[: len(wanted)] == wanted
    return normalise_text(first_line(prediction)) == normalise_text(reference)


def is_short_answer(reference: str) -> bool:
    """A reference exact match applies to: non-empty and at most MAX_ANSWER_WORDS words."""
    return 0 < len(reference.split()) <= MAX_ANSWER_WORDS


def exact_match(answers: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float],
                                                                                    list[float | None]]:
    """Share of short-answer rows answered exactly, the rows counted, and each row's 1/0 (None: skipped)."""
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} answers for {len(rows)} rows")
    hits: list[float | None] = []
    for answer, row in zip(answers, rows, strict=True):
        reference = str(row["response"])
        hits.append(float(answers_match(answer, reference)) if is_short_answer(reference) else None)
    scored = [h for h in hits if h is not None]
    values = {"exact-match": sum(scored) / len(scored) if scored else float("nan"),
              "exact-match-rows": float(len(scored)), "exact-match-skipped": float(len(hits) - len(scored))}
    return values, hits
