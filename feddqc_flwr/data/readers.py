"""Read local JSON / JSONL / CSV / Parquet files into raw records.

Files are parsed record by record rather than with the `datasets` JSON/CSV builders: those fail
the whole file on one undecodable line, while here that line is skipped and counted. A file that
cannot be read at all raises DataLoadError naming the file and the reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feddqc_flwr.data.schema import BAD_CSV_LINE, BAD_ENCODING, BAD_JSON
from feddqc_flwr.errors import UserError

CLIENT_KEY = "__client__"  # set on records read from a {client_id: [rows]} JSON file
EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet")


class DataLoadError(UserError, RuntimeError):
    """A data source that cannot be used at all; the app stops at start with this message."""


@dataclass(frozen=True)
class SkippedRecord:
    """A record the reader could not decode; counted under `reason` like any bad row."""

    reason: str


Record = dict[str, Any] | SkippedRecord


@dataclass(frozen=True)
class SourcePart:
    """Raw records of one file or hub split, before field mapping.

    `prefix` names the part in row ids (`<prefix>-<position>`) and log lines; `field_map` is the
    part's own default map (user entries override it); `columns` are the names the map may use.
    """

    prefix: str
    records: Iterable[Record]
    columns: tuple[str, ...]
    field_map: str = ""


def file_part(path: Path, prefix: str, field_map: str = "",
              extra: dict[str, Any] | None = None) -> SourcePart:
    """A local file as a SourcePart; `extra` adds constant columns (e.g. a subset label)."""
    records = read_file(path)
    if extra:
        records = [{**r, **extra} if isinstance(r, dict) else r for r in records]
    columns = {k for r in records if isinstance(r, dict) for k in r}
    return SourcePart(prefix, records, tuple(sorted(columns)), field_map)


def read_file(path: Path) -> list[Record]:
    """Records of a local file, chosen by extension; undecodable records become SkippedRecord.

    Blank lines yield nothing; every other line/row yields one item, so a record's position in
    this stream is a stable id.
    """
    if not path.is_file():
        raise DataLoadError(f"data file {path}: not found (or not a file)")
    suffix = path.suffix.lower()
    readers = {".json": _read_json, ".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise DataLoadError(f"data file {path}: unsupported extension {suffix!r}; "
                            f"use one of {', '.join(EXTENSIONS)}")
    try:
        return readers[suffix](path)
    except DataLoadError:
        raise
    except (OSError, ValueError) as err:
        raise DataLoadError(f"data file {path}: cannot be read: {err}") from err


def _read_jsonl(path: Path) -> list[Record]:
    records: list[Record] = []
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                records.append(SkippedRecord(BAD_ENCODING))
                continue
            except json.JSONDecodeError:
                records.append(SkippedRecord(BAD_JSON))
                continue
            records.append(value if isinstance(value, dict) else SkippedRecord(BAD_JSON))
    return records


def _read_json(path: Path) -> list[Record]:
    """A list of rows, {"data": [rows]}, column lists, or FedLLM-Bench's {client_id: [rows]}."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataLoadError(f"data file {path}: not valid UTF-8 ({err})") from err
    except json.JSONDecodeError as err:
        if _looks_like_jsonl(raw):  # .json files holding one object per line are common
            return _read_jsonl(path)
        raise DataLoadError(f"data file {path}: invalid JSON ({err})") from err
    return _json_records(data, path)


def _looks_like_jsonl(raw: bytes) -> bool:
    first = raw.lstrip().split(b"\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _json_records(data: Any, path: Path) -> list[Record]:
    def rows(items: list[Any], client: str | None) -> list[Record]:
        return [SkippedRecord(BAD_JSON) if not isinstance(item, dict)
                else item if client is None else {**item, CLIENT_KEY: client} for item in items]

    if isinstance(data, list):
        return rows(data, None)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        values = list(data.values())
        if all(not isinstance(x, dict) for v in values for x in v):  # {"col": [...], ...}
            if len({len(v) for v in values}) != 1:
                raise DataLoadError(f"data file {path}: column lists have different lengths")
            keys = list(data)
            return [dict(zip(keys, row, strict=True)) for row in zip(*values, strict=True)]
        if len(data) == 1:  # {"data": [rows]} wrapper
            return rows(values[0], None)
        out: list[Record] = []
        for client, items in data.items():  # {client_id: [rows]}: natural clients
            out.extend(rows(items, str(client)))
        return out
    raise DataLoadError(f"data file {path}: expected a list of rows, column lists or "
                        "{client_id: [rows]} at the top level")


def _read_csv(path: Path) -> list[Record]:
    """Every cell stays a string; undecodable bytes become U+FFFD, which the cleaner rejects."""
    records: list[Record] = []
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise DataLoadError(f"data file {path}: empty CSV (no header row)")
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error:  # e.g. a field over csv.field_size_limit(): skip that line only
                cells = None
            if cells == []:
                continue
            if cells is None or len(cells) != len(header):
                records.append(SkippedRecord(BAD_CSV_LINE))
                continue
            records.append(dict(zip(header, cells, strict=True)))
    return records


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises its own ArrowInvalid etc.
        raise DataLoadError(f"data file {path}: not a readable Parquet file ({err})") from err
    return table.to_pylist()
