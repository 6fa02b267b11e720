"""Assemble the run report (plots + tables) and the experiment report (arm comparison)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from feddqc_flwr.experiment.results_file import RESULTS_JSON  # noqa: E402
from feddqc_flwr.report.document import Document  # noqa: E402
from feddqc_flwr.report.ds2_section import add_ds2_section  # noqa: E402
from feddqc_flwr.report.experiment_tables import paired_rows  # noqa: E402
from feddqc_flwr.report.plots import RUN_PLOTS  # noqa: E402
from feddqc_flwr.report.run_data import RunData, load_run  # noqa: E402

CONFIG_KEYS = ("method", "scorer", "strategy", "order", "threshold-mode", "retention", "ira-lambda",
               "num-server-rounds", "hierarchies", "local-steps", "batch-size", "lr-max", "model", "dataset",
               "corrupt-type", "corrupt-ratio", "partitioner", "seed")


def run_report(run: RunData, out: Path) -> tuple[Document, list[str]]:
    """The report of one run; figures are written into `out`. Returns the document and the plots made."""
    doc = Document(f"FedDQC run {run.run_dir.name}")
    config = run.run_config
    doc.heading("Configuration")
    doc.table(["key", "value"], [[k, config.get(k, "")] for k in CONFIG_KEYS if k in config])
    doc.text(f"Full config, package versions and commit ({run.config.get('git_commit', 'unknown')}) "
             "are in config.json next to this report.")
    final = run.summary.get("final_server_eval") or {}
    if final:
        doc.heading("Final evaluation")
        doc.table(["metric", "value"], sorted(final.items()))
    add_ds2_section(doc, run)
    made, missing = [], []
    doc.heading("Figures")
    for name, plot in RUN_PLOTS.items():
        caption = plot(run, out / f"{name}.png")
        if caption is None:
            missing.append(name)
        else:
            made.append(name)
            doc.image(f"{name}.png", caption)
    if missing:
        doc.text(f"Not in this run (no data for them): {', '.join(missing)}.")
    return doc, made


def _arm_plot(best: list[dict[str, Any]], metric: str, path: Path) -> None:
    arms = [b["arm"] for b in best]
    means = [b["report"][metric]["mean"] for b in best]
    stds = [b["report"][metric]["std"] for b in best]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(arms)), 4))
    ax.errorbar(range(len(arms)), means, yerr=stds, fmt="o", capsize=5)
    for b in best:  # every seed of the chosen cell, so a reader sees the spread behind the bar
        seeds = b.get("seed_values", {}).get(metric, [])
        ax.scatter([arms.index(b["arm"])] * len(seeds), seeds, marker="x", color="grey", zorder=3)
    ax.set_xticks(range(len(arms)), arms, rotation=30)
    ax.set(ylabel=metric, title=f"{metric} per arm\n(best on validation; mean ± std, x = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _paired_plot(paired: list[dict[str, Any]], reference: str, metric: str, path: Path) -> bool:
    """Mean per-seed difference to the reference arm with its 95 % interval, and every seed's difference."""
    rows = [d for d in paired if d["metric"] == metric and d["n"] > 0]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 0.6 * len(rows) + 1.6))
    for y, d in enumerate(rows):
        if d["n"] > 1:
            ax.errorbar([d["mean"]], [y], xerr=[[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]],
                        fmt="o", capsize=5, color="C0")
        else:
            ax.plot([d["mean"]], [y], "o", color="C0")
        ax.scatter(d["deltas"], [y] * d["n"], marker="x", color="grey", zorder=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [d["arm"] for d in rows])
    ax.set(xlabel=f"{metric}: arm - {reference}",
           title=f"Paired difference to {reference}\n(mean, 95 % t interval; x = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def experiment_report(root: Path, out: Path) -> Document:
    """The arm comparison of an experiment folder, linking a run report per arm's best cell."""
    results = json.loads((root / RESULTS_JSON).read_text())
    spec = results["experiment"]
    select = spec.get("select-metric", "valid-loss")
    doc = Document(f"Experiment {spec.get('name', root.name)}")
    doc.text(f"Command: {results['command']}. Commit {results['git_commit']}. Hyperparameters per arm chosen "
             f"on {select} (validation split); test metrics are mean ± sample std over seeds.")
    best = results["best_per_arm"]
    metrics = list(spec.get("report-metrics", ["test-loss"]))
    doc.heading("Arm comparison")
    doc.table(["arm", "best params", select, *metrics],
              [[b["arm"], ", ".join(f"{k}={v}" for k, v in b["params"].items()) or "default",
                f"{b['select']['mean']:.4g} ± {b['select']['std']:.2g}",
                *(f"{b['report'][m]['mean']:.4g} ± {b['report'][m]['std']:.2g} (n={b['report'][m]['n']})"
                  for m in metrics)] for b in best])
    for metric in metrics:
        if best:
            _arm_plot(best, metric, out / f"arms-{metric}.png")
            doc.image(f"arms-{metric}.png", f"{metric} per arm (best hyperparameters on validation).")
    paired, reference = results.get("paired", []), results.get("reference_arm", "")
    if paired:
        doc.heading(f"Paired differences to {reference}")
        doc.text(f"Per seed, arm minus {reference} on the same evaluation rows; {results['paired_ci_method']}; "
                 f"bootstrap: {results.get('paired_bootstrap_method', 'n/a')}.")
        doc.table(*paired_rows(results))
        for metric in metrics:
            if _paired_plot(paired, reference, metric, out / f"paired-{metric}.png"):
                doc.image(f"paired-{metric}.png", f"{metric}: difference to {reference} per arm.")
    doc.heading("All cells")
    doc.table(["cell", "status", select, *metrics],
              [[c["cell"], c["status"], *(c.get("metrics", {}).get(m, float("nan")) for m in (select, *metrics))]
               for c in results["cells"]])
    doc.heading("Run reports of each arm's best cell")
    for b in best:
        cell = next((c for c in results["cells"] if c["arm"] == b["arm"] and c["params"] == b["params"]
                     and c["status"] == "done"), None)
        if cell is None:
            continue
        run_dir = root / cell["run_dir"]  # stored relative to the experiment folder
        write_report(run_dir, run_dir, "md")
        doc.text(f"{b['arm']}: {cell['run_dir']}/report.md")
    return doc


def write_report(source: Path, out: Path, fmt: str) -> Path:
    """Write report.md or report.html (and its PNGs) for a run or an experiment folder."""
    out.mkdir(parents=True, exist_ok=True)
    if (source / RESULTS_JSON).is_file():
        doc = experiment_report(source, out)
    else:
        doc, _ = run_report(load_run(source), out)
    path = out / f"report.{fmt}"
    path.write_text(doc.html() if fmt == "html" else doc.markdown())
    return path
