"""Training step time and loss trajectory: float32 against bf16 base weights, in one process.

Both models start from the same base weights and the same LoRA initialisation and see the same
rows in the same order. Training runs in rounds of `steps_per_round` steps (a fresh optimizer per
round, as a federated client does). The precisions take turns round by round, and the turn order
flips every round (fp32, bf16 | bf16, fp32 | ...), so a slow spell of a shared machine lands on
both precisions, and so does whatever the second turn of a round inherits from the first (warm
caches, a busier neighbour). Each round then gives its own speed-up, and their spread shows how
much the machine moved during the run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feddqc_flwr.llm.model import ModelBundle, adapter_arrays, set_adapter_arrays
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter


def turn_order(names: Sequence[str], round_index: int) -> list[str]:
    """The precisions' turns in round `round_index`: as given in even rounds, reversed in odd ones."""
    return list(names) if round_index % 2 == 0 else list(reversed(names))


def bench_train_speed(bundles: Mapping[str, ModelBundle], rows: Sequence[Mapping[str, Any]], *, rounds: int,
                      steps_per_round: int, batch_size: int, max_length: int, learning_rate: float,
                      template: str = "alpaca") -> dict[str, Any]:
    """Per precision: seconds per step (per round), every step's loss, the final-round loss, and
    against the first precision (the reference) the speed-up of each round and their spread."""
    names = list(bundles)
    start = adapter_arrays(bundles[names[0]].model)
    for name in names[1:]:  # one LoRA initialisation for every precision
        set_adapter_arrays(bundles[name].model, start)
    out: dict[str, dict[str, Any]] = {n: {"round_step_seconds": [], "step_losses": []} for n in names}
    run_order: list[list[str]] = []
    for r in range(rounds):
        run_order.append([])
        for name in turn_order(names, r):
            bundle = bundles[name]
            cfg = LocalTrainConfig(steps=steps_per_round, batch_size=batch_size, grad_accum=1,
                                   learning_rate=learning_rate, max_length=max_length, template=template,
                                   proximal_mu=0.0, seed=r)
            run_order[-1].append(name)
            started = time.perf_counter()
            result = train_adapter(bundle.model, bundle.tokenizer, list(rows), cfg)
            out[name]["round_step_seconds"].append((time.perf_counter() - started) / steps_per_round)
            out[name]["step_losses"].extend(result.step_losses)
    reference = names[0]
    for name in names:
        seconds = np.asarray(out[name]["round_step_seconds"])
        last = float(np.mean(out[name]["step_losses"][-steps_per_round:]))
        out[name].update({"step_seconds_median": float(np.median(seconds)), "step_seconds_min": float(seconds.min()),
                          "step_seconds_max": float(seconds.max()), "final_round_loss": last})
    ref_seconds = np.asarray(out[reference]["round_step_seconds"])
    for name in names:
        ratios = ref_seconds / np.asarray(out[name]["round_step_seconds"])  # each round's own speed-up
        out[name]["speedup_vs_" + reference] = out[reference]["step_seconds_median"] / out[name]["step_seconds_median"]
        out[name]["round_speedups_vs_" + reference] = ratios.tolist()
        out[name]["round_speedup_spread_vs_" + reference] = {
            "min": float(ratios.min()), "median": float(np.median(ratios)), "max": float(ratios.max())}
        ref_loss = out[reference]["final_round_loss"]
        out[name]["final_loss_rel_diff_vs_" + reference] = (out[name]["final_round_loss"] - ref_loss) / ref_loss
    return {"precisions": out, "run_order": run_order, "rounds": rounds, "steps_per_round": steps_per_round,
            "batch_size": batch_size, "max_length": max_length, "learning_rate": learning_rate, "rows": len(rows)}
