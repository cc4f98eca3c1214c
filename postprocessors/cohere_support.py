"""Optional Cohere support for the POV reranker.

Nothing here imports ``cohere`` at module import time: ``cohere`` and
``llama-index-embeddings-cohere`` come with ``pip install "llama-unsloth[cohere]"``.

Facts of ``llama-index-embeddings-cohere`` 0.9.0 this module relies on:

* ``CohereEmbedding`` sends ``input_type="search_document"`` for
  ``get_text_embedding(_batch)`` and ``"search_query"`` for
  ``get_query_embedding`` -- unless its own ``input_type`` field is set, which
  then overrides both (and would break the POV algorithm).
* It has no batch *query* embedding in the public API (neither has
  ``BaseEmbedding`` in llama-index-core 0.14), so :func:`embed_queries` uses
  its ``_embed(texts, input_type="search_query")`` to send all POVs in one
  request (at most 96 texts per request, the API limit).
* HTTP retries: the ``cohere`` SDK itself retries 429/408/409/5xx twice with
  backoff (honouring ``Retry-After``); the integration adds tenacity retries
  for 500/503/504 only.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, List, Optional

from llama_index.core.base.embeddings.base import BaseEmbedding

COHERE_INSTALL_HINT = 'pip install "llama-unsloth[cohere]"'
COHERE_API_KEY_ENV_VARS = ("CO_API_KEY", "COHERE_API_KEY")
COHERE_MAX_BATCH = 96


def is_cohere_embedding(embed_model: BaseEmbedding) -> bool:
    """Tell whether ``embed_model`` is a ``CohereEmbedding`` (without importing cohere)."""
    try:
        return embed_model.class_name() == "CohereEmbedding"
    except Exception:  # pragma: no cover - exotic class_name implementations
        return False


def check_cohere_embedding(embed_model: BaseEmbedding) -> None:
    """Check that a ``CohereEmbedding`` can serve the POV reranker.

    Raises:
        ValueError: when the model has no API key (fail at construction, not on
            the first query).

    Warns:
        UserWarning: when the model's ``input_type`` is fixed: Cohere would then
            embed chunks, query and POVs all with that one input type instead of
            ``search_document`` / ``search_query``.
    """
    if not is_cohere_embedding(embed_model):
        return
    if not getattr(embed_model, "api_key", None):
        raise ValueError(
            "CohereEmbedding has no API key: pass api_key=... or set "
            f"{' or '.join(COHERE_API_KEY_ENV_VARS)} and use "
            "postprocessors.cohere_embedding()."
        )
    fixed = getattr(embed_model, "input_type", None)
    if fixed is not None:
        warnings.warn(
            f"CohereEmbedding(input_type={fixed!r}) sends that input type for chunks, "
            "query and POVs alike; the POV reranker expects 'search_document' for "
            "chunks and 'search_query' for the query and POVs. Leave input_type=None.",
            UserWarning,
            stacklevel=3,
        )


def embed_queries(embed_model: BaseEmbedding, texts: List[str]) -> List[List[float]]:
    """Embed several texts *as queries*, in as few calls as the model allows.

    Args:
        embed_model: Any embedding model.
        texts: Non-empty texts.

    Returns:
        One embedding per text, in order.
    """
    if not texts:
        return []
    embed = getattr(embed_model, "_embed", None)
    if is_cohere_embedding(embed_model) and callable(embed):
        size = max(1, min(int(embed_model.embed_batch_size), COHERE_MAX_BATCH))
        out: List[List[float]] = []
        for start in range(0, len(texts), size):
            out.extend(embed(texts[start : start + size], input_type="search_query"))
        return out
    return [embed_model.get_query_embedding(text) for text in texts]


def cohere_embedding(
    api_key: Optional[str] = None,
    model_name: str = "embed-english-v3.0",
    base_url: Optional[str] = None,
    **kwargs: Any,
) -> BaseEmbedding:
    """Build a ``CohereEmbedding`` for the POV reranker, failing early and clearly.

    Args:
        api_key: Cohere API key; defaults to ``$CO_API_KEY`` then ``$COHERE_API_KEY``.
        model_name: Cohere embedding model.
        base_url: API endpoint (``None``: Cohere's), e.g. a proxy or a test server.
        **kwargs: Passed to ``CohereEmbedding`` (``timeout``, ``max_retries``, ...).
            Leave ``input_type`` unset.

    Returns:
        A ``CohereEmbedding``.

    Raises:
        ImportError: cohere extras are not installed.
        ValueError: no API key given or found in the environment.
    """
    key = api_key or next(
        (os.environ[v] for v in COHERE_API_KEY_ENV_VARS if os.environ.get(v)), None
    )
    if not key:
        raise ValueError(
            "No Cohere API key: pass api_key=... or set "
            f"{' or '.join(COHERE_API_KEY_ENV_VARS)}."
        )
    try:
        from llama_index.embeddings.cohere import CohereEmbedding
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            f"Cohere embeddings need the cohere extras: {COHERE_INSTALL_HINT}"
        ) from exc
    return CohereEmbedding(
        api_key=key, model_name=model_name, base_url=base_url, **kwargs
    )
