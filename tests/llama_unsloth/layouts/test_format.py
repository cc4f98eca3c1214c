"""PromptFormat: our users' own layouts verbatim (golden strings copied from the users' texts), built-ins, records, tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llama_unsloth.layouts.format import (
    BUILTIN_FORMATS,
    PromptFormat,
    PromptFormatError,
    encode_prompt,
    encode_training,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "templates"

# ---- The users' layouts, verbatim (typos, hyphenation, trailing spaces included), as the users wrote them.
# 1. Mistral-Nemo fine-tune: alpaca_prompt.format(instruction, input, output); writes its own <s> and </s>
#    (the Python string ends at </s>).
# 2. The RAG variant used at inference: alpaca_prompt.format(instruction, input, context); ends where the answer begins.
# 4. QA_finetune_Instruction_Context_new.j2 (ends with two newlines after {{str_answer}}).
ALPACA_DONT_KNOW = '<s>Below is an instruction that describes a task, paired with an input that pro-vides further context. Write a response that appropriately completes the request. If you have been provided with the context and a question, try to find out the answer to the question only using the context information. If the answer to the question is not found within the context, return "I dont know" as the response.\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Context:\n\n\n### Response:\n{}</s>'
ALPACA_RAG = "<s>You are an excellent AI assistant. Below is an instruction that describes a task, paired with an input that provides further information. The instruction and input are question provided by your user. Write a response appropriately your user's question. \n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Context:\n{}\n\nIf text has been provided in context field (text after '### Context:'), you should refer the information to response. If the answer to the question is not found within the context, you can return \"I dont know\" as the response.\n\n### Response:\n"
INSTRUCTION_CONTEXT_J2 = 'You are a brilliant Iranian professor of political science. Below is an instruction (texts after "### IN-STRUCTION:") that describes a task. The instruction is question provided by your user. Write a re-sponse appropriately your user\'s question. Because very useful texts have been provided in a context (texts after "### CONTEXT:") , you should write your own opinion by using context information as much as possible. If any hint of the answer to the question were not found within the given context, you can return "I don\'t know" as the response. The length of answer should be more than 400 and less than 500 words.\n\n### INSTRUCTION:\n{{str_instruction}}\n\n### CONTEXT:\n{{str_context}}\n\n### RESPONSE:\n{{str_answer}}\n\n'
# 3. The Phi-3 reasoning layout, system message by the record's flag.
SYSTEM_LOGICIAN = 'You are an excellent logician and are instructing users on "thinking proce-dures for providing better quality reasoning to user-provided questions.". '
SYSTEM_CREATOR = "You are creator who create amazing content with your free ideas. You attract readers with your beautiful writing such as novel or advertisement. You will answer appropri-ately by referring information called 'Reasoning'."
SYSTEM_TRANSLATOR = "You are translator who is fluent in multiple languages.You will answer appropriately by referring information called 'Reasoning'."
SYSTEM_ASSISTANT = "You are an AI assistant who is good at providing answers in multiple languages. You will answer appropriately by referring information called 'Reasoning'."
SYSTEMS = {
    "logician": SYSTEM_LOGICIAN,
    "creator": SYSTEM_CREATOR,
    "translator": SYSTEM_TRANSLATOR,
    "poet": SYSTEM_ASSISTANT,
}


def phi3_text(flag: str, instruction: str, input: str, reasoning: str, output: str) -> str:
    system = SYSTEMS.get(flag, SYSTEM_ASSISTANT)
    return f"<s>{system}\n<|instruction|>{instruction}\n<|context|>{input}\n<|reasoning|>{reasoning}\n<|response|>{output}<|endoftext|>"


Q, CTX, ANS = "What limits trade inside the bloc?", "Rules of origin limit trade.\nTariffs too.", "Rules of origin."


# ------------------------------------------------------------------------------------------------ user layouts
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


def test_positional_placeholders_need_fields_and_unknown_roles_are_named() -> None:
    with pytest.raises(PromptFormatError, match="fields="):
        PromptFormat.from_string(ALPACA_RAG)
    with pytest.raises(PromptFormatError, match="Unknown field"):
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "kontext"])
    with pytest.raises(PromptFormatError, match="more positional placeholders"):
        PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input"])


# ------------------------------------------------------------------------------------------------ built-ins
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


@pytest.mark.parametrize("name", sorted(set(BUILTIN_FORMATS) - {"chat"}))
def test_qa_template_maps_query_and_context(name: str) -> None:
    fmt = PromptFormat.get(name)
    template = fmt.qa_template()
    assert set(template.template_vars) == {"query_str", "context_str"}
    rendered = template.format(query_str="What limits trade?", context_str="Tariffs limit trade.")
    assert rendered == fmt.render_prompt("What limits trade?", "Tariffs limit trade.")


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


# ------------------------------------------------------------------------------------------------ token ids
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
    import json

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


def test_python_format_with_literal_jinja_like_text_is_still_python() -> None:
    fmt = PromptFormat.from_string("Keep {{placeholder}} as text.\n{instruction}\n{output}")
    assert fmt.render_training({"instruction": "q", "output": "a"}) == "Keep {placeholder} as text.\nq\na"
    with pytest.raises(PromptFormatError, match="not a plain name"):
        PromptFormat.from_string("{d[instruction]} {output}")


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
