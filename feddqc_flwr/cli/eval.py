"""`feddqc eval`: evaluate a saved adapter of a finished run on the server's valid or test rows.

The run's config.json holds the run config, so the same split, template and model are rebuilt;
keys added to the app since the run get their current defaults. Writes eval-<split>.json into
the run directory: the metrics, and each row's own values with the rows' sample ids.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from safetensors.torch import load_file

from feddqc_flwr.app.config import EVAL_METRICS
from feddqc_flwr.app.model_spec import server_spec_from_config
from feddqc_flwr.app.results import saved_run_config
from feddqc_flwr.app.server_app import evaluate_splits, server_eval_sets
from feddqc_flwr.cli.table import show_table
from feddqc_flwr.errors import MissingArtifactError
from feddqc_flwr.llm.model import load_model_bundle, set_adapter_arrays


def locate(target: Path, adapter: str) -> tuple[Path, Path]:
    """(run dir, adapter dir) from a run directory or an adapter folder inside one."""
    if (target / "adapter_config.json").is_file():
        return target.resolve().parents[1], target
    return target, target / "adapters" / adapter


def evaluate_run(args: argparse.Namespace) -> dict[str, Any]:
    """Load base model + adapter, evaluate one split, print the table, write eval-<split>.json."""
    run_dir, adapter_dir = locate(Path(args.target), args.adapter)
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise MissingArtifactError(f"no adapter in {adapter_dir} (no adapter_model.safetensors)")
    overrides = {key: value for key, value in (("eval-metrics", args.metrics), ("judge-url", args.judge_url),
                                               ("judge-model", args.judge_model),
                                               ("eval-max-new-tokens", args.max_new_tokens)) if value is not None}
    cfg = saved_run_config(run_dir, overrides)
    sets, closed_set = server_eval_sets(cfg)
    bundle = load_model_bundle(server_spec_from_config(cfg))  # as the server evaluated
    set_adapter_arrays(bundle.model, ArrayRecord(load_file(adapter_dir / "adapter_model.safetensors")))
    metrics, row_values = evaluate_splits(cfg, bundle, sets, closed_set, splits=(args.split,))
    rows = len(getattr(sets, args.split))
    show_table(f"{adapter_dir} on {rows} {args.split} rows of {cfg.dataset}", ["metric", "value"],
               [[k, "nan" if math.isnan(v) else f"{v:.4g}"] for k, v in metrics.items()])
    result = {"split": args.split, "rows": rows, "adapter": str(adapter_dir), "metrics": metrics,
              "closed_answer_set": list(closed_set), "eval-metrics": cfg.eval_metrics,
              "sample_ids": [str(r.get("sample_id")) for r in getattr(sets, args.split)], "row_values": row_values}
    out = run_dir / f"eval-{args.split}.json"
    strict = {k: None if math.isnan(v) else v for k, v in metrics.items()}  # NaN is not JSON
    strict_rows = {k: [None if v is None or math.isnan(v) else v for v in values] for k, values in row_values.items()}
    out.write_text(json.dumps({**result, "metrics": strict, "row_values": strict_rows}, indent=2, sort_keys=True)
                   + "\n")
    print(f"wrote {out}")
    return result


def add_eval_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `eval` on the `feddqc` CLI's subparsers."""
    p = subparsers.add_parser("eval", help="evaluate a run's adapter on the server's valid or test rows")
    p.add_argument("target", help="run directory, or an adapter folder inside one (adapters/<name>)")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--adapter", default="final", help="adapter under <run>/adapters: final, hierarchy-1, last, ...")
    p.add_argument("--metrics", help=f"comma list of {', '.join(EVAL_METRICS)} (default: the run's eval-metrics)")
    p.add_argument("--max-new-tokens", type=int, help="answer length (default: the run's eval-max-new-tokens)")
    p.add_argument("--judge-url", help="OpenAI-compatible endpoint for the judge metric")
    p.add_argument("--judge-model", help="model served at --judge-url")
    p.set_defaults(func=evaluate_run)
