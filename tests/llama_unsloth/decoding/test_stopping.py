"""StopOnStrings with SmolLM2's real tokenizer: each row stops once its *generated* text holds a stop string.

The criterion decodes only a window of the last tokens: the stop must be found however the model spelled it
(canonical tokens, a special token, character by character, a multi-byte character in byte pieces), never in the
prompt, and per row of a left-padded batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pytest

from llama_unsloth.decoding.stopping import StopOnStrings

PAD = 0


@pytest.fixture(scope="module")
def tokenizer(smollm2_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


def _ids(tokenizer: Any, text: str) -> List[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def _one_token_per_character(tokenizer: Any, text: str) -> List[int]:
    """``text`` spelled one token per character: valid ids, not the tokenizer's own (canonical) spelling."""
    ids = []
    for char in text:
        pieces = _ids(tokenizer, char)
        assert len(pieces) == 1, (char, pieces)
        ids += pieces
    return ids


def _batch(rows: List[List[int]]) -> Any:
    import torch

    width = max(len(r) for r in rows)
    return torch.tensor([[PAD] * (width - len(r)) + r for r in rows])


def _stopped(criterion: StopOnStrings, rows: List[List[int]]) -> List[bool]:
    import torch

    done = criterion(_batch(rows), scores=None)
    assert done.dtype == torch.bool and done.shape == (len(rows),)
    return done.tolist()


def test_stops_once_the_generated_text_holds_a_stop(tokenizer: Any) -> None:
    prompt = _ids(tokenizer, "### INSTRUCTION:\nWhich treaty created Mercosur?\n\n### RESPONSE:\n")
    criterion = StopOnStrings(tokenizer, ["### INSTRUCTION:"], prompt_width=len(prompt))
    answer = _ids(tokenizer, "The Treaty of Asuncion.")
    assert _stopped(criterion, [prompt + answer]) == [False]  # the stop in the prompt does not count
    assert _stopped(criterion, [prompt + answer + _ids(tokenizer, "\n\n### INSTRUCTION:")]) == [True]
    # Part of the stop is not the stop.
    assert _stopped(criterion, [prompt + answer + _ids(tokenizer, "\n\n### INSTR")]) == [False]


def test_a_stop_across_token_edges_and_inside_a_token(tokenizer: Any) -> None:
    # "RESPONSE:" is split over three tokens of "### RESPONSE:"; "ebra" is inside the token of " Zebra".
    prompt = _ids(tokenizer, "Question?")
    for text, stop in (("Answer.\n### RESPONSE:", "RESPONSE:"), ("It is a Zebra", "ebra")):
        criterion = StopOnStrings(tokenizer, [stop], prompt_width=len(prompt))
        assert _stopped(criterion, [prompt + _ids(tokenizer, text)]) == [True], (text, stop)


def test_a_special_token_stop_is_found(tokenizer: Any) -> None:
    prompt = _ids(tokenizer, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    criterion = StopOnStrings(tokenizer, ["<|im_end|>"], prompt_width=len(prompt))  # in the prompt: ignored
    assert _stopped(criterion, [prompt + _ids(tokenizer, "Hello!")]) == [False]
    assert _stopped(criterion, [prompt + _ids(tokenizer, "Hello!<|im_end|>")]) == [True]


def test_a_stop_spelled_in_more_tokens_than_its_canonical_tokenization(tokenizer: Any) -> None:
    # A model may write a stop in other pieces than the tokenizer's own; here one token per character:
    # 13 tokens for "### RESPONSE:" (5 canonical ones), then a few more tokens of answer text before it.
    stop = "### RESPONSE:"
    assert len(_ids(tokenizer, stop)) < len(stop)
    prompt = _ids(tokenizer, "Question?")
    generated = _ids(tokenizer, "Answer.\n") + _one_token_per_character(tokenizer, stop)
    criterion = StopOnStrings(tokenizer, [stop], prompt_width=len(prompt))
    assert _stopped(criterion, [prompt + generated]) == [True]


def test_a_multibyte_stop_in_byte_pieces(tokenizer: Any) -> None:
    # Japanese characters are several byte-level tokens each: the stop counts once its last byte is generated.
    stop = "回答："
    prompt = _ids(tokenizer, "質問？")
    generated = _ids(tokenizer, "はい。\n" + stop)
    criterion = StopOnStrings(tokenizer, [stop], prompt_width=len(prompt))
    assert _stopped(criterion, [prompt + generated]) == [True]
    assert _stopped(criterion, [prompt + generated[:-1]]) == [False]


def test_rows_of_a_left_padded_batch_stop_on_their_own(tokenizer: Any) -> None:
    short = _ids(tokenizer, "Hi?")
    long = _ids(tokenizer, "A much longer question about customs unions?")
    width = max(len(short), len(long))
    criterion = StopOnStrings(tokenizer, ["\n\n", "END"], prompt_width=width)
    rows = [
        short + _ids(tokenizer, "Yes END"),
        long + _ids(tokenizer, "No stop here"),
        long + _ids(tokenizer, "First.\n\nSecond"),
    ]
    # Left padding keeps every prompt inside the first ``width`` columns.
    assert _stopped(criterion, rows) == [True, False, True]


def test_empty_stops_are_ignored_and_only_empty_stops_never_stop(tokenizer: Any) -> None:
    prompt = _ids(tokenizer, "Question?")
    generated = prompt + _ids(tokenizer, "Any answer at all")
    # "" is in every string: it must not end generation at the first token.
    assert _stopped(StopOnStrings(tokenizer, ["", "###"], prompt_width=len(prompt)), [generated]) == [False]
    assert _stopped(StopOnStrings(tokenizer, [""], prompt_width=len(prompt)), [generated]) == [False]


def test_generate_stops_right_after_the_stop(tiny_llama_path: Path, tokenizer: Any) -> None:
    """With a real ``model.generate``: the greedy output is cut right after the token that completes the stop."""
    import torch
    from transformers import AutoModelForCausalLM, StoppingCriteriaList

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    prompt = _ids(tokenizer, "Which treaty created Mercosur?")
    inputs = torch.tensor([prompt])
    settings = {"max_new_tokens": 16, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    free = model.generate(inputs, attention_mask=torch.ones_like(inputs), **settings)[0, len(prompt) :].tolist()
    # The stop: the text of generated tokens 5 and 6 (so generation must end after token 6, not at 16).
    stop = tokenizer.decode(free[5:7])
    assert stop.strip() and stop not in tokenizer.decode(free[:6]), free
    criterion = StopOnStrings(tokenizer, [stop], prompt_width=len(prompt))
    stopped = model.generate(
        inputs, attention_mask=torch.ones_like(inputs), stopping_criteria=StoppingCriteriaList([criterion]), **settings
    )[0, len(prompt) :].tolist()
    assert stopped == free[:7]
