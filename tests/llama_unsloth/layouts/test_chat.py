"""The chat layout: the tokenizer's own template, the fallback for strict templates, the turn end."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest

from llama_unsloth.layouts.chat import (
    chat_messages,
    render_alternating,
    render_chat,
    split_chat_training,
    turn_end_tokens,
)
from llama_unsloth.layouts.format import PromptFormat, PromptFormatError


class StrictTemplate:
    """A Gemma-like tokenizer: no system role, strictly alternating turns, ``<end_of_turn>`` after each turn."""

    chat_template = "gemma-like"
    all_special_tokens = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]

    def __init__(self, drop_system: bool = False) -> None:
        # drop_system: accept a system turn and leave it out silently (Phi-3-medium's template does).
        self.drop_system = drop_system

    def apply_chat_template(self, messages: List[Dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        roles = [m["role"] for m in messages if not (self.drop_system and m["role"] == "system")]
        if roles != (["user", "assistant"] * len(roles))[: len(roles)]:
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        turns = [
            f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in messages if m["role"] != "system"
        ]
        return "<bos>" + "".join(turns) + ("<start_of_turn>assistant\n" if add_generation_prompt else "")


def test_chat_format_uses_the_tokenizers_template(smollm2_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    fmt = PromptFormat.get("chat")
    prompt = fmt.render_prompt("Q?", "CTX", system="SYS", tokenizer=tokenizer)
    assert prompt == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nContext:\nCTX\n\nQuestion: Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    training = fmt.render_training(
        {"instruction": "Q?", "input": "", "output": "A."}, system="SYS", tokenizer=tokenizer
    )
    assert (
        training
        == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n"
    )
    with pytest.raises(PromptFormatError, match="needs a tokenizer"):
        fmt.render_prompt("Q?")


def test_chat_messages_write_the_context_into_the_user_turn() -> None:
    messages = chat_messages("SYS", "Q?", "CTX", history=[("user", "Hi"), ("assistant", "Hello")], answer="A.")
    assert messages == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Context:\nCTX\n\nQuestion: Q?"},
        {"role": "assistant", "content": "A."},
    ]
    assert chat_messages("SYS", "Q?")[-1] == {"role": "user", "content": "Q?"}


@pytest.mark.parametrize("drop_system", [False, True])
def test_a_template_that_rejects_or_drops_the_system_text_gets_it_in_the_first_user_turn(drop_system: bool) -> None:
    tokenizer = StrictTemplate(drop_system=drop_system)
    text = render_chat(chat_messages("SYS", "Q?"), tokenizer, True)
    assert text == "<bos><start_of_turn>user\nSYS\n\nQ?<end_of_turn>\n<start_of_turn>assistant\n"


def test_alternating_joins_turns_of_one_role_and_moves_a_greeting_before_the_question() -> None:
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "assistant", "content": "Welcome."},
        {"role": "user", "content": "One."},
        {"role": "user", "content": "Two."},
    ]
    assert render_alternating(messages, StrictTemplate(), False) == (
        "<bos><start_of_turn>user\nSYS\n\nWelcome.\n\nOne.\n\nTwo.<end_of_turn>\n"
    )


def test_turn_end_is_the_special_token_the_template_writes_after_the_answer() -> None:
    tokenizer: Any = StrictTemplate()
    assert turn_end_tokens(tokenizer) == ["<end_of_turn>"]
    assert PromptFormat.get("chat").turn_end_tokens(tokenizer) == ["<end_of_turn>"]
    # Template layouts: their stop strings that are special tokens.
    assert turn_end_tokens(tokenizer, ["### Response:", "<eos>", "<|im_end|>"]) == ["<eos>"]


def test_chat_training_split_is_the_inference_prompt_then_the_answers_turn() -> None:
    record = {"instruction": "Q?", "input": "", "output": "A."}
    prompt, completion = split_chat_training(record, "SYS", StrictTemplate())
    assert prompt == render_chat(chat_messages("SYS", "Q?"), StrictTemplate(), True)
    assert completion == "A.<end_of_turn>\n"
    with pytest.raises(PromptFormatError, match="needs a tokenizer"):
        split_chat_training(record, "SYS", None)
