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

Template variables are recognised by role (see :data:`ROLE_NAMES`): ``instruction``, ``input``,
``context``, ``reasoning``, ``output`` (the answer), ``flag`` and ``system``.
"""

from __future__ import annotations

import functools
import json
import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from llama_unsloth.errors import PromptFormatError  # noqa: F401 (defined there, re-exported here)

FORMAT_FILE = "prompt_format.json"
DEFAULT_FLAG = "assistant"

# Stands in for the answer while rendering: the prompt is the text before it.
_ANSWER_SENTINEL = "\x00ANSWER\x00"
# Marks LlamaIndex templates built from a layout: they are sent as they are, never wrapped again.
LAYOUT_METADATA_KEY = "llama_unsloth_layout"

#: Variable names a template may use, by role. The first name of each role is the record field the
#: finetune recipe's data files use; the others are accepted in templates and in records.
ROLE_NAMES: Dict[str, Tuple[str, ...]] = {
    "instruction": ("instruction", "str_instruction", "question", "query", "str_question"),
    "input": ("input", "str_input"),
    "context": ("context", "str_context"),
    "reasoning": ("reasoning", "str_reasoning"),
    "output": ("output", "answer", "str_answer", "response", "str_output", "str_response"),
    "flag": ("flag", "str_flag"),
    "system": ("system", "system_prompt", "str_system"),
}
_ROLE_OF = {name: role for role, names in ROLE_NAMES.items() for name in names}
# Kept for code that maps the instruction-context variables to dataset names.
FIELD_ALIASES = {"str_instruction": "instruction", "str_context": "context", "str_answer": "answer"}

# End-of-text markers a template may write itself after the answer; then no EOS is appended.
_END_MARKERS = (
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<eos>",
)

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
    "Answer the instruction using only the context below. If the answer is not in it, "
    'say "I don\'t know". Write a complete, well-organised answer of 400-500 words.'
)
# The four system messages our users' Phi-3 reasoning fine-tunes were trained with, verbatim
# (typos, the trailing space after the logician's '". ' and the missing space after "languages." included).
REASONING_SYSTEMS: Dict[str, str] = {
    "logician": (
        'You are an excellent logician and are instructing users on "thinking proce-dures for providing '
        'better quality reasoning to user-provided questions.". '
    ),
    "creator": (
        "You are creator who create amazing content with your free ideas. You attract readers with your "
        "beautiful writing such as novel or advertisement. You will answer appropri-ately by referring "
        "information called 'Reasoning'."
    ),
    "translator": (
        "You are translator who is fluent in multiple languages.You will answer appropriately by referring "
        "information called 'Reasoning'."
    ),
    DEFAULT_FLAG: (
        "You are an AI assistant who is good at providing answers in multiple languages. You will answer "
        "appropriately by referring information called 'Reasoning'."
    ),
}
CHAT_SYSTEM = (
    "You are a helpful assistant. Answer the question using the context when it is given. "
    'If the answer is not in the context, say "I don\'t know".'
)

# Instructions of the LlamaIndex prompts that are not a plain question, written into the layout's
# instruction slot (the retrieved text always goes into its context slot).
REFINE_INSTRUCTION = (
    "{query_str}\n\nAn earlier answer, written from other parts of the documents, was:\n"
    "{existing_answer}\nImprove it with the new context if it helps; otherwise repeat it."
)
SUMMARY_INSTRUCTION = "Summarize the context."
CONDENSE_INSTRUCTION = (
    "Rewrite the follow-up message as a standalone question that keeps everything it needs from the "
    "conversation in the context.\nFollow-up message: {question}"
)

_ALPACA_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}

### Input:
{{ input }}

### Response:
{{ output }}"""

