"""InstructMining's data-size search: BlendSearch (flaml) over n, the number of top-ranked rows kept.

The paper fine-tunes on the top-n rows by the rule for each n BlendSearch proposes and keeps
the n with the lowest eval loss (it found a "double descent" in n, hence a search rather than a
sweep). `search_data_size` is generic: any objective(n) -> loss to minimise.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SizeSearch:
    """Best n, its loss, and every (n, loss) tried in order."""

    best_n: int
    best_loss: float
    trials: list[tuple[int, float]]


def search_data_size(objective: Callable[[int], float], low: int, high: int, budget: int,
                     seed: int = 0) -> SizeSearch:
    """Minimise objective(n) over integers low..high (log scale) with `budget` BlendSearch trials,
    starting from the cheap end (n = low), as flaml's low-cost-first design intends."""
    if not 1 <= low <= high:
        raise ValueError(f"data-size range {low}..{high}: need 1 <= low <= high")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flaml warns that its AutoML extra is not installed
        import optuna
        from flaml import BlendSearch, tune
    logging.getLogger("flaml").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)  # "additional result" noise
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # BlendSearch's global search logs every study
    trials: list[tuple[int, float]] = []

    def evaluate(config: dict) -> dict[str, float]:
        n = int(config["n"])
        loss = float(objective(n))
        trials.append((n, loss))
        return {"loss": loss}

    space = {"n": tune.lograndint(low, high + 1)}  # upper bound exclusive
    search = BlendSearch(metric="loss", mode="min", space=space, low_cost_partial_config={"n": low}, seed=seed)
    tune.run(evaluate, search_alg=search, metric="loss", mode="min", num_samples=budget, verbose=0)
    best_n, best_loss = min(trials, key=lambda t: t[1])
    return SizeSearch(best_n=best_n, best_loss=best_loss, trials=trials)
