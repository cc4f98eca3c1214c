"""Strip markdown noise from chunks before they go into the prompt.

Two modes:

* ``"users"`` (the default): exactly what our users' code does to a context before it goes into their RAG
  layouts, ``text.replace("**", "").replace("##", "").replace("\\n\\n", "\\n")``: one call each, in that order.
  A model fine-tuned and prompted with contexts cleaned that way sees the same kind of text through
  LlamaIndex. Being plain ``str.replace`` calls it is a single pass: ``"\\n\\n\\n\\n"`` becomes ``"\\n\\n"``,
  ``"###"`` becomes ``"#"`` and a ``##`` inside a line goes too.
* ``"markdown"``: markdown-aware: ``**`` removed, ``#``..``######`` header markers removed only at line start,
  trailing spaces stripped, runs of three or more newlines collapsed to one blank line.
"""

from __future__ import annotations

import re
from typing import List, Literal, Optional

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from postprocessors._nodes import copy_node_with_score

CleanMode = Literal["users", "markdown"]
CLEAN_MODES = ("users", "markdown")

_EMPHASIS = re.compile(r"\*\*")
_HEADER = re.compile(r"^[ \t]*#{1,6}(?=[ \t]|$)[ \t]*", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


def users_clean_text(text: str) -> str:
    """Our users' clean-up, call for call: ``replace("**", "")``, ``replace("##", "")``, ``replace("\\n\\n", "\\n")``.

    Args:
        text: Chunk text.

    Returns:
        The cleaned text (``"\\n\\n\\n\\n"`` becomes ``"\\n\\n"``: each call is one left-to-right pass).
    """
    return text.replace("**", "").replace("##", "").replace("\n\n", "\n")


def markdown_clean_text(text: str) -> str:
    """Remove ``**`` and leading ``#``..``######`` header markers; collapse blank lines.

    Header markers count only at line start followed by a space or the line
    end (``#hashtag`` and ``C#`` stay). Whitespace-only lines count as blank;
    runs of 3+ newlines become one blank line (2 newlines).

    Args:
        text: Chunk text.

    Returns:
        The cleaned text.
    """
    text = _EMPHASIS.sub("", text)
    text = _HEADER.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUN.sub("\n\n", text)


def clean_text(text: str, mode: CleanMode = "users") -> str:
    """Cleans ``text`` the way ``ContextCleaner(mode=mode)`` does.

    Args:
        text: Chunk text.
        mode: ``"users"`` (:func:`users_clean_text`) or ``"markdown"`` (:func:`markdown_clean_text`).

    Returns:
        The cleaned text.

    Raises:
        ValueError: For an unknown ``mode``.
    """
    if mode == "users":
        return users_clean_text(text)
    if mode == "markdown":
        return markdown_clean_text(text)
    raise ValueError(f"Unknown clean-up mode {mode!r}; choose one of {', '.join(CLEAN_MODES)}.")


class ContextCleaner(BaseNodePostprocessor):
    """Clean the text the LLM sees (``**``, ``##``, blank lines), by default exactly as our users' code does.

    Returns copies: the stored nodes (docstore, vector store) keep their text.
    Nodes that are not ``TextNode``s pass through unchanged; order and scores
    are kept.
    """

    mode: CleanMode = Field(
        default="users",
        description=(
            '"users" (default): exactly our users\' clean-up, text.replace("**", "").replace("##", "")'
            '.replace("\\n\\n", "\\n"), one pass each, so prompts match the contexts their models were used with. '
            '"markdown": ** removed, #..###### header markers removed only at line start (#hashtag, C# kept), '
            "trailing spaces stripped, runs of 3+ newlines collapsed to one blank line (paragraphs kept)."
        ),
    )

    @classmethod
    def class_name(cls) -> str:
        return "ContextCleaner"

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        out: List[NodeWithScore] = []
        for node in nodes:
            if isinstance(node.node, TextNode):
                out.append(copy_node_with_score(node, text=clean_text(node.node.text, self.mode)))
            else:
                out.append(node)
        return out
