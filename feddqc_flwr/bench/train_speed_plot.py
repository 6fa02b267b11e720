"""The train-speed bench as a picture: each precision's loss per step and seconds per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def train_speed_plot(result: dict[str, Any], path: Path) -> Path:
    """Left: training loss per step; right: seconds per step of each round."""
    fig, (loss_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, p in result["precisions"].items():
        loss_ax.plot(range(1, len(p["step_losses"]) + 1), p["step_losses"], label=name)
        time_ax.plot(range(1, len(p["round_step_seconds"]) + 1), p["round_step_seconds"], "o-",
                     label=f"{name} (median {p['step_seconds_median']:.2f} s)")
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="loss trajectory")
    time_ax.set(xlabel="round", ylabel="seconds per step", title=f"step time, batch {result['batch_size']}")
    time_ax.set_ylim(bottom=0)
    for ax in (loss_ax, time_ax):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
