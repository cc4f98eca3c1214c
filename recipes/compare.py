"""Compare answers with and without RAG: abstention rate, answer length, use of retrieved text.

Commands:
    llama-unsloth compare --questions questions.txt --out-dir compare_output
    llama-unsloth compare --questions questions.xlsx --model-dir out/my-model --povs povs.txt --batch-size 8
    llama-unsloth compare --rag-jsonl results/answers.jsonl --no-rag-jsonl results/answers_no_rag.jsonl
    python -m recipes.compare --questions llama_unsloth/data/questions.txt --max-new-tokens 128

With --questions the batch machinery answers each question twice (into <out-dir>/rag.jsonl and
<out-dir>/no_rag.jsonl, resumable; a re-run with other settings is refused, --fresh answers again); with --rag-jsonl/--no-rag-jsonl existing batch outputs are compared
without loading a model. Writes <out-dir>/compare.xlsx and <out-dir>/compare.md and prints the summary.
An answer "uses retrieved text" when >= 20% of its word 4-grams occur in the context RAG retrieved.
Japanese (CJK) text counts one word per character, so length and overlap work for it too; "I don't know"
replies are recognised in English and Japanese (add your own with --abstention-patterns).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional

from recipes.options import BatchOptions, IndexOptions, ModelOptions, RetrievalOptions


@dataclass
class CompareArguments:
    """The questions to answer twice, or two answer files to compare."""

    questions: Optional[str] = field(
        default=None, metadata={"help": "Questions file (.txt, .json, .jsonl, .csv, .xlsx)."}
    )
    out_dir: str = field(default="compare_output", metadata={"help": "Folder for rag/no_rag answers and the report."})
    rag_jsonl: Optional[str] = field(
        default=None, metadata={"help": "Existing RAG answers (.jsonl from batch) instead of answering."}
    )
    no_rag_jsonl: Optional[str] = field(
        default=None, metadata={"help": "Existing no-RAG answers (.jsonl from batch --no-rag)."}
    )

    def __post_init__(self) -> None:
        from llama_unsloth.validation import check_output_location

        # Before anything loads: answers and a report for a folder that cannot be written would be lost at the end.
        check_output_location(self.out_dir, "--out-dir", folder=True)


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily
    """The recipe's options: TRL's parser over the shared option dataclasses."""
    from recipes.config import make_parser as parser_over

    return parser_over(
        (CompareArguments, IndexOptions, RetrievalOptions, ModelOptions, BatchOptions), description=__doc__
    )


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import exit_on_user_error, start

    args, index_options, retrieval, model, batch = start(make_parser, argv)
    from pathlib import Path

    from llama_unsloth import errors
    from llama_unsloth.batch import (
        SUMMARY_COLUMNS,
        compare_records,
        load_questions,
        markdown_table,
        read_answers_jsonl,
        write_compare_report,
    )

    out_dir = Path(args.out_dir)
    with exit_on_user_error():
        patterns = batch.patterns()
        if args.rag_jsonl or args.no_rag_jsonl:
            if not (args.rag_jsonl and args.no_rag_jsonl):
                raise errors.RagError("Pass both --rag-jsonl and --no-rag-jsonl (or --questions to answer them now).")
            for path in (args.rag_jsonl, args.no_rag_jsonl):
                if not Path(path).is_file():
                    raise errors.RagError(f"Answers file {path!r} not found: run `llama-unsloth batch` first.")
            with_rag, without = (
                read_answers_jsonl(args.rag_jsonl),
                read_answers_jsonl(args.no_rag_jsonl),
            )
            for path, records in ((args.rag_jsonl, with_rag), (args.no_rag_jsonl, without)):
                if not records:
                    raise errors.RagError(
                        f"Answers file {path} holds no complete answers: run `llama-unsloth batch` again."
                    )
            _check_common_questions(with_rag, without, args.rag_jsonl, args.no_rag_jsonl)
        elif args.questions:
            model.check_model()  # only answering loads a model
            questions = load_questions(args.questions)
            settings = {
                mode: batch.settings(model, retrieval if mode == "rag" else None) for mode in ("rag", "no_rag")
            }
            for mode, known in settings.items():  # before the index and the model load
                batch.check_resume(out_dir / mode, known)
            index, embed_model = index_options.open()
            postprocessors = retrieval.postprocessors(embed_model)
            cache: dict = {}

            def load():  # noqa: ANN202 - one model for both runs
                if "llm" not in cache:
                    cache["llm"] = model.load(abstention_patterns=patterns, warm_up_batch_sizes=(batch.batch_size,))
                return cache["llm"]

            with_rag = batch.answer(
                load,
                questions,
                out_dir / "rag",
                index=index,
                postprocessors=postprocessors,
                similarity_top_k=retrieval.similarity_top_k,
                settings=settings["rag"],
            )
            without = batch.answer(load, questions, out_dir / "no_rag", settings=settings["no_rag"])
        else:
            raise errors.RagError("Pass --questions <file>, or --rag-jsonl and --no-rag-jsonl.")
    summary, rows = compare_records(with_rag, without, abstention_patterns=patterns)
    paths = write_compare_report(summary, rows, out_dir)
    print(markdown_table(summary, SUMMARY_COLUMNS))
    print(f"Report: {paths['md']} and {paths['xlsx']} ({len(rows)} questions side by side)")
    return 0


def _check_common_questions(with_rag: list, without: list, rag_name: str, plain_name: str) -> None:
    """Refuses two answer files that share no question: a summary of them would compare nothing with nothing."""
    from llama_unsloth.errors import RagError

    answered = {r["instruction"] for r in with_rag if not r.get("error")}
    if not answered & {r["instruction"] for r in without if not r.get("error")}:
        raise RagError(
            f"{rag_name} and {plain_name} answer no question in common: pass the outputs of two runs over the same "
            "questions file (batch, then batch --no-rag)."
        )


if __name__ == "__main__":
    sys.exit(main())
