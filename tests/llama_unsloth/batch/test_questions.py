"""llama_unsloth.batch.questions: question files in every format and encoding users have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_load_questions_every_format(tmp_path: Path) -> None:
    import pandas as pd

    from llama_unsloth.batch.questions import load_questions
    from llama_unsloth.errors import QuestionsFileError

    want = ["First?", "Second?", "First?"]
    (tmp_path / "q.txt").write_text("First?\n\n# a comment\n  Second?  \nFirst?\n", encoding="utf-8")
    (tmp_path / "q.json").write_text(
        json.dumps(["First?", {"question": "Second?"}, {"instruction": "First?"}]), encoding="utf-8"
    )
    (tmp_path / "q.jsonl").write_text(
        '"First?"\n{"question": "Second?"}\n\n{"instruction": "First?"}\n', encoding="utf-8"
    )
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


# ---------------------------------------------------------------------------------------------- users' question files
JA_QUESTIONS = [
    "メルコスールを設立した国はどこですか？",
    "USMCAはいつ発効しましたか？",
    "What limits trade inside the bloc?",
]


@pytest.mark.parametrize("codec", ["cp932", "shift_jis", "euc_jp", "utf-16", "utf-8-sig", "utf-8"])
@pytest.mark.parametrize("suffix", [".csv", ".txt", ".jsonl"])
def test_questions_files_in_every_encoding_users_have(tmp_path: Path, codec: str, suffix: str) -> None:
    from llama_unsloth.batch.questions import load_questions

    if suffix == ".csv":  # what Japanese Excel writes: a header row, CRLF line ends
        text = "番号,question\r\n" + "".join(f"{i},{q}\r\n" for i, q in enumerate(JA_QUESTIONS, 1))
    elif suffix == ".txt":
        text = "\n".join(JA_QUESTIONS) + "\n"
    else:
        text = "".join(json.dumps({"question": q}, ensure_ascii=False) + "\n" for q in JA_QUESTIONS)
    path = tmp_path / f"questions{suffix}"
    path.write_bytes(text.encode(codec))
    assert load_questions(path) == JA_QUESTIONS


def test_xlsx_questions_with_japanese_and_unreadable_text_files(tmp_path: Path) -> None:
    import pandas as pd

    from llama_unsloth.batch.questions import load_questions
    from llama_unsloth.errors import QuestionsFileError

    pd.DataFrame({"Question": JA_QUESTIONS}).to_excel(tmp_path / "q.xlsx", index=False)
    assert load_questions(tmp_path / "q.xlsx") == JA_QUESTIONS
    (tmp_path / "q.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(QuestionsFileError, match=r"q\.csv: binary data, not text\. Save it as text"):
        load_questions(tmp_path / "q.csv")
    (tmp_path / "q.txt").write_bytes(b"")
    with pytest.raises(QuestionsFileError, match="holds no questions"):
        load_questions(tmp_path / "q.txt")


def test_half_a_character_is_read_as_a_replacement_character(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from llama_unsloth.batch.questions import load_questions

    path = tmp_path / "q.json"
    # An emoji cut in half by a tool that splits UTF-16: valid JSON, but no tokenizer or UTF-8 file takes it.
    path.write_text('["Which countries founded Mercosur?", "Broken emoji \\ud83d here?"]', encoding="utf-8")
    assert load_questions(path) == ["Which countries founded Mercosur?", "Broken emoji \ufffd here?"]
    assert "question 2 holds half of a character" in caplog.text
