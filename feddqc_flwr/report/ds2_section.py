"""The run report's DS2 section: each client's estimated score transition matrix, read from the
node-local `ds2-partition-P-stage-S.json` files (present only when clients share the run's disk)."""

from __future__ import annotations

import json
import re

from feddqc_flwr.report.document import Document
from feddqc_flwr.report.run_data import RunData, client_local_folder

_NAME = re.compile(r"ds2-partition-(\d+)-stage-(\d+)\.json")


def add_ds2_section(doc: Document, run: RunData) -> None:
    """One table of curation counts and one transition matrix per client and stage, if any."""
    folder = client_local_folder(run.run_dir, run.config)
    found = sorted((int(m[1]), int(m[2]), p) for p in folder.glob("ds2-*.json") if (m := _NAME.fullmatch(p.name)))
    if not found:
        return
    doc.heading("DS2 score curation")
    reports = [(pid, stage, json.loads(path.read_text())) for pid, stage, path in found]
    doc.table(["partition", "stage", "rated", "parse failures", "retried", "misrated", "curated",
               "rated classes 0..5", "curated classes 0..5"],
              [[pid, stage, r["rated"], r["parse-failures"], r["retried"], r["misrated"], r["curated"],
                r["rated-histogram"], r["curated-histogram"]] for pid, stage, r in reports])
    for pid, stage, r in reports:
        if r.get("transition-matrix") is None:
            continue
        doc.text(f"Partition {pid}, stage {stage}: estimated T[true score, rated score] (HOC), "
                 f"clean prior {r['p-clean']}.")
        doc.table(["true \\ rated", *map(str, range(len(r["transition-matrix"])))],
                  [[y, *row] for y, row in enumerate(r["transition-matrix"])])
