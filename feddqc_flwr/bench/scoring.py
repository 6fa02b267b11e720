"""Scoring cost, measured in one process on the same rows and model.

For float32 and for the scoring precision (`score-dtype`, bf16 where the hardware has it), timed
in turn (see `timed_in_turn`):
- lower bound: the transformer trunk alone over exactly the tokens IRA reads, batched the same
  way (no LM head at all), so scoring/lower-bound >= 1 and says what the head and bookkeeping add;
- plain forward: the usual `model(input_ids)` with full-vocabulary logits, for context;
- one-sample loop: the public IRA/IFD code's loop (batch 1, full logits, HF loss) on the app's
  own tokens (`encode_pair`). In float32 it is the reference every speed-up and score difference
  is measured against, so a difference is batching or precision, never tokenization; in the
  scoring precision it separates what batching gains from what the precision gains;
- the authors' loop (`reference_ira`): the public FedDQC code's own tokenization and template,
  float32, once: how far the app's IRA (a different template and masking) is from theirs.
Then: seconds per local optimizer step at the same length (training runs in the model's dtype),
for the scoring/training ratio under the paper's protocol (its numbers are inputs, stated in the
result); every registered scorer relative to IRA; the process's peak memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from feddqc_flwr.bench.machine import matmul_gflops, peak_rss_mib
from feddqc_flwr.bench.reference_ira import authors_ira
from feddqc_flwr.llm.batching import pad_sequences
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.precision import compute_precision
from feddqc_flwr.llm.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.nll import causal_lm
from feddqc_flwr.scoring.registry import NEEDS_REFERENCE, SCORERS
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter


def timed_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one run and its result (for runs long enough to average themselves)."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: the key results are stored under."""
    return str(dtype).removeprefix("torch.")


def ira_sequences(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], template: str,
                  max_length: int) -> list[tuple[list[int], list[int]]]:
    """The conditioned and unconditioned sequences IRA scores."""
    start = start_token_id(bundle.tokenizer)
    pairs = [encode_pair(r, bundle.tokenizer, template, max_length) for r in rows]
    return [p.conditioned(start) for p in pairs] + [p.unconditioned(start) for p in pairs]


def batched_forward(bundle: ModelBundle, sequences: Sequence[tuple[list[int], list[int]]], batch_size: int,
                    trunk_only: bool, dtype: torch.dtype) -> None:
    """Forward the same length-sorted, right-padded batches as scoring: trunk only, or with full logits."""
    lm = causal_lm(bundle.model)
    body = lm.get_decoder() if trunk_only else lm
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    bundle.model.eval()
    with torch.inference_mode(), compute_precision(bundle.device, dtype):
        for start in range(0, len(order), batch_size):
            ids, _, _ = pad_sequences([sequences[i] for i in order[start : start + batch_size]],
                                      int(bundle.tokenizer.pad_token_id))
            body(input_ids=ids.to(bundle.device), use_cache=False)


def one_sample_ira(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], template: str,
                   max_length: int, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """IRA from the public code's loop (one sample at a time, HF's mean loss) on the app's tokens.

    The tokens are the app's (`encode_pair`), so against batched IRA it isolates batching and
    precision; `reference_ira.authors_ira` has the authors' tokenization as well.
    """
    start = start_token_id(bundle.tokenizer)
    out = []
    bundle.model.eval()
    with torch.inference_mode(), compute_precision(bundle.device, dtype):
        for row in rows:
            pair = encode_pair(row, bundle.tokenizer, template, max_length)
            losses = []
            for ids, labels in (pair.unconditioned(start), pair.conditioned(start)):
                result = bundle.model(input_ids=torch.tensor([ids], device=bundle.device),
                                      labels=torch.tensor([labels], device=bundle.device))
                losses.append(float(result.loss))
            out.append(losses[0] - losses[1])
    return np.asarray(out)


def score_agreement(scores: np.ndarray, reference: np.ndarray, retention: float = 0.5) -> dict[str, float]:
    """How far `scores` are from `reference`: max |difference|, rank correlation, and the share of
    the reference's top `retention` that `scores` also keep (what selection actually sees)."""
    ranks = [np.argsort(np.argsort(s, kind="stable"), kind="stable") for s in (scores, reference)]
    keep = max(1, round(retention * len(scores)))
    top = [set(np.argsort(-s, kind="stable")[:keep].tolist()) for s in (scores, reference)]
    return {"max_abs_diff": float(np.nanmax(np.abs(scores - reference))),
            "rank_correlation": float(np.corrcoef(*ranks)[0, 1]) if len(scores) > 1 else 1.0,
            "kept_overlap": len(top[0] & top[1]) / keep, "retention": retention}


