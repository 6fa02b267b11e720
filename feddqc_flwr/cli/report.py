"""`feddqc report DIR`: Markdown or HTML report with PNG plots of a run or an experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from feddqc_flwr.report.build import write_report


def _report(args: argparse.Namespace) -> None:
    source = Path(args.dir).resolve()
    path = write_report(source, Path(args.out).resolve() if args.out else source, args.format)
    print(f"report: {path}")


def add_report_command(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="plots and tables of a run directory or an experiment folder")
    parser.add_argument("dir", help="a run directory (metrics.jsonl) or an experiment folder (results.json)")
    parser.add_argument("--format", choices=("md", "html"), default="md")
    parser.add_argument("--out", help="where to write the report and plots (default: DIR)")
    parser.set_defaults(func=_report)
