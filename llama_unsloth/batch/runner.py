"""Batch answering: question files in, a resumable answers JSONL and atomic ``.xlsx``/``.csv`` tables out.

:func:`run_batch` answers questions (with RAG or fine-tune only), appending each answer to
``<out>.jsonl`` at once so a re-run resumes after a crash, then writes the tables.
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from llama_unsloth.batch.tables import write_table
from llama_unsloth.errors import QuestionsFileError, RagError
from llama_unsloth.rag.retrieval import Answer, answer_plain_batch, answer_rag_batch, build_rag_prompt, retrieve

# ---------------------------------------------------------------------------------------------- questions

logger = logging.getLogger(__name__)

QUESTION_COLUMNS = ("question", "instruction")


def load_questions(path: Union[str, Path]) -> List[str]:
    """Reads questions from ``.txt`` (one per line; blank and ``#`` lines skipped), ``.json`` (a list of
    strings or of objects with ``question``/``instruction``), ``.jsonl`` (one string or object per line),
    ``.csv`` or ``.xlsx`` (a ``question`` or ``instruction`` column).

    Text files may be in any encoding :mod:`llama_unsloth.text_files` detects: UTF-8 with or without
    BOM, UTF-16, Shift-JIS/CP932 (what Japanese Excel writes for CSV) or EUC-JP.

    Raises:
        QuestionsFileError: Missing file, unknown extension, undecodable text, missing column, bad JSON,
            no questions.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise QuestionsFileError(f"Questions file {str(path)!r} not found.")
    suffix = file.suffix.lower()
    if suffix not in (".txt", ".json", ".jsonl", ".csv", ".xlsx", ".xls"):
        raise QuestionsFileError(
            f"Unsupported questions file type {suffix or '(none)'!r}: use .txt, .json, .jsonl, .csv or .xlsx."
        )
    text = _questions_text(file) if suffix in (".txt", ".json", ".jsonl", ".csv") else ""
    if suffix == ".txt":
        items: List[Any] = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    elif suffix in (".json", ".jsonl"):
        try:
            items = (
                json.loads(text) if suffix == ".json" else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
            )
        except json.JSONDecodeError as err:
            raise QuestionsFileError(
                f"{str(path)!r} is not valid JSON{' lines' if suffix == '.jsonl' else ''}: {err}."
            ) from err
        if not isinstance(items, list):
            raise QuestionsFileError(
                f"{str(path)!r} must hold a JSON list of questions (strings or objects with 'question')."
            )
        items = [_question_of(item, file, n) for n, item in enumerate(items, 1)]
    elif suffix in (".csv", ".xlsx", ".xls"):
        import pandas as pd

        try:
            frame = (
                pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
                if suffix == ".csv"
                else pd.read_excel(file, dtype=str)
            )
        except (ValueError, OSError, pd.errors.ParserError) as err:
            raise QuestionsFileError(
                f"{str(path)!r} cannot be read as a {suffix[1:]} table ({str(err).splitlines()[0] if str(err) else type(err).__name__})."
            ) from err
        columns = {str(c).strip().lower(): c for c in frame.columns}
        column = next((columns[c] for c in QUESTION_COLUMNS if c in columns), None)
        if column is None:
            raise QuestionsFileError(
                f"{str(path)!r} has no 'question' or 'instruction' column (columns: {', '.join(map(str, frame.columns)) or 'none'}). Rename the questions column."
            )
        items = [v for v in frame[column].tolist() if isinstance(v, str)]
    questions = [str(q).strip() for q in items if str(q).strip()]
    if not questions:
        raise QuestionsFileError(f"{str(path)!r} holds no questions.")
    return questions


def _questions_text(file: Path) -> str:
    from llama_unsloth.errors import EmptyFileError, UnreadableFileError
    from llama_unsloth.text_files import read_text

    try:
        return read_text(file).text
    except EmptyFileError as err:
        raise QuestionsFileError(f"{str(file)!r} holds no questions (the file is empty).") from err
    except UnreadableFileError as err:
        raise QuestionsFileError(
            f"Questions file {err} Save it as text (UTF-8, Shift-JIS/CP932, EUC-JP or UTF-16) or as .xlsx."
        ) from err


def _question_of(item: Any, file: Path, n: int) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in QUESTION_COLUMNS:
            if isinstance(item.get(key), str):
                return item[key]
    raise QuestionsFileError(
        f"{str(file)!r} item {n} is neither a string nor an object with a 'question' or 'instruction' string."
    )


