"""The persistent Chroma index: embedding models, collections and incremental indexing.

* :func:`build_index` turns a folder of ``.txt``/``.md`` files into chunks in a persistent Chroma
  collection, incrementally: unchanged files are skipped, changed files have their chunks replaced,
  deleted files have them removed. The collection records its embedding model and dimension.
* :func:`open_index` reopens it, refusing an embedding model that does not match.

Chunk sizes are **tokens** (LlamaIndex's ``SentenceSplitter``), counted with tiktoken's
``cl100k_base`` so chunking does not depend on which LLM set ``Settings.tokenizer``. On English
prose that is ~5.4 characters per token (the sample corpus; MiniLM's WordPiece gives the same
ratio), so the default 384/24 approximates users' 2000/120 characters. MiniLM reads at most 256
word pieces (~1,400 characters) of a chunk when embedding it; models like BGE read 512.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from llama_unsloth.errors import CorpusError, EmbeddingMismatchError, IndexNotFoundError, RagError

DEFAULT_CHUNK_SIZE = 384  # tokens (cl100k): ~2,000 characters of English prose
DEFAULT_CHUNK_OVERLAP = 24  # tokens: ~120 characters
DEFAULT_PERSIST_DIR = "chroma_db"
DEFAULT_COLLECTION = "documents"
COHERE_MODEL = "embed-english-v3.0"
COHERE_INSTALL_HINT = 'pip install "llama-unsloth[cohere]"'
DOC_EXTENSIONS = (".txt", ".md")

# Collection metadata written by build_index.
META_EMBED_MODEL = "llama_unsloth_embed_model"
META_EMBED_DIM = "llama_unsloth_embed_dim"
META_EMBED_BACKEND = "llama_unsloth_embed_backend"
META_SPACE = "hnsw:space"

# Node metadata: bookkeeping for incremental indexing, excluded from LLM and embedding text.
KEY_FILE_PATH = "file_path"
KEY_FILE_NAME = "file_name"
KEY_CONTENT_HASH = "content_hash"
KEY_CHUNK_INDEX = "chunk_index"
KEY_CHUNKS_IN_FILE = "chunks_in_file"
BOOKKEEPING_KEYS = [KEY_FILE_PATH, KEY_FILE_NAME, KEY_CONTENT_HASH, KEY_CHUNK_INDEX, KEY_CHUNKS_IN_FILE]


# ---------------------------------------------------------------------------------------------- embeddings
def make_embed_model(backend: str = "huggingface", model_name: Optional[str] = None) -> Any:
    """Builds the embedding model for indexing and querying.

    Args:
        backend: ``huggingface`` (local folder or hub name, normalised) or ``cohere``
            (``embed-english-v3.0`` by default, key from ``COHERE_API_KEY`` / ``CO_API_KEY``).
        model_name: Model name or folder; ``None``: the bundled MiniLM (huggingface) or
            ``embed-english-v3.0`` (cohere).

    Raises:
        ImportError: Cohere requested but its extras are not installed.
        RagError: Unknown backend, missing key or a model folder that does not exist.
    """
    if backend == "cohere":
        try:
            import llama_index.embeddings.cohere  # noqa: F401
        except ImportError as err:
            raise ImportError(f"--embed-backend cohere needs the cohere extras: {COHERE_INSTALL_HINT}") from err
        from postprocessors.cohere_support import cohere_embedding

        try:
            return cohere_embedding(model_name=model_name or COHERE_MODEL)
        except ValueError as err:
            raise RagError(f"{err} Export COHERE_API_KEY=... before running.") from err
    if backend != "huggingface":
        raise RagError(f"Unknown embedding backend {backend!r}: use 'huggingface' or 'cohere'.")
    from llama_unsloth.defaults import default_embed_model

    if model_name and _looks_like_path(model_name) and not Path(model_name).expanduser().is_dir():
        raise RagError(f"Embedding model folder {model_name!r} does not exist. Pass an existing folder or a hub name.")
    try:
        return default_embed_model(str(Path(model_name).expanduser()) if model_name and _looks_like_path(model_name) else model_name)
    except (OSError, ValueError) as err:
        raise RagError(
            f"Could not load embedding model {model_name!r} ({err}). Without a model hub, pass a local folder "
            "(--embed-model path/to/model) or leave it unset for the bundled MiniLM."
        ) from err


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def embed_model_id(embed_model: Any) -> str:
    """A stable name for an embedding model (absolute path for local folders)."""
    name = str(getattr(embed_model, "model_name", "") or type(embed_model).__name__)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def embed_backend_of(embed_model: Any) -> str:
    """``cohere`` for Cohere embeddings, ``huggingface`` otherwise (by class name)."""
    return "cohere" if type(embed_model).__name__ == "CohereEmbedding" else "huggingface"


def embedding_dimension(embed_model: Any) -> int:
    """Length of the vectors ``embed_model`` produces (one short probe embedding)."""
    return len(embed_model.get_text_embedding("dimension probe"))


# ---------------------------------------------------------------------------------------------- chroma
def _chroma_client(persist_dir: Union[str, Path]) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(path=str(persist_dir), settings=ChromaSettings(anonymized_telemetry=False))


def open_collection(persist_dir: Union[str, Path], collection: str, create: bool = False, metadata: Optional[dict] = None) -> Any:
    """Opens (or with ``create=True`` creates) a Chroma collection in ``persist_dir``.

    Raises:
        IndexNotFoundError: ``create=False`` and the folder or collection does not exist, or the
            folder is not a readable Chroma database.
    """
    folder = Path(persist_dir)
    if not create:
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
    try:
        client = _chroma_client(folder)
        names = [getattr(c, "name", c) for c in client.list_collections()]
    except Exception as err:  # chromadb raises many types for a damaged database
        raise IndexNotFoundError(
            f"Could not open the Chroma index at {str(folder)!r} ({type(err).__name__}: {err}). The folder is "
            "damaged or from an incompatible chromadb version: delete it and run `llama-unsloth index` again."
        ) from err
    if collection in names:
        return client.get_collection(collection)
    if not create:
        have = ", ".join(sorted(names)) or "none"
        raise IndexNotFoundError(
            f"The index at {str(folder)!r} has no collection {collection!r} (collections: {have}). Pass "
            "--collection with one of those, or build it with `llama-unsloth index`."
        )
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", collection):
        raise RagError(
            f"Invalid collection name {collection!r}: use 3-512 characters from [a-zA-Z0-9._-], starting and ending "
            "with a letter or digit."
        )
    return client.create_collection(collection, metadata=metadata)


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


def open_index(
    persist_dir: Union[str, Path] = DEFAULT_PERSIST_DIR,
    collection: str = DEFAULT_COLLECTION,
    embed_model: Any = None,
) -> Any:
    """Opens a collection written by :func:`build_index` as a LlamaIndex ``VectorStoreIndex``.

    Args:
        persist_dir: The Chroma folder.
        collection: Collection name.
        embed_model: Embedding model object; ``None`` loads the one the collection records.

    Raises:
        IndexNotFoundError: Missing/damaged folder, absent or empty collection.
        EmbeddingMismatchError: ``embed_model`` differs from the recorded model or dimension.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore

    chroma = open_collection(persist_dir, collection)
    if chroma.count() == 0:
        raise IndexNotFoundError(
            f"Collection {collection!r} in {str(persist_dir)!r} is empty. Run `llama-unsloth index --input-dir <docs>` first."
        )
    meta = chroma.metadata or {}
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
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model)


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


