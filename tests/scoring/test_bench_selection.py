"""`feddqc bench selection`: its metrics against scikit-learn's AUROC and a hand-sorted kept half
on the scorers' own scores (on the copy model of conftest.py, whose swapped rows score worse than
their originals), its pass cache against each scorer's `score()`, the per-type means and worst type
against a hand computation, and the command end to end on a model and data where the response loss
must separate every corrupted row (a strong copy model, one-word answers found in the prompt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from feddqc_flwr.bench.selection import PassCache, keep_scores, score_cells, summarize
from feddqc_flwr.cli.bench import add_bench_commands, selection_scorers
from feddqc_flwr.data.corruption import corrupt_rows
from feddqc_flwr.llm.prompts import encode_pair
from feddqc_flwr.scoring.registry import get_scorer
from tests.scoring.common import make_ctx

WORDS = ["apple", "river", "candle", "mountain", "violin", "garden", "pencil", "window", "orange", "silver",
         "bottle", "rocket"]
POOL = [{"instruction": "Repeat the input.", "input": w, "response": w, "history": [], "is_bad": False,
         "bad_type": "clean", "sample_id": f"s{i}"} for i, w in enumerate(WORDS)]


def test_cells_match_independent_metrics_and_ira_beats_random(copy_model) -> None:
    ctx = make_ctx(copy_model, max_length=64)
    seeds = (0, 1, 2)
    cells = score_cells(ctx, POOL, selection_scorers(), dataset="words", corruptions=("swap",), seeds=seeds,
                        ratio=0.5, retention=0.5, progress=lambda _: None)
    by = {(c["scorer"], c["seed"]): c for c in cells}
    for seed in seeds:
        rows, _ = corrupt_rows(POOL, 0.5, "swap", seed)
        clean = np.array([not r["is_bad"] for r in rows])
        scores = get_scorer("ira").score(rows, ctx)
        assert by[("ira", seed)]["bad"] == 6
        assert by[("ira", seed)]["auroc"] == pytest.approx(roc_auc_score(clean, scores))
        top = np.argsort(-scores)[:6]  # retention 0.5 of 12 rows
        assert by[("ira", seed)]["kept_clean"] == pytest.approx(clean[top].mean())
    summary = summarize(cells)
    entry = next(e for e in summary["per_cell"] if e["scorer"] == "ira")
    aurocs = [by[("ira", s)]["auroc"] for s in seeds]
    assert entry["auroc_mean"] == pytest.approx(np.mean(aurocs))
    assert entry["auroc_std"] == pytest.approx(np.std(aurocs, ddof=1)) and entry["seeds"] == 3


def test_cached_passes_give_each_scorers_own_scores(bundle) -> None:
    """The bench derives every scorer from one set of cached passes; that must equal score()."""
    ctx = make_ctx(bundle, max_length=64)
    rows = [dict(r) for r in POOL[:5]]
    cache = PassCache(ctx)
    cache.passes(rows[:3])  # part of the rows cached first, in another order and batch
    passes = cache.passes(rows[::-1])
    for scorer in selection_scorers():
        if scorer.name == "random":
            continue
        direct = scorer.score(rows[::-1], ctx)
        np.testing.assert_allclose(keep_scores(scorer, rows[::-1], passes, 0, ctx), direct, rtol=1e-4, atol=1e-5,
                                   err_msg=scorer.name)
    assert get_scorer("ira").name in {s.name for s in selection_scorers()}


def test_bench_selection_command_writes_json_and_heatmap(tiny_model_dir: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_bench_commands(parser.add_subparsers(dest="command"))
    out, plot = tmp_path / "selection.json", tmp_path / "selection.png"
    args = parser.parse_args(["bench", "selection", "--model", str(tiny_model_dir), "--datasets", "demo",
                              "--corruptions", "swap,cut", "--seeds", "0,1", "--rows", "16", "--max-length", "96",
                              "--out", str(out), "--plot", str(plot)])
    args.command_line = "test"
    args.func(args)
    result = json.loads(out.read_text())
    names = {s.name for s in selection_scorers()}
    assert len(result["cells"]) == 2 * 2 * len(names)
    assert {c["scorer"] for c in result["cells"]} == names
    assert set(result["seconds_per_100_rows"]["demo"]) == names and result["seconds_per_100_rows"]["demo"]["ira"] > 0
    assert result["seconds_per_100_rows"]["demo"]["random"] == 0.0
    assert result["paper_table6_kept_clean_swap"]["ira"] == pytest.approx(0.9345)
    assert result["machine"]["cpu_count"] >= 1 and all(c["bad"] == 8 for c in result["cells"])
    assert plot.stat().st_size > 10_000


def _cell(state: str, dataset: str, kind: str, scorer: str, seed: int, auroc: float, kept: float) -> dict:
    return {"model_state": state, "dataset": dataset, "corruption": kind, "scorer": scorer, "seed": seed,
            "auroc": auroc, "kept_clean": kept}


# (dataset, corruption): (AUROC per seed, kept-clean share per seed) of scorer s1, base model
S1 = {("A", "swap"): ((0.6, 0.8), (0.5, 0.7)), ("A", "cut"): ((0.9, 0.9), (0.9, 0.9)),
      ("A", "mixture"): ((0.8, 0.8), (0.8, 0.8)), ("B", "swap"): ((0.7, 0.7), (0.8, 0.8)),
      ("B", "cut"): ((1.0, 0.8), (0.4, 0.4)), ("B", "mixture"): ((0.9, 0.7), (0.7, 0.7)),
      ("P", "swap"): ((1.0, 1.0), (1.0, 1.0)), ("P", "cut"): ((0.1, 0.1), (0.2, 0.2)),
      ("P", "mixture"): ((0.5, 0.5), (0.6, 0.6))}


def _grid(adapter: bool) -> list[dict]:
    cells = [_cell("base", d, k, "s1", seed, a[seed], kc[seed]) for (d, k), (a, kc) in S1.items() for seed in (0, 1)]
    cells += [_cell("base", d, k, "s2", seed, 0.75 if d != "P" else 0.5, 0.65 if d != "P" else 0.5)
              for d, k in S1 for seed in (0, 1)]
    if adapter:  # one type only; s1 collapses there
        cells += [_cell("adapter-1-steps", d, "swap", s, seed, 0.5, 0.3 if s == "s1" else 0.6)
                  for d in ("A", "B") for s in ("s1", "s2") for seed in (0, 1)]
    return cells


def test_worst_type_against_a_hand_computation() -> None:
    summary = summarize(_grid(adapter=False), separate=("P",))
    s1 = summary["overall"]["base"]["s1"]
    # main sets A, B: per type the mean over A and B of the seed means
    # AUROC swap (0.7 + 0.7) / 2 = 0.7, cut (0.9 + 0.9) / 2 = 0.9, mixture (0.8 + 0.8) / 2 = 0.8
    # kept  swap (0.6 + 0.8) / 2 = 0.7, cut (0.9 + 0.4) / 2 = 0.65, mixture (0.8 + 0.7) / 2 = 0.75
    main = s1["main"]
    assert main["datasets"] == ["A", "B"] and main["cells"] == 6
    assert main["by_type"]["swap"]["auroc"] == pytest.approx(0.7)
    assert main["by_type"]["cut"]["kept_clean"] == pytest.approx(0.65)
    assert (main["worst_auroc"], main["worst_auroc_type"]) == (pytest.approx(0.7), "swap")
    assert (main["worst_kept_clean"], main["worst_kept_clean_type"]) == (pytest.approx(0.65), "cut")
    assert main["mean_auroc"] == pytest.approx(0.8) and main["mean_kept_clean"] == pytest.approx(0.7)
    # P alone: cut 0.1 / 0.2 is its worst; with P the worst AUROC type is cut: (0.9 + 0.9 + 0.1) / 3
    assert s1["separate"]["P"]["worst_auroc"] == pytest.approx(0.1)
    assert s1["separate"]["P"]["worst_kept_clean_type"] == "cut"
    assert (s1["all"]["worst_auroc"], s1["all"]["worst_auroc_type"]) == (pytest.approx(1.9 / 3), "cut")
    assert s1["all"]["mean_auroc"] == pytest.approx(6.4 / 9)
    # per-cell seed statistics
    cell = next(e for e in summary["per_cell"] if (e["scorer"], e["dataset"], e["corruption"]) == ("s1", "A", "swap"))
    assert cell["auroc_std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    # s1 and s2 tie on the worst kept-clean share (0.65); s1 has the higher mean (0.70 vs 0.65)
    assert [r["scorer"] for r in summary["ranking"]] == ["s1", "s2"]
    assert summary["ranking"][1]["worst_kept_clean"] == pytest.approx(0.65)


def test_ranking_takes_the_lower_of_the_model_states() -> None:
    summary = summarize(_grid(adapter=True), separate=("P",))
    adapter = summary["overall"]["adapter-1-steps"]["s1"]["main"]
    assert adapter["worst_kept_clean"] == pytest.approx(0.3) and adapter["datasets"] == ["A", "B"]
    ranking = {r["scorer"]: r for r in summary["ranking"]}
    assert [r["scorer"] for r in summary["ranking"]] == ["s2", "s1"]
    assert ranking["s1"]["worst_kept_clean"] == pytest.approx(0.3) and ranking["s1"]["model_states"] == 2
    assert ranking["s2"]["mean_kept_clean"] == pytest.approx((0.65 + 0.6) / 2)


CANDIDATE_WORDS = ("apple river window orange forest castle planet doctor engine house water paper table music money "
                   "green horse chair bread cloud stone train phone light dream heart glass tower").split()


@pytest.fixture(scope="module")
def known_answer(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """conftest.py's copy model, with 20 one-token words whose embeddings are orthogonal to each other
    and to every other token (basis vectors; the other tokens live in the remaining coordinates),
    saved like a hub model; and the words.

    Row i asks to repeat word w_i (the input) and answers w_i. Every logit is then e_t . h / rms(h)
    with h = e_last + 8 x mean context embedding: the prompts of two rows differ only in the input
    word, which adds to no other word's logit and leaves rms(h) and the softmax normaliser alike. So
    a swapped answer w_s (s != i) has exactly the same NLL after x_i as after a partner's x_j (s != j;
    after its owner's x_s it is lower): its contrast is 0 or negative, while a clean answer is boosted
    after its own prompt only (contrast > 0), and all clean rows get one loss, all swapped rows a
    higher one. The response loss and the contrast must separate every swap (AUROC 1)."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = set(encode_pair({"instruction": "Repeat the input.", "input": "", "response": "x"}, tok, "alpaca",
                               64).prompt_ids)
    ids = {w: tok(w, add_special_tokens=False).input_ids for w in CANDIDATE_WORDS}
    words = [w for w in CANDIDATE_WORDS if len(ids[w]) == 1 and ids[w][0] not in template][:20]
    assert len(words) == 20 and len({ids[w][0] for w in words}) == 20
    d = 32
    config = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    with torch.no_grad():
        emb = torch.randn(len(tok), d, generator=torch.Generator().manual_seed(0))
        emb[:, : len(words)] = 0.0
        emb = emb / emb.norm(dim=1, keepdim=True) * d**0.5
        for k, w in enumerate(words):
            emb[ids[w][0]] = torch.eye(d)[k] * d**0.5
        model.model.embed_tokens.weight.copy_(emb)
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.v_proj.weight.copy_(8 * torch.eye(d))
        attn.o_proj.weight.copy_(torch.eye(d))
        mlp.down_proj.weight.zero_()
    out = tmp_path_factory.mktemp("orthogonal-copy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out, words


def test_bench_selection_command_finds_the_known_answer(known_answer: tuple[Path, list[str]],
                                                        tmp_path: Path) -> None:
    model_dir, words = known_answer
    rows = [{"instruction": "Repeat the input.", "input": w, "response": w} for w in words]
    main, pubmed = tmp_path / "main.jsonl", tmp_path / "flips.jsonl"
    for path in (main, pubmed):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parser = argparse.ArgumentParser()
    add_bench_commands(parser.add_subparsers(dest="command"))
    out, plot = tmp_path / "selection.json", tmp_path / "selection.png"
    args = parser.parse_args(["bench", "selection", "--model", str(model_dir), "--datasets", f"{main},{pubmed}",
                              "--separate-datasets", str(pubmed), "--corruptions", "swap,noisy", "--seeds", "0,1",
                              "--rows", "16", "--max-length", "64", "--adapter-steps", "1", "--adapter-lr", "0",
                              "--out", str(out), "--plot", str(plot)])
    args.command_line = "test"
    args.func(args)
    result = json.loads(out.read_text())
    assert result["score_dtype"] == "torch.float32"
    swap = [c for c in result["cells"] if c["corruption"] == "swap"]
    assert len(swap) == 2 * 2 * 2 * len(selection_scorers())  # datasets x seeds x (base, adapter) x scorers
    for name in ("loss", "contrast"):
        assert all(c["auroc"] == 1.0 and c["kept_clean"] == 1.0 and c["bad"] == 8 for c in swap if c["scorer"] == name)
    assert min(c["auroc"] for c in swap if c["scorer"] == "random") < 1.0
    for state in ("base", "adapter-1-steps"):  # adapter lr 0: the adapter state is the base model
        entry = result["overall"][state]["loss"]
        assert entry["main"]["datasets"] == [str(main)] and list(entry["separate"]) == [str(pubmed)]
        assert set(entry["main"]["by_type"]) == {"swap", "noisy"} and entry["main"]["by_type"]["swap"]["auroc"] == 1.0
        key = (state, str(main), "noisy", "loss")
        noisy = [c["auroc"] for c in result["cells"]
                 if (c["model_state"], c["dataset"], c["corruption"], c["scorer"]) == key]
        assert entry["main"]["worst_auroc"] == pytest.approx(min(1.0, np.mean(noisy)))
    base = {(c["dataset"], c["corruption"], c["seed"], c["scorer"]): c for c in result["cells"]
            if c["model_state"] == "base"}
    for c in result["cells"]:
        if c["model_state"] != "base":
            assert c["auroc"] == pytest.approx(base[(c["dataset"], c["corruption"], c["seed"], c["scorer"])]["auroc"])
    assert result["ranking"][0]["worst_kept_clean"] >= result["ranking"][-1]["worst_kept_clean"]
    assert plot.with_name("selection-worst-type.png").stat().st_size > 10_000
