"""What a benchmark ran on, stored beside every result so numbers are never read out of context."""

from __future__ import annotations

import os
import platform
import resource
import time
from typing import Any

import torch

from feddqc_flwr.app.results import git_commit, package_versions


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict[str, Any]:
    """CPU/GPU, thread count, load at start, versions and commit."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
        "gpu": gpu,
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_commit": git_commit(),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(dtype: torch.dtype, device: torch.device, repeats: int = 20) -> float:
    """Throughput of one transformer-sized matrix product (2048 x 576 by 576 x 1536, SmolLM2's MLP)
    in `dtype`: says whether this hardware runs that precision natively."""
    x = torch.randn(2048, 576, device=device).to(dtype)
    w = torch.randn(1536, 576, device=device).to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, w)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048 * 576 * 1536 * repeats / (time.perf_counter() - started) / 1e9
