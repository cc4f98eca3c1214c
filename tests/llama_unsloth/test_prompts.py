"""PromptFormat: golden strings for every built-in layout, .j2 round trips, record checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_unsloth.prompts import (
    ALPACA_CONTEXT_SYSTEM,
    ALPACA_SYSTEM,
    BUILTIN_FORMATS,
    INSTRUCTION_CONTEXT_SYSTEM,
    REASONING_SYSTEMS,
    PromptFormat,
    PromptFormatError,
)

USER_J2 = """You are TradeBot, an analyst of regional trade. Use only the context; if the answer is not in it, say I don't know.

### INSTRUCTION:
{{str_instruction}}

### CONTEXT:
{{str_context}}

### RESPONSE:
{{str_answer}}"""


def test_alpaca_golden_prompt_and_training_text() -> None:
    fmt = PromptFormat.get("alpaca")
    prompt = fmt.render_prompt("Name the bloc.", "Mercosur was founded in 1991.")
    assert prompt == (
        f"{ALPACA_SYSTEM}\n\n### Instruction:\nName the bloc.\n\n### Input:\nMercosur was founded in 1991.\n\n### Response:\n"
    )
    record = {"instruction": "Name the bloc.", "input": "Mercosur was founded in 1991.", "output": "Mercosur."}
    assert fmt.render_training(record, eos_token="</s>") == prompt + "Mercosur.</s>"


def test_alpaca_context_adds_context_before_response() -> None:
    fmt = PromptFormat.get("alpaca-context")
    assert fmt.render_prompt("Q?", "CTX") == f"{ALPACA_CONTEXT_SYSTEM}\n\n### Instruction:\nQ?\n\n### Context:\nCTX\n\n### Response:\n"
    record = {"instruction": "Q?", "input": "extra", "context": "CTX", "output": "A."}
    assert fmt.render_training(record, eos_token="<eos>") == (
        f"{ALPACA_CONTEXT_SYSTEM}\n\n### Instruction:\nQ?\n\n### Input:\nextra\n\n### Context:\nCTX\n\n### Response:\nA.<eos>"
    )


def test_instruction_context_golden_and_dataset_aliases() -> None:
    fmt = PromptFormat.get("instruction-context")
    expected_prompt = f"{INSTRUCTION_CONTEXT_SYSTEM}\n\n### INSTRUCTION:\nQ?\n\n### CONTEXT:\nCTX\n\n### RESPONSE:\n"
    assert fmt.render_prompt("Q?", "CTX") == expected_prompt
    # Dataset files say instruction/context/answer; the template says str_instruction/...
    assert fmt.render_training({"instruction": "Q?", "context": "CTX", "answer": "A."}, eos_token="</s>") == expected_prompt + "A.</s>"


def test_reasoning_layout_chooses_system_by_flag_and_ends_after_reasoning_marker() -> None:
    fmt = PromptFormat.get("reasoning")
    prompt = fmt.render_prompt("Translate 'bloc'.", "Spanish", flag="translator")
    assert prompt == f"<s>{REASONING_SYSTEMS['translator']}\n<|instruction|>Translate 'bloc'.\n<|context|>Spanish\n<|reasoning|>"
    record = {"instruction": "I", "input": "C", "flag": "unknown-flag", "reasoning": "R", "output": "O"}
    assert fmt.render_training(record, eos_token="IGNORED") == (
        f"<s>{REASONING_SYSTEMS['assistant']}\n<|instruction|>I\n<|context|>C\n<|reasoning|>R\n<|response|>O<|endoftext|>"
    )
    for flag in ("logician", "creator"):
        assert fmt.render_prompt("I", "C", flag=flag).startswith(f"<s>{REASONING_SYSTEMS[flag]}\n")
    assert fmt.parse_answer("step one\n<|response|>The answer.") == ("The answer.", "step one")
    assert fmt.parse_answer("no marker here") == ("no marker here", None)


def test_chat_format_uses_the_tokenizers_template(smollm2_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    fmt = PromptFormat.get("chat")
    prompt = fmt.render_prompt("Q?", "CTX", system="SYS", tokenizer=tokenizer)
    assert prompt == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nContext:\nCTX\n\nQuestion: Q?<|im_end|>\n<|im_start|>assistant\n"
    )
    training = fmt.render_training({"instruction": "Q?", "input": "", "output": "A."}, system="SYS", tokenizer=tokenizer)
    assert training.startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>")
    with pytest.raises(PromptFormatError, match="needs a tokenizer"):
        fmt.render_prompt("Q?")


@pytest.mark.parametrize("name", sorted(set(BUILTIN_FORMATS) - {"chat"}))
def test_qa_template_maps_query_and_context(name: str) -> None:
    fmt = PromptFormat.get(name)
    template = fmt.qa_template()
    assert set(template.template_vars) == {"query_str", "context_str"}
    rendered = template.format(query_str="What limits trade?", context_str="Tariffs limit trade.")
    assert rendered == fmt.render_prompt("What limits trade?", "Tariffs limit trade.")


def test_user_j2_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tradebot.j2"
    path.write_text(USER_J2, encoding="utf-8")
    fmt = PromptFormat.from_j2(path)
    assert (fmt.name, fmt.query_var, fmt.context_var, fmt.answer_var) == ("tradebot", "str_instruction", "str_context", "str_answer")
    prompt = fmt.render_prompt("Q?", "CTX")
    # The user's text is used as-is, variables in, text out.
    assert prompt == USER_J2.replace("{{str_instruction}}", "Q?").replace("{{str_context}}", "CTX").split("{{str_answer}}")[0]
    fmt.save(tmp_path / "model")
    reloaded = PromptFormat.load(tmp_path / "model")
    assert reloaded == fmt
    assert reloaded.render_training({"instruction": "Q?", "context": "CTX", "answer": "A"}, eos_token="</s>") == prompt + "A</s>"


def test_j2_undefined_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "extra.j2"
    path.write_text("{{ persona }}\n### Q: {{ instruction }}\n### A: {{ answer }}", encoding="utf-8")
    fmt = PromptFormat.from_j2(path)
    with pytest.raises(PromptFormatError, match="persona"):
        fmt.render_training({"instruction": "Q", "answer": "A"})


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


def test_unknown_format_lists_valid_names() -> None:
    with pytest.raises(PromptFormatError) as err:
        PromptFormat.get("alpacca")
    for name in BUILTIN_FORMATS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"instruction": "Q", "input": "C"}, "record 7: missing field 'output'"),
        ({"instruction": "Q", "input": 3, "output": "A"}, "record 7: field 'input' must be a string, got int"),
        (["not", "an", "object"], "record 7: expected a JSON object"),
    ],
)
def test_check_record_names_file_record_and_field(record: object, message: str) -> None:
    with pytest.raises(PromptFormatError, match=message) as err:
        PromptFormat.get("alpaca").check_record(record, 7, "data/train.json")
    assert "data/train.json" in str(err.value)


def test_load_without_saved_format_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prompt_format"):
        PromptFormat.load(tmp_path)
