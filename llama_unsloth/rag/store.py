"""The persistent Chroma index: where it is, one way to open a collection, and what the collection records.

* :func:`chroma_location` / :func:`open_collection`: a Chroma folder (one process) or a Chroma server
  (``http://host:port``, shared by several processes or machines), opened the same way.
* A collection records its embedding model (name, content fingerprint, where it was, dimension) and
  its chunk settings; :func:`check_embed_model` and :func:`check_chunk_settings` refuse what does not
  match. The same model at another path (a re-created venv, a re-clone, another machine) opens it.
* :func:`open_index` reopens a collection written by :func:`~llama_unsloth.rag.indexing.build_index`
  as a LlamaIndex ``VectorStoreIndex``, with the embedding model it records.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

from llama_unsloth import defaults
from llama_unsloth.errors import ChunkSettingsMismatchError, EmbeddingMismatchError, IndexNotFoundError, RagError
from llama_unsloth.models import (
    embed_backend_of,
    embed_fingerprint,
    embed_model_folder,
    embed_model_id,
    embed_model_name,
    embedding_dimension,
    make_embed_model,
)
from llama_unsloth.rag.chunking import ChunkSettings

DEFAULT_PERSIST_DIR = defaults.PERSIST_DIR
DEFAULT_COLLECTION = defaults.COLLECTION

# Collection metadata written by build_index (the chunk settings' keys are in llama_unsloth.rag.chunking).
# The model's name (hub id or folder name; before fingerprints: a folder's absolute path), what it is
# (embed_fingerprint), and, for a folder, where it was when the index was built (for messages and reopening).
META_EMBED_MODEL = "llama_unsloth_embed_model"
META_EMBED_FINGERPRINT = "llama_unsloth_embed_fingerprint"
META_EMBED_PATH = "llama_unsloth_embed_path"
META_EMBED_DIM = "llama_unsloth_embed_dim"
META_EMBED_BACKEND = "llama_unsloth_embed_backend"
META_SPACE = "hnsw:space"

CHROMA_HOST_ENV = "LLAMA_UNSLOTH_CHROMA_HOST"
CHROMA_PORT_ENV = "LLAMA_UNSLOTH_CHROMA_PORT"


# ---------------------------------------------------------------------------------------------- location
def chroma_server(persist_dir: Union[str, Path]) -> Optional[Tuple[str, int]]:
    """``(host, port)`` when ``persist_dir`` names a Chroma server (``http://host:port``), else None (a folder).

    A folder is for one process; several processes or machines share one index through ``chroma run``
    (Chroma's maintainers say a persistent folder is not safe across processes).
    """
    match = re.fullmatch(r"https?://\[?([^\]/:]+)\]?(?::(\d+))?/?", str(persist_dir).strip())
    return (match.group(1), int(match.group(2) or 8000)) if match else None


def chroma_location(persist_dir: Union[str, Path], host: Optional[str] = None, port: Optional[int] = None) -> str:
    """The ``persist_dir`` the index functions take: the folder, or ``http://host:port`` of a Chroma server.

    Args:
        persist_dir: The Chroma folder (folder mode).
        host: A Chroma server's host (``chroma run``); default ``$LLAMA_UNSLOTH_CHROMA_HOST``; unset: folder mode.
        port: Its port; default ``$LLAMA_UNSLOTH_CHROMA_PORT``, else 8000.
    """
    host = host or os.environ.get(CHROMA_HOST_ENV) or None
    if not host:
        return str(persist_dir)
    port = port or int(os.environ.get(CHROMA_PORT_ENV) or 8000)
    return f"http://{host}:{port}"


# ---------------------------------------------------------------------------------------------- client and collections
def _chroma_client(persist_dir: Union[str, Path]) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    settings = ChromaSettings(anonymized_telemetry=False)
    server = chroma_server(persist_dir)
    if server is not None:
        return chromadb.HttpClient(host=server[0], port=server[1], settings=settings)
    return chromadb.PersistentClient(path=str(persist_dir), settings=settings)


def delete_collection(persist_dir: Union[str, Path], collection: str) -> None:
    """Deletes a collection (its chunks and vectors) after checking it exists in a Chroma folder or server.

    Raises:
        IndexNotFoundError: No such Chroma folder, server or collection.
    """
    open_collection(persist_dir, collection)
    _chroma_client(persist_dir).delete_collection(collection)


def open_collection(
    persist_dir: Union[str, Path], collection: str, create: bool = False, metadata: Optional[dict] = None
) -> Any:
    """Opens (or with ``create=True`` creates) a Chroma collection in a Chroma folder or on a Chroma server.

    Args:
        persist_dir: The Chroma folder, or ``http://host:port`` of a Chroma server (see :func:`chroma_location`).
        collection: Collection name.
        create: Create the collection (and the folder) when missing.
        metadata: The new collection's metadata (with ``create=True``).

    Raises:
        IndexNotFoundError: ``create=False`` and the folder or collection does not exist, the folder is
            not a readable Chroma database, or the server cannot be reached.
        RagError: ``create=True`` and the collection name is not one Chroma accepts.
    """
    server = chroma_server(persist_dir)
    # The client and the messages name a folder as Path spells it, a server by its URL.
    where = str(persist_dir).rstrip("/") if server is not None else str(Path(persist_dir))
    if server is None and not create:
        _check_chroma_folder(Path(where))
    try:
        client = _chroma_client(where)
        names: List[str] = [getattr(c, "name", c) for c in client.list_collections()]
    except Exception as err:  # a damaged database raises many types; a server: refused, DNS, not Chroma ...
        # A server's cause is noise (connection internals); a folder's says what is damaged.
        raise _unreachable(where, server, err) from (err if server is None else None)
    if collection in names:
        return client.get_collection(collection)
    if not create:
        raise IndexNotFoundError(_no_collection(where, server, collection, names))
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", collection):
        raise RagError(
            f"Invalid collection name {collection!r}: use 3-512 characters from [a-zA-Z0-9._-], starting and ending "
            "with a letter or digit."
        )
    return client.create_collection(collection, metadata=metadata)


def _check_chroma_folder(folder: Path) -> None:
    """Raises :class:`IndexNotFoundError` unless ``folder`` holds a Chroma database (checked before chromadb creates one)."""
    if folder.exists() and not folder.is_dir():
        raise IndexNotFoundError(
            f"--persist-dir {folder} is a file, not a folder: point it at the folder `llama-unsloth index` wrote."
        )
    if not folder.is_dir():
        raise IndexNotFoundError(
            f"No index at {str(folder)!r}: the folder does not exist. Build one first: "
            f"llama-unsloth index --input-dir <docs> --persist-dir {folder}"
        )
    if not (folder / "chroma.sqlite3").is_file():
        raise IndexNotFoundError(
            f"{str(folder)!r} is not a Chroma index (no chroma.sqlite3 inside). Point --persist-dir at the "
            "folder `llama-unsloth index` wrote, or rebuild it."
        )


# What SQLite says (chromadb passes its words on) when the database file is shown to be damaged, or cannot be written.
_DAMAGED = ("file is not a database", "database disk image is malformed", "(code: 26)", "(code: 11)")
_READ_ONLY = ("readonly database", "read-only file system", "(code: 8)", "permission denied")


def _unreachable(where: str, server: Optional[Tuple[str, int]], err: Exception) -> IndexNotFoundError:
    """The error for a folder chromadb cannot open, or a server that does not answer as Chroma."""
    if server is None:
        return IndexNotFoundError(folder_open_problem(Path(where), err))
    return IndexNotFoundError(
        f"Could not reach the Chroma server at {where}. Start it with "
        f"`chroma run --path chroma_db --host {server[0]} --port {server[1]}`, or check --chroma-host/--chroma-port."
    )


def folder_open_problem(folder: Path, err: Exception) -> str:
    """What to say when chromadb cannot open a Chroma folder: a file, read-only, damaged, or another failure.

    Deleting is advised only when SQLite shows the database damaged: a healthy index on a read-only disk,
    or one chromadb fails on for another reason, is data to keep.
    """
    first = (str(err).strip().splitlines() or [""])[0]
    said = f"{type(err).__name__}: {first}" if first else type(err).__name__
    text = str(err).lower()
    if folder.exists() and not folder.is_dir():
        return f"--persist-dir {folder} is a file, not a folder: point it at the folder `llama-unsloth index` wrote."
    if any(words in text for words in _READ_ONLY) or not _writable(folder):
        return (
            f"The Chroma index at {str(folder)!r} is read-only here ({said}); chromadb writes to its folder even to "
            "read it. Nothing is wrong with the index: make the folder writable, or copy it to a writable place and "
            "pass that as --persist-dir."
        )
    if any(words in text for words in _DAMAGED):
        return (
            f"The Chroma index at {str(folder)!r} is damaged ({said}): SQLite cannot read chroma.sqlite3. Delete the "
            "folder and run `llama-unsloth index` again (or restore it from a backup)."
        )
    import chromadb

    return (
        f"Could not open the Chroma index at {str(folder)!r} ({said}). It may come from another chromadb version "
        f"(this is {chromadb.__version__}): open it with that version, or index into a new --persist-dir."
    )


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (as root, permissions do not stop writes: a read-only disk does)."""
    import tempfile

    try:
        handle, probe = tempfile.mkstemp(prefix=".llama-unsloth-write-check-", dir=folder)
    except OSError:
        return not folder.is_dir()  # no folder: nothing to say about writing
    os.close(handle)
    os.unlink(probe)
    return True


def _no_collection(where: str, server: Optional[Tuple[str, int]], collection: str, names: List[str]) -> str:
    """What to say when a folder or server has no such collection: the ones it has, and how to build it."""
    have = ", ".join(sorted(names)) or "none"
    if server is None:
        return (
            f"The index at {where!r} has no collection {collection!r} (collections: {have}). Pass "
            "--collection with one of those, or build it with `llama-unsloth index`."
        )
    return (
        f"The Chroma server at {where} has no collection {collection!r} (collections: {have}). Pass --collection "
        f"with one of those, or build it with `llama-unsloth index --chroma-host {server[0]} --chroma-port {server[1]}`."
    )


# ---------------------------------------------------------------------------------------------- what a collection records
def embed_metadata(embed_model: Any, dim: int) -> dict:
    """The collection metadata naming ``embed_model`` by what it is: name, fingerprint, where it was, dimension."""
    meta: dict = {
        META_EMBED_MODEL: embed_model_name(embed_model),
        META_EMBED_DIM: dim,
        META_EMBED_BACKEND: embed_backend_of(embed_model),
    }
    fingerprint = embed_fingerprint(embed_model)
    if fingerprint is not None:
        meta[META_EMBED_FINGERPRINT] = fingerprint
    folder = embed_model_folder(embed_model)
    if folder is not None and Path(embed_model_id(embed_model)).is_absolute():  # a folder, not a hub id
        meta[META_EMBED_PATH] = str(folder)
    return meta


def check_embed_model(collection: Any, embed_model: Any, dim: Optional[int] = None) -> None:
    """Raises :class:`EmbeddingMismatchError` unless ``embed_model`` is the model the collection was built with.

    The model is compared by what it is, not where it lies: by fingerprint when the collection records one
    (a different fingerprint is always refused), else by name. A collection written before fingerprints
    records a folder's absolute path: the model at that path opens it, and so does any model that
    reproduces the vectors stored for a few of its chunks (the same model moved, proved by its output;
    a folder's name or dimension alone proves nothing: many models share them).
    """
    meta = collection.metadata or {}
    recorded_name, recorded_dim = meta.get(META_EMBED_MODEL), meta.get(META_EMBED_DIM)
    if recorded_dim is not None:
        dim = dim if dim is not None else embedding_dimension(embed_model)
        if int(recorded_dim) != dim:
            raise EmbeddingMismatchError(
                f"Collection {collection.name!r} holds {recorded_dim}-dimensional embeddings from "
                f"{_recorded(meta)}, but the embedding model {embed_model_id(embed_model)!r} gives {dim}. Use the "
                "model the index was built with (leave --embed-model unset to use it), or index into a new "
                "--collection / --persist-dir."
            )
    if recorded_name is None or _same_model(collection, meta, embed_model):
        return
    raise EmbeddingMismatchError(
        f"Collection {collection.name!r} was built with the embedding model {_recorded(meta)}, not "
        f"{_given(embed_model)}; vectors of different models cannot be compared. Pass --embed-model with the "
        "model it was built with (a folder holding the same files opens it from any path), rebuild it with "
        "`llama-unsloth index --fresh`, or index into a new --collection / --persist-dir."
    )


def _same_model(collection: Any, meta: dict, embed_model: Any) -> bool:
    """Whether ``embed_model`` is the recorded model (see :func:`check_embed_model`)."""
    recorded_name = str(meta[META_EMBED_MODEL])
    recorded_fingerprint = meta.get(META_EMBED_FINGERPRINT)
    if recorded_fingerprint is not None:
        given = embed_fingerprint(embed_model)
        return given == recorded_fingerprint if given is not None else recorded_name == embed_model_name(embed_model)
    # Recorded before fingerprints: the same path or hub id as before, else the model's output decides.
    if recorded_name in (embed_model_id(embed_model), embed_model_name(embed_model)):
        return True
    return reproduces_stored_vectors(collection, embed_model)


def reproduces_stored_vectors(collection: Any, embed_model: Any, samples: int = 3, min_cosine: float = 0.999) -> bool:
    """Whether ``embed_model`` gives (cosine >= ``min_cosine``) the vectors stored for the first ``samples`` chunks.

    The stored text of a chunk is what was embedded (the bookkeeping metadata is excluded from embedding),
    so the model the collection was built with reproduces its vectors up to float rounding; another
    model does not. An empty collection has no vectors to disagree with.
    """
    import numpy as np

    got = collection.get(limit=samples, include=["documents", "embeddings"])
    texts, stored = got.get("documents") or [], got.get("embeddings")
    if stored is None or len(texts) == 0:
        return True
    fresh = np.asarray(embed_model.get_text_embedding_batch(list(texts)), dtype=np.float64)
    stored = np.asarray(stored, dtype=np.float64)
    if fresh.shape != stored.shape:
        return False
    norms = np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1)
    cosines = np.sum(fresh * stored, axis=1) / np.where(norms == 0, 1.0, norms)
    return bool(np.all(cosines >= min_cosine))


def _recorded(meta: dict) -> str:
    """The recorded model for messages: its name, where it was, and a short fingerprint."""
    name, path = meta.get(META_EMBED_MODEL), meta.get(META_EMBED_PATH)
    fingerprint = str(meta.get(META_EMBED_FINGERPRINT) or "")
    details = [f"at {path}"] if path and path != name else []
    if fingerprint.startswith("sha256:"):
        details.append(f"fingerprint {fingerprint[7:19]}")
    elif not fingerprint and name and Path(str(name)).is_absolute():
        details.append("recorded by path only, by an earlier version")
    return f"{name!r}" + (f" ({', '.join(details)})" if details else "")


def _given(embed_model: Any) -> str:
    """The model given, for messages: its name, where it is, and a short fingerprint."""
    name, where = embed_model_name(embed_model), embed_model_id(embed_model)
    fingerprint = str(embed_fingerprint(embed_model) or "")
    details = [f"at {where}"] if where != name else []
    if fingerprint.startswith("sha256:"):
        details.append(f"fingerprint {fingerprint[7:19]}")
    return f"{name!r}" + (f" ({', '.join(details)})" if details else "")


def check_chunk_settings(collection: Any, chunking: ChunkSettings) -> None:
    """Raises :class:`ChunkSettingsMismatchError` when the collection was chunked otherwise.

    A collection that holds chunks but records no settings (written before they were recorded) is
    refused too: its chunk sizes are unknown, and adding differently cut chunks would mix the index.
    """
    recorded = ChunkSettings.recorded(collection.metadata or {})
    if recorded is None:
        if collection.count() == 0:
            return
        raise ChunkSettingsMismatchError(
            f"Collection {collection.name!r} does not record how it was chunked (built by an older version), so new "
            f"chunks of {chunking.describe()} could not be matched to it. Rebuild it with `llama-unsloth index "
            "--fresh` (its chunks are deleted and made again), or index into a new --collection."
        )
    if recorded != chunking:
        raise ChunkSettingsMismatchError(
            f"Collection {collection.name!r} was chunked with {recorded.describe()}, not {chunking.describe()}; one "
            f"index must not mix the two. Re-run with --chunk-unit {recorded.unit} --chunk-size {recorded.size} "
            f"--chunk-overlap {recorded.overlap} to add to it, --fresh to rebuild it with the new settings, or index "
            "into a new --collection / --persist-dir."
        )


def open_index(
    persist_dir: Union[str, Path] = DEFAULT_PERSIST_DIR,
    collection: str = DEFAULT_COLLECTION,
    embed_model: Any = None,
) -> Any:
    """Opens a collection written by :func:`~llama_unsloth.rag.indexing.build_index` as a LlamaIndex ``VectorStoreIndex``.

    Args:
        persist_dir: The Chroma folder, or ``http://host:port`` of a Chroma server (see :func:`chroma_location`).
        collection: Collection name.
        embed_model: Embedding model object or name/folder; ``None`` loads the one the collection records.

    Raises:
        IndexNotFoundError: Missing/damaged folder, absent or empty collection.
        EmbeddingMismatchError: ``embed_model`` differs from the recorded model or dimension.
    """
    return open_index_with_embeddings(persist_dir, collection, embed_model)[0]


def open_index_with_embeddings(
    persist_dir: Union[str, Path] = DEFAULT_PERSIST_DIR,
    collection: str = DEFAULT_COLLECTION,
    embed_model: Any = None,
) -> Tuple[Any, Any]:
    """:func:`open_index`, also returning the embedding model it uses (the POV reranker embeds with the same one).

    Returns:
        ``(index, embed_model)``.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    chroma = open_collection(persist_dir, collection)
    if chroma.count() == 0:
        raise IndexNotFoundError(
            f"Collection {collection!r} in {str(persist_dir)!r} is empty. Run `llama-unsloth index --input-dir <docs>` first."
        )
    meta = chroma.metadata or {}
    if isinstance(embed_model, str):
        embed_model = make_embed_model(meta.get(META_EMBED_BACKEND, "huggingface"), embed_model)
    if embed_model is None:
        embed_model = _recorded_embed_model(chroma, meta)
    check_embed_model(chroma, embed_model)
    store = ChromaVectorStore(chroma_collection=chroma)
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model), embed_model


def _recorded_embed_model(chroma: Any, meta: dict) -> Any:
    """Loads the model a collection records: from where it was, else (that folder gone) the default, if the same.

    Raises:
        EmbeddingMismatchError: The recorded model cannot be loaded here, or is gone and the default is another.
    """
    backend = meta.get(META_EMBED_BACKEND, "huggingface")
    name = meta.get(META_EMBED_MODEL)
    fingerprinted = META_EMBED_FINGERPRINT in meta
    # Where the folder was: recorded since fingerprints; before, the name was the path.
    where = meta.get(META_EMBED_PATH) or (
        name if name and not fingerprinted and Path(str(name)).is_absolute() else None
    )
    if backend == "cohere" or where is None or Path(where).is_dir():
        try:
            return make_embed_model(backend, where or name)
        except RagError as err:
            raise EmbeddingMismatchError(
                f"The index records the embedding model {name!r}, which cannot be loaded here ({err}). Pass "
                "--embed-model with the same model."
            ) from err
    # The folder is not here (a re-created venv, a re-clone, another machine): the default, if it is that model.
    model = make_embed_model(backend, None)
    try:
        check_embed_model(chroma, model)
    except EmbeddingMismatchError:
        raise EmbeddingMismatchError(
            f"Collection {chroma.name!r} was built with the embedding model {_recorded(meta)}, which is not there "
            f"any more, and the default embedding model {_given(model)} is another one. Pass --embed-model with a "
            "folder holding the model it was built with."
        ) from None
    return model


# ---------------------------------------------------------------------------------------------- scores
def collection_space(index: Any) -> str:
    """Chroma's distance space of an index's collection (``cosine`` for ours, ``l2`` by default)."""
    chroma = getattr(index.vector_store, "_collection", None)
    return ((getattr(chroma, "metadata", None) or {}).get(META_SPACE)) or "l2"


def retrieval_cosine(score: Optional[float], space: str = "cosine") -> Optional[float]:
    """Cosine similarity from Chroma's LlamaIndex score ``exp(-distance)`` (unit vectors assumed)."""
    if score is None or score <= 0:
        return None
    distance = -math.log(score)
    return 1.0 - distance if space == "cosine" else 1.0 - distance / 2.0


__all__ = [
    "CHROMA_HOST_ENV",
    "CHROMA_PORT_ENV",
    "check_chunk_settings",
    "check_embed_model",
    "chroma_location",
    "chroma_server",
    "collection_space",
    "delete_collection",
    "embed_metadata",
    "folder_open_problem",
    "open_collection",
    "open_index",
    "open_index_with_embeddings",
    "reproduces_stored_vectors",
    "retrieval_cosine",
]
