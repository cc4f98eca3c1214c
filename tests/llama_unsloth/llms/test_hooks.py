"""llama_unsloth.llms.hooks: what LlamaIndex keeps of an LLM does not keep the LLM (or its model) alive."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from llama_unsloth.llms.hooks import LayoutHook, weak_tokenizer_fn


class _Owner:
    def shout(self, text: str) -> str:
        return text.upper()


def test_a_layout_hook_calls_its_llm_and_says_so_once_the_llm_is_gone() -> None:
    owner = _Owner()
    hook = LayoutHook(owner, "shout")
    assert hook("mercosur") == "MERCOSUR" and "shout" in repr(hook)
    del owner
    gc.collect()
    with pytest.raises(RuntimeError, match="was deleted"):
        hook("mercosur")


def test_the_token_counter_counts_with_the_model_then_with_the_next_global_tokenizer(tiny_llama_path: Path) -> None:
    import llama_index.core
    from llama_index.core import Settings
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_path)
    expected = tokenizer.encode("The Treaty of Asuncion", add_special_tokens=False)
    count = weak_tokenizer_fn(tokenizer)
    assert count("The Treaty of Asuncion") == expected
    Settings.tokenizer = count
    del tokenizer
    gc.collect()
    with pytest.raises(RuntimeError, match="set Settings.tokenizer again"):
        count("The Treaty of Asuncion")
    # Objects that kept the old counter count with whatever tokenizer is global now.
    Settings.tokenizer = lambda text: text.split()
    assert count("The Treaty of Asuncion") == ["The", "Treaty", "of", "Asuncion"]
    assert llama_index.core.global_tokenizer is not count
