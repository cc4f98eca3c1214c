"""The fast path's policy: one warning and the standard path wherever the fast decoder cannot answer."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.decoding import decoder as dec
from llama_unsloth.decoding.fast_path import FastPath, FastPathSettings
from llama_unsloth.decoding.generator import left_padded


def test_a_call_with_an_option_the_loop_lacks_takes_generate(
    tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    settings = FastPathSettings(mode="eager", max_seq_length=512)
    path, model, _ = FastPath.start("unused: a model is given", settings, given=copy.deepcopy(tiny_llm.model))
    assert path is not None and path.decoder is not None and model is not None
    batch = left_padded([[7, 8, 9]], tiny_llm.tokenizer.pad_token_id, "cpu")
    gen = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": tiny_llm.tokenizer.pad_token_id}
    assert path.generate(batch, gen).shape == (1, 7)
    with pytest.warns(RuntimeWarning, match="repetition_penalty"):
        assert path.generate(batch, {**gen, "repetition_penalty": 1.3}) is None
    assert path.stats["fallback_calls"] == 1 and path.stats["fast_calls"] == 1
    with pytest.warns(RuntimeWarning, match="fast_decode stopped \\(broken\\)"):
        path.fall_back("broken")
    assert (
        path.decoder is None
        and path.stats == {}
        and path.generate(batch, gen) is None
        and path.warm_up(None, (1,), 0) == {}
    )


def test_without_cuda_fast_decode_warns_once_and_answers(
    tiny_llama_path: Path, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        llms = [
            UnslothLLM(
                model_name=str(tiny_llama_path), load_in_4bit=False, max_new_tokens=12, fast_decode=True, weights=w
            )
            for w in (None, None, "int4")
        ]
        answers = [llm.complete("What is a customs union?").text for llm in llms]
    messages = [str(w.message) for w in caught if "fast_decode" in str(w.message)]
    assert len(messages) == 1, messages  # once per reason (int4 without CUDA has the same one)
    assert all("no CUDA GPU" in m and "standard generate path" in m for m in messages)
    assert all(llm.fast_decoder is None and llm.backend_name == "transformers" for llm in llms)
    assert answers == [tiny_llm.complete("What is a customs union?").text] * 3
    assert llms[0].warm_up() == {}


def test_unsupported_generate_option_falls_back_for_that_call(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    with pytest.warns(RuntimeWarning, match="repetition_penalty"):
        fast = fast_llm.complete("What is a customs union?", repetition_penalty=1.3)
    assert fast.text == tiny_llm.complete("What is a customs union?", repetition_penalty=1.3).text
    assert fast_llm.fast_decode_stats()["fallback_calls"] == 1 and fast_llm.fast_decoder is not None


def test_a_failing_decode_step_falls_back_once_and_answers(
    fast_llm: UnslothLLM, tiny_llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, *args, **kwargs):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    monkeypatch.setattr(dec.FastDecoder, "_prefill", broken)
    with pytest.warns(RuntimeWarning, match="inductor exploded"):
        first = fast_llm.complete("What is a customs union?")
    assert fast_llm.fast_decoder is None
    assert (
        first.text
        == fast_llm.complete("What is a customs union?").text
        == tiny_llm.complete("What is a customs union?").text
    )
