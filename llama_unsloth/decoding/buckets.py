"""Bucket maths: which static-cache length and batch size a call runs in.

One CUDA graph is captured per (batch bucket, length bucket), so prompts of any length reuse a few graphs:
the cache length is the smallest power of two (at least :data:`MIN_BUCKET`) holding prompt +
``max_new_tokens``, capped at ``max_seq_length``; batch sizes are rounded up to powers of two.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

MIN_BUCKET = 256


def bucket_for(n_tokens: int, max_seq_length: int, min_bucket: int = MIN_BUCKET) -> int:
    """The cache length for ``n_tokens`` (prompt + new tokens): a power of two, at most ``max_seq_length``."""
    if n_tokens > max_seq_length:
        raise ValueError(f"{n_tokens} tokens do not fit max_seq_length={max_seq_length}.")
    size = min_bucket
    while size < n_tokens:
        size *= 2
    return min(size, max_seq_length)


def buckets(max_seq_length: int, min_bucket: int = MIN_BUCKET) -> List[int]:
    """Every cache length a model with this window can use."""
    sizes, size = [], min_bucket
    while size < max_seq_length:
        sizes.append(size)
        size *= 2
    return sizes + [max_seq_length]


def batch_bucket(batch: int) -> int:
    """Batch sizes are rounded up to a power of two (extra rows are copies whose answers are dropped)."""
    size = 1
    while size < batch:
        size *= 2
    return size


def warm_up_lengths(
    prompt_tokens: Optional[Sequence[int]], max_new_tokens: int, max_seq_length: int, min_bucket: int = MIN_BUCKET
) -> List[int]:
    """The length buckets prompts of these lengths use (each with ``max_new_tokens``); every bucket without them.

    Prompts whose answer would not fit ``max_seq_length`` are left out: those calls take ``generate``.
    """
    if not prompt_tokens:
        return buckets(max_seq_length, min_bucket)
    return sorted(
        {
            bucket_for(n + max_new_tokens, max_seq_length, min_bucket)
            for n in prompt_tokens
            if n + max_new_tokens <= max_seq_length
        }
    )


__all__ = ["MIN_BUCKET", "batch_bucket", "bucket_for", "buckets", "warm_up_lengths"]
