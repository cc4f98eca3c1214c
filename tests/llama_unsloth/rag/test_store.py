"""llama_unsloth.rag.store: one way to open a Chroma folder or server, and what a collection records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llama_unsloth.rag.test_chunking import japanese_prose
from tests.llama_unsloth.rag.test_documents import write_mixed_corpus
from tests.recipes._helpers import embed_model


def test_chroma_location_is_a_folder_or_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_unsloth.rag.store import chroma_location, chroma_server

    monkeypatch.delenv("LLAMA_UNSLOTH_CHROMA_HOST", raising=False)
    monkeypatch.delenv("LLAMA_UNSLOTH_CHROMA_PORT", raising=False)
    assert chroma_location("chroma_db") == "chroma_db" and chroma_server("chroma_db") is None
    assert chroma_location("chroma_db", host="db.local") == "http://db.local:8000"
    assert chroma_server("http://db.local:8000/") == ("db.local", 8000)
    assert chroma_server("https://db.local:9000") == ("db.local", 9000)
    monkeypatch.setenv("LLAMA_UNSLOTH_CHROMA_HOST", "10.0.0.2")
    monkeypatch.setenv("LLAMA_UNSLOTH_CHROMA_PORT", "8123")
    assert chroma_location("ignored") == "http://10.0.0.2:8123"


def test_open_collection_says_what_is_missing_in_a_folder(tmp_path: Path) -> None:
    from llama_unsloth.errors import IndexNotFoundError, RagError
    from llama_unsloth.rag.store import open_collection

    with pytest.raises(IndexNotFoundError, match="the folder does not exist. Build one first"):
        open_collection(tmp_path / "db", "documents")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match=r"is not a Chroma index \(no chroma.sqlite3 inside\)"):
        open_collection(tmp_path / "empty", "documents")
    with pytest.raises(RagError, match="Invalid collection name 'a'"):
        open_collection(tmp_path / "db", "a", create=True)
    created = open_collection(tmp_path / "db", "notes", create=True, metadata={"k": "v"})
    assert created.metadata["k"] == "v" and open_collection(tmp_path / "db", "notes").name == "notes"
    with pytest.raises(IndexNotFoundError) as err:
        open_collection(tmp_path / "db", "documents")
    assert str(err.value) == (
        f"The index at {str(tmp_path / 'db')!r} has no collection 'documents' (collections: notes). Pass "
        "--collection with one of those, or build it with `llama-unsloth index`."
    )
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(IndexNotFoundError, match="is damaged or from an incompatible chromadb") as err:
        open_collection(tmp_path / "damaged", "documents")
    assert err.value.__cause__ is not None  # what chromadb said stays attached


def test_an_unreachable_chroma_server_is_one_clear_error() -> None:
    from llama_unsloth.errors import IndexNotFoundError
    from llama_unsloth.rag.store import open_collection

    with pytest.raises(IndexNotFoundError) as err:
        open_collection("http://127.0.0.1:9/", "documents")
    assert str(err.value) == (
        "Could not reach the Chroma server at http://127.0.0.1:9. Start it with "
        "`chroma run --path chroma_db --host 127.0.0.1 --port 9`, or check --chroma-host/--chroma-port."
    )
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no connection internals


def test_chunk_settings_are_stored_and_a_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    from llama_unsloth.errors import ChunkSettingsMismatchError
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection

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


def test_embedding_model_from_the_environment_offline_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth.errors import RagError
    from llama_unsloth.models import embed_model_id, make_embed_model

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
    from llama_unsloth.models import embed_model_id
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_index

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
