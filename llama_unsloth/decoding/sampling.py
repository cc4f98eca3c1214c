"""Choosing each new token as ``generate`` does: greedy, or sampling with temperature, top-k and top-p."""

from __future__ import annotations

from typing import Any, Optional

from llama_unsloth.decoding.options import GenerateOptions


def warp(scores: Any, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> Any:
    """generate()'s temperature, top-k and top-p logits warpers, in that order."""
    import torch

    scores = scores / max(temperature, 1e-5)
    if top_k:
        k = min(int(top_k), scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1, None]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)
        scores = scores.masked_fill(remove, float("-inf"))
    return scores


def next_tokens(logits: Any, index: int, options: GenerateOptions, eos: Any, finished: Any) -> Any:
    """Every row's new token ``index`` (0-based) from its ``logits`` ``[B, V]``, as ``generate`` picks it.

    Args:
        logits: The last position's logits, float.
        index: Which new token this is: before ``min_new_tokens`` the EOS ids cannot be picked.
        options: The call's options (sampling, ``min_new_tokens``, the pad id).
        eos: The EOS ids as a tensor on the logits' device, or None.
        finished: ``[B]`` bool on that device: finished rows get the pad token.
    """
    import torch

    scores = logits
    if index < options.min_new_tokens and eos is not None:
        scores = scores.clone()  # the captured graph's output buffer must stay as it is
        scores[:, eos] = float("-inf")
    if options.do_sample:
        scores = warp(scores, options.temperature, options.top_k, options.top_p)
        token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    else:
        token = scores.argmax(dim=-1)
    return torch.where(finished, torch.full_like(token, options.pad_token_id), token)


__all__ = ["next_tokens", "warp"]
