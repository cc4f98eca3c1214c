"""Reusable RAG plumbing for the recipes: a persistent Chroma index, query engines, batch prompts.

* :func:`build_index` turns a folder of ``.txt``/``.md`` files into chunks in a persistent Chroma
  collection, incrementally: unchanged files are skipped, changed files have their chunks replaced,
  deleted files have them removed. The collection records its embedding model and dimension.
* :func:`open_index` reopens it, refusing an embedding model that does not match.
* :func:`make_postprocessors` / :func:`make_query_engine` give the SPEC's retrieval: k=3 plainly,
  or k=15 -> POV reranking (10 -> 5), with duplicate filtering and context cleaning.
* :func:`build_rag_prompt` renders exactly the prompt the query engine sends, so batch answering
  (:func:`answer_rag_batch`) can batch many questions through ``UnslothLLM.complete_batch``.

Chunk sizes are **tokens** (LlamaIndex's ``SentenceSplitter``), counted with tiktoken's
``cl100k_base`` so chunking does not depend on which LLM set ``Settings.tokenizer``. On English
prose that is ~5.4 characters per token (the sample corpus; MiniLM's WordPiece gives the same
ratio), so the default 384/24 approximates users' 2000/120 characters. MiniLM reads at most 256
word pieces (~1,400 characters) of a chunk when embedding it; models like BGE read 512.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

DEFAULT_CHUNK_SIZE = 384  # tokens (cl100k): ~2,000 characters of English prose
DEFAULT_CHUNK_OVERLAP = 24  # tokens: ~120 characters
DEFAULT_PERSIST_DIR = "chroma_db"
DEFAULT_COLLECTION = "documents"
DEFAULT_TOP_K = 3  # plain retrieval
DEFAULT_POV_TOP_K = 15  # retrieval before POV reranking
DEFAULT_QUERY_TOP_N = 10
DEFAULT_POV_TOP_N = 5
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


class RagError(Exception):
    """Bad input to the RAG helpers; the message says what is wrong and what to do."""


class IndexNotFoundError(RagError, FileNotFoundError):
    """No usable Chroma folder or collection."""


class EmbeddingMismatchError(RagError, ValueError):
    """The index was built with another embedding model or dimension."""


class CorpusError(RagError, ValueError):
    """The documents folder is missing or holds no usable file."""


class QuestionsFileError(RagError, ValueError):
    """The questions file is missing, of an unknown type or holds no question."""


def user_errors() -> Tuple[type, ...]:
    """Exception types whose message alone tells a command-line user what to fix."""
    from llama_unsloth.llm import PromptTooLongError
    from llama_unsloth.loading import ModelLoadError
    from llama_unsloth.prompts import PromptFormatError

    return (RagError, ModelLoadError, PromptFormatError, PromptTooLongError, ImportError)


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


# ---------------------------------------------------------------------------------------------- retrieval
def make_postprocessors(
    embed_model: Any = None,
    povs: Optional[Sequence[str]] = None,
    povs_file: Optional[Union[str, Path]] = None,
    query_top_n: int = DEFAULT_QUERY_TOP_N,
    top_n: int = DEFAULT_POV_TOP_N,
) -> List[Any]:
    """The SPEC's node postprocessors.

    With POVs: ``DuplicateChunkFilter -> POVReranker -> ContextCleaner``; without:
    ``DuplicateChunkFilter -> ContextCleaner``.

    Raises:
        RagError: ``povs_file`` does not exist or holds no POV; POVs without an embedding model.
    """
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    chain: List[Any] = [DuplicateChunkFilter()]
    if povs_file is not None or povs:
        if embed_model is None:
            raise RagError("POV reranking needs the embedding model (pass embed_model=index._embed_model).")
        if povs_file is not None:
            if not Path(povs_file).is_file():
                raise RagError(f"POV file {str(povs_file)!r} not found. Pass a text file with one viewpoint per line.")
            try:
                reranker = POVReranker.from_file(povs_file, embed_model=embed_model, query_top_n=query_top_n, top_n=top_n)
            except ValueError as err:
                raise RagError(str(err)) from err
        else:
            reranker = POVReranker(embed_model=embed_model, povs=list(povs or []), query_top_n=query_top_n, top_n=top_n)
        chain.append(reranker)
    chain.append(ContextCleaner())
    return chain


def has_pov_reranker(postprocessors: Sequence[Any]) -> bool:
    """Whether a POVReranker is among ``postprocessors``."""
    return any(type(p).__name__ == "POVReranker" for p in postprocessors)


def default_top_k(postprocessors: Sequence[Any]) -> int:
    """15 before POV reranking, else 3 (the SPEC's settings)."""
    return DEFAULT_POV_TOP_K if has_pov_reranker(postprocessors) else DEFAULT_TOP_K


def make_query_engine(
    index: Any,
    llm: Any,
    postprocessors: Optional[Sequence[Any]] = None,
    similarity_top_k: Optional[int] = None,
    streaming: bool = False,
) -> Any:
    """``index.as_query_engine`` with the model's own QA/refine templates.

    Args:
        index: A ``VectorStoreIndex`` (e.g. from :func:`open_index`).
        llm: An ``UnslothLLM`` (or any LLM with ``qa_template()``/``refine_template()``).
        postprocessors: From :func:`make_postprocessors`; ``None``: no POVs.
        similarity_top_k: Chunks retrieved; ``None``: 15 with a POV reranker, else 3.
        streaming: Return a streaming response.
    """
    postprocessors = list(make_postprocessors() if postprocessors is None else postprocessors)
    return index.as_query_engine(
        llm=llm,
        similarity_top_k=similarity_top_k or default_top_k(postprocessors),
        node_postprocessors=postprocessors,
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
        streaming=streaming,
    )


def retrieve(index: Any, query: str, postprocessors: Sequence[Any] = (), similarity_top_k: Optional[int] = None) -> List[Any]:
    """The nodes a query engine built by :func:`make_query_engine` would put in the prompt."""
    from llama_index.core.schema import QueryBundle

    retriever = index.as_retriever(similarity_top_k=similarity_top_k or default_top_k(postprocessors))
    bundle = QueryBundle(query)
    nodes = retriever.retrieve(bundle)
    for post in postprocessors:
        nodes = post.postprocess_nodes(nodes, query_bundle=bundle)
    return nodes


def source_info(node_with_score: Any, space: str = "cosine") -> Dict[str, Any]:
    """File name and scores of a retrieved node.

    Returns:
        ``file_name``; ``similarity`` (retrieval cosine, when the score is still the retriever's);
        ``query_similarity`` and ``pov_score`` (after POV reranking).
    """
    meta = node_with_score.node.metadata or {}
    info: Dict[str, Any] = {"file_name": meta.get(KEY_FILE_NAME) or Path(str(meta.get(KEY_FILE_PATH, "?"))).name}
    if "pov_score" in meta:
        info["query_similarity"] = meta.get("query_similarity")
        info["pov_score"] = meta.get("pov_score")
    else:
        info["similarity"] = retrieval_cosine(node_with_score.score, space)
    return info


def format_sources(nodes: Sequence[Any], space: str = "cosine") -> List[str]:
    """One printable line per source node: rank, file name, scores."""
    lines = []
    for rank, node in enumerate(nodes, 1):
        info = source_info(node, space)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in info.items() if k != "file_name" and isinstance(v, (int, float)))
        lines.append(f"[{rank}] {info['file_name']}  ({scores})")
    return lines


