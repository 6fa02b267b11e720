"""All evaluation metrics of one adapter on one set of rows, by name, with each row's own values.

Answers are generated once and shared by the generation, exact-match, similarity and judge
metrics, which cost the most on CPU; the default metric set ("loss") generates nothing. The
per-row values (`row_values`) let an experiment resample test rows in its intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feddqc_flwr.evaluation.alignment import alignment_accuracy
from feddqc_flwr.evaluation.choices import choice_accuracy, closed_answer_set
from feddqc_flwr.evaluation.exact_match import exact_match
from feddqc_flwr.evaluation.generation import generate_answers, generation_accuracy
from feddqc_flwr.evaluation.judge import judge_win_rate
from feddqc_flwr.evaluation.loss import response_nll
from feddqc_flwr.evaluation.similarity import answer_similarity
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.openai_endpoint import ChatEndpoint

# = app.config.EVAL_METRICS (a test checks)
EVAL_METRICS = ("loss", "choice", "generation", "similarity", "judge", "alignment", "exact-match")
_NEEDS_ANSWERS = ("generation", "similarity", "judge", "exact-match")
RowValues = dict[str, list[float | None]]  # metric key (loss, align-acc, ...) -> one value per row, None = n/a


def evaluate_rows(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *,
                  template: str, max_length: int, batch_size: int, max_new_tokens: int,
                  judge: ChatEndpoint | None = None, closed_set: Sequence[str] | None = None,
                  align_candidates: int | None = None, row_values: RowValues | None = None) -> dict[str, float]:
    """Metric values keyed loss, choice-acc, gen-acc, similarity, judge-win-rate, align-acc, exact-match
    (+ row counts); when `row_values` is given, each metric's per-row values are put in it too.

    `closed_set` is the dataset's small answer set (yes/no/maybe); None derives it from `rows`,
    which can miss a rare answer on few rows, so pass one derived from more data when you have it.
    `align_candidates` (the run config's eval-align-candidates) is how many answers compete per
    question in the alignment metric, which needs it.
    """
    unknown = sorted(set(metrics) - set(EVAL_METRICS))
    if unknown:
        raise ValueError(f"unknown evaluation metric(s) {unknown}: known are {', '.join(EVAL_METRICS)}")
    if "judge" in metrics and judge is None:
        raise ValueError("the judge metric needs a ChatEndpoint (judge-url, judge-model)")
    if "alignment" in metrics and align_candidates is None:
        raise ValueError("the alignment metric needs align_candidates (eval-align-candidates)")
    if not rows:
        return {}
    answers_set = closed_answer_set(str(r["response"]) for r in rows) if closed_set is None else tuple(closed_set)
    out: dict[str, float] = {}
    per_row: RowValues = {}
    kwargs = {"template": template, "max_length": max_length, "batch_size": batch_size}
    if "loss" in metrics:
        nll = response_nll(bundle, rows, **kwargs)
        out["loss"], per_row["loss"] = float(np.nanmean(nll)), [float(v) for v in nll]
    if "choice" in metrics:
        values, per_row["choice-acc"] = choice_accuracy(bundle, rows, **kwargs, closed_set=answers_set)
        out.update(values)
    if "alignment" in metrics and align_candidates is not None:
        values, per_row["align-acc"] = alignment_accuracy(bundle, rows, **kwargs, candidates=align_candidates)
        out.update(values)
    if any(m in metrics for m in _NEEDS_ANSWERS):
        answers = generate_answers(bundle, rows, **kwargs, max_new_tokens=max_new_tokens)
        if "generation" in metrics:
            values, per_row["gen-acc"] = generation_accuracy(answers, rows, answers_set)
            out.update(values)
        if "exact-match" in metrics:
            values, per_row["exact-match"] = exact_match(answers, rows)
            out.update(values)
        if "similarity" in metrics:
            out["similarity"], per_row["similarity"] = answer_similarity(answers, [str(r["response"]) for r in rows])
        if "judge" in metrics and judge is not None:
            values, per_row["judge-win-rate"] = judge_win_rate(judge, rows, answers)
            out.update(values)
    if row_values is not None:
        row_values.update(per_row)
    return out
