"""llama_unsloth.batch.answers: the resumable JSONL (torn lines, pending questions, question order)."""

from __future__ import annotations

from pathlib import Path


def test_resume_helpers(tmp_path: Path) -> None:
    from llama_unsloth.batch.answers import ordered_records, pending_questions, read_answers_jsonl

    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"instruction": "A", "answer": "1"}\n{"instruction": "B", "answer": "2"}\n{"instruction": "A", "ans',
        encoding="utf-8",
    )
    records = read_answers_jsonl(path, repair=True)
    assert [r["instruction"] for r in records] == ["A", "B"]
    assert path.read_text(encoding="utf-8").endswith('"2"}\n')  # torn tail cut off
    questions = ["A", "B", "A", "C"]
    assert pending_questions(questions, records) == [2, 3]
    assert [r["answer"] for r in ordered_records(questions, records)] == ["1", "2"]


def test_error_records_do_not_count_as_answered(tmp_path: Path) -> None:
    from llama_unsloth.batch.answers import ordered_records, pending_questions

    records = [
        {"instruction": "A", "answer": "", "error": "too long"},
        {"instruction": "B", "answer": "2"},
        {"instruction": "A", "answer": "1"},  # a later run answered it
    ]
    assert pending_questions(["A", "B", "C"], records[:2]) == [0, 2]
    assert [r["answer"] for r in ordered_records(["A", "B"], records)] == ["1", "2"]
    assert [r.get("error") for r in ordered_records(["A", "A"], records)] == [None, "too long"]


def test_output_paths_and_appended_records(tmp_path: Path) -> None:
    from llama_unsloth.batch.answers import append_jsonl, group_by_question, output_paths, read_answers_jsonl

    for out in ("res/answers", "res/answers.jsonl", "res/answers.XLSX", "res/answers.csv"):
        paths = output_paths(out)
        assert paths == {ext: Path("res") / f"answers.{ext}" for ext in ("jsonl", "xlsx", "csv")}, out
    assert output_paths("res/answers.v2")["jsonl"] == Path("res/answers.v2.jsonl")
    path = tmp_path / "a.jsonl"
    with open(path, "a", encoding="utf-8") as handle:
        append_jsonl(handle, {"instruction": "関税とは？", "answer": "税"})
        append_jsonl(handle, {"instruction": "B", "answer": "", "error": "too long"})
        handle.write("not json\n")
        append_jsonl(handle, {"instruction": "B", "answer": "2"})
    assert "関税とは？" in path.read_text(encoding="utf-8")  # ensure_ascii=False: readable Japanese
    records = read_answers_jsonl(path)  # the bad line is skipped with a warning
    assert [r["answer"] for r in group_by_question(records)["B"]] == ["2", ""]  # answers before errors
