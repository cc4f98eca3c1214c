"""ContextCleaner: by default our users' exact clean-up (SPEC.md), markdown-aware on request; stored nodes untouched.

Users' code, before a context goes into their RAG layouts: ``replace("**","")``, ``replace("##","")``,
``replace("\\n\\n","\\n")``, one call each, in that order. The golden outputs below are worked out by hand from
those three rules, not computed with ``str.replace``.
"""

from __future__ import annotations

import pytest
from llama_index.core.schema import MediaResource, MetadataMode, Node, NodeWithScore, TextNode

from postprocessors import ContextCleaner
from postprocessors.context_cleaner import clean_text, markdown_clean_text, users_clean_text

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

# RAW after the users' three calls: "**" gone, "##" gone ("### " leaves "# ", "## " leaves " "),
# then every "\n\n" made "\n" in one pass ("\n\n\n\n" -> "\n\n"; the whitespace-only lines are not blank to it).
RAW_USERS = (
    "# Trade report\n"
    " Energy and sanctions\n"
    "The bloc cut imports.\n\n"
    "   # Outlook  \n"
    "More text.\n \n\t\n"
    "Tags: #hashtag, C# code, issue #12\n"
    "#\n"
    "End."
)

RAW_MARKDOWN = (
    "Trade report\n"
    "Energy and sanctions\n"
    "The bloc cut imports.\n\n"
    "Outlook\n"
    "More text.\n\n"
    "Tags: #hashtag, C# code, issue #12\n"
    "\n"
    "End."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # replace("\n\n", "\n") is one left-to-right pass, not "collapse every run".
        ("a\n\nb", "a\nb"),
        ("a\n\n\nb", "a\n\nb"),
        ("a\n\n\n\nb", "a\n\nb"),
        ("a\n\n\n\n\nb", "a\n\n\nb"),
        ("\n\n\n\n", "\n\n"),
        ("a\nb", "a\nb"),
        # "##" anywhere, non-overlapping from the left; a single "#" stays.
        ("## Title", " Title"),
        ("### Title", "# Title"),
        ("#### Title", " Title"),
        ("##### Title", "# Title"),
        ("C## and C# and #tag", "C and C# and #tag"),
        # "**" anywhere, non-overlapping from the left; a single "*" stays.
        ("**bold** and *it*", "bold and *it*"),
        ("***x***", "*x*"),
        ("a ** b", "a  b"),
        # The order of the calls matters: "**" first, then "##", then blank lines.
        ("#**#", ""),  # "##" appears only once "**" is gone
        ("x\n**\ny", "x\ny"),  # "\n\n" appears only once "**" is gone
        ("x\n##\ny", "x\ny"),  # "\n\n" appears only once "##" is gone
        ("#*#*", "#*#*"),
        # Whitespace-only lines, CRLF and trailing spaces are not touched.
        ("a\n \nb  ", "a\n \nb  "),
        ("a\r\n\r\nb", "a\r\n\r\nb"),
        ("", ""),
        ("日本語の **強調** と\n\n見出し", "日本語の 強調 と\n見出し"),
    ],
)
def test_users_rules(text: str, expected: str) -> None:
    assert users_clean_text(text) == expected
    assert clean_text(text) == expected  # the default mode
    assert clean_text(text, "users") == expected


def test_users_clean_of_a_markdown_chunk() -> None:
    assert users_clean_text(RAW) == RAW_USERS


def test_users_clean_is_not_idempotent_like_the_users_code() -> None:
    # A second pass changes the text again: the cleaner does one pass, as the users' code does.
    once = users_clean_text("a\n\n\n\nb")
    assert once == "a\n\nb" and users_clean_text(once) == "a\nb"


def test_markdown_mode_keeps_todays_behaviour() -> None:
    assert markdown_clean_text(RAW) == RAW_MARKDOWN
    assert clean_text(RAW, "markdown") == RAW_MARKDOWN
    assert clean_text("####### not a header\n#nospace\n  ## indented", "markdown") == (
        "####### not a header\n#nospace\nindented"
    )
    # Paragraph breaks (one blank line) are kept; only runs of 3+ newlines collapse.
    assert clean_text("a\n\nb\n\n\n\nc", "markdown") == "a\n\nb\n\nc"


def test_plain_text_unchanged_in_markdown_mode() -> None:
    text = "Line one.\n\nLine two with a * star and 3 * 4.\n"
    assert clean_text(text, "markdown") == text
    # The users' rule joins the paragraphs.
    assert clean_text(text) == "Line one.\nLine two with a * star and 3 * 4.\n"


def test_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="users, markdown"):
        clean_text("x", "html")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ContextCleaner(mode="html")  # type: ignore[arg-type]


def test_default_mode_is_the_users_and_is_a_documented_field() -> None:
    cleaner = ContextCleaner()
    assert cleaner.mode == "users"
    field = ContextCleaner.model_fields["mode"]
    assert field.description and "users" in field.description and "markdown" in field.description
    # It survives LlamaIndex's serialisation.
    restored = ContextCleaner.from_dict(ContextCleaner(mode="markdown").to_dict())
    assert restored.mode == "markdown"


@pytest.mark.parametrize(("mode", "expected"), [("users", RAW_USERS), ("markdown", RAW_MARKDOWN)])
def test_cleaner_copies_nodes_and_keeps_order_and_scores(mode: str, expected: str) -> None:
    stored = TextNode(text=RAW, id_="a", metadata={"file": "r.md"})
    other = TextNode(text="**x**", id_="b")
    inp = [NodeWithScore(node=stored, score=0.9), NodeWithScore(node=other, score=0.1)]
    out = ContextCleaner(mode=mode).postprocess_nodes(inp)

    assert [n.node.node_id for n in out] == ["a", "b"]
    assert [n.score for n in out] == [0.9, 0.1]
    assert stored.text == RAW and other.text == "**x**"  # stored nodes untouched
    assert out[0].node is not stored
    assert out[0].node.get_content() == expected
    llm_view = out[0].node.get_content(metadata_mode=MetadataMode.LLM)
    assert "**" not in llm_view and "##" not in llm_view and "\n\n\n" not in llm_view
    assert "file: r.md" in llm_view
    assert out[1].node.get_content() == "x"


def test_non_text_nodes_pass_through() -> None:
    media = NodeWithScore(node=Node(text_resource=MediaResource(text="**x**"), id_="m"), score=0.5)
    text = NodeWithScore(node=TextNode(text="## head\n\nbody", id_="t"), score=0.4)
    out = ContextCleaner().postprocess_nodes([media, text])
    assert [n.node.node_id for n in out] == ["m", "t"]
    assert out[0] is media and out[0].node.get_content() == "**x**"
    assert out[1].node.get_content() == " head\nbody"


def test_empty_input():
    assert ContextCleaner().postprocess_nodes([]) == []
    assert ContextCleaner.class_name() == "ContextCleaner"
