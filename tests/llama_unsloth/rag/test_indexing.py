"""llama_unsloth.rag.indexing: incremental indexing of mixed encodings, removals, and interrupts that keep committed work."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from tests.llama_unsloth.rag.test_chunking import japanese_prose
from tests.llama_unsloth.rag.test_documents import write_mixed_corpus
from tests.llama_unsloth.test_text_files import JA, JA_CP932
from tests.recipes._helpers import embed_model


def test_mixed_encodings_are_indexed_as_text_and_bad_files_skipped(tmp_path: Path) -> None:
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection

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
    from llama_unsloth.rag.indexing import build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_bytes(b"")
    (docs / "b.txt").write_bytes(b"\x00\x01\x02" * 500)
    with pytest.raises(CorpusError, match=r"no readable text file: a\.txt \(empty\), b\.txt \(binary\)"):
        build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    assert not (tmp_path / "db").exists()


def test_deleted_and_changed_files_leave_the_collection_and_other_folders_stay(tmp_path: Path) -> None:
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection

    docs, other = tmp_path / "docs", tmp_path / "other"
    for folder, names in ((docs, ("a.txt", "b.txt", "c.txt")), (other, ("x.txt",))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"{name}: " + japanese_prose(6), encoding="utf-8")
    db = tmp_path / "db"
    build_index(docs, db, embed_model=embed_model(), progress=False, warn=None)
    build_index(other, db, embed_model=embed_model(), progress=False, warn=None)
    (docs / "b.txt").unlink()
    (docs / "c.txt").write_text("c.txt, rewritten: " + japanese_prose(3), encoding="utf-8")
    _, stats = build_index(docs, db, embed_model=embed_model(), progress=False, warn=None)
    assert (stats.files_new, stats.files_changed, stats.files_unchanged, stats.files_removed) == (0, 1, 1, 1)
    assert stats.chunks_removed == 2 and stats.chunks_added == 1  # b's chunk and c's old one; c's new one
    names = sorted(m["file_name"] for m in open_collection(db, "documents").get(include=["metadatas"])["metadatas"])
    assert names == ["a.txt", "c.txt", "x.txt"]  # x.txt was indexed from another folder: left alone
    assert stats.chunks_total == 3


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_stop_request_keeps_committed_files_and_the_rerun_embeds_only_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signame: str
) -> None:
    import os
    import signal

    from llama_unsloth.errors import IndexInterrupted
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection

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
