"""Bucket maths: cache lengths are powers of two up to the window, batch sizes powers of two."""

from __future__ import annotations

import pytest

from llama_unsloth.decoding import buckets as bk


def test_buckets_are_powers_of_two_up_to_the_window() -> None:
    assert bk.buckets(2048) == [256, 512, 1024, 2048]
    assert bk.buckets(3000) == [256, 512, 1024, 2048, 3000]
    assert [bk.bucket_for(n, 2048) for n in (1, 256, 257, 691, 2048)] == [256, 256, 512, 1024, 2048]
    assert [bk.batch_bucket(b) for b in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    with pytest.raises(ValueError):
        bk.bucket_for(2049, 2048)


def test_warm_up_lengths_are_the_buckets_the_prompts_use() -> None:
    assert bk.warm_up_lengths(None, 0, 2048) == bk.warm_up_lengths([], 10, 2048) == [256, 512, 1024, 2048]
    # 250 + 10 and 300 + 10 share bucket 512; 2040 + 10 does not fit the window (that call takes generate).
    assert bk.warm_up_lengths([5, 250, 300, 2040], 10, 2048) == [256, 512]
    assert bk.warm_up_lengths([40], 0, 512, min_bucket=32) == [64]
