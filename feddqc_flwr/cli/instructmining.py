"""`feddqc instructmining fit | search`: refit InstructMining's rule from runs, search the data size.

fit: for every run directory (config.json + summary.json, as `flwr run` and the experiment
harness write them) rebuild the run's client training pools, average the indicators over all
their rows, and least-squares-fit log(target metric) on those means, one point per run. The
pools are the data the run STARTED from (before any selection); with `method = fedavg` runs
that is exactly what was trained on.

search: rank a corrupted pool with the rule, then BlendSearch over n; objective(n) = held-out
loss on the clean test split after a fresh LoRA adapter is trained `--steps` steps on the top-n
rows (same steps for every n, so only which rows are seen changes). Cheap, and it answers the
paper's question: how many top-ranked rows to keep before quality drops.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from feddqc_flwr.app.config import SCORE_DTYPES, TEMPLATES, RunConfig
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.results import saved_run_config
from feddqc_flwr.cli.table import show_table
from feddqc_flwr.data.client_data import load_client_data, split_source
from feddqc_flwr.data.corruption import TYPES, corrupt_rows
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.llm.model import ModelSpec, adapter_arrays, load_model_bundle, set_adapter_arrays
from feddqc_flwr.llm.precision import resolve_score_dtype
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.instructmining.indicators import INDICATORS, compute_indicators
from feddqc_flwr.scoring.instructmining.rule import Rule, fit_rule
from feddqc_flwr.scoring.instructmining.scorer import InstructMiningScorer
from feddqc_flwr.scoring.instructmining.size_search import search_data_size


def run_target(run_dir: Path, metric: str) -> float:
    """`final_server_eval[metric]` from the run's summary.json."""
    final = json.loads((run_dir / "summary.json").read_text()).get("final_server_eval") or {}
    if metric not in final:
        raise ValueError(f"{run_dir}: summary.json has no final_server_eval[{metric!r}] (has {sorted(final)})")
    return float(final[metric])


def mean_indicators(cfg: RunConfig, num_partitions: int, names: list[str]) -> dict[str, float]:
    """Indicators averaged over every training row of every partition of the run."""
    rows = [r for pid in range(num_partitions)
            for r in load_client_data(cfg.data_spec, pid, num_partitions).train.to_list()]
    bundle = load_model_bundle(spec_from_config(cfg))
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=cfg.prompt_template,
                         max_length=cfg.max_length, batch_size=cfg.score_batch_size, device=bundle.device,
                         compute_dtype=resolve_score_dtype(cfg.score_dtype, bundle.device), seed=cfg.seed)
    return {name: float(np.nanmean(values)) for name, values in compute_indicators(rows, ctx, names).items()}


def fit_command(args: argparse.Namespace) -> Rule:
    """Refit the rule on the given runs; print and save it."""
    names = [n.strip() for n in args.indicators.split(",") if n.strip()]
    table: list[dict[str, Any]] = []
    for run_dir in map(Path, args.run_dirs):
        target = run_target(run_dir, args.target)
        means = mean_indicators(saved_run_config(run_dir), args.num_partitions, names)
        table.append({"run": run_dir.name, **means, args.target: target})
    y = np.array([row[args.target] for row in table])
    if args.log_target:
        y = np.log(y)
    rule = fit_rule({n: np.array([row[n] for row in table]) for n in names}, y,
                    source=f"fit on {len(table)} runs: {'log ' if args.log_target else ''}{args.target} ~ "
                           f"{' + '.join(names)}")
    show_table("runs (mean indicators)", ["run", *names, args.target],
               [[row["run"], *(f"{row[n]:.4g}" for n in names), f"{row[args.target]:.4g}"] for row in table])
    show_table("fitted rule", ["term", "weight"],
               [["intercept", f"{rule.intercept:.6g}"], *([n, f"{w:.6g}"] for n, w in rule.weights.items())])
    print(f"R^2 = {rule.r2 if rule.r2 is None else round(rule.r2, 4)}")
    Path(args.out).write_text(rule.to_json())
    print(f"wrote {args.out} (use it with --run-config \"instructmining-rule='{args.out}'\")")
    return rule


