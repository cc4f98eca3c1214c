"""Generated text -> the answer users see: cut at end markers and stop strings, reasoning split off, flagged.

Both LLMs (in-process and served) shape answers here, so the same generated text gives the same answer.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from llama_index.core.base.llms.types import CompletionResponse

from llama_unsloth.abstention import is_abstention


def clean_answer(
    generated: str,
    cut_markers: Sequence[str],
    special_texts: Sequence[str],
    prompt_format: Any,
    final: bool = True,
) -> Tuple[str, Optional[str]]:
    """Cleans generated text into ``(answer, reasoning)``.

    Cut at the first end marker or stop string, split off the reasoning, remove special tokens. With
    ``final=False`` (streaming) text that may still become a stop string is held back.

    Args:
        generated: The decoded new tokens.
        cut_markers: Stop strings and end-token texts.
        special_texts: Special-token texts to remove, longest first.
        prompt_format: The layout (it knows where the answer starts, e.g. after ``<|response|>``).
        final: Whether generation has ended.
    """
    text = generated
    for marker in cut_markers:
        index = text.find(marker)
        if index != -1:
            text = text[:index]
    if not final:
        text = _hold_back_partial_markers(text, cut_markers)
    answer, reasoning = prompt_format.parse_answer(text)
    for special in special_texts:
        answer = answer.replace(special, "")
        if reasoning is not None:
            reasoning = reasoning.replace(special, "")
    return (answer.strip() if final else answer.lstrip()), reasoning


def _hold_back_partial_markers(text: str, markers: Sequence[str]) -> str:
    # A streamed "<|im_e" may become "<|im_end|>": show it only once it cannot.
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                text = text[:-size]
                break
    return text


def completion(
    prompt: str,
    generated: str,
    answer: str,
    reasoning: Optional[str],
    counts: Tuple[int, int],
    seconds: float,
    abstention_patterns: Sequence[str],
) -> CompletionResponse:
    """The ``CompletionResponse`` of one answer: text, raw data (token counts where LlamaIndex reads them), flag.

    Args:
        prompt: The prompt sent.
        generated: The raw generated text.
        answer: The cleaned answer.
        reasoning: The reasoning split off, if any.
        counts: ``(prompt tokens, new tokens)`` as fed to and produced by the model.
        seconds: Generation time.
        abstention_patterns: Regexes marking an "I don't know"-style answer.
    """
    n_prompt, n_new = counts
    raw: Dict[str, Any] = {
        "prompt": prompt,
        "generated": generated,
        "reasoning": reasoning,
        "prompt_tokens": n_prompt,
        "completion_tokens": n_new,
        "seconds": round(seconds, 4),
        # Where LlamaIndex's TokenCountingHandler reads the counts: the ids actually fed to the model.
        "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_new, "total_tokens": n_prompt + n_new},
    }
    abstained = is_abstention(answer, list(abstention_patterns))
    return CompletionResponse(text=answer, raw=raw, additional_kwargs={"abstained": abstained})


def growing_answer(
    pieces: Iterable[str], state: Dict[str, str], clean: Any, answer_marker: Optional[str]
) -> Iterator[CompletionResponse]:
    """The answer so far as pieces of generated text arrive (``state`` keeps the text and what was shown).

    Args:
        pieces: Generated text as it arrives.
        state: ``generated`` (all text so far) and ``shown`` (the answer already yielded).
        clean: ``clean(generated, final=False) -> (answer, reasoning)``.
        answer_marker: Where the answer starts in a reasoning layout (nothing is shown before it).
    """
    for piece in pieces:
        state["generated"] += piece
        answer, _ = clean(state["generated"], final=False)
        if answer_marker and answer_marker not in state["generated"]:
            continue  # still reasoning: the answer has not started
        if answer.startswith(state["shown"]) and len(answer) > len(state["shown"]):
            delta, state["shown"] = answer[len(state["shown"]) :], answer
            yield CompletionResponse(text=answer, delta=delta)


def special_token_texts(tokenizer: Any, known: Iterable[str]) -> List[str]:
    """The tokenizer's special tokens and the known markers of common families, longest first.

    Longest first, so "<|im_end|>" goes before "<s>"-style prefixes could split it.
    """
    texts = set(tokenizer.all_special_tokens) | set(known)
    return sorted((t for t in texts if t), key=len, reverse=True)


__all__ = ["clean_answer", "completion", "growing_answer", "special_token_texts"]
