"""Test rows, a context builder, and the direct (unbatched, full-logits) computations the scorers
are checked against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from feddqc_flwr.llm.model import ModelBundle
from feddqc_flwr.llm.prompts import ALPACA_NO_INPUT, ALPACA_RESPONSE_MARKER, ALPACA_WITH_INPUT
from feddqc_flwr.scoring.base import ScoringContext

ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "response": "Paris.", "history": []},
    {"instruction": "Add two and three.", "input": "", "response": "Two plus three is five.", "history": []},
    {"instruction": "Summarise.", "input": "The cat sat on the mat all day long.",
     "response": "A cat spent the day on a mat.", "history": []},
    {"instruction": "Name a primary colour.", "input": "", "response": "Red is a primary colour, "
     "as are blue and yellow in the traditional model.", "history": []},
    {"instruction": "Say hi.", "input": "", "response": "Hi!", "history": []},
]
ANCHORS = [
    {"instruction": "Translate 'chat' to English.", "input": "", "response": "Cat.", "history": []},
    {"instruction": "What is two times four?", "input": "", "response": "Two times four is eight.", "history": []},
    {"instruction": "Give a synonym.", "input": "happy", "response": "Glad.", "history": []},
]


def make_ctx(bundle: ModelBundle, batch_size: int = 4, reference_rows=(), max_length: int = 256) -> ScoringContext:
    return ScoringContext(model=bundle.model, tokenizer=bundle.tokenizer, template="alpaca", max_length=max_length,
                          batch_size=batch_size, device=bundle.device, reference_rows=list(reference_rows))


def prompt_ids(tok, row: Mapping[str, Any]) -> list[int]:
    """Alpaca header + response marker, tokenized as two pieces (no truncation in these tests)."""
    head = (ALPACA_WITH_INPUT.format(instruction=row["instruction"], input=row["input"]) if row["input"]
            else ALPACA_NO_INPUT.format(instruction=row["instruction"]))
    return tok(head, add_special_tokens=False).input_ids + marker_ids(tok)


def marker_ids(tok) -> list[int]:
    return tok(ALPACA_RESPONSE_MARKER, add_special_tokens=False).input_ids


def response_ids(tok, row: Mapping[str, Any]) -> list[int]:
    return tok(row["response"], add_special_tokens=False).input_ids + [tok.eos_token_id]


def token_nll(model, ids: list[int], first_label: int) -> torch.Tensor:
    """NLL of ids[first_label:], each given everything before it: one sequence, no padding."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[first_label:])
    return -logp[torch.arange(first_label - 1, len(ids) - 1), targets]


def unigram_model(tokenizer, logits: Mapping[int, float]):
    """A one-layer Llama whose logits are the same after every context: `logits[t]` for the given
    token ids, 0 for every other token (exactly, in float32).

    By construction: every embedding is the all-ones vector, the attention and MLP outputs are
    zeroed (o_proj, down_proj = 0), so the residual stream stays all-ones; the final RMSNorm
    (eps 0) leaves it as is, and lm_head row t is logits[t]/d repeated, whose dot product with the
    all-ones vector is logits[t]. So P(t | anything) = exp(logits[t]) / Z with Z = sum_t exp(logits[t]).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    d, vocab = 32, len(tokenizer)
    config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False, rms_norm_eps=0.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    scores = torch.zeros(vocab)
    for token, value in logits.items():
        scores[token] = value
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.copy_((scores / d)[:, None].expand(vocab, d))
    return model
