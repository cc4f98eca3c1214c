"""benchmarks/rerank_cost.py at toy size: both cases are measured, per-query retrieval really differs per
query, rankings equal the hand-written numpy path, and the JSON holds the machine and the load average."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """--threads 1 sets torch's process-wide thread count: later tests must train with the default again
    (the fine-tune marker tests' numerics depend on it)."""
    import torch

    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def test_rerank_cost_reports_same_nodes_and_per_query_retrieval(tmp_path, minilm_path) -> None:
    from benchmarks import rerank_cost

    out = tmp_path / "rerank.json"
    result = rerank_cost.main(
        [
            "--model",
            str(minilm_path),
            "--threads",
            "1",
            "--chunks",
            "3",
            "--pool-chunks",
            "30",
            "--chunk-chars",
            "200",
            "--povs",
            "3",
            "--query-top-n",
            "3",
            "--top-n",
            "2",
            "--warm-queries",
            "4",
            "--cold-runs",
            "1",
            "--out",
            str(out),
        ]
    )
    same, per_query = result["cases"]["same_nodes"], result["cases"]["per_query_retrieval"]
    assert same["ranking_matches_today"] and per_query["ranking_matches_today"]
    # Same nodes: every timed query embeds only its query text (all chunks cached in the warm-up).
    assert same["texts_embedded_per_query_each"] == [1, 1, 1, 1]
    assert same["rows"]["reranker"]["cache_hit_rate"] == 1.0
    # Per-query retrieval: the first timed query embeds its query + all 3 chunks; different queries retrieve
    # different chunks, so the cache saves less than in the same-nodes case.
    assert per_query["texts_embedded_per_query_each"][0] == 4
    assert per_query["distinct_chunks_retrieved"] > 3
    assert per_query["rows"]["reranker"]["texts_embedded_per_query"] > 1
    assert per_query["rows"]["reranker"]["cache_hit_rate"] < 1.0
    # Today re-embeds query + chunks + POVs on every query, in both cases.
    assert same["rows"]["today"]["texts_embedded_per_query"] == 1 + 3 + 3
    assert per_query["rows"]["today"]["texts_embedded_per_query"] == 1 + 3 + 3

    written = json.loads(out.read_text(encoding="utf-8"))
    assert set(written["cases"]) == {"same_nodes", "per_query_retrieval"}
    load = written["load_average"]
    assert len(load["start"]) == 3 and len(load["end"]) == 3
    assert written["machine"]["nproc"] >= 1 and written["machine"]["torch_threads"] == 1
