"""Central differential privacy on the adapter updates: Flower's DP wrappers around the aggregation rule.

`dp-mode` wraps the FedAvg-family rule (not the FedDQC strategy), so the wrapper clips and noises
exactly the train replies FedDQC hands to the rule; the `query.*` messages (score, histogram,
identity) never pass through it. Client-side modes clip in `app.client_privacy`'s train mod.
What each mode protects, and what it does not, is listed in `privacy_report` and the README.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedProx,
    Strategy,
)

from feddqc_flwr.app.config import RunConfig

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`

FIXED = {"server-fixed": DifferentialPrivacyServerSideFixedClipping,
         "client-fixed": DifferentialPrivacyClientSideFixedClipping}
ADAPTIVE = {"server-adaptive": DifferentialPrivacyServerSideAdaptiveClipping,
            "client-adaptive": DifferentialPrivacyClientSideAdaptiveClipping}
WRAPPERS = (*FIXED.values(), *ADAPTIVE.values())
CLIPPING_NORM_STATE = "dp-clipping-norm"  # adaptive C in the checkpoint's optimizer.npz
MEAN_RULES = (FedAvg, FedProx)  # rules whose aggregate is the weighted mean the noise scale is derived for


def with_privacy(rule: FedAvg, cfg: RunConfig) -> Strategy:
    """`rule` wrapped in the DP wrapper `dp-mode` names, or `rule` itself for dp-mode = none.

    Flower draws the noise from numpy's global generator, which the ServerApp seeds with `seed`;
    anyone knowing the seed could regenerate the noise, so it is reseeded from OS entropy here.
    """
    if cfg.dp_mode == "none":
        return rule
    np.random.seed(None)
    if cfg.dp_mode in FIXED:
        wrapper: Strategy = FIXED[cfg.dp_mode](rule, cfg.dp_noise_multiplier, cfg.dp_clipping_norm,
                                               cfg.dp_num_sampled_clients)
    else:
        wrapper = ADAPTIVE[cfg.dp_mode](rule, cfg.dp_noise_multiplier, cfg.dp_num_sampled_clients,
                                        initial_clipping_norm=cfg.dp_clipping_norm,
                                        target_clipped_quantile=cfg.dp_target_clipped_quantile,
                                        clip_norm_lr=cfg.dp_clip_norm_lr,
                                        clipped_count_stddev=cfg.dp_clipped_count_stddev or None)
    for caveat in caveats(cfg, rule):
        log.warning("dp-mode = %s: %s", cfg.dp_mode, caveat)
    return wrapper


def aggregation_rule(strategy: Strategy) -> Strategy:
    """The FedAvg-family rule inside a DP wrapper (its optimizer state is the rule's, not the wrapper's)."""
    return strategy.strategy if isinstance(strategy, WRAPPERS) else strategy


def dp_replies_needed(strategy: Strategy) -> int:
    """Usable replies a DP round needs: the n its noise z·C/n is calibrated for (0 without DP).
    The mean of fewer updates moves by more than C/n per client, so such a round is not aggregated."""
    return strategy.num_sampled_clients if isinstance(strategy, WRAPPERS) else 0


def privacy_state(strategy: Strategy) -> dict[str, np.ndarray]:
    """The adaptive clipping norm for the checkpoint, so a resumed run goes on from it."""
    if isinstance(strategy, tuple(ADAPTIVE.values())):
        return {CLIPPING_NORM_STATE: np.asarray(strategy.clipping_norm)}
    return {}


def load_privacy_state(strategy: Strategy, state: Mapping[str, np.ndarray]) -> None:
    """Restore `privacy_state()`."""
    if CLIPPING_NORM_STATE in state and isinstance(strategy, tuple(ADAPTIVE.values())):
        strategy.clipping_norm = float(state[CLIPPING_NORM_STATE])


def caveats(cfg: RunConfig, rule: Strategy) -> list[str]:
    """Where this config's noise does not give the Gaussian mechanism's guarantee its parameters suggest."""
    out = []
    if type(rule) not in MEAN_RULES:  # FedAvgM and the FedOpt rules subclass FedAvg
        out.append(f"strategy = {cfg.strategy!r}: Flower adds the noise after the server optimizer's step, "
                   "so z*C/n is not calibrated to that step's sensitivity (fedavg and fedprox are)")
    if cfg.aggregation_weight != "uniform":
        out.append(f"aggregation-weight = {cfg.aggregation_weight!r}: a client weighing more than 1/n of the "
                   "mean moves it by more than C/n; the noise z*C/n assumes aggregation-weight = 'uniform'")
    return out


def privacy_report(cfg: RunConfig, strategy: Strategy) -> dict[str, Any]:
    """The privacy parameters for summary.json: configured, and as the wrapper ended the run."""
    report: dict[str, Any] = {
        "dp_mode": cfg.dp_mode,
        "histogram_epsilon": cfg.dp_histogram_epsilon or None,  # None: the histogram counts are exact
        "protected": [],
        "not_protected": [("each client's lowest and highest non-empty score bin per criterion (one outlier row "
                           "changes them, so the histogram reply as a whole is not epsilon-DP)")
                          if cfg.dp_histogram_epsilon else "each client's count of scores",
                          "train and evaluate metrics (pool sizes, selection quality, losses; score quantiles "
                          + ("withheld: NaN)" if cfg.dp_histogram_epsilon else "exact)")],
    }
    if cfg.dp_histogram_epsilon:
        criteria = len(cfg.criteria)
        report["protected"].append(
            f"histogram counts (the score reply sends no row count then): Laplace noise of scale "
            f"{criteria / cfg.dp_histogram_epsilon:g} per bin on each client ({criteria} histogram(s) share epsilon; "
            "epsilon-DP for adding/removing one row GIVEN the released bin range, per hierarchy start)")
    else:
        report["not_protected"].append("histogram counts (exact)")
    report["not_protected"].append("bad-counts histograms (synthetic corruption flags only, exact)")
    if not isinstance(strategy, WRAPPERS):
        report["not_protected"].insert(0, "adapter updates")
        return report
    where = "server" if cfg.dp_mode.startswith("server-") else "clients"
    report["protected"].insert(0, f"adapter updates: clipped on the {where}, Gaussian noise on the aggregate")
    report.update({
        "clipping_norm": cfg.dp_clipping_norm,
        "noise_multiplier": cfg.dp_noise_multiplier,
        "num_sampled_clients": cfg.dp_num_sampled_clients,
        "final_clipping_norm": float(strategy.clipping_norm),
        # adaptive: above z, as the clipped-count noise takes a share of the budget
        "effective_noise_multiplier": float(strategy.noise_multiplier),
        "final_noise_stddev": float(strategy.noise_multiplier * strategy.clipping_norm
                                    / strategy.num_sampled_clients),
        "caveats": caveats(cfg, aggregation_rule(strategy)),
    })
    if cfg.dp_mode in ADAPTIVE:
        report.update({"target_clipped_quantile": cfg.dp_target_clipped_quantile,
                       "clip_norm_lr": cfg.dp_clip_norm_lr,
                       "clipped_count_stddev": float(strategy.clipped_count_stddev)})
    return report
