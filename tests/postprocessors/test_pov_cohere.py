"""POVReranker with the real cohere SDK / CohereEmbedding against a local stub server."""

from __future__ import annotations

import logging
import time
import traceback

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

pytest.importorskip("cohere")
CohereEmbedding = pytest.importorskip("llama_index.embeddings.cohere").CohereEmbedding

from postprocessors import EmbeddingServiceError, POVReranker, cohere_embedding  # noqa: E402

CHUNKS = [f"Chunk {i}: trade inside the bloc, case {i}." for i in range(6)]
POVS = ["Sanctions reshaped energy trade.", "Tariffs protect local industry.", "Markets adapt."]
QUERY = "What limits trade inside the bloc?"


def nodes():
    return [NodeWithScore(node=TextNode(text=t), score=1.0) for t in CHUNKS]


PLANTED_KEY = "sk-PLANTED-123"


@pytest.fixture
def fast_sdk_retries(monkeypatch):
    """Shrink both retry layers' backoff so retry tests stay fast.

    The cohere SDK waits from 1 s; CohereEmbedding's tenacity layer (500/503/504)
    waits 4-10 s between its ``max_retries`` rounds.
    """
    import cohere.core.http_client as http_client
    import tenacity
    from llama_index.embeddings.cohere import base as cohere_base

    monkeypatch.setattr(http_client, "INITIAL_RETRY_DELAY_SECONDS", 0.01)
    monkeypatch.setattr(cohere_base, "wait_exponential", lambda **kw: tenacity.wait_none())


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
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert len(cohere_stub.requests) == 3  # the SDK's own retries: 1 + 2
    err = info.value
    assert isinstance(err.__cause__, cohere.errors.TooManyRequestsError)
    assert (err.kind, err.status_code, err.attempts, err.input_type) == (
        "http_status",
        429,
        3,
        "search_query",
    )
    msg = str(err)
    for part in (
        "Cohere embed",
        "HTTP 429",
        "after 3 attempts",
        "'search_query'",
        "quota",
        "embed_batch_size",
        "retry later",
    ):
        assert part in msg


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


# ------------------------------------------------------------ fault handling
@pytest.mark.parametrize(
    "status, attempts",
    [(500, 6), (502, 3), (503, 6), (504, 6)],  # 3 SDK tries x max_retries=2 for 500/503/504
)
def test_persistent_5xx_retried_then_clear_error(cohere_stub, fast_sdk_retries, status, attempts):
    import cohere

    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, max_retries=2)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1])
    cohere_stub.fail_with = [status] * 20
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    err = info.value
    assert len(cohere_stub.requests) == attempts == err.attempts
    assert (err.kind, err.status_code, err.input_type) == ("http_status", status, "search_query")
    assert isinstance(err.__cause__, cohere.core.api_error.ApiError)
    msg = str(err)
    assert f"HTTP {status}" in msg and f"after {attempts} attempts" in msg
    assert "status.cohere.com" in msg and "retry later" in msg


def test_transient_500_is_survived(cohere_stub, fast_sdk_retries):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, max_retries=2)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1], top_n=3)
    cohere_stub.fail_with = [500, 500, 500]  # one whole SDK call fails; tenacity repeats it
    out = rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert len(out) == 3
    assert [r["status"] for r in cohere_stub.requests] == [500, 500, 500, 200, 200, 200]


def test_document_embedding_failure_names_search_document(cohere_stub, fast_sdk_retries):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, max_retries=1)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1])
    cohere_stub.fail_with = [200, 200, 400]  # POVs, query ok; chunks rejected
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    err = info.value
    assert (err.status_code, err.attempts, err.input_type, err.n_texts) == (
        400,
        1,
        "search_document",
        len(CHUNKS),
    )
    assert "stub error 400" in str(err)  # the server's message is quoted
    # nothing half-done was cached: the next query works and embeds the chunks
    assert len(rerank.postprocess_nodes(nodes(), query_str=QUERY)) == 5


@pytest.mark.timeout(30)
def test_timeout_raises_clear_error_quickly(cohere_stub):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url, timeout=0.5)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1])
    cohere_stub.delay_s = 2.0
    start = time.perf_counter()
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    assert time.perf_counter() - start < 10
    err = info.value
    assert (err.kind, err.attempts, err.input_type) == ("timeout", 1, "search_query")
    assert len(cohere_stub.requests) == 1  # timeouts are not retried by either layer
    msg = str(err)
    assert "no answer within 0.5 s" in msg and "timeout=" in msg and "embed_batch_size" in msg


