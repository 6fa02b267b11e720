"""Models whose forward scales or caps the LM head's output are scored with their real logits.

Cohere multiplies the head's output by `logit_scale`, Granite divides it by `logits_scaling`,
HyperCLOVA X multiplies it by `logits_scaling`, Gemma 2 soft-caps it: the head-only fast path of
`position_nll` must give the NLL of the model's own forward() logits for each.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from feddqc_flwr.scoring.nll import logit_scale, position_nll

VOCAB = 48
SMALL = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "initializer_range": 0.5, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
MODELS = {  # name -> (config class, model class, the logit transform's setting, factor the head output gets)
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}, 0.25),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}, 1 / 4.0),
    # the same key as Granite's, but HyperCLOVA X multiplies by it
    "hyperclovax": ("HyperCLOVAXConfig", "HyperCLOVAXForCausalLM", {"logits_scaling": 0.25}, 0.25),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 2.0, "head_dim": 8}, None),
}


def _tiny(name: str) -> torch.nn.Module:
    config_cls, model_cls, extra, _ = MODELS[name]
    config = getattr(transformers, config_cls)(**SMALL, **extra)
    torch.manual_seed(0)
    return getattr(transformers, model_cls)(config).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 12), generator=generator)
    labels = ids.clone()
    labels[0, :5] = -100  # a prompt
    labels[1, :3] = -100
    labels[1, 9:] = -100  # right padding
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    return ids, attention, labels


@pytest.mark.parametrize("name", sorted(MODELS))
def test_position_nll_is_the_cross_entropy_of_the_models_own_logits(name: str) -> None:
    model = _tiny(name)
    ids, attention, labels = _batch()
    with torch.no_grad():
        got, rows = position_nll(model, ids, attention, labels)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        targets = labels[:, 1:]
        mask = targets != -100
        expected = torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="none")
        raw = model.get_output_embeddings()(model.get_decoder()(input_ids=ids, attention_mask=attention)
                                            .last_hidden_state[:, :-1][mask]).float()
        unscaled = torch.nn.functional.cross_entropy(raw, targets[mask], reduction="none")
    assert rows.tolist() == [0] * 7 + [1] * 6  # labels 5..11 of row 0 and 3..8 of row 1 are predicted
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the transform matters at this weight scale: ignoring it would miss by far more than the tolerance
    assert (unscaled - expected).abs().mean() > 0.1


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logit_scale_reads_each_models_rule(name: str) -> None:
    config_cls, _, extra, factor = MODELS[name]
    scale = logit_scale(getattr(transformers, config_cls)(**SMALL, **extra))
    if factor is None:
        assert scale is None  # softcapping: only the full forward is exact
    else:
        value, divides = scale
        assert (1 / value if divides else value) == pytest.approx(factor)


def test_plain_and_unknown_scaled_models() -> None:
    assert logit_scale(transformers.LlamaConfig(**SMALL)) == (1.0, False)
    # a logit multiplier on a model type without a known rule: run its full forward rather than guess
    assert logit_scale(transformers.LlamaConfig(**SMALL, lm_head_multiplier=0.5)) is None