# Our users keep the ``### Input:`` section even when the input is empty.
_ALPACA_CONTEXT_TEMPLATE = """{{ system }}

### Instruction:
{{ instruction }}

### Input:
{{ input }}

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


def _sandbox() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Users share .j2 files: a sandbox stops a template from reaching Python internals.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _template_variables(text: str) -> List[str]:
    from jinja2 import TemplateSyntaxError, meta

    try:
        parsed = _sandbox().parse(text)
    except TemplateSyntaxError as err:
        raise PromptFormatError(f"Template syntax error on line {err.lineno}: {err.message}") from err
    return sorted(meta.find_undeclared_variables(parsed))


def _slot(text: str, name: str) -> Optional[re.Match]:
    """Where ``{{ name }}`` is printed in a Jinja2 text (filters allowed), or None."""
    return re.search(r"\{\{-?\s*" + re.escape(name) + r"\s*(\|[^}]*)?-?\}\}", text)


_TOKENIZER_VARS = ("bos_token", "eos_token")
_JINJA_SYNTAX = re.compile(r"\{\{-?\s*[A-Za-z_][\w.]*\s*(\|[^}]*)?-?\}\}|\{%-?.*?-?%\}", re.S)


_PYTHON_PLACEHOLDER = re.compile(r"(?<!\{)\{(\d*|[A-Za-z_]\w*)\}(?!\})")


def _is_jinja(text: str) -> bool:
    """Jinja2 when it has ``{{ name }}``/``{% ... %}`` and no single-brace ``{}``/``{name}`` placeholder."""
    return bool(_JINJA_SYNTAX.search(text)) and not _PYTHON_PLACEHOLDER.search(text)


def _raw(literal: str) -> str:
    """A literal text as Jinja2 source: wrapped in a raw block when it contains Jinja2 syntax."""
    if any(token in literal for token in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return "{% raw %}" + literal + "{% endraw %}"
    return literal


def _python_format_to_jinja(text: str, fields: Optional[Sequence[str]]) -> str:
    """Converts a ``str.format`` template (``{}``, ``{0}`` or ``{name}``) into the same Jinja2 text."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as err:
        raise PromptFormatError(f"Not a valid Python format string: {err}.") from None
    positional = [name for _, name, _, _ in parts if name is not None and (name == "" or name.isdigit())]
    if positional and fields is None:
        raise PromptFormatError(
            f"The template has {len(positional)} positional '{{}}' placeholders: pass fields=[...] (--prompt-fields "
            "on the command line) naming their roles in order, e.g. fields=['instruction', 'input', 'output'] for alpaca_prompt.format(instruction, "
            "input, output), or fields=['instruction', 'input', 'context'] for the RAG variant."
        )
    fields = list(fields or [])
    out: List[str] = []
    auto = 0
    for literal, name, spec, conversion in parts:
        out.append(_raw(literal))
        if name is None:
            continue
        if name and not (name.isdigit() or name.isidentifier()):
            raise PromptFormatError(
                f"Placeholder {{{name}}} is not a plain name: use {{}} or {{instruction}}-style names."
            )
        if spec or conversion:
            raise PromptFormatError(f"Placeholder {{{name}!{conversion}:{spec}}} has a format spec; use plain {{}}.")
        if name == "" or name.isdigit():
            index = auto if name == "" else int(name)
            auto += name == ""
            if index >= len(fields):
                raise PromptFormatError(
                    f"The template has more positional placeholders than fields ({len(fields)} given: {fields}); "
                    "name one role per '{}' in order."
                )
            name = fields[index]
        out.append("{{ " + name + " }}")
    return "".join(out)


def _markers(static: str) -> List[str]:
    """Section markers in a layout's fixed text: ``### Header:`` lines and ``<|tag|>`` / ``<s>``-style tags.

    When the model writes one of them after its answer, it has started a new example: they become stop strings.
    """
    found: List[str] = []
    for line in static.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"#{1,6}\s*\S.{0,40}", stripped):
            found.append(stripped)
    found += re.findall(r"<\|[A-Za-z0-9_]+\|>|</?s>|<eos>|<bos>|<end_of_turn>|<start_of_turn>", static)
    return list(dict.fromkeys(found))


def _chat_turn_end(tokenizer: Any, specials: Tuple[str, ...]) -> Tuple[str, ...]:
    """The special tokens a chat template writes directly after the assistant's answer."""
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _ANSWER_SENTINEL}]
    try:
        text = PromptFormat(name="chat")._render_chat(messages, tokenizer, False)
    except Exception:  # noqa: BLE001 - a template that cannot render an answer has no turn end to read
        return ()
    after = text.split(_ANSWER_SENTINEL, 1)[1] if _ANSWER_SENTINEL in text else ""
    found: List[str] = []
    while after:
        token = next((t for t in sorted(specials, key=len, reverse=True) if t and after.startswith(t)), None)
        if token is None:
            break
        found.append(token)
        after = after[len(token) :]
    return tuple(found)


