"""Incremental indexing: :func:`build_index` brings a Chroma collection in step with a folder of documents.

Three steps, each its own function: **plan** (which files are new, changed, unchanged or gone, by
absolute path and SHA-256), **embed and commit** (file by file, a group of whole files per embedding
batch, so an interrupted run (Ctrl-C, SIGTERM, even SIGKILL) keeps what it finished), and **remove**
the chunks of files that are gone or no longer readable text.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from llama_unsloth import defaults
from llama_unsloth.errors import CorpusError, IndexInterrupted
from llama_unsloth.models import embedding_dimension, make_embed_model
from llama_unsloth.rag.chunking import (
    DEFAULT_CHUNK_UNIT,
    KEY_CHUNKS_IN_FILE,
    KEY_CONTENT_HASH,
    KEY_FILE_PATH,
    ChunkSettings,
    LongChunkReport,
    chunk_file,
    long_chunk_report,
    make_splitter,
)
from llama_unsloth.rag.documents import DocumentRead, read_documents
from llama_unsloth.rag.store import (
    DEFAULT_COLLECTION,
    DEFAULT_PERSIST_DIR,
    META_SPACE,
    check_chunk_settings,
    check_embed_model,
    chroma_server,
    delete_collection,
    embed_metadata,
    open_collection,
)
from llama_unsloth.validation import check_output_location

logger = logging.getLogger(__name__)

SKIPPED_SHOWN = 20  # skipped files named in the summary (the warnings name every one)
DEFAULT_EMBED_BATCH_SIZE = defaults.EMBED_BATCH_SIZE

# What the collection holds per file: {"hashes": set of content hashes, "ids": chunk ids, "expected": chunk count}.
StoredFiles = Dict[str, Dict[str, Any]]


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


@dataclass
class _PendingFile:
    """A file to (re)index: how it was read, its new chunks, and whether it replaces stored chunks."""

    read: DocumentRead
    nodes: List[Any]
    changed: bool


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
    fresh: bool = False,
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
        warn: Receives one line per skipped binary/undecodable file and per long-chunk note (default: the ``llama_unsloth.rag.indexing`` logger).
        fresh: Delete the collection first (its chunks and vectors) and index everything again: the way to
            change the embedding model or chunk settings of an existing collection.

    Returns:
        ``(VectorStoreIndex, IndexStats)``.

    Raises:
        CorpusError: Missing folder, no readable document, bad chunk settings.
        OptionError: ``persist_dir`` is a file, lies inside one, or cannot be written (checked before anything is read).
        EmbeddingMismatchError: The collection was built with another embedding model.
        ChunkSettingsMismatchError: The collection was chunked with other settings.
        IndexInterrupted: SIGINT/SIGTERM arrived; committed files are kept.
    """
    from llama_index.core import VectorStoreIndex

    from llama_unsloth.interrupts import deferred_interrupts

    chunking = ChunkSettings.make(chunk_unit, chunk_size, chunk_overlap)
    if embed_batch_size < 1:
        raise CorpusError(f"--embed-batch-size must be at least 1, got {embed_batch_size}.")
    if chroma_server(persist_dir) is None:
        check_output_location(persist_dir, "--persist-dir", folder=True)
    root = Path(input_dir).expanduser().resolve()
    reads = read_documents(root, warn=warn, progress=progress)  # bad folders fail before anything is created
    if embed_model is None or isinstance(embed_model, str):
        embed_model = make_embed_model("huggingface", embed_model)
    if fresh:
        _drop_collection(persist_dir, collection)
    writer = _CollectionWriter(_open_for_indexing(persist_dir, collection, embed_model, chunking))
    stats = writer.stats
    pending, stale = _plan(reads, writer.stored, chunking, stats)
    stats.long_chunks = _long_chunks(pending, embed_model, chunking)
    if stats.long_chunks and warn:
        warn(stats.long_chunks.message())
    with deferred_interrupts() as stop:
        _embed_and_commit(writer, pending, embed_model, embed_batch_size, progress, stop)
        writer.remove_files(stale + _vanished(writer.stored, root, reads))
    stats.chunks_total = writer.chroma.count()
    return VectorStoreIndex.from_vector_store(writer.store, embed_model=embed_model), stats


def _open_for_indexing(
    persist_dir: Union[str, Path], collection: str, embed_model: Any, chunking: ChunkSettings
) -> Any:
    """The collection, created recording the embedding model and chunk settings; refused when it records others."""
    dim = embedding_dimension(embed_model)
    chroma = open_collection(
        persist_dir,
        collection,
        create=True,
        metadata={**embed_metadata(embed_model, dim), META_SPACE: "cosine", **chunking.metadata()},
    )
    check_embed_model(chroma, embed_model, dim)
    check_chunk_settings(chroma, chunking)
    return chroma


def _drop_collection(persist_dir: Union[str, Path], collection: str) -> None:
    """Deletes ``collection`` (``fresh=True``); one that does not exist yet is created first, so nothing is guessed.

    A damaged or read-only index, or an unreachable server, fails here as it would when opened.
    """
    open_collection(persist_dir, collection, create=True)
    delete_collection(persist_dir, collection)


def _stored_files(chroma: Any, page: int = 5000) -> StoredFiles:
    """file_path -> {hashes, ids, expected} for everything in the collection."""
    files: StoredFiles = {}
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


