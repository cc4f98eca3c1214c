"""Structured outputs on every path: ``structured_predict`` and ``as_structured_llm`` answer with a valid object.

LlamaIndex answers ``llm.structured_predict(Model, prompt)`` for an LLM without function calling (ours) with an
``LLMTextCompletionProgram``: the prompt with the model's JSON schema appended, one ``complete`` (or ``chat``),
then ``PydanticOutputParser`` on the text. ``as_structured_llm(Model).complete/chat`` goes the same way. A model
trained on its own layout, and any small one, often answers with the schema itself or with prose, and the parse
fails. :class:`StructuredOutputLLM` keeps LlamaIndex's programs (so the prompt is what LlamaIndex builds, and our
:class:`~llama_unsloth.llms.layout.LayoutPrompts` puts it in the trained layout as for any other call) and adds
one generation setting to those calls only, :data:`JSON_SCHEMA_KWARG`, the output class's JSON schema:

* ``UnslothLLM`` constrains ``generate`` to it (:func:`generation_constraint`, lm-format-enforcer);
* ``ServedLLM`` sends it as the request's ``response_format`` (:func:`response_format`), which vLLM and
  llama.cpp's server decode with their own guided decoding.

Any other call carries no schema, so ordinary answers are unchanged.
"""

from __future__ import annotations

from typing import Any, AsyncGenerator, Dict, Generator, Optional, Sequence, Type

from llama_index.core.llms.custom import CustomLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.types import Model

# The generation setting carrying the JSON schema of one call (a key of complete()'s **kwargs and of gen_kwargs).
JSON_SCHEMA_KWARG = "json_schema"


def with_json_schema(output_cls: Type[Any], llm_kwargs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """``llm_kwargs`` plus the JSON schema of ``output_cls`` (a schema the caller passed wins)."""
    return {JSON_SCHEMA_KWARG: output_cls.model_json_schema(), **(llm_kwargs or {})}


def chat_prompt_args(llm: Any, prompt: Any, prompt_args: Dict[str, Any]) -> Dict[str, Any]:
    """``prompt_args`` for a structured-output program; a chat template renders through ``llm``'s layout hook.

    ``as_structured_llm(...).complete/chat`` wraps the messages in a ``ChatPromptTemplate``, and LlamaIndex's
    program formats it for a completion model with ``default_messages_to_prompt`` ("user: ...\nassistant: ")
    unless a ``messages_to_prompt`` is given: that text would land in the layout's instruction slot, role prefixes
    and all. With the LLM's own hook the conversation is rendered in the layout, as ``chat()`` renders it.
    """
    from llama_index.core.prompts import ChatPromptTemplate

    if isinstance(prompt, ChatPromptTemplate) and not llm.metadata.is_chat_model:
        return {"messages_to_prompt": llm.messages_to_prompt, **prompt_args}
    return prompt_args


def generation_constraint(kwargs: Dict[str, Any], tokenizer: Any, end_ids: Sequence[int]) -> Dict[str, Any]:
    """``generate`` kwargs with a JSON schema (if any) turned into a ``prefix_allowed_tokens_fn``.

    Args:
        kwargs: One call's generation settings, possibly holding :data:`JSON_SCHEMA_KWARG`.
        tokenizer: The model's tokenizer.
        end_ids: The ids that end an answer: allowed once the JSON is complete.

    Returns:
        ``kwargs`` unchanged without a schema; else a copy without the schema and with the constraint. ``generate``
        takes that hook, the fast path does not: it answers such a call through ``generate`` (one warning).
    """
    schema = kwargs.get(JSON_SCHEMA_KWARG)
    if schema is None:
        return kwargs
    from llama_unsloth.decoding import json_schema_allowed_tokens

    kwargs = {k: v for k, v in kwargs.items() if k != JSON_SCHEMA_KWARG}
    kwargs["prefix_allowed_tokens_fn"] = json_schema_allowed_tokens(tokenizer, schema, end_ids)
    return kwargs


def response_format(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The OpenAI-style ``response_format`` of a JSON schema (vLLM and llama.cpp take it on ``/v1/completions``)."""
    return {"type": "json_schema", "json_schema": {"name": str(schema.get("title") or "output"), "schema": schema}}


class StructuredOutputLLM(CustomLLM):
    """LlamaIndex's structured-output calls with generation constrained to the output class's JSON schema.

    The base of :class:`~llama_unsloth.llms.base.LayoutLLM`: each method is LlamaIndex's own, with the schema
    added to ``llm_kwargs`` (what LlamaIndex's program passes on to ``complete``/``chat``) and a chat template
    rendered in the layout (:func:`chat_prompt_args`).
    """

    def structured_predict(
        self,
        output_cls: Type[Model],
        prompt: PromptTemplate,
        llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Model:
        """Like LlamaIndex's ``structured_predict``; the answer is generated to ``output_cls``'s JSON schema."""
        kwargs, args = with_json_schema(output_cls, llm_kwargs), chat_prompt_args(self, prompt, prompt_args)
        return super().structured_predict(output_cls, prompt, kwargs, **args)

    async def astructured_predict(
        self,
        output_cls: Type[Model],
        prompt: PromptTemplate,
        llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Model:
        """Async :meth:`structured_predict`."""
        kwargs, args = with_json_schema(output_cls, llm_kwargs), chat_prompt_args(self, prompt, prompt_args)
        return await super().astructured_predict(output_cls, prompt, kwargs, **args)

    def stream_structured_predict(
        self,
        output_cls: Type[Model],
        prompt: PromptTemplate,
        llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> Generator[Any, None, None]:
        """Like LlamaIndex's ``stream_structured_predict`` (partial objects), generated to the JSON schema."""
        kwargs, args = with_json_schema(output_cls, llm_kwargs), chat_prompt_args(self, prompt, prompt_args)
        return super().stream_structured_predict(output_cls, prompt, kwargs, **args)

    async def astream_structured_predict(
        self,
        output_cls: Type[Model],
        prompt: PromptTemplate,
        llm_kwargs: Optional[Dict[str, Any]] = None,
        **prompt_args: Any,
    ) -> AsyncGenerator[Any, None]:
        """Async :meth:`stream_structured_predict`."""
        kwargs, args = with_json_schema(output_cls, llm_kwargs), chat_prompt_args(self, prompt, prompt_args)
        return await super().astream_structured_predict(output_cls, prompt, kwargs, **args)


__all__ = [
    "JSON_SCHEMA_KWARG",
    "StructuredOutputLLM",
    "chat_prompt_args",
    "generation_constraint",
    "response_format",
    "with_json_schema",
]
