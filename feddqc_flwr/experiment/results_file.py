"""results.json and results.md of an experiment: exact config, versions, commit, all cells, best per arm."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feddqc_flwr.experiment.spec import ExperimentSpec
from feddqc_flwr.experiment.summary import ArmResult
from feddqc_flwr.report.document import Document
from feddqc_flwr.results import git_commit, package_versions

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def best_rows(spec: ExperimentSpec, best: Sequence[ArmResult]) -> tuple[list[str], list[list[Any]]]:
    """The arm comparison table: best params (on validation) and test metrics over seeds."""
    header = ["arm", "best params (on validation)", spec.select_metric, *spec.report_metrics]
    rows = [[b.arm, ", ".join(f"{k}={v}" for k, v in b.params.items()) or "default", str(b.select),
             *(str(b.report[m]) for m in spec.report_metrics)] for b in best]
    return header, rows


def cell_rows(spec: ExperimentSpec, records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Every cell with its selection and report metrics."""
    header = ["arm", "params", "seed", "status", spec.select_metric, *spec.report_metrics]
    rows = [[r["arm"], ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "default", r["seed"], r["status"],
             *(r.get("metrics", {}).get(m, math.nan) for m in (spec.select_metric, *spec.report_metrics))]
            for r in records]
    return header, rows


def write_results(spec: ExperimentSpec, records: Sequence[dict[str, Any]], best: Sequence[ArmResult],
                  out: Path, command: str, app_dir: Path) -> Path:
    """Write results.json (everything) and results.md (the two tables); return the JSON path.

    `app_git_commit` is the commit of the Flower app the cells ran (runs installed from a FAB
    cannot see their own .git); `git_commit` that of the harness.
    """
    payload = {"experiment": spec.raw, "command": command, "git_commit": git_commit(),
               "app_dir": str(app_dir), "app_git_commit": git_commit(app_dir),
               "packages": package_versions(), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
               "best_per_arm": [b.as_dict() for b in best], "cells": list(records)}
    path = out / RESULTS_JSON
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    doc = Document(f"Experiment {spec.name}")
    doc.text(f"Command: `{command}`  \nApp commit (cells): `{payload['app_git_commit']}`, "
             f"harness commit: `{payload['git_commit']}`")
    doc.heading("Best per arm")
    doc.text(f"Hyperparameters chosen by mean `{spec.select_metric}` over seeds; test metrics as "
             "mean ± sample std over seeds.")
    doc.table(*best_rows(spec, best))
    doc.heading("All cells")
    doc.table(*cell_rows(spec, records))
    (out / RESULTS_MD).write_text(doc.markdown())
    return path
