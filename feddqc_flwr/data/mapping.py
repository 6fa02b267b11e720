"""Map a source's own column names onto the canonical schema.

A field map is a comma list of `target=source`, e.g.
`"instruction=question,input=context,response=answer,group=topic"`. Targets: instruction,
input, response, group, sample_id, and messages (a chat list turned into history + last turn).
A source may join several columns with `+` (`instruction=question+options`, joined by a blank
line), and take one item of a list column with `[i]` (`response=answer[0]`: NQ-open and
TruthfulQA list every accepted answer; a row whose list is too short is skipped as
missing_field, one whose value is not a list as not_list). Targets left out are guessed from
common column names (DEFAULT_CANDIDATES); sample_id is never guessed (upstream id columns are
often null or repeated), only mapped explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from feddqc_flwr.data.readers import CLIENT_KEY, DataLoadError
from feddqc_flwr.data.schema import BAD_CHAT, NOT_LIST, NOT_TEXT, BadRow

TARGETS = ("instruction", "input", "response", "group", "sample_id", "messages")
DEFAULT_CANDIDATES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "question", "prompt", "query"),
    "input": ("input", "context", "passage"),
    "response": ("response", "output", "answer", "completion"),
    "group": ("group", "category", "topic", "domain", CLIENT_KEY),
    "messages": ("messages", "conversations", "conversation"),
}
_INDEXED = re.compile(r"^(.*?)\[(\d+)\]$")  # "answer[0]"
USER_ROLES = {"user", "human"}
ASSISTANT_ROLES = {"assistant", "gpt", "bot", "model", "chatgpt"}


def parse_field_map(text: str) -> dict[str, str]:
    """`"a=b,c=d"` as {target: source}; an unknown target or a malformed pair is an error."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        target, sep, source = (s.strip() for s in part.partition("="))
        if not sep or not target or not source:
            raise ValueError(f"field-map entry {part!r}: expected target=column")
        if target not in TARGETS:
            raise ValueError(f"field-map target {target!r}: allowed targets are {', '.join(TARGETS)}")
        if target in out:
            raise ValueError(f"field-map target {target!r} is given twice")
        out[target] = source
    return out


def _column(term: str) -> tuple[str, int | None]:
    """A source term as (column, list index or None): "answer[0]" -> ("answer", 0)."""
    term = term.strip()
    match = _INDEXED.match(term)
    return (match.group(1).strip(), int(match.group(2))) if match else (term, None)


def resolve_field_map(field_map: dict[str, str], columns: Iterable[str], where: str) -> dict[str, str]:
    """The full map for a source: explicit entries checked against its columns, gaps guessed.

    When a source has both flat instruction/response columns and a chat column, the flat ones
    are used unless the field map names `messages`.
    """
    cols = set(columns)
    for target, source in field_map.items():
        missing = [c.strip() for c in source.split("+") if _column(c)[0] not in cols]
        if missing:
            raise DataLoadError(f"{where}: field-map {target}={source}: no column named "
                                f"{', '.join(map(repr, missing))}; columns are {', '.join(sorted(cols))}")
    out = dict(field_map)
    chat_given = "messages" in field_map
    for target, candidates in DEFAULT_CANDIDATES.items():
        if target in out or (chat_given and target in ("instruction", "input", "response")):
            continue
        used = {_column(term)[0] for source in out.values() for term in source.split("+")}
        found = next((c for c in candidates if c in cols and c not in used), None)
        if found is not None:
            out[target] = found
    flat = "instruction" in out and "response" in out
    if "messages" in out and not chat_given:
        if flat:  # both shapes present: the flat columns win unless the chat is asked for
            del out["messages"]
        else:  # a lone guessed prompt/answer column must not overwrite the chat's turns
            for target in ("instruction", "input", "response"):
                if target not in field_map:
                    out.pop(target, None)
    if not flat and "messages" not in out:
        raise DataLoadError(f"{where}: cannot find instruction/response columns (or a chat "
                            f"'messages' column) among {', '.join(sorted(cols))}; pass a field-map "
                            "such as 'instruction=question,response=answer'")
    return out


def _term_value(record: dict[str, Any], term: str) -> Any:
    """One column's value, or one item of a list column (None when the list is too short)."""
    name, index = _column(term)
    value = record.get(name)
    if index is None or value is None:
        return value
    if not isinstance(value, list):
        raise BadRow(NOT_LIST)
    return value[index] if index < len(value) else None


def _value(record: dict[str, Any], source: str) -> Any:
    """One column, or several joined by a blank line (missing parts are left out)."""
    terms = source.split("+")
    if len(terms) == 1:
        return _term_value(record, terms[0])
    parts = []
    for term in terms:
        value = _term_value(record, term)
        if value is None:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")  # U+FFFD makes the cleaner skip it
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)
        if not isinstance(value, str):
            raise BadRow(NOT_TEXT)
        parts.append(value.strip())
    return "\n\n".join(p for p in parts if p) or None


def chat_to_row(messages: Any) -> dict[str, Any]:
    """Chat turns -> earlier turns as history, last user turn as instruction, last reply as response.

    Accepts {role, content} (OpenAI style) and {from, value} (ShareGPT). Turns after the last
    assistant reply are dropped: they have no answer to learn.
    """
    if not isinstance(messages, list) or not messages:
        raise BadRow(BAD_CHAT)
    turns = []
    for m in messages:
        if not isinstance(m, dict):
            raise BadRow(BAD_CHAT)
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise BadRow(BAD_CHAT)
        role = role.lower()
        role = "user" if role in USER_ROLES else "assistant" if role in ASSISTANT_ROLES else role
        turns.append({"role": role, "content": content})
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=-1)
    if last < 1 or turns[last - 1]["role"] != "user":
        raise BadRow(BAD_CHAT)
    return {"history": turns[: last - 1], "instruction": turns[last - 1]["content"],
            "response": turns[last]["content"]}


def map_record(record: dict[str, Any], field_map: dict[str, str]) -> dict[str, Any]:
    """A raw record in canonical keys (not yet validated: the cleaner does that)."""
    row: dict[str, Any] = {}
    if "messages" in field_map:
        row.update(chat_to_row(record.get(field_map["messages"])))
    for target in ("instruction", "input", "response", "group", "sample_id"):
        if target in field_map:
            row[target] = _value(record, field_map[target])
    return row
