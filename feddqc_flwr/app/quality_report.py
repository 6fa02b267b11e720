"""A data owner's per-row quality report, kept on the client's own disk and never sent.

The server sees only bin counts and scalar metrics; the person who owns the rows wants to know
which of them the filter judged bad, and why. At every hierarchy start, right after the client
selects its stage part, it rewrites

    <folder>/quality-partition-<p>-of-<n>.jsonl   the report (below)
    <folder>/quality-partition-<p>-of-<n>.png     per hierarchy and criterion, a score histogram with λ

next to its progress file (`client_progress.progress_path`), or under `results.client_local_dir`
when the server names no lineage. Selections happen only at hierarchy starts, so the file written
by the last one is the final report; each rewrite is complete on its own.

The report is JSON lines. Line 1 is the header:
    {"feddqc-quality-report": 1, "partition": 0, "num-partitions": 2, "criteria": ["ira-sum", "loss"],
     "lambda": {"1": [-3.1, -2.4]}, "synthetic": true, "rows": 17}
then one object per training row, e.g.
    {"index": 3, "sample_id": "demo-9", "tag": "swap", "trained_in": null,
     "hierarchies": {"1": {"scores": {"ira-sum": -4.2, "loss": -2.0}, "kept": false, "trained": false}},
     "instruction": "...", "input": "", "response": "..."}
`index` is the row's position in the client's training split (what the progress file stores),
`hierarchies` has an entry for every hierarchy at which the row was scored (null = unscorable;
a null λ is -inf, sent when the server has no λ: every scorable row passes),
`tag` is the synthetic corruption type ("clean" or e.g. "swap"), null on real data. The text is
stored too: it is the owner's own data on the owner's own disk, and `feddqc inspect` then needs
neither the dataset nor the run config.

History: the previous report's entries are kept and this hierarchy's replace any it had, with
every later hierarchy's (a restarted or resumed client redoing a hierarchy). The report is
written before the progress file, so a client killed in between redoes the selection and the
report entry with it. Files are replaced atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from feddqc_flwr.app.client_progress import ClientProgress
from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.app.quality_plot import render_summary
from feddqc_flwr.data.partition import client_corrupt_ratios
from feddqc_flwr.errors import UserError
from feddqc_flwr.selection.hierarchy import passes_all

if TYPE_CHECKING:
    from datasets import Dataset

log = logging.getLogger("flwr").getChild(__name__)

FORMAT_KEY, FORMAT_VERSION = "feddqc-quality-report", 1
TEXT_FIELDS = ("instruction", "input", "response")


class ReportError(UserError):
    """A file that is missing or is not a quality report (`feddqc inspect` exits 2 with its message)."""


def report_paths(folder: Path, partition_id: int, num_partitions: int) -> tuple[Path, Path]:
    """The report and its PNG summary for one partition."""
    stem = f"quality-partition-{partition_id}-of-{num_partitions}"  # not partition-*.jsonl: data-map files
    return folder / f"{stem}.jsonl", folder / f"{stem}.png"


def _parse_line(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: line {number} is not JSON ({err.msg})") from None
    if not isinstance(obj, dict):
        raise ReportError(f"{path}: line {number} is not a JSON object")
    return obj


def read_report(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, rows) of a report; ReportError naming the file (and line) when it is not one."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ReportError(f"{path}: cannot read it ({err})") from None
    header = _parse_line(path, 1, lines[0]) if lines else {}
    if header.get(FORMAT_KEY) != FORMAT_VERSION or not isinstance(header.get("criteria"), list) \
            or not isinstance(header.get("lambda"), dict):
        raise ReportError(f"{path}: not a FedDQC quality report (line 1 is no '{FORMAT_KEY}' header)")
    rows = [_parse_line(path, number, line) for number, line in enumerate(lines[1:], start=2)]
    for number, row in enumerate(rows, start=2):
        if not isinstance(row.get("hierarchies"), dict) or not {"index", "sample_id"} <= row.keys():
            raise ReportError(f"{path}: line {number} is not a report row (index, sample_id, hierarchies)")
    return header, rows


def _previous_history(path: Path, row_ids: list[str], criteria: list[str]) -> tuple[dict[str, Any], list[dict]]:
    """Per-hierarchy λ and per-row entries of the report already there, if it is about these rows."""
    fresh: tuple[dict[str, Any], list[dict]] = ({}, [{} for _ in row_ids])
    if not path.is_file():
        return fresh
    try:
        header, rows = read_report(path)
    except ReportError as err:
        log.warning("%s; starting it afresh", err)
        return fresh
    if header.get("criteria") != criteria or [r["sample_id"] for r in rows] != row_ids:
        log.warning("%s was written for other rows or criteria: starting it afresh", path)
        return fresh
    return dict(header["lambda"]), [dict(r["hierarchies"]) for r in rows]


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader (or a restarted client) sees the old or the new file whole."""
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with staging.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(staging, path)


