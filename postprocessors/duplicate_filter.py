"""Drop retrieved chunks that start like a chunk already kept."""

from __future__ import annotations

from typing import List, Optional, Set

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle


class DuplicateChunkFilter(BaseNodePostprocessor):
    """Drop a node whose first ``prefix_chars`` characters equal those of a kept node.

    Overlapping splits and re-ingested files often yield chunks that start with
    the same text; only the first (best-ranked) one is kept. The order of the
    kept nodes, the nodes themselves and their scores are unchanged.
    """

    prefix_chars: int = Field(
        default=50,
        gt=0,
        description="Number of leading characters of node.get_content() compared.",
    )

    @classmethod
    def class_name(cls) -> str:
        return "DuplicateChunkFilter"

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        seen: Set[str] = set()
        kept: List[NodeWithScore] = []
        for node in nodes:
            prefix = node.node.get_content()[: self.prefix_chars]
            if prefix in seen:
                continue
            seen.add(prefix)
            kept.append(node)
        return kept
