"""llama_unsloth.llms.response: generated text -> the answer, the same for in-process and served models."""

from __future__ import annotations

from typing import Dict, List

from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS
from llama_unsloth.layouts import PromptFormat
from llama_unsloth.llms.response import clean_answer, completion, growing_answer, special_token_texts

MARKERS = ["### Instruction:", "</s>"]
SPECIALS = ["<|endoftext|>", "</s>", "<s>"]


def test_the_answer_is_cut_at_the_first_marker_and_special_tokens_go() -> None:
    fmt = PromptFormat.get("alpaca-context")
    answer, reasoning = clean_answer("<s> The Treaty of Asuncion.</s>\n### Instruction:\nmore", MARKERS, SPECIALS, fmt)
    assert (answer, reasoning) == ("The Treaty of Asuncion.", None)


def test_a_streamed_prefix_of_a_marker_is_held_back_until_it_cannot_be_one() -> None:
    fmt = PromptFormat.get("alpaca-context")
    assert clean_answer("Asuncion.\n### Instr", MARKERS, SPECIALS, fmt, final=False)[0] == "Asuncion.\n"
    assert clean_answer("Asuncion.\n### Index", MARKERS, SPECIALS, fmt, final=False)[0] == "Asuncion.\n### Index"


def test_the_users_phi3_reasoning_is_split_from_the_answer() -> None:
    # SPEC.md's reasoning layout: the model writes the reasoning, then <|response|> and the answer.
    fmt = PromptFormat.get("reasoning")
    generated = "The treaty is named in the context.\n<|response|>The Treaty of Asuncion.<|endoftext|>"
    answer, reasoning = clean_answer(generated, ["<|endoftext|>"], SPECIALS, fmt)
    assert answer == "The Treaty of Asuncion." and reasoning == "The treaty is named in the context."


def test_the_response_carries_the_counts_where_llamaindex_reads_them_and_flags_i_dont_know() -> None:
    patterns = list(DEFAULT_ABSTENTION_PATTERNS)
    known = completion("P", "The Treaty of Asuncion.", "The Treaty of Asuncion.", None, (40, 6), 0.5, patterns)
    assert known.raw["usage"] == {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}
    assert known.additional_kwargs["abstained"] is False
    # The users' own rule text: return "I dont know" as the response.
    unknown = completion("P", "I dont know", "I dont know", None, (40, 3), 0.5, patterns)
    assert unknown.additional_kwargs["abstained"] is True


def test_streamed_deltas_add_up_to_the_answer_and_nothing_shows_before_the_answer_starts() -> None:
    fmt = PromptFormat.get("reasoning")

    def clean(text: str, final: bool = True):
        return clean_answer(text, ["<|endoftext|>"], SPECIALS, fmt, final)

    pieces = ["Think", "ing.\n<|resp", "onse|>The Trea", "ty of Asuncion.", "<|endoftext|>"]
    state: Dict[str, str] = {"generated": "", "shown": ""}
    shown: List[str] = [r.delta or "" for r in growing_answer(pieces, state, clean, fmt.answer_marker)]
    assert "".join(shown) == "The Treaty of Asuncion." and "Think" not in "".join(shown)


def test_special_token_texts_are_longest_first(tiny_llm) -> None:
    texts = special_token_texts(tiny_llm.tokenizer, ["<s>", "<|im_end|>"])
    assert texts.index("<|im_end|>") < texts.index("<s>")
    assert set(tiny_llm.tokenizer.all_special_tokens) <= set(texts)
