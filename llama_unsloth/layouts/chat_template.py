"""A layout as a Jinja chat template: what vLLM, llama.cpp and ``tokenizer.apply_chat_template`` prompt with.

:func:`chat_template` turns a template layout (built-in, a user's ``.j2`` file or notebook format string) into a
Hugging Face chat template whose ``apply_chat_template(messages, add_generation_prompt=True)`` text is
:meth:`~llama_unsloth.layouts.format.PromptFormat.render_prompt`'s, byte for byte, and whose tokens
(``tokenize=True``, which adds no special tokens) are :func:`~llama_unsloth.layouts.tokens.encode_prompt`'s: the
template writes ``{{ bos_token }}`` exactly where ``encode_prompt`` would add the tokenizer's BOS.

How a conversation fills the layout (the same as :class:`~llama_unsloth.llms.layout.LayoutPrompts` does for
``UnslothLLM`` and ``ServedLLM``):

* the last user message is the instruction; earlier user/assistant turns are written before it as
  ``role: text`` lines (``render_prompt(history=...)``);
* the first non-empty system message replaces the layout's system text (a layout without a system slot gets
  it at the head of the instruction, as ``render_prompt(system=...)`` does);
* retrieved context reaches the context slot from any of: a message with role ``"context"`` (several are
  joined by a blank line), Hugging Face's ``documents=[{"text": ...}]`` argument, or the system message
  LlamaIndex's ``ContextChatEngine`` / ``CondensePlusContextChatEngine`` send (their context template around
  the retrieved text, then the engine's ``system_prompt``: the text is taken out of it, the rest is the system);
  their refine message becomes the layout's refine request;
* a ``flag`` template argument (``apply_chat_template(..., flag="logician")``, vLLM's ``chat_template_kwargs``)
  chooses the reasoning layout's system text; the layout's other variables may be passed the same way;
* ``add_generation_prompt=False`` with an assistant message last: the prompt, then that message as the start of
  the answer (``continue_final_message``).

The template is rendered once at build time in an environment set up like transformers' (``trim_blocks`` and
``lstrip_blocks`` on, which would change a user's ``{% if %}`` lines: every tag of the layout is written with
``+`` so they do not), and refused if it does not give the layout's prompt.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

from llama_unsloth.errors import PromptFormatError
from llama_unsloth.layouts.llamaindex import REFINE_INSTRUCTION
from llama_unsloth.layouts.records import DEFAULT_FLAG, ROLE_NAMES
from llama_unsloth.layouts.templates import TOKENIZER_VARS, template_variables

# ``fmt`` below is a PromptFormat. Not imported, even for type checking: format.py imports this module (the
# to_chat_template delegate), and layouts' modules import only downward.
PromptFormat = Any

#: The file transformers 5 reads a tokenizer's chat template from (and vLLM, and llama.cpp's converter).
CHAT_TEMPLATE_FILE = "chat_template.jinja"
#: The base model's own chat template, kept beside the layout's in every folder a fine-tune writes.
BASE_CHAT_TEMPLATE_FILE = "chat_template.base.jinja"
#: The role of a message that carries retrieved context (a plain chat client's way to fill the context slot).
CONTEXT_ROLE = "context"
#: The first text of every template :func:`chat_template` writes: how a template of ours is recognised.
MARKER = "{#- llama-unsloth layout"

# Stands in for the answer inside the template: plain ASCII, as engines' template parsers take no NUL bytes.
_SENTINEL = "[[LLAMA-UNSLOTH:ANSWER]]"
_RAW = re.compile(r"(\{%[-+]?\s*raw\s*[-+]?%\})(.*?)(\{%[-+]?\s*endraw\s*[-+]?%\})", re.S)
_TAG = re.compile(r"\{([%#])(.*?)\1\}", re.S)


def _literal(value: Any) -> str:
    """A Python value as a Jinja literal (JSON's escapes are Jinja's string escapes; non-ASCII stays as it is)."""
    return json.dumps(value, ensure_ascii=False)


def _keep_whitespace(tag: re.Match) -> str:
    """A block or comment tag with ``+`` on each unmarked side: transformers' trim/lstrip_blocks leave it alone."""
    kind, inner = tag.group(1), tag.group(2)
    head = "" if inner[:1] in "-+" else "+"
    tail = "" if inner[-1:] in "-+" else "+"
    return "{" + kind + head + inner + tail + kind + "}"


