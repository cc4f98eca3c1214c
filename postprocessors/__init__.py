"""LlamaIndex node postprocessors: POV reranking, duplicate filtering, context cleaning.

Usage::

    from postprocessors import POVReranker, DuplicateChunkFilter, ContextCleaner
    rerank = POVReranker(embed_model=embed_model, povs=["..."], query_top_n=10, top_n=5)
    engine = index.as_query_engine(
        llm=llm, similarity_top_k=15,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
    )
"""

from postprocessors.cohere_support import EmbeddingServiceError, cohere_embedding
from postprocessors.context_cleaner import ContextCleaner
from postprocessors.duplicate_filter import DuplicateChunkFilter
from postprocessors.pov_reranker import POVReranker

__all__ = [
    "POVReranker",
    "DuplicateChunkFilter",
    "ContextCleaner",
    "cohere_embedding",
    "EmbeddingServiceError",
]
