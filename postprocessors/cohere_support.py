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
* HTTP retries, two layers (nothing here adds a third):

  - the ``cohere`` SDK (5.21) answers 408/409/429/5xx by retrying the request
    twice (3 HTTP attempts) with exponential backoff from 1 s, honouring
    ``Retry-After``; it does *not* retry timeouts or connection errors;
  - ``CohereEmbedding`` repeats the whole SDK call (tenacity, waits 4-10 s) up
    to ``max_retries`` times (default 10) on 500/503/504 only -- so a
    persistent 500 costs ``3 * max_retries`` HTTP attempts, a persistent 429
    or 502 only 3.

* Failures surface as ``cohere.core.api_error.ApiError`` subclasses (also for
  a 200 answer whose body is not JSON: ``status_code=200``), ``httpx``
  timeouts / transport errors (``timeout=`` of ``CohereEmbedding`` is the
  httpx timeout, default 300 s), or -- for a 200 JSON body without
  ``embeddings.float`` -- a ``None`` result that blows up later as a
  ``TypeError``. :func:`embedding_errors` turns all of these into one
  :class:`EmbeddingServiceError` whose text never holds the API key.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any, Dict, Iterator, List, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

from llama_index.core.base.embeddings.base import BaseEmbedding

from llama_unsloth.errors import EmbeddingServiceError  # noqa: F401 (defined there, re-exported here)
from llama_unsloth.models import COHERE_API_KEY_ENV_VARS, cohere_embedding  # noqa: F401 (the factory lives with the other embeddings)

COHERE_MAX_BATCH = 96
COHERE_DEFAULT_URL = "https://api.cohere.com"
COHERE_STATUS_PAGE = "https://status.cohere.com"
# cohere SDK 5.x: 1 try + 2 retries for these statuses (and any >= 500)
SDK_HTTP_ATTEMPTS = 3
_SDK_RETRIED_4XX = (408, 409, 429)
REDACTED = "[REDACTED]"


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