# ---------------------------------------------------------------------------------------------- indexing
@dataclass
class IndexStats:
    """What :func:`build_index` did."""

    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0

    def summary(self) -> str:
        """One line for people."""
        return (
            f"files: {self.files_new} new, {self.files_changed} changed, {self.files_unchanged} unchanged, "
            f"{self.files_removed} removed | chunks: {self.chunks_added} added, {self.chunks_removed} removed, "
            f"{self.chunks_total} in the collection"
        )


def list_documents(folder: Union[str, Path], extensions: Sequence[str] = DOC_EXTENSIONS) -> List[Path]:
    """The ``.txt``/``.md`` files under ``folder`` (recursive, sorted, hidden entries skipped).

    Raises:
        CorpusError: The folder does not exist or holds no such file.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusError(f"Documents folder {str(folder)!r} does not exist (or is not a folder). Pass --input-dir <folder>.")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in extensions and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise CorpusError(f"{str(folder)!r} holds no {'/'.join(extensions)} files (searched recursively).")
    return files


def _stored_files(chroma: Any, page: int = 5000) -> Dict[str, Dict[str, Any]]:
    """file_path -> {hash, ids, expected} for everything in the collection."""
    files: Dict[str, Dict[str, Any]] = {}
    offset = 0
    while True:
        got = chroma.get(include=["metadatas"], limit=page, offset=offset)
        ids = got["ids"]
        for node_id, meta in zip(ids, got["metadatas"] or []):
            meta = meta or {}
            path = meta.get(KEY_FILE_PATH)
            if path is None:
                continue
            entry = files.setdefault(path, {"hashes": set(), "ids": [], "expected": meta.get(KEY_CHUNKS_IN_FILE)})
            entry["hashes"].add(meta.get(KEY_CONTENT_HASH))
            entry["ids"].append(node_id)
        if len(ids) < page:
            return files
        offset += page


def _splitter(chunk_size: int, chunk_overlap: int) -> Any:
    import tiktoken
    from llama_index.core.node_parser import SentenceSplitter

    import llama_index.core

    # llama-index-core ships the cl100k file: point tiktoken at it so nothing is downloaded.
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = previous or str(Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache")
    try:
        encoding = tiktoken.get_encoding("cl100k_base")
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
    return SentenceSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=lambda text: encoding.encode(text, allowed_special="all"),
        include_prev_next_rel=False,
    )


def chunk_file(path: Path, text: str, content_hash: str, chunk_size: int, chunk_overlap: int) -> List[Any]:
    """Splits one file's text into ``TextNode``s with bookkeeping metadata (hidden from LLM and embeddings)."""
    from llama_index.core.schema import Document

    key = str(path.resolve())
    meta = {KEY_FILE_PATH: key, KEY_FILE_NAME: path.name, KEY_CONTENT_HASH: content_hash}
    doc = Document(text=text, id_=key, metadata=meta, excluded_llm_metadata_keys=list(BOOKKEEPING_KEYS), excluded_embed_metadata_keys=list(BOOKKEEPING_KEYS))
    nodes = [n for n in _splitter(chunk_size, chunk_overlap).get_nodes_from_documents([doc]) if n.get_content().strip()]
    path_id = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    for i, node in enumerate(nodes):
        node.id_ = f"{path_id}-{content_hash[:16]}-{i}"
        node.metadata[KEY_CHUNK_INDEX] = i
        node.metadata[KEY_CHUNKS_IN_FILE] = len(nodes)
        node.excluded_llm_metadata_keys = list(BOOKKEEPING_KEYS)
        node.excluded_embed_metadata_keys = list(BOOKKEEPING_KEYS)
    return nodes


