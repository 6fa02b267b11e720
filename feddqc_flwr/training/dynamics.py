"""Per-sample training dynamics for the data map (Swayamdipta et al., 2020), kept on the client.

With `data-map = true`, each round before local training a client records every training
sample's response probability (exp of minus the mean token NLL) under the global adapter it
received, in a node-local JSON-lines file. Over rounds, confidence = mean probability and
variability = its standard deviation; clean samples tend to be learnt (confidence rises), corrupted
ones stay hard or ambiguous. The file never leaves the client; `feddqc report` reads it when it
shares a disk with the clients (simulation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from feddqc_flwr.evaluation.loss import response_nll
from feddqc_flwr.llm.model import ModelBundle


def response_probabilities(bundle: ModelBundle, rows: Dataset, *, template: str, max_length: int,
                           batch_size: int) -> np.ndarray:
    """exp(-mean response-token NLL) of each row under the model as it is now."""
    return np.exp(-response_nll(bundle, list(rows), template=template, max_length=max_length,
                                batch_size=batch_size))


def append_round(path: Path, server_round: int, partition_id: int, rows: Dataset, probs: np.ndarray) -> None:
    """One line per round: the probabilities and the (synthetic) quality flags of every train row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"round": server_round, "partition": partition_id, "sample_id": list(rows["sample_id"]),
            "prob": [None if not np.isfinite(p) else float(p) for p in probs],
            "is_bad": [bool(b) for b in rows["is_bad"]], "bad_type": list(rows["bad_type"])}
    with path.open("a") as fh:
        fh.write(json.dumps(line) + "\n")


def data_map(folder: Path) -> list[dict[str, Any]]:
    """Confidence and variability per (partition, sample) from every client file in `folder`."""
    series: dict[tuple[int, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("partition-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for sid, prob, bad, kind in zip(record["sample_id"], record["prob"], record["is_bad"],
                                            record["bad_type"], strict=True):
                entry = series.setdefault((record["partition"], sid), {"probs": [], "is_bad": bad, "bad_type": kind})
                if prob is not None:
                    entry["probs"].append(prob)
    return [{"partition": part, "sample_id": sid, "confidence": float(np.mean(e["probs"])),
             "variability": float(np.std(e["probs"])), "rounds": len(e["probs"]), "is_bad": e["is_bad"],
             "bad_type": e["bad_type"]}
            for (part, sid), e in sorted(series.items()) if e["probs"]]
