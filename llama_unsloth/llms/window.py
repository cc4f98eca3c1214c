"""The model's window, one rule: a prompt's tokens plus ``max_new_tokens`` must fit ``max_seq_length``.

Every check that a prompt fits lives here: generation (:meth:`LayoutLLM._check_budget`), the split of
over-long LlamaIndex context into pieces (:func:`context_pieces`), the batch recipes' check of each
question before any answer is generated (:func:`check_question_fits`), and the option check of the
recipes (:func:`check_window_settings`).
"""

from __future__ import annotations

from typing import Any, List, Optional

from llama_unsloth.errors import OptionError, PromptTooLongError

# Tokens of retrieved context a question must leave room for (LlamaIndex fails with less than 1).
MIN_CONTEXT_TOKENS = 16
# Tokens spare for merges at piece boundaries when over-long context is split.
_PIECE_SLACK = 8


def overflow(n_prompt: int, max_new_tokens: int, max_seq_length: int) -> int:
    """How many tokens ``n_prompt`` plus ``max_new_tokens`` exceed the window by (<= 0: it fits)."""
    return n_prompt + max_new_tokens - max_seq_length


def check_fits(n_prompt: int, max_new_tokens: int, max_seq_length: int, what: str = "prompt") -> None:
    """Raises :class:`PromptTooLongError` (saying by how much and what to change) when the prompt does not fit.

    Args:
        n_prompt: The prompt's tokens, counted as fed to the model.
        max_new_tokens: Tokens the answer may take.
        max_seq_length: The window.
        what: ``prompt`` (a generation call) or ``question`` (a batch question checked before any answer).
    """
    over = overflow(n_prompt, max_new_tokens, max_seq_length)
    if over <= 0:
        return
    if what == "question":
        raise PromptTooLongError(
            f"The question is too long for the model's window: its prompt is {n_prompt} tokens; with "
            f"max_new_tokens={max_new_tokens} that exceeds max_seq_length={max_seq_length} by {over} tokens. "
            f"Shorten the question by {over} tokens, lower --max-new-tokens, or raise --max-seq-length."
        )
    raise PromptTooLongError(
        f"The prompt is {n_prompt} tokens; with max_new_tokens={max_new_tokens} that exceeds "
        f"max_seq_length={max_seq_length} by {over} tokens. Shorten the prompt or context by "
        f"{over} tokens (e.g. a lower similarity_top_k), lower max_new_tokens, or raise max_seq_length."
    )


def check_window_settings(max_new_tokens: int, max_seq_length: int) -> None:
    """The recipes' option check: the answer alone must leave room for a prompt (before any model loads)."""
    if overflow(1, max_new_tokens, max_seq_length) > 0:
        raise OptionError(
            f"--max-new-tokens ({max_new_tokens}) must be below --max-seq-length ({max_seq_length}): the prompt "
            "needs room too."
        )


def context_budget(llm: Any, call: Any) -> int:
    """Tokens of context one call can hold beside the fixed text of a first call and of a refine call.

    Raises:
        PromptTooLongError: The fixed text alone leaves no room for context.
    """
    fixed = llm.count_tokens(call.render(""))
    if call.refine is not None:
        # A refine call carries the earlier answer, up to max_new_tokens long.
        fixed = max(fixed, llm.count_tokens(call.refine("x " * llm.max_new_tokens, "")))
    budget = llm.max_seq_length - llm.max_new_tokens - fixed - _PIECE_SLACK
    if budget < MIN_CONTEXT_TOKENS:
        raise PromptTooLongError(
            f"The prompt without any context is {fixed} tokens; with max_new_tokens={llm.max_new_tokens} it "
            f"leaves no room for context within max_seq_length={llm.max_seq_length}. Shorten the question, "
            "lower max_new_tokens, or raise max_seq_length."
        )
    return budget


