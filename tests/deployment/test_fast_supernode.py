"""`feddqc-supernode`: the SuperNode's fixed sleeps capped, everything else Flower's own.

The real SuperNode runs through it in `RESIDENT=1 scripts/deploy/supernode.sh`, so the resident
executor's deployment tests are also its end-to-end tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from flwr.supernode import start_client_internal as loop

from feddqc_flwr.executor import fast_supernode
from feddqc_flwr.executor.fast_supernode import CappedTime, poll_interval, shorten_polling
from feddqc_flwr.executor.supervisor import EXIT_REFUSED


def test_sleep_is_capped_and_the_rest_of_time_is_real() -> None:
    slept: list[float] = []
    capped = CappedTime(0.25, sleep=slept.append)
    capped.sleep(3)      # the SuperNode's idle poll
    capped.sleep(0.5)    # its wait for a ClientApp reply
    capped.sleep(0.1)
    assert slept == [0.25, 0.25, 0.1]
    assert capped.time is time.time and capped.monotonic is time.monotonic


@pytest.mark.parametrize(("raw", "expected"), [(None, 0.25), ("", 0.25), ("0.5", 0.5), ("3", 3.0), ("0.01", 0.01)])
def test_poll_interval_from_the_environment(raw: str | None, expected: float) -> None:
    assert poll_interval({} if raw is None else {"FEDDQC_SUPERNODE_POLL": raw}) == expected


@pytest.mark.parametrize("raw", ["0", "3.5", "fast", "nan", "-1"])
def test_bad_poll_interval_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=r"FEDDQC_SUPERNODE_POLL=.*between 0.01 and 3.0"):
        poll_interval({"FEDDQC_SUPERNODE_POLL": raw})


def test_the_installed_supernode_loop_gets_the_capped_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails when a flwr upgrade stops calling `time.sleep` through the module this patches."""
    monkeypatch.setattr(loop, "time", time)  # restored after the test
    shorten_polling(0.2)
    assert isinstance(loop.time, CappedTime) and loop.time.cap == 0.2
    source = Path(loop.__file__).read_text(encoding="utf-8")
    assert "time.sleep(3)" in source and "time.sleep(0.5)" in source  # the sleeps this shortens


def test_bad_variable_stops_before_flower_starts(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(loop, "time", time)
    monkeypatch.setenv("FEDDQC_SUPERNODE_POLL", "10")
    with pytest.raises(SystemExit) as exit_info:
        fast_supernode.main()
    assert exit_info.value.code == EXIT_REFUSED
    assert "FEDDQC_SUPERNODE_POLL='10'" in capsys.readouterr().err
    assert loop.time is time
