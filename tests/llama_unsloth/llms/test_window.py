"""llama_unsloth.llms.window: one rule for "the prompt fits the window", the same wherever it is asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth.errors import OptionError, PromptTooLongError
from llama_unsloth.llms.window import (
    MIN_CONTEXT_TOKENS,
    check_fits,
    check_question_fits,
    check_window_settings,
    context_pieces,
    overflow,
)


def test_a_prompt_that_fills_the_window_exactly_fits_and_one_token_more_does_not() -> None:
    assert overflow(1536, 512, 2048) == 0
    check_fits(1536, 512, 2048)
    with pytest.raises(PromptTooLongError) as err:
        check_fits(1537, 512, 2048)
    message = str(err.value)
    assert "The prompt is 1537 tokens" in message and "by 1 tokens" in message and "\n" not in message
    with pytest.raises(PromptTooLongError, match="Shorten the question by 3 tokens"):
        check_fits(1539, 512, 2048, what="question")


def test_the_option_check_is_the_same_rule_before_any_model_loads() -> None:
    check_window_settings(2047, 2048)
    with pytest.raises(OptionError) as err:
        check_window_settings(2048, 2048)
    assert str(err.value) == (
        "--max-new-tokens (2048) must be below --max-seq-length (2048): the prompt needs room too."
    )


@pytest.fixture
def small_window_llm(tiny_llama_path: Path):
    from llama_unsloth import UnslothLLM

    return UnslothLLM(
        model_name=str(tiny_llama_path),
        backend="transformers",
        load_in_4bit=False,
        prompt_format="alpaca-context",
        max_seq_length=1024,
        max_new_tokens=64,
        set_global_tokenizer=False,
    )


def test_a_fine_tune_only_question_is_checked_with_the_ids_generate_would_receive(small_window_llm) -> None:
    llm = small_window_llm
    check_question_fits(llm, "Which treaty created Mercosur?", rag=False)

    def prompt_tokens(words: int) -> int:
        return len(llm.prompt_token_ids(llm.format_prompt(" ".join(["a"] * words))))

    # The longest question that fits, by the model's own count of the prompt generate() receives.
    fits = max(n for n in range(1, 1100) if prompt_tokens(n) + llm.max_new_tokens <= llm.max_seq_length)
    check_question_fits(llm, " ".join(["a"] * fits), rag=False)
    over = prompt_tokens(fits + 1) + llm.max_new_tokens - llm.max_seq_length
    with pytest.raises(PromptTooLongError, match=f"Shorten the question by {over} tokens"):
        check_question_fits(llm, " ".join(["a"] * (fits + 1)), rag=False)


def test_a_rag_question_must_leave_llamaindex_room_for_context(small_window_llm) -> None:
    from llama_index.core.prompts.prompt_utils import get_biggest_prompt
    from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE

    from llama_unsloth.llms.window import prompt_helper

    llm = small_window_llm
    check_question_fits(llm, "Which treaty created Mercosur?", rag=True)
    long_question = "Which treaty created Mercosur? " * 60
    with pytest.raises(PromptTooLongError) as err:
        check_question_fits(llm, long_question, rag=True)
    assert f"at least {MIN_CONTEXT_TOKENS} needed" in str(err.value)
    # What the check prevents: LlamaIndex's own packing fails on that question (a traceback inside an engine).
    biggest = get_biggest_prompt([llm.qa_template().partial_format(query_str=long_question)])
    with pytest.raises(ValueError):
        prompt_helper(llm).get_text_splitter_given_prompt(biggest, 1, DEFAULT_RESPONSE_PADDING_SIZE, llm=llm)


def test_over_long_context_is_split_into_pieces_that_each_fit(small_window_llm) -> None:
    from llama_index.core.prompts import PromptTemplate

    llm = small_window_llm
    qa = PromptTemplate("Context:\n{context_str}\nQuestion: {query_str}\nAnswer:")
    short = llm.layout().call(qa, {"context_str": "Mercosur was founded in 1991.", "query_str": "When?"})
    assert context_pieces(llm, short) is None
    sentences = [f"Fact {i}: the bloc signed treaty number {i} with a partner." for i in range(80)]
    call = llm.layout().call(qa, {"context_str": " ".join(sentences), "query_str": "Which treaties?"})
    pieces = context_pieces(llm, call)
    assert pieces is not None and len(pieces) > 1
    assert all(llm.fits_window(call.render(piece)) for piece in pieces)
    assert all(any(s in piece for piece in pieces) for s in sentences)  # nothing dropped