def as_transformers_jinja(text: str) -> str:
    """A layout's Jinja text that renders under ``trim_blocks``/``lstrip_blocks`` as it does without them.

    Args:
        text: The layout's template.
    """
    out: List[str] = []
    last = 0
    for raw in _RAW.finditer(text):
        out.append(_TAG.sub(_keep_whitespace, text[last : raw.start()]))
        # A raw block's opening tag takes no trailing '+' (and trim_blocks does not touch it); its body is text.
        begin = raw.group(1)
        out.append(begin if begin[2:3] in "-+" else "{%+" + begin[2:])
        out.append(raw.group(2))
        out.append(_TAG.sub(_keep_whitespace, raw.group(3)))
        last = raw.end()
    out.append(_TAG.sub(_keep_whitespace, text[last:]))
    return "".join(out)


def tokenizer_adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS before a text it encodes with special tokens (what ``encode_prompt`` adds)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if tokenizer is None or bos_id is None or not getattr(tokenizer, "bos_token", None):
        return False
    ids = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    return bool(ids) and ids[0] == bos_id and plain[:1] != [bos_id]


def _context_forms() -> List[Dict[str, str]]:
    """LlamaIndex's context chat engines' system texts, split around the retrieved text (and the earlier answer)."""
    from llama_index.core.chat_engine import condense_plus_context, context

    forms = []
    for text, kind in (
        (context.DEFAULT_CONTEXT_TEMPLATE, "qa"),
        (context.DEFAULT_REFINE_TEMPLATE, "refine"),
        (condense_plus_context.DEFAULT_CONTEXT_PROMPT_TEMPLATE, "qa"),
        (condense_plus_context.DEFAULT_CONTEXT_REFINE_PROMPT_TEMPLATE, "refine"),
    ):
        parts = re.split(r"\{(context_str|context_msg|existing_answer)\}", text)
        names = parts[1::2]
        if kind == "qa" and len(parts) == 3:
            forms.append({"kind": kind, "head": parts[0], "mid": "", "tail": parts[2]})
        elif kind == "refine" and names == ["context_msg", "existing_answer"]:
            forms.append({"kind": kind, "head": parts[0], "mid": parts[2], "tail": parts[4]})
    return forms


def _refine_instruction() -> str:
    """A Jinja expression of the refine instruction, the question being ``lu_last`` and the earlier answer ``lu.existing``."""
    values = {"query_str": "lu_last", "existing_answer": "lu.existing"}
    pieces = []
    for literal, name, _, _ in string.Formatter().parse(REFINE_INSTRUCTION):
        if literal:
            pieces.append(_literal(literal))
        if name:
            pieces.append(values[name])
    return " ~ ".join(pieces)


# The conversation read into `lu`: system text, context, the turns, the refine request, the start of an answer.
_CONVERSATION = """{%- macro lu_text(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is iterable and content is not mapping -%}
{%- for part in content if part['type'] == 'text' -%}{{ '\\n' if not loop.first }}{{ part['text'] }}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set lu = namespace(system='', has_system=false, context='', turns=[], kind='qa', existing='', prefill=none) -%}
{%- set lu_forms = FORMS -%}
{%- set lu_messages = messages -%}
{%- if not add_generation_prompt and messages and messages[-1]['role'] == 'assistant' -%}
{%- set lu.prefill = lu_text(messages[-1]['content']) -%}
{%- set lu_messages = messages[:-1] -%}
{%- endif -%}
{%- for m in lu_messages -%}
{%- set c = lu_text(m['content']) -%}
{%- if m['role'] == CONTEXT_ROLE -%}
{%- if c -%}{%- set lu.context = lu.context ~ ('\\n\\n' if lu.context else '') ~ c -%}{%- endif -%}
{%- elif m['role'] == 'system' -%}
{%- set f = namespace(found=false) -%}
{%- for form in lu_forms if not f.found and c.startswith(form.head) -%}
{%- set parts = c[form.head|length:].split(form.tail) -%}
{%- set body = parts[:-1]|join(form.tail) -%}
{%- if parts|length > 1 and (not form.mid or form.mid in body) -%}
{%- set f.found = true -%}
{%- set lu.kind = form.kind -%}
{%- set piece = body.split(form.mid, 1)[0] if form.mid else body -%}
{%- set lu.context = lu.context ~ ('\\n\\n' if lu.context and piece else '') ~ piece -%}
{%- if form.mid -%}{%- set lu.existing = body.split(form.mid, 1)[1] -%}{%- endif -%}
{%- if not lu.has_system and parts[-1]|trim -%}{%- set lu.system = parts[-1]|trim -%}{%- set lu.has_system = true -%}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if not f.found and not lu.has_system and c -%}{%- set lu.system = c -%}{%- set lu.has_system = true -%}{%- endif -%}
{%- else -%}
{%- set lu.turns = lu.turns + [[m['role'], c]] -%}
{%- endif -%}
{%- endfor -%}
{%- if documents is defined and documents -%}
{%- for d in documents -%}
{%- set t = d if d is string else (d['text'] if 'text' in d else d['content']) -%}
{%- set lu.context = lu.context ~ ('\\n\\n' if lu.context else '') ~ t -%}
{%- endfor -%}
{%- endif -%}
{%- set lu_last = lu.turns[-1][1] if lu.turns else '' -%}
{%- set lu_query = (REFINE) if lu.kind == 'refine' else lu_last -%}
{%- set lu_instruction = lu_query -%}
{%- if lu.turns|length > 1 -%}
{%- set lu_history = namespace(text='') -%}
{%- for turn in lu.turns[:-1] -%}{%- set lu_history.text = lu_history.text ~ turn[0] ~ ': ' ~ turn[1] ~ '\\n' -%}{%- endfor -%}
{%- set lu_instruction = lu_history.text ~ 'user: ' ~ lu_query -%}
{%- endif -%}
"""


