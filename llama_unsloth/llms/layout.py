"""Every LlamaIndex prompt in the trained layout: what makes ``Settings.llm = UnslothLLM(...)`` zero-config.

LlamaIndex builds its prompts from its own templates ("Context information is below ... Answer:"),
from chat messages ("system: ... user: ..."), or from a user's ``PromptTemplate``. A model fine-tuned
on one layout answers worse in any other, so :class:`LayoutPrompts` (used by every
:class:`~llama_unsloth.llms.base.LayoutLLM`) routes all of them through the model's
:class:`~llama_unsloth.layouts.PromptFormat`:

* LlamaIndex's default QA, refine, tree-summarize, summary, simple-input and condense-question prompts
  (and the context / condense-plus-context chat engines' system prompts) are recognised by their text
  and replaced by the same request in the layout: the question goes into the instruction slot, the
  retrieved text into the context slot, the conversation into the instruction before the question.
* Templates built by ``llm.qa_template()`` & co. are already in the layout and are sent as they are.
* Any other template (a user's own, ``llm.predict(PromptTemplate(...))``) is formatted as given and
  then placed in the layout's instruction slot (LlamaIndex's ``completion_to_prompt`` convention),
  unless the text already is a prompt in the layout.
* When LlamaIndex packed more context than fits the model's window (it counts with its global
  tokenizer, tiktoken by default, not the model's), the context is split with the model's own
  tokenizer and answered in several calls, the later ones refining the answer, so nothing is dropped
  (:func:`llama_unsloth.llms.window.context_pieces`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from llama_unsloth.layouts import (
    CONDENSE_INSTRUCTION,
    LAYOUT_METADATA_KEY,
    REFINE_INSTRUCTION,
    SUMMARY_INSTRUCTION,
    PromptFormat,
)

# What each kind of LlamaIndex prompt asks, by its variables.
_KINDS: Dict[frozenset, str] = {
    frozenset({"context_str", "query_str"}): "qa",
    frozenset({"query_str", "existing_answer", "context_msg"}): "refine",
    frozenset({"context_str"}): "summary",
    frozenset({"chat_history", "question"}): "condense",
    frozenset({"query_str"}): "simple",
}
_CONTEXT_VAR = {"qa": "context_str", "refine": "context_msg", "summary": "context_str", "condense": "chat_history"}


def _key(prompt: Any) -> Optional[str]:
    from llama_index.core.prompts import ChatPromptTemplate, PromptTemplate

    if isinstance(prompt, PromptTemplate):
        return prompt.template
    if isinstance(prompt, ChatPromptTemplate):
        return "\x1e".join(f"{m.role.value}:{m.content}" for m in prompt.message_templates)
    return None


@lru_cache(maxsize=1)
def _defaults() -> Tuple[Dict[str, str], List[Tuple[str, str]], List[Tuple[re.Pattern[str], str, List[str]]]]:
    """LlamaIndex's own prompts: template key -> kind; chat-engine context texts; regexes of plain texts."""
    from llama_index.core.chat_engine import condense_plus_context, condense_question, context
    from llama_index.core.prompts import (
        BasePromptTemplate,
        SelectorPromptTemplate,
        chat_prompts,
        default_prompt_selectors,
        default_prompts,
    )

    by_key: Dict[str, str] = {}
    texts: List[str] = []

    def add(prompt: Any) -> None:
        if isinstance(prompt, SelectorPromptTemplate):
            add(prompt.default_template)
            for _, conditional in prompt.conditionals or []:
                add(conditional)
            return
        kind = _KINDS.get(frozenset(prompt.template_vars))
        key = _key(prompt)
        if kind and key:
            by_key[key] = kind
            if hasattr(prompt, "template"):
                texts.append(prompt.template)

    for module in (default_prompts, chat_prompts, default_prompt_selectors, condense_question):
        for value in vars(module).values():
            if isinstance(value, BasePromptTemplate):
                add(value)
    chat_contexts = [
        (context.DEFAULT_CONTEXT_TEMPLATE, "qa"),
        (context.DEFAULT_REFINE_TEMPLATE, "refine"),
        (condense_plus_context.DEFAULT_CONTEXT_PROMPT_TEMPLATE, "qa"),
        (condense_plus_context.DEFAULT_CONTEXT_REFINE_PROMPT_TEMPLATE, "refine"),
    ]
    # Plain texts LlamaIndex formats itself and passes to complete() (condense-plus-context's condense step).
    texts.append(condense_plus_context.DEFAULT_CONDENSE_PROMPT_TEMPLATE)
    patterns = []
    for text in dict.fromkeys(texts):
        names = re.findall(r"\{([a-zA-Z_]+)\}", text)
        kind = _KINDS.get(frozenset(names))
        if not kind or kind == "simple":  # "{query_str}" alone would match any text
            continue
        parts = re.split(r"\{([a-zA-Z_]+)\}", text)
        # Lazy groups and no end anchor (unless the text ends with a variable): text appended after a default
        # prompt (structured output's JSON schema) is kept by the caller.
        regex = "".join(f"(?P<{part}>.*?)" if i % 2 else re.escape(part) for i, part in enumerate(parts))
        if parts[-1] == "":
            regex = regex[: -len(".*?)")] + ".*)\\Z"
        patterns.append((re.compile(regex, re.S), kind, names))
    return by_key, chat_contexts, patterns


