"""LlamaIndex templates written in a layout: LlamaIndex's variables in the layout's slots, marked as laid out."""

from __future__ import annotations

import pytest

from llama_unsloth.layouts.format import BUILTIN_FORMATS, PromptFormat
from llama_unsloth.layouts.llamaindex import (
    CONDENSE_INSTRUCTION,
    LAYOUT_METADATA_KEY,
    REFINE_INSTRUCTION,
    TEMPLATE_KINDS,
    layout_template,
)
from tests.llama_unsloth.layouts.users_layouts import INSTRUCTION_CONTEXT_J2


@pytest.mark.parametrize("name", sorted(set(BUILTIN_FORMATS) - {"chat"}))
def test_qa_template_maps_query_and_context(name: str) -> None:
    fmt = PromptFormat.get(name)
    template = fmt.qa_template()
    assert set(template.template_vars) == {"query_str", "context_str"}
    rendered = template.format(query_str="What limits trade?", context_str="Tariffs limit trade.")
    assert rendered == fmt.render_prompt("What limits trade?", "Tariffs limit trade.")


@pytest.mark.parametrize(
    ("method", "variables", "prompt_type"),
    [
        ("qa_template", {"query_str", "context_str"}, "text_qa"),
        ("refine_template", {"query_str", "existing_answer", "context_msg"}, "refine"),
        ("summary_template", {"query_str", "context_str"}, "summary"),
        ("condense_template", {"chat_history", "question"}, "custom"),
    ],
)
def test_every_kind_of_template_is_marked_as_laid_out(method: str, variables: set, prompt_type: str) -> None:
    template = getattr(PromptFormat.get("instruction-context"), method)()
    assert set(template.template_vars) == variables
    assert template.metadata[LAYOUT_METADATA_KEY] == "instruction-context"
    assert template.metadata["prompt_type"].value == prompt_type


def test_refine_and_condense_write_their_instruction_into_the_users_layout() -> None:
    fmt = PromptFormat.from_string(INSTRUCTION_CONTEXT_J2, name="users")
    refine = fmt.refine_template().format(query_str="Q?", existing_answer="Old.", context_msg="New facts.")
    instruction = REFINE_INSTRUCTION.format(query_str="Q?", existing_answer="Old.")
    assert refine == fmt.render_prompt(instruction, "New facts.")
    condense = fmt.condense_template().format(chat_history="user: Hi", question="And then?")
    assert condense == fmt.render_prompt(CONDENSE_INSTRUCTION.format(question="And then?"), "user: Hi")
    assert condense.endswith("### CONTEXT:\nuser: Hi\n\n### RESPONSE:\n")


def test_layout_template_renders_the_kinds_slots() -> None:
    calls = []

    def render(instruction: str, context: str) -> str:
        calls.append((instruction, context))
        return f"I={instruction} C={context}"

    for kind, (instruction, context, _) in TEMPLATE_KINDS.items():
        template = layout_template(kind, "mine", render)
        assert template.template == f"I={instruction} C={context}"
        assert template.metadata[LAYOUT_METADATA_KEY] == "mine"
    assert len(calls) == len(TEMPLATE_KINDS)