def search_command(args: argparse.Namespace) -> dict[str, Any]:
    """BlendSearch over the number of top-ranked rows; prints every trial and the best n."""
    split = split_source(DataSpec(source=args.dataset, max_samples=args.max_samples, seed=args.seed))
    rows, _ = corrupt_rows(split.pool.to_list(), args.corrupt_ratio, args.corrupt_type, args.seed)
    eval_rows = split.test.to_list()[: args.eval_samples]
    bundle = load_model_bundle(ModelSpec(name=args.model))
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=args.template,
                         max_length=args.max_length, batch_size=args.batch_size, device=bundle.device,
                         compute_dtype=resolve_score_dtype(args.score_dtype, bundle.device), seed=args.seed,
                         options={"instructmining-rule": args.rule})
    keep = InstructMiningScorer().score(rows, ctx)
    order = np.argsort(-np.nan_to_num(keep, nan=-np.inf), kind="stable")
    fresh = adapter_arrays(bundle.model)
    from feddqc_flwr.evaluation import heldout_loss  # heavy package, only needed here
    from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter

    def objective(n: int) -> float:
        set_adapter_arrays(bundle.model, fresh)
        train_adapter(bundle.model, bundle.tokenizer, [rows[i] for i in order[:n]],
                      LocalTrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=1,
                                       learning_rate=args.lr, max_length=args.max_length, template=args.template,
                                       proximal_mu=0.0, seed=args.seed))
        return heldout_loss(bundle, eval_rows, template=args.template, max_length=args.max_length,
                            batch_size=args.batch_size)

    result = search_data_size(objective, args.low, args.high or len(rows), args.budget, args.seed)
    bad = np.array([bool(r["is_bad"]) for r in rows])[order]
    show_table(f"BlendSearch over n ({len(rows)} rows, {args.steps} steps per trial)",
               ["trial", "n", "held-out loss", "bad share of top-n"],
               [[i, n, f"{loss:.4f}", f"{bad[:n].mean():.2f}"] for i, (n, loss) in enumerate(result.trials)])
    print(f"best n = {result.best_n} (held-out loss {result.best_loss:.4f})")
    return {"best_n": result.best_n, "best_loss": result.best_loss, "trials": result.trials}


def add_instructmining_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `instructmining fit` and `instructmining search` on the `feddqc` CLI."""
    group = subparsers.add_parser("instructmining", help="InstructMining: refit the rule, search the data size")
    sub = group.add_subparsers(dest="instructmining_command", required=True)
    fit = sub.add_parser("fit", help="least-squares refit of the rule from run directories")
    fit.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    fit.add_argument("--out", default="rule.json")
    fit.add_argument("--target", default="valid-loss",
                     help="final_server_eval metric to predict (a validation metric keeps test unseen)")
    fit.add_argument("--no-log-target", dest="log_target", action="store_false",
                     help="fit the metric itself, not its log (the paper fits log loss)")
    fit.add_argument("--indicators", default="output_len,knn6",
                     help=f"comma list of {', '.join(i for i in INDICATORS if i != 'reward')}")
    fit.add_argument("--num-partitions", type=int, default=2, help="clients the runs had")
    fit.set_defaults(func=fit_command)
    search = sub.add_parser("search", help="BlendSearch over how many top-ranked rows to train on")
    search.add_argument("--model", default="bundled:smollm2-135m-instruct")
    search.add_argument("--dataset", default="demo")
    search.add_argument("--corrupt-type", default="mixture", choices=TYPES)
    search.add_argument("--corrupt-ratio", type=float, default=0.5)
    search.add_argument("--max-samples", type=int, default=200)
    search.add_argument("--rule", default="", help="rule JSON from `fit`; empty = the published rule")
    search.add_argument("--low", type=int, default=8)
    search.add_argument("--high", type=int, default=0, help="0 = all rows")
    search.add_argument("--budget", type=int, default=8, help="BlendSearch trials (one fine-tune each)")
    search.add_argument("--steps", type=int, default=4, help="optimizer steps per trial")
    search.add_argument("--lr", type=float, default=3e-4)
    search.add_argument("--batch-size", type=int, default=4)
    search.add_argument("--max-length", type=int, default=256)
    search.add_argument("--score-dtype", default="auto", choices=SCORE_DTYPES,
                        help="precision of the indicator passes, as the run config's score-dtype")
    search.add_argument("--eval-samples", type=int, default=16, help="clean test rows for the held-out loss")
    search.add_argument("--template", default="alpaca", choices=TEMPLATES)
    search.add_argument("--seed", type=int, default=0)
    search.set_defaults(func=search_command)