def timed_in_turn(fns: Mapping[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median wall seconds of each function over `repeats` rounds that run all of them in turn,
    after one warm-up round, and each one's last result. Taking turns spreads a slow spell of a
    shared machine over every measurement instead of letting it land on one of them."""
    results = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) for name, t in times.items()}, results


def _precision_costs(bundle: ModelBundle, rows: list[dict], sequences: list, dtypes: Sequence[torch.dtype], *,
                     template: str, max_length: int, batch_size: int, repeats: int) -> dict[str, dict[str, Any]]:
    """Per dtype: batched IRA, its lower bound, a plain forward (all timed in turn) and the
    one-sample loop, against the float32 loop (the first dtype must be float32) and against the
    authors' float32 loop (their tokenization)."""
    fns: dict[str, Callable[[], Any]] = {}
    for dtype in dtypes:
        kwargs = {"template": template, "max_length": max_length, "batch_size": batch_size,
                  "device": bundle.device, "compute_dtype": dtype}
        fns[f"ira_batched {dtype}"] = lambda k=kwargs: ira_scores(bundle.model, bundle.tokenizer, rows, **k).ira
        fns[f"trunk_lower_bound {dtype}"] = lambda d=dtype: batched_forward(bundle, sequences, batch_size, True, d)
        fns[f"plain_forward_full_logits {dtype}"] = (
            lambda d=dtype: batched_forward(bundle, sequences, batch_size, False, d))
    seconds, results = timed_in_turn(fns, repeats)
    loops = {dtype: timed_once(lambda d=dtype: one_sample_ira(bundle, rows, template, max_length, d))
             for dtype in dtypes}
    t_ref, reference = loops[torch.float32]
    t_authors, authors = timed_once(lambda: authors_ira(bundle.model, bundle.tokenizer, rows, max_length,
                                                        bundle.device))
    out = {}
    for dtype in dtypes:
        t = {key: seconds[f"{key} {dtype}"]
             for key in ("ira_batched", "trunk_lower_bound", "plain_forward_full_logits")}
        t["one_sample_loop"] = loops[dtype][0]
        t["authors_loop_float32"] = t_authors
        out[dtype_name(dtype)] = {
            "seconds": t,
            "ira_over_lower_bound": t["ira_batched"] / t["trunk_lower_bound"],
            "ira_over_plain_forward": t["ira_batched"] / t["plain_forward_full_logits"],
            "speedup_vs_one_sample_loop_same_precision": t["one_sample_loop"] / t["ira_batched"],
            "speedup_vs_one_sample_loop_float32": t_ref / t["ira_batched"],
            "agreement_vs_float32_loop": score_agreement(results[f"ira_batched {dtype}"], reference),
            "agreement_vs_authors_loop": score_agreement(results[f"ira_batched {dtype}"], authors),
            "rows_per_second": len(rows) / t["ira_batched"],
        }
    return out


def protocol_ratios(score_seconds_per_row: float, step_seconds: float, protocol: Mapping[str, float]) -> dict:
    """Scoring / training time per client, per hierarchy and overall, under `protocol`.

    At the start of hierarchy k a client re-scores what it has not trained on yet, (K-k+1)/K of
    its pool when nothing is filtered out (the most scoring there can be); it trains
    rounds/K x participation x local_steps steps per hierarchy.
    """
    k, pool = int(protocol["hierarchies"]), protocol["samples_per_client"]
    steps = protocol["rounds"] / k * protocol["participation"] * protocol["local_steps"]
    scored = [pool * (k - stage + 1) / k for stage in range(1, k + 1)]
    per_stage = [n * score_seconds_per_row / (steps * step_seconds) for n in scored]
    return {"scored_rows_per_hierarchy": scored, "train_steps_per_hierarchy": steps,
            "scoring_over_training_per_hierarchy": per_stage,
            "scoring_over_training": sum(scored) * score_seconds_per_row / (k * steps * step_seconds)}


def bench_scoring(bundle: ModelBundle, rows: list[dict], reference: list[dict], *, template: str,
                  max_length: int, batch_size: int, repeats: int, train_batch: int, train_grad_accum: int,
                  train_steps: int, protocol: Mapping[str, float], score_dtype: torch.dtype) -> dict[str, Any]:
    """Every scoring measurement on one model and one set of rows."""
    sequences = ira_sequences(bundle, rows, template, max_length)
    common = {"template": template, "max_length": max_length, "batch_size": batch_size, "repeats": repeats}
    dtypes = list(dict.fromkeys((torch.float32, score_dtype)))  # float32 first: the reference
    precisions = _precision_costs(bundle, rows, sequences, dtypes, **common)
    name = dtype_name(score_dtype)

    context = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=template,
                             max_length=max_length, batch_size=batch_size, device=bundle.device,
                             compute_dtype=score_dtype, reference_rows=reference)
    scorers = {}
    for scorer_name, scorer in SCORERS.items():
        if scorer_name in NEEDS_REFERENCE and not reference:
            continue
        seconds, _ = timed_once(lambda s=scorer: s.score(rows, context))  # model already warm
        scorers[scorer_name] = {"seconds": seconds,
                                "relative_to_ira": seconds / precisions[name]["seconds"]["ira_batched"]}

    initial = {k: v.detach().clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    rss_before_training = peak_rss_mib()  # the process peak only grows: what training adds shows after it
    started = time.perf_counter()
    train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(
        steps=train_steps, batch_size=train_batch, grad_accum=train_grad_accum, learning_rate=1e-4,
        max_length=max_length,
        template=template, proximal_mu=0.0, seed=0))
    step_seconds = (time.perf_counter() - started) / train_steps
    bundle.model.load_state_dict(initial, strict=False)

    for costs in precisions.values():
        costs["protocol"] = protocol_ratios(costs["seconds"]["ira_batched"] / len(rows), step_seconds, protocol)
    return {
        "rows": len(rows), "tokens": sum(len(ids) for ids, _ in sequences), "batch_size": batch_size,
        "max_length": max_length, "score_dtype": name,
        "matmul_gflops": {dtype_name(d): matmul_gflops(d, bundle.device) for d in dtypes},
        "train_dtype": dtype_name(next(bundle.model.parameters()).dtype),
        "train_step_seconds": step_seconds, "train_batch": train_batch, "train_grad_accum": train_grad_accum,
        "gradient_checkpointing": bool(getattr(causal_lm(bundle.model), "is_gradient_checkpointing", False)),
        "precisions": precisions, "scorers": scorers, "protocol": dict(protocol),
        "peak_rss_mib_before_training": rss_before_training,
    }
