"""Options the recipes share, each defined once; a recipe's parser is a tuple of these dataclasses.

``query``, ``batch`` and ``compare`` read an index (:class:`IndexOptions`), retrieve and rerank
(:class:`RetrievalOptions`) and generate (:class:`ModelOptions`); ``batch`` and ``compare`` answer many
questions (:class:`BatchOptions`); ``index`` writes an index (:class:`IndexOptions`,
:class:`IndexingOptions`). Defaults come from :mod:`llama_unsloth.defaults`. Every check that
needs no model runs in ``__post_init__``: a bad value stops the command before anything loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

from llama_unsloth import defaults
from llama_unsloth.errors import OptionError
from llama_unsloth.validation import check_range


@dataclass
class IndexOptions:
    """Where the Chroma collection is: a folder, or a Chroma server (``chroma run``)."""

    persist_dir: str = field(
        default=defaults.PERSIST_DIR, metadata={"help": "Chroma folder written by `llama-unsloth index`."}
    )
    collection: str = field(default=defaults.COLLECTION, metadata={"help": "Chroma collection name."})
    chroma_host: Optional[str] = field(
        default=None,
        metadata={
            "help": "Host of a Chroma server (`chroma run`) to use instead of --persist-dir; default: $LLAMA_UNSLOTH_CHROMA_HOST."
        },
    )
    chroma_port: Optional[int] = field(
        default=None, metadata={"help": "Port of that Chroma server; default: $LLAMA_UNSLOTH_CHROMA_PORT or 8000."}
    )
    embed_model: Optional[str] = field(
        default=None,
        metadata={
            "help": "Embedding model folder or hub name; default: the one the index records (index: $LLAMA_UNSLOTH_EMBED_MODEL "
            "or the bundled MiniLM; cohere: embed-english-v3.0)."
        },
    )

    def __post_init__(self) -> None:
        check_range("chroma_port", self.chroma_port, min=1, max=65535)

    @property
    def location(self) -> str:
        """The folder, or ``http://host:port`` of the Chroma server."""
        from llama_unsloth.rag import chroma_location

        return chroma_location(self.persist_dir, self.chroma_host, self.chroma_port)

    def open(self) -> Any:
        """Opens the collection: ``(index, embed_model)`` (the embedding model the index records, or --embed-model)."""
        from llama_unsloth.rag import open_index_with_embeddings

        return open_index_with_embeddings(self.location, self.collection, embed_model=self.embed_model)


@dataclass
class RetrievalOptions:
    """What is retrieved and how it is reranked (our users' k=3 plainly, or k=15 -> POV 10 -> 5)."""

    povs: Optional[str] = field(
        default=None, metadata={"help": "POV file (one viewpoint per line): enables POV reranking."}
    )
    similarity_top_k: Optional[int] = field(
        default=None,
        metadata={"help": f"Chunks retrieved (default {defaults.POV_TOP_K} with --povs, else {defaults.TOP_K})."},
    )
    query_top_n: int = field(
        default=defaults.QUERY_TOP_N, metadata={"help": "Chunks kept by query similarity before POV scoring."}
    )
    top_n: int = field(
        default=defaults.POV_TOP_N, metadata={"help": "Chunks kept after POV scoring (at most --query-top-n)."}
    )

    def __post_init__(self) -> None:
        check_range("similarity_top_k", self.similarity_top_k, min=1)
        check_range("query_top_n", self.query_top_n, min=1)
        check_range("top_n", self.top_n, min=1)
        if self.top_n > self.query_top_n:
            raise OptionError(
                f"--top-n ({self.top_n}) must not exceed --query-top-n ({self.query_top_n}): "
                "POV scoring keeps a subset of the query-ranked chunks."
            )
        if self.povs and not Path(self.povs).is_file():
            raise OptionError(f"POV file {self.povs!r} not found. Pass a text file with one viewpoint per line.")

    def postprocessors(self, embed_model: Any) -> list:
        """Duplicate filter, POV reranker (with ``--povs``) and context cleaner, embedding with ``embed_model``."""
        from llama_unsloth.rag import make_postprocessors

        return make_postprocessors(embed_model, povs_file=self.povs, query_top_n=self.query_top_n, top_n=self.top_n)


