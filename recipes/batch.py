"""Answer a list of questions with RAG (or fine-tune only), resumably, into .jsonl/.xlsx/.csv tables.

Commands:
    llama-unsloth batch --questions questions.txt --out results/answers
    llama-unsloth batch --questions questions.xlsx --model-dir out/my-model --povs povs.txt --batch-size 8
    llama-unsloth batch --questions questions.jsonl --no-rag --out results/answers_no_rag
    python -m recipes.batch --questions llama_unsloth/data/questions.txt --persist-dir chroma_db --max-new-tokens 128

Questions: .txt (one per line), .json/.jsonl (strings or objects with question/instruction), .csv/.xlsx
(question or instruction column); text files in UTF-8, UTF-16, Shift-JIS/CP932 or EUC-JP. Every answer
is appended to <out>.jsonl at once; re-running the same command resumes where a crash left off. At the
end <out>.xlsx and <out>.csv (UTF-8 with BOM, for Excel) hold columns instruction, context, answer,
abstained, seconds, sources, error. A question too long for the model's window gets an error in its
row; every other question is answered (a re-run tries it again).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class BatchConfig:
    questions: str = field(metadata={"help": "Questions file (.txt, .json, .jsonl, .csv, .xlsx)."})
    out: str = field(default="batch_output/answers", metadata={"help": "Output base: writes <out>.jsonl, <out>.xlsx, <out>.csv."})
    rag: bool = field(default=True, metadata={"help": "Retrieve context (--no-rag: fine-tune only)."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder written by `llama-unsloth index`."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    chroma_host: Optional[str] = field(
        default=None,
        metadata={"help": "Host of a Chroma server (`chroma run`) to use instead of --persist-dir; default: $LLAMA_UNSLOTH_CHROMA_HOST."},
    )
    chroma_port: Optional[int] = field(
        default=None, metadata={"help": "Port of that Chroma server; default: $LLAMA_UNSLOTH_CHROMA_PORT or 8000.", "min": 1, "max": 65535}
    )
    povs: Optional[str] = field(default=None, metadata={"help": "POV file: enables POV reranking (15 -> 10 -> 5)."})
    similarity_top_k: Optional[int] = field(default=None, metadata={"help": "Chunks retrieved (default 15 with --povs, else 3).", "min": 1})
    embed_model: Optional[str] = field(default=None, metadata={"help": "Embedding model; default: the one the index records."})
    model_dir: Optional[str] = field(default=None, metadata={"help": "Fine-tuned model folder (its prompt layout comes with it)."})
    model: Optional[str] = field(default=None, metadata={"help": "Model name or folder; default: offline SmolLM2-135M-Instruct."})
    llm_url: Optional[str] = field(
        default=None, metadata={"help": "OpenAI-compatible server that serves the model (e.g. vllm serve ... --port 8001: http://127.0.0.1:8001/v1); default: in-process."}
    )
    served_model: Optional[str] = field(default=None, metadata={"help": "Model name the server serves (vllm serve --served-model-name); default: the --model-dir path."})
    prompt_format: Optional[str] = field(default=None, metadata={"help": "Override the prompt layout."})
    prompt_fields: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Roles of a Python format template's positional {} placeholders, in order (e.g. instruction input context)."},
    )
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens per answer.", "min": 1})
    max_seq_length: int = field(default=2048, metadata={"help": "Context window (prompt + answer).", "min": 2})
    load_in_4bit: Optional[bool] = field(default=None, metadata={"help": "4-bit weights (default: only where CUDA is available)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (lower it if memory runs out).", "min": 1})
    workers: int = field(
        default=1, metadata={"help": "Questions answered at once, for a model server (--llm-url); each is recorded exactly once.", "min": 1, "max": 256}
    )
    abstention_patterns: Optional[str] = field(
        default=None, metadata={"help": "File of extra 'I don't know' regexes, one per line (added to the English/Japanese defaults)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def check(self) -> None:
        """Rules between options."""
        from recipes.config import check_model_option
        from recipes.query import check_common

        check_common(self)
        if not self.model_dir:
            check_model_option(self.model)


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    from recipes.query import layout_of

    config = parse_config(BatchConfig, argv, description=__doc__)
    from llama_unsloth import batch_answers, errors, index_store, rag

    try:
        from llama_unsloth.abstention import load_patterns

        patterns = load_patterns(config.abstention_patterns) if config.abstention_patterns else None
        questions = batch_answers.load_questions(config.questions)
        index, postprocessors = None, []
        if config.rag:
            # A name or folder; loaded with the backend the collection records (None: the recorded model).
            index = index_store.open_index(index_store.chroma_location(config.persist_dir, config.chroma_host, config.chroma_port), config.collection, embed_model=config.embed_model)
            postprocessors = rag.make_postprocessors(index._embed_model, povs_file=config.povs)
        if config.batch_size < 1:
            raise errors.RagError(f"--batch-size must be at least 1, got {config.batch_size}.")
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def load():
        return rag.load_llm(
            config.model,
            config.model_dir,
            load_in_4bit=config.load_in_4bit,
            prompt_format=layout_of(config),
            max_new_tokens=config.max_new_tokens,
            max_seq_length=config.max_seq_length,
            abstention_patterns=patterns,
            llm_url=config.llm_url,
            served_model=config.served_model,
        )

    from llama_unsloth.interrupts import sigterm_as_keyboard_interrupt

    paths = batch_answers.output_paths(config.out)
    try:
        with sigterm_as_keyboard_interrupt():
            records = batch_answers.run_batch(
                load, questions, config.out, index=index, postprocessors=postprocessors,
                similarity_top_k=config.similarity_top_k, batch_size=config.batch_size, progress=config.progress,
                workers=config.workers,
            )
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every answer written so far is in the JSONL (fsync per record); the rerun continues from there.
        done = len(batch_answers.read_answers_jsonl(paths["jsonl"]))
        print(f"\ninterrupted: {done} of {len(questions)} answers are saved in {paths['jsonl']}; run the same command again to answer the rest.", file=sys.stderr)
        return 130
    abstained = sum(bool(r.get("abstained")) for r in records)
    failed = [r for r in records if r.get("error")]
    answered = len(records) - len(failed)
    note = f", {len(failed)} not answered (see the error column)" if failed else ""
    print(f"{answered} answers ({abstained} 'I don't know'){note}; written to {paths['jsonl']}, {paths['xlsx']}, {paths['csv']}")
    for record in failed:
        question = record["instruction"]
        print(f"  not answered: {question[:60] + '...' if len(question) > 60 else question}: {record['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