# ---------------------------------------------------------------------------------------------- prompts
@dataclass
class RagPrompt:
    """The prompt(s) the query engine builds for one question and its retrieved nodes.

    Attributes:
        query: The question.
        pieces: Context as LlamaIndex packs it (one piece per LLM call; >1 means refine calls).
        prompt: The complete QA prompt when one call suffices, else ``None``.
        nodes: The nodes the context comes from.
    """

    query: str
    pieces: List[str]
    prompt: Optional[str]
    nodes: List[Any] = field(default_factory=list)

    @property
    def context(self) -> str:
        """All context text, as the answer table shows it."""
        return "\n\n".join(self.pieces)


def _prompt_helper(llm: Any) -> Any:
    from llama_index.core import Settings
    from llama_index.core.indices.prompt_helper import PromptHelper

    return Settings._prompt_helper or PromptHelper.from_llm_metadata(llm.metadata)


def build_rag_prompt(llm: Any, query: str, nodes: Sequence[Any]) -> RagPrompt:
    """Renders the prompt LlamaIndex's default (compact) query engine sends for ``nodes``.

    It mirrors ``CompactAndRefine``: node texts (``MetadataMode.LLM``) are packed into as few
    pieces as fit the LLM's context window beside the larger of the QA/refine templates; with one
    piece the prompt is ``llm.qa_template()`` filled with it, rendered through the LLM's own
    ``_get_prompt`` as ``llm.predict`` does. With several pieces the engine refines over several
    calls and ``prompt`` is ``None``.
    """
    from llama_index.core.prompts.prompt_utils import get_biggest_prompt
    from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE
    from llama_index.core.schema import MetadataMode

    qa, refine = llm.qa_template(), llm.refine_template()
    texts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes]
    helper = _prompt_helper(llm)
    biggest = get_biggest_prompt([qa.partial_format(query_str=query), refine.partial_format(query_str=query)])
    packed = helper.repack(biggest, texts, llm=llm, padding=DEFAULT_RESPONSE_PADDING_SIZE)
    # Refine's loop repacks each compacted piece once more before the first call.
    pieces = [p for chunk in packed for p in helper.repack(biggest, [chunk], llm=llm, padding=DEFAULT_RESPONSE_PADDING_SIZE)]
    prompt = None
    if len(pieces) == 1:
        prompt = llm._get_prompt(qa.partial_format(query_str=query), context_str=pieces[0])
    return RagPrompt(query=query, pieces=pieces, prompt=prompt, nodes=list(nodes))


