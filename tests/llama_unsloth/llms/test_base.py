"""llama_unsloth.llms.base: a new LLM sibling needs only its two generation methods to get every surface."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterator, List

from llama_index.core.base.llms.types import ChatMessage, CompletionResponse

from llama_unsloth.llms.base import LayoutLLM

ANSWER = "The Treaty of Asuncion created Mercosur."


class ScriptedLLM(LayoutLLM):
    """Answers every prompt with ANSWER followed by the layout's end marker (and records what it was sent)."""

    def __init__(self, tokenizer: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._backend = "scripted"
        self._adopt_tokenizer(tokenizer)
        self._sent: List[str] = []

    def _answer_batch(
        self, texts: List[str], encoded: List[List[int]], gen_kwargs: Dict[str, Any], batch_size: int
    ) -> List[CompletionResponse]:
        self._sent.extend(texts)
        generated = ANSWER + self._tokenizer.eos_token + " trailing text"
        return [self._response(t, generated, len(ids), 9, 0.0) for t, ids in zip(texts, encoded)]

    def _answer_stream(self, text: str, ids: List[int], gen_kwargs: Dict[str, Any]) -> Iterator[CompletionResponse]:
        self._sent.append(text)
        state = {"generated": "", "shown": ""}
        # As tokenizers decode: each word with its leading space.
        words = ANSWER.split()
        pieces = [words[0], *(" " + w for w in words[1:]), self._tokenizer.eos_token, "more"]
        yield from self._growing_answer(pieces, state)
        yield self._final_streamed(text, state, len(ids), 0.0)


def test_every_surface_prompts_in_the_layout_and_cleans_the_answer(tiny_llm: Any) -> None:
    llm = ScriptedLLM(tiny_llm.tokenizer, prompt_format="alpaca-context", max_new_tokens=16)
    question = "Which treaty created Mercosur?"
    expected_prompt = llm.format_prompt(question)
    assert llm.complete(question).text == ANSWER
    assert llm._sent[-1] == expected_prompt
    streamed = list(llm.stream_complete(question))
    assert streamed[-1].text == ANSWER and "".join(r.delta or "" for r in streamed) == ANSWER
    assert llm.chat([ChatMessage(role="user", content=question)]).message.content == ANSWER
    assert llm._sent[-1] == expected_prompt  # a one-message chat is the same request
    assert asyncio.run(llm.acomplete(question)).text == ANSWER
    assert llm.complete(question).raw["usage"]["prompt_tokens"] == len(llm.prompt_token_ids(expected_prompt))
    assert llm.backend_name == "scripted" and llm.metadata.context_window == llm.max_seq_length


def test_a_query_engine_over_the_sibling_uses_the_layout(tiny_llm: Any) -> None:
    from llama_index.core import Document, SummaryIndex

    llm = ScriptedLLM(tiny_llm.tokenizer, prompt_format="alpaca-context", max_new_tokens=16)
    index = SummaryIndex.from_documents([Document(text="Mercosur was created by the Treaty of Asuncion in 1991.")])
    answer = index.as_query_engine(llm=llm).query("Which treaty created Mercosur?")
    assert str(answer) == ANSWER
    # LlamaIndex's own QA prompt became the same request in the layout: question and context in their slots.
    assert llm._sent[-1] == llm.format_prompt(
        "Which treaty created Mercosur?", "Mercosur was created by the Treaty of Asuncion in 1991."
    )
