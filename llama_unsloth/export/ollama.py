"""The Ollama ``Modelfile`` beside a GGUF: ``FROM``, the layout as a Go ``TEMPLATE``, ``PARAMETER stop``, ``SYSTEM``.

Ollama renders a request's system text and prompt through the Modelfile's ``TEMPLATE`` (Go's
``text/template``: ``{{ .System }}``, ``{{ .Prompt }}``, ``{{ if .System }}...{{ else }}...{{ end }}``), and
``SYSTEM`` is the ``.System`` a request gets when it sends none. Without these Ollama would prompt a
fine-tune in a layout it never saw and stop only at the GGUF's EOS (the reports in unsloth issues 798,
1823, 1210). The template is built from :func:`~llama_unsloth.export.skeleton.prompt_skeleton`, so it
renders exactly what :meth:`PromptFormat.render_prompt` renders for one user prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Tuple

from llama_unsloth.export.skeleton import PROMPT, SYSTEM, Piece, PromptSkeleton, prompt_skeleton
from llama_unsloth.layouts import PromptFormat

MODELFILE = "Modelfile"


def _go_text(text: str) -> str:
    """Fixed text for a Go template inside Ollama's triple quotes.

    ``{{`` would open an action, and ``\"\"\"`` would end the Modelfile's quoted block: both are written as Go
    string actions instead (Go's string literals take JSON's escapes).
    """
    text = text.replace("{{", "\x00")  # placeholder: the replacement below itself contains "{{"
    text = text.replace('"""', '""{{ "\\"" }}')
    return text.replace("\x00", '{{ "{{" }}')


def _go_pieces(pieces: Tuple[Piece, ...]) -> str:
    """Pieces as a Go template: ``{{ .System }}``, ``{{ .Prompt }}`` and the fixed text between them."""
    out = []
    for piece in pieces:
        if piece == SYSTEM:
            out.append("{{ .System }}")
        elif piece == PROMPT:
            out.append("{{ .Prompt }}")
        else:
            out.append(_go_text(str(piece)))
    return "".join(out)


def go_template(skeleton: PromptSkeleton) -> str:
    """The Modelfile's ``TEMPLATE`` body for a layout's skeleton."""
    if SYSTEM not in skeleton.with_system:
        return _go_pieces(skeleton.without_system)  # the layout has nowhere for a system text
    if not skeleton.needs_branch:
        # Ollama fills .System with SYSTEM's text when a request sends none (and an empty system slot is
        # the prompt without one): one form renders both cases.
        return _go_pieces(skeleton.with_system)
    return (
        "{{ if .System }}"
        + _go_pieces(skeleton.with_system)
        + "{{ else }}"
        + _go_pieces(skeleton.without_system)
        + "{{ end }}"
    )


def _quoted_block(text: str) -> str:
    """A Modelfile value in triple quotes (the template and system text keep their newlines)."""
    return '"""' + text.replace('"""', '"\\""') + '"""'


def modelfile_text(gguf_name: str, prompt_format: PromptFormat, tokenizer: Any) -> str:
    """The Modelfile for ``gguf_name`` (a file beside it) in ``prompt_format``.

    Args:
        gguf_name: The GGUF's file name; ``FROM ./<name>`` is read relative to the Modelfile.
        prompt_format: The layout the model was trained on.
        tokenizer: The model's tokenizer (end tokens; the ``chat`` layout's template).
    """
    skeleton = prompt_skeleton(prompt_format, tokenizer)
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted_block(go_template(skeleton))}"]
    if skeleton.default_system and SYSTEM in skeleton.with_system:
        lines.append(f"SYSTEM {_quoted_block(skeleton.default_system)}")
    # JSON's quoting is the Go string literal Ollama's parser unquotes (quotes, backslashes, newlines escaped).
    lines.extend(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in skeleton.stops)
    # llama.cpp's default repeat penalty (1.1) changes greedy answers after a few words; the fine-tune was
    # evaluated without one.
    lines.append("PARAMETER repeat_penalty 1")
    return "\n".join(lines) + "\n"


def write_modelfile(folder: str | Path, gguf_name: str, prompt_format: PromptFormat, tokenizer: Any) -> Path:
    """Writes ``folder/Modelfile`` for the GGUF ``folder/gguf_name``; returns its path."""
    path = Path(folder) / MODELFILE
    path.write_text(modelfile_text(gguf_name, prompt_format, tokenizer), encoding="utf-8")
    return path
