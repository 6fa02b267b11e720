"""clean_rows: every kind of bad row is skipped, counted by reason and logged; good rows survive."""

from __future__ import annotations

import logging

from feddqc_flwr.data.schema import COLUMNS, clean_rows, to_dataset


def _row(i: int, **fields: object) -> dict:
    return {"sample_id": f"s-{i}", "instruction": f"Question {i}?", "response": f"Answer {i}.", **fields}


def test_each_bad_row_kind_is_skipped_and_counted(caplog) -> None:
    rows = [
        _row(0),
        {"sample_id": "s-1", "response": "no instruction key"},
        _row(2, instruction=None),
        _row(3, response=42),
        _row(4, instruction=["a", "list"]),
        _row(5, response="   \n "),
        _row(6, instruction="  "),
        _row(7, response="word " * 5000),
        _row(8, response=b"caf\xe9 latin-1 bytes"),
        _row(9, response="mojibake \ufffd here"),
        _row(10, response="lone surrogate \udce9"),
        _row(11, response="nul\x00byte"),
        _row(12, instruction="Question 0?", response="Answer 0."),  # same content as s-0
        _row(0, instruction="Other question?", response="Other answer."),  # same id as s-0
        _row(14, history=[{"role": "user"}]),
        _row(15, history="not a list"),
        _row(16, response=b"valid utf-8 caf\xc3\xa9"),
        _row(17, input=None, group=3),
    ]
    with caplog.at_level(logging.WARNING):
        kept, report = clean_rows(rows, "fixture", max_chars=1000)
    assert [r["sample_id"] for r in kept] == ["s-0", "s-16", "s-17"]
    assert dict(report) == {"missing_field": 2, "not_text": 2, "empty_response": 1,
                            "empty_instruction": 1, "too_long": 1, "bad_encoding": 4,
                            "duplicate": 1, "duplicate_id": 1, "bad_history": 2}
    assert report.examples["bad_encoding"] == ["s-8", "s-9", "s-10"]  # at most 3 examples
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(report)  # one summary line per reason
    assert any("bad_encoding" in w and "s-8, s-9, s-10" in w for w in warnings)
    assert kept[1]["response"] == "valid utf-8 café"
    assert kept[2]["input"] == "" and kept[2]["group"] == "3"


def test_clean_rows_output_is_canonical_and_stripped() -> None:
    kept, report = clean_rows([{"instruction": "  Q? ", "response": " A. \n", "input": " ctx "}], "src")
    assert not report
    assert kept == [{"sample_id": "src-0", "instruction": "Q?", "input": "ctx", "response": "A.",
                     "history": [], "group": "", "is_bad": False, "bad_type": "clean"}]
    ds = to_dataset(kept)
    assert tuple(ds.column_names) == COLUMNS
    assert ds.features["history"].feature["role"].dtype == "string"


def test_multi_turn_duplicates_differ_by_history() -> None:
    hist_a = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [_row(0, history=hist_a), _row(1, instruction="Question 0?", response="Answer 0.")]
    kept, report = clean_rows(rows, "chat")
    assert len(kept) == 2 and not report
    assert kept[0]["history"] == hist_a
