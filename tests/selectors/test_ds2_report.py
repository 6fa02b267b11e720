"""The run report shows each client's DS2 transition matrix from its node-local file."""

from __future__ import annotations

import json
from pathlib import Path

from feddqc_flwr.report.document import Document
from feddqc_flwr.report.ds2_section import add_ds2_section
from feddqc_flwr.report.run_data import RunData


def test_report_shows_the_transition_matrix(tmp_path: Path) -> None:
    run = RunData(tmp_path / "outputs" / "run-a", {"run_id": 7}, [], {}, [])
    local = tmp_path / "outputs" / "client-local" / "run-7"
    local.mkdir(parents=True)
    t = [[0.9 if i == j else 0.02 for j in range(6)] for i in range(6)]
    (local / "ds2-partition-1-stage-0.json").write_text(json.dumps({
        "rated": 40, "parse-failures": 3, "retried": 5, "misrated": 4, "curated": 2,
        "rated-histogram": [3, 5, 10, 12, 6, 4], "curated-histogram": [3, 6, 9, 12, 6, 4],
        "transition-matrix": t, "p-clean": [0.1, 0.15, 0.25, 0.3, 0.12, 0.08]}))
    doc = Document("r")
    add_ds2_section(doc, run)
    text = doc.markdown()
    assert "## DS2 score curation" in text
    assert "| 1 | 0 | 40 | 3 | 5 | 4 | 2 |" in text
    assert "| 2 | 0.02 | 0.02 | 0.9 | 0.02 | 0.02 | 0.02 |" in text
    empty = Document("r")
    add_ds2_section(empty, RunData(tmp_path / "x" / "run-b", {"run_id": 8}, [], {}, []))
    assert empty.blocks == []
