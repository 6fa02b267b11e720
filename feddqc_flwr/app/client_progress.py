"""A client's place in the hierarchy schedule (Algorithm 1), kept in `context.state` across rounds.

`pool` is D_n: every row not trained yet. At a stage start the client re-scores the whole pool
with the global model; `select_stage` picks the stage's part H_n(k), which leaves the pool for
good (D_n = D_n \\ H_n(k)). Rows under lambda stay in the pool to be re-examined by a better
model at the next stage (`filtered-rows = "rescore"`), or leave it (`"drop"`).
Only sample indices and the client's own scores are stored, on the client: nothing here is
sent to the server. `context.state` survives the rounds of one run, in simulation and, while the
SuperNode process lives, in deployment; a restarted SuperNode or a new (resumed) run starts
empty, and the client then scores its whole pool for the current stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from feddqc_flwr.selection.hierarchy import StageSelection

STATE_KEY = "feddqc-progress"


@dataclass
class ClientProgress:
    """pool = rows not trained (nor dropped for good); stage_train = this stage's part; trained = all parts so far.

    `dropped` counts the rows under lambda: at the last selection (rescore) or in total (drop).
    """

    pool: list[int]
    stage_train: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
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
        return cls(pool=list(rec["pool"]), stage_train=list(rec["stage-train"]), trained=list(rec["trained"]),
                   dropped=int(rec["dropped"]), selected_stage=int(rec["selected-stage"]),
                   scored_stage=int(rec["scored-stage"]), scored_ids=list(rec["scored-ids"]),
                   scores=[float(s) for s in rec["scores"]])

    def save(self, state: RecordDict) -> None:
        state.config_records[STATE_KEY] = ConfigRecord({
            "pool": [int(i) for i in self.pool], "stage-train": [int(i) for i in self.stage_train],
            "trained": [int(i) for i in self.trained],
            "dropped": self.dropped, "selected-stage": self.selected_stage,
            "scored-stage": self.scored_stage, "scored-ids": [int(i) for i in self.scored_ids],
            "scores": [float(s) for s in self.scores],
        })

    def take_stage(self, stage: int, selection: StageSelection, filtered_rows: str) -> None:
        """Record a stage's selection: its part leaves the pool; rows under lambda stay unless dropped."""
        self.stage_train = list(selection.train_ids)
        self.trained += self.stage_train
        if filtered_rows == "rescore":
            self.pool = sorted([*selection.waiting_ids, *selection.dropped_ids])
            self.dropped = len(selection.dropped_ids)
        else:
            self.pool = list(selection.waiting_ids)
            self.dropped += len(selection.dropped_ids)
        self.selected_stage = stage

    def score_array(self) -> np.ndarray:
        return np.asarray(self.scores, dtype=np.float64)
