"""The layout as a chat template: ``apply_chat_template`` gives ``render_prompt``'s text and ``encode_prompt``'s ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

from benchmarks.architectures import family_tokenizer
from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts import CONTEXT_ROLE, PromptFormat, encode_prompt
from llama_unsloth.layouts.chat_template import MARKER, as_transformers_jinja, tokenizer_adds_bos
from tests.llama_unsloth.layouts.users_layouts import (
    ALPACA_DONT_KNOW,
    ALPACA_RAG,
    CTX,
    EXAMPLES,
    INSTRUCTION_CONTEXT_J2,
    SYSTEM_LOGICIAN,
    Q,
)

SYSTEM = "You answer in one sentence."
HISTORY = [("user", "Which bloc is it?"), ("assistant", "Mercosur.")]
# A user's own .j2 with an {% if %} on its own line: transformers' trim_blocks/lstrip_blocks must not change it.
OWN_J2 = "{{ system_prompt }}\n  {% if str_context %}\nContext: {{ str_context }}\n  {% endif %}\nQ: {{ question }}\nA: {{ answer }}"
OWN_FORMAT_STRING = "Question: {question}\nNotes: {context}\nAnswer: {answer}"


def _layouts(tmp_path: Path) -> Dict[str, PromptFormat]:
    j2 = tmp_path / "own.j2"
    j2.write_text(OWN_J2, encoding="utf-8")
    layouts = {
        name: PromptFormat.get(name) for name in ("alpaca", "alpaca-context", "instruction-context", "reasoning")
    }
    layouts.update(
        {
            "users-alpaca-dont-know": PromptFormat.from_string(
                ALPACA_DONT_KNOW, fields=["instruction", "input", "output"]
            ),
            "users-alpaca-rag": PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"]),
            "users-phi3-reasoning": PromptFormat.from_j2(EXAMPLES / "phi3_reasoning.j2"),
            "users-instruction-context": PromptFormat.from_j2(EXAMPLES / "QA_finetune_Instruction_Context_new.j2"),
            "own-j2": PromptFormat.from_j2(j2, system="Be exact."),
            "own-format-string": PromptFormat.from_string(OWN_FORMAT_STRING, name="own"),
        }
    )
    return layouts


LAYOUT_NAMES = [
    "alpaca",
    "alpaca-context",
    "instruction-context",
    "reasoning",
    "users-alpaca-dont-know",
    "users-alpaca-rag",
    "users-phi3-reasoning",
    "users-instruction-context",
    "own-j2",
    "own-format-string",
]
# (system, context, history) of each conversation checked.
CASES: Dict[str, Tuple[Optional[str], str, Sequence[Tuple[str, str]]]] = {
    "question": (None, "", ()),
    "system": (SYSTEM, "", ()),
    "context": (None, CTX, ()),
    "system-context": (SYSTEM, CTX, ()),
    "history": (None, "", HISTORY),
    "all": (SYSTEM, CTX, HISTORY),
}


@pytest.fixture(scope="module")
def tokenizers(smollm2_path: Path) -> Dict[str, Any]:
    from transformers import AutoTokenizer

    return {
        "smollm2": AutoTokenizer.from_pretrained(smollm2_path),  # adds no BOS
        "mistral-nemo-12b": family_tokenizer("mistral-nemo-12b", smollm2_path, vocab_size=4096),  # adds <s>
        "llama3-8b": family_tokenizer("llama3-8b", smollm2_path, vocab_size=4096),  # adds <|begin_of_text|>
    }


def _messages(
    question: str, system: Optional[str], context: str, history: Sequence[Tuple[str, str]]
) -> List[Dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    if context:
        messages.append({"role": CONTEXT_ROLE, "content": context})
    messages += [{"role": role, "content": text} for role, text in history]
    return [*messages, {"role": "user", "content": question}]


def _apply(tokenizer: Any, template: str, messages: List[Dict[str, str]], tokenize: bool, **kwargs: Any) -> Any:
    out = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=tokenize, add_generation_prompt=True, **kwargs
    )
    return list(out["input_ids"]) if tokenize and isinstance(out, Mapping) else out


@pytest.mark.parametrize("tokenizer_name", ["smollm2", "mistral-nemo-12b", "llama3-8b"])
@pytest.mark.parametrize("layout_name", LAYOUT_NAMES)
def test_apply_chat_template_is_the_layouts_prompt_byte_for_byte_and_token_for_token(
    tmp_path: Path, tokenizers: Dict[str, Any], layout_name: str, tokenizer_name: str
) -> None:
    tokenizer = tokenizers[tokenizer_name]
    fmt = _layouts(tmp_path)[layout_name]
    template = fmt.to_chat_template(tokenizer)
    assert template is not None and template.startswith(MARKER)
    adds_bos = tokenizer_adds_bos(tokenizer)
    assert adds_bos == (tokenizer_name != "smollm2")
    for case, (system, context, history) in CASES.items():
        prompt = fmt.render_prompt(Q, context, system=system, history=history, tokenizer=tokenizer)
        messages = _messages(Q, system, context, history)
        text = _apply(tokenizer, template, messages, tokenize=False)
        # The template writes the BOS exactly where encode_prompt adds one: else the text is render_prompt's.
        bos = tokenizer.bos_token if adds_bos and not prompt.startswith(tokenizer.bos_token) else ""
        assert text == bos + prompt, (layout_name, case)
        assert _apply(tokenizer, template, messages, tokenize=True) == encode_prompt(tokenizer, prompt), (
            layout_name,
            case,
        )
    if tokenizer_name == "smollm2":  # a tokenizer that adds no BOS: the very text render_prompt returns
        assert _apply(tokenizer, template, _messages(Q, SYSTEM, CTX, HISTORY), tokenize=False) == fmt.render_prompt(
            Q, CTX, system=SYSTEM, history=HISTORY, tokenizer=tokenizer
        )


def test_the_users_layouts_render_their_verbatim_text(tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers["smollm2"]
    rag = PromptFormat.from_string(ALPACA_RAG, fields=["instruction", "input", "context"])
    text = _apply(tokenizer, rag.to_chat_template(tokenizer), _messages(Q, None, CTX, ()), tokenize=False)
    assert text == ALPACA_RAG.format(Q, "", CTX)
    ic = PromptFormat.from_j2(EXAMPLES / "QA_finetune_Instruction_Context_new.j2")
    text = _apply(tokenizer, ic.to_chat_template(tokenizer), _messages(Q, None, CTX, ()), tokenize=False)
    assert text == INSTRUCTION_CONTEXT_J2.split("{{str_answer}}")[0].replace("{{str_instruction}}", Q).replace(
        "{{str_context}}", CTX
    )


def test_the_flag_template_argument_chooses_the_reasoning_system(tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers["smollm2"]
    for fmt in (PromptFormat.get("reasoning"), PromptFormat.from_j2(EXAMPLES / "phi3_reasoning.j2")):
        template = fmt.to_chat_template(tokenizer)
        text = _apply(tokenizer, template, _messages(Q, None, CTX, ()), tokenize=False, flag="logician")
        assert text == f"<s>{SYSTEM_LOGICIAN}\n<|instruction|>{Q}\n<|context|>{CTX}\n<|reasoning|>"
        assert text == fmt.render_prompt(Q, CTX, flag="logician", tokenizer=tokenizer)


def test_documents_and_several_context_messages_fill_the_context_slot(tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers["smollm2"]
    fmt = PromptFormat.get("alpaca-context")
    template = fmt.to_chat_template(tokenizer)
    expected = fmt.render_prompt(Q, "one\n\ntwo", tokenizer=tokenizer)
    user = [{"role": "user", "content": Q}]
    assert (
        _apply(tokenizer, template, user, tokenize=False, documents=[{"title": "a", "text": "one"}, {"text": "two"}])
        == expected
    )
    two = [{"role": CONTEXT_ROLE, "content": "one"}, {"role": CONTEXT_ROLE, "content": "two"}, *user]
    assert _apply(tokenizer, template, two, tokenize=False) == expected
    # OpenAI-style content parts are read as their text.
    parts = [{"role": "user", "content": [{"type": "text", "text": Q}]}]
    assert _apply(tokenizer, template, parts, tokenize=False) == fmt.render_prompt(Q, tokenizer=tokenizer)


def test_a_final_assistant_message_is_continued(tokenizers: Dict[str, Any]) -> None:
    tokenizer = tokenizers["smollm2"]
    fmt = PromptFormat.get("reasoning")
    messages = [*_messages(Q, None, CTX, ()), {"role": "assistant", "content": "Step one"}]
    text = tokenizer.apply_chat_template(
        messages, chat_template=fmt.to_chat_template(tokenizer), tokenize=False, continue_final_message=True
    )
    assert text == fmt.render_prompt(Q, CTX, tokenizer=tokenizer) + "Step one"


def test_the_chat_layout_keeps_the_tokenizers_own_template(tokenizers: Dict[str, Any]) -> None:
    assert PromptFormat.get("chat").to_chat_template(tokenizers["smollm2"]) is None


def test_without_a_tokenizer_no_bos_is_written() -> None:
    fmt = PromptFormat.get("alpaca")
    assert "bos_token" not in fmt.to_chat_template()
    assert "bos_token" in fmt.to_chat_template(add_bos=True)


def test_user_block_tags_are_kept_from_transformers_whitespace_rules() -> None:
    text = "{% if a %}\n  x{%- endif %}{# c #}{% raw %}{% x %}{% endraw %}"
    assert as_transformers_jinja(text) == "{%+ if a +%}\n  x{%- endif +%}{#+ c +#}{%+ raw %}{% x %}{%+ endraw +%}"


def test_a_layout_the_chat_template_cannot_render_is_refused() -> None:
    fmt = PromptFormat.get("alpaca")
    fmt.template = fmt.template.replace("{{ output }}", "{{ output | lower }}")  # the answer slot is no plain slot
    with pytest.raises(PromptFormatError, match="cannot be written as a chat template"):
        fmt.to_chat_template()


# ---------------------------------------------------------------------------------------------- LlamaIndex chat engines
def _capturing_llm() -> Any:
    """A chat-model LLM recording the messages it is sent: what OpenAILike(is_chat_model=True) puts on the wire."""
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, LLMMetadata
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

    class Capturing(CustomLLM):
        seen: List[Any] = []

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(is_chat_model=True)

        @llm_chat_callback()
        def chat(self, messages: Sequence[Any], **kwargs: Any) -> Any:
            self.seen.append([{"role": m.role.value, "content": m.content} for m in messages])
            return ChatResponse(message=ChatMessage(role="assistant", content="Rules of origin."))

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            return CompletionResponse(text="What limits trade?")

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            raise NotImplementedError

    return Capturing(seen=[])


def _retriever() -> Any:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class Fixed(BaseRetriever):
        def _retrieve(self, query_bundle: Any) -> List[Any]:
            return [NodeWithScore(node=TextNode(text=CTX), score=1.0)]

    return Fixed()


@pytest.mark.parametrize("engine_kind", ["context", "condense_plus_context"])
@pytest.mark.parametrize("system_prompt", [None, SYSTEM])
def test_llamaindex_context_chat_engines_messages_fill_the_layout(
    tmp_path: Path, tokenizers: Dict[str, Any], engine_kind: str, system_prompt: Optional[str]
) -> None:
    from llama_index.core.chat_engine import CondensePlusContextChatEngine, ContextChatEngine

    tokenizer = tokenizers["mistral-nemo-12b"]
    llm = _capturing_llm()
    engine_class = ContextChatEngine if engine_kind == "context" else CondensePlusContextChatEngine
    engine = engine_class.from_defaults(retriever=_retriever(), llm=llm, system_prompt=system_prompt)
    engine.chat(Q)
    engine.chat("And tariffs?")
    for layout_name in ("alpaca-context", "users-instruction-context", "alpaca"):
        fmt = _layouts(tmp_path)[layout_name]
        template = fmt.to_chat_template(tokenizer)
        for messages in llm.seen:
            *history, last = [m for m in messages if m["role"] != "system"]
            prompt = fmt.render_prompt(
                last["content"],
                CTX,
                system=system_prompt,
                history=[(m["role"], m["content"]) for m in history],
                tokenizer=tokenizer,
            )
            text = _apply(tokenizer, template, messages, tokenize=False)
            assert text == tokenizer.bos_token + prompt, (layout_name, messages)
            assert "Use the context information" not in text and "friendly conversation" not in text
            assert _apply(tokenizer, template, messages, tokenize=True) == encode_prompt(tokenizer, prompt)


def test_the_refine_message_of_the_context_engine_becomes_the_layouts_refine_request(
    tokenizers: Dict[str, Any],
) -> None:
    from llama_index.core.chat_engine import context

    from llama_unsloth.layouts import REFINE_INSTRUCTION

    tokenizer = tokenizers["smollm2"]
    fmt = PromptFormat.get("alpaca-context")
    system = context.DEFAULT_REFINE_TEMPLATE.format(context_msg=CTX, existing_answer="Tariffs.") + SYSTEM
    messages = [{"role": "system", "content": system}, {"role": "user", "content": Q}]
    instruction = REFINE_INSTRUCTION.format(query_str=Q, existing_answer="Tariffs.")
    expected = fmt.render_prompt(instruction, CTX, system=SYSTEM, tokenizer=tokenizer)
    assert _apply(tokenizer, fmt.to_chat_template(tokenizer), messages, tokenize=False) == expected