@pytest.mark.parametrize(
    "bad_body, expected",
    [
        ("invalid_json", "not valid JSON"),
        ("no_embeddings", "without usable 'embeddings.float'"),
    ],
)
@pytest.mark.parametrize(
    "first_call, input_type",
    [
        ("povs", "search_query"),  # POVs go through CohereEmbedding._embed
        ("query", "search_query"),  # get_query_embedding
        ("documents", "search_document"),  # get_text_embedding_batch
    ],
)
def test_malformed_body_raises_clear_error(cohere_stub, bad_body, expected, first_call, input_type):
    embed = CohereEmbedding(api_key="test-key", base_url=cohere_stub.url)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1] if first_call == "povs" else [])
    cohere_stub.bad_body = bad_body
    query = "" if first_call == "documents" else QUERY  # an empty query is not embedded
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=query)
    err = info.value
    assert (err.kind, err.status_code, err.input_type) == ("malformed_response", 200, input_type)
    assert expected in str(err) and "base_url" in str(err)
    assert len(cohere_stub.requests) == 1


def test_connection_refused_raises_clear_error():
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    embed = CohereEmbedding(api_key="test-key", base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(EmbeddingServiceError) as info:
        POVReranker(embed_model=embed, povs=POVS[:1]).postprocess_nodes(nodes(), query_str=QUERY)
    assert info.value.kind == "connection"
    assert f"could not reach http://127.0.0.1:{port}" in str(info.value)


def test_wrong_vector_count_from_any_model_is_clear(make_table_embedding):
    class ShortEmbedding(type(make_table_embedding({}))):
        def _get_text_embeddings(self, texts):
            return super()._get_text_embeddings(texts)[:-1]

    table = {t: [1.0, float(i)] for i, t in enumerate(CHUNKS + [QUERY])}
    embed = ShortEmbedding(table=table, embed_batch_size=512)
    with pytest.raises(EmbeddingServiceError, match="returned 5 embeddings for 6 texts"):
        POVReranker(embed_model=embed, povs=[]).postprocess_nodes(nodes(), query_str=QUERY)


def test_other_models_errors_pass_through(make_table_embedding):
    embed = make_table_embedding({QUERY: [1.0, 0.0]})  # chunks missing: KeyError
    with pytest.raises(KeyError):
        POVReranker(embed_model=embed, povs=[]).postprocess_nodes(nodes(), query_str=QUERY)


def _set_fault(stub, mode):
    if mode == "500_persistent":
        stub.fail_with = [500] * 20
    elif mode == "timeout":
        stub.delay_s = 2.0
    elif mode in ("invalid_json", "no_embeddings"):
        stub.bad_body = mode
    elif mode == "401":
        stub.fail_with = [401]
    elif mode == "401_echoing_key":
        stub.fail_with = [401]
        stub.echo_auth_in_errors = True


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "mode", ["500_persistent", "timeout", "invalid_json", "no_embeddings", "401", "401_echoing_key"]
)
def test_api_key_never_leaks(cohere_stub, fast_sdk_retries, caplog, capsys, mode):
    caplog.set_level(logging.DEBUG)
    embed = CohereEmbedding(api_key=PLANTED_KEY, base_url=cohere_stub.url, timeout=0.5, max_retries=2)
    rerank = POVReranker(embed_model=embed, povs=POVS[:1])
    _set_fault(cohere_stub, mode)
    with pytest.raises(EmbeddingServiceError) as info:
        rerank.postprocess_nodes(nodes(), query_str=QUERY)
    err = info.value
    assert cohere_stub.requests[0]["authorization"] == f"Bearer {PLANTED_KEY}"  # key was sent
    full_traceback = "".join(traceback.format_exception(err))  # includes __cause__ chain
    out, errout = capsys.readouterr()
    for where, text in [
        ("str", str(err)),
        ("repr", repr(err)),
        ("traceback", full_traceback),
        ("logs", caplog.text),
        ("stdout", out),
        ("stderr", errout),
    ]:
        assert PLANTED_KEY not in text, f"API key leaked into {where}"
    if mode != "no_embeddings":  # there, CohereEmbedding returns None: no exception to chain
        assert err.__cause__ is not None
    if mode == "401_echoing_key":
        # the server quoted the key; we show its message with the key scrubbed
        assert "[REDACTED]" in str(err) and "[REDACTED]" in full_traceback
    if mode.startswith("401"):
        assert err.status_code == 401 and "API key was rejected" in str(err)


def test_reranker_repr_and_json_do_not_show_the_api_key(cohere_stub):
    embed = CohereEmbedding(api_key="sk-PLANTED-123", base_url=cohere_stub.url)
    rerank = POVReranker(embed_model=embed, povs=POVS)
    assert "sk-PLANTED-123" not in repr(rerank)
    assert "sk-PLANTED-123" not in rerank.to_json()
    assert rerank.to_dict()["povs"] == POVS
