"""The index recipe: incremental re-runs, embedding checks, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.recipes._helpers import build_small_index, embed_model, reuse_embed_model, small_corpus


@pytest.fixture(autouse=True)
def _bundled_embed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    reuse_embed_model(monkeypatch)  # the recipe would load MiniLM on every call


def _run(args, capsys) -> tuple:
    from recipes.index import main

    rc = main([*args, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_index_twice_then_change_then_delete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.index_store import open_collection

    docs = small_corpus(tmp_path / "docs")
    args = ["--input-dir", str(docs), "--persist-dir", str(tmp_path / "db"), "--collection", "col1"]
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "6 new" in out
    count = open_collection(tmp_path / "db", "col1").count()
    assert count >= 6

    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "6 unchanged" in out and "0 added" in out
    assert open_collection(tmp_path / "db", "col1").count() == count

    (docs / "mercosur.txt").write_text("Zebra marker text. Mercosur now has a brand new founding story.\n", encoding="utf-8")
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "1 changed" in out and "5 unchanged" in out
    chroma = open_collection(tmp_path / "db", "col1")
    got = chroma.get(where={"file_name": "mercosur.txt"}, include=["documents", "metadatas"])
    assert len(got["ids"]) == 1 and "Zebra marker" in got["documents"][0]
    assert all("Asunción" not in d for d in got["documents"])

    (docs / "usmca.txt").unlink()
    rc, out, _ = _run(args, capsys)
    assert rc == 0 and "1 removed" in out
    assert open_collection(tmp_path / "db", "col1").get(where={"file_name": "usmca.txt"})["ids"] == []


def test_bookkeeping_metadata_stays_out_of_llm_and_embed_text(tmp_path: Path) -> None:
    from llama_index.core.schema import MetadataMode

    from llama_unsloth.index_store import open_index
    from llama_unsloth.rag import retrieve

    persist = build_small_index(tmp_path)
    nodes = retrieve(open_index(persist, "documents", embed_model=embed_model()), "Mercosur founders", similarity_top_k=2)
    for n in nodes:
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            text = n.node.get_content(metadata_mode=mode)
            assert "content_hash" not in text and "file_path" not in text and text == n.node.get_content()


def test_reopen_with_other_embedding_dimension_is_a_clear_error(tmp_path: Path) -> None:
    from llama_index.core import MockEmbedding

    from llama_unsloth.errors import EmbeddingMismatchError
    from llama_unsloth.index_store import build_index, open_index

    persist = build_small_index(tmp_path)
    with pytest.raises(EmbeddingMismatchError, match=r"384-dimensional.*gives 8"):
        open_index(persist, "documents", embed_model=MockEmbedding(embed_dim=8))
    with pytest.raises(EmbeddingMismatchError, match="new --collection"):
        build_index(tmp_path / "docs", persist, "documents", embed_model=MockEmbedding(embed_dim=8), progress=False)


def test_missing_folder_and_missing_index_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llama_unsloth.errors import IndexNotFoundError
    from llama_unsloth.index_store import open_index

    rc, _, err = _run(["--input-dir", str(tmp_path / "nope"), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(["--input-dir", str(tmp_path / "empty"), "--persist-dir", str(tmp_path / "db")], capsys)
    assert rc == 2 and "holds no .txt/.md files" in err

    with pytest.raises(IndexNotFoundError, match="does not exist"):
        open_index(tmp_path / "no_db")
    (tmp_path / "not_chroma").mkdir()
    with pytest.raises(IndexNotFoundError, match="not a Chroma index"):
        open_index(tmp_path / "not_chroma")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexNotFoundError, match="damaged"):
        open_index(broken)
    rc, _, err = _run(["--input-dir", str(small_corpus(tmp_path / "d")), "--persist-dir", str(tmp_path / "db"), "--collection", "x"], capsys)
    assert rc == 2 and "Invalid collection name 'x'" in err
    persist = build_small_index(tmp_path / "ok")
    with pytest.raises(IndexNotFoundError, match=r"no collection 'other' \(collections: documents\)"):
        open_index(persist, "other")
