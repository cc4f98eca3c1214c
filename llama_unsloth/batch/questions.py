"""Question files users bring: ``.txt``, ``.json``, ``.jsonl``, ``.csv`` or ``.xlsx``, in any text encoding.

Japanese users' files come from Excel (Shift-JIS/CP932 CSV, ``.xlsx``) as often as from editors, so text
files are decoded by :mod:`llama_unsloth.text_files` and tables are matched by column name.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, List, Union

from llama_unsloth.errors import QuestionsFileError

logger = logging.getLogger(__name__)

QUESTION_COLUMNS = ("question", "instruction")
QUESTION_SUFFIXES = (".txt", ".json", ".jsonl", ".csv", ".xlsx", ".xls")


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
    if suffix not in QUESTION_SUFFIXES:
        raise QuestionsFileError(
            f"Unsupported questions file type {suffix or '(none)'!r}: use .txt, .json, .jsonl, .csv or .xlsx."
        )
    text = _questions_text(file) if suffix in (".txt", ".json", ".jsonl", ".csv") else ""
    items: List[Any]
    if suffix == ".txt":
        items = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    elif suffix in (".json", ".jsonl"):
        items = _json_items(text, suffix, path, file)
    else:
        items = _table_items(text, suffix, path, file)
    questions = [str(q).strip() for q in items if str(q).strip()]
    if not questions:
        raise QuestionsFileError(f"{str(path)!r} holds no questions.")
    return [_whole_characters(q, path, n) for n, q in enumerate(questions, 1)]


def _whole_characters(question: str, path: Union[str, Path], n: int) -> str:
    """The question with each unpaired surrogate (a JSON ``\\ud83d`` escape cut from its pair) as U+FFFD.

    No tokenizer, embedding model or UTF-8 file takes half a character: left in, the question could be neither
    answered nor recorded.
    """
    try:
        question.encode("utf-8")
        return question
    except UnicodeEncodeError:
        fixed = question.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        logger.warning(
            "warning: %s: question %d holds half of a character (an unpaired \\u escape); it is read as U+FFFD.",
            path,
            n,
        )
        return fixed


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


def _json_items(text: str, suffix: str, path: Union[str, Path], file: Path) -> List[str]:
    """The questions of a ``.json`` list or ``.jsonl`` lines: strings, or objects with a question string."""
    try:
        items = json.loads(text) if suffix == ".json" else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    except json.JSONDecodeError as err:
        raise QuestionsFileError(
            f"{str(path)!r} is not valid JSON{' lines' if suffix == '.jsonl' else ''}: {err}."
        ) from err
    if not isinstance(items, list):
        raise QuestionsFileError(
            f"{str(path)!r} must hold a JSON list of questions (strings or objects with 'question')."
        )
    return [_question_of(item, file, n) for n, item in enumerate(items, 1)]


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


def _table_items(text: str, suffix: str, path: Union[str, Path], file: Path) -> List[str]:
    """The ``question`` (else ``instruction``) column of a ``.csv`` (decoded ``text``) or ``.xlsx`` table, any case."""
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
    # Empty cells read as NaN from .xlsx: only strings are questions.
    return [v for v in frame[column].tolist() if isinstance(v, str)]


__all__ = ["QUESTION_COLUMNS", "load_questions"]
