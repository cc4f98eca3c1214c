"""Structured outputs with the real SmolLM2-135M: a valid object in-process, on the fast path and over a server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from llama_index.core import PromptTemplate
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.output_parsers import PydanticOutputParser
from pydantic import BaseModel

from llama_unsloth import UnslothLLM
from llama_unsloth.llms.served import ServedLLM
from tests.llama_unsloth.openai_standin import OpenAIStandIn

SENTENCE = (
    "Mercosur, the Southern Common Market, was founded in 1991 by Argentina, Brazil, Paraguay and Uruguay "
    "with the Treaty of Asuncion."
)
TEMPLATE = "Extract the trade bloc and the year it was founded from this text: {text}"
QUESTION = "Mercosur was founded in 1991. Name the bloc and the year it was founded."
PLAIN = "What is the capital of France?"


class Bloc(BaseModel):
    """A trade bloc."""

    name: str
    founded: int


def _prompt() -> PromptTemplate:
    # A new one each call: LlamaIndex's program sets its output parser on the template it is given.
    return PromptTemplate(TEMPLATE)


def _asked(question: str = TEMPLATE.format(text=SENTENCE)) -> str:
    """The text LlamaIndex's structured-output program asks: the question, then the JSON schema it appends."""
    return PydanticOutputParser(Bloc).format(question)


@pytest.fixture(scope="module")
def llm(smollm2_path: Path) -> UnslothLLM:
    return UnslothLLM(model_name=str(smollm2_path), load_in_4bit=False, max_new_tokens=48, set_global_tokenizer=False)


@pytest.fixture(scope="module")
def standin(smollm2_path: Path) -> Iterator[OpenAIStandIn]:
    server = OpenAIStandIn(str(smollm2_path), served_name="smol").start()
    yield server
    server.stop()


@pytest.fixture
def generate_kwargs(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """The keyword arguments of every generate call UnslothLLM makes in the test."""
    import llama_unsloth.llms.unsloth as unsloth

    calls: List[Dict[str, Any]] = []
    real = unsloth.generate

    def record(model: Any, tokenizer: Any, input_ids: Any, kwargs: Dict[str, Any], *args: Any, **kw: Any) -> Any:
        calls.append(dict(kwargs))
        return real(model, tokenizer, input_ids, kwargs, *args, **kw)

    monkeypatch.setattr(unsloth, "generate", record)
    return calls


@pytest.mark.slow
def test_structured_predict_in_process_is_valid_in_the_layout_and_does_not_leak(
    llm: UnslothLLM, generated: List[str], generate_kwargs: List[Dict[str, Any]]
) -> None:
    plain = llm.complete(PLAIN).text
    bloc = llm.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert isinstance(bloc, Bloc) and bloc.founded == 1991
    # The prompt is the trained layout's (the chat template here), with LlamaIndex's question and schema inside.
    assert generated[-1] == llm.format_prompt(_asked())
    assert "prefix_allowed_tokens_fn" in generate_kwargs[-1] and "json_schema" not in generate_kwargs[-1]
    # An ordinary call afterwards is unconstrained and answers as before.
    assert llm.complete(PLAIN).text == plain == "The capital of France is Paris."
    assert "prefix_allowed_tokens_fn" not in generate_kwargs[-1]


@pytest.mark.slow
def test_as_structured_llm_complete_and_chat_in_process(llm: UnslothLLM, generated: List[str]) -> None:
    structured = llm.as_structured_llm(Bloc)
    response = structured.complete(QUESTION)
    assert isinstance(response.raw, Bloc) and Bloc.model_validate_json(response.text) == response.raw
    assert generated[-1] == llm.messages_to_prompt_text([ChatMessage(role="user", content=_asked(QUESTION))])
    chat = structured.chat([ChatMessage(role="user", content=QUESTION)])
    assert isinstance(chat.raw, Bloc) and Bloc.model_validate_json(chat.message.content or "") == chat.raw


@pytest.mark.slow
def test_another_layout_keeps_its_prompt(llm: UnslothLLM, generated: List[str]) -> None:
    alpaca = UnslothLLM(
        model=llm.model, tokenizer=llm.tokenizer, prompt_format="alpaca", max_new_tokens=48, set_global_tokenizer=False
    )
    bloc = alpaca.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert isinstance(bloc, Bloc)
    assert generated[-1].startswith("Below is an instruction") and "### Instruction:\n" in generated[-1]
    assert generated[-1] == alpaca.format_prompt(_asked())


@pytest.mark.slow
def test_the_fast_path_leaves_constrained_calls_to_generate(llm: UnslothLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llama_unsloth.once._SEEN", set())
    fast = UnslothLLM(
        model=copy.deepcopy(llm.model),
        tokenizer=llm.tokenizer,
        fast_decode=True,
        fast_decode_mode="eager",
        max_new_tokens=48,
        set_global_tokenizer=False,
    )
    assert fast.fast_decoder is not None
    with pytest.warns(RuntimeWarning, match="prefix_allowed_tokens_fn are not implemented by the fast decode loop"):
        bloc = fast.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert bloc == llm.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert fast.complete(PLAIN).text == "The capital of France is Paris."
    assert fast.fast_decode_stats()["fallback_calls"] == 1 and fast.fast_decode_stats()["fast_calls"] >= 1


@pytest.mark.slow
def test_served_sends_the_schema_as_response_format(
    llm: UnslothLLM, standin: OpenAIStandIn, generated: List[str]
) -> None:
    served = ServedLLM(tokenizer=llm.tokenizer, api_base=standin.url, served_model="smol", max_new_tokens=48)
    bloc = served.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert isinstance(bloc, Bloc) and bloc == llm.structured_predict(Bloc, _prompt(), text=SENTENCE)
    assert standin.bodies[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Bloc", "schema": Bloc.model_json_schema()},
    }
    assert standin.prompts[-1] == generated[-1] == llm.format_prompt(_asked())
    response = served.as_structured_llm(Bloc).complete(QUESTION)
    assert isinstance(response.raw, Bloc) and json.loads(response.text) == response.raw.model_dump()
    assert served.complete(PLAIN).text == "The capital of France is Paris."
    assert "response_format" not in standin.bodies[-1]


def test_a_missing_library_is_one_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_unsloth import import_utils
    from llama_unsloth.llms.structured import generation_constraint

    monkeypatch.setattr(import_utils, "_installed", lambda module: module != "lmformatenforcer")
    with pytest.raises(ImportError, match='pip install "lm-format-enforcer'):
        generation_constraint({"json_schema": Bloc.model_json_schema()}, tokenizer=None, end_ids=[2])
    assert generation_constraint({"max_new_tokens": 4}, tokenizer=None, end_ids=[2]) == {"max_new_tokens": 4}