def context_pieces(llm: Any, call: Any) -> Optional[List[str]]:
    """The call's context split (with the model's tokenizer) so each call fits, or None when the whole prompt fits.

    Args:
        llm: A :class:`~llama_unsloth.llms.base.LayoutLLM`.
        call: A :class:`~llama_unsloth.llms.layout.LayoutCall`.
    """
    if call.context is None or call.render is None or llm.fits_window(call.text):
        return None
    from llama_index.core.node_parser import SentenceSplitter

    splitter = SentenceSplitter(chunk_size=context_budget(llm, call), chunk_overlap=0, tokenizer=llm.tokenizer_fn)
    pieces = [p for p in splitter.split_text(call.context) if p.strip()]
    return pieces or [call.context]


def check_question_fits(llm: Any, question: str, rag: bool = True) -> None:
    """Raises ``PromptTooLongError`` when ``question`` leaves no room in the model's window.

    With ``rag=True`` it asks what the query engine's packing asks: LlamaIndex's ``PromptHelper`` (as
    :func:`~llama_unsloth.rag.retrieval.build_rag_prompt` uses it) must leave at least
    :data:`MIN_CONTEXT_TOKENS` tokens for context beside the larger of the QA/refine prompts, after
    reserving ``max_new_tokens`` and the refine step's padding. Checking first matters: inside a query
    engine the overflow is LlamaIndex's ``ValueError: Calculated available context size -542 ...``
    traceback, or is swallowed by its refine step. With ``rag=False`` the fine-tune-only prompt plus
    ``max_new_tokens`` must fit ``max_seq_length``, counted with the model's tokenizer.
    """
    window, new = int(llm.max_seq_length), int(llm.max_new_tokens)
    if not rag:
        check_fits(len(llm.prompt_token_ids(llm.format_prompt(question))), new, window, what="question")
        return
    room = _rag_context_room(llm, question)
    if room < MIN_CONTEXT_TOKENS:
        from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE

        raise PromptTooLongError(
            f"The question is too long for the model's window: with max_new_tokens={new} and "
            f"{DEFAULT_RESPONSE_PADDING_SIZE} tokens LlamaIndex keeps free for refining, it leaves "
            f"{max(room, 0)} tokens of max_seq_length={window} for retrieved context (at least "
            f"{MIN_CONTEXT_TOKENS} needed). Shorten the question by at least {MIN_CONTEXT_TOKENS - room} tokens, "
            "lower --max-new-tokens, or raise --max-seq-length."
        )


def prompt_helper(llm: Any) -> Any:
    """The ``PromptHelper`` LlamaIndex's query engines pack context with (its global tokenizer, not the model's).

    The private attribute is what LlamaIndex's synthesizer itself reads: the public ``Settings.prompt_helper``
    getter would build and cache one from ``Settings.llm`` (resolving LlamaIndex's OpenAI default when none is set).
    """
    from llama_index.core import Settings
    from llama_index.core.indices.prompt_helper import PromptHelper

    return Settings._prompt_helper or PromptHelper.from_llm_metadata(llm.metadata)


def _rag_context_room(llm: Any, question: str) -> int:
    """Tokens LlamaIndex's packing leaves for context beside ``question`` (its own public arithmetic)."""
    from llama_index.core.prompts.prompt_utils import get_biggest_prompt
    from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE

    biggest = get_biggest_prompt(
        [
            llm.qa_template().partial_format(query_str=question),
            llm.refine_template().partial_format(query_str=question),
        ]
    )
    helper = prompt_helper(llm)
    try:
        splitter = helper.get_text_splitter_given_prompt(
            biggest, num_chunks=1, padding=DEFAULT_RESPONSE_PADDING_SIZE, llm=llm
        )
    except ValueError:
        # LlamaIndex's "Calculated available context size ... was not non-negative": by how much, for the advice,
        # counted as the helper counts (LlamaIndex's global tokenizer).
        from llama_index.core.prompts.prompt_utils import get_empty_prompt_txt
        from llama_index.core.utils import get_tokenizer

        count = get_tokenizer()
        fixed = len(count(get_empty_prompt_txt(biggest))) + len(count(llm.system_prompt or ""))
        return min(0, helper.context_window - fixed - helper.num_output - DEFAULT_RESPONSE_PADDING_SIZE)
    return int(splitter.chunk_size)


__all__ = [
    "MIN_CONTEXT_TOKENS",
    "check_fits",
    "check_question_fits",
    "check_window_settings",
    "context_budget",
    "context_pieces",
    "overflow",
    "prompt_helper",
]
