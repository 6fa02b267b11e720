"""DS2 (UCSC-REAL/DS2) score curation: LLM rating, HOC transition matrix, k-NN curation, diversity."""

from feddqc_flwr.scoring.ds2.scorer import DS2Scorer

__all__ = ["DS2Scorer"]
