"""ContextCleaner: markdown noise removed from the LLM's view, stored nodes untouched."""

from __future__ import annotations

from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from postprocessors import ContextCleaner
from postprocessors.context_cleaner import clean_text

RAW = (
    "# Trade report\n"
    "## **Energy** and sanctions\n"
    "The **bloc** cut imports.\n\n\n\n"
    "   ### Outlook  \n"
    "More text.\n \n\t\n\n"
    "Tags: #hashtag, C# code, issue #12\n"
    "#\n"
    "End."
)


def test_clean_text():
    assert clean_text(RAW) == (
        "Trade report\n"
        "Energy and sanctions\n"
        "The bloc cut imports.\n\n"
        "Outlook\n"
        "More text.\n\n"
        "Tags: #hashtag, C# code, issue #12\n"
        "\n"
        "End."
    )


def test_only_real_header_markers_removed():
    assert clean_text("####### not a header\n#nospace\n  ## indented") == ("####### not a header\n#nospace\nindented")


def test_plain_text_unchanged():
    text = "Line one.\n\nLine two with a * star and 3 * 4.\n"
    assert clean_text(text) == text


def test_cleaner_copies_nodes_and_keeps_order_and_scores():
    stored = TextNode(text=RAW, id_="a", metadata={"file": "r.md"})
    other = TextNode(text="**x**", id_="b")
    inp = [NodeWithScore(node=stored, score=0.9), NodeWithScore(node=other, score=0.1)]
    out = ContextCleaner().postprocess_nodes(inp)

    assert [n.node.node_id for n in out] == ["a", "b"]
    assert [n.score for n in out] == [0.9, 0.1]
    assert stored.text == RAW and other.text == "**x**"  # stored nodes untouched
    assert out[0].node is not stored
    llm_view = out[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "**" not in llm_view and "##" not in llm_view and "\n\n\n" not in llm_view
    assert "file: r.md" in llm_view
    assert out[1].node.get_content() == "x"


def test_empty_input():
    assert ContextCleaner().postprocess_nodes([]) == []
    assert ContextCleaner.class_name() == "ContextCleaner"
