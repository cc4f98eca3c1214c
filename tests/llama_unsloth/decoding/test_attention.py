"""Attention of the one new token: transformers' results without copying K/V per query head."""

from __future__ import annotations

from llama_unsloth.decoding import attention


def test_grouped_decode_attention_equals_transformers_attention() -> None:
    """One query token over a cache: GQA without K/V copies, left padding, float masks, Gemma-2's softcap."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_eager

    class Attention(torch.nn.Module):
        num_key_value_groups = 4
        is_causal = True

    grouped = attention.grouped_decode_attention
    module = Attention()
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 8, 1, 16), torch.randn(2, 2, 40, 16), torch.randn(2, 2, 40, 16)
    mask = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    mask[0, ..., :7] = False  # row 0 left-padded
    mask[..., 33:] = False  # cache slots not written yet
    ours, _ = grouped(module, query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert ours.shape == theirs.shape == (2, 1, 8, 16)
    torch.testing.assert_close(ours, theirs)
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    torch.testing.assert_close(
        grouped(module, query, key, value, additive)[0],
        sdpa_attention_forward(module, query, key, value, additive)[0],
    )
    capped, _ = grouped(module, query * 30, key, value, additive, scaling=0.25, softcap=5.0)
    expected, _ = gemma2_eager(module, query * 30, key, value, additive, scaling=0.25, softcap=5.0)
    torch.testing.assert_close(capped, expected)
    assert not torch.allclose(capped, grouped(module, query * 30, key, value, additive, scaling=0.25)[0])
    # A capped prompt (Gemma-2) takes the grouped path too, with or without transformers' causal mask.
    prompt = torch.randn(2, 8, 5, 16) * 30
    causal_additive = torch.zeros(1, 1, 5, 40).masked_fill(torch.ones(5, 40, dtype=torch.bool).tril(35) == 0, -1e30)
    expected, _ = gemma2_eager(module, prompt, key, value, causal_additive, scaling=0.25, softcap=5.0)
    for given in (causal_additive, None):
        torch.testing.assert_close(grouped(module, prompt, key, value, given, scaling=0.25, softcap=5.0)[0], expected)
    prompt = torch.randn(2, 8, 5, 16)  # uncapped: transformers' SDPA itself
    causal = torch.ones(2, 1, 5, 40, dtype=torch.bool).tril(35)
    torch.testing.assert_close(
        grouped(module, prompt, key, value, causal)[0],
        sdpa_attention_forward(module, prompt, key, value, causal)[0],
    )


def test_sliding_window_of_each_architecture() -> None:
    """Phi-3-medium (2047) and Gemma-2 (4096) have sliding windows; Llama and Mistral-Nemo none."""
    from benchmarks.architectures import ARCHITECTURES

    assert [attention.sliding_window(ARCHITECTURES[n].config(num_hidden_layers=1)) for n in ARCHITECTURES] == [
        None,
        None,
        2047,
        4096,
    ]


def test_full_attention_config_makes_every_layer_full_attention() -> None:
    from benchmarks.architectures import ARCHITECTURES

    config = ARCHITECTURES["gemma2-27b"].config(num_hidden_layers=2)
    full = attention.full_attention_config(config)
    assert full.layer_types == ["full_attention", "full_attention"]
    assert config.layer_types != full.layer_types  # a copy: the model's own config is left as it is
