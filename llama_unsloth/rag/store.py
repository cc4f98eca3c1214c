"""The persistent Chroma index: where it is, one way to open a collection, and what the collection records.

* :func:`chroma_location` / :func:`open_collection`: a Chroma folder (one process) or a Chroma server
  (``http://host:port``, shared by several processes or machines), opened the same way.
* A collection records its embedding model and dimension and its chunk settings;
  :func:`check_embed_model` and :func:`check_chunk_settings` refuse what does not match.
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
from llama_unsloth.models import embed_model_id, embedding_dimension, make_embed_model
from llama_unsloth.rag.chunking import ChunkSettings

DEFAULT_PERSIST_DIR = defaults.PERSIST_DIR
DEFAULT_COLLECTION = defaults.COLLECTION

# Collection metadata written by build_index (the chunk settings' keys are in llama_unsloth.rag.chunking).
META_EMBED_MODEL = "llama_unsloth_embed_model"
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


def _unreachable(where: str, server: Optional[Tuple[str, int]], err: Exception) -> IndexNotFoundError:
    """The error for a folder chromadb cannot open, or a server that does not answer as Chroma."""
    if server is None:
        return IndexNotFoundError(
            f"Could not open the Chroma index at {where!r} ({type(err).__name__}: {err}). The folder is "
            "damaged or from an incompatible chromadb version: delete it and run `llama-unsloth index` again."
        )
    return IndexNotFoundError(
        f"Could not reach the Chroma server at {where}. Start it with "
        f"`chroma run --path chroma_db --host {server[0]} --port {server[1]}`, or check --chroma-host/--chroma-port."
    )


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
def check_embed_model(collection: Any, embed_model: Any, dim: Optional[int] = None) -> None:
    """Raises :class:`EmbeddingMismatchError` when ``embed_model`` is not the one the collection records."""
    meta = collection.metadata or {}
    recorded_name, recorded_dim = meta.get(META_EMBED_MODEL), meta.get(META_EMBED_DIM)
    if recorded_dim is not None:
        dim = dim if dim is not None else embedding_dimension(embed_model)
        if int(recorded_dim) != dim:
            raise EmbeddingMismatchError(
                f"Collection {collection.name!r} holds {recorded_dim}-dimensional embeddings from "
                f"{recorded_name!r}, but the embedding model {embed_model_id(embed_model)!r} gives {dim}. Use the "
                "model the index was built with (leave --embed-model unset to use it), or index into a new "
                "--collection / --persist-dir."
            )
    if recorded_name is not None and recorded_name != embed_model_id(embed_model):
        raise EmbeddingMismatchError(
            f"Collection {collection.name!r} was built with the embedding model {recorded_name!r}, not "
            f"{embed_model_id(embed_model)!r}; vectors of different models cannot be compared. Leave "
            "--embed-model unset to use the recorded one, or index into a new --collection / --persist-dir."
        )


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
            f"chunks of {chunking.describe()} could not be matched to it. Index into a new --collection (or delete "
            "the --persist-dir folder and index again)."
        )
    if recorded != chunking:
        raise ChunkSettingsMismatchError(
            f"Collection {collection.name!r} was chunked with {recorded.describe()}, not {chunking.describe()}; one "
            f"index must not mix the two. Re-run with --chunk-unit {recorded.unit} --chunk-size {recorded.size} "
            f"--chunk-overlap {recorded.overlap}, or index into a new --collection / --persist-dir."
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
        recorded = meta.get(META_EMBED_MODEL)
        backend = meta.get(META_EMBED_BACKEND, "huggingface")
        try:
            embed_model = make_embed_model(backend, recorded)
        except RagError as err:
            raise EmbeddingMismatchError(
                f"The index records the embedding model {recorded!r}, which cannot be loaded here ({err}). Pass "
                "--embed-model with the same model."
            ) from err
    check_embed_model(chroma, embed_model)
    store = ChromaVectorStore(chroma_collection=chroma)
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model), embed_model


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
    "open_collection",
    "open_index",
    "open_index_with_embeddings",
    "retrieval_cosine",
]
