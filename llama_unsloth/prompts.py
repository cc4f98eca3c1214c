"""Prompt layouts shared by fine-tuning and inference.

A :class:`PromptFormat` is the single source of truth for a model's prompt layout. The same object

* renders a training example (prompt + answer + end-of-sequence marker),
* renders an inference prompt that ends exactly where the answer begins,
* turns into a LlamaIndex ``PromptTemplate`` for RAG (``{query_str}`` -> instruction,
  ``{context_str}`` -> context),
* parses the answer out of generated text,
* is saved inside a model folder so the model is later prompted the way it was trained.

Template formats are Jinja2 texts (built-ins or users' own ``.j2`` files) rendered in a sandbox with
``StrictUndefined``. The ``chat`` format delegates to the tokenizer's own chat template.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

FORMAT_FILE = "prompt_format.json"
DEFAULT_FLAG = "assistant"

# Stands in for the answer while rendering an inference prompt: the prompt is the text before it.
_ANSWER_SENTINEL = "\x00ANSWER\x00"

# Dataset files name the instruction-context fields without the ``str_`` prefix users' templates use.
FIELD_ALIASES = {"str_instruction": "instruction", "str_context": "context", "str_answer": "answer"}

_QUERY_VAR_CANDIDATES = ("str_instruction", "instruction", "question", "query")
_CONTEXT_VAR_CANDIDATES = ("str_context", "context", "input")
_ANSWER_VAR_CANDIDATES = ("str_answer", "answer", "output", "response")

ALPACA_SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request."
)
ALPACA_CONTEXT_SYSTEM = (
    "Below is an instruction that describes a task, paired with context passages retrieved from "
    "documents. Write a response that answers the instruction using the context."
)
INSTRUCTION_CONTEXT_SYSTEM = (
    "You are a knowledgeable analyst who answers questions from the documents you are given. "
    "Answer the instruction using only the context below. If the answer is not in the context, "
    'say "I don\'t know". Write a complete, well-organised answer of 400-500 words.'
)
REASONING_SYSTEMS: Dict[str, str] = {
    "logician": (
        "You are a logician. Reason step by step from the context, state each inference "
        "explicitly, then give a precise answer."
    ),
    "creator": (
        "You are a creative writer. Think about the context first, then write an original, "
        "vivid response that stays true to it."
    ),
    "translator": (
        "You are a translator. Think about meaning, tone and terminology first, then give a "
        "faithful translation."
    ),
    DEFAULT_FLAG: (
        "You are a helpful assistant. Think through the instruction and the context before "
        "answering, then answer clearly."
    ),
}
CHAT_SYSTEM = (
    "You are a helpful assistant. Answer the question using the context when it is given. "
    "If the answer is not in the context, say \"I don't know\"."
)

_ALPACA_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}

### Input:
{{ input }}

### Response:
{{ output }}"""

_ALPACA_CONTEXT_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}
{% if input is defined and input %}
### Input:
{{ input }}
{% endif %}
### Context:
{{ context }}

### Response:
{{ output }}"""

_INSTRUCTION_CONTEXT_TEMPLATE = """{{ system }}

### INSTRUCTION:
{{ str_instruction }}

### CONTEXT:
{{ str_context }}

### RESPONSE:
{{ str_answer }}"""

_REASONING_TEMPLATE = """<s>{{ system }}
<|instruction|>{{ instruction }}
<|context|>{{ input }}
<|reasoning|>{{ reasoning }}
<|response|>{{ output }}<|endoftext|>"""


class PromptFormatError(ValueError):
    """A prompt format or a record rendered with it is invalid."""


def _sandbox() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Users share .j2 files: a sandbox stops a template from reaching Python internals.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


def _template_variables(text: str) -> List[str]:
    from jinja2 import TemplateSyntaxError, meta

    try:
        parsed = _sandbox().parse(text)
    except TemplateSyntaxError as err:
        raise PromptFormatError(f"Template syntax error on line {err.lineno}: {err.message}") from err
    return sorted(meta.find_undeclared_variables(parsed))


def _field(record: Mapping[str, Any], name: str) -> Any:
    """A record's value for a template variable, accepting the dataset alias (``instruction`` for ``str_instruction``)."""
    value = record.get(name)
    if value is None and name in FIELD_ALIASES:
        value = record.get(FIELD_ALIASES[name])
    return value


