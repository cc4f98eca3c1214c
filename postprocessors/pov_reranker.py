"""Query-then-POV reranking ("POV score"), the algorithm our users run by hand with numpy and Cohere.

Given a query q, retrieved chunks d_1..d_n and viewpoint statements p_1..p_m:

1. chunks are embedded as documents, the query as a query;
2. s_i = cos(d_i, q); the ``query_top_n`` chunks with the largest s_i are kept
   (stable order, s_i descending);
3. POVs are embedded as queries; M[i, j] = cos(d_i, p_j) for the kept chunks;
4. r_i = sqrt(sum_j M[i, j]^2), the L2 norm of row i;
5. kept chunks are ordered by r_i descending and the first ``top_n`` returned.

Cost: POV embeddings are computed once per reranker (lazily), chunk embeddings
are cached by content hash (bounded LRU), and all uncached chunks of a query go
to the embedding model in one ``get_text_embedding_batch`` call. Once warm, a
query over chunks seen before embeds only the query text.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import (
    Field,
    PrivateAttr,
    SerializeAsAny,
    field_validator,
    model_validator,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import (
    ReRankEndEvent,
    ReRankStartEvent,
)
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from llama_unsloth import defaults
from llama_unsloth.errors import EmptyFileError, UnreadableFileError
from llama_unsloth.text_files import read_text
from postprocessors._nodes import copy_node_with_score
from postprocessors.cohere_support import (
    check_cohere_embedding,
    embed_documents,
    embed_queries,
    embed_query,
)

dispatcher = get_dispatcher(__name__)

QUERY_SIMILARITY_KEY = "query_similarity"
POV_SCORE_KEY = "pov_score"
POV_SIMILARITIES_KEY = "pov_similarities"
SCORE_METADATA_KEYS = (QUERY_SIMILARITY_KEY, POV_SCORE_KEY, POV_SIMILARITIES_KEY)


def clean_povs(povs: Sequence[str]) -> List[str]:
    """Strip POVs, drop empty ones and duplicates, keep the first-seen order."""
    seen: Dict[str, None] = {}
    for pov in povs:
        text = str(pov).strip()
        if text and text not in seen:
            seen[text] = None
    return list(seen)


def load_povs(path: Union[str, Path]) -> List[str]:
    """Read POVs from a text file: one per line, ``#`` lines and blanks ignored.

    The encoding is detected as for corpus and question files (UTF-8 with or without BOM, UTF-16,
    Shift-JIS/CP932, EUC-JP: :func:`llama_unsloth.text_files.read_text`): our users' viewpoint lists
    are often saved by Windows tools.

    Args:
        path: The file.

    Returns:
        The POVs, de-duplicated, in file order.

    Raises:
        ValueError: the file holds no POV, or cannot be read or decoded
            (:class:`~llama_unsloth.errors.UnreadableFileError`, naming the file).
    """
    try:
        lines = read_text(path).text.splitlines()
    except EmptyFileError:
        lines = []  # the message below says what a POV file holds
    except UnreadableFileError as err:
        raise UnreadableFileError(f"POV file {err}", reason=err.reason) from err
    povs = clean_povs([line for line in lines if line.strip() and not line.lstrip().startswith("#")])
    if not povs:
        raise ValueError(
            f"POV file {str(path)!r} holds no POVs (only blank lines and # comments); "
            "write one viewpoint statement per line."
        )
    return povs


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Scale rows to unit L2 norm; zero rows stay zero (their cosines are 0, not NaN)."""
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return matrix / np.where(norms > 0.0, norms, 1.0)


