"""Strip markdown noise from chunks before they go into the prompt."""

from __future__ import annotations

import re
from typing import List, Optional

from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from postprocessors._nodes import copy_node_with_score

_EMPHASIS = re.compile(r"\*\*")
_HEADER = re.compile(r"^[ \t]*#{1,6}(?=[ \t]|$)[ \t]*", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
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


class ContextCleaner(BaseNodePostprocessor):
    """Clean the text the LLM sees (``**``, ``#``/``##`` headers, blank-line runs).

    Returns copies: the stored nodes (docstore, vector store) keep their text.
    Nodes that are not ``TextNode``s pass through unchanged; order and scores
    are kept.
    """

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
                out.append(copy_node_with_score(node, text=clean_text(node.node.text)))
            else:
                out.append(node)
        return out
