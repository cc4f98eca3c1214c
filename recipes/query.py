"""Ask one question over a Chroma index with an Unsloth model; print the answer and its sources.

Commands:
    llama-unsloth query --question "What limits trade inside the bloc?"
    llama-unsloth query --question "..." --povs llama_unsloth/data/povs.txt
    llama-unsloth query --question "..." --model-dir out/my-model --persist-dir chroma_db --collection documents --stream
    llama-unsloth query --question "..." --model unsloth/Mistral-Nemo-Instruct-2407-bnb-4bit --prompt-format alpaca-context

Without --povs: 3 chunks retrieved, duplicates dropped, markdown cleaned. With --povs: 15 retrieved,
duplicates dropped, POV-reranked (10 by query similarity -> 5 by POV score), cleaned.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class QueryConfig:
    question: str = field(metadata={"help": "The question."})
    persist_dir: str = field(default="chroma_db", metadata={"help": "Chroma folder written by `llama-unsloth index`."})
    collection: str = field(default="documents", metadata={"help": "Chroma collection name."})
    model_dir: Optional[str] = field(default=None, metadata={"help": "Fine-tuned model folder (its prompt layout comes with it)."})
    model: Optional[str] = field(default=None, metadata={"help": "Model name or folder; default: offline SmolLM2-135M-Instruct."})
    prompt_format: Optional[str] = field(default=None, metadata={"help": "Override the prompt layout (chat, alpaca-context, a .j2 file ...)."})
    povs: Optional[str] = field(default=None, metadata={"help": "POV file (one viewpoint per line): enables POV reranking."})
    similarity_top_k: Optional[int] = field(default=None, metadata={"help": "Chunks retrieved (default 15 with --povs, else 3)."})
    query_top_n: int = field(default=10, metadata={"help": "Chunks kept by query similarity before POV scoring."})
    top_n: int = field(default=5, metadata={"help": "Chunks kept after POV scoring."})
    embed_model: Optional[str] = field(default=None, metadata={"help": "Embedding model; default: the one the index records."})
    max_new_tokens: int = field(default=512, metadata={"help": "Most tokens in the answer."})
    max_seq_length: int = field(default=2048, metadata={"help": "Context window (prompt + answer)."})
    load_in_4bit: Optional[bool] = field(default=None, metadata={"help": "4-bit weights (default: only where CUDA is available)."})
    stream: bool = field(default=False, metadata={"help": "Print the answer as it is generated."})


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
    from llama_unsloth import errors, index_store, rag

    try:
        embed_model = index_store.make_embed_model("huggingface", config.embed_model) if config.embed_model else None
        index = index_store.open_index(config.persist_dir, config.collection, embed_model=embed_model)
        postprocessors = rag.make_postprocessors(
            index._embed_model, povs_file=config.povs, query_top_n=config.query_top_n, top_n=config.top_n
        )
        llm = rag.load_llm(
            config.model,
            config.model_dir,
            load_in_4bit=config.load_in_4bit,
            prompt_format=config.prompt_format,
            max_new_tokens=config.max_new_tokens,
            max_seq_length=config.max_seq_length,
        )
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
