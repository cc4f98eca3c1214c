"""llama_unsloth.batch_answers: question loaders and the JSONL resume helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_load_questions_every_format(tmp_path: Path) -> None:
    import pandas as pd

    from llama_unsloth.batch_answers import load_questions
    from llama_unsloth.errors import QuestionsFileError

    want = ["First?", "Second?", "First?"]
    (tmp_path / "q.txt").write_text("First?\n\n# a comment\n  Second?  \nFirst?\n", encoding="utf-8")
    (tmp_path / "q.json").write_text(json.dumps(["First?", {"question": "Second?"}, {"instruction": "First?"}]), encoding="utf-8")
    (tmp_path / "q.jsonl").write_text('"First?"\n{"question": "Second?"}\n\n{"instruction": "First?"}\n', encoding="utf-8")
    pd.DataFrame({"id": [1, 2, 3], "Question": want}).to_csv(tmp_path / "q.csv", index=False)
    pd.DataFrame({"instruction": want, "x": [1, 2, 3]}).to_excel(tmp_path / "q.xlsx", index=False)
    for ext in ("txt", "json", "jsonl", "csv", "xlsx"):
        assert load_questions(tmp_path / f"q.{ext}") == want, ext
    (tmp_path / "q.pdf").write_text("x")
    with pytest.raises(QuestionsFileError, match="Unsupported questions file type '.pdf'"):
        load_questions(tmp_path / "q.pdf")
    (tmp_path / "bad.json").write_text('{"questions": 1}')
    with pytest.raises(QuestionsFileError, match="JSON list"):
        load_questions(tmp_path / "bad.json")
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    with pytest.raises(QuestionsFileError, match="holds no questions"):
        load_questions(tmp_path / "empty.txt")


def test_resume_helpers(tmp_path: Path) -> None:
    from llama_unsloth.batch_answers import ordered_records, pending_questions, read_answers_jsonl

    path = tmp_path / "a.jsonl"
    path.write_text('{"instruction": "A", "answer": "1"}\n{"instruction": "B", "answer": "2"}\n{"instruction": "A", "ans', encoding="utf-8")
    records = read_answers_jsonl(path, repair=True)
    assert [r["instruction"] for r in records] == ["A", "B"]
    assert path.read_text(encoding="utf-8").endswith('"2"}\n')  # torn tail cut off
    questions = ["A", "B", "A", "C"]
    assert pending_questions(questions, records) == [2, 3]
    assert [r["answer"] for r in ordered_records(questions, records)] == ["1", "2"]
