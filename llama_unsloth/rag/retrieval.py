"""RAG glue over an index from :mod:`llama_unsloth.rag.store`: postprocessors, query engines, prompts, answers.

* :func:`make_postprocessors` / :func:`make_query_engine` give our users' retrieval: k=3 plainly,
  or k=15 -> POV reranking (10 -> 5), with duplicate filtering and context cleaning.
* :func:`build_rag_prompt` renders exactly the prompt the query engine sends, so batch answering
  (:func:`answer_rag_batch`) can batch many questions through ``UnslothLLM.complete_batch``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from llama_unsloth.defaults import POV_TOP_N as DEFAULT_POV_TOP_N
from llama_unsloth.defaults import QUERY_TOP_N as DEFAULT_QUERY_TOP_N
from llama_unsloth.defaults import top_k
from llama_unsloth.errors import RagError
from llama_unsloth.llms import prompt_helper
from llama_unsloth.rag.chunking import KEY_FILE_NAME, KEY_FILE_PATH
from llama_unsloth.rag.store import retrieval_cosine


# ---------------------------------------------------------------------------------------------- retrieval
def make_postprocessors(
    embed_model: Any = None,
    povs: Optional[Sequence[str]] = None,
    povs_file: Optional[Union[str, Path]] = None,
    query_top_n: int = DEFAULT_QUERY_TOP_N,
    top_n: int = DEFAULT_POV_TOP_N,
) -> List[Any]:
    """Our users' node postprocessors.

    With POVs: ``DuplicateChunkFilter -> POVReranker -> ContextCleaner``; without:
    ``DuplicateChunkFilter -> ContextCleaner``.

    Raises:
        RagError: ``povs_file`` does not exist or holds no POV; POVs without an embedding model.
    """
    from postprocessors import ContextCleaner, DuplicateChunkFilter, POVReranker

    chain: List[Any] = [DuplicateChunkFilter()]
    if povs_file is not None or povs:
        if embed_model is None:
            raise RagError(
                "POV reranking needs the embedding model (pass the index's embedding model, e.g. from index_store.open_index_with_embeddings)."
            )
        if povs_file is not None:
            if not Path(povs_file).is_file():
                raise RagError(f"POV file {str(povs_file)!r} not found. Pass a text file with one viewpoint per line.")
            try:
                reranker = POVReranker.from_file(
                    povs_file, embed_model=embed_model, query_top_n=query_top_n, top_n=top_n
                )
            except ValueError as err:
                raise RagError(str(err)) from err
        else:
            reranker = POVReranker(
                embed_model=embed_model, povs=list(povs or []), query_top_n=query_top_n, top_n=top_n
            )
        chain.append(reranker)
    chain.append(ContextCleaner())
    return chain


def has_pov_reranker(postprocessors: Sequence[Any]) -> bool:
    """Whether a POVReranker is among ``postprocessors``."""
    return any(type(p).__name__ == "POVReranker" for p in postprocessors)


def default_top_k(postprocessors: Sequence[Any]) -> int:
    """15 before POV reranking, else 3 (our users' settings: :func:`llama_unsloth.defaults.top_k`)."""
    return top_k(has_pov_reranker(postprocessors))


def make_query_engine(
    index: Any,
    llm: Any,
    postprocessors: Optional[Sequence[Any]] = None,
    similarity_top_k: Optional[int] = None,
    streaming: bool = False,
) -> Any:
    """``index.as_query_engine`` with the model's own QA/refine templates.

    Args:
        index: A ``VectorStoreIndex`` (e.g. from :func:`open_index`).
        llm: An ``UnslothLLM`` (or any LLM with ``qa_template()``/``refine_template()``).
        postprocessors: From :func:`make_postprocessors`; ``None``: no POVs.
        similarity_top_k: Chunks retrieved; ``None``: 15 with a POV reranker, else 3.
        streaming: Return a streaming response.
    """
    postprocessors = list(make_postprocessors() if postprocessors is None else postprocessors)
    return index.as_query_engine(
        llm=llm,
        similarity_top_k=similarity_top_k or default_top_k(postprocessors),
        node_postprocessors=postprocessors,
        text_qa_template=llm.qa_template(),
        refine_template=llm.refine_template(),
        streaming=streaming,
    )


def retrieve(
    index: Any, query: str, postprocessors: Sequence[Any] = (), similarity_top_k: Optional[int] = None
) -> List[Any]:
    """The nodes a query engine built by :func:`make_query_engine` would put in the prompt."""
    from llama_index.core.schema import QueryBundle

    retriever = index.as_retriever(similarity_top_k=similarity_top_k or default_top_k(postprocessors))
    bundle = QueryBundle(query)
    nodes = retriever.retrieve(bundle)
    for post in postprocessors:
        nodes = post.postprocess_nodes(nodes, query_bundle=bundle)
    return nodes


def source_info(node_with_score: Any, space: str = "cosine") -> Dict[str, Any]:
    """File name and scores of a retrieved node.

    Returns:
        ``file_name``; ``similarity`` (retrieval cosine, when the score is still the retriever's);
        ``query_similarity`` and ``pov_score`` (after POV reranking).
    """
    meta = node_with_score.node.metadata or {}
    info: Dict[str, Any] = {"file_name": meta.get(KEY_FILE_NAME) or Path(str(meta.get(KEY_FILE_PATH, "?"))).name}
    if "pov_score" in meta:
        info["query_similarity"] = meta.get("query_similarity")
        info["pov_score"] = meta.get("pov_score")
    else:
        info["similarity"] = retrieval_cosine(node_with_score.score, space)
    return info


def format_sources(nodes: Sequence[Any], space: str = "cosine") -> List[str]:
    """One printable line per source node: rank, file name, scores."""
    lines = []
    for rank, node in enumerate(nodes, 1):
        info = source_info(node, space)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in info.items() if k != "file_name" and isinstance(v, (int, float)))
        lines.append(f"[{rank}] {info['file_name']}  ({scores})")
    return lines


