"""`feddqc-supernode`: Flower's `flower-supernode` with its fixed polling sleeps shortened.

A SuperNode with no message to run sleeps 3 s before it asks the SuperLink again, and waits for a
ClientApp's reply in 0.5 s steps (`supernode/start_client_internal.py`; neither is configurable in
flwr 1.41/1.42). With the model resident in `feddqc-executor` those sleeps are most of what a
message costs beyond the work itself. This runs the same `flower-supernode` entry point with the
`time` module seen by that one file replaced by one whose `sleep` is capped at
`FEDDQC_SUPERNODE_POLL` seconds (default 0.25): an idle node asks the SuperLink 4 times a second
instead of once every 3 s. Raise it for federations of many nodes.
"""

from __future__ import annotations

import os
import sys
import time
import types
from collections.abc import Callable, Mapping

from feddqc_flwr.executor.supervisor import EXIT_REFUSED
from feddqc_flwr.executor.versions import UnsupportedFlwr, check_flwr

POLL_ENV = "FEDDQC_SUPERNODE_POLL"
DEFAULT_POLL = 0.25
POLL_RANGE = (0.01, 3.0)


class CappedTime(types.ModuleType):
    """The `time` module whose `sleep` never waits longer than `cap`; all else is the real module."""

    def __init__(self, cap: float, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__("time")
        self.cap, self._sleep = cap, sleep

    def sleep(self, seconds: float) -> None:
        self._sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def poll_interval(env: Mapping[str, str]) -> float:
    """`FEDDQC_SUPERNODE_POLL` in seconds, or a message naming the variable and its range."""
    raw = env.get(POLL_ENV, "")
    if not raw:
        return DEFAULT_POLL
    low, high = POLL_RANGE
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ValueError(f"{POLL_ENV}={raw!r}: give seconds between {low} and {high} (default {DEFAULT_POLL})")
    return value


def shorten_polling(cap: float) -> None:
    """Cap the sleeps of the SuperNode's pull/push loop; refuse a flwr whose loop is not as checked."""
    from flwr.supernode import start_client_internal as loop  # noqa: PLC0415  # after the version check

    if not isinstance(loop.time, CappedTime) and loop.time is not time:
        raise UnsupportedFlwr("flwr's supernode/start_client_internal.py no longer imports `time` as the "
                              "resident setup expects: run `flower-supernode` instead of `feddqc-supernode`")
    loop.time = CappedTime(cap)


def main() -> None:
    """`feddqc-supernode [flower-supernode flags]`."""
    try:
        check_flwr()
        shorten_polling(poll_interval(os.environ))
    except (UnsupportedFlwr, ValueError) as err:
        print(f"feddqc-supernode: {err}", file=sys.stderr)
        sys.exit(EXIT_REFUSED)
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415

    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
