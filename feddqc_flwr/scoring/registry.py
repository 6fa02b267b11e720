"""Scorers by name, for the run config's `scorer` key and `feddqc score --scorer`."""

from __future__ import annotations

from feddqc_flwr.scoring.base import Scorer
from feddqc_flwr.scoring.criteria import ALIGNMENT_AND_FIT
from feddqc_flwr.scoring.datainf import DataInfScorer
from feddqc_flwr.scoring.ds2 import DS2Scorer
from feddqc_flwr.scoring.instructmining import InstructMiningScorer
from feddqc_flwr.scoring.likelihood import IFDScorer, IRAScorer, LossScorer, PerplexityScorer
from feddqc_flwr.scoring.nuggets import NuggetsScorer
from feddqc_flwr.scoring.random_scorer import RandomScorer

DEFAULT_SCORER = "ira-sum+loss"  # best worst-type kept-clean share in benchmarks/selection.json (README)
SCORERS: dict[str, Scorer] = {s.name: s for s in (
    IRAScorer(), IRAScorer("sum"), PerplexityScorer(), LossScorer(), IFDScorer(), NuggetsScorer(), DataInfScorer(),
    RandomScorer(), DS2Scorer(), InstructMiningScorer(), ALIGNMENT_AND_FIT,
)}
NEEDS_REFERENCE = ("nuggets", "datainf")  # scorers that read ScoringContext.reference_rows


def get_scorer(name: str) -> Scorer:
    """The scorer registered as `name`; a ValueError lists the known names."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}: known are {', '.join(SCORERS)}") from None