@dataclass
class PromptFormat:
    """A prompt layout: how records become training text and how questions become prompts.

    Args:
        name: Short name (``alpaca``, ``reasoning``, a file stem for ``.j2`` formats).
        template: Jinja2 text with the layout. Empty for ``chat``, which uses the tokenizer's template.
        query_var: Template variable that receives the instruction / question.
        context_var: Template variable that receives retrieved context (``None`` if the layout has none).
        answer_var: Template variable where generation starts; an inference prompt ends just before it.
        system: Default system text, available to the template as ``{{ system }}``.
        systems_by_flag: System text chosen by a record's ``flag`` field (reasoning layout); the
            ``assistant`` entry is the fallback for unknown flags.
        answer_marker: Text in the generated output after which the answer starts (the reasoning
            layout writes ``<|reasoning|>... <|response|>answer``); ``None`` when all output is answer.
        append_eos: Whether training text ends with the tokenizer's EOS token (without it generation
            never stops). Layouts whose template writes its own end marker set this to False.
        stop: Strings that end generation and are cut from the answer.
        record_fields: Fields every training record must have, as strings.
    """

    name: str
    template: str = ""
    query_var: str = "instruction"
    context_var: Optional[str] = "input"
    answer_var: str = "output"
    system: str = ""
    systems_by_flag: Dict[str, str] = field(default_factory=dict)
    answer_marker: Optional[str] = None
    append_eos: bool = True
    stop: List[str] = field(default_factory=list)
    record_fields: List[str] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def get(cls, name_or_format: "str | PromptFormat") -> "PromptFormat":
        """Returns a built-in format by name, a format read from a ``.j2`` path, or the object itself.

        Raises:
            PromptFormatError: The name is not a built-in and not an existing ``.j2`` file.
        """
        if isinstance(name_or_format, PromptFormat):
            return name_or_format
        name = str(name_or_format)
        if name in BUILTIN_FORMATS:
            return BUILTIN_FORMATS[name]()
        if name.endswith(".j2"):
            return cls.from_j2(name)
        raise PromptFormatError(
            f"Unknown prompt format {name!r}. Valid formats: {', '.join(sorted(BUILTIN_FORMATS))}, "
            "or the path of a Jinja2 .j2 file."
        )

    @classmethod
    def from_j2(cls, path: "str | Path", system: str = "") -> "PromptFormat":
        """Reads a user's Jinja2 layout, e.g. one with ``str_instruction``/``str_context``/``str_answer``.

        The instruction, context and answer variables are recognised by name
        (``str_instruction``/``instruction``/``question``, ``str_context``/``context``/``input``,
        ``str_answer``/``answer``/``output``). The template text is used as-is.

        Raises:
            FileNotFoundError: The file does not exist.
            PromptFormatError: The template has no instruction or answer variable, or bad syntax.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt template {path} does not exist.")
        text = path.read_text(encoding="utf-8")
        variables = _template_variables(text)

        def pick(candidates: Sequence[str], role: str, required: bool) -> Optional[str]:
            for candidate in candidates:
                if candidate in variables:
                    return candidate
            if required:
                raise PromptFormatError(
                    f"Template {path} has no {role} variable: it uses {variables or 'no variables'}, "
                    f"expected one of {', '.join(candidates)}."
                )
            return None

        query_var = pick(_QUERY_VAR_CANDIDATES, "instruction", True)
        answer_var = pick(_ANSWER_VAR_CANDIDATES, "answer", True)
        context_var = pick(_CONTEXT_VAR_CANDIDATES, "context", False)
        return cls(
            name=path.stem,
            template=text.rstrip("\n"),
            query_var=query_var or "",
            context_var=context_var,
            answer_var=answer_var or "",
            system=system,
            record_fields=[v for v in variables if v != "system"],
        )

    # ------------------------------------------------------------------ persistence
    def save(self, folder: "str | Path") -> Path:
        """Writes the format into ``folder/prompt_format.json`` (e.g. next to a fine-tuned model)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FORMAT_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: "str | Path") -> "PromptFormat":
        """Reads the format saved by :meth:`save` from a model folder.

        Raises:
            FileNotFoundError: The folder holds no ``prompt_format.json``.
        """
        path = Path(folder) / FORMAT_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: this folder was not written by llama-unsloth's finetune recipe. "
                "Pass prompt_format=... explicitly."
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    # ------------------------------------------------------------------ rendering
    @property
    def is_chat(self) -> bool:
        """True when the layout is the tokenizer's chat template."""
        return not self.template

    def system_for(self, flag: Optional[str] = None, system: Optional[str] = None) -> str:
        """The system text for a record: an explicit ``system`` wins, then the ``flag`` table."""
        if system:
            return system
        if self.systems_by_flag:
            return self.systems_by_flag.get(flag or DEFAULT_FLAG, self.systems_by_flag.get(DEFAULT_FLAG, ""))
        return self.system

    def _render(self, values: Mapping[str, Any], system: Optional[str], tokenizer: Any) -> str:
        if self.is_chat:
            return self._render_chat(values, system, tokenizer)
        variables = dict(values)
        variables["system"] = self.system_for(variables.get("flag"), system)
        try:
            return _sandbox().from_string(self.template).render(**variables)
        except Exception as err:  # jinja2.UndefinedError and sandbox errors
            raise PromptFormatError(f"Prompt format {self.name!r} cannot be rendered: {err}") from err

    def _render_chat(self, values: Mapping[str, Any], system: Optional[str], tokenizer: Any) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "The 'chat' prompt format needs a tokenizer with a chat template; "
                "pass tokenizer=... or choose another format."
            )
        instruction = values.get(self.query_var, "")
        context = values.get(self.context_var or "", "")
        user = f"Context:\n{context}\n\nQuestion: {instruction}" if context else instruction
        messages = [{"role": "system", "content": self.system_for(None, system)}, {"role": "user", "content": user}]
        answer = values.get(self.answer_var)
        if answer is None:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        messages.append({"role": "assistant", "content": answer})
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        # The chat template closes the turn itself; training text must not add a second EOS after it.
        return text

    def _after_answer_vars(self) -> List[str]:
        if self.is_chat:
            return []
        start = re.search(r"{{-?\s*" + re.escape(self.answer_var) + r"\b", self.template)
        if start is None:
            return []
        tail = self.template[start.end() :]
        return [name for name in self.record_fields if re.search(r"{{-?\s*" + re.escape(name) + r"\b", tail)]

    def render_prompt(
        self,
        instruction: str,
        context: str = "",
        *,
        flag: Optional[str] = None,
        system: Optional[str] = None,
        tokenizer: Any = None,
        **extra: Any,
    ) -> str:
        """Renders an inference prompt that ends exactly where the model's answer begins.

        Args:
            instruction: The question or instruction.
            context: Retrieved context (ignored by layouts without a context slot).
            flag: Record flag choosing the system text (reasoning layout).
            system: System text overriding the format's default.
            tokenizer: Needed by the ``chat`` format.
            **extra: Other template variables of a user's ``.j2`` file.
        """
        # Variables written after the answer starts (reasoning's ``output``) never reach the prompt.
        values: Dict[str, Any] = {name: "" for name in self._after_answer_vars()}
        values.update(extra)
        values[self.query_var] = instruction
        if self.context_var:
            values[self.context_var] = context
        if flag is not None:
            values["flag"] = flag
        if self.is_chat:
            values.pop(self.answer_var, None)
            return self._render(values, system, tokenizer)
        values[self.answer_var] = _ANSWER_SENTINEL
        rendered = self._render(values, system, tokenizer)
        return rendered.split(_ANSWER_SENTINEL, 1)[0]

    def render_training(
        self, record: Mapping[str, Any], *, eos_token: str = "", system: Optional[str] = None, tokenizer: Any = None
    ) -> str:
        """Renders one training example: the prompt, the answer and the end-of-sequence marker.

        Args:
            record: A dataset record with the format's ``record_fields``.
            eos_token: The tokenizer's EOS token, appended when ``append_eos`` is set.
            system: System text overriding the format's default.
            tokenizer: Needed by the ``chat`` format.
        """
        values = {name: value for name in self.record_fields if (value := _field(record, name)) is not None}
        values.update({k: v for k, v in record.items() if k not in FIELD_ALIASES.values() and v is not None})
        text = self._render(values, system, tokenizer)
        if self.append_eos and not self.is_chat:
            text += eos_token
        return text

    def check_record(self, record: Any, number: int, source: str = "dataset") -> None:
        """Raises a clear error when a training record lacks a field or has a non-string value.

        Args:
            record: The record as loaded from JSON.
            number: Its 1-based position in the file, for the message.
            source: The file name, for the message.
        """
        if not isinstance(record, Mapping):
            raise PromptFormatError(f"{source}, record {number}: expected a JSON object, got {type(record).__name__}.")
        for name in self.record_fields:
            value = _field(record, name)
            shown = FIELD_ALIASES.get(name, name)
            if value is None:
                raise PromptFormatError(
                    f"{source}, record {number}: missing field {shown!r} (format {self.name!r} needs "
                    f"{', '.join(FIELD_ALIASES.get(n, n) for n in self.record_fields)})."
                )
            if not isinstance(value, str):
                raise PromptFormatError(
                    f"{source}, record {number}: field {shown!r} must be a string, got {type(value).__name__}."
                )

    # ------------------------------------------------------------------ LlamaIndex
    def qa_template(self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None) -> Any:
        """A LlamaIndex ``PromptTemplate`` for RAG in this layout.

        ``{query_str}`` fills the instruction slot and ``{context_str}`` the context slot (formats
        without one, like ``alpaca``, put the context in their input slot).
        """
        from llama_index.core.prompts import PromptTemplate
        from llama_index.core.prompts.prompt_type import PromptType

        text = self.render_prompt("{query_str}", "{context_str}", flag=flag, system=system, tokenizer=tokenizer)
        return PromptTemplate(text, prompt_type=PromptType.QUESTION_ANSWER)

    def refine_template(self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None) -> Any:
        """A LlamaIndex refine ``PromptTemplate`` in this layout, used when context spans several calls."""
        from llama_index.core.prompts import PromptTemplate
        from llama_index.core.prompts.prompt_type import PromptType

        instruction = (
            "{query_str}\n\nAn earlier answer, written from other parts of the documents, was:\n"
            "{existing_answer}\nImprove it with the new context if it helps; otherwise repeat it."
        )
        text = self.render_prompt(instruction, "{context_msg}", flag=flag, system=system, tokenizer=tokenizer)
        return PromptTemplate(text, prompt_type=PromptType.REFINE)

    # ------------------------------------------------------------------ parsing
    def parse_answer(self, generated: str) -> "tuple[str, Optional[str]]":
        """Splits generated text into (answer, reasoning).

        For layouts with an ``answer_marker`` the answer is the text after it and the reasoning the
        text before; without the marker in the output, all of it is treated as the answer.
        """
        if self.answer_marker and self.answer_marker in generated:
            reasoning, answer = generated.split(self.answer_marker, 1)
            return answer, reasoning.strip()
        return generated, None


