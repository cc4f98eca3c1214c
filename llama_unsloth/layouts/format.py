"""Prompt layouts shared by fine-tuning and inference.

A :class:`PromptFormat` is the single source of truth for a model's prompt layout. The same object

* renders a training example (prompt + answer + end-of-sequence marker) and splits it into the
  prompt part and the completion part, so the trainer sees exactly the token ids ``generate`` gets,
* renders an inference prompt that ends exactly where the model's answer begins,
* turns into LlamaIndex ``PromptTemplate`` objects for RAG (``{query_str}`` -> instruction,
  ``{context_str}`` -> context) and for every other LlamaIndex prompt (refine, summary, condense),
* parses the answer out of generated text,
* is saved inside a model folder so the model is later prompted the way it was trained.

Templates are Jinja2 texts (built-ins or users' own ``.j2`` files) rendered in a sandbox with
``StrictUndefined``; users' Python format strings (``"...{}..."`` with positional or named fields) are
converted to the same form by :meth:`PromptFormat.from_string`. The ``chat`` format delegates to the
tokenizer's own chat template.

Template variables are recognised by role (see :data:`~llama_unsloth.layouts.records.ROLE_NAMES`):
``instruction``, ``input``, ``context``, ``reasoning``, ``output`` (the answer), ``flag`` and ``system``.

The jobs around the dataclass live next to it: :mod:`.templates` (compiling users' templates),
:mod:`.builtins` (the built-in layouts), :mod:`.chat` (chat templates), :mod:`.tokens` (token ids),
:mod:`.llamaindex` (LlamaIndex templates) and :mod:`.detection` (already-laid-out prompts).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

# Names defined in the modules below are re-exported: code imported them from this module before the split.
from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.builtins import (
    ALPACA_CONTEXT_SYSTEM,
    ALPACA_SYSTEM,
    BUILTIN_LAYOUTS,
    CHAT_SYSTEM,
    INSTRUCTION_CONTEXT_SYSTEM,
    REASONING_SYSTEMS,
    builtin_layout,
)
from llama_unsloth.layouts.chat import chat_messages, render_chat, split_chat_training, turn_end_tokens
from llama_unsloth.layouts.chat_template import chat_template
from llama_unsloth.layouts.detection import looks_laid_out
from llama_unsloth.layouts.llamaindex import (
    CONDENSE_INSTRUCTION,
    LAYOUT_METADATA_KEY,
    REFINE_INSTRUCTION,
    SUMMARY_INSTRUCTION,
    layout_template,
)
from llama_unsloth.layouts.records import (
    DEFAULT_FLAG,
    FIELD_ALIASES,
    ROLE_NAMES,
    check_record,
    dataset_fields,
    record_value,
    record_values,
)
from llama_unsloth.layouts.templates import (
    ANSWER_SENTINEL,
    TOKENIZER_VARS,
    layout_fields,
    read_template,
    render_jinja,
    template_variables,
    to_jinja,
    warn_unknown_variables,
)
from llama_unsloth.layouts.tokens import encode_prompt, encode_training

__all__ = [
    "ALPACA_CONTEXT_SYSTEM",
    "ALPACA_SYSTEM",
    "BUILTIN_FORMATS",
    "CHAT_SYSTEM",
    "CONDENSE_INSTRUCTION",
    "DEFAULT_FLAG",
    "FIELD_ALIASES",
    "FORMAT_FILE",
    "INSTRUCTION_CONTEXT_SYSTEM",
    "LAYOUT_METADATA_KEY",
    "REASONING_SYSTEMS",
    "REFINE_INSTRUCTION",
    "ROLE_NAMES",
    "SUMMARY_INSTRUCTION",
    "PromptFormat",
    "PromptFormatError",
    "encode_prompt",
    "encode_training",
]

#: The file a layout is saved in, inside a model folder.
FORMAT_FILE = "prompt_format.json"


@dataclass
class PromptFormat:
    """A prompt layout: how records become training text and how questions become prompts.

    Args:
        name: Short name (``alpaca``, ``reasoning``, a file stem for users' templates).
        template: Jinja2 text with the layout. Empty for ``chat``, which uses the tokenizer's template.
        query_var: Template variable that receives the instruction / question.
        context_var: Template variable that receives retrieved context (``None`` if the layout has none).
        answer_var: Template variable where generation starts; an inference prompt ends just before it.
            Empty when the template has no answer slot: the prompt is then the whole template and
            training appends the answer to it.
        system: Default system text, available to the template as ``{{ system }}``.
        systems_by_flag: System text chosen by a record's ``flag`` field (reasoning layout); the
            ``assistant`` entry is the fallback for unknown flags.
        answer_marker: Text in the generated output after which the answer starts (the reasoning
            layout writes ``<|reasoning|>... <|response|>answer``); ``None`` when all output is answer.
        append_eos: Whether training text ends with the tokenizer's EOS token (without it generation
            never stops). Layouts whose template writes its own end marker set this to False.
        stop: Strings that end generation and are cut from the answer.
        record_fields: Fields every training record must have, as strings.
        input_var: A separate input variable next to ``context_var`` (kept, empty, at inference).
        flag_var: The variable a template's ``{% if flag == ... %}`` reads, if any.
        output_var: The variable holding the final answer when generation starts earlier (reasoning).
        optional_fields: Record fields that may be missing (filled with an empty string).
    """

    # The field order is the key order of prompt_format.json (asdict): keep it.
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
    input_var: Optional[str] = None
    flag_var: Optional[str] = None
    output_var: Optional[str] = None
    optional_fields: List[str] = field(default_factory=list)

    # ------------------------------------------------------------------ construction
    @classmethod
    def get(cls, name_or_format: str | PromptFormat, fields: Optional[Sequence[str]] = None) -> PromptFormat:
        """Returns a built-in format by name, a format read from a file, or the object itself.

        Args:
            name_or_format: A built-in name, a ``.j2`` file, a ``prompt_format.json`` file (or a folder holding
                one), any other text file holding a Jinja2 or Python format template, or a ``PromptFormat``.
            fields: Roles of a Python format template's positional ``{}`` placeholders, in order.

        Raises:
            PromptFormatError: The name is not a built-in and not an existing template file.
        """
        if isinstance(name_or_format, PromptFormat):
            return name_or_format
        name = str(name_or_format)
        if name in BUILTIN_FORMATS:
            return BUILTIN_FORMATS[name]()
        path = Path(name)
        if path.is_dir() and (path / FORMAT_FILE).is_file():
            return cls.load(path)
        if path.is_file() and path.suffix == ".json":
            if path.name == FORMAT_FILE:
                return cls.load(path.parent)
            return cls.from_dict(json.loads(path.read_text("utf-8")))
        if path.is_file():
            return cls.from_file(path, fields=fields)
        if name.endswith(".j2"):
            raise PromptFormatError(f"Prompt template {name} does not exist.")
        raise PromptFormatError(
            f"Unknown prompt format {name!r}. Valid formats: {', '.join(sorted(BUILTIN_FORMATS))}, "
            "or the path of a template file (.j2 Jinja2, or a Python format string with --prompt-fields)."
        )

    @classmethod
    def from_j2(cls, path: str | Path, system: str = "") -> PromptFormat:
        """Reads a user's Jinja2 layout file as-is (see :meth:`from_string` for what it may contain).

        Raises:
            FileNotFoundError: The file does not exist.
            PromptFormatError: The template has no instruction variable, or bad syntax.
        """
        return cls.from_string(read_template(path), name=Path(path).stem, system=system, source=str(path))

    @classmethod
    def from_file(cls, path: str | Path, fields: Optional[Sequence[str]] = None) -> PromptFormat:
        """Reads a template file: Jinja2 (``{{ name }}``) or a Python format string (``{}``/``{name}``).

        Raises:
            FileNotFoundError: The file does not exist.
            PromptFormatError: The template has no instruction variable, or bad syntax.
        """
        return cls.from_string(read_template(path), fields=fields, name=Path(path).stem, source=str(path))

    @classmethod
    def from_string(
        cls,
        text: str,
        fields: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        system: str = "",
        source: Optional[str] = None,
    ) -> PromptFormat:
        """Builds a layout from a user's template text, used byte for byte.

        The text is Jinja2 (``{{ str_instruction }}``, ``{% if flag == 'logician' %}``) or a Python format
        string (``{}`` positional, with ``fields`` naming the roles in order, or ``{name}``). Variables are
        recognised by role (:data:`ROLE_NAMES`): instruction, input, context, reasoning, output (answer),
        flag, system. The template may write text after the context slot, keep an empty input section,
        write its own ``<s>``/``</s>`` markers, or have no answer slot at all (the prompt then ends where
        the answer begins and training appends the answer and EOS).

        Args:
            text: The template.
            fields: Roles of positional ``{}`` placeholders, in order (Python format strings only).
            name: A short name for the layout (default ``custom``).
            system: Text for a ``{{ system }}`` variable, if the template has one.
            source: The file the text came from, named by the warning about variables the layout does not
                fill (a typo such as ``{{ contxt }}``: empty at inference); default: the name.

        Raises:
            PromptFormatError: No instruction variable, an unknown variable, or bad syntax.
        """
        jinja_text = to_jinja(text, fields)
        fields_of_layout = layout_fields(jinja_text, name=name or "custom", system=system)
        warn_unknown_variables(jinja_text, source or name or "custom")
        return cls(**fields_of_layout)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptFormat:
        """A format from the dictionary :meth:`save` writes (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        if data.get("template") and not data.get("stop") and data.get("name") not in BUILTIN_FORMATS:
            # Written before stop strings were derived from users' templates: derive them now.
            try:
                data["stop"] = layout_fields(data["template"], data.get("name") or "custom", "")["stop"]
            except PromptFormatError:
                pass
        return cls(**data)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Writes the format into ``folder/prompt_format.json`` (e.g. next to a fine-tuned model)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / FORMAT_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> PromptFormat:
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
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

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

    def _variables(self) -> List[str]:
        return template_variables(self.template) if self.template else []

    def _render(self, values: Mapping[str, Any], system: Optional[str], tokenizer: Any) -> str:
        variables = dict(values)
        for name in TOKENIZER_VARS:
            variables.setdefault(name, getattr(tokenizer, name, None) or "")
        flag = variables.get(self.flag_var or "flag")
        # An explicit system text wins, then a record's own system field, then the flag table / default.
        given = next((variables[n] for n in ROLE_NAMES["system"] if variables.get(n)), None)
        chosen = system or given or self.system_for(flag, None)
        for name in ROLE_NAMES["system"]:
            variables[name] = chosen
        return render_jinja(self.template, variables, self.name)

    def chat_messages(
        self,
        instruction: str,
        context: str = "",
        *,
        system: Optional[str] = None,
        history: Sequence[Tuple[str, str]] = (),
        answer: Optional[str] = None,
    ) -> List[Dict[str, str]]:
        """The messages the ``chat`` layout sends: system, earlier turns, the user turn (with context)."""
        return chat_messages(self.system_for(None, system), instruction, context, history=history, answer=answer)

    def turn_end_tokens(self, tokenizer: Any) -> List[str]:
        """The special token(s) that end the assistant's turn in this layout (what generation must stop at).

        For ``chat``, read from the tokenizer's template: the special tokens it writes right after an answer
        (``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``, ``<|im_end|>``, Mistral's ``</s>``), which need not be
        the tokenizer's EOS. Template layouts: their stop strings that are special tokens.
        """
        return turn_end_tokens(tokenizer, None if self.is_chat else self.stop)

    def render_prompt(
        self,
        instruction: str,
        context: str = "",
        *,
        flag: Optional[str] = None,
        system: Optional[str] = None,
        tokenizer: Any = None,
        history: Sequence[Tuple[str, str]] = (),
        **extra: Any,
    ) -> str:
        """Renders an inference prompt that ends exactly where the model's answer begins.

        Args:
            instruction: The question or instruction.
            context: Retrieved context (layouts without a context slot put nothing).
            flag: Record flag choosing the system text (reasoning layouts).
            system: System text overriding the format's default.
            tokenizer: Needed by the ``chat`` format.
            history: Earlier conversation turns as ``(role, text)``; the chat layout sends them as turns,
                template layouts write them into the instruction slot before the question.
            **extra: Other template variables (e.g. ``input``).
        """
        if self.is_chat:
            messages = self.chat_messages(instruction, context, system=system, history=history)
            return render_chat(messages, tokenizer, generation_prompt=True)
        if history:
            lines = [f"{role}: {content}" for role, content in history]
            instruction = "\n".join([*lines, f"user: {instruction}"])
        values: Dict[str, Any] = {name: "" for name in self._variables() if name not in TOKENIZER_VARS}
        values.update(extra)
        if context and not self.context_var:
            # A layout without a context (or input) slot still gets the retrieved text: before the question.
            instruction = f"{context}\n\n{instruction}"
        if system and not any(v in ROLE_NAMES["system"] for v in self._variables()) and not self.systems_by_flag:
            # A layout with no system slot (most users' own templates) keeps a caller's system text (a chat
            # engine's system_prompt, an agent's instructions) at the head of the instruction, not dropped.
            instruction = f"{system}\n\n{instruction}"
        values[self.query_var] = instruction
        if self.context_var:
            values[self.context_var] = context
        if self.flag_var or flag is not None:
            values[self.flag_var or "flag"] = flag or ""
        if not self.answer_var:
            return self._render(values, system, tokenizer)
        values[self.answer_var] = ANSWER_SENTINEL
        return self._render(values, system, tokenizer).split(ANSWER_SENTINEL, 1)[0]

    # ------------------------------------------------------------------ training
    def split_training(
        self, record: Mapping[str, Any], *, eos_token: str = "", system: Optional[str] = None, tokenizer: Any = None
    ) -> Tuple[str, str]:
        """One training example as ``(prompt, completion)``; the prompt is what inference sends.

        ``prompt + completion`` is the training text: the layout filled with the record, then the
        tokenizer's EOS unless the layout writes its own end marker (EOS is never doubled).

        Args:
            record: A dataset record with the format's ``record_fields``.
            eos_token: The tokenizer's EOS token.
            system: System text overriding the format's default.
            tokenizer: Needed by the ``chat`` format.
        """
        if self.is_chat:
            return split_chat_training(record, self.system_for(None, system), tokenizer)
        variables = [v for v in self._variables() if v not in TOKENIZER_VARS]
        # The answer slot gets the sentinel below, so a record without an answer still renders (check_record tells).
        blank = [*self.optional_fields, self.answer_var]
        values = record_values(record, variables, blank=blank, flag_var=self.flag_var or "flag")
        answer_text = ""
        if self.answer_var:
            answer_text = str(values.get(self.answer_var, ""))
            values[self.answer_var] = ANSWER_SENTINEL
        rendered = self._render(values, system, tokenizer)
        if self.answer_var:
            prompt, rest = rendered.split(ANSWER_SENTINEL, 1)
            completion = answer_text + rest
        else:
            prompt, completion = rendered, str(record_value(record, "output") or "")
        if self.append_eos and eos_token and not completion.rstrip().endswith(eos_token):
            completion += eos_token
        return prompt, completion

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
        prompt, completion = self.split_training(record, eos_token=eos_token, system=system, tokenizer=tokenizer)
        return prompt + completion

    def check_record(self, record: Any, number: int, source: str = "dataset") -> None:
        """Raises a clear error when a training record lacks a field or has a non-string value.

        Args:
            record: The record as loaded from JSON.
            number: Its 1-based position in the file, for the message.
            source: The file name, for the message.
        """
        check_record(
            record,
            number,
            source,
            layout_name=self.name,
            record_fields=self.record_fields,
            optional_fields=self.optional_fields,
        )

    def dataset_fields(self) -> List[str]:
        """The record fields a data file needs, in the names data files use (``instruction``, ``answer`` ...)."""
        return dataset_fields(self.record_fields, self.optional_fields)

    # ------------------------------------------------------------------ LlamaIndex
    def _prompt_renderer(
        self, system: Optional[str], tokenizer: Any, flag: Optional[str]
    ) -> Callable[[str, str], str]:
        """This layout's inference prompt as a function of (instruction, context), other settings fixed."""
        return functools.partial(self.render_prompt, flag=flag, system=system, tokenizer=tokenizer)

    def qa_template(self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None) -> Any:
        """A LlamaIndex ``PromptTemplate`` for RAG in this layout.

        ``{query_str}`` fills the instruction slot and ``{context_str}`` the context slot (formats
        without one, like ``alpaca``, put the context in their input slot).
        """
        return layout_template("qa", self.name, self._prompt_renderer(system, tokenizer, flag))

    def refine_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex refine ``PromptTemplate`` in this layout, used when context spans several calls."""
        return layout_template("refine", self.name, self._prompt_renderer(system, tokenizer, flag))

    def summary_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex summary ``PromptTemplate`` (``tree_summarize``): the query and the context to summarize."""
        return layout_template("summary", self.name, self._prompt_renderer(system, tokenizer, flag))

    def condense_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex condense-question ``PromptTemplate`` (``{chat_history}``, ``{question}``) in this layout."""
        return layout_template("condense", self.name, self._prompt_renderer(system, tokenizer, flag))

    def looks_laid_out(
        self, text: str, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> bool:
        """Whether ``text`` already is a prompt in this layout (starts with its head or ends with its tail)."""
        return looks_laid_out(text, self._prompt_renderer(system, tokenizer, flag))

    def to_chat_template(self, tokenizer: Any = None, *, add_bos: Optional[bool] = None) -> Optional[str]:
        """This layout as a Jinja chat template (None for ``chat``: the tokenizer's own stays); see :mod:`.chat_template`."""
        return chat_template(self, tokenizer, add_bos=add_bos)

    # ------------------------------------------------------------------ parsing
    def parse_answer(self, generated: str) -> tuple[str, Optional[str]]:
        """Splits generated text into (answer, reasoning).

        For layouts with an ``answer_marker`` the answer is the text after it and the reasoning the
        text before; without the marker in the output, all of it is treated as the answer.
        """
        if self.answer_marker and self.answer_marker in generated:
            reasoning, answer = generated.split(self.answer_marker, 1)
            return answer, reasoning.strip()
        return generated, None


def _builtin(name: str) -> PromptFormat:
    return PromptFormat(**builtin_layout(name))


#: The built-in layouts by name, each a function returning a fresh :class:`PromptFormat`.
#: :meth:`PromptFormat.get` looks names up here, so a layout added to this table is found by name too.
BUILTIN_FORMATS: Dict[str, Callable[[], PromptFormat]] = {
    name: functools.partial(_builtin, name) for name in BUILTIN_LAYOUTS
}
