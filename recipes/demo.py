"""The whole story offline in a few minutes: index, POV-reranked RAG answer, batch, RAG vs no RAG.

Commands:
    make demo
    python -m recipes.demo
    python -m recipes.demo --out-dir demo_output --max-new-tokens 128

Uses the offline defaults (SmolLM2-135M-Instruct, bundled MiniLM) and the sample data in
llama_unsloth/data/. Everything it writes goes to --out-dir (default demo_output/).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from llama_unsloth.validation import check_range

SAMPLE_QUESTION = "What limits trade inside regional trade blocs today?"


@dataclass
class DemoArguments:
    """The demo's options (the generation ones are the shared --max-new-tokens/--max-seq-length rules)."""

    out_dir: str = field(default="demo_output", metadata={"help": "Folder for the index, answers and report."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens per answer (kept small for CPU)."})
    max_seq_length: int = field(
        default=4096,
        metadata={"help": "Context window: 4096 lets the 5 POV-ranked ~2000-character chunks fit one prompt."},
    )
    batch_questions: int = field(
        default=4, metadata={"help": "Questions in the mini batch (the last is unanswerable)."}
    )

    def __post_init__(self) -> None:
        from recipes.options import ModelOptions

        ModelOptions(
            max_new_tokens=self.max_new_tokens, max_seq_length=self.max_seq_length
        )  # the same checks as query's
        check_range("batch_questions", self.batch_questions, min=1, max=12)


def _title(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


DATA = Path(__file__).resolve().parent.parent / "llama_unsloth" / "data"


def _index(out: Path) -> Tuple[Any, Any]:
    """Step 1: the sample corpus into a Chroma folder under ``out`` (nothing re-embedded on a second run)."""
    from llama_unsloth.errors import ChunkSettingsMismatchError
    from llama_unsloth.rag import build_index, delete_collection, make_embed_model

    _title("1. Index the sample corpus")
    chroma_dir = out / "chroma"
    embed_model = make_embed_model()
    try:
        index, stats = build_index(DATA / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    except ChunkSettingsMismatchError as err:
        # A demo index from an older version (other chunking): the demo owns it, so rebuild it.
        print(f"{err}\nRebuilding the demo index with the current chunk settings ...")
        delete_collection(chroma_dir, "demo")
        index, stats = build_index(DATA / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    print(stats.summary())
    print(f"Chroma index: {chroma_dir.resolve()} (collection 'demo'); run the demo again and nothing is re-embedded.")
    return index, embed_model


def _load(config: DemoArguments) -> Any:
    """Step 2: the offline default model, set as LlamaIndex's LLM."""
    import torch
    from llama_index.core import Settings

    from llama_unsloth import UnslothLLM

    _title("2. Load the model (offline SmolLM2-135M-Instruct, chat layout)")
    llm = UnslothLLM(
        load_in_4bit=torch.cuda.is_available(),
        max_new_tokens=config.max_new_tokens,
        max_seq_length=config.max_seq_length,
    )
    Settings.llm = llm
    print(f"{llm.metadata.model_name} via {llm.backend_name}; prompt layout {llm.format.name!r}")
    return llm


def _ask(index: Any, embed_model: Any, llm: Any) -> None:
    """Step 3: one question through a query engine with POV reranking, with its sources."""
    from llama_unsloth import defaults
    from llama_unsloth.rag import format_sources
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    _title("3. One question, POV-reranked RAG")
    rerank = POVReranker.from_file(
        DATA / "povs.txt", embed_model=embed_model, query_top_n=defaults.QUERY_TOP_N, top_n=defaults.POV_TOP_N
    )
    engine = index.as_query_engine(
        llm=llm,
        similarity_top_k=defaults.POV_TOP_K,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
    )
    response = engine.query(SAMPLE_QUESTION)
    print(
        f"Question: {SAMPLE_QUESTION}\nAnswer: {response}\nSources (query similarity = cosine to the question; POV score = L2 norm of cosines to the POVs):"
    )
    for line in format_sources(response.source_nodes):
        print("  " + line)


def _batch_and_compare(config: DemoArguments, index: Any, llm: Any, out: Path) -> None:
    """Steps 4 and 5: a few questions with and without RAG, answered in batches, then compared."""
    from llama_unsloth.batch import (
        SUMMARY_COLUMNS,
        compare_records,
        load_questions,
        markdown_table,
        run_batch,
        write_compare_report,
    )
    from llama_unsloth.rag import make_postprocessors

    _title("4. A small batch, with and without RAG")
    questions = list(load_questions(DATA / "questions.txt"))
    picked = questions[: max(1, config.batch_questions - 1)] + questions[-1:]  # the last one is not in the corpus
    for stale in out.glob("batch_*"):
        stale.unlink()  # the demo answers afresh each time (batch itself resumes)
    postprocessors = make_postprocessors()
    with_rag = run_batch(
        llm, picked, out / "batch_rag", index=index, postprocessors=postprocessors, batch_size=4, progress=True
    )
    without = run_batch(llm, picked, out / "batch_no_rag", batch_size=4, progress=True)
    for a, b in zip(with_rag, without):
        print(f"\nQ: {a['instruction']}\n  RAG:    {a['answer'][:300]}\n  no RAG: {b['answer'][:300]}")

    _title("5. RAG vs no RAG")
    summary, rows = compare_records(with_rag, without)
    paths = write_compare_report(summary, rows, out)
    print(markdown_table(summary, SUMMARY_COLUMNS))
    print(f"\nWritten: {out / 'batch_rag.xlsx'}, {out / 'batch_no_rag.xlsx'}, {paths['md']}, {paths['xlsx']}")


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import make_parser, parse

    (config,) = parse(make_parser((DemoArguments,), description=__doc__), argv)
    began = time.perf_counter()
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    out = Path(config.out_dir)
    index, embed_model = _index(out)
    llm = _load(config)
    _ask(index, embed_model, llm)
    _batch_and_compare(config, index, llm, out)
    print(f"Demo finished in {time.perf_counter() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
