"""Transformers' own code on the fast path, after Unsloth (here: a stand-in) patched transformers' classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth import UnslothLLM
from llama_unsloth.decoding import pristine
from llama_unsloth.decoding.decoder import FastDecoder
from llama_unsloth.decoding.weights import load_fast_model
from llama_unsloth.errors import FastDecodeUnavailable
from tests.llama_unsloth.decoding._gpu import assert_fast_equals_eager


def test_a_method_replaced_in_place_marks_the_module_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.models.llama import modeling_llama

    assert not pristine._module_is_patched(modeling_llama)
    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", lambda self, x: x)
    assert pristine._module_is_patched(modeling_llama)


def test_patched_transformers_classes_are_not_run_by_the_fast_path(
    tiny_llama_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Unsloth does to transformers' Llama classes, done here by hand: the fast path loads a fresh copy."""
    from transformers.models.llama import modeling_llama

    def patched_forward(self, x):  # a stand-in for Unsloth's fast MLP
        raise AssertionError("patched code ran")

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", patched_forward)
    model, _ = load_fast_model(str(tiny_llama_path))
    assert "_llama_unsloth_pristine_" in type(model).__module__
    assert pristine.foreign_forwards(model) == []
    patched = modeling_llama.LlamaForCausalLM.from_pretrained(str(tiny_llama_path))
    assert any("LlamaMLP" in f for f in pristine.foreign_forwards(patched))
    with pytest.raises(FastDecodeUnavailable, match="outside transformers"):
        FastDecoder(patched, 256, mode="eager")
    # The fresh copy is made once per modeling module, and its class is the one a load returns.
    assert pristine.pristine_modeling_module(model.config) is pristine.pristine_modeling_module(model.config)
    assert type(model) is pristine.plain_causal_lm_class(model.config)


@pytest.mark.gpu
def test_gpu_fast_path_after_unsloth_patched_transformers(peaked_path: Path) -> None:
    """Unsloth loaded a model first (patching transformers' Llama classes); the fast path still runs transformers' code."""
    import unsloth  # noqa: F401
    from unsloth import FastLanguageModel

    unsloth_model, _ = FastLanguageModel.from_pretrained(
        str(peaked_path), max_seq_length=1024, load_in_4bit=True, dtype=None
    )
    del unsloth_model
    from transformers.models.llama import modeling_llama

    print("patched by Unsloth:", pristine._module_is_patched(modeling_llama))
    llm = UnslothLLM(
        model_name=str(peaked_path),
        fast_decode=True,
        max_new_tokens=40,
        max_seq_length=1024,
        generate_kwargs={"min_new_tokens": 40},
        set_global_tokenizer=True,
    )
    assert llm.fast_decoder is not None
    assert pristine.foreign_forwards(llm.model) == [] and "_llama_unsloth_pristine_" in type(llm.model).__module__
    assert_fast_equals_eager(llm, "What is a customs union?", 40)