def _alpaca() -> PromptFormat:
    return PromptFormat(
        name="alpaca",
        template=_ALPACA_TEMPLATE,
        system=ALPACA_SYSTEM,
        # A section header in the output means the model started a new turn: the answer ended before it.
        stop=["### Instruction:", "### Input:", "### Response:"],
        record_fields=["instruction", "input", "output"],
    )


def _alpaca_context() -> PromptFormat:
    return PromptFormat(
        name="alpaca-context",
        template=_ALPACA_CONTEXT_TEMPLATE,
        context_var="context",
        system=ALPACA_CONTEXT_SYSTEM,
        stop=["### Instruction:", "### Input:", "### Context:", "### Response:"],
        record_fields=["instruction", "context", "output"],
    )


def _instruction_context() -> PromptFormat:
    return PromptFormat(
        name="instruction-context",
        template=_INSTRUCTION_CONTEXT_TEMPLATE,
        query_var="str_instruction",
        context_var="str_context",
        answer_var="str_answer",
        system=INSTRUCTION_CONTEXT_SYSTEM,
        stop=["### INSTRUCTION:", "### CONTEXT:", "### RESPONSE:"],
        record_fields=["str_instruction", "str_context", "str_answer"],
    )


def _reasoning() -> PromptFormat:
    return PromptFormat(
        name="reasoning",
        template=_REASONING_TEMPLATE,
        answer_var="reasoning",
        systems_by_flag=dict(REASONING_SYSTEMS),
        answer_marker="<|response|>",
        append_eos=False,
        stop=["<|endoftext|>", "<|instruction|>"],
        record_fields=["instruction", "input", "flag", "reasoning", "output"],
    )


def _chat() -> PromptFormat:
    return PromptFormat(
        name="chat",
        template="",
        system=CHAT_SYSTEM,
        record_fields=["instruction", "input", "output"],
    )


BUILTIN_FORMATS = {
    "alpaca": _alpaca,
    "alpaca-context": _alpaca_context,
    "instruction-context": _instruction_context,
    "reasoning": _reasoning,
    "chat": _chat,
}

