"""DuplicateChunkFilter: first-N-characters de-duplication, order kept."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from postprocessors import DuplicateChunkFilter

HEAD = "The customs union removed internal tariffs in 1968 " * 2  # > 50 chars


def nodes(*texts):
    return [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10) for i, t in enumerate(texts)]


def ids(out):
    return [n.node.node_id for n in out]


def test_drops_nodes_sharing_the_prefix_keeps_first_and_order():
    inp = nodes(HEAD + "tail A", "Something else entirely", HEAD + "tail B", "Other", HEAD)
    out = DuplicateChunkFilter().postprocess_nodes(inp)
    assert ids(out) == ["n0", "n1", "n3"]
    assert [n.score for n in out] == [1.0, 0.9, 0.7]
    assert out[0] is inp[0]  # kept nodes pass through untouched


def test_non_adjacent_duplicates_dropped_too():
    out = DuplicateChunkFilter().postprocess_nodes(nodes(HEAD + "1", "x", "y", HEAD + "2"))
    assert ids(out) == ["n0", "n1", "n2"]


def test_prefix_chars_setting():
    texts = ("abcdef-1", "abcdef-2", "abcxyz")
    assert ids(DuplicateChunkFilter(prefix_chars=3).postprocess_nodes(nodes(*texts))) == ["n0"]
    assert ids(DuplicateChunkFilter(prefix_chars=6).postprocess_nodes(nodes(*texts))) == ["n0", "n2"]
    assert ids(DuplicateChunkFilter(prefix_chars=50).postprocess_nodes(nodes(*texts))) == ["n0", "n1", "n2"]


def test_short_texts_compare_whole_text_and_metadata_ignored():
    a = NodeWithScore(node=TextNode(text="short", metadata={"file": "a.txt"}))
    b = NodeWithScore(node=TextNode(text="short", metadata={"file": "b.txt"}))
    c = NodeWithScore(node=TextNode(text="shorter"))
    assert DuplicateChunkFilter().postprocess_nodes([a, b, c]) == [a, c]


def test_empty_input_and_invalid_setting():
    assert DuplicateChunkFilter().postprocess_nodes([]) == []
    with pytest.raises(ValueError):
        DuplicateChunkFilter(prefix_chars=0)
    assert DuplicateChunkFilter.class_name() == "DuplicateChunkFilter"
