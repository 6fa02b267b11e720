"""`feddqc` command line: utilities around the Flower app (the app itself runs with `flwr run`)."""

from __future__ import annotations

import argparse
import logging
import sys

from feddqc_flwr.cli.bench import add_bench_commands
from feddqc_flwr.cli.data import add_data_commands
from feddqc_flwr.cli.eval import add_eval_command
from feddqc_flwr.cli.experiment import add_experiment_command
from feddqc_flwr.cli.inspect import add_inspect_command
from feddqc_flwr.cli.instructmining import add_instructmining_commands
from feddqc_flwr.cli.report import add_report_command
from feddqc_flwr.cli.score import add_score_command
from feddqc_flwr.errors import UserError, one_line
from feddqc_flwr.llm.model import BUNDLED_MODELS, resolve_model_path


def _prepare(args: argparse.Namespace) -> None:
    """Convert bundled models once so simulation actors do not race to do it."""
    for name in args.models or list(BUNDLED_MODELS):
        print(f"{name}: {resolve_model_path(name)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feddqc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="convert bundled models into the local cache")
    prepare.add_argument("models", nargs="*", help=f"default: {', '.join(BUNDLED_MODELS)}")
    prepare.set_defaults(func=_prepare)
    add_data_commands(sub)
    add_score_command(sub)
    add_instructmining_commands(sub)
    add_eval_command(sub)
    add_bench_commands(sub)
    add_experiment_command(sub)
    add_report_command(sub)
    add_inspect_command(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one command. Bad input (arguments, a missing file, a bad run-config value, a model
    not installed) exits with status 2 and one line, as argparse does for bad arguments."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "feddqc " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        args.func(args)
    except (UserError, FileNotFoundError) as err:
        parser.exit(2, f"{parser.prog}: error: {one_line(err)}\n")


if __name__ == "__main__":
    main()
