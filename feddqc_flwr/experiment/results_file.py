"""results.json of an experiment: exact config, versions, commit, all cells, best per arm.

The Markdown view of it (results.md) is the report's job (`report.experiment_tables`), so the
experiment package never imports the report package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feddqc_flwr.app.results import git_commit, package_versions
from feddqc_flwr.experiment.bootstrap import BOOTSTRAP_METHOD
from feddqc_flwr.experiment.paired import CI_METHOD, paired_deltas
from feddqc_flwr.experiment.spec import ExperimentSpec
from feddqc_flwr.experiment.summary import ArmResult

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def write_results(spec: ExperimentSpec, records: Sequence[dict[str, Any]], best: Sequence[ArmResult],
                  out: Path, command: str, app_dir: Path) -> dict[str, Any]:
    """Write results.json (everything) and return its payload.

    `app_git_commit` is the commit of the Flower app the cells ran (runs installed from a FAB
    cannot see their own .git); `git_commit` that of the harness.
    """
    payload = {"experiment": spec.raw, "command": command, "git_commit": git_commit(),
               "app_dir": str(app_dir), "app_git_commit": git_commit(app_dir),
               "packages": package_versions(), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
               "best_per_arm": [b.as_dict() for b in best], "reference_arm": spec.reference_arm,
               "paired_ci_method": CI_METHOD, "paired_bootstrap_method": BOOTSTRAP_METHOD,
               "paired": [d.as_dict() for d in paired_deltas(best, spec.reference_arm, spec.report_metrics)],
               "cells": list(records)}
    (out / RESULTS_JSON).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return payload
