"""The model part of the run config, as the model layer's `ModelSpec`."""

from __future__ import annotations

from feddqc_flwr.app.config import RunConfig
from feddqc_flwr.llm.model import ModelSpec


def spec_from_config(cfg: RunConfig) -> ModelSpec:
    """The model part of the run config (same on server and clients, so adapters match)."""
    targets = cfg.target_modules
    return ModelSpec(
        name=cfg.model, quantization=cfg.quantization, dtype=cfg.dtype, lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets if isinstance(targets, str) else tuple(targets),
        gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed,
    )