@dataclass
class Answer:
    """One answered question."""

    instruction: str
    answer: str
    abstained: bool
    seconds: float
    context: str = ""
    sources: str = ""
    error: Optional[str] = None


def _sources_text(nodes: Sequence[Any]) -> str:
    names = []
    for node in nodes:
        name = source_info(node)["file_name"]
        if name not in names:
            names.append(name)
    return "; ".join(names)


def answer_rag_batch(llm: Any, rag_prompts: Sequence[RagPrompt], batch_size: int = 8) -> List[Answer]:
    """Answers prepared questions; one-call prompts go through ``llm.complete_batch``.

    Questions whose context needs refine calls are answered one by one by LlamaIndex's own
    compact-and-refine synthesizer, so every answer is what the query engine would give.
    """
    from llama_index.core.response_synthesizers import get_response_synthesizer
    from llama_index.core.schema import MetadataMode

    from llama_unsloth.abstention import is_abstention

    answers: List[Optional[Answer]] = [None] * len(rag_prompts)
    single = [i for i, rp in enumerate(rag_prompts) if rp.prompt is not None]
    if single:
        responses = llm.complete_batch([rag_prompts[i].prompt for i in single], batch_size=batch_size, formatted=True)
        for i, resp in zip(single, responses):
            rp = rag_prompts[i]
            answers[i] = Answer(
                rp.query, resp.text, bool(resp.additional_kwargs.get("abstained")), float(resp.raw.get("seconds", 0.0)),
                rp.context, _sources_text(rp.nodes),
            )
    synth = None
    for i, rp in enumerate(rag_prompts):
        if answers[i] is not None:
            continue
        if synth is None:
            synth = get_response_synthesizer(llm=llm, text_qa_template=llm.qa_template(), refine_template=llm.refine_template())
        began = time.perf_counter()
        texts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in rp.nodes]
        text = str(synth.get_response(query_str=rp.query, text_chunks=texts)) if texts else ""
        answers[i] = Answer(
            rp.query, text, is_abstention(text, getattr(llm, "abstention_patterns", None)), round(time.perf_counter() - began, 4),
            rp.context, _sources_text(rp.nodes),
        )
    return [a for a in answers if a is not None]


def answer_plain_batch(llm: Any, questions: Sequence[str], batch_size: int = 8) -> List[Answer]:
    """Answers without retrieval: the prompt is ``llm.format_prompt(question)`` (fine-tune only)."""
    prompts = [llm.format_prompt(q) for q in questions]
    responses = llm.complete_batch(prompts, batch_size=batch_size, formatted=True)
    return [
        Answer(q, r.text, bool(r.additional_kwargs.get("abstained")), float(r.raw.get("seconds", 0.0)))
        for q, r in zip(questions, responses)
    ]


