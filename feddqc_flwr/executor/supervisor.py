"""The restart loop: run the executor as a child process and start it again when it dies.

A crash of the executor (segfault, out of memory, SIGKILL) loses only the task it was running,
which the SuperNode answers with an error once the task's heartbeats stop; a new child then
claims the next tasks. Use this, or a service manager (`Restart=always`), in production.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

EXIT_REFUSED = 3  # unsupported flwr, bad options, auth refused: restarting cannot help
_STABLE_SECONDS = 60.0  # a child that ran this long resets the back-off


def supervise(child_args: list[str], max_delay: float = 30.0) -> int:
    """Run `python -m feddqc_flwr.executor CHILD_ARGS` until it exits 0/EXIT_REFUSED or we are stopped."""
    stopping = False
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    quick_failures = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "feddqc_flwr.executor", *child_args])
        code = child.wait()
        if stopping or code in (0, EXIT_REFUSED):
            return code
        quick_failures = 0 if time.monotonic() - started > _STABLE_SECONDS else quick_failures + 1
        delay = min(2.0 ** quick_failures, max_delay)
        print(f"feddqc-executor: the executor (pid {child.pid}) exited with code {code}; "
              f"restarting in {delay:.0f} s", file=sys.stderr, flush=True)
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)
        if stopping:
            return 0
