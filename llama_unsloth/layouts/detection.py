"""Whether a text already is a prompt in a layout, so that it is not wrapped in the layout a second time."""

from __future__ import annotations

from typing import Callable

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.templates import ANSWER_SENTINEL

# Shorter heads or tails (a newline, "Q: ") are too common in plain text to tell anything.
_MIN_EDGE = 4


def looks_laid_out(text: str, render_prompt: Callable[[str, str], str]) -> bool:
    """Whether ``text`` already is a prompt in a layout: it starts with the layout's head or ends with its tail.

    Args:
        text: The prompt text to check.
        render_prompt: Renders the layout's inference prompt from (instruction, context).

    Returns:
        True when the text starts with the fixed text before the layout's first slot, or ends with the fixed
        text after its last one (at least four characters of it, spaces aside).
    """
    try:
        probe = render_prompt(ANSWER_SENTINEL, ANSWER_SENTINEL)
    except PromptFormatError:
        return False
    head, _, rest = probe.partition(ANSWER_SENTINEL)
    tail = rest.rpartition(ANSWER_SENTINEL)[2] if ANSWER_SENTINEL in rest else rest
    return (len(head.strip()) >= _MIN_EDGE and text.startswith(head)) or (
        len(tail.strip()) >= _MIN_EDGE and text.endswith(tail)
    )
