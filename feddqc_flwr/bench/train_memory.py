"""Peak memory of local training steps at the paper's batch size.

Peak RSS is per process, so `feddqc bench train-memory` must run in a fresh process (it does,
as a command); the peak before training (model loaded) is reported too, so the training part
can be read off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from feddqc_flwr.bench.machine import peak_rss_mib
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.training.local_sft import LocalTrainConfig, train_adapter


def train_step_peak(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, batch_size: int, steps: int,
                    max_length: int) -> dict[str, float]:
    """Peak RSS before and after `steps` training steps of `batch_size`, seconds per step, loss."""
    before = peak_rss_mib()
    started = time.perf_counter()
    result = train_adapter(bundle.model, bundle.tokenizer, list(rows), LocalTrainConfig(
        steps=steps, batch_size=batch_size, grad_accum=1, learning_rate=1e-4, max_length=max_length,
        template="alpaca", proximal_mu=0.0, seed=0))
    return {"peak_rss_mib_before_training": before, "peak_rss_mib_after_training": peak_rss_mib(),
            "step_seconds": (time.perf_counter() - started) / steps, "train_loss": result.loss}
