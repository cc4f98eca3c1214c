"""Compare answers with and without RAG: abstention rate, answer length, use of retrieved text.

Commands:
    llama-unsloth compare --questions questions.txt --out-dir compare_output
    llama-unsloth compare --questions questions.xlsx --model-dir out/my-model --povs povs.txt --batch-size 8
    llama-unsloth compare --rag-jsonl results/answers.jsonl --no-rag-jsonl results/answers_no_rag.jsonl
    python -m recipes.compare --questions llama_unsloth/data/questions.txt --max-new-tokens 128

With --questions the batch machinery answers each question twice (into <out-dir>/rag.jsonl and
<out-dir>/no_rag.jsonl, resumable); with --rag-jsonl/--no-rag-jsonl existing batch outputs are compared
without loading a model. Writes <out-dir>/compare.xlsx and <out-dir>/compare.md and prints the summary.
An answer "uses retrieved text" when >= 20% of its word 4-grams occur in the context RAG retrieved.
Japanese (CJK) text counts one word per character, so length and overlap work for it too; "I don't know"
replies are recognised in English and Japanese (add your own with --abstention-patterns).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class CompareConfig:
    questions: Optional[str] = field(default=None, metadata={"help": "Questions file (.txt, .json, .jsonl, .csv, .xlsx)."})
    out_dir: str = field(default="compare_output", metadata={"help": "Folder for rag/no_rag answers and the report."})
    rag_jsonl: Optional[str] = field(default=None, metadata={"help": "Existing RAG answers (.jsonl from batch) instead of answering."})
    no_rag_jsonl: Optional[str] = field(default=None, metadata={"help": "Existing no-RAG answers (.jsonl from batch --no-rag)."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder written by `llama-unsloth index`."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    chroma_host: Optional[str] = field(
        default=None,
        metadata={"help": "Host of a Chroma server (`chroma run`) to use instead of --persist-dir; default: $LLAMA_UNSLOTH_CHROMA_HOST."},
    )
    chroma_port: Optional[int] = field(
        default=None, metadata={"help": "Port of that Chroma server; default: $LLAMA_UNSLOTH_CHROMA_PORT or 8000.", "min": 1, "max": 65535}
    )
    povs: Optional[str] = field(default=None, metadata={"help": "POV file: enables POV reranking for the RAG run."})
    embed_model: Optional[str] = field(default=None, metadata={"help": "Embedding model; default: the one the index records."})
    model_dir: Optional[str] = field(default=None, metadata={"help": "Fine-tuned model folder."})
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
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call.", "min": 1})
    abstention_patterns: Optional[str] = field(
        default=None,
        metadata={"help": "File of extra 'I don't know' regexes, one per line; abstention is then re-judged with the defaults plus these."},
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def check(self) -> None:
        """Rules between options."""
        from recipes.config import check_model_option
        from recipes.query import check_common

        check_common(self)
        if self.questions and not self.model_dir:  # only answering loads a model
            check_model_option(self.model)


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    from recipes.query import layout_of

    config = parse_config(CompareConfig, argv, description=__doc__)
    from pathlib import Path

    from llama_unsloth import batch_answers, comparison, errors, index_store, rag, tables

    out_dir = Path(config.out_dir)
    patterns = None
    try:
        if config.abstention_patterns:
            from llama_unsloth.abstention import load_patterns

            patterns = load_patterns(config.abstention_patterns)
        if config.rag_jsonl or config.no_rag_jsonl:
            if not (config.rag_jsonl and config.no_rag_jsonl):
                raise errors.RagError("Pass both --rag-jsonl and --no-rag-jsonl (or --questions to answer them now).")
            for path in (config.rag_jsonl, config.no_rag_jsonl):
                if not Path(path).is_file():
                    raise errors.RagError(f"Answers file {path!r} not found: run `llama-unsloth batch` first.")
            with_rag, without = batch_answers.read_answers_jsonl(config.rag_jsonl), batch_answers.read_answers_jsonl(config.no_rag_jsonl)
            if not with_rag or not without:
                raise errors.RagError("An answers file holds no complete answers.")
        elif config.questions:
            questions = batch_answers.load_questions(config.questions)
            index = index_store.open_index(index_store.chroma_location(config.persist_dir, config.chroma_host, config.chroma_port), config.collection, embed_model=config.embed_model)
            postprocessors = rag.make_postprocessors(index._embed_model, povs_file=config.povs)
            cache: dict = {}

            def load():
                if "llm" not in cache:
                    cache["llm"] = rag.load_llm(
                        config.model, config.model_dir, load_in_4bit=config.load_in_4bit,
                        prompt_format=layout_of(config), max_new_tokens=config.max_new_tokens,
                        max_seq_length=config.max_seq_length, abstention_patterns=patterns,
                        llm_url=config.llm_url, served_model=config.served_model,
                    )
                return cache["llm"]

            common = dict(batch_size=config.batch_size, progress=config.progress)
            with_rag = batch_answers.run_batch(load, questions, out_dir / "rag", index=index, postprocessors=postprocessors, **common)
            without = batch_answers.run_batch(load, questions, out_dir / "no_rag", **common)
        else:
            raise errors.RagError("Pass --questions <file>, or --rag-jsonl and --no-rag-jsonl.")
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary, rows = comparison.compare_records(with_rag, without, abstention_patterns=patterns)
    paths = comparison.write_compare_report(summary, rows, out_dir)
    print(tables.markdown_table(summary, comparison.SUMMARY_COLUMNS))
    print(f"Report: {paths['md']} and {paths['xlsx']} ({len(rows)} questions side by side)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
