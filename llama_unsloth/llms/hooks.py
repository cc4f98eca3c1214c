"""What an LLM hands LlamaIndex to call back: layout hooks and a token counter, both held weakly.

A bound method stored in the LLM's own field would make ``repr(llm)`` recurse and keep a reference cycle; a
token counter in ``Settings.tokenizer`` that held the tokenizer would keep the whole model alive.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, List


class LayoutHook:
    """``messages_to_prompt`` / ``completion_to_prompt`` for LlamaIndex: the LLM's layout, held weakly."""

    def __init__(self, llm: Any, method: str) -> None:
        self._llm = weakref.ref(llm)
        self._method = method

    def __call__(self, value: Any) -> str:
        llm = self._llm()
        if llm is None:
            raise RuntimeError("The LLM this prompt hook belongs to was deleted.")
        return getattr(llm, self._method)(value)

    def __repr__(self) -> str:
        return f"<layout {self._method}>"


def weak_tokenizer_fn(tokenizer: Any) -> Callable[[str], List[int]]:
    """A token-counting function for ``Settings.tokenizer`` that does not keep the tokenizer (or model) alive."""
    ref = weakref.ref(tokenizer)

    def count(text: str) -> List[int]:
        live = ref()
        if live is not None:
            return live.encode(text, add_special_tokens=False)
        # LlamaIndex objects built meanwhile (Settings.node_parser, a PromptHelper) kept this function: once
        # another tokenizer is the global one (a new LLM set it), count with that one.
        import llama_index.core
        from llama_index.core import Settings

        for current in (Settings._tokenizer, llama_index.core.global_tokenizer):
            if current is not None and current is not count:
                return current(text)
        raise RuntimeError(
            "The LLM whose tokenizer Settings.tokenizer uses was deleted; set Settings.tokenizer again."
        )

    return count


__all__ = ["LayoutHook", "weak_tokenizer_fn"]