def _static_text(jinja_text: str) -> str:
    """The literal text of a Jinja2 template (expressions and statements removed)."""
    return re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "\n", jinja_text, flags=re.S)


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
            return (
                cls.load(path.parent)
                if path.name == FORMAT_FILE
                else cls.from_dict(json.loads(path.read_text("utf-8")))
            )
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
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt template {path} does not exist.")
        return cls.from_string(path.read_text(encoding="utf-8"), name=path.stem, system=system)

    @classmethod
    def from_file(cls, path: str | Path, fields: Optional[Sequence[str]] = None) -> PromptFormat:
        """Reads a template file: Jinja2 (``{{ name }}``) or a Python format string (``{}``/``{name}``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Prompt template {path} does not exist.")
        return cls.from_string(path.read_text(encoding="utf-8"), fields=fields, name=path.stem)

    @classmethod
    def from_string(
        cls, text: str, fields: Optional[Sequence[str]] = None, name: Optional[str] = None, system: str = ""
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

        Raises:
            PromptFormatError: No instruction variable, an unknown variable, or bad syntax.
        """
        if not isinstance(text, str) or not text.strip():
            raise PromptFormatError("The prompt template is empty.")
        if fields is not None:
            unknown = [f for f in fields if f not in _ROLE_OF]
            if unknown:
                raise PromptFormatError(
                    f"Unknown field name(s) {unknown} in fields: use roles from {', '.join(ROLE_NAMES)}."
                )
        jinja = text if (_is_jinja(text) and fields is None) else _python_format_to_jinja(text, fields)
        return cls._from_jinja(jinja, name=name or "custom", system=system)

    @classmethod
    def _from_jinja(cls, text: str, name: str, system: str) -> PromptFormat:
        variables = _template_variables(text)
        by_role: Dict[str, str] = {}
        for var in variables:
            if var in _ROLE_OF:
                by_role.setdefault(_ROLE_OF[var], var)
        if "instruction" not in by_role:
            raise PromptFormatError(
                f"Template {name!r} has no instruction variable: it uses {variables or 'no variables'}, "
                f"expected one of {', '.join(ROLE_NAMES['instruction'])} (roles a template may use: "
                + "; ".join(f"{role}: {'/'.join(names)}" for role, names in ROLE_NAMES.items())
                + ")."
            )
        # Variables of no known role (e.g. {{ persona }}) are extra record fields; empty at inference
        # unless given as keyword arguments. bos_token/eos_token come from the tokenizer, as in chat templates.
        query_var = by_role["instruction"]
        context_var = by_role.get("context") or by_role.get("input")
        input_var = by_role.get("input") if "context" in by_role else None
        output_var = by_role.get("output")
        reasoning_var = by_role.get("reasoning")
        # Generation starts at the first of reasoning/output that the template prints; the last one printed
        # holds the final answer (reasoning's output), and the text between them marks where it starts.
        slots = sorted((m.start(), m.end(), v) for v in (reasoning_var, output_var) if v and (m := _slot(text, v)))
        answer_var = slots[0][2] if slots else ""
        between = text[slots[0][1] : slots[1][0]] if len(slots) == 2 else ""
        answer_marker = between.strip() or None
        # What the template writes after the answer: its own end marker means no EOS is appended.
        tail = ""
        if slots:
            after = text[slots[-1][1] :]
            tail = _static_text(after) + ("<eos>" if _slot(after, "eos_token") else "")  # {{ eos_token }}: EOS written
        append_eos = not any(marker in tail for marker in _END_MARKERS)
        prompt_static = _static_text(text[: slots[0][0]] if slots else text)
        in_answer = set(_markers(_static_text(between)))
        stop = [m for m in dict.fromkeys(_markers(prompt_static) + _markers(tail)) if m not in in_answer]
        optional = [v for v in variables if _ROLE_OF.get(v) in ("flag", "system")]
        tokenizer_vars = [v for v in variables if v in _TOKENIZER_VARS]
        if input_var:
            optional.append(input_var)  # our users' input is usually empty
        required = [v for v in variables if v not in optional and v not in tokenizer_vars]
        if not output_var:
            required.append("output")  # no answer slot: training appends the record's answer
        return cls(
            name=name,
            template=text,
            query_var=query_var,
            context_var=context_var,
            answer_var=answer_var,
            system=system,
            answer_marker=answer_marker,
            append_eos=append_eos,
            stop=stop,
            record_fields=required + [v for v in optional if _ROLE_OF.get(v) != "system"],
            input_var=input_var,
            flag_var=by_role.get("flag"),
            output_var=output_var if output_var != answer_var else None,
            optional_fields=[v for v in optional if _ROLE_OF.get(v) != "system"],
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptFormat:
        """A format from the dictionary :meth:`save` writes (unknown keys ignored)."""
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        if data.get("template") and not data.get("stop") and data.get("name") not in BUILTIN_FORMATS:
            # Written before stop strings were derived from users' templates: derive them now.
            try:
                data["stop"] = cls._from_jinja(data["template"], data.get("name") or "custom", "").stop
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
        return _template_variables(self.template) if self.template else []

    def _render(self, values: Mapping[str, Any], system: Optional[str], tokenizer: Any) -> str:
        variables = dict(values)
        for name in _TOKENIZER_VARS:
            variables.setdefault(name, getattr(tokenizer, name, None) or "")
        flag = variables.get(self.flag_var or "flag")
        # An explicit system text wins, then a record's own system field, then the flag table / default.
        given = next((variables[n] for n in ROLE_NAMES["system"] if variables.get(n)), None)
        chosen = system or given or self.system_for(flag, None)
        for name in ROLE_NAMES["system"]:
            variables[name] = chosen
        try:
            return _sandbox().from_string(self.template).render(**variables)
        except Exception as err:  # jinja2.UndefinedError and sandbox errors
            raise PromptFormatError(f"Prompt format {self.name!r} cannot be rendered: {err}") from err

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
        user = f"Context:\n{context}\n\nQuestion: {instruction}" if context else instruction
        messages = [{"role": "system", "content": self.system_for(None, system)}]
        messages += [{"role": role, "content": content} for role, content in history]
        messages.append({"role": "user", "content": user})
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def _render_chat(self, messages: List[Dict[str, str]], tokenizer: Any, generation_prompt: bool) -> str:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "The 'chat' prompt format needs a tokenizer with a chat template; "
                "pass tokenizer=... or choose another format."
            )
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        except Exception:  # jinja2.TemplateError: Gemma's rejects a system role, Gemma's and Nemo's unalternated turns
            return self._render_alternating(messages, tokenizer, generation_prompt)
        system = messages[0]["content"].strip() if messages and messages[0]["role"] == "system" else ""
        if system and system not in text:
            # Phi-3-medium's template drops system messages silently (Nemo's, when the last turn is the answer).
            return self._render_alternating(messages, tokenizer, generation_prompt)
        return text

    @staticmethod
    def _render_alternating(messages: List[Dict[str, str]], tokenizer: Any, generation_prompt: bool) -> str:
        """The conversation as the strictest templates take it: the system text at the head of the first user
        turn, consecutive turns of one role joined, nothing before the first user turn."""
        merged: List[Dict[str, str]] = []
        pending = [m["content"] for m in messages if m["role"] == "system" and m["content"]]
        for message in messages:
            if message["role"] == "system":
                continue
            if not merged and message["role"] != "user":
                pending.append(message["content"])  # an assistant's greeting before any question
                continue
            if merged and merged[-1]["role"] == message["role"]:
                merged[-1]["content"] += "\n\n" + message["content"]
            else:
                merged.append({"role": message["role"], "content": message["content"]})
        if merged and pending:
            merged[0]["content"] = "\n\n".join([*pending, merged[0]["content"]])
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=generation_prompt)

    def turn_end_tokens(self, tokenizer: Any) -> List[str]:
        """The special token(s) that end the assistant's turn in this layout (what generation must stop at).

        For ``chat``, read from the tokenizer's template: the special tokens it writes right after an answer
        (``<|eot_id|>``, ``<end_of_turn>``, ``<|end|>``, ``<|im_end|>``, Mistral's ``</s>``), which need not be
        the tokenizer's EOS. Template layouts: their stop strings that are special tokens.
        """
        specials = set(getattr(tokenizer, "all_special_tokens", ()) or ())
        # Added tokens marked special count too: the real Phi-3's <|end|> is one, yet in no named role.
        decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
        specials |= {t.content for t in decoder.values() if getattr(t, "special", False)}
        if not self.is_chat:
            return [s for s in self.stop if s in specials]
        return list(_chat_turn_end(tokenizer, tuple(sorted(specials))))

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
            return self._render_chat(messages, tokenizer, generation_prompt=True)
        if history:
            lines = [f"{role}: {content}" for role, content in history]
            instruction = "\n".join([*lines, f"user: {instruction}"])
        values: Dict[str, Any] = {name: "" for name in self._variables() if name not in _TOKENIZER_VARS}
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
        values[self.answer_var] = _ANSWER_SENTINEL
        return self._render(values, system, tokenizer).split(_ANSWER_SENTINEL, 1)[0]

    def _record_value(self, record: Mapping[str, Any], var: str) -> Any:
        """A record's value for a template variable: its own name first, then the other names of its role."""
        if var in record and record[var] is not None:
            return record[var]
        for name in ROLE_NAMES.get(_ROLE_OF.get(var, ""), ()):
            if record.get(name) is not None:
                return record[name]
        return None

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
            instruction = str(self._record_value(record, "instruction") or "")
            context = str(self._record_value(record, "input") or self._record_value(record, "context") or "")
            answer = str(self._record_value(record, "output") or "")
            prompt = self._render_chat(self.chat_messages(instruction, context, system=system), tokenizer, True)
            full = self._render_chat(
                self.chat_messages(instruction, context, system=system, answer=answer), tokenizer, False
            )
            # The chat template closes the turn itself (its end token, often a newline): no EOS is added.
            if full.startswith(prompt):
                return prompt, full[len(prompt) :]
            return "", full
        values: Dict[str, Any] = {}
        for var in self._variables():
            if var in _TOKENIZER_VARS:
                continue
            value = self._record_value(record, var)
            if value is not None:
                values[var] = value
            elif var in self.optional_fields or _ROLE_OF.get(var) == "system" or var == self.answer_var:
                values[var] = ""
            # else: left undefined, so rendering names the missing field.
        flag = self._record_value(record, self.flag_var or "flag")
        values[self.flag_var or "flag"] = "" if flag is None else flag
        answer_text = ""
        if self.answer_var:
            answer_text = str(values.get(self.answer_var, ""))
            values[self.answer_var] = _ANSWER_SENTINEL
        rendered = self._render(values, system, tokenizer)
        if self.answer_var:
            prompt, rest = rendered.split(_ANSWER_SENTINEL, 1)
            completion = answer_text + rest
        else:
            prompt, completion = rendered, str(self._record_value(record, "output") or "")
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
        if not isinstance(record, Mapping):
            raise PromptFormatError(f"{source}, record {number}: expected a JSON object, got {type(record).__name__}.")
        for name in self.record_fields:
            value = self._record_value(record, name)
            shown = ROLE_NAMES.get(_ROLE_OF.get(name, ""), (name,))[0] if name not in record else name
            if value is None:
                if name in self.optional_fields:
                    continue
                raise PromptFormatError(
                    f"{source}, record {number}: missing field {shown!r} (format {self.name!r} needs "
                    f"{', '.join(self.dataset_fields())})."
                )
            if not isinstance(value, str):
                raise PromptFormatError(
                    f"{source}, record {number}: field {shown!r} must be a string, got {type(value).__name__}."
                )

    def dataset_fields(self) -> List[str]:
        """The record fields a data file needs, in the names data files use (``instruction``, ``answer`` ...)."""
        names = [FIELD_ALIASES.get(var, var) for var in self.record_fields if var not in self.optional_fields]
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------------ LlamaIndex
    def _template(self, text: str, prompt_type: Any) -> Any:
        from llama_index.core.prompts import PromptTemplate

        return PromptTemplate(text, prompt_type=prompt_type, metadata={LAYOUT_METADATA_KEY: self.name})

    def qa_template(self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None) -> Any:
        """A LlamaIndex ``PromptTemplate`` for RAG in this layout.

        ``{query_str}`` fills the instruction slot and ``{context_str}`` the context slot (formats
        without one, like ``alpaca``, put the context in their input slot).
        """
        from llama_index.core.prompts.prompt_type import PromptType

        text = self.render_prompt("{query_str}", "{context_str}", flag=flag, system=system, tokenizer=tokenizer)
        return self._template(text, PromptType.QUESTION_ANSWER)

    def refine_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex refine ``PromptTemplate`` in this layout, used when context spans several calls."""
        from llama_index.core.prompts.prompt_type import PromptType

        text = self.render_prompt(REFINE_INSTRUCTION, "{context_msg}", flag=flag, system=system, tokenizer=tokenizer)
        return self._template(text, PromptType.REFINE)

    def summary_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex summary ``PromptTemplate`` (``tree_summarize``): the query and the context to summarize."""
        from llama_index.core.prompts.prompt_type import PromptType

        text = self.render_prompt("{query_str}", "{context_str}", flag=flag, system=system, tokenizer=tokenizer)
        return self._template(text, PromptType.SUMMARY)

    def condense_template(
        self, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> Any:
        """A LlamaIndex condense-question ``PromptTemplate`` (``{chat_history}``, ``{question}``) in this layout."""
        from llama_index.core.prompts.prompt_type import PromptType

        text = self.render_prompt(
            CONDENSE_INSTRUCTION, "{chat_history}", flag=flag, system=system, tokenizer=tokenizer
        )
        return self._template(text, PromptType.CUSTOM)

    def looks_laid_out(
        self, text: str, *, system: Optional[str] = None, tokenizer: Any = None, flag: Optional[str] = None
    ) -> bool:
        """Whether ``text`` already is a prompt in this layout (starts with its head or ends with its tail)."""
        try:
            probe = self.render_prompt(
                _ANSWER_SENTINEL, _ANSWER_SENTINEL, flag=flag, system=system, tokenizer=tokenizer
            )
        except PromptFormatError:
            return False
        head, _, rest = probe.partition(_ANSWER_SENTINEL)
        tail = rest.rpartition(_ANSWER_SENTINEL)[2] if _ANSWER_SENTINEL in rest else rest
        return (len(head.strip()) >= 4 and text.startswith(head)) or (len(tail.strip()) >= 4 and text.endswith(tail))

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
        input_var="input",
        system=ALPACA_CONTEXT_SYSTEM,
        stop=["### Instruction:", "### Input:", "### Context:", "### Response:"],
        record_fields=["instruction", "context", "output", "input"],
        optional_fields=["input"],
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
        output_var="output",
        flag_var="flag",
        systems_by_flag=dict(REASONING_SYSTEMS),
        answer_marker="<|response|>",
        append_eos=False,
        stop=["<|endoftext|>", "<|instruction|>", "<|context|>"],
        record_fields=["instruction", "input", "reasoning", "output", "flag"],
        optional_fields=["flag"],
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


# ---------------------------------------------------------------------------------------------- tokens
def encode_prompt(tokenizer: Any, text: str) -> List[int]:
    """Token ids of a prompt as the model receives it: the tokenizer's BOS once, never twice.

    The tokenizer's special tokens are added unless the text already starts with its BOS marker (the
    reasoning layout's ``<s>``, most chat templates); an EOS some tokenizers append is dropped. The
    finetune recipe tokenizes training prompts with this same function, so the ids the trainer sees up
    to the answer are exactly the ids ``generate`` receives.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    ids = list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    eos, eos_id = getattr(tokenizer, "eos_token", None), getattr(tokenizer, "eos_token_id", None)
    if add_special and ids and eos_id is not None and ids[-1] == eos_id and not (eos and text.endswith(eos)):
        ids.pop()
    return ids


def encode_training(tokenizer: Any, prompt: str, completion: str) -> List[int]:
    """Token ids of one training example: :func:`encode_prompt` of the prompt, then the completion's tokens."""
    if not prompt:
        return encode_prompt(tokenizer, completion)
    prompt_ids = encode_prompt(tokenizer, prompt)
    whole = encode_prompt(tokenizer, prompt + completion)
    if whole[: len(prompt_ids)] == prompt_ids:
        return whole  # the user's text tokenized as one string, its prompt part exactly the inference ids
    # A merge across the boundary: keep the inference ids and tokenize the answer on its own.
    return prompt_ids + list(tokenizer(completion, add_special_tokens=False)["input_ids"])
