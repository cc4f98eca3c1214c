"""Helpers shared by the postprocessors: copy a node instead of mutating it."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

from llama_index.core.schema import NodeWithScore, TextNode


def _merge_keys(existing: Iterable[str], extra: Iterable[str]) -> List[str]:
    """Return ``existing`` followed by the keys of ``extra`` it lacks (order kept)."""
    merged = list(existing)
    for key in extra:
        if key not in merged:
            merged.append(key)
    return merged


def copy_node_with_score(
    node_with_score: NodeWithScore,
    *,
    score: Optional[float] = None,
    text: Optional[str] = None,
    hidden_metadata: Optional[Dict[str, Any]] = None,
) -> NodeWithScore:
    """Return a deep copy of ``node_with_score`` with some parts replaced.

    The input node (often the very object held by a docstore) is never touched.

    Args:
        node_with_score: The node to copy.
        score: New score; ``None`` keeps the input's score.
        text: New text for a ``TextNode``; ``None`` keeps the text. Ignored for
            nodes that are not ``TextNode``s.
        hidden_metadata: Metadata to add for inspection only: the keys are also
            added to ``excluded_llm_metadata_keys`` and
            ``excluded_embed_metadata_keys`` so they never reach a prompt or an
            embedding.

    Returns:
        A new ``NodeWithScore`` wrapping a new node.
    """
    node = node_with_score.node.model_copy(deep=True)
    if text is not None and isinstance(node, TextNode):
        node.text = text
    if hidden_metadata:
        node.metadata = {**node.metadata, **hidden_metadata}
        node.excluded_llm_metadata_keys = _merge_keys(node.excluded_llm_metadata_keys, hidden_metadata)
        node.excluded_embed_metadata_keys = _merge_keys(node.excluded_embed_metadata_keys, hidden_metadata)
    new_score = node_with_score.score if score is None else score
    return NodeWithScore(node=node, score=new_score)
