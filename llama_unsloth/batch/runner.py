"""Batch answering: :func:`run_batch` answers questions (with RAG or fine-tune only) into a resumable JSONL and tables.

Each answer is appended to ``<out>.jsonl`` at once (:mod:`llama_unsloth.batch.answers`), so a re-run
resumes after a crash; at the end ``<out>.xlsx`` and ``<out>.csv`` are written atomically
(:mod:`llama_unsloth.batch.tables`). Questions come from :mod:`llama_unsloth.batch.questions`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from llama_unsloth.batch.answers import (
    append_jsonl,
    ordered_records,
    output_paths,
    pending_questions,
    read_answers_jsonl,
)
from llama_unsloth.batch.tables import write_table
from llama_unsloth.errors import PromptTooLongError, RagError
from llama_unsloth.llms import check_question_fits
from llama_unsloth.rag import Answer, answer_plain_batch, answer_rag_batch, build_rag_prompt, retrieve


def run_batch(
    llm: Any,
    questions: Sequence[str],
    out: Union[str, Path],
    index: Any = None,
    postprocessors: Sequence[Any] = (),
    similarity_top_k: Optional[int] = None,
    batch_size: int = 8,
    progress: bool = True,
    workers: int = 1,
) -> List[Dict[str, Any]]:
    """Answers ``questions`` (with RAG when ``index`` is given), resumable, and writes the tables.

    Each answer is appended to ``<out>.jsonl`` as soon as it exists (flush + fsync). A re-run skips
    questions already answered there (matched by text; a question listed k times gets k answers)
    and tolerates a torn last line. At the end ``<out>.xlsx`` and ``<out>.csv`` are written
    atomically with columns instruction, context, answer, abstained, seconds, sources, error.

    A question too long for the model's window (see :func:`check_question_fits`) is not an answer
    but not a crash either: its row records the error, every other question is answered, and a
    re-run tries it again. Nothing is created on disk before the first record exists.

    Args:
        llm: An ``UnslothLLM``, or a zero-argument callable returning one (called only if
            something is left to answer).
        questions: The questions, in order.
        out: Output base path (``answers`` -> ``answers.jsonl``/``.xlsx``/``.csv``).
        index: ``VectorStoreIndex`` for RAG; ``None``: fine-tune only (``llm.format_prompt``).
        postprocessors: Node postprocessors (see :func:`make_postprocessors`).
        similarity_top_k: Chunks retrieved (default 15 with POVs, else 3).
        batch_size: Prompts per ``generate`` call.
        progress: Show a progress bar with answers/s.
        workers: Groups of questions answered at once by that many threads (for a model server such as
            ``ServedLLM``; an in-process model answers one group at a time anyway). One thread writes the
            JSONL, so each answered question is recorded exactly once, in any order; the tables are in
            question order.

    Returns:
        The records in question order.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise RagError(f"batch_size must be at least 1, got {batch_size}.")
    if workers < 1:
        raise RagError(f"workers must be at least 1, got {workers}.")
    paths = output_paths(out)
    records = read_answers_jsonl(paths["jsonl"], repair=True)
    todo = pending_questions(questions, records)
    if todo:
        model = llm() if callable(llm) and not hasattr(llm, "complete_batch") else llm
        bar = tqdm(
            total=len(questions),
            initial=len(questions) - len(todo),
            desc="Answering",
            unit="answer",
            disable=not progress,
        )
        answering = _Answering(model, questions, index, postprocessors, similarity_top_k, batch_size)
        groups = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        writer = _RecordWriter(paths["jsonl"], records, answering.rag, bar)
        try:
            with _finished_groups(answering.process, groups, workers) as finished:
                for results in finished:
                    writer.write(results)
        finally:
            writer.close()
            bar.close()
    ordered = ordered_records(questions, records)
    write_table(ordered, paths["xlsx"])
    write_table(ordered, paths["csv"])
    return ordered


@dataclass
class _Answering:
    """How one group of questions is answered: the model, the questions, and retrieval (none without ``index``)."""

    model: Any
    questions: Sequence[str]
    index: Any
    postprocessors: Sequence[Any]
    similarity_top_k: Optional[int]
    batch_size: int

    @property
    def rag(self) -> bool:
        """Whether answers use retrieved context."""
        return self.index is not None

    def process(self, group: List[int]) -> Dict[int, Answer]:
        """Answers for the question positions ``group``; a question too long for the window gets an error record."""
        results: Dict[int, Answer] = {}
        fits = []
        for i in group:
            try:
                check_question_fits(self.model, self.questions[i], rag=self.rag)
                fits.append(i)
            except PromptTooLongError as err:
                results[i] = self._failed(i, err)
        try:
            results.update(zip(fits, self._answer(fits)) if fits else [])
        except PromptTooLongError:
            for i in fits:  # find the culprit; answer the others
                try:
                    results[i] = self._answer([i])[0]
                except PromptTooLongError as err:
                    results[i] = self._failed(i, err)
        return results

    def _answer(self, group: List[int]) -> List[Answer]:
        qs = [self.questions[i] for i in group]
        if not self.rag:
            return answer_plain_batch(self.model, qs, batch_size=self.batch_size)
        prompts = [
            build_rag_prompt(self.model, q, retrieve(self.index, q, self.postprocessors, self.similarity_top_k))
            for q in qs
        ]
        return answer_rag_batch(self.model, prompts, batch_size=self.batch_size)

    def _failed(self, i: int, err: Exception) -> Answer:
        return Answer(self.questions[i], "", False, 0.0, error=str(err))


@contextmanager
def _finished_groups(
    process: Callable[[List[int]], Dict[int, Answer]], groups: List[List[int]], workers: int
) -> Iterator[Iterator[Dict[int, Answer]]]:
    """The groups' results as they finish: in order on this thread, or as completed by ``workers`` threads.

    Leaving the block (done, an error, Ctrl-C) cancels the groups not started and waits for the running ones.
    """
    if workers <= 1:
        yield (process(g) for g in groups)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-worker")
    try:
        yield (future.result() for future in as_completed([pool.submit(process, g) for g in groups]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _RecordWriter:
    """Appends answers to the JSONL (one thread writes, so each is recorded exactly once) and to ``records``."""

    def __init__(self, path: Path, records: List[Dict[str, Any]], rag: bool, bar: Any) -> None:
        self.path, self.records, self.rag, self.bar = path, records, rag, bar
        self.handle: Optional[IO[str]] = None

    def write(self, results: Dict[int, Answer]) -> None:
        """Records one group's answers in question order."""
        if self.handle is None:
            # Opened only now: a run that fails before its first answer leaves no empty file behind.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.path, "a", encoding="utf-8")
        for i in sorted(results):
            record = {"position": i, **results[i].__dict__, "rag": self.rag}
            if record["error"] is None:
                del record["error"]
            append_jsonl(self.handle, record)
            self.records.append(record)
            self.bar.update(1)

    def close(self) -> None:
        """Closes the JSONL if it was opened."""
        if self.handle is not None:
            self.handle.close()


__all__ = ["run_batch"]
