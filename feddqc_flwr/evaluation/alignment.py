"""Alignment accuracy: is a question's own answer the most likely of N answers, by PMI?

Swapped rows break the link between a question and its answer; loss-type metrics barely see that
at small scale (the model mostly learns the answers' format), a ranking of answers given the
question does. For each row, its own answer competes with the answers of the next rows in order
(cyclically), skipping those whose answer text equals its own or an answer already taken
(`choices.normalise_answer`), until `candidates` answers compete; with fewer distinct answers in
the rows, all of them compete (a row with no other answer is skipped). Each candidate a is scored
by PMI(q, a) = log p(a|q) - log p(a): the IRA-sum of the pair (`scoring.ira`), i.e. summed
token log-likelihood of a after the training prompt of q minus that of a alone after the start
token. The row scores 1 when its own answer's PMI is above every other's, 1/t when it ties with
t - 1 others at the top (so a model that ignores the question scores chance, 1/candidates), else
0; an unscorable (NaN) PMI ranks last. `align-chance` is the mean of 1/candidates over the scored
rows: the level a model blind to the question reaches.

Cost: one conditioned and one unconditioned pass per candidate, so `candidates` times the passes
of the loss metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feddqc_flwr.evaluation.choices import normalise_answer
from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.scoring.base import ScoringContext
from feddqc_flwr.scoring.ira import IRA_PASSES, ira_from_passes
from feddqc_flwr.scoring.passes import likelihood_passes


def distractors(responses: Sequence[str], candidates: int) -> list[list[int]]:
    """For each row, the rows whose answers compete with its own: up to `candidates` - 1, distinct."""
    keys = [normalise_answer(r) for r in responses]
    out = []
    for i, own in enumerate(keys):
        taken: list[int] = []
        seen = {own}
        for step in range(1, len(keys)):
            j = (i + step) % len(keys)
            if len(taken) < candidates - 1 and keys[j] not in seen:
                taken.append(j)
                seen.add(keys[j])
        out.append(taken)
    return out


def pair_pmi(bundle: ModelBundle, pairs: Sequence[tuple[Mapping[str, Any], str]], *, template: str,
             max_length: int, batch_size: int) -> np.ndarray:
    """log p(answer | question's prompt) - log p(answer) of each (question row, answer) pair, in nats."""
    rows = [{**question, "response": answer} for question, answer in pairs]
    ctx = ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template=template, max_length=max_length,
                         batch_size=batch_size, device=bundle.device)
    return ira_from_passes(likelihood_passes(rows, ctx, IRA_PASSES), "sum").ira


def alignment_accuracy(bundle: ModelBundle, rows: Sequence[Mapping[str, Any]], *, template: str, max_length: int,
                       batch_size: int, candidates: int) -> tuple[dict[str, float], list[float | None]]:
    """align-acc, align-rows, align-chance, and each row's score (1, 1/t on a t-way tie at the top, 0;
    None: no other answer to rank it against)."""
    if candidates < 2:
        raise ValueError(f"alignment needs at least 2 candidate answers, got {candidates}")
    others = distractors([str(r["response"]) for r in rows], candidates)
    pairs = [(rows[i], str(rows[j]["response"])) for i, js in enumerate(others) if js for j in (i, *js)]
    pmi = pair_pmi(bundle, pairs, template=template, max_length=max_length, batch_size=batch_size) if pairs \
        else np.zeros(0)
    hits: list[float | None] = []
    chance: list[float] = []
    offset = 0
    for js in others:
        if not js:
            hits.append(None)
            continue
        block = np.nan_to_num(pmi[offset: offset + 1 + len(js)], nan=-np.inf)
        top = block == block.max()
        hits.append(float(top[0]) / int(top.sum()))
        chance.append(1.0 / (1 + len(js)))
        offset += 1 + len(js)
    scored = [h for h in hits if h is not None]
    values = {"align-acc": sum(scored) / len(scored) if scored else float("nan"),
              "align-rows": float(len(scored)), "align-chance": float(np.mean(chance)) if chance else float("nan")}
    return values, hits
