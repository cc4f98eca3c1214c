"""llama_unsloth.rag.store: character chunks for Japanese and English, mixed encodings, chunk settings, interrupts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from tests.llama_unsloth.test_text_files import JA, JA_CP932
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
    from llama_unsloth.rag.store import split_sentences

    text = "関税は撤廃された。本当か？「はい。」と答えた！\nNext line. Dr. Smith went home! OK?"
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[:4] == ["関税は撤廃された。", "本当か？", "「はい。」", "と答えた！"]
    assert "Next line." in pieces and " Smith went home!" in pieces


@pytest.mark.parametrize("language", ["japanese", "english"])
def test_default_chunks_are_about_2000_characters_whatever_the_language(language: str) -> None:
    from llama_unsloth.rag.store import chunk_file

    text = japanese_prose(400) if language == "japanese" else english_prose()
    nodes = chunk_file(Path(f"/corpus/{language}.txt"), text, "0" * 64)
    lengths = [len(n.get_content()) for n in nodes]
    assert len(nodes) >= 3
    assert max(lengths) <= 2000
    # Not the ~350-character Japanese chunks that cl100k token counting gave: every chunk but the last is full.
    assert min(lengths[:-1]) >= 1500, lengths
    # Nothing is lost: every sentence of the text is in a chunk, and chunks come in the text's order.
    from llama_unsloth.rag.store import split_sentences

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
    from llama_unsloth.rag.store import ChunkSettings, _cl100k, chunk_file

    nodes = chunk_file(Path("/corpus/en.txt"), english_prose(), "0" * 64, ChunkSettings.make("tokens"))
    encoding = _cl100k()
    tokens = [len(encoding.encode(n.get_content())) for n in nodes]
    assert max(tokens) <= 384 and min(tokens[:-1]) >= 250
    assert ChunkSettings.make("tokens") == ChunkSettings("tokens", 384, 24)
    assert ChunkSettings.make() == ChunkSettings("characters", 2000, 120)


def write_mixed_corpus(folder: Path) -> Path:
    """Japanese in five encodings, English UTF-8, a PNG named .txt, random bytes named .md, an empty file."""
    folder.mkdir(parents=True, exist_ok=True)
    for codec in ("shift_jis", "euc_jp", "utf-16", "utf-8-sig"):
        (folder / f"ja_{codec.replace('-', '_')}.txt").write_bytes(f"{codec}: {JA}".encode(codec))
    (folder / "ja_cp932.txt").write_bytes(JA_CP932.encode("cp932"))
    (folder / "en.md").write_text((DATA / "corpus" / "usmca.txt").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "noise.md").write_bytes(bytes((i * 7919) % 256 for i in range(4096)))
    (folder / "empty.txt").write_bytes(b"")
    return folder


def test_mixed_encodings_are_indexed_as_text_and_bad_files_skipped(tmp_path: Path) -> None:
    from llama_unsloth.rag.store import build_index, open_collection

    docs = write_mixed_corpus(tmp_path / "docs")
    warnings: List[str] = []
    _, stats = build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=warnings.append)
    assert (stats.files_new, stats.files_unchanged) == (6, 0)
    assert sorted(stats.skipped) == [("empty.txt", "empty"), ("photo.txt", "binary"), ("sub/noise.md", "binary")]
    assert "skipped: " in stats.summary() and "photo.txt (binary)" in stats.summary()
    skip_lines = [w for w in warnings if w.startswith("warning: skipped")]
    assert (
        len(skip_lines) == 2 and any("photo.txt" in w for w in skip_lines) and all("\n" not in w for w in skip_lines)
    )
    assert stats.encodings == {"cp932": 2, "euc_jis_2004": 1, "utf-16": 1, "utf-8-sig": 1}

    got = open_collection(tmp_path / "db", "documents").get(include=["documents", "metadatas"])
    by_file = {m["file_name"]: d for d, m in zip(got["documents"], got["metadatas"])}
    assert by_file["ja_shift_jis.txt"] == f"shift_jis: {JA}"
    assert by_file["ja_euc_jp.txt"] == f"euc_jp: {JA}"
    assert by_file["ja_utf_16.txt"] == f"utf-16: {JA}"
    assert by_file["ja_cp932.txt"] == JA_CP932
    assert "photo.txt" not in by_file and "empty.txt" not in by_file

    # A re-run over unchanged files reports nothing new (the empty file is skipped again, not "1 new").
    _, again = build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=warnings.append)
    assert (again.files_new, again.files_changed, again.files_unchanged, again.chunks_added) == (0, 0, 6, 0)
    assert "0 new, 0 changed, 6 unchanged" in again.summary()

    # A file that became empty loses its chunks.
    (docs / "en.md").write_text("", encoding="utf-8")
    _, third = build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=warnings.append)
    assert third.files_removed == 1 and ("en.md", "empty") in third.skipped
    assert open_collection(tmp_path / "db", "documents").get(where={"file_name": "en.md"})["ids"] == []


def test_a_folder_without_readable_text_fails_before_anything_is_created(tmp_path: Path) -> None:
    from llama_unsloth.errors import CorpusError
    from llama_unsloth.rag.store import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_bytes(b"")
    (docs / "b.txt").write_bytes(b"\x00\x01\x02" * 500)
    with pytest.raises(CorpusError, match=r"no readable text file: a\.txt \(empty\), b\.txt \(binary\)"):
        build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    assert not (tmp_path / "db").exists()


def test_chunk_settings_are_stored_and_a_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    from llama_unsloth.errors import ChunkSettingsMismatchError
    from llama_unsloth.rag.store import build_index, open_collection

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ja.txt").write_text(japanese_prose(60), encoding="utf-8")
    build_index(
        docs, tmp_path / "db", embed_model=embed_model(), progress=False, chunk_size=500, chunk_overlap=50, warn=None
    )
    meta = open_collection(tmp_path / "db", "documents").metadata
    assert (
        meta["llama_unsloth_chunk_unit"],
        meta["llama_unsloth_chunk_size"],
        meta["llama_unsloth_chunk_overlap"],
    ) == ("characters", 500, 50)
    count = open_collection(tmp_path / "db", "documents").count()
    with pytest.raises(
        ChunkSettingsMismatchError,
        match=r"chunked with 500 characters, overlap 50, not 2000 characters, overlap 120.*--chunk-size 500",
    ):
        build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    with pytest.raises(ChunkSettingsMismatchError, match="not 500 tokens"):
        build_index(
            docs,
            tmp_path / "db",
            embed_model=embed_model(),
            progress=False,
            chunk_unit="tokens",
            chunk_size=500,
            chunk_overlap=50,
            warn=None,
        )
    assert open_collection(tmp_path / "db", "documents").count() == count  # nothing mixed in
    _, same = build_index(
        docs, tmp_path / "db", embed_model=embed_model(), progress=False, chunk_size=500, chunk_overlap=50, warn=None
    )
    assert same.files_unchanged == 1


def test_chunks_longer_than_the_embedding_window_are_reported_once_with_numbers(tmp_path: Path) -> None:
    from llama_unsloth.rag.store import build_index

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


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_stop_request_keeps_committed_files_and_the_rerun_embeds_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signame: str
) -> None:
    import os
    import signal

    from llama_unsloth.errors import IndexInterrupted
    from llama_unsloth.rag.store import build_index, open_collection

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(6):
        (docs / f"doc{i}.txt").write_text(f"Document {i}. " + japanese_prose(10 + i), encoding="utf-8")
    model = embed_model()
    embedded: List[str] = []
    sent: List[bool] = []
    real = type(model).get_text_embedding_batch

    def counting(self, texts, **kwargs):  # the real MiniLM, counted; SIGINT arrives during the second batch
        embedded.extend(texts)
        if len(embedded) == 4 and not sent:
            sent.append(True)
            os.kill(os.getpid(), getattr(signal, signame))
        return real(self, texts, **kwargs)

    monkeypatch.setattr(type(model), "get_text_embedding_batch", counting)
    with pytest.raises(IndexInterrupted) as err:
        build_index(docs, tmp_path / "db", embed_model=model, progress=False, embed_batch_size=2, warn=None)
    assert str(err.value).startswith(f"interrupted ({signame}): kept 2 file(s)") and "4 file(s) left" in str(err.value)
    assert err.value.files_left == 4
    assert open_collection(tmp_path / "db", "documents").count() == 2 == err.value.stats.chunks_total
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    embedded.clear()
    _, stats = build_index(docs, tmp_path / "db", embed_model=model, progress=False, embed_batch_size=2, warn=None)
    assert (stats.files_new, stats.files_unchanged) == (4, 2)
    assert len(embedded) == 4 and not any(t.startswith(("Document 0.", "Document 1.")) for t in embedded)


def test_embedding_model_from_the_environment_offline_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth.errors import RagError
    from llama_unsloth.rag.store import embed_model_id, make_embed_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("LLAMA_UNSLOTH_EMBED_MODEL", "intfloat/multilingual-e5-base")
    with pytest.raises(RagError) as err:
        make_embed_model()
    assert "\n" not in str(err.value)
    assert "'intfloat/multilingual-e5-base' is not found locally and there is no network" in str(err.value)
    # The variable also takes a local folder: the bundled MiniLM by path.
    monkeypatch.setenv("LLAMA_UNSLOTH_EMBED_MODEL", embed_model_id(embed_model()))
    assert embed_model_id(make_embed_model()) == embed_model_id(embed_model())


def test_open_index_takes_a_model_name_and_refuses_another_model(tmp_path: Path) -> None:
    from llama_unsloth.errors import EmbeddingMismatchError, RagError
    from llama_unsloth.rag.store import build_index, embed_model_id, open_index

    docs = write_mixed_corpus(tmp_path / "docs")
    build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    index = open_index(tmp_path / "db", embed_model=embed_model_id(embed_model()))
    hits = index.as_retriever(similarity_top_k=1).retrieve("USMCA replaced NAFTA")
    assert hits and hits[0].node.metadata["file_name"] == "en.md"
    with pytest.raises(RagError, match="does not exist"):
        open_index(tmp_path / "db", embed_model=str(tmp_path / "no-model"))
    with pytest.raises(EmbeddingMismatchError):
        from llama_index.core import MockEmbedding

        open_index(tmp_path / "db", embed_model=MockEmbedding(embed_dim=384))  # same dimension, another model
