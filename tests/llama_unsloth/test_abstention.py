"""llama_unsloth.abstention: English and Japanese "I don't know" replies, configurable patterns."""

from __future__ import annotations

from pathlib import Path

import pytest

ABSTAINS = [
    "I dont know",  # the very reply the users' alpaca layout asks for
    "I don't know.",
    "I do not know the answer.",
    "I'm not sure.",
    "Sorry, I cannot find that in the documents.",
    "The answer is not in the context.",
    "That is not mentioned in the provided context.",
    "The context does not contain the answer.",
    "No relevant information.",
    "No answer.",
    "わかりません。",
    "分かりません",
    "申し訳ありませんが、不明です。",
    "答えが見つかりません。",
    "回答が見つかりませんでした。",
    "その情報は文脈にありません。",
    "資料には記載がありません。",
    "お答えできません。",
    "答えられません。",
    "わからない。",
    "ﾜｶﾘﾏｾﾝ",  # half-width katakana, NFKC-normalised
    "不明である。",
    "存じません。",
    "知りません。",
    "",
]
ANSWERS = [
    "Mercosur was founded in 1991 by Argentina, Brazil, Paraguay and Uruguay.",
    "The context says the treaty was signed in Asunción.",
    "メルコスールは1991年に設立された。",
    "不明な点は多いが、1991年に設立された。",  # 不明 in passing is still an answer
    "知っています。東京です。",
]


@pytest.mark.parametrize("text", ABSTAINS)
def test_default_patterns_recognise_english_and_japanese_abstentions(text: str) -> None:
    from llama_unsloth.abstention import is_abstention

    assert is_abstention(text)


@pytest.mark.parametrize("text", ANSWERS)
def test_answers_are_not_abstentions(text: str) -> None:
    from llama_unsloth.abstention import is_abstention

    assert not is_abstention(text)


def test_every_default_pattern_matches_something_it_is_meant_for() -> None:
    import re
    import unicodedata

    from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS

    samples = [unicodedata.normalize("NFKC", s) for s in ABSTAINS if s]
    for pattern in DEFAULT_ABSTENTION_PATTERNS:
        assert any(re.search(pattern, s, re.IGNORECASE) for s in samples), f"no example for {pattern!r}"


def test_patterns_file_adds_or_replaces_and_bad_regexes_are_named(tmp_path: Path) -> None:
    from llama_unsloth.abstention import DEFAULT_ABSTENTION_PATTERNS, is_abstention, load_patterns
    from llama_unsloth.errors import RagError

    file = tmp_path / "patterns.txt"
    file.write_bytes("# ours\n該当なし\n\nnothing to say\n".encode("cp932"))
    patterns = load_patterns(file)
    assert patterns == DEFAULT_ABSTENTION_PATTERNS + ["該当なし", "nothing to say"]
    assert is_abstention("該当なし。", patterns) and not is_abstention("該当なし。")
    assert is_abstention("わかりません", patterns)  # defaults kept
    only = load_patterns(file, include_defaults=False)
    assert only == ["該当なし", "nothing to say"] and not is_abstention("わかりません", only)
    file.write_text("ok\n(unclosed\n", encoding="utf-8")
    with pytest.raises(RagError, match=r"line 2: '\(unclosed' is not a valid regular expression"):
        load_patterns(file)
    with pytest.raises(RagError, match="not found"):
        load_patterns(tmp_path / "missing.txt")
