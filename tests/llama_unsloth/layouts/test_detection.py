"""Whether a text already is a prompt in a layout: our own templates are sent as they are, not wrapped again."""

from __future__ import annotations

import pytest

from llama_unsloth.layouts.detection import looks_laid_out
from llama_unsloth.layouts.format import PromptFormat, PromptFormatError
from tests.llama_unsloth.layouts.users_layouts import ALPACA_RAG, CTX, INSTRUCTION_CONTEXT_J2, Q


@pytest.mark.parametrize(
    "fmt",
    [
        PromptFormat.from_string(INSTRUCTION_CONTEXT_J2),
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"]),
        PromptFormat.get("alpaca"),
        PromptFormat.get("reasoning"),
    ],
    ids=lambda fmt: fmt.name,
)
def test_a_prompt_in_the_layout_is_recognised_and_a_plain_question_is_not(fmt: PromptFormat) -> None:
    assert fmt.looks_laid_out(fmt.render_prompt(Q, CTX))
    assert fmt.looks_laid_out(fmt.qa_template().template)
    assert not fmt.looks_laid_out(Q)
    assert not fmt.looks_laid_out(f"Context:\n{CTX}\n\nQuestion: {Q}")


def test_the_users_rag_layout_is_recognised_by_its_tail_alone() -> None:
    fmt = PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"])
    prompt = fmt.render_prompt(Q, CTX)
    tail = prompt[prompt.index("\n\nIf text has been provided") :]
    assert fmt.looks_laid_out("Another head.\n" + tail)


def test_short_edges_tell_nothing_and_an_unrenderable_layout_is_never_matched() -> None:
    # A head and tail of a few characters ("Q: ", "\n") are too common in plain text.
    assert not looks_laid_out("Q: what?\n", lambda instruction, context: f"Q: {instruction}\n{context}\n")

    def broken(instruction: str, context: str) -> str:
        raise PromptFormatError("needs a tokenizer")

    assert not looks_laid_out("anything", broken)
