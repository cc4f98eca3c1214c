"""Users' templates as Jinja2: compiling ``.j2`` texts and Python format strings, reading a layout from its text.

Templates are rendered in a sandbox with ``StrictUndefined``. A Python format string (``"...{}..."`` with
positional or named fields) is converted to the same Jinja2 text, byte for byte. :func:`layout_fields` reads
from a template's text everything a :class:`~llama_unsloth.layouts.format.PromptFormat` needs: which
variable plays which role, where the answer starts, whether the template writes its own end marker, and
which section markers end generation.
"""

from __future__ import annotations

import difflib
import functools
import re
import string
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from llama_unsloth.errors import PromptFormatError, UnreadableFileError
from llama_unsloth.layouts.records import ROLE_NAMES, ROLE_OF
from llama_unsloth.layouts.tokens import BOUNDARY_TOKENS, END_MARKERS
from llama_unsloth.once import warn_once
from llama_unsloth.text_files import read_text

#: Stands in for the answer while rendering: the prompt is the text before it.
ANSWER_SENTINEL = "\x00ANSWER\x00"
#: Variables filled from the tokenizer, as in chat templates; never record fields.
TOKENIZER_VARS = ("bos_token", "eos_token")

_JINJA_SYNTAX = re.compile(r"\{\{-?\s*[A-Za-z_][\w.]*\s*(\|[^}]*)?-?\}\}|\{%-?.*?-?%\}", re.S)
_PYTHON_PLACEHOLDER = re.compile(r"(?<!\{)\{(\d*|[A-Za-z_]\w*)\}(?!\})")
# `<|tag|>`-style tags of any name, then the known boundary tokens of other shapes (longest first).
_TAG_MARKER = re.compile(
    "|".join([r"<\|[A-Za-z0-9_]+\|>", *(re.escape(t) for t in sorted(BOUNDARY_TOKENS, key=len, reverse=True))])
)
# One answer slot: (start, end, variable name) of where the template prints it.
_Slot = Tuple[int, int, str]


