"""POVReranker with the real cohere SDK / CohereEmbedding against a local stub server."""

from __future__ import annotations

import time

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

pytest.importorskip("cohere")
CohereEmbedding = pytest.importorskip("llama_index.embeddings.cohere").CohereEmbedding

from postprocessors import POVReranker, cohere_embedding  # noqa: E402

CHUNKS = [f"Chunk {i}: trade inside the bloc, case {i}." for i in range(6)]
POVS = ["Sanctions reshaped energy trade.", "Tariffs protect local industry.", "Markets adapt."]
QUERY = "What limits trade inside the bloc?"


def nodes():
    return [NodeWithScore(node=TextNode(text=t), score=1.0) for t in CHUNKS]


@pytest.fixture
def fast_sdk_retries(monkeypatch):
    """Shrink the cohere SDK's backoff (1 s base) so retry tests stay fast."""
    import cohere.core.http_client as http_client

    monkeypatch.setattr(http_client, "INITIAL_RETRY_DELAY_SECONDS", 0.01)


def test_input_types_and_batching(cohere_stub):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, model_name="embed-english-v3.0")
    rerank = POVReranker(embed_model=embed, povs=POVS, query_top_n=4, top_n=2)
    out = rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert len(out) == 2

    reqs = cohere_stub.requests
    assert all(r["path"] == "/v2/embed" and r["status"] == 200 for r in reqs)
    assert all(r["authorization"] == "Bearer test-key" for r in reqs)
    assert all(r["body"]["model"] == "embed-english-v3.0" for r in reqs)
    by_type = [(r["body"]["input_type"], r["body"]["texts"]) for r in reqs]
    assert by_type == [
        ("search_query", POVS),  # all POVs in one request
        ("search_query", [QUERY]),
        ("search_document", CHUNKS),  # all chunks in one request
    ]

    # warm: only the query goes out
    rerank.postprocess_nodes(nodes(), query_str="another question")
    assert [(r["body"]["input_type"], r["body"]["texts"]) for r in reqs[3:]] == [
        ("search_query", ["another question"])
    ]


def test_429_then_success_is_retried(cohere_stub, fast_sdk_retries):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1], top_n=3)
    cohere_stub.fail_with = [429]
    start = time.perf_counter()
    out = rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert time.perf_counter() - start < 5
    assert len(out) == 3
    assert [r["status"] for r in cohere_stub.requests] == [429, 200, 200, 200]
    assert cohere_stub.requests[0]["body"] == cohere_stub.requests[1]["body"]


def test_persistent_429_surfaces_as_error(cohere_stub, fast_sdk_retries):
    import cohere

    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, max_retries=1)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1])
    cohere_stub.fail_with = [429] * 10
    with pytest.raises(cohere.errors.TooManyRequestsError):
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert len(cohere_stub.requests) == 3  # the SDK's own retries: 1 + 2


def test_no_api_key_fails_at_construction(monkeypatch):
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="API key"):
        cohere_embedding()
    with pytest.raises(ValueError):  # CohereEmbedding itself rejects a missing/empty key
        CohereEmbedding(api_key="")
    embed = CohereEmbedding(api_key="k")
    embed.api_key = ""  # key cleared after construction: the reranker still refuses it
    with pytest.raises(ValueError, match="API key"):
        POVReranker(embed_model=embed, povs=POVS)


def test_api_key_from_environment(monkeypatch, cohere_stub):
    monkeypatch.delenv("CO_API_KEY", raising=False)
    monkeypatch.setenv("COHERE_API_KEY", "env-key")
    embed = cohere_embedding(base_url=cohere_stub.url)
    POVReranker(embed_model=embed, povs=POVS[:1]).postprocess_nodes(nodes(), query_str=QUERY)
    assert {r["authorization"] for r in cohere_stub.requests} == {"Bearer env-key"}


def test_fixed_input_type_warns():
    embed = CohereEmbedding(api_key="k", input_type="search_document")
    with pytest.warns(UserWarning, match="search_query"):
        POVReranker(embed_model=embed, povs=POVS)