# ---------------------------------------------------------------------------------------------- answers JSONL
def read_answers_jsonl(path: Union[str, Path], repair: bool = False) -> List[Dict[str, Any]]:
    """Complete records from an answers JSONL file; a torn last line (a crash mid-write) is ignored.

    Args:
        path: The file (missing: no records).
        repair: Cut a torn trailing line off the file so appends start on a fresh line.
    """
    file = Path(path)
    if not file.is_file():
        return []
    data = file.read_bytes()
    cut = data.rfind(b"\n") + 1
    if cut < len(data) and repair:
        with open(file, "r+b") as handle:
            handle.truncate(cut)
            handle.flush()
            os.fsync(handle.fileno())
    records = []
    for n, line in enumerate(data[:cut].decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning(
                "warning: %s: line %d is not valid JSON; ignored (that question will be answered again).", file, n
            )
            continue
        if isinstance(record, dict) and isinstance(record.get("instruction"), str) and "answer" in record:
            records.append(record)
    return records


def append_jsonl(handle: Any, record: Dict[str, Any]) -> None:
    """Appends one record and forces it to disk (flush + fsync)."""
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def pending_questions(questions: Sequence[str], records: Iterable[Dict[str, Any]]) -> List[int]:
    """Positions of ``questions`` not yet answered in ``records``.

    Answers are matched by question text; a question asked k times needs k answers. A record of an
    error (``"error"`` set, e.g. a question too long for the window) does not count: a re-run, perhaps
    with a larger ``max_seq_length``, tries that question again.
    """
    done: Dict[str, int] = {}
    for record in records:
        if record.get("error"):
            continue
        done[record["instruction"]] = done.get(record["instruction"], 0) + 1
    seen: Dict[str, int] = {}
    todo = []
    for i, q in enumerate(questions):
        seen[q] = seen.get(q, 0) + 1
        if seen[q] > done.get(q, 0):
            todo.append(i)
    return todo


def group_by_question(records: Iterable[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    """Question text -> its records: answers in the order they come, then error records (an answer
    from a later run supersedes an earlier run's error for the same question)."""
    by_q: Dict[str, List[Dict[str, Any]]] = {}
    errors: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        (errors if record.get("error") else by_q).setdefault(record["instruction"], []).append(record)
    for q, failed in errors.items():
        by_q.setdefault(q, []).extend(failed)
    return by_q


def ordered_records(questions: Sequence[str], records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records in question order (k-th occurrence of a question -> its k-th record)."""
    by_q = group_by_question(records)
    used: Dict[str, int] = {}
    out = []
    for q in questions:
        k = used.get(q, 0)
        if k < len(by_q.get(q, [])):
            out.append(by_q[q][k])
            used[q] = k + 1
    return out


def output_paths(out: Union[str, Path]) -> Dict[str, Path]:
    """``jsonl``/``xlsx``/``csv`` paths for an output base (a given .jsonl/.xlsx/.csv suffix is dropped)."""
    base = Path(out)
    if base.suffix.lower() in (".jsonl", ".xlsx", ".csv"):
        base = base.with_suffix("")
    return {ext: base.parent / f"{base.name}.{ext}" for ext in ("jsonl", "xlsx", "csv")}


# Tokens of retrieved context a question must leave room for (LlamaIndex fails with less than 1).
MIN_CONTEXT_TOKENS = 16


def check_question_fits(llm: Any, question: str, rag: bool = True) -> None:
    """Raises ``PromptTooLongError`` when ``question`` leaves no room in the model's window.

    With ``rag=True`` it asks what the query engine's packing asks: LlamaIndex's ``PromptHelper`` (as
    :func:`~llama_unsloth.rag.retrieval.build_rag_prompt` uses it) must leave at least
    :data:`MIN_CONTEXT_TOKENS` tokens for context beside the larger of the QA/refine prompts, after
    reserving ``max_new_tokens`` and the refine step's padding. Checking first matters: inside a query
    engine the overflow is LlamaIndex's ``ValueError: Calculated available context size -542 ...``
    traceback, or is swallowed by its refine step. With ``rag=False`` the fine-tune-only prompt plus
    ``max_new_tokens`` must fit ``max_seq_length``, counted with the model's tokenizer.
    """
    from llama_unsloth.llms.unsloth import PromptTooLongError

    window, new = int(llm.max_seq_length), int(llm.max_new_tokens)
    if not rag:
        n_prompt = len(llm._encode(llm.format_prompt(question)))  # the ids generate() would receive
        overflow = n_prompt + new - window
        if overflow > 0:
            raise PromptTooLongError(
                f"The question is too long for the model's window: its prompt is {n_prompt} tokens; with "
                f"max_new_tokens={new} that exceeds max_seq_length={window} by {overflow} tokens. Shorten the "
                f"question by {overflow} tokens, lower --max-new-tokens, or raise --max-seq-length."
            )
        return
    from llama_index.core.prompts.prompt_utils import get_biggest_prompt, get_empty_prompt_txt
    from llama_index.core.response_synthesizers.refine import DEFAULT_RESPONSE_PADDING_SIZE

    from llama_unsloth.rag.retrieval import _prompt_helper

    helper = _prompt_helper(llm)
    biggest = get_biggest_prompt(
        [
            llm.qa_template().partial_format(query_str=question),
            llm.refine_template().partial_format(query_str=question),
        ]
    )
    # PromptHelper's own arithmetic (_get_available_chunk_size), without its ValueError on a negative result.
    counter = helper._token_counter
    n_prompt = counter.get_string_tokens(get_empty_prompt_txt(biggest)) + counter.get_string_tokens(
        getattr(llm, "system_prompt", None) or ""
    )
    room = helper.context_window - n_prompt - helper.num_output - DEFAULT_RESPONSE_PADDING_SIZE
    if room < MIN_CONTEXT_TOKENS:
        short = MIN_CONTEXT_TOKENS - room
        raise PromptTooLongError(
            f"The question is too long for the model's window: with max_new_tokens={new} and "
            f"{DEFAULT_RESPONSE_PADDING_SIZE} tokens LlamaIndex keeps free for refining, it leaves "
            f"{max(room, 0)} tokens of max_seq_length={window} for retrieved context (at least {MIN_CONTEXT_TOKENS} needed). "
            f"Shorten the question by at least {short} tokens, lower --max-new-tokens, or raise --max-seq-length."
        )


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

    from llama_unsloth.llms.unsloth import PromptTooLongError

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
        rag = index is not None

        def answer(group: List[int]) -> List[Answer]:
            qs = [questions[i] for i in group]
            if not rag:
                return answer_plain_batch(model, qs, batch_size=batch_size)
            prompts = [build_rag_prompt(model, q, retrieve(index, q, postprocessors, similarity_top_k)) for q in qs]
            return answer_rag_batch(model, prompts, batch_size=batch_size)

        def failed(i: int, err: Exception) -> Answer:
            return Answer(questions[i], "", False, 0.0, error=str(err))

        def process(group: List[int]) -> Dict[int, Answer]:
            results: Dict[int, Answer] = {}
            fits = []
            for i in group:
                try:
                    check_question_fits(model, questions[i], rag=rag)
                    fits.append(i)
                except PromptTooLongError as err:
                    results[i] = failed(i, err)
            try:
                results.update(zip(fits, answer(fits)) if fits else [])
            except PromptTooLongError:
                for i in fits:  # find the culprit; answer the others
                    try:
                        results[i] = answer([i])[0]
                    except PromptTooLongError as err:
                        results[i] = failed(i, err)
            return results

        groups = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        handle = None
        pool = None
        try:
            if workers > 1:
                from concurrent.futures import ThreadPoolExecutor, as_completed

                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-worker")
                finished = (future.result() for future in as_completed([pool.submit(process, g) for g in groups]))
            else:
                finished = (process(g) for g in groups)
            for results in finished:
                if handle is None:
                    # Opened only now: a run that fails before its first answer leaves no empty file behind.
                    paths["jsonl"].parent.mkdir(parents=True, exist_ok=True)
                    handle = open(paths["jsonl"], "a", encoding="utf-8")
                for i in sorted(results):
                    record = {"position": i, **results[i].__dict__, "rag": rag}
                    if record["error"] is None:
                        del record["error"]
                    append_jsonl(handle, record)
                    records.append(record)
                    bar.update(1)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if handle is not None:
                handle.close()
            bar.close()
    ordered = ordered_records(questions, records)
    write_table(ordered, paths["xlsx"])
    write_table(ordered, paths["csv"])
    return ordered


__all__ = [
    "append_jsonl",
    "group_by_question",
    "load_questions",
    "ordered_records",
    "output_paths",
    "pending_questions",
    "read_answers_jsonl",
    "run_batch",
]
