"""The model part of the run config, as the model layer's `ModelSpec`, for clients and server."""

from __future__ import annotations

import dataclasses
import logging

import torch

from feddqc_flwr.app.config import RunConfig, check_training_device
from feddqc_flwr.llm.model import ModelBundle, ModelSpec, load_adapter_bundle, load_model_bundle
from feddqc_flwr.llm.precision import native_bf16

log = logging.getLogger("flwr").getChild(__name__)  # shown in `flwr run --stream`


def spec_from_config(cfg: RunConfig) -> ModelSpec:
    """The model as a training/scoring node loads it (same layout on server and clients, so
    adapters match); 8/4-bit where bitsandbytes cannot run stops here with a `ConfigError`."""
    check_training_device(cfg)
    targets = cfg.target_modules
    return ModelSpec(
        name=cfg.model, quantization=cfg.quantization, dtype=cfg.dtype, lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        target_modules=targets if isinstance(targets, str) else tuple(targets),
        gradient_checkpointing=cfg.gradient_checkpointing, seed=cfg.seed,
    )


def server_spec_from_config(cfg: RunConfig) -> ModelSpec:
    """The model as an evaluating server loads it: quantized where CUDA is, else unquantized.

    The server only evaluates, so without CUDA it loads the base model unquantized, in bf16
    where the CPU has native bf16, else float32 (`dtype` was meant for the GPU), and needs no
    bitsandbytes. Its numbers then differ slightly from a quantized model's; the adapter layout
    and the initial adapter do not (LoRA init is seeded float32, `llm.model.add_lora`).
    """
    if cfg.quantization == "none" or torch.cuda.is_available():
        return spec_from_config(cfg)
    dtype = "bfloat16" if native_bf16(torch.device("cpu")) else "float32"
    log.info("quantization %s on a server without CUDA: it evaluates %s unquantized in %s "
             "(clients still train in %s; set eval-samples = 0 to skip loading the base weights)",
             cfg.quantization, cfg.model, dtype, cfg.quantization)
    return spec_from_config(dataclasses.replace(cfg, quantization="none", dtype=dtype))


def load_server_bundle(cfg: RunConfig, evaluates: bool) -> ModelBundle:
    """The server's model: a full one to evaluate with, else the adapter on a weightless base
    (initial adapter, checkpoints, saving: no base weights, GPU or bitsandbytes needed)."""
    if evaluates:
        return load_model_bundle(server_spec_from_config(cfg))
    log.info("the server evaluates nothing (eval-samples = 0): it loads no base weights, only the adapter")
    return load_adapter_bundle(spec_from_config(dataclasses.replace(cfg, quantization="none")))  # layout only
