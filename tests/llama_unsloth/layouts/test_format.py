"""PromptFormat: our users' own layouts verbatim (golden strings copied from the users' texts), records, the model folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_unsloth.layouts.format import FORMAT_FILE, PromptFormat, PromptFormatError
from tests.llama_unsloth.layouts.users_layouts import (
    ALPACA_DONT_KNOW,
    ALPACA_RAG,
    ANS,
    CTX,
    EXAMPLES,
    INSTRUCTION_CONTEXT_J2,
    SYSTEM_CREATOR,
    SYSTEM_TRANSLATOR,
    Q,
    phi3_text,
)


def test_users_alpaca_with_empty_context_section_trains_and_prompts_verbatim() -> None:
    fmt = PromptFormat.from_string(ALPACA_DONT_KNOW, fields=["instruction", "input", "output"])
    record = {"instruction": Q, "input": "", "output": ANS}
    # The training text is the whole string; the template writes its own </s>: no second EOS.
    for eos in ("</s>", "<|im_end|>"):
        assert fmt.render_training(record, eos_token=eos) == ALPACA_DONT_KNOW.format(Q, "", ANS)
    prompt = fmt.render_prompt(Q)
    assert prompt == ALPACA_DONT_KNOW.format(Q, "", "\x00").split("\x00")[0]
    assert prompt.endswith("### Context:\n\n\n### Response:\n")
    # Retrieved context goes where this layout has a slot for it: the input.
    assert fmt.render_prompt(Q, CTX) == ALPACA_DONT_KNOW.format(Q, CTX, "\x00").split("\x00")[0]
    for marker in ("### Instruction:", "### Input:", "### Context:", "### Response:", "</s>"):
        assert marker in fmt.stop


def test_users_rag_alpaca_keeps_empty_input_and_the_rule_after_the_context() -> None:
    fmt = PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"])
    assert fmt.render_prompt(Q, CTX) == ALPACA_RAG.format(Q, "", CTX)
    assert fmt.qa_template().format(query_str=Q, context_str=CTX) == ALPACA_RAG.format(Q, "", CTX)
    # No answer slot: training appends the answer and the EOS once.
    record = {"instruction": Q, "input": "", "context": CTX, "output": ANS}
    assert fmt.render_training(record, eos_token="</s>") == ALPACA_RAG.format(Q, "", CTX) + ANS + "</s>"
    assert fmt.render_training({**record, "output": ANS + "</s>"}, eos_token="</s>").count("</s>") == 1
    assert "### Response:" in fmt.stop


def test_users_instruction_context_j2_file_works_as_is() -> None:
    path = EXAMPLES / "QA_finetune_Instruction_Context_new.j2"
    assert path.read_text(encoding="utf-8") == INSTRUCTION_CONTEXT_J2
    fmt = PromptFormat.from_j2(path)
    expected = (
        INSTRUCTION_CONTEXT_J2.replace("{{str_instruction}}", Q)
        .replace("{{str_context}}", CTX)
        .replace("{{str_answer}}", ANS)
    )
    # Dataset records say instruction/context/answer; the template says str_instruction/...
    assert (
        fmt.render_training({"instruction": Q, "context": CTX, "answer": ANS}, eos_token="</s>") == expected + "</s>"
    )
    assert (
        fmt.render_training({"str_instruction": Q, "str_context": CTX, "str_answer": ANS}, eos_token="</s>")
        == expected + "</s>"
    )
    assert (
        fmt.render_prompt(Q, CTX)
        == INSTRUCTION_CONTEXT_J2.replace("{{str_instruction}}", Q)
        .replace("{{str_context}}", CTX)
        .split("{{str_answer}}")[0]
    )
    assert set(fmt.stop) >= {"### INSTRUCTION:", "### CONTEXT:", "### RESPONSE:"}


@pytest.mark.parametrize("flag", ["logician", "creator", "translator", "poet"])
def test_users_phi3_reasoning_j2_and_the_builtin_match_the_users_text(flag: str) -> None:
    record = {"instruction": Q, "input": CTX, "flag": flag, "reasoning": "R.", "output": ANS}
    for fmt in (PromptFormat.from_j2(EXAMPLES / "phi3_reasoning.j2"), PromptFormat.get("reasoning")):
        assert fmt.render_training(record, eos_token="<|im_end|>") == phi3_text(flag, Q, CTX, "R.", ANS)
        prompt = fmt.render_prompt(Q, CTX, flag=flag)
        assert prompt == phi3_text(flag, Q, CTX, "\x00", "").split("\x00")[0]
        assert prompt.endswith("<|reasoning|>")
        assert fmt.parse_answer("Think first.\n<|response|>" + ANS) == (ANS, "Think first.")
        assert "<|response|>" not in fmt.stop and "<|endoftext|>" in fmt.stop


def test_reasoning_record_without_flag_gets_the_assistant_message() -> None:
    record = {"instruction": Q, "input": "", "reasoning": "R", "output": ANS}
    assert PromptFormat.get("reasoning").render_training(record) == phi3_text("", Q, "", "R", ANS)
    assert PromptFormat.from_j2(EXAMPLES / "phi3_reasoning.j2").render_training(record) == phi3_text(
        "", Q, "", "R", ANS
    )


def test_users_example_files_are_the_users_texts() -> None:
    assert (EXAMPLES / "alpaca_dont_know.txt").read_text(encoding="utf-8") == ALPACA_DONT_KNOW
    assert (EXAMPLES / "alpaca_rag_inference.txt").read_text(encoding="utf-8") == ALPACA_RAG
    fmt = PromptFormat.get(str(EXAMPLES / "alpaca_rag_inference.txt"), fields=["instruction", "input", "context"])
    assert fmt.render_prompt("I", "C") == ALPACA_RAG.format("I", "", "C")


def test_named_python_format_and_jinja_with_input_and_context() -> None:
    named = PromptFormat.from_string("### Q:\n{instruction}\n### In:\n{input}\n### Ctx:\n{context}\n### A:\n{output}")
    assert named.render_prompt("q", "c") == "### Q:\nq\n### In:\n\n### Ctx:\nc\n### A:\n"
    # A .j2 with both {{input}} and {{context}} (their RAG alpaca) answers with the input left empty.
    jinja = PromptFormat.from_string("I: {{ instruction }}\nIn: {{ input }}\nC: {{ context }}\nR: {{ output }}")
    assert jinja.render_prompt("q", "c") == "I: q\nIn: \nC: c\nR: "
    assert jinja.qa_template().format(query_str="q", context_str="c") == "I: q\nIn: \nC: c\nR: "
    # Literal braces in a Python format string survive.
    braces = PromptFormat.from_string('JSON {{"a": 1}}\n{instruction}\n{output}')
    assert braces.render_training({"instruction": "q", "output": "a"}) == 'JSON {"a": 1}\nq\na'


def test_format_round_trips_through_the_model_folder(tmp_path: Path) -> None:
    fmt = PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"], name="rag")
    fmt.save(tmp_path / "model")
    reloaded = PromptFormat.load(tmp_path / "model")
    assert reloaded == fmt
    assert reloaded.render_prompt(Q, CTX) == ALPACA_RAG.format(Q, "", CTX)
    assert PromptFormat.get(str(tmp_path / "model")) == fmt


def test_template_with_an_unknown_variable_needs_it_in_records() -> None:
    fmt = PromptFormat.from_string("{{ persona }}\n### Q: {{ instruction }}\n### A: {{ answer }}")
    with pytest.raises(PromptFormatError, match="persona"):
        fmt.check_record({"instruction": "Q", "answer": "A"}, 1)
    with pytest.raises(PromptFormatError, match="persona"):
        fmt.render_training({"instruction": "Q", "answer": "A"})
    assert fmt.render_training({"instruction": "Q", "answer": "A", "persona": "P"}) == "P\n### Q: Q\n### A: A"


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


def test_layout_without_a_context_slot_still_gets_the_context_and_tokenizer_variables() -> None:
    fmt = PromptFormat.from_string("### Question:\n{instruction}\n\n### Answer:\n{output}")
    assert fmt.render_prompt("Q?", "Facts.") == "### Question:\nFacts.\n\nQ?\n\n### Answer:\n"
    j2 = PromptFormat.from_string("{{ bos_token }}Q: {{ instruction }}\nA: {{ answer }}{{ eos_token }}")
    assert j2.append_eos is False and j2.record_fields == ["answer", "instruction"]

    class Tok:
        bos_token, eos_token = "<s>", "</s>"

    assert (
        j2.render_training({"instruction": "q", "answer": "a"}, eos_token="</s>", tokenizer=Tok())
        == "<s>Q: q\nA: a</s>"
    )
    assert j2.render_prompt("q", tokenizer=Tok()) == "<s>Q: q\nA: "


def test_format_saved_before_stop_strings_were_derived_gets_them_on_load(tmp_path: Path) -> None:
    old = {
        "name": "users",
        "template": INSTRUCTION_CONTEXT_J2,
        "query_var": "str_instruction",
        "context_var": "str_context",
        "answer_var": "str_answer",
        "system": "",
        "systems_by_flag": {},
        "answer_marker": None,
        "append_eos": True,
        "stop": [],
        "record_fields": ["str_answer", "str_context", "str_instruction"],
    }
    (tmp_path / "prompt_format.json").write_text(json.dumps(old), encoding="utf-8")
    fmt = PromptFormat.load(tmp_path)
    assert "### RESPONSE:" in fmt.stop
    assert fmt.render_prompt(Q, CTX).endswith("### RESPONSE:\n")


def test_a_records_own_system_field_fills_a_system_slot() -> None:
    fmt = PromptFormat.from_string(
        "<s>{system}\n<|instruction|>{instruction}\n<|reasoning|>{reasoning}\n<|response|>{output}<|endoftext|>"
    )
    record = {"system": SYSTEM_CREATOR, "instruction": "I", "reasoning": "R", "output": "O"}
    assert (
        fmt.render_training(record)
        == f"<s>{SYSTEM_CREATOR}\n<|instruction|>I\n<|reasoning|>R\n<|response|>O<|endoftext|>"
    )
    assert (
        fmt.render_prompt("I", system=SYSTEM_TRANSLATOR) == f"<s>{SYSTEM_TRANSLATOR}\n<|instruction|>I\n<|reasoning|>"
    )
    assert fmt.answer_marker == "<|response|>" and fmt.append_eos is False


def test_saved_format_keeps_the_prompt_format_json_layout(tmp_path: Path) -> None:
    # Model folders written before the layouts split must load, and new ones must load in older versions.
    path = PromptFormat.get("reasoning").save(tmp_path)
    assert path == tmp_path / FORMAT_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    assert list(data) == [
        "name",
        "template",
        "query_var",
        "context_var",
        "answer_var",
        "system",
        "systems_by_flag",
        "answer_marker",
        "append_eos",
        "stop",
        "record_fields",
        "input_var",
        "flag_var",
        "output_var",
        "optional_fields",
    ]
    assert data["systems_by_flag"]["creator"] == SYSTEM_CREATOR
    assert data["stop"] == ["<|endoftext|>", "<|instruction|>", "<|context|>"]
