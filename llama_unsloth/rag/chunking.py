"""How documents become chunks: chunk settings, splitters, node bookkeeping, and the long-chunk report.

Chunks are **characters** by default, the way our users split (LangChain's
``RecursiveCharacterTextSplitter(chunk_size=2000, chunk_overlap=120)``): ~2000 characters whatever
the language, cut at paragraphs, then sentences (``.?!`` and Japanese ``。！？``, newlines), then
phrases and words. ``unit="tokens"`` counts tiktoken ``cl100k_base`` tokens instead (LlamaIndex's
usual way; 384/24 approximates 2000/120 characters on English prose, but Japanese chunks come out at
~350 characters). MiniLM reads at most 256 word pieces (~1,100-1,400 characters of English, ~250
Japanese characters) of a chunk; :func:`long_chunk_report` says so when chunks are longer.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from llama_unsloth import defaults
from llama_unsloth.errors import CorpusError
from llama_unsloth.models import embed_model_name

CHUNK_UNITS = ("characters", "tokens")
DEFAULT_CHUNK_UNIT = defaults.CHUNK_UNIT
DEFAULT_CHUNKING = defaults.CHUNKING
DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP = DEFAULT_CHUNKING[DEFAULT_CHUNK_UNIT]
MIN_CHUNK_SIZE = 16

# Collection metadata recording the chunk settings (written by build_index, checked by check_chunk_settings).
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


# ---------------------------------------------------------------------------------------------- settings
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

    @classmethod
    def recorded(cls, metadata: Dict[str, Any]) -> Optional[ChunkSettings]:
        """The settings a collection's metadata records; ``None`` when it records none (an older index)."""
        if META_CHUNK_UNIT not in metadata:
            return None
        return cls(str(metadata[META_CHUNK_UNIT]), int(metadata[META_CHUNK_SIZE]), int(metadata[META_CHUNK_OVERLAP]))

    def metadata(self) -> Dict[str, Any]:
        """The collection metadata recording these settings."""
        return {META_CHUNK_UNIT: self.unit, META_CHUNK_SIZE: self.size, META_CHUNK_OVERLAP: self.overlap}

    def describe(self) -> str:
        """E.g. ``2000 characters, overlap 120``."""
        return f"{self.size} {self.unit}, overlap {self.overlap}"


# ---------------------------------------------------------------------------------------------- splitters
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
        # Ids from path and content: a changed file's new chunks never collide with its old ones.
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
    return embed_model_name(embed_model)


__all__ = [
    "BOOKKEEPING_KEYS",
    "CHUNK_UNITS",
    "ChunkSettings",
    "KEY_FILE_NAME",
    "KEY_FILE_PATH",
    "LongChunkReport",
    "MIN_CHUNK_SIZE",
    "chunk_file",
    "embed_window",
    "long_chunk_report",
    "make_splitter",
    "short_model_name",
    "split_sentences",
]
