"""Run every cell of an experiment once, resuming after an interruption.

A finished cell leaves cells/<arm>/<params>/seed<k>/cell.json with its final server metrics (and
its test rows' own values, `test_rows`); a rerun skips those and (re)runs the others, so a killed
grid loses at most the cell in flight.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from feddqc_flwr.app.results import last_row_values
from feddqc_flwr.experiment.runner import CellFailed
from feddqc_flwr.experiment.spec import Cell, ExperimentSpec

log = logging.getLogger(__name__)
CELL_FILE = "cell.json"
RunCell = Callable[[Cell, Path], Path]  # (cell, cell_dir) -> run directory with summary.json


def cell_dir(root: Path, cell: Cell) -> Path:
    return root / "cells" / cell.cell_id


def load_cell(root: Path, cell: Cell) -> dict[str, Any] | None:
    """The record of a finished cell, or None."""
    path = cell_dir(root, cell) / CELL_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("status") == "done" else None


def final_test_rows(run_dir: Path) -> dict[str, Any] | None:
    """The final evaluation's test rows: their sample ids and each test-* metric's per-row values
    (None for a run without row-values.jsonl). The paired bootstrap resamples these."""
    line = last_row_values(run_dir)
    if line is None:
        return None
    return {"sample_ids": line["sample_ids"].get("test", []),
            "values": {k: v for k, v in line["values"].items() if k.startswith("test-")}}


def _record(cell: Cell, status: str, **extra: Any) -> dict[str, Any]:
    return {"cell": cell.cell_id, "arm": cell.arm, "params": dict(cell.params), "seed": cell.seed,
            "run_config": dict(cell.run_config), "status": status, **extra}


def run_grid(spec: ExperimentSpec, root: Path, run_cell: RunCell, *, run: bool = True) -> list[dict[str, Any]]:
    """Run the cells not finished yet (none with run=False); return every cell's record."""
    records = []
    cells = spec.cells()
    todo = [c for c in cells if load_cell(root, c) is None] if run else []
    log.info("experiment %s: %d cells, %d already finished", spec.name, len(cells), len(cells) - len(todo))
    for cell in tqdm(todo, desc=f"experiment {spec.name}", unit="cell"):
        folder = cell_dir(root, cell)
        shutil.rmtree(folder, ignore_errors=True)  # a half-written cell from an interrupted run
        folder.mkdir(parents=True)
        started = time.time()
        try:
            run_dir = run_cell(cell, folder)
        except CellFailed as err:
            log.error("%s", err)
            (folder / CELL_FILE).write_text(json.dumps(_record(cell, "failed", error=str(err)), indent=2))
            continue
        summary = json.loads((run_dir / "summary.json").read_text())
        record = _record(cell, "done", run_dir=str(run_dir.resolve().relative_to(root.resolve())),
                         seconds=time.time() - started,
                         metrics=summary.get("final_server_eval") or {}, test_rows=final_test_rows(run_dir))
        (folder / CELL_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
    for cell in cells:
        path = cell_dir(root, cell) / CELL_FILE
        records.append(json.loads(path.read_text()) if path.is_file() else _record(cell, "missing"))
    return records
