"""The canonical row schema (CONTRACT.md) and the row cleaner every source goes through.

Real instruction data is messy: missing fields, numbers where text belongs, mojibake, empty
answers, megabyte-long pastes, repeated rows. A bad row is skipped and counted by reason, never
fatal, so one broken line cannot stop a federated run after hours of setup.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from datasets import Dataset, Features, List, Value

logger = logging.getLogger(__name__)

COLUMNS = ("sample_id", "instruction", "input", "response", "history", "group", "is_bad", "bad_type")
TEXT_COLUMNS = ("instruction", "input", "response")
CLEAN = "clean"
FEATURES = Features({
    "sample_id": Value("string"),
    "instruction": Value("string"),
    "input": Value("string"),
    "response": Value("string"),
    "history": List({"role": Value("string"), "content": Value("string")}),
    "group": Value("string"),
    "is_bad": Value("bool"),
    "bad_type": Value("string"),
})
MAX_CHARS = 20_000  # whole row (history included); far beyond any max-length the trainer keeps

# Skip reasons (the keys of a SkipReport).
MISSING_FIELD = "missing_field"
NOT_TEXT = "not_text"
EMPTY_INSTRUCTION = "empty_instruction"
EMPTY_RESPONSE = "empty_response"
BAD_ENCODING = "bad_encoding"
BAD_HISTORY = "bad_history"
TOO_LONG = "too_long"
DUPLICATE = "duplicate"
DUPLICATE_ID = "duplicate_id"
# Reasons raised before cleaning, by readers and field mapping.
BAD_JSON = "bad_json"
BAD_CSV_LINE = "bad_csv_line"
BAD_CHAT = "bad_chat"
NOT_LIST = "not_list"  # a field map indexed a column (`answer[0]`) that is not a list in this row
# Reason added by the run pipeline (client_data), not by the cleaner.
RESPONSE_TOO_LONG_FOR_RUN = "response_too_long_for_run"

_BAD_CHARS = ("\ufffd", "\x00")  # replacement char = text that was decoded with errors="replace"
_EXAMPLES_PER_REASON = 3


class SkipReport(Counter):
    """Skipped-row counts by reason, plus a few example row ids per reason for the log."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, row_id: str) -> None:
        """Count one skipped row and remember its id if few are remembered yet."""
        self[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < _EXAMPLES_PER_REASON:
            ids.append(row_id)

    def merge(self, other: SkipReport) -> None:
        """Add another report's counts and examples into this one."""
        for reason, count in other.items():
            self[reason] += count
            ids = self.examples.setdefault(reason, [])
            ids.extend(other.examples.get(reason, [])[: _EXAMPLES_PER_REASON - len(ids)])

    def log(self, source_name: str) -> None:
        """One warning line per reason, so a dirty source is visible but not noisy."""
        for reason, count in sorted(self.items()):
            examples = ", ".join(self.examples.get(reason, []))
            logger.warning("%s: skipped %d row(s): %s (e.g. %s)", source_name, count, reason, examples)


class BadRow(Exception):
    """Raised by per-row conversion code; the caller skips the row under `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(value: Any, *, required: bool) -> str:
    """A text field as str; bytes must be valid UTF-8, None is '' unless the field is required."""
    if value is None:
        if required:
            raise BadRow(MISSING_FIELD)
        return ""
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRow(BAD_ENCODING) from None
    if not isinstance(value, str):
        raise BadRow(NOT_TEXT)
    if any(c in value for c in _BAD_CHARS):
        raise BadRow(BAD_ENCODING)
    try:
        value.encode("utf-8")  # lone surrogates from surrogateescape decoding
    except UnicodeEncodeError:
        raise BadRow(BAD_ENCODING) from None
    return value.strip()


def _history(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRow(BAD_HISTORY)
    turns = []
    for turn in value:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise BadRow(BAD_HISTORY)
        content = turn.get("content")
        if not isinstance(content, str | bytes):
            raise BadRow(BAD_HISTORY)
        turns.append({"role": turn["role"], "content": _text(content, required=True)})
    return turns


def _group(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | int | float):  # numeric labels and user ids are fine as groups
        return str(value)
    return _text(value, required=False)


def clean_row(row: dict[str, Any], max_chars: int = MAX_CHARS) -> dict[str, Any]:
    """One canonical row with clean flags, or BadRow naming why it is unusable."""
    for key in ("instruction", "response"):
        if key not in row:
            raise BadRow(MISSING_FIELD)
    out = {
        "sample_id": str(row["sample_id"]),
        "instruction": _text(row["instruction"], required=True),
        "input": _text(row.get("input"), required=False),
        "response": _text(row["response"], required=True),
        "history": _history(row.get("history")),
        "group": _group(row.get("group")),
        "is_bad": False,
        "bad_type": CLEAN,
    }
    if not out["instruction"]:
        raise BadRow(EMPTY_INSTRUCTION)
    if not out["response"]:
        raise BadRow(EMPTY_RESPONSE)
    size = sum(len(out[k]) for k in TEXT_COLUMNS) + sum(len(t["content"]) for t in out["history"])
    if size > max_chars:
        raise BadRow(TOO_LONG)
    return out


def clean_rows(rows: Iterable[dict[str, Any]], source_name: str,
               max_chars: int = MAX_CHARS) -> tuple[list[dict[str, Any]], SkipReport]:
    """Keep the usable rows of a source; count and log the others by reason.

    Rows without a sample_id get `<source_name>-<position>`. Duplicates are exact repeats of
    (instruction, input, response) with the same history (history only matters for multi-turn
    rows); the first occurrence is kept.
    """
    kept: list[dict[str, Any]] = []
    report = SkipReport()
    seen_content: set[tuple[str, str, str, str]] = set()
    seen_ids: set[str] = set()
    for position, row in enumerate(rows):
        row_id = str(row.get("sample_id") or f"{source_name}-{position}")
        try:
            out = clean_row({**row, "sample_id": row_id}, max_chars)
            key = (out["instruction"], out["input"], out["response"],
                   json.dumps(out["history"], ensure_ascii=False) if out["history"] else "")
            if key in seen_content:
                raise BadRow(DUPLICATE)
            if row_id in seen_ids:
                raise BadRow(DUPLICATE_ID)
        except BadRow as bad:
            report.add(bad.reason, row_id)
            continue
        seen_content.add(key)
        seen_ids.add(row_id)
        kept.append(out)
    report.log(source_name)
    return kept, report


def to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """Canonical rows as a Dataset with the contract's columns and types, in contract order."""
    return Dataset.from_dict({c: [r[c] for r in rows] for c in COLUMNS}, features=FEATURES)
