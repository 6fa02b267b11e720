"""Scoring cost, measured in one process on the same rows and model.

- lower bound: the transformer trunk alone over exactly the tokens IRA reads, batched the same
  way (no LM head at all), so scoring/lower-bound >= 1 and says what the head and bookkeeping add;
- plain forward: the usual `model(input_ids)` with full-vocabulary logits, for context;
- one-sample loop: what the public IRA/IFD code does (batch 1, full logits, HF loss), which
  must give the same scores;
- training: seconds per local step at the same length, for the scoring/training ratio under the
  paper's protocol (the protocol numbers are inputs, stated in the result), and the process's
  peak memory before it (the final peak minus this is what the training step adds);
- every registered scorer relative to IRA.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from feddqc_flwr.batching import pad_sequences
from feddqc_flwr.bench.machine import peak_rss_mib
from feddqc_flwr.model import ModelBundle
from feddqc_flwr.prompts import encode_pair, start_token_id
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.ira import ira_scores
from feddqc_flwr.scoring.nll import causal_lm
from feddqc_flwr.scoring.registry import NEEDS_REFERENCE, SCORERS
from feddqc_flwr.training import LocalTrainConfig, train_adapter


def timed(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Median wall seconds over `repeats` runs (after one warm-up run if asked), and the last result."""
    result = fn() if warmup else None
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), result


def ira_sequences(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], template: str,
                  max_length: int) -> list[tuple[list[int], list[int]]]:
    """The conditioned and unconditioned sequences IRA scores."""
    start = start_token_id(bundle.tokenizer)
    pairs = [encode_pair(r, bundle.tokenizer, template, max_length) for r in rows]
    return [p.conditioned(start) for p in pairs] + [p.unconditioned(start) for p in pairs]


def batched_forward(bundle: ModelBundle, sequences: Sequence[tuple[list[int], list[int]]], batch_size: int,
                    trunk_only: bool) -> None:
    """Forward the same length-sorted batches as scoring: trunk only, or with full logits."""
    lm = causal_lm(bundle.model)
    body = lm.get_decoder() if trunk_only else lm
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    bundle.model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            ids, attention, _ = pad_sequences([sequences[i] for i in order[start : start + batch_size]],
                                              int(bundle.tokenizer.pad_token_id))
            body(input_ids=ids.to(bundle.device), attention_mask=attention.to(bundle.device))


def one_sample_ira(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], template: str,
                   max_length: int) -> np.ndarray:
    """IRA the way the public FedDQC code computes it: one sample at a time, HF's mean loss."""
    start = start_token_id(bundle.tokenizer)
    out = []
    bundle.model.eval()
    with torch.inference_mode():
        for row in rows:
            pair = encode_pair(row, bundle.tokenizer, template, max_length)
            losses = []
            for ids, labels in (pair.unconditioned(start), pair.conditioned(start)):
                result = bundle.model(input_ids=torch.tensor([ids], device=bundle.device),
                                      labels=torch.tensor([labels], device=bundle.device))
                losses.append(float(result.loss))
            out.append(losses[0] - losses[1])
    return np.asarray(out)


def bench_scoring(bundle: ModelBundle, rows: list[dict], reference: list[dict], *, template: str,
                  max_length: int, batch_size: int, repeats: int, train_batch: int, train_steps: int,
                  protocol: Mapping[str, float]) -> dict[str, Any]:
    """Every scoring measurement on one model and one set of rows."""
    sequences = ira_sequences(bundle, rows, template, max_length)
    tokens = sum(len(ids) for ids, _ in sequences)
    kwargs = {"template": template, "max_length": max_length, "batch_size": batch_size, "device": bundle.device}
    t_ira, batched = timed(lambda: ira_scores(bundle.model, bundle.tokenizer, rows, **kwargs).ira, repeats)
    t_trunk, _ = timed(lambda: batched_forward(bundle, sequences, batch_size, trunk_only=True), repeats)
    t_plain, _ = timed(lambda: batched_forward(bundle, sequences, batch_size, trunk_only=False), repeats)
    t_loop, looped = timed(lambda: one_sample_ira(bundle, rows, template, max_length), 1, warmup=False)

    context = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=template,
                             max_length=max_length, batch_size=batch_size, device=bundle.device,
                             reference_rows=reference)
    scorers = {}
    for name, scorer in SCORERS.items():
        if name in NEEDS_REFERENCE and not reference:
            continue
        seconds, _ = timed(lambda s=scorer: s.score(rows, context), 1, warmup=False)  # model already warm
        scorers[name] = {"seconds": seconds, "relative_to_ira": seconds / t_ira}

    initial = {k: v.detach().clone() for k, v in bundle.model.state_dict().items() if "lora_" in k}
    rss_before_training = peak_rss_mib()  # the process peak only grows: what training adds shows after it
    started = time.perf_counter()
    train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(
        steps=train_steps, batch_size=train_batch, grad_accum=1, learning_rate=1e-4, max_length=max_length,
        template=template, proximal_mu=0.0, seed=0))
    step_seconds = (time.perf_counter() - started) / train_steps
    bundle.model.load_state_dict(initial, strict=False)

    per_sample = t_ira / len(rows)
    scored = protocol["samples_per_client"] * (protocol["hierarchies"] + 1) / 2  # pools shrink by stage
    trained_steps = protocol["rounds"] * protocol["participation"] * protocol["local_steps"]
    return {
        "rows": len(rows), "tokens": tokens, "batch_size": batch_size, "max_length": max_length,
        "seconds": {"ira_batched": t_ira, "trunk_lower_bound": t_trunk, "plain_forward_full_logits": t_plain,
                    "one_sample_loop": t_loop, "train_step": step_seconds},
        "ira_over_lower_bound": t_ira / t_trunk,
        "ira_over_plain_forward": t_ira / t_plain,
        "speedup_vs_one_sample_loop": t_loop / t_ira,
        "max_abs_diff_vs_one_sample_loop": float(np.nanmax(np.abs(batched - looped))),
        "rows_per_second": len(rows) / t_ira,
        "peak_rss_mib_before_training": rss_before_training,
        "scorers": scorers,
        "protocol": {**protocol, "train_batch": train_batch,
                     "scoring_seconds_per_client": scored * per_sample,
                     "training_seconds_per_client": trained_steps * step_seconds,
                     "scoring_over_training": scored * per_sample / (trained_steps * step_seconds)},
    }
