"""A client's place in the hierarchy schedule, kept in `context.state` across rounds.

Only sample indices and the client's own scores are stored, on the client: nothing here is
sent to the server. `context.state` survives the rounds of one run, in simulation and, while the
SuperNode process lives, in deployment; a restarted SuperNode or a new (resumed) run starts
empty, and the client then scores its whole pool for the current stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, RecordDict

STATE_KEY = "feddqc-progress"


@dataclass
class ClientProgress:
    """Pool = samples neither trained nor dropped; stage_train = this stage's training set."""

    pool: list[int]
    stage_train: list[int] = field(default_factory=list)
    dropped: int = 0
    selected_stage: int = 0
    scored_stage: int = 0
    scored_ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @classmethod
    def load(cls, state: RecordDict, num_samples: int) -> ClientProgress:
        """The stored progress, or a fresh one whose pool is every training sample."""
        if STATE_KEY not in state.config_records:
            return cls(pool=list(range(num_samples)))
        rec = state.config_records[STATE_KEY]
        return cls(pool=list(rec["pool"]), stage_train=list(rec["stage-train"]),
                   dropped=int(rec["dropped"]), selected_stage=int(rec["selected-stage"]),
                   scored_stage=int(rec["scored-stage"]), scored_ids=list(rec["scored-ids"]),
                   scores=[float(s) for s in rec["scores"]])

    def save(self, state: RecordDict) -> None:
        state.config_records[STATE_KEY] = ConfigRecord({
            "pool": [int(i) for i in self.pool], "stage-train": [int(i) for i in self.stage_train],
            "dropped": self.dropped, "selected-stage": self.selected_stage,
            "scored-stage": self.scored_stage, "scored-ids": [int(i) for i in self.scored_ids],
            "scores": [float(s) for s in self.scores],
        })

    def score_array(self) -> np.ndarray:
        return np.asarray(self.scores, dtype=np.float64)
