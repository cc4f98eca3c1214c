"""Index a folder of .txt/.md files into a persistent Chroma collection (incremental re-runs).

Commands:
    llama-unsloth index --input-dir my_docs/
    llama-unsloth index --input-dir my_docs/ --persist-dir chroma_db --collection documents --chunk-size 2000 --chunk-overlap 120
    llama-unsloth index --input-dir my_docs/ --chunk-unit tokens --chunk-size 384 --chunk-overlap 24
    llama-unsloth index --input-dir my_docs/ --embed-model path/to/multilingual-e5-base
    COHERE_API_KEY=... llama-unsloth index --input-dir my_docs/ --embed-backend cohere --collection docs_cohere
    llama-unsloth index --input-dir my_docs/ --chunk-size 1000 --fresh   # other settings: rebuild the collection
    python -m recipes.index --input-dir llama_unsloth/data/corpus

Files may be UTF-8 (with or without BOM), UTF-16, Shift-JIS/CP932 or EUC-JP: each file's encoding is
detected. Empty, binary and undecodable files are skipped and listed. Chunks are 2000 characters with
120 overlap by default (cut at paragraphs, then sentences incl. Japanese 。！？), whatever the
language; --chunk-unit tokens counts cl100k tokens instead. Re-running adds only new or changed files
and removes chunks of deleted ones; a re-run with another embedding model or other chunk settings is
refused (the collection records them) unless --fresh rebuilds the collection. Ctrl-C (or SIGTERM) keeps
every file already indexed; run the same command again to index the rest.
"""

from __future__ import annotations

import sys
from typing import List, Optional

from recipes.options import IndexingOptions, IndexOptions

EXIT_INTERRUPTED = 130


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily
    """The recipe's options: TRL's parser over the shared option dataclasses."""
    from recipes.config import make_parser as parser_over

    return parser_over((IndexingOptions, IndexOptions), description=__doc__)


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse

    indexing, target = parse(make_parser(), argv)
    from llama_unsloth.interrupts import sigterm_as_keyboard_interrupt

    with sigterm_as_keyboard_interrupt():
        try:
            return _run(indexing, target)
        except KeyboardInterrupt:
            # Before build_index took over the signals, or a second Ctrl-C inside it: committed files stay.
            print(
                "\ninterrupted: files indexed before the interruption are kept; run the same command again to index the rest.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED


def _run(indexing: IndexingOptions, target: IndexOptions) -> int:
    from llama_unsloth import errors
    from llama_unsloth.rag import (
        ChunkSettings,
        build_index,
        chroma_server,
        embed_model_name,
        list_documents,
        make_embed_model,
    )
    from llama_unsloth.validation import check_output_location
    from recipes.config import exit_on_user_error

    with exit_on_user_error():
        try:
            chunking = ChunkSettings.make(indexing.chunk_unit, indexing.chunk_size, indexing.chunk_overlap)
            if chroma_server(target.location) is None:  # where the index goes: checked before a model loads
                check_output_location(target.location, "--persist-dir", folder=True)
            list_documents(indexing.input_dir)  # fail on a bad folder before loading a model
            embed_model = make_embed_model(indexing.embed_backend, target.embed_model)
            _, stats = build_index(
                indexing.input_dir,
                persist_dir=target.location,
                collection=target.collection,
                embed_model=embed_model,
                chunk_size=indexing.chunk_size,
                chunk_overlap=indexing.chunk_overlap,
                chunk_unit=indexing.chunk_unit,
                embed_batch_size=indexing.embed_batch_size,
                progress=indexing.progress,
                warn=lambda line: print(line, file=sys.stderr, flush=True),
                fresh=indexing.fresh,
            )
        except errors.IndexInterrupted as err:
            print(str(err), file=sys.stderr)
            return EXIT_INTERRUPTED
    print(stats.summary())
    if stats.encodings:
        print(
            "encodings: "
            + ", ".join(f"{n} file(s) {codec}" for codec, n in sorted(stats.encodings.items()))
            + " (the others UTF-8)"
        )
    print(
        f"Index: collection {target.collection!r} in {target.location}/ (embeddings: {embed_model_name(embed_model)}; "
        f"chunks: {chunking.describe()})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