# ---------------------------------------------------------------------------------------------- LLM loading
def load_llm(
    model: Optional[str] = None,
    model_dir: Optional[str] = None,
    load_in_4bit: Optional[bool] = None,
    **kwargs: Any,
) -> Any:
    """Loads an ``UnslothLLM``: a fine-tuned folder (with its saved layout) or a model name.

    Args:
        model: Hub name or folder; ``None``: the offline default SmolLM2 (chat layout).
        model_dir: Folder written by the finetune recipe (``prompt_format.json`` inside); wins over ``model``.
        load_in_4bit: ``None``: 4-bit only where CUDA is available (no CPU warning).
        **kwargs: Other ``UnslothLLM`` fields (``max_new_tokens``, ``prompt_format`` ...); ``None`` values are dropped.
    """
    from llama_unsloth.llm import UnslothLLM

    if load_in_4bit is None:
        import torch

        load_in_4bit = torch.cuda.is_available()
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if model_dir:
        return UnslothLLM.from_finetuned(model_dir, load_in_4bit=load_in_4bit, **kwargs)
    return UnslothLLM(model_name=model, load_in_4bit=load_in_4bit, **kwargs)


# ---------------------------------------------------------------------------------------------- questions and tables
QUESTION_COLUMNS = ("question", "instruction")


