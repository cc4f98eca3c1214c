"""Answer a list of questions with RAG (or fine-tune only), resumably, into .jsonl/.xlsx/.csv tables.

Commands:
    llama-unsloth batch --questions questions.txt --out results/answers
    llama-unsloth batch --questions questions.xlsx --model-dir out/my-model --povs povs.txt --batch-size 8
    llama-unsloth batch --questions questions.jsonl --no-rag --out results/answers_no_rag
    python -m recipes.batch --questions llama_unsloth/data/questions.txt --persist-dir chroma_db --max-new-tokens 128

Questions: .txt (one per line), .json/.jsonl (strings or objects with question/instruction), .csv/.xlsx
(question or instruction column); text files in UTF-8, UTF-16, Shift-JIS/CP932 or EUC-JP. Every answer
is appended to <out>.jsonl at once; re-running the same command resumes where a crash left off (the settings
the answers were made with are kept in <out>.settings.json: a re-run with other settings is refused, and
--fresh answers everything again instead). At the
end <out>.xlsx and <out>.csv (UTF-8 with BOM, for Excel) hold columns instruction, context, answer,
abstained, seconds, sources, error. Retrieval and reranking take the same options as `query`
(--povs, --similarity-top-k, --query-top-n, --top-n). A question too long for the model's window gets an error in its
row, and so does one that cannot be encoded or retrieved for; every other question is answered (a re-run
tries them again).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional

from recipes.options import BatchOptions, IndexOptions, ModelOptions, RetrievalOptions

EXIT_INTERRUPTED = 130


@dataclass
class BatchArguments:
    """The questions, where the answers go, and whether to retrieve."""

    questions: str = field(metadata={"help": "Questions file (.txt, .json, .jsonl, .csv, .xlsx)."})
    out: str = field(
        default="batch_output/answers", metadata={"help": "Output base: writes <out>.jsonl, <out>.xlsx, <out>.csv."}
    )
    rag: bool = field(default=True, metadata={"help": "Retrieve context (--no-rag: fine-tune only)."})

    def __post_init__(self) -> None:
        from llama_unsloth.batch import output_paths
        from llama_unsloth.validation import check_output_location

        # Before anything loads: answers generated for an output that cannot be written would be lost at the end.
        for path in output_paths(self.out).values():
            check_output_location(path, "--out")


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily
    """The recipe's options: TRL's parser over the shared option dataclasses."""
    from recipes.config import make_parser as parser_over

    return parser_over(
        (BatchArguments, IndexOptions, RetrievalOptions, ModelOptions, BatchOptions), description=__doc__
    )


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import exit_on_user_error, start

    args, index_options, retrieval, model, batch = start(make_parser, argv)
    from llama_unsloth.batch import load_questions, output_paths, read_answers_jsonl
    from llama_unsloth.interrupts import sigterm_as_keyboard_interrupt

    with exit_on_user_error():
        model.check_model()
        patterns = batch.patterns()
        questions = load_questions(args.questions)
        settings = batch.settings(model, retrieval if args.rag else None)
        batch.check_resume(args.out, settings)  # before the index and the model load
        index, postprocessors = None, []
        if args.rag:
            index, embed_model = index_options.open()
            postprocessors = retrieval.postprocessors(embed_model)
        paths = output_paths(args.out)
        try:
            with sigterm_as_keyboard_interrupt():
                records = batch.answer(
                    lambda: model.load(abstention_patterns=patterns, warm_up_batch_sizes=(batch.batch_size,)),
                    questions,
                    args.out,
                    index=index,
                    postprocessors=postprocessors,
                    similarity_top_k=retrieval.similarity_top_k,
                    settings=settings,
                )
        except KeyboardInterrupt:
            # Every answer written so far is in the JSONL (fsync per record); the rerun continues from there.
            done = len(read_answers_jsonl(paths["jsonl"]))
            print(
                f"\ninterrupted: {done} of {len(questions)} answers are saved in {paths['jsonl']}; run the same command again to answer the rest.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    abstained = sum(bool(r.get("abstained")) for r in records)
    failed = [r for r in records if r.get("error")]
    answered = len(records) - len(failed)
    note = f", {len(failed)} not answered (see the error column)" if failed else ""
    print(
        f"{answered} answers ({abstained} 'I don't know'){note}; written to {paths['jsonl']}, {paths['xlsx']}, {paths['csv']}"
    )
    for record in failed:
        question = record["instruction"]
        print(
            f"  not answered: {question[:60] + '...' if len(question) > 60 else question}: {record['error']}",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
