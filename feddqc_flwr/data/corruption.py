"""Synthesise low-quality rows by corrupting the response of a seeded share of rows.

FedDQC evaluates on data where part of each client's rows are made low-quality with five kinds
of corruption, but its generator is not public. The operations follow the paper's names; every
parameter default here (p_delete 0.3, cut fraction U(0.1, 0.5), p_substitute 0.3, noisy: 30% of
words get one character edit plus 1-3 junk tokens) is OUR choice, not the paper's.

Only the response changes, at whitespace-word level (tokenizer-agnostic), and only flagged rows
change: unflagged rows come back as the same dicts. Each flagged row really differs from its
original. When the chosen type cannot change a row (swap with fewer than two rows or only
identical responses to swap with, delete/cut on a one-word response, substitute with no other
word in the vocabulary), the row gets `noisy` instead, which can always change a non-empty
response; `bad_type` records the type actually applied and the fallbacks are counted.
"""

from __future__ import annotations

import logging
import math
import random
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from feddqc_flwr.data.schema import to_dataset

logger = logging.getLogger(__name__)

BASE_TYPES = ("swap", "delete", "cut", "substitute", "noisy")
TYPES = (*BASE_TYPES, "mixture", "none")
FALLBACK = "noisy"
_NOISE_CHARS = string.ascii_letters + string.digits + "#$%&*+/<=>@^_~"
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class CorruptionParams:
    """Strength of each corruption type (our defaults; see the module docstring)."""

    p_delete: float = 0.3
    cut_min: float = 0.1
    cut_max: float = 0.5
    p_substitute: float = 0.3
    p_noisy_word: float = 0.3
    noisy_junk_max: int = 3


class CannotCorrupt(Exception):
    """This type cannot change this response; the caller falls back to noisy."""


def _chunks(text: str) -> list[str]:
    """Words with their trailing whitespace, so rejoining keeps the original layout."""
    return _WORD.findall(text)


def delete_words(text: str, rng: random.Random, p: float) -> str:
    """Drop each word with probability p, at least one and never all."""
    chunks = _chunks(text)
    if len(chunks) < 2:
        raise CannotCorrupt
    keep = [rng.random() >= p for _ in chunks]
    if all(keep):
        keep[rng.randrange(len(chunks))] = False
    if not any(keep):
        keep[rng.randrange(len(chunks))] = True
    return "".join(c for c, k in zip(chunks, keep, strict=True) if k).rstrip()


def cut_words(text: str, rng: random.Random, f_min: float, f_max: float) -> str:
    """Keep the first ceil(f * words) words, f ~ U(f_min, f_max): a strict prefix of the text."""
    chunks = _chunks(text)
    if len(chunks) < 2:
        raise CannotCorrupt
    keep = math.ceil(rng.uniform(f_min, f_max) * len(chunks))
    keep = max(1, min(keep, len(chunks) - 1))  # f_max < 1 already implies this; guards odd params
    return "".join(chunks[:keep]).rstrip()


def substitute_words(text: str, rng: random.Random, p: float, vocab: Sequence[str]) -> str:
    """Replace each word with probability p by a different vocabulary word; word count unchanged."""
    chunks = _chunks(text)
    words = [c.rstrip() for c in chunks]
    candidates = [i for i, w in enumerate(words) if any(v != w for v in vocab[:2])]
    if not candidates:
        raise CannotCorrupt
    chosen = [i for i in candidates if rng.random() < p] or [rng.choice(candidates)]
    for i in chosen:
        new = rng.choice(vocab)
        while new == words[i]:
            new = rng.choice(vocab)
        chunks[i] = new + chunks[i][len(words[i]):]
    return "".join(chunks)


def _char_edit(word: str, rng: random.Random) -> str:
    """One typo: insert, delete, replace or swap adjacent characters; always changes the word."""
    op = rng.choice(("insert", "delete", "replace", "swap"))
    i = rng.randrange(len(word))
    if op == "delete" and len(word) > 1:
        return word[:i] + word[i + 1:]
    if op == "swap" and i > 0 and word[i - 1] != word[i]:
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1:]
    if op == "replace":
        return word[:i] + rng.choice([c for c in _NOISE_CHARS if c != word[i]]) + word[i + 1:]
    return word[:i] + rng.choice(_NOISE_CHARS) + word[i:]


def noisy_text(text: str, rng: random.Random, p_word: float, junk_max: int) -> str:
    """Typos in a share of words plus 1..junk_max random junk tokens at random places."""
    chunks = _chunks(text)
    for i, chunk in enumerate(chunks):
        if rng.random() < p_word:
            word = chunk.rstrip()
            chunks[i] = _char_edit(word, rng) + chunk[len(word):]
    for _ in range(rng.randint(1, max(1, junk_max))):
        junk = "".join(rng.choice(_NOISE_CHARS) for _ in range(rng.randint(3, 8)))
        at = rng.randint(0, len(chunks))
        if at == len(chunks) and chunks and not chunks[-1][-1:].isspace():
            chunks[-1] += " "
        chunks.insert(at, junk + " ")
    return "".join(chunks).rstrip()


