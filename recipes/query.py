"""Ask one question over a Chroma index with an Unsloth model; print the answer and its sources.

Commands:
    llama-unsloth query --question "What limits trade inside the bloc?"
    llama-unsloth query --question "..." --povs llama_unsloth/data/povs.txt
    llama-unsloth query --question "..." --model-dir out/my-model --persist-dir chroma_db --collection documents --stream
    llama-unsloth query --question "..." --model unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit --prompt-format alpaca-context

    llama-unsloth query --question "メルコスールを設立した国は？" --show-context

Without --povs: 3 chunks retrieved, duplicates dropped, markdown cleaned. With --povs: 15 retrieved,
duplicates dropped, POV-reranked (10 by query similarity -> 5 by POV score), cleaned. --show-context
prints the retrieved, cleaned context the model read. Numbers are checked before anything loads; a
question too long for the model's window is one error line (exit 2), not a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class QueryConfig:
    question: str = field(metadata={"help": "The question."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder written by `llama-unsloth index`."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    chroma_host: Optional[str] = field(
        default=None,
        metadata={"help": "Host of a Chroma server (`chroma run`) to use instead of --persist-dir; default: $LLAMA_UNSLOTH_CHROMA_HOST."},
    )
    chroma_port: Optional[int] = field(
        default=None, metadata={"help": "Port of that Chroma server; default: $LLAMA_UNSLOTH_CHROMA_PORT or 8000.", "min": 1, "max": 65535}
    )
    model_dir: Optional[str] = field(default=None, metadata={"help": "Fine-tuned model folder (its prompt layout comes with it)."})
    model: Optional[str] = field(default=None, metadata={"help": "Model name or folder; default: offline SmolLM2-135M-Instruct."})
    llm_url: Optional[str] = field(
        default=None, metadata={"help": "OpenAI-compatible server that serves the model (e.g. vllm serve ... --port 8001: http://127.0.0.1:8001/v1); default: in-process."}
    )
    served_model: Optional[str] = field(default=None, metadata={"help": "Model name the server serves (vllm serve --served-model-name); default: the --model-dir path."})
    prompt_format: Optional[str] = field(default=None, metadata={"help": "Override the prompt layout (chat, alpaca-context, a .j2 file ...)."})
    prompt_fields: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Roles of a Python format template's positional {} placeholders, in order (e.g. instruction input context)."},
    )
    povs: Optional[str] = field(default=None, metadata={"help": "POV file (one viewpoint per line): enables POV reranking."})
    similarity_top_k: Optional[int] = field(default=None, metadata={"help": "Chunks retrieved (default 15 with --povs, else 3).", "min": 1})
    query_top_n: int = field(default=10, metadata={"help": "Chunks kept by query similarity before POV scoring.", "min": 1})
    top_n: int = field(default=5, metadata={"help": "Chunks kept after POV scoring (at most --query-top-n).", "min": 1})
    embed_model: Optional[str] = field(default=None, metadata={"help": "Embedding model; default: the one the index records."})
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens in the answer.", "min": 1})
    max_seq_length: int = field(default=2048, metadata={"help": "Context window (prompt + answer).", "min": 2})
    load_in_4bit: Optional[bool] = field(default=None, metadata={"help": "4-bit weights (default: only where CUDA is available)."})
    stream: bool = field(default=False, metadata={"help": "Print the answer as it is generated."})
    show_context: bool = field(default=False, metadata={"help": "Print the retrieved, cleaned context the model read."})

    def check(self) -> None:
        """Rules between options."""
        from recipes.config import OptionError, check_model_option

        check_common(self)
        if not self.model_dir:
            check_model_option(self.model)
        if self.top_n > self.query_top_n:
            raise OptionError(f"--top-n ({self.top_n}) must not exceed --query-top-n ({self.query_top_n}): POV scoring keeps a subset of the query-ranked chunks.")


def check_common(config: object) -> None:
    """Rules the query, batch and compare recipes share: the answer must fit the window; a layout name must exist."""
    from recipes.config import OptionError

    new, window = getattr(config, "max_new_tokens", None), getattr(config, "max_seq_length", None)
    if new is not None and window is not None and new >= window:
        raise OptionError(f"--max-new-tokens ({new}) must be below --max-seq-length ({window}): the prompt needs room too.")
    if getattr(config, "prompt_format", None):
        layout_of(config)


def layout_of(config: object) -> Any:
    """The ``PromptFormat`` that ``--prompt-format`` (and ``--prompt-fields``) name, or None to use the model's own.

    Raises:
        OptionError: The name is not a layout, or a template file cannot be read as one.
    """
    from recipes.config import OptionError

    layout = getattr(config, "prompt_format", None)
    if not layout:
        return None
    from pathlib import Path

    from llama_unsloth.prompts import PromptFormat, PromptFormatError

    try:
        return PromptFormat.get(str(Path(layout).expanduser()) if Path(layout).expanduser().exists() else layout,
                                fields=getattr(config, "prompt_fields", None))
    except (PromptFormatError, FileNotFoundError, UnicodeDecodeError) as err:
        raise OptionError(f"--prompt-format: {err}") from err


def format_context(nodes: list) -> List[str]:
    """The context as the model reads it: each retrieved (cleaned) chunk under its rank and file name."""
    from llama_unsloth import rag

    lines = []
    for rank, node in enumerate(nodes, 1):
        lines.append(f"--- [{rank}] {rag.source_info(node)['file_name']} ---")
        lines.append(node.node.get_content().strip())
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    from recipes.config import parse_config

    config = parse_config(QueryConfig, argv, description=__doc__)
    if not config.question or not config.question.strip():
        print("error: the question is empty: pass --question \"...\".", file=sys.stderr)
        return 2
    from pathlib import Path

    if config.povs and not Path(config.povs).is_file():
        print(f"error: POV file {config.povs!r} not found. Pass a text file with one viewpoint per line.", file=sys.stderr)
        return 2
    from llama_unsloth import batch_answers, errors, index_store, rag

    try:
        # A name or folder; loaded with the backend the collection records (None: the recorded model).
        index = index_store.open_index(index_store.chroma_location(config.persist_dir, config.chroma_host, config.chroma_port), config.collection, embed_model=config.embed_model)
        postprocessors = rag.make_postprocessors(
            index._embed_model, povs_file=config.povs, query_top_n=config.query_top_n, top_n=config.top_n
        )
        llm = rag.load_llm(
            config.model,
            config.model_dir,
            load_in_4bit=config.load_in_4bit,
            prompt_format=layout_of(config),
            max_new_tokens=config.max_new_tokens,
            max_seq_length=config.max_seq_length,
            llm_url=config.llm_url,
            served_model=config.served_model,
        )
        # Checked here: inside the engine an over-long question is a LlamaIndex traceback.
        batch_answers.check_question_fits(llm, config.question.strip(), rag=True)
        engine = rag.make_query_engine(index, llm, postprocessors, config.similarity_top_k, streaming=config.stream)
        response = engine.query(config.question.strip())
        print(f"Question: {config.question.strip()}\nAnswer: ", end="", flush=True)
        if config.stream:
            for delta in response.response_gen:
                print(delta, end="", flush=True)
            print()
        else:
            print(str(response))
    except errors.user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("Sources:")
    for line in rag.format_sources(response.source_nodes, index_store.collection_space(index)):
        print("  " + line)
    if config.show_context:
        print(f"Context ({len(response.source_nodes)} chunks, cleaned, as the model read it):")
        for line in format_context(response.source_nodes):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