def _system_code(fmt: PromptFormat, variables: Sequence[str]) -> List[str]:
    """Jinja lines choosing the system text, as ``PromptFormat._render`` does: the caller's, then the flag table."""
    lines = []
    has_slot = any(v in ROLE_NAMES["system"] for v in variables)
    if not has_slot and not fmt.systems_by_flag:
        # No system slot: the caller's system text goes at the head of the instruction (render_prompt does so).
        lines.append(
            "{%- if lu.system -%}{%- set lu_instruction = lu.system ~ '\\n\\n' ~ lu_instruction -%}{%- endif -%}"
        )
    flag_var = fmt.flag_var or "flag"
    lines.append(f"{{%- set lu_flag = {flag_var} if {flag_var} is defined and {flag_var} else '' -%}}")
    if fmt.systems_by_flag:
        table = _literal(fmt.systems_by_flag)
        fallback = _literal(fmt.systems_by_flag.get(DEFAULT_FLAG, ""))
        lines.append(
            f"{{%- set lu_system = lu.system or {table}.get(lu_flag or {_literal(DEFAULT_FLAG)}, {fallback}) -%}}"
        )
    else:
        lines.append(f"{{%- set lu_system = lu.system or {_literal(fmt.system)} -%}}")
    return lines


def _variables_code(fmt: PromptFormat) -> str:
    """Jinja lines giving each of the layout's variables its value, the answer slot the sentinel."""
    variables = [v for v in template_variables(fmt.template) if v not in TOKENIZER_VARS]
    lines = []
    if not fmt.context_var:
        # A layout without a context slot gets the retrieved text before the question (render_prompt does so).
        lines.append(
            "{%- if lu.context -%}{%- set lu_instruction = lu.context ~ '\\n\\n' ~ lu_instruction -%}{%- endif -%}"
        )
    lines += _system_code(fmt, variables)
    for name in variables:
        if name == fmt.answer_var:
            value = _literal(_SENTINEL)
        elif name == fmt.query_var:
            value = "lu_instruction"
        elif name == fmt.context_var:
            value = "lu.context"
        elif name in ROLE_NAMES["system"]:
            value = "lu_system"
        elif name == (fmt.flag_var or "flag"):
            value = "lu_flag"
        else:  # the layout's other variables: empty, unless the caller passes them as template arguments
            value = f"{name} if {name} is defined else ''"
        lines.append(f"{{%- set {name} = {value} -%}}")
    return "\n".join(lines) + "\n"


def _output_code(fmt: PromptFormat, add_bos: bool) -> str:
    """The layout rendered, cut where the answer begins, with the BOS ``encode_prompt`` would add."""
    body = "{%- set lu_body +%}" + as_transformers_jinja(fmt.template) + "{%+ endset -%}\n"
    cut = f"lu_body.split({_literal(_SENTINEL)})[0]" if fmt.answer_var else "lu_body"
    bos = (
        "{%- if bos_token is defined and bos_token and not lu_prompt.startswith(bos_token) -%}{{ bos_token }}{%- endif -%}\n"
        if add_bos
        else ""
    )
    return (
        body
        + f"{{%- set lu_prompt = {cut} -%}}\n"
        + bos
        + "{{- lu_prompt -}}\n"
        + "{%- if lu.prefill is not none -%}{{ lu.prefill }}{%- endif -%}"
    )


