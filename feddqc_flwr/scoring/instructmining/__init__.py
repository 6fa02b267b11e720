"""InstructMining (Cao et al., arXiv 2307.06290): indicators, a linear loss rule, data-size search."""

from feddqc_flwr.scoring.instructmining.scorer import InstructMiningScorer

__all__ = ["InstructMiningScorer"]
