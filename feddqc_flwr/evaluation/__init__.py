"""Evaluation of an adapter: held-out loss, option-likelihood and generation accuracy, alignment
accuracy, exact match, answer similarity and an optional LLM-judge win rate (`evaluate_rows` runs
the ones asked for)."""

from feddqc_flwr.evaluation.loss import heldout_loss
from feddqc_flwr.evaluation.suite import EVAL_METRICS, RowValues, evaluate_rows

__all__ = ["EVAL_METRICS", "RowValues", "evaluate_rows", "heldout_loss"]