def swap_assignment(responses: Sequence[str], rng: random.Random) -> list[int]:
    """A permutation src with src[i] != i and, wherever possible, a different response text.

    Rows are grouped by identical text, largest group first, and shifted by the largest group's
    size; no row then receives its own text unless one text fills more than half the rows, in
    which case exactly the unavoidable rows do (the caller sends them to the fallback).
    """
    n = len(responses)
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(responses):
        groups.setdefault(text, []).append(i)
    ordered = sorted(groups.values(), key=len, reverse=True)
    rest = ordered[1:]
    rng.shuffle(rest)
    order: list[int] = []
    for members in [ordered[0], *rest]:
        members = list(members)
        rng.shuffle(members)
        order.extend(members)
    shift = len(ordered[0]) if len(ordered[0]) < n else 1
    src = [0] * n
    for pos, row in enumerate(order):
        src[row] = order[(pos + shift) % n]
    return src


def client_corruption_seed(seed: int, partition_id: int) -> int:
    """The corruption seed of one client, distinct for every (run seed, partition id) pair.

    `seed + partition_id` gave seed s / client 1 and seed s+1 / client 0 the same bad rows, so
    runs with neighbouring seeds were not independent. Here the run seed is folded onto the
    naturals (0, -1, 1, -2 -> 0, 1, 2, 3; `random.Random` ignores a seed's sign) and paired with
    the partition id by Cantor's pairing, a bijection N x N -> N: no two pairs share a seed.
    """
    if partition_id < 0:
        raise ValueError(f"partition_id {partition_id}: must be >= 0")
    folded = 2 * seed if seed >= 0 else -2 * seed - 1
    total = folded + partition_id
    return total * (total + 1) // 2 + partition_id


def corrupt_rows(rows: list[dict[str, Any]], ratio: float, kind: str, seed: int,
                 params: CorruptionParams = CorruptionParams()) -> tuple[list[dict[str, Any]], Counter]:
    """Corrupt round(ratio * len(rows)) seeded rows; return the rows and fallback counts."""
    if kind not in TYPES:
        raise ValueError(f"corrupt type {kind!r}: allowed values are {', '.join(TYPES)}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"corrupt ratio {ratio}: must be in [0, 1]")
    fallbacks: Counter = Counter()
    if kind == "none" or not rows:
        return list(rows), fallbacks
    rng = random.Random(seed)
    n_bad = min(len(rows), math.floor(ratio * len(rows) + 0.5))
    bad = sorted(rng.sample(range(len(rows)), n_bad))
    chosen = {i: rng.choice(BASE_TYPES) if kind == "mixture" else kind for i in bad}
    vocab = sorted({w for r in rows for w in r["response"].split()})
    out = list(rows)
    new: dict[int, tuple[str, str]] = {}

    def apply(i: int, kind_i: str) -> None:
        text = rows[i]["response"]
        try:
            if kind_i == "delete":
                result = delete_words(text, rng, params.p_delete)
            elif kind_i == "cut":
                result = cut_words(text, rng, params.cut_min, params.cut_max)
            elif kind_i == "substitute":
                result = substitute_words(text, rng, params.p_substitute, vocab)
            else:
                result = noisy_text(text, rng, params.p_noisy_word, params.noisy_junk_max)
        except CannotCorrupt:
            result = None
        if result is None or result == text:
            fallbacks[f"{kind_i}->{FALLBACK}"] += 1
            kind_i, result = FALLBACK, noisy_text(text, rng, params.p_noisy_word, params.noisy_junk_max)
        new[i] = (kind_i, result)

    swap_rows = [i for i in bad if chosen[i] == "swap"]
    for i in bad:
        if chosen[i] != "swap":
            apply(i, chosen[i])
    if len(swap_rows) >= 2:
        src = swap_assignment([rows[i]["response"] for i in swap_rows], rng)
        for k, i in enumerate(swap_rows):
            text = rows[swap_rows[src[k]]]["response"]
            if text != rows[i]["response"]:
                new[i] = ("swap", text)
    for i in swap_rows:
        if i not in new:
            fallbacks[f"swap->{FALLBACK}"] += 1
            text = rows[i]["response"]
            new[i] = (FALLBACK, noisy_text(text, rng, params.p_noisy_word, params.noisy_junk_max))
    for i, (kind_i, text) in new.items():
        out[i] = {**rows[i], "response": text, "is_bad": True, "bad_type": kind_i}
    return out, fallbacks


def corrupt_dataset(ds: Dataset, ratio: float, kind: str, seed: int,
                    params: CorruptionParams = CorruptionParams()) -> Dataset:
    """The Dataset with a seeded share of responses corrupted and flagged (is_bad, bad_type)."""
    rows, fallbacks = corrupt_rows(ds.to_list(), ratio, kind, seed, params)
    if fallbacks:
        logger.info("corruption fallbacks (type could not change the row): %s", dict(fallbacks))
    return to_dataset(rows)


def bad_type_counts(ds: Dataset) -> dict[str, int]:
    """How many rows of each bad_type (including 'clean') a dataset has."""
    return dict(Counter(ds["bad_type"]))
