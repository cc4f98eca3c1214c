"""The resumable answers JSONL: one record per answered question, appended and fsynced as it comes.

A re-run reads what a crash left (a torn last line is ignored, or cut off before appending), answers
only what is missing (:func:`pending_questions`), and orders the records as the questions come
(:func:`ordered_records`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Union

logger = logging.getLogger(__name__)


def read_answers_jsonl(path: Union[str, Path], repair: bool = False, warn: bool = True) -> List[Dict[str, Any]]:
    """Complete records from an answers JSONL file; a torn last line (a crash mid-write) is ignored.

    Args:
        path: The file (missing: no records).
        repair: Cut a torn trailing line off the file so appends start on a fresh line.
        warn: Warn about each line that is not JSON (off for a check that reads the file before the run does).
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
            if not warn:
                continue
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


__all__ = [
    "append_jsonl",
    "group_by_question",
    "ordered_records",
    "output_paths",
    "pending_questions",
    "read_answers_jsonl",
]
