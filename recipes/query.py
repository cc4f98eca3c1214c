"""Ask one question over a Chroma index with an Unsloth model; print the answer and its sources.

Commands:
    llama-unsloth query --question "What limits trade inside the bloc?"
    llama-unsloth query --question "..." --povs llama_unsloth/data/povs.txt
    llama-unsloth query --question "..." --model-dir out/my-model --persist-dir chroma_db --collection documents --stream
    llama-unsloth query --question "..." --model unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit --prompt-format alpaca-context

    llama-unsloth query --question "メルコスールを設立した国は？" --show-context

Without --povs: 3 chunks retrieved, duplicates dropped, markdown cleaned. With --povs: 15 retrieved,
duplicates dropped, POV-reranked (10 by query similarity -> 5 by POV score), cleaned. --show-context
prints the retrieved, cleaned context the model read. Options are checked before anything loads; a
question too long for the model's window is one error line (exit 2), not a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional

from recipes.options import IndexOptions, ModelOptions, RetrievalOptions


@dataclass
class QueryArguments:
    """The question, and how the answer is shown."""

    question: str = field(metadata={"help": "The question."})
    stream: bool = field(default=False, metadata={"help": "Print the answer as it is generated."})
    show_context: bool = field(
        default=False, metadata={"help": "Print the retrieved, cleaned context the model read."}
    )

    def __post_init__(self) -> None:
        from llama_unsloth.errors import OptionError

        if not self.question or not self.question.strip():
            raise OptionError('the question is empty: pass --question "...".')
        self.question = self.question.strip()


def make_parser():  # noqa: ANN201 - RecipeParser, imported lazily
    """The recipe's options: TRL's parser over the shared option dataclasses."""
    from recipes.config import make_parser as parser_over

    return parser_over((QueryArguments, IndexOptions, RetrievalOptions, ModelOptions), description=__doc__)


def format_context(nodes: list) -> List[str]:
    """The context as the model reads it: each retrieved (cleaned) chunk under its rank and file name."""
    from llama_unsloth.rag import source_info

    lines = []
    for rank, node in enumerate(nodes, 1):
        lines.append(f"--- [{rank}] {source_info(node)['file_name']} ---")
        lines.append(node.node.get_content().strip())
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import exit_on_user_error, start

    args, index_options, retrieval, model = start(make_parser, argv)
    from llama_unsloth.llms import check_question_fits
    from llama_unsloth.rag import collection_space, format_sources, make_query_engine

    with exit_on_user_error():
        model.check_model()
        # The embedding model is the one the collection records (or --embed-model), for retrieval and POVs alike.
        index, embed_model = index_options.open()
        postprocessors = retrieval.postprocessors(embed_model)
        llm = model.load()
        # Checked here: inside the engine an over-long question is a LlamaIndex traceback.
        check_question_fits(llm, args.question, rag=True)
        engine = make_query_engine(index, llm, postprocessors, retrieval.similarity_top_k, streaming=args.stream)
        response = engine.query(args.question)
        print(f"Question: {args.question}\nAnswer: ", end="", flush=True)
        if args.stream:
            for delta in response.response_gen:
                print(delta, end="", flush=True)
            print()
        else:
            print(str(response))
    print("Sources:")
    for line in format_sources(response.source_nodes, collection_space(index)):
        print("  " + line)
    if args.show_context:
        print(f"Context ({len(response.source_nodes)} chunks, cleaned, as the model read it):")
        for line in format_context(response.source_nodes):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
