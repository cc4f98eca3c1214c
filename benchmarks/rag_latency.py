"""One RAG query end to end, split into retrieval, rerank, prompt build and generation; memory over many queries.

The query goes through ``index.as_query_engine`` with ``similarity_top_k=15`` and
DuplicateChunkFilter -> POVReranker(10 POVs, query_top_n 10, top_n 5) -> ContextCleaner, over the sample corpus.
Phases are timed from LlamaIndex's instrumentation events (retrieval, rerank, LLM call); "other" is the rest
of the query: the duplicate filter, the cleaner, prompt packing and formatting.

Memory: GPU memory allocated (``torch.cuda.memory_allocated``) and process RSS are sampled after query 10 and
every ``--memory-every`` queries, so ``--queries 200`` (GPU) or ``--queries 1000`` (CPU soak) shows whether
anything grows per query.

Commands::

    # CPU, what `make demo` does (SmolLM2 + MiniLM + Chroma):
    .venv/bin/python -m benchmarks.rag_latency --queries 5 --out rag_cpu.json
    # CPU soak (1000 sequential queries, RSS):
    .venv/bin/python -m benchmarks.rag_latency --queries 1000 --max-new-tokens 16 --memory-every 100
    # GPU machine, 7.4B random-weight Llama, random-weight MiniLM-architecture embedder:
    python -m benchmarks.rag_latency --model /tmp/m8b --embed-config .gpu/minilm --store memory --queries 3
    # ... through the fast decode path (issue 13), int4 weights:
    python -m benchmarks.rag_latency --model /tmp/m8b --embed-config .gpu/minilm --store memory --queries 4 \
        --min-new-tokens 128 --fast-decode --weights int4
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.common import machine, print_table, write_json

DATA = Path(__file__).resolve().parents[1] / "llama_unsloth" / "data"


def random_embedding_folder(config_dir: str, out: str) -> str:
    """A sentence-transformers folder with ``config_dir``'s architecture and tokenizer and random weights.

    Weights don't change speed; this stands in for MiniLM where its weights can't be carried.
    """
    from transformers import BertConfig, BertModel

    target = Path(out)
    if (target / "model.safetensors").is_file():
        return str(target)
    shutil.copytree(config_dir, target, dirs_exist_ok=True)
    BertModel(BertConfig.from_pretrained(config_dir)).save_pretrained(target)
    return str(target)


def questions(count: int) -> List[str]:
    """``count`` questions cycling through the sample questions (numbered so none repeats exactly)."""
    base = [q for q in (DATA / "questions.txt").read_text(encoding="utf-8").splitlines() if q.strip()]
    return [f"{base[i % len(base)]}" + (f" (ask {i // len(base)})" if i >= len(base) else "") for i in range(count)]


class PhaseTimer:
    """Adds up seconds between LlamaIndex start/end events of retrieval, rerank and LLM calls."""

    def __init__(self) -> None:
        from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        from llama_index.core.instrumentation.events.llm import LLMCompletionEndEvent, LLMCompletionStartEvent
        from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
        from llama_index.core.instrumentation.events.retrieval import RetrievalEndEvent, RetrievalStartEvent

        pairs = {
            RetrievalStartEvent: ("retrieval", True),
            RetrievalEndEvent: ("retrieval", False),
            ReRankStartEvent: ("rerank", True),
            ReRankEndEvent: ("rerank", False),
            LLMCompletionStartEvent: ("generation", True),
            LLMCompletionEndEvent: ("generation", False),
        }
        self.totals: Dict[str, float] = {}
        started: Dict[str, float] = {}
        timer = self

        class Handler(BaseEventHandler):
            def handle(self, event: Any, **kwargs: Any) -> None:
                entry = pairs.get(type(event))
                if entry is None:
                    return
                phase, is_start = entry
                now = time.perf_counter()
                if is_start:
                    started[phase] = now
                elif phase in started:
                    timer.totals[phase] = timer.totals.get(phase, 0.0) + now - started.pop(phase)

        self.handler = Handler()

    def take(self) -> Dict[str, float]:
        totals, self.totals = self.totals, {}
        return totals


def build_index(embed_model: Any, store: str, persist_dir: Optional[str]) -> Any:
    """The sample corpus in a Chroma collection (``store='chroma'``) or LlamaIndex's in-memory store."""
    import tempfile

    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    documents = SimpleDirectoryReader(str(DATA / "corpus")).load_data()
    # Small chunks so similarity_top_k=15 retrieves 15 distinct chunks from a 20-file corpus.
    splitter = SentenceSplitter(chunk_size=160, chunk_overlap=16)
    if store == "memory":
        return VectorStoreIndex.from_documents(documents, embed_model=embed_model, transformations=[splitter])
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    client = chromadb.PersistentClient(path=persist_dir or tempfile.mkdtemp(prefix="rag-bench-"))
    vector_store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("bench"))
    return VectorStoreIndex.from_documents(
        documents,
        storage_context=StorageContext.from_defaults(vector_store=vector_store),
        embed_model=embed_model,
        transformations=[splitter],
    )