def sandbox() -> Any:
    """The Jinja2 environment every layout renders in."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # Users share .j2 files: a sandbox stops a template from reaching Python internals.
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def template_variables(text: str) -> List[str]:
    """The variables a Jinja2 text reads, sorted.

    Raises:
        PromptFormatError: The text is not valid Jinja2.
    """
    from jinja2 import TemplateSyntaxError, meta

    try:
        parsed = sandbox().parse(text)
    except TemplateSyntaxError as err:
        raise PromptFormatError(f"Template syntax error on line {err.lineno}: {err.message}") from err
    return sorted(meta.find_undeclared_variables(parsed))


def unknown_variables(text: str) -> List[str]:
    """The variables of a Jinja2 text that no role, tokenizer or Jinja2 global fills, sorted.

    Raises:
        PromptFormatError: The text is not valid Jinja2.
    """
    known = {*ROLE_OF, *TOKENIZER_VARS, *sandbox().globals}  # globals: range, namespace, ...
    return [name for name in template_variables(text) if name not in known]


def warn_unknown_variables(text: str, source: str) -> None:
    """Warns once, in one line, about variables of a user's template that the layout does not fill.

    Such a variable (``{{ persona }}``, or a typo such as ``{{ contxt }}``) renders empty at inference and
    is a required record field in training. It is not refused: users' own ``.j2`` files must work as-is,
    and an extra variable their records carry is theirs to use.

    Args:
        text: The Jinja2 template.
        source: The template file (or the layout's name) the message names.
    """
    unknown = unknown_variables(text)
    if not unknown:
        return
    known = [*ROLE_OF, *TOKENIZER_VARS]
    hints = [
        f"{{{{ {name} }}}}"
        + (f" (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else "")
        for name in unknown
    ]
    one = len(unknown) == 1
    warn_once(
        ("template-variables", source, tuple(unknown)),
        f"Prompt template {source}: {', '.join(hints)} {'is not a variable' if one else 'are not variables'} the layout "
        f"fills: {'it renders' if one else 'they render'} empty at inference unless passed, and every training record "
        f"must have {'that field' if one else 'those fields'}. Known variables: {', '.join(known)}.",
    )


def render_jinja(template: str, variables: Mapping[str, Any], layout_name: str) -> str:
    """Renders a layout's Jinja2 text in the sandbox.

    Raises:
        PromptFormatError: A variable is missing, or the template broke out of the sandbox's rules.
    """
    try:
        return sandbox().from_string(template).render(**variables)
    except Exception as err:  # jinja2.UndefinedError and sandbox errors
        raise PromptFormatError(f"Prompt format {layout_name!r} cannot be rendered: {err}") from err


def read_template(path: str | Path) -> str:
    """The text of a user's template file, as it is (UTF-8; a file saved as CP932 or UTF-16 decoded as such).

    Raises:
        FileNotFoundError: The file does not exist.
        PromptFormatError: The file is binary or in no text encoding (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt template {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        if "\x00" not in text:  # NULs: UTF-16 without a byte-order mark, which is valid UTF-8 byte for byte
            return text
    except UnicodeDecodeError:
        pass
    # Saved by a Windows editor: detected as corpus files are, rather than a codec error naming no file.
    try:
        decoded = read_text(path).text
    except UnreadableFileError as err:
        raise PromptFormatError(f"Prompt template {err}") from err
    return decoded.replace("\r\n", "\n").replace("\r", "\n")  # newlines as read_text(encoding=...) gives them


def slot(text: str, name: str) -> Optional[re.Match]:
    """Where ``{{ name }}`` is printed in a Jinja2 text (filters allowed), or None."""
    return re.search(r"\{\{-?\s*" + re.escape(name) + r"\s*(\|[^}]*)?-?\}\}", text)


def is_jinja(text: str) -> bool:
    """Jinja2 when it has ``{{ name }}``/``{% ... %}`` and no single-brace ``{}``/``{name}`` placeholder."""
    return bool(_JINJA_SYNTAX.search(text)) and not _PYTHON_PLACEHOLDER.search(text)


def _raw(literal: str) -> str:
    """A literal text as Jinja2 source: wrapped in a raw block when it contains Jinja2 syntax."""
    if any(token in literal for token in ("{{", "{%", "{#", "}}", "%}", "#}")):
        return "{% raw %}" + literal + "{% endraw %}"
    return literal


def python_format_to_jinja(text: str, fields: Optional[Sequence[str]]) -> str:
    """Converts a ``str.format`` template (``{}``, ``{0}`` or ``{name}``) into the same Jinja2 text.

    Args:
        text: The format string.
        fields: Roles of the positional placeholders, in order.

    Raises:
        PromptFormatError: Not a format string, positional placeholders without (enough) fields, or a
            placeholder with an index, attribute, conversion or format spec.
    """
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


def to_jinja(text: str, fields: Optional[Sequence[str]] = None) -> str:
    """A user's template text as Jinja2: as-is when it is Jinja2, converted when it is a Python format string.

    Args:
        text: The template.
        fields: Roles of positional ``{}`` placeholders, in order; given, the text is read as a format string.

    Raises:
        PromptFormatError: The text is empty, ``fields`` names an unknown role, or the format string is invalid.
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptFormatError("The prompt template is empty.")
    if fields is not None:
        unknown = [f for f in fields if f not in ROLE_OF]
        if unknown:
            raise PromptFormatError(
                f"Unknown field name(s) {unknown} in fields: use roles from {', '.join(ROLE_NAMES)}."
            )
    return text if (is_jinja(text) and fields is None) else python_format_to_jinja(text, fields)


def markers(static: str) -> List[str]:
    """Section markers in a layout's fixed text: ``### Header:`` lines and ``<|tag|>`` / ``<s>``-style tags.

    When the model writes one of them after its answer, it has started a new example: they become stop strings.
    """
    found: List[str] = []
    for line in static.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"#{1,6}\s*\S.{0,40}", stripped):
            found.append(stripped)
    found += _TAG_MARKER.findall(static)
    return list(dict.fromkeys(found))


def static_text(jinja_text: str) -> str:
    """The literal text of a Jinja2 template (expressions and statements removed)."""
    return re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "\n", jinja_text, flags=re.S)


def _variables_by_role(variables: Sequence[str], name: str) -> Dict[str, str]:
    """The first variable of each role a template uses; the template must have an instruction."""
    by_role: Dict[str, str] = {}
    for var in variables:
        if var in ROLE_OF:
            by_role.setdefault(ROLE_OF[var], var)
    if "instruction" not in by_role:
        raise PromptFormatError(
            f"Template {name!r} has no instruction variable: it uses {variables or 'no variables'}, "
            f"expected one of {', '.join(ROLE_NAMES['instruction'])} (roles a template may use: "
            + "; ".join(f"{role}: {'/'.join(names)}" for role, names in ROLE_NAMES.items())
            + ")."
        )
    return by_role


def _end_and_stops(text: str, slots: Sequence[_Slot], between: str) -> Tuple[bool, List[str]]:
    """Whether training must append EOS, and the stop strings: markers of the fixed text, none of the answer's."""
    # What the template writes after the answer: its own end marker means no EOS is appended.
    tail = ""
    if slots:
        after = text[slots[-1][1] :]
        tail = static_text(after) + ("<eos>" if slot(after, "eos_token") else "")  # {{ eos_token }}: EOS written
    append_eos = not any(marker in tail for marker in END_MARKERS)
    prompt_static = static_text(text[: slots[0][0]] if slots else text)
    in_answer = set(markers(static_text(between)))
    stop = [m for m in dict.fromkeys(markers(prompt_static) + markers(tail)) if m not in in_answer]
    return append_eos, stop


def _record_fields(
    variables: Sequence[str], input_var: Optional[str], output_var: Optional[str]
) -> Tuple[List[str], List[str]]:
    """The record fields a layout needs, and which of them may be missing."""
    optional = [v for v in variables if ROLE_OF.get(v) in ("flag", "system")]
    if input_var:
        optional.append(input_var)  # our users' input is usually empty
    required = [v for v in variables if v not in optional and v not in TOKENIZER_VARS]
    if not output_var:
        required.append("output")  # no answer slot: training appends the record's answer
    # System variables are no record fields: the layout fills them (a record's own system text still wins).
    not_system = [v for v in optional if ROLE_OF.get(v) != "system"]
    return required + not_system, not_system


def layout_fields(text: str, name: str, system: str) -> Dict[str, Any]:
    """The ``PromptFormat`` fields of a Jinja2 layout, read from its text.

    Args:
        text: The Jinja2 template, used byte for byte.
        name: The layout's name.
        system: Text for a ``{{ system }}`` variable.

    Returns:
        Keyword arguments for ``PromptFormat``.

    Raises:
        PromptFormatError: No instruction variable, or bad syntax.
    """
    variables = template_variables(text)
    by_role = _variables_by_role(variables, name)
    # Variables of no known role (e.g. {{ persona }}) are extra record fields; empty at inference
    # unless given as keyword arguments. bos_token/eos_token come from the tokenizer, as in chat templates.
    output_var = by_role.get("output")
    input_var = by_role.get("input") if "context" in by_role else None
    # Generation starts at the first of reasoning/output that the template prints; the last one printed
    # holds the final answer (reasoning's output), and the text between them marks where it starts.
    slots: List[_Slot] = sorted(
        (m.start(), m.end(), v) for v in (by_role.get("reasoning"), output_var) if v and (m := slot(text, v))
    )
    answer_var = slots[0][2] if slots else ""
    between = text[slots[0][1] : slots[1][0]] if len(slots) == 2 else ""
    append_eos, stop = _end_and_stops(text, slots, between)
    record_fields, optional_fields = _record_fields(variables, input_var, output_var)
    return {
        "name": name,
        "template": text,
        "query_var": by_role["instruction"],
        "context_var": by_role.get("context") or by_role.get("input"),
        "answer_var": answer_var,
        "system": system,
        "answer_marker": between.strip() or None,
        "append_eos": append_eos,
        "stop": stop,
        "record_fields": record_fields,
        "input_var": input_var,
        "flag_var": by_role.get("flag"),
        "output_var": output_var if output_var != answer_var else None,
        "optional_fields": optional_fields,
    }
