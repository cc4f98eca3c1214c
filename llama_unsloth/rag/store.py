"""The persistent Chroma index: embedding models, collections and incremental indexing.

* :func:`build_index` turns a folder of ``.txt``/``.md`` files into chunks in a persistent Chroma
  collection, incrementally: unchanged files are skipped, changed files have their chunks replaced,
  deleted files have them removed. Files are decoded whatever their encoding
  (:mod:`llama_unsloth.text_files`); empty, binary and undecodable files are skipped and listed.
  Work is committed file by file, so an interrupted run (Ctrl-C, SIGTERM) keeps what it finished.
  The collection records its embedding model and dimension and its chunk settings.
* :func:`open_index` reopens it, refusing an embedding model that does not match.

Chunks are **characters** by default, the way our users split (LangChain's
``RecursiveCharacterTextSplitter(chunk_size=2000, chunk_overlap=120)``): ~2000 characters whatever
the language, cut at paragraphs, then sentences (``.?!`` and Japanese ``。！？``, newlines), then
phrases and words. ``unit="tokens"`` counts tiktoken ``cl100k_base`` tokens instead (LlamaIndex's
usual way; 384/24 approximates 2000/120 characters on English prose, but Japanese chunks come out at
~350 characters). MiniLM reads at most 256 word pieces (~1,100-1,400 characters of English, ~250
Japanese characters) of a chunk; :func:`build_index` says so when chunks are longer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from llama_unsloth import defaults
from llama_unsloth.errors import (
    ChunkSettingsMismatchError,
    CorpusError,
    EmbeddingMismatchError,
    IndexInterrupted,
    IndexNotFoundError,
    RagError,
)

# Embedding models live in llama_unsloth.models.embeddings; re-exported because indexing and querying take them here.
from llama_unsloth.models import (  # noqa: F401
    COHERE_MODEL,
    embed_backend_of,
    embed_model_id,
    embedding_dimension,
    make_embed_model,
)

logger = logging.getLogger(__name__)

CHUNK_UNITS = ("characters", "tokens")
DEFAULT_CHUNK_UNIT = defaults.CHUNK_UNIT
DEFAULT_CHUNKING = defaults.CHUNKING
DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP = DEFAULT_CHUNKING[DEFAULT_CHUNK_UNIT]
MIN_CHUNK_SIZE = 16
SKIPPED_SHOWN = 20  # skipped files named in the summary (the warnings name every one)
DEFAULT_EMBED_BATCH_SIZE = defaults.EMBED_BATCH_SIZE
DEFAULT_PERSIST_DIR = defaults.PERSIST_DIR
DEFAULT_COLLECTION = defaults.COLLECTION
DOC_EXTENSIONS = (".txt", ".md")

# Collection metadata written by build_index.
META_EMBED_MODEL = "llama_unsloth_embed_model"
META_EMBED_DIM = "llama_unsloth_embed_dim"
META_EMBED_BACKEND = "llama_unsloth_embed_backend"
META_SPACE = "hnsw:space"
META_CHUNK_UNIT = "llama_unsloth_chunk_unit"
META_CHUNK_SIZE = "llama_unsloth_chunk_size"
META_CHUNK_OVERLAP = "llama_unsloth_chunk_overlap"

# Node metadata: bookkeeping for incremental indexing, excluded from LLM and embedding text.
KEY_FILE_PATH = "file_path"
KEY_FILE_NAME = "file_name"
KEY_CONTENT_HASH = "content_hash"
KEY_CHUNK_INDEX = "chunk_index"
KEY_CHUNKS_IN_FILE = "chunks_in_file"
BOOKKEEPING_KEYS = [KEY_FILE_PATH, KEY_FILE_NAME, KEY_CONTENT_HASH, KEY_CHUNK_INDEX, KEY_CHUNKS_IN_FILE]


# ---------------------------------------------------------------------------------------------- chroma
def chroma_server(persist_dir: Union[str, Path]) -> Optional[Tuple[str, int]]:
    """``(host, port)`` when ``persist_dir`` names a Chroma server (``http://host:port``), else None (a folder).

    A folder is for one process; several processes or machines share one index through ``chroma run``
    (Chroma's maintainers say a persistent folder is not safe across processes).
    """
    match = re.fullmatch(r"https?://\[?([^\]/:]+)\]?(?::(\d+))?/?", str(persist_dir).strip())
    return (match.group(1), int(match.group(2) or 8000)) if match else None


CHROMA_HOST_ENV = "LLAMA_UNSLOTH_CHROMA_HOST"
CHROMA_PORT_ENV = "LLAMA_UNSLOTH_CHROMA_PORT"


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
    """Opens (or with ``create=True`` creates) a Chroma collection in ``persist_dir``.

    Raises:
        IndexNotFoundError: ``create=False`` and the folder or collection does not exist, or the
            folder is not a readable Chroma database.
    """
    server = chroma_server(persist_dir)
    folder = Path(persist_dir)
    if server is not None:
        return _open_server_collection(str(persist_dir).rstrip("/"), server, collection, create, metadata)
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
    have = ", ".join(sorted(names)) or "none"
    return _collection_from(
        client,
        names,
        collection,
        create,
        metadata,
        missing=f"The index at {str(folder)!r} has no collection {collection!r} (collections: {have}). Pass "
        "--collection with one of those, or build it with `llama-unsloth index`.",
    )


def _collection_from(
    client: Any, names: Sequence[str], collection: str, create: bool, metadata: Optional[dict], missing: str
) -> Any:
    """The named collection from an open client: got, created (with a valid name), or ``missing`` raised."""
    if collection in names:
        return client.get_collection(collection)
    if not create:
        raise IndexNotFoundError(missing)
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]", collection):
        raise RagError(
            f"Invalid collection name {collection!r}: use 3-512 characters from [a-zA-Z0-9._-], starting and ending "
            "with a letter or digit."
        )
    return client.create_collection(collection, metadata=metadata)


def _open_server_collection(
    url: str, server: Tuple[str, int], collection: str, create: bool, metadata: Optional[dict]
) -> Any:
    try:
        client = _chroma_client(url)
        names = [getattr(c, "name", c) for c in client.list_collections()]
    except Exception:  # connection refused, DNS, a non-Chroma server ...
        raise IndexNotFoundError(
            f"Could not reach the Chroma server at {url}. Start it with "
            f"`chroma run --path chroma_db --host {server[0]} --port {server[1]}`, or check --chroma-host/--chroma-port."
        ) from None
    have = ", ".join(sorted(names)) or "none"
    return _collection_from(
        client,
        names,
        collection,
        create,
        metadata,
        missing=f"The Chroma server at {url} has no collection {collection!r} (collections: {have}). Pass --collection "
        f"with one of those, or build it with `llama-unsloth index --chroma-host {server[0]} --chroma-port {server[1]}`.",
    )


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


# ---------------------------------------------------------------------------------------------- chunking
@dataclass(frozen=True)
class ChunkSettings:
    """How documents are cut into chunks; stored with the collection so a re-index cannot mix settings.

    Attributes:
        unit: ``characters`` (default, the users' way) or ``tokens`` (tiktoken ``cl100k_base``).
        size: Longest chunk, in ``unit``.
        overlap: Text shared by neighbouring chunks, in ``unit``.
    """

    unit: str = DEFAULT_CHUNK_UNIT
    size: int = DEFAULT_CHUNK_SIZE
    overlap: int = DEFAULT_CHUNK_OVERLAP

    @classmethod
    def make(
        cls, unit: str = DEFAULT_CHUNK_UNIT, size: Optional[int] = None, overlap: Optional[int] = None
    ) -> ChunkSettings:
        """Settings with the unit's defaults for what is ``None``, checked.

        Raises:
            CorpusError: Unknown unit, size below :data:`MIN_CHUNK_SIZE`, overlap outside ``[0, size)``.
        """
        if unit not in CHUNK_UNITS:
            raise CorpusError(f"Unknown chunk unit {unit!r}: use {' or '.join(CHUNK_UNITS)}.")
        default_size, default_overlap = DEFAULT_CHUNKING[unit]
        size = default_size if size is None else int(size)
        overlap = min(default_overlap, size - 1) if overlap is None else int(overlap)
        if size < MIN_CHUNK_SIZE:
            raise CorpusError(f"--chunk-size must be at least {MIN_CHUNK_SIZE} {unit}, got {size}.")
        if not 0 <= overlap < size:
            raise CorpusError(
                f"--chunk-overlap must be between 0 and chunk size - 1 ({size - 1}) {unit}, got {overlap}."
            )
        return cls(unit, size, overlap)

    def metadata(self) -> Dict[str, Any]:
        """The collection metadata recording these settings."""
        return {META_CHUNK_UNIT: self.unit, META_CHUNK_SIZE: self.size, META_CHUNK_OVERLAP: self.overlap}

    def describe(self) -> str:
        """E.g. ``2000 characters, overlap 120``."""
        return f"{self.size} {self.unit}, overlap {self.overlap}"


def check_chunk_settings(collection: Any, chunking: ChunkSettings) -> None:
    """Raises :class:`ChunkSettingsMismatchError` when the collection was chunked otherwise.

    A collection that holds chunks but records no settings (written before they were recorded) is
    refused too: its chunk sizes are unknown, and adding differently cut chunks would mix the index.
    """
    meta = collection.metadata or {}
    if META_CHUNK_UNIT not in meta:
        if collection.count() == 0:
            return
        raise ChunkSettingsMismatchError(
            f"Collection {collection.name!r} does not record how it was chunked (built by an older version), so new "
            f"chunks of {chunking.describe()} could not be matched to it. Index into a new --collection (or delete "
            "the --persist-dir folder and index again)."
        )
    recorded = ChunkSettings(str(meta[META_CHUNK_UNIT]), int(meta[META_CHUNK_SIZE]), int(meta[META_CHUNK_OVERLAP]))
    if recorded != chunking:
        raise ChunkSettingsMismatchError(
            f"Collection {collection.name!r} was chunked with {recorded.describe()}, not {chunking.describe()}; one "
            f"index must not mix the two. Re-run with --chunk-unit {recorded.unit} --chunk-size {recorded.size} "
            f"--chunk-overlap {recorded.overlap}, or index into a new --collection / --persist-dir."
        )


# Sentence ends: 。！？!? (with closing quotes/brackets after them), "." before whitespace, and newlines.
_SENTENCE_END = re.compile(
    r"(?<=[。！？!?])(?![」』）)\]\"'’”。！？!?])"
    r"|(?<=[。！？!?][」』）)\]\"'’”])"
    r"|(?<=\.)(?=\s)"
    r"|(?<=\n)"
)


def split_sentences(text: str) -> List[str]:
    """Splits after sentence ends, English and Japanese, keeping every character (``"".join`` gives ``text``)."""
    return [piece for piece in _SENTENCE_END.split(text) if piece]


def _cl100k() -> Any:
    import llama_index.core
    import tiktoken

    # llama-index-core ships the cl100k file: point tiktoken at it so nothing is downloaded.
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = previous or str(
        Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
    )
    try:
        return tiktoken.get_encoding("cl100k_base")
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]


def make_splitter(chunking: ChunkSettings) -> Any:
    """LlamaIndex's ``SentenceSplitter`` measuring ``chunking.unit``.

    For characters its tokenizer is ``list`` (one "token" per character), paragraphs are ``\\n\\n``
    as in LangChain's character splitter, and sentences end at ``.?!``, ``。！？`` and newlines
    (NLTK's default sentence tokenizer knows no Japanese). Its fallback regex already splits at
    ``,.;。？！`` phrases, then words, then single characters.
    """
    from llama_index.core.node_parser import SentenceSplitter

    if chunking.unit == "characters":
        return SentenceSplitter(
            chunk_size=chunking.size,
            chunk_overlap=chunking.overlap,
            tokenizer=list,
            paragraph_separator="\n\n",
            chunking_tokenizer_fn=split_sentences,
            include_prev_next_rel=False,
        )
    encoding = _cl100k()
    return SentenceSplitter(
        chunk_size=chunking.size,
        chunk_overlap=chunking.overlap,
        tokenizer=lambda text: encoding.encode(text, allowed_special="all"),
        include_prev_next_rel=False,
    )


def chunk_file(
    path: Path,
    text: str,
    content_hash: str,
    chunking: Union[ChunkSettings, int] = ChunkSettings(),
    chunk_overlap: Optional[int] = None,
    splitter: Any = None,
) -> List[Any]:
    """Splits one file's text into ``TextNode``s with bookkeeping metadata (hidden from LLM and embeddings).

    Args:
        path: The file (its absolute path keys the chunks).
        text: Its decoded text.
        content_hash: SHA-256 of its bytes.
        chunking: Chunk settings (an int: a token chunk size, as before chunk units existed).
        chunk_overlap: With an int ``chunking``: the token overlap.
        splitter: A splitter from :func:`make_splitter` to reuse.
    """
    from llama_index.core.schema import Document

    if isinstance(chunking, int):
        chunking = ChunkSettings.make("tokens", chunking, chunk_overlap)
    key = str(path.resolve())
    meta = {KEY_FILE_PATH: key, KEY_FILE_NAME: path.name, KEY_CONTENT_HASH: content_hash}
    doc = Document(
        text=text,
        id_=key,
        metadata=meta,
        excluded_llm_metadata_keys=list(BOOKKEEPING_KEYS),
        excluded_embed_metadata_keys=list(BOOKKEEPING_KEYS),
    )
    splitter = splitter or make_splitter(chunking)
    nodes = [n for n in splitter.get_nodes_from_documents([doc]) if n.get_content().strip()]
    path_id = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    for i, node in enumerate(nodes):
        node.id_ = f"{path_id}-{content_hash[:16]}-{i}"
        node.metadata[KEY_CHUNK_INDEX] = i
        node.metadata[KEY_CHUNKS_IN_FILE] = len(nodes)
        node.excluded_llm_metadata_keys = list(BOOKKEEPING_KEYS)
        node.excluded_embed_metadata_keys = list(BOOKKEEPING_KEYS)
    return nodes


# ---------------------------------------------------------------------------------------------- embedding window
@dataclass
class LongChunkReport:
    """Chunks longer than the embedding model reads (it embeds only their start)."""

    chunks: int
    of: int
    max_tokens: int
    longest_tokens: int
    model: str
    suggested_size: int
    unit: str

    def message(self) -> str:
        """One line: the numbers and what to do."""
        return (
            f"note: {self.chunks} of {self.of} new chunks are longer than the embedding model reads ({self.model} "
            f"reads {self.max_tokens} tokens; the longest chunk is {self.longest_tokens}): only the start of each is "
            f"embedded, so retrieval cannot see the rest. Use --chunk-size {self.suggested_size} (--chunk-unit "
            f"{self.unit}) or an embedding model with a longer window (e.g. BAAI/bge-m3 reads 8192 tokens)."
        )


def embed_window(embed_model: Any) -> Tuple[Optional[int], Any]:
    """``(max tokens, tokenizer)`` of a local sentence-transformers embedding model; ``(None, None)`` if unknown."""
    inner = getattr(embed_model, "_model", None)
    tokenizer = getattr(inner, "tokenizer", None)
    limit = getattr(embed_model, "max_length", None) or getattr(inner, "max_seq_length", None)
    if tokenizer is None or not isinstance(limit, int) or limit <= 0:
        return None, None
    return limit, tokenizer


def long_chunk_report(texts: Sequence[str], embed_model: Any, chunking: ChunkSettings) -> Optional[LongChunkReport]:
    """Counts chunks the embedding model would truncate; ``None`` when none is (or the model is not local)."""
    limit, tokenizer = embed_window(embed_model)
    if limit is None or not texts:
        return None
    # verbose=False: transformers would warn once per long text, which is what this report says better.
    counts = [
        len(ids)
        for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    ]
    long = [(n, t) for n, t in zip(counts, texts) if n > limit]
    if not long:
        return None
    longest_tokens, longest_text = max(long)
    size = (
        len(longest_text)
        if chunking.unit == "characters"
        else len(_cl100k().encode(longest_text, allowed_special="all"))
    )
    # Scale the longest chunk down to the window, with 10% to spare, rounded down to a round number.
    step = 100 if size * limit / longest_tokens >= 500 else 10
    suggested = max(MIN_CHUNK_SIZE, int(size * limit / longest_tokens * 0.9) // step * step)
    return LongChunkReport(
        len(long), len(texts), limit, longest_tokens, short_model_name(embed_model), suggested, chunking.unit
    )


def short_model_name(embed_model: Any) -> str:
    """A readable model name: a hub id as is, a folder by its last part (``pkg/model`` when that part says nothing)."""
    name = embed_model_id(embed_model)
    path = Path(name)
    if not path.is_absolute():
        return name
    return f"{path.parent.name}/{path.name}" if path.name in ("model", "models", "weights") else path.name


# ---------------------------------------------------------------------------------------------- indexing
@dataclass
class IndexStats:
    """What :func:`build_index` did.

    Attributes:
        skipped: ``(file name relative to the folder, reason)`` of files not indexed (empty, binary, undecodable).
        encodings: Files read in an encoding other than UTF-8 -> their count, by codec.
        long_chunks: Chunks longer than the embedding model reads, if any.
    """

    files_new: int = 0
    files_changed: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_total: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    encodings: Dict[str, int] = field(default_factory=dict)
    long_chunks: Optional[LongChunkReport] = None

    def summary(self) -> str:
        """What happened, for people: one line, plus one line listing skipped files."""
        line = (
            f"files: {self.files_new} new, {self.files_changed} changed, {self.files_unchanged} unchanged, "
            f"{self.files_removed} removed, {len(self.skipped)} skipped | chunks: {self.chunks_added} added, "
            f"{self.chunks_removed} removed, {self.chunks_total} in the collection"
        )
        if self.skipped:
            shown = ", ".join(f"{name} ({reason})" for name, reason in self.skipped[:SKIPPED_SHOWN])
            more = f" and {len(self.skipped) - SKIPPED_SHOWN} more" if len(self.skipped) > SKIPPED_SHOWN else ""
            line += f"\nskipped: {shown}{more}"
        return line


def list_documents(folder: Union[str, Path], extensions: Sequence[str] = DOC_EXTENSIONS) -> List[Path]:
    """The ``.txt``/``.md`` files under ``folder`` (recursive, sorted, hidden entries skipped).

    Raises:
        CorpusError: The folder does not exist or holds no such file.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CorpusError(
            f"Documents folder {str(folder)!r} does not exist (or is not a folder). Pass --input-dir <folder>."
        )
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in extensions
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise CorpusError(f"{str(folder)!r} holds no {'/'.join(extensions)} files (searched recursively).")
    return files


@dataclass
class DocumentRead:
    """One document as :func:`read_documents` found it.

    Attributes:
        path: The file.
        key: Its absolute path (how the collection keys its chunks).
        name: Its path relative to the documents folder (for summaries).
        digest: SHA-256 of its bytes.
        text: The decoded text; ``None`` when skipped.
        encoding: The codec that decoded it.
        skip_reason: ``empty``, ``binary``, ``undecodable`` or ``unreadable`` when skipped.
    """

    path: Path
    key: str
    name: str
    digest: str
    text: Optional[str]
    encoding: Optional[str]
    skip_reason: Optional[str]


def read_documents(
    folder: Union[str, Path], warn: Optional[Callable[[str], None]] = None, progress: bool = False
) -> List[DocumentRead]:
    """Reads and decodes every document under ``folder`` (see :func:`list_documents`).

    Binary and undecodable files get a one-line warning through ``warn``; empty ones are only marked.

    Raises:
        CorpusError: The folder does not exist, holds no document, or no document is readable text.
    """
    from tqdm.auto import tqdm

    from llama_unsloth.errors import EmptyFileError, UnreadableFileError
    from llama_unsloth.text_files import decode_bytes

    root = Path(folder).expanduser().resolve()
    reads: List[DocumentRead] = []
    for path in tqdm(list_documents(root), desc="Reading files", unit="file", disable=not progress):
        name = str(path.relative_to(root))
        text: Optional[str]
        encoding: Optional[str]
        reason: Optional[str]
        try:
            data = path.read_bytes()
        except OSError as err:
            data, text, encoding, reason = b"", None, None, "unreadable"
            if warn:
                warn(f"warning: skipped {path}: cannot be read ({err.strerror or err}).")
        else:
            try:
                decoded = decode_bytes(data, str(path))
                text, encoding, reason = decoded.text, decoded.encoding, None
            except EmptyFileError:
                text, encoding, reason = None, None, "empty"
            except UnreadableFileError as err:
                text, encoding, reason = None, None, err.reason
                if warn:
                    warn(f"warning: skipped {err}")
        reads.append(DocumentRead(path, str(path), name, hashlib.sha256(data).hexdigest(), text, encoding, reason))
    if all(r.text is None for r in reads):
        listing = ", ".join(f"{r.name} ({r.skip_reason})" for r in reads[:10]) + (" ..." if len(reads) > 10 else "")
        raise CorpusError(
            f"{str(folder)!r} holds no readable text file: {listing}. Save the documents as text (UTF-8, Shift-JIS, EUC-JP, UTF-16 ...)."
        )
    return reads


def _stored_files(chroma: Any, page: int = 5000) -> Dict[str, Dict[str, Any]]:
    """file_path -> {hashes, ids, expected} for everything in the collection."""
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


def _log_warning(line: str) -> None:
    # Library code logs; the index recipe passes warn= to print these lines itself.
    logger.warning(line)


def build_index(
    input_dir: Union[str, Path],
    persist_dir: Union[str, Path] = DEFAULT_PERSIST_DIR,
    collection: str = DEFAULT_COLLECTION,
    embed_model: Any = None,
    chunk_size: Optional[int] = None,
    chunk_overlap: Optional[int] = None,
    embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
    progress: bool = True,
    chunk_unit: str = DEFAULT_CHUNK_UNIT,
    warn: Optional[Callable[[str], None]] = _log_warning,
) -> Tuple[Any, IndexStats]:
    """Brings a Chroma collection in step with a folder of documents.

    Files are keyed by absolute path and SHA-256 of their bytes: unchanged files are skipped; a
    changed file's chunks are replaced; chunks of files deleted from under ``input_dir`` (or now
    empty or unreadable) are removed (files indexed from other folders are left alone). A file whose
    chunks were only partly written counts as changed.

    Work is committed file by file (a group of files per embedding batch). SIGINT/SIGTERM (in the
    main thread) stop the run after the batch being embedded: everything committed stays, and
    :class:`IndexInterrupted` says how much; the next run embeds only the rest.

    Args:
        input_dir: Folder of ``.txt``/``.md`` files (recursive), any text encoding.
        persist_dir: Chroma folder (created if missing), or ``http://host:port`` of a Chroma server.
        collection: Collection name.
        embed_model: Embedding model, a model name/folder, or ``None``: ``$LLAMA_UNSLOTH_EMBED_MODEL`` or the bundled MiniLM.
        chunk_size: Chunk size in ``chunk_unit`` (default 2000 characters / 384 tokens).
        chunk_overlap: Overlap in ``chunk_unit`` (default 120 characters / 24 tokens).
        embed_batch_size: Chunks per embedding call.
        progress: Show tqdm progress bars (stderr).
        chunk_unit: ``characters`` or ``tokens``.
        warn: Receives one line per skipped binary/undecodable file and per long-chunk note (default: the ``llama_unsloth.rag.store`` logger).

    Returns:
        ``(VectorStoreIndex, IndexStats)``.

    Raises:
        CorpusError: Missing folder, no readable document, bad chunk settings.
        EmbeddingMismatchError: The collection was built with another embedding model.
        ChunkSettingsMismatchError: The collection was chunked with other settings.
        IndexInterrupted: SIGINT/SIGTERM arrived; committed files are kept.
    """
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import MetadataMode
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from tqdm.auto import tqdm

    from llama_unsloth.interrupts import deferred_interrupts

    chunking = ChunkSettings.make(chunk_unit, chunk_size, chunk_overlap)
    if embed_batch_size < 1:
        raise CorpusError(f"--embed-batch-size must be at least 1, got {embed_batch_size}.")
    root = Path(input_dir).expanduser().resolve()
    reads = read_documents(root, warn=warn, progress=progress)  # bad folders fail before anything is created
    if embed_model is None or isinstance(embed_model, str):
        embed_model = make_embed_model("huggingface", embed_model)
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
            **chunking.metadata(),
        },
    )
    check_embed_model(chroma, embed_model, dim)
    check_chunk_settings(chroma, chunking)
    stored = _stored_files(chroma)
    stats = IndexStats()

    splitter = make_splitter(chunking)
    pending: List[Tuple[DocumentRead, List[Any], bool]] = []  # (file, new nodes, is a change of a stored file)
    stale: List[str] = []  # stored files now empty/unreadable: their chunks go
    for read in reads:
        entry = stored.get(read.key)
        if read.text is None:
            stats.skipped.append((read.name, read.skip_reason or "unreadable"))
            if entry:
                stale.append(read.key)
            continue
        if read.encoding and read.encoding.replace("_", "-") not in ("utf-8", "ascii"):
            stats.encodings[read.encoding] = stats.encodings.get(read.encoding, 0) + 1
        if entry and entry["hashes"] == {read.digest} and entry["expected"] == len(entry["ids"]):
            stats.files_unchanged += 1
            continue
        pending.append(
            (read, chunk_file(read.path, read.text, read.digest, chunking, splitter=splitter), entry is not None)
        )
        read.text = None  # the chunks hold it now

    new_texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for _, nodes, _ in pending for n in nodes]
    stats.long_chunks = long_chunk_report(new_texts, embed_model, chunking)
    if stats.long_chunks and warn:
        warn(stats.long_chunks.message())

    store = ChromaVectorStore(chroma_collection=chroma)

    def commit(group: List[Tuple[DocumentRead, List[Any], bool]]) -> None:
        for read, nodes, changed in group:
            if nodes:
                store.add(nodes)  # new ids first, old ones after: a stop in between leaves the file "changed"
                stats.chunks_added += len(nodes)
            old = stored.get(read.key)
            if old:
                chroma.delete(ids=old["ids"])
                stats.chunks_removed += len(old["ids"])
            if changed:
                stats.files_changed += 1
            else:
                stats.files_new += 1

    done = 0
    bar = tqdm(total=len(pending), desc="Indexing files", unit="file", disable=not progress or not pending)
    with deferred_interrupts() as stop:
        group: List[Tuple[DocumentRead, List[Any], bool]] = []
        queue = deque(pending)
        while queue or group:
            # Gather whole files up to one embedding batch (a long file may exceed it alone).
            while queue and (not group or sum(len(g[1]) for g in group) + len(queue[0][1]) <= embed_batch_size):
                group.append(queue.popleft())
            nodes = [n for _, file_nodes, _ in group for n in file_nodes]
            for start in range(0, len(nodes), embed_batch_size):
                if stop.requested:
                    break
                part = nodes[start : start + embed_batch_size]
                vectors = embed_model.get_text_embedding_batch(
                    [n.get_content(metadata_mode=MetadataMode.EMBED) for n in part]
                )
                for node, vector in zip(part, vectors):
                    node.embedding = vector
            if stop.requested:
                break
            commit(group)
            done += len(group)
            bar.update(len(group))
            group = []
        bar.close()
        if stop.requested and done < len(pending):  # a stop after the last commit changes nothing
            stats.chunks_total = chroma.count()
            left = len(pending) - done
            raise IndexInterrupted(
                f"interrupted ({stop.name}): kept {done} file(s) indexed in this run ({stats.chunks_added} chunks); "
                f"{left} file(s) left: run the same command again to index them.",
                stats=stats,
                files_left=left,
            )
        for key in stale:
            chroma.delete(ids=stored[key]["ids"])
            stats.files_removed += 1
            stats.chunks_removed += len(stored[key]["ids"])
        present = {r.key for r in reads}
        prefix = str(root) + os.sep
        for key, entry in stored.items():
            if key.startswith(prefix) and key not in present:
                chroma.delete(ids=entry["ids"])
                stats.files_removed += 1
                stats.chunks_removed += len(entry["ids"])
    stats.chunks_total = chroma.count()
    return VectorStoreIndex.from_vector_store(store, embed_model=embed_model), stats


__all__ = [
    "CHUNK_UNITS",
    "ChunkSettings",
    "DocumentRead",
    "IndexStats",
    "LongChunkReport",
    "build_index",
    "check_chunk_settings",
    "check_embed_model",
    "chunk_file",
    "collection_space",
    "embed_backend_of",
    "embed_model_id",
    "embed_window",
    "embedding_dimension",
    "list_documents",
    "long_chunk_report",
    "make_embed_model",
    "make_splitter",
    "open_collection",
    "open_index",
    "read_documents",
    "retrieval_cosine",
    "split_sentences",
]