def build_index(
    input_dir: Union[str, Path],
    persist_dir: Union[str, Path] = DEFAULT_PERSIST_DIR,
    collection: str = DEFAULT_COLLECTION,
    embed_model: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    embed_batch_size: int = 32,
    progress: bool = True,
) -> Tuple[Any, IndexStats]:
    """Brings a Chroma collection in step with a folder of documents.

    Files are keyed by absolute path and SHA-256 of their bytes: unchanged files are skipped; a
    changed file's chunks are replaced; chunks of files deleted from under ``input_dir`` are removed
    (files indexed from other folders are left alone). A file whose chunks were only partly written
    (interrupted run) counts as changed.

    Args:
        input_dir: Folder of ``.txt``/``.md`` files (recursive).
        persist_dir: Chroma folder (created if missing).
        collection: Collection name.
        embed_model: Embedding model; ``None``: the bundled MiniLM.
        chunk_size: Chunk size in tokens (cl100k).
        chunk_overlap: Overlap in tokens.
        embed_batch_size: Chunks per embedding call.
        progress: Show tqdm progress bars (stderr).

    Returns:
        ``(VectorStoreIndex, IndexStats)``.

    Raises:
        CorpusError: Missing folder or no documents; bad chunk sizes.
        EmbeddingMismatchError: The collection was built with another embedding model.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from tqdm.auto import tqdm

    if chunk_size < 16 or not 0 <= chunk_overlap < chunk_size:
        raise CorpusError(f"Need chunk_size >= 16 and 0 <= chunk_overlap < chunk_size; got {chunk_size} and {chunk_overlap}.")
    root = Path(input_dir).expanduser().resolve()
    files = list_documents(root)
    embed_model = embed_model if embed_model is not None else make_embed_model()
    dim = embedding_dimension(embed_model)
    chroma = open_collection(
        persist_dir,
        collection,
        create=True,
        metadata={
            META_EMBED_MODEL: embed_model_id(embed_model),
            META_EMBED_DIM: dim,
            META_EMBED_BACKEND: embed_backend_of(embed_model),
            META_SPACE: "cosine",
        },
    )
    check_embed_model(chroma, embed_model, dim)
    stored = _stored_files(chroma)
    stats = IndexStats()

    pending: List[Tuple[str, List[Any]]] = []  # (file key, new nodes)
    for path in tqdm(files, desc="Reading files", unit="file", disable=not progress):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        key = str(path.resolve())
        entry = stored.get(key)
        if entry and entry["hashes"] == {digest} and entry["expected"] == len(entry["ids"]):
            stats.files_unchanged += 1
            continue
        if entry:
            stats.files_changed += 1
        else:
            stats.files_new += 1
        text = data.decode("utf-8", errors="replace")
        pending.append((key, chunk_file(path, text, digest, chunk_size, chunk_overlap)))

    nodes = [n for _, file_nodes in pending for n in file_nodes]
    if nodes:
        from llama_index.core.schema import MetadataMode

        bar = tqdm(total=len(nodes), desc="Embedding chunks", unit="chunk", disable=not progress)
        for start in range(0, len(nodes), embed_batch_size):
            part = nodes[start : start + embed_batch_size]
            vectors = embed_model.get_text_embedding_batch([n.get_content(metadata_mode=MetadataMode.EMBED) for n in part])
            for node, vector in zip(part, vectors):
                node.embedding = vector
            bar.update(len(part))
        bar.close()

    store = ChromaVectorStore(chroma_collection=chroma)
    for key, file_nodes in pending:
        old = stored.get(key)
        if old:
            chroma.delete(ids=old["ids"])
            stats.chunks_removed += len(old["ids"])
        if file_nodes:
            store.add(file_nodes)
            stats.chunks_added += len(file_nodes)
    present = {str(p.resolve()) for p in files}
    prefix = str(root) + os.sep
    for key, entry in stored.items():
        if key.startswith(prefix) and key not in present:
            chroma.delete(ids=entry["ids"])
            stats.files_removed += 1
            stats.chunks_removed += len(entry["ids"])
    stats.chunks_total = chroma.count()
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model), stats


__all__ = [
    "IndexStats",
    "build_index",
    "check_embed_model",
    "chunk_file",
    "collection_space",
    "embed_backend_of",
    "embed_model_id",
    "embedding_dimension",
    "list_documents",
    "make_embed_model",
    "open_collection",
    "open_index",
    "retrieval_cosine",
]
