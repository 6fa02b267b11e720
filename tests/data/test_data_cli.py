"""`feddqc data inspect` / `feddqc data corrupt` print and write what the pipeline produces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from feddqc_flwr.cli.data import add_data_commands, corrupt, inspect
from feddqc_flwr.data.spec import DataSpec


def test_inspect_reports_per_client_numbers(capsys) -> None:
    spec = DataSpec(source="demo", partitioner="natural", corrupt_ratio=0.5, test_fraction=0.0, valid_fraction=0.0)
    summary = inspect(spec, 3)
    assert [s["train"] for s in summary] == [14, 14, 14]
    assert [s["bad"] for s in summary] == [7, 7, 7] and [s["groups"] for s in summary] == [1, 1, 1]
    assert all(sum(s["types"].values()) == 14 and s["types"]["clean"] == 7 for s in summary)
    out = capsys.readouterr().out
    assert "demo: 3 client(s)" in out and "global test" in out and "example training rows" in out


def test_corrupt_writes_flagged_jsonl(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "bad.jsonl"
    counts = corrupt(DataSpec(source="demo", corrupt_type="cut", corrupt_ratio=0.5), out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 42 and counts == {"clean": 21, "cut": 21}
    assert sum(r["is_bad"] for r in rows) == 21
    assert {r["bad_type"] for r in rows if r["is_bad"]} == {"cut"}
    assert set(rows[0]) == {"sample_id", "instruction", "input", "response", "history", "group", "is_bad", "bad_type"}
    assert "wrote 42 rows" in capsys.readouterr().out


def test_argparse_commands(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "corrupt", "--dataset", "demo", "--corrupt-type", "swap",
                              "--corrupt-ratio", "0.25", "--out", str(tmp_path / "x.jsonl")])
    counts = args.func(args)
    assert counts == {"clean": 31, "swap": 11}
    args = parser.parse_args(["data", "inspect", "--dataset", "demo", "--num-partitions", "2", "--seed", "5"])
    assert (args.seed, args.source, args.num_partitions) == (5, "demo", 2)
