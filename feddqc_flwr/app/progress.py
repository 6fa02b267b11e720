"""The server's running report: each metrics.jsonl record becomes console lines (the scoring step
of a hierarchy start, then the round) and tracker scalars; the end of the run prints the table of
rounds and the verdict."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.app.console import final_table, header, round_line, round_seconds, scoring_line
from feddqc_flwr.app.tracking import RunTracking
from feddqc_flwr.app.verdict import compute_verdict, format_verdict

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`


class RunProgress:
    """Fed every record the run writes; owns the trackers for the run's lifetime."""

    def __init__(self, cfg: RunConfig, run_dir: Path) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.records: list[dict[str, Any]] = []
        self.tracking = RunTracking(cfg, run_dir)

    def start(self, pool_rows: int, valid_rows: int, test_rows: int) -> None:
        log.info("%s", header(self.cfg, self.run_dir.name, pool_rows, valid_rows, test_rows))

    def record(self, record: Mapping[str, Any]) -> None:
        """One round's record, as written to metrics.jsonl."""
        self.records.append(dict(record))
        seconds = round_seconds(self.records[-2:])[-1]  # the last two records suffice
        if record.get("rescore"):
            log.info("%s", scoring_line(record, self.cfg.stages))
        log.info("%s", round_line(record, self.cfg.num_server_rounds, self.cfg.stages, seconds))
        self.tracking.log_record(record)

    def verdict(self, elapsed: float) -> dict[str, Any]:
        return compute_verdict(self.records, elapsed)

    def finish(self, verdict: Mapping[str, Any]) -> None:
        """The last lines of the run: every round, then the verdict; trackers get the verdict and close."""
        text = format_verdict(verdict)
        log.info("rounds:\n%s\n%s", final_table(self.records), text)
        self.tracking.finish(verdict, text)

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """A run that raised closes its trackers' runs as failed (W&B/MLflow would show it running)."""
        if exc_type is not None:
            self.tracking.close(failed=True)
