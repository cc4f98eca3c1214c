"""Token ids: training ids up to the answer equal the inference ids, one BOS; the one list of known special tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llama_unsloth.layouts.format import BUILTIN_FORMATS, PromptFormat
from llama_unsloth.layouts.tokens import (
    BOUNDARY_TOKENS,
    END_MARKERS,
    KNOWN_SPECIAL_TOKENS,
    encode_prompt,
    encode_training,
    tokenizer_special_tokens,
)
from tests.llama_unsloth.layouts.users_layouts import ALPACA_DONT_KNOW, ALPACA_RAG, ANS, CTX, EXAMPLES, Q


def _layouts() -> list:
    return [
        *(PromptFormat.get(name) for name in sorted(BUILTIN_FORMATS)),
        PromptFormat.from_string(ALPACA_DONT_KNOW, fields=["instruction", "input", "output"]),
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"]),
        PromptFormat.from_j2(EXAMPLES / "phi3_reasoning.j2"),
        PromptFormat.from_j2(EXAMPLES / "QA_finetune_Instruction_Context_new.j2"),
    ]


def _bos_tokenizer(smollm2_path: Path) -> Any:
    """SmolLM2's tokenizer made to add a ``<s>`` BOS to every text, as Llama-2/Mistral tokenizers do."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    bos_id = tokenizer.convert_tokens_to_ids("<s>")
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    assert tokenizer("hi")["input_ids"][0] == bos_id
    return tokenizer


@pytest.mark.parametrize("tokenizer_kind", ["smollm2", "adds-bos"])
def test_training_ids_up_to_the_answer_equal_the_inference_ids(smollm2_path: Path, tokenizer_kind: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = (
        AutoTokenizer.from_pretrained(smollm2_path) if tokenizer_kind == "smollm2" else _bos_tokenizer(smollm2_path)
    )
    record = {
        "instruction": Q,
        "input": "",
        "context": CTX,
        "flag": "logician",
        "reasoning": "R",
        "output": ANS,
        "answer": ANS,
    }
    for fmt in _layouts():
        prompt, completion = fmt.split_training(record, eos_token=tokenizer.eos_token, tokenizer=tokenizer)
        # The record's input is empty; its context reaches layouts with a context slot (and the chat user turn).
        context = CTX if fmt.is_chat or fmt.context_var in ("context", "str_context") else ""
        inference = fmt.render_prompt(Q, context, flag="logician", tokenizer=tokenizer)
        assert prompt == inference, fmt.name
        train_ids = encode_training(tokenizer, prompt, completion)
        infer_ids = encode_prompt(tokenizer, inference)
        assert train_ids[: len(infer_ids)] == infer_ids, fmt.name
        if tokenizer.bos_token_id is not None and tokenizer_kind == "adds-bos":
            assert train_ids.count(tokenizer.bos_token_id) == 1, fmt.name
            assert infer_ids[0] == tokenizer.bos_token_id


# The turn and sequence markers of the families our users fine-tune (SPEC.md), by family.
FAMILY_MARKERS = {
    "llama-2/mistral": ("<s>", "</s>"),
    "llama-3": ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "chatml/smollm2": ("<|im_start|>", "<|im_end|>", "<|endoftext|>"),
    "phi-3": ("<|end|>", "<|assistant|>", "<|endoftext|>"),
    "gemma": ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
}


def test_known_special_tokens_are_one_list_exported_by_the_package() -> None:
    from llama_unsloth import layouts

    # Answer cleaning imports this very object from the package: one list, not a copy.
    assert layouts.KNOWN_SPECIAL_TOKENS is KNOWN_SPECIAL_TOKENS
    assert len(set(KNOWN_SPECIAL_TOKENS)) == len(KNOWN_SPECIAL_TOKENS)
    for family, tokens in FAMILY_MARKERS.items():
        assert set(tokens) <= set(KNOWN_SPECIAL_TOKENS), family


def test_end_markers_and_boundaries_are_taken_from_the_one_list() -> None:
    assert set(END_MARKERS) <= set(BOUNDARY_TOKENS) <= set(KNOWN_SPECIAL_TOKENS)
    assert set(END_MARKERS) == {
        "</s>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<eos>",
    }
    # Padding, unknown text and role names neither end an answer nor start a new example.
    assert not {"<pad>", "<unk>", "<|assistant|>"} & set(BOUNDARY_TOKENS)


@pytest.mark.parametrize("marker", END_MARKERS)
def test_a_template_writing_an_end_marker_after_the_answer_gets_no_second_eos(marker: str) -> None:
    fmt = PromptFormat.from_string("Q: {{ instruction }}\nA: {{ output }}" + marker)
    assert fmt.append_eos is False and marker in fmt.stop
    assert fmt.render_training({"instruction": "q", "output": "a"}, eos_token="</s>") == f"Q: q\nA: a{marker}"


def test_tokenizer_special_tokens_include_added_tokens_marked_special() -> None:
    class Added:
        def __init__(self, content: str, special: bool) -> None:
            self.content, self.special = content, special

    class Tok:
        all_special_tokens = ["<s>", "</s>"]
        added_tokens_decoder = {32007: Added("<|end|>", True), 32010: Added("<|plain|>", False)}

    assert tokenizer_special_tokens(Tok()) == {"<s>", "</s>", "<|end|>"}
    assert tokenizer_special_tokens(object()) == set()
