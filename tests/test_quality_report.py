"""The data owner's quality report: written on the client at every hierarchy start, under the run's
output root next to the progress file, telling per row each criterion's score, kept or dropped and
the hierarchy it was trained in, while nothing of it (no text, no row id) reaches the server.

The handler tests drive the real ClientApp (tiny model, demo data) through K = 3 hierarchies with
each criterion's median as lambda, as tests/test_client_hierarchy.py does; the expected values come
from the client's own ClientProgress and from comparing its scores with lambda here. The file-level
tests build selections with `select_stage` on scores set by hand, so the lowest rows are known."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from feddqc_flwr.app.client_progress import ClientProgress, RunLineage, progress_path
from feddqc_flwr.app.config import RunConfig, parse_run_config
from feddqc_flwr.app.model_spec import spec_from_config
from feddqc_flwr.app.packed_arrays import unpack_message
from feddqc_flwr.app.quality_report import read_report, report_paths, write_quality_report
from feddqc_flwr.app.results import client_local_dir, output_root
from feddqc_flwr.app.server_app import run_lineage
from feddqc_flwr.cli.main import main
from feddqc_flwr.data.client_data import load_client_data
from feddqc_flwr.data.schema import to_dataset
from feddqc_flwr.llm.model import adapter_arrays, load_model_bundle
from feddqc_flwr.selection.hierarchy import select_stage
from tests.helpers import default_run_config, deliver, deliver_wire, make_config

K = 3
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _raw(tiny_model_dir: Path) -> dict:
    raw = default_run_config()
    raw.update({"model": str(tiny_model_dir), "dataset": "demo", "local-steps": 1, "batch-size": 2,
                "max-length": 96, "max-samples": 0, "max-response-words": 0, "lora-r": 4, "lora-alpha": 8,
                "hierarchies": K, "num-server-rounds": K, "filtered-rows": "rescore"})
    return raw  # output-dir stays the default relative "outputs", as in simulation


@dataclass
class Driven:
    """One client driven through K hierarchies and an evaluation; what it kept and replied."""

    cfg: RunConfig
    rows: list[dict] = field(repr=False)  # the client's training rows, as it trained them (corrupted)
    lineage: RunLineage
    server_root: Path  # the run's output root as the server computes it (same process env in simulation)
    lam: list[float]
    before: list[ClientProgress] = field(repr=False)  # per stage, after its score query: what was scored
    after: list[ClientProgress] = field(repr=False)  # per stage, after its train message: what was selected
    reports: list[tuple[dict, list[dict]]] = field(repr=False)  # per stage, the report after its train message
    wire_replies: list[Message] = field(repr=False)


@pytest.fixture(scope="module")
def driven(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory,
           module_client_task_identity: None) -> Driven:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEDDQC_OUTPUT_ROOT", str(tmp_path_factory.mktemp("simulation-cwd")))
        raw = _raw(tiny_model_dir)
        cfg = parse_run_config(raw)
        lineage = run_lineage(cfg, "run-a", 1, None)  # the lineage the ServerApp sends
        context = Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 2},
                          state=RecordDict(), run_config=raw)
        arrays = adapter_arrays(load_model_bundle(spec_from_config(cfg)).model)
        replies: list[Message] = []

        def send(message_type: str, config: dict) -> None:
            wire = deliver_wire(context, message_type, RecordDict({"arrays": arrays, "config": ConfigRecord(
                {**config, **lineage.to_config()})}))
            assert not wire.has_error(), wire.error
            replies.append(wire)

        before, after, reports = [], [], []
        lam: list[float] = []
        for stage in range(1, K + 1):
            send("query.score", {"server-round": stage, "hierarchy": stage})
            before.append(ClientProgress.load(context.state, 0))
            lam = lam or [float(v) for v in np.median(before[0].score_matrix(), axis=0)]
            send("train", {"server-round": stage, "hierarchy": stage, "rescore": True, "lr": 1e-3, "lambda": lam})
            after.append(ClientProgress.load(context.state, 0))
            reports.append(read_report(_report_path(output_root(cfg), lineage)))
        send("evaluate", {"server-round": K})
        return Driven(cfg, load_client_data(cfg.data_spec, 0, 2).train.to_list(), lineage, output_root(cfg), lam,
                      before, after, reports, replies)


def _report_path(root: Path, lineage: RunLineage) -> Path:
    return report_paths(progress_path(root, lineage.key, 0, 2).parent, 0, 2)[0]


def test_report_lands_next_to_the_progress_file_under_the_runs_output_root(driven: Driven) -> None:
    progress_file = progress_path(driven.server_root, driven.lineage.key, 0, 2)
    report, picture = report_paths(progress_file.parent, 0, 2)
    assert progress_file.is_file() and report.is_file()
    assert report.parent == driven.server_root / "client-local" / f"progress-{driven.lineage.key}"
    assert picture.read_bytes().startswith(PNG_MAGIC)
    assert not list(report.parent.glob(".*.tmp"))  # every write was renamed into place


def _passes(scores: list[float], lam: list[float]) -> bool:
    return all(s >= t for s, t in zip(scores, lam, strict=True))


def test_report_rows_match_the_scores_and_the_stage_parts(driven: Driven) -> None:
    header, rows = driven.reports[-1]
    assert header["criteria"] == list(driven.cfg.criteria) == ["ira-sum", "loss"]
    assert header["lambda"] == {str(k): driven.lam for k in range(1, K + 1)} and header["synthetic"] is True
    assert [r["index"] for r in rows] == list(range(len(driven.rows)))
    for key, column in (("sample_id", "sample_id"), ("tag", "bad_type"), ("instruction", "instruction"),
                        ("response", "response")):
        assert [r[key] for r in rows] == [r[column] for r in driven.rows]
    trained_in = {}
    for stage, (before, after) in enumerate(zip(driven.before, driven.after, strict=True), start=1):
        scored = dict(zip(before.scored_ids, before.scores, strict=True))
        at_stage = {r["index"]: r["hierarchies"][str(stage)] for r in rows if str(stage) in r["hierarchies"]}
        assert sorted(at_stage) == sorted(scored)  # an entry for exactly the rows scored at this start
        for index, entry in at_stage.items():
            assert [entry["scores"]["ira-sum"], entry["scores"]["loss"]] == scored[index]
            assert entry["kept"] == _passes(scored[index], driven.lam)
            assert entry["trained"] == (index in after.stage_train)
        assert 0 < len(after.stage_train) < len(at_stage)  # some rows are trained, some are not
        trained_in.update(dict.fromkeys(after.stage_train, stage))
    assert {r["index"]: r["trained_in"] for r in rows} == {i: trained_in.get(i) for i in range(len(rows))}
    assert sorted(trained_in) == sorted(driven.after[-1].trained)


def test_each_hierarchy_start_adds_its_entries_and_keeps_the_earlier_ones(driven: Driven) -> None:
    for stage, (header, rows) in enumerate(driven.reports, start=1):
        assert sorted(header["lambda"], key=int) == [str(k) for k in range(1, stage + 1)]
        for later_header, later_rows in driven.reports[stage:]:
            assert {k: later_header["lambda"][k] for k in header["lambda"]} == header["lambda"]
            assert [{k: r["hierarchies"][k] for k in header["lambda"] if k in r["hierarchies"]} for r in later_rows] \
                == [r["hierarchies"] for r in rows]


def _reply_contents(wire: Message) -> list[RecordDict]:
    """The reply as sent (adapter packed into one array) and as the server reads it (unpacked)."""
    return [wire.content, unpack_message(wire).content]


def _texts_and_blobs(content: RecordDict) -> tuple[list[str], list[bytes]]:
    """Every record name, key and value of a reply as text; every bytes value and array buffer as bytes."""
    texts: list[str] = []
    blobs: list[bytes] = []
    for name, record in content.items():
        texts.append(name)
        for key, value in record.items():
            texts.append(key)
            if isinstance(record, ArrayRecord):
                blobs.append(bytes(value.data))
                continue
            assert isinstance(record, ConfigRecord | MetricRecord), type(record)
            for item in value if isinstance(value, list) else [value]:
                (blobs if isinstance(item, bytes) else texts).append(item if isinstance(item, bytes) else str(item))
    return texts, blobs


def test_no_text_and_no_row_id_is_in_any_reply(driven: Driven) -> None:
    types = [w.metadata.message_type for w in driven.wire_replies]
    assert types == ["query.score", "train"] * K + ["evaluate"]
    needles = [r["sample_id"] for r in driven.rows]
    needles += [r[column] for r in driven.rows for column in ("instruction", "response") if len(r[column]) >= 12]
    assert len(needles) > 2 * len(driven.rows)  # (almost) every row's text is looked for, not only its id
    on_disk = _report_path(driven.server_root, driven.lineage).read_text()
    assert all(needle in on_disk for needle in needles)  # the owner's report has them all ...
    for wire in driven.wire_replies:
        for content in _reply_contents(wire):
            texts, blobs = _texts_and_blobs(content)
            assert "metrics" in texts and (blobs or wire.metadata.message_type != "train")  # the scan sees content
            leaked = [n for n in needles if any(n in t for t in texts) or any(n.encode() in b for b in blobs)]
            assert not leaked, (wire.metadata.message_type, leaked[:3])  # ... no reply has any


def test_without_a_lineage_the_report_goes_to_the_runs_client_local_dir(tiny_model_dir: Path,
                                                                       client_task_identity: None) -> None:
    raw = _raw(tiny_model_dir)
    cfg = parse_run_config(raw)
    context = Context(run_id=5, node_id=7, node_config={"partition-id": 1, "num-partitions": 2},
                      state=RecordDict(), run_config=raw)
    arrays = adapter_arrays(load_model_bundle(spec_from_config(cfg)).model)
    config = {"server-round": 1, "hierarchy": 1, "rescore": True, "lr": 1e-3, "lambda": [-math.inf, -math.inf]}
    reply = deliver(context, "train", RecordDict({"arrays": arrays, "config": ConfigRecord(config)}))
    assert not reply.has_error(), reply.error
    header, rows = read_report(report_paths(client_local_dir(cfg, 5), 1, 2)[0])
    assert not list(client_local_dir(cfg, 5).glob("partition-*.jsonl"))  # `feddqc report` reads those as data maps
    assert header["partition"] == 1 and header["lambda"] == {"1": [None, None]}  # -inf: keep every scored row
    assert len(rows) == len(load_client_data(cfg.data_spec, 1, 2).train)
    assert all(r["hierarchies"]["1"]["kept"] for r in rows)


# --- the file on its own: history across restarts, and `feddqc inspect` ----------------------------

IRA_1, LOSS_1 = [5.0, 1.0, 4.0, 3.0, 2.0, 6.0], [-1.0, -2.0, -6.0, -3.0, -4.0, -5.0]
LAM = np.asarray([2.5, -4.5])  # stage 1 keeps rows 0 and 3 (both pass both); trains row 0 (first of two parts)
IRA_2, LOSS_2 = {1: 7.0, 2: 0.0, 3: 3.0, 4: -1.0, 5: 2.0}, {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: math.nan}
LONG = "word " * 80


def _rows(prefix: str = "s") -> Dataset:
    return to_dataset([{"sample_id": f"{prefix}-{i}", "instruction": f"INSTR-{i} what is {i}?",
                        "input": "", "response": LONG if i == 1 else f"answer {i}", "history": [], "group": "",
                        "is_bad": i in (1, 2), "bad_type": "swap" if i in (1, 2) else "clean"} for i in range(6)])


def _select(progress: ClientProgress, stage: int, scores: dict[int, list[float]], lam: np.ndarray) -> None:
    """What `_select_for_stage` does after scoring: these scores for the pool, then the stage's part."""
    progress.scored_stage, progress.scored_ids = stage, list(progress.pool)
    progress.scores = [scores[i] for i in progress.pool]
    chosen = select_stage(progress.scored_ids, progress.score_matrix(), lam, stage, 2)
    progress.take_stage(stage, chosen, "rescore")


