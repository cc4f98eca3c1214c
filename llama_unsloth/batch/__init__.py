"""Batch answering and the RAG-vs-no-RAG comparison, one module per concept.

* :mod:`~llama_unsloth.batch.questions`: question files (``.txt``/``.json``/``.jsonl``/``.csv``/``.xlsx``, any encoding).
* :mod:`~llama_unsloth.batch.answers`: the resumable answers JSONL (read, append, what is pending, in question order).
* :mod:`~llama_unsloth.batch.settings`: the settings answers were made with, beside the JSONL; a resume with others is refused.
* :mod:`~llama_unsloth.batch.runner`: :func:`run_batch`, and the check that a question fits the model's window.
* :mod:`~llama_unsloth.batch.tables`: ``.xlsx``/``.csv``/Markdown tables, replaced atomically.
* :mod:`~llama_unsloth.batch.comparison`: answers with and without RAG side by side.

Modules inside the package import from each other's modules, never from here (that would be a cycle).
"""

from llama_unsloth.batch.answers import (
    append_jsonl,
    group_by_question,
    ordered_records,
    output_paths,
    pending_questions,
    read_answers_jsonl,
)
from llama_unsloth.batch.comparison import COMPARE_COLUMNS, SUMMARY_COLUMNS, compare_records, write_compare_report
from llama_unsloth.batch.questions import load_questions
from llama_unsloth.batch.runner import run_batch
from llama_unsloth.batch.tables import markdown_table, write_table

__all__ = [
    "COMPARE_COLUMNS",
    "SUMMARY_COLUMNS",
    "append_jsonl",
    "compare_records",
    "group_by_question",
    "load_questions",
    "markdown_table",
    "ordered_records",
    "output_paths",
    "pending_questions",
    "read_answers_jsonl",
    "run_batch",
    "write_compare_report",
    "write_table",
]
