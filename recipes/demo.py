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

SAMPLE_QUESTION = "What limits trade inside regional trade blocs today?"


@dataclass
class DemoConfig:
    out_dir: str = field(default="demo_output", metadata={"help": "Folder for the index, answers and report."})
    max_new_tokens: int = field(default=128, metadata={"help": "Most tokens per answer (kept small for CPU).", "min": 1})
    max_seq_length: int = field(
        default=4096, metadata={"help": "Context window: 4096 lets the 5 POV-ranked ~2000-character chunks fit one prompt.", "min": 2}
    )
    batch_questions: int = field(default=4, metadata={"help": "Questions in the mini batch (the last is unanswerable).", "min": 1, "max": 12})

    def check(self) -> None:
        """Rules between options."""
        from recipes.query import check_common

        check_common(self)


def _title(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)))


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    config = parse_config(DemoConfig, argv, description=__doc__)
    began = time.perf_counter()
    import os
    from pathlib import Path

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import torch
    from llama_index.core import Settings

    from llama_unsloth import UnslothLLM, batch_answers, comparison, index_store, rag, tables
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    data = Path(__file__).resolve().parent.parent / "llama_unsloth" / "data"
    out = Path(config.out_dir)
    chroma_dir = out / "chroma"

    _title("1. Index the sample corpus")
    embed_model = index_store.make_embed_model()
    from llama_unsloth.errors import ChunkSettingsMismatchError

    try:
        index, stats = index_store.build_index(data / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    except ChunkSettingsMismatchError as err:
        # A demo index from an older version (other chunking): the demo owns it, so rebuild it.
        print(f"{err}\nRebuilding the demo index with the current chunk settings ...")
        index_store.open_collection(chroma_dir, "demo")  # checks it is a Chroma folder before deleting anything
        index_store._chroma_client(chroma_dir).delete_collection("demo")
        index, stats = index_store.build_index(data / "corpus", persist_dir=chroma_dir, collection="demo", embed_model=embed_model)
    print(stats.summary())
    print(f"Chroma index: {chroma_dir.resolve()} (collection 'demo'); run the demo again and nothing is re-embedded.")

    _title("2. Load the model (offline SmolLM2-135M-Instruct, chat layout)")
    llm = UnslothLLM(load_in_4bit=torch.cuda.is_available(), max_new_tokens=config.max_new_tokens, max_seq_length=config.max_seq_length)
    Settings.llm = llm
    print(f"{llm.metadata.model_name} via {llm.backend_name}; prompt layout {llm.format.name!r}")

    _title("3. One question, POV-reranked RAG")
    rerank = POVReranker.from_file(data / "povs.txt", embed_model=embed_model, query_top_n=10, top_n=5)
    engine = index.as_query_engine(
        llm=llm,
        similarity_top_k=15,
        node_postprocessors=[DuplicateChunkFilter(), rerank, ContextCleaner()],
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
    )
    response = engine.query(SAMPLE_QUESTION)
    print(f"Question: {SAMPLE_QUESTION}\nAnswer: {response}\nSources (query similarity = cosine to the question; POV score = L2 norm of cosines to the POVs):")
    for line in rag.format_sources(response.source_nodes):
        print("  " + line)

    _title("4. A small batch, with and without RAG")
    questions = [q for q in batch_answers.load_questions(data / "questions.txt")]
    picked = questions[: max(1, config.batch_questions - 1)] + questions[-1:]  # the last one is not in the corpus
    for stale in out.glob("batch_*"):
        stale.unlink()  # the demo answers afresh each time (batch itself resumes)
    common = dict(batch_size=4, progress=True)
    with_rag = batch_answers.run_batch(llm, picked, out / "batch_rag", index=index, postprocessors=rag.make_postprocessors(), **common)
    without = batch_answers.run_batch(llm, picked, out / "batch_no_rag", **common)
    for a, b in zip(with_rag, without):
        print(f"\nQ: {a['instruction']}\n  RAG:    {a['answer'][:300]}\n  no RAG: {b['answer'][:300]}")

    _title("5. RAG vs no RAG")
    summary, rows = comparison.compare_records(with_rag, without)
    paths = comparison.write_compare_report(summary, rows, out)
    print(tables.markdown_table(summary, comparison.SUMMARY_COLUMNS))
    print(f"\nWritten: {out / 'batch_rag.xlsx'}, {out / 'batch_no_rag.xlsx'}, {paths['md']}, {paths['xlsx']}")
    print(f"Demo finished in {time.perf_counter() - began:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
