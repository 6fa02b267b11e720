"""What a benchmark ran on, stored beside every result so numbers are never read out of context."""

from __future__ import annotations

import os
import platform
import resource
from typing import Any

import torch

from feddqc_flwr.results import git_commit, package_versions


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
