"""llama_unsloth.rag.documents: users' folders of text in any encoding; binary and empty files skipped, not fatal."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from tests.llama_unsloth.test_text_files import JA, JA_CP932
from tests.recipes._helpers import DATA


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


def test_documents_are_listed_recursively_and_decoded_whatever_their_encoding(tmp_path: Path) -> None:
    from llama_unsloth.rag.documents import list_documents, read_documents

    docs = write_mixed_corpus(tmp_path / "docs")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "notes.txt").write_text("hidden", encoding="utf-8")
    (docs / "table.csv").write_text("a,b\n", encoding="utf-8")
    names = [str(p.relative_to(docs)) for p in list_documents(docs)]
    assert names == sorted(names) and "sub/noise.md" in names and "en.md" in names
    assert not any(n.startswith(".hidden") or n.endswith(".csv") for n in names)

    warnings: List[str] = []
    reads = {r.name: r for r in read_documents(docs, warn=warnings.append)}
    assert reads["ja_shift_jis.txt"].text == f"shift_jis: {JA}" and reads["ja_cp932.txt"].text == JA_CP932
    assert reads["ja_cp932.txt"].encoding == "cp932" and reads["ja_utf_16.txt"].encoding == "utf-16"
    assert reads["en.md"].key == str((docs / "en.md").resolve()) and len(reads["en.md"].digest) == 64
    assert {n: r.skip_reason for n, r in reads.items() if r.text is None} == {
        "empty.txt": "empty",
        "photo.txt": "binary",
        "sub/noise.md": "binary",
    }
    assert len(warnings) == 2 and all(
        w.startswith("warning: skipped ") for w in warnings
    )  # the empty file is only marked


def test_a_missing_or_empty_folder_is_a_corpus_error(tmp_path: Path) -> None:
    from llama_unsloth.errors import CorpusError
    from llama_unsloth.rag.documents import list_documents

    with pytest.raises(CorpusError, match="does not exist"):
        list_documents(tmp_path / "nowhere")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.pdf").write_bytes(b"%PDF")
    with pytest.raises(CorpusError, match=r"holds no \.txt/\.md files"):
        list_documents(tmp_path / "docs")
