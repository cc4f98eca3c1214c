"""Users' templates as Jinja2: Python format strings converted byte for byte, the sandbox, what a template's text tells."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List

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


# ---- variables the layout does not fill: a typo such as {{ contxt }} would render empty without a word
def _warnings_of(load: Any, *args: Any, **kwargs: Any) -> List[str]:
    """The RuntimeWarnings ``load(*args, **kwargs)`` gives, each once-per-process warning seen afresh."""
    from llama_unsloth.once import forget_warnings

    forget_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(*args, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_a_typo_in_a_users_j2_warns_once_naming_the_file_the_variable_and_the_known_names(tmp_path: Path) -> None:
    path = tmp_path / "my_rag.j2"
    path.write_text("### Q:\n{{ instruction }}\n### C:\n{{ contxt }}\n### A:\n{{ output }}", encoding="utf-8")
    messages = _warnings_of(
        lambda: [PromptFormat.from_file(path), PromptFormat.get(str(path)), PromptFormat.from_j2(path)]
    )
    assert len(messages) == 1, messages  # once per file and variables, however often it is loaded
    (message,) = messages
    assert "\n" not in message and str(path) in message
    assert "{{ contxt }} (did you mean context?)" in message and "renders empty at inference" in message
    assert "Known variables: instruction, str_instruction" in message and "str_context" in message
    assert "eos_token" in message
    # Still a working layout (users' own files load as-is): the typo renders empty, as the warning says.
    fmt = PromptFormat.from_file(path)
    assert fmt.render_prompt("Q?", "CTX").endswith("### C:\n\n### A:\n")


def test_extra_variables_of_a_template_text_are_named_together() -> None:
    messages = _warnings_of(lambda: PromptFormat.from_string("{{ persona }}\n{{ instruction }}\n{{ anwser }}"))
    assert len(messages) == 1
    assert messages[0].startswith("Prompt template custom: {{ anwser }} (did you mean answer?), {{ persona }} are ")


@pytest.mark.parametrize(
    "text",
    [
        "{{ bos_token }}{{ instruction }}\n{{ str_context }}\n{{ answer }}{{ eos_token }}",
        "{% for line in range(2) %}{{ line }}{% endfor %}{{ question }}{% if flag == 'x' %}{{ system }}{% endif %}",
    ],
)
def test_known_roles_tokenizer_and_jinja_names_give_no_warning(text: str) -> None:
    assert _warnings_of(lambda: PromptFormat.from_string(text)) == []


def test_the_users_four_layouts_load_without_a_warning() -> None:
    fields = {
        "alpaca_dont_know.txt": ["instruction", "input", "output"],
        "alpaca_rag_inference.txt": ["instruction", "input", "context"],
    }
    files = sorted(EXAMPLES.iterdir())
    assert {p.name for p in files} >= {"QA_finetune_Instruction_Context_new.j2", "phi3_reasoning.j2", *fields}
    for path in files:
        if path.suffix in (".j2", ".txt"):
            assert _warnings_of(PromptFormat.get, str(path), fields=fields.get(path.name)) == [], path.name


@pytest.mark.parametrize("encoding", ["cp932", "utf-16", "utf-16-le"])
def test_a_template_saved_by_a_windows_editor_reads_as_the_same_text(tmp_path: Path, encoding: str) -> None:
    text = "### 指示:\n{{ instruction }}\n### 文脈（①～③）:\n{{ context }}\n### 回答:\n{{ output }}"
    path = tmp_path / f"ja_{encoding}.j2"
    path.write_bytes(text.replace("\n", "\r\n").encode(encoding))
    assert read_template(path) == text  # newlines as a UTF-8 file's read gives them
    assert PromptFormat.from_file(path).template == text


def test_a_binary_template_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "layout.j2"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PromptFormatError, match=r"^Prompt template .*layout\.j2: binary data"):
        read_template(path)
