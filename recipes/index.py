"""Index a folder of .txt/.md files into a persistent Chroma collection (incremental re-runs).

Commands:
    llama-unsloth index --input-dir my_docs/
    llama-unsloth index --input-dir my_docs/ --persist-dir chroma_db --collection documents --chunk-size 384 --chunk-overlap 24
    llama-unsloth index --input-dir my_docs/ --embed-model path/to/bge-base-en
    COHERE_API_KEY=... llama-unsloth index --input-dir my_docs/ --embed-backend cohere --collection docs_cohere
    python -m recipes.index --input-dir llama_unsloth/data/corpus

Chunk sizes are tokens (cl100k, ~5.4 characters each on English prose): 384/24 approximates
2000/120 characters. Re-running adds only new or changed files and removes chunks of deleted ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class IndexConfig:
    input_dir: str = field(metadata={"help": "Folder of .txt/.md files (searched recursively)."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder (created if missing)."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    chunk_size: int = field(default=384, metadata={"help": "Chunk size in tokens (384 ~ 2000 characters)."})
    chunk_overlap: int = field(default=24, metadata={"help": "Chunk overlap in tokens (24 ~ 120 characters)."})
    embed_backend: str = field(default="huggingface", metadata={"help": "huggingface (local/hub model) or cohere (COHERE_API_KEY)."})
    embed_model: Optional[str] = field(
        default=None, metadata={"help": "Embedding model folder or hub name; default: bundled MiniLM (cohere: embed-english-v3.0)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    config = parse_config(IndexConfig, argv, description=__doc__)
    from llama_unsloth import errors, index_store

    try:
        index_store.list_documents(config.input_dir)  # fail on a bad folder before loading a model
        embed_model = index_store.make_embed_model(config.embed_backend, config.embed_model)
        _, stats = index_store.build_index(
            config.input_dir,
            persist_dir=config.persist_dir,
            collection=config.collection,
            embed_model=embed_model,
            chunk_size=config.chunk_size,
            chunk_overlap=config.chunk_overlap,
            progress=config.progress,
        )
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(stats.summary())
    print(f"Index: collection {config.collection!r} in {config.persist_dir}/ (embeddings: {index_store.embed_model_id(embed_model)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
