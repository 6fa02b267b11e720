"""The flwr releases the resident executor was checked against, and the check at start.

The executor calls Flower internals (`supernode.runtime.run_clientapp`, the Runtime API
protobufs, `cli.install`), which change without notice between releases: any other flwr
version is refused rather than run on a guess.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# 1.41.0 is what the app pins and CI runs; 1.42.0's files used here are the same as 1.41.0's
# (compared by source, docs/deployment.md). Add a version only after the deployment tests pass on it.
SUPPORTED_FLWR = ("1.41.0", "1.42.0")


class UnsupportedFlwr(RuntimeError):
    """The installed flwr is not one the executor was checked against."""


def installed_flwr() -> str:
    try:
        return version("flwr")
    except PackageNotFoundError:
        return "none"


def check_flwr(found: str | None = None) -> str:
    """The installed flwr version, or UnsupportedFlwr with what to do instead."""
    found = installed_flwr() if found is None else found
    if found not in SUPPORTED_FLWR:
        raise UnsupportedFlwr(
            f"the resident executor supports flwr {' and '.join(SUPPORTED_FLWR)}, but flwr {found} is "
            "installed: it uses Flower internals that other releases may have changed. Install a "
            "supported flwr, or run the SuperNode without the resident executor (stock "
            "`flower-supernode`, which starts `flower-superexec` itself).")
    return found