def _values(prompt: Any, prompt_args: Dict[str, Any]) -> Dict[str, Any]:
    """The variables a template is formatted with: partial kwargs, call kwargs, function and name mappings."""
    values = {**prompt.kwargs, **prompt_args}
    for name, function in (prompt.function_mappings or {}).items():
        values[name] = function(**values)
    mappings = prompt.template_var_mappings or {}
    values = {mappings.get(k, k): v for k, v in values.items()}
    for name in _CONTEXT_VAR.values():
        # simple_summarize passes its truncated chunks as a list: the model reads text, not a Python repr.
        if isinstance(values.get(name), (list, tuple)):
            values[name] = "\n".join(str(v) for v in values[name])
    return values


@dataclass
class LayoutCall:
    """One LlamaIndex request rendered in the layout.

    Attributes:
        text: The complete prompt.
        context: The retrieved (or conversation) text inside it, when the request has a context slot.
        render: The prompt for another piece of that context.
        refine: The prompt that improves an earlier answer with another piece of context.
    """

    text: str
    context: Optional[str] = None
    render: Optional[Callable[[str], str]] = None
    refine: Optional[Callable[[str, str], str]] = None


class LayoutPrompts:
    """Renders LlamaIndex prompts, chat messages and plain text in one model's layout.

    Args:
        prompt_format: The layout.
        system: System text overriding the layout's own (``llm.system_prompt``), if any.
        flag: Record flag choosing the system message (reasoning layouts).
        tokenizer: The model's tokenizer (the ``chat`` layout renders with its chat template).
    """

    def __init__(
        self, prompt_format: PromptFormat, system: Optional[str], flag: Optional[str], tokenizer: Any
    ) -> None:
        self.format = prompt_format
        self.system = system or None
        self.flag = flag
        self.tokenizer = tokenizer

    def render(
        self,
        instruction: str,
        context: str = "",
        history: Sequence[Tuple[str, str]] = (),
        system: Optional[str] = None,
    ) -> str:
        """The layout's prompt for an instruction, its context and earlier turns."""
        return self.format.render_prompt(
            instruction,
            context,
            flag=self.flag,
            system=system or self.system,
            tokenizer=self.tokenizer,
            history=history,
        )

    def _refiner(
        self, query: str, history: Sequence[Tuple[str, str]] = (), system: Optional[str] = None
    ) -> Callable[[str, str], str]:
        """The prompt that improves an earlier answer to ``query`` with another piece of context."""

        def refine(existing: str, piece: str) -> str:
            instruction = REFINE_INSTRUCTION.format(query_str=query or SUMMARY_INSTRUCTION, existing_answer=existing)
            return self.render(instruction, piece, history, system)

        return refine

    # ---------------------------------------------------------------------------------- LlamaIndex templates
    def _kind_call(
        self, kind: str, values: Dict[str, Any], history: Sequence[Tuple[str, str]] = (), system: Optional[str] = None
    ) -> LayoutCall:
        query = str(values.get("query_str", ""))
        refine = self._refiner(query, history, system)

        if kind == "qa":
            instruction = query
        elif kind == "refine":
            instruction = REFINE_INSTRUCTION.format(query_str=query, existing_answer=values.get("existing_answer", ""))
        elif kind == "summary":
            instruction = SUMMARY_INSTRUCTION
        elif kind == "condense":
            instruction = CONDENSE_INSTRUCTION.format(question=values.get("question", ""))
        else:  # simple
            return LayoutCall(self.render(query, "", history, system))
        context = str(values.get(_CONTEXT_VAR[kind], ""))
        if kind == "refine":
            existing = str(values.get("existing_answer", ""))
            return LayoutCall(
                self.render(instruction, context, history, system),
                context,
                render=lambda piece: refine(existing, piece),
                refine=refine,
            )
        return LayoutCall(
            self.render(instruction, context, history, system),
            context,
            render=lambda piece: self.render(instruction, piece, history, system),
            refine=refine if kind in ("qa", "summary") else None,
        )

    def call(self, prompt: Any, prompt_args: Dict[str, Any], llm: Any = None) -> LayoutCall:
        """Renders a LlamaIndex prompt template with its arguments in the layout (see the module docstring)."""
        from llama_index.core.prompts import ChatPromptTemplate, SelectorPromptTemplate

        if isinstance(prompt, SelectorPromptTemplate):
            prompt = prompt.select(llm=llm)
        values = _values(prompt, prompt_args)
        prompt_args = {**prompt_args, **{k: values[k] for k in _CONTEXT_VAR.values() if k in prompt_args}}
        if prompt.metadata.get(LAYOUT_METADATA_KEY):
            kind = _KINDS.get(frozenset(prompt.template_vars))
            if kind in _CONTEXT_VAR and kind != "condense":
                return self._layout_template_call(prompt, prompt_args, kind, values)
            return LayoutCall(prompt.format(**prompt_args))
        by_key, chat_contexts, _ = _defaults()
        kind = by_key.get(_key(prompt) or "")
        if kind:
            return self._kind_call(kind, values)
        if isinstance(prompt, ChatPromptTemplate):
            messages = prompt.message_templates
            first = messages[0].content or "" if messages else ""
            for default, kind in chat_contexts:
                if (
                    messages[0].role.value == "system"
                    and first.startswith(default)
                    and messages[-1].content == "{query_str}"
                ):
                    system = first[len(default) :].strip() or None
                    history = [(m.role.value, m.format_vars(**values).content or "") for m in messages[1:-1]]
                    return self._kind_call(kind, values, history, system)
            return LayoutCall(self.messages(prompt.format_messages(**prompt_args)))
        return self._user_template_call(prompt, prompt_args, values)

    def _user_template_call(self, prompt: Any, prompt_args: Dict[str, Any], values: Dict[str, Any]) -> LayoutCall:
        # A template the user passed: formatted as given, then put in the layout. When it carries retrieved
        # text, another piece of that text renders the same way, so over-long context can be split too.
        text = self.text(prompt.format(**prompt_args))
        var = next((v for v in ("context_str", "context_msg") if v in prompt.template_vars), None)
        if var is None:
            return LayoutCall(text)
        return LayoutCall(
            text,
            str(values.get(var, "")),
            render=lambda piece: self.text(prompt.format(**{**prompt_args, var: piece})),
            refine=self._refiner(str(values.get("query_str", ""))),
        )

    def _layout_template_call(
        self, prompt: Any, prompt_args: Dict[str, Any], kind: str, values: Dict[str, Any]
    ) -> LayoutCall:
        # One of our own templates (qa_template() & co.): split its context the same way if it overflows.
        var = _CONTEXT_VAR[kind]
        return LayoutCall(
            prompt.format(**prompt_args),
            str(values.get(var, "")),
            render=lambda piece: prompt.format(**{**prompt_args, var: piece}),
            refine=self._refiner(str(values.get("query_str", ""))),
        )

    def text(self, text: str) -> str:
        """A plain text in the layout: LlamaIndex's own formatted prompts are recognised, others are the instruction."""
        if self.format.looks_laid_out(text, system=self.system, tokenizer=self.tokenizer, flag=self.flag):
            return text
        for pattern, kind, _ in _defaults()[2]:
            match = pattern.match(text)
            if match:
                values = {k: v.strip() for k, v in match.groupdict().items()}
                suffix = text[match.end() :].strip()
                if suffix:
                    # e.g. the JSON schema LlamaIndex's structured output appends: part of what is asked.
                    key = "query_str" if "query_str" in values else "question"
                    values[key] = f"{values.get(key, '')}\n\n{suffix}"
                return self._kind_call(kind, values).text
        return self.render(text)

    def messages(self, messages: Sequence[Any]) -> str:
        """Chat messages as one prompt: the system message, earlier turns, and the last user message."""
        system = next((m.content for m in messages if m.role.value == "system" and m.content), None)
        turns = [(m.role.value, m.content or "") for m in messages if m.role.value != "system"]
        if not turns:
            raise ValueError("No user message to answer: pass at least one ChatMessage(role='user').")
        *history, (_, last) = turns
        return self.render(last, "", history, system)


async def to_async(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    """An iterator consumed in a worker thread, one item at a time, as an async iterator."""
    done = object()
    while True:
        item = await asyncio.to_thread(next, iterator, done)
        if item is done:
            return
        yield item


__all__ = ["LayoutCall", "LayoutPrompts", "to_async"]