def _is_synthetic(cfg: RunConfig, partition_id: int, num_partitions: int) -> bool:
    """Whether this client's rows were corrupted on purpose, so their `bad_type` tags mean something."""
    return client_corrupt_ratios(cfg.data_spec, num_partitions)[partition_id] > 0


def _build_report(rows: Dataset, progress: ClientProgress, criteria: Sequence[str], thresholds: np.ndarray,
                 previous: tuple[dict[str, Any], list[dict]], synthetic: bool,
                 partition: tuple[int, int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report after `progress.selected_stage`'s selection, on top of the previous one's history."""
    stage, names = progress.selected_stage, list(criteria)
    old_lambda, old_entries = previous
    matrix = progress.score_matrix()
    kept = passes_all(matrix, thresholds)
    trained = set(progress.stage_train)
    current = {int(i): {"scores": {name: _number(s) for name, s in zip(names, matrix[r], strict=True)},
                        "kept": bool(kept[r]), "trained": int(i) in trained}
               for r, i in enumerate(progress.scored_ids)}
    lambdas = {k: v for k, v in old_lambda.items() if int(k) < stage}
    lambdas[str(stage)] = [_number(t) for t in thresholds]  # -inf (keep all) -> null
    header = {FORMAT_KEY: FORMAT_VERSION, "partition": partition[0], "num-partitions": partition[1],
              "criteria": names, "lambda": lambdas, "synthetic": synthetic, "rows": len(rows)}
    columns = {c: list(rows[c]) for c in ("sample_id", "bad_type", *TEXT_FIELDS)}
    out = []
    for index, old in enumerate(old_entries):
        entries = {k: v for k, v in old.items() if int(k) < stage}
        if index in current:
            entries[str(stage)] = current[index]
        trained_in = min((int(k) for k, e in entries.items() if e["trained"]), default=None)
        out.append({"index": index, "sample_id": columns["sample_id"][index],
                    "tag": columns["bad_type"][index] if synthetic else None, "trained_in": trained_in,
                    "hierarchies": dict(sorted(entries.items(), key=lambda item: int(item[0]))),
                    **{f: columns[f][index] for f in TEXT_FIELDS}})
    return header, out


def write_quality_report(folder: Path, cfg: RunConfig, partition: tuple[int, int], rows: Dataset,
                         progress: ClientProgress, thresholds: np.ndarray) -> Path:
    """Rewrite this partition's report and PNG after the selection of `progress.selected_stage`."""
    report, picture = report_paths(folder, *partition)
    folder.mkdir(parents=True, exist_ok=True)
    previous = _previous_history(report, list(rows["sample_id"]), list(cfg.criteria))
    header, out = _build_report(rows, progress, cfg.criteria, thresholds, previous,
                               _is_synthetic(cfg, *partition), partition)
    lines = [json.dumps(header, ensure_ascii=False)] + [json.dumps(r, ensure_ascii=False) for r in out]
    _replace_atomically(report, ("\n".join(lines) + "\n").encode("utf-8"))
    _replace_atomically(picture, render_summary(header, out))
    return report