# ---------------------------------------------------------------------------------------------- prompts
@dataclass
class RagPrompt:
    """The prompt(s) the query engine builds for one question and its retrieved nodes.

    Attributes:
        query: The question.
        pieces: Context as LlamaIndex packs it (one piece per LLM call; >1 means refine calls).
        prompt: The complete QA prompt when one call suffices, else ``None``.
        nodes: The nodes the context comes from.
    """

    query: str
    pieces: List[str]
    prompt: Optional[str]
    nodes: List[Any] = field(default_factory=list)

    @property
    def context(self) -> str:
        """All context text, as the answer table shows it."""
        return "\n\n".join(self.pieces)


def build_rag_prompt(llm: Any, query: str, nodes: Sequence[Any]) -> RagPrompt:
    """Renders the prompt LlamaIndex's default (compact) query engine sends for ``nodes``.

    It mirrors ``CompactAndRefine``: node texts (``MetadataMode.LLM``) are packed into as few
    pieces as fit the LLM's context window beside the larger of the QA/refine templates; with one
    piece the prompt is ``llm.qa_template()`` filled with it, rendered through the LLM's own
    ``_get_prompt`` as ``llm.predict`` does. With several pieces the engine refines over several
    calls and ``prompt`` is ``None``.
    """
    from llama_index.core.prompts.prompt_utils import get_biggest_prompt
    from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE
    from llama_index.core.schema import MetadataMode

    qa, refine = llm.qa_template(), llm.refine_template()
    texts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes]
    helper = prompt_helper(llm)
    biggest = get_biggest_prompt([qa.partial_format(query_str=query), refine.partial_format(query_str=query)])
    packed = helper.repack(biggest, texts, llm=llm, padding=DEFAULT_RESPONSE_PADDING_SIZE)
    # Refine's loop repacks each compacted piece once more before the first call.
    pieces = [
        p for chunk in packed for p in helper.repack(biggest, [chunk], llm=llm, padding=DEFAULT_RESPONSE_PADDING_SIZE)
    ]
    prompt = None
    if len(pieces) == 1:
        prompt = llm._get_prompt(qa.partial_format(query_str=query), context_str=pieces[0])
    return RagPrompt(query=query, pieces=pieces, prompt=prompt, nodes=list(nodes))


