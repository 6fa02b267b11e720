"""`feddqc data inspect` and `feddqc data corrupt`: look at the data a run would see, before running.

`inspect` prints per-client sizes, clean/bad ratios, corruption-type counts, skip counts and
a few example rows; `corrupt` writes the (capped) source with synthetic corruption and flags
as JSONL, to read or to reuse as a dataset file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import concatenate_datasets

from feddqc_flwr.cli.table import show_table
from feddqc_flwr.data.client_data import load_client_data, split_source
from feddqc_flwr.data.corruption import TYPES, bad_type_counts, corrupt_dataset
from feddqc_flwr.data.partition import SCHEMES
from feddqc_flwr.data.spec import DataSpec

_TYPE_ORDER = ("clean", *TYPES)


def _clip(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def inspect(spec: DataSpec, num_partitions: int, examples: int = 2) -> list[dict[str, Any]]:
    """Print what each client would get; return the per-client summary rows (for scripting)."""
    summary = []
    example_rows: list[list[Any]] = []
    for pid in range(num_partitions):
        data = load_client_data(spec, pid, num_partitions)
        types = Counter(data.train["bad_type"])
        bad = sum(data.train["is_bad"])
        summary.append({"client": pid, "train": len(data.train), "valid": len(data.valid),
                        "bad": bad, "bad_ratio": bad / max(1, len(data.train)),
                        "types": dict(types), "groups": len(set(data.train["group"]))})
        shown = Counter()
        for row in data.train:
            if shown[row["is_bad"]] < examples:
                shown[row["is_bad"]] += 1
                example_rows.append([pid, row["sample_id"], row["bad_type"], _clip(row["instruction"], 40),
                                     _clip(row["response"])])
    split = split_source(spec)
    show_table(f"{spec.source}: {num_partitions} client(s), partitioner={spec.partitioner}, "
          f"corrupt={spec.corrupt_type}",
          ["client", "train", "valid", "bad", "bad ratio", "groups", "types"],
          [[s["client"], s["train"], s["valid"], s["bad"], f"{s['bad_ratio']:.2f}", s["groups"],
            ", ".join(f"{t}={s['types'][t]}" for t in _TYPE_ORDER if t in s["types"])] for s in summary])
    show_table("rows", ["split", "rows"], [["train pool", len(split.pool)], ["global test", len(split.test)]])
    show_table("skipped rows", ["reason", "count"], [[r, c] for r, c in sorted(split.skipped.items())] or [["none", 0]])
    show_table("example training rows", ["client", "id", "type", "instruction", "response"], example_rows)
    return summary


def corrupt(spec: DataSpec, out_path: str | Path) -> dict[str, int]:
    """Write the filtered, capped source corrupted at spec's ratio/type/seed as JSONL; return type counts."""
    split = split_source(spec)
    ds = corrupt_dataset(concatenate_datasets([split.pool, split.test]), spec.corrupt_ratio,
                         spec.corrupt_type, spec.seed)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for row in ds:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts = bad_type_counts(ds)
    show_table(f"wrote {len(ds)} rows to {out}", ["type", "rows"],
          [[t, counts[t]] for t in _TYPE_ORDER if t in counts])
    return counts


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per DataSpec field, named like its run-config key (`dataset` for source)."""
    defaults = DataSpec()
    for f in dataclasses.fields(DataSpec):
        flag = "--dataset" if f.name == "source" else "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": getattr(defaults, f.name),
                                  "type": type(getattr(defaults, f.name))}
        if f.name == "partitioner":
            kwargs["choices"] = SCHEMES
        if f.name == "corrupt_type":
            kwargs["choices"] = TYPES
        parser.add_argument(flag, help=f"default: {getattr(defaults, f.name)!r}", **kwargs)


def _spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DataSpec)})


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `feddqc data inspect` and `feddqc data corrupt`."""
    data = subparsers.add_parser("data", help="inspect or corrupt a dataset as the app would see it")
    commands = data.add_subparsers(dest="data_command", required=True)
    p = commands.add_parser("inspect", help="per-client sizes, corruption and skip counts")
    _add_spec_arguments(p)
    p.add_argument("--num-partitions", type=int, default=2, help="number of clients (default: 2)")
    p.add_argument("--examples", type=int, default=2, help="clean and bad example rows per client")
    p.set_defaults(func=lambda a: inspect(_spec(a), a.num_partitions, a.examples))
    p = commands.add_parser("corrupt", help="write the corrupted dataset as JSONL with flags")
    _add_spec_arguments(p)
    p.add_argument("--out", required=True, help="output .jsonl path")
    p.set_defaults(func=lambda a: corrupt(_spec(a), a.out))
