"""A client's place in the hierarchy schedule (Algorithm 1), kept across rounds, restarts and resumes.

`pool` is D_n: every row not trained yet. At a stage start the client re-scores the whole pool
with the global model; `select_stage` picks the stage's part H_n(k), which leaves the pool for
good (D_n = D_n \\ H_n(k)). Rows under lambda stay in the pool to be re-examined by a better
model at the next stage (`filtered-rows = "rescore"`), or leave it (`"drop"`).
Only sample indices and the client's own scores are stored, on the client: nothing here is
sent to the server.

Two copies: `context.state` (fast; lives as long as the run and, in deployment, the SuperNode
process) and, when the server names the run's lineage (`PROGRESS_CONFIG` in the round config), a
node-local JSON file (`progress_path`):
`<output-dir of the first run>/client-local/progress-<run key>/partition-<p>-of-<n>.json`.
The run key stays the same across `resume-from`, so a restarted SuperNode or a resumed run reads
its progress back instead of re-scoring, and re-training, rows of earlier stages; a brand-new run
has a new key and never sees another run's file. The file keeps one snapshot per (Flower run id,
server round) that changed the progress, and the lineage (which Flower run did which rounds) says
which snapshots count: a snapshot saved in a round the server never completed belongs to a run
that the resumed one does not continue from, so it is ignored and the progress of the last
completed round is used instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from feddqc_flwr.selection.hierarchy import StageSelection

if TYPE_CHECKING:  # a model-free message must not import datasets
    from datasets import Dataset

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`

STATE_KEY = "feddqc-progress"
PROGRESS_CONFIG = "progress"  # round-config key: the run's lineage as JSON (RunLineage.to_config)
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # the key names a folder: no '/', no '..'


@dataclass
class ClientProgress:
    """pool = rows not trained (nor dropped for good); stage_train = this stage's part; trained = all parts so far.

    `dropped` counts the rows under lambda: at the last selection (rescore) or in total (drop).
    `scores` holds one list of keep-scores per scored row, one per criterion.
    """

    pool: list[int]
    stage_train: list[int] = field(default_factory=list)
    trained: list[int] = field(default_factory=list)
    dropped: int = 0
    selected_stage: int = 0
    scored_stage: int = 0
    scored_ids: list[int] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    score_columns: int = 1  # criteria per row: the shape of `scores` even when no row is left

    @classmethod
    def load(cls, state: RecordDict, num_samples: int) -> ClientProgress:
        """The progress in `context.state`, or a fresh one whose pool is every training sample."""
        if STATE_KEY not in state.config_records:
            return cls(pool=list(range(num_samples)))
        return cls.from_record(state.config_records[STATE_KEY])

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ClientProgress:
        flat, columns = [float(s) for s in rec["scores"]], int(rec["score-columns"])
        return cls(pool=list(rec["pool"]), stage_train=list(rec["stage-train"]), trained=list(rec["trained"]),
                   dropped=int(rec["dropped"]), selected_stage=int(rec["selected-stage"]),
                   scored_stage=int(rec["scored-stage"]), scored_ids=list(rec["scored-ids"]),
                   scores=[flat[i:i + columns] for i in range(0, len(flat), columns)], score_columns=columns)

    def as_record(self) -> dict[str, Any]:
        """Flat lists only (a ConfigRecord holds no nested lists): scores row by row, `score-columns` wide."""
        return {
            "pool": [int(i) for i in self.pool], "stage-train": [int(i) for i in self.stage_train],
            "trained": [int(i) for i in self.trained],
            "dropped": self.dropped, "selected-stage": self.selected_stage,
            "scored-stage": self.scored_stage, "scored-ids": [int(i) for i in self.scored_ids],
            "scores": [float(s) for row in self.scores for s in row],
            "score-columns": len(self.scores[0]) if self.scores else self.score_columns,
        }

    def save(self, state: RecordDict) -> None:
        state.config_records[STATE_KEY] = ConfigRecord(self.as_record())

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

    def score_matrix(self) -> np.ndarray:
        """(scored rows, criteria) keep-scores of the last scoring, in `scored_ids` order."""
        columns = len(self.scores[0]) if self.scores else self.score_columns
        return np.asarray(self.scores, dtype=np.float64).reshape(len(self.scored_ids), columns)


@dataclass(frozen=True)
class RunLineage:
    """Which client progress a run continues, sent by the server in every score/histogram/train config.

    `key` names the progress files and is the same for a run and every run resumed from it;
    `output_dir` is the first run's `output-dir`, so a resumed run may write its results elsewhere
    and clients still find their files; `runs` lists (Flower run id, first server round it ran),
    oldest first: the rounds each run of the chain completed, up to where the next one resumed.
    """

    key: str
    output_dir: str
    runs: tuple[tuple[int, int], ...]

    def resumed(self, run_id: int, first_round: int) -> RunLineage:
        """The lineage of a run that continues this one at `first_round`."""
        earlier = tuple((r, first) for r, first in self.runs if first < first_round)
        return RunLineage(self.key, self.output_dir, (*earlier, (run_id, first_round)))

    def covers(self, run_id: int, server_round: int, current_round: int) -> bool:
        """Whether progress saved by `run_id` in `server_round` is part of this lineage up to `current_round`.

        A run's rounds count from its first round up to the next run's first round (exclusive), or
        up to `current_round` for the last run; a crashed run's later rounds were never completed,
        so the run resumed from it redoes them.
        """
        for i, (rid, first) in enumerate(self.runs):
            end = self.runs[i + 1][1] - 1 if i + 1 < len(self.runs) else current_round
            if rid == run_id and first <= server_round <= end:
                return True
        return False

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "output-dir": self.output_dir, "runs": [list(r) for r in self.runs]}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunLineage:
        key = str(raw["key"])
        if not _SAFE_KEY.fullmatch(key):
            raise ValueError(f"progress key {key!r} is not a plain folder name")
        return cls(key, str(raw["output-dir"]), tuple((int(r), int(first)) for r, first in raw["runs"]))

    def to_config(self) -> dict[str, str]:
        """The round-config entry (JSON: run ids are uint64, more than a ConfigRecord int holds)."""
        return {PROGRESS_CONFIG: json.dumps(self.as_json())}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunLineage | None:
        """The lineage in a round config; None from a server that sends none (then only context.state)."""
        return cls.from_json(json.loads(str(config[PROGRESS_CONFIG]))) if PROGRESS_CONFIG in config else None


def rows_digest(rows: Dataset) -> str:
    """Fingerprint of a client's training rows: saved indices mean nothing if the rows changed."""
    digest = hashlib.sha256()
    for column in ("sample_id", "instruction", "input", "response"):
        digest.update(json.dumps(list(rows[column])).encode())
    return digest.hexdigest()