# ---------------------------------------------------------------------------------------------- 1. plan
def _plan(
    reads: Sequence[DocumentRead], stored: StoredFiles, chunking: ChunkSettings, stats: IndexStats
) -> Tuple[List[_PendingFile], List[str]]:
    """Chunks the new and changed files; counts skipped, unchanged and non-UTF-8 ones in ``stats``.

    Returns:
        ``(files to embed, keys of stored files now empty or unreadable: their chunks go)``.
    """
    splitter = make_splitter(chunking)
    pending: List[_PendingFile] = []
    stale: List[str] = []
    for read in reads:
        entry = stored.get(read.key)
        if read.text is None:
            stats.skipped.append((read.name, read.skip_reason or "unreadable"))
            if entry:
                stale.append(read.key)
            continue
        if read.encoding and read.encoding.replace("_", "-") not in ("utf-8", "ascii"):
            stats.encodings[read.encoding] = stats.encodings.get(read.encoding, 0) + 1
        # Unchanged: one content hash and every chunk there (a partly written file counts as changed).
        if entry and entry["hashes"] == {read.digest} and entry["expected"] == len(entry["ids"]):
            stats.files_unchanged += 1
            continue
        nodes = chunk_file(read.path, read.text, read.digest, chunking, splitter=splitter)
        pending.append(_PendingFile(read, nodes, entry is not None))
        read.text = None  # the chunks hold it now
    return pending, stale


def _long_chunks(
    pending: Sequence[_PendingFile], embed_model: Any, chunking: ChunkSettings
) -> Optional[LongChunkReport]:
    """The report of new chunks longer than the embedding model reads, if any."""
    from llama_index.core.schema import MetadataMode

    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for file in pending for n in file.nodes]
    return long_chunk_report(texts, embed_model, chunking)


def _vanished(stored: StoredFiles, root: Path, reads: Sequence[DocumentRead]) -> List[str]:
    """Keys of stored files under ``root`` that are no longer there (files indexed from other folders stay)."""
    present = {r.key for r in reads}
    prefix = str(root) + os.sep
    return [key for key in stored if key.startswith(prefix) and key not in present]


# ---------------------------------------------------------------------------------------------- 2. embed and commit
class _CollectionWriter:
    """Writes to the collection being brought in step, counting what it does in :attr:`stats`.

    Attributes:
        chroma: The Chroma collection.
        store: LlamaIndex's ``ChromaVectorStore`` over it.
        stored: What the collection held per file when the run began.
        stats: The counts so far.
    """

    def __init__(self, chroma: Any) -> None:
        from llama_index.vector_stores.chroma import ChromaVectorStore

        self.chroma = chroma
        self.stored = _stored_files(chroma)
        self.stats = IndexStats()
        self.store = ChromaVectorStore(chroma_collection=chroma)

    def commit(self, group: Sequence[_PendingFile]) -> None:
        """Adds each file's embedded chunks, then deletes the chunks it replaces."""
        for file in group:
            if file.nodes:
                self.store.add(
                    file.nodes
                )  # new ids first, old ones after: a stop in between leaves the file "changed"
                self.stats.chunks_added += len(file.nodes)
            old = self.stored.get(file.read.key)
            if old:
                self._delete_chunks(old["ids"])
            if file.changed:
                self.stats.files_changed += 1
            else:
                self.stats.files_new += 1

    def remove_files(self, keys: Sequence[str]) -> None:
        """Deletes every chunk of the stored files ``keys`` (gone, empty or unreadable now)."""
        for key in keys:
            self._delete_chunks(self.stored[key]["ids"])
            self.stats.files_removed += 1

    def _delete_chunks(self, ids: List[str]) -> None:
        self.chroma.delete(ids=ids)
        self.stats.chunks_removed += len(ids)


def _file_groups(pending: Sequence[_PendingFile], batch_size: int) -> Iterator[List[_PendingFile]]:
    """Whole files gathered up to one embedding batch of chunks (a long file may exceed it alone)."""
    queue = deque(pending)
    while queue:
        group = [queue.popleft()]
        size = len(group[0].nodes)
        while queue and size + len(queue[0].nodes) <= batch_size:
            size += len(queue[0].nodes)
            group.append(queue.popleft())
        yield group


def _embed(nodes: Sequence[Any], embed_model: Any, batch_size: int, stop: Any) -> bool:
    """Sets each node's embedding, batch by batch; False when a stop request came first (nothing to commit)."""
    from llama_index.core.schema import MetadataMode

    for start in range(0, len(nodes), batch_size):
        if stop.requested:
            break
        part = nodes[start : start + batch_size]
        vectors = embed_model.get_text_embedding_batch([n.get_content(metadata_mode=MetadataMode.EMBED) for n in part])
        for node, vector in zip(part, vectors):
            node.embedding = vector
    return not stop.requested


def _embed_and_commit(
    writer: _CollectionWriter,
    pending: Sequence[_PendingFile],
    embed_model: Any,
    batch_size: int,
    progress: bool,
    stop: Any,
) -> None:
    """Embeds and commits ``pending`` group by group while no stop is requested.

    Raises:
        IndexInterrupted: A stop request (``stop``, a :class:`~llama_unsloth.interrupts.StopRequest`)
            left files uncommitted; what was committed stays.
    """
    from tqdm.auto import tqdm

    done = 0
    bar = tqdm(total=len(pending), desc="Indexing files", unit="file", disable=not progress or not pending)
    for group in _file_groups(pending, batch_size):
        if not _embed([n for file in group for n in file.nodes], embed_model, batch_size, stop):
            break
        writer.commit(group)
        done += len(group)
        bar.update(len(group))
    bar.close()
    if stop.requested and done < len(pending):  # a stop after the last commit changes nothing
        stats = writer.stats
        stats.chunks_total = writer.chroma.count()
        left = len(pending) - done
        raise IndexInterrupted(
            f"interrupted ({stop.name}): kept {done} file(s) indexed in this run ({stats.chunks_added} chunks); "
            f"{left} file(s) left: run the same command again to index them.",
            stats=stats,
            files_left=left,
        )


__all__ = ["DEFAULT_EMBED_BATCH_SIZE", "IndexStats", "build_index"]