@dataclass
class ModelOptions:
    """Which model answers, in which layout, with how many tokens."""

    model_dir: Optional[str] = field(
        default=None, metadata={"help": "Fine-tuned model folder (its prompt layout comes with it)."}
    )
    model: Optional[str] = field(
        default=None, metadata={"help": "Model name or folder; default: offline SmolLM2-135M-Instruct."}
    )
    llm_url: Optional[str] = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible server that serves the model (e.g. vllm serve ... --port 8001: http://127.0.0.1:8001/v1); default: in-process."
        },
    )
    served_model: Optional[str] = field(
        default=None,
        metadata={
            "help": "Model name the server serves (vllm serve --served-model-name); default: the --model-dir path."
        },
    )
    prompt_format: Optional[str] = field(
        default=None, metadata={"help": "Override the prompt layout (chat, alpaca-context, a .j2 file ...)."}
    )
    prompt_fields: Optional[List[str]] = field(
        default=None,
        metadata={
            "help": "Roles of a Python format template's positional {} placeholders, in order (e.g. instruction input context)."
        },
    )
    max_new_tokens: int = field(default=defaults.MAX_NEW_TOKENS, metadata={"help": "Most tokens per answer."})
    max_seq_length: int = field(
        default=defaults.MAX_SEQ_LENGTH, metadata={"help": "Context window (prompt + answer)."}
    )
    load_in_4bit: bool = field(
        default=True,
        metadata={"help": "bitsandbytes 4-bit weights where CUDA can run them (full precision without a GPU)."},
    )

    fast_decode: bool = field(
        default=False,
        metadata={
            "help": "Decode with a static KV cache and CUDA graphs (GPU; the model loads as 16-bit transformers "
            "weights, an adapter merged in); where it cannot run, one warning and the standard path."
        },
    )
    weights: Optional[Literal["bf16", "int8", "int4"]] = field(
        default=None,
        metadata={
            "help": "Weights on the fast path: bf16 (default), int8 or int4 (torchao weight-only). Needs --fast-decode."
        },
    )
    fast_decode_mode: Literal["auto", "compile", "graphs", "eager"] = field(
        default="auto",
        metadata={
            "help": "compile (torch.compile + CUDA graphs; slowest start, fastest), graphs (no compile wait), eager; auto = compile."
        },
    )
    warm_up: bool = field(
        default=False, metadata={"help": "Compile the fast path before the first question instead of during it."}
    )

    def __post_init__(self) -> None:
        check_range("max_new_tokens", self.max_new_tokens, min=1)
        check_range("max_seq_length", self.max_seq_length, min=2)
        from llama_unsloth.llms import check_window_settings

        check_window_settings(self.max_new_tokens, self.max_seq_length)
        if (self.weights or self.warm_up or self.fast_decode_mode != "auto") and not self.fast_decode:
            given = "--weights" if self.weights else "--warm-up" if self.warm_up else "--fast-decode-mode"
            raise OptionError(f"{given} applies to the fast decode path only: add --fast-decode (or drop {given}).")
        if self.fast_decode and self.llm_url:
            raise OptionError(
                "--fast-decode runs the model in this process; with --llm-url the server decodes: drop one of them."
            )
        self.layout = self._layout()

    def check_model(self) -> None:
        """Refuses a hub id that cannot load offline (only when a model will load; not for --model-dir)."""
        from recipes.config import check_model_option

        if not self.model_dir:
            check_model_option(self.model)

    def _layout(self) -> Any:
        """The ``PromptFormat`` that ``--prompt-format`` (and ``--prompt-fields``) name, or None for the model's own."""
        if not self.prompt_format:
            return None
        from llama_unsloth.layouts import PromptFormat, PromptFormatError

        path = Path(self.prompt_format).expanduser()
        try:
            return PromptFormat.get(str(path) if path.exists() else self.prompt_format, fields=self.prompt_fields)
        except (PromptFormatError, FileNotFoundError, UnicodeDecodeError) as err:
            raise OptionError(f"--prompt-format: {err}") from err

    def load(self, warm_up_batch_sizes: Sequence[int] = (1,), **extra: Any) -> Any:
        """Loads the LLM these options name (:func:`llama_unsloth.llms.factory.load_llm`); ``extra`` adds LLM fields.

        Args:
            warm_up_batch_sizes: With ``--warm-up``, the batch sizes the fast path is built for (the batch
                recipes answer ``--batch-size`` questions at a time).
            **extra: More UnslothLLM fields.
        """
        from llama_unsloth.llms.factory import load_llm

        if self.fast_decode:
            extra.update(fast_decode=True, weights=self.weights, fast_decode_mode=self.fast_decode_mode)
        llm = load_llm(
            # None lets load_llm choose: 4-bit exactly where CUDA is available.
            self.model,
            self.model_dir,
            load_in_4bit=None if self.load_in_4bit else False,
            prompt_format=self.layout,
            max_new_tokens=self.max_new_tokens,
            max_seq_length=self.max_seq_length,
            llm_url=self.llm_url,
            served_model=self.served_model,
            **extra,
        )
        if self.warm_up:
            llm.warm_up(batch_sizes=tuple(warm_up_batch_sizes))
        return llm


