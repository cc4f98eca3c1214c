"""Users' templates as Jinja2: Python format strings converted byte for byte, the sandbox, what a template's text tells."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.format import PromptFormat
from llama_unsloth.layouts.templates import (
    layout_fields,
    markers,
    python_format_to_jinja,
    read_template,
    static_text,
    to_jinja,
)
from tests.llama_unsloth.layouts.users_layouts import ALPACA_DONT_KNOW, ALPACA_RAG, EXAMPLES, INSTRUCTION_CONTEXT_J2


def test_positional_placeholders_need_fields_and_unknown_roles_are_named() -> None:
    with pytest.raises(PromptFormatError, match="fields="):
        PromptFormat.from_string(ALPACA_RAG)
    with pytest.raises(PromptFormatError, match="Unknown field"):
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "kontext"])
    with pytest.raises(PromptFormatError, match="more positional placeholders"):
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input"])


def test_python_format_with_literal_jinja_like_text_is_still_python() -> None:
    fmt = PromptFormat.from_string("Keep {{placeholder}} as text.\n{instruction}\n{output}")
    assert fmt.render_training({"instruction": "q", "output": "a"}) == "Keep {placeholder} as text.\nq\na"
    with pytest.raises(PromptFormatError, match="not a plain name"):
        PromptFormat.from_string("{d[instruction]} {output}")


def test_j2_runs_sandboxed(tmp_path: Path) -> None:
    path = tmp_path / "evil.j2"
    path.write_text("{{ instruction.__class__.__mro__[1].__subclasses__() }}{{ answer }}", encoding="utf-8")
    fmt = PromptFormat.from_j2(path)
    with pytest.raises(PromptFormatError):
        fmt.render_prompt("Q")


def test_j2_without_instruction_variable_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.j2"
    path.write_text("Just text {{ something }}", encoding="utf-8")
    with pytest.raises(PromptFormatError, match="no instruction variable"):
        PromptFormat.from_j2(path)


def test_users_rag_format_string_becomes_the_same_jinja_text() -> None:
    jinja = python_format_to_jinja(ALPACA_RAG, ["instruction", "input", "context"])
    assert jinja == ALPACA_RAG.format("{{ instruction }}", "{{ input }}", "{{ context }}")
    # A brace pair of the format string is one literal brace in the Jinja2 text.
    assert python_format_to_jinja('JSON {{"a": 1}} {instruction}', None) == 'JSON {"a": 1} {{ instruction }}'


def test_to_jinja_keeps_jinja_and_converts_format_strings() -> None:
    assert to_jinja(INSTRUCTION_CONTEXT_J2) == INSTRUCTION_CONTEXT_J2
    assert to_jinja("Q: {instruction}\nA: {output}") == "Q: {{ instruction }}\nA: {{ output }}"
    with pytest.raises(PromptFormatError, match="empty"):
        to_jinja("  \n")


def test_layout_fields_of_the_users_instruction_context_template() -> None:
    fields = layout_fields(INSTRUCTION_CONTEXT_J2, "users", "")
    assert fields["query_var"] == "str_instruction"
    assert fields["context_var"] == "str_context"
    assert fields["answer_var"] == "str_answer"
    assert fields["append_eos"] is True  # nothing but newlines after the answer: training appends EOS
    assert fields["stop"] == ["### INSTRUCTION:", "### CONTEXT:", "### RESPONSE:"]
    assert fields["record_fields"] == ["str_answer", "str_context", "str_instruction"]


def test_layout_fields_of_the_users_alpaca_with_its_own_end_marker() -> None:
    fields = layout_fields(to_jinja(ALPACA_DONT_KNOW, ["instruction", "input", "output"]), "alpaca", "")
    assert fields["append_eos"] is False  # the template writes </s> after the answer
    assert fields["stop"][-1] == "</s>" and "<s>" in fields["stop"]
    assert fields["answer_marker"] is None and fields["output_var"] is None


def test_markers_and_static_text() -> None:
    static = static_text("<s>{{ system }}\n### Instruction:\n{{ instruction }}{% if x %}<|tag|>{% endif %}")
    assert "{{" not in static and "{%" not in static
    assert markers(static) == ["### Instruction:", "<s>", "<|tag|>"]
    # A long line starting with '#' is text, not a section header.
    assert markers("# " + "word " * 20) == []


def test_read_template_reads_the_file_as_it_is(tmp_path: Path) -> None:
    assert read_template(EXAMPLES / "QA_finetune_Instruction_Context_new.j2") == INSTRUCTION_CONTEXT_J2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_template(tmp_path / "missing.j2")
