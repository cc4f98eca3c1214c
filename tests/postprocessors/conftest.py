"""Shared helpers for the postprocessor tests.

* ``FixedTableEmbedding``: a BaseEmbedding serving vectors from a dict and
  recording every text / query it is asked to embed (fixtures
  ``make_table_embedding``, ``random_table``).
* ``StubCohereServer``: a local HTTP server speaking enough of Cohere's
  ``POST /v2/embed`` for the real ``cohere`` SDK, recording requests (fixture
  ``cohere_stub``).
* ``spec_reference``: our users' POV algorithm written out plainly (numpy).
* ``RecordingLLM``: a CustomLLM that records the prompts it receives.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback


def _spec_reference(
    chunks: Sequence[Any],
    query: Any,
    povs: Sequence[Any],
    query_top_n: int,
    top_n: int,
) -> List[Tuple[int, float]]:
    """Our users' query-then-POV reranking, written out plainly: [(chunk index, r_i)], best first.

    With no POVs, r_i is the query similarity s_i (query ranking only).
    """

    def cos(a: Any, b: Any) -> float:
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))

    s = [cos(d, query) for d in chunks]
    kept = sorted(range(len(chunks)), key=lambda i: -s[i])[:query_top_n]  # stable
    if not povs:
        return [(i, s[i]) for i in kept[:top_n]]
    r = {i: math.sqrt(sum(cos(chunks[i], p) ** 2 for p in povs)) for i in kept}
    return [(i, r[i]) for i in sorted(kept, key=lambda i: -r[i])[:top_n]]


class RecordingLLM(CustomLLM):
    """Completion LLM that records every prompt and answers a fixed text."""

    prompts: List[str] = Field(default_factory=list)
    answer: str = "recorded answer"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=32000, num_output=64, model_name="recording-llm")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        self.prompts.append(prompt)
        yield CompletionResponse(text=self.answer, delta=self.answer)


class FixedTableEmbedding(BaseEmbedding):
    """Embedding model serving fixed vectors from ``table`` and counting its work."""

    table: Dict[str, List[float]]
    _text_batches: List[List[str]] = PrivateAttr(default_factory=list)
    _queries: List[str] = PrivateAttr(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "FixedTableEmbedding"

    def _lookup(self, text: str) -> List[float]:
        assert text.strip(), "an empty text was sent to the embedding model"
        return list(self.table[text])

    # what was embedded
    @property
    def text_batches(self) -> List[List[str]]:
        """Each ``_get_text_embeddings`` call's texts (documents)."""
        return self._text_batches

    @property
    def queries(self) -> List[str]:
        """Every text embedded as a query."""
        return self._queries

    @property
    def n_embedded(self) -> int:
        """Texts embedded so far, documents and queries."""
        return len(self._queries) + sum(len(b) for b in self._text_batches)

    def reset_counts(self) -> None:
        self._text_batches.clear()
        self._queries.clear()

    def _get_query_embedding(self, query: str) -> List[float]:
        self._queries.append(query)
        return self._lookup(query)

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        self._text_batches.append(list(texts))
        return [self._lookup(t) for t in texts]

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embeddings([text])[0]

    async def _aget_text_embedding(self, text: str) -> List[float]:
        return self._get_text_embedding(text)


@pytest.fixture
def spec_reference() -> Callable[..., List[Tuple[int, float]]]:
    """Our users' algorithm in plain numpy: ``spec_reference(chunks, query, povs, query_top_n, top_n)``."""
    return _spec_reference


@pytest.fixture
def recording_llm() -> RecordingLLM:
    """A fresh RecordingLLM (``.prompts`` lists the prompts received)."""
    return RecordingLLM()


@pytest.fixture
def make_table_embedding() -> Callable[..., FixedTableEmbedding]:
    """Factory: ``make_table_embedding(table)`` -> FixedTableEmbedding (batch size 512)."""

    def make(table: Dict[str, Any], **kwargs: Any) -> FixedTableEmbedding:
        kwargs.setdefault("embed_batch_size", 512)
        return FixedTableEmbedding(table={k: [float(x) for x in v] for k, v in table.items()}, **kwargs)

    return make


@pytest.fixture
def random_table() -> Callable[..., Dict[str, np.ndarray]]:
    """Factory: ``random_table(texts, dim, seed)`` -> {text: random normal vector}."""

    def make(texts: List[str], dim: int = 16, seed: int = 0) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {t: rng.normal(size=dim) for t in texts}

    return make


def stub_vector(text: str, dim: int = 8) -> List[float]:
    """Deterministic pseudo-embedding of ``text`` (what the Cohere stub returns)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).tolist()


class StubCohereServer:
    """Minimal Cohere v2 embed API on 127.0.0.1, recording each request.

    Fault modes (all off by default):

    * ``fail_with``: HTTP statuses to answer, one per request, before answering
      normally again (error body ``{"message": "stub error <status>"}``);
    * ``delay_s``: seconds to wait before answering each request (a client
      timeout shorter than this times out; ``close()`` cuts the wait short);
    * ``bad_body``: answer every request HTTP 200 with ``"invalid_json"`` (a
      body that is not JSON) or ``"no_embeddings"`` (JSON without
      ``embeddings``);
    * ``echo_auth_in_errors``: error bodies quote the request's
      ``Authorization`` header, like a leaky proxy would.
    """

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.fail_with: List[int] = []
        self.delay_s: float = 0.0
        self.bad_body: Optional[str] = None
        self.echo_auth_in_errors: bool = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub._lock:
                    status = stub.fail_with.pop(0) if stub.fail_with else 200
                    stub.requests.append(
                        {
                            "path": self.path,
                            "body": body,
                            "authorization": self.headers.get("Authorization"),
                            "status": status,
                        }
                    )
                    delay, bad_body = stub.delay_s, stub.bad_body
                if delay > 0 and stub._closing.wait(delay):
                    return  # server closing: drop the request
                data: Optional[bytes] = None
                if status != 200:
                    payload: Dict[str, Any] = {"message": f"stub error {status}"}
                    if stub.echo_auth_in_errors:
                        payload["message"] += f" for {self.headers.get('Authorization')}"
                elif self.path.rstrip("/") != "/v2/embed":
                    status, payload = 404, {"message": f"unknown path {self.path}"}
                elif bad_body == "invalid_json":
                    data = b"<html>upstream hiccup</html"
                elif bad_body == "no_embeddings":
                    payload = {"id": "stub", "meta": {"api_version": {"version": "2"}}}
                else:
                    texts = body.get("texts") or []
                    payload = {
                        "id": "stub",
                        "response_type": "embeddings_by_type",
                        "embeddings": {"float": [stub_vector(t) for t in texts]},
                        "texts": texts,
                        "meta": {"api_version": {"version": "2"}},
                    }
                if data is None:
                    data = json.dumps(payload).encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def ok_requests(self) -> List[Dict[str, Any]]:
        """Requests that were answered with embeddings."""
        return [r for r in self.requests if r["status"] == 200]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def cohere_stub() -> Any:
    """A running StubCohereServer (``.url``, ``.requests``, fault modes ``.fail_with``,
    ``.delay_s``, ``.bad_body``, ``.echo_auth_in_errors``)."""
    server = StubCohereServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def minilm_embedding(minilm_path: Path) -> Optional[BaseEmbedding]:
    """One HuggingFaceEmbedding(MiniLM) on CPU for all slow tests."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(minilm_path), device="cpu")