def progress_path(output_root: Path, key: str, partition_id: int, num_partitions: int) -> Path:
    """Node-local progress file of one partition for one run lineage."""
    return output_root / "client-local" / f"progress-{key}" / f"partition-{partition_id}-of-{num_partitions}.json"


@dataclass(frozen=True)
class ProgressFile:
    """One client's progress snapshots on its own disk, read and written for one message.

    `run_id` and `server_round` are the message's; `lineage` says which snapshots count. A file
    made from other rows (`rows_digest`), or one that cannot be read or parsed, is ignored with a
    warning and replaced on the next save: the client starts afresh rather than fail every message.
    The digest is taken only when the file is read or written (at most at a stage start), not on
    every message.
    """

    path: Path
    lineage: RunLineage
    run_id: int
    server_round: int
    rows: Dataset

    @functools.cached_property
    def digest(self) -> str:
        return rows_digest(self.rows)

    def _snapshots(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError) as err:  # ValueError: not JSON or not UTF-8 (e.g. left empty by a power cut)
            log.warning("%s cannot be read (%s): ignoring it, as if this node had no progress saved", self.path, err)
            return []
        if saved.get("rows-digest") != self.digest:
            log.warning("%s was saved for other training rows (the node's data changed?): ignoring it",
                        self.path)
            return []
        return list(saved["snapshots"])

    def load(self) -> ClientProgress | None:
        """The latest snapshot of this lineage, or None when there is none."""
        valid = [s for s in self._snapshots()
                 if self.lineage.covers(int(s["run-id"]), int(s["round"]), self.server_round)]
        if not valid:
            return None
        return ClientProgress.from_record(max(valid, key=lambda s: int(s["round"]))["progress"])

    def save(self, progress: ClientProgress) -> None:
        """Add (or replace) this message's snapshot; written whole to a temporary file, flushed to the
        disk and renamed, so a client killed (or a machine losing power) while saving leaves the
        previous file, never a renamed file whose contents had not reached the disk yet."""
        snapshots = [s for s in self._snapshots()
                     if (int(s["run-id"]), int(s["round"])) != (self.run_id, self.server_round)]
        snapshots.append({"run-id": self.run_id, "round": self.server_round, "progress": progress.as_record()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with staging.open("w") as fh:
            fh.write(json.dumps({"key": self.lineage.key, "rows-digest": self.digest, "snapshots": snapshots}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staging, self.path)


def load_progress(state: RecordDict, num_samples: int, store: ProgressFile | None) -> ClientProgress:
    """This run's progress: `context.state`, else the node-local file (copied into `context.state`
    for the next messages), else a fresh pool of every row."""
    if STATE_KEY in state.config_records or store is None:
        return ClientProgress.load(state, num_samples)
    restored = store.load()
    if restored is not None:
        log.info("restored hierarchy progress from %s (stage %d selected)", store.path, restored.selected_stage)
        restored.save(state)
        return restored
    if len(store.lineage.runs) > 1:
        log.warning("resumed run, but no progress for it in %s: scoring the whole pool; rows this node trained "
                    "in earlier stages may be trained again", store.path)
    return ClientProgress(pool=list(range(num_samples)))


def save_progress(progress: ClientProgress, state: RecordDict, store: ProgressFile | None) -> None:
    """Keep `progress` in `context.state` and, when the server named a lineage, on the node's disk."""
    progress.save(state)
    if store is not None:
        store.save(progress)
