"""RAG over users' documents: chunks in a persistent Chroma collection, retrieval, prompts and answers.

One module per concept:

* :mod:`~llama_unsloth.rag.documents`: the ``.txt``/``.md`` files of a folder, decoded whatever their encoding.
* :mod:`~llama_unsloth.rag.chunking`: chunk settings, splitters, chunks with bookkeeping metadata, the long-chunk report.
* :mod:`~llama_unsloth.rag.store`: Chroma (folder or server), collections and what they record, opening an index.
* :mod:`~llama_unsloth.rag.indexing`: :func:`build_index`, incremental and committed file by file.
* :mod:`~llama_unsloth.rag.retrieval`: postprocessors, query engines, retrieval, sources, prompts, answers.

Modules inside the package import from each other's modules, never from here (that would be a cycle).
"""

from llama_unsloth.models import embed_model_id, embed_model_name, make_embed_model
from llama_unsloth.rag.chunking import (
    CHUNK_UNITS,
    MIN_CHUNK_SIZE,
    ChunkSettings,
    LongChunkReport,
    chunk_file,
    long_chunk_report,
    make_splitter,
    short_model_name,
    split_sentences,
)
from llama_unsloth.rag.documents import DocumentRead, list_documents, read_documents
from llama_unsloth.rag.indexing import IndexStats, build_index
from llama_unsloth.rag.retrieval import (
    Answer,
    RagPrompt,
    answer_plain_batch,
    answer_rag_batch,
    build_rag_prompt,
    default_top_k,
    format_sources,
    has_pov_reranker,
    make_postprocessors,
    make_query_engine,
    retrieve,
    source_info,
)
from llama_unsloth.rag.store import (
    check_chunk_settings,
    check_embed_model,
    chroma_location,
    chroma_server,
    collection_space,
    delete_collection,
    embed_metadata,
    folder_open_problem,
    open_collection,
    open_index,
    open_index_with_embeddings,
    reproduces_stored_vectors,
    retrieval_cosine,
)

__all__ = [
    "Answer",
    "CHUNK_UNITS",
    "ChunkSettings",
    "DocumentRead",
    "IndexStats",
    "LongChunkReport",
    "MIN_CHUNK_SIZE",
    "RagPrompt",
    "answer_plain_batch",
    "answer_rag_batch",
    "build_index",
    "build_rag_prompt",
    "check_chunk_settings",
    "check_embed_model",
    "chroma_location",
    "chroma_server",
    "chunk_file",
    "collection_space",
    "default_top_k",
    "delete_collection",
    "embed_metadata",
    "embed_model_id",
    "embed_model_name",
    "folder_open_problem",
    "format_sources",
    "has_pov_reranker",
    "list_documents",
    "long_chunk_report",
    "make_embed_model",
    "make_postprocessors",
    "make_query_engine",
    "make_splitter",
    "open_collection",
    "open_index",
    "open_index_with_embeddings",
    "read_documents",
    "reproduces_stored_vectors",
    "retrieval_cosine",
    "retrieve",
    "short_model_name",
    "source_info",
    "split_sentences",
]