def _two_stages(folder: Path, cfg: RunConfig, rows: Dataset) -> Path:
    progress = ClientProgress(pool=list(range(6)))
    _select(progress, 1, {i: [IRA_1[i], LOSS_1[i]] for i in range(6)}, LAM)
    assert progress.stage_train == [0] and sorted(progress.pool) == [1, 2, 3, 4, 5]
    write_quality_report(folder, cfg, (0, 2), rows, progress, LAM)
    _select(progress, 2, {i: [IRA_2[i], LOSS_2[i]] for i in IRA_2}, LAM)
    assert sorted(progress.stage_train) == [1, 3]  # the last stage trains all it keeps
    return write_quality_report(folder, cfg, (0, 2), rows, progress, LAM)


def test_history_survives_and_a_redone_hierarchy_replaces_itself_and_what_followed(tmp_path: Path) -> None:
    cfg = make_config()
    path = _two_stages(tmp_path, cfg, _rows())
    header, rows = read_report(path)
    assert [r["trained_in"] for r in rows] == [1, 2, None, 2, None, None]
    assert [r["hierarchies"]["1"]["kept"] for r in rows] == [True, False, False, True, False, False]
    assert rows[5]["hierarchies"]["2"] == {"scores": {"ira-sum": 2.0, "loss": None}, "kept": False, "trained": False}
    assert "2" not in rows[0]["hierarchies"]  # trained at 1, never scored again
    assert [r["tag"] for r in rows] == ["clean", "swap", "swap", "clean", "clean", "clean"]
    # A resumed run redoes hierarchy 1 (its progress predates hierarchy 2) with another lambda.
    redo = ClientProgress(pool=list(range(6)))
    _select(redo, 1, {i: [IRA_1[i], LOSS_1[i]] for i in range(6)}, np.asarray([0.0, -10.0]))
    write_quality_report(tmp_path, cfg, (0, 2), _rows(), redo, np.asarray([0.0, -10.0]))
    header, rows = read_report(path)
    assert header["lambda"] == {"1": [0.0, -10.0]} and all(set(r["hierarchies"]) == {"1"} for r in rows)
    assert [r["trained_in"] for r in rows] == [1 if i in redo.stage_train else None for i in range(6)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_report_of_other_rows_or_a_broken_one_is_started_afresh(tmp_path: Path) -> None:
    cfg = make_config(corrupt_ratio=0.0)  # real data: no corruption tags
    path = _two_stages(tmp_path, cfg, _rows("old"))
    progress = ClientProgress(pool=list(range(6)))
    _select(progress, 2, {i: [IRA_1[i], LOSS_1[i]] for i in range(6)}, LAM)
    for before in (path.read_text(), "{not json\n"):
        path.write_text(before)
        write_quality_report(tmp_path, cfg, (0, 2), _rows("new"), progress, LAM)
        header, rows = read_report(path)
        assert header["lambda"] == {"2": LAM.tolist()} and header["synthetic"] is False
        assert all(set(r["hierarchies"]) == {"2"} and r["tag"] is None for r in rows)
        assert [r["sample_id"] for r in rows] == [f"new-{i}" for i in range(6)]


def _inspected(capsys: pytest.CaptureFixture[str], path: Path, *options: str) -> tuple[list[int], str]:
    """Row indices in the order `feddqc inspect` printed them, and its whole output."""
    main(["inspect", str(path), *options])
    out = capsys.readouterr().out
    return [int(m) for m in re.findall(r"^\s*\d+\. row (\d+) ", out, flags=re.MULTILINE)], out


def test_inspect_prints_the_lowest_rows_with_their_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _two_stages(tmp_path, make_config(), _rows())
    # Joint rank (rank-min) at hierarchy 1: rows 1 and 2 are last in one criterion each (0), rows 4
    # and 5 next to last (0.2); ties go by row index.
    order, out = _inspected(capsys, path, "--lowest", "3")
    assert order == [1, 2, 4]
    first = out.split("\n  2. ")[0]
    assert "(s-1) [swap]" in first and "dropped at hierarchy 1, trained in hierarchy 2" in first
    assert "INSTR-1 what is 1?" in first
    response = next(line for line in first.splitlines() if "response:" in line)
    assert response.endswith("…") and len(response) < len(LONG)  # clipped to --width
    assert _inspected(capsys, path, "--lowest", "3", "--criterion", "loss")[0] == [2, 5, 4]
    assert _inspected(capsys, path, "--criterion", "ira-sum", "--hierarchy", "2")[0] == [4, 2, 5, 3, 1]
    assert _inspected(capsys, path, "--hierarchy", "2", "--lowest", "2")[0] == [5, 4]  # unscorable first


@pytest.mark.parametrize("content", [None, "", "{not json\n", json.dumps({"some": "object"}) + "\n"])
def test_inspect_exits_2_with_one_line_on_a_missing_or_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 content: str | None) -> None:
    path = tmp_path / "report.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        main(["inspect", str(path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(path) in err
