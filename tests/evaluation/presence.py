"""A hand-set one-layer Llama that prefers, as the next token, the answer words already in its context.

Rows ask to repeat one word given as the input; each answer word is a single token.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from feddqc_flwr.llm.model import ModelBundle

# Single tokens in SmolLM2's tokenizer, both alone and after "### Input:\n" (asserted by the tests)
WORDS = ["apple", "river", "house", "water", "music", "paper", "table", "chair"]


def word_row(question_word: str, answer: str) -> dict:
    return {"instruction": "Repeat the input.", "input": question_word, "response": answer, "history": []}


def presence_model(tokenizer: PreTrainedTokenizerBase, words: list[str], weight: float) -> ModelBundle:
    """Logits that depend only on which of `words` occur in the context, the same way for each word.

    By construction (hidden size 32, K = len(words) <= 15): every token embeds 1 in dim 31; word k
    also 1 in dim K+k. Attention is uniform over the past (q = k = 0); v_proj copies dim K+k to
    dim k times 8 and o_proj is the identity, so dim k holds 8 x (share of word k in the context).
    The MLP is off (down_proj = 0). The LM head gives word k the logit `weight` x (normed dim k),
    every other token 0. So a word in the question gets a raised logit as the answer's first token,
    and every word is treated alike: for a question holding word i, all other words have the same
    PMI, below word i's when weight > 0. With weight = 0 every logit is 0 after any context: the
    model ignores the question and every PMI is exactly 0.
    """
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in words]
    assert all(len(i) == 1 for i in ids) and len(words) <= 15
    d, k = 32, len(words)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config).eval()
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    value = torch.zeros(d, d)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, d - 1] = 1.0
        model.lm_head.weight.zero_()
        for n, (token,) in enumerate(ids):
            model.model.embed_tokens.weight[token, k + n] = 1.0
            value[n, k + n] = 8.0
            model.lm_head.weight[token, n] = weight
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.zero_()
        attn.v_proj.weight.copy_(value)
        attn.o_proj.weight.copy_(torch.eye(d))
        mlp.down_proj.weight.zero_()
    return ModelBundle(model=model, tokenizer=tokenizer, device=torch.device("cpu"))