def load_questions(path: Union[str, Path]) -> List[str]:
    """Reads questions from ``.txt`` (one per line; blank and ``#`` lines skipped), ``.json`` (a list of
    strings or of objects with ``question``/``instruction``), ``.jsonl`` (one string or object per line),
    ``.csv`` or ``.xlsx`` (a ``question`` or ``instruction`` column).

    Raises:
        QuestionsFileError: Missing file, unknown extension, missing column, bad JSON, no questions.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise QuestionsFileError(f"Questions file {str(path)!r} not found.")
    suffix = file.suffix.lower()
    if suffix == ".txt":
        items: List[Any] = [ln for ln in file.read_text(encoding="utf-8-sig").splitlines() if not ln.lstrip().startswith("#")]
    elif suffix in (".json", ".jsonl"):
        text = file.read_text(encoding="utf-8-sig")
        try:
            items = json.loads(text) if suffix == ".json" else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        except json.JSONDecodeError as err:
            raise QuestionsFileError(f"{str(path)!r} is not valid JSON{' lines' if suffix == '.jsonl' else ''}: {err}.") from err
        if not isinstance(items, list):
            raise QuestionsFileError(f"{str(path)!r} must hold a JSON list of questions (strings or objects with 'question').")
        items = [_question_of(item, file, n) for n, item in enumerate(items, 1)]
    elif suffix in (".csv", ".xlsx", ".xls"):
        import pandas as pd

        frame = pd.read_csv(file, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_excel(file, dtype=str)
        columns = {str(c).strip().lower(): c for c in frame.columns}
        column = next((columns[c] for c in QUESTION_COLUMNS if c in columns), None)
        if column is None:
            raise QuestionsFileError(
                f"{str(path)!r} has no 'question' or 'instruction' column (columns: {', '.join(map(str, frame.columns)) or 'none'}). Rename the questions column."
            )
        items = [v for v in frame[column].tolist() if isinstance(v, str)]
    else:
        raise QuestionsFileError(f"Unsupported questions file type {suffix or '(none)'!r}: use .txt, .json, .jsonl, .csv or .xlsx.")
    questions = [str(q).strip() for q in items if str(q).strip()]
    if not questions:
        raise QuestionsFileError(f"{str(path)!r} holds no questions.")
    return questions


def _question_of(item: Any, file: Path, n: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in QUESTION_COLUMNS:
            if isinstance(item.get(key), str):
                return item[key]
    raise QuestionsFileError(f"{str(file)!r} item {n} is neither a string nor an object with a 'question' or 'instruction' string.")


TABLE_COLUMNS = ["instruction", "context", "answer", "abstained", "seconds", "sources"]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _excel_safe(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    return value[:32000] + " [truncated]" if len(value) > 32767 else value


def write_table(rows: Sequence[Dict[str, Any]], path: Union[str, Path], columns: Sequence[str] = TABLE_COLUMNS, sheets: Optional[Dict[str, Tuple[Sequence[Dict[str, Any]], Sequence[str]]]] = None) -> Path:
    """Writes rows to ``.xlsx`` or ``.csv`` atomically (temp file + ``os.replace``).

    Args:
        rows: Dicts; missing keys become empty cells.
        path: Target ``.xlsx`` or ``.csv`` file.
        columns: Column order.
        sheets: ``.xlsx`` only: extra sheets, name -> (rows, columns), written before the main one
            is named ``answers``.
    """
    import pandas as pd

    target = Path(path)
    frame = pd.DataFrame([{c: r.get(c, "") for c in columns} for r in rows], columns=list(columns))
    if target.suffix.lower() == ".csv":
        _atomic_write(target, lambda tmp: frame.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL))
        return target

    def write_xlsx(tmp: Path) -> None:
        with pd.ExcelWriter(tmp, engine="openpyxl") as writer:
            for name, (srows, scols) in (sheets or {}).items():
                pd.DataFrame([{c: _excel_safe(r.get(c, "")) for c in scols} for r in srows], columns=list(scols)).to_excel(writer, sheet_name=name, index=False)
            if rows is not None and (sheets is None or rows):
                frame.map(_excel_safe).to_excel(writer, sheet_name="answers", index=False)

    _atomic_write(target, write_xlsx)
    return target


# ---------------------------------------------------------------------------------------------- answers JSONL
def read_answers_jsonl(path: Union[str, Path], repair: bool = False) -> List[Dict[str, Any]]:
    """Complete records from an answers JSONL file; a torn last line (a crash mid-write) is ignored.

    Args:
        path: The file (missing: no records).
        repair: Cut a torn trailing line off the file so appends start on a fresh line.
    """
    file = Path(path)
    if not file.is_file():
        return []
    data = file.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data) and repair:
        with open(file, "r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for n, line in enumerate(data[:cut].decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: {file}: line {n} is not valid JSON; ignored (that question will be answered again).", file=sys.stderr)
            continue
        if isinstance(record, dict) and isinstance(record.get("instruction"), str) and "answer" in record:
            records.append(record)
    return records


def append_jsonl(handle: Any, record: Dict[str, Any]) -> None:
    """Appends one record and forces it to disk (flush + fsync)."""
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def pending_questions(questions: Sequence[str], records: Iterable[Dict[str, Any]]) -> List[int]:
    """Positions of ``questions`` not yet answered in ``records``.

    Answers are matched by question text; a question asked k times needs k answers.
    """
    done: Dict[str, int] = {}
    for record in records:
        done[record["instruction"]] = done.get(record["instruction"], 0) + 1
    seen: Dict[str, int] = {}
    todo = []
    for i, q in enumerate(questions):
        seen[q] = seen.get(q, 0) + 1
        if seen[q] > done.get(q, 0):
            todo.append(i)
    return todo


def ordered_records(questions: Sequence[str], records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records in question order (k-th occurrence of a question -> its k-th record)."""
    by_q: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        by_q.setdefault(record["instruction"], []).append(record)
    used: Dict[str, int] = {}
    out = []
    for q in questions:
        k = used.get(q, 0)
        if k < len(by_q.get(q, [])):
            out.append(by_q[q][k])
            used[q] = k + 1
    return out


def output_paths(out: Union[str, Path]) -> Dict[str, Path]:
    """``jsonl``/``xlsx``/``csv`` paths for an output base (a given .jsonl/.xlsx/.csv suffix is dropped)."""
    base = Path(out)
    if base.suffix.lower() in (".jsonl", ".xlsx", ".csv"):
        base = base.with_suffix("")
    return {ext: base.parent / f"{base.name}.{ext}" for ext in ("jsonl", "xlsx", "csv")}


