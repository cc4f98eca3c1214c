"""The layout of one user prompt as pieces (fixed text, the system slot, the prompt slot), read by rendering.

Other engines take a prompt layout in their own template language: Ollama in Go's ``text/template``
(``{{ .System }}``, ``{{ .Prompt }}``), llama.cpp in a Jinja chat template. Rather than translating each of
our layouts' Jinja by hand, :func:`prompt_skeleton` renders the layout with sentinel values through
:meth:`PromptFormat.render_prompt` (the one renderer training and inference use) and cuts the text at the
sentinels: whatever the layout does (a system slot, a system text put before the instruction by a layout
without one, the ``chat`` layout's tokenizer template) is then reproduced exactly, and a new layout needs
no new code here. The Modelfile (:mod:`.ollama`) is written from these pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from llama_unsloth.layouts import PromptFormat

# Plain letters: a layout may trim, indent or escape what it is given, and these survive all of that.
SYSTEM_SENTINEL = "LLAMAUNSLOTHSYSTEMSLOTX"
PROMPT_SENTINEL = "LLAMAUNSLOTHPROMPTSLOTX"

#: A piece of a prompt: fixed text, or ``SYSTEM`` / ``PROMPT`` (the slot's name, not text).
Piece = Union[str, "Slot"]


@dataclass(frozen=True)
class Slot:
    """Where a caller's value goes: ``system`` or ``prompt``."""

    name: str


SYSTEM = Slot("system")
PROMPT = Slot("prompt")


@dataclass(frozen=True)
class PromptSkeleton:
    """One user prompt in a layout, as pieces.

    Attributes:
        with_system: The prompt when a caller gives a system text (it fills the ``system`` slot).
        without_system: The prompt when none is given (the layout's default system text, if any, is fixed text
            here, exactly as :meth:`PromptFormat.render_prompt` writes it).
        default_system: The layout's default system text ("" when it has none).
        stops: Strings that end the answer: the layout's stop strings, then its end tokens.
    """

    with_system: Tuple[Piece, ...]
    without_system: Tuple[Piece, ...]
    default_system: str
    stops: Tuple[str, ...]

    @property
    def needs_branch(self) -> bool:
        """Whether "no system text" is more than the system slot left empty (or filled with the default).

        A layout without a system slot puts a caller's system text before the instruction with a blank line:
        without one, that blank line is not there either, so the two prompts differ in more than the slot.
        """
        if SYSTEM not in self.with_system:
            return False
        filled = tuple(self.default_system if piece == SYSTEM else piece for piece in self.with_system)
        return _joined(filled) != _joined(self.without_system)


def _joined(pieces: Tuple[Piece, ...]) -> Tuple[Piece, ...]:
    """Pieces with adjacent texts joined (so two renderings compare by content, not by where they were cut)."""
    out: List[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and out and isinstance(out[-1], str):
            out[-1] = out[-1] + piece
        elif piece != "":
            out.append(piece)
    return tuple(out)


def _pieces(text: str) -> Tuple[Piece, ...]:
    """A rendered prompt cut at the sentinels into fixed text and slots."""
    pieces: List[Piece] = []
    rest = text
    while rest:
        at = {slot: rest.find(sentinel) for slot, sentinel in ((SYSTEM, SYSTEM_SENTINEL), (PROMPT, PROMPT_SENTINEL))}
        found = [(index, slot) for slot, index in at.items() if index >= 0]
        if not found:
            pieces.append(rest)
            break
        index, slot = min(found, key=lambda item: item[0])
        pieces.extend([rest[:index], slot])
        rest = rest[index + len(SYSTEM_SENTINEL if slot == SYSTEM else PROMPT_SENTINEL) :]
    return _joined(tuple(pieces))


def end_tokens(prompt_format: PromptFormat, tokenizer: Any) -> List[str]:
    """The tokens that end an answer: the layout's turn end, then the tokenizer's EOS (``LayoutLLM``'s stop ids)."""
    tokens = list(prompt_format.turn_end_tokens(tokenizer))
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in tokens:
        tokens.append(eos)
    return tokens


def end_token(prompt_format: PromptFormat, tokenizer: Any) -> str:
    """The one token a GGUF names as EOS: the layout's turn end (what the fine-tune writes last), else the EOS."""
    tokens = end_tokens(prompt_format, tokenizer)
    if not tokens:
        raise ValueError("The tokenizer has no EOS token and the layout no end token: nothing would end an answer.")
    return tokens[0]


def prompt_skeleton(prompt_format: PromptFormat, tokenizer: Any) -> PromptSkeleton:
    """Renders ``prompt_format`` for one user prompt (no context, no history) and cuts it into pieces.

    Args:
        prompt_format: The layout.
        tokenizer: The model's tokenizer (the ``chat`` layout renders with its chat template).
    """
    with_system = _pieces(prompt_format.render_prompt(PROMPT_SENTINEL, system=SYSTEM_SENTINEL, tokenizer=tokenizer))
    without_system = _pieces(prompt_format.render_prompt(PROMPT_SENTINEL, tokenizer=tokenizer))
    if PROMPT not in with_system or PROMPT not in without_system:
        raise ValueError(f"The layout {prompt_format.name!r} does not place the instruction in its prompt.")
    stops = list(dict.fromkeys([*prompt_format.stop, *end_tokens(prompt_format, tokenizer)]))
    return PromptSkeleton(with_system, without_system, prompt_format.system_for(None, None), tuple(stops))


# ---------------------------------------------------------------------------------------------- chat template
def layout_chat_template(prompt_format: PromptFormat, tokenizer: Any) -> Optional[str]:
    """The layout's chat template (``PromptFormat.to_chat_template``); the ``chat`` layout's is the tokenizer's.

    The GGUF carries this text as ``tokenizer.chat_template``, so llama.cpp's chat endpoint prompts in the
    trained layout. None only for the ``chat`` layout over a tokenizer without a chat template.
    """
    template = prompt_format.to_chat_template(tokenizer)
    if template is None:
        own = getattr(tokenizer, "chat_template", None)
        template = own if isinstance(own, str) and own else None
    return template