def memory_sample(query_number: int) -> Dict[str, Any]:
    import psutil
    import torch

    sample: Dict[str, Any] = {"after_query": query_number, "rss_mib": psutil.Process().memory_info().rss / 2**20}
    if torch.cuda.is_available():
        sample["gpu_allocated_mib"] = torch.cuda.memory_allocated() / 2**20
    return sample


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Runs ``--queries`` RAG queries, prints the phase split and the memory samples, writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="LLM folder or hub id (default: offline SmolLM2)")
    parser.add_argument("--embed-model", default=None, help="embedding folder (default: bundled MiniLM)")
    parser.add_argument("--embed-config", default=None, help="folder with a BERT config + tokenizer: random weights")
    parser.add_argument("--store", choices=("chroma", "memory"), default="chroma")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--similarity-top-k", type=int, default=15)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--memory-every", type=int, default=10)
    parser.add_argument(
        "--min-new-tokens",
        type=int,
        default=0,
        help="answer at least this many tokens (random weights: a fixed length)",
    )
    parser.add_argument(
        "--fast-decode", action="store_true", help="UnslothLLM(fast_decode=True); the questions run once untimed first"
    )
    parser.add_argument("--weights", choices=("bf16", "int8", "int4"), default=None, help="fast path weights")
    parser.add_argument("--fast-decode-mode", choices=("auto", "compile", "graphs", "eager"), default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from llama_index.core.instrumentation import get_dispatcher

    from llama_unsloth import UnslothLLM
    from llama_unsloth.models import huggingface_embedding
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    on_gpu = torch.cuda.is_available()
    embed_name = args.embed_model
    if args.embed_config:
        embed_name = random_embedding_folder(args.embed_config, "/tmp/random-minilm")
    embed_model = huggingface_embedding(embed_name, device="cuda" if on_gpu else "cpu")
    # The LLM first: it makes LlamaIndex count (and split) with its tokenizer, so nothing needs tiktoken's files.
    fast: Dict[str, Any] = {}
    if args.fast_decode:
        fast = {"fast_decode": True, "weights": args.weights, "fast_decode_mode": args.fast_decode_mode}
    llm = UnslothLLM(
        model_name=args.model,
        load_in_4bit=on_gpu and not args.fast_decode,
        max_new_tokens=args.max_new_tokens,
        prompt_format="alpaca-context" if args.model else "chat",
        set_global_tokenizer=True,  # the splitter counts with it: no tiktoken download
        generate_kwargs={"min_new_tokens": args.min_new_tokens} if args.min_new_tokens else {},
        **fast,
    )
    started = time.perf_counter()
    index = build_index(embed_model, args.store, None)
    index_s = time.perf_counter() - started
    rerank = POVReranker.from_file(DATA / "povs.txt", embed_model=embed_model, query_top_n=10, top_n=5)
    engine = index.as_query_engine(
        llm=llm,
        similarity_top_k=args.similarity_top_k,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
    )
    timer = PhaseTimer()
    get_dispatcher().add_event_handler(timer.handler)

    warm_up: Dict[str, Any] = {}
    if args.fast_decode:  # each question once, untimed: the length buckets they need are compiled before timing
        began = time.perf_counter()
        for question in questions(args.queries):
            engine.query(question)
        warm_up = {"seconds": time.perf_counter() - began, **llm.fast_decode_stats()}
        timer.take()
    per_query: List[Dict[str, float]] = []
    memory: List[Dict[str, Any]] = []
    for number, question in enumerate(questions(args.queries), start=1):
        begin = time.perf_counter()
        engine.query(question)
        if on_gpu:
            torch.cuda.synchronize()
        total = time.perf_counter() - begin
        phases = timer.take()
        phases["total"] = total
        phases["other"] = total - sum(phases.get(p, 0.0) for p in ("retrieval", "rerank", "generation"))
        per_query.append(phases)
        if number == 10 or (number % args.memory_every == 0) or number == args.queries:
            memory.append(memory_sample(number))

    def split(rows: List[Dict[str, float]], label: str) -> Dict[str, Any]:
        row: Dict[str, Any] = {"queries": label}
        totals = {
            p: statistics.median(r.get(p, 0.0) for r in rows)
            for p in ("retrieval", "rerank", "other", "generation", "total")
        }
        for phase, seconds in totals.items():
            row[f"{phase}_s"] = seconds
        row["non_generation_pct"] = 100 * (totals["total"] - totals["generation"]) / totals["total"]
        return row

    rows = [split(per_query[:1], "first (cold rerank cache)")]
    if len(per_query) > 1:
        rows.append(split(per_query[1:], f"median of queries 2-{len(per_query)}"))
    result = {
        "model": llm.metadata.model_name,
        "backend": llm.backend_name,
        "embed_model": embed_name or "bundled MiniLM",
        "store": args.store,
        "index_build_s": index_s,
        "similarity_top_k": args.similarity_top_k,
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "fast_decode": {"warm_up": warm_up, "after": llm.fast_decode_stats()} if args.fast_decode else None,
        "machine": machine(),
        "phases": rows,
        "memory": memory,
    }
    print_table(rows)
    print()
    print_table(memory)
    if len(memory) >= 2:
        first, last = memory[0], memory[-1]
        for key in ("gpu_allocated_mib", "rss_mib"):
            if key in first:
                growth = 100 * (last[key] / first[key] - 1)
                result[f"{key}_growth_pct"] = growth
                print(
                    f"{key}: after query {first['after_query']} {first[key]:.1f}, after query {last['after_query']} {last[key]:.1f} ({growth:+.2f}%)"
                )
    write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
