"""The whole story offline in a few minutes: index, POV-reranked RAG answer, batch, RAG vs no RAG.

Commands:
    make demo
    python -m recipes.demo
    python -m recipes.demo --out-dir demo_output --max-new-tokens 128

Uses the offline defaults (SmolLM2-135M-Instruct, bundled MiniLM) and the sample data in
llama_unsloth/data/. Everything it writes goes to --out-dir (default demo_output/).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

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


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import make_parser, parse

    (config,) = parse(make_parser((DemoArguments,), description=__doc__), argv)
    began = time.perf_counter()
    import os
    from pathlib import Path

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import torch
    from llama_index.core import Settings

    from llama_unsloth import UnslothLLM, defaults
    from llama_unsloth.batch import (
        SUMMARY_COLUMNS,
        compare_records,
        load_questions,
        markdown_table,
        run_batch,
        write_compare_report,
    )
    from llama_unsloth.rag import build_index, delete_collection, format_sources, make_embed_model, make_postprocessors
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    data = Path(__file__).resolve().parent.parent / "llama_unsloth" / "data"
    out = Path(config.out_dir)
    chroma_dir = out / "chroma"

    _title("1. Index the sample corpus")
    embed_model = make_embed_model()
    from llama_unsloth.errors import ChunkSettingsMismatchError

    try:
        index, stats = build_index(data / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    except ChunkSettingsMismatchError as err:
        # A demo index from an older version (other chunking): the demo owns it, so rebuild it.
        print(f"{err}\nRebuilding the demo index with the current chunk settings ...")
        delete_collection(chroma_dir, "demo")
        index, stats = build_index(data / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    print(stats.summary())
    print(f"Chroma index: {chroma_dir.resolve()} (collection 'demo'); run the demo again and nothing is re-embedded.")

    _title("2. Load the model (offline SmolLM2-135M-Instruct, chat layout)")
    llm = UnslothLLM(
        load_in_4bit=torch.cuda.is_available(),
        max_new_tokens=config.max_new_tokens,
        max_seq_length=config.max_seq_length,
    )
    Settings.llm = llm
    print(f"{llm.metadata.model_name} via {llm.backend_name}; prompt layout {llm.format.name!r}")

    _title("3. One question, POV-reranked RAG")
    rerank = POVReranker.from_file(
        data / "povs.txt", embed_model=embed_model, query_top_n=defaults.QUERY_TOP_N, top_n=defaults.POV_TOP_N
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

    _title("4. A small batch, with and without RAG")
    questions = list(load_questions(data / "questions.txt"))
    picked = questions[: max(1, config.batch_questions - 1)] + questions[-1:]  # the last one is not in the corpus
    for stale in out.glob("batch_*"):
        stale.unlink()  # the demo answers afresh each time (batch itself resumes)
    with_rag = run_batch(
        llm,
        picked,
        out / "batch_rag",
        index=index,
        postprocessors=make_postprocessors(),
        batch_size=4,
        progress=True,
    )
    without = run_batch(llm, picked, out / "batch_no_rag", batch_size=4, progress=True)
    for a, b in zip(with_rag, without):
        print(f"\nQ: {a['instruction']}\n  RAG:    {a['answer'][:300]}\n  no RAG: {b['answer'][:300]}")

    _title("5. RAG vs no RAG")
    summary, rows = compare_records(with_rag, without)
    paths = write_compare_report(summary, rows, out)
    print(markdown_table(summary, SUMMARY_COLUMNS))
    print(f"\nWritten: {out / 'batch_rag.xlsx'}, {out / 'batch_no_rag.xlsx'}, {paths['md']}, {paths['xlsx']}")
    print(f"Demo finished in {time.perf_counter() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
