"""`feddqc inspect REPORT`: a data owner reads the rows the filter judged worst, text included.

The report (`app.quality_report`) lives on the owner's own machine and carries each row's text,
so this needs neither the dataset nor the model. Rows are ranked at one hierarchy (default: the
first in the report, where every row was scored) by one criterion or, by default, by the joint
rank that orders rows as the all-criteria filter does (`selection.joint_rank.joint_keep_score`).
Unscorable rows (null scores) come first: the filter drops them.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from feddqc_flwr.app.quality_report import TEXT_FIELDS, read_report
from feddqc_flwr.errors import UserError
from feddqc_flwr.selection.joint_rank import joint_keep_score

JOINT = "joint"


def _clip(text: str, width: int) -> str:
    """One line of at most `width` characters: whitespace collapsed, an ellipsis where cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _fmt(value: float | None) -> str:
    return "null" if value is None or math.isnan(value) else f"{value:.4g}"


def lowest_rows(header: dict[str, Any], rows: list[dict[str, Any]], hierarchy: str, criterion: str,
                count: int) -> list[tuple[float, dict[str, Any]]]:
    """(ranking value, row) of the `count` lowest rows scored at `hierarchy`; ties by row index."""
    scored = [r for r in rows if hierarchy in r["hierarchies"]]
    matrix = np.asarray([[math.nan if r["hierarchies"][hierarchy]["scores"][c] is None
                          else r["hierarchies"][hierarchy]["scores"][c] for c in header["criteria"]]
                         for r in scored], dtype=np.float64).reshape(len(scored), len(header["criteria"]))
    key = joint_keep_score(matrix) if criterion == JOINT else matrix[:, header["criteria"].index(criterion)]
    order = sorted(range(len(scored)), key=lambda i: (-math.inf if math.isnan(key[i]) else key[i],
                                                      int(scored[i]["index"])))
    return [(float(key[i]), scored[i]) for i in order[:count]]


def _describe(rank: int, value: float, row: dict[str, Any], header: dict[str, Any], hierarchy: str,
              criterion: str, width: int) -> list[str]:
    """The lines printed for one row: ids, scores against λ, fate, then its text."""
    entry, lambdas = row["hierarchies"][hierarchy], header["lambda"][hierarchy]
    scores = "  ".join(f"{c} {_fmt(entry['scores'][c])} (λ {_fmt(lam)})"
                       for c, lam in zip(header["criteria"], lambdas, strict=True))
    tag = f" [{row['tag']}]" if row.get("tag") is not None else ""
    ranked = f"joint rank {_fmt(value)} | " if criterion == JOINT and len(header["criteria"]) > 1 else ""
    fate = "kept" if entry["kept"] else "dropped"
    trained = f"trained in hierarchy {row['trained_in']}" if row.get("trained_in") is not None else "never trained"
    lines = [f"{rank:>3}. row {row['index']} ({row['sample_id']}){tag} | {ranked}{scores} | "
             f"{fate} at hierarchy {hierarchy}, {trained}"]
    lines += [f"     {field}: {_clip(str(row.get(field) or ''), width)}"
              for field in TEXT_FIELDS if row.get(field)]
    return lines


def _inspect(args: argparse.Namespace) -> None:
    header, rows = read_report(Path(args.report))  # a ReportError exits 2 with one line (cli.main)
    hierarchies = sorted(header["lambda"], key=int)
    hierarchy = str(args.hierarchy) if args.hierarchy is not None else (hierarchies[0] if hierarchies else "")
    if hierarchy not in hierarchies:
        raise UserError(f"{args.report}: no hierarchy {args.hierarchy} in the report "
                        f"(it has: {', '.join(hierarchies) or 'none'})")
    criterion = args.criterion or JOINT
    if criterion != JOINT and criterion not in header["criteria"]:
        raise UserError(f"--criterion {criterion!r}: the report's criteria are {', '.join(header['criteria'])}")
    lowest = lowest_rows(header, rows, hierarchy, criterion, args.lowest)
    scored = sum(hierarchy in r["hierarchies"] for r in rows)
    by = "the joint rank (rank-min over every criterion)" if criterion == JOINT else criterion
    print(f"partition {header['partition']} of {header['num-partitions']}, hierarchy {hierarchy}: "
          f"{scored} rows scored; the {len(lowest)} lowest by {by}")
    for rank, (value, row) in enumerate(lowest, start=1):
        print("\n".join(_describe(rank, value, row, header, hierarchy, criterion, args.width)))


def add_inspect_command(sub: argparse._SubParsersAction) -> None:
    """Register `inspect` on the `feddqc` CLI's subparsers."""
    p = sub.add_parser("inspect", help="print a client's lowest-scoring rows from its node-local quality report")
    p.add_argument("report", help="a client's quality-partition-<p>-of-<n>.jsonl")
    p.add_argument("--lowest", type=int, default=10, help="how many rows to print (default 10)")
    p.add_argument("--criterion", help="rank by this criterion's score (default: the joint rank)")
    p.add_argument("--hierarchy", type=int, help="rank the scores of this hierarchy (default: the first)")
    p.add_argument("--width", type=int, default=160, help="characters of each text field shown (default 160)")
    p.set_defaults(func=_inspect)