def run_batch(
    llm: Any,
    questions: Sequence[str],
    out: Union[str, Path],
    index: Any = None,
    postprocessors: Sequence[Any] = (),
    similarity_top_k: Optional[int] = None,
    batch_size: int = 8,
    progress: bool = True,
) -> List[Dict[str, Any]]:
    """Answers ``questions`` (with RAG when ``index`` is given), resumable, and writes the tables.

    Each answer is appended to ``<out>.jsonl`` as soon as it exists (flush + fsync). A re-run skips
    questions already answered there (matched by text; a question listed k times gets k answers)
    and tolerates a torn last line. At the end ``<out>.xlsx`` and ``<out>.csv`` are written
    atomically with columns instruction, context, answer, abstained, seconds, sources.

    Args:
        llm: An ``UnslothLLM``, or a zero-argument callable returning one (called only if
            something is left to answer).
        questions: The questions, in order.
        out: Output base path (``answers`` -> ``answers.jsonl``/``.xlsx``/``.csv``).
        index: ``VectorStoreIndex`` for RAG; ``None``: fine-tune only (``llm.format_prompt``).
        postprocessors: Node postprocessors (see :func:`make_postprocessors`).
        similarity_top_k: Chunks retrieved (default 15 with POVs, else 3).
        batch_size: Prompts per ``generate`` call.
        progress: Show a progress bar with answers/s.

    Returns:
        The records in question order.
    """
    from tqdm.auto import tqdm

    from llama_unsloth.llm import PromptTooLongError

    if batch_size < 1:
        raise RagError(f"batch_size must be at least 1, got {batch_size}.")
    paths = output_paths(out)
    paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
    records = read_answers_jsonl(paths["jsonl"], repair=True)
    todo = pending_questions(questions, records)
    if todo:
        model = llm() if callable(llm) and not hasattr(llm, "complete_batch") else llm
        bar = tqdm(total=len(questions), initial=len(questions) - len(todo), desc="Answering", unit="answer", disable=not progress)

        def answer(group: List[int]) -> List[Answer]:
            qs = [questions[i] for i in group]
            if index is None:
                return answer_plain_batch(model, qs, batch_size=batch_size)
            prompts = [build_rag_prompt(model, q, retrieve(index, q, postprocessors, similarity_top_k)) for q in qs]
            return answer_rag_batch(model, prompts, batch_size=batch_size)

        with open(paths["jsonl"], "a", encoding="utf-8") as handle:
            for start in range(0, len(todo), batch_size):
                group = todo[start : start + batch_size]
                try:
                    answers = answer(group)
                except PromptTooLongError:
                    answers = []
                    for i in group:  # find the culprit; answer the others
                        try:
                            answers.extend(answer([i]))
                        except PromptTooLongError as err:
                            answers.append(Answer(questions[i], "", False, 0.0, error=str(err)))
                for i, ans in zip(group, answers):
                    record = {"position": i, **ans.__dict__, "rag": index is not None}
                    if record["error"] is None:
                        del record["error"]
                    append_jsonl(handle, record)
                    records.append(record)
                    bar.update(1)
        bar.close()
    ordered = ordered_records(questions, records)
    write_table(ordered, paths["xlsx"])
    write_table(ordered, paths["csv"])
    return ordered


# ---------------------------------------------------------------------------------------------- RAG vs no RAG
NGRAM = 4
USES_CONTEXT_THRESHOLD = 0.2


def _words(text: str) -> List[str]:
    import re

    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", (text or "").lower())


def ngram_overlap(answer: str, context: str, n: int = NGRAM) -> float:
    """Share of the answer's word n-grams (lower-cased) that also occur in ``context``; 0 for answers under n words."""
    words = _words(answer)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    ctx_words = _words(context)
    ctx = {tuple(ctx_words[i : i + n]) for i in range(len(ctx_words) - n + 1)}
    return sum(g in ctx for g in grams) / len(grams)


COMPARE_COLUMNS = [
    "question", "rag_answer", "no_rag_answer", "rag_abstained", "no_rag_abstained",
    "rag_words", "no_rag_words", "rag_overlap", "no_rag_overlap", "sources",
]
SUMMARY_COLUMNS = ["mode", "answers", "abstention_rate", "mean_words", "uses_retrieved_text"]


