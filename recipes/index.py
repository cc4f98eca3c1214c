"""Index a folder of .txt/.md files into a persistent Chroma collection (incremental re-runs).

Commands:
    llama-unsloth index --input-dir my_docs/
    llama-unsloth index --input-dir my_docs/ --persist-dir chroma_db --collection documents --chunk-size 2000 --chunk-overlap 120
    llama-unsloth index --input-dir my_docs/ --chunk-unit tokens --chunk-size 384 --chunk-overlap 24
    llama-unsloth index --input-dir my_docs/ --embed-model path/to/multilingual-e5-base
    COHERE_API_KEY=... llama-unsloth index --input-dir my_docs/ --embed-backend cohere --collection docs_cohere
    python -m recipes.index --input-dir llama_unsloth/data/corpus

Files may be UTF-8 (with or without BOM), UTF-16, Shift-JIS/CP932 or EUC-JP: each file's encoding is
detected. Empty, binary and undecodable files are skipped and listed. Chunks are 2000 characters with
120 overlap by default (cut at paragraphs, then sentences incl. Japanese 。！？), whatever the
language; --chunk-unit tokens counts cl100k tokens instead. Re-running adds only new or changed files
and removes chunks of deleted ones. Ctrl-C (or SIGTERM) keeps every file already indexed; run the same
command again to index the rest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional

EXIT_INTERRUPTED = 130


@dataclass
class IndexConfig:
    input_dir: str = field(metadata={"help": "Folder of .txt/.md files (searched recursively)."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder (created if missing)."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    chroma_host: Optional[str] = field(
        default=None,
        metadata={"help": "Host of a Chroma server (`chroma run`) to use instead of --persist-dir; default: $LLAMA_UNSLOTH_CHROMA_HOST."},
    )
    chroma_port: Optional[int] = field(
        default=None, metadata={"help": "Port of that Chroma server; default: $LLAMA_UNSLOTH_CHROMA_PORT or 8000.", "min": 1, "max": 65535}
    )
    chunk_unit: str = field(
        default="characters", metadata={"help": "What chunk sizes count: characters (default) or tokens (cl100k).", "choices": ("characters", "tokens")}
    )
    chunk_size: Optional[int] = field(default=None, metadata={"help": "Chunk size (default 2000 characters / 384 tokens).", "min": 16})
    chunk_overlap: Optional[int] = field(default=None, metadata={"help": "Chunk overlap (default 120 characters / 24 tokens).", "min": 0})
    embed_backend: str = field(
        default="huggingface", metadata={"help": "huggingface (local/hub model) or cohere (COHERE_API_KEY).", "choices": ("huggingface", "cohere")}
    )
    embed_model: Optional[str] = field(
        default=None,
        metadata={"help": "Embedding model folder or hub name; default: $LLAMA_UNSLOTH_EMBED_MODEL or the bundled MiniLM (cohere: embed-english-v3.0)."},
    )
    embed_batch_size: int = field(default=32, metadata={"help": "Chunks per embedding call (also the unit of work kept on Ctrl-C).", "min": 1})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def check(self) -> None:
        """Rules between options."""
        from recipes.config import OptionError

        size = self.chunk_size if self.chunk_size is not None else (2000 if self.chunk_unit == "characters" else 384)
        if self.chunk_overlap is not None and self.chunk_overlap >= size:
            raise OptionError(f"--chunk-overlap must be below --chunk-size ({size}); got {self.chunk_overlap}.")


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    config = parse_config(IndexConfig, argv, description=__doc__)
    from llama_unsloth.interrupts import sigterm_as_keyboard_interrupt

    with sigterm_as_keyboard_interrupt():
        try:
            return _run(config)
        except KeyboardInterrupt:
            # Before build_index took over the signals, or a second Ctrl-C inside it: committed files stay.
            print("\ninterrupted: files indexed before the interruption are kept; run the same command again to index the rest.", file=sys.stderr)
            return EXIT_INTERRUPTED


def _run(config: IndexConfig) -> int:
    from llama_unsloth import errors, index_store

    try:
        index_store.ChunkSettings.make(config.chunk_unit, config.chunk_size, config.chunk_overlap)
        index_store.list_documents(config.input_dir)  # fail on a bad folder before loading a model
        embed_model = index_store.make_embed_model(config.embed_backend, config.embed_model)
        _, stats = index_store.build_index(
            config.input_dir,
            persist_dir=index_store.chroma_location(config.persist_dir, config.chroma_host, config.chroma_port),
            collection=config.collection,
            embed_model=embed_model,
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
            chunk_unit=config.chunk_unit,
            embed_batch_size=config.embed_batch_size,
            progress=config.progress,
        )
    except errors.IndexInterrupted as err:
        print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(stats.summary())
    if stats.encodings:
        print("encodings: " + ", ".join(f"{n} file(s) {codec}" for codec, n in sorted(stats.encodings.items())) + " (the others UTF-8)")
    chunking = index_store.ChunkSettings.make(config.chunk_unit, config.chunk_size, config.chunk_overlap)
    print(
        f"Index: collection {config.collection!r} in {index_store.chroma_location(config.persist_dir, config.chroma_host, config.chroma_port)}/ (embeddings: {index_store.embed_model_id(embed_model)}; "
        f"chunks: {chunking.describe()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