@dataclass
class Answer:
    """One answered question."""

    instruction: str
    answer: str
    abstained: bool
    seconds: float
    context: str = ""
    sources: str = ""
    error: Optional[str] = None


def _sources_text(nodes: Sequence[Any]) -> str:
    names = []
    for node in nodes:
        name = source_info(node)["file_name"]
        if name not in names:
            names.append(name)
    return "; ".join(names)


def answer_rag_batch(llm: Any, rag_prompts: Sequence[RagPrompt], batch_size: int = 8) -> List[Answer]:
    """Answers prepared questions; one-call prompts go through ``llm.complete_batch``.

    Questions whose context needs refine calls are answered one by one by LlamaIndex's own
    compact-and-refine synthesizer, so every answer is what the query engine would give.
    """
    from llama_index.core.response_synthesizers import get_response_synthesizer
    from llama_index.core.schema import MetadataMode

    from llama_unsloth.abstention import is_abstention

    answers: List[Optional[Answer]] = [None] * len(rag_prompts)

    fits = getattr(llm, "fits_window", lambda prompt: True)

    # A one-call prompt LlamaIndex packed past the model's window (it counts with tiktoken) goes the way
    # the query engine takes it: through llm.predict, which splits the context with the model's tokenizer.
    single = [i for i, rp in enumerate(rag_prompts) if rp.prompt is not None and fits(rp.prompt)]
    if single:
        responses = llm.complete_batch([rag_prompts[i].prompt for i in single], batch_size=batch_size, formatted=True)
        for i, resp in zip(single, responses):
            rp = rag_prompts[i]
            answers[i] = Answer(
                rp.query,
                resp.text,
                bool(resp.additional_kwargs.get("abstained")),
                float(resp.raw.get("seconds", 0.0)),
                rp.context,
                _sources_text(rp.nodes),
            )
    synth = None
    for i, rp in enumerate(rag_prompts):
        if answers[i] is not None:
            continue
        if synth is None:
            synth = get_response_synthesizer(
                llm=llm, text_qa_template=llm.qa_template(), refine_template=llm.refine_template()
            )
        began = time.perf_counter()
        texts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in rp.nodes]
        text = str(synth.get_response(query_str=rp.query, text_chunks=texts)) if texts else ""
        answers[i] = Answer(
            rp.query,
            text,
            is_abstention(text, getattr(llm, "abstention_patterns", None)),
            round(time.perf_counter() - began, 4),
            rp.context,
            _sources_text(rp.nodes),
        )
    return [a for a in answers if a is not None]


def answer_plain_batch(llm: Any, questions: Sequence[str], batch_size: int = 8) -> List[Answer]:
    """Answers without retrieval: the prompt is ``llm.format_prompt(question)`` (fine-tune only)."""
    prompts = [llm.format_prompt(q) for q in questions]
    responses = llm.complete_batch(prompts, batch_size=batch_size, formatted=True)
    return [
        Answer(q, r.text, bool(r.additional_kwargs.get("abstained")), float(r.raw.get("seconds", 0.0)))
        for q, r in zip(questions, responses)
    ]


__all__ = [
    "Answer",
    "RagPrompt",
    "answer_plain_batch",
    "answer_rag_batch",
    "build_rag_prompt",
    "default_top_k",
    "format_sources",
    "has_pov_reranker",
    "make_postprocessors",
    "make_query_engine",
    "retrieve",
    "source_info",
]
