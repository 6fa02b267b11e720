"""Each corruption type changes exactly the flagged rows, as specified, reproducibly by seed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from feddqc_flwr.data.corruption import (
    BASE_TYPES,
    client_corruption_seed,
    corrupt_dataset,
    corrupt_rows,
    cut_words,
    delete_words,
    noisy_text,
    substitute_words,
    swap_assignment,
)
from feddqc_flwr.data.schema import to_dataset

N = 40


@pytest.fixture
def rows(make_row) -> list[dict]:
    return [make_row(i) for i in range(N)]


def _changed(before: list[dict], after: list[dict]) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


@pytest.mark.parametrize("kind", BASE_TYPES)
def test_only_flagged_rows_change_and_each_really_changes(rows: list[dict], kind: str) -> None:
    out, fallbacks = corrupt_rows(rows, 0.5, kind, seed=7)
    flagged = [i for i, r in enumerate(out) if r["is_bad"]]
    assert len(flagged) == N // 2 and not fallbacks
    assert _changed(rows, out) == flagged
    for i in range(N):
        if i in flagged:
            assert out[i]["bad_type"] == kind and out[i]["response"] != rows[i]["response"]
            assert {k: v for k, v in out[i].items() if k not in ("response", "is_bad", "bad_type")} == \
                   {k: v for k, v in rows[i].items() if k not in ("response", "is_bad", "bad_type")}
        else:
            assert out[i] is rows[i]  # untouched, not even copied


def test_swap_is_a_derangement_of_the_bad_rows(rows: list[dict]) -> None:
    out, _ = corrupt_rows(rows, 0.5, "swap", seed=3)
    bad = [i for i, r in enumerate(out) if r["is_bad"]]
    sources = {}
    for i in bad:
        j = next(k for k in bad if rows[k]["response"] == out[i]["response"])
        assert j != i
        sources[i] = j
    assert sorted(sources.values()) == bad  # a permutation of the bad subset, no fixed point


def test_swap_avoids_identical_texts_and_falls_back_when_impossible(make_row) -> None:
    texts = ["yes"] * 5 + ["no"] * 3 + ["maybe"] * 2
    src = swap_assignment(texts, random.Random(0))
    assert sorted(src) == list(range(10)) and all(src[i] != i for i in range(10))
    assert all(texts[src[i]] != texts[i] for i in range(10))  # no text fills more than half
    # 'yes' fills 7 of 10 rows: 7 - 3 = 4 rows must receive their own text -> fallback to noisy
    rows = [make_row(i, response=t) for i, t in enumerate(["yes"] * 7 + ["no"] * 3)]
    out, fallbacks = corrupt_rows(rows, 1.0, "swap", seed=0)
    assert fallbacks == Counter({"swap->noisy": 4})
    assert Counter(r["bad_type"] for r in out) == Counter({"swap": 6, "noisy": 4})
    assert all(r["response"] != o["response"] for r, o in zip(out, rows, strict=True))


def test_single_bad_row_swap_falls_back_to_noisy(make_row) -> None:
    rows = [make_row(i) for i in range(3)]
    out, fallbacks = corrupt_rows(rows, 0.34, "swap", seed=1)
    assert fallbacks == Counter({"swap->noisy": 1})
    assert [r["bad_type"] for r in out].count("noisy") == 1


def test_delete_drops_words_only() -> None:
    text = "one two three four five six seven eight nine ten"
    for seed in range(20):
        out = delete_words(text, random.Random(seed), 0.3)
        assert out != text and 1 <= len(out.split()) < 10
        assert _is_subsequence(out.split(), text.split())
    assert len(delete_words(text, random.Random(0), 0.999).split()) == 1


def test_cut_keeps_a_short_prefix() -> None:
    text = "one two three four five six seven eight nine ten"
    lengths = set()
    for seed in range(30):
        out = cut_words(text, random.Random(seed), 0.1, 0.5)
        assert text.startswith(out) and out != text
        lengths.add(len(out.split()))
    assert lengths <= {1, 2, 3, 4, 5} and len(lengths) >= 3  # ceil(f * 10), f ~ U(0.1, 0.5)
    assert cut_words("a b", random.Random(0), 0.1, 0.5) == "a"


def test_substitute_keeps_word_count_and_uses_vocabulary() -> None:
    vocab = ["alpha", "beta", "gamma"]
    text = "one two three four five six"
    for seed in range(20):
        out = substitute_words(text, random.Random(seed), 0.3, vocab)
        assert out != text and len(out.split()) == 6
        changed = [(a, b) for a, b in zip(text.split(), out.split(), strict=True) if a != b]
        assert changed and all(b in vocab for _, b in changed)


def test_noisy_differs_and_adds_junk() -> None:
    text = "the quick brown fox"
    outs = {noisy_text(text, random.Random(s), 0.3, 3) for s in range(10)}
    assert text not in outs and len(outs) == 10
    assert all(len(o.split()) > 4 for o in outs)  # at least one junk token is inserted


def test_one_word_responses_fall_back_for_delete_and_cut(make_row) -> None:
    rows = [make_row(i, response=w) for i, w in enumerate(["yes", "no", "maybe", "yes"])]
    for kind in ("delete", "cut"):
        out, fallbacks = corrupt_rows(rows, 1.0, kind, seed=0)
        assert fallbacks == Counter({f"{kind}->noisy": 4})
        assert all(r["bad_type"] == "noisy" and r["response"] != o["response"] for r, o in zip(out, rows, strict=True))


def test_mixture_uses_all_types_and_swaps_among_swap_rows(make_row) -> None:
    many = [make_row(i) for i in range(200)]
    out, _ = corrupt_rows(many, 0.5, "mixture", seed=5)
    types = Counter(r["bad_type"] for r in out)
    assert types["clean"] == 100 and set(types) == {"clean", *BASE_TYPES}
    assert all(types[t] >= 8 for t in BASE_TYPES)  # ~20 each, uniform choice
    swapped = [i for i, r in enumerate(out) if r["bad_type"] == "swap"]
    assert sorted(many.index(next(m for m in many if m["response"] == out[i]["response"])) for i in swapped) == swapped


def test_ratio_none_and_validation(rows: list[dict]) -> None:
    assert sum(r["is_bad"] for r in corrupt_rows(rows, 0.25, "noisy", 0)[0]) == 10
    assert corrupt_rows(rows, 0.0, "noisy", 0)[0] == rows
    assert corrupt_rows(rows, 0.9, "none", 0)[0] == rows
    with pytest.raises(ValueError, match="allowed values"):
        corrupt_rows(rows, 0.5, "shuffle", 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_rows(rows, 1.5, "noisy", 0)


@pytest.mark.parametrize("kind", [*BASE_TYPES, "mixture"])
def test_reproducible_by_seed(rows: list[dict], kind: str) -> None:
    ds = to_dataset(rows)
    a = corrupt_dataset(ds, 0.5, kind, seed=11).to_list()
    b = corrupt_dataset(ds, 0.5, kind, seed=11).to_list()
    c = corrupt_dataset(ds, 0.5, kind, seed=12).to_list()
    assert a == b
    assert a != c


def test_client_corruption_seeds_never_collide() -> None:
    """Distinct for every (run seed, partition id) pair of a grid; `seed + partition_id` was not."""
    pairs = [(s, p) for s in range(-30, 31) for p in range(64)]
    seeds = [client_corruption_seed(s, p) for s, p in pairs]
    assert len(set(seeds)) == len(pairs)
    assert min(seeds) >= 0  # random.Random(-x) == random.Random(x): a sign must not carry information
    assert client_corruption_seed(5, 1) != client_corruption_seed(6, 0)
    # Cantor pairing of (a, p), a = 2s or -2s-1, t = a + p: t(t+1)/2 + p. By hand: (0,0)->0,
    # (0,1)->1+1=2, (1,0)->a=2: 3, (-1,0)->a=1: 1, (2,3)->a=4, t=7: 28+3=31
    assert [client_corruption_seed(s, p) for s, p in [(0, 0), (0, 1), (1, 0), (-1, 0), (2, 3)]] == [0, 2, 3, 1, 31]
    with pytest.raises(ValueError, match="partition_id"):
        client_corruption_seed(0, -1)


def test_neighbouring_seed_and_client_pairs_corrupt_different_positions(rows: list[dict]) -> None:
    """Same rows, (s, 1) against (s+1, 0) and the rest of a grid: no two pairs flag the same rows."""
    positions = {}
    for s in range(8):
        for p in range(4):
            out, _ = corrupt_rows(rows, 0.5, "noisy", client_corruption_seed(s, p))
            positions[s, p] = frozenset(i for i, r in enumerate(out) if r["is_bad"])
    assert all(len(v) == N // 2 for v in positions.values())
    assert len(set(positions.values())) == len(positions)
    assert all(positions[s, 1] != positions[s + 1, 0] for s in range(7))