def pov_rank(
    chunk_vecs: np.ndarray,
    query_vec: np.ndarray,
    pov_vecs: np.ndarray,
    query_top_n: int,
    top_n: int,
    valid: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rank chunks by our users' query-then-POV algorithm (their "POV score").

    Args:
        chunk_vecs: (n, d) chunk embeddings.
        query_vec: (d,) query embedding.
        pov_vecs: (m, d) POV embeddings; m may be 0 (then r_i = s_i).
        query_top_n: Chunks kept after the query stage.
        top_n: Chunks returned.
        valid: (n,) bool; invalid (empty) chunks rank after all valid ones.

    Returns:
        ``(order, s, M, r)``: indices of the returned chunks into ``chunk_vecs``
        (best first), the query cosines s (n,), the POV cosines M (n, m) and
        the POV scores r (n,) -- all for every input chunk.
    """
    docs = _unit_rows(np.asarray(chunk_vecs, dtype=np.float64))
    query = _unit_rows(np.asarray(query_vec, dtype=np.float64).reshape(1, -1))[0]
    povs = _unit_rows(np.asarray(pov_vecs, dtype=np.float64).reshape(-1, docs.shape[1]))
    valid = np.ones(len(docs), dtype=bool) if valid is None else np.asarray(valid, bool)

    s = docs @ query
    sims = docs @ povs.T
    r = np.linalg.norm(sims, axis=1) if povs.shape[0] else s.copy()

    kept = np.argsort(-np.where(valid, s, -np.inf), kind="stable")[:query_top_n]
    if povs.shape[0]:
        key = np.where(valid[kept], r[kept], -np.inf)
        kept = kept[np.argsort(-key, kind="stable")]
    return kept[:top_n], s, sims, r


class POVReranker(BaseNodePostprocessor):
    """Rerank retrieved chunks by their closeness to a set of viewpoints (POVs).

    Each returned node is a copy whose ``score`` is its POV score; its metadata
    holds ``query_similarity``, ``pov_score`` and ``pov_similarities`` for
    inspection, excluded from the LLM prompt and from embeddings.

    A ``CohereEmbedding`` that fails for good (HTTP error after its retries,
    timeout, unreachable, malformed answer) raises
    :class:`~postprocessors.cohere_support.EmbeddingServiceError`, whose text
    never holds the API key; other models' own errors pass through unchanged.

    Example:
        >>> rerank = POVReranker(embed_model=embed_model, povs=["..."], top_n=5)
        >>> engine = index.as_query_engine(node_postprocessors=[rerank])
    """

    # Kept out of repr() and serialization: embedding models such as CohereEmbedding hold an API key.
    embed_model: SerializeAsAny[BaseEmbedding] = Field(
        description=(
            "Embedding model. Chunks are embedded as documents "
            "(get_text_embedding_batch), the query and the POVs as queries."
        ),
        exclude=True,
        repr=False,
    )
    povs: List[str] = Field(
        default_factory=list,
        description=(
            "Viewpoint statements. Stripped, de-duplicated (first kept); empty list: rank by query similarity only."
        ),
    )
    query_top_n: int = Field(
        default=defaults.QUERY_TOP_N, ge=1, description="Chunks kept by query similarity before POV scoring."
    )
    top_n: int = Field(default=defaults.POV_TOP_N, ge=1, description="Chunks returned, best POV score first.")
    cache_size: int = Field(
        default=4096,
        ge=0,
        description="Chunk embeddings kept in the LRU cache (keyed by text hash); 0 disables it.",
    )
    embed_metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE,
        description=(
            "Which node content is embedded: NONE (default) embeds the chunk text only, "
            "as our users' algorithm does; EMBED adds the node's embed metadata."
        ),
    )

    _chunk_cache: OrderedDict[str, np.ndarray] = PrivateAttr(default_factory=OrderedDict)
    _pov_matrix: Optional[np.ndarray] = PrivateAttr(default=None)
    _pov_key: Optional[Tuple[str, ...]] = PrivateAttr(default=None)
    _cache_hits: int = PrivateAttr(default=0)
    _cache_misses: int = PrivateAttr(default=0)
    _cache_model_id: Optional[int] = PrivateAttr(default=None)
    # One query engine may serve several threads; the caches are shared state.
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)

    @field_validator("povs")
    @classmethod
    def _dedupe_povs(cls, povs: List[str]) -> List[str]:
        return clean_povs(povs)

    @model_validator(mode="after")
    def _check_embed_model(self) -> POVReranker:
        check_cohere_embedding(self.embed_model)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "POVReranker"

    @classmethod
    def from_file(cls, path: Union[str, Path], **kwargs: Any) -> POVReranker:
        """Build a reranker with POVs read from a text file.

        Args:
            path: Text file in any common encoding (see :func:`load_povs`), one POV
                per line; blank lines and lines starting with ``#`` are ignored.
            **kwargs: Other fields (``embed_model``, ``query_top_n``, ``top_n``, ...).

        Raises:
            ValueError: the file holds no POV, or cannot be read or decoded (the message names it).
            TypeError: ``povs`` given as well.
        """
        if "povs" in kwargs:
            raise TypeError("from_file() reads the POVs from the file; do not pass povs=")
        return cls(povs=load_povs(path), **kwargs)

    # ----------------------------------------------------------------- caches
    def cache_info(self) -> Dict[str, int]:
        """Chunk-cache statistics: ``hits``, ``misses``, ``size``, ``maxsize``."""
        return {
            "hits": self._cache_hits,
            "misses": self._cache_misses,
            "size": len(self._chunk_cache),
            "maxsize": self.cache_size,
        }

    def clear_cache(self) -> None:
        """Forget cached chunk and POV embeddings."""
        self._chunk_cache.clear()
        self._pov_matrix = None
        self._pov_key = None
        self._cache_hits = self._cache_misses = 0

    def _check_cache_owner(self) -> None:
        """Drop cached vectors when ``embed_model`` was replaced: they belong to the old one."""
        if self._cache_model_id != id(self.embed_model):
            self.clear_cache()
            self._cache_model_id = id(self.embed_model)

    def _pov_vectors(self) -> Optional[np.ndarray]:
        """POV embeddings (m, d), embedded once as queries; ``None`` when no POVs."""
        povs = tuple(clean_povs(self.povs))
        if not povs:
            return None
        if self._pov_matrix is None or self._pov_key != povs:
            vectors = embed_queries(self.embed_model, list(povs))
            self._pov_matrix = np.asarray(vectors, dtype=np.float64)
            self._pov_key = povs
        return self._pov_matrix

    def _chunk_vectors(self, texts: List[str], dim: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Embeddings (n, d) of ``texts`` as documents, using and filling the cache.

        Empty texts are not sent to the model: they get a zero vector and
        ``valid=False``. All uncached texts go out in one batch call. ``dim``
        (``None``: unknown) sizes the rows when no text gets embedded.
        """
        valid = np.array([bool(t.strip()) for t in texts], dtype=bool)
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        found: Dict[str, np.ndarray] = {}
        missing: Dict[str, str] = {}
        for text, key, ok in zip(texts, keys, valid):
            if not ok or key in found or key in missing:
                continue
            cached = self._chunk_cache.get(key)
            if cached is None:
                missing[key] = text
                self._cache_misses += 1
            else:
                self._chunk_cache.move_to_end(key)
                found[key] = cached
                self._cache_hits += 1
        if missing:
            vectors = embed_documents(self.embed_model, list(missing.values()))
            for key, vec in zip(missing, vectors):
                found[key] = np.asarray(vec, dtype=np.float64)
                if self.cache_size > 0:
                    self._chunk_cache[key] = found[key]
            while len(self._chunk_cache) > self.cache_size:
                self._chunk_cache.popitem(last=False)
        if found:
            dim = len(next(iter(found.values())))
        out: Any = np.zeros((len(texts), dim or 1), dtype=np.float64)
        for row, (key, ok) in enumerate(zip(keys, valid)):
            if ok:
                out[row] = found[key]
        return out, valid

    def _query_vector(self, query: str) -> np.ndarray:
        return np.asarray(embed_query(self.embed_model, query), dtype=np.float64)

    # --------------------------------------------------------------- rerank
    def _rerank(self, nodes: List[NodeWithScore], query: str) -> List[NodeWithScore]:
        self._check_cache_owner()
        pov_vecs = self._pov_vectors()
        # An empty query is not sent to the model: zero vector, all s_i = 0.
        query_vec = self._query_vector(query) if query.strip() else None
        if query_vec is not None:
            dim: Optional[int] = query_vec.shape[0]
        else:
            dim = pov_vecs.shape[1] if pov_vecs is not None else None
        texts = [n.node.get_content(metadata_mode=self.embed_metadata_mode) for n in nodes]
        chunk_vecs, valid = self._chunk_vectors(texts, dim)
        dim = chunk_vecs.shape[1]
        if query_vec is None:
            query_vec = np.zeros(dim)
        has_povs = pov_vecs is not None
        if pov_vecs is None:
            pov_vecs = np.zeros((0, dim))
        order, s, sims, r = pov_rank(chunk_vecs, query_vec, pov_vecs, self.query_top_n, self.top_n, valid)
        return [
            copy_node_with_score(
                nodes[i],
                score=float(r[i]),
                hidden_metadata={
                    QUERY_SIMILARITY_KEY: float(s[i]),
                    POV_SCORE_KEY: float(r[i]) if has_povs else None,
                    POV_SIMILARITIES_KEY: [float(x) for x in sims[i]],
                },
            )
            for i in order
        ]

    def _postprocess_nodes(
        self,
        nodes: List[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> List[NodeWithScore]:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n,
                model_name=self.embed_model.model_name,
            )
        )
        if query_bundle is None:
            raise ValueError(
                "POVReranker needs the query: call postprocess_nodes(nodes, "
                "query_bundle=QueryBundle(query)) or query_str=...; a query engine "
                "passes it automatically."
            )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.embed_model.model_name,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            with self._lock:
                new_nodes = self._rerank(list(nodes), query_bundle.query_str)
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes
