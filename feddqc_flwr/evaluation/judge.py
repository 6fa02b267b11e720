"""Pairwise win rate of the model's answers against reference answers, judged by an LLM.

Optional: needs an OpenAI-compatible endpoint (`judge-url`, `judge-model`). Each pair is judged
twice with the answers swapped, because LLM judges prefer one position; a win counts 1, a tie
0.5, a loss 0. Verdicts that cannot be parsed (or endpoint errors) are counted and left out of
the mean, so a flaky judge shows up as failures instead of as losses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.llm.openai_endpoint import ChatEndpoint, EndpointError

JUDGE_SYSTEM = (
    "You are an impartial judge. Compare two answers to the user's question for correctness, "
    "helpfulness and relevance. Ignore the order in which they are shown and their length. "
    "After at most two sentences of reasoning, give your verdict as exactly one of "
    "[[A]] (answer A is better), [[B]] (answer B is better) or [[TIE]]."
)
JUDGE_USER = "[Question]\n{question}\n\n[Answer A]\n{a}\n\n[Answer B]\n{b}"
_VERDICT = re.compile(r"\[\[\s*(A|B|TIE)\s*\]\]", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'TIE' from a judge reply (the last [[...]] tag, or a bare one-word reply)."""
    tags = _VERDICT.findall(text)
    if tags:
        return tags[-1].upper()
    bare = text.strip().strip(".[]").upper()
    return bare if bare in ("A", "B", "TIE") else None


def question_text(row: Mapping[str, Any]) -> str:
    """The instruction with its input, as the judge should read the question."""
    return row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"


def judge_win_rate(endpoint: ChatEndpoint, rows: Sequence[Mapping[str, Any]], answers: Sequence[str],
                   opponents: Sequence[str] | None = None) -> tuple[dict[str, float], list[float | None]]:
    """Mean score of `answers` vs `opponents` (default: the rows' reference responses), both orders.

    Returns judge-win-rate (over all parsed verdicts; NaN when none parsed), judge-verdicts
    (parsed) and judge-failures, and each row's mean score over its parsed verdicts (None: none).
    """
    others = [str(r["response"]) for r in rows] if opponents is None else list(opponents)
    if not len(rows) == len(answers) == len(others):
        raise ValueError(f"{len(rows)} rows, {len(answers)} answers and {len(others)} opponents")
    points: list[float] = []
    per_row: list[float | None] = []
    failures = 0
    for row, ours, theirs in zip(rows, answers, others, strict=True):
        row_points: list[float] = []
        for ours_label, a, b in (("A", ours, theirs), ("B", theirs, ours)):
            messages = [{"role": "system", "content": JUDGE_SYSTEM},
                        {"role": "user", "content": JUDGE_USER.format(question=question_text(row), a=a, b=b)}]
            try:
                verdict = parse_verdict(endpoint.complete(messages, max_tokens=128))
            except EndpointError:
                verdict = None
            if verdict is None:
                failures += 1
            else:
                row_points.append(0.5 if verdict == "TIE" else float(verdict == ours_label))
        points.extend(row_points)
        per_row.append(sum(row_points) / len(row_points) if row_points else None)
    rate = sum(points) / len(points) if points else float("nan")
    return {"judge-win-rate": rate, "judge-verdicts": float(len(points)), "judge-failures": float(failures)}, per_row