def chat_template(fmt: PromptFormat, tokenizer: Any = None, *, add_bos: Optional[bool] = None) -> Optional[str]:
    """The layout as a Jinja chat template (see the module docstring for how messages fill it).

    Args:
        fmt: The layout.
        tokenizer: The model's tokenizer: whether it adds a BOS (the template then writes ``{{ bos_token }}``
            where ``encode_prompt`` adds it, so ``apply_chat_template(tokenize=True)`` gives its ids) and its
            BOS/EOS texts for the check below. None: no BOS is written (the text is ``render_prompt``'s).
        add_bos: Whether the template writes the BOS, overriding what the tokenizer says.

    Returns:
        The template text, or None for the ``chat`` layout: its layout is the tokenizer's own chat template,
        which stays as it is.

    Raises:
        PromptFormatError: The template does not render the layout's prompt (a construct of the user's
            template that renders differently in transformers' Jinja environment).
    """
    if fmt.is_chat:
        return None
    writes_bos = tokenizer_adds_bos(tokenizer) if add_bos is None else add_bos
    header = f"{MARKER}: the {fmt.name!r} prompt layout as a chat template; see llama_unsloth/layouts/chat_template.py -#}}\n"
    conversation = _CONVERSATION.replace("CONTEXT_ROLE", _literal(CONTEXT_ROLE))
    conversation = conversation.replace("FORMS", _literal(_context_forms())).replace(
        "(REFINE)", f"({_refine_instruction()})"
    )
    text = header + conversation + _variables_code(fmt) + _output_code(fmt, writes_bos)
    check_chat_template(fmt, text, tokenizer, writes_bos)
    return text


def _transformers_environment() -> Any:
    """A Jinja environment set up as transformers sets up the one it renders chat templates in."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])


def check_chat_template(fmt: PromptFormat, text: str, tokenizer: Any, add_bos: bool) -> None:
    """Renders the template for a probe conversation (system, context, history) and compares with ``render_prompt``.

    Raises:
        PromptFormatError: The two differ.
    """
    tokens = SimpleNamespace(
        bos_token=getattr(tokenizer, "bos_token", None) or "<s>",
        eos_token=getattr(tokenizer, "eos_token", None) or "</s>",
    )
    messages = [
        {"role": "system", "content": "Probe system."},
        {"role": CONTEXT_ROLE, "content": "Probe context."},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Probe question?"},
    ]
    history = [("user", "First question?"), ("assistant", "First answer.")]
    expected = fmt.render_prompt(
        "Probe question?", "Probe context.", system="Probe system.", history=history, tokenizer=tokens
    )
    if add_bos and not expected.startswith(tokens.bos_token):
        expected = tokens.bos_token + expected
    try:
        rendered = (
            _transformers_environment()
            .from_string(text)
            .render(messages=messages, add_generation_prompt=True, **vars(tokens))
        )
    except Exception as err:  # jinja2 errors: the layout's text does not survive being embedded
        raise PromptFormatError(f"Prompt format {fmt.name!r} cannot be written as a chat template: {err}") from err
    if rendered != expected:
        raise PromptFormatError(
            f"Prompt format {fmt.name!r} cannot be written as a chat template: it renders {rendered[:200]!r}... "
            f"where the layout's prompt is {expected[:200]!r}...; keep the layout's prompt_format.json for prompting."
        )


def base_chat_template(tokenizer: Any) -> Optional[str]:
    """The base model's own chat template: the tokenizer's, or, when that is one of ours, the one kept beside it."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template:
        return None
    if template.startswith(MARKER):
        # A fine-tune of a fine-tune: the base template is the one the earlier run kept, not its layout's.
        kept = Path(str(getattr(tokenizer, "name_or_path", "") or "")) / BASE_CHAT_TEMPLATE_FILE
        return kept.read_text(encoding="utf-8") if kept.is_file() else None
    return template


def write_chat_template(fmt: PromptFormat, tokenizer: Any, folder: str | Path) -> Optional[Path]:
    """Makes the layout the chat template of a saved tokenizer folder, keeping the base template beside it.

    Call after ``tokenizer.save_pretrained(folder)``. ``chat_template.jinja`` becomes the layout's template and
    ``chat_template.base.jinja`` the base model's; a ``chat``-layout folder is left as it is.

    Args:
        fmt: The layout the model was fine-tuned on.
        tokenizer: The tokenizer saved in ``folder``.
        folder: The model folder.

    Returns:
        The path of the chat template written, or None for the ``chat`` layout.
    """
    text = chat_template(fmt, tokenizer)
    if text is None:
        return None
    folder = Path(folder)
    base = base_chat_template(tokenizer)
    if base is not None:
        (folder / BASE_CHAT_TEMPLATE_FILE).write_text(base, encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        # A legacy "chat_template" key would still be read where no .jinja file is looked for: drop it.
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.pop("chat_template", None) is not None:
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    path = folder / CHAT_TEMPLATE_FILE
    path.write_text(text, encoding="utf-8")
    return path


__all__ = [
    "BASE_CHAT_TEMPLATE_FILE",
    "CHAT_TEMPLATE_FILE",
    "CONTEXT_ROLE",
    "MARKER",
    "as_transformers_jinja",
    "base_chat_template",
    "chat_template",
    "check_chat_template",
    "tokenizer_adds_bos",
    "write_chat_template",
]