# ------------------------------------------------------------ error handling
def _secrets(embed_model: BaseEmbedding) -> List[str]:
    key = getattr(embed_model, "api_key", None)
    # a key shorter than 4 characters cannot be scrubbed without mangling text
    return [key] if isinstance(key, str) and len(key) >= 4 else []


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def _scrub(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret replaced in its strings (dicts, lists, tuples walked)."""
    if isinstance(value, str):
        return _redact(value, secrets)
    if isinstance(value, bytes):
        return _redact(value.decode("utf-8", "replace"), secrets).encode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k, secrets): _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, secrets) for v in value)
    return value


def _scrub_exception(exc: Optional[BaseException], secrets: Sequence[str]) -> None:
    """Remove secrets from the printable parts of ``exc`` and its chain, in place."""
    seen = set()
    while exc is not None and id(exc) not in seen and secrets:
        seen.add(id(exc))
        try:
            exc.args = _scrub(exc.args, secrets)
            for attr in ("body", "headers"):  # cohere ApiError prints both
                if isinstance(getattr(exc, attr, None), (str, bytes, dict, list, tuple)):
                    setattr(exc, attr, _scrub(getattr(exc, attr), secrets))
        except Exception:  # pragma: no cover - read-only exception attributes
            pass
        exc = exc.__cause__ or exc.__context__


def _public_url(embed_model: BaseEmbedding) -> str:
    """The model's base URL without user info, query or fragment."""
    url = getattr(embed_model, "base_url", None) or COHERE_DEFAULT_URL
    try:
        parts = urlsplit(str(url))
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:  # pragma: no cover - unparsable URL
        return "<base_url>"


def _effective_input_type(embed_model: BaseEmbedding, requested: Optional[str]) -> Optional[str]:
    return getattr(embed_model, "input_type", None) or requested


def _server_message(body: Any, secrets: Sequence[str], limit: int = 200) -> str:
    if isinstance(body, dict):
        body = body.get("message", body)
    text = " ".join(str(body).split()) if body not in (None, "") else ""
    text = _redact(text, secrets)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _http_attempts(embed_model: BaseEmbedding, exc: BaseException, status: int) -> int:
    """HTTP attempts behind a final ``status``: the SDK's retries times the integration's."""
    sdk = SDK_HTTP_ATTEMPTS if status >= 500 or status in _SDK_RETRIED_4XX else 1
    rounds = 1
    try:
        import cohere

        repeated = (
            cohere.errors.ServiceUnavailableError,
            cohere.errors.InternalServerError,
            cohere.errors.GatewayTimeoutError,
        )
        if isinstance(exc, repeated):
            rounds = max(1, int(getattr(embed_model, "max_retries", 1) or 1))
    except Exception:  # pragma: no cover - other cohere versions
        pass
    return sdk * rounds


def _status_advice(status: int, url: str) -> str:
    if status == 429:
        return (
            "Cohere is rate-limiting this API key: check your plan's rate limits and "
            "quota (https://dashboard.cohere.com), lower embed_batch_size or the "
            "request rate, and retry later."
        )
    if status in (401, 498):
        return (
            "The API key was rejected (it is not shown here): check api_key / "
            f"{' or '.join(COHERE_API_KEY_ENV_VARS)} and that the key is still active."
        )
    if status == 403:
        return "The API key may not use this model: check model_name and your Cohere plan."
    if status == 404:
        return f"Check base_url ({url}) and model_name."
    if status in (400, 413, 422):
        return (
            "Cohere rejected the request: check model_name, input_type and text "
            f"lengths, and lower embed_batch_size (at most {COHERE_MAX_BATCH})."
        )
    if status >= 500:
        return (
            f"Cohere-side failure: check {COHERE_STATUS_PAGE}, retry later, lower "
            "embed_batch_size, or raise CohereEmbedding(max_retries=...)."
        )
    return f"Check your Cohere quota and {COHERE_STATUS_PAGE}, lower embed_batch_size, and retry later."


def _translate_cohere_error(
    embed_model: BaseEmbedding, exc: BaseException, input_type: Optional[str], n_texts: int
) -> Optional[EmbeddingServiceError]:
    """An EmbeddingServiceError for a failed Cohere call, or ``None`` (re-raise as is)."""
    from llama_unsloth.import_utils import is_cohere_available

    if not is_cohere_available():  # pragma: no cover - cohere extras missing
        return None
    import httpx
    from cohere.core.api_error import ApiError

    secrets = _secrets(embed_model)
    url = _public_url(embed_model)
    sent_type = _effective_input_type(embed_model, input_type)
    head = (
        f"Cohere embed request failed ({n_texts} text{'s' if n_texts != 1 else ''}, "
        f"input_type={sent_type!r}, model={getattr(embed_model, 'model_name', None)!r}): "
    )
    fields: Dict[str, Any] = {"input_type": sent_type, "n_texts": n_texts}
    malformed_advice = (
        f"Check that base_url ({url}) reaches Cohere's API and not a proxy or portal "
        f"answering something else, check {COHERE_STATUS_PAGE}, and retry later."
    )

    if isinstance(exc, ApiError):
        status = exc.status_code
        if status is None or 200 <= status < 300:
            snippet = _server_message(exc.body, secrets, limit=80)
            what = f"HTTP {status} answer whose body is not valid JSON (starts {snippet!r})"
            return EmbeddingServiceError(
                head + what + ". " + malformed_advice,
                kind="malformed_response",
                status_code=status,
                attempts=1,
                **fields,
            )
        attempts = _http_attempts(embed_model, exc, status)
        try:
            reason = f" {HTTPStatus(status).phrase}"
        except ValueError:
            reason = ""
        said = _server_message(exc.body, secrets)
        what = f"HTTP {status}{reason} after {attempts} attempt{'s' if attempts != 1 else ''}" + (
            f" (server said: {said})" if said else ""
        )
        return EmbeddingServiceError(
            head + what + ". " + _status_advice(status, url),
            kind="http_status",
            status_code=status,
            attempts=attempts,
            **fields,
        )

    if isinstance(exc, httpx.TimeoutException):
        timeout = getattr(embed_model, "_timeout", None)
        within = f"within {timeout:g} s" if isinstance(timeout, (int, float)) else "in time"
        what = f"no answer {within} ({type(exc).__name__}; after 1 attempt, timeouts are not retried)"
        advice = (
            "Raise CohereEmbedding(timeout=...), lower embed_batch_size, check your "
            f"network and {COHERE_STATUS_PAGE}, or retry later."
        )
        return EmbeddingServiceError(head + what + ". " + advice, kind="timeout", attempts=1, **fields)

    if isinstance(exc, httpx.TransportError):
        what = f"could not reach {url} ({type(exc).__name__}; after 1 attempt)"
        advice = f"Check your network / proxy settings and base_url, {COHERE_STATUS_PAGE}, then retry."
        return EmbeddingServiceError(head + what + ". " + advice, kind="connection", attempts=1, **fields)

    if isinstance(exc, (TypeError, AttributeError, KeyError, IndexError)):
        # CohereEmbedding returns None when the JSON has no embeddings.<type>;
        # llama-index then fails while iterating / indexing it.
        return _missing_embeddings_error(embed_model, input_type, n_texts, f" ({type(exc).__name__} while reading it)")
    return None


def _missing_embeddings_error(
    embed_model: BaseEmbedding, input_type: Optional[str], n_texts: int, detail: str = ""
) -> EmbeddingServiceError:
    sent_type = _effective_input_type(embed_model, input_type)
    embedding_type = getattr(embed_model, "embedding_type", "float")
    return EmbeddingServiceError(
        f"Cohere embed request failed ({n_texts} text{'s' if n_texts != 1 else ''}, "
        f"input_type={sent_type!r}, model={getattr(embed_model, 'model_name', None)!r}): "
        f"HTTP 200 answer without usable 'embeddings.{embedding_type}'{detail}. "
        f"Check that base_url ({_public_url(embed_model)}) reaches Cohere's API and not "
        f"a proxy or portal answering something else, check {COHERE_STATUS_PAGE}, "
        "and retry later.",
        kind="malformed_response",
        status_code=200,
        attempts=1,
        input_type=sent_type,
        n_texts=n_texts,
    )


@contextmanager
def embedding_errors(embed_model: BaseEmbedding, *, input_type: Optional[str], n_texts: int) -> Iterator[None]:
    """Turn a ``CohereEmbedding`` call's failure into an :class:`EmbeddingServiceError`.

    Other models' exceptions pass through unchanged (we cannot tell their
    network faults from bugs). The API key is scrubbed from the original
    exception, which becomes ``__cause__``.
    """
    if not is_cohere_embedding(embed_model):
        yield
        return
    try:
        yield
    except EmbeddingServiceError:
        raise
    except Exception as exc:
        err = _translate_cohere_error(embed_model, exc, input_type, n_texts)
        if err is None:
            raise
        _scrub_exception(exc, _secrets(embed_model))
        raise err from exc


def _is_vector(value: Any) -> bool:
    if isinstance(value, (str, bytes, dict)):
        return False
    try:
        return len(value) > 0
    except TypeError:
        return False


def check_embeddings(embed_model: BaseEmbedding, vectors: Any, n_texts: int, input_type: Optional[str]) -> List[Any]:
    """Check that a model returned ``n_texts`` non-empty vectors of one length.

    Raises:
        EmbeddingServiceError: ``kind="malformed_response"`` otherwise.
    """
    if vectors is None and is_cohere_embedding(embed_model):
        # CohereEmbedding._embed's answer to JSON without embeddings.<type>
        raise _missing_embeddings_error(embed_model, input_type, n_texts)
    problem = None
    if vectors is None or isinstance(vectors, (str, bytes, dict)):
        problem = f"returned {type(vectors).__name__} instead of a list of vectors"
    else:
        try:
            vectors = list(vectors)
        except TypeError:
            problem = f"returned {type(vectors).__name__} instead of a list of vectors"
    if problem is None and len(vectors) != n_texts:
        problem = f"returned {len(vectors)} embeddings for {n_texts} texts"
    if problem is None and not all(_is_vector(v) for v in vectors):
        problem = "returned an empty or non-numeric embedding"
    if problem is None and len({len(v) for v in vectors}) > 1:
        problem = f"returned embeddings of different lengths {sorted({len(v) for v in vectors})}"
    if problem is None:
        return vectors
    sent_type = _effective_input_type(embed_model, input_type)
    if is_cohere_embedding(embed_model):
        who = "Cohere embed"
        advice = (
            f"Check that base_url ({_public_url(embed_model)}) reaches Cohere's API, "
            f"check {COHERE_STATUS_PAGE}, and retry later."
        )
    else:
        who = f"Embedding model {embed_model.class_name()}"
        advice = "Check the embedding model / service it calls."
    raise EmbeddingServiceError(
        f"{who} {problem} (input_type={sent_type!r}, model={getattr(embed_model, 'model_name', None)!r}). {advice}",
        kind="malformed_response",
        input_type=sent_type,
        n_texts=n_texts,
    )


# -------------------------------------------------------------- embedding
def embed_documents(embed_model: BaseEmbedding, texts: List[str]) -> List[Any]:
    """Embed ``texts`` as documents in one ``get_text_embedding_batch`` call, checked.

    Raises:
        EmbeddingServiceError: Cohere failed for good, or the answer is malformed.
    """
    with embedding_errors(embed_model, input_type="search_document", n_texts=len(texts)):
        vectors = embed_model.get_text_embedding_batch(texts)
    return check_embeddings(embed_model, vectors, len(texts), "search_document")


def embed_query(embed_model: BaseEmbedding, text: str) -> Any:
    """Embed one text as a query, checked (see :func:`embed_documents`)."""
    with embedding_errors(embed_model, input_type="search_query", n_texts=1):
        vector = embed_model.get_query_embedding(text)
    return check_embeddings(embed_model, [vector], 1, "search_query")[0]


def embed_queries(embed_model: BaseEmbedding, texts: List[str]) -> List[List[float]]:
    """Embed several texts *as queries*, in as few calls as the model allows.

    Args:
        embed_model: Any embedding model.
        texts: Non-empty texts.

    Returns:
        One embedding per text, in order.

    Raises:
        EmbeddingServiceError: Cohere failed for good, or the answer is malformed.
    """
    if not texts:
        return []
    embed = getattr(embed_model, "_embed", None)
    if is_cohere_embedding(embed_model) and callable(embed):
        size = max(1, min(int(embed_model.embed_batch_size), COHERE_MAX_BATCH))
        out: List[List[float]] = []
        for start in range(0, len(texts), size):
            batch = texts[start : start + size]
            with embedding_errors(embed_model, input_type="search_query", n_texts=len(batch)):
                vectors = embed(batch, input_type="search_query")
            out.extend(check_embeddings(embed_model, vectors, len(batch), "search_query"))
        return out
    with embedding_errors(embed_model, input_type="search_query", n_texts=len(texts)):
        vectors = [embed_model.get_query_embedding(text) for text in texts]
    return check_embeddings(embed_model, vectors, len(texts), "search_query")
