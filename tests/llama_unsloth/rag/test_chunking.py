"""llama_unsloth.rag.chunking: character chunks for Japanese and English, token chunks, the long-chunk report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from tests.recipes._helpers import DATA, embed_model

JA_SENTENCES = [
    "第{n}回の交渉で、加盟国は域内関税の撤廃時期について合意した。",
    "しかし、自動車と砂糖は例外品目として残された！",
    "なぜ例外が必要なのか？",
    "各国の産業界は、急激な自由化が雇用に与える影響を懸念していた。",
    "「段階的に進めるべきだ。」と代表団は述べた。",
]


def japanese_prose(sentences: int) -> str:
    """Varied Japanese prose in paragraphs of five sentences, no spaces anywhere."""
    out = []
    for i in range(sentences):
        out.append(JA_SENTENCES[i % len(JA_SENTENCES)].format(n=i + 1))
        if i % 5 == 4:
            out.append("\n\n")
    return "".join(out)


def english_prose() -> str:
    """The sample corpus's English documents, one after another."""
    return "\n\n".join(
        (DATA / "corpus" / name).read_text(encoding="utf-8")
        for name in ("mercosur.txt", "usmca.txt", "rules_of_origin.txt")
    )


def test_split_sentences_keeps_every_character_and_cuts_at_japanese_ends() -> None:
    from llama_unsloth.rag.chunking import split_sentences

    text = "関税は撤廃された。本当か？「はい。」と答えた！\nNext line. Dr. Smith went home! OK?"
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[:4] == ["関税は撤廃された。", "本当か？", "「はい。」", "と答えた！"]
    assert "Next line." in pieces and " Smith went home!" in pieces


@pytest.mark.parametrize("language", ["japanese", "english"])
def test_default_chunks_are_about_2000_characters_whatever_the_language(language: str) -> None:
    from llama_unsloth.rag.chunking import chunk_file

    text = japanese_prose(400) if language == "japanese" else english_prose()
    nodes = chunk_file(Path(f"/corpus/{language}.txt"), text, "0" * 64)
    lengths = [len(n.get_content()) for n in nodes]
    assert len(nodes) >= 3
    assert max(lengths) <= 2000
    # Not the ~350-character Japanese chunks that cl100k token counting gave: every chunk but the last is full.
    assert min(lengths[:-1]) >= 1500, lengths
    # Nothing is lost: every sentence of the text is in a chunk, and chunks come in the text's order.
    from llama_unsloth.rag.chunking import split_sentences

    for sentence in (s.strip() for s in split_sentences(text)):
        assert not sentence or any(sentence in n.get_content() for n in nodes), sentence
    starts = [text.find(n.get_content()[:60]) for n in nodes]
    assert starts == sorted(starts) and -1 not in starts
    # Neighbours share at most the 120-character overlap.
    for a, b in zip(nodes, nodes[1:]):
        shared = max((k for k in range(1, 400) if a.get_content().endswith(b.get_content()[:k])), default=0)
        assert shared <= 120
    if language == "japanese":
        # Cut at sentence ends (。！？ or a closing bracket after one), never inside a sentence.
        assert all(re.search(r"[。！？」]$", n.get_content()) for n in nodes), [n.get_content()[-5:] for n in nodes]


def test_token_chunking_stays_available() -> None:
    from llama_unsloth.rag.chunking import ChunkSettings, _cl100k, chunk_file

    nodes = chunk_file(Path("/corpus/en.txt"), english_prose(), "0" * 64, ChunkSettings.make("tokens"))
    encoding = _cl100k()
    tokens = [len(encoding.encode(n.get_content())) for n in nodes]
    assert max(tokens) <= 384 and min(tokens[:-1]) >= 250
    assert ChunkSettings.make("tokens") == ChunkSettings("tokens", 384, 24)
    assert ChunkSettings.make() == ChunkSettings("characters", 2000, 120)


def test_chunks_longer_than_the_embedding_window_are_reported_once_with_numbers(tmp_path: Path) -> None:
    from llama_unsloth.rag.indexing import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "en.txt").write_text(english_prose(), encoding="utf-8")
    notes: List[str] = []
    _, stats = build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=notes.append)
    report = stats.long_chunks
    assert report is not None and report.max_tokens == 256 and report.longest_tokens > 256
    assert report.chunks >= 3 and report.of == stats.chunks_added
    assert (
        len(notes) == 1
        and notes[0].startswith("note: ")
        and "reads 256 tokens" in notes[0]
        and f"--chunk-size {report.suggested_size}" in notes[0]
    )
    assert 800 <= report.suggested_size <= 1400  # ~5 characters per MiniLM token on English prose

    # At the suggested size nothing is too long any more.
    notes.clear()
    _, smaller = build_index(
        docs,
        tmp_path / "db2",
        embed_model=embed_model(),
        progress=False,
        chunk_size=report.suggested_size,
        chunk_overlap=60,
        warn=notes.append,
    )
    assert smaller.long_chunks is None and notes == []
