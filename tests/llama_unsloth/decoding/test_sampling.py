"""Choosing each new token: generate's logits warpers, min_new_tokens, and the pad token of finished rows."""

from __future__ import annotations

from llama_unsloth.decoding.options import GenerateOptions
from llama_unsloth.decoding.sampling import next_tokens, warp


def test_warp_equals_generates_temperature_top_k_and_top_p_warpers() -> None:
    import torch
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    ids = torch.zeros((3, 1), dtype=torch.long)
    for temperature, top_k, top_p in [(0.7, 10, 0.9), (1.0, None, 0.5), (1.3, 5, None), (1.0, None, None)]:
        expected = TemperatureLogitsWarper(temperature)(ids, scores)
        if top_k:
            expected = TopKLogitsWarper(top_k)(ids, expected)
        if top_p is not None:
            expected = TopPLogitsWarper(top_p)(ids, expected)
        torch.testing.assert_close(warp(scores, temperature, top_k, top_p), expected)


def test_next_tokens_bans_eos_before_min_new_tokens_and_pads_finished_rows() -> None:
    import torch

    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    options = GenerateOptions.from_kwargs({"min_new_tokens": 2, "eos_token_id": 1, "pad_token_id": 0})
    eos, finished = torch.tensor([1]), torch.tensor([False, True])
    assert next_tokens(logits, 0, options, eos, finished).tolist() == [2, 0]  # EOS banned; row 1 pads
    assert next_tokens(logits, 2, options, eos, finished).tolist() == [1, 0]  # min_new_tokens reached
    assert logits[0, 1] == 5.0  # the caller's logits (a captured graph's output) are left as they were
    sampled = GenerateOptions.from_kwargs({"do_sample": True, "top_k": 1, "eos_token_id": 1})
    assert next_tokens(logits, 0, sampled, eos, torch.tensor([False, False])).tolist() == [1, 0]
