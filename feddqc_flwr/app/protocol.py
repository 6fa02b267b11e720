"""Message types and record keys the ServerApp and the ClientApp share.

Kept apart from the strategy so that the ClientApp can name them without importing the
server side (Flower's strategies, torch).
"""

from __future__ import annotations

from flwr.app import MessageType

SCORE_QUERY = f"{MessageType.QUERY}.score"  # hierarchy start, before the first lambda: score and count
REFERENCE_KEY = "reference-rows"  # JSON rows for scorers that compare against anchors
SKETCH_KEY = "score-sketch"  # a reply's counts of fresh scores on the fixed bins (selection.score_sketch)
