"""results.md of an experiment: the best-per-arm table and every cell, from results.json's payload."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feddqc_flwr.experiment.results_file import RESULTS_MD
from feddqc_flwr.experiment.spec import ExperimentSpec
from feddqc_flwr.experiment.summary import ArmResult
from feddqc_flwr.report.document import Document


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


def paired_rows(payload: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Each arm minus the reference arm, per metric: mean of per-seed differences, its 95 % t interval,
    and the paired bootstrap interval over seeds x test rows with the rows paired per seed."""
    header = ["arm", f"metric (arm - {payload['reference_arm']})", "mean delta", "95 % CI", "sd", "n", "per seed",
              "bootstrap 95 % (seeds x rows)", "rows per seed"]
    rows = []
    for d in payload["paired"]:
        interval = f"[{d['ci_low']:+.4g}, {d['ci_high']:+.4g}]" if d["n"] > 1 else "n/a"
        per_seed = ", ".join(f"{s}: {v:+.4g}" for s, v in zip(d["seeds"], d["deltas"], strict=True))
        row_counts = d.get("rows") or []  # results.json written before row values has none
        boot = f"[{d['boot_low']:+.4g}, {d['boot_high']:+.4g}]" if row_counts else "n/a"
        rows.append([d["arm"], d["metric"], f"{d['mean']:+.4g}" if d["n"] else "n/a", interval,
                     f"{d['std']:.2g}" if d["n"] > 1 else "n/a", d["n"], per_seed, boot,
                     ", ".join(str(r) for r in row_counts) or "n/a"])
    return header, rows


def write_results_md(spec: ExperimentSpec, records: Sequence[dict[str, Any]], best: Sequence[ArmResult],
                     payload: dict[str, Any], out: Path) -> Path:
    """Write results.md (the two tables) next to results.json; return its path."""
    doc = Document(f"Experiment {spec.name}")
    doc.text(f"Command: `{payload['command']}`  \nApp commit (cells): `{payload['app_git_commit']}`, "
             f"harness commit: `{payload['git_commit']}`")
    doc.heading("Best per arm")
    doc.text(f"Hyperparameters chosen by mean `{spec.select_metric}` over seeds; test metrics as "
             "mean ± sample std over seeds.")
    doc.table(*best_rows(spec, best))
    doc.heading(f"Paired differences to {payload['reference_arm']}")
    doc.text(f"Per seed, each arm (at its own best hyperparameters) minus the reference arm on the same "
             f"evaluation rows; interval: {payload['paired_ci_method']}. An interval that excludes 0 "
             "is a difference beyond seed noise. The bootstrap interval "
             f"({payload.get('paired_bootstrap_method', 'n/a')}) also resamples the test rows, paired "
             "between the arms: beyond it, the difference is beyond seed and test-row noise.")
    doc.table(*paired_rows(payload))
    doc.heading("All cells")
    doc.table(*cell_rows(spec, records))
    path = out / RESULTS_MD
    path.write_text(doc.markdown())
    return path
