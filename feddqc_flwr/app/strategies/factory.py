"""Flower's own FedAvg-family strategies, chosen by the `strategy` config key."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.app.strategies.metrics import aggregate_client_metrics


def build_base_strategy(cfg: RunConfig) -> FedAvg:
    """The aggregation rule over LoRA adapter arrays; FedDQC wraps it for round config."""
    common = {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": cfg.fraction_evaluate,
        "min_train_nodes": cfg.min_train_nodes,
        "min_evaluate_nodes": 1,
        "min_available_nodes": cfg.min_train_nodes,
        "train_metrics_aggr_fn": aggregate_client_metrics,
        "evaluate_metrics_aggr_fn": aggregate_client_metrics,
    }
    fedopt = {"eta": cfg.fedopt_eta, "eta_l": cfg.lr_max, "beta_1": cfg.fedopt_beta1,
              "beta_2": cfg.fedopt_beta2, "tau": cfg.fedopt_tau}
    if cfg.strategy == "fedavg":
        return FedAvg(**common)
    if cfg.strategy == "fedavgm":
        return FedAvgM(**common, server_learning_rate=cfg.server_learning_rate,
                       server_momentum=cfg.server_momentum)
    if cfg.strategy == "fedprox":
        return FedProx(**common, proximal_mu=cfg.proximal_mu)
    if cfg.strategy == "fedadagrad":
        return FedAdagrad(**common, eta=cfg.fedopt_eta, eta_l=cfg.lr_max, tau=cfg.fedopt_tau)
    if cfg.strategy == "fedyogi":
        return FedYogi(**common, **fedopt)
    if cfg.strategy == "fedadam":
        return FedAdam(**common, **fedopt)
    raise ValueError(f"unknown strategy {cfg.strategy!r}")  # parse_run_config rejects it first
