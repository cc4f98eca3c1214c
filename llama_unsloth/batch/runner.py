"""Batch answering: :func:`run_batch` answers questions (with RAG or fine-tune only) into a resumable JSONL and tables.

Each answer is appended to ``<out>.jsonl`` at once (:mod:`llama_unsloth.batch.answers`), so a re-run
resumes after a crash; at the end ``<out>.xlsx`` and ``<out>.csv`` are written atomically
(:mod:`llama_unsloth.batch.tables`). Questions come from :mod:`llama_unsloth.batch.questions`.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from llama_unsloth.batch.answers import (
    append_jsonl,
    ordered_records,
    output_paths,
    pending_questions,
    read_answers_jsonl,
)
from llama_unsloth.batch.settings import ResumeKey, llm_settings, retrieval_settings
from llama_unsloth.batch.tables import write_table
from llama_unsloth.errors import PromptTooLongError, QuestionFailedError, RagError
from llama_unsloth.llms import check_question_fits
from llama_unsloth.rag import Answer, answer_plain_batch, answer_rag_batch, build_rag_prompt, retrieve

# Questions failing one after another before the run stops: one bad question is its row's error, a streak is not.
STOP_AFTER_FAILURES = 5


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
    settings: Optional[Mapping[str, Any]] = None,
    fresh: bool = False,
) -> List[Dict[str, Any]]:
    """Answers ``questions`` (with RAG when ``index`` is given), resumable, and writes the tables.

    Each answer is appended to ``<out>.jsonl`` as soon as it exists (flush + fsync). A re-run skips
    questions already answered there (matched by text; a question listed k times gets k answers)
    and tolerates a torn last line. At the end ``<out>.xlsx`` and ``<out>.csv`` are written
    atomically with columns instruction, context, answer, abstained, seconds, sources, error.

    The settings the answers are made with (model and its fingerprint, layout, retrieval, generation,
    embedding model) are recorded in ``<out>.settings.json`` before the first answer
    (:mod:`llama_unsloth.batch.settings`). A re-run with other settings is refused before the model loads
    where the difference is known by then (else once it has loaded, before any answer), unless ``fresh``.

    A question too long for the model's window (see :func:`check_question_fits`), or one that cannot be
    encoded or retrieved for, is not an answer but not a crash either: its row records the error, every
    other question is answered, and a re-run tries it again. Nothing is created on disk before the first
    record exists.

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
        settings: Settings known to the caller (a recipe's options); they win over the ones read from
            ``llm`` and ``postprocessors``.
        fresh: Replace what ``out`` holds instead of resuming it (removed when the first answer comes).

    Returns:
        The records in question order.

    Raises:
        RagError: ``out`` holds answers made with other settings; or questions failed one after another
            (:data:`STOP_AFTER_FAILURES`), which is the run's problem, not a question's.
    """
    if batch_size < 1:
        raise RagError(f"batch_size must be at least 1, got {batch_size}.")
    if workers < 1:
        raise RagError(f"workers must be at least 1, got {workers}.")
    paths = output_paths(out)
    key = ResumeKey(paths["jsonl"], fresh)
    records = [] if fresh else read_answers_jsonl(paths["jsonl"], repair=True)  # cuts a torn last line only
    resumed = bool(records)
    known = {**retrieval_settings(index, postprocessors, similarity_top_k), **(settings or {})}
    key.check(known, resumed)
    key.warn_if_unrecorded(resumed)
    todo = pending_questions(questions, records)
    if todo:
        model = llm() if callable(llm) and not hasattr(llm, "complete_batch") else llm
        current = {**llm_settings(model), **known}
        key.check(current, resumed)  # what only the loaded model tells (its own layout), before any answer
        answering = _Answering(model, questions, index, postprocessors, similarity_top_k, batch_size)
        writer = _RecordWriter(paths["jsonl"], records, answering.rag, None)
        writer.before_first = lambda: key.start(current, stale=(paths["xlsx"], paths["csv"]))
        _answer_all(answering, todo, writer, progress, workers)
    ordered = ordered_records(questions, records)
    write_table(ordered, paths["xlsx"])
    write_table(ordered, paths["csv"])
    return ordered


def _answer_all(answering: _Answering, todo: List[int], writer: _RecordWriter, progress: bool, workers: int) -> None:
    """Answers the questions at positions ``todo`` in groups of the batch size, each recorded as it comes."""
    from tqdm.auto import tqdm

    total = len(answering.questions)
    writer.bar = tqdm(total=total, initial=total - len(todo), desc="Answering", unit="answer", disable=not progress)
    size = answering.batch_size
    groups = [todo[start : start + size] for start in range(0, len(todo), size)]
    try:
        with _finished_groups(answering.process, groups, workers) as finished:
            for results in finished:
                writer.write(results)
    finally:
        writer.close()
        writer.bar.close()


@dataclass
class _Answering:
    """How one group of questions is answered: the model, the questions, and retrieval (none without ``index``)."""

    model: Any
    questions: Sequence[str]
    index: Any
    postprocessors: Sequence[Any]
    similarity_top_k: Optional[int]
    batch_size: int
    streak: _FailureStreak = field(default_factory=lambda: _FailureStreak())

    @property
    def rag(self) -> bool:
        """Whether answers use retrieved context."""
        return self.index is not None

    def process(self, group: List[int]) -> Dict[int, Answer]:
        """Answers for the question positions ``group``; a question that fails alone gets an error record."""
        results: Dict[int, Answer] = {}
        prepared: Dict[int, Any] = {}
        for i in group:
            try:
                prepared[i] = self._prepare(i)
            except PromptTooLongError as err:
                results[i] = self._failed(i, err)
            except Exception as err:  # noqa: BLE001 - one question's failure is its row's; a streak stops the run
                results[i] = self._failed(i, self.streak.failed(self.questions[i], err))
            else:
                self.streak.succeeded()
        fits = list(prepared)
        try:
            results.update(zip(fits, self._answer(fits, prepared)) if fits else [])
        except PromptTooLongError:
            for i in fits:  # find the culprit; answer the others
                try:
                    results[i] = self._answer([i], prepared)[0]
                except PromptTooLongError as err:
                    results[i] = self._failed(i, err)
        return results

    def _prepare(self, i: int) -> Any:
        """The question checked against the window, and with RAG its retrieved prompt."""
        question = self.questions[i]
        try:
            check_question_fits(self.model, question, rag=self.rag)
        except PromptTooLongError:
            raise
        except Exception as err:
            raise QuestionFailedError("could not encode this question", err) from err
        if not self.rag:
            return question
        try:
            nodes = retrieve(self.index, question, self.postprocessors, self.similarity_top_k)
        except Exception as err:
            raise QuestionFailedError("could not retrieve context for this question", err) from err
        return build_rag_prompt(self.model, question, nodes)

    def _answer(self, group: List[int], prepared: Dict[int, Any]) -> List[Answer]:
        if not self.rag:
            return answer_plain_batch(self.model, [prepared[i] for i in group], batch_size=self.batch_size)
        return answer_rag_batch(self.model, [prepared[i] for i in group], batch_size=self.batch_size)

    def _failed(self, i: int, err: Exception) -> Answer:
        return Answer(self.questions[i], "", False, 0.0, error=str(err))


class _FailureStreak:
    """Counts questions that failed one after another: so many in a row are the run's problem, not theirs."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def succeeded(self) -> None:
        """A question was prepared: the streak ends."""
        with self.lock:
            self.count = 0

    def failed(self, question: str, err: Exception) -> Exception:
        """The error for the question's row; raises when :data:`STOP_AFTER_FAILURES` failed in a row.

        Raises:
            RagError: One line with the last error; the answers so far are kept and a re-run goes on from them.
        """
        with self.lock:
            self.count += 1
            streak = self.count
        if streak >= STOP_AFTER_FAILURES:
            raise RagError(
                f"{streak} questions in a row failed, the last ({question[:60]!r}) with: {err} This is the run's "
                "problem, not a question's (the embedding model, the index or its server?): fix it and run the same "
                "command again; the answers so far are saved."
            ) from err
        return err


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
        self.before_first: Callable[[], None] = lambda: None

    def write(self, results: Dict[int, Answer]) -> None:
        """Records one group's answers in question order."""
        if self.handle is None:
            # Opened only now: a run that fails before its first answer leaves no empty file behind.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.before_first()  # the settings record (and with --fresh the old answers' removal) comes first
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