def compare_records(rag_records: Sequence[Dict[str, Any]], plain_records: Sequence[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """Pairs RAG and no-RAG answers by question and summarises both.

    "Uses retrieved text" means at least 20% of the answer's word 4-grams occur in the context that
    RAG retrieved for the question (no-RAG answers are checked against the same RAG context, which
    shows how much the fine-tune alone reproduces the documents).

    Returns:
        ``(summary rows, per-question rows)``; summary columns: mode, answers, abstention_rate,
        mean_words, uses_retrieved_text.
    """
    def group(records: Sequence[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
        out: Dict[str, List[Dict[str, Any]]] = {}
        for record in records:
            out.setdefault(record["instruction"], []).append(record)
        return out

    rag_by, plain_by = group(rag_records), group(plain_records)
    questions = [r["instruction"] for r in rag_records]
    questions += [r["instruction"] for r in plain_records if r["instruction"] not in rag_by]
    rows: List[Dict[str, Any]] = []
    used: Dict[str, int] = {}
    for q in questions:
        k = used.get(q, 0)
        used[q] = k + 1
        a = rag_by[q][k] if k < len(rag_by.get(q, [])) else None
        b = plain_by[q][k] if k < len(plain_by.get(q, [])) else None
        if a is None and b is None:
            continue
        context = (a or {}).get("context", "")
        rows.append({
            "question": q,
            "rag_answer": a["answer"] if a else None,
            "no_rag_answer": b["answer"] if b else None,
            "rag_abstained": bool(a["abstained"]) if a else None,
            "no_rag_abstained": bool(b["abstained"]) if b else None,
            "rag_words": len(_words(a["answer"])) if a else None,
            "no_rag_words": len(_words(b["answer"])) if b else None,
            "rag_overlap": round(ngram_overlap(a["answer"], context), 3) if a else None,
            "no_rag_overlap": round(ngram_overlap(b["answer"], context), 3) if b and a else None,
            "sources": (a or {}).get("sources", ""),
        })

    def summarise(mode: str, prefix: str) -> Dict[str, Any]:
        got = [r for r in rows if r[f"{prefix}_answer"] is not None]
        n = len(got)
        overlaps = [r[f"{prefix}_overlap"] for r in got if r[f"{prefix}_overlap"] is not None]
        return {
            "mode": mode,
            "answers": n,
            "abstention_rate": round(sum(r[f"{prefix}_abstained"] for r in got) / n, 3) if n else None,
            "mean_words": round(sum(r[f"{prefix}_words"] for r in got) / n, 2) if n else None,
            "uses_retrieved_text": round(sum(o >= USES_CONTEXT_THRESHOLD for o in overlaps) / len(overlaps), 3) if overlaps else None,
        }

    return [summarise("RAG", "rag"), summarise("no RAG", "no_rag")], rows


def markdown_table(rows: Sequence[Dict[str, Any]], columns: Sequence[str], max_chars: int = 200) -> str:
    """A GitHub markdown table (cells cut to ``max_chars``, pipes and newlines escaped)."""

    def cell(value: Any) -> str:
        text = "" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
        text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
        return text[: max_chars - 1] + "…" if len(text) > max_chars else text

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_compare_report(summary: Sequence[Dict[str, Any]], rows: Sequence[Dict[str, Any]], out_dir: Union[str, Path]) -> Dict[str, Path]:
    """Writes ``compare.xlsx`` (sheets summary, questions) and ``compare.md`` into ``out_dir`` atomically."""
    folder = Path(out_dir)
    xlsx, md = folder / "compare.xlsx", folder / "compare.md"
    write_table([], xlsx, sheets={"summary": (summary, SUMMARY_COLUMNS), "questions": (rows, COMPARE_COLUMNS)})
    text = "\n\n".join([
        "# RAG vs no RAG",
        markdown_table(summary, SUMMARY_COLUMNS),
        f"*abstention_rate*: share of \"I don't know\"-style answers. *mean_words*: mean answer length in words. "
        f"*uses_retrieved_text*: share of answers with at least {USES_CONTEXT_THRESHOLD:.0%} of their word {NGRAM}-grams "
        "in the context RAG retrieved for that question.",
        "## Per question",
        markdown_table(rows, COMPARE_COLUMNS),
    ]) + "\n"

    def write_md(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    _atomic_write(md, write_md)
    return {"xlsx": xlsx, "md": md}


__all__ = [
    "Answer",
    "CorpusError",
    "EmbeddingMismatchError",
    "IndexNotFoundError",
    "IndexStats",
    "QuestionsFileError",
    "RagError",
    "RagPrompt",
    "answer_plain_batch",
    "answer_rag_batch",
    "build_index",
    "build_rag_prompt",
    "run_batch",
    "load_llm",
    "load_questions",
    "make_embed_model",
    "make_postprocessors",
    "make_query_engine",
    "open_index",
    "retrieve",
]
