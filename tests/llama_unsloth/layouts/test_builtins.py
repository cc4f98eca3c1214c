"""The built-in layouts: golden prompts and training texts, the names they are found by."""

from __future__ import annotations

import pytest

from llama_unsloth.layouts.builtins import BUILTIN_LAYOUTS, REASONING_SYSTEMS, builtin_layout
from llama_unsloth.layouts.format import BUILTIN_FORMATS, PromptFormat, PromptFormatError
from tests.llama_unsloth.layouts.users_layouts import (
    SYSTEM_ASSISTANT,
    SYSTEM_CREATOR,
    SYSTEM_LOGICIAN,
    SYSTEM_TRANSLATOR,
)


def test_alpaca_golden_prompt_and_training_text() -> None:
    fmt = PromptFormat.get("alpaca")
    preamble = (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request."
    )
    prompt = fmt.render_prompt("Name the bloc.", "Mercosur was founded in 1991.")
    assert (
        prompt
        == f"{preamble}\n\n### Instruction:\nName the bloc.\n\n### Input:\nMercosur was founded in 1991.\n\n### Response:\n"
    )
    record = {"instruction": "Name the bloc.", "input": "Mercosur was founded in 1991.", "output": "Mercosur."}
    assert fmt.render_training(record, eos_token="</s>") == prompt + "Mercosur.</s>"


def test_alpaca_context_keeps_the_input_section_even_when_empty() -> None:
    fmt = PromptFormat.get("alpaca-context")
    prompt = fmt.render_prompt("Q?", "CTX")
    assert prompt.endswith("\n\n### Instruction:\nQ?\n\n### Input:\n\n\n### Context:\nCTX\n\n### Response:\n")
    record = {"instruction": "Q?", "input": "extra", "context": "CTX", "output": "A."}
    assert fmt.render_training(record, eos_token="<eos>").endswith(
        "### Instruction:\nQ?\n\n### Input:\nextra\n\n### Context:\nCTX\n\n### Response:\nA.<eos>"
    )
    # Records without an input field are fine: the section stays, empty.
    assert fmt.render_training({"instruction": "Q?", "context": "CTX", "output": "A."}, eos_token="") == prompt + "A."


def test_unknown_format_lists_valid_names() -> None:
    with pytest.raises(PromptFormatError) as err:
        PromptFormat.get("alpacca")
    for name in BUILTIN_FORMATS:
        assert name in str(err.value)


def test_reasoning_systems_are_the_users_texts() -> None:
    assert REASONING_SYSTEMS == {
        "logician": SYSTEM_LOGICIAN,
        "creator": SYSTEM_CREATOR,
        "translator": SYSTEM_TRANSLATOR,
        "assistant": SYSTEM_ASSISTANT,
    }


@pytest.mark.parametrize("name", sorted(BUILTIN_LAYOUTS))
def test_every_builtin_is_a_fresh_layout_by_name(name: str) -> None:
    fmt = BUILTIN_FORMATS[name]()
    assert fmt == PromptFormat.get(name) and fmt.name == name
    # Layouts are mutable: changing one must not change the next one built.
    fmt.stop.append("CHANGED")
    fmt.systems_by_flag["x"] = "CHANGED"
    assert "CHANGED" not in PromptFormat.get(name).stop
    assert "x" not in builtin_layout(name).get("systems_by_flag", {})


def test_builtins_table_and_lookup_agree() -> None:
    assert (
        set(BUILTIN_FORMATS)
        == set(BUILTIN_LAYOUTS)
        == {
            "alpaca",
            "alpaca-context",
            "instruction-context",
            "reasoning",
            "chat",
        }
    )
    with pytest.raises(KeyError):
        builtin_layout("alpacca")
