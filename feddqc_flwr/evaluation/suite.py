"""All evaluation metrics of one adapter on one set of rows, by name.

Answers are generated once and shared by the generation, similarity and judge metrics, which
cost the most on CPU; the default metric set ("loss") generates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.evaluation.choices import choice_accuracy, closed_answer_set
from feddqc_flwr.evaluation.generation import generate_answers, generation_accuracy
from feddqc_flwr.evaluation.judge import judge_win_rate
from feddqc_flwr.evaluation.loss import heldout_loss
from feddqc_flwr.evaluation.similarity import answer_similarity
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint

EVAL_METRICS = ("loss", "choice", "generation", "similarity", "judge")  # = app.config.EVAL_METRICS (a test checks)
_NEEDS_ANSWERS = ("generation", "similarity", "judge")


def evaluate_rows(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *,
                  template: str, max_length: int, batch_size: int, max_new_tokens: int,
                  judge: ChatEndpoint | None = None, closed_set: Sequence[str] | None = None) -> dict[str, float]:
    """Metric values keyed loss, choice-acc, gen-acc, similarity, judge-win-rate (+ row counts).

    `closed_set` is the dataset's small answer set (yes/no/maybe); None derives it from `rows`,
    which can miss a rare answer on few rows, so pass one derived from more data when you have it.
    """
    unknown = sorted(set(metrics) - set(EVAL_METRICS))
    if unknown:
        raise ValueError(f"unknown evaluation metric(s) {unknown}: known are {', '.join(EVAL_METRICS)}")
    if "judge" in metrics and judge is None:
        raise ValueError("the judge metric needs a ChatEndpoint (judge-url, judge-model)")
    if not rows:
        return {}
    answers_set = closed_answer_set(str(r["response"]) for r in rows) if closed_set is None else tuple(closed_set)
    out: dict[str, float] = {}
    if "loss" in metrics:
        out["loss"] = heldout_loss(bundle, rows, template=template, max_length=max_length, batch_size=batch_size)
    if "choice" in metrics:
        out.update(choice_accuracy(bundle, rows, template=template, max_length=max_length, batch_size=batch_size,
                                   closed_set=answers_set))
    if any(m in metrics for m in _NEEDS_ANSWERS):
        answers = generate_answers(bundle, rows, template=template, max_length=max_length, batch_size=batch_size,
                                   max_new_tokens=max_new_tokens)
        if "generation" in metrics:
            out.update(generation_accuracy(answers, rows, answers_set))
        if "similarity" in metrics:
            out["similarity"] = answer_similarity(answers, [str(r["response"]) for r in rows])
        if "judge" in metrics and judge is not None:
            out.update(judge_win_rate(judge, rows, answers))
    return out
