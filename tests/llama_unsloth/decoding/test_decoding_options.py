"""What the fast path accepts: weights, the machine it needs, the generate options its loop implements.

(Named test_decoding_options: tests/recipes/test_options.py has the plain name.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.decoding import options


def test_bad_weights_value_names_the_field_and_the_fix(tiny_llama_path: Path) -> None:
    assert [options.weights_error(w) for w in (None, "bf16", "int8", "int4")] == [None] * 4
    with pytest.raises(
        ValueError, match=r"weights='int3' \(UnslothLLM field 'weights'\): choose 'bf16'.*'int8' or 'int4'"
    ):
        UnslothLLM(model_name=str(tiny_llama_path), fast_decode=True, weights="int3")
    with pytest.raises(ValueError, match="pass fast_decode=True too"):
        UnslothLLM(model_name=str(tiny_llama_path), weights="int4")


def test_without_cuda_the_reason_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert options.cuda_reason() == options.cuda_reason("int4") == "no CUDA GPU is available"


def test_options_the_loop_does_not_implement_are_named() -> None:
    assert options.unsupported_option({"max_new_tokens": 5, "do_sample": True, "top_p": 0.9}) is None
    assert options.unsupported_option({"repetition_penalty": None}) is None  # unset options do not count
    assert options.unsupported_option({"repetition_penalty": 1.3, "num_beams": 2}) == (
        "generate option(s) repetition_penalty are not implemented by the fast decode loop"
    )
    assert options.unsupported_option({"num_beams": 2}) == "beam search is not implemented by the fast decode loop"


def test_generate_options_take_generates_defaults() -> None:
    plain = options.GenerateOptions.from_kwargs({})
    assert (plain.max_new_tokens, plain.min_new_tokens, plain.pad_token_id, plain.eos_token_ids) == (20, 0, 0, [])
    assert not plain.do_sample and plain.top_k is None and plain.temperature == 1.0
    given = options.GenerateOptions.from_kwargs({"eos_token_id": [7, 8], "do_sample": True}, default_top_k=50)
    assert given.pad_token_id == 7 and given.eos_token_ids == [7, 8] and given.top_k == 50  # pad: the first EOS
    assert options.GenerateOptions.from_kwargs({"eos_token_id": 3, "top_k": 5}).top_k is None  # greedy: no top-k
