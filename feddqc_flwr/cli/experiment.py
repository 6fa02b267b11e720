"""`feddqc experiment FILE`: run a grid of arms x hyperparameters x seeds, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path

from feddqc_flwr.app.run_defaults import PROJECT_ROOT
from feddqc_flwr.cli.table import show_table
from feddqc_flwr.experiment.grid import run_grid
from feddqc_flwr.experiment.results_file import RESULTS_JSON, write_results
from feddqc_flwr.experiment.runner import FlowerRunner
from feddqc_flwr.experiment.spec import load_spec
from feddqc_flwr.experiment.summary import best_per_arm
from feddqc_flwr.report.experiment_tables import best_rows, paired_rows, write_results_md


def _experiment(args: argparse.Namespace) -> None:
    spec = load_spec(Path(args.file))
    out = Path(args.out or Path("experiments") / spec.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner = FlowerRunner(Path(args.app).resolve(), args.federation_config or spec.federation_config,
                          timeout=args.cell_timeout)
    records = run_grid(spec, out, runner, run=not args.summarize_only)
    best = best_per_arm(spec, records)
    payload = write_results(spec, records, best, out, args.command_line, runner.app_dir)
    write_results_md(spec, records, best, payload, out)
    path = out / RESULTS_JSON
    header, rows = best_rows(spec, best)
    show_table(f"{spec.name}: best per arm", header, rows)
    if payload["paired"]:
        show_table(f"{spec.name}: paired difference to {spec.reference_arm} ({payload['paired_ci_method']})",
                   *paired_rows(payload))
    failed = [r["cell"] for r in records if r["status"] != "done"]
    print(f"results: {path}" + (f"\nnot finished ({len(failed)}): {', '.join(failed)} (rerun to retry)"
                                if failed else ""))


def add_experiment_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("experiment", help="run arms x hyperparameter pool x seeds through Flower simulation")
    parser.add_argument("file", help="experiment file (.toml or .yaml)")
    parser.add_argument("--out", help="experiment folder (default: experiments/<name>); rerun to resume")
    parser.add_argument("--app", default=str(PROJECT_ROOT), help="the Flower app folder (has pyproject.toml)")
    parser.add_argument("--federation-config", help="override the file's federation-config")
    parser.add_argument("--summarize-only", action="store_true",
                        help="run nothing: write results from the cells finished so far")
    parser.add_argument("--cell-timeout", type=float, default=None, help="seconds before a cell is abandoned")
    parser.set_defaults(func=_experiment)