@dataclass
class BatchOptions:
    """How many questions are answered at once, and how answers are judged."""

    batch_size: int = field(
        default=defaults.BATCH_SIZE, metadata={"help": "Prompts per generate call (lower it if memory runs out)."}
    )
    workers: int = field(
        default=1,
        metadata={
            "help": "Questions answered at once, for a model server (--llm-url); each is recorded exactly once."
        },
    )
    abstention_patterns: Optional[str] = field(
        default=None,
        metadata={
            "help": "File of extra 'I don't know' regexes, one per line (added to the English/Japanese defaults)."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    fresh: bool = field(
        default=False,
        metadata={
            "help": "Answer everything again, replacing the answers, tables and settings record already at the output "
            "(default: resume them, refused when they were made with other settings)."
        },
    )

    def __post_init__(self) -> None:
        check_range("batch_size", self.batch_size, min=1)
        check_range("workers", self.workers, min=1, max=256)

    def patterns(self) -> Optional[List[str]]:
        """The extra abstention patterns from ``--abstention-patterns`` (None: the defaults only)."""
        if not self.abstention_patterns:
            return None
        from llama_unsloth.abstention import load_patterns

        return load_patterns(self.abstention_patterns)

    def settings(self, model: ModelOptions, retrieval: Optional[RetrievalOptions]) -> Dict[str, Any]:
        """The settings of a run that the options tell before anything loads (``retrieval`` None: no RAG).

        Recorded beside the answers and compared on a resume (:mod:`llama_unsloth.batch.settings`); the model
        is named by its folder's fingerprint, which needs no load.
        """
        from llama_unsloth.batch.settings import layout_settings, model_identity
        from llama_unsloth.defaults import default_model_name

        name = model.model_dir or model.model or default_model_name()
        out: Dict[str, Any] = model_identity(name, model.llm_url, model.served_model)
        out.update(max_new_tokens=model.max_new_tokens, max_seq_length=model.max_seq_length, rag=retrieval is not None)
        if model.layout is not None:
            out["layout"] = layout_settings(model.layout)
        elif model.model_dir and (Path(model.model_dir) / "prompt_format.json").is_file():
            from llama_unsloth.layouts import PromptFormat

            out["layout"] = layout_settings(PromptFormat.load(model.model_dir))
        if retrieval is not None:
            out["similarity_top_k"] = retrieval.similarity_top_k or defaults.top_k(pov_reranking=bool(retrieval.povs))
            out["povs"] = _read_povs(retrieval.povs) if retrieval.povs else None
            if retrieval.povs:
                out.update(query_top_n=retrieval.query_top_n, top_n=retrieval.top_n)
        return out

    def check_resume(self, out: Union[str, Path], settings: Dict[str, Any]) -> None:
        """Refuses, before anything loads, an output holding answers made with other ``settings`` (unless --fresh)."""
        from llama_unsloth.batch import output_paths
        from llama_unsloth.batch.settings import check_resume

        check_resume(output_paths(out)["jsonl"], settings, fresh=self.fresh)

    def answer(
        self,
        llm: Any,
        questions: Sequence[str],
        out: Union[str, Path],
        index: Any = None,
        postprocessors: Sequence[Any] = (),
        similarity_top_k: Optional[int] = None,
        settings: Optional[Dict[str, Any]] = None,
    ) -> List[Dict[str, Any]]:
        """:func:`~llama_unsloth.batch.run_batch` with these options' batch size, progress bar, workers and --fresh.

        Args:
            llm: The model, or a zero-argument callable loading it (called only if something is left to answer).
            questions: The questions, in order.
            out: Output base path (``<out>.jsonl``, ``.xlsx``, ``.csv``).
            index: The index to retrieve from; ``None``: fine-tune only.
            postprocessors: Node postprocessors (:meth:`RetrievalOptions.postprocessors`).
            similarity_top_k: Chunks retrieved (``None``: the default for the postprocessors).
            settings: The run's settings from the options (:meth:`settings`), recorded beside the answers.

        Returns:
            The answer records in question order.
        """
        from llama_unsloth.batch import run_batch

        return run_batch(
            llm,
            questions,
            out,
            index=index,
            postprocessors=postprocessors,
            similarity_top_k=similarity_top_k,
            batch_size=self.batch_size,
            progress=self.progress,
            workers=self.workers,
            settings=settings,
            fresh=self.fresh,
        )


def _read_povs(path: str) -> List[str]:
    """The POVs of a file as the reranker reads them (a file it refuses is one line, exit 2)."""
    from llama_unsloth.errors import RagError
    from postprocessors.pov_reranker import load_povs

    try:
        return list(load_povs(path))
    except ValueError as err:  # no POV, or an encoding it cannot read: the reranker would refuse it too
        raise RagError(str(err)) from err


@dataclass
class IndexingOptions:
    """How documents become chunks and vectors (``index``)."""

    input_dir: str = field(metadata={"help": "Folder of .txt/.md files (searched recursively)."})
    chunk_unit: Literal["characters", "tokens"] = field(
        default=defaults.CHUNK_UNIT, metadata={"help": "What chunk sizes count: characters or tokens (cl100k)."}
    )
    chunk_size: Optional[int] = field(
        default=None,
        metadata={
            "help": f"Chunk size (default {defaults.CHUNKING['characters'][0]} characters / {defaults.CHUNKING['tokens'][0]} tokens)."
        },
    )
    chunk_overlap: Optional[int] = field(
        default=None,
        metadata={
            "help": f"Chunk overlap (default {defaults.CHUNKING['characters'][1]} characters / {defaults.CHUNKING['tokens'][1]} tokens)."
        },
    )
    embed_backend: Literal["huggingface", "cohere"] = field(
        default="huggingface", metadata={"help": "huggingface (local/hub model) or cohere (COHERE_API_KEY)."}
    )
    embed_batch_size: int = field(
        default=defaults.EMBED_BATCH_SIZE,
        metadata={"help": "Chunks per embedding call (also the unit of work kept on Ctrl-C)."},
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    fresh: bool = field(
        default=False,
        metadata={
            "help": "Delete the collection (its chunks and vectors) and index everything again: the way to change "
            "the embedding model or chunk settings of an existing collection."
        },
    )

    def __post_init__(self) -> None:
        from llama_unsloth.rag import MIN_CHUNK_SIZE

        check_range("chunk_size", self.chunk_size, min=MIN_CHUNK_SIZE)
        check_range("chunk_overlap", self.chunk_overlap, min=0)
        check_range("embed_batch_size", self.embed_batch_size, min=1)
        size = self.chunk_size if self.chunk_size is not None else defaults.CHUNKING[self.chunk_unit][0]
        if self.chunk_overlap is not None and self.chunk_overlap >= size:
            raise OptionError(f"--chunk-overlap must be below --chunk-size ({size}); got {self.chunk_overlap}.")


__all__ = ["BatchOptions", "IndexOptions", "IndexingOptions", "ModelOptions", "RetrievalOptions"]
